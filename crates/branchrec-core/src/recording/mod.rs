//! Recording files as bytes: the encrypted chunked container (`.brec` files, see
//! `docs/recording-format.md`), its readers, and WAV / Ogg Opus export to any
//! `Write`. Opening, shredding and re-wrapping files on disk is the daemon's
//! (`branchrec::recording::{slots, shred}`).

pub mod container;
pub mod encode;
pub mod export;
pub mod ogg;
pub mod opus;
pub mod session;
pub mod stats;
pub mod verdict;
pub mod wav;

pub use container::{
    content_sha256, read_all_audio, read_header, read_valid_prefix, scan, unwrap_data_key, Chunk,
    ChunkWriter, ContainerError, ContainerReader, FinishedContainer, Header, HeaderParams, KeySlot,
    OpusParams, PcmStream, SampleFormat, ScanReport, ScanState,
};
pub use encode::{AudioEncoder, ContainerWriter};
pub use session::{
    ChannelMedia, Event, EventKind, Finished, Outcome, Output, Recording, RecordingConfig,
    RecordingKeys, RtpDisposition,
};
pub use stats::ChannelStats;
pub use wav::{write_wav, WavWriter};

/// How a recording's audio is stored (per rule, default `[storage] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageFormat {
    /// Lossless 16-bit PCM (for G.711 the exact wire samples).
    #[default]
    Wav,
    /// Opus packets (compact, lossy), encoded with `[storage.opus]`.
    Opus,
}

impl StorageFormat {
    /// Name in the config and the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFormat::Wav => "wav",
            StorageFormat::Opus => "opus",
        }
    }
}
