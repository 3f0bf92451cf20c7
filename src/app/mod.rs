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
pub mod capture;
pub mod ports;
pub mod sink;
pub mod sip_loop;
pub mod store;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::vault::KeyWrap;

/// Everything a call task needs that outlives it.
pub struct Shared {
    /// Validated configuration.
    pub cfg: Config,
    /// Key-encryption for data keys.
    pub vault: Arc<dyn KeyWrap>,
    /// Catalogue writer.
    pub catalog: store::CatalogHandle,
    /// RTP port pool.
    pub ports: Arc<ports::PortPool>,
}

/// Create the data directories, open the key vault and start the catalogue thread.
pub fn open_storage(cfg: &Config) -> anyhow::Result<(Arc<dyn KeyWrap>, store::CatalogHandle)> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(cfg.storage.recordings_dir())
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let key_file = cfg.storage.key_file();
    if let Some(dir) = key_file.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating key directory {}", dir.display()))?;
    }
    let vault = crate::vault::KeyFileVault::open_or_create(&key_file)
        .with_context(|| format!("opening key file {}", key_file.display()))?;
    let vault: Arc<dyn KeyWrap> = Arc::new(vault);
    let catalog = store::start(cfg, vault.clone()).context("opening the catalogue")?;
    Ok((vault, catalog))
}

/// Run the recorder until SIGTERM/SIGINT: SIPREC always, passive capture when
/// `[capture] interfaces` lists any.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let (vault, catalog) = open_storage(&cfg)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let capture = if cfg.capture.interfaces.is_empty() {
        None
    } else {
        let (c, v, k, s) = (cfg.clone(), vault.clone(), catalog.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let h = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let res = capture::run_live(c, v, k, s, ready_tx);
                if let Err(e) = &res {
                    tracing::error!(error = %format!("{e:#}"), "live capture failed");
                }
                res
            })
            .context("starting the capture thread")?;
        // Fail start-up if an interface cannot be opened.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("live capture: {e}"),
            Err(_) => {
                return match h.join() {
                    Ok(Err(e)) => Err(e.context("live capture")),
                    _ => anyhow::bail!("live capture thread ended during start-up"),
                }
            }
        }
        Some(h)
    };
    let shared = Arc::new(Shared {
        ports: Arc::new(ports::PortPool::new(
            cfg.media.rtp_bind,
            cfg.media.rtp_ports,
        )),
        cfg,
        vault,
        catalog,
    });
    let syncer = tokio::spawn(store::syncer(shared.clone()));
    let result = sip_loop::run(shared.clone()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = capture {
        let joined = tokio::task::spawn_blocking(move || h.join()).await;
        if !matches!(joined, Ok(Ok(Ok(())))) {
            tracing::error!("live capture did not stop cleanly");
        }
    }
    syncer.abort();
    shared.catalog.close();
    result
}
