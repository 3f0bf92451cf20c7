//! Shared by the capture tests: captures written from Rust with known audio, and the
//! check that an exported WAV holds exactly that audio.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use branchrec::capture::frame::{self, Link, L4};
use branchrec::capture::pcapfile::PcapWriter;
use branchrec::media::{alaw_to_linear, ulaw_to_linear};

pub mod gen;

pub const BIN: &str = env!("CARGO_BIN_EXE_branchrec");

/// How a generated call is carried.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub link: Link,
    pub v6: bool,
    /// SIP over TCP, each message cut into segments sent out of order.
    pub tcp: bool,
    /// Pad the INVITE so it is IP-fragmented.
    pub fragment_invite: bool,
    /// Swap RTP packets pairwise every so often (reordering).
    pub reorder: bool,
    /// Drop every 17th RTP packet of each direction.
    pub loss: bool,
    /// Wrap everything in GRE + ERSPAN type II.
    pub erspan: bool,
    /// Offer/answer G.729 only (not recordable).
    pub g729: bool,
    /// An injector on another host (issue #12 finding 1) sends RTP to both media
    /// addresses during packets 10..40: a new SSRC towards the callee, the callee's own
    /// SSRC with sequence numbers ahead towards the caller. None of it may be recorded.
    pub inject: bool,
    /// 20 ms packets per direction.
    pub packets: u32,
    /// Index used for addresses.
    pub idx: u8,
}

/// What was sent on one channel: (RTP timestamp, 160 payload bytes) per packet, and
/// which were actually put on the wire.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub packets: Vec<(u32, Vec<u8>, bool)>,
    pub alaw: bool,
}

impl Scenario {
    pub fn new(name: &'static str, idx: u8) -> Self {
        Scenario {
            name,
            call_id: format!("gen-{name}-{idx}@test"),
            caller: format!("sip:10{idx}@branch.example"),
            callee: format!("sip:+49301234{idx}@carrier.example"),
            link: Link::default(),
            v6: false,
            tcp: false,
            fragment_invite: false,
            reorder: false,
            loss: false,
            erspan: false,
            g729: false,
            inject: false,
            packets: 100,
            idx,
        }
    }

    fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr, SocketAddr) {
        let i = self.idx;
        if self.v6 {
            (
                format!("[2001:db8::{i}:1]:5060").parse().unwrap(),
                format!("[2001:db8::{i}:2]:5060").parse().unwrap(),
                format!("[2001:db8::{i}:1]:40000").parse().unwrap(),
                format!("[2001:db8::{i}:2]:50000").parse().unwrap(),
            )
        } else {
            (
                format!("10.20.{i}.1:5060").parse().unwrap(),
                format!("10.20.{i}.2:5060").parse().unwrap(),
                format!("10.20.{i}.1:40000").parse().unwrap(),
                format!("10.20.{i}.2:50000").parse().unwrap(),
            )
        }
    }
}

fn sdp(addr: SocketAddr, pts: &str, maps: &str) -> String {
    let (ipv, ip) = match addr {
        SocketAddr::V4(a) => ("IP4", a.ip().to_string()),
        SocketAddr::V6(a) => ("IP6", a.ip().to_string()),
    };
    format!(
        "v=0\r\no=- 1 1 IN {ipv} {ip}\r\ns=-\r\nc=IN {ipv} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {pts}\r\n{maps}a=sendrecv\r\n",
        addr.port()
    )
}

fn sip(start: &str, sc: &Scenario, to_tag: bool, cseq: &str, extra: &str, body: &str) -> Vec<u8> {
    let tt = if to_tag { ";tag=callee1" } else { "" };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let via = if sc.tcp { "TCP" } else { "UDP" };
    format!(
        "{start}\r\nVia: SIP/2.0/{via} gw.example;branch=z9hG4bK{}{}\r\nMax-Forwards: 70\r\nFrom: \"Caller {}\" <{}>;tag=caller1\r\nTo: <{}>{tt}\r\nCall-ID: {}\r\nCSeq: {cseq}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        sc.idx,
        cseq.replace(' ', ""),
        sc.idx,
        sc.caller,
        sc.callee,
        sc.call_id,
        body.len()
    )
    .into_bytes()
}

/// Deterministic G.711 payload bytes that never decode to silence.
fn payload(seed: u32, k: u32) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(2_654_435_761)
        .wrapping_add(k.wrapping_mul(40_503));
    (0..160)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Avoid 0xFF/0x7F (µ-law zero) and 0xD5/0x55 (A-law near-zero).
            let b = ((x >> 16) & 0xff) as u8;
            match b {
                0xff | 0x7f | 0xd5 | 0x55 => 0x20,
                b => b,
            }
        })
        .collect()
}

struct Out<'a> {
    frames: Vec<(Duration, Vec<u8>)>,
    sc: &'a Scenario,
    ip_id: u16,
    tcp_seq: [u32; 2],
}

impl Out<'_> {
    fn udp(&mut self, ts: Duration, src: SocketAddr, dst: SocketAddr, p: &[u8], mtu: usize) {
        self.ip_id = self.ip_id.wrapping_add(1);
        for f in frame::frames(&self.sc.link, src, dst, L4::Udp, p, self.ip_id, mtu) {
            self.push(ts, f);
        }
    }

    fn push(&mut self, ts: Duration, f: Vec<u8>) {
        let f = if self.sc.erspan {
            // Mirror session: the original frame inside GRE/ERSPAN II from a switch.
            let mut e = vec![0x10, 0x07, 0, 0, 0, 0, 0, 0];
            e.extend(&f);
            let outer = frame::gre_v4(
                "192.0.2.1".parse().unwrap(),
                "192.0.2.9".parse().unwrap(),
                0x88be,
                Some(u32::from(self.ip_id)),
                &e,
            );
            frame::ethernet(&Link::default(), &outer)
        } else {
            f
        };
        self.frames.push((ts, f));
    }

    fn sip(&mut self, ts: Duration, from_caller: bool, msg: &[u8]) {
        let (a, b, _, _) = self.sc.addrs();
        let (src, dst) = if from_caller { (a, b) } else { (b, a) };
        let mtu = if self.sc.v6 { 1232 } else { 1480 };
        if !self.sc.tcp {
            self.udp(ts, src, dst, msg, mtu);
            return;
        }
        // TCP: cut into 3 segments, sent 0, 2, 1 (reordered), plus a retransmission of 1.
        let dir = usize::from(!from_caller);
        let base = self.tcp_seq[dir];
        let cuts = [0, msg.len() / 3, msg.len() * 2 / 3, msg.len()];
        let seg = |k: usize| {
            (
                base.wrapping_add(cuts[k] as u32),
                &msg[cuts[k]..cuts[k + 1]],
            )
        };
        for k in [0usize, 2, 1, 1] {
            let (seq, data) = seg(k);
            self.ip_id = self.ip_id.wrapping_add(1);
            for f in frame::frames(
                &self.sc.link,
                src,
                dst,
                L4::Tcp { seq, flags: 0x18 },
                data,
                self.ip_id,
                mtu,
            ) {
                self.push(ts, f);
            }
        }
        self.tcp_seq[dir] = base.wrapping_add(msg.len() as u32);
    }
}

/// Frames of one scenario starting at `t0`, and what each channel sent.
pub fn scenario_frames(sc: &Scenario, t0: Duration) -> (Vec<(Duration, Vec<u8>)>, [Sent; 2]) {
    let (_, _, ra, rb) = sc.addrs();
    let mut o = Out {
        frames: Vec::new(),
        sc,
        ip_id: u16::from(sc.idx) * 1000,
        tcp_seq: [1000, 900_000],
    };
    let (offer_pts, answer_pts, maps) = if sc.g729 {
        ("18", "18", "a=rtpmap:18 G729/8000\r\n")
    } else {
        (
            "0 8 101",
            "8 0 101",
            "a=rtpmap:101 telephone-event/8000\r\n",
        )
    };
    let ms = Duration::from_millis;
    if sc.tcp {
        // Handshake so the reassembler follows the streams from their first byte.
        let (a, b, _, _) = sc.addrs();
        for (src, dst, seq) in [(a, b, 999u32), (b, a, 899_999)] {
            for f in frame::frames(
                &sc.link,
                src,
                dst,
                L4::Tcp { seq, flags: 0x02 },
                b"",
                1,
                1500,
            ) {
                o.push(t0, f);
            }
        }
    }
    let pad = if sc.fragment_invite {
        format!("X-Padding: {}\r\n", "p".repeat(2600))
    } else {
        String::new()
    };
    let pai = format!(
        "P-Asserted-Identity: \"Caller {}\" <{}>\r\n",
        sc.idx, sc.caller
    );
    o.sip(
        t0,
        true,
        &sip(
            &format!("INVITE {} SIP/2.0", sc.callee),
            sc,
            false,
            "1 INVITE",
            &format!("{pai}{pad}"),
            &sdp(ra, offer_pts, maps),
        ),
    );
    o.sip(
        t0 + ms(10),
        false,
        &sip("SIP/2.0 100 Trying", sc, false, "1 INVITE", "", ""),
    );
    o.sip(
        t0 + ms(200),
        false,
        &sip("SIP/2.0 180 Ringing", sc, true, "1 INVITE", "", ""),
    );
    o.sip(
        t0 + ms(500),
        false,
        &sip(
            "SIP/2.0 200 OK",
            sc,
            true,
            "1 INVITE",
            "",
            &sdp(rb, answer_pts, maps),
        ),
    );
    o.sip(
        t0 + ms(510),
        true,
        &sip(
            &format!("ACK {} SIP/2.0", sc.callee),
            sc,
            true,
            "1 ACK",
            "",
            "",
        ),
    );
    let mut sent = [Sent::default(), Sent::default()];
    sent[0].alaw = true; // the answer lists PCMA first; both sides use it
    sent[1].alaw = true;
    let pt = if sc.g729 { 18 } else { 8 };
    let mut rtp: Vec<(Duration, usize, Vec<u8>)> = Vec::new();
    for k in 0..sc.packets {
        #[allow(clippy::needless_range_loop)]
        for ch in 0..2usize {
            let pl = if sc.g729 {
                vec![0x11; 20]
            } else {
                payload(u32::from(sc.idx) * 2 + ch as u32, k)
            };
            let ts = 3000 + k * 160 + ch as u32 * 77_777;
            let lost = sc.loss && k % 17 == 5;
            sent[ch].packets.push((ts, pl.clone(), !lost));
            if lost {
                continue;
            }
            let p = frame::rtp(
                pt,
                (100 + k + ch as u32 * 5000) as u16,
                ts,
                0x1000 + u32::from(sc.idx) * 2 + ch as u32,
                k == 0,
                &pl,
            );
            let at = t0 + ms(520) + ms(u64::from(k) * 20) + Duration::from_micros(ch as u64 * 300);
            rtp.push((at, ch, p));
            if sc.inject && (10..40).contains(&k) {
                let (ssrc, seq) = if ch == 0 {
                    (0xbad0_0001, 7000 + k)
                } else {
                    (0x1000 + u32::from(sc.idx) * 2 + 1, 100 + k + 5000 + 10)
                };
                let evil = frame::rtp(pt, seq as u16, ts + 1600, ssrc, false, &[0x55; 160]);
                rtp.push((at + Duration::from_micros(100), ch + 2, evil));
            }
        }
    }
    if sc.reorder {
        // Every 10th packet of each channel arrives after the next one (and 30 ms late).
        let mut i = 0;
        while i + 2 < rtp.len() {
            if (i / 2) % 10 == 3 {
                rtp.swap(i, i + 2);
                rtp[i + 2].0 = rtp[i].0 + ms(30);
            }
            i += 1;
        }
        rtp.sort_by_key(|r| r.0);
    }
    // Channels 2 and 3: the injector (another host, the real destination ports).
    let evil: SocketAddr = format!("10.99.{}.66:40000", sc.idx).parse().unwrap();
    for (at, ch, p) in rtp {
        let (src, dst) = match ch {
            0 => (ra, rb),
            1 => (rb, ra),
            2 => (evil, rb),
            _ => (evil, ra),
        };
        o.udp(at, src, dst, &p, 1480);
    }
    let tend = t0 + ms(520) + ms(u64::from(sc.packets) * 20) + ms(100);
    o.sip(
        tend,
        true,
        &sip(
            &format!("BYE {} SIP/2.0", sc.callee),
            sc,
            true,
            "2 BYE",
            "",
            "",
        ),
    );
    o.sip(
        tend + ms(5),
        false,
        &sip("SIP/2.0 200 OK", sc, true, "2 BYE", "", ""),
    );
    o.frames.sort_by_key(|f| f.0);
    (o.frames, sent)
}

/// The generated test set: one call per property the issue names.
pub fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    let mut s = Scenario::new("vlan-qinq", 1);
    s.link = Link {
        vlans: vec![100, 42],
    };
    v.push(s);
    let mut s = Scenario::new("ipv4-fragments", 2);
    s.fragment_invite = true;
    s.link = Link { vlans: vec![7] };
    v.push(s);
    let mut s = Scenario::new("ipv6", 3);
    s.v6 = true;
    s.fragment_invite = true;
    v.push(s);
    let mut s = Scenario::new("sip-tcp-split", 4);
    s.tcp = true;
    v.push(s);
    let mut s = Scenario::new("reorder-loss", 5);
    s.reorder = true;
    s.loss = true;
    v.push(s);
    let mut s = Scenario::new("erspan", 6);
    s.erspan = true;
    v.push(s);
    let mut s = Scenario::new("g729", 7);
    s.g729 = true;
    v.push(s);
    let mut s = Scenario::new("rtp-injection", 8);
    s.inject = true;
    v.push(s);
    v
}

/// Write all scenarios, one after the other (1 s apart), into a pcap; returns what each
/// sent, in scenario order.
pub fn write_capture(path: &Path, scs: &[Scenario]) -> Vec<[Sent; 2]> {
    let mut all = Vec::new();
    let mut sents = Vec::new();
    let mut t = Duration::from_secs(1_750_000_000);
    for sc in scs {
        let (f, s) = scenario_frames(sc, t);
        t = f.last().map(|x| x.0).unwrap_or(t) + Duration::from_millis(300);
        all.extend(f);
        sents.push(s);
    }
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), 1).unwrap();
    for (ts, f) in &all {
        w.write(*ts, f).unwrap();
    }
    use std::io::Write;
    w.into_inner().flush().unwrap();
    sents
}

pub fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("branchrec.toml");
    std::fs::write(
        &p,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[keys]\nprovider = \"software\"\n[log]\nredact_pii = false\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run branchrec");
    assert!(
        out.status.success(),
        "branchrec {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn list(cfg: &Path) -> Vec<serde_json::Value> {
    let s = run_ok(&[
        "recordings",
        "list",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    serde_json::from_str(&s).unwrap()
}

pub fn show(cfg: &Path, id: &str) -> serde_json::Value {
    let s = run_ok(&[
        "recordings",
        "show",
        id,
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    serde_json::from_str(&s).unwrap()
}

pub fn participant<'a>(rec: &'a serde_json::Value, pid: &str) -> &'a serde_json::Value {
    rec["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == pid)
        .unwrap_or_else(|| panic!("no participant {pid} in {rec}"))
}

/// Export a recording and return its interleaved stereo samples.
pub fn export(cfg: &Path, dir: &Path, id: &str) -> Vec<i16> {
    let wav = dir.join(format!("{id}.wav"));
    // Export never replaces a file (issue #12 finding 9); a test that exports the same
    // recording again (once per scenario check) removes its own earlier copy first.
    let _ = std::fs::remove_file(&wav);
    run_ok(&[
        "recordings",
        "export",
        id,
        "--out",
        wav.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let b = std::fs::read(&wav).unwrap();
    let pos = b.windows(4).position(|w| w == b"data").expect("data chunk");
    b[pos + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Check that channel `ch` of `samples` holds every packet that was sent and not lost,
/// each at its RTP-timestamp position relative to the first one, and silence where
/// packets were lost. Returns how many packets matched.
pub fn check_channel(samples: &[i16], ch: usize, sent: &Sent, what: &str) -> usize {
    let chan: Vec<i16> = samples.iter().skip(ch).step_by(2).copied().collect();
    let decode = |b: &[u8]| -> Vec<i16> {
        b.iter()
            .map(|&x| {
                if sent.alaw {
                    alaw_to_linear(x)
                } else {
                    ulaw_to_linear(x)
                }
            })
            .collect()
    };
    let first = sent
        .packets
        .iter()
        .find(|p| p.2)
        .expect("a packet was sent");
    let want = decode(&first.1);
    let start = chan
        .windows(want.len())
        .position(|w| w == want.as_slice())
        .unwrap_or_else(|| {
            panic!("{what} ch{ch}: first packet's audio not found in the recording")
        });
    let base = start as i64 - i64::from(first.0);
    let mut matched = 0;
    for (ts, pl, on_wire) in &sent.packets {
        let pos = (base + i64::from(*ts)) as usize;
        let got = chan
            .get(pos..pos + 160)
            .unwrap_or_else(|| panic!("{what} ch{ch}: recording too short for ts {ts}"));
        if *on_wire {
            assert_eq!(
                got,
                decode(pl).as_slice(),
                "{what} ch{ch}: packet ts {ts} differs"
            );
            matched += 1;
        } else {
            assert!(
                got.iter().all(|&s| s == 0),
                "{what} ch{ch}: lost packet ts {ts} is not silence"
            );
        }
    }
    matched
}
