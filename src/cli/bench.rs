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

use crate::capture::build::{self, Link, L4};
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
            build::frames(
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
            build::frames(
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
            let p = build::rtp(0, k as u16, k * 160, i, k == 0, &payload);
            put(
                &mut w,
                ts,
                build::frames(
                    &link,
                    sa(a.clone(), 20000),
                    sa(b.clone(), 20000),
                    L4::Udp,
                    &p,
                    0,
                    1480,
                ),
            )?;
            let p = build::rtp(0, k as u16, k * 160, i + 1_000_000, k == 0, &payload);
            put(
                &mut w,
                ts,
                build::frames(&link, sa(b, 20000), sa(a, 20000), L4::Udp, &p, 0, 1480),
            )?;
        }
    }
    let tend = t_media + Duration::from_secs(u64::from(seconds));
    for i in 0..calls {
        let bye = bench_sip("BYE sip:2000@pbx SIP/2.0", i, Some("callee"), "2 BYE", "");
        put(
            &mut w,
            tend,
            build::frames(
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
    let (vault, catalog) = crate::app::open_storage(&cfg)?;
    let cpu0 = cpu_time();
    let t = Instant::now();
    let rep = crate::app::capture::import_files(&cfg, vault, catalog, &[pcap.clone()])
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
