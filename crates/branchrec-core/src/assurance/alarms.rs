//! Assurance alarms (docs/assurance.md): "≥ N calls with verdict V within W" and "the
//! clock is unsynchronised or its error too large", raised and cleared by time alone.
//! Windows run on [`Mono`], so a step of the wall clock neither raises nor clears one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Verdict;
use crate::time::Mono;

/// One threshold: `count` calls with `verdict` within `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRule {
    /// The verdict counted.
    pub verdict: Verdict,
    /// Calls needed to raise the alarm (≥ 1).
    pub count: u32,
    /// The sliding window.
    pub window: Duration,
}

impl AlarmRule {
    /// The alarm's stable code, `assurance_<verdict>`.
    pub fn code(&self) -> String {
        format!("assurance_{}", self.verdict.as_str())
    }
}

/// The default thresholds: ≥ 3 one-way or silent calls, ≥ 3 without media, or any
/// missed call, within 15 minutes.
pub fn default_rules() -> Vec<AlarmRule> {
    let w = Duration::from_secs(900);
    vec![
        AlarmRule {
            verdict: Verdict::OneWay,
            count: 3,
            window: w,
        },
        AlarmRule {
            verdict: Verdict::Silent,
            count: 3,
            window: w,
        },
        AlarmRule {
            verdict: Verdict::NoMedia,
            count: 3,
            window: w,
        },
        AlarmRule {
            verdict: Verdict::Missed,
            count: 1,
            window: w,
        },
    ]
}

/// Code of the clock alarm.
pub const TIME_ALARM: &str = "time_unsync";

/// When a bad clock reading raises [`TIME_ALARM`] (`[time] alarm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeAlarmMode {
    /// Every bad reading (a box whose time daemon is configured: `[time] servers`).
    Always,
    /// Only once the clock was seen synchronised since the daemon started: a lost sync
    /// alarms, a machine that was never synchronised (a development host, a CI
    /// container) only flags its recordings.
    Auto,
    /// Never (the recordings are flagged all the same).
    Never,
}

/// An alarm that is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlarm {
    /// `assurance_one_way`, …, or [`TIME_ALARM`].
    pub code: String,
    /// What is wrong (no personal data).
    pub message: String,
    /// Since when (the first event still in the window), on the monotonic clock.
    #[serde(skip)]
    pub since: Mono,
}

/// Box-wide verdict counters and alarm state.
#[derive(Debug, Clone)]
pub struct AssuranceMonitor {
    rules: Vec<AlarmRule>,
    /// Times of the recent calls per verdict (only verdicts some rule counts).
    recent: BTreeMap<Verdict, VecDeque<Mono>>,
    /// Calls per verdict since start.
    totals: BTreeMap<Verdict, u64>,
    /// The last clock judgement that was bad, until a good one comes.
    clock_bad: Option<(Mono, String)>,
    flagged_recordings: u64,
    clock_steps: u64,
    time_mode: TimeAlarmMode,
    seen_synced: bool,
}

/// What the monitor shows (`branchrec status`, the status document, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssuranceSnapshot {
    /// Calls per verdict since the daemon started (every verdict present).
    pub verdicts: BTreeMap<String, u64>,
    /// Alarms up now.
    pub alarms: Vec<ActiveAlarm>,
    /// Recordings flagged for their clock state since start.
    pub time_flagged: u64,
    /// Clock steps seen during recordings since start.
    pub clock_steps: u64,
}

impl AssuranceMonitor {
    /// A monitor with these thresholds.
    pub fn new(rules: Vec<AlarmRule>) -> Self {
        AssuranceMonitor {
            rules,
            recent: BTreeMap::new(),
            totals: BTreeMap::new(),
            clock_bad: None,
            flagged_recordings: 0,
            clock_steps: 0,
            time_mode: TimeAlarmMode::Always,
            seen_synced: false,
        }
    }

    /// When bad clock readings raise the alarm (default [`TimeAlarmMode::Always`]).
    pub fn set_time_alarm(&mut self, mode: TimeAlarmMode) {
        self.time_mode = mode;
    }

    fn longest_window(&self, v: Verdict) -> Option<Duration> {
        self.rules
            .iter()
            .filter(|r| r.verdict == v)
            .map(|r| r.window)
            .max()
    }

    /// A call ended (or was refused) with `v` at `now`.
    pub fn note(&mut self, now: Mono, v: Verdict) {
        *self.totals.entry(v).or_default() += 1;
        if let Some(w) = self.longest_window(v) {
            let q = self.recent.entry(v).or_default();
            q.push_back(now);
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= w)
            {
                q.pop_front();
            }
            // Bounded: never more than the largest count is needed.
            let keep = self
                .rules
                .iter()
                .filter(|r| r.verdict == v)
                .map(|r| r.count)
                .max()
                .unwrap_or(1);
            while q.len() > keep as usize {
                q.pop_front();
            }
        }
    }

    /// A clock reading at `now`: `problem` is `Some(why)` when it is unsynchronised or
    /// its error too large; a good reading clears the alarm.
    pub fn note_clock(&mut self, now: Mono, problem: Option<String>) {
        let alarms = match self.time_mode {
            TimeAlarmMode::Always => true,
            TimeAlarmMode::Auto => self.seen_synced,
            TimeAlarmMode::Never => false,
        };
        match problem {
            Some(_) if !alarms => {}
            Some(why) => {
                if self.clock_bad.is_none() {
                    self.clock_bad = Some((now, why));
                } else if let Some(b) = self.clock_bad.as_mut() {
                    b.1 = why;
                }
            }
            None => {
                self.seen_synced = true;
                self.clock_bad = None;
            }
        }
    }

    /// A recording was flagged for its clock state.
    pub fn note_flagged_recording(&mut self) {
        self.flagged_recordings += 1;
    }

    /// A clock step was seen during a recording.
    pub fn note_step(&mut self) {
        self.clock_steps += 1;
    }

    /// The alarms up at `now`.
    pub fn alarms(&self, now: Mono) -> Vec<ActiveAlarm> {
        let mut out = Vec::new();
        for r in &self.rules {
            let Some(q) = self.recent.get(&r.verdict) else {
                continue;
            };
            let inside: Vec<Mono> = q
                .iter()
                .copied()
                .filter(|t| now.saturating_duration_since(*t) < r.window)
                .collect();
            if inside.len() >= r.count.max(1) as usize {
                let since = inside
                    .get(inside.len() - r.count.max(1) as usize)
                    .copied()
                    .unwrap_or(now);
                out.push(ActiveAlarm {
                    code: r.code(),
                    message: format!(
                        "{} calls with verdict {} within {} min (threshold {})",
                        inside.len(),
                        r.verdict,
                        r.window.as_secs() / 60,
                        r.count
                    ),
                    since,
                });
            }
        }
        if let Some((since, why)) = &self.clock_bad {
            out.push(ActiveAlarm {
                code: TIME_ALARM.into(),
                message: why.clone(),
                since: *since,
            });
        }
        out
    }

    /// Counters and alarms at `now`.
    pub fn snapshot(&self, now: Mono) -> AssuranceSnapshot {
        AssuranceSnapshot {
            verdicts: Verdict::ALL
                .iter()
                .map(|v| {
                    (
                        v.as_str().to_string(),
                        self.totals.get(v).copied().unwrap_or(0),
                    )
                })
                .collect(),
            alarms: self.alarms(now),
            time_flagged: self.flagged_recordings,
            clock_steps: self.clock_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_at_the_threshold_and_cleared_by_time() {
        let mut m = AssuranceMonitor::new(default_rules());
        let s = |t: u64| Mono::from_secs(t);
        m.note(s(0), Verdict::OneWay);
        m.note(s(100), Verdict::OneWay);
        m.note(s(200), Verdict::Recorded);
        assert!(m.alarms(s(200)).is_empty(), "two one-way calls are below 3");
        m.note(s(800), Verdict::OneWay);
        let a = m.alarms(s(800));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].code, "assurance_one_way");
        assert_eq!(a[0].since, s(0));
        // The first leaves the 15-minute window at 900 s: cleared without any new call.
        assert_eq!(m.alarms(s(899)).len(), 1);
        assert!(m.alarms(s(900)).is_empty());
        // Any missed call raises its alarm for 15 minutes.
        m.note(s(1000), Verdict::Missed);
        assert_eq!(m.alarms(s(1000))[0].code, "assurance_missed");
        assert!(m.alarms(s(1900)).is_empty());
        let snap = m.snapshot(s(1900));
        assert_eq!(snap.verdicts["one_way"], 3);
        assert_eq!(snap.verdicts["recorded"], 1);
        assert_eq!(snap.verdicts["missed"], 1);
        assert_eq!(snap.verdicts["refused"], 0);
        assert_eq!(snap.verdicts.len(), 8);
    }

    #[test]
    fn clock_alarm_until_a_good_reading() {
        let mut m = AssuranceMonitor::new(Vec::new());
        m.note_clock(Mono::from_secs(1), Some("unsynchronised".into()));
        m.note_clock(Mono::from_secs(5), Some("still".into()));
        let a = m.alarms(Mono::from_secs(10));
        assert_eq!(
            (a[0].code.as_str(), a[0].since, a[0].message.as_str()),
            (TIME_ALARM, Mono::from_secs(1), "still")
        );
        m.note_clock(Mono::from_secs(20), None);
        assert!(m.alarms(Mono::from_secs(20)).is_empty());
    }

    #[test]
    fn auto_time_alarm_only_after_the_clock_was_synchronised() {
        let s = Mono::from_secs;
        let mut m = AssuranceMonitor::new(Vec::new());
        m.set_time_alarm(TimeAlarmMode::Auto);
        m.note_clock(s(1), Some("unsynchronised".into()));
        assert!(m.alarms(s(1)).is_empty(), "never synchronised: flag only");
        m.note_clock(s(2), None);
        m.note_clock(s(3), Some("lost".into()));
        assert_eq!(m.alarms(s(3))[0].code, TIME_ALARM, "lost sync alarms");
        let mut n = AssuranceMonitor::new(Vec::new());
        n.set_time_alarm(TimeAlarmMode::Never);
        n.note_clock(s(2), None);
        n.note_clock(s(3), Some("lost".into()));
        assert!(n.alarms(s(3)).is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = AssuranceMonitor::new(default_rules());
        for i in 0..10_000 {
            m.note(Mono::from_millis(i), Verdict::OneWay);
        }
        assert!(m.recent[&Verdict::OneWay].len() <= 3);
        assert_eq!(m.alarms(Mono::from_millis(10_000)).len(), 1);
    }
}
