//! Reading the index: `search` (filters to one SQL query on indexed columns), `show`
//! (everything about one recording), `fleet` (per box: status, backlog, alarms,
//! quarantine).

use postgres::types::ToSql;
use postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use super::IndexError;

/// A search. Participant patterns: exact, or a prefix with a trailing `*`; one that
/// looks like a number (`+44 20 7946*`) is compared with the digits of the
/// participants' numbers, anything else with AoRs and names (case-insensitive).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    /// Every pattern must match some participant of the recording.
    pub participant: Vec<String>,
    /// AoR, exact or prefix (`sip:+4420*`), case-insensitive.
    pub aor: Option<String>,
    /// Box.
    pub box_id: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Started at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Started before (unix ms).
    pub until_ms: Option<i64>,
    /// Minimum duration (ms).
    pub min_duration_ms: Option<i64>,
    /// Maximum duration (ms).
    pub max_duration_ms: Option<i64>,
    /// Direction.
    pub direction: Option<String>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// Held or not.
    pub held: Option<bool>,
    /// Only these sites (a supervisor's scope in the web console); empty: any.
    pub sites_in: Vec<String>,
    /// At most this many (newest first).
    pub limit: i64,
    /// Skip this many (paging).
    pub offset: i64,
    /// Include recordings quarantined after indexing (an object changed).
    pub include_quarantined: bool,
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Recording id.
    pub recording_id: String,
    /// Box.
    pub box_id: String,
    /// Site.
    pub site: String,
    /// Start (unix ms).
    pub started_at_ms: i64,
    /// Start (RFC 3339).
    pub start: String,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// Direction.
    pub direction: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Held.
    pub held: bool,
    /// `enrolled` / `first_seen`.
    pub trust: String,
    /// `ok` / `quarantined`.
    pub integrity: String,
    /// Container key.
    pub container_key: String,
    /// Participants (participant id, name, AoR).
    pub participants: Vec<HitParticipant>,
}

/// A participant of a hit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HitParticipant {
    /// Participant id.
    pub participant_id: String,
    /// Name.
    pub name: Option<String>,
    /// AoR.
    pub aor: Option<String>,
}

/// Escape LIKE metacharacters (PostgreSQL's default escape is the backslash).
fn like_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// How a participant pattern is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Digits of a number (exact, or prefix).
    Number(String, bool),
    /// Lower-cased AoR or name (exact, or prefix).
    Text(String, bool),
}

/// Classify a participant pattern.
pub fn pattern(p: &str) -> Result<Pattern, IndexError> {
    let p = p.trim();
    let (body, prefix) = match p.strip_suffix('*') {
        Some(b) => (b, true),
        None => (p, false),
    };
    if body.contains('*') || body.contains('?') {
        return Err(IndexError::Filter(format!(
            "{p:?}: only a trailing * (prefix) is supported"
        )));
    }
    if body.is_empty() {
        return Err(IndexError::Filter("empty participant pattern".into()));
    }
    let numberish = body
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || (c == '+' && i == 0) || "-.() ".contains(c));
    if numberish {
        let digits: String = body.chars().filter(|c| c.is_ascii_digit()).collect();
        if digits.len() < 2 {
            return Err(IndexError::Filter(format!("{p:?}: too few digits")));
        }
        return Ok(Pattern::Number(digits, prefix));
    }
    Ok(Pattern::Text(body.to_lowercase(), prefix))
}

struct Sql {
    conds: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync>>,
}

impl Sql {
    fn p(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }
}

/// The SQL and parameters of `f` (exposed for EXPLAIN in the bench).
pub fn build(f: &Filter) -> Result<(String, Vec<Box<dyn ToSql + Sync>>), IndexError> {
    let mut q = Sql {
        conds: Vec::new(),
        params: Vec::new(),
    };
    for p in &f.participant {
        let c = match pattern(p)? {
            Pattern::Number(d, false) => format!("number = {}", q.p(d)),
            Pattern::Number(d, true) => format!("number LIKE {}", q.p(like_escape(&d) + "%")),
            Pattern::Text(t, false) => {
                let a = q.p(t);
                format!("(lower(aor) = {a} OR lower(name) = {a})")
            }
            Pattern::Text(t, true) => {
                let a = q.p(like_escape(&t) + "%");
                format!("(lower(aor) LIKE {a} OR lower(name) LIKE {a})")
            }
        };
        q.conds.push(format!(
            "r.recording_id IN (SELECT recording_id FROM participants WHERE {c})"
        ));
    }
    if let Some(a) = &f.aor {
        let a = a.trim().to_lowercase();
        let c = match a.strip_suffix('*') {
            Some(b) => format!("lower(aor) LIKE {}", q.p(like_escape(b) + "%")),
            None => format!("lower(aor) = {}", q.p(a)),
        };
        q.conds.push(format!(
            "r.recording_id IN (SELECT recording_id FROM participants WHERE {c})"
        ));
    }
    if let Some(b) = &f.box_id {
        let c = format!("r.box_id = {}", q.p(b.clone()));
        q.conds.push(c);
    }
    if let Some(s) = &f.site {
        let c = format!("r.site = {}", q.p(s.clone()));
        q.conds.push(c);
    }
    if !f.sites_in.is_empty() {
        let c = format!("r.site = ANY({}::text[])", q.p(f.sites_in.clone()));
        q.conds.push(c);
    }
    if let Some(t) = f.since_ms {
        let c = format!("r.started_at_ms >= {}", q.p(t));
        q.conds.push(c);
    }
    if let Some(t) = f.until_ms {
        let c = format!("r.started_at_ms < {}", q.p(t));
        q.conds.push(c);
    }
    if let Some(d) = f.min_duration_ms {
        let c = format!("r.duration_ms >= {}", q.p(d));
        q.conds.push(c);
    }
    if let Some(d) = f.max_duration_ms {
        let c = format!("r.duration_ms <= {}", q.p(d));
        q.conds.push(c);
    }
    if let Some(d) = &f.direction {
        let c = format!("r.direction = {}", q.p(d.clone()));
        q.conds.push(c);
    }
    if !f.tags.is_empty() {
        let c = format!("r.tags @> {}::text[]", q.p(f.tags.clone()));
        q.conds.push(c);
    }
    match f.held {
        Some(true) => q.conds.push("r.held".into()),
        Some(false) => q.conds.push("NOT r.held".into()),
        None => {}
    }
    if !f.include_quarantined {
        q.conds.push("r.integrity = 'ok'".into());
    }
    let limit = q.p(f.limit.clamp(1, 100_000));
    let offset = q.p(f.offset.max(0));
    let where_ = if q.conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", q.conds.join(" AND "))
    };
    Ok((
        format!(
            "SELECT r.recording_id::text, r.box_id, r.site, r.started_at_ms, r.duration_ms,
                    r.direction, r.tags, r.held, r.trust, r.integrity, r.container_key
             FROM recordings r {where_} ORDER BY r.started_at_ms DESC, r.recording_id LIMIT {limit} OFFSET {offset}"
        ),
        q.params,
    ))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Run a search.
pub fn search(c: &mut impl GenericClient, f: &Filter) -> Result<Vec<Hit>, IndexError> {
    let (sql, params) = build(f)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
    let mut hits: Vec<Hit> = c
        .query(sql.as_str(), &refs)?
        .iter()
        .map(|r| Hit {
            recording_id: r.get(0),
            box_id: r.get(1),
            site: r.get(2),
            started_at_ms: r.get(3),
            start: rfc3339(r.get(3)),
            duration_ms: r.get(4),
            direction: r.get(5),
            tags: r.get(6),
            held: r.get(7),
            trust: r.get(8),
            integrity: r.get(9),
            container_key: r.get(10),
            participants: Vec::new(),
        })
        .collect();
    if hits.is_empty() {
        return Ok(hits);
    }
    let ids: Vec<String> = hits.iter().map(|h| h.recording_id.clone()).collect();
    let rows = c.query(
        "SELECT recording_id::text, participant_id, name, aor FROM participants
         WHERE recording_id = ANY($1::text[]::uuid[]) ORDER BY participant_id, aor",
        &[&ids],
    )?;
    for r in rows {
        let id: String = r.get(0);
        let p = HitParticipant {
            participant_id: r.get(1),
            name: r.get(2),
            aor: r.get(3),
        };
        if let Some(h) = hits.iter_mut().find(|h| h.recording_id == id) {
            if !h.participants.contains(&p) {
                h.participants.push(p);
            }
        }
    }
    Ok(hits)
}

/// The hits as a table.
pub fn table(hits: &[Hit]) -> String {
    let mut out = format!(
        "{:<36}  {:<24}  {:>7}  {:<12}  {:<10}  {:<8}  {}\n",
        "RECORDING", "START", "DUR(s)", "BOX", "SITE", "FLAGS", "PARTICIPANTS"
    );
    for h in hits {
        let mut flags = Vec::new();
        if h.held {
            flags.push("HELD");
        }
        if h.trust != "enrolled" {
            flags.push("UNENROLLED");
        }
        if h.integrity != "ok" {
            flags.push("QUARANTINED");
        }
        let parts: Vec<String> = h
            .participants
            .iter()
            .map(|p| match (&p.name, &p.aor) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.clone(),
                (Some(n), None) => n.clone(),
                (None, None) => p.participant_id.clone(),
            })
            .collect();
        let mut extra = String::new();
        if !h.tags.is_empty() {
            extra = format!(" [{}]", h.tags.join(","));
        }
        out.push_str(&format!(
            "{:<36}  {:<24}  {:>7}  {:<12}  {:<10}  {:<8}  {}{extra}\n",
            h.recording_id,
            h.start,
            h.duration_ms
                .map(|d| format!("{:.1}", d as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            h.box_id,
            h.site,
            flags.join(","),
            parts.join(", ")
        ));
    }
    out
}

/// Everything the index has on one recording (id or container key): the row, its
/// participants, holds and the decrypted document (channel map, events); or its quarantine
/// entry.
pub fn show(c: &mut impl GenericClient, id: &str) -> Result<Value, IndexError> {
    let row = c.query_opt(
        "SELECT r.recording_id::text, box_id, site, container_key, started_at_ms, ended_at_ms,
                duration_ms, direction, tags, held, trust, integrity, compliance_key_id,
                container_sha256, content_sha256, container_bytes, d.document, indexed_at_ms
         FROM recordings r LEFT JOIN recording_documents d USING (recording_id)
         WHERE r.recording_id::text = $1 OR container_key = $1",
        &[&id],
    )?;
    let Some(r) = row else {
        let q = c.query_opt(
            "SELECT object_key, box_id, reason, message, first_ms, last_ms, seen FROM quarantine
             WHERE object_key = $1 OR object_key LIKE '%/' || $1",
            &[&id],
        )?;
        return match q {
            Some(q) => Ok(serde_json::json!({
                "quarantined": {
                    "object_key": q.get::<_, String>(0),
                    "box_id": q.get::<_, Option<String>>(1),
                    "reason": q.get::<_, String>(2),
                    "message": q.get::<_, String>(3),
                    "first": rfc3339(q.get(4)),
                    "last": rfc3339(q.get(5)),
                    "seen": q.get::<_, i32>(6),
                }
            })),
            None => Err(IndexError::NotFound(format!("recording {id}"))),
        };
    };
    let rid: String = r.get(0);
    let participants: Vec<Value> = c
        .query(
            "SELECT participant_id, name, aor, number, joined_at_ms, left_at_ms, channel
             FROM participants WHERE recording_id = $1::text::uuid ORDER BY participant_id",
            &[&rid],
        )?
        .iter()
        .map(|p| {
            serde_json::json!({
                "participant_id": p.get::<_, String>(0), "name": p.get::<_, Option<String>>(1),
                "aor": p.get::<_, Option<String>>(2), "number": p.get::<_, Option<String>>(3),
                "joined_at_ms": p.get::<_, Option<i64>>(4), "left_at_ms": p.get::<_, Option<i64>>(5),
                "channel": p.get::<_, Option<i32>>(6),
            })
        })
        .collect();
    let holds: Vec<Value> = c
        .query(
            "SELECT hold_id, source, case_id, reason, created_by, created_ms, released_ms
             FROM holds WHERE recording_id = $1::text::uuid ORDER BY hold_id",
            &[&rid],
        )?
        .iter()
        .map(|h| {
            serde_json::json!({
                "hold_id": h.get::<_, i64>(0), "source": h.get::<_, String>(1),
                "case_id": h.get::<_, Option<String>>(2), "reason": h.get::<_, Option<String>>(3),
                "created_by": h.get::<_, Option<String>>(4), "created": rfc3339(h.get(5)),
                "released": h.get::<_, Option<i64>>(6).map(rfc3339),
            })
        })
        .collect();
    // Holds placed at headquarters (`central hold add`), active and released.
    let central_holds: Vec<Value> = c
        .query(
            "SELECT case_id, reason, operator, matched_by, placed_ms, released_ms, released_by,
                    release_reason
             FROM central_holds WHERE recording_id = $1::text::uuid ORDER BY placed_ms, case_id",
            &[&rid],
        )?
        .iter()
        .map(|h| {
            serde_json::json!({
                "case": h.get::<_, String>(0), "reason": h.get::<_, String>(1),
                "operator": h.get::<_, String>(2), "matched_by": h.get::<_, String>(3),
                "placed": rfc3339(h.get(4)),
                "released": h.get::<_, Option<i64>>(5).map(rfc3339),
                "released_by": h.get::<_, Option<String>>(6),
                "release_reason": h.get::<_, Option<String>>(7),
            })
        })
        .collect();
    let document: Value = r.get::<_, Option<Value>>(16).unwrap_or(Value::Null);
    let events = document
        .get("events")
        .and_then(|e| e.as_array())
        .map_or(0, |e| e.len());
    Ok(serde_json::json!({
        "recording_id": rid,
        "box_id": r.get::<_, String>(1),
        "site": r.get::<_, String>(2),
        "container_key": r.get::<_, String>(3),
        "start": rfc3339(r.get(4)),
        "end": r.get::<_, Option<i64>>(5).map(rfc3339),
        "duration_ms": r.get::<_, Option<i64>>(6),
        "direction": r.get::<_, Option<String>>(7),
        "tags": r.get::<_, Vec<String>>(8),
        "held": r.get::<_, bool>(9),
        "trust": r.get::<_, String>(10),
        "integrity": r.get::<_, String>(11),
        "compliance_key_id": r.get::<_, String>(12),
        "container_sha256": r.get::<_, String>(13),
        "content_sha256": r.get::<_, String>(14),
        "container_bytes": r.get::<_, i64>(15),
        "indexed": rfc3339(r.get(17)),
        "participants": participants,
        "events": events,
        "holds": holds,
        "central_holds": central_holds,
        "document": document,
    }))
}

/// One box in `central fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetBox {
    /// Box.
    pub box_id: String,
    /// Site.
    pub site: Option<String>,
    /// `enrolled`, `first_seen`, `none`.
    pub trust: String,
    /// A manifest signed by another key was seen.
    pub key_changed: bool,
    /// Last status document: generated_at.
    pub last_status: Option<String>,
    /// When the index received it (unix ms).
    pub last_status_received_ms: Option<i64>,
    /// Pending recordings (backlog).
    pub pending: Option<i64>,
    /// Oldest pending, seconds.
    pub oldest_pending_age_s: Option<i64>,
    /// Last upload (box's word).
    pub last_upload_at: Option<String>,
    /// Alarm codes the box reports.
    pub box_alarms: Vec<String>,
    /// Recordings indexed.
    pub indexed: i64,
    /// Newest indexed recording's start.
    pub newest_recording: Option<String>,
    /// Quarantined objects.
    pub quarantined: i64,
    /// Index alarms: code → count.
    pub alarms: Value,
    /// Status versions kept.
    pub status_history: i64,
}

/// Every box the index knows.
pub fn fleet(c: &mut impl GenericClient) -> Result<Vec<FleetBox>, IndexError> {
    let rows = c.query(
        "SELECT b.box_id, b.site, b.trust, b.key_changed, s.generated_at, s.received_ms,
                s.pending, s.oldest_pending_age_s, s.last_upload_at, s.alarms,
                (SELECT count(*) FROM recordings r WHERE r.box_id = b.box_id),
                (SELECT max(started_at_ms) FROM recordings r WHERE r.box_id = b.box_id),
                (SELECT count(*) FROM quarantine q WHERE q.box_id = b.box_id),
                (SELECT COALESCE(jsonb_object_agg(code, count), '{}'::jsonb) FROM alarms a WHERE a.box_id = b.box_id),
                (SELECT count(*) FROM box_status x WHERE x.box_id = b.box_id)
         FROM boxes b LEFT JOIN LATERAL (
             SELECT * FROM box_status x WHERE x.box_id = b.box_id ORDER BY received_ms DESC LIMIT 1
         ) s ON true ORDER BY b.box_id",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let alarms: Option<Value> = r.get(9);
            FleetBox {
                box_id: r.get(0),
                site: r.get(1),
                trust: r.get(2),
                key_changed: r.get(3),
                last_status: r.get(4),
                last_status_received_ms: r.get(5),
                pending: r.get(6),
                oldest_pending_age_s: r.get(7),
                last_upload_at: r.get(8),
                box_alarms: alarms
                    .and_then(|a| a.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|a| a.get("code").and_then(|c| c.as_str()).map(str::to_string))
                    .collect(),
                indexed: r.get(10),
                newest_recording: r.get::<_, Option<i64>>(11).map(rfc3339),
                quarantined: r.get(12),
                alarms: r.get(13),
                status_history: r.get(14),
            }
        })
        .collect())
}

/// `fleet` as a table.
pub fn fleet_table(boxes: &[FleetBox]) -> String {
    let mut out = format!(
        "{:<14} {:<10} {:<10} {:>8} {:>8} {:>5} {:<24} {:<24} {}\n",
        "BOX",
        "SITE",
        "TRUST",
        "INDEXED",
        "BACKLOG",
        "QUAR",
        "LAST STATUS",
        "LAST UPLOAD",
        "FLAGS / ALARMS"
    );
    for b in boxes {
        let mut flags: Vec<String> = Vec::new();
        if b.key_changed {
            flags.push("KEY-CHANGED".into());
        }
        if b.trust != "enrolled" {
            flags.push("UNENROLLED".into());
        }
        if b.quarantined > 0 {
            flags.push("QUARANTINE".into());
        }
        if let Some(o) = b.alarms.as_object() {
            for (k, v) in o {
                flags.push(format!("{k}×{v}"));
            }
        }
        for a in &b.box_alarms {
            flags.push(format!("box:{a}"));
        }
        out.push_str(&format!(
            "{:<14} {:<10} {:<10} {:>8} {:>8} {:>5} {:<24} {:<24} {}\n",
            b.box_id,
            b.site.as_deref().unwrap_or("-"),
            b.trust,
            b.indexed,
            b.pending.map_or("-".into(), |p| p.to_string()),
            b.quarantined,
            b.last_status.as_deref().unwrap_or("-"),
            b.last_upload_at.as_deref().unwrap_or("-"),
            flags.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_split_into_numbers_and_text() {
        assert_eq!(
            pattern("+44 20 7946 0001").unwrap(),
            Pattern::Number("442079460001".into(), false)
        );
        assert_eq!(
            pattern("+4420794*").unwrap(),
            Pattern::Number("4420794".into(), true)
        );
        assert_eq!(
            pattern("Alice*").unwrap(),
            Pattern::Text("alice".into(), true)
        );
        assert!(pattern("a*b").is_err());
        assert!(pattern("*").is_err());
        let (sql, p) = build(&Filter {
            participant: vec!["50%_*".into()],
            limit: 10,
            ..Filter::default()
        })
        .unwrap();
        assert!(sql.contains("LIKE $1"), "{sql}");
        assert_eq!(p.len(), 3);
        assert_eq!(like_escape("50%_"), "50\\%\\_");
    }
}
