//! Catalogue side of the life cycle: rule outcome, holds, deletion with tombstones, and
//! the hash-chained audit log. The decisions themselves are in [`crate::lifecycle`].

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{rfc3339, Catalog, CatalogError, RawRecording, RecordingRow};
use crate::lifecycle::audit::{self, AuditEntry, SignedHead, GENESIS};
use crate::lifecycle::holds::{covers, HoldFacts, HoldTarget};
use crate::lifecycle::retention::{self, Candidate, KeepReason};
use crate::time::UnixMs;

/// What the rules decided for a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Matching rule, if any.
    pub rule: Option<String>,
    /// Derived call direction.
    pub direction: Option<String>,
    /// Retention class.
    pub retention_class: String,
    /// Retention after the end of the call; `None` = forever.
    pub retention_ms: Option<u64>,
    /// Minimum duration (0 = none).
    pub min_duration_ms: u64,
    /// Tags.
    pub tags: Vec<String>,
}

/// A legal hold as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldRow {
    /// Hold id.
    pub id: i64,
    /// `recording`, `call`, `participant` or `window`.
    pub kind: String,
    /// Recording id, call/session id or participant pattern; null for windows.
    pub value: Option<String>,
    /// Window start (RFC 3339), windows only.
    pub from: Option<String>,
    /// Window end (RFC 3339), windows only.
    pub to: Option<String>,
    /// Why.
    pub reason: String,
    /// Who placed it.
    pub operator: String,
    /// When (RFC 3339).
    pub created: String,
    /// When released (RFC 3339), null while active.
    pub released: Option<String>,
    /// Who released it.
    pub released_by: Option<String>,
    /// Why it was released.
    pub release_reason: Option<String>,
    /// Recordings it covers now.
    pub recordings: u64,
}

/// Why a recording is being deleted (decides which protections apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Retention expiry (sweeper, or disk pressure): held/unarchived/unexpired are kept.
    Expiry,
    /// Operator request (`recordings delete`): held/unarchived are kept.
    Manual,
    /// Shorter than the rule's minimum duration: only holds protect it.
    MinDuration,
    /// The SRC never acknowledged our 2xx and no audio arrived (RFC 3261 13.3.1.4: we
    /// ended the session with BYE): only holds protect it.
    Unconfirmed,
}

impl DeleteMode {
    /// Reason code in the tombstone.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteMode::Expiry => "expired",
            DeleteMode::Manual => "operator",
            DeleteMode::MinDuration => "min_duration",
            DeleteMode::Unconfirmed => "unconfirmed",
        }
    }
}

/// A deleted recording's remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    /// Recording id (a random UUID: it names no party). No Call-ID, session id, number
    /// or name is kept (schema version 6).
    pub recording_id: String,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: Option<String>,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// SHA-256 of the file as it was before shredding.
    pub file_sha256: Option<String>,
    /// Its size.
    pub file_bytes: Option<i64>,
    /// Retention class.
    pub retention_class: Option<String>,
    /// Expiry (RFC 3339).
    pub expires: Option<String>,
    /// Deletion time (RFC 3339).
    pub deleted: String,
    /// `expired`, `operator`, `min_duration`.
    pub reason: String,
    /// Free text (operator's reason).
    pub detail: Option<String>,
    /// Who deleted it.
    pub actor: String,
    /// Audit entry of the deletion.
    pub audit_seq: i64,
}

fn ts(ms: i64) -> String {
    rfc3339(ms, "time").unwrap_or_else(|_| ms.to_string())
}

/// Append one entry to the audit chain inside `conn`'s current transaction.
pub(super) fn append_audit(
    conn: &Connection,
    key: Option<&crate::vault::audit_key::AuditMacKey>,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &serde_json::Value,
) -> Result<i64, CatalogError> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let details = match (details, crate::clock::dev_clock_mark()) {
        // A process running on a development clock marks every entry it writes.
        (serde_json::Value::Object(m), Some(mark)) => {
            let mut m = m.clone();
            m.insert("dev_clock".into(), mark.clone());
            serde_json::Value::Object(m).to_string()
        }
        (d, Some(mark)) => serde_json::json!({ "details": d, "dev_clock": mark }).to_string(),
        (d, None) => d.to_string(),
    };
    // Keying starts with a marker entry, written (with its MAC) by the first process
    // holding the audit key: from it on `audit verify` requires a MAC on every entry.
    let (seq, prev) = match key {
        Some(k) if action != audit::KEYED_ACTION && !is_keyed(conn)? => {
            let m = insert_audit(
                conn,
                Some(k),
                seq,
                at_ms,
                actor,
                audit::KEYED_ACTION,
                "",
                &serde_json::json!({ "schema": super::schema::AUDIT_MAC_SCHEMA, "key_id": k.key_id() })
                    .to_string(),
                &prev,
            )?;
            (seq + 1, m)
        }
        _ => (seq, prev),
    };
    insert_audit(
        conn, key, seq, at_ms, actor, action, target, &details, &prev,
    )?;
    Ok(seq)
}

/// Whether the log has its keying marker.
fn is_keyed(conn: &Connection) -> Result<bool, CatalogError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM audit_log WHERE action = ?1 LIMIT 1",
            [audit::KEYED_ACTION],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Insert one hashed (and, with `key`, MACed) entry; returns its hash.
#[allow(clippy::too_many_arguments)]
fn insert_audit(
    conn: &Connection,
    key: Option<&crate::vault::audit_key::AuditMacKey>,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    prev: &str,
) -> Result<String, CatalogError> {
    let hash = audit::entry_hash(seq, UnixMs(at_ms), actor, action, target, details, prev);
    let mac = key.map(|k| audit::entry_mac(k.as_bytes(), seq, &hash));
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![seq, at_ms, actor, action, target, details, prev, hash, mac],
    )?;
    Ok(hash)
}

fn hold_target(
    kind: &str,
    value: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
) -> Option<HoldTarget> {
    Some(match kind {
        "recording" => HoldTarget::Recording(value?),
        "call" => HoldTarget::Call(value?),
        "participant" => HoldTarget::Participant(value?),
        "window" => HoldTarget::Window {
            from: UnixMs(from?),
            to: UnixMs(to?),
        },
        _ => return None,
    })
}

/// Active holds (id, target), for [`Catalog::list`].
pub(super) fn active_holds_pub(conn: &Connection) -> Result<Vec<(i64, HoldTarget)>, CatalogError> {
    active_holds(conn)
}

fn active_holds(conn: &Connection) -> Result<Vec<(i64, HoldTarget)>, CatalogError> {
    let mut st = conn.prepare_cached(
        "SELECT id, kind, value, from_at, to_at FROM holds WHERE released_at IS NULL ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, value, from, to) = row?;
        match hold_target(&kind, value, from, to) {
            Some(t) => out.push((id, t)),
            None => {
                return Err(CatalogError::Corrupt {
                    field: "holds",
                    reason: format!("hold {id} of kind {kind:?} is incomplete"),
                })
            }
        }
    }
    Ok(out)
}

/// Facts about one recording for hold matching.
struct Facts {
    id: String,
    call_id: String,
    session_id: Option<String>,
    started_at: i64,
    ended_at: Option<i64>,
    aors: Vec<String>,
}

fn facts(conn: &Connection, id: &str) -> Result<Option<Facts>, CatalogError> {
    let head = conn
        .query_row(
            "SELECT call_id, session_id, started_at, ended_at FROM recordings WHERE id = ?1",
            [id],
            |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((call_id, session_id, started_at, ended_at)) = head else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT aor FROM participants WHERE recording_id = ?1 AND aor IS NOT NULL
         UNION ALL SELECT value FROM participant_aliases
         WHERE recording_id = ?1 AND kind = 'aor'",
    )?;
    let aors = st
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Facts {
        id: id.to_string(),
        call_id,
        session_id,
        started_at,
        ended_at,
        aors,
    }))
}

fn covering(holds: &[(i64, HoldTarget)], f: &Facts, now_ms: i64) -> Vec<i64> {
    let hf = HoldFacts {
        id: &f.id,
        call_id: &f.call_id,
        session_id: f.session_id.as_deref(),
        participants: f.aors.iter().map(String::as_str).collect(),
        started_at: UnixMs(f.started_at),
        ended_at: f.ended_at.map(UnixMs),
    };
    holds
        .iter()
        .filter(|(_, t)| covers(t, &hf, UnixMs(now_ms)))
        .map(|(id, _)| *id)
        .collect()
}

fn candidate(
    conn: &Connection,
    holds: &[(i64, HoldTarget)],
    id: &str,
    now_ms: i64,
) -> Result<Option<(Candidate, Vec<i64>)>, CatalogError> {
    let Some(f) = facts(conn, id)? else {
        return Ok(None);
    };
    let (expires, archived, state, bytes): (Option<i64>, Option<i64>, String, Option<i64>) = conn
        .query_row(
        "SELECT expires_at, archived_at, state, file_bytes FROM recordings WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let held_by = covering(holds, &f, now_ms);
    Ok(Some((
        Candidate {
            id: id.to_string(),
            expires_at: expires.map(UnixMs),
            archived: archived.is_some(),
            held: !held_by.is_empty(),
            recording: state == "recording",
            bytes: bytes.unwrap_or(0).max(0) as u64,
        },
        held_by,
    )))
}

/// Counts for `retention status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LifecycleCounts {
    /// Recordings in the catalogue.
    pub recordings: u64,
    /// Of which expired (expiry in the past).
    pub expired: u64,
    /// Of which not archived centrally.
    pub unarchived: u64,
    /// Active holds.
    pub active_holds: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Audit entries.
    pub audit_entries: u64,
}

/// One `audit_log` row (columns seq, at, actor, action, target, details, prev_hash, hash, mac).
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at_ms: UnixMs(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        details: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
        mac: r.get(8)?,
    })
}

impl Catalog {
    /// A write transaction, nested as a savepoint inside [`Catalog::batch`].
    fn write_tx(&mut self) -> Result<super::WriteTx<'_>, CatalogError> {
        if self.read_only {
            return Err(CatalogError::Invalid {
                field: "catalogue",
                reason: "opened read-only".into(),
            });
        }
        Ok(super::write_tx(&mut self.conn)?)
    }

    /// Store the rules' outcome for a recording (before it finishes; if it has finished,
    /// its expiry is recomputed).
    pub fn set_policy(&mut self, id: &str, p: &Policy) -> Result<(), CatalogError> {
        let tx = self.write_tx()?;
        let retention = p.retention_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let n = tx.execute(
            "UPDATE recordings SET rule = ?2, direction = ?3, retention_class = ?4,
                 retention_ms = ?5, min_duration_ms = ?6,
                 expires_at = CASE WHEN ended_at IS NULL OR ?5 IS NULL THEN NULL ELSE ended_at + ?5 END
             WHERE id = ?1",
            params![id, p.rule, p.direction, p.retention_class, retention, p.min_duration_ms as i64],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(id.to_string()));
        }
        tx.execute("DELETE FROM tags WHERE recording_id = ?1", [id])?;
        for t in &p.tags {
            tx.execute(
                "INSERT OR IGNORE INTO tags (recording_id, tag) VALUES (?1, ?2)",
                params![id, t],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Minimum duration the rules set for a recording (0 = none), and its duration.
    pub fn min_duration(&self, id: &str) -> Result<Option<(u64, Option<u64>)>, CatalogError> {
        Ok(self
            .conn
            .query_row(
                "SELECT min_duration_ms, duration_ms FROM recordings WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, Option<i64>>(1)?.map(|d| d.max(0) as u64),
                    ))
                },
            )
            .optional()?)
    }

    /// Tags of a recording.
    pub fn tags(&self, id: &str) -> Result<Vec<String>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT tag FROM tags WHERE recording_id = ?1 ORDER BY tag")?;
        let r = st
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(r)
    }

    /// Mark a recording as confirmed by the central archive (the uplink's job).
    pub fn set_archived(&mut self, id: &str, at_ms: i64) -> Result<(), CatalogError> {
        let n = self.conn.execute(
            "UPDATE recordings SET archived_at = ?2 WHERE id = ?1",
            params![id, at_ms],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// Append an audit entry; returns its seq.
    pub fn audit(
        &mut self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<i64, CatalogError> {
        let key = self.audit_key.clone();
        let tx = self.write_tx()?;
        let seq = append_audit(&tx, key.as_deref(), at_ms, actor, action, target, &details)?;
        tx.commit()?;
        Ok(seq)
    }

    /// The newest audit entry with this action, if any (start-up reads only this).
    pub fn last_audit_entry(&self, action: &str) -> Result<Option<AuditEntry>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, actor, action, target, details, prev_hash, hash, mac FROM audit_log
             WHERE action = ?1 ORDER BY seq DESC LIMIT 1",
        )?;
        Ok(st.query_row([action], audit_row).optional()?)
    }

    /// The newest audit entry with this action and target, if any (two-person requests).
    pub fn last_audit_entry_for(
        &self,
        action: &str,
        target: &str,
    ) -> Result<Option<AuditEntry>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, actor, action, target, details, prev_hash, hash, mac FROM audit_log
             WHERE action = ?1 AND target = ?2 ORDER BY seq DESC LIMIT 1",
        )?;
        Ok(st.query_row([action, target], audit_row).optional()?)
    }

    /// The audit log, ordered by seq (optionally only `seq > after`, at most `limit`).
    pub fn audit_entries(
        &self,
        after: i64,
        limit: Option<u32>,
    ) -> Result<Vec<AuditEntry>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, actor, action, target, details, prev_hash, hash, mac FROM audit_log
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit.map_or(-1, i64::from)], audit_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Signed chain heads with their public keys (hex), oldest first.
    pub fn audit_heads(&self) -> Result<Vec<(SignedHead, String)>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, hash, key_id, public_key, signature, ordinal, counter FROM audit_heads ORDER BY rowid",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                SignedHead {
                    seq: r.get(0)?,
                    at_ms: UnixMs(r.get(1)?),
                    hash: r.get(2)?,
                    key_id: r.get(3)?,
                    signature: r.get(5)?,
                    ordinal: r.get(6)?,
                    counter: r.get(7)?,
                },
                r.get::<_, String>(4)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sign the current chain head if it moved since the last signature (or was never
    /// signed): a v2 head with the next ordinal and the counter value after incrementing
    /// `hs.counter`, all inside one write transaction (so the daemon and the CLI never
    /// interleave). Refuses when the entries since the last head do not link to it (the
    /// history it would bless was rewritten). Returns the seq signed, `None` if nothing
    /// to do.
    pub fn sign_audit_head(
        &mut self,
        hs: &crate::vault::HeadSigner,
        now_ms: i64,
    ) -> Result<Option<i64>, CatalogError> {
        let key = self.audit_key.clone();
        let tx = self.write_tx()?;
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = head else {
            return Ok(None);
        };
        let last: Option<(i64, String, Option<i64>)> = tx
            .query_row(
                "SELECT seq, hash, ordinal FROM audit_heads ORDER BY rowid DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if last.as_ref().is_some_and(|(s, _, _)| *s >= seq) {
            return Ok(None);
        }
        // The tail since the last head must link to it, entry by entry.
        let (from_seq, mut prev) = match &last {
            Some((s, h, _)) => (*s, h.clone()),
            None => (0, GENESIS.to_string()),
        };
        {
            let mut st = tx.prepare(
                "SELECT seq, at, actor, action, target, details, prev_hash, hash, mac FROM audit_log
                 WHERE seq > ?1 ORDER BY seq",
            )?;
            if from_seq > 0 {
                let at: Option<String> = tx
                    .query_row(
                        "SELECT hash FROM audit_log WHERE seq = ?1",
                        [from_seq],
                        |r| r.get(0),
                    )
                    .optional()?;
                if at.as_deref() != Some(prev.as_str()) {
                    return Err(CatalogError::Invalid {
                        field: "audit_log",
                        reason: format!("entry {from_seq} differs from its signed head: history rewritten, not signing"),
                    });
                }
            }
            for (expect, e) in (from_seq + 1..).zip(st.query_map([from_seq], audit_row)?) {
                let e = e?;
                let h = audit::entry_hash(
                    e.seq,
                    e.at_ms,
                    &e.actor,
                    &e.action,
                    &e.target,
                    &e.details,
                    &e.prev_hash,
                );
                if e.seq != expect || e.prev_hash != prev || h != e.hash {
                    return Err(CatalogError::Invalid {
                        field: "audit_log",
                        reason: format!(
                            "entry {} does not chain to the last signed head: not signing",
                            e.seq
                        ),
                    });
                }
                prev = e.hash;
            }
        }
        // Entries written since the last head by a process without the audit key are
        // keyed now (the late MAC, told apart by `audit verify`): the tail was just
        // checked to chain to the last head.
        if let Some(k) = &key {
            let keyed_from: Option<i64> = tx.query_row(
                "SELECT MIN(seq) FROM audit_log WHERE action = ?1",
                [audit::KEYED_ACTION],
                |r| r.get(0),
            )?;
            if let Some(kf) = keyed_from {
                let late: Vec<(i64, String)> = {
                    let mut st = tx.prepare(
                        "SELECT seq, hash FROM audit_log WHERE seq > ?1 AND seq >= ?2 AND mac IS NULL",
                    )?;
                    let r = st.query_map(params![from_seq, kf], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    r.collect::<rusqlite::Result<_>>()?
                };
                for (s, h) in late {
                    tx.execute(
                        "UPDATE audit_log SET mac = ?2 WHERE seq = ?1",
                        params![s, audit::entry_mac_late(k.as_bytes(), s, &h)],
                    )?;
                }
            }
        }
        let max_ordinal: Option<i64> =
            tx.query_row("SELECT MAX(ordinal) FROM audit_heads", [], |r| r.get(0))?;
        let ordinal = max_ordinal.unwrap_or(0) + 1;
        let counter = hs.counter.increment().map_err(|e| CatalogError::Invalid {
            field: "audit_counter",
            reason: format!("{}: {e}", hs.counter.describe()),
        })? as i64;
        let sig = hs.key.sign(&audit::head_message_v2(
            seq,
            &hash,
            UnixMs(now_ms),
            ordinal,
            counter,
        ));
        tx.execute(
            "INSERT INTO audit_heads (seq, at, hash, key_id, public_key, signature, ordinal, counter) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![seq, now_ms, hash, hs.key.key_id(), hex::encode(hs.key.public_key()), hex::encode(sig), ordinal, counter],
        )?;
        tx.commit()?;
        Ok(Some(seq))
    }

    /// Place a legal hold; audited in the same transaction. Returns the hold id.
    pub fn add_hold(
        &mut self,
        target: &HoldTarget,
        reason: &str,
        operator: &str,
        now_ms: i64,
    ) -> Result<i64, CatalogError> {
        if reason.trim().is_empty() || operator.trim().is_empty() {
            return Err(CatalogError::Invalid {
                field: "hold",
                reason: "a reason and an operator are required".into(),
            });
        }
        let (value, from, to) = match target {
            HoldTarget::Recording(v) | HoldTarget::Call(v) => (Some(v.clone()), None, None),
            HoldTarget::Participant(p) => {
                crate::lifecycle::pattern::check(p).map_err(|m| CatalogError::Invalid {
                    field: "participant",
                    reason: m,
                })?;
                (Some(p.clone()), None, None)
            }
            HoldTarget::Window { from, to } => {
                if from > to {
                    return Err(CatalogError::Invalid {
                        field: "window",
                        reason: "start after end".into(),
                    });
                }
                (None, Some(from.as_millis()), Some(to.as_millis()))
            }
        };
        let key = self.audit_key.clone();
        let tx = self.write_tx()?;
        if let HoldTarget::Recording(id) = target {
            if super::recording_state(&tx, id)?.is_none() {
                return Err(CatalogError::NotFound(id.clone()));
            }
        }
        tx.execute(
            "INSERT INTO holds (kind, value, from_at, to_at, reason, operator, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![target.kind(), value, from, to, reason, operator, now_ms],
        )?;
        let id = tx.last_insert_rowid();
        let details = serde_json::json!({
            "kind": target.kind(), "value": value,
            "from": from.map(ts), "to": to.map(ts), "reason": reason,
        });
        append_audit(
            &tx,
            key.as_deref(),
            now_ms,
            operator,
            "hold.add",
            &format!("hold:{id}"),
            &details,
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Release a hold (only explicitly, audited). Fails if unknown or already released.
    pub fn release_hold(
        &mut self,
        id: i64,
        operator: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        if reason.trim().is_empty() {
            return Err(CatalogError::Invalid {
                field: "release",
                reason: "a reason is required".into(),
            });
        }
        let key = self.audit_key.clone();
        let tx = self.write_tx()?;
        let n = tx.execute(
            "UPDATE holds SET released_at = ?2, released_by = ?3, release_reason = ?4
             WHERE id = ?1 AND released_at IS NULL",
            params![id, now_ms, operator, reason],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!("active hold {id}")));
        }
        append_audit(
            &tx,
            key.as_deref(),
            now_ms,
            operator,
            "hold.release",
            &format!("hold:{id}"),
            &serde_json::json!({ "reason": reason }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Holds (active only unless `all`), with how many recordings each covers now.
    pub fn holds(&self, all: bool, now_ms: i64) -> Result<Vec<HoldRow>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, kind, value, from_at, to_at, reason, operator, created_at, released_at,
                 released_by, release_reason
             FROM holds WHERE ?1 OR released_at IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([all], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, value, from, to, reason, operator, created, released, by, why) = row?;
            let recordings = match hold_target(&kind, value.clone(), from, to) {
                Some(t) if released.is_none() => self.count_covered(&t, now_ms)?,
                _ => 0,
            };
            out.push(HoldRow {
                id,
                kind,
                value,
                from: from.map(ts),
                to: to.map(ts),
                reason,
                operator,
                created: ts(created),
                released: released.map(ts),
                released_by: by,
                release_reason: why,
                recordings,
            });
        }
        Ok(out)
    }

    fn count_covered(&self, t: &HoldTarget, now_ms: i64) -> Result<u64, CatalogError> {
        let n: i64 = match t {
            HoldTarget::Recording(id) => self.conn.query_row("SELECT COUNT(*) FROM recordings WHERE id = ?1", [id], |r| r.get(0))?,
            HoldTarget::Call(c) => self.conn.query_row(
                "SELECT COUNT(*) FROM recordings WHERE call_id = ?1 OR session_id = ?1", [c], |r| r.get(0))?,
            HoldTarget::Participant(p) => self.conn.query_row(
                "SELECT COUNT(DISTINCT recording_id) FROM (SELECT recording_id FROM participants WHERE aor GLOB ?1 OR number GLOB ?1 UNION SELECT recording_id FROM participant_aliases WHERE kind = 'aor' AND (value GLOB ?1 OR number GLOB ?1))", [p], |r| r.get(0))?,
            HoldTarget::Window { from, to } => self.conn.query_row(
                "SELECT COUNT(*) FROM recordings WHERE started_at <= ?2 AND COALESCE(ended_at, ?3) >= ?1",
                params![from.as_millis(), to.as_millis(), now_ms], |r| r.get(0))?,
        };
        Ok(n.max(0) as u64)
    }

    /// The call direction the rules derived for a recording (`None`: not derived, or no
    /// such recording).
    pub fn direction(&self, id: &str) -> Result<Option<String>, CatalogError> {
        use rusqlite::OptionalExtension as _;
        Ok(self
            .conn
            .query_row(
                "SELECT direction FROM recordings WHERE id = ?1",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Active holds covering a recording (empty = not held).
    pub fn holds_covering(&self, id: &str, now_ms: i64) -> Result<Vec<i64>, CatalogError> {
        let holds = active_holds(&self.conn)?;
        Ok(match facts(&self.conn, id)? {
            Some(f) => covering(&holds, &f, now_ms),
            None => Vec::new(),
        })
    }

    /// Recordings whose expiry is at or before `now_ms` (earliest first, at most `limit`),
    /// as planner candidates with their hold and archive state.
    pub fn expired_candidates(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Candidate>, CatalogError> {
        let ids: Vec<String> = {
            let mut st = self.conn.prepare_cached(
                "SELECT id FROM recordings WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 AND state != 'recording' ORDER BY expires_at, id LIMIT ?2",
            )?;
            let r = st.query_map(params![now_ms, limit], |r| r.get(0))?;
            r.collect::<rusqlite::Result<_>>()?
        };
        let holds = active_holds(&self.conn)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((c, _)) = candidate(&self.conn, &holds, &id, now_ms)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Delete a recording: in one IMMEDIATE transaction (so no hold can be placed
    /// meanwhile) check that `mode` allows it, call `shred` (which must destroy the file's
    /// key and remove it), write the tombstone and the audit entry, and drop the row and
    /// its personal data (participants, metadata, events, tags cascade).
    #[allow(clippy::too_many_arguments)]
    pub fn delete_recording(
        &mut self,
        id: &str,
        mode: DeleteMode,
        detail: Option<&str>,
        actor: &str,
        now_ms: i64,
        local_only: bool,
        shred: impl FnOnce(&RecordingRow) -> Result<(), String>,
    ) -> Result<Tombstone, CatalogError> {
        let key = self.audit_key.clone();
        let tx = self.write_tx()?;
        let holds = active_holds(&tx)?;
        let Some((cand, held_by)) = candidate(&tx, &holds, id, now_ms)? else {
            return Err(CatalogError::NotFound(id.to_string()));
        };
        let verdict = match mode {
            DeleteMode::Expiry => retention::expiry_verdict(&cand, UnixMs(now_ms), local_only),
            DeleteMode::Manual => retention::manual_delete_verdict(&cand, local_only),
            DeleteMode::MinDuration | DeleteMode::Unconfirmed => {
                if cand.held {
                    Err(KeepReason::Held)
                } else if cand.recording {
                    Err(KeepReason::InProgress)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(why) = verdict {
            let msg =
                match why {
                    KeepReason::Held => {
                        format!(
                    "under legal hold ({}); release the hold first (`branchrec hold release`)",
                    held_by.iter().map(|h| format!("hold {h}")).collect::<Vec<_>>().join(", ")
                )
                    }
                    other => other.as_str().to_string(),
                };
            return Err(CatalogError::Protected {
                id: id.to_string(),
                reason: msg,
            });
        }
        let raw = tx.query_row(
            &format!(
                "SELECT {} FROM recordings WHERE id = ?1",
                super::RECORDING_COLUMNS
            ),
            [id],
            RawRecording::from_row,
        )?;
        let row = raw.parse()?;
        let (class, expires): (Option<String>, Option<i64>) = tx.query_row(
            "SELECT retention_class, expires_at FROM recordings WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        shred(&row).map_err(|e| CatalogError::Invalid {
            field: "file",
            reason: format!("shredding failed: {e}"),
        })?;
        // No Call-ID or other personal data: the audit log outlives the recording.
        let details = serde_json::json!({
            "reason": mode.as_str(), "detail": detail, "file_sha256": row.file_sha256,
            "retention_class": class,
        });
        let seq = append_audit(
            &tx,
            key.as_deref(),
            now_ms,
            actor,
            "recording.delete",
            id,
            &details,
        )?;
        tx.execute(
            "INSERT INTO tombstones (recording_id, started_at, ended_at,
                 duration_ms, file_sha256, file_bytes, retention_class, expires_at, deleted_at,
                 reason, detail, actor, audit_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                id,
                row.started_at_ms,
                row.ended_at_ms,
                row.duration_ms.map(|d| d as i64),
                row.file_sha256,
                row.file_bytes.map(|b| b as i64),
                class,
                expires,
                now_ms,
                mode.as_str(),
                detail,
                actor,
                seq
            ],
        )?;
        tx.execute("DELETE FROM recordings WHERE id = ?1", [id])?;
        tx.commit()?;
        self.scrub_wal();
        Ok(Tombstone {
            recording_id: id.to_string(),
            start: ts(row.started_at_ms),
            end: row.ended_at_ms.map(ts),
            duration_ms: row.duration_ms.map(|d| d as i64),
            file_sha256: row.file_sha256,
            file_bytes: row.file_bytes.map(|b| b as i64),
            retention_class: class,
            expires: expires.map(ts),
            deleted: ts(now_ms),
            reason: mode.as_str().to_string(),
            detail: detail.map(str::to_string),
            actor: actor.to_string(),
            audit_seq: seq,
        })
    }

    /// Tombstones, newest deletion first.
    pub fn tombstones(&self, limit: Option<u32>) -> Result<Vec<Tombstone>, CatalogError> {
        let mut st = self.conn.prepare_cached(
            "SELECT recording_id, started_at, ended_at, duration_ms, file_sha256,
                 file_bytes, retention_class, expires_at, deleted_at, reason, detail, actor, audit_seq
             FROM tombstones ORDER BY deleted_at DESC, recording_id LIMIT ?1",
        )?;
        let rows = st.query_map([limit.map_or(-1, i64::from)], |r| {
            Ok(Tombstone {
                recording_id: r.get(0)?,
                start: ts(r.get(1)?),
                end: r.get::<_, Option<i64>>(2)?.map(ts),
                duration_ms: r.get(3)?,
                file_sha256: r.get(4)?,
                file_bytes: r.get(5)?,
                retention_class: r.get(6)?,
                expires: r.get::<_, Option<i64>>(7)?.map(ts),
                deleted: ts(r.get(8)?),
                reason: r.get(9)?,
                detail: r.get(10)?,
                actor: r.get(11)?,
                audit_seq: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Counts for `retention status`.
    pub fn lifecycle_counts(&self, now_ms: i64) -> Result<LifecycleCounts, CatalogError> {
        let one = |sql: &str| -> Result<u64, CatalogError> {
            Ok(self
                .conn
                .query_row(sql, [now_ms], |r| r.get::<_, i64>(0))?
                .max(0) as u64)
        };
        Ok(LifecycleCounts {
            recordings: one("SELECT COUNT(*) FROM recordings WHERE ?1 IS NOT NULL")?,
            expired: one("SELECT COUNT(*) FROM recordings WHERE expires_at <= ?1")?,
            unarchived: one(
                "SELECT COUNT(*) FROM recordings WHERE archived_at IS NULL AND ?1 IS NOT NULL",
            )?,
            active_holds: one(
                "SELECT COUNT(*) FROM holds WHERE released_at IS NULL AND ?1 IS NOT NULL",
            )?,
            tombstones: one("SELECT COUNT(*) FROM tombstones WHERE ?1 IS NOT NULL")?,
            audit_entries: one("SELECT COUNT(*) FROM audit_log WHERE ?1 IS NOT NULL")?,
        })
    }

    /// Open the catalogue for reading and writing from the CLI (no migration surprises:
    /// the file must exist).
    pub fn open_existing(
        path: &std::path::Path,
        key: &super::CatalogKey,
    ) -> Result<Self, CatalogError> {
        if !path.exists() {
            return Err(CatalogError::Missing(path.to_path_buf()));
        }
        Self::open(path, key)
    }
}
