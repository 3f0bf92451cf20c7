//! The verifying, streaming chunk reader and the content hash.

use std::io::Read;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};

use super::header::unwrap_data_key;
use super::header::*;
use super::{nonce_for, read_full, ContainerError};
use crate::keys::KeyWrap;
use crate::recording::opus;

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
    let count = slot_count_of_body(&body)
        .ok_or_else(|| ContainerError::HeaderMalformed("key slot layout".into()))?;
    let mut slots = vec![0u8; KEY_SLOT_LEN * count];
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
