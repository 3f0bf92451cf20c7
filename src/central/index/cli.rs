//! The index commands of `branchrec-central` (`index`, `search`, `fleet`, `enrol`,
//! `audit`, `audit-keygen`, `bench-index`; `show` when `[index]` is configured). The
//! binary flattens [`IndexCommand`] into its subcommands and calls [`run`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::search::Filter;
use super::{audit, db, ingest, search, IndexConfig};
use crate::central::{ArchiveReader, CentralConfig, ComplianceKey, PemKey, Pkcs11Key};

/// Where central.toml is.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// central.toml with `[archive]` and `[index]`.
    #[arg(long, alias = "archive", env = "BRANCHREC_CENTRAL_CONFIG")]
    pub config: PathBuf,
}

/// The compliance private key (as for `export`).
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Compliance private key in a PEM file (small installations; prefer an HSM).
    #[arg(long, conflicts_with = "pkcs11_module")]
    pub key_pem: Option<PathBuf>,
    /// PKCS#11 module of the HSM holding the compliance key.
    #[arg(long, requires_all = ["token_label", "key_label"])]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the token.
    #[arg(long)]
    pub token_label: Option<String>,
    /// Label of the EC key pair on the token.
    #[arg(long)]
    pub key_label: Option<String>,
    /// Environment variable holding the token's user PIN.
    #[arg(long, default_value = "BRANCHREC_PKCS11_PIN")]
    pub pin_env: String,
}

impl KeyArgs {
    /// Open the compliance key the arguments name.
    pub fn load(&self) -> anyhow::Result<Box<dyn ComplianceKey>> {
        if let Some(p) = &self.key_pem {
            eprintln!(
                "WARNING: the compliance private key is a file ({}): whoever can read it opens every archived recording. Keep it in an HSM (--pkcs11-module).",
                p.display()
            );
            return Ok(Box::new(PemKey::load(p)?));
        }
        let (Some(m), Some(t), Some(k)) = (&self.pkcs11_module, &self.token_label, &self.key_label)
        else {
            bail!("give the compliance key: --pkcs11-module, --token-label and --key-label (or --key-pem)");
        };
        let pin = zeroize::Zeroizing::new(
            std::env::var(&self.pin_env)
                .with_context(|| format!("the token PIN is read from ${}", self.pin_env))?,
        );
        Ok(Box::new(Pkcs11Key::open(m, t, k, &pin)?))
    }
}

/// The index subcommands.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Follow the archive and index what the boxes uploaded (docs/central.md).
    Index {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        key: KeyArgs,
        /// One pass, then exit (the default).
        #[arg(long, conflicts_with = "follow")]
        once: bool,
        /// Keep following, a pass every `[index] follow_interval_s`.
        #[arg(long)]
        follow: bool,
        /// Ignore the positions: list every box prefix from its start (finds late
        /// uploads older than `open_days` and objects changed after indexing).
        #[arg(long)]
        rescan: bool,
        /// Print the pass report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the index.
    Search {
        #[command(flatten)]
        config: ConfigArg,
        /// Participant number, AoR or name: exact, or prefix with a trailing `*`
        /// (`+44 20 7946*`). Repeat: all must match.
        #[arg(long)]
        participant: Vec<String>,
        /// AoR, exact or prefix (`sip:+4420*`).
        #[arg(long)]
        aor: Option<String>,
        /// Box id.
        #[arg(long = "box")]
        box_id: Option<String>,
        /// Site.
        #[arg(long)]
        site: Option<String>,
        /// Started at or after (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Started before (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long)]
        until: Option<String>,
        /// Minimum duration, seconds.
        #[arg(long)]
        min_duration: Option<u32>,
        /// Maximum duration, seconds.
        #[arg(long)]
        max_duration: Option<u32>,
        /// Direction (inbound, outbound, internal).
        #[arg(long)]
        direction: Option<String>,
        /// Tag (repeat: all).
        #[arg(long)]
        tag: Vec<String>,
        /// Only held recordings.
        #[arg(long, conflicts_with = "not_held")]
        held: bool,
        /// Only recordings not held.
        #[arg(long)]
        not_held: bool,
        /// Include recordings quarantined after indexing.
        #[arg(long)]
        include_quarantined: bool,
        /// At most this many results, newest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Why (recorded in the central audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Per box: last status, backlog, last upload, alarms, quarantined objects.
    Fleet {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register a box's manifest-signing public key (Ed25519 PEM, e.g. the
    /// `signing-key.pem` of one of its evidence bundles, checked against the ceremony
    /// record). Replaces a first-seen or changed key; its quarantined objects are
    /// verified again on the next pass.
    Enrol {
        /// Box id.
        #[arg(value_name = "BOX")]
        box_id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// The public key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// The central audit log (`--verify`: chain and signatures).
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// Verify the whole chain with the audit key's public half.
        #[arg(long)]
        verify: bool,
        /// First entry shown.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Generate the central audit key (Ed25519, PKCS#8 PEM, 0600; never replaces).
    AuditKeygen {
        /// Where.
        #[arg(long)]
        out: PathBuf,
    },
    /// Scale bench: N synthetic recordings from many boxes into a fresh schema `bench`
    /// of DATABASE, then search latencies and size (docs/central.md, *Scale*).
    BenchIndex {
        /// libpq connection string of a scratch database.
        #[arg(long)]
        database: String,
        /// Recordings.
        #[arg(short = 'n', long, default_value_t = 100_000)]
        recordings: u64,
        /// Boxes.
        #[arg(long, default_value_t = 2000)]
        boxes: u32,
        /// The last this many recordings are sealed as boxes upload them and indexed by
        /// the indexer (measured: its rate); the rest are written by the bulk fill
        /// through the indexer's row writer.
        #[arg(long, default_value_t = 5000)]
        indexer_sample: u64,
        /// The indexer's `[index] workers` for the sample.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Audio per container of the indexer sample, ms (8 kHz stereo).
        #[arg(long, default_value_t = 500)]
        container_ms: u32,
        /// Queries per search kind.
        #[arg(long, default_value_t = 100)]
        queries: u32,
        /// Keep the existing schema and only run the searches.
        #[arg(long)]
        search_only: bool,
        /// Scratch schema (dropped and created).
        #[arg(long, default_value = "bench")]
        schema: String,
    },
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?}: give RFC 3339 or YYYY-MM-DD"))?;
    // Cannot fail: 00:00:00 is a valid time on every date.
    Ok(d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis())
}

/// Load central.toml and its `[index]`.
pub fn load(config: &Path) -> anyhow::Result<(CentralConfig, IndexConfig)> {
    let cfg = CentralConfig::load(config)?;
    let Some(ix) = cfg.index.clone() else {
        bail!(
            "{}: no [index] section (database, audit_key): see docs/central.md",
            config.display()
        );
    };
    ix.validate()?;
    Ok((cfg, ix))
}

fn open(ix: &IndexConfig) -> anyhow::Result<(postgres::Client, audit::AuditKey)> {
    let key = audit::AuditKey::load(&ix.audit_key)?;
    let c = db::connect(&ix.database)?;
    Ok((c, key))
}

fn actor() -> String {
    crate::service::identity::current_user()
}

/// `show` from the index (audited).
pub fn show(ix: &IndexConfig, id: &str) -> anyhow::Result<serde_json::Value> {
    let (mut c, key) = open(ix)?;
    let v = search::show(&mut c, id);
    audit::append(
        &mut c,
        &key,
        &actor(),
        "show",
        id,
        &serde_json::json!({ "found": v.is_ok() }),
    )?;
    Ok(v?)
}

/// The box's manifest-signing key as the index trusts it (`central enrol`, or first
/// seen by the indexer): `(DER, trust)`, `None` when the index does not know the box.
pub fn box_signing_key(
    ix: &IndexConfig,
    box_id: &str,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    let mut c = db::connect(&ix.database)?;
    Ok(db::get_box(&mut c, box_id)?.and_then(|b| b.known().map(|k| (k.der, b.trust.clone()))))
}

/// Record an `export` in the central audit log (when `[index]` is configured).
pub fn audit_export(ix: &IndexConfig, id: &str, detail: serde_json::Value) -> anyhow::Result<()> {
    let (mut c, key) = open(ix)?;
    audit::append(&mut c, &key, &actor(), "export", id, &detail)?;
    Ok(())
}

/// Run an index subcommand.
pub fn run(cmd: IndexCommand) -> anyhow::Result<()> {
    match cmd {
        IndexCommand::Index {
            config,
            key,
            once: _,
            follow,
            rescan,
            json,
        } => {
            let (cfg, ix) = load(&config.config)?;
            let k = key.load()?;
            let ar = ArchiveReader::open(&cfg.archive)?;
            let (mut c, akey) = open(&ix)?;
            // Rows and positions commit together, so a commit lost in a crash is only
            // indexed again: the indexer does not wait for each commit's flush (the
            // audit entries do, SET LOCAL in audit::append).
            c.batch_execute("SET synchronous_commit TO off")?;
            let mut rescan = rescan;
            for _ in 0..u64::MAX {
                let rep = {
                    let mut idx = ingest::Indexer {
                        cfg: &ix,
                        archive: &ar,
                        key: k.as_ref(),
                        db: &mut c,
                    };
                    idx.pass(rescan)?
                };
                rescan = false;
                if json {
                    println!("{}", serde_json::to_string(&rep)?);
                } else {
                    println!(
                        "index pass: {} boxes, {} objects listed, {} indexed, {} re-verified, {} quarantined, {} already known, {} waiting, {} status versions, {} audit heads, {} errors",
                        rep.boxes, rep.listed, rep.indexed, rep.reverified, rep.quarantined,
                        rep.known, rep.waiting, rep.status_new, rep.heads_new, rep.errors.len()
                    );
                    for e in &rep.errors {
                        eprintln!("  error: {e}");
                    }
                }
                if rep.indexed + rep.quarantined + rep.reverified > 0 || !follow {
                    audit::append(
                        &mut c,
                        &akey,
                        &actor(),
                        "index",
                        &cfg.archive.bucket,
                        &serde_json::to_value(&rep)?,
                    )?;
                }
                if !follow {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(ix.follow_interval_s));
            }
            Ok(())
        }
        IndexCommand::Search {
            config,
            participant,
            aor,
            box_id,
            site,
            since,
            until,
            min_duration,
            max_duration,
            direction,
            tag,
            held,
            not_held,
            include_quarantined,
            limit,
            json,
            reason,
        } => {
            let (_, ix) = load(&config.config)?;
            let f = Filter {
                participant,
                aor,
                box_id,
                site,
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                min_duration_ms: min_duration.map(|s| i64::from(s) * 1000),
                max_duration_ms: max_duration.map(|s| i64::from(s) * 1000),
                direction,
                tags: tag,
                held: if held {
                    Some(true)
                } else if not_held {
                    Some(false)
                } else {
                    None
                },
                limit,
                include_quarantined,
                ..Filter::default()
            };
            let (mut c, key) = open(&ix)?;
            let hits = search::search(&mut c, &f)?;
            audit::append(
                &mut c,
                &key,
                &actor(),
                "search",
                "recordings",
                &serde_json::json!({ "filter": f, "results": hits.len(), "reason": reason }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                print!("{}", search::table(&hits));
                eprintln!("{} recording(s)", hits.len());
            }
            Ok(())
        }
        IndexCommand::Fleet { config, json } => {
            let (_, ix) = load(&config.config)?;
            let (mut c, key) = open(&ix)?;
            let boxes = search::fleet(&mut c)?;
            audit::append(
                &mut c,
                &key,
                &actor(),
                "fleet",
                "boxes",
                &serde_json::json!({ "boxes": boxes.len() }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&boxes)?);
            } else {
                print!("{}", search::fleet_table(&boxes));
            }
            Ok(())
        }
        IndexCommand::Enrol {
            box_id,
            config,
            key,
        } => {
            let (_, ix) = load(&config.config)?;
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
            let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
                .map_err(|_| anyhow::anyhow!("{}: not an Ed25519 public key PEM", key.display()))?;
            let der = vk
                .to_public_key_der()
                .map_err(|e| anyhow::anyhow!("encoding: {e}"))?
                .as_bytes()
                .to_vec();
            let (mut c, akey) = open(&ix)?;
            let who = actor();
            let before = db::enrol(&mut c, &box_id, &der, &who, super::now_ms())?;
            use sha2::Digest as _;
            let sha = hex::encode(sha2::Sha256::digest(&der));
            audit::append(
                &mut c,
                &akey,
                &who,
                "enrol",
                &box_id,
                &serde_json::json!({
                    "key_sha256": sha,
                    "previous_trust": before.as_ref().map(|b| b.trust.clone()),
                    "previous_key_sha256": before.as_ref().and_then(|b| b.key_sha256.clone()),
                    "key_changed_was_flagged": before.as_ref().is_some_and(|b| b.key_changed),
                }),
            )?;
            println!("enrolled {box_id}: key sha256 {sha}");
            if let Some(b) = before {
                if b.key_sha256.as_deref() != Some(sha.as_str()) && b.key_sha256.is_some() {
                    println!(
                        "  replaces {} key sha256 {}",
                        b.trust,
                        b.key_sha256.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        IndexCommand::Audit {
            config,
            verify,
            from,
            json,
        } => {
            let (_, ix) = load(&config.config)?;
            let (mut c, key) = open(&ix)?;
            if verify {
                let n = audit::verify(&mut c, &key.public())?;
                println!(
                    "central audit log verifies: {n} entries, key {}",
                    key.key_id
                );
                return Ok(());
            }
            for e in audit::entries(&mut c, from, 100_000)? {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{:>6}  {}  {:<10} {:<8} {:<40} {}",
                        e.seq,
                        chrono::DateTime::from_timestamp_millis(e.at_ms)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                        e.actor,
                        e.action,
                        e.target,
                        e.detail
                    );
                }
            }
            Ok(())
        }
        IndexCommand::AuditKeygen { out } => {
            let k = audit::AuditKey::generate(&out)?;
            println!(
                "central audit key {} written to {}",
                k.key_id,
                out.display()
            );
            Ok(())
        }
        IndexCommand::BenchIndex {
            database,
            recordings,
            boxes,
            indexer_sample,
            workers,
            container_ms,
            queries,
            search_only,
            schema,
        } => {
            let rep = super::bench::run(&super::bench::BenchOptions {
                database,
                recordings,
                boxes,
                indexer_sample,
                workers: workers.clamp(1, 64),
                container_ms,
                queries,
                search_only,
                schema,
            })?;
            println!("{}", serde_json::to_string_pretty(&rep)?);
            Ok(())
        }
    }
}
