//! The LED state machine (sans-IO): daemon state snapshots and time in, LED levels out.
//!
//! Meanings (docs/board.md):
//!
//! | LED   | off                          | steady on                     | blinking (1 Hz)               | fast blink (4 Hz)          |
//! |-------|------------------------------|-------------------------------|-------------------------------|----------------------------|
//! | REC   | no call recording            | a call is recording           | a recording is paused         | –                          |
//! | SYNC  | link down / no uplink        | archive up to date            | uploading (backlog)           | –                          |
//! | FAULT | all well                     | keys/TPM unusable, disk above the high watermark | capture drops, uplink stalled, assurance/clock alarm | a button hold failed |
//! | HOLD  | idle                         | hold durable (for `hold_led_s`) | –                           | hold being committed       |

use std::time::Duration;

use serde::Serialize;

use crate::time::Mono;

/// How the uplink looks to the LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UplinkView {
    /// No archive configured.
    #[default]
    Disabled,
    /// Configured.
    Enabled {
        /// The archive answered at the last attempt (no link/TLS/auth alarm).
        link_up: bool,
        /// Recordings waiting to be uploaded.
        pending: u64,
        /// A counter that grows with upload progress (bytes sent + recordings uploaded).
        progress: u64,
    },
}

/// What the daemon looks like at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Recordings in progress (SIPREC and passive).
    pub recording: u32,
    /// Of those, paused.
    pub paused: u32,
    /// Uplink.
    pub uplink: UplinkView,
    /// The recording keys (TPM / key file) are unusable.
    pub key_fault: bool,
    /// The data disk is above the high watermark.
    pub disk_high: bool,
    /// Packets dropped by the capture so far (kernel + interface counters).
    pub capture_drops: u64,
    /// An assurance or clock alarm is up (docs/assurance.md): FAULT blinks.
    pub assurance_alarm: bool,
}

/// How an LED is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Dark.
    Off,
    /// Lit.
    On,
    /// 1 Hz, half on.
    Blink,
    /// 4 Hz, half on.
    FastBlink,
}

impl Pattern {
    /// Level at `now` (blinks are phase-locked to the clock's origin, so LEDs blink
    /// together).
    pub fn level(self, now: Mono) -> bool {
        match self {
            Pattern::Off => false,
            Pattern::On => true,
            Pattern::Blink => (now.as_millis() / 500) % 2 == 0,
            Pattern::FastBlink => (now.as_millis() / 125) % 2 == 0,
        }
    }
}

/// The four LEDs' patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Patterns {
    /// REC.
    pub rec: Pattern,
    /// SYNC.
    pub sync: Pattern,
    /// FAULT.
    pub fault: Pattern,
    /// HOLD.
    pub hold: Pattern,
}

/// The four LEDs' levels (logical: true = lit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Levels {
    /// REC.
    pub rec: bool,
    /// SYNC.
    pub sync: bool,
    /// FAULT.
    pub fault: bool,
    /// HOLD.
    pub hold: bool,
}

impl Patterns {
    /// Levels at `now`.
    pub fn levels(&self, now: Mono) -> Levels {
        Levels {
            rec: self.rec.level(now),
            sync: self.sync.level(now),
            fault: self.fault.level(now),
            hold: self.hold.level(now),
        }
    }
}

/// Thresholds.
#[derive(Debug, Clone, Copy)]
pub struct LedConfig {
    /// A backlog without upload progress for this long is a fault.
    pub uplink_stall: Duration,
    /// Capture drops are shown this long after the counter last grew.
    pub drop_show: Duration,
    /// HOLD stays on this long after a hold became durable (FAULT fast-blinks this long
    /// after one failed).
    pub hold_led: Duration,
}

/// Where the last button hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldLed {
    /// Nothing to show.
    Idle,
    /// Being committed.
    Pending,
    /// Committed durably at this time.
    Durable {
        /// When.
        at: Mono,
    },
    /// Could not be placed at this time.
    Failed {
        /// When.
        at: Mono,
    },
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Leds {
    cfg: LedConfig,
    snap: Snapshot,
    /// (progress value, when it last changed or the backlog last was empty).
    progress: Option<(u64, Mono)>,
    /// (drop counter, when it last grew).
    drops: Option<(u64, Option<Mono>)>,
    hold: HoldLed,
}

impl Leds {
    /// A machine with nothing known yet (all LEDs off).
    pub fn new(cfg: LedConfig) -> Self {
        Leds {
            cfg,
            snap: Snapshot::default(),
            progress: None,
            drops: None,
            hold: HoldLed::Idle,
        }
    }

    /// Take a new daemon snapshot.
    pub fn update(&mut self, now: Mono, snap: Snapshot) {
        if let UplinkView::Enabled {
            pending, progress, ..
        } = snap.uplink
        {
            match self.progress {
                Some((p, _)) if p == progress && pending > 0 => {}
                _ => self.progress = Some((progress, now)),
            }
        } else {
            self.progress = None;
        }
        self.drops = match self.drops {
            None => Some((snap.capture_drops, None)),
            Some((d, _)) if snap.capture_drops > d => Some((snap.capture_drops, Some(now))),
            // A counter that went backwards (capture restarted): take the new base.
            Some((d, _)) if snap.capture_drops < d => Some((snap.capture_drops, None)),
            keep => keep,
        };
        self.snap = snap;
    }

    /// A button hold is being committed.
    pub fn hold_pending(&mut self) {
        self.hold = HoldLed::Pending;
    }

    /// The button hold is durable.
    pub fn hold_durable(&mut self, now: Mono) {
        self.hold = HoldLed::Durable { at: now };
    }

    /// The button hold could not be placed.
    pub fn hold_failed(&mut self, now: Mono) {
        self.hold = HoldLed::Failed { at: now };
    }

    /// The HOLD indication now.
    pub fn hold_state(&self, now: Mono) -> HoldLed {
        match self.hold {
            HoldLed::Durable { at } | HoldLed::Failed { at }
                if now.saturating_duration_since(at) >= self.cfg.hold_led =>
            {
                HoldLed::Idle
            }
            h => h,
        }
    }

    /// The backlog has made no progress for longer than the threshold.
    pub fn uplink_stalled(&self, now: Mono) -> bool {
        match (self.snap.uplink, self.progress) {
            (UplinkView::Enabled { pending, .. }, Some((_, since))) => {
                pending > 0 && now.saturating_duration_since(since) >= self.cfg.uplink_stall
            }
            _ => false,
        }
    }

    fn drops_recent(&self, now: Mono) -> bool {
        matches!(self.drops, Some((_, Some(at))) if now.saturating_duration_since(at) < self.cfg.drop_show)
    }

    /// Active fault reasons, most serious first (for `branchrec status`).
    pub fn faults(&self, now: Mono) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.snap.key_fault {
            f.push("keys");
        }
        if self.snap.disk_high {
            f.push("disk_high_watermark");
        }
        if matches!(self.hold_state(now), HoldLed::Failed { .. }) {
            f.push("hold_failed");
        }
        if self.drops_recent(now) {
            f.push("capture_drops");
        }
        if self.uplink_stalled(now) {
            f.push("uplink_stalled");
        }
        if self.snap.assurance_alarm {
            f.push("assurance");
        }
        f
    }

    /// The patterns at `now`.
    pub fn patterns(&self, now: Mono) -> Patterns {
        let s = &self.snap;
        let rec = if s.paused > 0 {
            Pattern::Blink
        } else if s.recording > 0 {
            Pattern::On
        } else {
            Pattern::Off
        };
        let sync = match s.uplink {
            UplinkView::Disabled | UplinkView::Enabled { link_up: false, .. } => Pattern::Off,
            UplinkView::Enabled { pending: 0, .. } => Pattern::On,
            UplinkView::Enabled { .. } => Pattern::Blink,
        };
        let hold_state = self.hold_state(now);
        let fault = if s.key_fault || s.disk_high {
            Pattern::On
        } else if matches!(hold_state, HoldLed::Failed { .. }) {
            Pattern::FastBlink
        } else if self.drops_recent(now) || self.uplink_stalled(now) || s.assurance_alarm {
            Pattern::Blink
        } else {
            Pattern::Off
        };
        let hold = match hold_state {
            HoldLed::Pending => Pattern::FastBlink,
            HoldLed::Durable { .. } => Pattern::On,
            HoldLed::Idle | HoldLed::Failed { .. } => Pattern::Off,
        };
        Patterns {
            rec,
            sync,
            fault,
            hold,
        }
    }

    /// The levels at `now`.
    pub fn levels(&self, now: Mono) -> Levels {
        self.patterns(now).levels(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: u64) -> Mono {
        Mono::from_millis(t)
    }

    const CFG: LedConfig = LedConfig {
        uplink_stall: Duration::from_millis(600_000),
        drop_show: Duration::from_millis(300_000),
        hold_led: Duration::from_millis(60_000),
    };

    fn up(pending: u64, progress: u64) -> UplinkView {
        UplinkView::Enabled {
            link_up: true,
            pending,
            progress,
        }
    }

    /// Levels sampled every 25 ms over `[from, to)`: (lit samples, level changes).
    fn sample(l: &Leds, from: u64, to: u64, pick: fn(Levels) -> bool) -> (usize, usize) {
        let mut lit = 0;
        let mut changes = 0;
        let mut last = None;
        for t in (from..to).step_by(25) {
            let v = pick(l.levels(ms(t)));
            lit += usize::from(v);
            if last.is_some_and(|x| x != v) {
                changes += 1;
            }
            last = Some(v);
        }
        (lit, changes)
    }

    #[test]
    fn rec_follows_calls_and_pauses() {
        let mut l = Leds::new(CFG);
        l.update(ms(0), Snapshot::default());
        assert_eq!(l.patterns(ms(0)).rec, Pattern::Off);
        assert_eq!(sample(&l, 0, 4000, |v| v.rec), (0, 0));
        l.update(
            ms(1000),
            Snapshot {
                recording: 2,
                ..Default::default()
            },
        );
        assert_eq!(sample(&l, 1000, 5000, |v| v.rec), (160, 0), "steady on");
        l.update(
            ms(5000),
            Snapshot {
                recording: 2,
                paused: 1,
                ..Default::default()
            },
        );
        // 1 Hz: 4 s = 8 changes, half lit.
        let (lit, changes) = sample(&l, 5000, 9000, |v| v.rec);
        assert_eq!((lit, changes), (80, 7));
        assert_eq!(l.patterns(ms(9000)).rec, Pattern::Blink);
    }

    #[test]
    fn sync_shows_backlog_and_link() {
        let mut l = Leds::new(CFG);
        l.update(ms(0), Snapshot::default());
        assert_eq!(l.patterns(ms(0)).sync, Pattern::Off, "no uplink configured");
        l.update(
            ms(0),
            Snapshot {
                uplink: up(0, 10),
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(0)).sync, Pattern::On, "up to date");
        l.update(
            ms(1000),
            Snapshot {
                uplink: up(3, 10),
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(1000)).sync, Pattern::Blink, "uploading");
        l.update(
            ms(2000),
            Snapshot {
                uplink: UplinkView::Enabled {
                    link_up: false,
                    pending: 3,
                    progress: 10,
                },
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(2000)).sync, Pattern::Off, "link down");
        assert_eq!(l.patterns(ms(2000)).fault, Pattern::Off, "not stalled yet");
    }

    #[test]
    fn uplink_stall_is_a_fault_until_progress() {
        let mut l = Leds::new(CFG);
        let snap = |pending, progress| Snapshot {
            uplink: up(pending, progress),
            ..Default::default()
        };
        l.update(ms(0), snap(5, 100));
        // Progress keeps it healthy, even after long.
        for t in (0..1_200_000).step_by(60_000) {
            l.update(ms(t), snap(5, 100 + t));
            assert!(!l.uplink_stalled(ms(t)), "{t}");
        }
        // No progress: stalled after the threshold, not before.
        let t0 = 1_200_000 - 60_000;
        l.update(ms(t0 + 599_000), snap(5, 100 + t0));
        assert!(!l.uplink_stalled(ms(t0 + 599_000)));
        assert_eq!(l.patterns(ms(t0 + 599_000)).fault, Pattern::Off);
        l.update(ms(t0 + 600_000), snap(5, 100 + t0));
        assert!(l.uplink_stalled(ms(t0 + 600_000)));
        assert_eq!(l.patterns(ms(t0 + 600_000)).fault, Pattern::Blink);
        assert_eq!(l.faults(ms(t0 + 600_000)), vec!["uplink_stalled"]);
        // Progress again clears it.
        l.update(ms(t0 + 601_000), snap(5, 100 + t0 + 1));
        assert!(!l.uplink_stalled(ms(t0 + 601_000)));
        // An empty backlog never stalls, and restarts the clock.
        l.update(ms(t0 + 2_000_000), snap(0, 100 + t0 + 1));
        assert!(!l.uplink_stalled(ms(t0 + 2_000_000)));
        l.update(ms(t0 + 2_000_001), snap(1, 100 + t0 + 1));
        assert!(!l.uplink_stalled(ms(t0 + 2_000_001)));
        // A link down with a backlog stalls too.
        let down = Snapshot {
            uplink: UplinkView::Enabled {
                link_up: false,
                pending: 1,
                progress: 100 + t0 + 1,
            },
            ..Default::default()
        };
        l.update(ms(t0 + 2_600_001), down);
        assert!(l.uplink_stalled(ms(t0 + 2_600_001)));
        assert_eq!(l.patterns(ms(t0 + 2_600_001)).sync, Pattern::Off);
    }

    #[test]
    fn fault_priorities() {
        let mut l = Leds::new(CFG);
        l.update(ms(0), Snapshot::default());
        assert_eq!(l.patterns(ms(0)).fault, Pattern::Off);
        assert!(l.faults(ms(0)).is_empty());
        l.update(
            ms(1),
            Snapshot {
                key_fault: true,
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(1)).fault, Pattern::On);
        assert_eq!(l.faults(ms(1)), vec!["keys"]);
        l.update(
            ms(2),
            Snapshot {
                disk_high: true,
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(2)).fault, Pattern::On);
        assert_eq!(sample(&l, 2, 2002, |v| v.fault), (80, 0));
        l.update(ms(3), Snapshot::default());
        assert_eq!(l.patterns(ms(3)).fault, Pattern::Off);
        // An assurance alarm blinks FAULT, and clears with it.
        l.update(
            ms(4),
            Snapshot {
                assurance_alarm: true,
                ..Default::default()
            },
        );
        assert_eq!(l.patterns(ms(4)).fault, Pattern::Blink);
        assert_eq!(l.faults(ms(4)), vec!["assurance"]);
        l.update(ms(5), Snapshot::default());
        assert_eq!(l.patterns(ms(5)).fault, Pattern::Off);
    }

    #[test]
    fn capture_drops_blink_for_a_while() {
        let mut l = Leds::new(CFG);
        let drops = |n| Snapshot {
            capture_drops: n,
            ..Default::default()
        };
        // Drops counted before the machine started are history, not a fault now.
        l.update(ms(0), drops(40));
        assert_eq!(l.patterns(ms(0)).fault, Pattern::Off);
        l.update(ms(1000), drops(40));
        assert_eq!(l.patterns(ms(1000)).fault, Pattern::Off);
        l.update(ms(2000), drops(41));
        assert_eq!(l.patterns(ms(2000)).fault, Pattern::Blink);
        assert_eq!(l.faults(ms(2000)), vec!["capture_drops"]);
        l.update(ms(2000 + 299_000), drops(41));
        assert_eq!(l.patterns(ms(2000 + 299_000)).fault, Pattern::Blink);
        l.update(ms(2000 + 300_000), drops(41));
        assert_eq!(l.patterns(ms(2000 + 300_000)).fault, Pattern::Off);
        // A restarted counter is a new base.
        l.update(ms(400_000), drops(0));
        assert_eq!(l.patterns(ms(400_000)).fault, Pattern::Off);
    }

    #[test]
    fn hold_blinks_until_durable_then_steady_then_off() {
        let mut l = Leds::new(CFG);
        l.update(ms(0), Snapshot::default());
        l.hold_pending();
        assert_eq!(l.patterns(ms(0)).hold, Pattern::FastBlink);
        // 4 Hz: 1 s = 8 half-periods.
        assert_eq!(sample(&l, 0, 1000, |v| v.hold), (20, 7));
        l.hold_durable(ms(1000));
        assert_eq!(sample(&l, 1000, 60_000, |v| v.hold).1, 0);
        assert!(l.levels(ms(59_999)).hold);
        assert_eq!(l.hold_state(ms(59_999)), HoldLed::Durable { at: ms(1000) });
        assert!(l.levels(ms(60_999)).hold);
        assert!(!l.levels(ms(61_000)).hold);
        assert_eq!(l.hold_state(ms(61_000)), HoldLed::Idle);
    }

    #[test]
    fn failed_hold_shows_on_fault() {
        let mut l = Leds::new(CFG);
        l.update(ms(0), Snapshot::default());
        l.hold_pending();
        l.hold_failed(ms(500));
        let p = l.patterns(ms(500));
        assert_eq!((p.hold, p.fault), (Pattern::Off, Pattern::FastBlink));
        assert_eq!(l.faults(ms(500)), vec!["hold_failed"]);
        assert_eq!(l.patterns(ms(60_500)).fault, Pattern::Off);
    }
}
