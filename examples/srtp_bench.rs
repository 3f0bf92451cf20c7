//! Per-packet SRTP receive cost for each suite: `cargo run --release --example srtp_bench`
//! (optionally `-- PACKETS`, default 200000). Prints ns/packet for unprotect of a 20 ms
//! G.711 packet (12-byte header + 160-byte payload) and of an 80-byte SRTCP report.
//!
//! Each packet is protected once up front (by the send side of the same module) and the
//! receiver decrypts a copy in place, as the call path does; the copy (a 200-byte
//! memcpy) is included in the figure.

use std::time::Instant;

use branchrec::media::srtp::{SrtpPolicy, SrtpReceiver, SrtpSender, SrtpSuite};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    println!("suite                       rtp ns/pkt   rtcp ns/pkt   ({n} packets)");
    for suite in SrtpSuite::PREFERENCE {
        let policy = SrtpPolicy::simple(
            suite,
            vec![0x42; suite.key_len()],
            vec![0x17; suite.salt_len()],
        );
        let mut tx = SrtpSender::new(&policy).expect("policy");
        let mut rx = SrtpReceiver::new(&policy).expect("policy");
        // Pre-protect a window of packets with consecutive sequence numbers (ROC follows).
        let mut wire = Vec::with_capacity(n);
        for i in 0..n {
            let seq = (i & 0xffff) as u16;
            let roc = (i >> 16) as u32;
            let mut p = vec![0x80u8, 8];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&((i as u32).wrapping_mul(160)).to_be_bytes());
            p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
            p.extend_from_slice(&[0xd5; 160]);
            let len = p.len();
            p.resize(len + 16, 0);
            let out = tx.protect_rtp(&mut p, len, roc, 0).expect("protect");
            p.truncate(out);
            wire.push(p);
        }
        let mut buf = [0u8; 256];
        let t = Instant::now();
        let mut ok = 0usize;
        for p in &wire {
            let b = &mut buf[..p.len()];
            b.copy_from_slice(p);
            if rx.unprotect_rtp(b).is_ok() {
                ok += 1;
            }
        }
        let rtp_ns = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(ok, n, "every packet must verify");
        // SRTCP: an 80-byte receiver report, fresh index each time.
        let m = n / 4;
        let mut rtcp = Vec::with_capacity(m);
        for i in 0..m {
            let mut p = vec![0x81u8, 201, 0, 19];
            p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
            p.resize(80, 0x33);
            let len = p.len();
            p.resize(len + 4 + 16, 0);
            let out = tx
                .protect_rtcp(&mut p, len, i as u32 + 1, true, 0)
                .expect("protect");
            p.truncate(out);
            rtcp.push(p);
        }
        let t = Instant::now();
        for p in &rtcp {
            let b = &mut buf[..p.len()];
            b.copy_from_slice(p);
            rx.unprotect_rtcp(b).expect("rtcp verifies");
        }
        let rtcp_ns = t.elapsed().as_nanos() as f64 / m as f64;
        println!("{:<27} {rtp_ns:>10.0}   {rtcp_ns:>11.0}", suite.sdp_name());
    }
}
