//! Cases and legal holds in the console: a case collects recordings; *Place legal hold*
//! goes through the central hold code ([`crate::central::hold::hold_add`]: S3 Object Lock
//! legal hold on every version of every archive object, then a signed hold command to
//! each box); a release is requested by one user and carried out
//! ([`crate::central::hold::hold_release`]) only when a second, different user approves
//! it (two-person rule, also a CHECK in `web_releases`). Everything is audited.

use hyper::StatusCode;
use serde_json::{json, Value};

use branchrec_core::console::{html_escape as esc, Permission};

use super::auth::Ctx;
use super::{field, Req, Resp, WebError};
use crate::central::command::CommandArchive;
use crate::central::hold;
use crate::central::index::now_ms;

fn case_id(s: &str) -> Result<String, WebError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(WebError::BadRequest(
            "case id: 1 to 64 of A-Z a-z 0-9 - _ .".into(),
        ))
    }
}

/// The command writer with the index: seqs allocated under the box's row lock and acks
/// verified against the box's enrolled key, as for `central hold` (without the index no
/// acknowledgement counts).
fn archive(ctx: &Ctx) -> Result<CommandArchive, WebError> {
    Ok(CommandArchive::open(&ctx.app.central.archive)?.with_index(
        crate::central::command_db::CommandDb::connect(&ctx.app.ix.database)?,
    ))
}

fn with_key<T>(
    ctx: &Ctx,
    f: impl FnOnce(&dyn crate::central::command::CommandKey) -> Result<T, WebError>,
) -> Result<T, WebError> {
    let k = ctx.app.command_key.as_ref().ok_or_else(|| {
        WebError::Forbidden(
            "legal holds need the central command key: start serve with --command-key or --command-pkcs11-module".into(),
        )
    })?;
    let k = k.lock().unwrap_or_else(|p| p.into_inner());
    f(k.as_ref())
}

fn exists(ctx: &mut Ctx, case: &str) -> Result<(), WebError> {
    if ctx
        .db
        .query_opt("SELECT 1 FROM web_cases WHERE case_id = $1", &[&case])?
        .is_none()
    {
        return Err(WebError::NotFound);
    }
    Ok(())
}

fn recordings_of(ctx: &mut Ctx, case: &str) -> Result<Vec<String>, WebError> {
    Ok(ctx
        .db
        .query(
            "SELECT recording_id::text FROM web_case_recordings WHERE case_id = $1 ORDER BY added_ms",
            &[&case],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The state of a case: recordings with their archive legal holds, the hold as the
/// command history shows it (per box, acknowledged or not), release requests.
pub fn state(ctx: &mut Ctx, case: &str) -> Result<Value, WebError> {
    ctx.user.require(Permission::Hold)?;
    exists(ctx, case)?;
    let row = ctx.db.query_one(
        "SELECT title, created_by, created_ms FROM web_cases WHERE case_id = $1",
        &[&case],
    )?;
    let ids = recordings_of(ctx, case)?;
    let ar = archive(ctx)?;
    let mut recs = Vec::new();
    for id in &ids {
        let versions = hold::legal_hold_state(&ar, id)?;
        let on = versions.iter().filter(|v| v.2).count();
        recs.push(
            json!({ "recording_id": id, "object_versions": versions.len(), "legal_hold_on": on }),
        );
    }
    let active = match &ctx.app.command_key {
        Some(k) => {
            let pk = k.lock().unwrap_or_else(|p| p.into_inner()).public_key();
            hold::active_cases(&ar, &pk)?
                .into_iter()
                .find(|c| c.case == case)
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        }
        None => None,
    };
    let releases: Vec<Value> = ctx
        .db
        .query(
            "SELECT release_id, requested_by, reason, requested_ms, approved_by, approved_ms FROM web_releases WHERE case_id = $1 ORDER BY release_id",
            &[&case],
        )?
        .iter()
        .map(|r| json!({ "release_id": r.get::<_, i64>(0), "requested_by": r.get::<_, String>(1), "reason": r.get::<_, String>(2), "requested_ms": r.get::<_, i64>(3), "approved_by": r.get::<_, Option<String>>(4), "approved_ms": r.get::<_, Option<i64>>(5) }))
        .collect();
    Ok(json!({
        "case_id": case,
        "title": row.get::<_, String>(0),
        "created_by": row.get::<_, String>(1),
        "created_ms": row.get::<_, i64>(2),
        "recordings": recs,
        "hold": active,
        "releases": releases,
    }))
}

fn create(ctx: &mut Ctx, f: &[(String, String)]) -> Result<String, WebError> {
    ctx.user.require(Permission::Hold)?;
    let id = case_id(field(f, "case_id").trim())?;
    let title = field(f, "title")
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    let actor = ctx.user.actor();
    let n = ctx.db.execute(
        "INSERT INTO web_cases (case_id, title, created_by, created_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&id, &title, &actor, &now_ms()],
    )?;
    if n == 0 {
        return Err(WebError::BadRequest(format!("case {id} exists")));
    }
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "case_create",
        &id,
        &json!({ "title": title }),
    )?;
    Ok(id)
}

fn add(ctx: &mut Ctx, case: &str, f: &[(String, String)]) -> Result<(), WebError> {
    exists(ctx, case)?;
    let rid = super::access::recording_id(field(f, "recording_id").trim())
        .map_err(|_| WebError::BadRequest("recording id: a UUID".into()))?;
    add_one(ctx, case, &rid)
}

/// The cases a user who may hold can add to: `(id, title)`, newest first.
pub fn case_choices(ctx: &mut Ctx) -> Result<Vec<(String, String)>, WebError> {
    if !ctx.user.role.allows(Permission::Hold) {
        return Ok(Vec::new());
    }
    Ok(ctx
        .db
        .query(
            "SELECT case_id, title FROM web_cases ORDER BY created_ms DESC LIMIT 500",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The search page's *Add selected to case*: every ticked `recording_id` into `case`.
fn add_from_search(ctx: &mut Ctx, f: &[(String, String)]) -> Result<String, WebError> {
    ctx.user.require(Permission::Hold)?;
    let case = case_id(field(f, "case"))?;
    exists(ctx, &case)?;
    let ids: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "recording_id")
        .map(|(_, v)| super::access::recording_id(v.trim()))
        .collect::<Result<_, _>>()
        .map_err(|_| WebError::BadRequest("recording id: a UUID".into()))?;
    if ids.is_empty() {
        return Err(WebError::BadRequest("select at least one recording".into()));
    }
    if ids.len() > 1000 {
        return Err(WebError::BadRequest(
            "at most 1000 recordings at a time".into(),
        ));
    }
    for rid in &ids {
        add_one(ctx, &case, rid)?;
    }
    Ok(case)
}

fn add_one(ctx: &mut Ctx, case: &str, rid: &str) -> Result<(), WebError> {
    let rid = rid.to_string();
    super::access::authorize_recording(ctx, &rid, Permission::Hold)?;
    let actor = ctx.user.actor();
    ctx.db.execute(
        "INSERT INTO web_case_recordings (case_id, recording_id, added_by, added_ms) VALUES ($1, $2::text::uuid, $3, $4) ON CONFLICT DO NOTHING",
        &[&case, &rid, &actor, &now_ms()],
    )?;
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "case_add",
        case,
        &json!({ "recording": rid }),
    )?;
    Ok(())
}

fn place(ctx: &mut Ctx, case: &str, f: &[(String, String)]) -> Result<Value, WebError> {
    ctx.user.require(Permission::Hold)?;
    exists(ctx, case)?;
    let reason = field(f, "reason").trim().to_string();
    if reason.is_empty() {
        return Err(WebError::BadRequest("a hold needs a reason".into()));
    }
    let ids = recordings_of(ctx, case)?;
    if ids.is_empty() {
        return Err(WebError::BadRequest("the case has no recordings".into()));
    }
    let ar = archive(ctx)?;
    let actor = ctx.user.actor();
    let placed = with_key(ctx, |k| {
        Ok(hold::hold_add(
            &ar,
            k,
            &actor,
            now_ms(),
            case,
            &reason,
            &ids,
            None,
        )?)
    })?;
    let now = now_ms();
    for id in &ids {
        ctx.db.execute(
            "INSERT INTO holds (recording_id, source, case_id, reason, created_by, created_ms) VALUES ($1::text::uuid, 'central', $2, $3, $4, $5)",
            &[id, &case, &reason, &actor, &now],
        )?;
        ctx.db.execute(
            "UPDATE recordings SET held = true WHERE recording_id = $1::text::uuid",
            &[id],
        )?;
    }
    let detail = json!({ "reason": reason, "recordings": ids, "legal_holds": placed.legal_holds, "commands": placed.commands });
    ctx.app.audit(&mut ctx.db, &actor, "hold", case, &detail)?;
    Ok(detail)
}

fn request_release(ctx: &mut Ctx, case: &str, f: &[(String, String)]) -> Result<(), WebError> {
    ctx.user.require(Permission::Hold)?;
    exists(ctx, case)?;
    let reason = field(f, "reason").trim().to_string();
    if reason.is_empty() {
        return Err(WebError::BadRequest("a release needs a reason".into()));
    }
    let actor = ctx.user.actor();
    let id: i64 = ctx
        .db
        .query_one(
            "INSERT INTO web_releases (case_id, requested_by, reason, requested_ms) VALUES ($1, $2, $3, $4) RETURNING release_id",
            &[&case, &actor, &reason, &now_ms()],
        )?
        .get(0);
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "release_request",
        case,
        &json!({ "release_id": id, "reason": reason }),
    )?;
    Ok(())
}

fn approve(ctx: &mut Ctx, case: &str, release: i64) -> Result<Value, WebError> {
    ctx.user.require(Permission::Hold)?;
    exists(ctx, case)?;
    let row = ctx
        .db
        .query_opt(
            "SELECT requested_by, reason, approved_by FROM web_releases WHERE release_id = $1 AND case_id = $2",
            &[&release, &case],
        )?
        .ok_or(WebError::NotFound)?;
    let (requested_by, reason, approved): (String, String, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    let actor = ctx.user.actor();
    if approved.is_some() {
        return Err(WebError::BadRequest(
            "this release was approved already".into(),
        ));
    }
    if requested_by == actor {
        ctx.app.audit(
            &mut ctx.db,
            &actor,
            "refused",
            case,
            &json!({ "why": "two-person rule: the requester cannot approve their own release", "release_id": release }),
        )?;
        return Err(WebError::Forbidden(
            "two-person rule: a second, different user must approve the release".into(),
        ));
    }
    let ar = archive(ctx)?;
    let operator = format!("{requested_by}+{actor}");
    let released = with_key(ctx, |k| {
        Ok(hold::hold_release(
            &ar,
            k,
            &operator,
            now_ms(),
            case,
            &reason,
        )?)
    })?;
    let now = now_ms();
    ctx.db.execute(
        "UPDATE web_releases SET approved_by = $2, approved_ms = $3 WHERE release_id = $1",
        &[&release, &actor, &now],
    )?;
    for id in recordings_of(ctx, case)? {
        ctx.db.execute(
            "UPDATE holds SET released_ms = $3, released_by = $4 WHERE recording_id = $1::text::uuid AND case_id = $2 AND released_ms IS NULL",
            &[&id, &case, &now, &operator],
        )?;
        ctx.db.execute(
            "UPDATE recordings SET held = EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = $1::text::uuid AND h.released_ms IS NULL) WHERE recording_id = $1::text::uuid",
            &[&id],
        )?;
    }
    let detail = json!({ "release_id": release, "requested_by": requested_by, "reason": reason, "legal_holds_cleared": released.legal_holds_cleared, "still_held": released.still_held, "commands": released.commands });
    ctx.app
        .audit(&mut ctx.db, &actor, "release_approve", case, &detail)?;
    Ok(detail)
}

fn list_page(ctx: &mut Ctx) -> Result<String, WebError> {
    ctx.user.require(Permission::Hold)?;
    let rows = ctx.db.query(
        "SELECT c.case_id, c.title, c.created_by, (SELECT count(*) FROM web_case_recordings r WHERE r.case_id = c.case_id) FROM web_cases c ORDER BY c.created_ms DESC LIMIT 500",
        &[],
    )?;
    let csrf = esc(&ctx.session.csrf);
    let mut b = format!(
        "<h1>Cases</h1><form method=\"post\" action=\"/cases\" class=\"search card\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Case id <input name=\"case_id\" id=\"case-id\" required pattern=\"[A-Za-z0-9._\\-]{{1,64}}\"></label>\
<label>Title <input name=\"title\" id=\"case-title\"></label><div class=\"buttons\"><button type=\"submit\" id=\"create-case\">Create case</button></div></form>\
<table id=\"cases\"><thead><tr><th>Case</th><th>Title</th><th>Created by</th><th>Recordings</th></tr></thead><tbody>"
    );
    for r in rows {
        let id: String = r.get(0);
        b.push_str(&format!(
            "<tr><td><a href=\"/cases/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&id),
            esc(&id),
            esc(&r.get::<_, String>(1)),
            esc(&r.get::<_, String>(2)),
            r.get::<_, i64>(3)
        ));
    }
    b.push_str("</tbody></table>");
    Ok(b)
}

fn case_page(ctx: &mut Ctx, case: &str, note: Option<&str>) -> Result<String, WebError> {
    let v = state(ctx, case)?;
    let csrf = esc(&ctx.session.csrf);
    let c = esc(case);
    let mut b = format!(
        "<h1>Case <code>{c}</code></h1><p>{}</p>",
        esc(v["title"].as_str().unwrap_or(""))
    );
    if let Some(n) = note {
        b.push_str(&format!(
            "<p class=\"ok\" id=\"case-note\" role=\"status\">{}</p>",
            esc(n)
        ));
    }
    b.push_str("<section class=\"card\"><h2>Recordings</h2><table id=\"case-recordings\"><thead><tr><th>Recording</th><th>Archive object versions</th><th>Object Lock legal hold</th></tr></thead><tbody>");
    for r in v["recordings"].as_array().into_iter().flatten() {
        let id = r["recording_id"].as_str().unwrap_or("");
        let n = r["object_versions"].as_u64().unwrap_or(0);
        let on = r["legal_hold_on"].as_u64().unwrap_or(0);
        b.push_str(&format!(
            "<tr data-recording=\"{}\" data-lock=\"{}\"><td><a href=\"/recordings/{}\">{}</a></td><td>{n}</td><td class=\"{}\">{}</td></tr>",
            esc(id),
            if n > 0 && on == n { "on" } else if on == 0 { "off" } else { "partial" },
            esc(id),
            esc(id),
            if on > 0 { "alarm" } else { "" },
            if n > 0 && on == n { format!("ON ({on} of {n})") } else { format!("OFF ({on} of {n} on)") }
        ));
    }
    b.push_str(&format!(
        "</tbody></table><form method=\"post\" action=\"/cases/{c}/recordings\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Add recording (id) <input name=\"recording_id\" id=\"add-recording\" required></label> <button type=\"submit\" id=\"add\">Add to case</button></form></section>"
    ));
    b.push_str("<section class=\"card\"><h2>Legal hold</h2>");
    match v["hold"].as_object() {
        Some(h) => {
            b.push_str(&format!(
                "<p id=\"hold-state\" class=\"alarm\">Active: {} (placed by {})</p><ul id=\"hold-boxes\">",
                esc(h.get("reason").and_then(|r| r.as_str()).unwrap_or("")),
                esc(h.get("operator").and_then(|r| r.as_str()).unwrap_or(""))
            ));
            if let Some(bx) = h.get("boxes").and_then(|x| x.as_object()) {
                for (name, cb) in bx {
                    b.push_str(&format!(
                        "<li data-box=\"{}\" data-acknowledged=\"{}\">box {}: {} recording(s), {}</li>",
                        esc(name),
                        cb["acknowledged"] == true,
                        esc(name),
                        cb["recordings"].as_array().map_or(0, |a| a.len()),
                        if cb["acknowledged"] == true { "applied and acknowledged by the box" } else { "command sent, not acknowledged yet" }
                    ));
                }
            }
            b.push_str("</ul>");
            b.push_str(&format!(
                "<form method=\"post\" action=\"/cases/{c}/release\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Release reason <input name=\"reason\" id=\"release-reason\" required></label> <button type=\"submit\" id=\"request-release\">Request release</button></form>"
            ));
        }
        None => {
            b.push_str(&format!(
                "<p id=\"hold-state\">No active legal hold.</p><form method=\"post\" action=\"/cases/{c}/hold\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>Hold reason <input name=\"reason\" id=\"hold-reason\" required></label> <button type=\"submit\" id=\"place-hold\">Place legal hold</button></form>"
            ));
        }
    }
    b.push_str("<h3>Release requests (two-person rule)</h3><ul id=\"releases\">");
    for r in v["releases"].as_array().into_iter().flatten() {
        let rid = r["release_id"].as_i64().unwrap_or(0);
        let approved = r["approved_by"].as_str();
        b.push_str(&format!(
            "<li data-release=\"{rid}\" data-approved=\"{}\">#{rid} by {}: {} — {}</li>",
            approved.is_some(),
            esc(r["requested_by"].as_str().unwrap_or("")),
            esc(r["reason"].as_str().unwrap_or("")),
            match approved {
                Some(a) => format!("approved by {}", esc(a)),
                None => format!(
                    "<form method=\"post\" action=\"/cases/{c}/release/{rid}/approve\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" class=\"approve\">Approve release</button></form>"
                ),
            }
        ));
    }
    b.push_str("</ul></section>");
    Ok(b)
}

fn html(ctx: &Ctx, body: String) -> Resp {
    super::html::page(ctx, "Cases", "Cases", &body)
}

/// Route `/cases…` (pages) and `/api/v1/cases…`.
pub fn route(ctx: &mut Ctx, r: &Req, segs: &[&str]) -> Result<Option<Resp>, WebError> {
    use hyper::Method;
    let m = r.method.clone();
    Ok(Some(match (m, segs) {
        (Method::GET, ["cases"]) => {
            let b = list_page(ctx)?;
            html(ctx, b)
        }
        (Method::POST, ["cases"]) => {
            let id = create(ctx, &r.form())?;
            Resp::redirect(&format!("/cases/{id}"))
        }
        (Method::GET, ["cases", case]) => {
            let case = case_id(case)?;
            let b = case_page(ctx, &case, None)?;
            html(ctx, b)
        }
        (Method::POST, ["cases", "add-from-search"]) => {
            let case = add_from_search(ctx, &r.form())?;
            Resp::redirect(&format!("/cases/{case}"))
        }
        (Method::POST, ["cases", case, "recordings"]) => {
            let case = case_id(case)?;
            add(ctx, &case, &r.form())?;
            Resp::redirect(&format!("/cases/{case}"))
        }
        (Method::POST, ["cases", case, "hold"]) => {
            let case = case_id(case)?;
            let d = place(ctx, &case, &r.form())?;
            let b = case_page(
                ctx,
                &case,
                Some(&format!(
                    "Legal hold placed: Object Lock ON on {} object version(s), hold command sent to {} box(es).",
                    d["legal_holds"],
                    d["commands"].as_array().map_or(0, |a| a.len())
                )),
            )?;
            html(ctx, b)
        }
        (Method::POST, ["cases", case, "release"]) => {
            let case = case_id(case)?;
            request_release(ctx, &case, &r.form())?;
            let b = case_page(
                ctx,
                &case,
                Some("Release requested: a second user must approve it."),
            )?;
            html(ctx, b)
        }
        (Method::POST, ["cases", case, "release", rid, "approve"]) => {
            let case = case_id(case)?;
            let rid: i64 = rid.parse().map_err(|_| WebError::NotFound)?;
            let d = approve(ctx, &case, rid)?;
            let b = case_page(
                ctx,
                &case,
                Some(&format!(
                    "Release approved: Object Lock OFF on {} object version(s), release command sent.",
                    d["legal_holds_cleared"]
                )),
            )?;
            html(ctx, b)
        }
        (Method::GET, ["api", "v1", "cases", case]) => {
            let case = case_id(case)?;
            let v = state(ctx, &case)?;
            Resp::json(StatusCode::OK, &v)
        }
        _ => return Ok(None),
    }))
}
