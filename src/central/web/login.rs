//! The request pipeline of the console: session cookie → session row → CSRF check on
//! every state change → route (static files and the sign-in pages without a session,
//! everything else signed in); and the sign-in pages: password, then TOTP (RFC 6238,
//! [`branchrec_core::console`]); an account locks after `max_failed_logins` failures, an
//! address after `max_failed_logins_per_address`.

use std::sync::atomic::Ordering;

use hyper::{Method, StatusCode};

use branchrec_core::console;

use super::auth::{
    cookie_clear, csrf_ok, dummy_hash, load_session, load_user, new_session, sign_in,
    verify_password, Ctx, Session,
};
use super::{api, field, html, pages, App, Req, Resp, WebError};
use crate::central::index::now_ms;

type Out = Result<(Resp, Option<i64>), (WebError, Option<i64>)>;

/// Route a request: static files and the login pages without a session, everything
/// else signed in, CSRF-checked when it changes state.
pub fn dispatch(app: &App, r: &Req) -> Out {
    if r.method == Method::GET {
        if let Some(resp) = html::static_file(&r.path) {
            return Ok((resp, None));
        }
    }
    let mut db = app.pool.get().map_err(|e| (e, None))?;
    let session = load_session(app, &mut db, r).map_err(|e| (e, None))?;
    let uid = session.as_ref().and_then(|s| s.user.as_ref().map(|u| u.id));
    let changes = !matches!(r.method, Method::GET | Method::HEAD);
    if changes {
        match &session {
            Some(s) if csrf_ok(s, r) => {}
            _ => return Err((WebError::Csrf, uid)),
        }
    }
    let login = match (r.method.clone(), r.path.as_str()) {
        (Method::GET, "/login") => Some(login_page(app, &mut db, session.as_ref(), None)),
        (Method::POST, "/login") => Some(login_post(app, &mut db, session.as_ref(), r)),
        (Method::GET, "/login/mfa") => Some(mfa_page(session.as_ref(), None)),
        (Method::POST, "/login/mfa") => Some(mfa_post(app, &mut db, session.as_ref(), r)),
        (Method::POST, "/logout") => Some(logout(app, &mut db, session.as_ref())),
        (Method::GET, "/login/oidc") => Some(super::oidc::start(app, &mut db)),
        (Method::GET, "/login/oidc/callback") => Some(super::oidc::callback(app, &mut db, r)),
        _ => None,
    };
    if let Some(res) = login {
        return res.map(|x| (x, uid)).map_err(|e| (e, uid));
    }
    let Some(session) = session.filter(|s| s.state == "auth") else {
        return Err((WebError::Unauthenticated, None));
    };
    let Some(user) = session.user.clone() else {
        return Err((WebError::Unauthenticated, None));
    };
    let mut ctx = Ctx {
        app,
        session,
        user,
        db,
    };
    let res = if r.is_api() {
        api::route(&mut ctx, r)
    } else {
        pages::route(&mut ctx, r)
    };
    res.map(|x| (x, uid)).map_err(|e| (e, uid))
}

fn login_page(
    _app: &App,
    c: &mut postgres::Client,
    s: Option<&Session>,
    error: Option<&str>,
) -> Result<Resp, WebError> {
    if let Some(s) = s.filter(|s| s.state == "auth") {
        let _ = s;
        return Ok(Resp::redirect("/"));
    }
    // A fresh anonymous session carries the form's CSRF token (a pending second factor
    // keeps its session: the form may be shown again without losing it).
    let (sess, set) = match s.filter(|s| s.state == "anon" || s.state == "mfa") {
        Some(s) => (s.clone(), None),
        None => {
            let (s2, set) = new_session(c, "anon", None, s.map(|s| s.hash.as_str()))?;
            (s2, Some(set))
        }
    };
    let mut resp = Resp::html(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        html::login_page(
            &sess.csrf,
            error,
            _app.web.oidc.as_ref().map(|o| o.label.as_str()),
        ),
    );
    if let Some(set) = set {
        resp = resp.with(hyper::header::SET_COOKIE, set);
    }
    Ok(resp)
}

/// Count a failure against the account (lock at the limit) and the address.
fn failed(
    app: &App,
    c: &mut postgres::Client,
    user_id: Option<i64>,
    r: &Req,
) -> Result<(), WebError> {
    app.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    app.limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failed(&r.peer.to_string(), now);
    if let Some(u) = user_id {
        c.execute(
            "UPDATE web_users SET failed_logins = failed_logins + 1,
               locked_until_ms = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until_ms END
             WHERE user_id = $1",
            &[
                &u,
                &(app.web.max_failed_logins as i32),
                &(now + app.web.lockout_s as i64 * 1000),
            ],
        )?;
    }
    Ok(())
}

fn login_post(
    app: &App,
    c: &mut postgres::Client,
    s: Option<&Session>,
    r: &Req,
) -> Result<Resp, WebError> {
    let s = s.ok_or(WebError::Csrf)?;
    let f = r.form();
    let username = field(&f, "username").trim().to_string();
    let password = zeroize::Zeroizing::new(field(&f, "password").to_string());
    let now = now_ms();
    if !app
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allowed(&r.peer.to_string(), now)
    {
        app.audit(
            c,
            "web:-",
            "login_refused",
            "address",
            &serde_json::json!({ "why": "too many failed logins from this address" }),
        )?;
        return Err(WebError::TooMany(
            "too many failed sign-ins from this address: try again later".into(),
        ));
    }
    let row = c.query_opt(
        "SELECT user_id, password_hash, locked_until_ms, totp_secret IS NOT NULL FROM web_users
         WHERE username = $1 AND NOT disabled",
        &[&username],
    )?;
    if let Some(row) = &row {
        if row.get::<_, Option<i64>>(2).is_some_and(|t| t > now) {
            app.audit(
                c,
                &format!("web:{username}"),
                "login_refused",
                &username,
                &serde_json::json!({ "why": "account locked" }),
            )?;
            return Err(WebError::TooMany(
                "this account is locked after too many failed sign-ins: try again later".into(),
            ));
        }
    }
    let phc: Option<String> = row.as_ref().and_then(|r| r.get(1));
    let good = verify_password(&password, phc.as_deref().unwrap_or(dummy_hash())) && phc.is_some();
    let uid_seen: Option<i64> = row.as_ref().map(|r| r.get(0));
    let Some(row) = row.filter(|_| good) else {
        failed(app, c, uid_seen, r)?;
        app.audit(
            c,
            &format!("web:{username}"),
            "login_failed",
            &username,
            &serde_json::json!({ "step": "password" }),
        )?;
        return login_page(app, c, Some(s), Some("Wrong user name or password."));
    };
    let uid: i64 = row.get(0);
    if !row.get::<_, bool>(3) {
        return login_page(
            app,
            c,
            Some(s),
            Some("This account has no second factor enrolled: ask an administrator."),
        );
    }
    let user = load_user(c, uid)?.ok_or(WebError::Unauthenticated)?;
    let (_, set) = new_session(c, "mfa", Some(&user), Some(&s.hash))?;
    Ok(Resp::redirect("/login/mfa").with(hyper::header::SET_COOKIE, set))
}

fn mfa_page(s: Option<&Session>, error: Option<&str>) -> Result<Resp, WebError> {
    let Some(s) = s.filter(|s| s.state == "mfa") else {
        return Ok(Resp::redirect("/login"));
    };
    Ok(Resp::html(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        html::mfa_page(&s.csrf, error),
    ))
}

fn mfa_post(
    app: &App,
    c: &mut postgres::Client,
    s: Option<&Session>,
    r: &Req,
) -> Result<Resp, WebError> {
    let Some(s) = s.filter(|s| s.state == "mfa") else {
        return Ok(Resp::redirect("/login"));
    };
    let user = s.user.clone().ok_or(WebError::Unauthenticated)?;
    let f = r.form();
    let now = now_ms();
    let row = c.query_one(
        "SELECT totp_secret, last_totp_step, locked_until_ms FROM web_users WHERE user_id = $1",
        &[&user.id],
    )?;
    if row.get::<_, Option<i64>>(2).is_some_and(|t| t > now) {
        return Err(WebError::TooMany(
            "this account is locked after too many failed sign-ins: try again later".into(),
        ));
    }
    let secret: Vec<u8> = row.get::<_, Option<Vec<u8>>>(0).unwrap_or_default();
    let last: Option<i64> = row.get(1);
    let step = console::totp_check(
        &secret,
        field(&f, "code"),
        (now / 1000) as u64,
        last.map(|l| l as u64),
    );
    let Some(step) = step else {
        failed(app, c, Some(user.id), r)?;
        app.audit(
            c,
            &user.actor(),
            "login_failed",
            &user.username,
            &serde_json::json!({ "step": "totp" }),
        )?;
        return mfa_page(Some(s), Some("Wrong or already used code."));
    };
    c.execute(
        "UPDATE web_users SET last_totp_step = $2, failed_logins = 0, locked_until_ms = NULL WHERE user_id = $1",
        &[&user.id, &(step as i64)],
    )?;
    c.execute(
        "DELETE FROM web_sessions WHERE session_hash = $1",
        &[&s.hash],
    )?;
    let (_, set) = sign_in(app, c, user.id, "password+totp")?;
    Ok(Resp::redirect("/").with(hyper::header::SET_COOKIE, set))
}

fn logout(app: &App, c: &mut postgres::Client, s: Option<&Session>) -> Result<Resp, WebError> {
    if let Some(s) = s {
        c.execute(
            "DELETE FROM web_sessions WHERE session_hash = $1",
            &[&s.hash],
        )?;
        if let Some(u) = &s.user {
            app.audit(c, &u.actor(), "logout", &u.username, &serde_json::json!({}))?;
        }
        if let Ok(mut g) = app.grants.lock() {
            g.retain(|_, v| v.session != s.hash);
        }
    }
    Ok(Resp::redirect("/login").with(hyper::header::SET_COOKIE, cookie_clear()))
}
