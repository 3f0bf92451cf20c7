//! G.729 / G.729A decoding with Annex B (VAD/DTX/CNG) through bcg729 (GPL-3.0-or-later,
//! only with the `g729` cargo feature; see `docs/codecs.md` for what that means for the
//! firmware image).
//!
//! RTP (RFC 3551 §4.5.6): a payload is zero or more 10-byte frames (10 ms each),
//! optionally followed by one 2-byte Annex B SID frame. G.729A frames have the same
//! bitstream and decode with the same decoder. After a SID frame, frames the sender did
//! not transmit (DTX) are comfort noise; after speech, lost frames are concealed.

use super::{CodecError, Concealment, Decoder, DecoderKind};
use bcg729::{Frame, FRAME_SAMPLES, SID_FRAME_BYTES, SPEECH_FRAME_BYTES};

/// Longest concealment after speech (G.729 attenuates its PLC anyway); comfort noise
/// after a SID frame fills the whole gap.
const MAX_PLC_FRAMES: usize = 12;

/// bcg729 decoder channel.
#[derive(Debug)]
pub struct G729Decoder {
    dec: bcg729::Decoder,
    /// The last decoded frame was a SID (the sender is in DTX).
    in_dtx: bool,
}

/// Split a payload into (number of speech frames, has SID); error if the length is not
/// `10·n` or `10·n + 2`.
pub fn frame_layout(payload: &[u8]) -> Result<(usize, bool), CodecError> {
    let n = payload.len() / SPEECH_FRAME_BYTES;
    match payload.len() % SPEECH_FRAME_BYTES {
        0 if n > 0 => Ok((n, false)),
        SID_FRAME_BYTES => Ok((n, true)),
        _ => Err(CodecError::Malformed {
            codec: "G729",
            why: format!(
                "{} bytes is not 10·n (+2 for a SID frame) with at least one frame",
                payload.len()
            ),
        }),
    }
}

impl G729Decoder {
    /// A new decoder channel.
    pub fn new() -> Result<Self, CodecError> {
        let dec = bcg729::Decoder::new().ok_or(CodecError::Library {
            codec: "G729",
            why: "bcg729 could not allocate a decoder".into(),
        })?;
        Ok(G729Decoder { dec, in_dtx: false })
    }
}

impl Decoder for G729Decoder {
    fn kind(&self) -> DecoderKind {
        DecoderKind::G729
    }
    fn output_rate(&self) -> u32 {
        8000
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        let (n, sid) = frame_layout(payload)?;
        out.reserve((n + usize::from(sid)) * FRAME_SAMPLES);
        for chunk in payload.chunks_exact(SPEECH_FRAME_BYTES) {
            if let Ok(f) = <&[u8; SPEECH_FRAME_BYTES]>::try_from(chunk) {
                out.extend_from_slice(&self.dec.decode(Frame::Speech(f)));
            }
        }
        self.in_dtx = false;
        if sid {
            let tail = payload.get(n * SPEECH_FRAME_BYTES..).unwrap_or(&[]);
            if let Ok(f) = <&[u8; SID_FRAME_BYTES]>::try_from(tail) {
                out.extend_from_slice(&self.dec.decode(Frame::Sid(f)));
                self.in_dtx = true;
            }
        }
        Ok(())
    }
    fn conceal(
        &mut self,
        samples: usize,
        _next: Option<&[u8]>,
        out: &mut Vec<i16>,
    ) -> Result<Concealment, CodecError> {
        let mut frames = samples / FRAME_SAMPLES;
        if !self.in_dtx {
            frames = frames.min(MAX_PLC_FRAMES);
        }
        for _ in 0..frames {
            out.extend_from_slice(&self.dec.decode(Frame::Erased));
        }
        Ok(Concealment {
            fec_samples: 0,
            plc_samples: frames * FRAME_SAMPLES,
        })
    }
    fn in_dtx(&self) -> bool {
        self.in_dtx
    }
    fn payload_samples(&self, payload: &[u8]) -> Option<usize> {
        frame_layout(payload)
            .ok()
            .map(|(n, sid)| (n + usize::from(sid)) * FRAME_SAMPLES)
    }
}
