//! The daemon's wall clocks for life-cycle decisions: the system clock and the same
//! shifted by an offset (tests and drills). The cores never read a clock; they take a
//! [`Clock`] (or a `now`) from here.

use std::sync::atomic::{AtomicI64, Ordering};

pub use branchrec_core::lifecycle::Clock;

/// Environment variable that shifts the daemon's life-cycle clock (expiry, holds by time,
/// audit timestamps) by this many seconds. For tests and drills only; the daemon logs a
/// warning and writes an audit entry when it is set.
pub const CLOCK_OFFSET_ENV: &str = "BRANCHREC_TEST_CLOCK_OFFSET_S";

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
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
    fn now_ms(&self) -> i64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// The daemon's clock: the system clock, shifted by [`CLOCK_OFFSET_ENV`] when set.
/// Returns the clock and the offset in seconds (0 when unset).
pub fn clock_from_env() -> Result<(OffsetClock, i64), String> {
    match std::env::var(CLOCK_OFFSET_ENV) {
        Ok(v) => {
            let s: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{CLOCK_OFFSET_ENV}={v:?}: expected whole seconds"))?;
            Ok((OffsetClock::new(s.saturating_mul(1000)), s))
        }
        Err(_) => Ok((OffsetClock::new(0), 0)),
    }
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
    }
}
