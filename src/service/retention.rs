//! Retention: deleting recordings with crypto-shredding (expiry sweeps, pressure sweeps,
//! requests), and the disk usage the watermarks are checked against. The daemon's
//! background sweeper ([`crate::app::retention`]) and the CLI (`retention sweep`,
//! `retention status`, `recordings delete`) both call these.

use std::path::Path;

use serde::Serialize;

use crate::catalog::lifecycle::{DeleteMode, LifecycleCounts, Tombstone};
use crate::catalog::{Catalog, CatalogError, RecordingRow};
use crate::config::Config;
use crate::lifecycle::retention::{plan_expiry, DiskUsage, KeepReason};
use crate::recording::shred::shred_file;
use crate::time::UnixMs;

/// Most recordings looked at per sweep batch.
const BATCH: u32 = 500;

/// A shredder for recordings under `data_dir`: destroys the wrapped key, removes the file.
pub fn shredder(data_dir: &Path) -> impl FnOnce(&RecordingRow) -> Result<(), String> + '_ {
    move |row: &RecordingRow| {
        let Some(rel) = row.file_path.as_deref() else {
            return Ok(());
        };
        // Confined to the data directory: a forged row (`../../etc/x`, an absolute path,
        // a path through a symbolic link) is refused, never shredded.
        let p = crate::recording::files::confined(data_dir, rel).map_err(|e| e.to_string())?;
        shred_file(&p)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", p.display()))?;
        // The signed manifest names the recording and its hashes: it goes with the file
        // (the tombstone keeps the hashes).
        let (m, sig) = super::evidence::manifest_paths(&p);
        for f in [m, sig, super::evidence::pending_marker(&p)] {
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
        let plan = plan_expiry(&cands, UnixMs(now_ms), cfg.retention.local_only);
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

/// What `retention status` shows.
#[derive(Debug, Clone)]
pub struct RetentionStatus {
    /// Usage of the data filesystem now.
    pub usage: DiskUsage,
    /// Life-cycle counts.
    pub counts: LifecycleCounts,
    /// The `retention status --json` document: disk usage and watermarks, the daemon's
    /// pressure and alarm state (`<data_dir>/status.json`, if it runs) and the life-cycle
    /// counts.
    pub document: serde_json::Value,
}

/// The retention status of the box at `now_ms`.
pub fn status(cat: &Catalog, cfg: &Config, now_ms: i64) -> anyhow::Result<RetentionStatus> {
    let counts = cat.lifecycle_counts(now_ms)?;
    let usage = disk_usage(&cfg.storage.data_dir)?;
    let daemon: Option<serde_json::Value> = std::fs::read(cfg.storage.data_dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let document = serde_json::json!({
        "used_pct": (usage.used_pct() * 10.0).round() / 10.0,
        "high_watermark_pct": cfg.retention.high_watermark_pct,
        "low_watermark_pct": cfg.retention.low_watermark_pct,
        "local_only": cfg.retention.local_only,
        "deletion_blocked_until_archived": !cfg.retention.local_only,
        "counts": counts,
        "daemon": daemon,
    });
    Ok(RetentionStatus {
        usage,
        counts,
        document,
    })
}
