//! The daemon: thin tokio shells around the sans-IO cores.
//!
//! - [`sip_loop`] owns the [`Srs`](crate::siprec::srs::Srs) core and the SIP sockets.
//! - [`call`] runs one task per recorded call: its RTP sockets, its
//!   [`CallTimeline`](crate::media::CallTimeline) and its container writer.
//! - [`store`] owns the catalogue on a thread of its own, makes writes durable and
//!   recovers interrupted recordings at start-up.
//!
//! A packet goes socket → `call` task → timeline → container writer → file; a SIP
//! message goes socket → `sip_loop` → `Srs` → events → `call`/`store`.

pub mod call;
pub mod evidence;
pub mod ports;
pub mod sip_loop;
pub mod store;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::vault::{KeyWrap, Signer, VaultError};

/// Everything a call task needs that outlives it.
pub struct Shared {
    /// Validated configuration.
    pub cfg: Config,
    /// Key-encryption for data keys.
    pub vault: Arc<dyn KeyWrap>,
    /// Why the keys are unavailable (the recorder then answers 503 to every call).
    pub keys_error: Option<String>,
    /// Catalogue writer.
    pub catalog: store::CatalogHandle,
    /// RTP port pool.
    pub ports: Arc<ports::PortPool>,
}

/// Run the recorder until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(cfg.storage.recordings_dir())
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir).with_context(|| {
        format!(
            "another branchrec process holds {} (a running daemon, or keys rotate/recover)",
            data_dir.join("daemon.lock").display()
        )
    })?;
    let (vault, signer, keys_error) = load_keys(&cfg);
    let catalog = store::start(&cfg, vault.clone(), signer, keys_error.is_none())
        .context("opening the catalogue")?;
    let shared = Arc::new(Shared {
        ports: Arc::new(ports::PortPool::new(
            cfg.media.rtp_bind,
            cfg.media.rtp_ports,
        )),
        cfg,
        vault,
        keys_error,
        catalog,
    });
    let syncer = tokio::spawn(store::syncer(shared.clone()));
    let result = sip_loop::run(shared.clone()).await;
    syncer.abort();
    shared.catalog.close();
    result
}

/// A stand-in when the keys cannot be loaded: every operation fails with the reason.
struct NoKeys(String);

impl KeyWrap for NoKeys {
    fn kek_id(&self) -> String {
        String::new()
    }
    fn wrap(&self, _: &crate::vault::DataKey) -> Result<Vec<u8>, VaultError> {
        Err(VaultError::KeyUnavailable(self.0.clone()))
    }
    fn unwrap(&self, _: &str, _: &[u8]) -> Result<crate::vault::DataKey, VaultError> {
        Err(VaultError::KeyUnavailable(self.0.clone()))
    }
}

/// Load (or provision) the keys. On failure the daemon still runs — answering 503 with
/// the reason — and never makes a new key that would orphan recordings.
/// What [`load_keys`] returns: the wrapper, the signer (if keys loaded), the error.
type LoadedKeys = (Arc<dyn KeyWrap>, Option<Arc<dyn Signer>>, Option<String>);

fn load_keys(cfg: &Config) -> LoadedKeys {
    let cc = cfg.custody();
    let res = crate::vault::custody::open(&cc, &cfg.storage.recordings_dir());
    let status = |ok: bool, kek: &str, err: Option<&str>| {
        let v = serde_json::json!({
            "provider": cc.provider.as_str(),
            "ok": ok,
            "kek_id": kek,
            "error": err,
            "pid": std::process::id(),
            "at_ms": chrono::Utc::now().timestamp_millis(),
        });
        let p = cc.keys_dir.join("daemon-status.json");
        if let Err(e) = crate::vault::custody::write_atomic(&p, v.to_string().as_bytes()) {
            tracing::warn!(error = %e, "cannot write {}", p.display());
        }
    };
    match res {
        Ok(k) => {
            let kek = k.wrap.kek_id();
            match k.provider {
                crate::vault::Provider::Software => tracing::warn!(
                    kek = %kek,
                    "KEYS ARE IN SOFTWARE ([keys] provider = \"software\"): the key-encryption \
                     key is a file on this disk, so whoever has the disk has the recordings. \
                     For development machines only."
                ),
                crate::vault::Provider::Tpm => {
                    tracing::info!(kek = %kek, tcti = %cc.tcti, "key-encryption key unsealed from the TPM")
                }
            }
            if cc.recovery_public_key.is_none() && k.provider == crate::vault::Provider::Tpm {
                tracing::warn!("no [keys] recovery_public_key: the KEK is not escrowed; if this TPM dies, every recording is lost");
            }
            status(true, &kek, None);
            let signer: Arc<dyn Signer> = Arc::new(k.signer);
            (Arc::new(k.wrap), Some(signer), None)
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "CANNOT RECORD: the recording keys are unavailable; every call will be refused with 503");
            status(false, "", Some(&msg));
            (Arc::new(NoKeys(msg.clone())), None, Some(msg))
        }
    }
}

/// Take the exclusive lock of a data directory (`<data_dir>/daemon.lock`, `flock`). The
/// daemon holds it while it runs; key rotation and recovery take it so they never run
/// beside a daemon. Released when the returned file is dropped (or the process dies).
pub fn lock_data_dir(data_dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("daemon.lock"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(f)
}
