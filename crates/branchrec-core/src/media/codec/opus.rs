//! Opus (RFC 6716, RTP payload RFC 7587) through libopus (the `opus` crate).
//!
//! The RTP clock is always 48000 Hz; the decoder runs directly at the recording's rate
//! (libopus decodes to 8/12/16/24/48 kHz), mono: stereo packets are down-mixed by
//! libopus. A lost packet is rebuilt from the in-band FEC (LBRR) data of the packet
//! after it when that is available; libopus falls back to its packet-loss concealment
//! if the next packet carries no FEC data, and longer gaps get plain PLC.

use super::{CodecError, Concealment, Decoder, DecoderKind};

/// Longest Opus packet: 120 ms.
const MAX_PACKET_MS: usize = 120;
/// Longest concealment we synthesise for one gap; beyond it the gap stays silence
/// (a long gap is DTX, hold or a real outage, not something to make up).
const MAX_CONCEAL_MS: usize = 120;

/// libopus decoder, mono, at a fixed output rate.
pub struct OpusDecoder {
    dec: opus::Decoder,
    rate: u32,
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("rate", &self.rate)
            .finish()
    }
}

fn lib_err(e: opus::Error) -> CodecError {
    CodecError::Library {
        codec: "opus",
        why: e.to_string(),
    }
}

impl OpusDecoder {
    /// A decoder producing `rate` Hz mono (8000, 12000, 16000, 24000 or 48000).
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let dec = opus::Decoder::new(rate, opus::Channels::Mono).map_err(lib_err)?;
        let max = rate as usize * MAX_PACKET_MS / 1000;
        Ok(OpusDecoder {
            dec,
            rate,
            buf: vec![0; max],
        })
    }

    /// Samples in 2.5 ms (the Opus frame-size granule).
    fn granule(&self) -> usize {
        (self.rate as usize / 400).max(1)
    }
}

impl Decoder for OpusDecoder {
    fn kind(&self) -> DecoderKind {
        DecoderKind::Opus
    }
    fn output_rate(&self) -> u32 {
        self.rate
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        if payload.is_empty() {
            return Err(CodecError::Malformed {
                codec: "opus",
                why: "empty payload".into(),
            });
        }
        // Validate the TOC / frame-count structure before handing it to the decoder.
        let n = opus::packet::get_nb_samples(payload, self.rate).map_err(|e| {
            CodecError::Malformed {
                codec: "opus",
                why: e.to_string(),
            }
        })?;
        if n > self.buf.len() {
            return Err(CodecError::Malformed {
                codec: "opus",
                why: format!("{n} samples is longer than 120 ms"),
            });
        }
        let got = self
            .dec
            .decode(payload, &mut self.buf, false)
            .map_err(lib_err)?;
        out.extend_from_slice(self.buf.get(..got).unwrap_or(&[]));
        Ok(())
    }
    fn conceal(
        &mut self,
        samples: usize,
        next: Option<&[u8]>,
        out: &mut Vec<i16>,
    ) -> Result<Concealment, CodecError> {
        let g = self.granule();
        let max = self.rate as usize * MAX_CONCEAL_MS / 1000;
        let want = (samples.min(max) / g) * g;
        let mut c = Concealment::default();
        if want == 0 {
            return Ok(c);
        }
        // FEC covers only the packet immediately before `next`, with that packet's
        // duration: the frame size of `next` (RFC 7587 senders keep ptime constant).
        let fec_len = next
            .filter(|p| !p.is_empty())
            .and_then(|p| opus::packet::get_samples_per_frame(p, self.rate).ok())
            .map(|n| (n / g) * g)
            .filter(|&n| n > 0 && n <= want);
        let plc_len = want - fec_len.unwrap_or(0);
        // PLC for the older part of the gap, in chunks of at most 120 ms.
        let mut left = plc_len;
        while left > 0 {
            let n = left.min(self.buf.len());
            let got = self
                .dec
                .decode(&[], &mut self.buf[..n], false)
                .map_err(lib_err)?;
            out.extend_from_slice(self.buf.get(..got).unwrap_or(&[]));
            c.plc_samples += got;
            left -= n;
        }
        if let (Some(n), Some(p)) = (fec_len, next) {
            let got = self
                .dec
                .decode(p, &mut self.buf[..n], true)
                .map_err(lib_err)?;
            out.extend_from_slice(self.buf.get(..got).unwrap_or(&[]));
            c.fec_samples += got;
        }
        Ok(c)
    }
    fn payload_samples(&self, payload: &[u8]) -> Option<usize> {
        opus::packet::get_nb_samples(payload, self.rate).ok()
    }
}
