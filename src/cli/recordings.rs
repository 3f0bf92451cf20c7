//! `branchrec recordings list | show | export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::catalog::{Catalog, ListFilter, RecordingDetail};
use crate::config::Config;

/// `recordings` subcommands.
#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// One entry per recording.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
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
    /// Decrypt a recording to a standard WAV file (16-bit PCM, one participant per channel).
    Export {
        /// Recording id.
        id: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run a `recordings` subcommand.
pub fn main(cmd: RecordingsCommand) -> anyhow::Result<()> {
    match cmd {
        RecordingsCommand::List { json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open(&cfg)?;
            let rows = cat.list(&ListFilter::default())?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", crate::catalog::render_table(&rows))?;
            }
            Ok(())
        }
        RecordingsCommand::Show { id, json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open(&cfg)?;
            let Some(d) = cat.get(&id)? else {
                bail!("no recording with id {id}");
            };
            let v = detail_json(&d)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", crate::catalog::render_table(&[d.summary()?]));
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        RecordingsCommand::Export { id, out, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open(&cfg)?;
            let Some(d) = cat.get(&id)? else {
                bail!("no recording with id {id}");
            };
            let Some(rel) = d.recording.file_path.clone() else {
                bail!("recording {id} has no file");
            };
            let vault = crate::vault::KeyFileVault::load(&cfg.storage.key_file())
                .context("opening the key file")?;
            let path = cfg.storage.data_dir.join(rel);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("reading recording file {}", path.display()))?;
            let (header, samples) =
                crate::recording::read_all_audio(std::io::BufReader::new(file), &vault)
                .with_context(|| format!("recording {id} failed verification"))?;
            if header.recording_id != id {
                bail!(
                    "recording file {} belongs to recording {}, not {id}: refusing to export",
                    path.display(),
                    header.recording_id
                );
            }
            let tmp = out.with_extension("wav.partial");
            {
                let mut f = std::io::BufWriter::new(
                    std::fs::File::create(&tmp)
                        .with_context(|| format!("creating {}", tmp.display()))?,
                );
                crate::recording::write_wav(&mut f, header.sample_rate, header.channels, &samples)?;
                f.flush()?;
            }
            std::fs::rename(&tmp, &out)?;
            eprintln!(
                "exported {id}: {} frames, {} channels, {} Hz -> {}",
                samples.len() / usize::from(header.channels.max(1)),
                header.channels,
                header.sample_rate,
                out.display()
            );
            Ok(())
        }
    }
}

fn open(cfg: &Config) -> anyhow::Result<Catalog> {
    let p = cfg.storage.catalog_path();
    if !p.exists() {
        bail!(
            "no catalogue at {} (has the recorder run with this data_dir?)",
            p.display()
        );
    }
    Ok(Catalog::open_read_only(&p)?)
}

/// The `recordings show --json` document: the list entry plus stats, DTMF, events and the
/// metadata versions received (without their raw bytes).
pub fn detail_json(d: &RecordingDetail) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(d.summary()?)?;
    let r = &d.recording;
    let dtmf: Vec<serde_json::Value> = d
        .events
        .iter()
        .filter(|e| e.kind == "dtmf")
        .map(|e| {
            let det = e.detail_json.clone().unwrap_or_default();
            serde_json::json!({
                "channel": e.channel,
                "digit": det.get("digit"),
                "start_ms": e.at_ms,
                "duration_ms": det.get("duration_ms"),
            })
        })
        .collect();
    let events: Vec<serde_json::Value> = d
        .events
        .iter()
        .map(|e| serde_json::json!({"at_ms": e.at_ms, "kind": e.kind, "channel": e.channel, "detail": e.detail_json}))
        .collect();
    let versions: Vec<serde_json::Value> = d
        .metadata_versions
        .iter()
        .map(|m| {
            serde_json::json!({
                "seq": m.seq,
                "received_at": chrono::DateTime::from_timestamp_millis(m.version.received_at_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "sip_method": m.version.sip_method,
                "content_type": m.version.content_type,
                "data_mode": m.version.data_mode.map(|x| x.as_str()),
                "bytes": m.version.raw.len(),
            })
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("src_addr".into(), r.src_addr.clone().into());
        o.insert("sample_rate".into(), r.sample_rate.into());
        o.insert("file_path".into(), r.file_path.clone().into());
        o.insert("file_sha256".into(), r.file_sha256.clone().into());
        o.insert("file_bytes".into(), r.file_bytes.into());
        o.insert("kek_id".into(), r.kek_id.clone().into());
        o.insert("stats".into(), r.stats_json.clone().unwrap_or_default());
        o.insert("dtmf".into(), dtmf.into());
        o.insert("events".into(), events.into());
        o.insert("metadata_versions".into(), versions.into());
    }
    Ok(v)
}
