//! The authenticated header: its fields, deterministic encoding and parsing.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::slots::KeySlot;
use super::{read_full, ContainerError};
use crate::keys::{DataKey, KeyWrap};
use crate::recording::opus::{self, MAX_PACKET};

pub(super) use super::wire::{put_bytes16, put_str16, Cursor};
pub use super::wire::{
    slot_count_of_body, CHUNK_PLAIN_HEADER_LEN, COMPLIANCE_SLOT, FORMAT_VERSION,
    FORMAT_VERSION_OPUS, KEY_SLOT_COUNT, KEY_SLOT_LEN, KEY_SLOT_MAGIC, MAGIC,
    MAX_CHUNK_AUDIO_BYTES, MAX_HEADER_BODY, MAX_KEY_SLOT_COUNT, NONCE_PREFIX_LEN, TAG_LEN,
};

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

/// The header's on-disk creation time (`created_unix_ms`: unsigned unix milliseconds)
/// from the shell's wall clock; times before 1970 are stored as 0.
pub fn unix_ms_on_disk(t: crate::time::UnixMs) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(0)
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
    /// Key slots after the header: [`KEY_SLOT_COUNT`] (2), or 3 with the compliance
    /// slot ([`COMPLIANCE_SLOT`]). Part of the authenticated header.
    pub key_slot_count: usize,
    /// The key slots that follow the header (not part of the authenticated header;
    /// `None` = empty, shredded or torn). See [`KeySlot`].
    pub key_slots: Vec<Option<KeySlot>>,
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
        self.slot_offset(self.key_slot_count)
    }

    /// Bytes of the key-slot area.
    pub fn slot_area_len(&self) -> usize {
        self.key_slot_count * KEY_SLOT_LEN
    }

    /// The compliance slot, if the container has one and it is intact.
    pub fn compliance_slot(&self) -> Option<&KeySlot> {
        self.key_slots.get(COMPLIANCE_SLOT)?.as_ref()
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
        if self.key_slot_count != KEY_SLOT_COUNT && self.key_slot_count != MAX_KEY_SLOT_COUNT {
            return Err(ContainerError::InvalidParams("key slot count".into()));
        }
        body.push(self.key_slot_count as u8);
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

    pub(super) fn validate(&self) -> Result<(), String> {
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
    let key_slot_count = usize::from(slot_count);
    if (key_slot_count != KEY_SLOT_COUNT && key_slot_count != MAX_KEY_SLOT_COUNT)
        || usize::from(slot_len) != KEY_SLOT_LEN
    {
        return Err(ContainerError::HeaderMalformed(format!(
            "key slot layout {slot_count}×{slot_len}, expected {KEY_SLOT_COUNT} or {MAX_KEY_SLOT_COUNT}×{KEY_SLOT_LEN}"
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
        key_slot_count,
        key_slots: Vec::new(),
    };
    header.validate().map_err(ContainerError::HeaderMalformed)?;
    let mut h = Sha256::new();
    h.update(fixed);
    h.update(&body);
    let header_hash: [u8; 32] = h.finalize().into();
    let mut slots = vec![0u8; KEY_SLOT_LEN * key_slot_count];
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
