//! Per-packet cost of the media source check (issue #12 finding 1):
//! `cargo run -p branchrec-core --release --example source_bench` (optionally
//! `-- PACKETS`, default 10000000). Prints ns/packet for
//!
//! - `check bound`: a packet from the channel's bound source (every real packet);
//! - `check foreign`: a packet from another host (dropped and counted);
//! - `check v4-mapped`: a bound-source packet arriving as `::ffff:a.b.c.d` (dual-stack
//!   sockets);
//! - `handle_rtp strict` / `handle_rtp any`: the whole `Recording::handle_rtp` of a
//!   20 ms PCMU packet with the strict binding and with the check bypassed
//!   (`SourcePolicy::Any`), so the difference is the check's share of the packet path.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use branchrec_core::keys::DataKey;
use branchrec_core::media::{SourceGate, SourcePolicy, StreamConfig};
use branchrec_core::recording::{ChannelMedia, Recording, RecordingConfig, RecordingKeys};
use branchrec_core::time::{Mono, UnixMs};

fn ns_per(n: usize, f: impl FnMut(usize)) -> f64 {
    let mut f = f;
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn recording(policy: SourcePolicy, src: SocketAddr) -> Recording {
    let cfg = RecordingConfig {
        recording_id: "bench".into(),
        created: UnixMs(1_700_000_000_000),
        sample_rate: 8000,
        channels: 1,
        opus: None,
        playout_delay: Duration::from_millis(300),
        flush_every: Duration::from_millis(1000),
        pause_when_all_held: false,
        unsupported_if_no_audio: false,
        dtmf_digits: false,
        source_policy: policy,
        foreign_alarm_packets: 50,
    };
    let keys = RecordingKeys {
        data_key: DataKey::from_bytes([9; 32]),
        wrapped_key: vec![0; 40],
        kek_id: "bench".into(),
        compliance: None,
        nonce_prefix: [4; 7],
    };
    let (mut r, _) = Recording::new(cfg, keys).expect("recording");
    r.set_media(
        None,
        vec![Some(ChannelMedia {
            config: StreamConfig::default(),
            codecs: vec!["PCMU".into()],
            hold: false,
            srtp: None,
            detail: serde_json::Value::Null,
            remote: Some(src),
        })],
    );
    r
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let evil: SocketAddr = "10.0.0.66:4000".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
    let now = Mono::ZERO;

    let mut g = SourceGate::new(SourcePolicy::Strict);
    g.set_announced(now, Some(src));
    g.check(now, src, true);
    let bound = ns_per(n, |_| {
        black_box(g.check(now, black_box(src), true));
    });
    let foreign = ns_per(n, |_| {
        black_box(g.check(now, black_box(evil), true));
    });
    let v4m = ns_per(n, |_| {
        black_box(g.check(now, black_box(mapped), true));
    });

    // The whole packet path: 20 ms PCMU packets, the timeline polled as the call task does
    // (every 5 packets = 100 ms).
    let m = (n / 20).max(1000);
    let path = |policy| {
        let mut r = recording(policy, src);
        let mut pkt = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        pkt.extend_from_slice(&[0xd5; 160]);
        ns_per(m, |i| {
            let seq = (i & 0xffff) as u16;
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&((i as u32).wrapping_mul(160)).to_be_bytes());
            let at = Mono::ZERO + Duration::from_millis(20 * i as u64);
            black_box(r.handle_rtp(at, 0, src, &pkt));
            if i % 5 == 0 {
                r.handle_timeout(at);
                while r.poll_output().is_some() {}
            }
        })
    };
    let strict = path(SourcePolicy::Strict);
    let any = path(SourcePolicy::Any);
    println!("source check, ns/packet ({n} checks, {m} packets through handle_rtp)");
    println!("check bound          {bound:8.2}");
    println!("check foreign        {foreign:8.2}");
    println!("check v4-mapped      {v4m:8.2}");
    println!("handle_rtp strict    {strict:8.2}");
    println!("handle_rtp any       {any:8.2}");
}
