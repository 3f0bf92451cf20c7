//! Accounts and sessions of the console (the bottom layer of `web`): users and roles,
//! session rows (idle and absolute timeouts; only the SHA-256 of a session id is
//! stored), cookies, CSRF tokens, Argon2id password hashes (PHC strings), sign-in, and
//! the accounts the CLI creates. The request pipeline is [`super::login`].

use std::sync::atomic::Ordering;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use branchrec_core::console::{self, Permission, Role};

use super::{field, App, Req, WebError};
use crate::central::index::now_ms;

/// The session cookie (`__Host-`: Secure, Path=/, no Domain).
pub const COOKIE: &str = "__Host-branchrec_session";

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// Database id (the only user reference in the access log).
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Assigned sites (supervisors).
    pub sites: Vec<String>,
}

impl User {
    /// The actor of audit entries.
    pub fn actor(&self) -> String {
        format!("web:{}", self.username)
    }

    /// Refuse unless the role grants `p`.
    pub fn require(&self, p: Permission) -> Result<(), WebError> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "the {} role may not do this",
                self.role.as_str()
            )))
        }
    }

    /// Refuse unless the user may do `p` on a recording of `site`.
    pub fn require_on(&self, p: Permission, site: &str) -> Result<(), WebError> {
        self.require(p)?;
        if console::may_on_recording(self.role, &self.sites, p, site) {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "this recording is outside your assigned sites".into(),
            ))
        }
    }
}

/// A session as loaded for a request.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the id (the row key).
    pub hash: String,
    /// `anon`, `mfa`, `auth`.
    pub state: String,
    /// CSRF token.
    pub csrf: String,
    /// The user (`mfa`: password verified, code pending; `auth`: signed in).
    pub user: Option<User>,
}

/// Random URL-safe token of 32 bytes.
pub fn token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `Set-Cookie` for session id `id`.
pub fn cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

pub fn cookie_clear() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub fn cookie_value(r: &Req) -> Option<String> {
    for h in r.headers.get_all(hyper::header::COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == COOKIE && !v.is_empty() {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// Hash a password (Argon2id, the crate's defaults: m=19 MiB, t=2, p=1).
pub fn hash_password(pw: &str) -> Result<String, WebError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map_err(|e| WebError::Internal(e.to_string()))?
        .to_string())
}

pub fn verify_password(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A fixed hash to verify against when the user does not exist (same time either way).
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("not a password").unwrap_or_default())
}

pub fn load_user(c: &mut postgres::Client, id: i64) -> Result<Option<User>, WebError> {
    Ok(c.query_opt(
        "SELECT user_id, username, role, sites FROM web_users WHERE user_id = $1 AND NOT disabled",
        &[&id],
    )?
    .and_then(|r| {
        Some(User {
            id: r.get(0),
            username: r.get(1),
            role: Role::parse(r.get::<_, &str>(2)).ok()?,
            sites: r.get(3),
        })
    }))
}

pub fn load_session(
    app: &App,
    c: &mut postgres::Client,
    r: &Req,
) -> Result<Option<Session>, WebError> {
    let Some(id) = cookie_value(r) else {
        return Ok(None);
    };
    let hash = sha_hex(&id);
    let Some(row) = c.query_opt(
        "SELECT state, csrf_token, user_id, created_ms, last_seen_ms FROM web_sessions WHERE session_hash = $1",
        &[&hash],
    )?
    else {
        return Ok(None);
    };
    let now = now_ms();
    let (created, seen): (i64, i64) = (row.get(3), row.get(4));
    let state: String = row.get(0);
    // A pending login (form shown, or password good and code pending) lives 10 minutes.
    let idle = if state == "auth" {
        app.web.idle_timeout_s as i64 * 1000
    } else {
        (app.web.idle_timeout_s as i64 * 1000).min(600_000)
    };
    if now - seen > idle || now - created > app.web.absolute_timeout_s as i64 * 1000 {
        c.execute("DELETE FROM web_sessions WHERE session_hash = $1", &[&hash])?;
        return Ok(None);
    }
    let user = match row.get::<_, Option<i64>>(2) {
        Some(u) => load_user(c, u)?,
        None => None,
    };
    if state != "anon" && user.is_none() {
        c.execute("DELETE FROM web_sessions WHERE session_hash = $1", &[&hash])?;
        return Ok(None);
    }
    c.execute(
        "UPDATE web_sessions SET last_seen_ms = $2 WHERE session_hash = $1",
        &[&hash, &now],
    )?;
    Ok(Some(Session {
        hash,
        state,
        csrf: row.get(1),
        user,
    }))
}

/// Start a new session (a new id: also on every change of state, against fixation).
/// Returns the session and the cookie to set.
pub fn new_session(
    c: &mut postgres::Client,
    state: &str,
    user: Option<&User>,
    replaces: Option<&str>,
) -> Result<(Session, String), WebError> {
    if let Some(old) = replaces {
        c.execute("DELETE FROM web_sessions WHERE session_hash = $1", &[&old])?;
    }
    let id = token();
    let hash = sha_hex(&id);
    let csrf = token();
    let now = now_ms();
    c.execute(
        "INSERT INTO web_sessions (session_hash, state, user_id, csrf_token, created_ms, last_seen_ms)
         VALUES ($1, $2, $3, $4, $5, $5)",
        &[&hash, &state, &user.map(|u| u.id), &csrf, &now],
    )?;
    Ok((
        Session {
            hash,
            state: state.into(),
            csrf,
            user: user.cloned(),
        },
        cookie(&id),
    ))
}

/// Drop expired sessions and grants.
pub fn sweep(app: &App) {
    let now = now_ms();
    if let Ok(mut c) = app.pool.get() {
        let _ = c.execute(
            "DELETE FROM web_sessions WHERE last_seen_ms < $1 OR created_ms < $2",
            &[
                &(now - app.web.idle_timeout_s as i64 * 1000),
                &(now - app.web.absolute_timeout_s as i64 * 1000),
            ],
        );
    }
    if let Ok(mut g) = app.grants.lock() {
        g.retain(|_, v| v.expires_ms > now);
    }
}

pub fn csrf_ok(s: &Session, r: &Req) -> bool {
    let given = r
        .header("x-csrf-token")
        .map(str::to_string)
        .or_else(|| {
            let ct = r.header("content-type").unwrap_or("");
            ct.starts_with("application/x-www-form-urlencoded")
                .then(|| field(&r.form(), "csrf").to_string())
        })
        .unwrap_or_default();
    !given.is_empty() && subtle::ConstantTimeEq::ct_eq(given.as_bytes(), s.csrf.as_bytes()).into()
}

/// Context of a signed-in request.
pub struct Ctx<'a> {
    /// The app.
    pub app: &'a App,
    /// The session.
    pub session: Session,
    /// The user.
    pub user: User,
    /// An index connection.
    pub db: super::Conn<'a>,
}

/// Start a signed-in session for account `uid` (audited as `login` with `method`):
/// the user and the cookie to set.
pub fn sign_in(
    app: &App,
    c: &mut postgres::Client,
    uid: i64,
    method: &str,
) -> Result<(User, String), WebError> {
    let user = load_user(c, uid)?.ok_or(WebError::Unauthenticated)?;
    let (_, set) = new_session(c, "auth", Some(&user), None)?;
    app.metrics.logins.fetch_add(1, Ordering::Relaxed);
    app.audit(
        c,
        &user.actor(),
        "login",
        &user.username,
        &serde_json::json!({ "method": method, "role": user.role.as_str() }),
    )?;
    Ok((user, set))
}

// ---------------------------------------------------------------------------------------
// Accounts (CLI)

/// A new local account: returns the TOTP secret (shown once, to enrol an authenticator).
pub fn add_user(
    c: &mut postgres::Client,
    username: &str,
    role: Role,
    sites: &[String],
    password: &str,
) -> Result<Vec<u8>, WebError> {
    if username.is_empty() || username.len() > 64 || username.contains(char::is_whitespace) {
        return Err(WebError::BadRequest(
            "user name: 1 to 64 characters, no spaces".into(),
        ));
    }
    if password.chars().count() < 12 {
        return Err(WebError::BadRequest(
            "password: at least 12 characters".into(),
        ));
    }
    if role == Role::Supervisor && sites.is_empty() {
        return Err(WebError::BadRequest(
            "a supervisor needs at least one --site".into(),
        ));
    }
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let phc = hash_password(password)?;
    c.execute(
        "INSERT INTO web_users (username, role, sites, password_hash, totp_secret, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&username, &role.as_str(), &sites, &phc, &secret, &now_ms()],
    )?;
    Ok(secret)
}

/// A new account signing in through OpenID Connect only (no password, no local TOTP: the
/// provider authenticates), bound to (issuer, subject).
pub fn add_oidc_user(
    c: &mut postgres::Client,
    username: &str,
    role: Role,
    sites: &[String],
    issuer: &str,
    subject: &str,
) -> Result<(), WebError> {
    if username.is_empty() || username.len() > 64 || username.contains(char::is_whitespace) {
        return Err(WebError::BadRequest(
            "user name: 1 to 64 characters, no spaces".into(),
        ));
    }
    if role == Role::Supervisor && sites.is_empty() {
        return Err(WebError::BadRequest(
            "a supervisor needs at least one --site".into(),
        ));
    }
    c.execute(
        "INSERT INTO web_users (username, role, sites, oidc_issuer, oidc_subject, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &username,
            &role.as_str(),
            &sites,
            &issuer,
            &subject,
            &now_ms(),
        ],
    )?;
    Ok(())
}
