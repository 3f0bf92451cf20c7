//! Archive upload state (the `uploads` table, used by [`crate::uplink`]).

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{write_tx, Catalog, CatalogError};

/// Upload state of one recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Waiting to be uploaded.
    Pending,
    /// An upload is in progress (possibly interrupted: resumed at start-up).
    Uploading,
    /// The archive holds a verified copy.
    Uploaded,
    /// The last attempt failed; retried after `next_attempt_at`.
    Failed,
}

impl UploadState {
    /// Stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "pending",
            UploadState::Uploading => "uploading",
            UploadState::Uploaded => "uploaded",
            UploadState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Result<Self, CatalogError> {
        Ok(match s {
            "pending" => UploadState::Pending,
            "uploading" => UploadState::Uploading,
            "uploaded" => UploadState::Uploaded,
            "failed" => UploadState::Failed,
            _ => {
                return Err(CatalogError::Corrupt {
                    field: "uploads.state",
                    reason: format!("unknown value {s:?}"),
                })
            }
        })
    }
}

/// A row of `uploads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadRow {
    /// Recording id.
    pub recording_id: String,
    /// State.
    pub state: UploadState,
    /// Object key of the container in the archive.
    pub object_key: Option<String>,
    /// Multipart upload id in progress.
    pub upload_id: Option<String>,
    /// Resumable multipart state ([`crate::uplink::multipart::UploadState`] as JSON).
    pub parts_json: Option<String>,
    /// File size.
    pub bytes_total: u64,
    /// Bytes acknowledged by the archive.
    pub bytes_sent: u64,
    /// Attempts started.
    pub attempts: u32,
    /// Last failure (no personal data).
    pub last_error: Option<String>,
    /// Earliest next attempt, ms since the epoch.
    pub next_attempt_at_ms: Option<i64>,
    /// Verified multipart ETag of the archived object.
    pub archive_etag: Option<String>,
    /// Verified composite SHA-256 of the archived object.
    pub archive_checksum: Option<String>,
    /// The recording is under legal hold locally.
    pub held: bool,
    /// What the archive holds: `none`, `on`, `unsupported`.
    pub archive_hold: String,
    /// When the upload completed and verified, ms.
    pub uploaded_at_ms: Option<i64>,
    /// When the archive copy was confirmed (retention may delete the local file after).
    pub archived_at_ms: Option<i64>,
    /// The hold state the archived document says (as last published); `None` before
    /// the document is written.
    pub doc_held: Option<bool>,
    /// Whether the box's own holds (not central commands') cover it now, as the last
    /// hold round saw; differs from `doc_held` → the document is published again.
    pub local_held: Option<bool>,
}

impl UploadRow {
    /// A fresh pending row.
    pub fn pending(recording_id: &str) -> Self {
        UploadRow {
            recording_id: recording_id.into(),
            state: UploadState::Pending,
            object_key: None,
            upload_id: None,
            parts_json: None,
            bytes_total: 0,
            bytes_sent: 0,
            attempts: 0,
            last_error: None,
            next_attempt_at_ms: None,
            archive_etag: None,
            archive_checksum: None,
            held: false,
            archive_hold: "none".into(),
            uploaded_at_ms: None,
            archived_at_ms: None,
            doc_held: None,
            local_held: None,
        }
    }
}

/// A recording that still needs uploading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCandidate {
    /// Recording id.
    pub id: String,
    /// Start of the call, ms.
    pub started_at_ms: i64,
    /// Under legal hold.
    pub held: bool,
    /// Back-off.
    pub next_attempt_at_ms: Option<i64>,
    /// File size.
    pub file_bytes: u64,
}

/// Counters for the status document and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UplinkCounts {
    /// Recordings in the catalogue.
    pub recorded: u64,
    /// Finished recordings not yet uploaded (includes uploading and failed).
    pub pending: u64,
    /// Of those, with an upload in progress.
    pub uploading: u64,
    /// Of those, whose last attempt failed.
    pub failed: u64,
    /// Verified in the archive.
    pub uploaded: u64,
    /// Bytes of the pending files.
    pub pending_bytes: u64,
    /// Start (ms) of the oldest pending recording.
    pub oldest_pending_ms: Option<i64>,
    /// Last verified upload (ms).
    pub last_uploaded_ms: Option<i64>,
    /// Recordings under hold whose archive copy has no legal hold yet.
    pub held_unarchived: u64,
}

const COLS: &str = "recording_id, state, object_key, upload_id, parts_json, bytes_total, \
    bytes_sent, attempts, last_error, next_attempt_at, archive_etag, archive_checksum, held, \
    archive_hold, uploaded_at, archived_at, doc_held, local_held";

fn row(r: &Row<'_>) -> rusqlite::Result<(UploadRow, String)> {
    let state: String = r.get(1)?;
    Ok((
        UploadRow {
            recording_id: r.get(0)?,
            state: UploadState::Pending,
            object_key: r.get(2)?,
            upload_id: r.get(3)?,
            parts_json: r.get(4)?,
            bytes_total: r.get::<_, i64>(5)?.max(0) as u64,
            bytes_sent: r.get::<_, i64>(6)?.max(0) as u64,
            attempts: r.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
            last_error: r.get(8)?,
            next_attempt_at_ms: r.get(9)?,
            archive_etag: r.get(10)?,
            archive_checksum: r.get(11)?,
            held: r.get::<_, i64>(12)? != 0,
            archive_hold: r.get(13)?,
            uploaded_at_ms: r.get(14)?,
            archived_at_ms: r.get(15)?,
            doc_held: r.get::<_, Option<i64>>(16)?.map(|v| v != 0),
            local_held: r.get::<_, Option<i64>>(17)?.map(|v| v != 0),
        },
        state,
    ))
}

/// Recording states whose file is final and may be archived.
const FINAL: &str = "r.state IN ('complete', 'interrupted', 'damaged') \
    AND r.file_path IS NOT NULL AND r.file_sha256 IS NOT NULL";

impl Catalog {
    /// The upload row of a recording.
    pub fn upload_row(&self, id: &str) -> Result<Option<UploadRow>, CatalogError> {
        let r = self
            .conn
            .query_row(
                &format!("SELECT {COLS} FROM uploads WHERE recording_id = ?1"),
                params![id],
                row,
            )
            .optional()?;
        match r {
            None => Ok(None),
            Some((mut u, st)) => {
                u.state = UploadState::parse(&st)?;
                Ok(Some(u))
            }
        }
    }

    /// Insert or replace the upload row (durable when it returns).
    pub fn save_upload(&mut self, u: &UploadRow) -> Result<(), CatalogError> {
        let now = self.now_ms();
        let tx = write_tx(&mut self.conn)?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO uploads ({COLS}, updated_at) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?18, ?19, ?17)"
            ),
            params![
                u.recording_id,
                u.state.as_str(),
                u.object_key,
                u.upload_id,
                u.parts_json,
                u.bytes_total as i64,
                u.bytes_sent as i64,
                i64::from(u.attempts),
                u.last_error,
                u.next_attempt_at_ms,
                u.archive_etag,
                u.archive_checksum,
                i64::from(u.held),
                u.archive_hold,
                u.uploaded_at_ms,
                u.archived_at_ms,
                now,
                u.doc_held.map(i64::from),
                u.local_held.map(i64::from),
            ],
        )?;
        // The life cycle (retention, disk pressure) reads `recordings.archived_at`: a
        // recording counts as archived only once the uplink verified the archive copy.
        if let Some(at) = u.archived_at_ms {
            tx.execute(
                "UPDATE recordings SET archived_at = ?2 WHERE id = ?1 AND archived_at IS NULL",
                params![u.recording_id, at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Mark a recording as held (or not) for the uplink: held recordings go first and get
    /// an Object Lock legal hold in the archive (also after they were uploaded).
    /// This is the hook the legal-hold feature calls.
    pub fn set_upload_hold(&mut self, id: &str, held: bool) -> Result<(), CatalogError> {
        let mut u = self
            .upload_row(id)?
            .unwrap_or_else(|| UploadRow::pending(id));
        u.held = held;
        self.save_upload(&u)
    }

    /// Mark for the uplink every recording a legal hold covers now (see
    /// [`Catalog::holds_covering`]): held recordings go first, and uploaded ones get the
    /// archive's legal hold. Returns how many rows changed.
    pub fn sync_upload_holds(&mut self, now_ms: i64) -> Result<usize, CatalogError> {
        let (active, fp): (i64, (i64, i64, i64)) = self.conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE released_at IS NULL), COUNT(*), \
                    COALESCE(MAX(id), 0), COALESCE(MAX(released_at), 0) FROM holds",
            [],
            |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))),
        )?;
        let mut n = 0;
        if self.hold_fingerprint != Some(fp) {
            // Holds changed: an uploaded recording no hold covers any more is no longer
            // held, and whether the box's own holds cover it (`local_held`) is brought up
            // to date: where it differs from its archived document (`doc_held`) the
            // uplink publishes the document again. One look per uploaded recording, on
            // each change of the holds only.
            let central: std::collections::HashSet<i64> = self
                .holds(false, now_ms)?
                .into_iter()
                .filter(|h| h.operator.starts_with("central:"))
                .map(|h| h.id)
                .collect();
            let rows: Vec<(String, bool, Option<bool>)> = {
                let mut st = self.conn.prepare(
                    "SELECT recording_id, held, local_held FROM uploads \
                     WHERE held = 1 OR (state = 'uploaded' AND local_held IS NOT NULL)",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? != 0,
                        r.get::<_, Option<i64>>(2)?.map(|v| v != 0),
                    ))
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for (id, held, local) in rows {
                let cov = self.holds_covering(&id, now_ms)?;
                if held && cov.is_empty() {
                    self.set_upload_hold(&id, false)?;
                    n += 1;
                }
                let now_local = cov.iter().any(|h| !central.contains(h));
                if local.is_some() && local != Some(now_local) {
                    self.conn.execute(
                        "UPDATE uploads SET local_held = ?2 WHERE recording_id = ?1",
                        params![id, i64::from(now_local)],
                    )?;
                    n += 1;
                }
            }
        }
        if active == 0 {
            self.hold_fingerprint = Some(fp);
            self.hold_round_at_ms = now_ms;
            return Ok(n);
        }
        // Holds unchanged since the last round: only recordings not yet in the archive
        // (the backlog) can newly fall under them. Otherwise look at every recording once.
        let only_backlog = self.hold_fingerprint == Some(fp);
        // The backlog, plus what was uploaded since the previous round (1 s of margin): a
        // recording that became final after that round's query and was uploaded in the
        // same round is in neither set otherwise, and a hold placed while its call was
        // ending never reached the archive (uplink_s3 caught it under load).
        let since = self.hold_round_at_ms.saturating_sub(1_000);
        let ids: Vec<String> = {
            let mut st = self.conn.prepare(&format!(
                "SELECT r.id FROM recordings r LEFT JOIN uploads u ON u.recording_id = r.id \
                 WHERE {FINAL} AND COALESCE(u.held, 0) = 0 \
                   AND (?1 = 0 OR u.state IS NULL OR u.state != 'uploaded' \
                        OR COALESCE(u.uploaded_at, 0) >= ?2)"
            ))?;
            let rows = st.query_map(params![i64::from(only_backlog), since], |r| r.get(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        self.hold_fingerprint = Some(fp);
        self.hold_round_at_ms = now_ms;
        for id in ids {
            if !self.holds_covering(&id, now_ms)?.is_empty() {
                self.set_upload_hold(&id, true)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Finished recordings not yet verified in the archive, plus uploaded ones whose hold
    /// has not reached the archive yet.
    pub fn upload_candidates(&self) -> Result<Vec<UploadCandidate>, CatalogError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT r.id, r.started_at, COALESCE(u.held, 0), u.next_attempt_at, \
                    COALESCE(r.file_bytes, 0) \
             FROM recordings r LEFT JOIN uploads u ON u.recording_id = r.id \
             WHERE {FINAL} AND (u.state IS NULL OR u.state != 'uploaded' \
                   OR (u.held = 1 AND u.archive_hold = 'none') \
                   OR (u.doc_held IS NOT NULL AND u.local_held IS NOT NULL \
                       AND u.doc_held != u.local_held)) \
             ORDER BY r.started_at"
        ))?;
        let rows = st.query_map([], |r| {
            Ok(UploadCandidate {
                id: r.get(0)?,
                started_at_ms: r.get(1)?,
                held: r.get::<_, i64>(2)? != 0,
                next_attempt_at_ms: r.get(3)?,
                file_bytes: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Counters for status and metrics.
    pub fn uplink_counts(&self) -> Result<UplinkCounts, CatalogError> {
        let mut c = UplinkCounts {
            recorded: self
                .conn
                .query_row("SELECT COUNT(*) FROM recordings", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            ..Default::default()
        };
        let (pending, uploading, failed, bytes, oldest): (i64, i64, i64, i64, Option<i64>) =
            self.conn.query_row(
                &format!(
                    "SELECT COUNT(*), \
                        COALESCE(SUM(u.state = 'uploading'), 0), \
                        COALESCE(SUM(u.state = 'failed'), 0), \
                        COALESCE(SUM(r.file_bytes), 0), MIN(r.started_at) \
                     FROM recordings r LEFT JOIN uploads u ON u.recording_id = r.id \
                     WHERE {FINAL} AND (u.state IS NULL OR u.state != 'uploaded')"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
        c.pending = pending as u64;
        c.uploading = uploading as u64;
        c.failed = failed as u64;
        c.pending_bytes = bytes.max(0) as u64;
        c.oldest_pending_ms = oldest;
        let (up, last, held): (i64, Option<i64>, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(state = 'uploaded'), 0), MAX(uploaded_at), \
                    COALESCE(SUM(state = 'uploaded' AND held = 1 AND archive_hold = 'none'), 0) \
             FROM uploads",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        c.uploaded = up as u64;
        c.last_uploaded_ms = last;
        c.held_unarchived = held as u64;
        Ok(c)
    }

    /// Multipart upload ids the catalogue still refers to (others under this box's
    /// prefix are stale and may be aborted).
    pub fn active_upload_ids(&self) -> Result<Vec<String>, CatalogError> {
        let mut st = self.conn.prepare(
            "SELECT upload_id FROM uploads WHERE upload_id IS NOT NULL AND state != 'uploaded'",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Recordings whose archive copy was confirmed before `before_ms`: what local
    /// retention may delete (the sweeper also checks holds).
    pub fn archived_before(&self, before_ms: i64) -> Result<Vec<String>, CatalogError> {
        let mut st = self.conn.prepare(
            "SELECT recording_id FROM uploads \
             WHERE state = 'uploaded' AND archived_at IS NOT NULL AND archived_at < ?1 \
             ORDER BY archived_at",
        )?;
        let rows = st.query_map(params![before_ms], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every upload row (for `branchrec status --json`).
    pub fn upload_rows(&self) -> Result<Vec<UploadRow>, CatalogError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLS} FROM uploads ORDER BY recording_id"))?;
        let rows = st.query_map([], row)?;
        let mut out = Vec::new();
        for r in rows {
            let (mut u, s) = r?;
            u.state = UploadState::parse(&s)?;
            out.push(u);
        }
        Ok(out)
    }
}
