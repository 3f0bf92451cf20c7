//! The encrypted recording container (`.brec` files), in the style of the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015): a header followed by a
//! sequence of AES-256-GCM chunks whose nonces carry a counter and a last-chunk flag.
//!
//! * Every chunk's AAD is `SHA-256(header bytes)`, so any header edit, and any chunk
//!   spliced in from another recording (other key, nonce prefix or header), fails.
//! * The counter in the nonce makes reordering, dropping or duplicating chunks fail.
//! * Only the final chunk is sealed with the last flag set, so truncation at a chunk
//!   boundary is distinguishable from a complete file.
//! * Each chunk's plaintext starts with its first frame index, so the reader also
//!   proves sample continuity.
//!
//! The writer emits chunk 0 (no audio) together with the header so the header is
//! authenticated on disk from the very start. The byte layout is in
//! `docs/recording-format.md`. [`ChunkWriter`] is sans-IO: it seals already-encoded
//! audio (PCM samples or Opus packets from `recording::encode`) and returns bytes for
//! the shell to append to the file. [`ContainerReader`] reads from any [`std::io::Read`].
//!
//! By job: [`header`] (fields, encoding, parsing), [`slots`] (wrapped data keys),
//! [`writer`] (sealing), [`reader`] (verifying chunk reader, content hash), [`scan`]
//! (crash and tamper state), [`stream`] (decoded PCM and the whole-file readers).

use std::io::{self, Read};

use thiserror::Error;

use crate::keys::VaultError;

pub mod header;
pub mod reader;
pub mod scan;
pub mod slots;
pub mod stream;
mod wire;
pub mod writer;

pub use header::{
    read_header, slot_count_of_body, Header, HeaderParams, OpusParams, SampleFormat,
    CHUNK_PLAIN_HEADER_LEN, COMPLIANCE_SLOT, FORMAT_VERSION, FORMAT_VERSION_OPUS, KEY_SLOT_COUNT,
    KEY_SLOT_LEN, KEY_SLOT_MAGIC, MAGIC, MAX_CHUNK_AUDIO_BYTES, MAX_HEADER_BODY,
    MAX_KEY_SLOT_COUNT, NONCE_PREFIX_LEN, TAG_LEN,
};
pub use header::{unix_ms_on_disk, unwrap_data_key};
pub use reader::{content_sha256, Chunk, ContainerReader};
pub use scan::{scan, ScanReport, ScanState};
pub use slots::KeySlot;
pub use stream::{read_all_audio, read_valid_prefix, PcmStream};
pub use writer::{ChunkWriter, FinishedContainer};

/// Errors of the container writer and reader. Chunk errors name the chunk index.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// Reading failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Not a branchrec recording.
    #[error("not a recording container (bad magic)")]
    BadMagic,
    /// A format version this code cannot read.
    #[error("unsupported container format version {0}")]
    UnsupportedVersion(u16),
    /// The file ends inside the header.
    #[error("file ends inside the header")]
    HeaderTruncated,
    /// The header does not parse or has invalid values.
    #[error("malformed header: {0}")]
    HeaderMalformed(String),
    /// The data key could not be unwrapped (wrong KEK, or the header's key was altered).
    #[error("cannot unwrap the data key: {0}")]
    Key(#[from] VaultError),
    /// No key slot holds a wrapped key: the recording was shredded (or both slots are
    /// damaged); its audio is unrecoverable by design.
    #[error("no usable key slot: the data key was destroyed (shredded) or both slots are damaged")]
    NoKeySlot,
    /// Invalid writer parameters.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// The file ends inside a chunk (torn write or truncation).
    #[error("chunk {chunk}: file ends inside the chunk")]
    ChunkTruncated {
        /// Index of the incomplete chunk.
        chunk: u32,
    },
    /// A chunk length outside the valid range.
    #[error("chunk {chunk}: invalid length {len}")]
    ChunkLength {
        /// Chunk index.
        chunk: u32,
        /// Claimed ciphertext length.
        len: u32,
    },
    /// A chunk failed authentication: altered, reordered, from another recording, or
    /// a different header.
    #[error(
        "chunk {chunk}: authentication failed (altered, out of order, or from another recording)"
    )]
    ChunkAuth {
        /// Chunk index.
        chunk: u32,
    },
    /// An authenticated chunk with inconsistent contents.
    #[error("chunk {chunk}: malformed contents: {reason}")]
    ChunkMalformed {
        /// Chunk index.
        chunk: u32,
        /// What is wrong.
        reason: String,
    },
    /// A chunk does not start where the previous one ended.
    #[error("chunk {chunk}: starts at frame {got}, expected {expected}")]
    Discontinuity {
        /// Chunk index.
        chunk: u32,
        /// Expected start frame.
        expected: u64,
        /// Start frame found.
        got: u64,
    },
    /// Bytes follow the final chunk.
    #[error("data after the final chunk {after_chunk}")]
    TrailingData {
        /// Index of the final chunk.
        after_chunk: u32,
    },
    /// The file ends at a chunk boundary without a final chunk (interrupted recording).
    #[error("recording incomplete: {valid_chunks} valid chunks ({frames} frames), no final chunk")]
    MissingFinalChunk {
        /// Valid chunks read.
        valid_chunks: u32,
        /// Frames in them.
        frames: u64,
    },
    /// The writer was given a block that overlaps audio already written or leaves an
    /// implausibly large gap.
    #[error("audio block at frame {got} does not continue at frame {expected}")]
    BlockDiscontinuity {
        /// Next frame the writer expected.
        expected: u64,
        /// Start frame of the block.
        got: u64,
    },
}

pub(super) fn nonce_for(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Read until `buf` is full or EOF; returns bytes read.
pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
