//! The encoder stage between the timeline and the container: [`AudioEncoder`] turns the
//! timeline's [`AudioBlock`]s into the payload a [`ChunkWriter`] seals — the samples as
//! they are (PCM storage) or 20 ms Opus packets (Opus storage) — keeping the blocks
//! contiguous (a forward gap becomes silence). [`ContainerWriter`] is the two together:
//! blocks in, file bytes out.

use crate::keys::DataKey;
use crate::media::AudioBlock;
use crate::recording::container::{
    ChunkWriter, ContainerError, FinishedContainer, Header, HeaderParams, OpusParams,
    NONCE_PREFIX_LEN,
};
use crate::recording::opus::{OpusError, OpusPacketizer, OpusSettings};

/// Largest gap (in seconds of audio) the encoder fills with silence in one block.
const MAX_GAP_SECONDS: u64 = 3600;

/// Timeline audio → stored payload (see the module docs).
pub struct AudioEncoder {
    rate: u32,
    channels: usize,
    /// Next frame index expected from `push_block`.
    next_frame: u64,
    opus: Option<OpusStage>,
}

struct OpusStage {
    enc: OpusPacketizer,
    settings: OpusSettings,
    /// Packets produced and not yet handed to the chunk writer.
    packets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AudioEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioEncoder")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("next_frame", &self.next_frame)
            .field("opus", &self.opus.is_some())
            .finish_non_exhaustive()
    }
}

impl AudioEncoder {
    /// An encoder for `channels` interleaved channels at `rate` Hz; with `opus` settings
    /// the audio becomes Opus packets, else it stays s16 PCM.
    pub fn new(rate: u32, channels: u16, opus: Option<&OpusSettings>) -> Result<Self, OpusError> {
        let opus = match opus {
            None => None,
            Some(s) => Some(OpusStage {
                enc: OpusPacketizer::new(rate, channels, s)?,
                settings: *s,
                packets: Vec::new(),
            }),
        };
        Ok(AudioEncoder {
            rate,
            channels: usize::from(channels.max(1)),
            next_frame: 0,
            opus,
        })
    }

    /// The codec parameters for the container header (`None` for PCM).
    pub fn codec_params(&self) -> Result<Option<OpusParams>, ContainerError> {
        let Some(o) = &self.opus else {
            return Ok(None);
        };
        Ok(Some(OpusParams {
            pre_skip: u16::try_from(o.enc.pre_skip())
                .map_err(|_| ContainerError::InvalidParams("Opus lookahead too large".into()))?,
            frame_size: o.enc.frame_size() as u16,
            bitrate_bps: o.settings.bitrate_bps,
            complexity: o.settings.complexity,
            vbr: o.settings.vbr,
        }))
    }

    /// Frames accepted so far (the timeline length, gaps included).
    pub fn frames(&self) -> u64 {
        self.next_frame
    }

    /// Encode a block of interleaved audio into `out`. Blocks must continue where the
    /// previous one ended; a forward gap (up to an hour) is filled with silence, an
    /// overlap or larger gap is refused. A trailing partial frame is ignored.
    pub fn push_block(
        &mut self,
        block: &AudioBlock,
        out: &mut ChunkWriter,
    ) -> Result<(), ContainerError> {
        let ch = self.channels;
        if block.start_frame < self.next_frame
            || block.start_frame - self.next_frame > MAX_GAP_SECONDS * u64::from(self.rate)
        {
            return Err(ContainerError::BlockDiscontinuity {
                expected: self.next_frame,
                got: block.start_frame,
            });
        }
        // Fits in usize: bounded by MAX_GAP_SECONDS × sample_rate above.
        let gap = usize::try_from(block.start_frame - self.next_frame).unwrap_or(0);
        let frames = block.samples.len() / ch;
        let samples = block.samples.get(..frames * ch).unwrap_or(&[]);
        match &mut self.opus {
            None => {
                if gap > 0 {
                    out.push_pcm_silence(gap)?;
                }
                out.push_pcm(samples)?;
            }
            Some(o) => {
                let encoder_err =
                    |e: OpusError| ContainerError::InvalidParams(format!("Opus encoder: {e}"));
                if gap > 0 {
                    // Silence through the encoder, a second at a time.
                    let zeros = vec![0i16; self.rate as usize * ch];
                    let mut gap_samples = gap.saturating_mul(ch);
                    while gap_samples > 0 {
                        let n = gap_samples.min(zeros.len());
                        o.enc
                            .push(zeros.get(..n).unwrap_or_default(), &mut o.packets)
                            .map_err(encoder_err)?;
                        gap_samples -= n;
                    }
                }
                o.enc.push(samples, &mut o.packets).map_err(encoder_err)?;
                out.push_packets(&mut o.packets, (gap + frames) as u64)?;
            }
        }
        self.next_frame = block.start_frame + frames as u64;
        Ok(())
    }

    /// Fill the timeline with silence up to `frame` (nothing if it is not ahead), in
    /// pieces of at most the largest gap [`push_block`](Self::push_block) takes.
    pub fn fill_silence_to(
        &mut self,
        frame: u64,
        out: &mut ChunkWriter,
    ) -> Result<(), ContainerError> {
        let step = MAX_GAP_SECONDS * u64::from(self.rate);
        while self.next_frame < frame {
            let to = frame.min(self.next_frame + step);
            self.push_block(
                &AudioBlock {
                    start_frame: to,
                    samples: Vec::new(),
                },
                out,
            )?;
        }
        Ok(())
    }

    /// End of the audio: flush the encoder delay into `out` (Opus; nothing for PCM).
    pub fn finish(&mut self, out: &mut ChunkWriter) {
        if let Some(o) = &mut self.opus {
            if let Err(e) = o.enc.finish(&mut o.packets) {
                // libopus does not fail on valid 20 ms frames; if it did, the file ends
                // without the encoder delay flushed (the last ms read as silence).
                tracing::error!(error = %e, "Opus encoder flush failed");
            }
            if let Err(e) = out.push_packets(&mut o.packets, 0) {
                tracing::error!(error = %e, "Opus packets refused by the chunk writer");
            }
        }
    }
}

/// Sans-IO recording writer: feed [`AudioBlock`]s, append the returned bytes to the
/// file. An [`AudioEncoder`] followed by a [`ChunkWriter`].
pub struct ContainerWriter {
    enc: AudioEncoder,
    chunks: ChunkWriter,
}

impl std::fmt::Debug for ContainerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerWriter")
            .field("recording_id", &self.chunks.header().recording_id)
            .field("chunks", &self.chunks)
            .field("next_frame", &self.enc.frames())
            .finish_non_exhaustive()
    }
}

impl ContainerWriter {
    /// Start a PCM recording. Returns the writer and the bytes to write first: the
    /// header followed by chunk 0 (no audio), which authenticates the header on disk.
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
    /// (format version 3, sample format 2), else as s16le PCM.
    pub fn with_format(
        params: HeaderParams,
        opus: Option<OpusSettings>,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        Self::with_slots(params, opus, data_key, wrapped_key, None, nonce_prefix)
    }

    /// Like [`with_format`](Self::with_format), plus the compliance key slot
    /// (`(kek_id, wrapped)`, see `ChunkWriter::with_compliance`).
    pub fn with_slots(
        params: HeaderParams,
        opus: Option<OpusSettings>,
        data_key: DataKey,
        wrapped_key: Vec<u8>,
        compliance: Option<(String, Vec<u8>)>,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        let enc = AudioEncoder::new(params.sample_rate, params.channels, opus.as_ref())
            .map_err(|e| ContainerError::InvalidParams(e.to_string()))?;
        let codec = enc.codec_params()?;
        let (chunks, bytes) = ChunkWriter::with_compliance(
            params,
            codec,
            data_key,
            wrapped_key,
            compliance,
            nonce_prefix,
        )?;
        Ok((ContainerWriter { enc, chunks }, bytes))
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        self.chunks.header()
    }

    /// SHA-256 of the header bytes (the AAD of every chunk).
    pub fn header_hash(&self) -> [u8; 32] {
        self.chunks.header_hash()
    }

    /// Bytes produced so far.
    pub fn total_bytes(&self) -> u64 {
        self.chunks.total_bytes()
    }

    /// Frames accepted so far (sealed or buffered).
    pub fn frames(&self) -> u64 {
        self.enc.frames()
    }

    /// Encode and buffer a block of interleaved audio (see
    /// [`AudioEncoder::push_block`]).
    pub fn push_block(&mut self, block: &AudioBlock) -> Result<(), ContainerError> {
        self.enc.push_block(block, &mut self.chunks)
    }

    /// A sealed chunk of exactly `chunk_target_frames` frames, if that many are
    /// buffered. Call repeatedly until None.
    pub fn poll_chunk(&mut self) -> Option<Vec<u8>> {
        self.chunks.poll_chunk()
    }

    /// Silence up to timeline frame `frame` (see [`AudioEncoder::fill_silence_to`]).
    pub fn fill_silence_to(&mut self, frame: u64) -> Result<(), ContainerError> {
        self.enc.fill_silence_to(frame, &mut self.chunks)
    }

    /// Seal everything buffered (in chunks of at most `chunk_target_frames`), e.g. on
    /// the shell's flush interval so a crash loses little audio.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.chunks.flush()
    }

    /// Flush the encoder, seal the remaining audio and the final chunk (last flag set).
    pub fn finish(mut self) -> FinishedContainer {
        self.enc.finish(&mut self.chunks);
        self.chunks.finish()
    }
}
