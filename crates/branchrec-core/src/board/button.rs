//! The legal-hold button (sans-IO): sampled levels and time in, debounced press/release
//! and at most one long-press action per press out.
//!
//! - Debounce: the level must stay the same for `debounce` before it counts; chatter
//!   faster than that never changes the state. A press is timed from the moment the
//!   contact closed for good (its last bounce), not from when the debounce time ran out.
//! - Long press: held for `long_press` fires [`ButtonEvent::LongPress`] ONCE; holding on
//!   (a stuck button, minutes or days) fires nothing more until it is released and pressed
//!   again.
//! - Rate: a long press less than `min_interval` after the last one that fired is
//!   [`ButtonEvent::Suppressed`] (once per press).
//! - A button already pressed when the machine starts (stuck at power-on, or a crash loop
//!   of the daemon) must be seen released before it can fire.

use std::time::Duration;

use serde::Serialize;

use crate::time::Mono;

/// Timing.
#[derive(Debug, Clone, Copy)]
pub struct ButtonConfig {
    /// Level must be stable this long.
    pub debounce: Duration,
    /// Held this long = a deliberate press.
    pub long_press: Duration,
    /// At least this long between two actions.
    pub min_interval: Duration,
}

/// What a sample produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ButtonEvent {
    /// Debounced press (contact closed at `at`).
    Pressed {
        /// When the contact closed.
        at: Mono,
    },
    /// Debounced release.
    Released {
        /// When the contact opened.
        at: Mono,
        /// How long it was held.
        held: Duration,
    },
    /// Held for `long_press`: place the hold.
    LongPress {
        /// When the threshold was reached.
        at: Mono,
    },
    /// A long press within `min_interval` of the last action: ignored.
    Suppressed {
        /// When the threshold was reached.
        at: Mono,
        /// When the next action is allowed.
        next_allowed: Mono,
    },
}

/// The debouncer / long-press detector.
#[derive(Debug, Clone)]
pub struct Button {
    cfg: ButtonConfig,
    /// Last raw level and when it changed.
    raw: Option<(bool, Mono)>,
    /// Debounced level.
    stable: bool,
    /// When the current debounced press began.
    pressed_at: Option<Mono>,
    /// This press has fired (or was suppressed).
    spent: bool,
    /// Seen released since start.
    armed: bool,
    last_action: Option<Mono>,
}

impl Button {
    /// A button in an unknown state.
    pub fn new(cfg: ButtonConfig) -> Self {
        Button {
            cfg,
            raw: None,
            stable: false,
            pressed_at: None,
            spent: false,
            armed: false,
            last_action: None,
        }
    }

    /// Debounced: pressed now.
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// Feed one sample (`pressed` = logical level, active-low already applied). Samples
    /// must come in time order; call at least every few ms while the level may change and
    /// regularly while pressed (the long press fires on a sample).
    pub fn sample(&mut self, now: Mono, pressed: bool, out: &mut Vec<ButtonEvent>) {
        let Some((raw, since)) = self.raw else {
            // First sample: take the level as it is, without an event.
            self.raw = Some((pressed, now));
            self.stable = pressed;
            self.armed = !pressed;
            if pressed {
                self.pressed_at = Some(now);
                self.spent = true;
            }
            return;
        };
        let since = if raw != pressed {
            self.raw = Some((pressed, now));
            now
        } else {
            since
        };
        if pressed != self.stable && now.saturating_duration_since(since) >= self.cfg.debounce {
            self.stable = pressed;
            if pressed {
                self.pressed_at = Some(since);
                self.spent = !self.armed;
                out.push(ButtonEvent::Pressed { at: since });
            } else {
                let start = self.pressed_at.take().unwrap_or(since);
                self.armed = true;
                self.spent = false;
                out.push(ButtonEvent::Released {
                    at: since,
                    held: since.saturating_duration_since(start),
                });
            }
        }
        // Only while the contact is closed right now: a release still being debounced
        // must not complete a press that was too short.
        if let (true, true, Some(start), false) =
            (self.stable, pressed, self.pressed_at, self.spent)
        {
            if now.saturating_duration_since(start) >= self.cfg.long_press {
                self.spent = true;
                match self.last_action {
                    Some(last) if now.saturating_duration_since(last) < self.cfg.min_interval => {
                        out.push(ButtonEvent::Suppressed {
                            at: now,
                            next_allowed: last.saturating_add(self.cfg.min_interval),
                        })
                    }
                    _ => {
                        self.last_action = Some(now);
                        out.push(ButtonEvent::LongPress { at: now });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: u64) -> Mono {
        Mono::from_millis(t)
    }

    const CFG: ButtonConfig = ButtonConfig {
        debounce: Duration::from_millis(50),
        long_press: Duration::from_millis(2000),
        min_interval: Duration::from_millis(30_000),
    };

    /// Drive the button through (duration_ms, level) segments sampled every `step` ms.
    fn drive(b: &mut Button, t: &mut u64, segs: &[(u64, bool)], step: u64) -> Vec<ButtonEvent> {
        let mut out = Vec::new();
        for &(dur, level) in segs {
            let end = *t + dur;
            while *t < end {
                b.sample(ms(*t), level, &mut out);
                *t += step;
            }
        }
        out
    }

    fn long_presses(ev: &[ButtonEvent]) -> usize {
        ev.iter()
            .filter(|e| matches!(e, ButtonEvent::LongPress { .. }))
            .count()
    }

    #[test]
    fn short_press_does_nothing_long_press_fires_once() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        let ev = drive(
            &mut b,
            &mut t,
            &[(1000, false), (1500, true), (1000, false)],
            10,
        );
        assert_eq!(
            ev,
            vec![
                ButtonEvent::Pressed { at: ms(1000) },
                ButtonEvent::Released {
                    at: ms(2500),
                    held: Duration::from_millis(1500)
                }
            ]
        );
        let ev = drive(&mut b, &mut t, &[(2500, true), (500, false)], 10);
        assert_eq!(long_presses(&ev), 1);
        assert_eq!(
            ev[1],
            ButtonEvent::LongPress {
                at: ms(3500 + 2000)
            }
        );
        assert!(
            matches!(ev[2], ButtonEvent::Released { held, .. } if held == Duration::from_millis(2500))
        );
    }

    #[test]
    fn threshold_is_exact_to_the_sample() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        let ev = drive(
            &mut b,
            &mut t,
            &[(100, false), (1990, true), (100, false)],
            10,
        );
        assert_eq!(long_presses(&ev), 0, "1.99 s is not a long press");
        let ev = drive(&mut b, &mut t, &[(2010, true), (100, false)], 10);
        assert_eq!(long_presses(&ev), 1, "2.01 s is");
    }

    #[test]
    fn bouncing_contacts_are_filtered() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        drive(&mut b, &mut t, &[(200, false)], 1);
        // Chatter every 20 ms for 10 s: never stable for 50 ms, so nothing happens.
        let mut segs = Vec::new();
        for i in 0..500 {
            segs.push((20, i % 2 == 0));
        }
        let ev = drive(&mut b, &mut t, &segs, 1);
        assert!(ev.is_empty(), "{ev:?}");
        // A press that bounces on closing and opening counts once, from its last bounce.
        let start = t;
        let ev = drive(
            &mut b,
            &mut t,
            &[
                (3, true),
                (2, false),
                (4, true),
                (1, false),
                (2500, true),
                (5, false),
                (3, true),
                (300, false),
            ],
            1,
        );
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[0], ButtonEvent::Pressed { at: ms(start + 10) });
        assert!(matches!(ev[1], ButtonEvent::LongPress { .. }));
        assert!(matches!(ev[2], ButtonEvent::Released { .. }));
        // Dropouts shorter than the debounce time during a long hold do not split it.
        let ev = drive(
            &mut b,
            &mut t,
            &[
                (31_000, false),
                (1000, true),
                (30, false),
                (1000, true),
                (40, false),
                (1000, true),
                (100, false),
            ],
            1,
        );
        assert_eq!(long_presses(&ev), 1, "{ev:?}");
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, ButtonEvent::Pressed { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn stuck_button_fires_once() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        // Pressed for an hour.
        let ev = drive(&mut b, &mut t, &[(100, false), (3_600_000, true)], 20);
        assert_eq!(long_presses(&ev), 1);
        assert_eq!(ev.len(), 2);
        assert!(b.is_pressed());
        // Released and pressed again later: a new hold.
        let ev = drive(
            &mut b,
            &mut t,
            &[(1000, false), (2500, true), (100, false)],
            20,
        );
        assert_eq!(long_presses(&ev), 1);
    }

    #[test]
    fn pressed_at_start_needs_a_release() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        // Held from power-on for ten minutes: no hold (a crash-looping daemon must not
        // place one per restart).
        let ev = drive(&mut b, &mut t, &[(600_000, true)], 20);
        assert!(ev.is_empty(), "{ev:?}");
        let ev = drive(&mut b, &mut t, &[(200, false), (2100, true)], 20);
        assert_eq!(long_presses(&ev), 1, "{ev:?}");
    }

    #[test]
    fn repeated_presses_are_rate_limited() {
        let mut b = Button::new(CFG);
        let mut t = 0;
        drive(&mut b, &mut t, &[(100, false)], 10);
        let mut fired = 0;
        let mut suppressed = 0;
        // Someone presses for 2.2 s every 3 s for 2 minutes: at most one hold per 30 s.
        for _ in 0..40 {
            for e in drive(&mut b, &mut t, &[(2200, true), (800, false)], 10) {
                match e {
                    ButtonEvent::LongPress { .. } => fired += 1,
                    ButtonEvent::Suppressed { at, next_allowed } => {
                        assert!(next_allowed > at);
                        suppressed += 1;
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(fired + suppressed, 40);
        assert_eq!(fired, 4, "120 s / 30 s");
    }
}
