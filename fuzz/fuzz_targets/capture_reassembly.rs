//! Fuzz the capture's TCP and IP-fragment reassembly (issue #12 finding 10) against its
//! memory caps: segments and fragments with fuzzed offsets, lengths, flags and times,
//! under small limits. No input may panic, the accounted memory never exceeds the caps,
//! and every message handed out is a complete SIP message (it frames).
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use branchrec::capture::decode::{Decoder, DecoderConfig};
use branchrec::capture::frame::{ethernet, ipv4, l4, Link, L4};
use branchrec::capture::tcp::{TcpConfig, TcpStreams, SEGMENT_OVERHEAD};
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;

const SIP: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
Call-ID: c\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    tcp(sel, rest);
    fragments(sel, rest);
});

fn tcp(sel: u8, ops: &[u8]) {
    let cfg = TcpConfig {
        max_streams: usize::from(sel % 4) + 1,
        max_ooo_bytes: 512 + usize::from(sel) * 8,
        max_total_bytes: 1024 + usize::from(sel) * 16,
        idle_timeout: Duration::from_secs(30),
    };
    let mut t = TcpStreams::new(cfg);
    let mut out = Vec::new();
    let mut now = Mono::ZERO;
    // Ops: [stream, flags, seq offset hi, seq offset lo, step, len, bytes…]; payloads
    // are the SIP template's bytes from an offset, or the input's.
    let mut rest = ops;
    while let [st, flags, hi, lo, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (raw, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(*step) * 100);
        let src = SocketAddr::from(([10, 0, 0, st % 6], 5060));
        let dst = SocketAddr::from(([10, 0, 0, 100], 5060));
        let off = u32::from(u16::from_be_bytes([*hi, *lo])) % 4096;
        let payload: Vec<u8> = if flags & 4 == 0 {
            let from = (off as usize) % SIP.len();
            SIP.iter()
                .cycle()
                .skip(from)
                .take(n.max(1))
                .copied()
                .collect()
        } else {
            raw.to_vec()
        };
        t.push(
            now,
            src,
            dst,
            1000u32.wrapping_add(off),
            flags & 1 == 1,
            flags & 2 == 2,
            &payload,
            &mut out,
        );
        assert!(t.len() <= cfg.max_streams, "{} streams", t.len());
        // One segment may be admitted past the total before the cap bites: the cap plus
        // that segment's cost.
        assert!(
            t.buffered_bytes() <= cfg.max_total_bytes + payload.len() + SEGMENT_OVERHEAD,
            "{} bytes buffered (cap {})",
            t.buffered_bytes(),
            cfg.max_total_bytes
        );
        for m in out.drain(..) {
            let mut f = branchrec::sip::StreamFramer::new();
            f.push(&m);
            assert!(
                matches!(f.next_frame(), Ok(Some(_))),
                "handed out an incomplete message: {:?}",
                String::from_utf8_lossy(&m)
            );
        }
    }
}

fn fragments(sel: u8, ops: &[u8]) {
    let cfg = DecoderConfig {
        max_fragmented: usize::from(sel % 8) + 1,
        fragment_timeout: Duration::from_secs(5),
        max_datagram_bytes: 2048 + usize::from(sel) * 8,
        max_total_bytes: 4096 + usize::from(sel) * 32,
    };
    let mut d = Decoder::new(cfg);
    let link = Link::default();
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    let dst: IpAddr = "10.0.0.2".parse().unwrap();
    let mut now = Mono::ZERO;
    // Ops: [id, offset/8, more, step, len, bytes…].
    let mut rest = ops;
    while let [id, off, more, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (raw, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(*step) * 20);
        let (proto, udp) = l4(
            SocketAddr::new(src, 5060),
            SocketAddr::new(dst, 5060),
            L4::Udp,
            raw,
        );
        let body: &[u8] = if *off == 0 { &udp } else { raw };
        let ip = ipv4(
            src,
            dst,
            proto,
            u16::from(id % 16),
            (usize::from(*off) * 8, more & 1 == 1),
            body,
        );
        let frame = ethernet(&link, &ip);
        let _ = d.decode(now, 1, &frame);
        assert!(
            d.pending_fragments() <= cfg.max_fragmented,
            "{} datagrams pending",
            d.pending_fragments()
        );
        assert!(
            d.fragment_bytes() <= cfg.max_total_bytes,
            "{} fragment bytes (cap {})",
            d.fragment_bytes(),
            cfg.max_total_bytes
        );
    }
}
