//! Per-channel level and voice activity of the stored audio (docs/assurance.md): the
//! audio is cut into 20 ms frames; a frame whose RMS is above the voice threshold
//! (default −45 dBFS) counts as voice. Digital silence and comfort noise (typically
//! −60 … −70 dBov) stay below it, speech is −15 … −35 dBFS.

/// Level of digital silence, dBFS (what an all-zero channel reports).
pub const SILENCE_DBFS: f64 = -100.0;

const FULL_SCALE_SQ: f64 = 32768.0 * 32768.0;

/// Accumulates the level of every channel of interleaved audio.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    channels: usize,
    frame_len: usize,
    /// Mean-square threshold of a voice frame.
    voice_ms: f64,
    cur: Vec<(f64, usize)>,
    total: Vec<ChannelLevelAcc>,
}

#[derive(Debug, Clone, Default)]
struct ChannelLevelAcc {
    sum_sq: f64,
    samples: u64,
    frames: u64,
    voice_frames: u64,
    voice_sum_sq: f64,
    voice_samples: u64,
}

/// The level of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChannelLevel {
    /// RMS of all samples, dBFS.
    pub rms_dbfs: f64,
    /// RMS of the voice frames, dBFS ([`SILENCE_DBFS`] without any).
    pub voice_dbfs: f64,
    /// Voice frames / all complete frames (0 without frames).
    pub voice_ratio: f64,
    /// Complete 20 ms frames seen.
    pub frames: u64,
}

fn dbfs(mean_sq: f64) -> f64 {
    if mean_sq <= 0.0 {
        SILENCE_DBFS
    } else {
        (10.0 * (mean_sq / FULL_SCALE_SQ).log10()).max(SILENCE_DBFS)
    }
}

impl LevelMeter {
    /// A meter for `channels` channels at `sample_rate`, voice above `voice_dbfs`.
    pub fn new(channels: usize, sample_rate: u32, voice_dbfs: f64) -> Self {
        let channels = channels.max(1);
        LevelMeter {
            channels,
            frame_len: (sample_rate / 50).max(1) as usize,
            voice_ms: FULL_SCALE_SQ * 10f64.powf(voice_dbfs / 10.0),
            cur: vec![(0.0, 0); channels],
            total: vec![ChannelLevelAcc::default(); channels],
        }
    }

    /// Interleaved samples, in timeline order.
    pub fn push(&mut self, interleaved: &[i16]) {
        for frame in interleaved.chunks_exact(self.channels) {
            for (ch, &s) in frame.iter().enumerate() {
                let (Some(cur), Some(tot)) = (self.cur.get_mut(ch), self.total.get_mut(ch)) else {
                    continue;
                };
                let x = f64::from(s);
                cur.0 += x * x;
                cur.1 += 1;
                if cur.1 == self.frame_len {
                    let ms = cur.0 / cur.1 as f64;
                    tot.sum_sq += cur.0;
                    tot.samples += cur.1 as u64;
                    tot.frames += 1;
                    if ms > self.voice_ms {
                        tot.voice_frames += 1;
                        tot.voice_sum_sq += cur.0;
                        tot.voice_samples += cur.1 as u64;
                    }
                    *cur = (0.0, 0);
                }
            }
        }
    }

    /// The level of `ch` so far (an incomplete last frame is left out).
    pub fn level(&self, ch: usize) -> ChannelLevel {
        let Some(t) = self.total.get(ch) else {
            return ChannelLevel {
                rms_dbfs: SILENCE_DBFS,
                voice_dbfs: SILENCE_DBFS,
                ..Default::default()
            };
        };
        ChannelLevel {
            rms_dbfs: if t.samples == 0 {
                SILENCE_DBFS
            } else {
                dbfs(t.sum_sq / t.samples as f64)
            },
            voice_dbfs: if t.voice_samples == 0 {
                SILENCE_DBFS
            } else {
                dbfs(t.voice_sum_sq / t.voice_samples as f64)
            },
            voice_ratio: if t.frames == 0 {
                0.0
            } else {
                t.voice_frames as f64 / t.frames as f64
            },
            frames: t.frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random generator (no OS randomness in the core).
    fn lcg(seed: &mut u32) -> i32 {
        *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        ((*seed >> 16) & 0x7fff) as i32 - 16384
    }

    #[test]
    fn tone_silence_and_comfort_noise() {
        let rate = 8000;
        let mut m = LevelMeter::new(3, rate, -45.0);
        let mut seed = 1;
        let mut buf = Vec::new();
        for i in 0..(rate as usize * 2) {
            // ch0: 1 kHz tone at −10 dBFS peak; ch1: digital silence; ch2: noise at ~−64 dBFS.
            let t = i as f64 / f64::from(rate);
            let tone = (0.316 * 32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16;
            let noise = (lcg(&mut seed) / 800) as i16;
            buf.extend_from_slice(&[tone, 0, noise]);
        }
        m.push(&buf);
        let (a, b, c) = (m.level(0), m.level(1), m.level(2));
        assert_eq!(a.frames, 100);
        assert!(
            (a.rms_dbfs - (-13.0)).abs() < 0.2,
            "tone RMS {}",
            a.rms_dbfs
        );
        assert_eq!(a.voice_ratio, 1.0);
        assert_eq!(b.rms_dbfs, SILENCE_DBFS);
        assert_eq!(b.voice_ratio, 0.0);
        assert!(
            c.rms_dbfs < -55.0 && c.rms_dbfs > -75.0,
            "noise {}",
            c.rms_dbfs
        );
        assert_eq!(c.voice_ratio, 0.0, "comfort noise is not voice");
        // Half the time voice: ratio 0.5.
        let mut m = LevelMeter::new(1, rate, -45.0);
        let talk: Vec<i16> = (0..8000)
            .map(|i| if (i / 800) % 2 == 0 { 8000 } else { 0 })
            .collect();
        m.push(&talk);
        assert!((m.level(0).voice_ratio - 0.5).abs() < 1e-9);
    }
}
