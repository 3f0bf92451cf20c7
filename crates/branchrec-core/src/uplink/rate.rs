//! Bandwidth control (sans-IO): a token bucket, time-of-day windows and congestion
//! back-off. Time is always passed in, as [`Mono`].

use std::time::Duration;

use crate::time::Mono;

/// Bytes per second; `None` is unlimited.
pub type Rate = Option<u64>;

/// One time-of-day window: `[from, to)` in seconds since local midnight, wrapping past
/// midnight when `from > to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, seconds after midnight.
    pub from_s: u32,
    /// End (exclusive), seconds after midnight.
    pub to_s: u32,
    /// Rate inside the window, bytes/s (`None` = full speed).
    pub rate: Rate,
}

/// Why a window specification is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("window `{spec}`: {reason}")]
pub struct WindowError {
    /// The text given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

fn parse_tod(s: &str) -> Option<u32> {
    let mut it = s.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let sec: u32 = match it.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if it.next().is_some() || h > 24 || m > 59 || sec > 59 || (h == 24 && (m, sec) != (0, 0)) {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

/// Parse a rate: `full`/`unlimited`, or kbit/s as a number with optional `kbit` suffix,
/// or `Nmbit`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "full" || t == "unlimited" {
        return Ok(None);
    }
    let (num, mult) = if let Some(n) = t.strip_suffix("mbit") {
        (n, 1000u64)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    let kbit: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a rate (e.g. `64kbit`, `2mbit`, `full`)"))?;
    if kbit == 0 {
        return Err(format!(
            "`{s}`: a rate must be above 0 (use `full` for no cap)"
        ));
    }
    Ok(Some(kbit * mult * 1000 / 8))
}

impl std::str::FromStr for Window {
    type Err = WindowError;
    /// `HH:MM[:SS]-HH:MM[:SS] RATE`, e.g. `19:00-07:00 full` or `07:00-19:00 64kbit`.
    fn from_str(spec: &str) -> Result<Self, WindowError> {
        let err = |reason: &str| WindowError {
            spec: spec.into(),
            reason: reason.into(),
        };
        let (range, rate) = spec
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("expected `HH:MM-HH:MM RATE`, e.g. `19:00-07:00 full`"))?;
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| err("expected a range `HH:MM-HH:MM`"))?;
        let from_s = parse_tod(a).ok_or_else(|| err("bad start time"))?;
        let to_s = parse_tod(b).ok_or_else(|| err("bad end time"))?;
        if from_s == to_s {
            return Err(err("empty window (start equals end)"));
        }
        let rate = parse_rate(rate).map_err(|e| err(&e))?;
        Ok(Window {
            from_s,
            to_s: to_s % 86_400,
            rate,
        })
    }
}

impl Window {
    /// Whether `tod` (seconds after local midnight) falls inside.
    pub fn contains(&self, tod: u32) -> bool {
        if self.from_s < self.to_s {
            (self.from_s..self.to_s).contains(&tod)
        } else {
            tod >= self.from_s || tod < self.to_s
        }
    }
}

/// The configured rate schedule: the first matching window wins, else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Rate outside every window.
    pub default: Rate,
    /// Windows, first match wins.
    pub windows: Vec<Window>,
}

impl Schedule {
    /// Rate at `tod` seconds after local midnight.
    pub fn rate_at(&self, tod: u32) -> Rate {
        self.windows
            .iter()
            .find(|w| w.contains(tod % 86_400))
            .map_or(self.default, |w| w.rate)
    }
}

/// Token bucket over bytes. `now` is the shell's monotonic clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    burst: u64,
    tokens: f64,
    last: Mono,
}

impl TokenBucket {
    /// A bucket at `rate` holding at most `burst` bytes, starting empty-ish (one burst).
    pub fn new(rate: Rate, burst: u64, now: Mono) -> Self {
        TokenBucket {
            rate,
            burst: burst.max(1),
            tokens: 0.0,
            last: now,
        }
    }

    /// Change the rate (keeps the tokens earned so far).
    pub fn set_rate(&mut self, rate: Rate, now: Mono) {
        self.refill(now);
        self.rate = rate;
    }

    /// Current rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn refill(&mut self, now: Mono) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        if let Some(r) = self.rate {
            self.tokens = (self.tokens + dt * r as f64).min(self.burst as f64);
        }
    }

    /// Ask to send `n` bytes at `now`: `Duration::ZERO` means go (tokens taken); otherwise
    /// wait that long and ask again. Requests larger than the burst are allowed to drive
    /// the bucket negative once it is full, so any size eventually passes at the rate.
    pub fn take(&mut self, now: Mono, n: u64) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.refill(now);
        let need = (n.min(self.burst)) as f64;
        if self.tokens >= need {
            self.tokens -= n as f64;
            return Duration::ZERO;
        }
        let missing = need - self.tokens;
        Duration::from_secs_f64((missing / rate.max(1) as f64).max(0.001))
    }
}

/// Congestion back-off, AIMD style: failures and rising round-trip times cut the share of
/// the scheduled rate; healthy requests win it back slowly.
#[derive(Debug, Clone)]
pub struct Congestion {
    factor: f64,
    min_factor: f64,
    base_rtt: Option<Duration>,
    last_cut: Option<Mono>,
}

impl Congestion {
    /// `min_factor`: lowest share of the scheduled rate (e.g. 0.1).
    pub fn new(min_factor: f64) -> Self {
        Congestion {
            factor: 1.0,
            min_factor: min_factor.clamp(0.01, 1.0),
            base_rtt: None,
            last_cut: None,
        }
    }

    /// Current share of the scheduled rate, in `[min_factor, 1]`.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Lowest round-trip seen recently (the uncongested baseline).
    pub fn base_rtt(&self) -> Option<Duration> {
        self.base_rtt
    }

    fn cut(&mut self, now: Mono, by: f64) {
        // At most one cut per second, so one burst of errors is one signal.
        if let Some(t) = self.last_cut {
            if now.saturating_duration_since(t) < Duration::from_secs(1) {
                return;
            }
        }
        self.factor = (self.factor * by).max(self.min_factor);
        self.last_cut = Some(now);
    }

    /// A request failed at the transport level (timeout, reset, 5xx).
    pub fn on_failure(&mut self, now: Mono) {
        self.cut(now, 0.5);
    }

    /// A small request (no body to speak of) took `rtt`: compared against the baseline.
    pub fn on_rtt(&mut self, now: Mono, rtt: Duration) {
        let base = match self.base_rtt {
            Some(b) if rtt >= b => {
                // Let the baseline drift up slowly so a route change is not congestion forever.
                let drift = b + (rtt - b) / 64;
                self.base_rtt = Some(drift);
                b
            }
            _ => {
                self.base_rtt = Some(rtt);
                rtt
            }
        };
        if rtt > base * 2 + Duration::from_millis(20) {
            self.cut(now, 0.7);
        } else {
            self.factor = (self.factor + 0.05).min(1.0);
        }
    }

    /// Apply to a scheduled rate.
    pub fn apply(&self, rate: Rate) -> Rate {
        rate.map(|r| ((r as f64 * self.factor) as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    /// The point `x` seconds after the clock's origin.
    fn at(x: f64) -> Mono {
        Mono::ZERO + s(x)
    }

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w: Window = "19:00-07:00 full".parse().unwrap();
        assert_eq!((w.from_s, w.to_s, w.rate), (19 * 3600, 7 * 3600, None));
        assert!(w.contains(23 * 3600));
        assert!(w.contains(3 * 3600));
        assert!(!w.contains(12 * 3600));
        assert!(!w.contains(7 * 3600));
        let w: Window = "07:00-19:00:30 64kbit".parse().unwrap();
        assert_eq!(w.rate, Some(8000));
        assert!(w.contains(19 * 3600 + 29));
        assert!(!w.contains(19 * 3600 + 30));
        assert!("07:00 64".parse::<Window>().is_err());
        assert!("07:00-07:00 64".parse::<Window>().is_err());
        assert!("25:00-07:00 64".parse::<Window>().is_err());
        assert!("07:00-08:00 0".parse::<Window>().is_err());
        assert_eq!(parse_rate("2mbit").unwrap(), Some(250_000));
        let sched = Schedule {
            default: Some(8000),
            windows: vec!["19:00-07:00 full".parse().unwrap()],
        };
        assert_eq!(sched.rate_at(12 * 3600), Some(8000));
        assert_eq!(sched.rate_at(20 * 3600), None);
    }

    #[test]
    fn bucket_holds_the_rate_over_a_minute() {
        let mut b = TokenBucket::new(Some(10_000), 4096, at(0.0));
        let mut now = at(0.0);
        let mut sent = 0u64;
        let mut steps = 0;
        while now < at(60.0) && steps < 1_000_000 {
            steps += 1;
            let w = b.take(now, 1500);
            if w.is_zero() {
                sent += 1500;
            } else {
                now += w;
            }
        }
        let rate = sent as f64 / 60.0;
        assert!((rate - 10_000.0).abs() < 300.0, "rate {rate}");
        // Rate change takes effect.
        b.set_rate(Some(1000), now);
        let start = now;
        let mut sent = 0u64;
        while now < start + s(30.0) {
            let w = b.take(now, 100);
            if w.is_zero() {
                sent += 100;
            } else {
                now += w;
            }
        }
        let rate = sent as f64 / 30.0;
        assert!((rate - 1000.0).abs() < 150.0, "rate {rate}");
        // Unlimited never waits.
        b.set_rate(None, now);
        assert!(b.take(now, 1 << 30).is_zero());
    }

    #[test]
    fn congestion_cuts_and_recovers() {
        let mut c = Congestion::new(0.1);
        c.on_rtt(at(0.0), Duration::from_millis(10));
        assert_eq!(c.factor(), 1.0);
        c.on_rtt(at(1.0), Duration::from_millis(200));
        assert!((c.factor() - 0.7).abs() < 1e-9);
        // Second signal within a second is ignored.
        c.on_failure(at(1.5));
        assert!((c.factor() - 0.7).abs() < 1e-9);
        c.on_failure(at(3.0));
        assert!((c.factor() - 0.35).abs() < 1e-9);
        for i in 0..20 {
            c.on_failure(at(10.0 + f64::from(i) * 2.0));
        }
        assert!((c.factor() - 0.1).abs() < 1e-9);
        for i in 0..40 {
            c.on_rtt(at(100.0 + f64::from(i)), Duration::from_millis(11));
        }
        assert_eq!(c.factor(), 1.0);
        assert_eq!(c.apply(Some(1000)), Some(1000));
        assert_eq!(c.apply(None), None);
    }
}
