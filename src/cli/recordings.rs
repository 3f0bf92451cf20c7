//! `branchrec recordings list | show | export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

use crate::catalog::{Catalog, ListFilter};
use crate::config::Config;

/// `recordings` subcommands.
#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// One entry per recording.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only recordings started at/after (RFC 3339 or age like `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Only recordings started before (RFC 3339 or age).
        #[arg(long)]
        until: Option<String>,
        /// Only recordings with a participant number/AoR matching (`*`, `?`).
        #[arg(long)]
        participant: Option<String>,
        /// Only recordings with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only recordings of this SIP Call-ID / SIPREC session id.
        #[arg(long)]
        call: Option<String>,
        /// Only held recordings.
        #[arg(long, conflicts_with = "not_held")]
        held: bool,
        /// Only recordings not under hold.
        #[arg(long)]
        not_held: bool,
        /// Only recordings in this state (recording, complete, interrupted, damaged, codec_unsupported).
        #[arg(long)]
        state: Option<String>,
        /// Only recordings with this assurance verdict (recorded, one_way, silent,
        /// no_media, partial).
        #[arg(long)]
        verdict: Option<String>,
        /// At most this many (newest first).
        #[arg(long)]
        limit: Option<u32>,
        /// Configuration file (for the data directory).
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Everything the catalogue holds about one recording.
    Show {
        /// Recording id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Delete a recording now (data-subject request): crypto-shred, tombstone, audit.
    /// Refused while a hold covers it, and while unarchived unless retention.local_only.
    Delete {
        /// Recording id.
        id: String,
        /// Why (request reference).
        #[arg(long)]
        reason: String,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Pause a running recording (by recording id or SIP Call-ID): no audio is stored until resume.
    Pause {
        /// Recording id or Call-ID.
        call: String,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Resume a paused recording.
    Resume {
        /// Recording id or Call-ID.
        call: String,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Decrypt a recording to a standard WAV file (16-bit PCM, one participant per channel)
    /// or Ogg Opus, or write an evidence bundle. Only after the recording fully verifies.
    Export {
        /// Recording id.
        id: String,
        /// Output file: WAV (`.wav`) or Ogg Opus (`.opus`, `.ogg`); see --format.
        #[arg(
            long,
            required_unless_present = "evidence",
            conflicts_with = "evidence"
        )]
        out: Option<PathBuf>,
        /// Write an evidence bundle (audio, metadata, signed manifest, public key) here.
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// Output format; default from the --out extension (.wav, .opus/.ogg), else wav.
        /// Opus recordings export to Ogg Opus without re-encoding; WAV recordings are
        /// encoded with `[storage.opus]`.
        #[arg(long, conflicts_with = "evidence")]
        format: Option<crate::recording::export::ExportFormat>,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Verify recordings: container integrity, content hash, signed manifest, audio hash
    /// and catalogue metadata; with --all also that catalogue and files match. Exit
    /// status 1 if anything fails.
    Verify {
        /// Recording id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every recording, plus files without a row and rows without a file.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run a `recordings` subcommand.
pub fn main(cmd: RecordingsCommand) -> anyhow::Result<()> {
    match cmd {
        RecordingsCommand::List {
            json,
            since,
            until,
            participant,
            tag,
            call,
            held,
            not_held,
            state,
            verdict,
            limit,
            config,
        } => {
            if let Some(v) = verdict.as_deref() {
                if crate::assurance::Verdict::parse(v).is_none() {
                    bail!("--verdict {v:?}: expected one of recorded, one_way, silent, no_media, partial (refused, not_recorded and missed calls have no recording: see `branchrec assurance report`)");
                }
            }
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open(&cfg)?;
            let now = crate::cli::lifecycle::now_ms(&cfg, None)?;
            let filter = ListFilter {
                limit,
                state: state.as_deref().map(str::parse).transpose()?,
                since_ms: since
                    .as_deref()
                    .map(|t| crate::cli::lifecycle::parse_time(t, now))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|t| crate::cli::lifecycle::parse_time(t, now))
                    .transpose()?,
                participant,
                tag,
                call,
                held: if held {
                    Some(true)
                } else if not_held {
                    Some(false)
                } else {
                    None
                },
                verdict,
                now_ms: now,
            };
            let rows = cat.list(&filter)?;
            crate::cli::lifecycle::audit(
                &mut cat,
                &cfg,
                "recordings.list",
                "",
                serde_json::json!({ "filter": format!("{filter:?}"), "results": rows.len() }),
            )?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", super::render::render_table(&rows))?;
            }
            Ok(())
        }
        RecordingsCommand::Show { id, json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open(&cfg)?;
            let Some(d) = cat.get(&id)? else {
                bail!("no recording with id {id}");
            };
            let now = crate::cli::lifecycle::now_ms(&cfg, None)?;
            let v = crate::service::archive::show_document(&cat, &d, now)?;
            crate::cli::lifecycle::audit(
                &mut cat,
                &cfg,
                "recording.show",
                &id,
                serde_json::json!({}),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", super::render::render_table(&[d.summary()?]));
                println!("{}", super::render::assurance_lines(&v));
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        RecordingsCommand::Delete { id, reason, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open(&cfg)?;
            let now = crate::cli::lifecycle::now_ms(&cfg, None)?;
            let actor = crate::cli::lifecycle::actor();
            use crate::service::audit::TwoPerson;
            if let TwoPerson::Requested { seq, window_s } = crate::service::audit::two_person(
                &mut cat,
                &cfg,
                cfg.audit.two_person_delete,
                "recording.delete",
                &id,
                &actor,
                &reason,
                now,
            )? {
                println!("delete {id}: requested by {actor} (audit seq {seq}); a second, different operator must run the same command within {window_s} s (two-person rule)");
                return Ok(());
            }
            match crate::service::retention::delete(
                &mut cat,
                &cfg,
                &id,
                crate::catalog::lifecycle::DeleteMode::Manual,
                Some(&reason),
                &actor,
                now,
            ) {
                Ok(t) => {
                    crate::cli::lifecycle::sign_head(&mut cat, &cfg, now);
                    println!("deleted {id}: data key shredded, file removed, tombstone kept (audit seq {})", t.audit_seq);
                    Ok(())
                }
                Err(e) => {
                    crate::cli::lifecycle::audit(
                        &mut cat,
                        &cfg,
                        "recording.delete_refused",
                        &id,
                        serde_json::json!({ "reason": reason, "error": e.to_string() }),
                    )?;
                    bail!("{e}")
                }
            }
        }
        RecordingsCommand::Pause { call, config } => control(config, "pause", &call),
        RecordingsCommand::Resume { call, config } => control(config, "resume", &call),
        RecordingsCommand::Export {
            id,
            out,
            evidence,
            format,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open(&cfg)?;
            // Every access to audio is audited, before the audio is touched.
            crate::cli::lifecycle::audit(
                &mut cat,
                &cfg,
                if evidence.is_some() {
                    "recording.export_evidence"
                } else {
                    "recording.export"
                },
                &id,
                serde_json::json!({
                    "out": out.as_ref().map(|p| p.display().to_string()),
                    "evidence": evidence.as_ref().map(|p| p.display().to_string()),
                }),
            )?;
            use crate::service::export::{ExportTarget, Exported};
            let target = match (evidence, out) {
                (Some(dir), _) => ExportTarget::Evidence(dir),
                (None, Some(out)) => ExportTarget::Audio { out, format },
                (None, None) => bail!("give --out FILE or --evidence DIR"),
            };
            match crate::service::export::export(&cat, &cfg, &id, &target)? {
                Exported::Evidence(dir) => {
                    eprintln!("evidence bundle for {id} -> {}", dir.display());
                }
                Exported::Audio {
                    storage,
                    format,
                    frames,
                    channels,
                    sample_rate,
                    out,
                } => {
                    eprintln!(
                        "exported {id} ({storage} storage) as {}: {frames} frames, {channels} channels, {sample_rate} Hz -> {}",
                        match format {
                            crate::recording::export::ExportFormat::Wav => "WAV",
                            crate::recording::export::ExportFormat::Opus => "Ogg Opus",
                        },
                        out.display()
                    );
                }
            }
            Ok(())
        }
        RecordingsCommand::Verify {
            id,
            all,
            json,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open(&cfg)?;
            crate::cli::lifecycle::audit(
                &mut cat,
                &cfg,
                "recording.verify",
                id.as_deref().unwrap_or("*"),
                serde_json::json!({ "all": all }),
            )?;
            let rep = crate::service::evidence::verify_recordings(&cat, &cfg, id.as_deref())?;
            let (results, orphans, failed) = (rep.recordings, rep.files_without_row, rep.failed);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "recordings": results, "files_without_row": orphans, "failed": failed,
                    }))?
                );
            } else {
                for r in &results {
                    let ok = r["ok"].as_bool().unwrap_or(false);
                    let tag = if r["skipped"].as_bool().unwrap_or(false) {
                        "SKIP (still recording)"
                    } else if ok {
                        "OK"
                    } else {
                        "FAILED"
                    };
                    println!(
                        "{} {} [{}]",
                        r["id"].as_str().unwrap_or(""),
                        tag,
                        r["state"].as_str().unwrap_or("")
                    );
                    if let Some(ps) = r["problems"].as_array() {
                        for p in ps {
                            println!("    {}", p.as_str().unwrap_or(""));
                        }
                    }
                }
                for o in &orphans {
                    println!("{o} FAILED: file has no catalogue row");
                }
                println!("{} checked, {failed} failed", results.len());
            }
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Open the catalogue: read-write, because every access is written to the audit log.
fn open(cfg: &Config) -> anyhow::Result<Catalog> {
    let p = cfg.storage.catalog_path();
    if !p.exists() {
        bail!(
            "no catalogue at {} (has the recorder run with this data_dir?)",
            p.display()
        );
    }
    crate::cli::lifecycle::open_rw(cfg)
}

/// Send a pause/resume request to the running daemon over its control socket.
fn control(config: Option<PathBuf>, cmd: &str, call: &str) -> anyhow::Result<()> {
    let cfg = Config::load_or_default(config.as_deref())?;
    let req = serde_json::json!({ "cmd": cmd, "call": call });
    let v = crate::cli::board::control_request(&cfg, &req, std::time::Duration::from_secs(10))?;
    if v["ok"].as_bool() == Some(true) {
        println!(
            "{cmd}d recording {}",
            v["recording"].as_str().unwrap_or(call)
        );
        Ok(())
    } else {
        bail!("{}", v["error"].as_str().unwrap_or("refused"))
    }
}
