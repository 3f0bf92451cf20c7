//! OpenID Connect sign-in (authorization code flow with PKCE S256, RFC 7636): `/login/oidc`
//! sends the browser to the provider with `state`, `nonce` and the code challenge, kept in
//! a pending-login row bound to a short-lived `SameSite=Lax` cookie (the provider's
//! redirect back is a cross-site navigation, on which the `Strict` session cookie is not
//! sent); `/login/oidc/callback` checks `state`, redeems the code with the verifier and
//! the client secret, verifies the ID token (RS256 with the provider's JWKS; `iss`, `aud`,
//! `exp`, `nonce`) and signs in the account bound to (issuer, subject). Accounts are
//! bound by an administrator (`user add NAME --role R --oidc-subject SUB`); the second
//! factor is the provider's.

use std::path::PathBuf;

use base64::Engine as _;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::{self, token};
use super::{App, Req, Resp, WebError};
use crate::central::index::now_ms;

/// `[web.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// This console's client id at the provider.
    pub client_id: String,
    /// File holding the client secret (one line).
    pub client_secret_file: PathBuf,
    /// The callback registered at the provider: `https://<console>/login/oidc/callback`.
    pub redirect_uri: String,
    /// CA certificate(s) (PEM) the provider's TLS certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow an `http://` issuer on a loopback address (tests only).
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// Label of the button on the sign-in page.
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_label() -> String {
    "Sign in with SSO".into()
}

impl OidcConfig {
    /// Check the values.
    pub fn validate(&self) -> Result<(), WebError> {
        let bad = |m: String| Err(WebError::Config(format!("[web.oidc] {m}")));
        let loopback = ["http://127.", "http://localhost:", "http://[::1]:"]
            .iter()
            .any(|p| self.issuer.starts_with(p));
        if !(self.issuer.starts_with("https://") || (self.allow_http_loopback && loopback)) {
            return bad(format!(
                "issuer {:?} must be https:// (http only on loopback with allow_http_loopback)",
                self.issuer
            ));
        }
        if !self.redirect_uri.starts_with("https://")
            || !self.redirect_uri.ends_with("/login/oidc/callback")
        {
            return bad("redirect_uri must be https://…/login/oidc/callback".into());
        }
        if self.client_id.is_empty() {
            return bad("client_id is empty".into());
        }
        if !self.client_secret_file.is_file() {
            return bad(format!(
                "client_secret_file {} is not a file",
                self.client_secret_file.display()
            ));
        }
        Ok(())
    }
}

/// The pending-login cookie (`Lax`: it must come back on the provider's redirect).
pub const FLOW_COOKIE: &str = "__Host-branchrec_oidc";

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unb64u(s: &str) -> Result<Vec<u8>, WebError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| WebError::Login("SSO: malformed token".into()))
}

fn http(cfg: &OidcConfig) -> Result<reqwest::Client, WebError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(std::time::Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| WebError::Config(format!("{}: {e}", ca.display())))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| WebError::Config(format!("{}: {e}", ca.display())))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| WebError::Internal(format!("HTTP client: {e}")))
}

fn block<T>(f: impl std::future::Future<Output = Result<T, WebError>>) -> Result<T, WebError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WebError::Internal(e.to_string()))?
        .block_on(f)
}

fn sso(e: impl std::fmt::Display) -> WebError {
    WebError::Login(format!("SSO: {e}"))
}

async fn get_json(c: &reqwest::Client, url: &str) -> Result<Value, WebError> {
    let r = c.get(url).send().await.map_err(sso)?;
    if !r.status().is_success() {
        return Err(sso(format!("{url}: HTTP {}", r.status())));
    }
    serde_json::from_slice(&r.bytes().await.map_err(sso)?).map_err(sso)
}

fn discovery(cfg: &OidcConfig) -> Result<Value, WebError> {
    let c = http(cfg)?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        cfg.issuer.trim_end_matches('/')
    );
    let d = block(async { get_json(&c, &url).await })?;
    if d["issuer"].as_str() != Some(cfg.issuer.as_str()) {
        return Err(sso(format!(
            "the discovery document names issuer {}, not {}",
            d["issuer"], cfg.issuer
        )));
    }
    Ok(d)
}

fn cookie_of(r: &Req, name: &str) -> Option<String> {
    for h in r.headers.get_all(hyper::header::COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == name && !v.is_empty() {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// `GET /login/oidc`: to the provider.
pub fn start(app: &App, c: &mut postgres::Client) -> Result<Resp, WebError> {
    let cfg = app.web.oidc.as_ref().ok_or(WebError::NotFound)?;
    let d = discovery(cfg)?;
    let auth_ep = d["authorization_endpoint"]
        .as_str()
        .ok_or_else(|| sso("no authorization_endpoint"))?;
    let (state, nonce, verifier) = (token(), token(), token());
    let challenge = b64u(&Sha256::digest(verifier.as_bytes()));
    let id = token();
    let now = now_ms();
    c.execute(
        "INSERT INTO web_sessions (session_hash, state, user_id, csrf_token, created_ms, last_seen_ms, oidc_pending)
         VALUES ($1, 'anon', NULL, $2, $3, $3, $4)",
        &[
            &hex::encode(Sha256::digest(id.as_bytes())),
            &token(),
            &now,
            &json!({ "state": state, "nonce": nonce, "verifier": verifier }),
        ],
    )?;
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", &cfg.redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if auth_ep.contains('?') { '&' } else { '?' };
    Ok(Resp::redirect(&format!("{auth_ep}{sep}{q}")).with(
        hyper::header::SET_COOKIE,
        format!("{FLOW_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"),
    ))
}

/// Verify an RS256 JWT with the JWKS; its claims.
fn verify_id_token(jwt: &str, jwks: &Value) -> Result<Value, WebError> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(sso("the ID token is not a JWS"));
    };
    let header: Value = serde_json::from_slice(&unb64u(h)?).map_err(sso)?;
    if header["alg"] != "RS256" {
        return Err(sso(format!(
            "ID token algorithm {} (RS256 expected)",
            header["alg"]
        )));
    }
    let kid = header["kid"].as_str();
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kty"] == "RSA" && (kid.is_none() || k["kid"].as_str() == kid))
        .ok_or_else(|| sso("no RSA key in the provider's JWKS for the ID token"))?;
    let n = rsa::BigUint::from_bytes_be(&unb64u(key["n"].as_str().unwrap_or(""))?);
    let e = rsa::BigUint::from_bytes_be(&unb64u(key["e"].as_str().unwrap_or(""))?);
    let pk = rsa::RsaPublicKey::new(n, e).map_err(sso)?;
    let sig = Signature::try_from(unb64u(s)?.as_slice()).map_err(sso)?;
    VerifyingKey::<Sha256>::new(pk)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| sso("the ID token's signature does not verify"))?;
    serde_json::from_slice(&unb64u(p)?).map_err(sso)
}

/// `GET /login/oidc/callback?code=…&state=…`.
pub fn callback(app: &App, c: &mut postgres::Client, r: &Req) -> Result<Resp, WebError> {
    let cfg = app.web.oidc.as_ref().ok_or(WebError::NotFound)?;
    let flow =
        cookie_of(r, FLOW_COOKIE).ok_or_else(|| sso("no sign-in in progress in this browser"))?;
    let hash = hex::encode(Sha256::digest(flow.as_bytes()));
    let row = c
        .query_opt(
            "DELETE FROM web_sessions WHERE session_hash = $1 AND oidc_pending IS NOT NULL RETURNING oidc_pending, created_ms",
            &[&hash],
        )?
        .ok_or_else(|| sso("no sign-in in progress (expired?)"))?;
    let pending: Value = row.get(0);
    if now_ms() - row.get::<_, i64>(1) > 600_000 {
        return Err(sso("the sign-in took too long"));
    }
    if let Some(e) = r.q("error") {
        return Err(sso(format!("the provider refused: {e}")));
    }
    let state = r.q("state").unwrap_or("");
    if state.is_empty() || pending["state"].as_str() != Some(state) {
        return Err(sso("state does not match"));
    }
    if let Some(iss) = r.q("iss") {
        if iss != cfg.issuer {
            return Err(sso("the response names another issuer"));
        }
    }
    let code = r.q("code").ok_or_else(|| sso("no code"))?.to_string();
    let d = discovery(cfg)?;
    let token_ep = d["token_endpoint"]
        .as_str()
        .ok_or_else(|| sso("no token_endpoint"))?
        .to_string();
    let jwks_uri = d["jwks_uri"]
        .as_str()
        .ok_or_else(|| sso("no jwks_uri"))?
        .to_string();
    let secret = std::fs::read_to_string(&cfg.client_secret_file)
        .map_err(|e| WebError::Config(format!("client_secret_file: {e}")))?;
    let client = http(cfg)?;
    let verifier = pending["verifier"].as_str().unwrap_or("").to_string();
    let (tok, jwks) = block(async {
        let resp = client
            .post(&token_ep)
            .basic_auth(&cfg.client_id, Some(secret.trim()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", cfg.redirect_uri.as_str()),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .map_err(sso)?;
        let status = resp.status();
        let tok: Value =
            serde_json::from_slice(&resp.bytes().await.map_err(sso)?).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(sso(format!(
                "token endpoint: HTTP {status} {}",
                tok["error"]
            )));
        }
        let jwks = get_json(&client, &jwks_uri).await?;
        Ok((tok, jwks))
    })?;
    let id_token = tok["id_token"].as_str().ok_or_else(|| sso("no id_token"))?;
    let claims = verify_id_token(id_token, &jwks)?;
    let now_s = now_ms() / 1000;
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == &cfg.client_id,
        Value::Array(a) => a.iter().any(|x| x.as_str() == Some(cfg.client_id.as_str())),
        _ => false,
    };
    if claims["iss"].as_str() != Some(cfg.issuer.as_str()) || !aud_ok {
        return Err(sso("the ID token is for another issuer or client"));
    }
    if claims["exp"].as_i64().map_or(true, |e| e + 60 < now_s) {
        return Err(sso("the ID token expired"));
    }
    if claims["nonce"].as_str() != pending["nonce"].as_str() {
        return Err(sso("nonce does not match"));
    }
    let sub = claims["sub"].as_str().ok_or_else(|| sso("no subject"))?;
    let Some(uid) = c
        .query_opt(
            "SELECT user_id FROM web_users WHERE oidc_issuer = $1 AND oidc_subject = $2 AND NOT disabled",
            &[&cfg.issuer, &sub],
        )?
        .map(|r| r.get::<_, i64>(0))
    else {
        app.audit(c, "web:-", "login_failed", "oidc", &json!({ "issuer": cfg.issuer, "why": "no account bound to this subject" }))?;
        return Err(WebError::Forbidden(
            "no console account is bound to this identity: ask an administrator".into(),
        ));
    };
    let (user, set) = auth::sign_in(app, c, uid, "oidc")?;
    let _ = user;
    // A page of our own continues: the redirect chain from the provider is cross-site,
    // and the Strict session cookie is only sent on a same-site navigation.
    Ok(Resp::html(StatusCode::OK, super::html::continue_page())
        .with(hyper::header::SET_COOKIE, set)
        .with(
            hyper::header::SET_COOKIE,
            format!("{FLOW_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
        ))
}
