//! Fuzz the issue #12 admission code driven from the input: the media source gate
//! (`media::source::SourceGate`) and the per-source SIP limits (`sip::limits`). No input
//! may panic, and the decisions must match a model of the documented rules.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use branchrec::media::source::{SourceGate, SourcePolicy, SourceVerdict};
use branchrec::sip::limits::{LimitsConfig, SourceLimiter};
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;

fn ip(b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, b % 8))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    gate(sel, rest);
    limits(sel, rest);
});

/// The gate: ops of 4 bytes (op, address, port, time step).
fn gate(sel: u8, ops: &[u8]) {
    let window = Duration::from_millis(u64::from(sel) * 40);
    let policy = match sel % 3 {
        0 => SourcePolicy::Strict,
        1 => SourcePolicy::Latch { window },
        _ => SourcePolicy::Any,
    };
    let mut g = SourceGate::new(policy);
    let mut now = Mono::ZERO;
    let mut foreign = 0u64;
    let mut announced: Option<IpAddr> = None;
    for op in ops.chunks_exact(4) {
        now += Duration::from_millis(u64::from(op[3]) * 10);
        let from = SocketAddr::new(ip(op[1]), u16::from(op[2]));
        match op[0] % 4 {
            0 => {
                // `None` (an unusable SDP address) keeps the previous one.
                let a = (op[1] & 0x80 == 0).then_some(from);
                g.set_announced(now, a);
                if let Some(a) = a {
                    announced = Some(a.ip());
                }
            }
            _ => {
                let rtp = op[0] & 0x10 == 0;
                let v = g.check(now, from, rtp);
                if v == SourceVerdict::Foreign {
                    foreign += 1;
                }
                match policy {
                    SourcePolicy::Any => assert_eq!(v, SourceVerdict::Accept),
                    SourcePolicy::Strict => {
                        // Only the SDP address (any port), never a latch.
                        assert_eq!(v == SourceVerdict::Accept, announced == Some(from.ip()));
                        assert_eq!(g.latched(), None);
                    }
                    SourcePolicy::Latch { .. } => {
                        // Accepted: the SDP address or the latched one; RTCP never latches.
                        if v == SourceVerdict::Accept {
                            assert!(
                                announced == Some(from.ip()) || g.latched() == Some(from.ip()),
                                "accepted {from} with announced {announced:?}, latched {:?}",
                                g.latched()
                            );
                        }
                        if !rtp && announced != Some(from.ip()) && g.latched() != Some(from.ip()) {
                            assert_eq!(v, SourceVerdict::Foreign);
                        }
                    }
                }
            }
        }
        assert_eq!(g.announced(), announced);
    }
    assert_eq!(g.foreign(), foreign);
}

/// The limiter: ops of 3 bytes (op, source, time step).
fn limits(sel: u8, ops: &[u8]) {
    let cfg = LimitsConfig {
        rate_per_s: u32::from(sel % 16) + 1,
        burst: u32::from(sel / 16) + 1,
        max_pending_sessions: usize::from(sel % 5) + 1,
        max_tcp_connections: usize::from(sel % 7) + 1,
        max_tcp_per_source: usize::from(sel % 3) + 1,
        // Every source of the input stays tracked (8 addresses), so the rate bound holds.
        max_sources: 64,
    };
    let mut l = SourceLimiter::new(cfg);
    let mut now = Mono::ZERO;
    let mut allowed: HashMap<IpAddr, u64> = HashMap::new();
    let mut tcp: HashMap<IpAddr, usize> = HashMap::new();
    for op in ops.chunks_exact(3) {
        now += Duration::from_millis(u64::from(op[2]) * 10);
        let src = ip(op[1]);
        match op[0] % 6 {
            0 | 1 => {
                if l.allow_message(now, src) {
                    *allowed.entry(src).or_default() += 1;
                }
            }
            2 => {
                let before = l.pending_sessions(src);
                let ok = l.session_offered(src);
                assert_eq!(ok, before < cfg.max_pending_sessions);
            }
            3 => l.session_confirmed(src),
            4 => {
                let open = l.tcp_open();
                let mine = tcp.get(&src).copied().unwrap_or(0);
                let ok = l.tcp_opened(src).is_ok();
                assert_eq!(
                    ok,
                    open < cfg.max_tcp_connections && mine < cfg.max_tcp_per_source,
                    "open {open}, from this source {mine}"
                );
                if ok {
                    *tcp.entry(src).or_default() += 1;
                }
            }
            _ => {
                if let Some(n) = tcp.get_mut(&src).filter(|n| **n > 0) {
                    *n -= 1;
                    l.tcp_closed(src);
                } else {
                    // A close without an open must not underflow anything.
                    l.tcp_closed(src);
                }
            }
        }
        assert!(l.pending_sessions(src) <= cfg.max_pending_sessions);
        assert_eq!(l.tcp_open(), tcp.values().sum::<usize>());
    }
    // Never more than the bucket plus what the rate refilled over the whole input.
    let secs = now.since_origin().as_secs() + 1;
    for (src, n) in allowed {
        assert!(
            n <= u64::from(cfg.burst) + u64::from(cfg.rate_per_s) * secs + 1,
            "{src}: {n} messages allowed in {secs} s (rate {}, burst {})",
            cfg.rate_per_s,
            cfg.burst
        );
    }
}
