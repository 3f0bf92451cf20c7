//! Recording files on disk. The format itself (container, readers, WAV/Ogg Opus export)
//! is sans-IO in `branchrec_core::recording` and re-exported here; this module adds what
//! touches files: [`slots`] (re-wrapping and clearing key slots in place), [`shred`]
//! (crypto-shredding a file) and [`files`] (finding recording files). Keys are the core's
//! [`branchrec_core::keys`] types: this module does not depend on the vault.

pub use branchrec_core::recording::*;

pub mod files;
pub mod shred;
pub mod slots;

pub use files::{has_recordings, recording_files};
pub use slots::{clear_other_slots, rewrap_file, shred_file, RewrapOutcome};
