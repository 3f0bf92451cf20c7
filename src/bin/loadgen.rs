//! `branchrec-loadgen`: a standalone SIPREC client for tests and benchmarks.
//!
//! * `rtp`: sends raw 16-bit 8 kHz audio files as G.711 RTP (one or several streams on one
//!   absolute 20 ms schedule), optionally followed by RFC 4733 DTMF; or G.722 / G.729
//!   payload files, or Opus encoded from a 48 kHz file with libopus (see loadgen/codecs.rs). Used by the SIPp
//!   scenarios in tests/sipp through `<exec>`.
//! * `call`: one SIPREC call with a tone per party to a running recorder (default
//!   127.0.0.1:5060, the built-in configuration): a newcomer's first recording.
//! * `bench`: N concurrent SIPREC calls with two streams each against a running recorder,
//!   measuring its CPU and memory from /proc, and verifying zero loss afterwards.
//!
//! Deliberately independent of the branchrec library (own SIP formatting, own G.711), so it
//! tests the recorder from the outside. See docs/benchmark.md.
#![forbid(unsafe_code)]

#[path = "loadgen/bench.rs"]
mod bench;
#[path = "loadgen/call.rs"]
mod call;
#[path = "loadgen/codecs.rs"]
mod codecs;
#[path = "loadgen/g711.rs"]
#[allow(dead_code)] // decode side is used by the unit tests and shared with tests/common
mod g711;
#[path = "loadgen/rtp.rs"]
mod rtp;
#[path = "loadgen/sip.rs"]
mod sip;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use g711::Codec;
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "branchrec-loadgen",
    about = "SIPREC load generator and RTP sender for branchrec tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send raw 16-bit mono 8 kHz files as G.711 RTP in real time.
    Rtp(RtpArgs),
    /// Run N concurrent SIPREC calls against a recorder and measure it.
    Bench(BenchArgs),
    /// Make one SIPREC call with audio (a tone per party) to a running recorder.
    Call(CallArgs),
}

#[derive(clap::Args)]
struct CallArgs {
    /// Recorder SIP address (UDP); the built-in configuration listens on 127.0.0.1:5060.
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: String,
    /// Seconds of audio on each stream.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Local address for SIP and RTP.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// pcmu or pcma.
    #[arg(long, default_value = "pcmu")]
    codec: String,
}

#[derive(clap::Args)]
struct RtpArgs {
    /// Destination HOST:PORT of the single stream form.
    #[arg(long)]
    dest: Option<String>,
    /// Raw signed 16-bit little-endian mono 8 kHz file.
    #[arg(long)]
    audio: Option<String>,
    /// pcmu or pcma.
    #[arg(long, default_value = "pcmu")]
    codec: String,
    /// SSRC of the single stream form.
    #[arg(long, default_value_t = 0x1111_1111)]
    ssrc: u32,
    /// First sequence number (all streams).
    #[arg(long, default_value_t = 1000)]
    seq: u16,
    /// First RTP timestamp (all streams).
    #[arg(long, default_value_t = 160_000)]
    ts: u32,
    /// Wait this long before the first packet.
    #[arg(long, default_value_t = 0)]
    start_after_ms: u64,
    /// DTMF digits sent as RFC 4733 events (PT 101) after the audio of the first stream.
    #[arg(long, default_value = "")]
    dtmf: String,
    /// Additional stream: DEST,AUDIO,CODEC,SSRC[,SEQ,TS] (repeatable). All streams start
    /// together on one schedule. CODEC pcmu|pcma (AUDIO raw s16le 8 kHz), g722 (AUDIO raw
    /// G.722 bytes), g729 (AUDIO 10-byte frames), opus[/PT] (AUDIO raw s16le 48 kHz).
    #[arg(long = "stream")]
    streams: Vec<String>,
    /// Local address to send from.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Packet indices (0-based, comma-separated, may be empty) not sent on the first
    /// g722/g729/opus stream: simulated loss (sequence numbers and timestamps advance).
    #[arg(long, default_value = "")]
    drop: String,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Recorder SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: String,
    /// Number of concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: u32,
    /// Media duration of each call, seconds.
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// Start calls evenly over this many seconds.
    #[arg(long, default_value_t = 10.0)]
    ramp_s: f64,
    /// Recorder PID, for CPU/RSS sampling from /proc.
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Local address for SIP and RTP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    rtp_bind: IpAddr,
    /// pcmu or pcma.
    #[arg(long, default_value = "pcmu")]
    codec: String,
    /// Number of RTP socket pairs used as sources.
    #[arg(long, default_value_t = 8)]
    socket_pairs: usize,
    /// Hard deadline in seconds (default: ramp + duration + 40).
    #[arg(long)]
    deadline_s: Option<f64>,
    /// Recorder config file: when given, per-call counters are verified with
    /// `branchrec recordings list/show --json` after the run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// branchrec binary for verification (default: next to this binary).
    #[arg(long)]
    branchrec: Option<PathBuf>,
    /// Verify at most this many calls (0 = all).
    #[arg(long, default_value_t = 0)]
    verify_limit: usize,
    /// Wait after the last BYE before the final sample and verification, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Longest wait for the recorder to close all recordings before verifying, seconds.
    #[arg(long, default_value_t = 60)]
    verify_wait_s: u64,
    /// Print the report as a JSON object.
    #[arg(long)]
    json: bool,
}

fn codec(s: &str) -> Result<Codec> {
    Codec::parse(s).ok_or_else(|| anyhow!("unknown codec {s:?} (pcmu|pcma)"))
}

fn run_rtp(a: RtpArgs) -> Result<()> {
    let mut specs = Vec::new();
    match (&a.dest, &a.audio) {
        (Some(d), Some(f)) => specs.push(rtp::StreamSpec {
            dest: rtp::resolve(d)?,
            samples: rtp::read_raw(f)?,
            codec: codec(&a.codec)?,
            ssrc: a.ssrc,
            seq: a.seq,
            ts: a.ts,
            dtmf: String::new(),
        }),
        (None, None) => {}
        _ => bail!("--dest and --audio go together"),
    }
    let mut coded = Vec::new();
    let drop: Vec<u32> = a
        .drop
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .with_context(|| format!("bad --drop index {v:?}"))
        })
        .collect::<Result<_>>()?;
    for s in &a.streams {
        let f: Vec<&str> = s.split(',').collect();
        if f.len() != 4 && f.len() != 6 {
            bail!("--stream wants DEST,AUDIO,CODEC,SSRC[,SEQ,TS], got {s:?}");
        }
        let num = |i: usize, what: &str| -> Result<u64> {
            let v = f[i];
            let parsed = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            parsed.with_context(|| format!("bad {what} {v:?} in --stream"))
        };
        if f.len() >= 3 {
            if let Some(c) = codecs::Coded::parse(f[2]) {
                let (seq, ts) = if f.len() == 6 {
                    (num(4, "SEQ")? as u16, num(5, "TS")? as u32)
                } else {
                    (a.seq, a.ts)
                };
                let file = std::fs::read(f[1]).with_context(|| format!("reading {}", f[1]))?;
                let drop_here: &[u32] = if coded.is_empty() { &drop } else { &[] };
                let pkts = codecs::build(c, &file, num(3, "SSRC")? as u32, seq, ts, drop_here)?;
                coded.push((rtp::resolve(f[0])?, pkts));
                continue;
            }
        }
        specs.push(rtp::StreamSpec {
            dest: rtp::resolve(f[0])?,
            samples: rtp::read_raw(f[1])?,
            codec: codec(f[2])?,
            ssrc: num(3, "SSRC")? as u32,
            seq: if f.len() == 6 {
                num(4, "SEQ")? as u16
            } else {
                a.seq
            },
            ts: if f.len() == 6 {
                num(5, "TS")? as u32
            } else {
                a.ts
            },
            dtmf: String::new(),
        });
    }
    if specs.is_empty() && coded.is_empty() {
        bail!("no stream: give --dest/--audio or --stream");
    }
    if let Some(s) = specs.first_mut() {
        s.dtmf = a.dtmf.clone();
    }
    let sock = UdpSocket::bind((a.bind, 0)).context("binding RTP socket")?;
    let mut streams = specs
        .iter()
        .map(|s| Ok((s.dest, rtp::build_stream(s)?)))
        .collect::<Result<Vec<_>>>()?;
    streams.extend(coded);
    let start = Instant::now() + Duration::from_millis(a.start_after_ms);
    let sent = rtp::send_streams(&sock, &streams, start)?;
    eprintln!("branchrec-loadgen rtp: sent {sent:?} packets");
    Ok(())
}

fn run_call(a: CallArgs) -> Result<()> {
    let opts = call::CallOpts {
        target: rtp::resolve(&a.target)?,
        bind: a.bind,
        seconds: a.seconds,
        codec: codec(&a.codec)?,
    };
    eprintln!(
        "branchrec-loadgen call: calling {} for {} s (caller 440 Hz, callee 660 Hz)",
        opts.target, opts.seconds
    );
    let r = call::run(&opts)?;
    println!(
        "recorded call {}: {:.1} s, 2 streams, {:?} RTP packets; BYE answered 200",
        r.call_id, r.seconds, r.packets
    );
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    let target = rtp::resolve(&a.target)?;
    if !(a.duration_s > 0.0 && a.duration_s < 86_400.0 && a.ramp_s >= 0.0 && a.ramp_s < 86_400.0) {
        bail!("--duration-s must be in (0, 86400), --ramp-s in [0, 86400)");
    }
    let branchrec = match a.branchrec {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("branchrec"))
            .ok_or_else(|| anyhow!("no directory for current exe"))?,
    };
    let opts = bench::BenchOpts {
        target,
        calls: a.calls,
        duration: Duration::from_secs_f64(a.duration_s),
        ramp: Duration::from_secs_f64(a.ramp_s),
        daemon_pid: a.daemon_pid,
        bind: a.rtp_bind,
        codec: codec(&a.codec)?,
        socket_pairs: a.socket_pairs,
        deadline: Duration::from_secs_f64(a.deadline_s.unwrap_or(a.ramp_s + a.duration_s + 40.0)),
        config: a.config,
        branchrec,
        verify_limit: a.verify_limit,
        settle: Duration::from_millis(a.settle_ms),
        verify_wait: Duration::from_secs(a.verify_wait_s),
    };
    let report = bench::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::summary(&report));
    }
    // A verified run fails (exit 2) unless every recording checked is complete, counted
    // zero loss and zero gaps, and its exported audio is exactly what was sent.
    if report
        .get("verify")
        .is_some_and(|v| v.get("all_ok") != Some(&serde_json::Value::Bool(true)))
    {
        eprintln!("bench: verification failed (see verify.problems)");
        std::process::exit(2);
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Rtp(a) => run_rtp(a),
        Cmd::Bench(a) => run_bench(a),
        Cmd::Call(a) => run_call(a),
    }
}
