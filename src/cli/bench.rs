//! `branchrec bench-capture`: throughput of the passive recording pipeline.
//!
//! Generates `--calls` concurrent G.711 calls (SIP INVITE/200/ACK, 20 ms RTP both ways,
//! BYE) for `--seconds` of call time into a pcap, then
//! 1. *offline*: times the whole pipeline (decode → track → timeline → encrypt → file)
//!    over that file: packets/s and calls/core (50 packets/s/call each way);
//! 2. *live* (with `--interface`, root): replays the file with `tcpreplay --topspeed`
//!    (or `--pps`) onto a veth the user created, while `branchrec run` captures the
//!    peer end, and reads the kernel drop counters; then the same replay under
//!    `tcpdump -w` for comparison.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::capture::frame::{self, Link, L4};
use crate::capture::pcapfile::PcapWriter;
use crate::config::Config;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent calls in the generated traffic.
    #[arg(long, default_value_t = 200)]
    pub calls: u32,
    /// Seconds of call time.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Where to put the pcap and the recordings (a temporary directory by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure live capture (root; needs `ip`, `tcpreplay`, `tcpdump`): replay onto
    /// a veth pair in a scratch network namespace at each `--pps` rate, once captured by
    /// `branchrec run` and once by `tcpdump -w`, and compare kernel drops.
    #[arg(long)]
    pub live: bool,
    /// Replay rates for `--live` (packets/s; 0 = tcpreplay --topspeed).
    #[arg(long, value_delimiter = ',', default_values_t = vec![20_000u32, 50_000, 100_000, 0])]
    pub pps: Vec<u32>,
}

/// Write a pcap with `calls` concurrent G.711 calls of `seconds` each; returns packets.
pub fn generate(path: &std::path::Path, calls: u32, seconds: u32) -> anyhow::Result<u64> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = PcapWriter::new(f, 1)?;
    let t0 = Duration::from_secs(1_700_000_000);
    let mut n = 0u64;
    let pbx = |i: u32| format!("10.{}.{}.1", 1 + i / 250, i % 250);
    let phone = |i: u32| format!("10.{}.{}.2", 101 + i / 250, i % 250);
    let sa = |ip: String, port: u16| -> std::net::SocketAddr {
        format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    };
    let link = Link::default();
    let mut put =
        |w: &mut PcapWriter<_>, ts: Duration, frames: Vec<Vec<u8>>| -> std::io::Result<()> {
            for fr in frames {
                w.write(ts, &fr)?;
                n += 1;
            }
            Ok(())
        };
    for i in 0..calls {
        let (a, b) = (pbx(i), phone(i));
        let sdp = |ip: &str| {
            format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n")
        };
        let inv = bench_sip("INVITE sip:2000@pbx SIP/2.0", i, None, "1 INVITE", &sdp(&a));
        let ok = bench_sip("SIP/2.0 200 OK", i, Some("callee"), "1 INVITE", &sdp(&b));
        let ts = t0 + Duration::from_micros(u64::from(i) * 100);
        put(
            &mut w,
            ts,
            frame::frames(
                &link,
                sa(a.clone(), 5060),
                sa(b.clone(), 5060),
                L4::Udp,
                inv.as_bytes(),
                1,
                1480,
            ),
        )?;
        put(
            &mut w,
            ts,
            frame::frames(
                &link,
                sa(b.clone(), 5060),
                sa(a.clone(), 5060),
                L4::Udp,
                ok.as_bytes(),
                1,
                1480,
            ),
        )?;
    }
    let payload = [0x55u8; 160];
    let t_media = t0 + Duration::from_secs(1);
    for k in 0..(seconds * 50) {
        let ts = t_media + Duration::from_millis(u64::from(k) * 20);
        for i in 0..calls {
            let (a, b) = (pbx(i), phone(i));
            let p = frame::rtp(0, k as u16, k * 160, i, k == 0, &payload);
            put(
                &mut w,
                ts,
                frame::frames(
                    &link,
                    sa(a.clone(), 20000),
                    sa(b.clone(), 20000),
                    L4::Udp,
                    &p,
                    0,
                    1480,
                ),
            )?;
            let p = frame::rtp(0, k as u16, k * 160, i + 1_000_000, k == 0, &payload);
            put(
                &mut w,
                ts,
                frame::frames(&link, sa(b, 20000), sa(a, 20000), L4::Udp, &p, 0, 1480),
            )?;
        }
    }
    let tend = t_media + Duration::from_secs(u64::from(seconds));
    for i in 0..calls {
        let bye = bench_sip("BYE sip:2000@pbx SIP/2.0", i, Some("callee"), "2 BYE", "");
        put(
            &mut w,
            tend,
            frame::frames(
                &link,
                sa(pbx(i), 5060),
                sa(phone(i), 5060),
                L4::Udp,
                bye.as_bytes(),
                1,
                1480,
            ),
        )?;
    }
    use std::io::Write;
    w.into_inner().flush()?;
    Ok(n)
}

fn bench_sip(start: &str, i: u32, to_tag: Option<&str>, cseq: &str, body: &str) -> String {
    let tt = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{start}\r\nVia: SIP/2.0/UDP pbx;branch=z9hG4bK{i}\r\nFrom: <sip:{}@pbx>;tag=caller\r\nTo: <sip:2000@pbx>{tt}\r\nCall-ID: bench-{i}\r\nCSeq: {cseq}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        1000 + i,
        body.len()
    )
}

/// Run the benchmark and print the figures.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join("bench.pcap");
    let t = Instant::now();
    let packets = generate(&pcap, args.calls, args.seconds)?;
    eprintln!(
        "generated {} packets ({} calls × {} s) in {:.1} s",
        packets,
        args.calls,
        args.seconds,
        t.elapsed().as_secs_f64()
    );
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.join("data");
    cfg.capture.max_calls = (args.calls as usize).max(1) * 2;
    let storage = crate::app::open_storage(&cfg)?;
    if let Some(e) = &storage.keys_error {
        anyhow::bail!("cannot record: the recording keys are unavailable: {e}");
    }
    let (vault, catalog) = (storage.vault.clone(), storage.catalog.clone());
    let cpu0 = cpu_time();
    let t = Instant::now();
    let rep = crate::app::capture::import_files(&cfg, vault, catalog, std::slice::from_ref(&pcap))
        .context("import")?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64().max(1e-9);
    let pps_cpu = packets as f64 / cpu;
    let call_pps = 100.0; // 50 packets/s each way
    println!(
        "bench-capture: {} calls × {} s, {} packets",
        args.calls, args.seconds, packets
    );
    println!(
        "  recorded calls:        {}",
        rep.calls.iter().filter(|c| c.state == "complete").count()
    );
    println!(
        "  wall time:             {wall:.2} s ({:.0} packets/s)",
        packets as f64 / wall
    );
    println!("  CPU time (process):    {cpu:.2} s ({pps_cpu:.0} packets/s per core)");
    println!(
        "  concurrent calls/core: {:.0} (at 100 RTP packets/s per call)",
        pps_cpu / call_pps
    );
    println!("  capture file:          {}", pcap.display());
    if args.live {
        live(&dir, &pcap, packets, &args.pps)?;
    }
    Ok(())
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(args.first().copied().unwrap_or("true"))
        .args(args.get(1..).unwrap_or_default())
        .output()
        .with_context(|| format!("running {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn proc_cpu(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis((ut + st) * 10)
}

fn replay(ns: &str, iface: &str, pcap: &std::path::Path, pps: u32) -> anyhow::Result<String> {
    let rate = if pps == 0 {
        "--topspeed".to_string()
    } else {
        format!("--pps={pps}")
    };
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "tcpreplay",
        "-i",
        iface,
        &rate,
        &pcap.to_string_lossy(),
    ])?;
    Ok(out
        .lines()
        .find(|l| l.trim_start().starts_with("Rated:"))
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Live comparison: branchrec vs tcpdump -w on a veth pair.
fn live(
    dir: &std::path::Path,
    pcap: &std::path::Path,
    packets: u64,
    rates: &[u32],
) -> anyhow::Result<()> {
    let ns = Netns(format!("brbench{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0])?;
    sh(&[
        "ip", "-n", &ns.0, "link", "add", "bva", "mtu", "9000", "type", "veth", "peer", "name",
        "bvb", "mtu", "9000",
    ])?;
    for l in ["bva", "bvb", "lo"] {
        sh(&["ip", "-n", &ns.0, "link", "set", l, "up"])?;
    }
    let exe = std::env::current_exe()?;
    println!("live capture on a veth pair, {packets} packets per run:");
    println!(
        "  {:>9}  {:<10} {:>10} {:>9} {:>8}  tcpreplay",
        "rate", "capturer", "received", "dropped", "cpu s"
    );
    for &pps in rates {
        let label = if pps == 0 {
            "topspeed".to_string()
        } else {
            pps.to_string()
        };
        // branchrec
        let d = dir.join(format!("live-{label}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        let cfg = d.join("branchrec.toml");
        std::fs::write(
            &cfg,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:25070\"]\n[storage]\ndata_dir = \"{}\"\n[keys]\nprovider = \"software\"\n[capture]\ninterfaces = [\"bvb\"]\nstats_interval_s = 1\nmax_calls = 100000\n[log]\nlevel = \"warn\"\n",
                d.join("data").display()
            ),
        )?;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(&exe)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_secs(2));
        let cpu0 = proc_cpu(child.id());
        let rated = replay(&ns.0, "bva", pcap, pps)?;
        std::thread::sleep(Duration::from_secs(3));
        let cpu = proc_cpu(child.id()).saturating_sub(cpu0);
        let _ = sh(&["kill", "-TERM", &child.id().to_string()]);
        let _ = child.wait();
        let stats: serde_json::Value = std::fs::read(d.join("data/capture-stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let i = &stats["interfaces"][0];
        println!(
            "  {:>9}  {:<10} {:>10} {:>9} {:>8.2}  {}",
            label,
            "branchrec",
            i["received"].as_u64().unwrap_or(0),
            i["dropped"].as_u64().unwrap_or(0),
            cpu.as_secs_f64(),
            rated
        );
        // tcpdump -w
        let out = d.join("tcpdump.pcap");
        let td = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "tcpdump", "-n", "-i", "bvb", "-B", "32768", "-w",
            ])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("tcpdump (apt-get install tcpdump)")?;
        std::thread::sleep(Duration::from_secs(2));
        let cpu0 = proc_cpu(td.id());
        let rated = replay(&ns.0, "bva", pcap, pps)?;
        std::thread::sleep(Duration::from_secs(2));
        let cpu = proc_cpu(td.id()).saturating_sub(cpu0);
        let _ = sh(&["kill", "-INT", &td.id().to_string()]);
        let o = td.wait_with_output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        let num = |what: &str| -> u64 {
            err.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        println!(
            "  {:>9}  {:<10} {:>10} {:>9} {:>8.2}  {}",
            label,
            "tcpdump -w",
            num("received by filter"),
            num("dropped by kernel"),
            cpu.as_secs_f64(),
            rated
        );
        let _ = std::fs::remove_file(&out);
    }
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("branchrec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100u64; // USER_HZ on Linux
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis((ut + st) * 1000 / tick)
}
