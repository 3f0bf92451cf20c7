//! What the JSON API and the pages share: search input and its audited run, CSV,
//! recording access checks (role and site scope, refusals audited), the recording's
//! metadata, decryption into memory (verified as `central export`), fleet ordering, the
//! audit view and verification, the account list.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::{header, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use branchrec_core::console::{self, Permission};

use super::auth::{Ctx, User};
use super::{field, App, Decrypted, Resp, WebError};
use crate::central::index::search::{self, Filter, FleetBox};
use crate::central::index::{db, now_ms};
use crate::central::{ArchiveReader, TrustedSigner};

/// A search as the form and the API give it (strings as typed; `participant` and
/// `tags` comma-separated).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchInput {
    /// Participant patterns (number, AoR or name; trailing `*` for a prefix).
    pub participant: String,
    /// Box id.
    pub box_id: String,
    /// Site.
    pub site: String,
    /// From (YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339, UTC).
    pub since: String,
    /// Until (exclusive).
    pub until: String,
    /// inbound, outbound, internal.
    pub direction: String,
    /// Tags (all must be present).
    pub tags: String,
    /// `yes`, `no` or empty.
    pub held: String,
    /// Skip this many.
    pub offset: i64,
    /// Page size (0: the configured one).
    pub limit: i64,
}

fn parse_time(s: &str) -> Result<Option<i64>, WebError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.timestamp_millis()));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(Some(t.and_utc().timestamp_millis()));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Some(
            d.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or(0),
        ));
    }
    Err(WebError::BadRequest(format!("{s:?} is not a date or time")))
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

impl SearchInput {
    /// From the search form's fields.
    pub fn from_form(f: &[(String, String)]) -> SearchInput {
        SearchInput {
            participant: field(f, "participant").into(),
            box_id: field(f, "box_id").into(),
            site: field(f, "site").into(),
            since: field(f, "since").into(),
            until: field(f, "until").into(),
            direction: field(f, "direction").into(),
            tags: field(f, "tags").into(),
            held: field(f, "held").into(),
            offset: field(f, "offset").parse().unwrap_or(0),
            limit: field(f, "limit").parse().unwrap_or(0),
        }
    }

    /// The index filter, within what `user` may see.
    pub fn filter(&self, user: &User, page: i64) -> Result<Filter, WebError> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let direction = opt(&self.direction);
        if let Some(d) = &direction {
            if !["inbound", "outbound", "internal"].contains(&d.as_str()) {
                return Err(WebError::BadRequest(format!("direction {d:?}")));
            }
        }
        Ok(Filter {
            participant: list(&self.participant),
            box_id: opt(&self.box_id),
            site: opt(&self.site),
            since_ms: parse_time(&self.since)?,
            until_ms: parse_time(&self.until)?,
            direction,
            tags: list(&self.tags),
            held: match self.held.as_str() {
                "yes" | "true" => Some(true),
                "no" | "false" => Some(false),
                _ => None,
            },
            sites_in: if user.role.site_scoped() {
                user.sites.clone()
            } else {
                Vec::new()
            },
            limit: if self.limit > 0 {
                self.limit.min(1000)
            } else {
                page
            },
            offset: self.offset.max(0),
            ..Filter::default()
        })
    }
}

/// Run a search for `user` (audited with its filter).
pub fn run_search(
    ctx: &mut Ctx,
    input: &SearchInput,
    csv: bool,
) -> Result<(Filter, Vec<search::Hit>), WebError> {
    ctx.user.require(Permission::Metadata)?;
    let mut f = input.filter(&ctx.user, ctx.app.web.page_size)?;
    if csv {
        // The whole result list for a regulator, not one page.
        f.offset = 0;
        f.limit = 100_000;
    }
    let hits = search::search(&mut *ctx.db, &f)?;
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        if csv { "search_export" } else { "search" },
        "recordings",
        &json!({ "filter": f, "results": hits.len() }),
    )?;
    Ok((f, hits))
}

/// The CSV of a result list.
pub fn csv(hits: &[search::Hit]) -> String {
    let q = |s: &str| {
        // Quote, and defuse spreadsheet formulas.
        let s = if s.starts_with(['=', '+', '-', '@']) && !s.starts_with("+4") {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    let mut out =
        String::from("recording_id,start,duration_s,box,site,direction,held,tags,participants\r\n");
    for h in hits {
        let parts: Vec<String> = h
            .participants
            .iter()
            .map(|p| {
                format!(
                    "{} <{}>",
                    p.name.as_deref().unwrap_or(""),
                    p.aor.as_deref().unwrap_or("")
                )
            })
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\r\n",
            q(&h.recording_id),
            q(&h.start),
            h.duration_ms
                .map(|d| format!("{:.1}", d as f64 / 1000.0))
                .unwrap_or_default(),
            q(&h.box_id),
            q(&h.site),
            q(h.direction.as_deref().unwrap_or("")),
            h.held,
            q(&h.tags.join(" ")),
            q(&parts.join("; "))
        ));
    }
    out
}

/// A recording id from a path segment (UUIDs only).
pub fn recording_id(s: &str) -> Result<String, WebError> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.to_string())
        .map_err(|_| WebError::NotFound)
}

/// Check that `user` may do `p` on recording `id`; its site, box and container key.
pub fn authorize_recording(
    ctx: &mut Ctx,
    id: &str,
    p: Permission,
) -> Result<(String, String, String), WebError> {
    let row = ctx.db.query_opt(
        "SELECT site, box_id, container_key FROM recordings WHERE recording_id = $1::text::uuid",
        &[&id],
    )?;
    let Some(row) = row else {
        // A site-scoped user learns nothing more from a 404 than from a 403.
        ctx.user.require(p)?;
        return Err(WebError::NotFound);
    };
    let site: String = row.get(0);
    if let Err(e) = ctx.user.require_on(p, &site) {
        let actor = ctx.user.actor();
        ctx.app.audit(
            &mut ctx.db,
            &actor,
            "refused",
            id,
            &json!({ "permission": format!("{p:?}").to_lowercase(), "why": e.to_string() }),
        )?;
        return Err(e);
    }
    Ok((site, row.get(1), row.get(2)))
}

/// Everything the index has on a recording the user may see (audited as `show`).
pub fn show(ctx: &mut Ctx, id: &str) -> Result<Value, WebError> {
    authorize_recording(ctx, id, Permission::Metadata)?;
    let mut v = search::show(&mut *ctx.db, id)?;
    // Events and channel map: from the stored document (index schema 3 keeps them
    // there, not in tables).
    let mut events: Vec<Value> = v
        .pointer("/document/events")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let at = e.get("at_ms")?.as_i64()?;
            let kind = e.get("kind")?.as_str()?.to_string();
            // DTMF digits can be card numbers or PINs: shown masked.
            let detail: Option<Value> = if kind.contains("dtmf") {
                Some(json!("•"))
            } else {
                e.get("detail").filter(|d| !d.is_null()).cloned()
            };
            Some(json!({ "at_ms": at, "kind": kind, "channel": e.get("channel").and_then(|c| c.as_i64()), "detail": detail }))
        })
        .collect();
    events.sort_by_key(|e| e["at_ms"].as_i64());
    let mut channels: Vec<Value> = v
        .pointer("/document/channels")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let n = c.get("channel")?.as_i64()?;
            let ms = c.get("mapping_source").map(|m| match m.as_str() {
                Some(x) => json!(x),
                None => json!(m.to_string()),
            });
            Some(json!({ "channel": n, "participant_id": c.get("participant_id"), "label": c.get("label"), "mapping_source": ms }))
        })
        .collect();
    channels.sort_by_key(|c| c["channel"].as_i64());
    v["event_list"] = Value::Array(events);
    v["channels"] = Value::Array(channels);
    let actor = ctx.user.actor();
    ctx.app
        .audit(&mut ctx.db, &actor, "show", id, &json!({ "via": "web" }))?;
    Ok(v)
}

/// The 16-bit PCM samples of a WAV written by the box's writer (44-byte header).
fn wav_samples(wav: &[u8]) -> zeroize::Zeroizing<Vec<i16>> {
    let data = wav.get(44..).unwrap_or(&[]);
    zeroize::Zeroizing::new(
        data.chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
    )
}

/// Peaks per lane for the player.
pub const PEAK_BUCKETS: usize = 800;

/// Decrypt recording `id` into memory (verified exactly as `central export`), or take
/// it from the bounded in-memory cache.
pub fn decrypt(
    app: &App,
    c: &mut postgres::Client,
    id: &str,
    box_id: &str,
    container_key: &str,
) -> Result<Arc<Decrypted>, WebError> {
    if let Some(d) = app
        .cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, _)| k == id)
        .map(|(_, d)| d.clone())
    {
        return Ok(d);
    }
    let der = db::get_box(c, box_id)?
        .and_then(|b| b.known())
        .map(|k| k.der)
        .ok_or_else(|| {
            WebError::Forbidden(format!(
                "box {box_id} has no trusted signing key in the index: enrol it"
            ))
        })?;
    let ar = ArchiveReader::open(&app.central.archive)?;
    let rec = ar.fetch(container_key)?;
    if rec.container.len() as u64 > app.web.max_audio_mb * 1024 * 1024 {
        return Err(WebError::BadRequest(format!(
            "the recording is larger than [web] max_audio_mb ({} MiB)",
            app.web.max_audio_mb
        )));
    }
    let opened = rec.open(app.key.as_ref())?;
    let (e, wav) = crate::central::export::wav_in_memory(
        &rec,
        &opened,
        app.key.as_ref(),
        &TrustedSigner::Enrolled(der),
    )?;
    app.metrics.decrypts.fetch_add(1, Ordering::Relaxed);
    let peaks = {
        let s = wav_samples(&wav);
        console::peaks(&s, usize::from(e.channels), PEAK_BUCKETS)
    };
    let d = Arc::new(Decrypted {
        wav,
        peaks,
        channels: e.channels,
        sample_rate: e.sample_rate,
    });
    let mut cache = app.cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.push((id.to_string(), d.clone()));
    while cache.len() > app.web.audio_cache_entries {
        cache.remove(0);
    }
    Ok(d)
}

/// A box on the fleet page: its row and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// The index's view.
    #[serde(flatten)]
    pub b: FleetBox,
    /// `stale`, `backlog`, `alarm`, `quarantine`, `key_changed`, `unenrolled`.
    pub problems: Vec<&'static str>,
}

/// The fleet, boxes with problems first (stale, backlog, alarms), then by id.
pub fn fleet(app: &App, c: &mut postgres::Client) -> Result<Vec<FleetView>, WebError> {
    let now = now_ms();
    let stale_ms = app.web.stale_after_s as i64 * 1000;
    let mut v: Vec<FleetView> = search::fleet(c)?
        .into_iter()
        .map(|b| {
            let mut p = Vec::new();
            // The box's last heartbeat: when it wrote its newest status document (its
            // clock), else when the index received it.
            let beat = b
                .last_status
                .as_deref()
                .and_then(|g| chrono::DateTime::parse_from_rfc3339(g).ok())
                .map(|t| t.timestamp_millis())
                .or(b.last_status_received_ms);
            if beat.map_or(true, |t| now - t > stale_ms) {
                p.push("stale");
            }
            if b.pending.is_some_and(|n| n > app.web.backlog_alarm) {
                p.push("backlog");
            }
            let index_alarms = b.alarms.as_object().is_some_and(|o| !o.is_empty());
            if !b.box_alarms.is_empty() || index_alarms {
                p.push("alarm");
            }
            if b.quarantined > 0 {
                p.push("quarantine");
            }
            if b.key_changed {
                p.push("key_changed");
            }
            if b.trust != "enrolled" {
                p.push("unenrolled");
            }
            FleetView { b, problems: p }
        })
        .collect();
    let rank = |f: &FleetView| {
        let serious = f.problems.iter().any(|p| {
            matches!(
                *p,
                "stale" | "backlog" | "alarm" | "quarantine" | "key_changed"
            )
        });
        if serious {
            0
        } else {
            1
        }
    };
    v.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.b.box_id.cmp(&b.b.box_id)));
    Ok(v)
}

/// An audit filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditInput {
    /// Actor (exact: `web:alice`, an OS account).
    pub actor: String,
    /// Action (`play`, `download`, `search`, `login`, …).
    pub action: String,
    /// Target (recording id, case, user).
    pub target: String,
    /// From.
    pub since: String,
    /// Until.
    pub until: String,
    /// At most (default 200).
    pub limit: i64,
}

/// Audit entries, newest first.
pub fn audit_entries(ctx: &mut Ctx, f: &AuditInput) -> Result<Vec<Value>, WebError> {
    ctx.user.require(Permission::Audit)?;
    let since = parse_time(&f.since)?.unwrap_or(i64::MIN);
    let until = parse_time(&f.until)?.unwrap_or(i64::MAX);
    let limit = if f.limit > 0 { f.limit.min(5000) } else { 200 };
    let rows = ctx.db.query(
        "SELECT seq, at_ms, actor, action, target, detail, hash FROM central_audit
         WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) AND ($3 = '' OR target = $3)
           AND at_ms >= $4 AND at_ms < $5
         ORDER BY seq DESC LIMIT $6",
        &[
            &f.actor.trim(),
            &f.action.trim(),
            &f.target.trim(),
            &since,
            &until,
            &limit,
        ],
    )?;
    let out = rows
        .iter()
        .map(|r| {
            let at: i64 = r.get(1);
            let detail: String = r.get(5);
            json!({
                "seq": r.get::<_, i64>(0),
                "at": chrono::DateTime::from_timestamp_millis(at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "actor": r.get::<_, String>(2),
                "action": r.get::<_, String>(3),
                "target": r.get::<_, String>(4),
                "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::String(detail)),
                "hash": r.get::<_, String>(6),
            })
        })
        .collect();
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "audit_view",
        "central_audit",
        &json!({ "filter": f }),
    )?;
    Ok(out)
}

/// Verify the chain: `Ok(entries)` or the first problem.
pub fn audit_verify(ctx: &mut Ctx) -> Result<Result<i64, String>, WebError> {
    ctx.user.require(Permission::Audit)?;
    let res = crate::central::index::audit::verify(&mut ctx.db, &ctx.app.audit_key.public())
        .map_err(|e| e.to_string());
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "audit_verify",
        "central_audit",
        &json!({ "result": match &res { Ok(n) => format!("{n} entries verify"), Err(e) => e.clone() } }),
    )?;
    Ok(res)
}

/// CSV response (attachment).
pub fn csv_resp(hits: &[search::Hit]) -> Resp {
    Resp {
        status: StatusCode::OK,
        headers: vec![
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".into()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"recordings.csv\"".into(),
            ),
        ],
        body: csv(hits).into(),
    }
}

/// The accounts (no secrets).
pub fn users(c: &mut postgres::Client) -> Result<Vec<Value>, WebError> {
    Ok(c
        .query(
            "SELECT username, role, sites, disabled, locked_until_ms, oidc_issuer IS NOT NULL, created_ms FROM web_users ORDER BY username",
            &[],
        )?
        .iter()
        .map(|r| {
            json!({
                "username": r.get::<_, String>(0),
                "role": r.get::<_, String>(1),
                "sites": r.get::<_, Vec<String>>(2),
                "disabled": r.get::<_, bool>(3),
                "locked": r.get::<_, Option<i64>>(4).is_some_and(|t| t > now_ms()),
                "sso": r.get::<_, bool>(5),
            })
        })
        .collect())
}
