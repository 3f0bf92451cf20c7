//! The daemon's clocks, the one place where the OS time becomes the cores' time types
//! ([`branchrec_core::time`]): [`MonoClock`] turns `std::time::Instant` into [`Mono`]
//! (timers, debounce, rates, back-off), and the wall clocks for life-cycle decisions —
//! the system clock and the same shifted by an offset (tests and drills) — give unix
//! milliseconds ([`UnixMs`] through [`ClockExt::now_unix`]). The cores never read a
//! clock; they take a [`Clock`] (or a `now`) from here.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

pub use branchrec_core::lifecycle::Clock;
use branchrec_core::time::{Mono, UnixMs};

/// A monotonic clock reading [`Mono`]: the time since its origin `Instant`. Copy it
/// freely; copies read the same clock. Values from clocks with different origins must
/// not be mixed (use [`MonoClock::process`] to share one origin across subsystems).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonoClock {
    origin: Instant,
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonoClock {
    /// A clock whose origin ([`Mono::ZERO`]) is now.
    pub fn new() -> Self {
        Self::with_origin(Instant::now())
    }
    /// A clock whose origin is `origin`.
    pub fn with_origin(origin: Instant) -> Self {
        MonoClock { origin }
    }
    /// The process-wide clock: its origin is the first call of this function.
    pub fn process() -> Self {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        Self::with_origin(*ORIGIN.get_or_init(Instant::now))
    }
    /// The origin.
    pub fn origin(&self) -> Instant {
        self.origin
    }
    /// Now.
    pub fn now(&self) -> Mono {
        self.at(Instant::now())
    }
    /// `t` on this clock ([`Mono::ZERO`] for instants before the origin).
    pub fn at(&self, t: Instant) -> Mono {
        Mono::from_duration(t.saturating_duration_since(self.origin))
    }
    /// The `Instant` of `m` (for timers and `sleep_until`); `None` past `Instant`'s range.
    pub fn instant(&self, m: Mono) -> Option<Instant> {
        self.origin.checked_add(m.since_origin())
    }
}

/// [`UnixMs`] from any life-cycle [`Clock`].
pub trait ClockExt: Clock {
    /// Now, as [`UnixMs`].
    fn now_unix(&self) -> UnixMs {
        UnixMs(self.now_ms())
    }
}

impl<C: Clock + ?Sized> ClockExt for C {}

/// Environment variable that shifts the daemon's life-cycle clock (expiry, holds by time,
/// audit timestamps) by this many seconds. For tests and drills only: refused unless
/// `[development] clock_override = true`; then the daemon logs a warning and every audit
/// entry the process writes is marked `"dev_clock"`.
pub const CLOCK_OFFSET_ENV: &str = "BRANCHREC_TEST_CLOCK_OFFSET_S";

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        UnixMs::from_datetime(&chrono::Utc::now())
    }
}

/// The system clock shifted by a settable offset (tests, `--now`).
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// A clock `offset_ms` ahead of the system clock.
    pub fn new(offset_ms: i64) -> Self {
        OffsetClock {
            offset_ms: AtomicI64::new(offset_ms),
        }
    }
    /// Change the offset.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
    /// A clock that reads `at_ms` now (and moves on from there).
    pub fn at(at_ms: i64) -> Self {
        Self::new(at_ms - SystemClock.now_ms())
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> UnixMs {
        UnixMs(
            SystemClock
                .now_ms()
                .saturating_add(self.offset_ms.load(Ordering::Relaxed)),
        )
    }
}

/// The daemon's clock: the system clock, shifted by [`CLOCK_OFFSET_ENV`] when set (and
/// not 0). A shift needs `allowed` (`[development] clock_override`); it marks every audit
/// entry of this process ([`mark_dev_clock`]). Returns the clock and the offset in
/// seconds (0 when unset).
pub fn clock_from_env(allowed: bool) -> Result<(OffsetClock, i64), String> {
    match std::env::var(CLOCK_OFFSET_ENV) {
        Ok(v) => {
            let s: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{CLOCK_OFFSET_ENV}={v:?}: expected whole seconds"))?;
            if s != 0 {
                if !allowed {
                    return Err(format!(
                        "{CLOCK_OFFSET_ENV}={v} refused: a shifted clock needs [development] clock_override = true (never on a box)"
                    ));
                }
                mark_dev_clock(serde_json::json!({ "offset_s": s }));
            }
            Ok((OffsetClock::new(s.saturating_mul(1000)), s))
        }
        Err(_) => Ok((OffsetClock::new(0), 0)),
    }
}

/// Set once per process when its clock is not the real one (`[development]
/// clock_override`): merged into every audit entry it writes as `"dev_clock"`.
static DEV_CLOCK_MARK: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();

/// Mark every audit entry this process writes from now on with `"dev_clock": mark`
/// (the first mark wins).
pub fn mark_dev_clock(mark: serde_json::Value) {
    let _ = DEV_CLOCK_MARK.set(mark);
}

/// The mark of [`mark_dev_clock`], if this process runs on a development clock.
pub fn dev_clock_mark() -> Option<&'static serde_json::Value> {
    DEV_CLOCK_MARK.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_moves() {
        let c = OffsetClock::new(0);
        let a = c.now_ms();
        c.set_offset_ms(86_400_000);
        let b = c.now_ms();
        assert!(b - a >= 86_400_000 && b - a < 86_460_000);
        let at = OffsetClock::at(5_000);
        assert!((at.now_ms() - 5_000).abs() < 60_000);
        assert!((at.now_unix().as_millis() - 5_000).abs() < 60_000);
    }

    #[test]
    fn mono_clock_counts_from_its_origin() {
        let origin = Instant::now();
        let c = MonoClock::with_origin(origin);
        assert_eq!(c.at(origin), Mono::ZERO);
        let later = origin + std::time::Duration::from_millis(1500);
        assert_eq!(c.at(later), Mono::from_millis(1500));
        assert_eq!(c.instant(Mono::from_millis(1500)), Some(later));
        assert_eq!(
            MonoClock::with_origin(later).at(origin),
            Mono::ZERO,
            "before the origin"
        );
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert_eq!(MonoClock::process().origin(), MonoClock::process().origin());
    }
}
