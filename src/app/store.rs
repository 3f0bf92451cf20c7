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
use crate::vault::KeyWrap;

/// A write for the catalogue thread.
pub enum CatalogCmd {
    /// A recording started; reply when the row is durable.
    Insert(Box<NewRecording>, oneshot::Sender<Result<(), CatalogError>>),
    /// Replace the participants.
    Participants(String, Vec<ParticipantRow>),
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

    /// Close: no more writes are sent after this.
    pub fn close(&self) {}
}

/// Open the catalogue, recover what a crash left open, and start the writer thread.
pub fn start(cfg: &Config, vault: Arc<dyn KeyWrap>) -> Result<CatalogHandle, anyhow::Error> {
    let mut cat = Catalog::open(&cfg.storage.catalog_path())?;
    recover(&mut cat, &cfg.storage.data_dir, vault.as_ref())?;
    let (tx, rx) = mpsc::channel::<CatalogCmd>();
    std::thread::Builder::new()
        .name("catalog".into())
        .spawn(move || writer(cat, rx))?;
    Ok(CatalogHandle { tx })
}

fn writer(mut cat: Catalog, rx: mpsc::Receiver<CatalogCmd>) {
    while let Ok(cmd) = rx.recv() {
        let (what, res) = match cmd {
            CatalogCmd::Insert(r, reply) => {
                let res = cat.insert_recording(&r);
                let out = res.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let _ = reply.send(res);
                ("insert", out)
            }
            CatalogCmd::Participants(id, ps) => (
                "participants",
                cat.set_participants(&id, &ps).map_err(|e| e.to_string()),
            ),
            CatalogCmd::Channels(id, cs) => (
                "channels",
                cat.set_channels(&id, &cs).map_err(|e| e.to_string()),
            ),
            CatalogCmd::Metadata(id, v) => (
                "metadata",
                cat.add_metadata_version(&id, &v)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            CatalogCmd::SessionId(id, s) => (
                "session id",
                cat.set_session_id(&id, &s).map_err(|e| e.to_string()),
            ),
            CatalogCmd::Events(id, evs) => (
                "events",
                cat.add_events(&id, &evs).map_err(|e| e.to_string()),
            ),
            CatalogCmd::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            CatalogCmd::Finish(id, f, done) => {
                let r = cat.finish_recording(&id, &f).map_err(|e| e.to_string());
                if let Some(d) = done {
                    let _ = d.send(());
                }
                ("finish", r)
            }
        };
        if let Err(e) = res {
            tracing::error!(op = what, error = %e, "catalogue write failed");
        }
    }
}

/// Recordings still marked `recording` were open when the daemon died: close each at its
/// last durable chunk (`interrupted`), or mark it `damaged` if its file cannot be read.
pub fn recover(cat: &mut Catalog, data_dir: &Path, vault: &dyn KeyWrap) -> anyhow::Result<()> {
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
        let path = data_dir.join(rel);
        let (state, frames, sha, bytes) = match scan_file(&path, vault) {
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
        tracing::warn!(recording = %r.id, state = state.as_str(), duration_ms, "recovered recording left open by a previous run");
    }
    Ok(())
}

/// Make appended chunks durable: one `syncfs` per flush interval covers every open file.
pub async fn syncer(shared: Arc<super::Shared>) {
    let dir: PathBuf = shared.cfg.storage.recordings_dir();
    let every = Duration::from_millis(u64::from(shared.cfg.storage.flush_interval_ms));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let d = dir.clone();
        let res = tokio::task::spawn_blocking(move || sync_fs(&d)).await;
        if let Ok(Err(e)) = res {
            tracing::error!(error = %e, "syncfs failed: recordings may not be durable");
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
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize) / (1024 * 1024))
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

/// Verify a recording file chunk by chunk and hash it.
pub fn scan_file(path: &Path, vault: &dyn KeyWrap) -> anyhow::Result<FileScan> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
        bytes += n as u64;
    }
    let rep = scan(std::io::BufReader::new(std::fs::File::open(path)?), vault)?;
    Ok(FileScan {
        state: rep.state,
        frames: rep.frames,
        sha256_hex: Some(hex::encode(h.finalize())),
        bytes,
    })
}
