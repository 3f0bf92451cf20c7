//! `branchrec recordings list | show | export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
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
            let v = crate::catalog::detail_json(&d);
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
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
            let vault = crate::vault::KeyFileVault::open_existing(&cfg.storage.key_file())
                .context("opening the key file")?;
            let path = cfg.storage.data_dir.join(&d.file_path);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading recording file {}", path.display()))?;
            let (header, samples) = crate::recording::read_all_audio(&bytes, &vault)
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
