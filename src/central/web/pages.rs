//! The HTML pages of the console, rendered on the server in [`super::html`]'s layout:
//! search, recording and player, audit, fleet, users. Searches and audit filters are
//! POSTed, so numbers and names never appear in URLs or access logs.

use hyper::Method;
use serde_json::Value;

use branchrec_core::console::{html_escape as esc, Permission};

use super::access::{self, AuditInput, SearchInput};
use super::auth::Ctx;
use super::html::page;
use super::saved;
use super::{field, Req, Resp, WebError};
use crate::central::index::search;

fn hidden_search(s: &SearchInput, csrf: &str, offset: i64, sort: &str) -> String {
    let mut h = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    );
    let limit = if s.limit > 0 {
        s.limit.to_string()
    } else {
        String::new()
    };
    for (k, v) in [
        ("participant", &s.participant),
        ("box_id", &s.box_id),
        ("site", &s.site),
        ("since", &s.since),
        ("until", &s.until),
        ("direction", &s.direction),
        ("tags", &s.tags),
        ("held", &s.held),
        ("min_duration_s", &s.min_duration_s),
        ("max_duration_s", &s.max_duration_s),
        ("state", &s.state),
        ("limit", &limit),
    ] {
        h.push_str(&format!(
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            esc(v)
        ));
    }
    h.push_str(&format!(
        "<input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"offset\" value=\"{offset}\">",
        esc(sort)
    ));
    h
}

/// The header cell of a sortable column: a button that orders by it (ascending, or
/// descending when it already is ascending), the current order marked for assistive
/// technology too.
fn sort_th(s: &SearchInput, csrf: &str, key: &str, label: &str) -> String {
    let cur = search::Sort::parse(&s.sort).unwrap_or_default().spec();
    let (next, aria, mark) = if cur == key {
        (format!("-{key}"), "ascending", " \u{25b2}")
    } else if cur == format!("-{key}") {
        (key.to_string(), "descending", " \u{25bc}")
    } else {
        (key.to_string(), "none", "")
    };
    format!(
        "<th aria-sort=\"{aria}\"><form method=\"post\" action=\"/search\" class=\"sort\">{}<button type=\"submit\" id=\"sort-{key}\" class=\"link\">{label}{mark}</button></form></th>",
        hidden_search(s, csrf, 0, &next)
    )
}

/// The saved searches of the user: run, delete; and saving the current one.
fn saved_block(ctx: &mut Ctx, s: Option<&SearchInput>, csrf: &str) -> Result<String, WebError> {
    let list = saved::list(ctx)?;
    let mut b =
        String::from("<section class=\"card\" id=\"saved-searches\"><h2>Saved searches</h2>");
    if list.is_empty() {
        b.push_str("<p>None yet.</p>");
    } else {
        b.push_str("<ul id=\"saved-list\">");
        for v in &list {
            b.push_str(&format!(
                "<li data-saved=\"{id}\"><span class=\"name\">{}</span> \
<form method=\"post\" action=\"/search/saved/{id}/run\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><button type=\"submit\" class=\"run-saved\">Run</button></form> \
<form method=\"post\" action=\"/search/saved/{id}/delete\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><button type=\"submit\" class=\"delete-saved\">Delete</button></form></li>",
                esc(&v.name),
                id = v.id,
                c = esc(csrf),
            ));
        }
        b.push_str("</ul>");
    }
    if let Some(s) = s {
        b.push_str(&format!(
            "<form method=\"post\" action=\"/search/save\" id=\"save-form\">{}<label>Name <input name=\"name\" id=\"saved-name\" maxlength=\"100\" required></label> <button type=\"submit\" id=\"save-search\">Save this search</button></form>",
            hidden_search(s, csrf, 0, &s.sort)
        ));
    }
    b.push_str("</section>");
    Ok(b)
}

fn search_page(ctx: &mut Ctx, input: Option<SearchInput>) -> Result<Resp, WebError> {
    ctx.user.require(Permission::Metadata)?;
    let s = input.clone().unwrap_or_default();
    let csrf = ctx.session.csrf.clone();
    let sel = |v: &str, opts: &[(&str, &str)]| {
        opts.iter()
            .map(|(k, label)| {
                format!(
                    "<option value=\"{k}\"{}>{label}</option>",
                    if *k == v { " selected" } else { "" }
                )
            })
            .collect::<String>()
    };
    let mut body = format!(
        "<h1>Search recordings</h1>\
<form method=\"post\" action=\"/search\" class=\"search card\" id=\"search-form\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label>Participant <input name=\"participant\" id=\"participant\" value=\"{}\" placeholder=\"+44 20 7946 0001, alice*\"></label>\
<label>Box <input name=\"box_id\" value=\"{}\"></label>\
<label>Site <input name=\"site\" value=\"{}\"></label>\
<label>From <input name=\"since\" type=\"datetime-local\" value=\"{}\"></label>\
<label>Until <input name=\"until\" type=\"datetime-local\" value=\"{}\"></label>\
<label>Direction <select name=\"direction\">{}</select></label>\
<label>Tags <input name=\"tags\" value=\"{}\" placeholder=\"vip, complaint\"></label>\
<label>Held <select name=\"held\">{}</select></label>\
<label>Min. duration (s) <input name=\"min_duration_s\" id=\"min_duration\" inputmode=\"decimal\" value=\"{}\"></label>\
<label>Max. duration (s) <input name=\"max_duration_s\" id=\"max_duration\" inputmode=\"decimal\" value=\"{}\"></label>\
<label>State <select name=\"state\" id=\"state\">{}</select></label>\
<label>Per page <select name=\"limit\" id=\"limit\">{}</select></label>\
<input type=\"hidden\" name=\"sort\" value=\"{}\">\
<div class=\"buttons\"><button type=\"submit\" id=\"search\">Search</button>\
<button type=\"submit\" formaction=\"/search.csv\" id=\"csv\">Export CSV</button></div></form>",
        esc(&csrf),
        esc(&s.participant),
        esc(&s.box_id),
        esc(&s.site),
        esc(&s.since),
        esc(&s.until),
        sel(
            &s.direction,
            &[
                ("", "any"),
                ("inbound", "inbound"),
                ("outbound", "outbound"),
                ("internal", "internal")
            ]
        ),
        esc(&s.tags),
        sel(&s.held, &[("", "any"), ("yes", "held"), ("no", "not held")]),
        esc(&s.min_duration_s),
        esc(&s.max_duration_s),
        sel(
            &s.state,
            &[
                ("", "any"),
                ("complete", "complete"),
                ("interrupted", "interrupted"),
                ("damaged", "damaged"),
                ("recording", "recording"),
                ("codec_unsupported", "codec unsupported")
            ]
        ),
        sel(
            &if s.limit > 0 { s.limit.to_string() } else { String::new() },
            &[
                ("", "default"),
                ("1", "1"),
                ("10", "10"),
                ("25", "25"),
                ("50", "50"),
                ("100", "100"),
                ("500", "500")
            ]
        ),
        esc(&s.sort),
    );
    let cases = super::cases::case_choices(ctx)?;
    if let Some(input) = &input {
        let (f, hits) = access::run_search(ctx, &input, false)?;
        body.push_str(&format!(
            "<p class=\"count\" id=\"result-count\">{} result(s){}</p>",
            hits.len(),
            if f.offset > 0 {
                format!(" from {}", f.offset + 1)
            } else {
                String::new()
            }
        ));
        body.push_str(&format!(
            "<table class=\"results\" id=\"results\"><thead><tr>{}{}<th>Participants</th>{}{}{}<th>Tags</th><th>Held</th>{}</tr></thead><tbody>",
            sort_th(&input, &csrf, "start", "Start (UTC)"),
            sort_th(&input, &csrf, "duration", "Duration"),
            sort_th(&input, &csrf, "box", "Box"),
            sort_th(&input, &csrf, "site", "Site"),
            sort_th(&input, &csrf, "direction", "Direction"),
            if cases.is_empty() { "" } else { "<th>Case</th>" },
        ));
        for h in &hits {
            let parts: Vec<String> = h
                .participants
                .iter()
                .map(|p| {
                    esc(&match (&p.name, &p.aor) {
                        (Some(n), Some(a)) => format!("{n} <{a}>"),
                        (None, Some(a)) => a.clone(),
                        (Some(n), None) => n.clone(),
                        (None, None) => p.participant_id.clone(),
                    })
                })
                .collect();
            body.push_str(&format!(
                "<tr data-recording=\"{id}\"><td><a href=\"/recordings/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                esc(&h.start),
                h.duration_ms.map(|d| format!("{:.1} s", d as f64 / 1000.0)).unwrap_or_default(),
                parts.join("<br>"),
                esc(&h.box_id),
                esc(&h.site),
                esc(h.direction.as_deref().unwrap_or("")),
                esc(&h.tags.join(", ")),
                if h.held { "<span class=\"held\">HELD</span>" } else { "" },
                if cases.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<td><input type=\"checkbox\" name=\"recording_id\" value=\"{id}\" form=\"add-to-case\" class=\"pick\" aria-label=\"select for a case\"></td>",
                        id = esc(&h.recording_id)
                    )
                },
                id = esc(&h.recording_id),
            ));
        }
        body.push_str("</tbody></table>");
        if !cases.is_empty() && !hits.is_empty() {
            let opts: String = cases
                .iter()
                .map(|(id, t)| {
                    format!(
                        "<option value=\"{}\">{} — {}</option>",
                        esc(id),
                        esc(id),
                        esc(t)
                    )
                })
                .collect();
            body.push_str(&format!(
                "<form method=\"post\" action=\"/cases/add-from-search\" id=\"add-to-case\" class=\"card\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Case <select name=\"case\" id=\"case-pick\">{opts}</select></label> <button type=\"submit\" id=\"add-to-case-btn\">Add selected to case</button></form>",
                esc(&csrf)
            ));
        }
        body.push_str("<div class=\"paging\">");
        if f.offset > 0 {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/search\">{}<button type=\"submit\" id=\"prev\">Previous page</button></form>",
                hidden_search(&input, &csrf, (f.offset - f.limit).max(0), &input.sort)
            ));
        }
        if hits.len() as i64 == f.limit {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/search\">{}<button type=\"submit\" id=\"next\">Next page</button></form>",
                hidden_search(&input, &csrf, f.offset + f.limit, &input.sort)
            ));
        }
        body.push_str(&format!(
            "<span id=\"page-no\">Page {}</span></div>",
            f.offset / f.limit.max(1) + 1
        ));
    }
    let saved = saved_block(ctx, input.as_ref(), &csrf)?;
    body.push_str(&saved);
    Ok(page(ctx, "Search", "Search", &body))
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

fn ms_time(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn recording_page(ctx: &mut Ctx, id: &str) -> Result<Resp, WebError> {
    let v = access::show(ctx, id)?;
    let may_play = ctx
        .user
        .require_on(Permission::Play, &s(&v, "site"))
        .is_ok();
    let may_download = ctx
        .user
        .require_on(Permission::Download, &s(&v, "site"))
        .is_ok();
    let mut b = format!(
        "<h1>Recording <code>{}</code></h1><section class=\"card\"><h2>Metadata</h2><dl class=\"meta\">",
        esc(id)
    );
    for (k, label) in [
        ("start", "Start"),
        ("end", "End"),
        ("duration_ms", "Duration (ms)"),
        ("direction", "Direction"),
        ("box_id", "Box"),
        ("site", "Site"),
        ("held", "Legal hold"),
        ("container_key", "Archive object"),
        ("indexed", "Indexed"),
    ] {
        b.push_str(&format!("<dt>{label}</dt><dd>{}</dd>", esc(&s(&v, k))));
    }
    let tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(esc)).collect())
        .unwrap_or_default();
    b.push_str(&format!(
        "<dt>Tags</dt><dd>{}</dd></dl></section>",
        tags.join(", ")
    ));
    // Integrity.
    let integrity = s(&v, "integrity");
    let trust = s(&v, "trust");
    b.push_str(&format!(
        "<section class=\"card\"><h2>Integrity</h2><dl class=\"meta\" id=\"integrity\">\
<dt>State</dt><dd class=\"{}\">{}</dd><dt>Box signing key</dt><dd class=\"{}\">{}</dd>\
<dt>Container SHA-256</dt><dd><code>{}</code></dd><dt>Content SHA-256 (signed manifest)</dt><dd><code>{}</code></dd>\
<dt>Compliance key</dt><dd>{}</dd><dt>Container bytes</dt><dd>{}</dd></dl>\
<p class=\"note\">The indexer verified the manifest signature with the box key and the container against the manifest; playback and download verify again.</p></section>",
        if integrity == "ok" { "ok" } else { "alarm" },
        esc(&integrity),
        if trust == "enrolled" { "ok" } else { "warn" },
        esc(&trust),
        esc(&s(&v, "container_sha256")),
        esc(&s(&v, "content_sha256")),
        esc(&s(&v, "compliance_key_id")),
        esc(&s(&v, "container_bytes")),
    ));
    // Participants with their channels.
    b.push_str("<section class=\"card\"><h2>Participants</h2><table id=\"participants\"><thead><tr><th>Channel</th><th>Name</th><th>Address</th><th>Joined</th><th>Left</th></tr></thead><tbody>");
    if let Some(ps) = v["participants"].as_array() {
        for p in ps {
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s(p, "channel")),
                esc(&s(p, "name")),
                esc(&s(p, "aor")),
                esc(&ms_time(&p["joined_at_ms"])),
                esc(&ms_time(&p["left_at_ms"]))
            ));
        }
    }
    b.push_str("</tbody></table></section>");
    // Events and metadata versions.
    b.push_str("<section class=\"card\"><h2>Events</h2><ol class=\"events\" id=\"events\">");
    if let Some(es) = v["event_list"].as_array() {
        for e in es {
            b.push_str(&format!(
                "<li><time>{}</time> <strong>{}</strong> {}{}</li>",
                chrono::DateTime::from_timestamp_millis(e["at_ms"].as_i64().unwrap_or(0))
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                esc(&s(e, "kind")),
                e["channel"]
                    .as_i64()
                    .map(|c| format!("channel {c} "))
                    .unwrap_or_default(),
                esc(&e
                    .get("detail")
                    .filter(|d| !d.is_null())
                    .map(|d| d.to_string())
                    .unwrap_or_default())
            ));
        }
    }
    b.push_str("</ol>");
    if let Some(mv) = v
        .pointer("/document/metadata_versions")
        .and_then(|m| m.as_array())
    {
        b.push_str("<h3>SIPREC metadata versions</h3><ol>");
        for m in mv {
            b.push_str(&format!(
                "<li>{} {}</li>",
                esc(&s(m, "seq")),
                esc(&s(m, "received_at"))
            ));
        }
        b.push_str("</ol>");
    }
    b.push_str("</section>");
    // Holds.
    b.push_str("<section class=\"card\"><h2>Holds</h2><ul>");
    if let Some(hs) = v["holds"].as_array() {
        for h in hs {
            b.push_str(&format!(
                "<li>{} {} {} {}</li>",
                esc(&s(h, "source")),
                esc(&s(h, "case_id")),
                esc(&s(h, "created")),
                if h["released"].is_null() {
                    "active".into()
                } else {
                    format!("released {}", esc(&s(h, "released")))
                }
            ));
        }
    }
    b.push_str("</ul></section>");
    // The player.
    let reason = ctx.app.web.needs_reason(ctx.user.role);
    if may_play || may_download {
        b.push_str(&format!(
            "<section class=\"card player\" id=\"player\" data-recording=\"{}\" data-reason-required=\"{}\">\
<h2>Player</h2><label>Reason (case id or free text){} <input id=\"reason\" maxlength=\"500\"></label>\
<div class=\"buttons\">{}{}</div><p class=\"error\" id=\"player-error\" role=\"alert\" hidden></p>\
<div class=\"lanes\" id=\"lanes\" hidden><div class=\"lane\"><span>Channel 0</span><canvas class=\"wave\" data-lane=\"0\" width=\"800\" height=\"80\"></canvas></div>\
<div class=\"lane\"><span>Channel 1</span><canvas class=\"wave\" data-lane=\"1\" width=\"800\" height=\"80\"></canvas></div>\
<div class=\"playhead\" id=\"playhead\"></div></div>\
<div class=\"controls\" id=\"controls\" hidden><button type=\"button\" id=\"play\">Play</button>\
<input type=\"range\" id=\"seek\" min=\"0\" max=\"1000\" value=\"0\" aria-label=\"Position\">\
<select id=\"speed\" aria-label=\"Speed\"><option value=\"0.75\">0.75×</option><option value=\"1\" selected>1×</option><option value=\"1.5\">1.5×</option><option value=\"2\">2×</option></select>\
<span id=\"time\">0:00</span></div><audio id=\"audio\" preload=\"auto\"></audio></section>",
            esc(id),
            reason,
            if reason { " — required" } else { "" },
            if may_play { "<button type=\"button\" id=\"open-player\">Open player</button>" } else { "" },
            if may_download { "<button type=\"button\" id=\"download\">Download WAV</button> <button type=\"button\" id=\"download-opus\">Download Ogg Opus</button> <button type=\"button\" id=\"download-evidence\">Download evidence bundle</button>" } else { "" },
        ));
    } else {
        b.push_str("<section class=\"card\"><p class=\"note\" id=\"no-audio\">Your role does not include listening to recordings.</p></section>");
    }
    Ok(page(ctx, "Search", "Recording", &b))
}

fn audit_page(
    ctx: &mut Ctx,
    f: AuditInput,
    verified: Option<Result<i64, String>>,
) -> Result<Resp, WebError> {
    let entries = access::audit_entries(ctx, &f)?;
    let csrf = ctx.session.csrf.clone();
    let mut b = format!(
        "<h1>Central audit log</h1><form method=\"post\" action=\"/audit\" class=\"search card\">\
<input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
<label>User <input name=\"actor\" value=\"{}\" placeholder=\"web:alice\"></label>\
<label>Action <input name=\"action\" value=\"{}\" placeholder=\"play\"></label>\
<label>Recording / target <input name=\"target\" value=\"{}\"></label>\
<label>From <input name=\"since\" type=\"datetime-local\" value=\"{}\"></label>\
<label>Until <input name=\"until\" type=\"datetime-local\" value=\"{}\"></label>\
<div class=\"buttons\"><button type=\"submit\" id=\"audit-filter\">Filter</button></div></form>\
<form method=\"post\" action=\"/audit/verify\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><button type=\"submit\" id=\"verify-chain\">Verify the chain</button></form>",
        esc(&f.actor),
        esc(&f.action),
        esc(&f.target),
        esc(&f.since),
        esc(&f.until),
        c = esc(&csrf)
    );
    match verified {
        Some(Ok(n)) => b.push_str(&format!(
            "<p class=\"ok\" id=\"verify-result\" role=\"status\">The central audit log verifies: {n} entries, hash chain and signatures intact.</p>"
        )),
        Some(Err(e)) => b.push_str(&format!(
            "<p class=\"alarm\" id=\"verify-result\" role=\"alert\">The central audit log does NOT verify: {}</p>",
            esc(&e)
        )),
        None => {}
    }
    b.push_str("<table id=\"audit\"><thead><tr><th>#</th><th>When (UTC)</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>");
    for e in &entries {
        b.push_str(&format!(
            "<tr data-action=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&s(e, "action")),
            esc(&s(e, "seq")),
            esc(&s(e, "at")),
            esc(&s(e, "actor")),
            esc(&s(e, "action")),
            esc(&s(e, "target")),
            esc(&e["detail"].to_string())
        ));
    }
    b.push_str("</tbody></table>");
    Ok(page(ctx, "Audit", "Audit", &b))
}

fn fleet_page(ctx: &mut Ctx) -> Result<Resp, WebError> {
    ctx.user.require(Permission::Fleet)?;
    let boxes = access::fleet(ctx.app, &mut ctx.db)?;
    let mut b = String::from("<h1>Fleet</h1><table id=\"fleet\"><thead><tr><th>Box</th><th>Site</th><th>State</th><th>Last status</th><th>Backlog</th><th>Oldest pending</th><th>Last upload</th><th>Indexed</th><th>Newest recording</th><th>Trust</th><th>Alarms</th></tr></thead><tbody>");
    for f in &boxes {
        let serious = f.problems.iter().any(|p| {
            matches!(
                *p,
                "stale" | "backlog" | "alarm" | "quarantine" | "key_changed"
            )
        });
        let mut alarms: Vec<String> = f.b.box_alarms.clone();
        if let Some(o) = f.b.alarms.as_object() {
            for (k, v) in o {
                alarms.push(format!("{k}×{v}"));
            }
        }
        b.push_str(&format!(
            "<tr class=\"{}\" data-box=\"{}\" data-problems=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if serious { "alarm" } else { "ok" },
            esc(&f.b.box_id),
            f.problems.join(" "),
            esc(&f.b.box_id),
            esc(f.b.site.as_deref().unwrap_or("")),
            if f.problems.is_empty() { "ok".to_string() } else { f.problems.join(", ") },
            esc(f.b.last_status.as_deref().unwrap_or("never")),
            f.b.pending.map(|p| p.to_string()).unwrap_or_default(),
            f.b.oldest_pending_age_s.map(|s| format!("{s} s")).unwrap_or_default(),
            esc(f.b.last_upload_at.as_deref().unwrap_or("")),
            f.b.indexed,
            esc(f.b.newest_recording.as_deref().unwrap_or("")),
            esc(&f.b.trust),
            esc(&alarms.join(", ")),
        ));
    }
    b.push_str("</tbody></table>");
    Ok(page(ctx, "Fleet", "Fleet", &b))
}

fn users_page(ctx: &mut Ctx) -> Result<Resp, WebError> {
    ctx.user.require(Permission::Users)?;
    let users = access::users(&mut ctx.db)?;
    let mut b = String::from("<h1>Users</h1><p class=\"note\">Accounts are created with <code>branchrec-central user add</code> (docs/web-console.md).</p><table id=\"users\"><thead><tr><th>User</th><th>Role</th><th>Sites</th><th>State</th></tr></thead><tbody>");
    for u in &users {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s(u, "username")),
            esc(&s(u, "role")),
            esc(&u["sites"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()),
            if u["disabled"] == true {
                "disabled"
            } else if u["locked"] == true {
                "locked"
            } else {
                "active"
            }
        ));
    }
    b.push_str("</tbody></table>");
    Ok(page(ctx, "Users", "Users", &b))
}

/// Route the pages.
pub fn route(ctx: &mut Ctx, r: &Req) -> Result<Resp, WebError> {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.clone(), segs.as_slice()) {
        (Method::GET, [""]) => {
            let role = ctx.user.role;
            Ok(Resp::redirect(if role.allows(Permission::Metadata) {
                "/search"
            } else if role.allows(Permission::Fleet) {
                "/fleet"
            } else {
                "/admin/users"
            }))
        }
        (Method::GET, ["search"]) => search_page(ctx, None),
        (Method::POST, ["search"]) => search_page(ctx, Some(SearchInput::from_form(&r.form()))),
        (Method::POST, ["search", "save"]) => {
            let form = r.form();
            let input = SearchInput::from_form(&form);
            saved::create(ctx, field(&form, "name"), &input)?;
            search_page(ctx, Some(input))
        }
        (Method::POST, ["search", "saved", id, "run"]) => {
            let s = saved::get(ctx, saved::parse_id(id)?)?;
            search_page(ctx, Some(s.search))
        }
        (Method::POST, ["search", "saved", id, "delete"]) => {
            saved::delete(ctx, saved::parse_id(id)?)?;
            search_page(ctx, None)
        }
        (Method::POST, ["search.csv"]) => {
            let (_, hits) = access::run_search(ctx, &SearchInput::from_form(&r.form()), true)?;
            Ok(access::csv_resp(&hits))
        }
        (Method::GET, ["recordings", id]) => {
            let id = access::recording_id(id)?;
            recording_page(ctx, &id)
        }
        (Method::GET, ["audit"]) => audit_page(ctx, AuditInput::default(), None),
        (Method::POST, ["audit"]) => {
            let f = r.form();
            audit_page(
                ctx,
                AuditInput {
                    actor: field(&f, "actor").into(),
                    action: field(&f, "action").into(),
                    target: field(&f, "target").into(),
                    since: field(&f, "since").into(),
                    until: field(&f, "until").into(),
                    limit: 0,
                },
                None,
            )
        }
        (Method::POST, ["audit", "verify"]) => {
            let v = access::audit_verify(ctx)?;
            audit_page(ctx, AuditInput::default(), Some(v))
        }
        (Method::GET, ["fleet"]) => fleet_page(ctx),
        (Method::GET, ["admin", "users"]) => users_page(ctx),
        _ => super::cases::route(ctx, r, &segs)?.ok_or(WebError::NotFound),
    }
}
