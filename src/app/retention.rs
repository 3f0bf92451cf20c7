//! The life-cycle shell: applies the decisions of [`crate::lifecycle`] to the catalogue
//! and the files. Used by the daemon's background sweeper and by the CLI
//! (`retention sweep`, `recordings delete`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::lifecycle::{DeleteMode, Tombstone};
use crate::catalog::{Catalog, CatalogError, RecordingRow};
use crate::config::Config;
use crate::lifecycle::retention::{plan_expiry, plan_pressure, DiskUsage, KeepReason, Pressure};
use crate::lifecycle::Clock;
use crate::recording::shred::shred_file;
use crate::vault::AuditSigner;

/// Most recordings looked at per sweep batch.
const BATCH: u32 = 500;

/// A shredder for recordings under `data_dir`: destroys the wrapped key, removes the file.
pub fn shredder(data_dir: &Path) -> impl FnOnce(&RecordingRow) -> Result<(), String> + '_ {
    move |row: &RecordingRow| {
        let Some(rel) = row.file_path.as_deref() else {
            return Ok(());
        };
        let p = data_dir.join(rel);
        shred_file(&p)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", p.display()))?;
        // The signed manifest names the recording and its hashes: it goes with the file
        // (the tombstone keeps the hashes).
        let (m, sig) = crate::app::evidence::manifest_paths(&p);
        for f in [m, sig, crate::app::evidence::pending_marker(&p)] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", f.display())),
            }
        }
        Ok(())
    }
}

/// Delete one recording (any mode) with crypto-shredding.
pub fn delete(
    cat: &mut Catalog,
    cfg: &Config,
    id: &str,
    mode: DeleteMode,
    detail: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> Result<Tombstone, CatalogError> {
    let dir = cfg.storage.data_dir.clone();
    cat.delete_recording(
        id,
        mode,
        detail,
        actor,
        now_ms,
        cfg.retention.local_only,
        shredder(&dir),
    )
}

/// Outcome of a sweep.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    /// Deleted recordings.
    pub deleted: Vec<Tombstone>,
    /// Expired recordings kept: (id, why).
    pub blocked: Vec<(String, String)>,
    /// Failures (id, error).
    pub errors: Vec<(String, String)>,
}

/// Delete every expired, unprotected recording (earliest expiry first). With `budget`,
/// stop after that many deletions (pressure sweeps delete only what they need).
pub fn sweep(
    cat: &mut Catalog,
    cfg: &Config,
    now_ms: i64,
    actor: &str,
    only: Option<&[String]>,
) -> SweepReport {
    let mut rep = SweepReport::default();
    let mut skip: std::collections::HashSet<String> = Default::default();
    // Bounded: each round deletes or skips at least one id, or stops.
    for _ in 0..10_000 {
        let cands = match cat.expired_candidates(now_ms, BATCH + skip.len() as u32) {
            Ok(c) => c,
            Err(e) => {
                rep.errors.push((String::new(), e.to_string()));
                break;
            }
        };
        let cands: Vec<_> = cands
            .into_iter()
            .filter(|c| !skip.contains(&c.id))
            .collect();
        if cands.is_empty() {
            break;
        }
        let plan = plan_expiry(&cands, now_ms, cfg.retention.local_only);
        for (id, why) in plan.blocked {
            rep.blocked.push((id.clone(), why.as_str().to_string()));
            skip.insert(id);
        }
        let mut progressed = false;
        for id in plan.delete {
            if only.is_some_and(|o| !o.contains(&id)) {
                skip.insert(id);
                continue;
            }
            match delete(cat, cfg, &id, DeleteMode::Expiry, None, actor, now_ms) {
                Ok(t) => {
                    tracing::info!(recording = %id, "expired recording deleted (key shredded, tombstone kept)");
                    rep.deleted.push(t);
                    progressed = true;
                }
                Err(e) => {
                    tracing::warn!(recording = %id, error = %e, "expired recording not deleted");
                    rep.errors.push((id.clone(), e.to_string()));
                    skip.insert(id);
                }
            }
        }
        for c in &cands {
            if !progressed {
                skip.insert(c.id.clone());
            }
        }
        if only.is_some() && !progressed {
            break;
        }
    }
    if !rep.blocked.is_empty() {
        let unarchived = rep
            .blocked
            .iter()
            .filter(|(_, w)| w == KeepReason::Unarchived.as_str())
            .count();
        if unarchived > 0 {
            tracing::warn!(
                unarchived,
                "expired recordings kept because the central archive has not confirmed them \
                 (retention.local_only = false)"
            );
        }
    }
    rep
}

/// Usage of the filesystem holding `dir`.
pub fn disk_usage(dir: &Path) -> std::io::Result<DiskUsage> {
    let s = rustix::fs::statvfs(dir)?;
    // What an unprivileged writer can use: used blocks + blocks available to us.
    let used = s.f_blocks.saturating_sub(s.f_bfree);
    let total = used.saturating_add(s.f_bavail);
    Ok(DiskUsage {
        total: total.saturating_mul(s.f_frsize),
        avail: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

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
pub async fn sweeper(
    cfg: Config,
    clock: Arc<dyn Clock>,
    signer: Arc<dyn AuditSigner>,
    gate: Arc<StorageGate>,
) {
    let path = cfg.storage.catalog_path();
    let mut cat = match Catalog::open(&path) {
        Ok(c) => c,
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
    loop {
        let now = clock.now_ms();
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
                        now,
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
                        now,
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
        if last_sign.map_or(true, |t| {
            t.elapsed() >= Duration::from_secs(u64::from(cfg.retention.audit_sign_interval_s))
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
