//! The daemon's assurance state (issue #19, docs/assurance.md): every call's verdict
//! goes through here — recordings at close ([`super::sink`]), refused and not-recorded
//! calls from the SIP loop, missed mirrored dialogs from the capture — into the box-wide
//! [`AssuranceMonitor`] (counters, alarms over sliding windows on the monotonic clock)
//! and, for calls without a recording, the catalogue's `calls_seen` table.

use std::sync::{Mutex, OnceLock};

use crate::app::store::{CatalogCmd, CatalogHandle};
use crate::assurance::alarms::{AssuranceMonitor, AssuranceSnapshot};
use crate::assurance::Verdict;
use crate::catalog::{CallSeenRow, Source};
use crate::clock::MonoClock;

static MONITOR: OnceLock<Mutex<AssuranceMonitor>> = OnceLock::new();

fn monitor() -> std::sync::MutexGuard<'static, AssuranceMonitor> {
    MONITOR
        .get_or_init(|| {
            Mutex::new(AssuranceMonitor::new(
                crate::assurance::alarms::default_rules(),
            ))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Set the thresholds from `[assurance] alarms` (first call wins, before any call).
pub fn init(cfg: &crate::config::Config) {
    let mut m = AssuranceMonitor::new(cfg.assurance.rules());
    m.set_time_alarm(cfg.time.alarm_mode());
    let _ = MONITOR.set(Mutex::new(m));
}

/// A call ended (or was turned away) with `v`.
pub fn note(v: Verdict) {
    monitor().note(MonoClock::process().now(), v);
}

/// A clock reading was judged: `problem` when unsynchronised or beyond the bound.
pub fn note_clock(problem: Option<String>) {
    monitor().note_clock(MonoClock::process().now(), problem);
}

/// A recording was flagged for its clock, or saw a clock step.
pub fn note_flagged(steps: usize) {
    let mut m = monitor();
    m.note_flagged_recording();
    for _ in 0..steps {
        m.note_step();
    }
}

/// Counters and alarms now.
pub fn snapshot() -> AssuranceSnapshot {
    monitor().snapshot(MonoClock::process().now())
}

/// A call that got no recording: a `calls_seen` row (no personal data) and the verdict.
pub fn call_seen(
    catalog: &CatalogHandle,
    source: Source,
    verdict: Verdict,
    reason: &str,
    rule: Option<String>,
    direction: Option<String>,
) {
    tracing::info!(
        verdict = verdict.as_str(),
        reason,
        "call seen without a recording"
    );
    note(verdict);
    catalog.send(CatalogCmd::CallSeen(CallSeenRow {
        id: uuid::Uuid::new_v4().to_string(),
        source,
        seen_at_ms: chrono::Utc::now().timestamp_millis(),
        verdict,
        reason: reason.to_string(),
        rule,
        direction,
    }));
}

/// The assurance alarms as status-document alarms, raised at `since` (RFC 3339).
pub fn status_alarms(snap: &AssuranceSnapshot, since: &str) -> Vec<crate::uplink::status::Alarm> {
    snap.alarms
        .iter()
        .map(|a| crate::uplink::status::Alarm {
            code: a.code.clone(),
            message: a.message.clone(),
            since: since.to_string(),
        })
        .collect()
}
