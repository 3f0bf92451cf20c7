//! `branchrec keys status | rotate | recover`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::Config;
use crate::vault::custody;

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Which provider holds the keys, the KEK id, the signing key fingerprint, escrow,
    /// and whether the running daemon could load them.
    Status {
        /// Also unseal the keys now to check they load (needs the TPM).
        #[arg(long)]
        check: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Re-wrap every recording's data key under a new KEK (no audio is rewritten), then
    /// retire the old KEK. Stop the daemon first. Safe to interrupt: run it again.
    Rotate {
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Restore the KEK and signing key into this box's TPM from an escrow record
    /// (replacement box, or a cleared TPM). Stop the daemon first.
    Recover {
        /// The escrow record (`escrow-tpm1-….json` from the old box's keys directory).
        #[arg(long)]
        escrow: PathBuf,
        /// The offline recovery private key (PEM PKCS#8).
        #[arg(long)]
        recovery_key: PathBuf,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Take the data directory's daemon lock, or explain that the daemon runs.
fn exclusive(cfg: &Config) -> anyhow::Result<std::fs::File> {
    crate::app::lock_data_dir(&cfg.storage.data_dir)
        .context("the recorder daemon appears to be running on this data directory: stop it first")
}

/// Run a `keys` subcommand.
pub fn main(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Status { check, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cc = cfg.custody();
            println!("provider           {}", cc.provider.as_str());
            if cc.provider == crate::vault::Provider::Software {
                println!(
                    "WARNING            keys are in software files on this disk: for development only"
                );
            } else {
                println!("tcti               {}", cc.tcti);
            }
            match custody::read_state(&cc)? {
                None => println!(
                    "state              not provisioned ({})",
                    cc.state_path().display()
                ),
                Some(s) => {
                    println!("active KEK         {}", s.active.kek_id);
                    if let Some(h) = s.active.handle {
                        println!("TPM handle         {h:#010x}");
                    }
                    if let Some(p) = &s.pcrs {
                        println!("PCR policy         {p}");
                    }
                    if let Some(p) = &s.pending {
                        println!(
                            "ROTATION PENDING   to {} (run `branchrec keys rotate` again)",
                            p.kek_id
                        );
                    }
                    let raw = hex::decode(&s.signing_public_key).unwrap_or_default();
                    let mut der = vec![
                        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                    ];
                    der.extend_from_slice(&raw);
                    use sha2::Digest;
                    println!(
                        "signing key        ed25519, SHA-256 of DER public key {}",
                        hex::encode(sha2::Sha256::digest(&der))
                    );
                    let esc = cc.escrow_path(&s.active.kek_id);
                    if esc.exists() {
                        println!(
                            "escrow             {} (keep a copy off the box)",
                            esc.display()
                        );
                    } else if cc.provider == crate::vault::Provider::Tpm {
                        println!("escrow             NONE: no recovery_public_key; a dead TPM loses every recording");
                    }
                }
            }
            match crate::catalog::wrapped_under(&cc.keys_dir) {
                Ok(Some(ids)) => println!(
                    "catalogue key      wrapped under {} ({})",
                    ids.join(", "),
                    crate::catalog::key_file(&cc.keys_dir).display()
                ),
                Ok(None) => println!("catalogue key      none yet (the daemon creates it)"),
                Err(e) => println!("catalogue key      {e}"),
            }
            match (&cfg.keys.compliance_key_id, &cfg.keys.compliance_public_key) {
                (Some(id), Some(p)) => match cfg.compliance() {
                    Ok(Some(r)) if r.key_id != *id => println!(
                        "compliance key     {} (rotated from headquarters, replaces {id} of {}): new recordings are wrapped to it",
                        r.key_id,
                        p.display()
                    ),
                    _ => println!(
                        "compliance key     {id} ({}): new recordings are wrapped to it",
                        p.display()
                    ),
                },
                _ => println!(
                    "compliance key     NONE: archive copies open only with this box's keys"
                ),
            }
            let files = crate::recording::recording_files(&cfg.storage.recordings_dir());
            let counts = crate::service::keys::compliance_wrap_counts(&files);
            if !counts.is_empty() {
                let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                println!("compliance wraps   {}", list.join(", "));
            }
            let ds = cc.keys_dir.join("daemon-status.json");
            if let Ok(b) = std::fs::read(&ds) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                    if v["ok"].as_bool() == Some(true) {
                        println!("daemon (pid {})    keys loaded", v["pid"]);
                    } else {
                        println!(
                            "daemon (pid {})    CANNOT RECORD: {}",
                            v["pid"],
                            v["error"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
            if check {
                match custody::open_existing(&cc) {
                    Ok(k) => {
                        println!(
                            "check              OK: KEK {} loads",
                            crate::vault::KeyWrap::kek_id(&k.wrap)
                        );
                        if crate::catalog::key_file(&cc.keys_dir).exists() {
                            let db = cfg.storage.catalog_path();
                            match crate::catalog::CatalogAccess::unlock(&db, &cc.keys_dir, &k.wrap)
                                .map_err(crate::catalog::CatalogError::from)
                                .and_then(|a| a.open_read_only())
                            {
                                Ok(_) => println!("check              OK: the catalogue key unwraps and opens the catalogue"),
                                Err(e) => {
                                    println!("check              FAILED: {e}");
                                    std::process::exit(1);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        println!("check              FAILED: {e}");
                        std::process::exit(1);
                    }
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let _lock = exclusive(&cfg)?;
            let files = crate::recording::recording_files(&cfg.storage.recordings_dir());
            let rep = crate::service::keys::rotate(&cfg.custody(), &files)?;
            println!(
                "re-wrapped {} recordings ({} already done) from {} to {}",
                rep.rewrapped, rep.already, rep.old_kek_id, rep.new_kek_id
            );
            if let Some(e) = &rep.escrow {
                println!(
                    "escrow of the new KEK: {} (copy it off the box)",
                    e.display()
                );
            }
            if !rep.failed.is_empty() {
                for (f, e) in &rep.failed {
                    eprintln!("FAILED {}: {e}", f.display());
                }
                bail!(
                    "{} recordings could not be re-wrapped; the old KEK is kept and the rotation \
                     stays pending",
                    rep.failed.len()
                );
            }
            // Keep the catalogue's informational kek_id in step.
            if let Ok(mut cat) = crate::service::catalog::access(&cfg)
                .map_err(crate::catalog::CatalogError::from)
                .and_then(|a| a.open_existing())
            {
                if let Err(e) = cat.set_all_kek_ids(&rep.new_kek_id) {
                    eprintln!("warning: catalogue kek_id not updated: {e}");
                }
            }
            Ok(())
        }
        KeysCommand::Recover {
            escrow,
            recovery_key,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let _lock = exclusive(&cfg)?;
            let e: crate::vault::escrow::EscrowFile = serde_json::from_slice(
                &std::fs::read(&escrow).with_context(|| format!("reading {}", escrow.display()))?,
            )
            .with_context(|| format!("{} is not an escrow record", escrow.display()))?;
            let pem = std::fs::read_to_string(&recovery_key)
                .with_context(|| format!("reading {}", recovery_key.display()))?;
            let s = custody::recover(&cfg.custody(), &e, &pem)?;
            println!(
                "restored KEK {} into the TPM at {:#010x}; recordings under it are readable again",
                s.active.kek_id,
                s.active.handle.unwrap_or_default()
            );
            Ok(())
        }
    }
}
