//! The catalogue on a thread of its own, durability of recording files, and recovery of
//! recordings that a crash left open.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::catalog::{
    Catalog, CatalogError, ChannelRow, EventRow, Finish, MetadataVersion, NewRecording,
    ParticipantRow, RecordingState,
};
use crate::config::Config;
use crate::recording::{scan, ScanState};
use crate::vault::{KeyWrap, Signer};

/// A write for the catalogue thread.
pub enum CatalogCmd {
    /// A recording started; reply when the row is durable.
    Insert(Box<NewRecording>, oneshot::Sender<Result<(), CatalogError>>),
    /// Replace the participants.
    Participants(String, Vec<ParticipantRow>),
    /// A metadata snapshot's participants, arrived at unix ms (see
    /// [`Catalog::update_participants`](crate::catalog::Catalog::update_participants)):
    /// the recording's participant history is updated, nobody is forgotten.
    ParticipantSnapshot(String, Vec<ParticipantRow>, i64),
    /// Replace the channel mapping.
    Channels(String, Vec<ChannelRow>),
    /// Keep one metadata version.
    Metadata(String, MetadataVersion),
    /// Set the SIPREC session id once the metadata names it.
    SessionId(String, String),
    /// Timed events (DTMF, hold, resume).
    Events(String, Vec<EventRow>),
    /// The recording is closed.
    Finish(String, Finish, Option<oneshot::Sender<()>>),
    /// What the recording rules decided.
    Policy(String, crate::catalog::lifecycle::Policy),
    /// An audit entry: actor, action, target, details.
    Audit(String, String, String, serde_json::Value),
    /// The assurance verdict and document of a closed recording (before its `Seal`).
    Assurance(String, crate::assurance::Verdict, serde_json::Value),
    /// A call that got no recording (refused, not recorded, missed).
    CallSeen(crate::catalog::CallSeenRow),
    /// Sign and write the manifest of a closed recording.
    Seal(String, crate::service::evidence::ManifestInputs),
    /// Reply once every write queued before it is done.
    Barrier(oneshot::Sender<()>),
}

/// Sends writes to the catalogue thread.
#[derive(Clone)]
pub struct CatalogHandle {
    tx: mpsc::Sender<CatalogCmd>,
}

impl CatalogHandle {
    /// Queue a write. Failures are logged by the thread; a dead thread is logged here.
    pub fn send(&self, cmd: CatalogCmd) {
        if self.tx.send(cmd).is_err() {
            tracing::error!("catalogue thread is gone: write lost");
        }
    }

    /// Insert a recording row and wait until it is committed.
    pub async fn insert(&self, r: NewRecording) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(CatalogCmd::Insert(Box::new(r), tx))
            .map_err(|_| "catalogue thread is gone".to_string())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("catalogue thread is gone".into()),
        }
    }

    /// Queue an insert without waiting for it; a failure is logged by the catalogue
    /// thread. Later writes for the same recording are queued behind it, in order.
    pub fn insert_nowait(&self, r: NewRecording) {
        let (tx, _rx) = oneshot::channel();
        self.send(CatalogCmd::Insert(Box::new(r), tx));
    }

    /// Wait (blocking, outside the async runtime) until every write queued so far is done.
    pub fn wait_idle_blocking(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(CatalogCmd::Barrier(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

/// Open the catalogue, recover what a crash left open, and start the writer thread.
/// Recovery needs the keys: without them (`keys_ok` false) open recordings are left for
/// the next start rather than wrongly marked damaged.
///
/// Without the catalogue key (`access` locked: the KEK cannot be loaded) the catalogue
/// stays closed: the thread answers every insert with the reason and drops other writes,
/// counted in the log (calls are refused with 503 meanwhile anyway).
pub fn start(
    cfg: &Config,
    access: &crate::catalog::CatalogAccess,
    vault: Arc<dyn KeyWrap>,
    signer: Option<Arc<dyn Signer>>,
    keys_ok: bool,
    clock: Arc<dyn crate::lifecycle::Clock>,
) -> Result<CatalogHandle, anyhow::Error> {
    if let Err(e) = access.key() {
        let (tx, rx) = mpsc::channel::<CatalogCmd>();
        let why = e.to_string();
        std::thread::Builder::new()
            .name("catalog".into())
            .spawn(move || closed_writer(rx, &why))?;
        return Ok(CatalogHandle { tx });
    }
    let mut cat = access.open()?;
    cat.set_clock(clock.clone());
    if keys_ok {
        recover(
            &mut cat,
            &cfg.storage.data_dir,
            vault.as_ref(),
            signer.as_deref(),
        )?;
    } else {
        tracing::error!(
            "keys unavailable: recordings left open by a previous run are not recovered now"
        );
    }
    let (tx, rx) = mpsc::channel::<CatalogCmd>();
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("catalog".into())
        .spawn(move || writer(cat, rx, &cfg, clock.as_ref(), signer))?;
    Ok(CatalogHandle { tx })
}

/// After a recording closed: discard it (crypto-shred, tombstone) if it is shorter than
/// its rule's minimum duration and no hold covers it.
fn discard_if_short(
    cat: &mut Catalog,
    cfg: &Config,
    clock: &dyn crate::lifecycle::Clock,
    id: &str,
) {
    let Ok(Some((min, Some(dur)))) = cat.min_duration(id) else {
        return;
    };
    if min == 0 || dur >= min {
        return;
    }
    let detail = format!("duration {dur} ms below the rule's minimum of {min} ms");
    match crate::service::retention::delete(
        cat,
        cfg,
        id,
        crate::catalog::lifecycle::DeleteMode::MinDuration,
        Some(&detail),
        "rule",
        clock.now_ms(),
    ) {
        Ok(_) => {
            tracing::info!(recording = %id, duration_ms = dur, min_ms = min, "short recording discarded (key shredded)")
        }
        Err(e) => tracing::warn!(recording = %id, error = %e, "short recording kept"),
    }
}

/// After a recording closed: discard it (crypto-shred, tombstone `unconfirmed`) if its
/// session was never confirmed (our 2xx was not ACKed, we sent BYE: event `unconfirmed`)
/// and no audio packet arrived; one with audio is kept, the event marking it. True when
/// it was discarded.
fn discard_if_unconfirmed(
    cat: &mut Catalog,
    cfg: &Config,
    clock: &dyn crate::lifecycle::Clock,
    id: &str,
) -> bool {
    let Ok(Some(d)) = cat.get(id) else {
        return false;
    };
    if !d.events.iter().any(|e| e.kind == "unconfirmed") {
        return false;
    }
    let received: u64 = d
        .recording
        .stats_json
        .as_ref()
        .and_then(|s| s.as_array())
        .map(|chs| chs.iter().filter_map(|c| c["received"].as_u64()).sum())
        .unwrap_or(0);
    if received > 0 {
        tracing::info!(recording = %id, received, "unconfirmed session kept: it has audio");
        return false;
    }
    let detail = "the SRC never acknowledged the 2xx; no audio";
    match crate::service::retention::delete(
        cat,
        cfg,
        id,
        crate::catalog::lifecycle::DeleteMode::Unconfirmed,
        Some(detail),
        "sip",
        clock.now_ms(),
    ) {
        Ok(_) => {
            tracing::info!(recording = %id, "unconfirmed silent recording discarded (key shredded)");
            true
        }
        Err(e) => {
            tracing::warn!(recording = %id, error = %e, "unconfirmed recording kept");
            false
        }
    }
}

/// Most commands committed together (one fsync).
const MAX_BATCH: usize = 256;

/// The catalogue thread while the catalogue is locked (no catalogue key): inserts fail
/// with the reason, barriers are answered, every other write is dropped and counted.
fn closed_writer(rx: mpsc::Receiver<CatalogCmd>, why: &str) {
    let mut dropped = 0u64;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            CatalogCmd::Insert(_, reply) => {
                let _ = reply.send(Err(CatalogError::Locked(why.to_string())));
                continue;
            }
            CatalogCmd::Barrier(tx) => {
                let _ = tx.send(());
                continue;
            }
            CatalogCmd::Finish(_, _, Some(done)) => {
                let _ = done.send(());
            }
            _ => {}
        }
        dropped += 1;
        if dropped.is_power_of_two() {
            tracing::error!(dropped, reason = %why, "catalogue locked: writes (audit entries included) are not stored");
        }
    }
}

fn writer(
    mut cat: Catalog,
    rx: mpsc::Receiver<CatalogCmd>,
    cfg: &Config,
    clock: &dyn crate::lifecycle::Clock,
    signer: Option<Arc<dyn Signer>>,
) {
    let data_dir = cfg.storage.data_dir.clone();
    while let Ok(first) = rx.recv() {
        // Group commit: everything queued goes into one transaction; replies and
        // completion signals are sent only after it is durable.
        let mut cmds = vec![first];
        while cmds.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut replies = Vec::new();
        let mut finished = Vec::new();
        let mut seals = Vec::new();
        let res = cat.batch(|cat| {
            for cmd in cmds {
                if let CatalogCmd::Finish(id, ..) = &cmd {
                    finished.push(id.clone());
                }
                if let CatalogCmd::Seal(id, inputs) = cmd {
                    seals.push((id, inputs));
                    continue;
                }
                if let Some(r) = apply(cat, cmd, clock) {
                    replies.push(r);
                }
            }
        });
        let ok = res.is_ok();
        if let Err(e) = res {
            tracing::error!(error = %e, "catalogue commit failed");
        }
        // Barriers and finish signals answer after the manifests of this batch are written:
        // a barrier means "everything queued before it is done", signing included.
        let mut done_later = Vec::new();
        for r in replies {
            match r {
                Reply::Insert(tx, res) => {
                    let _ = tx.send(if ok {
                        res
                    } else {
                        Err(CatalogError::Invalid {
                            field: "commit",
                            reason: "catalogue commit failed".into(),
                        })
                    });
                }
                Reply::Done(tx) => done_later.push(tx),
            }
        }
        // Deleting touches files and takes its own transaction: after the commit.
        // Manifests cover the committed row; deleting touches files and takes its own
        // transaction: both after the commit.
        for (id, inputs) in seals {
            let res = match &signer {
                Some(s) => crate::service::evidence::write_manifest(
                    &cat,
                    &data_dir,
                    &id,
                    &inputs,
                    s.as_ref(),
                )
                .map_err(|e| format!("recording {id}: {e:#}")),
                None => Err("no signing key".into()),
            };
            match res {
                Err(e) => {
                    tracing::error!(op = "manifest", error = %e, "signing the manifest failed")
                }
                Ok(()) => {
                    // With [time] tsa_url: queue the manifest for its RFC 3161 token.
                    if let Some(p) = cat
                        .get(&id)
                        .ok()
                        .flatten()
                        .and_then(|d| d.recording.file_path)
                        .and_then(|rel| crate::recording::files::confined(&data_dir, &rel).ok())
                    {
                        let (m, _) = crate::service::evidence::manifest_paths(&p);
                        crate::app::tsa::manifest_written(cfg, &m);
                    }
                }
            }
        }
        if ok {
            for id in finished {
                if !discard_if_unconfirmed(&mut cat, cfg, clock, &id) {
                    discard_if_short(&mut cat, cfg, clock, &id);
                }
            }
        }
        for tx in done_later {
            let _ = tx.send(());
        }
    }
}

enum Reply {
    Insert(
        oneshot::Sender<Result<(), CatalogError>>,
        Result<(), CatalogError>,
    ),
    Done(oneshot::Sender<()>),
}

fn apply(cat: &mut Catalog, cmd: CatalogCmd, clock: &dyn crate::lifecycle::Clock) -> Option<Reply> {
    let (what, res, reply) = match cmd {
        CatalogCmd::Insert(r, reply) => {
            let res = cat.insert_recording(&r);
            let out = res.as_ref().map(|_| ()).map_err(|e| e.to_string());
            ("insert", out, Some(Reply::Insert(reply, res)))
        }
        CatalogCmd::Participants(id, ps) => (
            "participants",
            cat.set_participants(&id, &ps).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::ParticipantSnapshot(id, ps, at_ms) => (
            "participants",
            cat.update_participants(&id, &ps, at_ms)
                .map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Channels(id, cs) => (
            "channels",
            cat.set_channels(&id, &cs).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Metadata(id, v) => (
            "metadata",
            cat.add_metadata_version(&id, &v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::SessionId(id, s) => (
            "session id",
            cat.set_session_id(&id, &s).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Events(id, evs) => (
            "events",
            cat.add_events(&id, &evs).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Finish(id, f, done) => (
            "finish",
            cat.finish_recording(&id, &f).map_err(|e| e.to_string()),
            done.map(Reply::Done),
        ),
        CatalogCmd::Assurance(id, v, doc) => (
            "assurance",
            cat.set_assurance(&id, v, &doc).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::CallSeen(row) => (
            "call_seen",
            cat.add_call_seen(&row).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Policy(id, p) => (
            "policy",
            cat.set_policy(&id, &p).map_err(|e| e.to_string()),
            None,
        ),
        CatalogCmd::Audit(actor, action, target, details) => (
            "audit",
            cat.audit(clock.now_ms(), &actor, &action, &target, details)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None,
        ),
        // Handled after the commit by the writer.
        CatalogCmd::Seal(..) => return None,
        // Answered after the commit: everything queued before it is then durable.
        CatalogCmd::Barrier(done) => return Some(Reply::Done(done)),
    };
    if let Err(e) = res {
        tracing::error!(op = what, error = %e, "catalogue write failed");
    }
    reply
}

/// Recordings still marked `recording` were open when the daemon died: close each at its
/// last durable chunk (`interrupted`), or mark it `damaged` if its file cannot be read.
pub fn recover(
    cat: &mut Catalog,
    data_dir: &Path,
    vault: &dyn KeyWrap,
    signer: Option<&dyn Signer>,
) -> anyhow::Result<()> {
    quarantine_orphans(cat, data_dir)?;
    if let Some(s) = signer {
        sign_missing_manifests(cat, data_dir, vault, s)?;
    }
    let open = cat.recordings_in_state("recording")?;
    for r in open {
        let Some(d) = cat.get(&r.id)? else { continue };
        let d = d.recording;
        let Some(rel) = d.file_path.as_deref() else {
            // A captured call whose codec cannot be recorded never has a file.
            let state = if d.source == crate::catalog::Source::Mirror {
                RecordingState::CodecUnsupported
            } else {
                RecordingState::Damaged
            };
            let f = Finish {
                ended_at_ms: d.started_at_ms,
                duration_ms: 0,
                state,
                file_sha256: None,
                file_bytes: None,
                codec: None,
                stats_json: None,
            };
            cat.finish_recording(&r.id, &f)?;
            continue;
        };
        let confined = crate::recording::files::confined(data_dir, rel);
        let path = confined.as_ref().cloned().unwrap_or_default();
        let scanned = confined
            .map_err(|e| anyhow::anyhow!(e))
            .and_then(|p| scan_file(&p, vault));
        let (state, frames, sha, bytes) = match scanned {
            Ok(rep) => {
                let st = match rep.state {
                    ScanState::Complete => RecordingState::Complete,
                    ScanState::Interrupted { .. } => RecordingState::Interrupted,
                    ScanState::Damaged { .. } => RecordingState::Damaged,
                };
                (st, rep.frames, rep.sha256_hex, Some(rep.bytes))
            }
            Err(e) => {
                tracing::error!(recording = %r.id, error = %e, "open recording unreadable");
                (RecordingState::Damaged, 0, None, None)
            }
        };
        let rate = u64::from(d.sample_rate.max(1));
        let duration_ms = frames * 1000 / rate;
        let f = Finish {
            ended_at_ms: d.started_at_ms + duration_ms as i64,
            duration_ms,
            state,
            file_sha256: sha,
            file_bytes: bytes,
            codec: None,
            stats_json: None,
        };
        cat.finish_recording(&r.id, &f)?;
        // Issue #19: the call was cut by the crash; no statistics survive it.
        let (verdict, reason) = if duration_ms == 0 || state == RecordingState::Damaged {
            (
                crate::assurance::Verdict::Partial,
                "the recorder stopped during the call and nothing readable was stored",
            )
        } else {
            (
                crate::assurance::Verdict::Partial,
                "the recorder stopped during the call: recovered up to its last durable chunk",
            )
        };
        cat.set_assurance(
            &r.id,
            verdict,
            &serde_json::json!({ "verdict": verdict, "reason": reason, "silent_channels": [], "channels": [], "clock": null }),
        )?;
        tracing::warn!(recording = %r.id, state = state.as_str(), duration_ms, "recovered recording left open by a previous run");
        if state != RecordingState::Damaged {
            if let Some(s) = signer {
                let signed =
                    crate::service::evidence::inputs_from_file(&path, vault).and_then(|inp| {
                        crate::service::evidence::write_manifest(cat, data_dir, &r.id, &inp, s)
                    });
                if let Err(e) = signed {
                    tracing::error!(recording = %r.id, error = %format!("{e:#}"), "signing the recovered recording failed");
                }
            }
        }
    }
    Ok(())
}

/// Make appended chunks durable: one `syncfs` per flush interval covers every open file.
pub async fn syncer(shared: Arc<super::Shared>) {
    let dir: PathBuf = shared.cfg.storage.recordings_dir();
    let every = Duration::from_millis(u64::from(shared.cfg.storage.flush_interval_ms));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The directory stays open: at the descriptor limit, opening it every interval would
    // fail and leave recordings without durability (issue #12).
    let mut held: Option<Arc<std::fs::File>> = None;
    loop {
        tick.tick().await;
        if held.is_none() {
            match std::fs::File::open(&dir) {
                Ok(f) => held = Some(Arc::new(f)),
                Err(e) => {
                    tracing::error!(error = %e, "syncfs: cannot open the recordings directory: recordings may not be durable");
                    continue;
                }
            }
        }
        let Some(f) = held.clone() else { continue };
        let res = tokio::task::spawn_blocking(move || rustix::fs::syncfs(&*f)).await;
        if let Ok(Err(e)) = res {
            tracing::error!(error = %e, "syncfs failed: recordings may not be durable");
            held = None;
        }
    }
}

/// Flush the filesystem holding `dir`.
pub fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}

/// Free space (MiB) on the filesystem holding `dir`.
pub fn free_mb(dir: &Path) -> std::io::Result<u64> {
    Ok(crate::service::retention::disk_usage(dir)?.avail / (1024 * 1024))
}

/// Result of checking one recording file.
pub struct FileScan {
    /// Integrity state.
    pub state: ScanState,
    /// Audio frames in the verified prefix.
    pub frames: u64,
    /// SHA-256 of the whole file.
    pub sha256_hex: Option<String>,
    /// File size.
    pub bytes: u64,
}

/// Verify a recording file chunk by chunk and hash its content (everything but the key
/// slots, see [`crate::recording::content_sha256`]).
pub fn scan_file(path: &Path, vault: &dyn KeyWrap) -> anyhow::Result<FileScan> {
    let bytes = std::fs::metadata(path)?.len();
    let (sum, _) =
        crate::recording::content_sha256(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let rep = scan(std::io::BufReader::new(std::fs::File::open(path)?), vault)?;
    Ok(FileScan {
        state: rep.state,
        frames: rep.frames,
        sha256_hex: Some(hex::encode(sum)),
        bytes,
    })
}

use crate::recording::files::recording_files;

/// Recording files without a catalogue row (a crash between creating the file and
/// committing its row — such a file holds no audio yet — or a restored/copied file) are
/// moved to `<data_dir>/orphans/` and logged, so catalogue and recordings directory
/// agree. Nothing is deleted.
fn quarantine_orphans(cat: &Catalog, data_dir: &Path) -> anyhow::Result<()> {
    let known: std::collections::HashSet<PathBuf> = cat
        .file_paths()?
        .into_iter()
        .map(|p| data_dir.join(p))
        .collect();
    for f in recording_files(&data_dir.join("recordings")) {
        if known.contains(&f) {
            continue;
        }
        let dir = data_dir.join("orphans");
        std::fs::create_dir_all(&dir)?;
        let name = f.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let to = dir.join(name);
        std::fs::rename(&f, &to)?;
        for ext in [".manifest.json", ".manifest.sig"] {
            let side = PathBuf::from(format!("{}{ext}", f.display()));
            if side.exists() {
                let _ = std::fs::rename(&side, PathBuf::from(format!("{}{ext}", to.display())));
            }
        }
        tracing::error!(file = %f.display(), moved_to = %to.display(), "recording file has no catalogue row: moved aside");
    }
    Ok(())
}

/// A crash between committing a recording's final row and writing its manifest leaves a
/// closed recording without one, and the `.manifest.pending` marker the call task wrote
/// (durably) before closing the row: sign those now — only if the file still hashes to
/// the catalogue's value and verifies. Recordings without the marker are never
/// (re-)signed here, so deleting a manifest and editing the catalogue while the box is
/// off does not get the edit signed.
fn sign_missing_manifests(
    cat: &Catalog,
    data_dir: &Path,
    vault: &dyn KeyWrap,
    signer: &dyn Signer,
) -> anyhow::Result<()> {
    for (id, rel, sha) in cat.closed_files()? {
        let Ok(abs) = crate::recording::files::confined(data_dir, &rel) else {
            tracing::error!(recording = %id, path = %rel, "catalogue path outside the data directory: not signed");
            continue;
        };
        let (manifest, _) = crate::service::evidence::manifest_paths(&abs);
        let pending = crate::service::evidence::pending_marker(&abs);
        if manifest.exists() || !abs.exists() || !pending.exists() {
            continue;
        }
        let res = crate::service::evidence::inputs_from_file(&abs, vault).and_then(|inp| {
            if sha.as_deref() != Some(inp.content_sha256.as_str()) {
                anyhow::bail!("file content does not match the catalogue's hash: not signing");
            }
            crate::service::evidence::write_manifest(cat, data_dir, &id, &inp, signer)
        });
        match res {
            Ok(()) => {
                let _ = std::fs::remove_file(&pending);
                tracing::warn!(recording = %id, "signed the manifest a crash left unwritten")
            }
            Err(e) => {
                tracing::error!(recording = %id, error = %format!("{e:#}"), "recording has no manifest")
            }
        }
    }
    Ok(())
}
