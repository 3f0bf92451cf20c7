//! Command line: `branchrec run | check-config | recordings …`.
//!
//! Subcommand names and flags are an interface other tools rely on: keep them.

pub mod access;
pub mod assurance;
pub mod bench;
pub mod bench_storage;
pub mod board;
pub mod keys;
pub mod lifecycle;
pub mod recordings;
pub mod render;
pub mod uplink;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
pub use access::{print_sip_access, sip_access};

/// Branch-office call recorder.
#[derive(Debug, Parser)]
#[command(name = "branchrec", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the recorder daemon (built-in defaults when no --config is given).
    Run {
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and say exactly what is wrong.
    CheckConfig {
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Record the calls found in pcap/pcapng files exactly as live capture would.
    ImportPcap {
        /// Capture files, read in order as one continuous capture.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also record RTP flows that no SDP announced, as `unsignalled` recordings
        /// (as `[capture] unsignalled_rtp = true`).
        #[arg(long)]
        unsignalled: bool,
        /// RTP sent from SENDER is SRTP with this key, e.g.
        /// `10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:BASE64`; such a flow is recorded
        /// (as `unsignalled` when no SDP binds it). Repeat for each sender.
        #[arg(long = "srtp-key", value_name = "SENDER=SUITE:inline:KEY")]
        srtp_keys: Vec<String>,
    },
    /// Measure capture throughput (see docs/capture.md): generated calls through the
    /// whole passive pipeline, optionally against `tcpdump -w` on a live interface.
    BenchCapture(bench::BenchArgs),
    /// Measure storage cost per codec → format pair (bytes per call-minute, CPU per call)
    /// on real RTP from a capture (see docs/storage-benchmark.md).
    BenchStorage(bench_storage::BenchStorageArgs),
    /// List, inspect and export recordings.
    Recordings {
        /// Which.
        #[command(subcommand)]
        command: recordings::RecordingsCommand,
    },
    /// Recording assurance: the day's verdicts, totals and CDR reconciliation.
    Assurance {
        /// Which.
        #[command(subcommand)]
        command: assurance::AssuranceCommand,
    },
    /// Legal holds: add, release, list.
    Hold {
        /// Which.
        #[command(subcommand)]
        command: lifecycle::HoldCommand,
    },
    /// The tamper-evident audit log: verify, show.
    Audit {
        /// Which.
        #[command(subcommand)]
        command: lifecycle::AuditCommand,
    },
    /// Retention: sweep, status, tombstones.
    Retention {
        /// Which.
        #[command(subcommand)]
        command: lifecycle::RetentionCommand,
    },
    /// Key custody: status, rotation, recovery from escrow.
    Keys {
        /// Which.
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// This box: recordings pending/uploaded, upload rate, disk, key, alarms.
    Status {
        /// JSON output (includes every upload row).
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The front panel: press the simulated hold button, show LEDs, check a pin map.
    Board {
        /// Which.
        #[command(subcommand)]
        command: board::BoardCommand,
    },
    /// Every box's status document from the archive (run centrally with read credentials).
    Fleet {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// A heartbeat older than this many seconds is flagged STALE.
        #[arg(long, default_value_t = 900)]
        stale_after_s: i64,
        /// A pending recording older than this many seconds is flagged BACKLOG.
        #[arg(long, default_value_t = 86_400)]
        backlog_age_s: u64,
        /// Configuration file with the [uplink] section.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run the parsed command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            init_logging(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("branchrec")
                .build()
                .context("starting the async runtime")?;
            rt.block_on(crate::app::run(cfg))
        }
        Command::CheckConfig { config } => {
            let (cfg, files) = match config.as_deref() {
                Some(p) => Config::load_with_sources(p)?,
                None => (Config::load_or_default(None)?, Vec::new()),
            };
            let origin = config
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            println!("{origin}: OK");
            for f in &files {
                println!("  read             {}", f.display());
            }
            println!("  log.target       = {:?}", cfg.log.target);
            let listen: Vec<String> = cfg.sip.listen.iter().map(|l| l.to_string()).collect();
            println!("  sip.listen      = {}", listen.join(", "));
            println!(
                "  media.rtp_ports = {}-{} on {}",
                cfg.media.rtp_ports.first, cfg.media.rtp_ports.last, cfg.media.rtp_bind
            );
            println!("  storage.data_dir = {}", cfg.storage.data_dir.display());
            println!("  keys.provider   = {}", cfg.keys.provider);
            if cfg.keys.provider == "software" {
                println!("  WARNING: software keys are for development machines only");
            }
            println!(
                "  board.kind       = {:?} (pins {})",
                cfg.board.kind,
                cfg.board.pins.display()
            );
            access::print_check(&cfg)?;
            if cfg.capture.interfaces.is_empty() {
                println!("  capture          = off");
            } else {
                println!(
                    "  capture          = {} (filter `{}`)",
                    cfg.capture.interfaces.join(", "),
                    cfg.capture.bpf_filter
                );
            }
            Ok(())
        }
        Command::ImportPcap {
            files,
            config,
            json,
            unsignalled,
            srtp_keys,
        } => {
            let mut cfg = Config::load_or_default(config.as_deref())?;
            cfg.capture.unsignalled_rtp |= unsignalled;
            let declared = srtp_keys
                .iter()
                .map(|k| crate::app::capture::parse_flow_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            init_logging(&cfg);
            let storage = crate::app::open_storage(&cfg)?;
            if let Some(e) = &storage.keys_error {
                anyhow::bail!("cannot record: the recording keys are unavailable: {e}");
            }
            let (vault, catalog) = (storage.vault.clone(), storage.catalog.clone());
            let rep =
                crate::app::capture::import_files_with(&cfg, vault, catalog, &files, declared)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                for c in &rep.calls {
                    println!(
                        "{}  {:<17}  {:<10}  {}  call-id {}",
                        c.id, c.state, c.codec, c.capture_point, c.call_id
                    );
                }
                let s = &rep.stats;
                println!(
                    "{} calls from {} frames ({} SIP messages, {} RTP packets bound, {} IP datagrams reassembled, {} decapsulated, {} unsignalled RTP flows, {} SIP-over-TLS connections)",
                    rep.calls.len(),
                    rep.frames,
                    s.tracker.sip_messages,
                    s.tracker.rtp_packets,
                    s.decode.reassembled,
                    s.decode.decapsulated,
                    s.tracker.calls_unsignalled,
                    s.tracker.calls_encrypted
                );
                if rep.calls.is_empty() && s.tracker.sip_messages == 0 && s.udp_unbound > 0 {
                    println!(
                        "no SIP in these files: {} UDP datagrams were not bound to any call; `--unsignalled` records RTP without SDP, `--srtp-key SENDER=SUITE:inline:KEY` a known SRTP flow (docs/capture.md)",
                        s.udp_unbound
                    );
                }
            }
            Ok(())
        }
        Command::BenchCapture(args) => bench::main(args),
        Command::BenchStorage(args) => bench_storage::main(args),
        Command::Recordings { command } => recordings::main(command),
        Command::Assurance { command } => assurance::main(command),
        Command::Hold { command } => lifecycle::hold_main(command),
        Command::Audit { command } => lifecycle::audit_main(command),
        Command::Retention { command } => lifecycle::retention_main(command),
        Command::Keys { command } => keys::main(command),
        Command::Status { json, config } => uplink::status(config, json),
        Command::Board { command } => board::main(command),
        Command::Fleet {
            json,
            stale_after_s,
            backlog_age_s,
            config,
        } => uplink::fleet(config, json, stale_after_s, backlog_age_s),
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    crate::pii::set_redaction(cfg.log.redact_pii);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let want_journal = match cfg.log.target {
        crate::config::LogTarget::Journald => true,
        crate::config::LogTarget::Stderr => false,
        crate::config::LogTarget::Auto => stderr_is_journal(),
    };
    if want_journal {
        // Field names as they are (RECORDING_ID, CALL_ID, …), not prefixed with `F_`.
        match tracing_journald::layer() {
            Ok(j) => {
                registry
                    .with(
                        j.with_field_prefix(None)
                            .with_syslog_identifier("branchrec".into()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("branchrec: cannot log to the journal ({e}): logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

/// Whether systemd connected our stderr to the journal: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream (systemd.exec(5)); a child whose stderr was redirected
/// inherits the variable but not the stream, so compare.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}
