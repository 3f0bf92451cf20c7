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

pub mod accept;
pub mod assurance;
pub mod board;
pub mod call;
pub mod capture;
pub mod commands;
pub mod control;
pub mod metrics;
pub mod ports;
pub mod retention;
pub mod sink;
pub mod sip_loop;
pub mod store;
mod streams;
pub mod systemd;
pub mod tls;
pub mod tsa;
pub mod uplink;

/// Manifests and evidence are the service layer's; the call sink seals through this path.
pub use crate::service::evidence;

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
    /// The catalogue's path and key, for the tasks that open their own connection.
    pub catalog_access: crate::catalog::CatalogAccess,
    /// RTP port pool.
    pub ports: Arc<ports::PortPool>,
    /// Life-cycle clock (system clock, shifted by `BRANCHREC_TEST_CLOCK_OFFSET_S`).
    pub clock: Arc<dyn crate::lifecycle::Clock>,
    /// Disk-pressure state shared with the sweeper.
    pub gate: Arc<retention::StorageGate>,
    /// Running recordings (for the control socket).
    pub live: control::LiveCalls,
    /// The front panel's state (for the control socket).
    pub board: Option<Arc<crate::board::BoardShared>>,
    /// SIP listener access counters: TLS accepted/refused, source-allowlist drops.
    pub access: Arc<crate::sip::access::AccessCounters>,
    /// Foreign-source media drops, in-dialog requests from other peers, metadata caps.
    pub binding: Arc<crate::binding::BindingCounters>,
    /// Per-source limits of the SIP listeners (`[sip.limits]`), shared by the socket
    /// tasks and the SIP loop.
    pub limiter: Arc<std::sync::Mutex<crate::sip::limits::SourceLimiter>>,
}

/// Keys, clock, signing key and catalogue thread, opened by the daemon or by an offline
/// import. Holds the data directory's lock while alive.
pub struct Storage {
    /// Key-encryption for data keys (a stand-in that refuses when the keys are unavailable).
    pub vault: Arc<dyn KeyWrap>,
    /// Why the keys are unavailable.
    pub keys_error: Option<String>,
    /// Catalogue writer.
    pub catalog: store::CatalogHandle,
    /// The catalogue's path and key (locked while the keys are unavailable).
    pub catalog_access: crate::catalog::CatalogAccess,
    /// Life-cycle clock.
    pub clock: Arc<dyn crate::lifecycle::Clock>,
    /// Signs audit heads: the custody key and the monotonic counter; `None` while the
    /// keys cannot be loaded (entries then wait for the next head after they are back).
    pub signer: Option<Arc<crate::vault::HeadSigner>>,
    kek_created: Option<String>,
    /// Audit entries of the catalogue's own start: its key created, a plaintext
    /// catalogue encrypted (action, details).
    catalog_events: Vec<(&'static str, serde_json::Value)>,
    offset_s: i64,
    _lock: std::fs::File,
}

/// Create the data directories, take the data-dir lock, load the keys and start the
/// catalogue thread.
pub fn open_storage(cfg: &Config) -> anyhow::Result<Storage> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(cfg.storage.recordings_dir())
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let lock = lock_data_dir(&data_dir).with_context(|| {
        format!(
            "another branchrec process holds {} (a running daemon, or keys rotate/recover)",
            data_dir.join("daemon.lock").display()
        )
    })?;
    let provisioning = matches!(crate::vault::custody::read_state(&cfg.custody()), Ok(None));
    let (vault, mut manifest_signer, mut keys_error) = load_keys(cfg);
    let kek_created = (provisioning && keys_error.is_none()).then(|| vault.kek_id());
    // The catalogue key, unwrapped by the KEK (created with a new or still plaintext
    // catalogue). Without it the catalogue stays closed and the recorder refuses calls as
    // it does without keys: a new key is never made beside an encrypted catalogue, nor
    // while the KEK cannot be loaded.
    let mut catalog_events = Vec::new();
    let catalog_access = match &keys_error {
        Some(e) => crate::catalog::CatalogAccess::unavailable(
            &cfg.storage.catalog_path(),
            crate::catalog::CatalogKeyError::KekUnavailable(e.clone()).to_string(),
        ),
        None => match crate::catalog::CatalogAccess::unlock_or_create(
            &cfg.storage.catalog_path(),
            &cfg.custody().keys_dir,
            vault.as_ref(),
        )
        .map_err(|e| e.to_string())
        .and_then(|(a, created)| {
            a.encrypt_if_plaintext()
                .map(|conv| (a, created, conv))
                .map_err(|e| format!("encrypting the plaintext catalogue: {e}"))
        }) {
            Ok((a, created, converted)) => {
                if created {
                    catalog_events.push((
                        "key.create",
                        serde_json::json!({ "key": "catalog", "wrapped_by": vault.kek_id(),
                            "file": format!("keys/{}", crate::catalog::KEY_FILE) }),
                    ));
                }
                if let Some(c) = converted {
                    tracing::warn!(
                        recordings = c.recordings,
                        "the plaintext catalogue was encrypted (SQLCipher); its plaintext file, WAL and shared memory were overwritten and removed"
                    );
                    catalog_events.push((
                        "catalog.encrypt",
                        serde_json::to_value(&c).unwrap_or_default(),
                    ));
                }
                a
            }
            Err(e) => {
                tracing::error!(error = %e, "CANNOT RECORD: the catalogue cannot be opened; every call will be refused with 503");
                write_key_status(cfg, false, "", Some(&e));
                manifest_signer = None;
                keys_error = Some(e.clone());
                crate::catalog::CatalogAccess::unavailable(&cfg.storage.catalog_path(), e)
            }
        },
    };
    let (clock, offset_s) =
        crate::clock::clock_from_env(cfg.development.clock_override).map_err(anyhow::Error::msg)?;
    crate::clock::init_probe(cfg.development.clock_override).map_err(anyhow::Error::msg)?;
    assurance::init(cfg);
    let clock: Arc<dyn crate::lifecycle::Clock> = Arc::new(crate::clock::SteppedClock(clock));
    // One signing key for manifests and audit heads: the custody key (sealed in the TPM in
    // TPM mode). There is no fallback key file: while the keys cannot be loaded, audit
    // entries stay unsigned until a head is signed after the keys are back.
    let signer = manifest_signer.as_ref().map(|s| {
        Arc::new(crate::vault::HeadSigner {
            key: s.clone(),
            counter: crate::service::audit::counter(cfg),
        })
    });
    let manifest_signer = manifest_signer.map(|s| s as Arc<dyn Signer>);
    let catalog = store::start(
        cfg,
        &catalog_access,
        vault.clone(),
        manifest_signer,
        keys_error.is_none(),
        clock.clone(),
    )
    .context("opening the catalogue")?;
    Ok(Storage {
        vault,
        keys_error,
        catalog,
        catalog_access,
        clock,
        signer,
        kek_created,
        catalog_events,
        offset_s,
        _lock: lock,
    })
}

/// Run the recorder until SIGTERM/SIGINT: SIPREC always, passive capture when
/// `[capture] interfaces` lists any.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let notifier = Arc::new(systemd::Notifier::from_env());
    notifier.status("starting: opening the catalogue, recovering open recordings, loading keys");
    let st = open_storage(&cfg)?;
    start_up_audit(
        &cfg,
        &st.catalog,
        &st.catalog_access,
        st.kek_created.clone(),
        st.signer.as_deref(),
        st.offset_s,
    )?;
    for (action, details) in &st.catalog_events {
        st.catalog.send(store::CatalogCmd::Audit(
            "daemon".into(),
            (*action).into(),
            "catalog".into(),
            details.clone(),
        ));
    }
    let gate = Arc::new(retention::StorageGate::default());
    let (vault, catalog, clock, signer) = (
        st.vault.clone(),
        st.catalog.clone(),
        st.clock.clone(),
        st.signer.clone(),
    );
    let keys_error = st.keys_error.clone();
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
    let board = crate::board::open(&cfg.board)
        .context("opening the front panel (LEDs and hold button, [board])")?;
    let board_shared = Arc::new(crate::board::BoardShared::new(&board));
    let cfg_limits = cfg.sip.limits.core();
    let shared = Arc::new(Shared {
        ports: Arc::new(ports::PortPool::new(
            cfg.media.rtp_bind,
            cfg.media.rtp_ports,
        )),
        cfg,
        vault,
        keys_error,
        catalog,
        catalog_access: st.catalog_access.clone(),
        clock: clock.clone(),
        gate: gate.clone(),
        live: Default::default(),
        board: Some(board_shared.clone()),
        access: Default::default(),
        binding: Default::default(),
        limiter: Arc::new(std::sync::Mutex::new(
            crate::sip::limits::SourceLimiter::new(cfg_limits),
        )),
    });
    let syncer = tokio::spawn(store::syncer(shared.clone()));
    let _tsa = tokio::spawn(tsa::run(shared.cfg.clone()));
    let sweeper = tokio::spawn(retention::sweeper(
        shared.cfg.clone(),
        shared.catalog_access.clone(),
        clock,
        signer.clone(),
        gate,
    ));
    let control = control::start(shared.clone()).await?;
    let (uplink, uplink_shared) = start_uplink(
        &shared.cfg,
        &shared.catalog_access,
        shared.clock.clone(),
        shared.binding.clone(),
        signer.clone(),
    );
    let (panel_stop, panel_stop_rx) = tokio::sync::oneshot::channel();
    let panel = tokio::spawn(board::run(
        shared.clone(),
        board,
        board_shared,
        uplink_shared.clone(),
        signer.clone(),
        panel_stop_rx,
    ));
    let result = sip_loop::run(shared.clone(), notifier.clone(), uplink_shared).await;
    let _ = panel_stop.send(());
    if tokio::time::timeout(std::time::Duration::from_secs(1), panel)
        .await
        .is_err()
    {
        tracing::warn!("front panel did not stop within 1 s");
    }
    control.abort();
    sweeper.abort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = capture {
        let joined = tokio::task::spawn_blocking(move || h.join()).await;
        if !matches!(joined, Ok(Ok(Ok(())))) {
            tracing::error!("live capture did not stop cleanly");
        }
    }
    syncer.abort();
    for t in uplink {
        t.abort();
    }
    // Closed recordings queued their final rows and manifests: let the catalogue thread
    // commit and sign them before the process exits (bounded).
    let cat = shared.catalog.clone();
    let idle = tokio::task::spawn_blocking(move || cat.wait_idle_blocking());
    if tokio::time::timeout(std::time::Duration::from_secs(10), idle)
        .await
        .is_err()
    {
        tracing::error!("catalogue writes not finished within 10 s of shutdown");
    }
    result
}

/// Audit entries written at start-up: key creation, the configuration (and its rules)
/// with a hash, a rule change when the hash differs from the last start, and a shifted
/// clock.
fn start_up_audit(
    cfg: &Config,
    catalog: &store::CatalogHandle,
    access: &crate::catalog::CatalogAccess,
    kek_created: Option<String>,
    signer: Option<&crate::vault::HeadSigner>,
    offset_s: i64,
) -> anyhow::Result<()> {
    use sha2::Digest;
    use store::CatalogCmd::Audit;
    let audit = |action: &str, target: &str, details: serde_json::Value| {
        catalog.send(Audit(
            "daemon".into(),
            action.into(),
            target.into(),
            details,
        ));
    };
    if let Some(kek) = kek_created {
        audit(
            "key.create",
            "kek",
            serde_json::json!({ "kek_id": kek, "provider": cfg.keys.provider,
                "signing_key_id": signer.map(|s| s.key.key_id()) }),
        );
    }
    if signer.is_none() {
        tracing::warn!("audit heads are not signed while the keys are unavailable: entries from now on are covered by the first head signed after they are back");
    }
    let rules_hash = hex::encode(sha2::Sha256::digest(format!(
        "{:?}{:?}{:?}",
        cfg.rules, cfg.policy, cfg.retention
    )));
    let config_hash = hex::encode(sha2::Sha256::digest(format!("{cfg:?}")));
    let last = access
        .open_read_only()
        .ok()
        .and_then(|c| last_rules_hash(&c));
    if last.as_deref() != Some(rules_hash.as_str()) {
        audit(
            "rules.change",
            "config",
            serde_json::json!({ "previous_rules_sha256": last, "rules_sha256": rules_hash,
                "rules": cfg.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>() }),
        );
    }
    audit(
        "daemon.start",
        "config",
        serde_json::json!({ "config_sha256": config_hash, "rules_sha256": rules_hash,
            "version": env!("CARGO_PKG_VERSION"), "local_only": cfg.retention.local_only }),
    );
    if offset_s != 0 {
        tracing::warn!(
            offset_s,
            "{} is set: the life-cycle clock is shifted (tests/drills only)",
            crate::clock::CLOCK_OFFSET_ENV
        );
        audit(
            "clock.offset",
            "clock",
            serde_json::json!({ "offset_s": offset_s }),
        );
    }
    if !cfg.retention.local_only {
        tracing::warn!("retention.local_only = false: no recording is deleted before the central archive confirms it (uplink not configured: nothing is deleted)");
    }
    Ok(())
}

fn last_rules_hash(c: &crate::catalog::Catalog) -> Option<String> {
    let e = c.last_audit_entry("daemon.start").ok()??;
    serde_json::from_str::<serde_json::Value>(&e.details)
        .ok()?
        .get("rules_sha256")?
        .as_str()
        .map(str::to_string)
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
type LoadedKeys = (
    Arc<dyn KeyWrap>,
    Option<Arc<crate::vault::Ed25519Signer>>,
    Option<String>,
);

fn load_keys(cfg: &Config) -> LoadedKeys {
    let cc = cfg.custody();
    let res = crate::vault::custody::open(&cc, &cfg.storage.recordings_dir());
    let status = |ok: bool, kek: &str, err: Option<&str>| write_key_status(cfg, ok, kek, err);
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
            // Audit entries of this process (and the catalogues it opens) are MACed.
            crate::vault::audit_key::install(Arc::new(k.audit_mac_key()));
            let wrap: Arc<dyn KeyWrap> = Arc::new(k.wrap);
            let wrap: Arc<dyn KeyWrap> = match cfg.compliance() {
                Ok(None) => wrap,
                Ok(Some(c)) => {
                    tracing::info!(compliance_key_id = %c.key_id, "data keys are also wrapped to the central compliance key");
                    Arc::new(crate::vault::compliance::WithCompliance::new(wrap, c))
                }
                Err(e) => {
                    // Recording without the compliance wrap would make archive copies
                    // the central service cannot open: refuse like any key failure.
                    let msg = format!("compliance key: {e}");
                    tracing::error!(error = %msg, "CANNOT RECORD: the compliance public key cannot be loaded");
                    status(false, &kek, Some(&msg));
                    return (Arc::new(NoKeys(msg.clone())), None, Some(msg));
                }
            };
            status(true, &kek, None);
            (wrap, Some(Arc::new(k.signer)), None)
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "CANNOT RECORD: the recording keys are unavailable; every call will be refused with 503");
            status(false, "", Some(&msg));
            (Arc::new(NoKeys(msg.clone())), None, Some(msg))
        }
    }
}

/// `keys/daemon-status.json`: whether the daemon's keys loaded (`keys status` shows it).
fn write_key_status(cfg: &Config, ok: bool, kek: &str, err: Option<&str>) {
    let cc = cfg.custody();
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

/// What [`start_uplink`] returns: its tasks and their shared state (for `STATUS=`).
type UplinkTasks = (
    Vec<tokio::task::JoinHandle<()>>,
    Option<Arc<crate::app::uplink::UplinkShared>>,
);

/// Start the uplink worker and the metrics listener if configured.
fn start_uplink(
    cfg: &Config,
    access: &crate::catalog::CatalogAccess,
    clock: Arc<dyn crate::lifecycle::Clock>,
    binding: Arc<crate::binding::BindingCounters>,
    signer: Option<Arc<crate::vault::HeadSigner>>,
) -> UplinkTasks {
    let mut tasks = Vec::new();
    let u = &cfg.uplink;
    if !u.enabled && u.metrics_listen.is_none() {
        return (tasks, None);
    }
    let shared = Arc::new(crate::app::uplink::UplinkShared::new(u, clock));
    let _ = shared.binding.set(binding);
    if let Some(s) = signer {
        let _ = shared.signer.set(s);
    }
    if u.enabled {
        let c = cfg.clone();
        let s = shared.clone();
        let a = access.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::app::uplink::run(c, a, s).await {
                tracing::error!("uplink not running: {e:#}");
            }
        }));
    }
    if let Some(addr) = u.metrics_listen {
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::app::metrics::serve(addr, s).await {
                tracing::error!(%addr, "metrics listener: {e}");
            }
        }));
    }
    (tasks, u.enabled.then_some(shared))
}
