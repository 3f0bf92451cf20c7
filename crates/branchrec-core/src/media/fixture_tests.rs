//! Tests against real captures from /work/shared/testdata (third-party equipment).

use std::time::Duration;

use super::dtmf::DtmfEvent;
use super::g711::{alaw_to_linear, ulaw_to_linear};
use super::rtp;
use super::stream::{Codec, StreamConfig};
use super::timeline::tests::mono;
use super::timeline::{CallTimeline, TimelineConfig};
use crate::time::Mono;

const PCAP_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/pcap/"
);

/// (capture time, UDP payload) of every IPv4/UDP packet in a classic little-endian
/// Ethernet pcap.
fn udp_payloads(name: &str) -> Vec<(Duration, Vec<u8>)> {
    let d = std::fs::read(format!("{PCAP_DIR}{name}")).expect("test capture present");
    assert_eq!(&d[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian µs pcap");
    assert_eq!(
        u32::from_le_bytes(d[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= d.len() {
        let le = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
        let (sec, usec, cap) = (le(i), le(i + 4), le(i + 8) as usize);
        let p = &d[i + 16..i + 16 + cap];
        i += 16 + cap;
        if p.len() < 14 + 20 || p[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &p[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let t = Duration::from_secs(u64::from(sec)) + Duration::from_micros(u64::from(usec));
        out.push((t, ip[ihl + 8..].to_vec()));
    }
    out
}

fn timeline() -> CallTimeline {
    CallTimeline::new(TimelineConfig {
        channels: 1,
        sample_rate: 8000,
        playout_delay: Duration::from_millis(300),
    })
}

/// Feed every RTP packet of the capture (arrival = capture time offset), polling after
/// each, and check that every audio packet's decoded samples are bit-exact at
/// `first_frame + (ts - first_ts)`.
fn replay(
    t: &mut CallTimeline,
    pkts: &[(Duration, Vec<u8>)],
    decode: fn(u8) -> i16,
    audio_pt: u8,
) -> Vec<i16> {
    let t0 = pkts[0].0;
    let mut out = Vec::new();
    for (at, p) in pkts {
        t.push_rtp(0, mono(*at - t0), p);
        if let Some(b) = t.poll_audio(mono(*at - t0)) {
            assert_eq!(b.start_frame as usize, out.len());
            out.extend_from_slice(&b.samples);
        }
    }
    let end = pkts.last().unwrap().0 - t0 + Duration::from_millis(100);
    if let Some(b) = t.finish(mono(end)) {
        out.extend_from_slice(&b.samples);
    }
    assert_eq!(
        out.len() as u64,
        end.as_nanos() as u64 * 8000 / 1_000_000_000
    );
    let first = rtp::parse(&pkts[0].1).unwrap().timestamp;
    let mut checked = 0;
    for (_, p) in pkts {
        let r = rtp::parse(p).unwrap();
        if r.payload_type != audio_pt {
            continue;
        }
        let pos = r.timestamp.wrapping_sub(first) as usize;
        for (i, &b) in r.payload.iter().enumerate() {
            assert_eq!(
                out[pos + i],
                decode(b),
                "packet seq {} sample {i}",
                r.sequence
            );
        }
        checked += 1;
    }
    assert!(checked > 100);
    out
}

#[test]
fn metaswitch_pcmu_with_rfc2833_dtmf() {
    let pkts = udp_payloads("miarec-metaswitch-09a_2833_dtmf.pcap");
    let pkts: Vec<_> = pkts
        .into_iter()
        .filter(|(_, p)| rtp::parse(p).is_ok())
        .collect();
    let mut t = timeline();
    let mut cfg = StreamConfig::default();
    cfg.payload_types.push((101, Codec::TelephoneEvent, 8000));
    t.set_stream_config(0, cfg);
    replay(&mut t, &pkts, ulaw_to_linear, 0);
    let ev: Vec<DtmfEvent> = t.take_dtmf().into_iter().map(|(_, e)| e).collect();
    let digits: String = ev.iter().map(|e| e.digit).collect();
    assert_eq!(digits, "123456789**0#");
    let durs: Vec<u32> = ev.iter().map(|e| e.duration_ms).collect();
    assert_eq!(
        durs,
        [95, 105, 115, 95, 105, 125, 115, 125, 125, 95, 95, 115, 105]
    );
    // Events sit at their RTP timestamp on the timeline (no re-anchoring in this call).
    let starts: Vec<u64> = ev.iter().map(|e| e.start.as_millis()).collect();
    assert_eq!(
        starts,
        [
            15690, 16970, 18420, 19800, 21120, 22590, 24100, 25690, 27210, 30300, 34600, 36500,
            38530
        ]
    );
    let s = t.stats(0);
    assert_eq!(
        (
            s.lost,
            s.late,
            s.reanchors,
            s.ssrc_changes,
            s.unsupported_payload
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(s.dtmf_events, 13);
}

#[test]
fn sipp_pcma_stream() {
    let pkts = udp_payloads("drachtio-sipp-g711a.pcap");
    assert_eq!(pkts.len(), 236);
    let mut t = timeline();
    replay(&mut t, &pkts, alaw_to_linear, 8);
    let s = t.stats(0);
    assert_eq!((s.received, s.lost, s.late, s.duplicates), (236, 0, 0, 0));
}

#[test]
fn sipp_dtmf_digits_with_duplicate_end_packets() {
    for (file, digit) in [
        ("0", '0'),
        ("1", '1'),
        ("5", '5'),
        ("9", '9'),
        ("star", '*'),
        ("pound", '#'),
    ] {
        let pkts = udp_payloads(&format!("sipp-dtmf-rfc2833/dtmf_2833_{file}.pcap"));
        let mut t = timeline();
        t.set_stream_config(
            0,
            StreamConfig {
                payload_types: vec![(101, Codec::TelephoneEvent, 8000)],
            },
        );
        let t0 = pkts[0].0;
        for (at, p) in &pkts {
            t.push_rtp(0, mono(*at - t0), p);
        }
        t.finish(mono(Duration::from_secs(1)));
        let ev = t.take_dtmf();
        assert_eq!(ev.len(), 1, "{file}");
        assert_eq!(ev[0].1.digit, digit);
        assert_eq!(ev[0].1.duration_ms, 280);
        assert_eq!(ev[0].1.start, Mono::ZERO);
        assert_eq!(t.stats(0).duplicates, 2);
    }
}
