//! `branchrec hold …`, `branchrec audit …`, `branchrec retention …`, and helpers the
//! `recordings` subcommands share (actor, time parsing, audited catalogue access).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::lifecycle::holds::HoldTarget;
use crate::time::UnixMs;

/// Who is acting, for the audit log: `cli:<login>`, the name of this process's real
/// user id from the OS (never an environment variable or a command-line string).
pub fn actor() -> String {
    format!("cli:{}", crate::service::identity::current_user())
}

/// Parse a time: RFC 3339 (`2024-05-01T09:30:00Z`), or an age before `now` (`30m`,
/// `2h`, `7d`, `45s`).
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let ago = parse_span(s)
        .with_context(|| format!("`{s}`: expected RFC 3339 or an age like 30m, 2h, 7d"))?;
    Ok(now_ms - ago)
}

/// Parse a span `45s`, `30m`, `2h`, `7d` into ms.
pub fn parse_span(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let mul = match unit {
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// "Now" for the CLI: `--now` if given (RFC 3339), else the system clock shifted by
/// `BRANCHREC_TEST_CLOCK_OFFSET_S` like the daemon's. Both only with `[development]
/// clock_override = true`, and then every audit entry of this command is marked.
pub fn now_ms(cfg: &Config, now: Option<&str>) -> anyhow::Result<i64> {
    use crate::lifecycle::Clock;
    if let Some(n) = now {
        if !cfg.development.clock_override {
            bail!("--now {n} refused: evaluating at another time needs [development] clock_override = true (never on a box)");
        }
        let at = chrono::DateTime::parse_from_rfc3339(n)
            .with_context(|| format!("--now {n}: expected RFC 3339"))?
            .timestamp_millis();
        crate::clock::mark_dev_clock(serde_json::json!({
            "now": n, "real_ms": chrono::Utc::now().timestamp_millis(),
        }));
        return Ok(at);
    }
    let (c, _) =
        crate::clock::clock_from_env(cfg.development.clock_override).map_err(anyhow::Error::msg)?;
    Ok(c.now_ms())
}

/// One line on the entries' MACs for `audit verify`.
fn mac_line(rep: &crate::service::audit::LogVerification) -> String {
    let m = &rep.macs;
    let unkeyed = if m.unkeyed > 0 {
        format!(
            "{} unkeyed (before schema {}), covered by the signed heads only; ",
            m.unkeyed,
            crate::catalog::AUDIT_MAC_SCHEMA
        )
    } else {
        String::new()
    };
    let late = match (m.keyed_late.len(), m.pending) {
        (0, 0) => String::new(),
        (l, p) => format!(
            " ({l} keyed late{}, {p} pending: written without the audit key)",
            if l > 0 {
                format!(
                    ": seq {}",
                    m.keyed_late
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                String::new()
            }
        ),
    };
    match m.keyed_from {
        None => format!(
            "MACs: none yet ({unkeyed}keying starts with the next entry written with the key)"
        ),
        Some(k) if m.checked => format!(
            "MACs: {unkeyed}keyed from seq {k}, {} verified with {}{late}",
            m.verified, rep.mac_key
        ),
        Some(k) => format!(
            "MACs: {unkeyed}keyed from seq {k}; key {}{late}",
            rep.mac_key
        ),
    }
}

/// Open the catalogue for writing (audit entries, holds, deletions).
pub fn open_rw(cfg: &Config) -> anyhow::Result<Catalog> {
    let p = cfg.storage.catalog_path();
    if !p.exists() {
        bail!(
            "no catalogue at {} (has the recorder run with this data_dir?)",
            p.display()
        );
    }
    let access = crate::service::catalog::access(cfg)?;
    access.open_existing().with_context(|| {
        format!(
            "opening the catalogue {} (has the recorder run with this data_dir?)",
            p.display()
        )
    })
}

/// Append an audit entry and sign the new head if the signing key is readable.
pub fn audit(
    cat: &mut Catalog,
    cfg: &Config,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let now = now_ms(cfg, None)?;
    cat.audit(now, &actor(), action, target, details)
        .context("writing the audit log")?;
    sign_head(cat, cfg, now);
    Ok(())
}

/// Sign the audit head with the daemon's key if this user can read it (software keys;
/// with a TPM the daemon signs it at its next interval).
pub fn sign_head(cat: &mut Catalog, cfg: &Config, now: i64) {
    crate::service::audit::sign_head(cat, cfg, now)
}

/// `hold` subcommands.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold. Give exactly one of --recording, --call, --participant,
    /// --last, or --from/--to.
    Add {
        /// A recording id.
        #[arg(long)]
        recording: Option<String>,
        /// A SIP Call-ID or SIPREC session id (every recording of that call).
        #[arg(long)]
        call: Option<String>,
        /// A participant number/AoR pattern (`*`, `?`), e.g. `+4930111*`.
        #[arg(long)]
        participant: Option<String>,
        /// Everything from the last SPAN (`30m`, `2h`, `1d`) up to now.
        #[arg(long)]
        last: Option<String>,
        /// Window start (RFC 3339 or age like `2h`).
        #[arg(long)]
        from: Option<String>,
        /// Window end (RFC 3339 or age; default now).
        #[arg(long)]
        to: Option<String>,
        /// Why (case number, request). The operator is the login user (from the OS).
        #[arg(long)]
        reason: String,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Release a hold (explicitly, audited). Under the two-person rule (`[audit]
    /// two_person_hold_release`, on by default) a second, different login user must run
    /// the same command within the window; the first run only records the request.
    Release {
        /// Hold id.
        id: i64,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List holds (active ones; --all includes released).
    List {
        /// Include released holds.
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

/// Run a `hold` subcommand.
pub fn hold_main(cmd: HoldCommand) -> anyhow::Result<()> {
    match cmd {
        HoldCommand::Add {
            recording,
            call,
            participant,
            last,
            from,
            to,
            reason,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let now = now_ms(&cfg, None)?;
            let mut targets = Vec::new();
            if let Some(r) = recording {
                targets.push(HoldTarget::Recording(r));
            }
            if let Some(c) = call {
                targets.push(HoldTarget::Call(c));
            }
            if let Some(p) = participant {
                targets.push(HoldTarget::Participant(p));
            }
            if let Some(l) = last {
                let span = parse_span(&l)
                    .with_context(|| format!("--last {l}: expected e.g. 30m, 2h, 1d"))?;
                targets.push(HoldTarget::Window {
                    from: UnixMs(now - span),
                    to: UnixMs(now),
                });
            }
            if from.is_some() || to.is_some() {
                let f = from.as_deref().context("--to needs --from")?;
                let from_ms = parse_time(f, now)?;
                let to_ms = to
                    .as_deref()
                    .map(|t| parse_time(t, now))
                    .transpose()?
                    .unwrap_or(now);
                targets.push(HoldTarget::Window {
                    from: UnixMs(from_ms),
                    to: UnixMs(to_ms),
                });
            }
            if targets.len() != 1 {
                bail!(
                    "give exactly one of --recording, --call, --participant, --last, --from/--to"
                );
            }
            let operator = actor();
            let mut cat = open_rw(&cfg)?;
            let placed = crate::service::holds::place_hold(
                &mut cat,
                &cfg,
                &targets[0],
                &reason,
                &operator,
                now,
                None,
            )?;
            println!(
                "hold {} placed ({} recording(s) covered now)",
                placed.id, placed.recordings
            );
            Ok(())
        }
        HoldCommand::Release { id, reason, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let now = now_ms(&cfg, None)?;
            let mut cat = open_rw(&cfg)?;
            use crate::service::audit::TwoPerson;
            match crate::service::holds::release_hold(&mut cat, &cfg, id, &actor(), &reason, now)? {
                TwoPerson::Requested { seq, window_s } => println!(
                    "hold {id}: release requested by {} (audit seq {seq}); a second, different operator must run the same command within {window_s} s (two-person rule)",
                    actor()
                ),
                TwoPerson::Confirmed { requested_by, .. } => {
                    println!("hold {id} released (requested by {requested_by}, confirmed by {})", actor())
                }
                TwoPerson::NotRequired => println!("hold {id} released"),
            }
            Ok(())
        }
        HoldCommand::List { all, json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open_rw(&cfg)?;
            let holds = cat.holds(all, now_ms(&cfg, None)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&holds)?);
            } else {
                println!(
                    "{:>4}  {:<11}  {:<40}  {:>5}  {:<20}  {:<10}  reason",
                    "id", "kind", "covers", "recs", "created", "operator"
                );
                for h in holds {
                    let what = match (&h.value, &h.from, &h.to) {
                        (Some(v), _, _) => v.clone(),
                        (None, Some(f), Some(t)) => format!("{f} .. {t}"),
                        _ => String::new(),
                    };
                    let state = if h.released.is_some() {
                        " (released)"
                    } else {
                        ""
                    };
                    println!(
                        "{:>4}  {:<11}  {:<40}  {:>5}  {:<20}  {:<10}  {}{state}",
                        h.id,
                        h.kind,
                        what,
                        h.recordings,
                        &h.created[..h.created.len().min(19)],
                        h.operator,
                        h.reason
                    );
                }
            }
            Ok(())
        }
    }
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed heads; names the position of any edited,
    /// removed or reordered entry. Exit status 1 if anything is wrong.
    Verify {
        /// Also check against signed heads published off the box: a status document
        /// (`<prefix>_status/<box>.json`), an archive metadata document
        /// (`<key>.json`) or a JSON array of heads. Every head there must still be here.
        #[arg(long)]
        against: Vec<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List audit entries (oldest first).
    Show {
        /// Only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run an `audit` subcommand.
pub fn audit_main(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify {
            against,
            json,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let mut cat = open_rw(&cfg)?;
            let mut published = Vec::new();
            for p in &against {
                let v: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("{}: not JSON", p.display()))?;
                published.extend(
                    crate::service::audit::heads_from_document(&v)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                );
            }
            let now = now_ms(&cfg, None)?;
            let rep = crate::service::audit::verify_log(
                &cat,
                &cfg,
                now,
                (!against.is_empty()).then_some(published.as_slice()),
            )?;
            let problems = &rep.problems;
            let ok = problems.is_empty();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": ok, "entries": rep.entries, "signed_heads": rep.signed_heads,
                        "last_signed_seq": rep.last_signed_seq, "counter": rep.counter,
                        "macs": rep.macs, "mac_key": rep.mac_key,
                        "problems": problems,
                    }))?
                );
            } else if ok {
                println!(
                    "audit log OK: {} entries, {} signed heads (last at seq {}), counter {}",
                    rep.entries,
                    rep.signed_heads,
                    rep.last_signed_seq
                        .map_or("-".to_string(), |s| s.to_string()),
                    rep.counter
                );
                println!("{}", mac_line(&rep));
            } else {
                println!("audit log FAILED verification:");
                for p in problems {
                    println!("  position {} (seq {}): {}", p.position, p.seq, p.message);
                }
                println!("{}", mac_line(&rep));
            }
            // Record the verification itself (after checking, so it cannot mask a problem);
            // a failed log gets no new signed head (that would bless the rewrite).
            cat.audit(
                now,
                &actor(),
                "audit.verify",
                "audit_log",
                serde_json::json!({ "ok": ok, "problems": problems.len() }),
            )
            .context("writing the audit log")?;
            if ok {
                sign_head(&mut cat, &cfg, now);
            }
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Show {
            after,
            limit,
            json,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open_rw(&cfg)?;
            let entries = cat.audit_entries(after, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in entries {
                    let t = e.at_ms.to_rfc3339_millis();
                    println!(
                        "{:>6}  {t}  {:<18}  {:<20}  {:<38}  {}",
                        e.seq, e.actor, e.action, e.target, e.details
                    );
                }
            }
            Ok(())
        }
    }
}

/// `retention` subcommands.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Delete every expired, unprotected recording now (what the daemon's sweeper does).
    Sweep {
        /// Evaluate expiry at this time (RFC 3339) instead of now: for drills and tests.
        #[arg(long)]
        now: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Disk usage, pressure/alarm state of the daemon, and life-cycle counts.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Tombstones of deleted recordings, newest first.
    Tombstones {
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run a `retention` subcommand.
pub fn retention_main(cmd: RetentionCommand) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::Sweep { now, json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let now = now_ms(&cfg, now.as_deref())?;
            let mut cat = open_rw(&cfg)?;
            let rep = crate::service::retention::sweep(&mut cat, &cfg, now, &actor(), None);
            sign_head(&mut cat, &cfg, now_ms(&cfg, None)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("deleted {} recording(s)", rep.deleted.len());
                for t in &rep.deleted {
                    println!(
                        "  {}  expired {}",
                        t.recording_id,
                        t.expires.as_deref().unwrap_or("-")
                    );
                }
                for (id, why) in &rep.blocked {
                    println!("  kept {id}: {why}");
                }
                for (id, e) in &rep.errors {
                    println!("  error {id}: {e}");
                }
            }
            if !rep.errors.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        RetentionCommand::Status { json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open_rw(&cfg)?;
            let now = now_ms(&cfg, None)?;
            let st = crate::service::retention::status(&cat, &cfg, now)?;
            let v = st.document;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "data disk: {:.1}% used (high {}%, low {}%)",
                    st.usage.used_pct(),
                    cfg.retention.high_watermark_pct,
                    cfg.retention.low_watermark_pct
                );
                if let Some(d) = v.get("daemon").filter(|d| !d.is_null()) {
                    println!("daemon: pressure {}, alarm: {}", d["pressure"], d["alarm"]);
                }
                if !cfg.retention.local_only {
                    println!("retention.local_only = false: nothing is deleted until the central archive confirms it");
                }
                println!("{}", serde_json::to_string_pretty(&st.counts)?);
            }
            Ok(())
        }
        RetentionCommand::Tombstones {
            limit,
            json,
            config,
        } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let cat = open_rw(&cfg)?;
            let t = cat.tombstones(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                for t in t {
                    println!(
                        "{}  deleted {}  {:<12}  by {}  sha256 {}",
                        t.recording_id,
                        t.deleted,
                        t.reason,
                        t.actor,
                        t.file_sha256.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
    }
}
