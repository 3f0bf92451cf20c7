//! `branchrec-central serve`: the web compliance console (issue #15, docs/web-console.md).
//! HTTPS (rustls) served by the central binary; server-rendered pages with a little
//! vanilla JavaScript and a versioned JSON API under `/api/v1` (docs/web-console-openapi.yaml),
//! both on the index (PostgreSQL), the archive and the compliance key. Every request is
//! authorised on the server ([`branchrec_core::console::Role`]).
//!
//! Layers (no file imports one above it; tests/module_graph.rs):
//! - [`auth`]: accounts, sessions in PostgreSQL, cookies, CSRF tokens, Argon2id.
//! - [`html`]: layout and templates; [`access`]: what the API and the pages share
//!   (search, access checks, decryption into memory, fleet, audit).
//! - [`cases`] (cases, legal holds, two-person release) and [`oidc`] (SSO).
//! - [`api`] (JSON API, grants, streaming with Range, WAV download) and [`pages`].
//! - [`login`]: the request pipeline and the sign-in pages (password, TOTP, lockout).
//! - [`cli`]: `serve` and `user add|list`.
//!
//! Requests are read whole (bodies are small forms and JSON, at most 1 MiB) and handled
//! on the blocking pool: the index client and the archive reader are synchronous.

pub mod access;
pub mod api;
pub mod auth;
pub mod cases;
pub mod cli;
pub mod html;
pub mod login;
pub mod oidc;
pub mod pages;
pub mod saved;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use thiserror::Error;

use branchrec_core::console::{LoginLimiter, Role};

use super::index::audit::AuditKey;
use super::index::IndexConfig;
use super::{CentralConfig, ComplianceKey};

/// Errors of the console.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WebError {
    /// `[web]` is missing or invalid.
    #[error("web configuration: {0}")]
    Config(String),
    /// Not signed in (or the session expired).
    #[error("sign in first")]
    Unauthenticated,
    /// Signed in, not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A state-changing request without the session's CSRF token.
    #[error("missing or wrong CSRF token")]
    Csrf,
    /// No such page or object.
    #[error("not found")]
    NotFound,
    /// Malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Rate limited or locked out.
    #[error("{0}")]
    TooMany(String),
    /// Wrong credentials.
    #[error("{0}")]
    Login(String),
    /// Range not satisfiable.
    #[error("range not satisfiable")]
    Range(u64),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    /// The archive or the compliance key failed.
    #[error(transparent)]
    Central(#[from] super::CentralError),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] postgres::Error),
    /// Anything else on the server.
    #[error("internal: {0}")]
    Internal(String),
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_idle() -> u64 {
    900
}
fn default_absolute() -> u64 {
    8 * 3600
}
fn default_max_failures() -> u32 {
    5
}
fn default_lockout() -> u64 {
    900
}
fn default_ip_failures() -> u32 {
    20
}
fn default_reason_roles() -> Vec<String> {
    vec!["compliance".into(), "supervisor".into()]
}
fn default_stale() -> u64 {
    900
}
fn default_backlog() -> i64 {
    100
}
fn default_grant_ttl() -> u64 {
    1800
}
fn default_cache() -> usize {
    8
}
fn default_max_audio_mb() -> u64 {
    512
}
fn default_page_size() -> i64 {
    50
}
fn yes() -> bool {
    true
}

/// `[web]` of central.toml (etc/central.toml documents every key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port to listen on (HTTPS only).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Server certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Its private key (PEM, PKCS#8 or SEC1/PKCS#1).
    pub tls_key: PathBuf,
    /// Sign out after this long without a request (seconds).
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// Sign out this long after signing in, whatever happens (seconds).
    #[serde(default = "default_absolute")]
    pub absolute_timeout_s: u64,
    /// Failed passwords or TOTP codes in a row that lock an account.
    #[serde(default = "default_max_failures")]
    pub max_failed_logins: u32,
    /// How long a locked account stays locked (seconds).
    #[serde(default = "default_lockout")]
    pub lockout_s: u64,
    /// Failed logins per client address per `lockout_s` before the address is refused.
    #[serde(default = "default_ip_failures")]
    pub max_failed_logins_per_address: u32,
    /// Roles that must give a reason (case id, free text) before play or download; the
    /// reason is stored in the audit entry.
    #[serde(default = "default_reason_roles")]
    pub reason_required: Vec<String>,
    /// A box whose last status is older than this is stale (fleet page, alarm colour).
    #[serde(default = "default_stale")]
    pub stale_after_s: u64,
    /// A box with more pending recordings than this is backlogged.
    #[serde(default = "default_backlog")]
    pub backlog_alarm: i64,
    /// How long a play/download grant lives (seconds).
    #[serde(default = "default_grant_ttl")]
    pub grant_ttl_s: u64,
    /// Decrypted recordings kept in memory for streaming (never on disk).
    #[serde(default = "default_cache")]
    pub audio_cache_entries: usize,
    /// Largest recording decrypted into memory, MiB.
    #[serde(default = "default_max_audio_mb")]
    pub max_audio_mb: u64,
    /// Search results per page.
    #[serde(default = "default_page_size")]
    pub page_size: i64,
    /// Access log (one line per request: method, path without query, status, time, user
    /// id; no names, numbers or query strings). Absent: the service log.
    #[serde(default)]
    pub access_log: Option<PathBuf>,
    /// Serve Prometheus `/metrics` (no personal data; no session needed).
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Issuer shown by authenticator apps.
    #[serde(default = "default_issuer")]
    pub totp_issuer: String,
    /// OpenID Connect single sign-on (`[web.oidc]`); absent: local accounts only.
    #[serde(default)]
    pub oidc: Option<oidc::OidcConfig>,
}

fn default_issuer() -> String {
    "branchrec".into()
}

impl WebConfig {
    /// Check the values.
    pub fn validate(&self) -> Result<SocketAddr, WebError> {
        let bad = |m: String| Err(WebError::Config(m));
        let addr: SocketAddr = match self.listen.parse() {
            Ok(a) => a,
            Err(_) => {
                return bad(format!(
                    "[web] listen {:?} is not ADDRESS:PORT",
                    self.listen
                ))
            }
        };
        for (k, p) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            if !p.is_file() {
                return bad(format!("[web] {k} {} is not a file", p.display()));
            }
        }
        if self.idle_timeout_s == 0 || self.absolute_timeout_s == 0 {
            return bad("[web] idle_timeout_s and absolute_timeout_s must be > 0".into());
        }
        if self.idle_timeout_s > self.absolute_timeout_s {
            return bad("[web] idle_timeout_s must not exceed absolute_timeout_s".into());
        }
        if self.max_failed_logins == 0 || self.max_failed_logins_per_address == 0 {
            return bad("[web] max_failed_logins* must be > 0".into());
        }
        for r in &self.reason_required {
            Role::parse(r).map_err(|e| WebError::Config(format!("[web] reason_required: {e}")))?;
        }
        if self.audio_cache_entries == 0 || self.max_audio_mb == 0 {
            return bad("[web] audio_cache_entries and max_audio_mb must be > 0".into());
        }
        if !(1..=1000).contains(&self.page_size) {
            return bad("[web] page_size must be 1..=1000".into());
        }
        if let Some(o) = &self.oidc {
            o.validate()?;
        }
        Ok(addr)
    }

    /// Whether `role` must give a reason to play or download.
    pub fn needs_reason(&self, role: Role) -> bool {
        self.reason_required.iter().any(|r| r == role.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// State

/// A small pool of index connections (the handlers run on the blocking pool).
pub struct Pool {
    conninfo: String,
    idle: Mutex<Vec<postgres::Client>>,
}

/// A pooled connection, returned on drop.
pub struct Conn<'a> {
    c: Option<postgres::Client>,
    pool: &'a Pool,
}

impl std::ops::Deref for Conn<'_> {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        // Cannot fail: `c` is Some from checkout until Drop takes it back to the pool.
        self.c.as_ref().expect("present until drop")
    }
}
impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        // Cannot fail: as in `deref`.
        self.c.as_mut().expect("present until drop")
    }
}
impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            if !c.is_closed() {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < 16 {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    /// A connection (a new one when none is idle).
    pub fn get(&self) -> Result<Conn<'_>, WebError> {
        let c = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let c = match c {
            Some(c) => c,
            None => super::index::db::connect(&self.conninfo)?,
        };
        Ok(Conn {
            c: Some(c),
            pool: self,
        })
    }
}

/// A decrypted recording held for the grants that opened it.
pub struct Decrypted {
    /// The WAV, exactly as `central export` writes it.
    pub wav: zeroize::Zeroizing<Vec<u8>>,
    /// Per-channel waveform peaks.
    pub peaks: Vec<Vec<(f32, f32)>>,
    /// Channels and rate.
    pub channels: u16,
    /// Sample rate.
    pub sample_rate: u32,
}

/// A play or download grant: what a session may fetch, once it has stated its reason.
#[derive(Clone)]
pub struct Grant {
    /// The session it belongs to (hash).
    pub session: String,
    /// Recording.
    pub recording_id: String,
    /// `play` or `download`.
    pub purpose: String,
    /// Expiry (unix ms).
    pub expires_ms: i64,
    /// The audio.
    pub audio: Arc<Decrypted>,
    /// A download grant for Ogg Opus or the evidence bundle: the file, made at grant
    /// time (in memory, zeroised when dropped); `None`: WAV.
    pub file: Option<Arc<DownloadFile>>,
}

/// A download other than the WAV, made in memory for one grant.
pub struct DownloadFile {
    /// `opus` or `evidence` (the URL's last segment).
    pub format: &'static str,
    /// Content-Type.
    pub content_type: &'static str,
    /// File name extension.
    pub ext: &'static str,
    /// The bytes.
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Requests by status class.
    pub requests: [AtomicU64; 6],
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Refused (forbidden) requests.
    pub forbidden: AtomicU64,
    /// Recordings decrypted.
    pub decrypts: AtomicU64,
    /// Audio bytes served.
    pub audio_bytes: AtomicU64,
    /// Sum of request handling time, µs.
    pub handling_us: AtomicU64,
}

/// Everything a request needs.
pub struct App {
    /// `[web]`.
    pub web: WebConfig,
    /// central.toml.
    pub central: CentralConfig,
    /// `[index]`.
    pub ix: IndexConfig,
    /// The compliance key (HSM or PEM).
    pub key: Box<dyn ComplianceKey>,
    /// The central command key (legal holds from the console); `None`: no holds.
    pub command_key: Option<Mutex<Box<dyn super::command::CommandKey + Send>>>,
    /// The central audit key.
    pub audit_key: AuditKey,
    /// Index connections.
    pub pool: Pool,
    /// Failed logins per address.
    pub limiter: Mutex<LoginLimiter>,
    /// Grants by token.
    pub grants: Mutex<HashMap<String, Grant>>,
    /// Decrypted audio by recording id (bounded, [`WebConfig::audio_cache_entries`]).
    pub cache: Mutex<Vec<(String, Arc<Decrypted>)>>,
    /// Counters.
    pub metrics: Metrics,
    access_log: Mutex<Option<std::fs::File>>,
    started_ms: i64,
}

// ---------------------------------------------------------------------------------------
// Requests and responses

/// A request, read whole.
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path (percent-decoding is not needed: ids are UUIDs).
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Client address.
    pub peer: IpAddr,
}

impl Req {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as form fields.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// Whether the request is for the JSON API.
    pub fn is_api(&self) -> bool {
        self.path.starts_with("/api/")
    }
}

/// One form field.
pub fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// A response.
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: Vec<(HeaderName, String)>,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// An HTML page.
    pub fn html(status: StatusCode, body: String) -> Resp {
        Resp {
            status,
            headers: vec![(
                hyper::header::CONTENT_TYPE,
                "text/html; charset=utf-8".into(),
            )],
            body: body.into(),
        }
    }

    /// JSON.
    pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
        Resp {
            status,
            headers: vec![(hyper::header::CONTENT_TYPE, "application/json".into())],
            body: v.to_string().into(),
        }
    }

    /// 303 to `to`.
    pub fn redirect(to: &str) -> Resp {
        Resp {
            status: StatusCode::SEE_OTHER,
            headers: vec![(hyper::header::LOCATION, to.into())],
            body: Bytes::new(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: HeaderName, value: impl Into<String>) -> Resp {
        self.headers.push((name, value.into()));
        self
    }
}

/// The Content-Security-Policy of every response: our own scripts, styles, images and
/// media only; no inline code, no framing, forms to ourselves.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if !h.contains_key(hyper::header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
}

impl App {
    /// Build the state: connect the index (migrating), load the audit key, open the
    /// access log.
    pub fn new(
        central: CentralConfig,
        key: Box<dyn ComplianceKey>,
        command_key: Option<Box<dyn super::command::CommandKey + Send>>,
    ) -> Result<App, WebError> {
        let web = central
            .web
            .clone()
            .ok_or_else(|| WebError::Config("central.toml has no [web] section".into()))?;
        web.validate()?;
        let ix = central
            .index
            .clone()
            .ok_or_else(|| WebError::Config("the console needs [index]".into()))?;
        ix.validate()?;
        let audit_key = AuditKey::load(&ix.audit_key)?;
        let mut c = super::index::db::connect(&ix.database)?;
        super::index::db::migrate(&mut c)?;
        let access_log = match &web.access_log {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| WebError::Config(format!("access_log {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let limiter = LoginLimiter::new(
            web.max_failed_logins_per_address as usize,
            web.lockout_s as i64 * 1000,
        );
        Ok(App {
            pool: Pool {
                conninfo: ix.database.clone(),
                idle: Mutex::new(vec![c]),
            },
            web,
            central,
            ix,
            key,
            command_key: command_key.map(Mutex::new),
            audit_key,
            limiter: Mutex::new(limiter),
            grants: Mutex::new(HashMap::new()),
            cache: Mutex::new(Vec::new()),
            metrics: Metrics::default(),
            access_log: Mutex::new(access_log),
            started_ms: super::index::now_ms(),
        })
    }

    /// Append to the central audit log as `user`.
    pub fn audit(
        &self,
        c: &mut postgres::Client,
        actor: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> Result<(), WebError> {
        super::index::audit::append(c, &self.audit_key, actor, action, target, detail)?;
        Ok(())
    }

    fn log_access(&self, r: &Req, status: u16, us: u128, user: Option<i64>) {
        // Path only (ids, no query strings), the numeric user id: nothing personal.
        let path: String = r.path.chars().take(200).collect();
        let line = format!(
            "{} {} {} {} {}us user={}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            r.method,
            path,
            status,
            us,
            user.map_or("-".into(), |u| u.to_string())
        );
        let mut l = self.access_log.lock().unwrap_or_else(|p| p.into_inner());
        match l.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => tracing::info!(target: "access", "{}", line.trim_end()),
        }
    }

    fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut s = String::new();
        s.push_str("# HELP branchrec_central_web_requests_total HTTP requests by status class.\n# TYPE branchrec_central_web_requests_total counter\n");
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
            .iter()
            .enumerate()
        {
            s.push_str(&format!(
                "branchrec_central_web_requests_total{{code=\"{class}\"}} {}\n",
                m.requests[i].load(Ordering::Relaxed)
            ));
        }
        for (name, help, v) in [
            ("logins_total", "Successful sign-ins.", &m.logins),
            (
                "login_failures_total",
                "Failed sign-in attempts.",
                &m.login_failures,
            ),
            (
                "forbidden_total",
                "Requests refused by role or scope.",
                &m.forbidden,
            ),
            (
                "decrypts_total",
                "Recordings decrypted for play or download.",
                &m.decrypts,
            ),
            ("audio_bytes_total", "Audio bytes served.", &m.audio_bytes),
            (
                "handling_microseconds_total",
                "Time spent handling requests.",
                &m.handling_us,
            ),
        ] {
            s.push_str(&format!(
                "# HELP branchrec_central_web_{name} {help}\n# TYPE branchrec_central_web_{name} counter\nbranchrec_central_web_{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        let sessions = self
            .pool
            .get()
            .ok()
            .and_then(|mut c| {
                c.query_one(
                    "SELECT count(*) FROM web_sessions WHERE state = 'auth'",
                    &[],
                )
                .ok()
            })
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1);
        s.push_str(&format!(
            "# HELP branchrec_central_web_sessions Signed-in sessions.\n# TYPE branchrec_central_web_sessions gauge\nbranchrec_central_web_sessions {sessions}\n"
        ));
        s.push_str(&format!(
            "# HELP branchrec_central_web_audio_cached Decrypted recordings held in memory.\n# TYPE branchrec_central_web_audio_cached gauge\nbranchrec_central_web_audio_cached {}\n",
            self.cache.lock().map(|c| c.len()).unwrap_or(0)
        ));
        s.push_str(&format!(
            "# HELP branchrec_central_web_start_time_seconds Start of the service.\n# TYPE branchrec_central_web_start_time_seconds gauge\nbranchrec_central_web_start_time_seconds {}\n",
            self.started_ms / 1000
        ));
        s
    }

    /// Handle one request (on the blocking pool).
    pub fn handle(&self, r: Req) -> hyper::Response<Full<Bytes>> {
        let t0 = std::time::Instant::now();
        let (resp, user) = if r.path == "/metrics" && self.web.metrics && r.method == Method::GET {
            (
                Resp {
                    status: StatusCode::OK,
                    headers: vec![(
                        hyper::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4".into(),
                    )],
                    body: self.metrics_text().into(),
                },
                None,
            )
        } else {
            match login::dispatch(self, &r) {
                Ok(x) => x,
                Err((e, user)) => (self.error_response(&r, e), user),
            }
        };
        let us = t0.elapsed().as_micros();
        let status = resp.status.as_u16();
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.metrics.requests[class].fetch_add(1, Ordering::Relaxed);
        self.metrics
            .handling_us
            .fetch_add(us as u64, Ordering::Relaxed);
        self.log_access(&r, status, us, user);
        let mut b = hyper::Response::builder().status(resp.status);
        // Cannot fail: the builder only errs on an invalid status/header given to it, and
        // it has only been given a typed StatusCode so far.
        let h = b.headers_mut().expect("builder without error");
        for (k, v) in resp.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(k, v);
            }
        }
        secure_headers(h);
        b.body(Full::new(resp.body))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
    }

    fn error_response(&self, r: &Req, e: WebError) -> Resp {
        let (status, msg) = match &e {
            WebError::Unauthenticated => (StatusCode::UNAUTHORIZED, e.to_string()),
            WebError::Forbidden(_) => {
                self.metrics.forbidden.fetch_add(1, Ordering::Relaxed);
                (StatusCode::FORBIDDEN, e.to_string())
            }
            WebError::Csrf => (StatusCode::FORBIDDEN, e.to_string()),
            WebError::NotFound => (StatusCode::NOT_FOUND, e.to_string()),
            WebError::BadRequest(_) => (StatusCode::BAD_REQUEST, e.to_string()),
            WebError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            WebError::Login(_) => (StatusCode::UNAUTHORIZED, e.to_string()),
            WebError::Range(len) => {
                return Resp {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    headers: vec![(hyper::header::CONTENT_RANGE, format!("bytes */{len}"))],
                    body: Bytes::new(),
                }
            }
            WebError::Index(super::index::IndexError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not found".into())
            }
            WebError::Index(super::index::IndexError::Filter(m)) => {
                (StatusCode::BAD_REQUEST, format!("search filter: {m}"))
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the service log)".to_string(),
                )
            }
        };
        if r.is_api() {
            return Resp::json(status, &serde_json::json!({ "error": msg }));
        }
        if status == StatusCode::UNAUTHORIZED && !matches!(e, WebError::Login(_)) {
            return Resp::redirect("/login");
        }
        Resp::html(status, html::error_page(status, &msg))
    }
}

// ---------------------------------------------------------------------------------------
// Serving

fn tls_config(web: &WebConfig) -> Result<rustls::ServerConfig, WebError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| WebError::Config(format!("{}: {e}", p.display())))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(&web.tls_cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| WebError::Config(format!("{}: {e}", web.tls_cert.display())))?;
    if certs.is_empty() {
        return Err(WebError::Config(format!(
            "{}: no certificate",
            web.tls_cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut &read(&web.tls_key)?[..])
        .map_err(|e| WebError::Config(format!("{}: {e}", web.tls_key.display())))?
        .ok_or_else(|| WebError::Config(format!("{}: no private key", web.tls_key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebError::Config(format!("TLS certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn read_request(
    req: hyper::Request<hyper::body::Incoming>,
    peer: IpAddr,
) -> Result<Req, StatusCode> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, 1 << 20)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body,
        peer,
    })
}

/// Serve until the process is stopped (SIGTERM/SIGINT end it).
pub fn serve(app: App) -> anyhow::Result<()> {
    let addr = app.web.validate()?;
    let tls = Arc::new(tls_config(&app.web)?);
    let app = Arc::new(app);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tracing::info!(%addr, "web console listening (HTTPS)");
        // The test harness and operators wait for this line.
        println!("listening on https://{}", listener.local_addr()?);
        let _ = std::io::stdout().flush();
        // Expired sessions and grants go every minute.
        let sweeper = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                let a = sweeper.clone();
                let _ = tokio::task::spawn_blocking(move || auth::sweep(&a)).await;
            }
        });
        loop {
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => a?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move {
                        let r = match read_request(req, peer.ip()).await {
                            Ok(r) => r,
                            Err(s) => {
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = s;
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                        };
                        let resp = tokio::task::spawn_blocking(move || app.handle(r))
                            .await
                            .unwrap_or_else(|_| {
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                resp
                            });
                        Ok(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etc/central.toml (the commented reference) parses, and its [web] values are the
    /// defaults the code applies when a key is left out.
    #[test]
    fn reference_config_parses_with_the_defaults() {
        let text = include_str!("../../../etc/central.toml");
        let c: CentralConfig = toml::from_str(text).expect("etc/central.toml");
        let w = c.web.expect("[web]");
        let minimal: WebConfig =
            toml::from_str("tls_cert = \"/c\"\ntls_key = \"/k\"\n").expect("minimal [web]");
        assert_eq!(w.listen, minimal.listen);
        assert_eq!(w.idle_timeout_s, minimal.idle_timeout_s);
        assert_eq!(w.absolute_timeout_s, minimal.absolute_timeout_s);
        assert_eq!(w.max_failed_logins, minimal.max_failed_logins);
        assert_eq!(w.lockout_s, minimal.lockout_s);
        assert_eq!(
            w.max_failed_logins_per_address,
            minimal.max_failed_logins_per_address
        );
        assert_eq!(w.reason_required, minimal.reason_required);
        assert_eq!(w.stale_after_s, minimal.stale_after_s);
        assert_eq!(w.backlog_alarm, minimal.backlog_alarm);
        assert_eq!(w.grant_ttl_s, minimal.grant_ttl_s);
        assert_eq!(w.audio_cache_entries, minimal.audio_cache_entries);
        assert_eq!(w.max_audio_mb, minimal.max_audio_mb);
        assert_eq!(w.page_size, minimal.page_size);
        assert_eq!(w.metrics, minimal.metrics);
        assert_eq!(w.totp_issuer, minimal.totp_issuer);
        let ix = c.index.expect("[index]");
        ix.validate().unwrap();
    }

    #[test]
    fn web_config_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, "x").unwrap();
        std::fs::write(&k, "x").unwrap();
        let base = format!("tls_cert = {:?}\ntls_key = {:?}\n", c, k);
        let ok: WebConfig = toml::from_str(&base).unwrap();
        assert!(ok.validate().is_ok());
        for (extra, needle) in [
            ("listen = \"nowhere\"", "listen"),
            ("idle_timeout_s = 0", "idle_timeout_s"),
            (
                "idle_timeout_s = 100\nabsolute_timeout_s = 50",
                "idle_timeout_s",
            ),
            ("reason_required = [\"root\"]", "reason_required"),
            ("page_size = 0", "page_size"),
            ("max_failed_logins = 0", "max_failed_logins"),
        ] {
            let w: WebConfig = toml::from_str(&format!("{base}{extra}\n")).unwrap();
            let e = w.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        assert!(toml::from_str::<WebConfig>(&format!("{base}colour = 1\n")).is_err());
        let missing: WebConfig =
            toml::from_str("tls_cert = \"/nonexistent\"\ntls_key = \"/nonexistent\"\n").unwrap();
        assert!(missing
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls_cert"));
    }
}
