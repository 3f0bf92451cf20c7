//! `branchrec assurance …` (issue #19, docs/assurance.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;

/// `branchrec assurance` subcommands.
#[derive(Debug, Subcommand)]
pub enum AssuranceCommand {
    /// Every call seen on a day with its verdict and the totals by verdict, rule and
    /// source; with --cdr, CDRs without a recording and recordings without a CDR.
    Report {
        /// The UTC day, YYYY-MM-DD.
        #[arg(long)]
        day: String,
        /// External CDR list (CSV: start,caller,callee,duration).
        #[arg(long)]
        cdr: Option<PathBuf>,
        /// A CDR and a call match when their starts are at most this far apart, s.
        #[arg(long, default_value_t = 30)]
        tolerance_s: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file (for the data directory).
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run it.
pub fn main(cmd: AssuranceCommand) -> anyhow::Result<()> {
    match cmd {
        AssuranceCommand::Report {
            day,
            cdr,
            tolerance_s,
            json,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = crate::cli::lifecycle::open_rw(&cfg)?;
            let text = cdr
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let rep = crate::service::assurance::report(
                &cat,
                &day,
                text.as_deref(),
                i64::from(tolerance_s) * 1000,
            )?;
            crate::cli::lifecycle::audit(
                &mut cat,
                &cfg,
                "assurance.report",
                &day,
                serde_json::json!({ "calls": rep.totals.calls, "cdr": cdr.is_some() }),
            )?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rep)?;
                writeln!(out)?;
                return Ok(());
            }
            writeln!(out, "assurance report {} (UTC)", rep.day)?;
            writeln!(out, "calls seen: {}", rep.totals.calls)?;
            for (v, n) in &rep.totals.by_verdict {
                writeln!(out, "  {v:<13} {n}")?;
            }
            if rep.unjudged > 0 {
                writeln!(
                    out,
                    "  (not judged: {} recordings in progress or from before schema 11)",
                    rep.unjudged
                )?;
            }
            for (title, map) in [
                ("by rule", &rep.totals.by_rule),
                ("by source", &rep.totals.by_source),
            ] {
                writeln!(out, "{title}:")?;
                for (k, m) in map {
                    let parts: Vec<String> = m.iter().map(|(v, n)| format!("{v} {n}")).collect();
                    writeln!(out, "  {k:<13} {}", parts.join(", "))?;
                }
            }
            for c in &rep.calls {
                let t = crate::time::UnixMs(c.start_ms)
                    .to_datetime()
                    .map(|d| d.format("%H:%M:%S").to_string())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {t}  {:<13} {:<7} {}",
                    c.verdict.as_str(),
                    c.source,
                    c.id
                )?;
            }
            if let Some(r) = &rep.reconciliation {
                writeln!(
                    out,
                    "CDR reconciliation ({} CDRs): {} matched, {} not recorded (CDR without recording), {} recorded without CDR, {} with incorrect media",
                    rep.cdrs.unwrap_or(0),
                    r.matched.len(),
                    r.cdr_without_recording.len(),
                    r.recording_without_cdr.len(),
                    r.incorrect.len()
                )?;
                for c in &r.cdr_without_recording {
                    let t = crate::time::UnixMs(c.start_ms)
                        .to_datetime()
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  MISSING  CDR line {}: {t} {} -> {} ({} s)",
                        c.line, c.caller, c.callee, c.duration_s
                    )?;
                }
                for id in &r.recording_without_cdr {
                    writeln!(out, "  NO CDR   {id}")?;
                }
                for m in &r.incorrect {
                    writeln!(
                        out,
                        "  MEDIA    CDR line {}: {} is {}",
                        m.cdr_line, m.id, m.verdict
                    )?;
                }
            }
            Ok(())
        }
    }
}
