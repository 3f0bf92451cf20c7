//! `[uplink]`: the central archive, bandwidth and status settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::rate::{parse_rate, Schedule, Window};

/// `[uplink]` of the configuration file. Off unless `enabled = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Upload recordings and push status documents.
    pub enabled: bool,
    /// Base URL of the S3-compatible service, e.g. `https://s3.eu-central-1.amazonaws.com`
    /// or `https://minio.example.net:9000`.
    pub endpoint: String,
    /// SigV4 signing region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// `true`: `https://endpoint/bucket/key` (MinIO, Ceph, most on-premise);
    /// `false`: `https://bucket.endpoint/key` (virtual-hosted style).
    pub path_style: bool,
    /// Prefix before everything this box writes (may be empty), e.g. `branches/`.
    pub prefix: String,
    /// Object key of a recording below the prefix. Placeholders: `{site}`, `{box}`,
    /// `{yyyy}`, `{mm}`, `{dd}` (UTC start of the call), `{id}`.
    pub key_layout: String,
    /// Site name, used in keys and the status document.
    pub site: String,
    /// This box's id, used in keys and as the status document name.
    pub box_id: String,
    /// File with `access_key_id = …` and `secret_access_key = …` (AWS credentials file
    /// syntax accepted). Without it: `BRANCHREC_S3_ACCESS_KEY_ID` /
    /// `BRANCHREC_S3_SECRET_ACCESS_KEY`, then `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub credentials_file: Option<PathBuf>,
    /// PEM bundle of CAs trusted for the endpoint. Default: the system bundle
    /// `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_file: Option<PathBuf>,
    /// Pinned server keys: SHA-256 of the certificate's SubjectPublicKeyInfo, base64 or
    /// hex (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl
    /// dgst -sha256 -binary | base64`). When set, the server's key must be one of them.
    pub pin_sha256: Vec<String>,
    /// Allow `http://` endpoints. Only for tests: recordings would cross the network in
    /// the clear (still encrypted, but metadata and credentials signatures would not).
    pub allow_insecure_http: bool,
    /// Rate cap outside the windows: `64kbit`, `2mbit`, or `full`.
    pub rate: String,
    /// Time-of-day windows (local time) with their own rate; first match wins.
    /// `"HH:MM[:SS]-HH:MM[:SS] RATE"`, e.g. `["19:00-07:00 full"]`.
    pub windows: Vec<String>,
    /// Lower the rate when requests fail or round-trip times rise.
    pub congestion_backoff: bool,
    /// Lowest share of the scheduled rate congestion back-off may go down to (0.01–1).
    pub congestion_min_share: f64,
    /// Recordings uploaded at once.
    pub concurrency: usize,
    /// Multipart part size in KiB. AWS S3 and most servers require at least 5120 (5 MiB)
    /// for every part but the last.
    pub part_size_kb: u64,
    /// Seconds between status documents pushed to `<prefix>_status/<box>.json`.
    pub status_interval_s: u64,
    /// Attach S3 Object Lock legal hold to held recordings (bucket needs Object Lock).
    pub object_lock: bool,
    /// Prometheus `/metrics` listener, e.g. `127.0.0.1:9464`. Off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Allow `metrics_listen` on a non-loopback address.
    pub metrics_allow_remote: bool,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            enabled: false,
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            prefix: String::new(),
            key_layout: "{site}/{box}/{yyyy}/{mm}/{dd}/{id}".into(),
            site: "site".into(),
            box_id: "box".into(),
            credentials_file: None,
            ca_file: None,
            pin_sha256: Vec::new(),
            allow_insecure_http: false,
            rate: "full".into(),
            windows: Vec::new(),
            congestion_backoff: true,
            congestion_min_share: 0.1,
            concurrency: 2,
            part_size_kb: 8192,
            status_interval_s: 60,
            object_lock: true,
            metrics_listen: None,
            metrics_allow_remote: false,
        }
    }
}

/// Bytes charged per request beyond the headers we set: the headers the HTTP client adds
/// (user-agent, accept, content-length), TLS framing, and a share of the TLS handshake
/// for servers that close the connection after each answer.
pub const REQUEST_OVERHEAD: u64 = 400;

impl UplinkConfig {
    /// The rate schedule (validated by [`UplinkConfig::validate`]).
    pub fn schedule(&self) -> Result<Schedule, String> {
        let default = parse_rate(&self.rate).map_err(|e| format!("uplink.rate: {e}"))?;
        let windows = self
            .windows
            .iter()
            .map(|w| {
                w.parse::<Window>()
                    .map_err(|e| format!("uplink.windows: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule { default, windows })
    }

    /// Part size in bytes.
    pub fn part_size(&self) -> u64 {
        self.part_size_kb * 1024
    }

    /// Check the section; `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| Err((format!("uplink.{k}"), m));
        self.schedule().map_err(|m| {
            let key = m.split(':').next().unwrap_or("uplink").to_string();
            (key, m)
        })?;
        if !(0.01..=1.0).contains(&self.congestion_min_share) {
            return e("congestion_min_share", "must be between 0.01 and 1".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return e("concurrency", "must be between 1 and 64".into());
        }
        if !(64..=5 * 1024 * 1024).contains(&self.part_size_kb) {
            return e(
                "part_size_kb",
                "must be between 64 and 5242880 (5 GiB)".into(),
            );
        }
        if !(5..=86_400).contains(&self.status_interval_s) {
            return e("status_interval_s", "must be between 5 and 86400".into());
        }
        for p in &self.pin_sha256 {
            if super::tls::parse_pin(p).is_none() {
                return e(
                    "pin_sha256",
                    format!("`{p}` is not a SHA-256 (base64 or 64 hex digits)"),
                );
            }
        }
        if let Some(a) = self.metrics_listen {
            if !a.ip().is_loopback() && !self.metrics_allow_remote {
                return e(
                    "metrics_listen",
                    format!("{a} is not a loopback address: set metrics_allow_remote = true to expose metrics"),
                );
            }
        }
        for (k, v) in [("site", &self.site), ("box_id", &self.box_id)] {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return e(k, format!("`{v}`: use letters, digits, `-`, `_`, `.` only"));
            }
        }
        if !self.key_layout.contains("{id}") {
            return e(
                "key_layout",
                "must contain {id} (keys must be unique)".into(),
            );
        }
        if self.key_layout.starts_with('/') || self.prefix.starts_with('/') {
            return e("key_layout", "keys must not start with `/`".into());
        }
        if !self.enabled {
            return Ok(());
        }
        if self.bucket.is_empty() {
            return e("bucket", "required when the uplink is enabled".into());
        }
        let url = reqwest::Url::parse(&self.endpoint).map_err(|x| {
            (
                "uplink.endpoint".to_string(),
                format!("`{}`: {x}", self.endpoint),
            )
        })?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http => {}
            "http" => return e(
                "endpoint",
                "plain http is refused: use https (allow_insecure_http = true is for tests only)"
                    .into(),
            ),
            s => return e("endpoint", format!("unsupported scheme `{s}`")),
        }
        if url.host_str().is_none() {
            return e("endpoint", "has no host".into());
        }
        Ok(())
    }
}
