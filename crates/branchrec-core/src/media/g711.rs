//! G.711 (ITU-T G.711) µ-law (PCMU) and A-law (PCMA) codecs.
//!
//! Decoding uses 256-entry tables built at compile time; the values are the 14-bit
//! (µ-law) and 13-bit (A-law) G.711 reconstruction levels scaled to 16 bits, i.e. the
//! same output as the ITU-T G.191 reference expander and the classic Sun `g711.c`
//! (`ulaw2linear`/`alaw2linear`). Encoding is the matching Sun/G.191 compressor.

/// µ-law byte → linear sample, one entry per code word.
pub static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
/// A-law byte → linear sample, one entry per code word.
pub static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

const fn ulaw_decode_const(u: u8) -> i16 {
    let u = !u;
    let mut t: i32 = (((u & 0x0f) as i32) << 3) + 0x84;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

const fn alaw_decode_const(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t: i32 = ((a & 0x0f) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    if seg == 0 {
        t += 8;
    } else if seg == 1 {
        t += 0x108;
    } else {
        t += 0x108;
        t <<= seg - 1;
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_const(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_const(i as u8);
        i += 1;
    }
    t
}

/// Decode one µ-law byte.
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(u)]
}

/// Decode one A-law byte.
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(a)]
}

/// Decode a PCMU payload into `out` (which must be at least as long; extra input is ignored).
pub fn decode_ulaw(input: &[u8], out: &mut [i16]) {
    for (o, &b) in out.iter_mut().zip(input) {
        *o = ULAW_TO_LINEAR[usize::from(b)];
    }
}

/// Decode a PCMA payload into `out` (which must be at least as long; extra input is ignored).
pub fn decode_alaw(input: &[u8], out: &mut [i16]) {
    for (o, &b) in out.iter_mut().zip(input) {
        *o = ALAW_TO_LINEAR[usize::from(b)];
    }
}

/// Index of the first segment end that is >= `val`, or 8 if none.
#[inline]
fn segment(val: i32, ends: &[i32; 8]) -> u8 {
    ends.iter()
        .position(|&end| val <= end)
        .map_or(8, |s| s as u8)
}

/// Encode a linear sample as µ-law (G.711, Sun/G.191 compressor).
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    const CLIP: i32 = 8159;
    const BIAS: i32 = 0x84 >> 2;
    let mut v = i32::from(pcm) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    if v > CLIP {
        v = CLIP;
    }
    v += BIAS;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let uval = (seg << 4) | (((v >> (seg + 1)) & 0xF) as u8);
    uval ^ mask
}

/// Encode a linear sample as A-law (G.711, Sun/G.191 compressor).
pub fn linear_to_alaw(pcm: i16) -> u8 {
    const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = i32::from(pcm) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut aval = seg << 4;
    if seg < 2 {
        aval |= ((v >> 1) & 0xF) as u8;
    } else {
        aval |= ((v >> seg) & 0xF) as u8;
    }
    aval ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference checksums were computed with CPython's `audioop` (a transcription of the
    // Sun/CCITT g711.c reference): sum over code words i of table[i] * (i + 1).
    #[test]
    fn decode_tables_match_reference() {
        let su: i64 = (0..256)
            .map(|i| i64::from(ULAW_TO_LINEAR[i]) * (i as i64 + 1))
            .sum();
        let sa: i64 = (0..256)
            .map(|i| i64::from(ALAW_TO_LINEAR[i]) * (i as i64 + 1))
            .sum();
        assert_eq!(su, 98_107_392);
        assert_eq!(sa, 100_139_008);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x10), -15996);
        assert_eq!(ulaw_to_linear(0x9a), 10876);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x13), -2880);
    }

    #[test]
    fn encoders_match_reference() {
        for (v, u, a) in [
            (0i16, 255u8, 213u8),
            (1, 255, 213),
            (-1, 126, 85),
            (100, 242, 211),
            (-100, 114, 83),
            (1000, 206, 250),
            (-1000, 78, 122),
            (32636, 128, 170),
            (32767, 128, 170),
            (-32768, 0, 42),
            (12345, 151, 189),
            (-12345, 23, 61),
        ] {
            assert_eq!(linear_to_ulaw(v), u, "ulaw({v})");
            assert_eq!(linear_to_alaw(v), a, "alaw({v})");
        }
        // Weighted checksum over every i16 input (reference: CPython audioop).
        let mut su: u64 = 0;
        let mut sa: u64 = 0;
        for (i, v) in (-32768i32..32768).enumerate() {
            let w = (i % 9973) as u64 + 1;
            su += w * u64::from(linear_to_ulaw(v as i16));
            sa += w * u64::from(linear_to_alaw(v as i16));
        }
        assert_eq!(su, 27_880_191_136);
        assert_eq!(sa, 33_193_728_103);
    }

    #[test]
    fn decode_encode_decode_is_identity() {
        for b in 0..=255u8 {
            let l = ulaw_to_linear(b);
            assert_eq!(ulaw_to_linear(linear_to_ulaw(l)), l);
            let l = alaw_to_linear(b);
            assert_eq!(linear_to_alaw(l), b, "A-law code words are unique");
        }
    }

    #[test]
    fn slice_decoders() {
        let input = [0x00u8, 0x80, 0xFF];
        let mut out = [1i16; 3];
        decode_ulaw(&input, &mut out);
        assert_eq!(out, [-32124, 32124, 0]);
        decode_alaw(&input, &mut out);
        assert_eq!(out, [-5504, 5504, 848]);
    }
}
