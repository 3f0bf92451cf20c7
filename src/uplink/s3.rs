//! The S3 client shell: builds, signs and sends requests with reqwest over rustls, paces
//! request bodies through the shared [`Shaper`], and parses the XML answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::multipart::{b64, ObjectInfo, PartRecord};
use super::rate::{Rate, TokenBucket};
use super::sigv4::{self, Credentials, EMPTY_SHA256};
use crate::clock::MonoClock;
use crate::time::Mono;

/// Size of the body chunks handed to the token bucket.
const CHUNK: usize = 8 * 1024;

/// Errors talking to the archive.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The TLS handshake failed: certificate, CA or pin problem. Nothing was sent.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connection, timeout or other transport failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered with an S3 error.
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// S3 error code (`NoSuchUpload`, `AccessDenied`, …) or empty.
        code: String,
        /// Message.
        message: String,
    },
    /// An answer that makes no sense.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl S3Error {
    /// The S3 error code, if any.
    pub fn code(&self) -> &str {
        match self {
            S3Error::Http { code, .. } => code,
            _ => "",
        }
    }
    /// Worth retrying soon (transport, throttling, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Transport(_) => true,
            S3Error::Http { status, code, .. } => {
                *status >= 500 || *status == 429 || code == "SlowDown" || code == "RequestTimeout"
            }
            _ => false,
        }
    }
    /// Authentication / authorisation failures.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            S3Error::Http {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// Paces bytes onto the link: one token bucket shared by every request of the box.
#[derive(Debug)]
pub struct Shaper {
    clock: MonoClock,
    bucket: Mutex<TokenBucket>,
    sent: std::sync::atomic::AtomicU64,
}

impl Shaper {
    /// A shaper at `rate`.
    pub fn new(rate: Rate) -> Self {
        // Burst: two seconds at the rate, at least one chunk: short round trips between
        // requests do not waste the cap, and the link never sees more than 2 s of excess.
        let burst = rate.map_or(1 << 20, |r| (2 * r).max(CHUNK as u64));
        Shaper {
            clock: MonoClock::new(),
            bucket: Mutex::new(TokenBucket::new(rate, burst, Mono::ZERO)),
            sent: Default::default(),
        }
    }

    fn now(&self) -> Mono {
        self.clock.now()
    }

    /// Change the rate.
    pub fn set_rate(&self, rate: Rate) {
        let now = self.now();
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if b.rate() != rate {
            let burst = rate.map_or(1 << 20, |r| (2 * r).max(CHUNK as u64));
            *b = TokenBucket::new(rate, burst, now);
        }
    }

    /// Current rate.
    pub fn rate(&self) -> Rate {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).rate()
    }

    /// Bytes granted so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until `n` bytes may be sent.
    pub async fn acquire(&self, n: u64) {
        for _ in 0..1_000_000 {
            let wait = {
                let now = self.now();
                let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                b.take(now, n)
            };
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait.min(Duration::from_millis(500))).await;
        }
        self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One object of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// LastModified as the server wrote it (RFC 3339).
    pub last_modified: String,
}

/// One page of ListObjectsV2.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<ListedObject>,
    /// Common prefixes (with a delimiter).
    pub prefixes: Vec<String>,
    /// More keys follow.
    pub truncated: bool,
}

/// Connection settings of an [`S3Client`].
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL.
    pub base: reqwest::Url,
    /// Region for signing.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Path-style addressing.
    pub path_style: bool,
}

/// Outcome of a request, for congestion control.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time to the response headers of a request without a significant body.
    pub rtt: Option<Duration>,
}

/// A signed S3 client.
pub struct S3Client {
    http: reqwest::Client,
    ep: Endpoint,
    creds: Credentials,
    shaper: Arc<Shaper>,
    last_rtt: Mutex<Option<Duration>>,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    doc.descendants()
        .find(|n| n.tag_name().name() == tag)
        .and_then(|n| n.text())
        .map(str::to_string)
}

fn s3_error(status: u16, body: &[u8]) -> S3Error {
    S3Error::Http {
        status,
        code: xml_text(body, "Code").unwrap_or_default(),
        message: xml_text(body, "Message")
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into()),
    }
}

fn transport_error(e: reqwest::Error) -> S3Error {
    if let Some(t) = super::tls::classify(&e) {
        return S3Error::Tls(t);
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    S3Error::Transport(msg)
}

impl S3Client {
    /// A client with the given TLS configuration.
    pub fn new(
        ep: Endpoint,
        creds: Credentials,
        tls: rustls::ClientConfig,
        shaper: Arc<Shaper>,
    ) -> Result<Self, S3Error> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("branchrec/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| S3Error::Protocol(format!("building HTTP client: {e}")))?;
        Ok(S3Client {
            http,
            ep,
            creds,
            shaper,
            last_rtt: Mutex::new(None),
        })
    }

    /// Round-trip time of the last small request.
    pub fn take_rtt(&self) -> Option<Duration> {
        self.last_rtt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn url_and_path(&self, key: &str) -> (reqwest::Url, String, String) {
        let mut url = self.ep.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        let host = url.host_str().unwrap_or_default().to_string();
        let (host, path) = if self.ep.path_style {
            if key.is_empty() {
                (host, format!("{base_path}/{}", self.ep.bucket))
            } else {
                (host, format!("{base_path}/{}/{key}", self.ep.bucket))
            }
        } else {
            (
                format!("{}.{host}", self.ep.bucket),
                format!("{base_path}/{key}"),
            )
        };
        if !self.ep.path_style {
            // Validated bucket names are DNS labels; a failure leaves the base host.
            let _ = url.set_host(Some(&host));
        }
        let host_hdr = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        (url, host_hdr, path)
    }

    /// Send one signed request. `body` is paced through the shaper in chunks.
    #[allow(clippy::too_many_arguments)] // one private call site per S3 operation
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: Bytes,
        payload_sha256: &str,
        timeout: Duration,
    ) -> Result<Resp, S3Error> {
        let resp = self
            .send_raw(method, key, query, extra, body, payload_sha256, timeout)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport_error)?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// GET `key` and hand its body to `sink` chunk by chunk as it arrives (never whole
    /// in memory): `Ok(None)` for 404, else the bytes received. `timeout` bounds the
    /// whole transfer.
    pub async fn get_object_to(
        &self,
        key: &str,
        timeout: Duration,
        sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
    ) -> Result<Option<u64>, S3Error> {
        let mut resp = self
            .send_raw(
                reqwest::Method::GET,
                key,
                &[],
                &[],
                Bytes::new(),
                EMPTY_SHA256,
                timeout,
            )
            .await?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            let body = resp.bytes().await.map_err(transport_error)?;
            return Err(s3_error(status, &body));
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            sink(&chunk).map_err(|e| S3Error::Protocol(format!("writing GET {key}: {e}")))?;
            n += chunk.len() as u64;
        }
        Ok(Some(n))
    }

    /// Sign and send; the response with its body unread.
    #[allow(clippy::too_many_arguments)]
    async fn send_raw(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: Bytes,
        payload_sha256: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, S3Error> {
        let (mut url, host, path) = self.url_and_path(key);
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-date".into(), amz_date.clone()),
            ("x-amz-content-sha256".into(), payload_sha256.into()),
        ];
        if let Some(t) = &self.creds.session_token {
            headers.push(("x-amz-security-token".into(), t.as_str().into()));
        }
        headers.extend(extra.iter().cloned());
        let req = sigv4::Request {
            method: method.as_str(),
            path: &path,
            query,
            headers: &headers,
            payload_sha256,
        };
        let auth = sigv4::authorization(&req, &self.creds, &self.ep.region, "s3", &amz_date);
        let enc_path = sigv4::uri_encode(&path, true);
        url.set_path(&enc_path);
        let q = sigv4::canonical_query(query);
        url.set_query(if q.is_empty() { None } else { Some(&q) });
        let method_len = method.as_str().len();
        let auth_len = auth.len();
        let mut rb = self.http.request(method, url).timeout(timeout);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            rb = rb.header(k.as_str(), v.as_str());
        }
        rb = rb.header("authorization", auth);
        let len = body.len();
        // Charge the request head as well: request line, our headers, and what the HTTP
        // client and TLS add (see REQUEST_OVERHEAD).
        let head = method_len
            + enc_path.len()
            + q.len()
            + 12
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
            + auth_len
            + 17
            + super::config::REQUEST_OVERHEAD as usize;
        self.shaper.acquire(head as u64).await;
        let small = len <= CHUNK;
        if small {
            if len > 0 {
                self.shaper.acquire(len as u64).await;
            }
            rb = rb.header("content-length", len.to_string()).body(body);
        } else {
            let shaper = self.shaper.clone();
            let stream =
                futures_util::stream::unfold((body, shaper), |(mut rest, shaper)| async move {
                    if rest.is_empty() {
                        return None;
                    }
                    let n = rest.len().min(CHUNK);
                    shaper.acquire(n as u64).await;
                    let chunk = rest.split_to(n);
                    Some((Ok::<Bytes, std::io::Error>(chunk), (rest, shaper)))
                });
            rb = rb
                .header("content-length", len.to_string())
                .body(reqwest::Body::wrap_stream(stream));
        }
        let t0 = Instant::now();
        let resp = rb.send().await.map_err(transport_error)?;
        if small {
            *self.last_rtt.lock().unwrap_or_else(|p| p.into_inner()) = Some(t0.elapsed());
        }
        Ok(resp)
    }

    async fn simple(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(String, String)],
        extra: &[(String, String)],
    ) -> Result<Resp, S3Error> {
        self.send(
            method,
            key,
            query,
            extra,
            Bytes::new(),
            EMPTY_SHA256,
            Duration::from_secs(60),
        )
        .await
    }

    fn body_timeout(&self, len: usize) -> Duration {
        let secs = match self.shaper.rate() {
            // Twice the time the body needs at the current rate, plus a minute.
            Some(r) => 60 + 2 * len as u64 / r.max(1),
            None => 60 + len as u64 / 100_000,
        };
        Duration::from_secs(secs)
    }

    /// CreateMultipartUpload with SHA-256 checksums; `meta` become `x-amz-meta-*`.
    pub async fn create_multipart(
        &self,
        key: &str,
        meta: &[(&str, &str)],
    ) -> Result<String, S3Error> {
        let mut extra = vec![("x-amz-checksum-algorithm".to_string(), "SHA256".to_string())];
        for (k, v) in meta {
            extra.push((format!("x-amz-meta-{k}"), (*v).to_string()));
        }
        let r = self
            .simple(
                reqwest::Method::POST,
                key,
                &[("uploads".into(), String::new())],
                &extra,
            )
            .await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        xml_text(&r.body, "UploadId")
            .ok_or_else(|| S3Error::Protocol("CreateMultipartUpload answer has no UploadId".into()))
    }

    /// UploadPart with Content-MD5 and `x-amz-checksum-sha256`; returns the ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: &PartRecord,
        data: Bytes,
    ) -> Result<String, S3Error> {
        // The part record holds the MD5 in hex; Content-MD5 wants base64.
        let md5 = hex::decode(&part.md5_hex).map_err(|e| S3Error::Protocol(e.to_string()))?;
        let payload = hex::encode(Sha256::digest(&data));
        let extra = vec![
            ("content-md5".to_string(), b64(&md5)),
            ("x-amz-checksum-sha256".to_string(), part.sha256_b64.clone()),
        ];
        let q = [
            ("partNumber".to_string(), part.number.to_string()),
            ("uploadId".to_string(), upload_id.to_string()),
        ];
        let timeout = self.body_timeout(data.len());
        let r = self
            .send(
                reqwest::Method::PUT,
                key,
                &q,
                &extra,
                data,
                &payload,
                timeout,
            )
            .await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        header(&r.headers, "etag")
            .ok_or_else(|| S3Error::Protocol("UploadPart without ETag".into()))
    }

    /// CompleteMultipartUpload (checks for the error that may come inside a 200 answer).
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartRecord],
    ) -> Result<(), S3Error> {
        let mut xml = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for p in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag><ChecksumSHA256>{}</ChecksumSHA256></Part>",
                p.number, p.md5_hex, p.sha256_b64
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(xml);
        let payload = hex::encode(Sha256::digest(&body));
        let q = [("uploadId".to_string(), upload_id.to_string())];
        let extra = vec![("content-type".to_string(), "application/xml".to_string())];
        let r = self
            .send(
                reqwest::Method::POST,
                key,
                &q,
                &extra,
                body,
                &payload,
                Duration::from_secs(300),
            )
            .await?;
        if r.status != 200 || xml_text(&r.body, "Code").is_some() {
            return Err(s3_error(
                if r.status == 200 { 500 } else { r.status },
                &r.body,
            ));
        }
        Ok(())
    }

    /// AbortMultipartUpload (a missing upload counts as aborted).
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let q = [("uploadId".to_string(), upload_id.to_string())];
        let r = self.simple(reqwest::Method::DELETE, key, &q, &[]).await?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            s => Err(s3_error(s, &r.body)),
        }
    }

    /// HEAD with checksum mode; `None` if there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let extra = vec![("x-amz-checksum-mode".to_string(), "ENABLED".to_string())];
        let r = self.simple(reqwest::Method::HEAD, key, &[], &extra).await?;
        if r.status == 404 {
            return Ok(None);
        }
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        let size = header(&r.headers, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::Protocol("HEAD without Content-Length".into()))?;
        Ok(Some(ObjectInfo {
            size,
            etag: header(&r.headers, "etag"),
            checksum_sha256: header(&r.headers, "x-amz-checksum-sha256"),
            meta_sha256: header(&r.headers, "x-amz-meta-sha256"),
        }))
    }

    /// PutObject of a small document with Content-MD5 and SHA-256 checksum; the returned
    /// ETag is checked against the MD5. `hold` asks for an Object Lock legal hold.
    pub async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        meta: &[(&str, &str)],
    ) -> Result<(), S3Error> {
        self.put_object_cond(key, data, content_type, meta, false)
            .await
            .map(|_| ())
    }

    /// PutObject only if no object exists under `key` (`If-None-Match: *`, RFC 9110
    /// 13.1.2, S3 conditional writes): `Ok(false)` when the server answered 412
    /// Precondition Failed. A server that ignores the header (Garage 2.5 does, for
    /// PutObject) overwrites: callers that need exclusivity also serialise elsewhere.
    pub async fn put_object_if_absent(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<bool, S3Error> {
        self.put_object_cond(key, data, content_type, &[], true)
            .await
    }

    async fn put_object_cond(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        meta: &[(&str, &str)],
        if_absent: bool,
    ) -> Result<bool, S3Error> {
        let md5 = md5::Md5::digest(&data);
        let sha = Sha256::digest(&data);
        let mut extra = vec![
            ("content-md5".to_string(), b64(&md5)),
            ("content-type".to_string(), content_type.to_string()),
            ("x-amz-checksum-sha256".to_string(), b64(&sha)),
        ];
        for (k, v) in meta {
            extra.push((format!("x-amz-meta-{k}"), (*v).to_string()));
        }
        if if_absent {
            extra.push(("if-none-match".to_string(), "*".to_string()));
        }
        let timeout = self.body_timeout(data.len());
        let r = self
            .send(
                reqwest::Method::PUT,
                key,
                &[],
                &extra,
                data,
                &hex::encode(sha),
                timeout,
            )
            .await?;
        if if_absent && r.status == 412 {
            return Ok(false);
        }
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        let etag = header(&r.headers, "etag").unwrap_or_default();
        let etag = etag.trim_matches('"');
        if !etag.is_empty() && etag.len() == 32 && !etag.eq_ignore_ascii_case(&hex::encode(md5)) {
            return Err(S3Error::Protocol(format!(
                "PutObject ETag {etag} does not match the MD5 sent"
            )));
        }
        Ok(true)
    }

    /// The PutObjectLegalHold request on `key` (one version, or the current one), its
    /// response as it came.
    async fn legal_hold_request(
        &self,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<Resp, S3Error> {
        let xml = format!(
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        let body = Bytes::from(xml);
        let extra = vec![
            ("content-md5".to_string(), b64(&md5::Md5::digest(&body))),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let payload = hex::encode(Sha256::digest(&body));
        let mut q = vec![("legal-hold".to_string(), String::new())];
        if let Some(v) = version_id {
            q.push(("versionId".to_string(), v.to_string()));
        }
        self.send(
            reqwest::Method::PUT,
            key,
            &q,
            &extra,
            body,
            &payload,
            Duration::from_secs(60),
        )
        .await
    }

    /// PutObjectLegalHold. `Ok(false)` when the bucket has no Object Lock.
    pub async fn put_legal_hold(&self, key: &str, on: bool) -> Result<bool, S3Error> {
        let r = self.legal_hold_request(key, None, on).await?;
        match r.status {
            200 => Ok(true),
            400 | 409 | 501 => {
                let e = s3_error(r.status, &r.body);
                let msg = e.to_string();
                if msg.contains("Object Lock") || msg.contains("ObjectLock") || r.status == 501 {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            s => Err(s3_error(s, &r.body)),
        }
    }

    /// PutObjectLegalHold on one version (`None`: the current one). Errors as they come
    /// (central wants to know; the uplink's [`Self::put_legal_hold`] tolerates buckets
    /// without Object Lock).
    pub async fn put_legal_hold_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<(), S3Error> {
        let r = self.legal_hold_request(key, version_id, on).await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        Ok(())
    }

    /// GetObjectLegalHold of one version: `Some(true)` ON, `Some(false)` OFF, `None` when
    /// no legal hold was ever set on it.
    pub async fn get_legal_hold(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<bool>, S3Error> {
        let mut q = vec![("legal-hold".to_string(), String::new())];
        if let Some(v) = version_id {
            q.push(("versionId".to_string(), v.to_string()));
        }
        let r = self.simple(reqwest::Method::GET, key, &q, &[]).await?;
        match r.status {
            200 => Ok(Some(xml_text(&r.body, "Status").as_deref() == Some("ON"))),
            404 if xml_text(&r.body, "Code").as_deref()
                == Some("NoSuchObjectLockConfiguration") =>
            {
                Ok(None)
            }
            s => {
                let e = s3_error(s, &r.body);
                if e.code() == "NoSuchObjectLockConfiguration" {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// ListObjectVersions under `prefix`: every version and delete marker, as
    /// (key, version id, is a delete marker), following the markers (at most 1000 pages).
    pub async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, bool)>, S3Error> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..1000 {
            let mut q = vec![
                ("versions".to_string(), String::new()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some((k, v)) = &markers {
                q.push(("key-marker".to_string(), k.clone()));
                q.push(("version-id-marker".to_string(), v.clone()));
            }
            let r = self.simple(reqwest::Method::GET, "", &q, &[]).await?;
            if r.status != 200 {
                return Err(s3_error(r.status, &r.body));
            }
            let text = std::str::from_utf8(&r.body)
                .map_err(|_| S3Error::Protocol("ListObjectVersions answer is not UTF-8".into()))?;
            let doc = roxmltree::Document::parse(text)
                .map_err(|e| S3Error::Protocol(format!("ListObjectVersions XML: {e}")))?;
            for n in doc.descendants().filter(|n| {
                let t = n.tag_name().name();
                t == "Version" || t == "DeleteMarker"
            }) {
                let get = |t: &str| {
                    n.children()
                        .find(|c| c.tag_name().name() == t)
                        .and_then(|c| c.text())
                        .map(str::to_string)
                };
                if let (Some(k), Some(v)) = (get("Key"), get("VersionId")) {
                    out.push((k, v, n.tag_name().name() == "DeleteMarker"));
                }
            }
            let truncated = xml_text(&r.body, "IsTruncated").as_deref() == Some("true");
            match (
                xml_text(&r.body, "NextKeyMarker"),
                xml_text(&r.body, "NextVersionIdMarker"),
            ) {
                (Some(k), Some(v)) if truncated => markers = Some((k, v)),
                _ => break,
            }
        }
        Ok(out)
    }

    /// DeleteObject (of one version when `version_id` is given: permanent).
    pub async fn delete_object(&self, key: &str, version_id: Option<&str>) -> Result<(), S3Error> {
        let q: Vec<(String, String)> = version_id
            .map(|v| vec![("versionId".to_string(), v.to_string())])
            .unwrap_or_default();
        let r = self.simple(reqwest::Method::DELETE, key, &q, &[]).await?;
        match r.status {
            200 | 204 => Ok(()),
            s => Err(s3_error(s, &r.body)),
        }
    }

    /// GetObject.
    pub async fn get_object(&self, key: &str) -> Result<Option<Bytes>, S3Error> {
        let r = self.simple(reqwest::Method::GET, key, &[], &[]).await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            s => Err(s3_error(s, &r.body)),
        }
    }

    /// ListObjectsV2 under `prefix`: (key, size, last-modified) of every object, following
    /// continuation tokens (at most 1000 pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".to_string(), t.clone()));
            }
            let r = self.simple(reqwest::Method::GET, "", &q, &[]).await?;
            if r.status != 200 {
                return Err(s3_error(r.status, &r.body));
            }
            let text = std::str::from_utf8(&r.body)
                .map_err(|_| S3Error::Protocol("ListObjectsV2 answer is not UTF-8".into()))?;
            let doc = roxmltree::Document::parse(text)
                .map_err(|e| S3Error::Protocol(format!("ListObjectsV2 XML: {e}")))?;
            for c in doc
                .descendants()
                .filter(|n| n.tag_name().name() == "Contents")
            {
                let get = |t: &str| {
                    c.children()
                        .find(|n| n.tag_name().name() == t)
                        .and_then(|n| n.text())
                };
                if let Some(k) = get("Key") {
                    out.push((
                        k.to_string(),
                        get("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                    ));
                }
            }
            let truncated = xml_text(&r.body, "IsTruncated").as_deref() == Some("true");
            token = xml_text(&r.body, "NextContinuationToken");
            if !truncated || token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// One page of ListObjectsV2 under `prefix`: keys after `start_after` (at most
    /// `max_keys`), with `delimiter` the common prefixes too. For the central indexer,
    /// which follows the bucket incrementally.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, S3Error> {
        let mut q = vec![
            ("list-type".to_string(), "2".to_string()),
            ("prefix".to_string(), prefix.to_string()),
            ("max-keys".to_string(), max_keys.to_string()),
        ];
        if let Some(s) = start_after.filter(|s| !s.is_empty()) {
            q.push(("start-after".to_string(), s.to_string()));
        }
        if let Some(d) = delimiter {
            q.push(("delimiter".to_string(), d.to_string()));
        }
        let r = self.simple(reqwest::Method::GET, "", &q, &[]).await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        let text = std::str::from_utf8(&r.body)
            .map_err(|_| S3Error::Protocol("ListObjectsV2 answer is not UTF-8".into()))?;
        let doc = roxmltree::Document::parse(text)
            .map_err(|e| S3Error::Protocol(format!("ListObjectsV2 XML: {e}")))?;
        let mut page = ListPage::default();
        for c in doc.root_element().children() {
            let get = |t: &str| {
                c.children()
                    .find(|n| n.tag_name().name() == t)
                    .and_then(|n| n.text())
            };
            match c.tag_name().name() {
                "Contents" => {
                    if let Some(k) = get("Key") {
                        page.objects.push(ListedObject {
                            key: k.to_string(),
                            size: get("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                            etag: get("ETag")
                                .unwrap_or_default()
                                .trim_matches('"')
                                .to_string(),
                            last_modified: get("LastModified").unwrap_or_default().to_string(),
                        });
                    }
                }
                "CommonPrefixes" => {
                    if let Some(p) = get("Prefix") {
                        page.prefixes.push(p.to_string());
                    }
                }
                "IsTruncated" => page.truncated = c.text() == Some("true"),
                _ => {}
            }
        }
        Ok(page)
    }

    /// ListParts of an upload: (part number, ETag without quotes) of the first 1000 parts.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<(u32, String)>, S3Error> {
        let q = [("uploadId".to_string(), upload_id.to_string())];
        let r = self.simple(reqwest::Method::GET, key, &q, &[]).await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        let text = std::str::from_utf8(&r.body)
            .map_err(|_| S3Error::Protocol("ListParts answer is not UTF-8".into()))?;
        let doc = roxmltree::Document::parse(text)
            .map_err(|e| S3Error::Protocol(format!("ListParts XML: {e}")))?;
        let mut out = Vec::new();
        for p in doc.descendants().filter(|n| n.tag_name().name() == "Part") {
            let get = |t: &str| {
                p.children()
                    .find(|n| n.tag_name().name() == t)
                    .and_then(|n| n.text())
                    .map(str::to_string)
            };
            if let (Some(n), Some(e)) =
                (get("PartNumber").and_then(|n| n.parse().ok()), get("ETag"))
            {
                out.push((n, e.trim_matches('"').to_ascii_lowercase()));
            }
        }
        Ok(out)
    }

    /// ListMultipartUploads under `prefix`: (key, upload id) pairs (first 1000).
    pub async fn list_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, S3Error> {
        let q = vec![
            ("uploads".to_string(), String::new()),
            ("prefix".to_string(), prefix.to_string()),
        ];
        let r = self.simple(reqwest::Method::GET, "", &q, &[]).await?;
        if r.status != 200 {
            return Err(s3_error(r.status, &r.body));
        }
        let text = std::str::from_utf8(&r.body)
            .map_err(|_| S3Error::Protocol("ListMultipartUploads answer is not UTF-8".into()))?;
        let doc = roxmltree::Document::parse(text)
            .map_err(|e| S3Error::Protocol(format!("ListMultipartUploads XML: {e}")))?;
        let mut out = Vec::new();
        for u in doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Upload")
        {
            let get = |t: &str| {
                u.children()
                    .find(|n| n.tag_name().name() == t)
                    .and_then(|n| n.text())
                    .map(str::to_string)
            };
            if let (Some(k), Some(id)) = (get("Key"), get("UploadId")) {
                out.push((k, id));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several uploads pacing through one shaper share the cap: together they get the
    /// rate, not more, not much less.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_share_the_rate() {
        let sh = Arc::new(Shaper::new(Some(100_000)));
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let sh = sh.clone();
            set.spawn(async move {
                while t0.elapsed() < Duration::from_secs(3) {
                    sh.acquire(CHUNK as u64).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let rate = sh.bytes_sent() as f64 / t0.elapsed().as_secs_f64();
        assert!((rate - 100_000.0).abs() < 12_000.0, "rate {rate}");
    }
}
