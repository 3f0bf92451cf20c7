//! RTP packet formatting (RFC 3550), RFC 4733 telephone-events, and the `rtp` subcommand:
//! one or more streams of a raw 16-bit mono 8 kHz file sent as G.711 in 20 ms packets on
//! an absolute schedule (packet k leaves at start + k·20 ms, so there is no drift).

use crate::g711::Codec;
use anyhow::{anyhow, bail, Context, Result};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// Samples per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Packet interval.
pub const PTIME: Duration = Duration::from_millis(20);
/// RTP fixed header length (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Dynamic payload type used for RFC 4733 telephone-event.
pub const DTMF_PT: u8 = 101;

/// Writes a 12-byte RTP header into `buf[..12]`.
pub fn write_header(buf: &mut [u8], pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80; // V=2, P=0, X=0, CC=0
    buf[1] = (pt & 0x7F) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// RFC 4733 event code of a DTMF character.
pub fn dtmf_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// One packet of a pre-built stream: the 20 ms slot it leaves in, and its bytes.
#[derive(Debug, Clone)]
pub struct ScheduledPacket {
    /// Slot index (slot k leaves at start + k·20 ms).
    pub slot: u32,
    /// Complete RTP packet.
    pub bytes: Vec<u8>,
}

/// Parameters of one stream for [`build_stream`].
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Where to send.
    pub dest: SocketAddr,
    /// Linear 16-bit samples to send.
    pub samples: Vec<i16>,
    /// Codec.
    pub codec: Codec,
    /// SSRC.
    pub ssrc: u32,
    /// First sequence number.
    pub seq: u16,
    /// First RTP timestamp.
    pub ts: u32,
    /// DTMF digits sent as RFC 4733 events after the audio.
    pub dtmf: String,
}

/// Pre-builds all packets of a stream. The audio occupies slots `0..ceil(n/160)` (a short last
/// packet is zero-padded to 160 samples, i.e. the file is sent whole); then, if DTMF digits
/// are given, after 5 empty slots each digit is 5 event packets (100 ms, durations 160..800)
/// plus 3 end packets (E bit, same timestamp) followed by 5 empty slots.
/// Timestamps advance by 160 per slot, including empty ones; sequence numbers by one per
/// packet.
pub fn build_stream(spec: &StreamSpec) -> Result<Vec<ScheduledPacket>> {
    let mut out = Vec::new();
    let mut seq = spec.seq;
    let pt = spec.codec.payload_type();
    let mut slot: u32 = 0;
    for (i, chunk) in spec.samples.chunks(SAMPLES_PER_PACKET).enumerate() {
        let mut bytes = vec![0u8; RTP_HEADER_LEN + SAMPLES_PER_PACKET];
        let ts = spec
            .ts
            .wrapping_add(slot.wrapping_mul(SAMPLES_PER_PACKET as u32));
        write_header(&mut bytes, pt, i == 0, seq, ts, spec.ssrc);
        let silence = spec.codec.encode(0);
        for (j, b) in bytes[RTP_HEADER_LEN..].iter_mut().enumerate() {
            *b = chunk.get(j).map_or(silence, |&s| spec.codec.encode(s));
        }
        out.push(ScheduledPacket { slot, bytes });
        seq = seq.wrapping_add(1);
        slot += 1;
    }
    if !spec.dtmf.is_empty() {
        slot += 5;
        for c in spec.dtmf.chars() {
            let ev = dtmf_event(c).ok_or_else(|| anyhow!("bad DTMF digit {c:?}"))?;
            let ts = spec
                .ts
                .wrapping_add(slot.wrapping_mul(SAMPLES_PER_PACKET as u32));
            let volume = 10u8;
            for k in 0..8u32 {
                let end = k >= 5;
                let duration = (SAMPLES_PER_PACKET as u32 * (k + 1).min(5)) as u16;
                let mut bytes = vec![0u8; RTP_HEADER_LEN + 4];
                write_header(&mut bytes, DTMF_PT, k == 0, seq, ts, spec.ssrc);
                bytes[12] = ev;
                bytes[13] = if end { 0x80 } else { 0 } | volume;
                bytes[14..16].copy_from_slice(&duration.to_be_bytes());
                out.push(ScheduledPacket { slot, bytes });
                seq = seq.wrapping_add(1);
                slot += 1;
            }
            slot += 5;
        }
    }
    Ok(out)
}

/// Reads a raw little-endian 16-bit mono file.
pub fn read_raw(path: &str) -> Result<Vec<i16>> {
    let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    if data.len() % 2 != 0 {
        bail!("{path}: odd length, not 16-bit samples");
    }
    Ok(data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Resolves `HOST:PORT`.
pub fn resolve(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("resolving {s}"))?
        .next()
        .ok_or_else(|| anyhow!("{s}: no address"))
}

/// Sends several pre-built streams together on one absolute 20 ms schedule starting at
/// `start`. Returns the number of packets sent per stream.
pub fn send_streams(
    sock: &UdpSocket,
    streams: &[(SocketAddr, Vec<ScheduledPacket>)],
    start: Instant,
) -> Result<Vec<u64>> {
    let mut idx = vec![0usize; streams.len()];
    let mut sent = vec![0u64; streams.len()];
    let last_slot = streams
        .iter()
        .filter_map(|(_, p)| p.last().map(|p| p.slot))
        .max()
        .unwrap_or(0);
    for slot in 0..=last_slot {
        let due = start + PTIME * slot;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for (n, (dest, pkts)) in streams.iter().enumerate() {
            while let Some(p) = pkts.get(idx[n]) {
                if p.slot != slot {
                    break;
                }
                sock.send_to(&p.bytes, dest)
                    .with_context(|| format!("sending RTP to {dest}"))?;
                sent[n] += 1;
                idx[n] += 1;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, dtmf: &str) -> StreamSpec {
        StreamSpec {
            dest: "127.0.0.1:9".parse().unwrap(),
            samples: (0..n as i32).map(|i| (i * 7 - 500) as i16).collect(),
            codec: Codec::Pcmu,
            ssrc: 0x1234_5678,
            seq: 65534,
            ts: u32::MAX - 100,
            dtmf: dtmf.into(),
        }
    }

    #[test]
    fn audio_packets_have_header_and_payload() {
        let s = spec(400, "");
        let p = build_stream(&s).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].bytes[0], 0x80);
        assert_eq!(p[0].bytes[1], 0x80); // marker, PT 0
        assert_eq!(p[1].bytes[1], 0x00);
        assert_eq!(u16::from_be_bytes([p[1].bytes[2], p[1].bytes[3]]), 65535);
        assert_eq!(u16::from_be_bytes([p[2].bytes[2], p[2].bytes[3]]), 0);
        let ts2 = u32::from_be_bytes([p[2].bytes[4], p[2].bytes[5], p[2].bytes[6], p[2].bytes[7]]);
        assert_eq!(ts2, (u32::MAX - 100).wrapping_add(320));
        assert_eq!(&p[0].bytes[8..12], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(p[0].bytes[12], Codec::Pcmu.encode(-500));
        // Last packet: 80 real samples then μ-law silence.
        assert_eq!(
            p[2].bytes[12 + 79],
            Codec::Pcmu.encode(((399 * 7) - 500) as i16)
        );
        assert_eq!(p[2].bytes[12 + 80], 0xFF);
    }

    #[test]
    fn dtmf_events_follow_audio() {
        let s = spec(160, "1#");
        let p = build_stream(&s).unwrap();
        assert_eq!(p.len(), 1 + 16);
        let ev: Vec<_> = p[1..9].iter().collect();
        assert_eq!(ev[0].slot, 6);
        assert_eq!(ev[0].bytes[1], 0x80 | DTMF_PT);
        assert_eq!(ev[0].bytes[12], 1);
        assert_eq!(u16::from_be_bytes([ev[4].bytes[14], ev[4].bytes[15]]), 800);
        assert_eq!(ev[5].bytes[13] & 0x80, 0x80);
        assert_eq!(ev[7].bytes[13] & 0x80, 0x80);
        assert_eq!(ev[4].bytes[13] & 0x80, 0);
        // All packets of one event share the timestamp.
        assert!(ev.iter().all(|e| e.bytes[4..8] == ev[0].bytes[4..8]));
        assert_eq!(p[9].bytes[12], 11);
        assert_eq!(p[9].slot, 6 + 8 + 5);
        assert!(build_stream(&spec(10, "x")).is_err());
    }
}
