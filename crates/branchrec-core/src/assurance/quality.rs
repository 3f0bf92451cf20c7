//! Per-channel transmission quality (docs/assurance.md): RFC 3550 interarrival jitter,
//! loss and its burstiness from the sequence numbers, and a simplified ITU-T G.107
//! E-model (R-factor, MOS). Sans-IO: arrival times come in as [`Mono`].

use serde::{Deserialize, Serialize};

use crate::time::Mono;

/// Packets further apart than this in sequence numbers are a restart, not loss.
const MAX_BURST_GAP: u16 = 3000;

/// RFC 3550 §6.4.1 / A.8 interarrival jitter plus loss bursts, for one channel.
#[derive(Debug, Clone, Default)]
pub struct QualityTracker {
    ssrc: Option<u32>,
    /// (arrival in timestamp units, RTP timestamp) of the previous in-order packet.
    prev: Option<(i64, u32)>,
    /// Previous in-order sequence number.
    prev_seq: Option<u16>,
    /// Jitter estimate in timestamp units, ×16 (RFC 3550 A.8 fixed point).
    jitter16: u64,
    clock: u32,
    max_jitter_ms: f64,
    /// Loss bursts (runs of consecutive missing sequence numbers) and their packets.
    bursts: u64,
    burst_lost: u64,
}

impl QualityTracker {
    /// One packet of `ssrc` with sequence number `seq` and RTP timestamp `ts` at clock
    /// `clock` Hz, arrived at `at`; `in_order` when it is the newest so far (reordered
    /// stragglers do not update the estimate, as a receiver computing the RTCP value
    /// would only see them as out of order).
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        clock: u32,
        at: Mono,
        in_order: bool,
    ) {
        if clock == 0 {
            return;
        }
        if self.ssrc != Some(ssrc) || self.clock != clock {
            self.ssrc = Some(ssrc);
            self.clock = clock;
            self.prev = None;
            self.prev_seq = None;
        }
        if !in_order {
            return;
        }
        if let Some(p) = self.prev_seq {
            let gap = seq.wrapping_sub(p).wrapping_sub(1);
            if gap > 0 && gap < MAX_BURST_GAP {
                self.bursts += 1;
                self.burst_lost += u64::from(gap);
            }
        }
        self.prev_seq = Some(seq);
        let arrival = i64::try_from(
            at.since_origin()
                .as_nanos()
                .saturating_mul(u128::from(clock))
                / 1_000_000_000,
        )
        .unwrap_or(i64::MAX);
        if let Some((pa, pts)) = self.prev {
            // D(i-1, i) = (Rj - Ri) - (Sj - Si), the timestamp difference taken mod 2^32.
            let sdiff = i64::from(ts.wrapping_sub(pts) as i32);
            let d = (arrival - pa) - sdiff;
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, kept as J*16.
            self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
            let ms = self.jitter_ms();
            if ms > self.max_jitter_ms {
                self.max_jitter_ms = ms;
            }
        }
        self.prev = Some((arrival, ts));
    }

    /// The current jitter estimate, milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        if self.clock == 0 {
            return 0.0;
        }
        (self.jitter16 as f64 / 16.0) * 1000.0 / f64::from(self.clock)
    }

    /// The largest estimate seen, milliseconds.
    pub fn max_jitter_ms(&self) -> f64 {
        self.max_jitter_ms
    }

    /// Loss bursts seen between in-order packets: (bursts, packets lost in them).
    pub fn bursts(&self) -> (u64, u64) {
        (self.bursts, self.burst_lost)
    }
}

/// G.113 Appendix I equipment-impairment values of a codec: `Ie` and the packet-loss
/// robustness `Bpl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor.
    pub ie: f64,
    /// Packet-loss robustness factor.
    pub bpl: f64,
}

/// The impairment values used for a codec name (SDP encoding name). Unknown codecs and
/// the wideband ones (which the narrowband E-model does not cover) use G.711's.
pub fn codec_impairment(codec: &str) -> CodecImpairment {
    match codec.to_ascii_uppercase().as_str() {
        // G.113 Table I.1 / I.3.
        "G729" | "G729A" => CodecImpairment {
            ie: 11.0,
            bpl: 19.0,
        },
        "G723" => CodecImpairment {
            ie: 15.0,
            bpl: 16.1,
        },
        "GSM" => CodecImpairment {
            ie: 20.0,
            bpl: 10.0,
        },
        "ILBC" => CodecImpairment {
            ie: 10.0,
            bpl: 32.0,
        },
        // G.711 with packet-loss concealment (Appendix I of G.711): Ie 0, Bpl 25.1.
        _ => CodecImpairment { ie: 0.0, bpl: 25.1 },
    }
}

/// G.711 without packet-loss concealment (G.113 Table I.3): Bpl 4.3.
pub const G711_NO_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };

/// `Ro - Is` with all G.107 defaults (Table 3): the best narrowband R.
pub const R_DEFAULT: f64 = 93.2;

/// Delay impairment `Id` for a one-way mouth-to-ear delay of `d_ms`: the fit of G.107's
/// Id with default parameters (Cole & Rosenbluth, 2001):
/// `Id = 0.024 d + 0.11 (d − 177.3) H(d − 177.3)`.
pub fn delay_impairment(d_ms: f64) -> f64 {
    let d = d_ms.max(0.0);
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// Effective equipment impairment (G.107 eq. 7-29):
/// `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)`, `ppl_pct` in percent.
pub fn effective_ie(c: CodecImpairment, ppl_pct: f64, burst_r: f64) -> f64 {
    let ppl = ppl_pct.clamp(0.0, 100.0);
    let br = if burst_r.is_finite() && burst_r >= 1.0 {
        burst_r
    } else {
        1.0
    };
    c.ie + (95.0 - c.ie) * ppl / (ppl / br + c.bpl)
}

/// `R = 93.2 − Id − Ie,eff` (advantage factor A = 0).
pub fn r_factor(c: CodecImpairment, ppl_pct: f64, burst_r: f64, delay_ms: f64) -> f64 {
    R_DEFAULT - delay_impairment(delay_ms) - effective_ie(c, ppl_pct, burst_r)
}

/// MOS (conversational quality, estimated) from R, G.107 Annex B (B-4).
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// G.107's burst ratio from observed loss: the mean observed burst length over the mean
/// burst length of random loss at the same rate (`1 / (1 − p)`); 1 without loss.
pub fn burst_ratio(lost: u64, bursts: u64, expected: u64) -> f64 {
    if lost == 0 || bursts == 0 || expected == 0 {
        return 1.0;
    }
    let p = (lost as f64 / expected as f64).min(0.99);
    ((lost as f64 / bursts as f64) * (1.0 - p)).max(1.0)
}

/// The quality figures of one channel (stored in `assurance_json` and the manifest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelQuality {
    /// Channel index.
    pub channel: u32,
    /// Packets lost, percent of those expected (received + lost).
    pub loss_pct: f64,
    /// G.107 burst ratio of the loss (1: random).
    pub burst_ratio: f64,
    /// RFC 3550 interarrival jitter at the end of the call, ms.
    pub jitter_ms: f64,
    /// The largest jitter estimate during the call, ms.
    pub max_jitter_ms: f64,
    /// The one-way delay the E-model was given, ms (assumed network delay + 2 × max
    /// jitter for the jitter buffer + packetisation).
    pub delay_ms: f64,
    /// E-model R-factor (0…93.2).
    pub r_factor: f64,
    /// MOS estimate from R (1…4.5).
    pub mos: f64,
    /// Mean level of the whole channel, dBFS (−100: digital silence).
    pub rms_dbfs: f64,
    /// Mean level of its voice frames, dBFS (−100: none).
    pub voice_dbfs: f64,
    /// Share of 20 ms frames above the voice threshold (0…1).
    pub voice_ratio: f64,
    /// Packets late, concealed ms and media-gap ms, copied from the statistics.
    pub late: u64,
    /// Concealed milliseconds.
    pub concealed_ms: u64,
    /// Media-gap milliseconds.
    pub gap_ms: u64,
    /// Packets received.
    pub received: u64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl ChannelQuality {
    /// Round the figures for storage (two decimals), so stored documents are stable.
    pub fn rounded(mut self) -> Self {
        for v in [
            &mut self.loss_pct,
            &mut self.burst_ratio,
            &mut self.jitter_ms,
            &mut self.max_jitter_ms,
            &mut self.delay_ms,
            &mut self.r_factor,
            &mut self.mos,
            &mut self.rms_dbfs,
            &mut self.voice_dbfs,
        ] {
            *v = round2(*v);
        }
        self.voice_ratio = (self.voice_ratio * 10_000.0).round() / 10_000.0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tolerances of the comparison with G.107 (docs/assurance.md): R within 0.5, MOS
    /// within 0.05.
    const R_TOL: f64 = 0.5;
    const MOS_TOL: f64 = 0.05;

    fn close(a: f64, b: f64, tol: f64, what: &str) {
        assert!(
            (a - b).abs() <= tol,
            "{what}: {a} vs reference {b} (±{tol})"
        );
    }

    /// G.107 reference points (Annex B MOS(R); Table 3 defaults → R 93.2; Id with
    /// default parameters; G.113 Ie/Bpl with the eq. 7-29 loss formula).
    #[test]
    fn formulas_match_g107_reference_values() {
        // All defaults: R = 93.2, MOS 4.41.
        close(
            r_factor(codec_impairment("PCMU"), 0.0, 1.0, 0.0),
            93.2,
            1e-9,
            "R default",
        );
        close(mos(93.2), 4.41, 0.005, "MOS(93.2)");
        // Annex B table: MOS(R) at the category bounds.
        for (r, m) in [
            (90.0, 4.34),
            (80.0, 4.03),
            (70.0, 3.60),
            (60.0, 3.10),
            (50.0, 2.58),
        ] {
            close(mos(r), m, 0.01, "MOS(R)");
        }
        close(mos(-5.0), 1.0, 0.0, "MOS below 0");
        close(mos(120.0), 4.5, 0.0, "MOS above 100");
        // Delay: 150 ms → Id 3.6; 300 ms → 7.2 + 0.11·122.7 = 20.70.
        close(delay_impairment(150.0), 3.6, 1e-9, "Id(150)");
        close(delay_impairment(300.0), 20.697, 1e-3, "Id(300)");
        // G.711 + PLC (Bpl 25.1): 1 % random → Ie,eff 3.64, R 89.56; 5 % → 15.78, R 77.42.
        close(
            effective_ie(codec_impairment("PCMA"), 1.0, 1.0),
            3.64,
            0.01,
            "Ie,eff 1%",
        );
        close(
            r_factor(codec_impairment("PCMA"), 5.0, 1.0, 0.0),
            77.42,
            0.01,
            "R 5%",
        );
        // G.711 without PLC (Bpl 4.3), 2 %: Ie,eff = 190 / 6.3 = 30.16 → R 63.04.
        close(
            r_factor(G711_NO_PLC, 2.0, 1.0, 0.0),
            63.04,
            0.01,
            "R no PLC 2%",
        );
        // G.729A (Ie 11): no loss → 82.2.
        close(
            r_factor(codec_impairment("G729"), 0.0, 1.0, 0.0),
            82.2,
            1e-9,
            "R G.729A",
        );
        // Bursty: BurstR 2 at 2 % → Ie,eff = 190 / 26.1 = 7.28.
        close(
            effective_ie(codec_impairment("PCMU"), 2.0, 2.0),
            7.28,
            0.01,
            "Ie,eff bursty",
        );
    }

    /// Feed 20 ms G.711 packets (160 timestamp units) with `lose(i)` deciding loss and
    /// `delay_ms(i)` the network delay of packet i; return the tracker and the number sent.
    fn run(
        n: u16,
        lose: impl Fn(u16) -> bool,
        delay_ms: impl Fn(u16) -> u64,
    ) -> (QualityTracker, u64, u64) {
        let mut q = QualityTracker::default();
        let mut received = 0;
        for i in 0..n {
            if lose(i) {
                continue;
            }
            let at = Mono::from_millis(u64::from(i) * 20 + delay_ms(i));
            q.on_packet(7, i, u32::from(i) * 160, 8000, at, true);
            received += 1;
        }
        let expected = u64::from(n);
        (q, received, expected)
    }

    fn r_of(q: &QualityTracker, received: u64, expected: u64) -> (f64, f64, f64) {
        let lost = expected - received;
        let (bursts, burst_lost) = q.bursts();
        assert_eq!(burst_lost, lost, "every loss is inside the sequence");
        let ppl = lost as f64 * 100.0 / expected as f64;
        let br = burst_ratio(lost, bursts, expected);
        (ppl, br, r_factor(codec_impairment("PCMU"), ppl, br, 0.0))
    }

    #[test]
    fn generated_random_loss_gives_the_g107_value() {
        // Every 50th packet lost (2 %, isolated losses: random, BurstR ≈ 1).
        let (q, rx, ex) = run(5000, |i| i % 50 == 25, |_| 0);
        let (ppl, br, r) = r_of(&q, rx, ex);
        close(ppl, 2.0, 1e-9, "Ppl");
        close(br, 1.0, 0.03, "BurstR");
        // G.107: Ie,eff = 95·2/(2+25.1) = 7.01 → R = 86.19, MOS 4.24.
        close(r, 86.19, R_TOL, "R");
        close(mos(r), 4.24, MOS_TOL, "MOS");
        close(q.jitter_ms(), 0.0, 1e-9, "no jitter");
    }

    #[test]
    fn generated_bursty_loss_gives_the_g107_value() {
        // Two consecutive packets lost every 100: 2 %, bursts of 2 → BurstR = 2·0.98 = 1.96.
        let (q, rx, ex) = run(5000, |i| i % 100 == 50 || i % 100 == 51, |_| 0);
        let (ppl, br, r) = r_of(&q, rx, ex);
        close(ppl, 2.0, 1e-9, "Ppl");
        close(br, 1.96, 0.01, "BurstR");
        // Ie,eff = 95·2/(2/1.96 + 25.1) = 7.27 → R = 85.93.
        close(r, 85.93, R_TOL, "R");
        close(mos(r), 4.23, MOS_TOL, "MOS");
    }

    #[test]
    fn rfc3550_jitter_of_an_alternating_delay_converges_to_it() {
        // Delay alternating 0 / 30 ms: |D| = 30 ms every packet, so J → 30 ms.
        let (q, _, _) = run(2000, |_| false, |i| if i % 2 == 1 { 30 } else { 0 });
        close(q.jitter_ms(), 30.0, 0.2, "alternating jitter");
        // A single 100 ms spike: J jumps by |D|/16 and decays.
        let (q, _, _) = run(400, |_| false, |i| if i == 200 { 100 } else { 0 });
        assert!(
            q.max_jitter_ms() >= 100.0 / 16.0 * 1.9 - 0.2,
            "spike raises the estimate twice ({} ms)",
            q.max_jitter_ms()
        );
        assert!(q.jitter_ms() < 0.1, "and it decays ({} ms)", q.jitter_ms());
        // Timestamp wrap and an SSRC change do not produce a jump.
        let mut q = QualityTracker::default();
        for i in 0..100u32 {
            q.on_packet(
                1,
                i as u16,
                (u32::MAX - 800).wrapping_add(i * 160),
                8000,
                Mono::from_millis(u64::from(i) * 20),
                true,
            );
        }
        q.on_packet(2, 9, 5, 8000, Mono::from_millis(5000), true);
        close(q.jitter_ms(), 0.0, 1e-9, "wrap and SSRC change");
    }
}
