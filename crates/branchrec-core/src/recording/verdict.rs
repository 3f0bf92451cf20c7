//! The assurance verdict of a finished recording (docs/assurance.md): decided from the
//! per-channel statistics ([`ChannelStats`]) and the quality and level figures
//! ([`ChannelQuality`]) the recording core measured from what it stored.

use crate::assurance::level;
use crate::assurance::quality::{self, ChannelQuality};
use crate::assurance::{FileOutcome, Judgement, Verdict, VerdictPolicy};
use crate::recording::stats::ChannelStats;

/// The verdict of a finished recording from its channels' statistics and quality.
pub fn judge(
    p: &VerdictPolicy,
    stats: &[ChannelStats],
    quality: &[ChannelQuality],
    duration_ms: u64,
    file: FileOutcome,
) -> Judgement {
    let j = |verdict, reason: String, silent: Vec<u32>| Judgement {
        verdict,
        reason,
        silent_channels: silent,
    };
    let decodable: u64 = stats
        .iter()
        .map(|s| s.received.saturating_sub(s.unsupported_payload))
        .sum();
    if decodable == 0 || file == FileOutcome::CodecUnsupported {
        let all: Vec<u32> = stats.iter().map(|s| s.channel).collect();
        return j(
            Verdict::NoMedia,
            "no decodable RTP arrived on any channel".into(),
            all,
        );
    }
    if file == FileOutcome::Cut {
        return j(
            Verdict::Partial,
            "the file ends before the call did".into(),
            Vec::new(),
        );
    }
    if let Some(s) = stats.iter().find(|s| s.storage_gaps > 0) {
        return j(
            Verdict::Partial,
            format!("{} ms not stored (storage gaps)", s.storage_gap_ms),
            Vec::new(),
        );
    }
    let dur = duration_ms.max(1) as f64;
    for s in stats {
        let missing = s.media_gap_ms + s.lost.saturating_mul(20);
        if missing as f64 / dur > p.max_gap_ratio {
            return j(
                Verdict::Partial,
                format!(
                    "channel {}: {missing} ms of {} ms without the sender's audio (gaps {} ms, {} packets lost), above {:.0} %",
                    s.channel, duration_ms, s.media_gap_ms, s.lost, p.max_gap_ratio * 100.0
                ),
                Vec::new(),
            );
        }
    }
    let silent: Vec<u32> = stats
        .iter()
        .filter(|s| {
            quality
                .iter()
                .find(|q| q.channel == s.channel)
                .map_or(true, |q| q.voice_ratio < p.min_voice_ratio)
        })
        .map(|s| s.channel)
        .collect();
    if !silent.is_empty() && silent.len() == stats.len() {
        j(
            Verdict::Silent,
            format!(
                "no channel has voice in {:.0} % of the call",
                p.min_voice_ratio * 100.0
            ),
            silent,
        )
    } else if !silent.is_empty() {
        j(
            Verdict::OneWay,
            format!(
                "channel(s) {:?} silent or near-silent (voice below {:.0} % of the call at {} dBFS)",
                silent,
                p.min_voice_ratio * 100.0,
                p.voice_dbfs
            ),
            silent,
        )
    } else {
        j(
            Verdict::Recorded,
            "every channel carries voice".into(),
            Vec::new(),
        )
    }
}

/// The quality figures of a channel from its statistics, jitter/loss tracker and level.
pub fn channel_quality(
    p: &VerdictPolicy,
    s: &ChannelStats,
    q: &quality::QualityTracker,
    level: &level::ChannelLevel,
    codec: &str,
) -> ChannelQuality {
    let expected = s.received + s.lost;
    let loss_pct = if expected == 0 {
        0.0
    } else {
        s.lost as f64 * 100.0 / expected as f64
    };
    let (bursts, burst_lost) = q.bursts();
    let burst_r = quality::burst_ratio(burst_lost, bursts, expected);
    let delay = p.assumed_delay_ms + 2.0 * q.max_jitter_ms() + 20.0;
    let imp = quality::codec_impairment(codec.split('+').next().unwrap_or(""));
    let (r, mos) = if s.received == 0 {
        (0.0, 1.0)
    } else {
        let r = quality::r_factor(imp, loss_pct, burst_r, delay).max(0.0);
        (r, quality::mos(r))
    };
    ChannelQuality {
        channel: s.channel,
        loss_pct,
        burst_ratio: burst_r,
        jitter_ms: q.jitter_ms(),
        max_jitter_ms: q.max_jitter_ms(),
        delay_ms: delay,
        r_factor: r,
        mos,
        rms_dbfs: level.rms_dbfs,
        voice_dbfs: level.voice_dbfs,
        voice_ratio: level.voice_ratio,
        late: s.late,
        concealed_ms: s.concealed_ms,
        gap_ms: s.media_gap_ms,
        received: s.received,
    }
    .rounded()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ch: u32, received: u64) -> ChannelStats {
        ChannelStats {
            channel: ch,
            received,
            ..ChannelStats::default()
        }
    }
    fn q(ch: u32, voice: f64) -> ChannelQuality {
        ChannelQuality {
            channel: ch,
            voice_ratio: voice,
            ..ChannelQuality::default()
        }
    }

    #[test]
    fn verdict_rules() {
        let p = VerdictPolicy::default();
        let v = |s: &[ChannelStats], qs: &[ChannelQuality], f| judge(&p, s, qs, 10_000, f).verdict;
        let both = [st(0, 500), st(1, 500)];
        assert_eq!(
            v(&both, &[q(0, 0.6), q(1, 0.4)], FileOutcome::Complete),
            Verdict::Recorded
        );
        assert_eq!(
            v(&both, &[q(0, 0.6), q(1, 0.01)], FileOutcome::Complete),
            Verdict::OneWay
        );
        assert_eq!(
            v(&both, &[q(0, 0.0), q(1, 0.01)], FileOutcome::Complete),
            Verdict::Silent
        );
        assert_eq!(
            v(
                &[st(0, 0), st(1, 0)],
                &[q(0, 0.0), q(1, 0.0)],
                FileOutcome::Complete
            ),
            Verdict::NoMedia
        );
        // One channel without RTP at all, the other talking: one-way.
        let j = judge(
            &p,
            &[st(0, 500), st(1, 0)],
            &[q(0, 0.5), q(1, 0.0)],
            10_000,
            FileOutcome::Complete,
        );
        assert_eq!((j.verdict, j.silent_channels), (Verdict::OneWay, vec![1]));
        // Only unsupported payloads: no media.
        let mut u = st(0, 100);
        u.unsupported_payload = 100;
        assert_eq!(
            v(&[u], &[q(0, 0.0)], FileOutcome::Complete),
            Verdict::NoMedia
        );
        assert_eq!(
            v(&both, &[q(0, 0.6), q(1, 0.6)], FileOutcome::Cut),
            Verdict::Partial
        );
        let mut g = both.clone();
        g[1].media_gap_ms = 900;
        g[1].lost = 6; // 900 + 120 ms of 10 s > 10 %
        assert_eq!(
            v(&g, &[q(0, 0.6), q(1, 0.6)], FileOutcome::Complete),
            Verdict::Partial
        );
        g[1].lost = 0; // 9 %: fine
        assert_eq!(
            v(&g, &[q(0, 0.6), q(1, 0.6)], FileOutcome::Complete),
            Verdict::Recorded
        );
        g[0].storage_gaps = 1;
        assert_eq!(
            v(&g, &[q(0, 0.6), q(1, 0.6)], FileOutcome::Complete),
            Verdict::Partial
        );
        // Exactly at the threshold is voice.
        assert_eq!(
            v(&both, &[q(0, 0.05), q(1, 0.05)], FileOutcome::Complete),
            Verdict::Recorded
        );
    }

    #[test]
    fn quality_of_a_clean_channel() {
        let p = VerdictPolicy::default();
        let mut t = quality::QualityTracker::default();
        for i in 0..100u16 {
            t.on_packet(
                1,
                i,
                u32::from(i) * 160,
                8000,
                crate::time::Mono::from_millis(u64::from(i) * 20),
                true,
            );
        }
        let lv = level::ChannelLevel {
            rms_dbfs: -20.0,
            voice_dbfs: -18.0,
            voice_ratio: 0.7,
            frames: 100,
        };
        let c = channel_quality(&p, &st(0, 100), &t, &lv, "PCMU");
        // Delay 40 + 0 + 20 = 60 ms → Id 1.44 → R 91.76.
        assert_eq!((c.loss_pct, c.jitter_ms, c.delay_ms), (0.0, 0.0, 60.0));
        assert!((c.r_factor - 91.76).abs() < 0.01, "{}", c.r_factor);
        assert!((c.mos - 4.38).abs() < 0.01, "{}", c.mos);
    }
}
