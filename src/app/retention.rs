//! The daemon's life-cycle shell: the background sweeper (expiry sweeps, watermarks and
//! pressure sweeps, audit-head signatures) and the storage gate the SIP loop consults.
//! Deleting and sweeping themselves are [`crate::service::retention`], shared with the CLI.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::lifecycle::retention::{plan_pressure, Pressure};
use crate::lifecycle::Clock;
pub use crate::service::retention::disk_usage;
use crate::service::retention::sweep;
use crate::time::UnixMs;

/// What `retention status` shows of the daemon's life-cycle state (`<data_dir>/status.json`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct StorageStatus {
    /// When written (RFC 3339).
    pub updated: String,
    /// Used percentage of the data filesystem.
    pub used_pct: f64,
    /// `normal` or `refusing`.
    pub pressure: String,
    /// Alarm text, when an alarm is raised.
    pub alarm: Option<String>,
    /// Expired recordings kept at the last sweep, by reason.
    pub blocked: std::collections::BTreeMap<String, u64>,
    /// Recordings deleted since start.
    pub deleted_since_start: u64,
    /// `retention.local_only`.
    pub local_only: bool,
}

/// Shared between the sweeper and the SIP loop.
#[derive(Debug, Default)]
pub struct StorageGate {
    refusing: AtomicBool,
    status: Mutex<StorageStatus>,
    wake: tokio::sync::Notify,
}

impl StorageGate {
    /// Whether new calls must be refused (only protected recordings left above the high
    /// watermark).
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }
    /// Used percentage of the data filesystem at the sweeper's last check.
    pub fn used_pct(&self) -> f64 {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .used_pct
    }
    /// Ask the sweeper to look at the disk now.
    pub fn poke(&self) {
        self.wake.notify_one();
    }
}

/// The daemon's background sweeper: every second a watermark check (and a pressure
/// sweep when over the high watermark), every `retention.sweep_interval_s` an expiry
/// sweep, every `retention.audit_sign_interval_s` a signature of the audit chain head.
/// The wall clock for retention through the step guard; steps are logged and audited.
fn trusted_now(
    guard: &mut crate::assurance::clock::WallGuard,
    mono: &crate::clock::MonoClock,
    clock: &dyn Clock,
    cfg: &Config,
    cat: &mut crate::catalog::Catalog,
) -> i64 {
    use crate::assurance::clock::GuardEvent;
    let reading = crate::clock::probe().reading();
    let vouched = reading.problem(cfg.time.max_error_ms).is_none();
    let (now, ev) = guard.now(mono.now(), UnixMs(clock.now_ms()), vouched);
    if let Some(ev) = ev {
        let (what, step) = match ev {
            GuardEvent::ForwardAccepted(s) => ("accepted", s),
            GuardEvent::ForwardRefused(s) => ("refused", s),
            GuardEvent::Backward(s) => ("backward", s),
        };
        tracing::warn!(
            step_ms = step,
            retention = what,
            unsync = reading.unsync,
            "wall clock step seen by the retention sweeper"
        );
        let _ = cat.audit(
            now.0,
            "daemon",
            "clock.step",
            "retention",
            serde_json::json!({ "step_ms": step, "retention": what, "unsync": reading.unsync, "maxerror_us": reading.maxerror_us }),
        );
    }
    now.0
}

pub async fn sweeper(
    cfg: Config,
    access: crate::catalog::CatalogAccess,
    clock: Arc<dyn Clock>,
    signer: Option<Arc<crate::vault::HeadSigner>>,
    gate: Arc<StorageGate>,
) {
    let mut cat = match access.open() {
        Ok(mut c) => {
            c.set_clock(clock.clone());
            c
        }
        Err(e) => {
            tracing::error!(error = %e, "retention sweeper cannot open the catalogue: nothing will expire");
            return;
        }
    };
    let mut last_sweep: Option<std::time::Instant> = None;
    let mut last_sign: Option<std::time::Instant> = None;
    let mut state = Pressure::Normal;
    let mut deleted_total = 0u64;
    let status_path: PathBuf = cfg.storage.data_dir.join("status.json");
    // Issue #19: retention never runs ahead of the monotonic clock on a forward step the
    // time daemon does not vouch for (docs/assurance.md).
    let mono = crate::clock::MonoClock::process();
    let mut guard = crate::assurance::clock::WallGuard::new(
        mono.now(),
        UnixMs(clock.now_ms()),
        cfg.time.step_threshold_ms.max(5000),
    );
    loop {
        let now = trusted_now(&mut guard, &mono, clock.as_ref(), &cfg, &mut cat);
        let mut blocked = std::collections::BTreeMap::new();
        if last_sweep.map_or(true, |t| {
            t.elapsed() >= Duration::from_secs(u64::from(cfg.retention.sweep_interval_s))
        }) {
            last_sweep = Some(std::time::Instant::now());
            let rep = tokio::task::block_in_place(|| sweep(&mut cat, &cfg, now, "sweeper", None));
            deleted_total += rep.deleted.len() as u64;
            for (_, why) in &rep.blocked {
                *blocked.entry(why.clone()).or_insert(0u64) += 1;
            }
            if !rep.deleted.is_empty() || !rep.blocked.is_empty() {
                tracing::info!(
                    deleted = rep.deleted.len(),
                    blocked = rep.blocked.len(),
                    "retention sweep"
                );
            }
        }
        // Watermarks.
        let usage = disk_usage(&cfg.storage.data_dir);
        let mut alarm = None;
        let mut used_pct = 0.0;
        match usage {
            Ok(u) => {
                used_pct = u.used_pct();
                if used_pct >= f64::from(cfg.retention.high_watermark_pct)
                    || state == Pressure::Refusing
                {
                    let cands = tokio::task::block_in_place(|| cat.expired_candidates(now, 10_000))
                        .unwrap_or_default();
                    let d = plan_pressure(
                        u,
                        cfg.retention.high_watermark_pct,
                        cfg.retention.low_watermark_pct,
                        state,
                        &cands,
                        UnixMs(now),
                        cfg.retention.local_only,
                    );
                    if !d.delete.is_empty() {
                        let rep = tokio::task::block_in_place(|| {
                            sweep(&mut cat, &cfg, now, "sweeper:pressure", Some(&d.delete))
                        });
                        deleted_total += rep.deleted.len() as u64;
                        tracing::warn!(
                            deleted = rep.deleted.len(),
                            used_pct,
                            "disk over the high watermark: expired recordings deleted first"
                        );
                    }
                    // Re-measure after deleting.
                    let u2 = disk_usage(&cfg.storage.data_dir).unwrap_or(u);
                    used_pct = u2.used_pct();
                    let d2 = plan_pressure(
                        u2,
                        cfg.retention.high_watermark_pct,
                        cfg.retention.low_watermark_pct,
                        state,
                        &[],
                        UnixMs(now),
                        cfg.retention.local_only,
                    );
                    if d2.state != state {
                        if d2.state == Pressure::Refusing {
                            tracing::error!(used_pct, "ALARM: data disk over the high watermark and only protected recordings remain: refusing new calls (503)");
                        } else {
                            tracing::warn!(
                                used_pct,
                                "disk usage below the low watermark again: accepting calls"
                            );
                        }
                    }
                    state = d2.state;
                    if d2.alarm {
                        alarm = Some(format!(
                            "data disk {used_pct:.1}% used (high watermark {}%), only protected recordings remain: new calls refused",
                            cfg.retention.high_watermark_pct
                        ));
                    }
                }
            }
            Err(e) => {
                alarm = Some(format!("cannot read data disk usage: {e}"));
            }
        }
        gate.refusing
            .store(state == Pressure::Refusing, Ordering::Relaxed);
        {
            let mut st = gate.status.lock().unwrap_or_else(|e| e.into_inner());
            st.updated = chrono::DateTime::from_timestamp_millis(now)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            st.used_pct = (used_pct * 10.0).round() / 10.0;
            st.pressure = if state == Pressure::Refusing {
                "refusing"
            } else {
                "normal"
            }
            .into();
            st.alarm = alarm;
            if last_sweep.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                st.blocked = blocked;
            }
            st.deleted_since_start = deleted_total;
            st.local_only = cfg.retention.local_only;
            if let Ok(text) = serde_json::to_vec_pretty(&*st) {
                let tmp = status_path.with_extension("json.tmp");
                if std::fs::write(&tmp, text)
                    .and_then(|()| std::fs::rename(&tmp, &status_path))
                    .is_err()
                {
                    tracing::debug!("could not write status.json");
                }
            }
        }
        if let Some(signer) = signer.as_ref().filter(|_| {
            last_sign.map_or(true, |t: std::time::Instant| {
                t.elapsed() >= Duration::from_secs(u64::from(cfg.retention.audit_sign_interval_s))
            })
        }) {
            last_sign = Some(std::time::Instant::now());
            if let Err(e) =
                tokio::task::block_in_place(|| cat.sign_audit_head(signer.as_ref(), now))
            {
                tracing::error!(error = %e, "signing the audit chain head failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = gate.wake.notified() => {}
        }
    }
}
