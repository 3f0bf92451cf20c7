//! The daemon's uplink: picks recordings ([`crate::uplink::planner`]), drives each through the
//! [`crate::uplink::multipart`] state machine over [`crate::uplink::s3`], keeps the rate in line with the
//! schedule and congestion, pushes the status document and keeps the local copy of it
//! that `branchrec status` and `/metrics` read.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{SecondsFormat, Timelike};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::catalog::{Catalog, RecordingDetail, UploadRow, UploadState};
use crate::clock::Clock;
use crate::config::Config;
use crate::uplink::multipart::{Action, PartRecord, UploadState as Mp};
use crate::uplink::planner::{self, Candidate};
use crate::uplink::rate::{Congestion, Schedule};
use crate::uplink::s3::{S3Client, S3Error, Shaper};
use crate::uplink::status::{Alarm, StatusDoc};
use crate::uplink::{object_key, status_key, UplinkConfig};

/// Signed audit heads carried by each status and archive document.
const PUBLISHED_HEADS: usize = 8;

/// Name of the local status file under the data directory.
pub const LOCAL_STATUS_FILE: &str = "uplink-status.json";

/// State shared by the worker, the status pusher and `/metrics`.
pub struct UplinkShared {
    started: Instant,
    alarms: Mutex<BTreeMap<String, Alarm>>,
    /// Paces every byte sent to the archive.
    pub shaper: Arc<Shaper>,
    congestion: Mutex<Congestion>,
    last_doc: Mutex<Option<StatusDoc>>,
    /// The daemon's wall clock (shifted by `BRANCHREC_TEST_CLOCK_OFFSET_S`): alarm times,
    /// upload and archive times, retry times, the status document.
    clock: Arc<dyn Clock>,
    /// The daemon's media/dialog binding counters (set once by the daemon; the CLI's
    /// stand-in has none).
    pub binding: std::sync::OnceLock<Arc<crate::binding::BindingCounters>>,
    /// The box's signing key (set once by the daemon): signs command acknowledgements.
    pub signer: std::sync::OnceLock<Arc<crate::vault::HeadSigner>>,
    /// Counters of the commands from headquarters (`None`: not configured).
    pub commands: Mutex<Option<crate::command::CommandCounters>>,
}

impl UplinkShared {
    /// Fresh state for `cfg`, reading the time from `clock`.
    pub fn new(cfg: &UplinkConfig, clock: Arc<dyn Clock>) -> Self {
        UplinkShared {
            clock,
            started: Instant::now(),
            alarms: Mutex::new(BTreeMap::new()),
            shaper: Arc::new(Shaper::new(None)),
            congestion: Mutex::new(Congestion::new(cfg.congestion_min_share)),
            last_doc: Mutex::new(None),
            binding: std::sync::OnceLock::new(),
            signer: std::sync::OnceLock::new(),
            commands: Mutex::new(None),
        }
    }

    /// Raise (or refresh) an alarm; logged once when raised or when its text changes.
    pub fn raise(&self, code: &str, message: &str) {
        let mut a = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
        if a.get(code).is_some_and(|x| x.message == message) {
            return;
        }
        tracing::error!(alarm = code, "uplink alarm: {message}");
        a.insert(
            code.into(),
            Alarm {
                code: code.into(),
                message: message.into(),
                since: self.now_rfc3339(),
            },
        );
    }

    /// Clear an alarm.
    pub fn clear(&self, code: &str) {
        if self
            .alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(code)
            .is_some()
        {
            tracing::info!(alarm = code, "uplink alarm cleared");
        }
    }

    /// Active alarms.
    pub fn alarms(&self) -> Vec<Alarm> {
        self.alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The last status document built.
    pub fn last_doc(&self) -> Option<StatusDoc> {
        self.last_doc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Now (unix ms) on the daemon's clock.
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Now as RFC 3339 (seconds) on the daemon's clock.
    fn now_rfc3339(&self) -> String {
        ms_rfc3339(self.now_ms()).unwrap_or_default()
    }

    fn share(&self) -> f64 {
        self.congestion
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .factor()
    }
}

fn ms_rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Why one recording's upload stopped.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    /// The link or the archive is the problem: back off globally, not per recording.
    #[error("{0}")]
    Link(S3Error),
    /// A problem with this recording (integrity, refused request): back off this one.
    #[error("{0}")]
    Recording(String),
    /// Catalogue or local I/O.
    #[error("{0}")]
    Local(String),
}

impl From<S3Error> for TaskError {
    fn from(e: S3Error) -> Self {
        match &e {
            S3Error::Tls(_) | S3Error::Transport(_) => TaskError::Link(e),
            S3Error::Http { .. } if e.is_transient() || e.is_auth() => TaskError::Link(e),
            _ => TaskError::Recording(e.to_string()),
        }
    }
}

struct Ctx {
    cfg: Config,
    /// The compliance key the archive documents are encrypted to (`[keys]`).
    compliance: Option<crate::vault::compliance::ComplianceRecipient>,
    /// DER SubjectPublicKeyInfo of the box's manifest signing key (custody state).
    signer_der: Option<Vec<u8>>,
    client: S3Client,
    db: Arc<Mutex<Catalog>>,
    shared: Arc<UplinkShared>,
}

impl Ctx {
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<T, crate::catalog::CatalogError> + Send + 'static,
    ) -> Result<T, TaskError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| TaskError::Local(format!("catalogue task: {e}")))?
        .map_err(|e| TaskError::Local(e.to_string()))
    }

    async fn save(&self, row: &UploadRow) -> Result<(), TaskError> {
        let r = row.clone();
        self.db(move |c| c.save_upload(&r)).await
    }
}

/// The signed manifest of a recording (see `docs/evidence.md`): the manifest bytes and
/// their Ed25519 signature, written beside the container when it closed. Uploaded as
/// `<key>.manifest.json` and `<key>.manifest.sig`.
pub fn manifest_for(data_dir: &Path, detail: &RecordingDetail) -> Option<(Vec<u8>, Vec<u8>)> {
    let rel = detail.recording.file_path.as_ref()?;
    let abs = crate::recording::files::confined(data_dir, rel).ok()?;
    let (m, sig) = crate::service::evidence::manifest_paths(&abs);
    Some((std::fs::read(m).ok()?, std::fs::read(sig).ok()?))
}

/// SHA-256 (hex) and size of a file, read in 64 KiB blocks.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Upload one recording (or bring its archive hold up to date). Every step is persisted
/// before the next starts.
async fn upload_one(ctx: Arc<Ctx>, id: String) -> Result<(), TaskError> {
    let idc = id.clone();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (detail, row, lifecycle) = ctx
        .db(move |c| {
            let d = c.get(&idc)?;
            // Tags, hold flag and direction for the archive document (central search).
            let lc = match &d {
                Some(d) => {
                    crate::service::archive::lifecycle_fields(c, d, now_ms).map_err(|e| {
                        crate::catalog::CatalogError::Invalid {
                            field: "lifecycle",
                            reason: e.to_string(),
                        }
                    })?
                }
                None => Default::default(),
            };
            Ok((d, c.upload_row(&idc)?, lc))
        })
        .await?;
    let Some(detail) = detail else {
        return Err(TaskError::Local(format!("recording {id} vanished")));
    };
    let mut row = row.unwrap_or_else(|| UploadRow::pending(&id));
    let ucfg = &ctx.cfg.uplink;
    let rec = &detail.recording;
    let key = row
        .object_key
        .clone()
        .unwrap_or_else(|| object_key(ucfg, &id, rec.started_at_ms));
    if row.state == UploadState::Uploaded {
        // Only the hold is missing, or the document's hold state is stale.
        republish_document(&ctx, &detail, lifecycle, &mut row, &key).await?;
        return apply_hold(&ctx, &mut row, &key).await;
    }
    let (Some(rel), Some(want_sha)) = (rec.file_path.clone(), rec.file_sha256.clone()) else {
        return Err(TaskError::Local(format!(
            "recording {id} has no final file"
        )));
    };
    let path = crate::recording::files::confined(&ctx.cfg.storage.data_dir, &rel)
        .map_err(|e| TaskError::Local(e.to_string()))?;
    let p2 = path.clone();
    // The catalogue keeps the container's content hash (key slots excluded, so a key
    // rotation does not change it); the archive object is checked against the whole file.
    let (sha, size, content) = tokio::task::spawn_blocking(move || {
        let (sha, size) = hash_file(&p2)?;
        let f = std::fs::File::open(&p2)?;
        let (content, _) = crate::recording::container::content_sha256(std::io::BufReader::new(f))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>((sha, size, hex::encode(content)))
    })
    .await
    .map_err(|e| TaskError::Local(e.to_string()))?
    .map_err(|e| TaskError::Local(format!("reading {}: {e}", path.display())))?;
    if !content.eq_ignore_ascii_case(&want_sha) {
        let msg = format!(
            "recording {id}: content SHA-256 {content} differs from the catalogue's {want_sha}: not uploaded"
        );
        ctx.shared.raise("integrity", &msg);
        row.state = UploadState::Failed;
        row.last_error = Some(msg.clone());
        ctx.save(&row).await?;
        return Err(TaskError::Recording(msg));
    }
    let mut mp = row
        .parts_json
        .as_deref()
        .and_then(|j| Mp::from_json(j).ok())
        .filter(|m| m.size == size)
        .unwrap_or_else(|| Mp::new(size, ucfg.part_size()));
    row.object_key = Some(key.clone());
    row.bytes_total = size;
    row.state = UploadState::Uploading;
    row.attempts += 1;
    row.last_error = None;
    row.parts_json = Some(mp.to_json());
    ctx.save(&row).await?;

    // Resuming: ask the archive what it holds of this upload. Parts it does not have (or
    // has with another checksum) are sent again; an upload it forgot starts over.
    if let (Some(uid), false) = (mp.upload_id.clone(), mp.completed) {
        match ctx.client.list_parts(&key, &uid).await {
            Ok(server) => {
                let before = mp.parts.len();
                mp.parts.retain(|p| {
                    server
                        .iter()
                        .any(|(n, e)| *n == p.number && *e == p.md5_hex)
                });
                tracing::info!(
                    recording = %id,
                    parts_kept = mp.parts.len(),
                    parts_dropped = before - mp.parts.len(),
                    "resuming multipart upload"
                );
            }
            Err(e) if e.code() == "NoSuchUpload" => {
                tracing::warn!(recording = %id, "archive no longer knows the upload; checking the object / starting over");
                mp.on_no_such_upload();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let max_steps = mp.part_count() as usize * 3 + 20;
    for _ in 0..max_steps {
        match mp.next_action() {
            Action::Done => break,
            Action::Create => {
                let uid = ctx
                    .client
                    .create_multipart(&key, &[("sha256", &sha), ("recording-id", &id)])
                    .await?;
                tracing::debug!(recording = %id, "multipart upload created");
                mp.on_created(uid);
            }
            Action::UploadPart {
                number,
                offset,
                len,
            } => {
                let p2 = path.clone();
                let data = tokio::task::spawn_blocking(move || read_range(&p2, offset, len))
                    .await
                    .map_err(|e| TaskError::Local(e.to_string()))?
                    .map_err(|e| TaskError::Local(format!("reading part {number}: {e}")))?;
                let part = PartRecord::of(number, &data);
                let uid = mp.upload_id.clone().unwrap_or_default();
                match ctx
                    .client
                    .upload_part(&key, &uid, &part, Bytes::from(data))
                    .await
                {
                    Ok(etag) => {
                        mp.on_part(part, &etag)
                            .map_err(|e| TaskError::Recording(e.to_string()))?;
                    }
                    Err(e) if e.code() == "NoSuchUpload" => {
                        tracing::warn!(recording = %id, "archive lost the multipart upload; starting over");
                        mp.on_no_such_upload();
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Action::Complete(parts) => {
                let uid = mp.upload_id.clone().unwrap_or_default();
                match ctx.client.complete(&key, &uid, &parts).await {
                    Ok(()) => mp.on_completed(),
                    Err(e) if e.code() == "NoSuchUpload" => mp.on_no_such_upload(),
                    Err(e) => return Err(e.into()),
                }
            }
            Action::Verify => match ctx.client.head(&key).await? {
                None => {
                    tracing::warn!(recording = %id, "object missing after completion; uploading again");
                    mp.restart();
                }
                Some(info) => {
                    if let Err(e) = mp.verify(&info, &sha) {
                        let msg = format!("recording {id}: {e}");
                        ctx.shared.raise("integrity", &msg);
                        row.parts_json = Some(mp.to_json());
                        row.upload_id = None;
                        row.state = UploadState::Failed;
                        row.last_error = Some(msg.clone());
                        ctx.save(&row).await?;
                        return Err(TaskError::Recording(msg));
                    }
                }
            },
        }
        row.upload_id = mp.upload_id.clone();
        row.bytes_sent = mp.bytes_done();
        row.parts_json = Some(mp.to_json());
        ctx.save(&row).await?;
    }
    if mp.next_action() != Action::Done {
        return Err(TaskError::Recording(format!(
            "recording {id}: upload did not converge"
        )));
    }
    // Metadata document, then the manifest hook.
    let doc_held = lifecycle_held(&lifecycle);
    let body = archive_document_body(
        &ctx,
        &detail,
        lifecycle,
        &key,
        size,
        &sha,
        mp.expected_etag(),
        mp.expected_checksum(),
        ctx.shared.now_rfc3339(),
    )
    .await?;
    ctx.client
        .put_object(
            &format!("{key}.json"),
            Bytes::from(body),
            "application/json",
            &[("recording-id", &id)],
        )
        .await?;
    row.doc_held = Some(doc_held);
    row.local_held = Some(doc_held);
    let seal =
        |kind: &str, plain: Vec<u8>| seal_archive(&ctx, &detail, &key, size, &sha, kind, plain);
    if let Some((m, sig)) = manifest_for(&ctx.cfg.storage.data_dir, &detail) {
        let m = seal("manifest", m)?;
        ctx.client
            .put_object(
                &format!("{key}.manifest.json"),
                Bytes::from(m),
                "application/json",
                &[("recording-id", &id)],
            )
            .await?;
        ctx.client
            .put_object(
                &format!("{key}.manifest.sig"),
                Bytes::from(sig),
                "application/octet-stream",
                &[("recording-id", &id)],
            )
            .await?;
    }
    let now = ctx.shared.now_ms();
    row.state = UploadState::Uploaded;
    row.upload_id = None;
    row.archive_etag = Some(mp.expected_etag());
    row.archive_checksum = Some(mp.expected_checksum());
    row.uploaded_at_ms = Some(now);
    row.archived_at_ms = Some(now);
    row.next_attempt_at_ms = None;
    row.parts_json = Some(mp.to_json());
    ctx.save(&row).await?;
    tracing::info!(recording = %id, bytes = size, "uploaded and verified");
    // Re-read the hold flag: it may have been set while we uploaded.
    let idc = id.clone();
    if let Some(r) = ctx.db(move |c| c.upload_row(&idc)).await? {
        row.held = r.held;
    }
    apply_hold(&ctx, &mut row, &key).await
}

/// Whether the lifecycle fields of the archive document say held by the box's own
/// holds (`held_locally`; holds placed by central commands are central's to publish).
fn lifecycle_held(lc: &serde_json::Map<String, serde_json::Value>) -> bool {
    lc.get("held_locally").and_then(|h| h.as_bool()) == Some(true)
}

/// Seal `plain` (an archive document or manifest of `detail`) to the compliance key, if
/// one is configured (rotated from headquarters since start-up: the new one).
fn seal_archive(
    ctx: &Ctx,
    detail: &RecordingDetail,
    key: &str,
    size: u64,
    sha: &str,
    kind: &str,
    plain: Vec<u8>,
) -> Result<Vec<u8>, TaskError> {
    let ucfg = &ctx.cfg.uplink;
    let obj = crate::service::archive::ArchivedObject {
        key,
        box_id: &ucfg.box_id,
        site: &ucfg.site,
        bytes: size,
        sha256: sha,
        etag: String::new(),
        checksum_sha256: String::new(),
        uploaded_at: String::new(),
    };
    let current = crate::vault::compliance::current();
    crate::service::archive::archive_object(
        current.as_ref().or(ctx.compliance.as_ref()),
        crate::service::archive::archive_index(detail, &obj, kind),
        plain,
    )
    .map_err(|e| TaskError::Local(e.to_string()))
}

/// The archive document `<key>.json` of `detail`: the catalogue facts, the lifecycle
/// fields (tags, holds, direction), the newest signed audit heads and the signing key,
/// sealed. Written at upload, and again when the recording's hold state changes.
#[allow(clippy::too_many_arguments)]
async fn archive_document_body(
    ctx: &Ctx,
    detail: &RecordingDetail,
    lifecycle: serde_json::Map<String, serde_json::Value>,
    key: &str,
    size: u64,
    sha: &str,
    etag: String,
    checksum_sha256: String,
    uploaded_at: String,
) -> Result<Vec<u8>, TaskError> {
    let ucfg = &ctx.cfg.uplink;
    let meta = crate::service::archive::archive_document(
        detail,
        &crate::service::archive::ArchivedObject {
            key,
            box_id: &ucfg.box_id,
            site: &ucfg.site,
            bytes: size,
            sha256: sha,
            etag,
            checksum_sha256,
            uploaded_at,
        },
    )
    .map_err(|e| TaskError::Local(e.to_string()))?;
    // The newest signed audit heads travel with every archived recording (under the
    // archive's Object Lock): a later rewrite of the box's audit log cannot remove them.
    let heads = ctx
        .db(|c| crate::service::audit::published_heads(c, PUBLISHED_HEADS))
        .await
        .unwrap_or_default();
    let mut meta = meta;
    if let Some(o) = meta.as_object_mut() {
        o.extend(lifecycle);
        o.insert("audit".into(), serde_json::json!({ "heads": heads }));
        // The manifest's signing key, for central tools that have not enrolled the box.
        if let Some(der) = &ctx.signer_der {
            use base64::Engine as _;
            o.insert(
                "signer".into(),
                serde_json::json!({
                    "algorithm": "ed25519",
                    "public_key_der": base64::engine::general_purpose::STANDARD.encode(der),
                }),
            );
        }
    }
    let body = serde_json::to_vec_pretty(&meta).map_err(|e| TaskError::Local(e.to_string()))?;
    // With a compliance key the document and the manifest (both name the participants)
    // go to the archive encrypted to it; only the index stays readable.
    seal_archive(ctx, detail, key, size, sha, "document", body)
}

/// An uploaded recording whose hold state changed on the box since its document was
/// written (a hold placed or released after the upload): publish the document again, a
/// new version of `<key>.json` with the current holds, so the central index follows.
async fn republish_document(
    ctx: &Ctx,
    detail: &RecordingDetail,
    lifecycle: serde_json::Map<String, serde_json::Value>,
    row: &mut UploadRow,
    key: &str,
) -> Result<(), TaskError> {
    let held = lifecycle_held(&lifecycle);
    row.local_held = Some(held);
    if row.doc_held == Some(held) {
        return ctx.save(row).await;
    }
    let Some(rel) = detail.recording.file_path.clone() else {
        // The local file is gone (archived, then expired): the document cannot be
        // rebuilt; central's own hold commands and Object Lock still apply.
        tracing::warn!(recording = %row.recording_id, held, "hold state changed but the local file is gone: archive document not updated");
        row.doc_held = Some(held);
        return ctx.save(row).await;
    };
    let path = crate::recording::files::confined(&ctx.cfg.storage.data_dir, &rel)
        .map_err(|e| TaskError::Local(e.to_string()))?;
    let p2 = path.clone();
    let (sha, size) = tokio::task::spawn_blocking(move || hash_file(&p2))
        .await
        .map_err(|e| TaskError::Local(e.to_string()))?
        .map_err(|e| TaskError::Local(format!("reading {}: {e}", path.display())))?;
    let uploaded_at = row
        .uploaded_at_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    let body = archive_document_body(
        ctx,
        detail,
        lifecycle,
        key,
        size,
        &sha,
        row.archive_etag.clone().unwrap_or_default(),
        row.archive_checksum.clone().unwrap_or_default(),
        uploaded_at,
    )
    .await?;
    ctx.client
        .put_object(
            &format!("{key}.json"),
            Bytes::from(body),
            "application/json",
            &[("recording-id", &row.recording_id)],
        )
        .await?;
    // The notice the central indexer follows (the document's key is older than its
    // listing position).
    let now = ctx.shared.now_ms();
    let notice = serde_json::json!({
        "format": "branchrec-hold-notice/1",
        "box_id": ctx.cfg.uplink.box_id,
        "recording_id": row.recording_id,
        "container_key": key,
        "held": held,
        "at_ms": now,
    });
    ctx.client
        .put_object(
            &crate::uplink::hold_notice_key(
                &ctx.cfg.uplink.prefix,
                &ctx.cfg.uplink.box_id,
                now,
                &row.recording_id,
            ),
            Bytes::from(notice.to_string()),
            "application/json",
            &[],
        )
        .await?;
    row.doc_held = Some(held);
    tracing::info!(recording = %row.recording_id, held, "archive document published again (hold state changed)");
    ctx.save(row).await
}

async fn apply_hold(ctx: &Ctx, row: &mut UploadRow, key: &str) -> Result<(), TaskError> {
    if !row.held || row.archive_hold != "none" {
        return Ok(());
    }
    if !ctx.cfg.uplink.object_lock {
        row.archive_hold = "unsupported".into();
    } else {
        let ok = ctx.client.put_legal_hold(key, true).await?;
        if ok {
            // Best effort on the metadata document: the container is what matters.
            let _ = ctx
                .client
                .put_legal_hold(&format!("{key}.json"), true)
                .await;
        } else {
            tracing::warn!(recording = %row.recording_id, "bucket has no Object Lock: legal hold recorded locally only");
        }
        row.archive_hold = if ok { "on" } else { "unsupported" }.into();
    }
    ctx.save(row).await
}

/// Seconds since local midnight.
fn local_tod() -> u32 {
    let t = chrono::Local::now();
    t.num_seconds_from_midnight()
}

/// Build the status document from the catalogue counters and the shared state.
pub fn build_status(
    cfg: &Config,
    counts: &crate::catalog::UplinkCounts,
    shared: &UplinkShared,
    rate_bps: u64,
    pending_delta_1h: Option<i64>,
    audit_heads: Vec<crate::lifecycle::audit::SignedHead>,
) -> StatusDoc {
    let now_ms = shared.now_ms();
    let disk = rustix::fs::statvfs(&cfg.storage.data_dir).ok();
    let key_present = cfg.storage.key_file().exists();
    let mut doc = StatusDoc {
        schema: 1,
        box_id: cfg.uplink.box_id.clone(),
        site: cfg.uplink.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        generated_at: shared.now_rfc3339(),
        uptime_s: shared.started.elapsed().as_secs(),
        recorded: counts.recorded,
        pending: counts.pending,
        uploaded: counts.uploaded,
        failed: counts.failed,
        pending_bytes: counts.pending_bytes,
        oldest_pending_at: counts.oldest_pending_ms.and_then(ms_rfc3339),
        oldest_pending_age_s: counts
            .oldest_pending_ms
            .map(|t| ((now_ms - t).max(0) / 1000) as u64),
        pending_delta_1h,
        last_upload_at: counts.last_uploaded_ms.and_then(ms_rfc3339),
        rate_limit_bps: shared.shaper.rate(),
        rate_bps,
        congestion_share: shared.share(),
        bytes_sent: shared.shaper.bytes_sent(),
        disk_free_mb: disk
            .as_ref()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize) / (1 << 20)),
        disk_total_mb: disk
            .as_ref()
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize) / (1 << 20)),
        key_custody: "keyfile".into(),
        key_present,
        alarms: shared.alarms(),
        audit_heads,
        binding: shared.binding.get().map(|b| {
            let mut s = b.snapshot();
            crate::app::sink::add_media_gaps(&mut s);
            s
        }),
        commands: shared
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        assurance: Some(crate::app::assurance::snapshot()),
    };
    doc.add_binding_alarms(
        branchrec_core::time::UnixMs(now_ms),
        &doc.generated_at.clone(),
    );
    doc.add_assurance_alarms(&doc.generated_at.clone());
    doc
}

/// Write the local status file atomically.
fn write_local_status(data_dir: &Path, doc: &StatusDoc) {
    let path = data_dir.join(LOCAL_STATUS_FILE);
    let tmp = data_dir.join(format!("{LOCAL_STATUS_FILE}.tmp"));
    let res = serde_json::to_vec_pretty(doc)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = res {
        tracing::warn!(error = %e, "writing {}", path.display());
    }
}

/// Box-scoped key prefix (for aborting stale multipart uploads): the rendered layout up
/// to its first per-recording placeholder, if it names this box.
fn box_prefix(cfg: &UplinkConfig) -> Option<String> {
    let cut = ["{yyyy}", "{mm}", "{dd}", "{id}"]
        .iter()
        .filter_map(|p| cfg.key_layout.find(p))
        .min()
        .unwrap_or(cfg.key_layout.len());
    let head = &cfg.key_layout[..cut];
    if !head.contains("{box}") {
        return None;
    }
    Some(format!(
        "{}{}",
        cfg.prefix,
        head.replace("{site}", &cfg.site)
            .replace("{box}", &cfg.box_id)
    ))
}

/// Run the uplink until the task is aborted. Errors only for setup problems; everything
/// at run time becomes an alarm and a retry.
pub async fn run(
    cfg: Config,
    access: crate::catalog::CatalogAccess,
    shared: Arc<UplinkShared>,
) -> anyhow::Result<()> {
    let ucfg = cfg.uplink.clone();
    let schedule: Schedule = ucfg.schedule().map_err(anyhow::Error::msg)?;
    let client = match crate::uplink::client(&ucfg, shared.shaper.clone()) {
        Ok(c) => c,
        Err(e) => {
            shared.raise("config", &e.to_string());
            let cat = access.open();
            let counts = cat
                .as_ref()
                .ok()
                .and_then(|c| c.uplink_counts().ok())
                .unwrap_or_default();
            let heads = cat
                .as_ref()
                .ok()
                .and_then(|c| crate::service::audit::published_heads(c, PUBLISHED_HEADS).ok())
                .unwrap_or_default();
            write_local_status(
                &cfg.storage.data_dir,
                &build_status(&cfg, &counts, &shared, 0, None, heads),
            );
            return Err(e.into());
        }
    };
    let mut cat = access.open()?;
    cat.set_clock(shared.clock.clone());
    let db = Arc::new(Mutex::new(cat));
    // Validated with the configuration; a file that went bad since is a config alarm and
    // nothing is uploaded (a plaintext document must never reach the archive instead).
    let compliance = match cfg.compliance() {
        Ok(c) => c,
        Err(e) => {
            shared.raise("config", &format!("compliance key: {e}"));
            return Err(e.into());
        }
    };
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        compliance,
        signer_der: crate::vault::custody::read_state(&cfg.custody())
            .ok()
            .flatten()
            .and_then(|s| hex::decode(&s.signing_public_key).ok())
            .filter(|raw| raw.len() == 32)
            .map(|raw| {
                let mut der = vec![
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                der.extend_from_slice(&raw);
                der
            }),
        client,
        db,
        shared: shared.clone(),
    });
    tracing::info!(
        endpoint = %ucfg.endpoint, bucket = %ucfg.bucket, box_id = %ucfg.box_id,
        "uplink started"
    );
    // Commands from headquarters, polled on the upload schedule (app::commands).
    let mut commands = match crate::app::commands::Commands::open(&cfg, ctx.db.clone()) {
        Ok(c) => c,
        Err(e) => {
            shared.raise("commands", &format!("commands from headquarters: {e}"));
            None
        }
    };
    if let Some(cm) = &commands {
        *shared.commands.lock().unwrap_or_else(|p| p.into_inner()) = Some(cm.counters().clone());
    }
    let poll_every = Duration::from_secs(cfg.central.poll_interval_s.into());
    let mut last_poll: Option<Instant> = None;
    let mut tasks: JoinSet<(String, Result<(), TaskError>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut gate_until: Option<Instant> = None;
    let mut gate_backoff = Duration::from_secs(5);
    let mut probing = false;
    let mut last_status: Option<Instant> = None;
    let mut last_sent = (Instant::now(), shared.shaper.bytes_sent());
    let mut history: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut stale_checked = false;
    let status_every = Duration::from_secs(ucfg.status_interval_s);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let done = Arc::new(tokio::sync::Notify::new());
    loop {
        // Wake on the tick or as soon as an upload finishes (so the link does not idle).
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.notified() => {}
        }
        // Rate: schedule × congestion.
        let base = schedule.rate_at(local_tod());
        let rate = if ucfg.congestion_backoff {
            let mut c = shared.congestion.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rtt) = ctx.client.take_rtt() {
                c.on_rtt(
                    crate::clock::MonoClock::with_origin(shared.started).now(),
                    rtt,
                );
            }
            c.apply(base)
        } else {
            base
        };
        shared.shaper.set_rate(rate);

        // Finished uploads.
        while let Some(j) = tasks.try_join_next() {
            let Ok((id, res)) = j else { continue };
            in_flight.remove(&id);
            match res {
                Ok(()) => {
                    probing = false;
                    gate_until = None;
                    gate_backoff = Duration::from_secs(5);
                    for a in ["tls", "auth", "link"] {
                        shared.clear(a);
                    }
                }
                Err(TaskError::Link(e)) => {
                    probing = false;
                    if ucfg.congestion_backoff {
                        shared
                            .congestion
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .on_failure(crate::clock::MonoClock::with_origin(shared.started).now());
                    }
                    match &e {
                        S3Error::Tls(m) => shared.raise("tls", &format!("uploads stopped: {m}")),
                        e if e.is_auth() => shared.raise(
                            "auth",
                            &format!("uploads stopped: archive refused the credentials: {e}"),
                        ),
                        e => shared.raise("link", &format!("archive unreachable: {e}")),
                    }
                    gate_until = Some(Instant::now() + gate_backoff);
                    gate_backoff = (gate_backoff * 2).min(Duration::from_secs(120));
                    // The recording keeps its progress; mark it pending again.
                    let idc = id.clone();
                    let _ = ctx
                        .db(move |c| {
                            if let Some(mut r) = c.upload_row(&idc)? {
                                if r.state == UploadState::Uploading {
                                    r.state = UploadState::Pending;
                                    r.last_error = Some(e.to_string());
                                    c.save_upload(&r)?;
                                }
                            }
                            Ok(())
                        })
                        .await;
                }
                Err(e) => {
                    probing = false;
                    tracing::warn!(recording = %id, error = %e, "upload failed; will retry");
                    let msg = e.to_string();
                    let idc = id.clone();
                    let now = shared.now_ms();
                    let _ = ctx
                        .db(move |c| {
                            let mut r = c
                                .upload_row(&idc)?
                                .unwrap_or_else(|| UploadRow::pending(&idc));
                            if r.state != UploadState::Uploaded {
                                r.state = UploadState::Failed;
                            }
                            r.last_error = Some(msg);
                            r.next_attempt_at_ms = Some(
                                (crate::time::UnixMs(now) + planner::retry_delay(r.attempts))
                                    .as_millis(),
                            );
                            c.save_upload(&r)
                        })
                        .await;
                }
            }
        }

        // Stale multipart uploads of this box that the catalogue no longer knows.
        if !stale_checked && gate_until.is_none() {
            stale_checked = true;
            if let Some(bp) = box_prefix(&ucfg) {
                if let Ok(list) = ctx.client.list_uploads(&bp).await {
                    let known: HashSet<String> = ctx
                        .db(|c| c.active_upload_ids())
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    for (k, uid) in list {
                        if !known.contains(&uid) {
                            tracing::info!(key = %k, "aborting stale multipart upload");
                            let _ = ctx.client.abort(&k, &uid).await;
                        }
                    }
                }
            }
        }

        // New uploads.
        let gated = gate_until.is_some_and(|t| Instant::now() < t);
        if !gated && !probing {
            let slots = if gate_until.is_some() {
                // First attempt after a link failure is a single probe.
                usize::from(in_flight.is_empty())
            } else {
                ucfg.concurrency.saturating_sub(in_flight.len())
            };
            if slots > 0 {
                let now = shared.now_ms();
                let cands = ctx
                    .db(move |c| {
                        // Legal holds placed since (by recording, call, participant, window)
                        // reach the archive as Object Lock legal holds.
                        c.sync_upload_holds(now)?;
                        c.upload_candidates()
                    })
                    .await
                    .unwrap_or_else(|e| {
                        // Visible, not silent: holds would not reach the archive.
                        tracing::error!(error = %e, "uplink: cannot read holds and upload candidates from the catalogue");
                        Vec::new()
                    });
                let cands: Vec<Candidate> = cands
                    .into_iter()
                    .map(|c| Candidate {
                        id: c.id,
                        held: c.held,
                        started_at: crate::time::UnixMs(c.started_at_ms),
                        not_before: c.next_attempt_at_ms.map(crate::time::UnixMs),
                    })
                    .collect();
                let picks = planner::pick(
                    &cands,
                    &in_flight,
                    slots,
                    crate::time::UnixMs(shared.now_ms()),
                );
                if gate_until.is_some() && !picks.is_empty() {
                    probing = true;
                }
                for id in picks {
                    in_flight.insert(id.clone());
                    let c = ctx.clone();
                    let dn = done.clone();
                    tasks.spawn(async move {
                        let r = upload_one(c, id.clone()).await;
                        dn.notify_one();
                        (id, r)
                    });
                }
            }
        }

        // Commands from headquarters.
        if let Some(cm) = commands.as_mut() {
            if !gated && last_poll.map_or(true, |t| t.elapsed() >= poll_every) {
                last_poll = Some(Instant::now());
                let res = cm
                    .poll(&ctx.client, shared.signer.get().cloned(), shared.now_ms())
                    .await;
                *shared.commands.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(cm.counters().clone());
                match res {
                    Ok(()) => shared.clear("commands"),
                    Err(e) => shared.raise("commands", &format!("commands from headquarters: {e}")),
                }
            }
        }

        // Status document.
        if last_status.map_or(true, |t| t.elapsed() >= status_every) {
            last_status = Some(Instant::now());
            let counts = ctx.db(|c| c.uplink_counts()).await.unwrap_or_default();
            let now = Instant::now();
            let sent = shared.shaper.bytes_sent();
            let dt = now.duration_since(last_sent.0).as_secs_f64().max(0.001);
            let rate_bps = ((sent - last_sent.1) as f64 / dt) as u64;
            last_sent = (now, sent);
            history.push_back((now, counts.pending));
            while history
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(3600))
            {
                history.pop_front();
            }
            let delta = history
                .front()
                .filter(|(t, _)| now.duration_since(*t) >= Duration::from_secs(600))
                .map(|(_, p)| counts.pending as i64 - *p as i64);
            let heads = ctx
                .db(|c| crate::service::audit::published_heads(c, PUBLISHED_HEADS))
                .await
                .unwrap_or_default();
            let doc = build_status(&cfg, &counts, &shared, rate_bps, delta, heads);
            write_local_status(&cfg.storage.data_dir, &doc);
            *shared.last_doc.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc.clone());
            if !gated {
                let c = ctx.clone();
                let key = status_key(&ucfg.prefix, &ucfg.box_id);
                tokio::spawn(async move {
                    let body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                    if let Err(e) = c
                        .client
                        .put_object(&key, Bytes::from(body), "application/json", &[])
                        .await
                    {
                        tracing::warn!(error = %e, "status document not pushed");
                    }
                });
            }
        }
    }
}
