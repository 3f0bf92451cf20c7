//! Trickle upload to a central S3-compatible archive, and the status central IT sees.
//!
//! Sans-IO cores (in `branchrec_core::uplink`, re-exported): [`planner`] (what next), [`multipart`] (resumable upload state machine
//! with end-to-end checksums), [`rate`] (token bucket, time windows, congestion back-off),
//! [`sigv4`] (request signing), [`status`] (the status document and the fleet view).
//! Shells: [`s3`] (reqwest + rustls, [`tls`] for CAs and pinning); the daemon's upload
//! loop and status pushes are `app::uplink`, its Prometheus `/metrics` `app::metrics`.
//!
//! What goes to the archive for a recording with key `K` (from `uplink.key_layout`):
//! `K` — the encrypted container exactly as on disk (never plaintext, never keys);
//! `K.json` — the metadata document; `K.manifest` — the signed manifest, once recordings
//! have one (see `app::uplink::manifest_for`).

pub mod config;
pub mod s3;
pub mod tls;

pub use branchrec_core::uplink::{multipart, planner, rate, sigv4, status};

use std::path::Path;

pub use config::UplinkConfig;
use zeroize::Zeroizing;

/// Errors setting up the uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Credentials missing or unreadable.
    #[error("uplink credentials: {0}")]
    Credentials(String),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// Client setup.
    #[error(transparent)]
    S3(#[from] s3::S3Error),
    /// Bad configuration.
    #[error("uplink configuration: {0}")]
    Config(String),
}

/// Load credentials: `credentials_file` if configured, else the environment
/// (`BRANCHREC_S3_*`, then `AWS_*`). The secret is never logged.
pub fn load_credentials(file: Option<&Path>) -> Result<sigv4::Credentials, UplinkError> {
    let err = |m: String| UplinkError::Credentials(m);
    if let Some(p) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| err(format!("{}: {e}", p.display())))?,
        );
        let mut id = None;
        let mut secret = None;
        let mut token = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "access_key_id" | "aws_access_key_id" => id = Some(v),
                "secret_access_key" | "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
                "session_token" | "aws_session_token" => token = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
        return match (id, secret) {
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok(sigv4::Credentials {
                access_key_id: a,
                secret_access_key: s,
                session_token: token,
            }),
            _ => Err(err(format!(
                "{}: needs access_key_id and secret_access_key",
                p.display()
            ))),
        };
    }
    for (a, s, t) in [
        (
            "BRANCHREC_S3_ACCESS_KEY_ID",
            "BRANCHREC_S3_SECRET_ACCESS_KEY",
            "BRANCHREC_S3_SESSION_TOKEN",
        ),
        (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ),
    ] {
        if let (Ok(a), Ok(s)) = (std::env::var(a), std::env::var(s)) {
            if !a.is_empty() && !s.is_empty() {
                return Ok(sigv4::Credentials {
                    access_key_id: a,
                    secret_access_key: Zeroizing::new(s),
                    session_token: std::env::var(t).ok().map(Zeroizing::new),
                });
            }
        }
    }
    Err(err(
        "no credentials_file configured and BRANCHREC_S3_ACCESS_KEY_ID / \
         BRANCHREC_S3_SECRET_ACCESS_KEY (or AWS_*) not set"
            .into(),
    ))
}

/// The object key of a recording: `prefix` + `layout` with placeholders filled.
pub fn object_key(cfg: &UplinkConfig, id: &str, started_at_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(started_at_ms).unwrap_or_default();
    let k = cfg
        .key_layout
        .replace("{site}", &cfg.site)
        .replace("{box}", &cfg.box_id)
        .replace("{yyyy}", &t.format("%Y").to_string())
        .replace("{mm}", &t.format("%m").to_string())
        .replace("{dd}", &t.format("%d").to_string())
        .replace("{id}", id);
    format!("{}{}", cfg.prefix, k)
}

/// Key of a box's status document.
pub fn status_key(prefix: &str, box_id: &str) -> String {
    format!("{prefix}_status/{box_id}.json")
}

/// Where a box announces that a recording's archived document was published again
/// (its hold state changed after the upload): `_holds/<box>/<ms, 13 digits>-<id>.json`,
/// in time order per box, so the central indexer follows them with a position per box.
pub fn hold_notice_key(prefix: &str, box_id: &str, at_ms: i64, recording_id: &str) -> String {
    format!(
        "{prefix}_holds/{box_id}/{:013}-{recording_id}.json",
        at_ms.max(0)
    )
}

/// Build the S3 client of a configuration (TLS, credentials, shaper).
pub fn client(
    cfg: &UplinkConfig,
    shaper: std::sync::Arc<s3::Shaper>,
) -> Result<s3::S3Client, UplinkError> {
    let base = reqwest::Url::parse(&cfg.endpoint)
        .map_err(|e| UplinkError::Config(format!("endpoint `{}`: {e}", cfg.endpoint)))?;
    if base.scheme() == "http" && !cfg.allow_insecure_http {
        return Err(UplinkError::Config(
            "plain http endpoint refused (allow_insecure_http is for tests only)".into(),
        ));
    }
    let creds = load_credentials(cfg.credentials_file.as_deref())?;
    let tls = tls::client_config(cfg.ca_file.as_deref(), &cfg.pin_sha256)?;
    Ok(s3::S3Client::new(
        s3::Endpoint {
            base,
            region: cfg.region.clone(),
            bucket: cfg.bucket.clone(),
            path_style: cfg.path_style,
        },
        creds,
        tls,
        shaper,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let cfg = UplinkConfig {
            prefix: "archive/".into(),
            site: "lyon".into(),
            box_id: "br-7".into(),
            ..Default::default()
        };
        // 2024-03-05T10:00:00Z
        assert_eq!(
            object_key(&cfg, "abc", 1_709_632_800_000),
            "archive/lyon/br-7/2024/03/05/abc"
        );
        assert_eq!(status_key("archive/", "br-7"), "archive/_status/br-7.json");
    }

    #[test]
    fn credentials_file_forms() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = AK\naws_secret_access_key = \"SEC\"\n",
        )
        .unwrap();
        let c = load_credentials(Some(&p)).unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.secret_access_key.as_str(), "SEC");
        std::fs::write(&p, "access_key_id = AK\n").unwrap();
        let e = load_credentials(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("secret_access_key"), "{e}");
        assert!(!e.contains("AK\n"));
    }
}
