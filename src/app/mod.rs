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
pub mod control;
pub mod ports;
pub mod retention;
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
    /// Life-cycle clock (system clock, shifted by `BRANCHREC_TEST_CLOCK_OFFSET_S`).
    pub clock: Arc<dyn crate::lifecycle::Clock>,
    /// Disk-pressure state shared with the sweeper.
    pub gate: Arc<retention::StorageGate>,
    /// Running recordings (for the control socket).
    pub live: control::LiveCalls,
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
    let kek_new = !key_file.exists();
    let vault = crate::vault::KeyFileVault::open_or_create(&key_file)
        .with_context(|| format!("opening key file {}", key_file.display()))?;
    let vault: Arc<dyn KeyWrap> = Arc::new(vault);
    let (clock, offset_s) = crate::lifecycle::clock_from_env().map_err(anyhow::Error::msg)?;
    let clock: Arc<dyn crate::lifecycle::Clock> = Arc::new(clock);
    let signing_path = cfg.storage.signing_key_file();
    let signing_new = !signing_path.exists();
    let signer: Arc<dyn crate::vault::AuditSigner> = Arc::new(
        crate::vault::FileSigner::open_or_create(&signing_path)
            .with_context(|| format!("opening signing key {}", signing_path.display()))?,
    );
    let catalog =
        store::start(&cfg, vault.clone(), clock.clone()).context("opening the catalogue")?;
    start_up_audit(
        &cfg,
        &catalog,
        kek_new,
        signing_new,
        signer.as_ref(),
        offset_s,
    )?;
    let gate = Arc::new(retention::StorageGate::default());
    let shared = Arc::new(Shared {
        ports: Arc::new(ports::PortPool::new(
            cfg.media.rtp_bind,
            cfg.media.rtp_ports,
        )),
        cfg,
        vault,
        catalog,
        clock: clock.clone(),
        gate: gate.clone(),
        live: Default::default(),
    });
    let syncer = tokio::spawn(store::syncer(shared.clone()));
    let sweeper = tokio::spawn(retention::sweeper(shared.cfg.clone(), clock, signer, gate));
    let control = control::start(shared.clone()).await?;
    let result = sip_loop::run(shared.clone()).await;
    control.abort();
    sweeper.abort();
    syncer.abort();
    shared.catalog.close();
    result
}

/// Audit entries written at start-up: key creation, the configuration (and its rules)
/// with a hash, a rule change when the hash differs from the last start, and a shifted
/// clock.
fn start_up_audit(
    cfg: &Config,
    catalog: &store::CatalogHandle,
    kek_new: bool,
    signing_new: bool,
    signer: &dyn crate::vault::AuditSigner,
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
    if kek_new {
        audit(
            "key.create",
            "kek",
            serde_json::json!({ "file": cfg.storage.key_file().display().to_string() }),
        );
    }
    if signing_new {
        audit(
            "key.create",
            "audit-signing",
            serde_json::json!({ "key_id": signer.key_id(), "public_key": hex::encode(signer.public_key()) }),
        );
    }
    let rules_hash = hex::encode(sha2::Sha256::digest(format!(
        "{:?}{:?}{:?}",
        cfg.rules, cfg.policy, cfg.retention
    )));
    let config_hash = hex::encode(sha2::Sha256::digest(format!("{cfg:?}")));
    let last = crate::catalog::Catalog::open_read_only(&cfg.storage.catalog_path())
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
            crate::lifecycle::CLOCK_OFFSET_ENV
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
    let entries = c.audit_entries(0, None).ok()?;
    entries
        .iter()
        .rev()
        .find(|e| e.action == "daemon.start")
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.details).ok())
        .and_then(|v| {
            v.get("rules_sha256")
                .and_then(|h| h.as_str())
                .map(str::to_string)
        })
}
