//! `branchrec status` (this box) and `branchrec fleet` (every box, from the archive).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::app::uplink::LOCAL_STATUS_FILE;
use crate::config::Config;
use crate::uplink::status::{fleet_rows, render_fleet, FleetThresholds, StatusDoc};

/// `branchrec status`: catalogue counters now, plus what the daemon last reported (rate,
/// alarms, uptime) from `<data_dir>/uplink-status.json`.
pub fn status(config: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load_or_default(config.as_deref())?;
    let p = cfg.storage.catalog_path();
    // A fresh data directory (the recorder has never run with it) is a state, not an
    // error: nothing recorded, nothing pending.
    let cat = if p.exists() {
        Some(crate::service::catalog::access(&cfg)?.open_read_only()?)
    } else {
        None
    };
    let counts = match &cat {
        Some(c) => c.uplink_counts()?,
        None => Default::default(),
    };
    let local = std::fs::read(cfg.storage.data_dir.join(LOCAL_STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<StatusDoc>(&b).ok());
    let shared = crate::app::uplink::UplinkShared::new(
        &cfg.uplink,
        std::sync::Arc::new(crate::clock::SystemClock),
    );
    let heads = match &cat {
        Some(c) => crate::service::audit::published_heads(c, 8)?,
        None => Vec::new(),
    };
    let mut doc = crate::app::uplink::build_status(&cfg, &counts, &shared, 0, None, heads);
    let daemon_seen = local.as_ref().map(|d| d.generated_at.clone());
    let local_assurance = local.as_ref().and_then(|d| d.assurance.clone());
    if let Some(l) = local {
        doc.uptime_s = l.uptime_s;
        doc.rate_bps = l.rate_bps;
        doc.rate_limit_bps = l.rate_limit_bps;
        doc.congestion_share = l.congestion_share;
        doc.bytes_sent = l.bytes_sent;
        doc.alarms = l.alarms;
        doc.pending_delta_1h = l.pending_delta_1h;
    }
    // Commands from headquarters: the daemon's persisted counters.
    if cfg.central.command_public_key.is_some() {
        doc.commands = crate::app::commands::CommandState::load(&cfg.storage.data_dir)
            .ok()
            .map(|s| s.counters);
    }
    // The front panel lives in the daemon: ask it (null when it is not running).
    let board = crate::cli::board::fetch_status(&cfg).map_err(|e| format!("{e:#}"));
    let access = crate::cli::sip_access(&cfg);
    let binding = crate::cli::access::sip_binding(&cfg);
    // Verdict counters and assurance/clock alarms live in the daemon: ask it.
    match crate::cli::access::assurance(&cfg) {
        Some(live) => {
            doc.assurance = Some(live);
            doc.alarms.retain(|a| {
                !a.code.starts_with("assurance_") && a.code != crate::assurance::alarms::TIME_ALARM
            });
            doc.add_assurance_alarms(&doc.generated_at.clone());
        }
        // No daemon: what it last reported.
        None => doc.assurance = local_assurance,
    }
    if binding.is_some() {
        // The daemon's live counters (also when the uplink, which writes the local status
        // file, is off).
        doc.binding = binding.clone();
        let now = branchrec_core::time::UnixMs(chrono::Utc::now().timestamp_millis());
        doc.add_binding_alarms(now, &doc.generated_at.clone());
    }
    if json {
        let mut v = serde_json::to_value(&doc)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("board".into(), board.clone().unwrap_or_default());
            if let Err(e) = &board {
                o.insert("board_error".into(), e.clone().into());
            }
            o.insert("sip_access".into(), serde_json::to_value(&access)?);
            o.insert("sip_binding".into(), serde_json::to_value(&binding)?);
            o.insert("uplink_enabled".into(), cfg.uplink.enabled.into());
            o.insert("daemon_reported_at".into(), daemon_seen.into());
            let uploads = match &cat {
                Some(c) => c.upload_rows()?,
                None => vec![],
            };
            o.insert("uploads".into(), serde_json::to_value(uploads)?);
            o.insert("catalogue".into(), cat.is_some().into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    println!("box            {} (site {})", doc.box_id, doc.site);
    println!("version        {}", doc.version);
    println!(
        "uplink         {}",
        if cfg.uplink.enabled {
            format!("{} bucket {}", cfg.uplink.endpoint, cfg.uplink.bucket)
        } else {
            "disabled".into()
        }
    );
    if cat.is_none() {
        println!(
            "catalogue      none yet at {}: not recording yet (the recorder has not run \
             with this data_dir)",
            p.display()
        );
    }
    println!("daemon report  {}", opt(daemon_seen));
    println!("recorded       {}", doc.recorded);
    println!(
        "pending        {} ({} bytes, {} failed), oldest {}",
        doc.pending,
        doc.pending_bytes,
        doc.failed,
        opt(doc.oldest_pending_at.clone())
    );
    println!(
        "uploaded       {}, last {}",
        doc.uploaded,
        opt(doc.last_upload_at.clone())
    );
    println!(
        "rate           {} B/s (cap {}, congestion share {:.2})",
        doc.rate_bps,
        doc.rate_limit_bps
            .map_or("none".into(), |r| format!("{r} B/s")),
        doc.congestion_share
    );
    println!(
        "disk           {} MiB free of {}",
        opt(doc.disk_free_mb.map(|v| v.to_string())),
        opt(doc.disk_total_mb.map(|v| v.to_string()))
    );
    println!(
        "key            {} ({})",
        if doc.key_present {
            "present"
        } else {
            "MISSING"
        },
        doc.key_custody
    );
    match &board {
        Ok(b) => print!("{}", crate::cli::board::render(b)),
        Err(e) => println!("board          unknown: {e}"),
    }
    crate::cli::print_sip_access(&cfg, access.as_ref());
    crate::cli::access::print_binding(binding.as_ref());
    if let Some(a) = &doc.assurance {
        let parts: Vec<String> = a.verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
        println!("verdicts       {} (since start)", parts.join(", "));
        println!(
            "time           {} recordings flagged, {} clock steps",
            a.time_flagged, a.clock_steps
        );
    }
    if doc.alarms.is_empty() {
        println!("alarms         none");
    }
    for a in &doc.alarms {
        println!("ALARM {:<8} {} (since {})", a.code, a.message, a.since);
    }
    Ok(())
}

/// `branchrec fleet`: read every `<prefix>_status/*.json` from the bucket.
pub fn fleet(
    config: Option<PathBuf>,
    json: bool,
    stale_after_s: i64,
    backlog_age_s: u64,
) -> anyhow::Result<()> {
    let cfg = Config::load_or_default(config.as_deref())?;
    let u = cfg.uplink.clone();
    if u.bucket.is_empty() || u.endpoint.is_empty() {
        bail!("[uplink] endpoint and bucket must be set to read the fleet status");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let docs: Vec<StatusDoc> = rt.block_on(async {
        let shaper = Arc::new(crate::uplink::s3::Shaper::new(None));
        let client = crate::uplink::client(&u, shaper)?;
        let prefix = format!("{}_status/", u.prefix);
        let keys = client.list(&prefix).await?;
        let mut docs = Vec::new();
        for (k, _) in keys.into_iter().filter(|(k, _)| k.ends_with(".json")) {
            match client.get_object(&k).await? {
                Some(b) => match serde_json::from_slice::<StatusDoc>(&b) {
                    Ok(d) => docs.push(d),
                    Err(e) => eprintln!("skipping {k}: not a status document ({e})"),
                },
                None => continue,
            }
        }
        Ok::<_, anyhow::Error>(docs)
    })?;
    let rows = fleet_rows(
        docs,
        crate::time::UnixMs::from_datetime(&chrono::Utc::now()),
        FleetThresholds {
            stale_after_s,
            backlog_age_s,
        },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render_fleet(&rows));
    }
    Ok(())
}
