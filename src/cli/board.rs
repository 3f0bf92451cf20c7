//! `branchrec board …`: press the simulated hold button, check a pin map against this
//! system's GPIO chips; and the front-panel part of `branchrec status`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::Config;

/// `board` subcommands.
#[derive(Debug, Subcommand)]
pub enum BoardCommand {
    /// Press the SIMULATED hold button of the running daemon (development boards; a real
    /// box's button is pressed by hand).
    Press {
        /// How long to hold it, ms (the hold needs `[board] long_press_ms`, default 2000).
        #[arg(long, default_value_t = 2500)]
        ms: u64,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show the front panel of the running daemon: board, LEDs, faults, last press/hold.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a pin map: parse it and find every line on this system's GPIO chips.
    Check {
        /// Pin map (default: `[board] pins` of the configuration).
        #[arg(long)]
        pins: Option<PathBuf>,
        /// Configuration file.
        #[arg(long, env = "BRANCHREC_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Send one request to the daemon's control socket (`app::control`) and return its reply.
pub fn control_request(
    cfg: &Config,
    req: &serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let path = cfg.storage.control_socket();
    let mut s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "connecting to the daemon at {} (is it running?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    serde_json::from_str(&line).context("bad reply from the daemon")
}

/// The running daemon's front panel (`{"cmd":"board"}`).
pub fn fetch_status(cfg: &Config) -> anyhow::Result<serde_json::Value> {
    let v = control_request(
        cfg,
        &serde_json::json!({ "cmd": "board" }),
        Duration::from_secs(3),
    )?;
    if v["ok"].as_bool() != Some(true) {
        bail!("{}", v["error"].as_str().unwrap_or("refused"));
    }
    Ok(v["board"].clone())
}

/// Human-readable front panel, a few lines.
pub fn render(b: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "board          {} ({}){}\n",
        s(&b["board"]),
        s(&b["kind"]),
        b["pins_file"]
            .as_str()
            .map(|p| format!(", pins {p}"))
            .unwrap_or_default()
    );
    let leds: Vec<String> = ["rec", "sync", "fault", "hold"]
        .iter()
        .map(|l| format!("{} {}", l.to_uppercase(), s(&b["leds"][l]["pattern"])))
        .collect();
    out += &format!("LEDs           {}\n", leds.join(", "));
    let faults: Vec<String> = b["faults"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    out += &format!(
        "faults         {}\n",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    let p = &b["last_press"];
    out += &if p.is_null() {
        "button         not pressed since start\n".to_string()
    } else {
        format!(
            "button         {}last press {} held {} ms: {}\n",
            if b["button_pressed"].as_bool() == Some(true) {
                "PRESSED, "
            } else {
                ""
            },
            s(&p["at"]),
            p["held_ms"],
            s(&p["action"])
        )
    };
    let h = &b["last_hold"];
    if !h.is_null() {
        out += &format!(
            "button hold    {} at {}{}{}\n",
            s(&h["state"]),
            s(&h["at"]),
            h["hold_id"]
                .as_i64()
                .map(|i| format!(", hold {i} ({} recordings)", h["recordings"]))
                .unwrap_or_default(),
            h["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = b["io_error"].as_str() {
        out += &format!("GPIO ERROR     {e}\n");
    }
    out
}

/// Run a `board` subcommand.
pub fn main(cmd: BoardCommand) -> anyhow::Result<()> {
    match cmd {
        BoardCommand::Press { ms, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let v = control_request(
                &cfg,
                &serde_json::json!({ "cmd": "board.press", "ms": ms }),
                Duration::from_secs(5),
            )?;
            if v["ok"].as_bool() != Some(true) {
                bail!("{}", v["error"].as_str().unwrap_or("refused"));
            }
            println!("simulated hold button pressed for {ms} ms");
            Ok(())
        }
        BoardCommand::Show { json, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let b = fetch_status(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                print!("{}", render(&b));
            }
            Ok(())
        }
        BoardCommand::Check { pins, config } => {
            let cfg = Config::load_or_default(config.as_deref())?;
            let path = pins.unwrap_or(cfg.board.pins);
            let map = crate::board::load_pin_map(&path)?;
            println!(
                "{}: board {}, {} pins: syntax OK",
                path.display(),
                map.board,
                map.pins.len()
            );
            let chips = crate::board::cdev::chips()?;
            if chips.is_empty() {
                bail!("no GPIO chips on this system (/dev/gpiochip*)");
            }
            for r in crate::board::pins::resolve(&map, &chips)? {
                println!(
                    "  {:<12} {} line {:>3} \"{}\" ({}){}",
                    r.role.as_str(),
                    r.chip.display(),
                    r.offset,
                    r.line_name,
                    r.chip_label,
                    if r.active_low { ", active low" } else { "" }
                );
            }
            Ok(())
        }
    }
}
