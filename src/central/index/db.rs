//! PostgreSQL: connection, migrations, and every write of the index. A batch of
//! recordings (or a status document) is written in one transaction together with what it
//! implies (box first seen, heads, alarms, the indexer's positions), so a crash leaves it
//! either indexed or not.

use std::collections::HashMap;

use postgres::{Client, GenericClient, NoTls};

use super::plan::{KnownBox, Quarantined, Reason, RecordingRows, StatusRow, Trust};
use super::IndexError;
use crate::lifecycle::audit::SignedHead;

/// Connect to `conninfo` (libpq syntax: `host=/tmp/pg dbname=central user=central`) and
/// bring the schema up to date.
pub fn connect(conninfo: &str) -> Result<Client, IndexError> {
    let mut c = Client::connect(conninfo, NoTls)?;
    migrate(&mut c)?;
    Ok(c)
}

/// Apply the pending migrations of [`super::schema::MIGRATIONS`], each in a
/// transaction; refuse a database newer than this program. Two indexers starting at once
/// serialise on an advisory lock.
pub fn migrate(c: &mut Client) -> Result<i32, IndexError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(72431401)", &[])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_ms bigint NOT NULL)",
    )?;
    let have: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    let newest = super::schema::MIGRATIONS.last().map_or(0, |m| m.0);
    if have > newest {
        return Err(IndexError::Schema(format!(
            "the database is at schema {have}, this program knows up to {newest}: upgrade branchrec-central"
        )));
    }
    for (v, name, sql) in super::schema::MIGRATIONS {
        if *v <= have {
            continue;
        }
        tx.batch_execute(sql)
            .map_err(|e| IndexError::Schema(format!("migration {v} ({name}): {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
            &[v, name, &super::now_ms()],
        )?;
        tracing::info!(version = v, name, "index schema migrated");
    }
    tx.commit()?;
    Ok(newest)
}

/// A `boxes` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRow {
    /// Box id.
    pub box_id: String,
    /// Site.
    pub site: Option<String>,
    /// `enrolled`, `first_seen`, `none`.
    pub trust: String,
    /// The trusted key.
    pub der: Option<Vec<u8>>,
    /// Its SHA-256.
    pub key_sha256: Option<String>,
    /// First seen.
    pub first_seen_ms: i64,
    /// Enrolled by.
    pub enrolled_by: Option<String>,
    /// A manifest signed by another key was seen.
    pub key_changed: bool,
    /// That key's SHA-256.
    pub changed_key_sha256: Option<String>,
}

/// The box `box_id`, if known.
pub fn get_box(c: &mut impl GenericClient, box_id: &str) -> Result<Option<BoxRow>, IndexError> {
    Ok(c.query_opt(
        "SELECT box_id, site, trust, signing_key_der, signing_key_sha256, first_seen_ms,
                    enrolled_by, key_changed, changed_key_sha256
             FROM boxes WHERE box_id = $1",
        &[&box_id],
    )?
    .map(|r| BoxRow {
        box_id: r.get(0),
        site: r.get(1),
        trust: r.get(2),
        der: r.get(3),
        key_sha256: r.get(4),
        first_seen_ms: r.get(5),
        enrolled_by: r.get(6),
        key_changed: r.get(7),
        changed_key_sha256: r.get(8),
    }))
}

/// The boxes `ids` that are known, by id.
pub fn get_boxes(
    c: &mut impl GenericClient,
    ids: &[String],
) -> Result<HashMap<String, BoxRow>, IndexError> {
    Ok(c.query(
        "SELECT box_id, site, trust, signing_key_der, signing_key_sha256, first_seen_ms,
                    enrolled_by, key_changed, changed_key_sha256
             FROM boxes WHERE box_id = ANY($1)",
        &[&ids],
    )?
    .iter()
    .map(|r| {
        (
            r.get(0),
            BoxRow {
                box_id: r.get(0),
                site: r.get(1),
                trust: r.get(2),
                der: r.get(3),
                key_sha256: r.get(4),
                first_seen_ms: r.get(5),
                enrolled_by: r.get(6),
                key_changed: r.get(7),
                changed_key_sha256: r.get(8),
            },
        )
    })
    .collect())
}

impl BoxRow {
    /// The key manifests are checked with, and how it came to be trusted.
    pub fn known(&self) -> Option<KnownBox> {
        let trust = match self.trust.as_str() {
            "enrolled" => Trust::Enrolled,
            "first_seen" => Trust::FirstSeen,
            _ => return None,
        };
        Some(KnownBox {
            der: self.der.clone()?,
            trust,
        })
    }
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// Make sure `box_id` has a row (trust `none` when new).
pub fn ensure_box(
    c: &mut impl GenericClient,
    box_id: &str,
    site: Option<&str>,
    now: i64,
) -> Result<(), IndexError> {
    c.execute(
        "INSERT INTO boxes (box_id, site, trust, first_seen_ms) VALUES ($1, $2, 'none', $3)
         ON CONFLICT (box_id) DO UPDATE SET site = COALESCE(boxes.site, EXCLUDED.site)",
        &[&box_id, &site, &now],
    )?;
    Ok(())
}

/// Record `der` as the first-seen key of a box that had none (never replaces a key).
/// Returns whether it was recorded (false: another key got there first).
pub fn record_first_seen(
    c: &mut impl GenericClient,
    box_id: &str,
    site: &str,
    der: &[u8],
    now: i64,
) -> Result<bool, IndexError> {
    ensure_box(c, box_id, Some(site), now)?;
    let n = c.execute(
        "UPDATE boxes SET trust = 'first_seen', signing_key_der = $2, signing_key_sha256 = $3
         WHERE box_id = $1 AND trust = 'none'",
        &[&box_id, &der, &sha_hex(der)],
    )?;
    if n == 1 {
        raise_alarm(
            c,
            box_id,
            "first_seen",
            &format!(
                "box {box_id} is not enrolled: its key sha256 {} is trusted on first use until an operator confirms (central enrol)",
                sha_hex(der)
            ),
            now,
        )?;
    }
    Ok(n == 1)
}

/// Flag that a manifest of `box_id` was signed by `der`, not its trusted key.
pub fn flag_key_changed(
    c: &mut impl GenericClient,
    box_id: &str,
    der: &[u8],
    now: i64,
) -> Result<(), IndexError> {
    c.execute(
        "UPDATE boxes SET key_changed = true, changed_key_sha256 = $2, changed_key_seen_ms = $3
         WHERE box_id = $1",
        &[&box_id, &sha_hex(der), &now],
    )?;
    Ok(())
}

/// Register (or re-register) a box's signing key: `trust = enrolled`, the change flag
/// cleared, its quarantined objects and position reset so the next pass verifies them
/// again with this key. Returns the previous row.
pub fn enrol(
    c: &mut Client,
    box_id: &str,
    der: &[u8],
    actor: &str,
    now: i64,
) -> Result<Option<BoxRow>, IndexError> {
    let mut tx = c.transaction()?;
    let before = get_box(&mut tx, box_id)?;
    tx.execute(
        "INSERT INTO boxes (box_id, trust, signing_key_der, signing_key_sha256, first_seen_ms,
                            enrolled_ms, enrolled_by)
         VALUES ($1, 'enrolled', $2, $3, $4, $4, $5)
         ON CONFLICT (box_id) DO UPDATE SET trust = 'enrolled', signing_key_der = $2,
             signing_key_sha256 = $3, enrolled_ms = $4, enrolled_by = $5,
             key_changed = false, changed_key_sha256 = NULL, changed_key_seen_ms = NULL",
        &[&box_id, &der, &sha_hex(der), &now, &actor],
    )?;
    tx.execute(
        "DELETE FROM quarantine WHERE box_id = $1
           AND reason IN ('signature', 'key_changed', 'unknown_box')",
        &[&box_id],
    )?;
    tx.execute(
        "UPDATE index_positions SET start_after = '', updated_ms = $2 WHERE box_id = $1",
        &[&box_id, &now],
    )?;
    tx.execute(
        "DELETE FROM alarms WHERE box_id = $1 AND code IN ('first_seen', 'key_changed', 'unknown_box', 'signature')",
        &[&box_id],
    )?;
    // Recordings indexed under a first-seen key that is the enrolled one become enrolled.
    tx.execute(
        "UPDATE recordings SET trust = 'enrolled' WHERE box_id = $1 AND trust = 'first_seen'
           AND $2 = (SELECT signing_key_sha256 FROM boxes WHERE box_id = $1)",
        &[&box_id, &sha_hex(der)],
    )?;
    tx.commit()?;
    Ok(before)
}

/// Raise (or count again) an alarm; logged.
pub fn raise_alarm(
    c: &mut impl GenericClient,
    box_id: &str,
    code: &str,
    message: &str,
    now: i64,
) -> Result<(), IndexError> {
    tracing::error!(box_id, alarm = code, "index alarm: {message}");
    c.execute(
        "INSERT INTO alarms (box_id, code, message, first_ms, last_ms) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (box_id, code) DO UPDATE SET count = alarms.count + 1,
             message = EXCLUDED.message, last_ms = EXCLUDED.last_ms",
        &[&box_id, &code, &message, &now],
    )?;
    Ok(())
}

/// Quarantine the recording at `key` (`objects_etag` as listed); an indexed recording
/// under that key is marked `integrity = quarantined` and leaves the search results.
pub fn quarantine(
    c: &mut impl GenericClient,
    key: &str,
    box_id: &str,
    qd: &Quarantined,
    objects_etag: &str,
    now: i64,
) -> Result<(), IndexError> {
    c.execute(
        "INSERT INTO quarantine (object_key, box_id, reason, message, objects_etag, first_ms, last_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (object_key) DO UPDATE SET reason = EXCLUDED.reason,
             message = EXCLUDED.message, objects_etag = EXCLUDED.objects_etag,
             last_ms = EXCLUDED.last_ms, seen = quarantine.seen + 1",
        &[&key, &box_id, &qd.reason.as_str(), &qd.message, &objects_etag, &now],
    )?;
    c.execute(
        "UPDATE recordings SET integrity = 'quarantined' WHERE container_key = $1",
        &[&key],
    )?;
    if let (Reason::KeyChanged, Some(d)) = (qd.reason, &qd.seen_key) {
        flag_key_changed(c, box_id, d, now)?;
    }
    raise_alarm(c, box_id, qd.reason.as_str(), &qd.message, now)
}

const REC_COLS: &str = "recording_id, box_id, site, container_key, started_at_ms, ended_at_ms,
    duration_ms, direction, source, state, codec, storage_format, call_id, session_id, tags,
    held, container_bytes, container_sha256, content_sha256, compliance_key_id, trust,
    integrity, objects_etag, indexed_at_ms";

/// Write one verified recording (replacing an earlier version of the same recording:
/// the indexer re-verifies when an object's ETag changed): [`write_recordings`] of one.
pub fn write_recording(
    c: &mut impl GenericClient,
    rows: &RecordingRows,
    now: i64,
) -> Result<(), IndexError> {
    write_recordings(c, std::slice::from_ref(rows), now)
}

/// Write many verified recordings in the caller's transaction: the indexer's row-writing
/// path (one batch per listing page) and the bench's bulk path. An earlier version of a
/// recording (same id or same container key) is replaced, as is a quarantine entry of
/// its key; inside the batch the last version of a recording wins, as if written one
/// after the other. Constant round trips per batch: one DELETE, one COPY per table, one
/// DELETE of quarantine entries.
pub fn write_recordings(
    c: &mut impl GenericClient,
    batch: &[RecordingRows],
    now: i64,
) -> Result<(), IndexError> {
    use std::collections::HashSet;
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut keep: Vec<&RecordingRows> = batch
        .iter()
        .rev()
        .filter(|r| {
            let a = ids.insert(r.recording.recording_id.as_str());
            let b = keys.insert(r.recording.container_key.as_str());
            a && b
        })
        .collect();
    keep.reverse();
    if keep.is_empty() {
        return Ok(());
    }
    let id_v: Vec<&str> = keep
        .iter()
        .map(|r| r.recording.recording_id.as_str())
        .collect();
    let key_v: Vec<&str> = keep
        .iter()
        .map(|r| r.recording.container_key.as_str())
        .collect();
    c.execute(
        "DELETE FROM recordings WHERE recording_id = ANY($1::text[]::uuid[])
            OR container_key = ANY($2::text[])",
        &[&id_v, &key_v],
    )?;
    for r in &keep {
        if !r.recording.hold_cases.is_empty() {
            // Before the rows: the trigger `recordings_central_held` then sees them.
            add_box_reported_cases(c, &r.recording, now)?;
        }
    }
    copy_rows(c, &keep, now)?;
    c.execute(
        "DELETE FROM quarantine WHERE object_key = ANY($1::text[])",
        &[&key_v],
    )?;
    Ok(())
}

/// The central cases the box says hold this recording (a pattern it holds for the case
/// covers a recording made later) join the case while it is active; a case released
/// centrally is not revived by a document written before the release.
fn add_box_reported_cases(
    c: &mut impl GenericClient,
    r: &super::plan::RecordingRow,
    now: i64,
) -> Result<(), IndexError> {
    c.execute(
        "INSERT INTO central_holds (recording_id, box_id, container_key, case_id, reason,
           operator, matched_by, placed_ms)
         SELECT $1::text::uuid, $2, $3, k.case_id, k.reason, k.operator,
                'held by the box for this case', $5
         FROM central_cases k WHERE k.case_id = ANY($4) AND k.released_ms IS NULL
         ON CONFLICT (recording_id, case_id) DO NOTHING",
        &[
            &r.recording_id,
            &r.box_id,
            &r.container_key,
            &r.hold_cases,
            &now,
        ],
    )?;
    Ok(())
}

/// Store published heads of `box_id` (verified with `der` when there is one) and raise
/// `audit_gap` / `audit_fork` for what the published history shows around them.
pub fn store_heads(
    c: &mut impl GenericClient,
    box_id: &str,
    der: Option<&[u8]>,
    heads: &[SignedHead],
    source: &str,
    now: i64,
) -> Result<usize, IndexError> {
    let checked: Vec<(&str, &SignedHead, bool)> = heads
        .iter()
        .map(|h| {
            (
                box_id,
                h,
                der.is_some_and(|d| super::plan::head_verifies(d, h)),
            )
        })
        .collect();
    store_checked_heads(c, &checked, der.is_some(), source, now)
}

/// [`store_heads`] for many boxes with the signatures already checked (`(box, head,
/// verifies)`, by the indexer's workers; `keyed`: a trusted key was there to check
/// with): one INSERT for all, one look at the boxes' histories around the new heads
/// (the new ordinals and their neighbours: a gap or fork elsewhere was raised when its
/// heads were new).
pub fn store_checked_heads(
    c: &mut impl GenericClient,
    heads: &[(&str, &SignedHead, bool)],
    keyed: bool,
    source: &str,
    now: i64,
) -> Result<usize, IndexError> {
    use std::collections::BTreeMap;
    if heads.is_empty() {
        return Ok(0);
    }
    let mut bad: BTreeMap<&str, usize> = BTreeMap::new();
    for (b, _, ok) in heads {
        if keyed && !ok {
            *bad.entry(b).or_default() += 1;
        }
    }
    let bx: Vec<&str> = heads.iter().map(|(b, _, _)| *b).collect();
    let seq: Vec<i64> = heads.iter().map(|(_, h, _)| h.seq).collect();
    let hash: Vec<&str> = heads.iter().map(|(_, h, _)| h.hash.as_str()).collect();
    let at: Vec<i64> = heads.iter().map(|(_, h, _)| h.at_ms.0).collect();
    let kid: Vec<&str> = heads.iter().map(|(_, h, _)| h.key_id.as_str()).collect();
    let sig: Vec<&str> = heads.iter().map(|(_, h, _)| h.signature.as_str()).collect();
    let ord: Vec<Option<i64>> = heads.iter().map(|(_, h, _)| h.ordinal).collect();
    let ctr: Vec<Option<i64>> = heads.iter().map(|(_, h, _)| h.counter).collect();
    let ok: Vec<bool> = heads.iter().map(|(_, _, ok)| *ok).collect();
    let new = c.query(
        "INSERT INTO box_audit_heads (box_id, seq, hash, at_ms, key_id, signature, ordinal,
           counter, verified, source, seen_ms)
         SELECT b, s, h, a, k, g, o, n, v, $10, $11
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[],
                     $7::int8[], $8::int8[], $9::bool[]) AS t(b, s, h, a, k, g, o, n, v)
         ON CONFLICT DO NOTHING RETURNING box_id, ordinal",
        &[
            &bx, &seq, &hash, &at, &kid, &sig, &ord, &ctr, &ok, &source, &now,
        ],
    )?;
    for (b, n) in bad {
        raise_alarm(
            c,
            b,
            "audit_head_signature",
            &format!("{n} published audit head(s) of {b} do not verify with its trusted key"),
            now,
        )?;
    }
    // Per box, the range of the new v2 ordinals.
    let mut range: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &new {
        if let Some(o) = r.get::<_, Option<i64>>(1) {
            let e = range.entry(r.get(0)).or_insert((o, o));
            *e = (e.0.min(o), e.1.max(o));
        }
    }
    if !range.is_empty() {
        let b: Vec<&str> = range.keys().map(String::as_str).collect();
        let lo: Vec<i64> = range.values().map(|r| r.0).collect();
        let hi: Vec<i64> = range.values().map(|r| r.1).collect();
        let mut hist: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for r in c.query(
            "SELECT t.b, h.ordinal, h.hash
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS t(b, lo, hi),
             LATERAL (SELECT ordinal, hash FROM box_audit_heads
                      WHERE box_id = t.b
                        AND ordinal >= COALESCE((SELECT max(ordinal) FROM box_audit_heads
                                                 WHERE box_id = t.b AND ordinal < t.lo), t.lo)
                        AND ordinal <= COALESCE((SELECT min(ordinal) FROM box_audit_heads
                                                 WHERE box_id = t.b AND ordinal > t.hi), t.hi)) h
             ORDER BY 1, 2, 3",
            &[&b, &lo, &hi],
        )? {
            hist.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
        }
        for (b, h) in hist {
            for (code, msg) in super::plan::head_problems(&h) {
                raise_alarm(c, &b, code, &format!("{b}: {msg}"), now)?;
            }
        }
    }
    Ok(new.len())
}

/// Store a status document (a new ETag) of a box; false if that version was stored.
pub fn store_status(
    c: &mut impl GenericClient,
    s: &StatusRow,
    etag: &str,
    now: i64,
) -> Result<bool, IndexError> {
    ensure_box(c, &s.box_id, s.site.as_deref(), now)?;
    let n = c.execute(
        "INSERT INTO box_status (box_id, etag, generated_at, received_ms, pending, uploaded,
           failed, pending_bytes, oldest_pending_age_s, last_upload_at, alarms, document)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        &[
            &s.box_id,
            &etag,
            &s.generated_at,
            &now,
            &s.pending,
            &s.uploaded,
            &s.failed,
            &s.pending_bytes,
            &s.oldest_pending_age_s,
            &s.last_upload_at,
            &s.alarms,
            &s.document,
        ],
    )?;
    Ok(n == 1)
}

/// Whether this status version is stored.
pub fn has_status(
    c: &mut impl GenericClient,
    box_id: &str,
    etag: &str,
) -> Result<bool, IndexError> {
    Ok(c.query_opt(
        "SELECT 1 FROM box_status WHERE box_id = $1 AND etag = $2",
        &[&box_id, &etag],
    )?
    .is_some())
}

/// What the index already holds for these container keys: `objects_etag` of the
/// indexed recording and of the quarantine row.
#[derive(Debug, Default)]
pub struct Known {
    /// Indexed: key → objects_etag.
    pub indexed: HashMap<String, String>,
    /// Quarantined: key → objects_etag.
    pub quarantined: HashMap<String, String>,
}

/// Look up many container keys at once.
pub fn known(c: &mut impl GenericClient, keys: &[String]) -> Result<Known, IndexError> {
    let mut k = Known::default();
    if keys.is_empty() {
        return Ok(k);
    }
    for r in c.query(
        "SELECT container_key, objects_etag FROM recordings WHERE container_key = ANY($1)",
        &[&keys],
    )? {
        k.indexed.insert(r.get(0), r.get(1));
    }
    for r in c.query(
        "SELECT object_key, objects_etag FROM quarantine WHERE object_key = ANY($1)",
        &[&keys],
    )? {
        k.quarantined.insert(r.get(0), r.get(1));
    }
    Ok(k)
}

/// Every box prefix's persisted StartAfter.
pub fn positions(c: &mut impl GenericClient) -> Result<HashMap<String, String>, IndexError> {
    Ok(
        c.query("SELECT box_prefix, start_after FROM index_positions", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

/// The persisted StartAfter of a box prefix ("" = from the start).
pub fn position(c: &mut impl GenericClient, box_prefix: &str) -> Result<String, IndexError> {
    Ok(c.query_opt(
        "SELECT start_after FROM index_positions WHERE box_prefix = $1",
        &[&box_prefix],
    )?
    .map(|r| r.get(0))
    .unwrap_or_default())
}

/// Persist a box prefix's StartAfter (never moves backwards except by enrol / rescan).
pub fn set_position(
    c: &mut impl GenericClient,
    box_prefix: &str,
    box_id: &str,
    start_after: &str,
    now: i64,
) -> Result<(), IndexError> {
    c.execute(
        "INSERT INTO index_positions (box_prefix, box_id, start_after, updated_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (box_prefix) DO UPDATE SET start_after = GREATEST(index_positions.start_after, EXCLUDED.start_after),
             updated_ms = EXCLUDED.updated_ms",
        &[&box_prefix, &box_id, &start_after, &now],
    )?;
    Ok(())
}

// ---- COPY text format. ----

fn copy_text(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn pg_array(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Bulk-write many **new** verified recordings in one transaction (the bench's fill;
/// also usable for an initial load into an empty index): the COPY of the indexer's
/// [`write_recordings`] without its look for earlier versions, rows built by the same
/// [`super::plan::rows_from_document`]. A recording already indexed fails the batch
/// (unique key).
pub fn copy_recordings(
    c: &mut Client,
    batch: &[RecordingRows],
    now: i64,
) -> Result<(), IndexError> {
    let mut tx = c.transaction()?;
    let all: Vec<&RecordingRows> = batch.iter().collect();
    copy_rows(&mut tx, &all, now)?;
    tx.commit()?;
    Ok(())
}

/// One COPY text-format line of `fields`.
fn copy_line(out: &mut String, fields: &[Option<&str>]) {
    for (k, v) in fields.iter().enumerate() {
        if k > 0 {
            out.push('\t');
        }
        copy_text(out, *v);
    }
    out.push('\n');
}

/// COPY the rows of `batch` (new recordings) into recordings, recording_documents,
/// participants and holds.
fn copy_rows(
    tx: &mut impl GenericClient,
    batch: &[&RecordingRows],
    now: i64,
) -> Result<(), IndexError> {
    use std::io::Write as _;
    let mut rec = String::new();
    let mut doc = String::new();
    let mut par = String::new();
    let mut hld = String::new();
    let now_s = now.to_string();
    for rows in batch.iter().copied() {
        let r = &rows.recording;
        let opt_i = |v: Option<i64>| v.map(|x| x.to_string());
        let (start, end, dur) = (
            r.started_at_ms.to_string(),
            opt_i(r.ended_at_ms),
            opt_i(r.duration_ms),
        );
        let (tags, bytes) = (pg_array(&r.tags), r.container_bytes.to_string());
        copy_line(
            &mut rec,
            &[
                Some(r.recording_id.as_str()),
                Some(r.box_id.as_str()),
                Some(r.site.as_str()),
                Some(r.container_key.as_str()),
                Some(start.as_str()),
                end.as_deref(),
                dur.as_deref(),
                r.direction.as_deref(),
                r.source.as_deref(),
                r.state.as_deref(),
                r.codec.as_deref(),
                r.storage_format.as_deref(),
                r.call_id.as_deref(),
                r.session_id.as_deref(),
                Some(tags.as_str()),
                Some(if r.held { "t" } else { "f" }),
                Some(bytes.as_str()),
                Some(r.container_sha256.as_str()),
                Some(r.content_sha256.as_str()),
                Some(r.compliance_key_id.as_str()),
                Some(r.trust.as_str()),
                Some("ok"),
                Some(r.objects_etag.as_str()),
                Some(now_s.as_str()),
            ],
        );
        copy_line(
            &mut doc,
            &[
                Some(r.recording_id.as_str()),
                Some(r.document.to_string().as_str()),
            ],
        );
        for p in &rows.participants {
            let ch = p.channel.map(|x| x.to_string());
            let j = p.joined_at_ms.map(|x| x.to_string());
            let l = p.left_at_ms.map(|x| x.to_string());
            copy_line(
                &mut par,
                &[
                    Some(r.recording_id.as_str()),
                    Some(p.participant_id.as_str()),
                    p.name.as_deref(),
                    p.aor.as_deref(),
                    p.number.as_deref(),
                    j.as_deref(),
                    l.as_deref(),
                    ch.as_deref(),
                ],
            );
        }
        if r.held {
            copy_line(
                &mut hld,
                &[
                    Some(r.recording_id.as_str()),
                    Some("box"),
                    Some("held on the box when archived"),
                    Some(now_s.as_str()),
                ],
            );
        }
    }
    for (sql, data) in [
        (format!("COPY recordings ({REC_COLS}) FROM STDIN"), &rec),
        (
            "COPY recording_documents (recording_id, document) FROM STDIN".to_string(),
            &doc,
        ),
        (
            "COPY participants (recording_id, participant_id, name, aor, number, joined_at_ms, left_at_ms, channel) FROM STDIN".to_string(),
            &par,
        ),
        (
            "COPY holds (recording_id, source, reason, created_ms) FROM STDIN".to_string(),
            &hld,
        ),
    ] {
        if data.is_empty() {
            continue;
        }
        let mut w = tx.copy_in(sql.as_str())?;
        w.write_all(data.as_bytes())
            .map_err(|e| IndexError::Schema(format!("COPY: {e}")))?;
        w.finish()?;
    }
    Ok(())
}
