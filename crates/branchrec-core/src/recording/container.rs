//! The encrypted recording container (`.brrec`), in the style of the STREAM
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
//! `docs/recording-format.md`. [`ContainerWriter`] is sans-IO: it returns bytes for the
//! shell to append to the file. [`ContainerReader`] reads from any [`std::io::Read`].

use std::io::{self, Read};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::media::AudioBlock;
use crate::recording::opus::{self, OpusPacketizer, OpusSettings, OpusStreamDecoder, MAX_PACKET};
use crate::keys::{DataKey, KeyWrap, VaultError};

/// File magic.
pub const MAGIC: &[u8; 6] = b"BRREC\0";
/// The container format version written for PCM (s16le) recordings.
pub const FORMAT_VERSION: u16 = 2;
/// The container format version written for Opus recordings (adds the codec-parameter
/// field to the header and packet chunks). Readers accept versions 2 and 3.
pub const FORMAT_VERSION_OPUS: u16 = 3;
/// Number of key slots after the header.
pub const KEY_SLOT_COUNT: usize = 2;
/// Size of one key slot in bytes.
pub const KEY_SLOT_LEN: usize = 512;
/// Magic at the start of a used key slot.
pub const KEY_SLOT_MAGIC: &[u8; 4] = b"BRKS";
const KEY_SLOT_SUM_LEN: usize = 32;
/// Length of the random per-recording nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Chunk plaintext header: start frame (u64) + frame count (u32).
pub const CHUNK_PLAIN_HEADER_LEN: usize = 12;
/// Largest accepted header body.
pub const MAX_HEADER_BODY: u32 = 1 << 20;
/// Largest accepted chunk audio payload (`chunk_target_frames × channels × 2`).
pub const MAX_CHUNK_AUDIO_BYTES: u64 = 16 << 20;

/// Sample encoding of the audio in the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Signed 16-bit little-endian, interleaved by channel (code 1).
    S16Le,
    /// Opus packets, 20 ms each, length-prefixed (code 2; format version 3).
    Opus,
}

impl SampleFormat {
    fn code(self) -> u8 {
        match self {
            SampleFormat::S16Le => 1,
            SampleFormat::Opus => 2,
        }
    }

    /// Name in the catalogue, manifests and `recordings show`: `wav` or `opus`.
    pub fn storage_name(self) -> &'static str {
        match self {
            SampleFormat::S16Le => "wav",
            SampleFormat::Opus => "opus",
        }
    }
}

/// Codec parameters of an Opus recording (header field of format version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusParams {
    /// Encoder delay in samples per channel at the recording rate: the first `pre_skip`
    /// decoded samples are discarded (Ogg pre-skip = this × 48000 / rate).
    pub pre_skip: u16,
    /// Samples per channel in every packet (20 ms at the recording rate).
    pub frame_size: u16,
    /// Target bitrate the encoder was set to, bit/s (informative).
    pub bitrate_bps: u32,
    /// Encoder complexity 0–10 (informative).
    pub complexity: u8,
    /// Variable bitrate (informative).
    pub vbr: bool,
}

impl OpusParams {
    const LEN: usize = 10;

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.pre_skip.to_be_bytes());
        v.extend_from_slice(&self.frame_size.to_be_bytes());
        v.extend_from_slice(&self.bitrate_bps.to_be_bytes());
        v.push(self.complexity);
        v.push(u8::from(self.vbr));
        v
    }

    fn decode(b: &[u8]) -> Result<Self, ContainerError> {
        let mut c = Cursor { b };
        let p = OpusParams {
            pre_skip: c.u16()?,
            frame_size: c.u16()?,
            bitrate_bps: c.u32()?,
            complexity: c.arr::<1>()?[0],
            vbr: c.arr::<1>()?[0] != 0,
        };
        if !c.b.is_empty() {
            return Err(ContainerError::HeaderMalformed(
                "trailing bytes in the Opus parameters".into(),
            ));
        }
        Ok(p)
    }

    /// Most packets one chunk may hold for `target` frames per chunk: the final chunk
    /// also carries the packets that flush the encoder delay.
    pub fn max_packets(&self, target: u32) -> u64 {
        let f = u64::from(self.frame_size.max(1));
        u64::from(target).div_ceil(f) + u64::from(self.pre_skip).div_ceil(f) + 1
    }
}

/// What the caller supplies for a new recording's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParams {
    /// Recording id (a UUID string).
    pub recording_id: String,
    /// Creation time, Unix milliseconds (the shell's clock).
    pub created_unix_ms: u64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Frames per full chunk; 0 means one second (`sample_rate`).
    pub chunk_target_frames: u32,
    /// Id of the KEK that wrapped the data key.
    pub kek_id: String,
    /// Free-form JSON for later use (may be empty).
    pub extra_json: String,
}

/// A parsed container header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub format_version: u16,
    /// Recording id.
    pub recording_id: String,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample format.
    pub sample_format: SampleFormat,
    /// Opus parameters (format version 3 with `sample_format` Opus).
    pub opus: Option<OpusParams>,
    /// Maximum frames per chunk.
    pub chunk_target_frames: u32,
    /// Random nonce prefix of this recording.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Free-form JSON.
    pub extra_json: String,
    /// The key slots that follow the header (not part of the authenticated header;
    /// `None` = empty, shredded or torn). See [`KeySlot`].
    pub key_slots: Vec<Option<KeySlot>>,
}

/// One key slot: the data key wrapped under one KEK. A recording has
/// [`KEY_SLOT_COUNT`] slots of [`KEY_SLOT_LEN`] bytes right after its header, outside
/// the authenticated header, so a key rotation can rewrite a slot without touching the
/// audio. A slot protects itself with a checksum bound to the header hash (a torn or
/// transplanted slot reads as empty); the wrapped key is authenticated by its KEK, and
/// the unwrapped key is proven right by chunk 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Higher generation wins when several slots unwrap.
    pub generation: u32,
    /// The KEK that wrapped the data key.
    pub kek_id: String,
    /// The wrapped data key.
    pub wrapped_key: Vec<u8>,
}

impl KeySlot {
    /// Encode the slot for the recording whose header hash is `header_hash`.
    pub fn encode(&self, header_hash: &[u8; 32]) -> Result<[u8; KEY_SLOT_LEN], ContainerError> {
        let mut v = Vec::with_capacity(KEY_SLOT_LEN);
        v.extend_from_slice(KEY_SLOT_MAGIC);
        v.extend_from_slice(&self.generation.to_be_bytes());
        put_str16(&mut v, &self.kek_id, "kek_id")?;
        put_bytes16(&mut v, &self.wrapped_key, "wrapped_key")?;
        if v.len() > KEY_SLOT_LEN - KEY_SLOT_SUM_LEN {
            return Err(ContainerError::InvalidParams(
                "kek_id and wrapped key do not fit in a key slot".into(),
            ));
        }
        let mut out = [0u8; KEY_SLOT_LEN];
        out[..v.len()].copy_from_slice(&v);
        let sum = slot_sum(header_hash, &out[..KEY_SLOT_LEN - KEY_SLOT_SUM_LEN]);
        out[KEY_SLOT_LEN - KEY_SLOT_SUM_LEN..].copy_from_slice(&sum);
        Ok(out)
    }

    /// Decode a slot; `None` if it is empty, shredded, torn or belongs to another header.
    pub fn decode(bytes: &[u8], header_hash: &[u8; 32]) -> Option<KeySlot> {
        if bytes.len() != KEY_SLOT_LEN {
            return None;
        }
        let (body, sum) = bytes.split_at(KEY_SLOT_LEN - KEY_SLOT_SUM_LEN);
        if slot_sum(header_hash, body) != sum {
            return None;
        }
        let mut c = Cursor { b: body };
        if c.take(4).ok()? != KEY_SLOT_MAGIC {
            return None;
        }
        let generation = c.u32().ok()?;
        let n = usize::from(c.u16().ok()?);
        let kek_id = c.string(n, "kek_id").ok()?;
        let n = usize::from(c.u16().ok()?);
        let wrapped_key = c.take(n).ok()?.to_vec();
        Some(KeySlot {
            generation,
            kek_id,
            wrapped_key,
        })
    }
}

fn slot_sum(header_hash: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"branchrec-keyslot-v1");
    h.update(header_hash);
    h.update(body);
    h.finalize().into()
}

impl Header {
    /// Byte length of the authenticated header (magic through body).
    pub fn header_len(&self) -> Result<usize, ContainerError> {
        Ok(self.to_bytes()?.len())
    }

    /// Byte offset of key slot `i` in the file.
    pub fn slot_offset(&self, i: usize) -> Result<u64, ContainerError> {
        Ok((self.header_len()? + i * KEY_SLOT_LEN) as u64)
    }

    /// Byte offset of chunk 0.
    pub fn chunks_offset(&self) -> Result<u64, ContainerError> {
        self.slot_offset(KEY_SLOT_COUNT)
    }

    /// Largest ciphertext (audio + 12-byte chunk header + tag) a valid chunk may have.
    pub fn max_chunk_ciphertext(&self) -> u64 {
        let audio = match &self.opus {
            Some(o) => o.max_packets(self.chunk_target_frames) * (2 + MAX_PACKET as u64),
            None => u64::from(self.chunk_target_frames) * u64::from(self.channels) * 2,
        };
        audio + (CHUNK_PLAIN_HEADER_LEN + TAG_LEN) as u64
    }

    /// Serialize (deterministically) to the on-disk header bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ContainerError> {
        let mut body = Vec::with_capacity(256);
        put_str16(&mut body, &self.recording_id, "recording_id")?;
        body.extend_from_slice(&self.created_unix_ms.to_be_bytes());
        body.extend_from_slice(&self.sample_rate.to_be_bytes());
        body.extend_from_slice(&self.channels.to_be_bytes());
        body.push(self.sample_format.code());
        body.extend_from_slice(&self.chunk_target_frames.to_be_bytes());
        body.push(KEY_SLOT_COUNT as u8);
        body.extend_from_slice(&(KEY_SLOT_LEN as u16).to_be_bytes());
        body.extend_from_slice(&self.nonce_prefix);
        let json_len = u32::try_from(self.extra_json.len())
            .map_err(|_| ContainerError::InvalidParams("extra_json too long".into()))?;
        body.extend_from_slice(&json_len.to_be_bytes());
        body.extend_from_slice(self.extra_json.as_bytes());
        if self.format_version >= FORMAT_VERSION_OPUS {
            let params = self.opus.map(|o| o.encode()).unwrap_or_default();
            put_bytes16(&mut body, &params, "codec_params")?;
        }
        let body_len = u32::try_from(body.len())
            .ok()
            .filter(|&l| l <= MAX_HEADER_BODY)
            .ok_or_else(|| ContainerError::InvalidParams("header too large".into()))?;
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn validate(&self) -> Result<(), String> {
        if self.sample_rate == 0 {
            return Err("sample_rate is 0".into());
        }
        if self.channels == 0 {
            return Err("channels is 0".into());
        }
        if self.chunk_target_frames == 0 {
            return Err("chunk_target_frames is 0".into());
        }
        if u64::from(self.chunk_target_frames) * u64::from(self.channels) * 2
            > MAX_CHUNK_AUDIO_BYTES
        {
            return Err("chunk_target_frames × channels too large".into());
        }
        match (self.sample_format, &self.opus) {
            (SampleFormat::S16Le, None) => {}
            (SampleFormat::Opus, Some(o)) => {
                if self.format_version < FORMAT_VERSION_OPUS {
                    return Err("Opus audio needs format version 3".into());
                }
                if usize::from(o.frame_size) != opus::frame_size(self.sample_rate)
                    || o.frame_size == 0
                {
                    return Err(format!(
                        "Opus frame size {} is not 20 ms at {} Hz",
                        o.frame_size, self.sample_rate
                    ));
                }
                if self.chunk_target_frames % u32::from(o.frame_size) != 0 {
                    return Err("chunk_target_frames is not a whole number of packets".into());
                }
                if self.channels > 2 {
                    return Err("Opus storage has 1 or 2 channels".into());
                }
            }
            _ => return Err("sample format and codec parameters disagree".into()),
        }
        Ok(())
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str, what: &str) -> Result<(), ContainerError> {
    put_bytes16(out, s.as_bytes(), what)
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8], what: &str) -> Result<(), ContainerError> {
    let len = u16::try_from(b.len())
        .map_err(|_| ContainerError::InvalidParams(format!("{what} longer than 65535 bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

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

fn nonce_for(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// What [`ContainerWriter::finish`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedContainer {
    /// Bytes still to append: any remaining full chunks and the final chunk.
    pub bytes: Vec<u8>,
    /// SHA-256 of the file's content: header and chunks, without the key-slot area
    /// (which a key rotation rewrites). See [`content_sha256`].
    pub sha256: [u8; 32],
    /// SHA-256 of the stored audio. PCM: all samples, s16le interleaved (= the data
    /// chunk of the exported WAV). Opus: the packet stream, every packet as `u16`
    /// big-endian length + bytes, in order (see `docs/recording-format.md`).
    pub audio_sha256: [u8; 32],
    /// How the audio is stored.
    pub sample_format: SampleFormat,
    /// Total file size in bytes.
    pub total_bytes: u64,
    /// Audio frames stored.
    pub frames: u64,
    /// Chunks written, including chunk 0 and the final chunk.
    pub chunks: u32,
}

/// Largest gap (in seconds of audio) the writer fills with silence in one block.
const MAX_GAP_SECONDS: u64 = 3600;

/// Sans-IO container writer: feed [`AudioBlock`]s, append the returned bytes to the file.
pub struct ContainerWriter {
    cipher: Aes256Gcm,
    header: Header,
    header_hash: [u8; 32],
    counter: u32,
    /// Next frame index expected from `push_block`.
    next_frame: u64,
    /// Frame index of `pending[0]`.
    pending_start: u64,
    pending: Vec<i16>,
    /// Opus recordings: the encoder and the packets not yet sealed.
    opus: Option<OpusState>,
    hasher: Sha256,
    pcm_hasher: Sha256,
    total_bytes: u64,
}

struct OpusState {
    enc: OpusPacketizer,
    packets: Vec<Vec<u8>>,
    frame: u64,
}

impl std::fmt::Debug for ContainerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerWriter")
            .field("recording_id", &self.header.recording_id)
            .field("counter", &self.counter)
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

impl ContainerWriter {
    /// Start a recording. Returns the writer and the bytes to write first: the header
    /// followed by chunk 0 (no audio), which authenticates the header on disk.
    /// `wrapped_key` is `data_key` wrapped under `params.kek_id`.
    pub fn new(
        params: HeaderParams,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        Self::with_format(params, None, data_key, wrapped_key, nonce_prefix)
    }

    /// Like [`new`](Self::new); with `opus` settings the audio is stored as Opus packets
    /// (format version 3, sample format 2) encoded in the writer, else as s16le PCM.
    pub fn with_format(
        params: HeaderParams,
        opus: Option<OpusSettings>,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        let mut target = if params.chunk_target_frames == 0 {
            params.sample_rate
        } else {
            params.chunk_target_frames
        };
        let (opus_state, opus_params) = match opus {
            None => (None, None),
            Some(s) => {
                let enc = OpusPacketizer::new(params.sample_rate, params.channels, &s)
                    .map_err(|e| ContainerError::InvalidParams(e.to_string()))?;
                let frame = enc.frame_size() as u32;
                // Chunks hold whole packets.
                target = target.div_ceil(frame).max(1) * frame;
                let p = OpusParams {
                    pre_skip: u16::try_from(enc.pre_skip()).map_err(|_| {
                        ContainerError::InvalidParams("Opus lookahead too large".into())
                    })?,
                    frame_size: frame as u16,
                    bitrate_bps: s.bitrate_bps,
                    complexity: s.complexity,
                    vbr: s.vbr,
                };
                (
                    Some(OpusState {
                        enc,
                        packets: Vec::new(),
                        frame: u64::from(frame),
                    }),
                    Some(p),
                )
            }
        };
        let header = Header {
            format_version: if opus_params.is_some() {
                FORMAT_VERSION_OPUS
            } else {
                FORMAT_VERSION
            },
            chunk_target_frames: target,
            recording_id: params.recording_id,
            created_unix_ms: params.created_unix_ms,
            sample_rate: params.sample_rate,
            channels: params.channels,
            sample_format: if opus_params.is_some() {
                SampleFormat::Opus
            } else {
                SampleFormat::S16Le
            },
            opus: opus_params,
            nonce_prefix,
            extra_json: params.extra_json,
            key_slots: Vec::new(),
        };
        header.validate().map_err(ContainerError::InvalidParams)?;
        let mut bytes = header.to_bytes()?;
        let header_hash: [u8; 32] = Sha256::digest(&bytes).into();
        let slot = KeySlot {
            generation: 1,
            kek_id: params.kek_id,
            wrapped_key,
        };
        let slot_bytes = slot.encode(&header_hash)?;
        let mut header = header;
        header.key_slots = vec![Some(slot), None];
        let mut w = ContainerWriter {
            cipher: Aes256Gcm::new(data_key.as_bytes().into()),
            header,
            header_hash,
            counter: 0,
            next_frame: 0,
            pending_start: 0,
            pending: Vec::new(),
            opus: opus_state,
            hasher: Sha256::new(),
            pcm_hasher: Sha256::new(),
            total_bytes: 0,
        };
        w.account(&bytes);
        // The key-slot area counts toward the file size, not the content hash.
        bytes.extend_from_slice(&slot_bytes);
        bytes.extend_from_slice(&[0u8; KEY_SLOT_LEN * (KEY_SLOT_COUNT - 1)]);
        w.total_bytes += (KEY_SLOT_LEN * KEY_SLOT_COUNT) as u64;
        let c0 = w.seal(0, false);
        bytes.extend_from_slice(&c0);
        Ok((w, bytes))
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// SHA-256 of the header bytes (the AAD of every chunk).
    pub fn header_hash(&self) -> [u8; 32] {
        self.header_hash
    }

    /// Bytes produced so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Frames accepted so far (sealed or buffered).
    pub fn frames(&self) -> u64 {
        self.next_frame
    }

    fn channels(&self) -> usize {
        usize::from(self.header.channels)
    }

    fn pending_frames(&self) -> usize {
        match &self.opus {
            Some(o) => o.packets.len() * o.frame as usize,
            None => self.pending.len() / self.channels(),
        }
    }

    /// Opus: feed samples to the encoder; PCM: buffer them.
    fn take_samples(&mut self, samples: &[i16]) -> Result<(), ContainerError> {
        match &mut self.opus {
            Some(o) => o
                .enc
                .push(samples, &mut o.packets)
                .map_err(|e| ContainerError::InvalidParams(format!("Opus encoder: {e}"))),
            None => {
                self.pending.extend_from_slice(samples);
                Ok(())
            }
        }
    }

    fn account(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.total_bytes += bytes.len() as u64;
    }

    /// Buffer a block of interleaved audio. Blocks must continue where the previous one
    /// ended; a forward gap (up to an hour) is filled with silence, an overlap or larger
    /// gap is refused. A trailing partial frame is ignored.
    pub fn push_block(&mut self, block: &AudioBlock) -> Result<(), ContainerError> {
        let ch = self.channels();
        if block.start_frame < self.next_frame
            || block.start_frame - self.next_frame
                > MAX_GAP_SECONDS * u64::from(self.header.sample_rate)
        {
            return Err(ContainerError::BlockDiscontinuity {
                expected: self.next_frame,
                got: block.start_frame,
            });
        }
        if self.opus.is_none() && self.pending.is_empty() {
            self.pending_start = self.next_frame;
        }
        let gap = block.start_frame - self.next_frame;
        if gap > 0 {
            // Fits in usize: bounded by MAX_GAP_SECONDS × sample_rate above.
            let mut gap_samples = usize::try_from(gap).unwrap_or(0).saturating_mul(ch);
            if self.opus.is_some() {
                // Silence through the encoder, a second at a time.
                let zeros = vec![0i16; self.header.sample_rate as usize * ch];
                while gap_samples > 0 {
                    let n = gap_samples.min(zeros.len());
                    self.take_samples(zeros.get(..n).unwrap_or_default())?;
                    gap_samples -= n;
                }
            } else {
                self.pending.resize(self.pending.len() + gap_samples, 0);
            }
        }
        let frames = block.samples.len() / ch;
        self.take_samples(block.samples.get(..frames * ch).unwrap_or(&[]))?;
        self.next_frame = block.start_frame + frames as u64;
        Ok(())
    }

    /// A sealed chunk of exactly `chunk_target_frames` frames, if that many are
    /// buffered. Call repeatedly until None.
    pub fn poll_chunk(&mut self) -> Option<Vec<u8>> {
        let target = self.header.chunk_target_frames as usize;
        // Keep one counter value for the final chunk.
        if self.pending_frames() >= target && self.counter < u32::MAX - 1 {
            Some(self.seal(target, false))
        } else {
            None
        }
    }

    /// Seal everything buffered (in chunks of at most `chunk_target_frames`), e.g. on
    /// the shell's flush interval so a crash loses little audio.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        while self.pending_frames() > 0 && self.counter < u32::MAX - 1 {
            let n = self
                .pending_frames()
                .min(self.header.chunk_target_frames as usize);
            out.extend_from_slice(&self.seal(n, false));
        }
        (!out.is_empty()).then_some(out)
    }

    /// Seal the remaining audio and the final chunk (last flag set). For Opus the
    /// encoder is flushed first: the final chunk's packets cover the encoder delay, and
    /// its frame count ends the recording at exactly the pushed length.
    pub fn finish(mut self) -> FinishedContainer {
        let target = self.header.chunk_target_frames as usize;
        let mut bytes = Vec::new();
        if let Some(o) = &mut self.opus {
            if let Err(e) = o.enc.finish(&mut o.packets) {
                // libopus does not fail on valid 20 ms frames; if it did, the file ends
                // without the encoder delay flushed (the last ms read as silence).
                tracing::error!(error = %e, "Opus encoder flush failed");
            }
        }
        // Full non-final chunks, as long as they lie inside the pushed audio.
        while self.pending_frames() > target
            && self.pending_start + target as u64 <= self.next_frame
            && self.counter < u32::MAX - 1
        {
            bytes.extend_from_slice(&self.seal(target, false));
        }
        let n = self.pending_frames();
        bytes.extend_from_slice(&self.seal(n, true));
        FinishedContainer {
            bytes,
            sha256: self.hasher.finalize().into(),
            audio_sha256: self.pcm_hasher.finalize().into(),
            sample_format: self.header.sample_format,
            total_bytes: self.total_bytes,
            frames: self.next_frame,
            chunks: self.counter,
        }
    }

    /// Seal the first `frames` buffered frames as the next chunk (Opus: the packets
    /// holding them; the final chunk takes every packet left and ends at the pushed
    /// length).
    fn seal(&mut self, frames: usize, last: bool) -> Vec<u8> {
        if self.opus.is_some() {
            return self.seal_opus(frames, last);
        }
        let ch = self.channels();
        let n_samples = (frames * ch).min(self.pending.len());
        let frames = n_samples / ch;
        let mut out = Vec::with_capacity(4 + CHUNK_PLAIN_HEADER_LEN + n_samples * 2 + TAG_LEN);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.pending_start.to_be_bytes());
        out.extend_from_slice(&(frames as u32).to_be_bytes());
        for s in self.pending.drain(..n_samples) {
            out.extend_from_slice(&s.to_le_bytes());
        }
        self.seal_plaintext(out, frames as u64, last)
    }

    fn seal_opus(&mut self, frames: usize, last: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let start = self.pending_start;
        let mut covered = 0u64;
        if let Some(o) = &mut self.opus {
            let n = if last {
                o.packets.len()
            } else {
                (frames as u64 / o.frame) as usize
            }
            .min(o.packets.len());
            covered = n as u64 * o.frame;
            let frames_field = if last {
                self.next_frame.saturating_sub(start).min(covered)
            } else {
                covered
            };
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&(frames_field as u32).to_be_bytes());
            let packets: Vec<Vec<u8>> = o.packets.drain(..n).collect();
            opus::frame_packets(&packets, &mut out);
        }
        let sealed = self.seal_plaintext(out, 0, last);
        self.pending_start = start + covered;
        sealed
    }

    /// Encrypt a chunk plaintext (after its 4-byte length placeholder) and account for
    /// it; `frames` advances `pending_start` (PCM).
    fn seal_plaintext(&mut self, mut out: Vec<u8>, frames: u64, last: bool) -> Vec<u8> {
        self.pcm_hasher
            .update(out.get(4 + CHUNK_PLAIN_HEADER_LEN..).unwrap_or_default());
        let nonce = nonce_for(&self.header.nonce_prefix, self.counter, last);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &self.header_hash, &mut out[4..])
            // Cannot fail: AES-GCM only rejects plaintexts over 64 GiB; chunks are ≤ 16 MiB.
            .expect("AES-GCM encryption of a bounded chunk");
        out.extend_from_slice(&tag);
        let ct_len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&ct_len.to_be_bytes());
        self.counter += 1;
        self.pending_start += frames;
        self.account(&out);
        out
    }
}

/// One verified chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Chunk index (0-based; chunk 0 is the header-authentication chunk).
    pub index: u32,
    /// First frame of the chunk on the recording timeline.
    pub start_frame: u64,
    /// Frames in the chunk.
    pub frames: u32,
    /// Whether this is the final chunk.
    pub last: bool,
    /// Interleaved samples (PCM recordings; empty for Opus).
    pub samples: Vec<i16>,
    /// Opus packets (Opus recordings; empty for PCM). Decode them in order with
    /// [`PcmStream`] or [`OpusStreamDecoder`].
    pub packets: Vec<Vec<u8>>,
}

/// Read until `buf` is full or EOF; returns bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        if self.b.len() < n {
            return Err(ContainerError::HeaderMalformed(
                "field runs past the header".into(),
            ));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], ContainerError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, ContainerError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, ContainerError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, ContainerError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn string(&mut self, n: usize, what: &str) -> Result<String, ContainerError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| ContainerError::HeaderMalformed(format!("{what} is not UTF-8")))
    }
}

/// Read and parse the header (no key needed). Returns the header and its SHA-256.
pub fn read_header<R: Read>(r: &mut R) -> Result<(Header, [u8; 32]), ContainerError> {
    let mut fixed = [0u8; 12];
    let n = read_full(r, &mut fixed)?;
    let m = n.min(MAGIC.len());
    if fixed[..m] != MAGIC[..m] {
        return Err(ContainerError::BadMagic);
    }
    if n < fixed.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    let version = u16::from_be_bytes([fixed[6], fixed[7]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_OPUS {
        return Err(ContainerError::UnsupportedVersion(version));
    }
    let body_len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if body_len > MAX_HEADER_BODY {
        return Err(ContainerError::HeaderMalformed(format!(
            "header length {body_len} too large"
        )));
    }
    let mut body = vec![0u8; body_len as usize];
    if read_full(r, &mut body)? < body.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    let mut c = Cursor { b: &body };
    let n = usize::from(c.u16()?);
    let recording_id = c.string(n, "recording_id")?;
    let created_unix_ms = c.u64()?;
    let sample_rate = c.u32()?;
    let channels = c.u16()?;
    let sample_format = match c.arr::<1>()? {
        [1] => SampleFormat::S16Le,
        [2] if version >= FORMAT_VERSION_OPUS => SampleFormat::Opus,
        [other] => {
            return Err(ContainerError::HeaderMalformed(format!(
                "unknown sample format {other}"
            )))
        }
    };
    let chunk_target_frames = c.u32()?;
    let slot_count = c.arr::<1>()?[0];
    let slot_len = c.u16()?;
    if usize::from(slot_count) != KEY_SLOT_COUNT || usize::from(slot_len) != KEY_SLOT_LEN {
        return Err(ContainerError::HeaderMalformed(format!(
            "key slot layout {slot_count}×{slot_len}, expected {KEY_SLOT_COUNT}×{KEY_SLOT_LEN}"
        )));
    }
    let nonce_prefix = c.arr::<NONCE_PREFIX_LEN>()?;
    let n = c.u32()? as usize;
    let extra_json = c.string(n, "extra_json")?;
    let opus = if version >= FORMAT_VERSION_OPUS {
        let n = usize::from(c.u16()?);
        let params = c.take(n)?;
        match sample_format {
            SampleFormat::Opus => Some(OpusParams::decode(params)?),
            SampleFormat::S16Le if params.is_empty() => None,
            SampleFormat::S16Le => {
                return Err(ContainerError::HeaderMalformed(
                    "codec parameters for PCM audio".into(),
                ))
            }
        }
    } else {
        None
    };
    if !c.b.is_empty() {
        return Err(ContainerError::HeaderMalformed(
            "trailing bytes in header".into(),
        ));
    }
    let mut header = Header {
        format_version: version,
        recording_id,
        created_unix_ms,
        sample_rate,
        channels,
        sample_format,
        opus,
        chunk_target_frames,
        nonce_prefix,
        extra_json,
        key_slots: Vec::new(),
    };
    header.validate().map_err(ContainerError::HeaderMalformed)?;
    let mut h = Sha256::new();
    h.update(fixed);
    h.update(&body);
    let header_hash: [u8; 32] = h.finalize().into();
    let mut slots = [0u8; KEY_SLOT_LEN * KEY_SLOT_COUNT];
    if read_full(r, &mut slots)? < slots.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    header.key_slots = slots
        .chunks_exact(KEY_SLOT_LEN)
        .map(|s| KeySlot::decode(s, &header_hash))
        .collect();
    Ok((header, header_hash))
}

/// Unwrap a recording's data key from its key slots: the highest generation first,
/// falling back to older slots (e.g. mid-rotation, or a KEK this vault does not hold).
pub fn unwrap_data_key(header: &Header, vault: &dyn KeyWrap) -> Result<DataKey, ContainerError> {
    let mut slots: Vec<&KeySlot> = header.key_slots.iter().flatten().collect();
    slots.sort_by_key(|s| std::cmp::Reverse(s.generation));
    let mut last_err = None;
    for s in slots {
        match vault.unwrap(&s.kek_id, &s.wrapped_key) {
            Ok(dk) => return Ok(dk),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.map_or(ContainerError::NoKeySlot, ContainerError::Key))
}

/// SHA-256 of a container's content: the authenticated header and every byte after the
/// key-slot area (the chunks), i.e. everything except the key slots, which rotation and
/// shredding rewrite. Returns the digest and the number of bytes hashed. The same value
/// as [`FinishedContainer::sha256`].
pub fn content_sha256<R: Read>(mut r: R) -> Result<([u8; 32], u64), ContainerError> {
    let mut fixed = [0u8; 12];
    if read_full(&mut r, &mut fixed)? < fixed.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    if &fixed[..6] != MAGIC {
        return Err(ContainerError::BadMagic);
    }
    let body_len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if body_len > MAX_HEADER_BODY {
        return Err(ContainerError::HeaderMalformed("header too large".into()));
    }
    let mut h = Sha256::new();
    h.update(fixed);
    let mut body = vec![0u8; body_len as usize];
    if read_full(&mut r, &mut body)? < body.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    h.update(&body);
    let mut n = 12 + u64::from(body_len);
    let mut slots = [0u8; KEY_SLOT_LEN * KEY_SLOT_COUNT];
    if read_full(&mut r, &mut slots)? < slots.len() {
        return Err(ContainerError::HeaderTruncated);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = read_full(&mut r, &mut buf)?;
        if k == 0 {
            break;
        }
        h.update(buf.get(..k).unwrap_or_default());
        n += k as u64;
    }
    Ok((h.finalize().into(), n))
}

/// Verifying, streaming container reader.
pub struct ContainerReader<R: Read> {
    r: R,
    header: Header,
    header_hash: [u8; 32],
    cipher: Aes256Gcm,
    counter: u32,
    next_frame: u64,
    /// Opus packets read so far.
    packets: u64,
    /// SHA-256 over the audio bytes of every verified chunk (what the writer's
    /// `audio_sha256` covers).
    audio_hasher: Sha256,
    done: bool,
}

impl<R: Read> ContainerReader<R> {
    /// Parse the header and unwrap the data key through `vault`.
    pub fn open(mut r: R, vault: &dyn KeyWrap) -> Result<Self, ContainerError> {
        let (header, header_hash) = read_header(&mut r)?;
        let dk = unwrap_data_key(&header, vault)?;
        Ok(ContainerReader {
            r,
            cipher: Aes256Gcm::new(dk.as_bytes().into()),
            header,
            header_hash,
            counter: 0,
            next_frame: 0,
            packets: 0,
            audio_hasher: Sha256::new(),
            done: false,
        })
    }

    /// The parsed header (authenticated only once chunk 0 has verified).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// SHA-256 of the header bytes.
    pub fn header_hash(&self) -> [u8; 32] {
        self.header_hash
    }

    /// Chunks verified so far.
    pub fn valid_chunks(&self) -> u32 {
        self.counter
    }

    /// Frames in the chunks verified so far.
    pub fn frames(&self) -> u64 {
        self.next_frame
    }

    /// What an error of [`next_chunk`](Self::next_chunk) means for a reader that accepts
    /// an interrupted recording's verified prefix (`allow_interrupted`): a missing final
    /// chunk or a torn tail end the prefix (`Ok(Interrupted)`); anything else stays an
    /// error.
    pub fn end_of_prefix(
        &self,
        e: ContainerError,
        allow_interrupted: bool,
    ) -> Result<ScanState, ContainerError> {
        match e {
            ContainerError::MissingFinalChunk {
                valid_chunks,
                frames,
            } if allow_interrupted => Ok(ScanState::Interrupted {
                valid_chunks,
                frames,
                torn_tail: false,
            }),
            ContainerError::ChunkTruncated { .. } if allow_interrupted => {
                Ok(ScanState::Interrupted {
                    valid_chunks: self.valid_chunks(),
                    frames: self.frames(),
                    torn_tail: true,
                })
            }
            e => Err(e),
        }
    }

    /// SHA-256 of the stored audio of the chunks verified so far (PCM bytes, or the
    /// length-prefixed Opus packet stream): equals [`FinishedContainer::audio_sha256`]
    /// once the final chunk is read.
    pub fn audio_sha256(&self) -> [u8; 32] {
        self.audio_hasher.clone().finalize().into()
    }

    /// The next verified chunk; `Ok(None)` after the final chunk (once the absence of
    /// trailing data is confirmed). Errors are sticky in effect: stop at the first one.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ContainerError> {
        if self.done {
            return Ok(None);
        }
        let chunk = self.counter;
        let mut len_buf = [0u8; 4];
        match read_full(&mut self.r, &mut len_buf)? {
            0 => {
                return Err(ContainerError::MissingFinalChunk {
                    valid_chunks: self.counter,
                    frames: self.next_frame,
                })
            }
            4 => {}
            _ => return Err(ContainerError::ChunkTruncated { chunk }),
        }
        let len = u32::from_be_bytes(len_buf);
        if u64::from(len) > self.header.max_chunk_ciphertext()
            || (len as usize) < CHUNK_PLAIN_HEADER_LEN + TAG_LEN
        {
            return Err(ContainerError::ChunkLength { chunk, len });
        }
        let mut buf = vec![0u8; len as usize];
        if read_full(&mut self.r, &mut buf)? < buf.len() {
            return Err(ContainerError::ChunkTruncated { chunk });
        }
        let (body, tag) = buf.split_at_mut(len as usize - TAG_LEN);
        let tag = Tag::clone_from_slice(tag);
        let mut last = false;
        let mut ok = false;
        for flag in [false, true] {
            let nonce = nonce_for(&self.header.nonce_prefix, chunk, flag);
            // On failure the buffer is left untouched (tag is checked before decrypting).
            if self
                .cipher
                .decrypt_in_place_detached(Nonce::from_slice(&nonce), &self.header_hash, body, &tag)
                .is_ok()
            {
                last = flag;
                ok = true;
                break;
            }
        }
        if !ok {
            return Err(ContainerError::ChunkAuth { chunk });
        }
        let (ph, audio) = body.split_at(CHUNK_PLAIN_HEADER_LEN);
        let mut c = Cursor { b: ph };
        let start_frame = c.u64()?;
        let frames = c.u32()?;
        let ch = usize::from(self.header.channels);
        let malformed = |reason: String| ContainerError::ChunkMalformed { chunk, reason };
        let mut packets = Vec::new();
        match &self.header.opus {
            None => {
                if frames > self.header.chunk_target_frames
                    || audio.len() != frames as usize * ch * 2
                {
                    return Err(malformed(format!(
                        "{frames} frames but {} audio bytes",
                        audio.len()
                    )));
                }
            }
            Some(o) => {
                let list = opus::parse_packets(audio).map_err(|e| malformed(e.to_string()))?;
                let covered = list.len() as u64 * u64::from(o.frame_size);
                let ok = if last {
                    u64::from(frames) <= covered
                        && list.len() as u64 <= o.max_packets(self.header.chunk_target_frames)
                        && (self.packets + list.len() as u64) * u64::from(o.frame_size)
                            >= self.next_frame + u64::from(frames) + u64::from(o.pre_skip)
                } else {
                    u64::from(frames) == covered
                };
                if !ok || frames > self.header.chunk_target_frames {
                    return Err(malformed(format!(
                        "{frames} frames in {} Opus packets{}",
                        list.len(),
                        if last { " (final chunk)" } else { "" }
                    )));
                }
                packets = list.into_iter().map(<[u8]>::to_vec).collect();
            }
        }
        if start_frame != self.next_frame {
            return Err(ContainerError::Discontinuity {
                chunk,
                expected: self.next_frame,
                got: start_frame,
            });
        }
        let samples: Vec<i16> = if self.header.opus.is_some() {
            Vec::new()
        } else {
            audio
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        self.counter += 1;
        self.next_frame += u64::from(frames);
        self.packets += packets.len() as u64;
        self.audio_hasher.update(audio);
        if last {
            let mut probe = [0u8; 1];
            if read_full(&mut self.r, &mut probe)? != 0 {
                return Err(ContainerError::TrailingData { after_chunk: chunk });
            }
            self.done = true;
        }
        Ok(Some(Chunk {
            index: chunk,
            start_frame,
            frames,
            last,
            samples,
            packets,
        }))
    }
}

/// Integrity state of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanState {
    /// All chunks verify and the final chunk is present.
    Complete,
    /// A valid prefix without a final chunk: the writer stopped (crash, power loss).
    /// `torn_tail` is set when the file also ends inside a partially written chunk.
    Interrupted {
        /// Chunks that verified.
        valid_chunks: u32,
        /// Frames in them.
        frames: u64,
        /// The file ends inside a chunk.
        torn_tail: bool,
    },
    /// A chunk failed verification (tampering or corruption).
    Damaged {
        /// Index of the first bad chunk.
        at_chunk: u32,
        /// Why.
        reason: String,
    },
}

/// Result of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The container's header.
    pub header: Header,
    /// Integrity state.
    pub state: ScanState,
    /// Frames in the verified prefix.
    pub frames: u64,
    /// Chunks that verified.
    pub valid_chunks: u32,
}

/// Verify a whole container. Errors only if the header cannot be parsed, the key cannot
/// be unwrapped or reading fails; chunk problems are reported in the [`ScanReport`].
pub fn scan<R: Read>(r: R, vault: &dyn KeyWrap) -> Result<ScanReport, ContainerError> {
    let mut rd = ContainerReader::open(r, vault)?;
    let state = loop {
        match rd.next_chunk() {
            Ok(Some(c)) if c.last => {
                // next_chunk already confirmed there is no trailing data.
                break ScanState::Complete;
            }
            Ok(Some(_)) => {}
            Ok(None) => break ScanState::Complete,
            Err(ContainerError::MissingFinalChunk {
                valid_chunks,
                frames,
            }) => {
                break ScanState::Interrupted {
                    valid_chunks,
                    frames,
                    torn_tail: false,
                }
            }
            Err(ContainerError::ChunkTruncated { .. }) => {
                break ScanState::Interrupted {
                    valid_chunks: rd.valid_chunks(),
                    frames: rd.frames(),
                    torn_tail: true,
                }
            }
            Err(ContainerError::Io(e)) => return Err(ContainerError::Io(e)),
            Err(e) => {
                break ScanState::Damaged {
                    at_chunk: rd.valid_chunks(),
                    reason: e.to_string(),
                }
            }
        }
    };
    Ok(ScanReport {
        frames: rd.frames(),
        valid_chunks: rd.valid_chunks(),
        header: rd.header.clone(),
        state,
    })
}

/// Streams the decoded audio (interleaved s16 at the recording rate) of a container:
/// PCM chunks as stored, Opus chunks decoded with the encoder delay removed and the end
/// trimmed, so the audio is exactly as long as the frames the chunks account for.
/// Memory use is one chunk.
pub struct PcmStream<R: Read> {
    rd: ContainerReader<R>,
    dec: Option<OpusStreamDecoder>,
    allow_interrupted: bool,
    state: Option<ScanState>,
}

impl<R: Read> PcmStream<R> {
    /// Open a container. With `allow_interrupted` a missing final chunk or a torn tail
    /// ends the stream (the verified prefix, see [`read_valid_prefix`]) instead of
    /// failing.
    pub fn open(
        r: R,
        vault: &dyn KeyWrap,
        allow_interrupted: bool,
    ) -> Result<Self, ContainerError> {
        let rd = ContainerReader::open(r, vault)?;
        let dec = match &rd.header().opus {
            Some(o) => Some(
                OpusStreamDecoder::new(
                    rd.header().sample_rate,
                    rd.header().channels,
                    u32::from(o.pre_skip),
                    0,
                )
                .map_err(|e| ContainerError::HeaderMalformed(e.to_string()))?,
            ),
            None => None,
        };
        Ok(PcmStream {
            rd,
            dec,
            allow_interrupted,
            state: None,
        })
    }

    /// The container header.
    pub fn header(&self) -> &Header {
        self.rd.header()
    }

    /// The underlying reader (frames, chunk count, audio hash so far).
    pub fn reader(&self) -> &ContainerReader<R> {
        &self.rd
    }

    /// The underlying reader, to read chunks directly (Opus packets without decoding).
    /// Mixing this with [`next_into`](Self::next_into) skips audio.
    pub fn reader_mut(&mut self) -> &mut ContainerReader<R> {
        &mut self.rd
    }

    /// How the stream ended (`None` until it has).
    pub fn state(&self) -> Option<&ScanState> {
        self.state.as_ref()
    }

    /// Append the next piece of audio to `out`; `Ok(false)` once the stream has ended
    /// (then [`state`](Self::state) says how).
    pub fn next_into(&mut self, out: &mut Vec<i16>) -> Result<bool, ContainerError> {
        if self.state.is_some() {
            return Ok(false);
        }
        let ended = match self.rd.next_chunk() {
            Ok(Some(c)) => {
                match &mut self.dec {
                    None => out.extend_from_slice(&c.samples),
                    Some(d) => {
                        d.set_limit(self.rd.frames());
                        for p in &c.packets {
                            d.decode(p, out)
                                .map_err(|e| ContainerError::ChunkMalformed {
                                    chunk: c.index,
                                    reason: format!("Opus packet does not decode: {e}"),
                                })?;
                        }
                        if c.last {
                            d.finish(out);
                        }
                    }
                }
                if !c.last {
                    return Ok(true);
                }
                ScanState::Complete
            }
            Ok(None) => ScanState::Complete,
            Err(e) => self.rd.end_of_prefix(e, self.allow_interrupted)?,
        };
        if let Some(d) = &mut self.dec {
            // Interrupted: the last `pre_skip` frames never left the encoder.
            d.finish(out);
        }
        self.state = Some(ended);
        Ok(true)
    }
}

/// Read and verify a complete recording. Refuses (with the error naming the chunk)
/// anything that is not a complete, intact container rather than return wrong audio.
/// Opus recordings are decoded.
pub fn read_all_audio<R: Read>(
    r: R,
    vault: &dyn KeyWrap,
) -> Result<(Header, Vec<i16>), ContainerError> {
    let mut st = PcmStream::open(r, vault, false)?;
    let mut samples = Vec::new();
    while st.next_into(&mut samples)? {}
    Ok((st.header().clone(), samples))
}

/// Read the verified prefix of a possibly interrupted recording (recovery after a
/// crash): the audio of every chunk that verifies, and the scan state. Damaged
/// containers are still refused.
pub fn read_valid_prefix<R: Read>(
    r: R,
    vault: &dyn KeyWrap,
) -> Result<(Header, Vec<i16>, ScanState), ContainerError> {
    let mut st = PcmStream::open(r, vault, true)?;
    let mut samples = Vec::new();
    while st.next_into(&mut samples)? {}
    let state = st.state().cloned().unwrap_or(ScanState::Complete);
    Ok((st.header().clone(), samples, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_kek::TestKek as KeyFileVault;

    struct Rec {
        file: Vec<u8>,
        /// Byte offsets of each chunk (its length prefix) in `file`.
        chunk_offsets: Vec<usize>,
        audio: Vec<i16>,
        fin: FinishedContainer,
    }

    fn params(vault: &KeyFileVault, id: &str) -> HeaderParams {
        HeaderParams {
            recording_id: id.into(),
            created_unix_ms: 1_700_000_000_123,
            sample_rate: 8000,
            channels: 2,
            chunk_target_frames: 0,
            kek_id: vault.kek_id(),
            extra_json: r#"{"call":"x"}"#.into(),
        }
    }

    fn chunk_offsets(file: &[u8], header_len: usize) -> Vec<usize> {
        let mut v = Vec::new();
        let mut i = header_len;
        while i + 4 <= file.len() {
            v.push(i);
            let len = u32::from_be_bytes(file[i..i + 4].try_into().unwrap()) as usize;
            i += 4 + len;
        }
        assert_eq!(i, file.len());
        v
    }

    /// A 3.7 s stereo recording written in 20 ms blocks with a flush after 1.5 s.
    fn record(vault: &KeyFileVault, id: &str, seed: i32) -> Rec {
        let dk = DataKey::from_bytes([seed as u8; 32]);
        let wrapped = vault.wrap(&dk).unwrap();
        let (mut w, mut file) =
            ContainerWriter::new(params(vault, id), dk, wrapped, [seed as u8; 7]).unwrap();
        let header_len = w.header().chunks_offset().unwrap() as usize;
        let mut audio = Vec::new();
        let mut frame = 0u64;
        for k in 0..185 {
            let samples: Vec<i16> = (0..320)
                .map(|i| ((k * 320 + i) * seed % 65521 - 32000) as i16)
                .collect();
            audio.extend_from_slice(&samples);
            w.push_block(&AudioBlock {
                start_frame: frame,
                samples,
            })
            .unwrap();
            frame += 160;
            while let Some(c) = w.poll_chunk() {
                file.extend_from_slice(&c);
            }
            if k == 75 {
                file.extend_from_slice(&w.flush().unwrap());
            }
        }
        let fin = w.finish();
        file.extend_from_slice(&fin.bytes);
        Rec {
            chunk_offsets: chunk_offsets(&file, header_len),
            file,
            audio,
            fin,
        }
    }

    fn vault() -> KeyFileVault {
        KeyFileVault::from_key([42; 32])
    }

    #[test]
    fn round_trip() {
        let v = vault();
        let r = record(&v, "8d7e0c1e-5a55-4a53-9d0c-3c8f1d2a7b10", 7);
        let (h, audio) = read_all_audio(&r.file[..], &v).unwrap();
        assert_eq!(audio, r.audio);
        assert_eq!(h.recording_id, "8d7e0c1e-5a55-4a53-9d0c-3c8f1d2a7b10");
        assert_eq!(
            (h.sample_rate, h.channels, h.chunk_target_frames),
            (8000, 2, 8000)
        );
        assert_eq!(h.created_unix_ms, 1_700_000_000_123);
        assert_eq!(h.extra_json, r#"{"call":"x"}"#);
        // Running hash and size cover the whole file.
        assert_eq!(r.fin.total_bytes, r.file.len() as u64);
        let (sum, n) = content_sha256(&r.file[..]).unwrap();
        assert_eq!(r.fin.sha256, sum);
        assert_eq!(
            n,
            r.file.len() as u64 - (KEY_SLOT_LEN * KEY_SLOT_COUNT) as u64
        );
        assert_eq!(r.fin.frames, 185 * 160);
        let pcm: Vec<u8> = r.audio.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(r.fin.audio_sha256, <[u8; 32]>::from(Sha256::digest(&pcm)));
        // Chunk 0, 1 full chunk, flushed remainder of 1.52 s, 2 full chunks, final.
        assert_eq!(r.chunk_offsets.len() as u32, r.fin.chunks);
        assert_eq!(r.fin.chunks, 6);
        let rep = scan(&r.file[..], &v).unwrap();
        assert_eq!(rep.state, ScanState::Complete);
        assert_eq!(rep.frames, 185 * 160);
        // Every chunk starts where the previous ended.
        let mut rd = ContainerReader::open(&r.file[..], &v).unwrap();
        let mut next = 0;
        while let Some(c) = rd.next_chunk().unwrap() {
            assert_eq!(c.start_frame, next);
            assert!(c.frames <= 8000);
            next += u64::from(c.frames);
        }
    }

    #[test]
    fn empty_recording_round_trips() {
        let v = vault();
        let dk = DataKey::from_bytes([1; 32]);
        let (w, mut file) =
            ContainerWriter::new(params(&v, "e"), dk.clone(), v.wrap(&dk).unwrap(), [0; 7])
                .unwrap();
        file.extend_from_slice(&w.finish().bytes);
        let (_, audio) = read_all_audio(&file[..], &v).unwrap();
        assert!(audio.is_empty());
    }

    fn damaged_at(file: &[u8], v: &KeyFileVault) -> u32 {
        match scan(file, v).unwrap().state {
            ScanState::Damaged { at_chunk, .. } => at_chunk,
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn header_edits_detected() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let hlen = r.chunk_offsets[0] - KEY_SLOT_LEN * KEY_SLOT_COUNT;
        for i in 0..hlen {
            let mut f = r.file.clone();
            f[i] ^= 0x04;
            let scanned = scan(&f[..], &v);
            let ok = match &scanned {
                Err(_) => true,
                Ok(rep) => matches!(rep.state, ScanState::Damaged { at_chunk: 0, .. }),
            };
            assert!(ok, "header byte {i} flip not detected: {scanned:?}");
            assert!(read_all_audio(&f[..], &v).is_err());
        }
    }

    #[test]
    fn chunk_and_tag_flips_detected() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        for (n, &off) in r.chunk_offsets.iter().enumerate() {
            let len = u32::from_be_bytes(r.file[off..off + 4].try_into().unwrap()) as usize;
            // First ciphertext byte, a middle byte, last tag byte.
            for pos in [off + 4, off + 4 + len / 2, off + 3 + len] {
                let mut f = r.file.clone();
                f[pos] ^= 0x80;
                assert_eq!(damaged_at(&f, &v), n as u32, "chunk {n} byte {pos}");
                match read_all_audio(&f[..], &v) {
                    Err(ContainerError::ChunkAuth { chunk }) => assert_eq!(chunk, n as u32),
                    other => panic!("expected ChunkAuth, got {other:?}"),
                }
            }
            // Length prefix edits: a different length desynchronises the chunk.
            let mut f = r.file.clone();
            f[off + 3] ^= 0x01;
            assert!(!matches!(
                scan(&f[..], &v).unwrap().state,
                ScanState::Complete
            ));
        }
    }

    #[test]
    fn truncation_detected() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let last = *r.chunk_offsets.last().unwrap();
        // Drop the final chunk: interrupted at a chunk boundary.
        let rep = scan(&r.file[..last], &v).unwrap();
        assert_eq!(
            rep.state,
            ScanState::Interrupted {
                valid_chunks: 5,
                frames: r.fin.frames - rep_last_frames(&r),
                torn_tail: false
            }
        );
        assert!(matches!(
            read_all_audio(&r.file[..last], &v),
            Err(ContainerError::MissingFinalChunk {
                valid_chunks: 5,
                ..
            })
        ));
        // The valid prefix is still recoverable, and equals the start of the audio.
        let (_, prefix, st) = read_valid_prefix(&r.file[..last], &v).unwrap();
        assert!(matches!(st, ScanState::Interrupted { .. }));
        assert_eq!(prefix[..], r.audio[..prefix.len()]);
        // Truncate mid-chunk (also inside the length prefix).
        for cut in [
            r.chunk_offsets[2] + 100,
            r.chunk_offsets[2] + 2,
            r.file.len() - 1,
        ] {
            let rep = scan(&r.file[..cut], &v).unwrap();
            assert!(
                matches!(
                    rep.state,
                    ScanState::Interrupted {
                        torn_tail: true,
                        ..
                    }
                ),
                "cut {cut}: {rep:?}"
            );
            assert!(matches!(
                read_all_audio(&r.file[..cut], &v),
                Err(ContainerError::ChunkTruncated { .. })
            ));
        }
        // Truncated header.
        assert!(matches!(
            scan(&r.file[..20], &v),
            Err(ContainerError::HeaderTruncated)
        ));
        assert!(matches!(
            scan(&b"RIFF...."[..], &v),
            Err(ContainerError::BadMagic)
        ));
        // Trailing garbage after the final chunk.
        let mut f = r.file.clone();
        f.push(0);
        assert!(matches!(
            scan(&f[..], &v).unwrap().state,
            ScanState::Damaged { .. }
        ));
    }

    fn rep_last_frames(r: &Rec) -> u64 {
        let mut rd = ContainerReader::open(&r.file[..], &vault()).unwrap();
        let mut last = 0;
        while let Some(c) = rd.next_chunk().unwrap() {
            last = u64::from(c.frames);
        }
        last
    }

    fn splice(file: &[u8], offs: &[usize], order: &[usize]) -> Vec<u8> {
        let mut out = file[..offs[0]].to_vec();
        let bounds = |i: usize| (offs[i], offs.get(i + 1).copied().unwrap_or(file.len()));
        for &i in order {
            let (a, b) = bounds(i);
            out.extend_from_slice(&file[a..b]);
        }
        out
    }

    #[test]
    fn reorder_and_drop_detected() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let f = splice(&r.file, &r.chunk_offsets, &[0, 2, 1, 3, 4, 5]);
        assert_eq!(damaged_at(&f, &v), 1);
        let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 3, 4, 5]);
        assert_eq!(damaged_at(&f, &v), 2);
        let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 1, 2, 3, 4, 5]);
        assert_eq!(damaged_at(&f, &v), 2);
        // Final chunk moved before the end.
        let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 5, 2]);
        assert_eq!(damaged_at(&f, &v), 2);
    }

    #[test]
    fn splice_between_recordings_detected() {
        let v = vault();
        let a = record(&v, "rec-a", 3);
        // Same key and nonce prefix, different header (recording id): header hash differs.
        let b = record(&v, "rec-b", 3);
        // Different key/prefix altogether.
        let c = record(&v, "rec-c", 5);
        for other in [&b, &c] {
            let mut f = a.file[..a.chunk_offsets[2]].to_vec();
            f.extend_from_slice(&other.file[other.chunk_offsets[2]..other.chunk_offsets[3]]);
            f.extend_from_slice(&a.file[a.chunk_offsets[3]..]);
            assert_eq!(damaged_at(&f, &v), 2);
        }
        // B's header with A's chunks.
        let mut f = b.file[..b.chunk_offsets[0]].to_vec();
        f.extend_from_slice(&a.file[a.chunk_offsets[0]..]);
        assert_eq!(damaged_at(&f, &v), 0);
    }

    #[test]
    fn key_slot_damage_and_second_slot() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let (h, hh) = read_header(&mut &r.file[..]).unwrap();
        let s0 = h.slot_offset(0).unwrap() as usize;
        let s1 = h.slot_offset(1).unwrap() as usize;
        assert_eq!(h.key_slots[1], None);
        let slot = h.key_slots[0].clone().unwrap();
        assert_eq!(slot.generation, 1);
        assert_eq!(slot.kek_id, v.kek_id());
        // A flip anywhere in the used slot empties it: no key, no audio.
        for i in [0, 5, 40, 200, KEY_SLOT_LEN - 1] {
            let mut f = r.file.clone();
            f[s0 + i] ^= 1;
            assert!(matches!(
                read_all_audio(&f[..], &v),
                Err(ContainerError::NoKeySlot)
            ));
        }
        // A second slot under another KEK, higher generation: a vault holding only the
        // new KEK reads the file; the content hash does not change.
        let v2 = KeyFileVault::from_key([7; 32]);
        let dk = unwrap_data_key(&h, &v).unwrap();
        let new = KeySlot {
            generation: 2,
            kek_id: v2.kek_id(),
            wrapped_key: v2.wrap(&dk).unwrap(),
        };
        let mut f = r.file.clone();
        f[s1..s1 + KEY_SLOT_LEN].copy_from_slice(&new.encode(&hh).unwrap());
        assert_eq!(read_all_audio(&f[..], &v2).unwrap().1, r.audio);
        assert_eq!(read_all_audio(&f[..], &v).unwrap().1, r.audio);
        assert_eq!(
            content_sha256(&f[..]).unwrap(),
            content_sha256(&r.file[..]).unwrap()
        );
        // A slot from another recording (other header hash) reads as empty.
        let other = record(&v, "rec-b", 3);
        let (oh, _) = read_header(&mut &other.file[..]).unwrap();
        let os0 = oh.slot_offset(0).unwrap() as usize;
        let mut f = r.file.clone();
        f[s0..s0 + KEY_SLOT_LEN].copy_from_slice(&other.file[os0..os0 + KEY_SLOT_LEN]);
        assert!(matches!(
            read_all_audio(&f[..], &v),
            Err(ContainerError::NoKeySlot)
        ));
    }

    #[test]
    fn wrong_kek_refused() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let other = KeyFileVault::from_key([43; 32]);
        assert!(matches!(
            scan(&r.file[..], &other),
            Err(ContainerError::Key(VaultError::UnknownKek(_)))
        ));
        assert!(matches!(
            read_all_audio(&r.file[..], &other),
            Err(ContainerError::Key(_))
        ));
    }

    #[test]
    fn writer_block_continuity() {
        let v = vault();
        let dk = DataKey::from_bytes([1; 32]);
        let (mut w, mut file) =
            ContainerWriter::new(params(&v, "g"), dk.clone(), v.wrap(&dk).unwrap(), [0; 7])
                .unwrap();
        w.push_block(&AudioBlock {
            start_frame: 0,
            samples: vec![5; 20],
        })
        .unwrap();
        // Gap of 5 frames → silence; overlap refused.
        w.push_block(&AudioBlock {
            start_frame: 15,
            samples: vec![6; 4],
        })
        .unwrap();
        assert!(matches!(
            w.push_block(&AudioBlock {
                start_frame: 16,
                samples: vec![7; 2]
            }),
            Err(ContainerError::BlockDiscontinuity {
                expected: 17,
                got: 16
            })
        ));
        file.extend_from_slice(&w.flush().unwrap());
        assert!(w.flush().is_none());
        file.extend_from_slice(&w.finish().bytes);
        let (_, audio) = read_all_audio(&file[..], &v).unwrap();
        let mut exp = vec![5i16; 20];
        exp.extend_from_slice(&[0; 10]);
        exp.extend_from_slice(&[6; 4]);
        assert_eq!(audio, exp);
    }

    #[test]
    fn invalid_params_refused() {
        let v = vault();
        let mut p = params(&v, "x");
        p.channels = 0;
        let dk = DataKey::from_bytes([1; 32]);
        assert!(ContainerWriter::new(p, dk.clone(), vec![], [0; 7]).is_err());
        let mut p = params(&v, "x");
        p.recording_id = "x".repeat(70000);
        assert!(ContainerWriter::new(p, dk, vec![], [0; 7]).is_err());
    }

    #[test]
    fn random_mutations_never_pass_or_panic() {
        let v = vault();
        let r = record(&v, "rec-a", 3);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..60 {
            let mut f = r.file.clone();
            let pos = (next() % f.len() as u64) as usize;
            let bit = 1u8 << (next() % 8);
            f[pos] ^= bit;
            if next() % 4 == 0 {
                let cut = (next() % f.len() as u64) as usize;
                f.truncate(cut);
            }
            // A flip in the unused key slot changes nothing that matters; anything
            // accepted must be exactly the recorded audio.
            if let Ok((_, audio)) = read_all_audio(&f[..], &v) {
                assert_eq!(audio, r.audio, "mutation at {pos} gave wrong audio");
                let slot1 = r.chunk_offsets[0] - KEY_SLOT_LEN..r.chunk_offsets[0];
                assert!(slot1.contains(&pos), "mutation at {pos} accepted");
            }
            let _ = scan(&f[..], &v);
        }
    }

    fn record_opus(
        v: &KeyFileVault,
        rate: u32,
        frames: usize,
        cut_before_finish: bool,
    ) -> (Vec<u8>, Vec<i16>, Option<FinishedContainer>) {
        let dk = DataKey::from_bytes([9; 32]);
        let mut p = params(v, "opus-rec");
        p.sample_rate = rate;
        p.chunk_target_frames = rate / 2;
        let (mut w, mut file) = ContainerWriter::with_format(
            p,
            Some(OpusSettings::default()),
            dk.clone(),
            v.wrap(&dk).unwrap(),
            [3; 7],
        )
        .unwrap();
        let audio = crate::recording::opus::tests::two_voices(rate, frames);
        let mut frame = 0u64;
        // Timeline blocks of 20 ms with one 70 ms gap (silence) in the middle.
        let step = (rate / 50) as usize;
        let mut k = 0;
        while (frame as usize) < frames {
            let n = step.min(frames - frame as usize);
            let samples = audio[frame as usize * 2..(frame as usize + n) * 2].to_vec();
            if k == 40 {
                // A gap: the writer fills it with silence.
                frame += n as u64;
                k += 1;
                continue;
            }
            w.push_block(&AudioBlock {
                start_frame: frame,
                samples,
            })
            .unwrap();
            frame += n as u64;
            k += 1;
            while let Some(c) = w.poll_chunk() {
                file.extend_from_slice(&c);
            }
            if k % 13 == 0 {
                if let Some(c) = w.flush() {
                    file.extend_from_slice(&c);
                }
            }
        }
        let mut expected = audio.clone();
        for x in &mut expected[40 * step * 2..41 * step * 2] {
            *x = 0;
        }
        if cut_before_finish {
            return (file, expected, None);
        }
        let fin = w.finish();
        file.extend_from_slice(&fin.bytes);
        (file, expected, Some(fin))
    }

    #[test]
    fn opus_round_trip_exact_length_and_hashes() {
        let v = vault();
        for rate in [8000, 16000] {
            let frames = rate as usize * 4 + 37;
            let (file, expected, fin) = record_opus(&v, rate, frames, false);
            let fin = fin.unwrap();
            let (h, audio) = read_all_audio(&file[..], &v).unwrap();
            assert_eq!(h.format_version, FORMAT_VERSION_OPUS);
            assert_eq!(h.sample_format, SampleFormat::Opus);
            let o = h.opus.unwrap();
            assert_eq!(usize::from(o.frame_size), (rate / 50) as usize);
            assert!(o.pre_skip > 0);
            assert_eq!(audio.len(), expected.len(), "exact length at {rate} Hz");
            for ch in 0..2 {
                let c = crate::recording::opus::tests::corr(&expected, ch, &audio, ch, 0);
                assert!(c > 0.6, "rate {rate} ch {ch}: {c}");
            }
            assert_eq!(fin.frames, frames as u64);
            let rep = scan(&file[..], &v).unwrap();
            assert_eq!(rep.state, ScanState::Complete);
            assert_eq!(rep.frames, frames as u64);
            assert_eq!(content_sha256(&file[..]).unwrap().0, fin.sha256);
            // The reader's audio hash is the writer's (the length-prefixed packets).
            let mut rd = ContainerReader::open(&file[..], &v).unwrap();
            let mut stream = Vec::new();
            while let Some(c) = rd.next_chunk().unwrap() {
                crate::recording::opus::frame_packets(&c.packets, &mut stream);
                assert!(c.samples.is_empty());
            }
            assert_eq!(rd.audio_sha256(), fin.audio_sha256);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&stream)), fin.audio_sha256);
            // Compact: under 5 kB per second of call at the default 32 kbit/s.
            assert!((file.len() as f64) < 5000.0 * frames as f64 / f64::from(rate) + 4000.0);
        }
    }

    #[test]
    fn opus_interrupted_prefix_reads_and_tamper_detected() {
        let v = vault();
        let (file, expected, _) = record_opus(&v, 8000, 8000 * 3, true);
        let rep = scan(&file[..], &v).unwrap();
        let ScanState::Interrupted { frames, .. } = rep.state else {
            panic!("{rep:?}")
        };
        assert!(frames >= 8000 * 2, "flushed frames {frames}");
        let (_, audio, st) = read_valid_prefix(&file[..], &v).unwrap();
        assert!(matches!(st, ScanState::Interrupted { .. }));
        assert_eq!(audio.len() as u64, frames * 2);
        let c = crate::recording::opus::tests::corr(&expected[..audio.len()], 0, &audio, 0, 0);
        assert!(c > 0.6, "{c}");
        // A torn chunk at the end is still a readable prefix.
        let (_, audio2, st) = read_valid_prefix(&file[..file.len() - 7], &v).unwrap();
        assert!(matches!(
            st,
            ScanState::Interrupted {
                torn_tail: true,
                ..
            }
        ));
        assert!(audio2.len() <= audio.len());
        // Flipping a byte anywhere in the chunks is detected.
        let h = read_header(&mut &file[..]).unwrap().0;
        let c0 = h.chunks_offset().unwrap() as usize;
        for pos in [c0 + 10, c0 + 200, file.len() / 2, file.len() - 3] {
            let mut f = file.clone();
            f[pos] ^= 0x20;
            assert!(
                matches!(scan(&f[..], &v).unwrap().state, ScanState::Damaged { .. }),
                "{pos}"
            );
        }
    }

    #[test]
    fn version_2_pcm_files_unchanged() {
        // PCM recordings are still written as version 2, byte-compatible with the
        // readers of before Opus; version 3 headers parse the codec parameters.
        let v = vault();
        let r = record(&v, "rec-a", 3);
        assert_eq!(u16::from_be_bytes([r.file[6], r.file[7]]), FORMAT_VERSION);
        let (h, _) = read_header(&mut &r.file[..]).unwrap();
        assert_eq!((h.sample_format, h.opus), (SampleFormat::S16Le, None));
        let mut f = r.file.clone();
        f[7] = 4;
        assert!(matches!(
            scan(&f[..], &v),
            Err(ContainerError::UnsupportedVersion(4))
        ));
    }
}
