//! A small scripted-call capture writer for the codec, SRTP and multi-stream capture
//! tests: SIP messages and RTP datagrams at given times, written into a pcap; and an
//! independent reader of RTP payloads from a pcap (no branchrec code), plus the
//! reference decoders run through ffmpeg.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use branchrec::capture::frame::{self, Link, L4};
use branchrec::capture::pcapfile::PcapWriter;

/// Frames of a capture being written.
#[derive(Default)]
pub struct Pcap {
    pub frames: Vec<(Duration, Vec<u8>)>,
    ip_id: u16,
}

impl Pcap {
    pub fn udp(&mut self, t: Duration, src: SocketAddr, dst: SocketAddr, p: &[u8]) {
        self.ip_id = self.ip_id.wrapping_add(1);
        for f in frame::frames(&Link::default(), src, dst, L4::Udp, p, self.ip_id, 1480) {
            self.frames.push((t, f));
        }
    }

    pub fn tcp(
        &mut self,
        t: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        flags: u8,
        p: &[u8],
    ) {
        self.ip_id = self.ip_id.wrapping_add(1);
        for f in frame::frames(
            &Link::default(),
            src,
            dst,
            L4::Tcp { seq, flags },
            p,
            self.ip_id,
            1480,
        ) {
            self.frames.push((t, f));
        }
    }

    pub fn write(mut self, path: &Path) {
        self.frames.sort_by_key(|f| f.0);
        let file = std::fs::File::create(path).unwrap();
        let mut w = PcapWriter::new(std::io::BufWriter::new(file), 1).unwrap();
        for (ts, f) in &self.frames {
            w.write(*ts, f).unwrap();
        }
        use std::io::Write;
        w.into_inner().flush().unwrap();
    }
}

/// One SIP dialog between a caller and a callee signalling host.
pub struct Dialog {
    pub call_id: String,
    pub caller: SocketAddr,
    pub callee: SocketAddr,
}

pub const MS: fn(u64) -> Duration = Duration::from_millis;

impl Dialog {
    pub fn new(call_id: &str, caller: &str, callee: &str) -> Self {
        Dialog {
            call_id: call_id.into(),
            caller: caller.parse().unwrap(),
            callee: callee.parse().unwrap(),
        }
    }

    /// A SIP message; requests go caller → callee, responses callee → caller.
    pub fn msg(&self, start: &str, cseq: &str, to_tag: bool, body: &str) -> Vec<u8> {
        let tt = if to_tag { ";tag=callee1" } else { "" };
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{start}\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@branch.example>;tag=caller1\r\nTo: <sip:bob@carrier.example>{tt}\r\nCall-ID: {}\r\nCSeq: {cseq}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.caller,
            cseq.replace(' ', ""),
            self.call_id,
            body.len()
        )
        .into_bytes()
    }

    pub fn request(
        &self,
        cap: &mut Pcap,
        t: Duration,
        method: &str,
        cseq: u32,
        to_tag: bool,
        body: &str,
    ) {
        let m = self.msg(
            &format!("{method} sip:bob@carrier.example SIP/2.0"),
            &format!("{cseq} {method}"),
            to_tag,
            body,
        );
        cap.udp(t, self.caller, self.callee, &m);
    }

    pub fn response(&self, cap: &mut Pcap, t: Duration, status: &str, cseq: &str, body: &str) {
        let m = self.msg(&format!("SIP/2.0 {status}"), cseq, true, body);
        cap.udp(t, self.callee, self.caller, &m);
    }
}

/// An SDP body: `c=` address `ip`, then m-lines (port, proto, payload types, attribute
/// lines without the trailing CRLF).
pub fn sdp(ip: &str, media: &[(u16, &str, &str, &[&str])]) -> String {
    let mut s = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
    for (port, proto, pts, attrs) in media {
        s.push_str(&format!("m=audio {port} {proto} {pts}\r\n"));
        for a in *attrs {
            s.push_str(a);
            s.push_str("\r\n");
        }
    }
    s
}

/// Deterministic pseudo-random bytes (any byte string is a valid G.722 stream).
pub fn noise_bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 16) & 0xff) as u8
        })
        .collect()
}

/// G.711 bytes that never decode to silence.
pub fn g711_bytes(seed: u32, n: usize) -> Vec<u8> {
    noise_bytes(seed, n)
        .into_iter()
        .map(|b| match b {
            0xff | 0x7f | 0xd5 | 0x55 => 0x20,
            b => b,
        })
        .collect()
}

/// µ-law bytes of a speech-like tone mix (voiced harmonics, slow envelope), `n` samples
/// starting at sample `k0` of a signal that differs per `seed`: band-limited, so that
/// resamplers agree on it (white noise differs most near Nyquist).
pub fn tone_ulaw(seed: u32, k0: u32, n: usize) -> Vec<u8> {
    let f0 = 110.0 + 37.0 * f64::from(seed % 7);
    (0..n)
        .map(|i| {
            let t = f64::from(k0 + i as u32) / 8000.0;
            let env = 0.35 + 0.3 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let v = env
                * (0.5 * (2.0 * std::f64::consts::PI * f0 * t).sin()
                    + 0.25 * (2.0 * std::f64::consts::PI * 3.0 * f0 * t).sin()
                    + 0.12 * (2.0 * std::f64::consts::PI * (7.0 * f0 + 13.0) * t).sin());
            branchrec::media::linear_to_ulaw((v * 20000.0) as i16)
        })
        .collect()
}

/// An RTP packet from a pcap, read by [`rtp_from_pcap`].
#[derive(Debug, Clone)]
pub struct PcapRtp {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    /// The whole UDP payload (RTP header included).
    pub packet: Vec<u8>,
    /// The payload after header, CSRCs, extension and padding.
    pub payload: Vec<u8>,
}

/// Every RTP-looking UDP datagram of an Ethernet/IPv4 pcap (classic format, either byte
/// order), read with no branchrec code: the independent side of the codec checks.
pub fn rtp_from_pcap(path: &Path) -> Vec<PcapRtp> {
    let b = std::fs::read(path).unwrap();
    let le = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a classic pcap: {m:?}"),
    };
    let u32at = |o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32at(20), 1, "Ethernet link type");
    let be16 = |d: &[u8], o: usize| u16::from_be_bytes([d[o], d[o + 1]]);
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let cl = u32at(off + 8) as usize;
        let f = &b[off + 16..off + 16 + cl];
        off += 16 + cl;
        if f.len() < 14 + 20 || be16(f, 12) != 0x0800 {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 15) * 4;
        if ip[9] != 17 || be16(ip, 6) & 0x3fff != 0 {
            continue;
        }
        let src_ip = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst_ip = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let u = &ip[ihl..];
        let ulen = usize::from(be16(u, 4));
        let d = &u[8..ulen.min(u.len())];
        if d.len() < 12 || d[0] >> 6 != 2 || d.starts_with(b"SIP/") {
            continue;
        }
        if matches!(d[1], 200..=204) {
            continue; // RTCP
        }
        let cc = usize::from(d[0] & 15);
        let mut hl = 12 + 4 * cc;
        if d[0] & 0x10 != 0 {
            hl += 4 + 4 * usize::from(be16(d, hl + 2));
        }
        let mut end = d.len();
        if d[0] & 0x20 != 0 {
            end -= usize::from(d[end - 1]);
        }
        if hl > end {
            continue;
        }
        out.push(PcapRtp {
            src: SocketAddr::new(src_ip.into(), be16(u, 0)),
            dst: SocketAddr::new(dst_ip.into(), be16(u, 2)),
            pt: d[1] & 0x7f,
            seq: be16(d, 2),
            ts: u32::from_be_bytes(d[4..8].try_into().unwrap()),
            ssrc: u32::from_be_bytes(d[8..12].try_into().unwrap()),
            packet: d.to_vec(),
            payload: d[hl..end].to_vec(),
        });
    }
    out
}

pub fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("running ffmpeg (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn s16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// ffmpeg decoding a raw file of format `fmt` (`g722`, `g729`, `mulaw`, `alaw`, `ogg`)
/// to mono s16 at `rate`.
pub fn ffmpeg_decode(
    dir: &Path,
    name: &str,
    fmt: &str,
    data: &[u8],
    in_rate: Option<u32>,
    rate: u32,
) -> Vec<i16> {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    let mut args: Vec<String> = vec!["-f".into(), fmt.into()];
    if let Some(r) = in_rate {
        args.extend(["-ar".into(), r.to_string(), "-ac".into(), "1".into()]);
    }
    args.extend([
        "-i".into(),
        p.display().to_string(),
        "-ac".into(),
        "1".into(),
        "-ar".into(),
        rate.to_string(),
        "-f".into(),
        "s16le".into(),
        "-".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    s16(&ffmpeg(&a))
}

pub fn snr_db(want: &[i16], got: &[i16]) -> f64 {
    let n = want.len().min(got.len());
    let sig: f64 = want[..n].iter().map(|&v| f64::from(v).powi(2)).sum();
    let err: f64 = (0..n)
        .map(|i| (f64::from(want[i]) - f64::from(got[i])).powi(2))
        .sum();
    if err == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (sig / err).log10()
}

/// Best SNR of `reference` placed at `around ± search` in `channel`: (offset, dB).
pub fn best_snr(channel: &[i16], reference: &[i16], around: usize, search: usize) -> (usize, f64) {
    (around.saturating_sub(search)..=around + search)
        .filter(|&o| o + reference.len() <= channel.len())
        .map(|o| (o, snr_db(reference, &channel[o..o + reference.len()])))
        .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
}

/// Where `window` occurs exactly in `channel`.
pub fn find_exact(channel: &[i16], window: &[i16]) -> Option<usize> {
    channel.windows(window.len()).position(|w| w == window)
}

pub fn first_nonzero(s: &[i16]) -> usize {
    s.iter().position(|&v| v != 0).unwrap_or(0)
}

/// One channel of interleaved samples.
pub fn channel(samples: &[i16], ch: usize, channels: usize) -> Vec<i16> {
    samples.iter().skip(ch).step_by(channels).copied().collect()
}

fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seqno: u32, packet: &[u8]) {
    let mut lacing = Vec::new();
    let mut n = packet.len();
    while n >= 255 {
        lacing.push(255u8);
        n -= 255;
    }
    lacing.push(n as u8);
    let start = out.len();
    out.extend(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend(granule.to_le_bytes());
    out.extend(0x4252_4543u32.to_le_bytes()); // stream serial
    out.extend(seqno.to_le_bytes());
    out.extend([0u8; 4]);
    out.push(lacing.len() as u8);
    out.extend(&lacing);
    out.extend(packet);
    let crc = ogg_crc(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

/// Opus packets (one per RTP payload, `durations` in 48 kHz samples) in an Ogg Opus
/// file (RFC 7845) for ffmpeg; pre-skip 0 so sample 0 is the first packet's first.
pub fn ogg_opus(packets: &[(Vec<u8>, u64)], channels: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend(0u16.to_le_bytes());
    head.extend(48_000u32.to_le_bytes());
    head.extend(0u16.to_le_bytes());
    head.push(0);
    ogg_page(&mut out, 0x02, 0, 0, &head);
    let mut tags = b"OpusTags".to_vec();
    tags.extend(4u32.to_le_bytes());
    tags.extend(b"test");
    tags.extend(0u32.to_le_bytes());
    ogg_page(&mut out, 0, 0, 1, &tags);
    let mut granule = 0u64;
    for (i, (p, dur)) in packets.iter().enumerate() {
        granule += dur;
        let flags = if i + 1 == packets.len() { 0x04 } else { 0 };
        ogg_page(&mut out, flags, granule, i as u32 + 2, p);
    }
    out
}
