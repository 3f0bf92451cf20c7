//! G.711 μ-law and A-law (ITU-T G.711), written after the public-domain Sun Microsystems
//! reference `g711.c` (the same tables sox, SpanDSP and Asterisk use).
//!
//! Standalone on purpose: the load generator and the integration tests must not depend on
//! the branchrec library, so that they check it from the outside.

/// Codec of an audio stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// G.711 μ-law, RTP static payload type 0.
    Pcmu,
    /// G.711 A-law, RTP static payload type 8.
    Pcma,
}

impl Codec {
    /// Parses "pcmu" / "pcma" (case-insensitive; "ulaw"/"alaw" accepted too).
    pub fn parse(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "pcmu" | "ulaw" | "mulaw" | "g711u" => Some(Codec::Pcmu),
            "pcma" | "alaw" | "g711a" => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// RTP static payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Encodes one 16-bit linear sample.
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(s),
            Codec::Pcma => linear_to_alaw(s),
        }
    }

    /// Decodes one G.711 byte to a 16-bit linear sample.
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(b),
            Codec::Pcma => alaw_to_linear(b),
        }
    }

    /// `decode(encode(s))`: what a bit-exact recorder must reproduce for a sent sample.
    pub fn roundtrip(self, s: i16) -> i16 {
        self.decode(self.encode(s))
    }
}

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(val: i32, table: &[i32; 8]) -> usize {
    table.iter().position(|&end| val <= end).unwrap_or(8)
}

/// 16-bit linear → μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 8159;
    let mut pcm = i32::from(sample) >> 2;
    let mask: i32 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    if pcm > CLIP {
        pcm = CLIP;
    }
    pcm += BIAS >> 2;
    let seg = segment(pcm, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let uval = ((seg as i32) << 4) | ((pcm >> (seg + 1)) & 0xF);
    (uval ^ mask) as u8
}

/// μ-law → 16-bit linear.
pub fn ulaw_to_linear(u: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = i32::from(!u);
    let mut t = ((u & 0x0F) << 3) + BIAS;
    t <<= (u & 0x70) >> 4;
    let v = if u & 0x80 != 0 { BIAS - t } else { t - BIAS };
    v as i16
}

/// 16-bit linear → A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask: i32 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    if seg < 2 {
        aval |= (pcm >> 1) & 0xF;
    } else {
        aval |= (pcm >> seg) & 0xF;
    }
    (aval ^ mask) as u8
}

/// A-law → 16-bit linear.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = i32::from(a ^ 0x55);
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    let v = if a & 0x80 != 0 { t } else { -t };
    v as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference points of G.711: silence and the extremes.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_encode_is_identity_on_codes() {
        for b in 0..=255u8 {
            // μ-law has two zeros (0x7F and 0xFF) that both decode to 0 and encode to 0xFF.
            let back = linear_to_ulaw(ulaw_to_linear(b));
            if b == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, b, "ulaw {b:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn roundtrip_is_idempotent_and_monotonic() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut prev = i16::MIN;
            for s in i16::MIN..=i16::MAX {
                let r = codec.roundtrip(s);
                assert_eq!(codec.roundtrip(r), r);
                assert!(r >= prev, "{codec:?} not monotonic at {s}");
                prev = r;
            }
        }
    }
}
