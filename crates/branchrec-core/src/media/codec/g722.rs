//! ITU-T G.722 decoder, 64 kbit/s mode (mode 1): two ADPCM sub-bands (6-bit low band,
//! 2-bit high band) recombined by the 24-tap receive QMF into 16 kHz PCM.
//!
//! Written from the ITU-T G.722 (09/2012) recommendation's block descriptions
//! (INVQAL/INVQBL, LOGSCL/LOGSCH, SCALEL/SCALEH, the pole/zero predictors and the
//! receive QMF) in the fixed-point arrangement ffmpeg's `g722` decoder also uses; the
//! tests check it sample-exact against ffmpeg's decoder.
//!
//! RTP (RFC 3551 §4.5.2): one byte per 16 kHz sample *pair*; the RTP clock is 8000 Hz
//! although the audio is sampled at 16 kHz, so a 20 ms packet is 160 bytes, 160 clock
//! ticks and 320 samples. G.722 proper has no packet-loss concealment (Appendices III/IV
//! are optional): lost packets stay silence (the trait's default `conceal`).

use super::{CodecError, Decoder, DecoderKind};

/// Inverse log2 table for the scale factor (SCALEL/SCALEH, 32 steps per octave).
const INV_LOG2: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// High-band log scale factor step by codeword parity (WH).
const HIGH_LOG_STEP: [i32; 2] = [798, -214];
/// High-band inverse quantiser (QQ2 scaled), indexed by the 2-bit codeword.
const HIGH_INV_QUANT: [i32; 4] = [-926, -202, 926, 202];
/// Low-band log scale factor step (WL), indexed by the 4 most significant bits.
const LOW_LOG_STEP: [i32; 16] = [
    -60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60,
];
/// Low-band inverse quantiser with 4 bits (feeds the predictor).
const LOW_INV_QUANT4: [i32; 16] = [
    0, -2557, -1612, -1121, -786, -530, -323, -150, 2557, 1612, 1121, 786, 530, 323, 150, 0,
];
/// Low-band inverse quantiser with all 6 bits (the 64 kbit/s output path).
const LOW_INV_QUANT6: [i32; 64] = [
    -17, -17, -17, -17, -3101, -2738, -2376, -2088, -1873, -1689, -1535, -1399, -1279, -1170,
    -1072, -982, -899, -822, -750, -682, -618, -558, -501, -447, -396, -347, -300, -254, -211,
    -170, -130, -91, 3101, 2738, 2376, 2088, 1873, 1689, 1535, 1399, 1279, 1170, 1072, 982, 899,
    822, 750, 682, 618, 558, 501, 447, 396, 347, 300, 254, 211, 170, 130, 91, 54, 17, -54, -17,
];
/// Receive QMF coefficients (half of the symmetric 24-tap filter).
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

#[inline]
fn clip(v: i32, lo: i32, hi: i32) -> i32 {
    v.clamp(lo, hi)
}

#[inline]
fn clip16(v: i32) -> i32 {
    v.clamp(-32768, 32767)
}

/// State of one sub-band's ADPCM decoder.
#[derive(Debug, Clone)]
struct Band {
    s_predictor: i32,
    s_zero: i32,
    part_reconst_mem: [bool; 2],
    prev_qtzd_reconst: i32,
    pole_mem: [i32; 2],
    diff_mem: [i32; 6],
    zero_mem: [i32; 6],
    log_factor: i32,
    scale_factor: i32,
}

impl Band {
    fn new(scale_factor: i32) -> Self {
        Band {
            s_predictor: 0,
            s_zero: 0,
            part_reconst_mem: [false; 2],
            prev_qtzd_reconst: 0,
            pole_mem: [0; 2],
            diff_mem: [0; 6],
            zero_mem: [0; 6],
            log_factor: 0,
            scale_factor,
        }
    }

    /// Pole (2nd order) and zero (6th order) predictor update with the quantised
    /// difference `cur_diff` (blocks PARREC, UPPOL1/2, UPZERO, RECONS, FILTEP/FILTEZ).
    fn adapt(&mut self, cur_diff: i32) {
        let cur_part = self.s_zero + cur_diff < 0;
        // Sign agreement with the previous two partial reconstructions (+1 / -1).
        let sg0: i32 = if cur_part != self.part_reconst_mem[0] {
            1
        } else {
            -1
        };
        let sg1: i32 = if cur_part == self.part_reconst_mem[1] {
            1
        } else {
            -1
        };
        self.part_reconst_mem[1] = self.part_reconst_mem[0];
        self.part_reconst_mem[0] = cur_part;

        self.pole_mem[1] = clip(
            ((sg0 * clip(self.pole_mem[0], -8191, 8191)) >> 5)
                + sg1 * 128
                + ((self.pole_mem[1] * 127) >> 7),
            -12288,
            12288,
        );
        let limit = 15360 - self.pole_mem[1];
        self.pole_mem[0] = clip(-192 * sg0 + ((self.pole_mem[0] * 255) >> 8), -limit, limit);

        // Zero predictor: sign-sign update of the six coefficients, then shift the
        // difference history (newest first) and sum.
        let mut s_zero = 0;
        let step = if cur_diff != 0 { 128 } else { 0 };
        for k in (0..6).rev() {
            let tmp = if k == 0 {
                clip16(cur_diff * 2)
            } else {
                self.diff_mem[k - 1]
            };
            let sign = if (self.diff_mem[k] ^ cur_diff) < 0 {
                -step
            } else {
                step
            };
            self.zero_mem[k] = ((self.zero_mem[k] * 255) >> 8) + sign;
            self.diff_mem[k] = tmp;
            s_zero += (tmp * self.zero_mem[k]) >> 15;
        }
        self.s_zero = s_zero;

        let cur_qtzd = clip16((self.s_predictor + cur_diff) * 2);
        self.s_predictor = clip16(
            self.s_zero
                + ((self.pole_mem[0] * cur_qtzd) >> 15)
                + ((self.pole_mem[1] * self.prev_qtzd_reconst) >> 15),
        );
        self.prev_qtzd_reconst = cur_qtzd;
    }

    fn linear_scale(log_factor: i32) -> i32 {
        let wd1 = INV_LOG2[((log_factor >> 6) & 31) as usize];
        let shift = log_factor >> 11;
        if shift < 0 {
            wd1 >> (-shift).min(31)
        } else {
            wd1 << shift.min(15)
        }
    }

    fn update_low(&mut self, ilow: usize) {
        let i4 = ilow >> 2;
        self.adapt((self.scale_factor * LOW_INV_QUANT4[i4]) >> 10);
        self.log_factor = clip(((self.log_factor * 127) >> 7) + LOW_LOG_STEP[i4], 0, 18432);
        self.scale_factor = Self::linear_scale(self.log_factor - (8 << 11));
    }

    fn update_high(&mut self, dhigh: i32, ihigh: usize) {
        self.adapt(dhigh);
        self.log_factor = clip(
            ((self.log_factor * 127) >> 7) + HIGH_LOG_STEP[ihigh & 1],
            0,
            22528,
        );
        self.scale_factor = Self::linear_scale(self.log_factor - (10 << 11));
    }
}

/// G.722 64 kbit/s decoder (16 kHz output).
#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    /// The last 24 reconstructed sub-band values (sum/difference pairs), oldest first.
    qmf_mem: [i32; 24],
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A decoder in the reset state.
    pub fn new() -> Self {
        G722Decoder {
            low: Band::new(8),
            high: Band::new(2),
            qmf_mem: [0; 24],
        }
    }

    /// Decode one code byte into two 16 kHz samples.
    #[inline]
    pub fn decode_byte(&mut self, b: u8) -> [i16; 2] {
        let ihigh = usize::from(b >> 6);
        let ilow = usize::from(b & 0x3f);
        let rlow = clip(
            ((self.low.scale_factor * LOW_INV_QUANT6[ilow]) >> 10) + self.low.s_predictor,
            -16384,
            16383,
        );
        self.low.update_low(ilow);
        let dhigh = (self.high.scale_factor * HIGH_INV_QUANT[ihigh]) >> 10;
        let rhigh = clip(dhigh + self.high.s_predictor, -16384, 16383);
        self.high.update_high(dhigh, ihigh);

        self.qmf_mem.copy_within(2.., 0);
        self.qmf_mem[22] = rlow + rhigh;
        self.qmf_mem[23] = rlow - rhigh;
        let (mut x0, mut x1) = (0i32, 0i32);
        for (i, &c) in QMF.iter().enumerate() {
            x1 += self.qmf_mem[2 * i] * c;
            x0 += self.qmf_mem[2 * i + 1] * QMF[11 - i];
        }
        [clip16(x0 >> 11) as i16, clip16(x1 >> 11) as i16]
    }
}

impl Decoder for G722Decoder {
    fn kind(&self) -> DecoderKind {
        DecoderKind::G722
    }
    fn output_rate(&self) -> u32 {
        16000
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.reserve(payload.len() * 2);
        for &b in payload {
            out.extend_from_slice(&self.decode_byte(b));
        }
        Ok(())
    }
    fn payload_samples(&self, payload: &[u8]) -> Option<usize> {
        Some(payload.len() * 2)
    }
}
