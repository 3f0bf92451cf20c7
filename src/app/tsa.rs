//! RFC 3161 time stamps for manifests (`[time] tsa_url`, docs/assurance.md): every
//! signed manifest gets a token from the TSA, stored beside it as
//! `<file>.brec.manifest.tsr` (the DER `TimeStampResp`) and put into evidence bundles.
//!
//! The request and the checks of the reply (status, our message imprint, our nonce) are
//! the sans-IO `assurance::tsa`; this worker queues and fetches. A manifest waiting for
//! its token has a `<manifest>.tsr-pending` marker, so the queue survives restarts and
//! stays put while the TSA is unreachable (retried with back-off, 2 s … 5 min).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rand::RngCore;
use tokio::sync::mpsc;

use crate::assurance::tsa;

static QUEUE: OnceLock<mpsc::UnboundedSender<PathBuf>> = OnceLock::new();

use crate::service::evidence::timestamp_token_path as token_path;

fn pending_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".tsr-pending");
    PathBuf::from(s)
}

/// A manifest was (re)written at `manifest`: with a TSA configured it waits for a token
/// (a stale token of an earlier manifest is removed: it stamps other bytes).
pub fn manifest_written(cfg: &crate::config::Config, manifest: &Path) {
    if cfg.time.tsa_url.is_none() {
        return;
    }
    let _ = std::fs::remove_file(token_path(manifest));
    if let Err(e) = crate::vault::custody::write_atomic(&pending_path(manifest), b"") {
        tracing::error!(error = %e, manifest = %manifest.display(), "cannot queue the manifest for a time stamp");
        return;
    }
    if let Some(q) = QUEUE.get() {
        let _ = q.send(manifest.to_path_buf());
    }
}

/// Ask the TSA at `url` for a token over `manifest`'s bytes; returns the checked token.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    manifest: &[u8],
) -> anyhow::Result<tsa::Token> {
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let req = tsa::request(manifest, nonce);
    let resp = client
        .post(url)
        .header("Content-Type", "application/timestamp-query")
        .body(req)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("TSA answered HTTP {status}");
    }
    let body = resp.bytes().await?;
    if body.len() > 64 * 1024 {
        anyhow::bail!("TSA reply of {} bytes is too large", body.len());
    }
    Ok(tsa::parse_response(&body, manifest, nonce)?)
}

/// Time-stamp one queued manifest: read it, fetch, store the token, drop the marker.
async fn stamp(
    client: &reqwest::Client,
    url: &str,
    manifest: &Path,
) -> anyhow::Result<Option<tsa::Token>> {
    let Ok(bytes) = std::fs::read(manifest) else {
        // Deleted (retention, shredding) while waiting: nothing to stamp.
        let _ = std::fs::remove_file(pending_path(manifest));
        return Ok(None);
    };
    let tok = fetch(client, url, &bytes).await?;
    // The manifest must still be the one stamped (it is rewritten only by re-signing).
    if std::fs::read(manifest).ok().as_deref() != Some(&bytes[..]) {
        anyhow::bail!("the manifest changed while it was being stamped");
    }
    crate::vault::custody::write_atomic(&token_path(manifest), &tok.response)?;
    let _ = std::fs::remove_file(pending_path(manifest));
    Ok(Some(tok))
}

/// The worker: the markers on disk at start, then what the catalogue thread queues.
pub async fn run(cfg: crate::config::Config) {
    let Some(url) = cfg.time.tsa_url.clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = QUEUE.set(tx);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "time-stamp client");
            return;
        }
    };
    let mut queue: VecDeque<PathBuf> = VecDeque::new();
    let mut known: HashSet<PathBuf> = HashSet::new();
    let rec_dir = cfg.storage.data_dir.join("recordings");
    for f in crate::recording::files::recording_files(&rec_dir) {
        let (m, _) = crate::service::evidence::manifest_paths(&f);
        if pending_path(&m).exists() && known.insert(m.clone()) {
            queue.push_back(m);
        }
    }
    if !queue.is_empty() {
        tracing::info!(pending = queue.len(), "manifests waiting for a time stamp");
    }
    let mut backoff = Duration::from_secs(2);
    loop {
        while let Ok(m) = rx.try_recv() {
            if known.insert(m.clone()) {
                queue.push_back(m);
            }
        }
        let Some(m) = queue.front().cloned() else {
            match rx.recv().await {
                Some(m) => {
                    if known.insert(m.clone()) {
                        queue.push_back(m);
                    }
                    continue;
                }
                None => return,
            }
        };
        match stamp(&client, &url, &m).await {
            Ok(tok) => {
                if let Some(t) = tok {
                    tracing::info!(manifest = %m.display(), gen_time = %t.gen_time, serial = %t.serial_hex, "manifest time-stamped");
                }
                queue.pop_front();
                known.remove(&m);
                backoff = Duration::from_secs(2);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), manifest = %m.display(), queued = queue.len(), retry_s = backoff.as_secs(), "time stamp not obtained: queued");
                // Wait, but take new arrivals meanwhile.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        n = rx.recv() => match n {
                            Some(n) => { if known.insert(n.clone()) { queue.push_back(n); } }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}
