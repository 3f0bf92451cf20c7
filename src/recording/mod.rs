//! Recording files: the encrypted chunked container and WAV export.

pub mod container;
pub mod wav;
