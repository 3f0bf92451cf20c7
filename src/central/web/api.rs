//! The JSON API under `/api/v1` (docs/web-console-openapi.yaml): routes, play and
//! download grants (a stated reason, audited; bound to the session and the recording),
//! streaming with `Range`, the WAV download. The shared work is [`super::access`].

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::{header, Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use branchrec_core::console::{self, Permission};

use super::access::{
    audit_entries, audit_verify, authorize_recording, csv_resp, decrypt, fleet, recording_id,
    run_search, show, users, AuditInput, SearchInput,
};
use super::auth::{token, Ctx};
use super::{Grant, Req, Resp, WebError};
use crate::central::index::now_ms;

/// The OpenAPI description, served at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/web-console-openapi.yaml");

/// `POST …/grants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantInput {
    purpose: String,
    #[serde(default)]
    reason: String,
    /// Downloads: `wav` (default) or `opus`.
    #[serde(default)]
    format: String,
}

fn grant(ctx: &mut Ctx, id: &str, r: &Req) -> Result<Resp, WebError> {
    let g: GrantInput =
        serde_json::from_slice(&r.body).map_err(|e| WebError::BadRequest(format!("body: {e}")))?;
    let p = match g.purpose.as_str() {
        "play" => Permission::Play,
        "download" => Permission::Download,
        other => return Err(WebError::BadRequest(format!("purpose {other:?}"))),
    };
    let format = match (p, g.format.as_str()) {
        (_, "" | "wav") => None,
        (Permission::Download, f @ ("opus" | "evidence")) => Some(f.to_string()),
        (_, other) => return Err(WebError::BadRequest(format!("format {other:?}"))),
    };
    let (_, box_id, ckey) = authorize_recording(ctx, id, p)?;
    let reason = g.reason.trim().to_string();
    if reason.chars().count() > 500 {
        return Err(WebError::BadRequest(
            "reason: at most 500 characters".into(),
        ));
    }
    if reason.is_empty() && ctx.app.web.needs_reason(ctx.user.role) {
        return Err(WebError::BadRequest(format!(
            "a reason (case id or free text) is required to {} as {}",
            g.purpose,
            ctx.user.role.as_str()
        )));
    }
    {
        // Bounded: every grant keeps its decrypted audio alive until it expires.
        let grants = ctx.app.grants.lock().unwrap_or_else(|p| p.into_inner());
        let mine = grants
            .values()
            .filter(|g| g.session == ctx.session.hash)
            .count();
        if mine >= 64 || grants.len() >= 4096 {
            return Err(WebError::TooMany(
                "too many open play/download grants: wait for them to expire".into(),
            ));
        }
    }
    let audio = decrypt(ctx.app, &mut ctx.db, id, &box_id, &ckey)?;
    let file = match &format {
        Some(f) => Some(super::access::download_file(
            ctx.app,
            &mut ctx.db,
            id,
            &box_id,
            &ckey,
            f,
        )?),
        None => None,
    };
    let bytes = file.as_ref().map_or(audio.wav.len(), |f| f.bytes.len());
    let format = file.as_ref().map_or("wav", |f| f.format);
    let t = token();
    let expires_ms = now_ms() + ctx.app.web.grant_ttl_s as i64 * 1000;
    ctx.app
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            t.clone(),
            Grant {
                session: ctx.session.hash.clone(),
                recording_id: id.to_string(),
                purpose: g.purpose.clone(),
                expires_ms,
                audio: audio.clone(),
                file: file.clone(),
            },
        );
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        &g.purpose,
        id,
        &json!({ "reason": reason, "role": ctx.user.role.as_str(), "bytes": bytes, "format": format }),
    )?;
    let frames = (audio.wav.len().saturating_sub(44)) / (2 * usize::from(audio.channels.max(1)));
    let peaks: Vec<Vec<[f32; 2]>> = if p == Permission::Play {
        audio
            .peaks
            .iter()
            .map(|l| l.iter().map(|&(a, b)| [a, b]).collect())
            .collect()
    } else {
        Vec::new()
    };
    let url = if p == Permission::Play {
        format!("/api/v1/recordings/{id}/audio?grant={t}")
    } else if format != "wav" {
        format!("/api/v1/recordings/{id}/{format}?grant={t}")
    } else {
        format!("/api/v1/recordings/{id}/wav?grant={t}")
    };
    Ok(Resp::json(
        StatusCode::CREATED,
        &json!({
            "grant": t,
            "purpose": g.purpose,
            "url": url,
            "expires_ms": expires_ms,
            "channels": audio.channels,
            "sample_rate": audio.sample_rate,
            "duration_s": frames as f64 / f64::from(audio.sample_rate.max(1)),
            "peaks": peaks,
        }),
    ))
}

fn take_grant(ctx: &Ctx, id: &str, r: &Req, purpose: &str) -> Result<Grant, WebError> {
    let t = r.q("grant").unwrap_or("");
    let mut grants = ctx.app.grants.lock().unwrap_or_else(|p| p.into_inner());
    let g = grants
        .get(t)
        .filter(|g| {
            g.session == ctx.session.hash
                && g.recording_id == id
                && g.purpose == purpose
                && g.expires_ms > now_ms()
        })
        .cloned()
        .ok_or_else(|| {
            WebError::Forbidden(format!(
                "no valid {purpose} grant for this session: state a reason first"
            ))
        })?;
    if purpose == "download" {
        // A download grant is good for one download.
        grants.remove(t);
    }
    Ok(g)
}

fn audio(ctx: &mut Ctx, id: &str, r: &Req, purpose: &str) -> Result<Resp, WebError> {
    ctx.user.require(if purpose == "play" {
        Permission::Play
    } else {
        Permission::Download
    })?;
    let g = take_grant(ctx, id, r, purpose)?;
    if let Some(f) = &g.file {
        return Err(WebError::Forbidden(format!(
            "this grant is for the {} download",
            f.format
        )));
    }
    let wav: &[u8] = &g.audio.wav;
    let len = wav.len() as u64;
    let range = console::parse_range(r.header("range"), len).map_err(|_| WebError::Range(len))?;
    let (status, body, extra) = match range {
        Some(br) => (
            StatusCode::PARTIAL_CONTENT,
            Bytes::copy_from_slice(&wav[br.start as usize..=br.end as usize]),
            Some(format!("bytes {}-{}/{len}", br.start, br.end)),
        ),
        None => (StatusCode::OK, Bytes::copy_from_slice(wav), None),
    };
    ctx.app
        .metrics
        .audio_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut resp = Resp {
        status,
        headers: vec![
            (header::CONTENT_TYPE, "audio/wav".into()),
            (header::ACCEPT_RANGES, "bytes".into()),
            (header::CACHE_CONTROL, "no-store, private".into()),
        ],
        body: if r.method == Method::HEAD {
            Bytes::new()
        } else {
            body
        },
    };
    if let Some(cr) = extra {
        resp = resp.with(header::CONTENT_RANGE, cr);
    }
    if purpose == "download" {
        resp = resp.with(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}.wav\""),
        );
    }
    Ok(resp)
}

/// `GET …/opus?grant=`, `GET …/evidence?grant=`: the Ogg Opus or evidence-bundle
/// download (once; the grant names the format).
fn file_download(ctx: &mut Ctx, id: &str, r: &Req, format: &str) -> Result<Resp, WebError> {
    ctx.user.require(Permission::Download)?;
    let g = take_grant(ctx, id, r, "download")?;
    let f = g.file.filter(|f| f.format == format).ok_or_else(|| {
        WebError::Forbidden(format!("this grant is not for the {format} download"))
    })?;
    ctx.app
        .metrics
        .audio_bytes
        .fetch_add(f.bytes.len() as u64, Ordering::Relaxed);
    Ok(Resp {
        status: StatusCode::OK,
        headers: vec![
            (header::CONTENT_TYPE, f.content_type.into()),
            (header::CACHE_CONTROL, "no-store, private".into()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.{}\"", f.ext),
            ),
        ],
        body: Bytes::copy_from_slice(&f.bytes),
    })
}

fn body_json<T: serde::de::DeserializeOwned + Default>(r: &Req) -> Result<T, WebError> {
    if r.body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&r.body).map_err(|e| WebError::BadRequest(format!("body: {e}")))
}

/// Route `/api/v1/…`.
pub fn route(ctx: &mut Ctx, r: &Req) -> Result<Resp, WebError> {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let m = r.method.clone();
    match (m, segs.as_slice()) {
        (Method::GET, ["api", "v1", "openapi.yaml"]) => Ok(Resp {
            status: StatusCode::OK,
            headers: vec![(header::CONTENT_TYPE, "application/yaml".into())],
            body: OPENAPI.into(),
        }),
        (Method::GET, ["api", "v1", "me"]) => Ok(Resp::json(
            StatusCode::OK,
            &json!({
                "username": ctx.user.username,
                "role": ctx.user.role.as_str(),
                "sites": ctx.user.sites,
                "csrf_token": ctx.session.csrf,
                "reason_required": ctx.app.web.needs_reason(ctx.user.role),
            }),
        )),
        (Method::POST, ["api", "v1", "search"]) => {
            let input: SearchInput = body_json(r)?;
            let (f, hits) = run_search(ctx, &input, false)?;
            Ok(Resp::json(
                StatusCode::OK,
                &json!({ "offset": f.offset, "limit": f.limit, "hits": hits }),
            ))
        }
        (Method::GET, ["api", "v1", "saved-searches"]) => Ok(Resp::json(
            StatusCode::OK,
            &json!({ "saved_searches": super::saved::list(ctx)? }),
        )),
        (Method::POST, ["api", "v1", "saved-searches"]) => {
            #[derive(serde::Deserialize, Default)]
            #[serde(default, deny_unknown_fields)]
            struct NewSaved {
                name: String,
                search: SearchInput,
            }
            let n: NewSaved = body_json(r)?;
            let id = super::saved::create(ctx, &n.name, &n.search)?;
            Ok(Resp::json(StatusCode::CREATED, &json!({ "id": id })))
        }
        (Method::POST, ["api", "v1", "saved-searches", id, "run"]) => {
            let s = super::saved::get(ctx, super::saved::parse_id(id)?)?;
            let mut input = s.search;
            let page: SearchInput = body_json(r)?;
            input.offset = page.offset;
            if page.limit > 0 {
                input.limit = page.limit;
            }
            if !page.sort.is_empty() {
                input.sort = page.sort;
            }
            let (f, hits) = run_search(ctx, &input, false)?;
            Ok(Resp::json(
                StatusCode::OK,
                &json!({ "offset": f.offset, "limit": f.limit, "hits": hits }),
            ))
        }
        (Method::DELETE, ["api", "v1", "saved-searches", id]) => {
            super::saved::delete(ctx, super::saved::parse_id(id)?)?;
            Ok(Resp::json(StatusCode::OK, &json!({ "deleted": true })))
        }
        (Method::POST, ["api", "v1", "search.csv"]) => {
            let input: SearchInput = body_json(r)?;
            let (_, hits) = run_search(ctx, &input, true)?;
            Ok(csv_resp(&hits))
        }
        (Method::GET, ["api", "v1", "recordings", id]) => {
            let id = recording_id(id)?;
            let v = show(ctx, &id)?;
            Ok(Resp::json(StatusCode::OK, &v))
        }
        (Method::POST, ["api", "v1", "recordings", id, "grants"]) => {
            let id = recording_id(id)?;
            grant(ctx, &id, r)
        }
        (Method::GET | Method::HEAD, ["api", "v1", "recordings", id, "audio"]) => {
            let id = recording_id(id)?;
            audio(ctx, &id, r, "play")
        }
        (Method::GET, ["api", "v1", "recordings", id, "wav"]) => {
            let id = recording_id(id)?;
            audio(ctx, &id, r, "download")
        }
        (Method::GET, ["api", "v1", "recordings", id, f @ ("opus" | "evidence")]) => {
            let id = recording_id(id)?;
            file_download(ctx, &id, r, f)
        }
        (Method::GET, ["api", "v1", "fleet"]) => {
            ctx.user.require(Permission::Fleet)?;
            let v = fleet(ctx.app, &mut ctx.db)?;
            Ok(Resp::json(StatusCode::OK, &json!({ "boxes": v })))
        }
        (Method::POST, ["api", "v1", "audit"]) => {
            let f: AuditInput = body_json(r)?;
            let v = audit_entries(ctx, &f)?;
            Ok(Resp::json(StatusCode::OK, &json!({ "entries": v })))
        }
        (Method::POST, ["api", "v1", "audit", "verify"]) => {
            let v = audit_verify(ctx)?;
            Ok(Resp::json(
                StatusCode::OK,
                &match v {
                    Ok(n) => json!({ "verified": true, "entries": n }),
                    Err(e) => json!({ "verified": false, "problem": e }),
                },
            ))
        }
        (Method::GET, ["api", "v1", "users"]) => {
            ctx.user.require(Permission::Users)?;
            Ok(Resp::json(
                StatusCode::OK,
                &json!({ "users": users(&mut ctx.db)? }),
            ))
        }
        _ => super::cases::route(ctx, r, &segs)?.ok_or(WebError::NotFound),
    }
}
