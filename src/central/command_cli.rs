//! The `branchrec-central` subcommands of commands to boxes: `hold add|release|list`,
//! `erase`, `rotate-compliance-key` and `commands` (argument parsing and rendering; the
//! work is [`super::command`] and [`super::hold`]).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::command::{CommandArchive, CommandKey, PemCommandKey};
use super::hold;
use super::CentralConfig;
use crate::command::Action;

/// Where the archive and the command key are.
#[derive(Debug, Args)]
pub struct CommandCommon {
    /// central.toml with an `[archive]` section (read-write credentials: these commands
    /// write `_commands/`, set legal holds and delete object versions).
    #[arg(long, env = "BRANCHREC_CENTRAL_CONFIG")]
    pub archive: PathBuf,
    /// The central command key in a PEM file (Ed25519 PKCS#8; prefer an HSM).
    #[arg(
        long,
        env = "BRANCHREC_COMMAND_KEY",
        conflicts_with = "command_pkcs11_module"
    )]
    pub command_key: Option<PathBuf>,
    /// PKCS#11 module of the HSM holding the command key (Ed25519, CKM_EDDSA).
    #[arg(long, requires_all = ["command_token_label", "command_key_label"])]
    pub command_pkcs11_module: Option<PathBuf>,
    /// Label of the token.
    #[arg(long)]
    pub command_token_label: Option<String>,
    /// Label of the Ed25519 key pair on the token.
    #[arg(long)]
    pub command_key_label: Option<String>,
    /// Environment variable holding the token's user PIN.
    #[arg(long, default_value = "BRANCHREC_COMMAND_PIN")]
    pub command_pin_env: String,
}

impl CommandCommon {
    fn open(&self) -> anyhow::Result<(CommandArchive, Box<dyn CommandKey + Send>)> {
        let cfg = CentralConfig::load(&self.archive)?;
        let key = open_command_key(
            self.command_key.as_deref(),
            self.command_pkcs11_module.as_deref(),
            self.command_token_label.as_deref(),
            self.command_key_label.as_deref(),
            &self.command_pin_env,
        )?
        .ok_or_else(|| anyhow::anyhow!("give the command key: --command-key PEM, or --command-pkcs11-module with --command-token-label and --command-key-label"))?;
        let mut ar = CommandArchive::open(&cfg.archive)?;
        match &cfg.index {
            Some(ix) => {
                ix.validate()?;
                ar = ar.with_index(super::command_db::CommandDb::connect(&ix.database)?);
            }
            None => eprintln!(
                "WARNING: no [index] in {}: command seqs are not allocated in PostgreSQL (only the archive's conditional writes guard against a concurrent operator; Garage ignores them), acknowledgements cannot be verified with an enrolled box key and are not counted, participant holds are refused.",
                self.archive.display()
            ),
        }
        Ok((ar, key))
    }
}

/// The central command key from a PEM file (with a warning) or a PKCS#11 token; `None`
/// when neither is given (the console then has no holds).
pub fn open_command_key(
    pem: Option<&std::path::Path>,
    module: Option<&std::path::Path>,
    token: Option<&str>,
    label: Option<&str>,
    pin_env: &str,
) -> anyhow::Result<Option<Box<dyn CommandKey + Send>>> {
    Ok(match (pem, module, token, label) {
        (Some(p), _, _, _) => {
            eprintln!(
                "WARNING: the command key is a file ({}): whoever can read it commands every box (holds, erasure). Keep it in an HSM (--command-pkcs11-module).",
                p.display()
            );
            Some(Box::new(PemCommandKey::load(p)?))
        }
        (None, Some(m), Some(t), Some(k)) => {
            let pin = zeroize::Zeroizing::new(
                std::env::var(pin_env)
                    .with_context(|| format!("the token PIN is read from ${pin_env}"))?,
            );
            Some(Box::new(super::command_key::Pkcs11CommandKey::open(
                m, t, k, &pin,
            )?))
        }
        (None, None, _, _) => None,
        _ => bail!("--command-pkcs11-module needs --command-token-label and --command-key-label"),
    })
}

/// `hold` subcommands.
#[derive(Debug, Subcommand)]
pub enum HoldCmd {
    /// Place a legal hold for a case: Object Lock legal hold on every archive object of
    /// the recordings, and a hold command to each box concerned.
    Add {
        /// Case id (1-128 of A-Za-z0-9._:-).
        #[arg(long)]
        case: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// A participant number/AoR pattern, held by the box (`--box`) as such.
        #[arg(long, requires = "box_id")]
        participant: Option<String>,
        /// The box for --participant.
        #[arg(long = "box")]
        box_id: Option<String>,
        /// Recording ids (or container object keys).
        ids: Vec<String>,
        #[command(flatten)]
        common: CommandCommon,
    },
    /// Release a case: a release command to its boxes, legal hold off where no other
    /// case needs it.
    Release {
        /// Case id.
        #[arg(long)]
        case: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: CommandCommon,
    },
    /// List the active cases (from the boxes' command histories).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommandCommon,
    },
}

/// The subcommands, flattened into `branchrec-central`'s.
#[derive(Debug, Subcommand)]
pub enum CommandCmd {
    /// Legal holds across boxes and archive.
    Hold {
        #[command(subcommand)]
        cmd: HoldCmd,
    },
    /// Erase a recording on its box (crypto-shred, tombstone) and in the archive (every
    /// version). Refused under hold.
    Erase {
        /// Recording id (or container object key).
        id: String,
        /// Why (request reference).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: CommandCommon,
    },
    /// Tell a box to wrap new recordings to another compliance public key.
    RotateComplianceKey {
        /// The box.
        #[arg(long = "box")]
        box_id: String,
        /// New key id.
        #[arg(long)]
        key_id: String,
        /// New public key (PEM).
        #[arg(long)]
        public_key: PathBuf,
        #[command(flatten)]
        common: CommandCommon,
    },
    /// Commands per box: pending or acknowledged (and how).
    Commands {
        /// Only this box.
        #[arg(long = "box")]
        box_id: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommandCommon,
    },
}

fn operator() -> String {
    crate::service::identity::current_user()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Run one of the subcommands.
pub fn run(cmd: CommandCmd) -> anyhow::Result<()> {
    match cmd {
        CommandCmd::Hold { cmd } => match cmd {
            HoldCmd::Add {
                case,
                reason,
                participant,
                box_id,
                ids,
                common,
            } => {
                if ids.is_empty() && participant.is_none() {
                    bail!("give recording ids or --participant with --box");
                }
                let (ar, key) = common.open()?;
                let p = match (&participant, &box_id) {
                    (Some(p), Some(b)) => Some((b.as_str(), p.as_str())),
                    _ => None,
                };
                let r = hold::hold_add(
                    &ar,
                    key.as_ref(),
                    &operator(),
                    now(),
                    &case,
                    &reason,
                    &ids,
                    p,
                )?;
                for (b, seq, recs) in &r.commands {
                    println!(
                        "case {case}: command {seq} to box {b} ({} recording(s))",
                        recs.len()
                    );
                }
                if let Some(p) = &participant {
                    println!(
                        "case {case}: participant {p} matched {} indexed recording(s): {}",
                        r.matched.len(),
                        r.matched.join(", ")
                    );
                }
                println!(
                    "case {case}: Object Lock legal hold ON on {} object version(s)",
                    r.legal_holds
                );
                Ok(())
            }
            HoldCmd::Release {
                case,
                reason,
                common,
            } => {
                let (ar, key) = common.open()?;
                let r = hold::hold_release(&ar, key.as_ref(), &operator(), now(), &case, &reason)?;
                for (b, seq) in &r.commands {
                    println!("case {case}: release command {seq} to box {b}");
                }
                println!(
                    "case {case}: Object Lock legal hold OFF on {} object version(s){}",
                    r.legal_holds_cleared,
                    if r.still_held.is_empty() {
                        String::new()
                    } else {
                        format!("; still held by other cases: {}", r.still_held.join(", "))
                    }
                );
                Ok(())
            }
            HoldCmd::List { json, common } => {
                let (ar, key) = common.open()?;
                let cases = hold::active_cases(&ar, &key.public_key())?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&cases)?);
                    return Ok(());
                }
                println!(
                    "{:<20}  {:<12}  {:<10}  {:>5}  {:<5}  reason",
                    "case", "box", "operator", "recs", "acked"
                );
                for c in cases {
                    for (b, cb) in &c.boxes {
                        println!(
                            "{:<20}  {:<12}  {:<10}  {:>5}  {:<5}  {}",
                            c.case,
                            b,
                            c.operator,
                            cb.recordings.len() + cb.participants.len(),
                            if cb.acknowledged { "yes" } else { "no" },
                            c.reason
                        );
                    }
                }
                Ok(())
            }
        },
        CommandCmd::Erase { id, reason, common } => {
            let (ar, key) = common.open()?;
            let r = hold::erase(&ar, key.as_ref(), &operator(), now(), &id, &reason)?;
            println!(
                "erase {id}: command {} to box {}; {} archive object version(s) deleted",
                r.command.1, r.command.0, r.versions_deleted
            );
            Ok(())
        }
        CommandCmd::RotateComplianceKey {
            box_id,
            key_id,
            public_key,
            common,
        } => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            crate::vault::compliance::parse_public_key_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", public_key.display()))?;
            let (ar, key) = common.open()?;
            let c = ar.issue(
                key.as_ref(),
                &box_id,
                &operator(),
                now(),
                Action::RotateComplianceKey {
                    key_id,
                    public_key_pem: pem,
                },
            )?;
            println!("command {} to box {box_id}", c.seq);
            Ok(())
        }
        CommandCmd::Commands {
            box_id,
            json,
            common,
        } => {
            let (ar, key) = common.open()?;
            let pk = key.public_key();
            let boxes = match box_id {
                Some(b) => vec![b],
                None => ar.boxes()?,
            };
            let mut out = Vec::new();
            let mut refused_acks: Vec<(String, i64)> = Vec::new();
            for b in boxes {
                if let Some(mut d) = ar.index() {
                    let n = d.ack_problems(&b)?;
                    if n > 0 {
                        refused_acks.push((b.clone(), n));
                    }
                }
                for ic in ar.history(&b, &pk)? {
                    let (action, operator, issued) = match &ic.command {
                        Ok(c) => (
                            c.action.name().to_string(),
                            c.operator.clone(),
                            c.issued_at_ms,
                        ),
                        Err(e) => (format!("INVALID: {e}"), String::new(), 0),
                    };
                    let (state, detail) = match (&ic.ack, &ic.ack_problem) {
                        (Some(a), _) => (a.ack.result.as_str().to_string(), a.ack.detail.clone()),
                        // Never acknowledged by an ack that does not verify.
                        (None, Some(p)) => ("ack-refused".to_string(), p.clone()),
                        (None, None) if ic.command.is_ok() => {
                            ("pending".to_string(), String::new())
                        }
                        (None, None) => ("-".to_string(), String::new()),
                    };
                    out.push(serde_json::json!({
                        "box": b, "seq": ic.slot, "action": action, "operator": operator,
                        "issued_at_ms": issued, "state": state, "detail": detail,
                        "ack_key_id": ic.ack.as_ref().map(|a| a.ack.key_id.clone()),
                        "ack_problem": ic.ack_problem,
                    }));
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!(
                "{:<12}  {:>5}  {:<22}  {:<10}  {:<9}  detail",
                "box", "seq", "action", "operator", "state"
            );
            for v in out {
                println!(
                    "{:<12}  {:>5}  {:<22}  {:<10}  {:<9}  {}",
                    v["box"].as_str().unwrap_or_default(),
                    v["seq"],
                    v["action"].as_str().unwrap_or_default(),
                    v["operator"].as_str().unwrap_or_default(),
                    v["state"].as_str().unwrap_or_default(),
                    v["detail"].as_str().unwrap_or_default()
                );
            }
            for (b, n) in refused_acks {
                println!("box {b}: {n} acknowledgement object(s) refused (do not verify with its trusted key; alarm ack_signature)");
            }
            Ok(())
        }
    }
}
