//! The legal life cycle of recordings, as pure decisions (sans-IO).
//!
//! - [`rules`]: which calls are recorded, with which retention class, minimum duration
//!   and tags (ordered `[[rules]]`, first match wins).
//! - [`retention`]: retention classes, expiry, the deletion plan of a sweep, and the
//!   disk-pressure (watermark) decision.
//! - [`holds`]: what a legal hold covers.
//! - [`audit`]: the audit log's hash chain and its verification.
//! - [`pattern`]: the number/AoR patterns all of them use.
//!
//! None of this reads the clock or touches a file: the daemon (`app::retention`) and the
//! CLI apply the decisions. Time comes in through a [`Clock`], so tests can move it; the
//! real clocks are the daemon's (`branchrec::clock`).

pub mod audit;
pub mod holds;
pub mod pattern;
pub mod retention;
pub mod rules;

pub use retention::{Keep, RetentionConfig};
pub use rules::{PolicyConfig, RuleConfig};

/// Wall-clock time for life-cycle decisions.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> crate::time::UnixMs;
    /// Now as the catalogue's integer column (unix ms).
    fn now_ms(&self) -> i64 {
        self.now().as_millis()
    }
}
