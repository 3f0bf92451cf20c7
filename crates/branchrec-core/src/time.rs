//! Time in the cores: two types, one for each kind of clock.
//!
//! | type       | what it measures                          | use it for                                                      |
//! |------------|-------------------------------------------|-----------------------------------------------------------------|
//! | [`Mono`]   | monotonic time since an origin the shell picks | timers, timeouts, debounce, back-off, rates, blink phases: anything about *how long* |
//! | [`UnixMs`] | wall-clock time, ms since 1970-01-01 UTC  | what is stored, shown or signed: recording times, expiry, holds, audit, archive documents |
//!
//! Durations between two [`Mono`] values (and configured lengths of time) are
//! [`std::time::Duration`]. A `Mono` never turns into a `UnixMs` inside the cores: a
//! monotonic clock does not jump when the wall clock is set (NTP, RTC at boot), and a
//! wall clock does not measure intervals. The one place that knows both is the shell.
//!
//! **The cores never read a clock.** Every state machine takes `now` as a parameter, so
//! it is deterministic: a test drives it through an hour of button presses or a week of
//! retention in microseconds, the same inputs give the same outputs, and fuzzing can
//! reach any timing. The daemon crate reads the clocks once, in `branchrec::clock`
//! (`MonoClock` for [`Mono`], the life-cycle `Clock` for [`UnixMs`]), and passes the
//! values in. This crate is built with chrono's `clock` feature off, so `Utc::now` does
//! not even compile here, and `Instant::now` / `SystemTime::now` are never called.
//!
//! Origins: a recording's [`Mono`] (`media::timeline`, `media::srtp::channel`,
//! `media::dtmf`, `recording::session`) counts from the call / recording start; the
//! capture cores (`capture::{engine,tracker,decode,tcp}`) run on the *capture time
//! axis*, frame timestamps whose origin is the Unix epoch
//! ([`capture_time`](crate::capture::capture_time)); the shell turns a capture time into
//! wall clock for the catalogue in one helper. The container header stores its creation
//! time as on-disk `u64` unix ms, converted from [`UnixMs`] at the header
//! ([`unix_ms_on_disk`](crate::recording::container::unix_ms_on_disk)).
//!
//! Every core uses these two types: [`board`](crate::board), [`uplink`](crate::uplink),
//! `media`, `capture`, `recording::session`, `sip` (endpoint, transactions, dialogs,
//! session timers, access log), `siprec::srs` and `lifecycle` (its `Clock`, retention
//! and pressure planning, hold coverage, the audit chain and its verification policy).
//! No `std::time::Instant` is left in this crate and no clock reading enters a core as a
//! bare integer (the daemon maps a `Mono` deadline back to a timer with
//! `MonoClock::instant`). Integers remain only for what is not a clock reading: offsets on
//! a recording's own timeline (`Event::at_ms`), durations in stats, and on-disk fields
//! (the container header's `created_unix_ms`; catalogue columns, wrapped in a [`UnixMs`]
//! where a row meets a core type).

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::Duration;

/// A point on a monotonic clock: the time since an origin chosen by the shell (the
/// daemon uses the moment its `MonoClock` was made). Mirrors `std::time::Instant`, with
/// the origin visible so that a core can be driven from `Mono::ZERO` in tests.
///
/// Only differences between values from the same clock mean anything; ordering and
/// subtraction are what the cores use. Serialized as whole milliseconds since the origin
/// (status and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(Duration);

impl Mono {
    /// The origin.
    pub const ZERO: Mono = Mono(Duration::ZERO);
    /// The furthest representable point (an "never" deadline).
    pub const MAX: Mono = Mono(Duration::MAX);

    /// The point `since_origin` after the origin.
    pub const fn from_duration(since_origin: Duration) -> Self {
        Mono(since_origin)
    }
    /// The point `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Mono(Duration::from_millis(ms))
    }
    /// The point `s` seconds after the origin.
    pub const fn from_secs(s: u64) -> Self {
        Mono(Duration::from_secs(s))
    }
    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }
    /// Whole milliseconds since the origin (saturating at `u64::MAX`).
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later (as
    /// `Instant::saturating_duration_since`).
    pub fn saturating_duration_since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
    /// Time from `earlier` to `self`, `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: Mono) -> Option<Duration> {
        self.0.checked_sub(earlier.0)
    }
    /// `self + d`, `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Mono> {
        self.0.checked_add(d).map(Mono)
    }
    /// `self - d`, `None` before the origin.
    pub fn checked_sub(self, d: Duration) -> Option<Mono> {
        self.0.checked_sub(d).map(Mono)
    }
    /// `self + d`, [`Mono::MAX`] on overflow.
    pub fn saturating_add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d))
    }
    /// `self - d`, [`Mono::ZERO`] at the latest.
    pub fn saturating_sub(self, d: Duration) -> Mono {
        Mono(self.0.saturating_sub(d))
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;
    /// Panics on overflow, as `Instant + Duration`.
    fn add(self, d: Duration) -> Mono {
        self.checked_add(d)
            .expect("overflow when adding duration to Mono")
    }
}

impl AddAssign<Duration> for Mono {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Mono {
    type Output = Mono;
    /// Panics before the origin, as `Instant - Duration`.
    fn sub(self, d: Duration) -> Mono {
        self.checked_sub(d)
            .expect("overflow when subtracting duration from Mono")
    }
}

impl SubAssign<Duration> for Mono {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Mono> for Mono {
    type Output = Duration;
    /// Saturating (zero if `earlier` is later), as `Instant - Instant`.
    fn sub(self, earlier: Mono) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl serde::Serialize for Mono {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_millis())
    }
}

/// Wall-clock time: milliseconds since 1970-01-01T00:00:00Z (negative before), the unit
/// the catalogue, the audit chain and the archive documents store. Read from the shell's
/// life-cycle clock; converted to and from RFC 3339 text here (chrono without its clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMs(pub i64);

impl UnixMs {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixMs = UnixMs(0);

    /// The millisecond count.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    /// Whole seconds since the epoch (rounded down).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> UnixMs {
        UnixMs(self.0.saturating_add(duration_ms(d)))
    }
    /// `self - d`, saturating.
    pub fn saturating_sub(self, d: Duration) -> UnixMs {
        UnixMs(self.0.saturating_sub(duration_ms(d)))
    }
    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later), saturating.
    pub fn millis_since(self, earlier: UnixMs) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
    /// Time from `earlier` to `self`, `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: UnixMs) -> Option<Duration> {
        u64::try_from(self.millis_since(earlier))
            .ok()
            .map(Duration::from_millis)
    }

    /// As a chrono time (`None` outside chrono's range).
    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.0)
    }
    /// From a chrono time (sub-millisecond part dropped, rounding down).
    pub fn from_datetime<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> UnixMs {
        UnixMs(t.timestamp_millis())
    }
    /// Parse RFC 3339 text (any offset); `None` if it is not RFC 3339.
    pub fn parse_rfc3339(s: &str) -> Option<UnixMs> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Self::from_datetime(&t))
    }
    /// RFC 3339 in UTC with whole seconds (`2025-01-01T12:00:00Z`); empty outside
    /// chrono's range.
    pub fn to_rfc3339_secs(self) -> String {
        self.to_rfc3339(chrono::SecondsFormat::Secs)
    }
    /// RFC 3339 in UTC with milliseconds (`2025-01-01T12:00:00.250Z`); empty outside
    /// chrono's range.
    pub fn to_rfc3339_millis(self) -> String {
        self.to_rfc3339(chrono::SecondsFormat::Millis)
    }
    fn to_rfc3339(self, f: chrono::SecondsFormat) -> String {
        self.to_datetime()
            .map(|t| t.to_rfc3339_opts(f, true))
            .unwrap_or_default()
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for UnixMs {
    type Output = UnixMs;
    /// Saturating, in whole milliseconds (the sub-millisecond part is dropped).
    fn add(self, d: Duration) -> UnixMs {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for UnixMs {
    type Output = UnixMs;
    /// Saturating, in whole milliseconds (the sub-millisecond part is dropped).
    fn sub(self, d: Duration) -> UnixMs {
        self.saturating_sub(d)
    }
}

impl From<i64> for UnixMs {
    fn from(ms: i64) -> Self {
        UnixMs(ms)
    }
}

impl From<UnixMs> for i64 {
    fn from(t: UnixMs) -> i64 {
        t.0
    }
}

impl fmt::Display for UnixMs {
    /// RFC 3339 with milliseconds, or the raw count outside chrono's range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl serde::Serialize for UnixMs {
    /// As the millisecond count (the catalogue's and the audit chain's unit).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UnixMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(UnixMs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_mirrors_instant() {
        let a = Mono::from_millis(1500);
        let b = a + Duration::from_millis(250);
        assert_eq!(b, Mono::from_millis(1750));
        assert_eq!(b - a, Duration::from_millis(250));
        assert_eq!(a - b, Duration::ZERO, "saturating, as Instant - Instant");
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.checked_duration_since(b), None);
        assert_eq!(
            b.checked_duration_since(a),
            Some(Duration::from_millis(250))
        );
        assert_eq!(b - Duration::from_millis(1750), Mono::ZERO);
        assert_eq!(a.checked_sub(Duration::from_secs(2)), None);
        assert_eq!(a.saturating_sub(Duration::from_secs(2)), Mono::ZERO);
        assert_eq!(Mono::MAX.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(Mono::MAX.saturating_add(Duration::from_secs(1)), Mono::MAX);
        assert_eq!(
            Mono::from_duration(Duration::from_micros(2999)).as_millis(),
            2
        );
        assert_eq!(Mono::from_secs(3).since_origin(), Duration::from_secs(3));
        assert_eq!(Mono::MAX.as_millis(), u64::MAX);
        let mut c = Mono::ZERO;
        c += Duration::from_secs(1);
        c -= Duration::from_millis(1);
        assert_eq!(c, Mono::from_millis(999));
        assert!(Mono::ZERO < c && c < Mono::MAX);
        assert_eq!(serde_json::to_string(&c).unwrap(), "999");
    }

    #[test]
    #[should_panic]
    fn mono_before_origin_panics() {
        let _ = Mono::ZERO - Duration::from_nanos(1);
    }

    #[test]
    fn unix_ms_and_rfc3339() {
        let t = UnixMs::parse_rfc3339("2025-01-01T12:00:00.250Z").unwrap();
        assert_eq!(t, UnixMs(1_735_732_800_250));
        assert_eq!(
            UnixMs::parse_rfc3339("2025-01-01T13:00:00.250+01:00"),
            Some(t)
        );
        assert_eq!(t.to_rfc3339_millis(), "2025-01-01T12:00:00.250Z");
        assert_eq!(t.to_rfc3339_secs(), "2025-01-01T12:00:00Z");
        assert_eq!(t.to_string(), "2025-01-01T12:00:00.250Z");
        assert_eq!(t.as_secs(), 1_735_732_800);
        assert_eq!(UnixMs(-1).as_secs(), -1);
        assert_eq!(UnixMs::parse_rfc3339("garbage"), None);
        assert_eq!(UnixMs(i64::MAX).to_rfc3339_secs(), "");
        assert_eq!(
            UnixMs::from_datetime(&t.to_datetime().unwrap()),
            t,
            "round trip"
        );
        let later = t + Duration::from_secs(90);
        assert_eq!(later.millis_since(t), 90_000);
        assert_eq!(t.millis_since(later), -90_000);
        assert_eq!(
            later.checked_duration_since(t),
            Some(Duration::from_secs(90))
        );
        assert_eq!(t.checked_duration_since(later), None);
        assert_eq!(later - Duration::from_secs(90), t);
        assert_eq!(UnixMs(i64::MAX) + Duration::from_secs(1), UnixMs(i64::MAX));
        assert_eq!(i64::from(t), t.as_millis());
        assert_eq!(UnixMs::from(5), UnixMs(5));
        assert_eq!(serde_json::to_string(&t).unwrap(), "1735732800250");
        assert_eq!(serde_json::from_str::<UnixMs>("-5").unwrap(), UnixMs(-5));
    }
}
