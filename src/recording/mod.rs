//! Recording files: the encrypted chunked container (`.brrec`, see
//! `docs/recording-format.md`) and WAV export.

pub mod container;
pub mod shred;
pub mod wav;

pub use container::{
    read_all_audio, read_header, read_valid_prefix, scan, Chunk, ContainerError, ContainerReader,
    ContainerWriter, FinishedContainer, Header, HeaderParams, SampleFormat, ScanReport, ScanState,
};
pub use wav::{write_wav, WavWriter};
