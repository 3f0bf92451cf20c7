//! G.711 through the [`Decoder`] trait (used when a G.711 stream goes into a 16 kHz
//! recording; 8 kHz recordings take the bit-exact table path in the timeline).

use super::{CodecError, Decoder, DecoderKind};
use crate::media::g711::{ALAW_TO_LINEAR, ULAW_TO_LINEAR};

/// Stateless µ-law / A-law decoder.
#[derive(Debug)]
pub struct G711Decoder {
    table: &'static [i16; 256],
    alaw: bool,
}

impl G711Decoder {
    /// A-law if `alaw`, else µ-law.
    pub fn new(alaw: bool) -> Self {
        G711Decoder {
            table: if alaw {
                &ALAW_TO_LINEAR
            } else {
                &ULAW_TO_LINEAR
            },
            alaw,
        }
    }
}

impl Decoder for G711Decoder {
    fn kind(&self) -> DecoderKind {
        if self.alaw {
            DecoderKind::Pcma
        } else {
            DecoderKind::Pcmu
        }
    }
    fn output_rate(&self) -> u32 {
        8000
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.extend(payload.iter().map(|&b| self.table[usize::from(b)]));
        Ok(())
    }
    fn payload_samples(&self, payload: &[u8]) -> Option<usize> {
        Some(payload.len())
    }
}
