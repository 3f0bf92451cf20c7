//! The chunk writer: seals already-encoded audio (s16le PCM samples, or Opus packets
//! from the encoder stage in `recording::encode`) into authenticated chunks. It never
//! sees a codec: what goes into a chunk is decided here, how audio becomes packets is not.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use super::header::*;
use super::slots::KeySlot;
use super::{nonce_for, ContainerError};
use crate::keys::DataKey;
use crate::recording::opus;

/// What [`ChunkWriter::finish`] returns.
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
    /// Bytes of the key-slot area (2 or 3 slots): `total_bytes - slot_bytes` is the
    /// length the content hash covers.
    pub slot_bytes: u64,
    /// Audio frames stored.
    pub frames: u64,
    /// Chunks written, including chunk 0 and the final chunk.
    pub chunks: u32,
}

/// Sans-IO chunk writer: feed it encoded audio ([`push_pcm`](Self::push_pcm) or
/// [`push_packets`](Self::push_packets)), append the bytes it returns to the file.
pub struct ChunkWriter {
    cipher: Aes256Gcm,
    header: Header,
    header_hash: [u8; 32],
    counter: u32,
    /// Timeline frames accepted so far (PCM: samples pushed ÷ channels; Opus: the frames
    /// the encoder consumed, as its caller reports them).
    next_frame: u64,
    /// Frame index of the first buffered frame (PCM) or packet (Opus).
    pending_start: u64,
    /// PCM recordings: interleaved samples not yet sealed.
    pending: Vec<i16>,
    /// Opus recordings: packets not yet sealed.
    packets: Vec<Vec<u8>>,
    /// Opus recordings: frames per packet (0 for PCM).
    packet_frames: u64,
    hasher: Sha256,
    audio_hasher: Sha256,
    total_bytes: u64,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("recording_id", &self.header.recording_id)
            .field("counter", &self.counter)
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

impl ChunkWriter {
    /// Start a recording. Returns the writer and the bytes to write first: the header
    /// followed by chunk 0 (no audio), which authenticates the header on disk.
    /// `wrapped_key` is `data_key` wrapped under `params.kek_id`. With `opus` the chunks
    /// hold Opus packets of `opus.frame_size` frames (format version 3, sample format 2;
    /// the chunk target is rounded up to whole packets), else s16le PCM.
    pub fn new(
        params: HeaderParams,
        opus: Option<OpusParams>,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        Self::with_compliance(params, opus, data_key, wrapped_key, None, nonce_prefix)
    }

    /// Like [`new`](Self::new); with `compliance = Some((kek_id, wrapped))` the container
    /// gets a third key slot ([`COMPLIANCE_SLOT`]) holding the data key wrapped to the
    /// central compliance key (`crate::compliance`), else the two slots of before.
    pub fn with_compliance(
        params: HeaderParams,
        opus: Option<OpusParams>,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        compliance: Option<(String, Vec<u8>)>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        let mut target = if params.chunk_target_frames == 0 {
            params.sample_rate
        } else {
            params.chunk_target_frames
        };
        if let Some(o) = &opus {
            let frame = u32::from(o.frame_size);
            if frame == 0 {
                return Err(ContainerError::InvalidParams("Opus frame size 0".into()));
            }
            // Chunks hold whole packets.
            target = target.div_ceil(frame).max(1) * frame;
        }
        let header = Header {
            format_version: if opus.is_some() {
                FORMAT_VERSION_OPUS
            } else {
                FORMAT_VERSION
            },
            chunk_target_frames: target,
            recording_id: params.recording_id,
            created_unix_ms: params.created_unix_ms,
            sample_rate: params.sample_rate,
            channels: params.channels,
            sample_format: if opus.is_some() {
                SampleFormat::Opus
            } else {
                SampleFormat::S16Le
            },
            opus,
            nonce_prefix,
            extra_json: params.extra_json,
            key_slot_count: if compliance.is_some() {
                MAX_KEY_SLOT_COUNT
            } else {
                KEY_SLOT_COUNT
            },
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
        let compliance = compliance.map(|(kek_id, wrapped_key)| KeySlot {
            generation: 1,
            kek_id,
            wrapped_key,
        });
        let compliance_bytes = compliance
            .as_ref()
            .map(|s| s.encode(&header_hash))
            .transpose()?;
        let mut header = header;
        header.key_slots = vec![Some(slot), None];
        if let Some(c) = compliance {
            header.key_slots.push(Some(c));
        }
        let mut w = ChunkWriter {
            cipher: Aes256Gcm::new(data_key.as_bytes().into()),
            packet_frames: opus.map_or(0, |o| u64::from(o.frame_size)),
            header,
            header_hash,
            counter: 0,
            next_frame: 0,
            pending_start: 0,
            pending: Vec::new(),
            packets: Vec::new(),
            hasher: Sha256::new(),
            audio_hasher: Sha256::new(),
            total_bytes: 0,
        };
        w.account(&bytes);
        // The key-slot area counts toward the file size, not the content hash.
        bytes.extend_from_slice(&slot_bytes);
        bytes.extend_from_slice(&[0u8; KEY_SLOT_LEN * (KEY_SLOT_COUNT - 1)]);
        if let Some(c) = &compliance_bytes {
            bytes.extend_from_slice(c);
        }
        w.total_bytes += w.header.slot_area_len() as u64;
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

    /// Timeline frames accepted so far (sealed or buffered).
    pub fn frames(&self) -> u64 {
        self.next_frame
    }

    fn channels(&self) -> usize {
        usize::from(self.header.channels)
    }

    fn is_opus(&self) -> bool {
        self.header.opus.is_some()
    }

    fn pending_frames(&self) -> usize {
        if self.is_opus() {
            self.packets.len() * self.packet_frames as usize
        } else {
            self.pending.len() / self.channels()
        }
    }

    fn account(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.total_bytes += bytes.len() as u64;
    }

    fn expect_pcm(&mut self) -> Result<(), ContainerError> {
        if self.is_opus() {
            return Err(ContainerError::InvalidParams(
                "PCM samples for an Opus recording".into(),
            ));
        }
        if self.pending.is_empty() {
            self.pending_start = self.next_frame;
        }
        Ok(())
    }

    /// PCM recordings: buffer interleaved samples continuing the recording (a trailing
    /// partial frame is ignored).
    pub fn push_pcm(&mut self, samples: &[i16]) -> Result<(), ContainerError> {
        self.expect_pcm()?;
        let ch = self.channels();
        let frames = samples.len() / ch;
        self.pending
            .extend_from_slice(samples.get(..frames * ch).unwrap_or_default());
        self.next_frame += frames as u64;
        Ok(())
    }

    /// PCM recordings: buffer `frames` frames of silence (a gap on the timeline).
    pub fn push_pcm_silence(&mut self, frames: usize) -> Result<(), ContainerError> {
        self.expect_pcm()?;
        let n = frames.saturating_mul(self.channels());
        self.pending.resize(self.pending.len() + n, 0);
        self.next_frame += frames as u64;
        Ok(())
    }

    /// Opus recordings: take the encoder's packets (drained from `packets`, each
    /// `frame_size` frames) and advance the recording by `frames`, the timeline frames
    /// that went into the encoder with them. Packets lag the timeline by the encoder
    /// delay; the final chunk's frame count ends the recording at the frames pushed.
    pub fn push_packets(
        &mut self,
        packets: &mut Vec<Vec<u8>>,
        frames: u64,
    ) -> Result<(), ContainerError> {
        if !self.is_opus() {
            return Err(ContainerError::InvalidParams(
                "Opus packets for a PCM recording".into(),
            ));
        }
        self.packets.append(packets);
        self.next_frame += frames;
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
    /// encoder must have been flushed into the writer first: the final chunk's packets
    /// cover the encoder delay, and its frame count ends the recording at exactly the
    /// pushed length.
    pub fn finish(mut self) -> FinishedContainer {
        let target = self.header.chunk_target_frames as usize;
        let mut bytes = Vec::new();
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
            audio_sha256: self.audio_hasher.finalize().into(),
            sample_format: self.header.sample_format,
            total_bytes: self.total_bytes,
            slot_bytes: self.header.slot_area_len() as u64,
            frames: self.next_frame,
            chunks: self.counter,
        }
    }

    /// Seal the first `frames` buffered frames as the next chunk (Opus: the packets
    /// holding them; the final chunk takes every packet left and ends at the pushed
    /// length).
    fn seal(&mut self, frames: usize, last: bool) -> Vec<u8> {
        if self.is_opus() {
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
        let frame = self.packet_frames.max(1);
        let n = if last {
            self.packets.len()
        } else {
            (frames as u64 / frame) as usize
        }
        .min(self.packets.len());
        let covered = n as u64 * frame;
        let frames_field = if last {
            self.next_frame.saturating_sub(start).min(covered)
        } else {
            covered
        };
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&(frames_field as u32).to_be_bytes());
        let packets: Vec<Vec<u8>> = self.packets.drain(..n).collect();
        opus::frame_packets(&packets, &mut out);
        let sealed = self.seal_plaintext(out, 0, last);
        self.pending_start = start + covered;
        sealed
    }

    /// Encrypt a chunk plaintext (after its 4-byte length placeholder) and account for
    /// it; `frames` advances `pending_start` (PCM).
    fn seal_plaintext(&mut self, mut out: Vec<u8>, frames: u64, last: bool) -> Vec<u8> {
        self.audio_hasher
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
