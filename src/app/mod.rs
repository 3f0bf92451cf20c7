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
pub mod ports;
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

/// Run the recorder until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
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
    let catalog = store::start(&cfg, vault.clone()).context("opening the catalogue")?;
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
    let uplink = start_uplink(&shared.cfg);
    let result = sip_loop::run(shared.clone()).await;
    syncer.abort();
    for t in uplink {
        t.abort();
    }
    shared.catalog.close();
    result
}

/// Start the uplink worker and the metrics listener if configured.
fn start_uplink(cfg: &Config) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let u = &cfg.uplink;
    if !u.enabled && u.metrics_listen.is_none() {
        return tasks;
    }
    let shared = Arc::new(crate::uplink::worker::UplinkShared::new(u));
    if u.enabled {
        let c = cfg.clone();
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::uplink::worker::run(c, s).await {
                tracing::error!("uplink not running: {e:#}");
            }
        }));
    }
    if let Some(addr) = u.metrics_listen {
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::uplink::metrics::serve(addr, shared).await {
                tracing::error!(%addr, "metrics listener: {e}");
            }
        }));
    }
    tasks
}
