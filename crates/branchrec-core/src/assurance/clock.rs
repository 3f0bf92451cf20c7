//! Time you can testify to (docs/assurance.md): the kernel clock's synchronisation
//! state with every recording, and clock steps during a call. The shell reads
//! `adjtimex(2)` (behind its `ClockProbe` trait) and both clocks; this module judges.

use serde::{Deserialize, Serialize};

use crate::time::{Mono, UnixMs};

/// `adjtimex` status bit: the clock is not synchronised (`STA_UNSYNC`).
pub const STA_UNSYNC: i32 = 0x0040;

/// One reading of the kernel's clock discipline (`struct timex` after `adjtimex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// Wall clock at the reading, unix ms.
    pub at_ms: i64,
    /// `STA_UNSYNC` is set (or the call returned `TIME_ERROR`).
    pub unsync: bool,
    /// `maxerror`, µs: the kernel's bound on the clock error (grows 500 ppm while unsynced).
    pub maxerror_us: i64,
    /// `esterror`, µs: the estimated error.
    pub esterror_us: i64,
    /// `offset`, µs: the time daemon's last measured offset (0 when it does not set it).
    pub offset_us: i64,
    /// The raw `status` bits.
    pub status: i32,
    /// Where it came from: `adjtimex`, or `test-hook`.
    pub source: ClockSource,
}

/// Where a [`ClockReading`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// The kernel.
    Adjtimex,
    /// The development hook (`[development] clock_override`).
    TestHook,
    /// The reading failed.
    Unavailable,
}

/// MiFID II RTS 25 tiers of maximum divergence from UTC (docs/assurance.md).
pub const RTS25_TIERS_MS: [(&str, f64); 3] = [
    ("hft", 0.1),
    ("other_trading", 1.0),
    ("voice_and_manual", 1000.0),
];

impl ClockReading {
    /// Why this reading does not meet `max_error_ms`, if it does not: unsynchronised, or
    /// `maxerror` (the kernel's bound, including `esterror`) above the bound.
    pub fn problem(&self, max_error_ms: u32) -> Option<String> {
        if self.source == ClockSource::Unavailable {
            return Some("the clock state could not be read".into());
        }
        if self.unsync {
            return Some("the system clock is not synchronised (STA_UNSYNC)".into());
        }
        let bound_us = i64::from(max_error_ms) * 1000;
        if self.maxerror_us > bound_us {
            return Some(format!(
                "clock error bound {} ms above time.max_error_ms {max_error_ms}",
                self.maxerror_us / 1000
            ));
        }
        if self.offset_us.abs() > bound_us {
            return Some(format!(
                "clock offset {} ms above time.max_error_ms {max_error_ms}",
                self.offset_us / 1000
            ));
        }
        None
    }
}

/// A clock step seen during a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStep {
    /// Where on the recording's (monotonic) timeline, ms.
    pub at_ms: u64,
    /// Size: positive = the wall clock jumped forward, ms.
    pub step_ms: i64,
    /// Wall clock before (expected) and after the step, unix ms.
    pub expected_wall_ms: i64,
    /// What the wall clock said.
    pub wall_ms: i64,
}

/// Compares the wall clock with the monotonic clock during a recording: between two
/// observations both must advance by the same amount (± `threshold_ms`); otherwise the
/// wall clock was stepped. The reference moves to every observation, so a slew (≤ 500
/// ppm) never adds up to a step and each step is reported once.
#[derive(Debug, Clone)]
pub struct StepDetector {
    threshold_ms: i64,
    last: (Mono, UnixMs),
}

impl StepDetector {
    /// Start at `mono` / `wall` (the recording's start), steps above `threshold_ms`.
    pub fn new(mono: Mono, wall: UnixMs, threshold_ms: u32) -> Self {
        StepDetector {
            threshold_ms: i64::from(threshold_ms.max(1)),
            last: (mono, wall),
        }
    }

    /// Observe both clocks; `mono` on the recording's timeline.
    pub fn observe(&mut self, mono: Mono, wall: UnixMs) -> Option<ClockStep> {
        let dm = i64::try_from(mono.saturating_duration_since(self.last.0).as_millis())
            .unwrap_or(i64::MAX);
        let expected = self.last.1 .0.saturating_add(dm);
        self.last = (mono, wall);
        let step = wall.0 - expected;
        (step.abs() > self.threshold_ms).then_some(ClockStep {
            at_ms: mono.as_millis(),
            step_ms: step,
            expected_wall_ms: expected,
            wall_ms: wall.0,
        })
    }
}

/// The clock facts of one recording (catalogue `assurance_json.clock`, the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingClock {
    /// At the start.
    pub start: ClockReading,
    /// At the end (`None` until the recording ends).
    pub end: Option<ClockReading>,
    /// The bound it was judged against, ms.
    pub max_error_ms: u32,
    /// Why it is flagged (start or end reading), `None` if trustworthy.
    pub flagged: Option<String>,
    /// Steps during the recording.
    pub steps: Vec<ClockStep>,
}

impl RecordingClock {
    /// Judge the readings.
    pub fn judge(
        start: ClockReading,
        end: Option<ClockReading>,
        max_error_ms: u32,
        steps: Vec<ClockStep>,
    ) -> Self {
        let flagged = start
            .problem(max_error_ms)
            .map(|p| format!("at start: {p}"))
            .or_else(|| {
                end.and_then(|e| e.problem(max_error_ms))
                    .map(|p| format!("at end: {p}"))
            })
            .or_else(|| {
                steps.first().map(|s| {
                    format!(
                        "the clock was stepped by {} ms during the recording",
                        s.step_ms
                    )
                })
            });
        RecordingClock {
            start,
            end,
            max_error_ms,
            flagged,
            steps,
        }
    }
}

/// What [`WallGuard::now`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardEvent {
    /// The wall clock jumped forward by this many ms and the clock is synchronised (the
    /// time daemon stepped it): taken.
    ForwardAccepted(i64),
    /// It jumped forward while unsynchronised or beyond the error bound (`date -s`, a
    /// bad RTC): not taken; the guard runs on the monotonic clock until the clock is
    /// trustworthy again. Reported once per step.
    ForwardRefused(i64),
    /// It went back (ms, negative): taken (decisions only get later).
    Backward(i64),
}

/// The wall clock for decisions that must never be early — retention deletes on it: a
/// forward step is taken only when the clock is synchronised; otherwise "now" advances
/// with the monotonic clock from the last trusted reading.
#[derive(Debug, Clone)]
pub struct WallGuard {
    base: (Mono, UnixMs),
    tolerance_ms: i64,
    refused: Option<i64>,
}

impl WallGuard {
    /// Start from a reading; differences up to `tolerance_ms` between the two clocks are
    /// drift, not steps.
    pub fn new(mono: Mono, wall: UnixMs, tolerance_ms: u32) -> Self {
        WallGuard {
            base: (mono, wall),
            tolerance_ms: i64::from(tolerance_ms.max(1)),
            refused: None,
        }
    }

    /// The trusted "now" for a reading of both clocks; `vouched` = the clock is
    /// synchronised within its bound (see [`ClockReading::problem`]).
    pub fn now(&mut self, mono: Mono, wall: UnixMs, vouched: bool) -> (UnixMs, Option<GuardEvent>) {
        let dm = i64::try_from(mono.saturating_duration_since(self.base.0).as_millis())
            .unwrap_or(i64::MAX);
        let expected = UnixMs(self.base.1 .0.saturating_add(dm));
        let diff = wall.0 - expected.0;
        if diff > self.tolerance_ms {
            if vouched {
                self.base = (mono, wall);
                self.refused = None;
                return (wall, Some(GuardEvent::ForwardAccepted(diff)));
            }
            let first = self.refused.is_none();
            self.refused = Some(diff);
            return (expected, first.then_some(GuardEvent::ForwardRefused(diff)));
        }
        self.base = (mono, wall);
        self.refused = None;
        (
            wall,
            (diff < -self.tolerance_ms).then_some(GuardEvent::Backward(diff)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ClockReading {
        ClockReading {
            at_ms: 1_000,
            unsync: false,
            maxerror_us: 20_000,
            esterror_us: 1_000,
            offset_us: -300,
            status: 0x2001,
            source: ClockSource::Adjtimex,
        }
    }

    #[test]
    fn judging_readings() {
        assert_eq!(good().problem(100), None);
        let unsync = ClockReading {
            unsync: true,
            status: STA_UNSYNC,
            ..good()
        };
        assert!(unsync.problem(100).unwrap().contains("STA_UNSYNC"));
        let wide = ClockReading {
            maxerror_us: 150_000,
            ..good()
        };
        assert!(wide.problem(100).unwrap().contains("150 ms"));
        assert_eq!(wide.problem(200), None);
        let off = ClockReading {
            offset_us: -120_000,
            ..good()
        };
        assert!(off.problem(100).is_some());
        let rc = RecordingClock::judge(good(), Some(unsync), 100, Vec::new());
        assert!(rc.flagged.unwrap().starts_with("at end"));
        assert_eq!(
            RecordingClock::judge(good(), Some(good()), 100, Vec::new()).flagged,
            None
        );
    }

    #[test]
    fn the_guard_never_runs_ahead_on_an_unvouched_step() {
        let day = 86_400_000;
        let mut g = WallGuard::new(Mono::ZERO, UnixMs(1_000_000), 5000);
        assert_eq!(
            g.now(Mono::from_secs(10), UnixMs(1_010_000), true),
            (UnixMs(1_010_000), None)
        );
        // `date -s` two days ahead, unsynchronised: "now" stays with the monotonic clock.
        let (n, ev) = g.now(Mono::from_secs(20), UnixMs(1_020_000 + 2 * day), false);
        assert_eq!(
            (n, ev),
            (UnixMs(1_020_000), Some(GuardEvent::ForwardRefused(2 * day)))
        );
        let (n, ev) = g.now(Mono::from_secs(30), UnixMs(1_030_000 + 2 * day), false);
        assert_eq!((n, ev), (UnixMs(1_030_000), None), "reported once");
        // Once the time daemon vouches for it, it is taken.
        let (n, ev) = g.now(Mono::from_secs(40), UnixMs(1_040_000 + 2 * day), true);
        assert_eq!(
            (n, ev),
            (
                UnixMs(1_040_000 + 2 * day),
                Some(GuardEvent::ForwardAccepted(2 * day))
            )
        );
        // Backward steps are taken at once.
        let (n, ev) = g.now(Mono::from_secs(50), UnixMs(1_050_000), false);
        assert_eq!(
            (n, ev),
            (UnixMs(1_050_000), Some(GuardEvent::Backward(-2 * day)))
        );
    }

    #[test]
    fn steps_are_found_once_and_slew_is_not_a_step() {
        let mut d = StepDetector::new(Mono::ZERO, UnixMs(1_000_000), 500);
        // 10 minutes of 1 s observations with a 500 ppm slew: never a step.
        let mut wall = 1_000_000.0f64;
        for s in 1..=600u64 {
            wall += 1000.0 * 1.0005;
            assert_eq!(
                d.observe(Mono::from_secs(s), UnixMs(wall as i64)),
                None,
                "slew at {s}"
            );
        }
        // A forward step of one hour.
        let w = wall as i64 + 1000 + 3_600_000;
        let st = d.observe(Mono::from_secs(601), UnixMs(w)).expect("step");
        assert!((st.step_ms - 3_600_000).abs() <= 1, "{st:?}");
        assert_eq!(st.at_ms, 601_000);
        assert_eq!(
            d.observe(Mono::from_secs(602), UnixMs(w + 1000)),
            None,
            "reported once"
        );
        // A backward step.
        let st = d
            .observe(Mono::from_secs(603), UnixMs(w + 2000 - 5000))
            .unwrap();
        assert_eq!(st.step_ms, -5000);
    }
}
