//! Recording files: the encrypted chunked container (`.brrec`, see
//! `docs/recording-format.md`) and WAV export.

pub mod container;
pub mod ogg;
pub mod opus;
pub mod shred;
pub mod slots;
pub mod wav;

pub use container::{
    content_sha256, read_all_audio, read_header, read_valid_prefix, scan, unwrap_data_key, Chunk,
    OpusParams, PcmStream,
    ContainerError, ContainerReader, ContainerWriter, FinishedContainer, Header, HeaderParams,
    KeySlot, SampleFormat, ScanReport, ScanState,
};
pub use slots::{clear_other_slots, rewrap_file, shred_file, RewrapOutcome};
pub use wav::{write_wav, WavWriter};
