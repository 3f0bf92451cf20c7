//! Recording files on disk. The format itself (container, readers, WAV/Ogg Opus export)
//! is sans-IO in `branchrec_core::recording` and re-exported here; this module adds what
//! touches files: [`slots`] (re-wrapping and clearing key slots in place) and [`shred`]
//! (crypto-shredding a file).

pub use branchrec_core::recording::*;

pub mod shred;
pub mod slots;

pub use slots::{clear_other_slots, rewrap_file, shred_file, RewrapOutcome};
