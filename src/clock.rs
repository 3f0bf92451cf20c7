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

/// The environment variable naming the clock-state test hook (a JSON file, read at every
/// probe; needs `[development] clock_override`): `{"unsync": true, "maxerror_us": …,
/// "esterror_us": …, "offset_us": …, "step_ms": …}`, every key optional. `step_ms` shifts
/// what the probe reports as the wall clock, so a test can step the clock mid-call.
pub const CLOCK_STATE_ENV: &str = "BRANCHREC_TEST_CLOCK_STATE";

/// Where the kernel clock's synchronisation state and the wall clock come from, for the
/// clock facts of every recording (`assurance::clock`).
pub trait ClockProbe: Send + Sync {
    /// The synchronisation state now.
    fn reading(&self) -> branchrec_core::assurance::clock::ClockReading;
    /// The wall clock as the step detector sees it.
    fn wall(&self) -> UnixMs;
    /// A simulated step of the wall clock, ms (the test hook; 0 for the kernel).
    fn step_ms(&self) -> i64 {
        0
    }
}

/// The daemon's wall clock with the test hook's simulated step applied (a step of the
/// real clock moves [`SystemClock`] itself).
#[derive(Debug)]
pub struct SteppedClock<C>(pub C);

impl<C: Clock> Clock for SteppedClock<C> {
    fn now(&self) -> UnixMs {
        UnixMs(self.0.now().0.saturating_add(probe().step_ms()))
    }
}

/// The kernel: `adjtimex(2)` read-only.
#[derive(Debug, Default)]
pub struct KernelProbe;

impl ClockProbe for KernelProbe {
    fn reading(&self) -> branchrec_core::assurance::clock::ClockReading {
        use branchrec_core::assurance::clock::{ClockReading, ClockSource};
        let at_ms = SystemClock.now_ms();
        match sysclock::read() {
            Ok(t) => ClockReading {
                at_ms,
                unsync: t.unsync(),
                maxerror_us: t.maxerror_us,
                esterror_us: t.esterror_us,
                offset_us: t.offset_us,
                status: t.status,
                source: ClockSource::Adjtimex,
            },
            Err(e) => {
                tracing::warn!(error = %e, "adjtimex failed: clock state unknown");
                ClockReading {
                    at_ms,
                    unsync: true,
                    maxerror_us: 0,
                    esterror_us: 0,
                    offset_us: 0,
                    status: 0,
                    source: ClockSource::Unavailable,
                }
            }
        }
    }
    fn wall(&self) -> UnixMs {
        SystemClock.now()
    }
}

/// The test hook of [`CLOCK_STATE_ENV`].
#[derive(Debug)]
pub struct HookProbe {
    path: std::path::PathBuf,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct HookState {
    unsync: bool,
    maxerror_us: i64,
    esterror_us: i64,
    offset_us: i64,
    step_ms: i64,
}

impl HookProbe {
    fn state(&self) -> HookState {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

impl ClockProbe for HookProbe {
    fn reading(&self) -> branchrec_core::assurance::clock::ClockReading {
        use branchrec_core::assurance::clock::{ClockReading, ClockSource, STA_UNSYNC};
        let h = self.state();
        ClockReading {
            at_ms: self.wall().0,
            unsync: h.unsync,
            maxerror_us: h.maxerror_us,
            esterror_us: h.esterror_us,
            offset_us: h.offset_us,
            status: if h.unsync { STA_UNSYNC } else { 0 },
            source: ClockSource::TestHook,
        }
    }
    fn wall(&self) -> UnixMs {
        UnixMs(SystemClock.now_ms().saturating_add(self.state().step_ms))
    }
    fn step_ms(&self) -> i64 {
        self.state().step_ms
    }
}

static PROBE: OnceLock<Box<dyn ClockProbe>> = OnceLock::new();

/// Choose the process's clock probe: the hook when [`CLOCK_STATE_ENV`] is set (refused
/// without `allowed`, `[development] clock_override`), else the kernel. First call wins.
pub fn init_probe(allowed: bool) -> Result<(), String> {
    let probe: Box<dyn ClockProbe> = match std::env::var_os(CLOCK_STATE_ENV) {
        Some(p) if !p.is_empty() => {
            if !allowed {
                return Err(format!(
                    "{CLOCK_STATE_ENV} refused: a simulated clock state needs [development] clock_override = true (never on a box)"
                ));
            }
            mark_dev_clock(serde_json::json!({ "clock_state_hook": true }));
            Box::new(HookProbe { path: p.into() })
        }
        _ => Box::new(KernelProbe),
    };
    let _ = PROBE.set(probe);
    Ok(())
}

/// The process's clock probe (the kernel unless [`init_probe`] chose the hook).
pub fn probe() -> &'static dyn ClockProbe {
    PROBE.get_or_init(|| Box::new(KernelProbe)).as_ref()
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
    fn probes_read_the_kernel_and_the_hook() {
        let k = KernelProbe.reading();
        assert_eq!(
            k.source,
            branchrec_core::assurance::clock::ClockSource::Adjtimex,
            "{k:?}"
        );
        assert!(k.maxerror_us >= 0);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("state.json");
        let h = HookProbe { path: f.clone() };
        assert!(!h.reading().unsync, "no file: synchronised, no step");
        std::fs::write(
            &f,
            r#"{"unsync": true, "maxerror_us": 16000000, "step_ms": 3600000}"#,
        )
        .unwrap();
        let r = h.reading();
        assert!(r.unsync && r.maxerror_us == 16_000_000);
        assert!(r.problem(100).is_some());
        let step = h.wall().0 - SystemClock.now_ms();
        assert!((3_599_000..=3_600_000).contains(&step), "{step}");
    }

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
