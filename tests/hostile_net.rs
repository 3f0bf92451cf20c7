//! Issue #12, findings 1, 2 and 6, reproduced against the real daemon with 127.0.0.2 as
//! the attacker on the branch LAN (the SRC is 127.0.0.1):
//!
//! * `injected_rtp_is_dropped_and_the_real_audio_is_bit_exact` (finding 1): RTP from
//!   another host onto a call's ports — a new SSRC on one stream, the real SSRC with
//!   sequence numbers ahead on the other, and RTCP — never reaches the recording; the
//!   real audio exports bit-exact; the drops are counted per channel, as events, and in
//!   `branchrec status`.
//! * `spoofed_in_dialog_requests_are_refused_and_the_real_bye_ends_the_call` (finding 2):
//!   a re-INVITE putting every stream inactive, a BYE and an INFO with metadata from
//!   127.0.0.2 are refused 403 and counted; the call is neither paused nor ended, and the
//!   real SRC's BYE ends it with a complete recording.
//! * `metadata_beyond_the_per_call_cap_is_refused` (finding 2): an INFO flood beyond
//!   `sip.max_metadata_versions` is refused 403 with the reason, and counted.
//! * `a_spoofed_via_received_does_not_reach_catalogue_or_manifest` (finding 6): an INVITE
//!   from 127.0.0.1 whose Via says `received=10.20.0.5` is catalogued and signed as from
//!   127.0.0.1.
//! * `latched_source_is_recorded_and_a_second_source_is_dropped` (finding 1, NAT): with
//!   `source_binding = "latch"` the first source takes the call, a second one never.
//! * `tcp_dialog_survives_a_reconnect_but_not_another_address` (finding 2, TCP): a BYE
//!   on a new connection from the SRC's address ends the call; from 127.0.0.2, 403.
//!
//! Before the fix: the injected audio took the channel (new SSRC) or overwrote it (same
//! SSRC ahead) and the export differed; the spoofed BYE ended the call (the real BYE got
//! 481); every INFO was taken; `src_addr` was 10.20.0.5:5099.

mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::g711;
use common::{channel_stats, expect_bursts, output_bounded, read_wav, the_recording, Daemon};
use serde_json::Value;
use siprec_client::{invite, invite_with, Call, Invite, TONE_ULAW};

/// The attacker's address (another host on the LAN: loopback has all of 127/8).
const ATTACKER: [u8; 4] = [127, 0, 0, 2];

fn srs(d: &Daemon) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], d.sip_port))
}

fn attacker_socket() -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((ATTACKER, 0))).expect("binding 127.0.0.2")
}

fn up(i: Invite) -> Call {
    match i {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}"),
    }
}

fn rtp(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// `branchrec status --json` (bounded: a CLI call, well under a second idle).
fn status_json(d: &Daemon) -> Value {
    let out = output_bounded(
        Command::new(&d.bin)
            .args(["status", "--json", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("branchrec status hung");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// The tone the SRC sends, `packets` packets of it, as exported (µ-law decoded). Its first
/// sample (0xff) decodes to 0, which `expect_bursts` reads as silence: the burst starts
/// at the second sample.
fn tone_burst(packets: u32) -> Vec<i16> {
    let one: Vec<i16> = TONE_ULAW.iter().map(|&b| g711::ulaw_to_linear(b)).collect();
    let n = packets as usize * 160;
    one.iter().copied().cycle().take(n).skip(1).collect()
}

/// The recording ends at the BYE: let the last packet's 20 ms of audio pass before it
/// (the wait only makes the end later, so it is safe on a loaded machine).
fn end_of_audio() {
    std::thread::sleep(Duration::from_millis(100));
}

fn show(d: &Daemon, id: &str) -> Value {
    d.recordings_json(&["show", id, "--json"])
}

fn export(d: &Daemon, id: &str, dir: &std::path::Path) -> common::Wav {
    let out = dir.join(format!("{id}.wav"));
    d.recordings(&["export", id, "--out", out.to_str().unwrap()]);
    read_wav(&out)
}

fn events_of<'a>(detail: &'a Value, kind: &str) -> Vec<&'a Value> {
    detail["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["kind"] == kind).collect())
        .unwrap_or_default()
}

#[test]
fn injected_rtp_is_dropped_and_the_real_audio_is_bit_exact() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut call = up(invite(srs(&d), 1));
    let targets = call.rtp_targets();
    let evil = attacker_socket();
    // 3 s of real audio; from packet 25 to 124 the attacker sends, in step with it, a new
    // SSRC on stream 0 and the real SSRC 10 packets ahead on stream 1 (what overwrote the
    // real audio before), and every 10th step an RTCP BYE on stream 0.
    const PACKETS: u32 = 150;
    let (mut injected, mut rtcp) = (0u32, 0u32);
    let start = Instant::now();
    for k in 0..PACKETS {
        let due = start + Duration::from_millis(20 * u64::from(k));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let (seq, ts, _) = call.next_rtp(1);
        call.send_packet();
        if (25..125).contains(&k) {
            let loud = [0x80u8; 160];
            let fresh = rtp(7000 + k as u16, 900_000 + k * 160, 0xbad5_51c0, &loud);
            let ahead = rtp(seq.wrapping_add(10), ts + 1600, call.next_rtp(1).2, &loud);
            evil.send_to(&fresh, targets[0]).unwrap();
            evil.send_to(&ahead, targets[1]).unwrap();
            injected += 1;
            if k % 10 == 0 {
                // RTCP BYE (PT 203) for the real SSRC of stream 0.
                let mut bye = vec![0x81, 203, 0x00, 0x01];
                bye.extend_from_slice(&call.next_rtp(0).2.to_be_bytes());
                evil.send_to(&bye, targets[0]).unwrap();
                rtcp += 1;
            }
        }
    }
    end_of_audio();
    assert!(call.bye(), "BYE not answered 200");
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let detail = show(&d, &id);
    // Every injected datagram was dropped and counted on its channel.
    let s0 = channel_stats(&detail, 0);
    let s1 = channel_stats(&detail, 1);
    assert_eq!(s0["rtp_foreign_source"], u64::from(injected + rtcp), "{s0}");
    assert_eq!(s1["rtp_foreign_source"], u64::from(injected), "{s1}");
    for s in [&s0, &s1] {
        assert_eq!(s["ssrc_changes"], 0, "{s}");
        assert_eq!(s["duplicates"], 0, "{s}");
        assert_eq!(s["received"], u64::from(PACKETS), "{s}");
    }
    // Above media.foreign_alarm_packets (50): one foreign_source event per channel.
    let ev = events_of(&detail, "foreign_source");
    assert_eq!(ev.len(), 2, "{}", detail["events"]);
    assert!(
        ev.iter().all(|e| e["detail"]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.2:")),
        "{ev:?}"
    );
    // The real audio, bit-exact: 150 packets of the tone on each channel and nothing else.
    let w = export(&d, &id, dir.path());
    let burst = tone_burst(PACKETS);
    for ch in 0..2 {
        expect_bursts(&format!("channel {ch}"), &w.data[ch], &[&burst]);
    }
    // The box-wide counter and alarm.
    let st = status_json(&d);
    let b = &st["sip_binding"];
    assert_eq!(
        b["rtp_foreign_source"],
        u64::from(2 * injected + rtcp),
        "{st}"
    );
    assert_eq!(b["foreign_media_alarms"], 2, "{st}");
    assert!(
        st["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "foreign_media"),
        "{}",
        st["alarms"]
    );
}

/// A re-INVITE offer with every stream inactive (what paused the call before).
fn inactive_offer() -> String {
    "v=0\r\no=- 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
     m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=inactive\r\n\
     m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=inactive\r\n"
        .to_string()
}

fn fake_metadata(n: usize, pad: usize) -> String {
    let mut parts = String::new();
    for i in 0..n {
        parts.push_str(&format!(
            "<participant participant_id=\"ZmFrZ{i:04}\"><nameID aor=\"sip:fake{i}@evil.example\"><name>Fake {i}</name></nameID></participant>\r\n"
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
         <datamode>partial</datamode>\r\n{parts}<!-- {} -->\r\n</recording>\r\n",
        "x".repeat(pad)
    )
}

/// Waits (bounded) for the response to `method` on `sock`.
fn response_on(sock: &UdpSocket, method: &str) -> String {
    // A refusal takes milliseconds idle; 15 s bounds a loaded machine.
    siprec_client::recv_until(
        sock,
        |m| siprec_client::status(m) >= 200 && m.contains(&format!(" {method}\r\n")),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|| panic!("no final response to the spoofed {method}"))
}

#[test]
fn spoofed_in_dialog_requests_are_refused_and_the_real_bye_ends_the_call() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut call = up(invite(srs(&d), 2));
    let evil = attacker_socket();
    let me = evil.local_addr().unwrap();
    // CSeq numbers far ahead of the SRC's: had they been taken, its BYE would be 500.
    let spoofs: Vec<(&str, String)> = [
        ("INVITE", "application/sdp", inactive_offer()),
        (
            "INFO",
            "application/rs-metadata+xml",
            fake_metadata(5, 1000),
        ),
        ("BYE", "", String::new()),
    ]
    .iter()
    .enumerate()
    .map(|(i, (m, ct, body))| (*m, call.request(m, me, Some(900 + i as u32), ct, body)))
    .collect();
    // The attacker strikes in the middle of 2 s of audio, which goes on meanwhile (a
    // pause in the SRC's packets would itself change the recording).
    let srs_addr = call.srs();
    let attack = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        spoofs
            .iter()
            .map(|(method, msg)| {
                evil.send_to(msg.as_bytes(), srs_addr).unwrap();
                (method.to_string(), response_on(&evil, method))
            })
            .collect::<Vec<_>>()
    });
    call.stream(2000);
    for (method, resp) in attack.join().unwrap() {
        assert!(
            resp.starts_with("SIP/2.0 403 Forbidden (not from the dialog's peer)"),
            "spoofed {method}: {resp}"
        );
    }
    let sent = call.packets;
    end_of_audio();
    assert!(call.bye(), "the real SRC's BYE was not answered 200");
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let detail = show(&d, &id);
    for kind in ["pause", "hold"] {
        assert!(
            events_of(&detail, kind).is_empty(),
            "the spoofed re-INVITE acted: {}",
            detail["events"]
        );
    }
    let text = detail.to_string();
    assert!(
        !text.contains("evil.example"),
        "spoofed metadata stored: {text}"
    );
    let w = export(&d, &id, dir.path());
    let burst = tone_burst(sent);
    for ch in 0..2 {
        expect_bursts(&format!("channel {ch}"), &w.data[ch], &[&burst]);
    }
    let st = status_json(&d);
    assert_eq!(st["sip_binding"]["sip_foreign_peer"], 3, "{st}");
}

#[test]
fn metadata_beyond_the_per_call_cap_is_refused() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_sip(dir.path(), "max_metadata_versions = 5", "");
    let mut call = up(invite(srs(&d), 3));
    call.stream(200);
    let me = call.sip_local();
    // The finding's flood, from the SRC itself: 12 INFOs of 58 KB each.
    let doc = fake_metadata(40, 50_000);
    let mut codes = Vec::new();
    for _ in 0..12 {
        let msg = call.request("INFO", me, None, "application/rs-metadata+xml", &doc);
        let resp = call
            .send_request(&msg, "INFO")
            .expect("no final response to an INFO");
        let code = siprec_client::status(&resp);
        if code == 403 {
            assert!(
                resp.starts_with(
                    "SIP/2.0 403 Forbidden (metadata version cap of 5 per call reached)"
                ),
                "{resp}"
            );
        }
        codes.push(code);
    }
    // INVITE + 4 INFOs = 5 versions kept; the other 8 refused.
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 8, "{codes:?}");
    assert!(call.bye());
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let detail = show(&d, r["id"].as_str().unwrap());
    let versions = detail["metadata_versions"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_else(|| panic!("no metadata_versions in {detail}"));
    assert_eq!(versions, 5);
    let st = status_json(&d);
    assert_eq!(st["sip_binding"]["metadata_refused"], 8, "{st}");
}

#[test]
fn a_spoofed_via_received_does_not_reach_catalogue_or_manifest() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut call = up(invite_with(srs(&d), 4, ";received=10.20.0.5;rport=5099"));
    let real = call.sip_local().to_string();
    call.stream(400);
    end_of_audio();
    assert!(call.bye());
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let detail = show(&d, r["id"].as_str().unwrap());
    assert_eq!(detail["src_addr"], real.as_str(), "catalogue: {detail}");
    // The signed manifest beside the recording attests the socket's address too.
    let manifests = daemon::files_named(&dir.path().join("data"), ".manifest.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(m["metadata"]["src_addr"], real.as_str(), "manifest: {m}");
    let hits = daemon::files_containing(&dir.path().join("data"), b"10.20.0.5");
    assert!(hits.is_empty(), "the spoofed address is stored in {hits:?}");
}

/// The two-stream offer of an SRC behind NAT: its SDP names a private address the
/// packets never come from (192.0.2.10: TEST-NET-1, nothing is ever sent there).
const SDP_BEHIND_NAT: &str =
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
     m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n\
     m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n";

/// 20 ms of the SRC's tone (160 µ-law samples), as `Call::send_packet` sends it.
fn tone_payload() -> Vec<u8> {
    TONE_ULAW.iter().copied().cycle().take(160).collect()
}

/// `To` tag of a response.
fn to_tag(resp: &str) -> String {
    resp.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// The audio ports of an SDP answer.
fn answer_ports(resp: &str) -> Vec<u16> {
    resp.lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// Finding 1 with `[media] source_binding = "latch"` (SRCs behind NAT): the first source
/// within the latch window takes the channels and is recorded bit-exact; a second source
/// afterwards — inside the window and after it — is dropped and counted. (Seen failing
/// with `"strict"`: every packet dropped, `received` 0.)
#[test]
fn latched_source_is_recorded_and_a_second_source_is_dropped() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    // 2 s window (the default): the NAT'ed SRC's first packet follows the 200 within
    // milliseconds; the window is measured from the offer on the daemon's clock, so only a
    // 2 s stall between answering and the first datagram would miss it.
    let d = Daemon::start_with_sections(
        dir.path(),
        "",
        "source_binding = \"latch\"\nlatch_window_ms = 2000",
        "",
    );
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sip.local_addr().unwrap();
    let inv = siprec_client::invite_text(srs(&d), me, 41, SDP_BEHIND_NAT);
    sip.send_to(inv.as_bytes(), srs(&d)).unwrap();
    let resp = siprec_client::recv_until(
        &sip,
        |m| siprec_client::status(m) >= 200,
        Duration::from_secs(30),
    )
    .expect("no answer to the INVITE");
    assert_eq!(siprec_client::status(&resp), 200, "{resp}");
    let call_id = format!("call-41-{}@test", std::process::id());
    let tag = to_tag(&resp);
    let ack = format!(
        "ACK sip:srs@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-41-ack\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag=src41\r\nTo: <sip:srs@127.0.0.1>;tag={tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        srs(&d)
    );
    sip.send_to(ack.as_bytes(), srs(&d)).unwrap();
    let ports = answer_ports(&resp);
    assert_eq!(ports.len(), 2, "{resp}");
    let targets: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    // The NAT's public side: 127.0.0.3, neither the SDP address nor the SRC's SIP address.
    let nat: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.3:0").expect("binding 127.0.0.3"))
        .collect();
    let evil = attacker_socket();
    let tone = tone_payload();
    const PACKETS: u32 = 150;
    let mut injected = 0u32;
    let start = Instant::now();
    for k in 0..PACKETS {
        let due = start + Duration::from_millis(20 * u64::from(k));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        for (i, s) in nat.iter().enumerate() {
            let p = rtp(1000 + k as u16, k * 160, 0x1000_0000 + i as u32, &tone);
            s.send_to(&p, targets[i]).unwrap();
        }
        // The second source: inside the window (packets 10..40, 0.2-0.8 s after the
        // first) and after it (120..140, 2.4-2.8 s), with its own SSRC and with the
        // latched one. Either way it must not be taken.
        if (10..40).contains(&k) || (120..140).contains(&k) {
            let loud = [0x80u8; 160];
            let fresh = rtp(5000 + k as u16, 800_000 + k * 160, 0xbad0_0001, &loud);
            let same = rtp(1001 + k as u16, (k + 1) * 160, 0x1000_0001, &loud);
            evil.send_to(&fresh, targets[0]).unwrap();
            evil.send_to(&same, targets[1]).unwrap();
            injected += 1;
        }
    }
    end_of_audio();
    let bye = format!(
        "BYE sip:srs@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-41-bye\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag=src41\r\nTo: <sip:srs@127.0.0.1>;tag={tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        srs(&d)
    );
    sip.send_to(bye.as_bytes(), srs(&d)).unwrap();
    // The 200 follows closing the recording: well under a second idle, 15 s loaded.
    let ok = siprec_client::recv_until(
        &sip,
        |m| m.contains(" BYE\r\n") && siprec_client::status(m) == 200,
        Duration::from_secs(15),
    );
    assert!(ok.is_some(), "BYE not answered 200");
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let detail = show(&d, &id);
    for ch in 0..2 {
        let s = channel_stats(&detail, ch);
        assert_eq!(
            s["rtp_foreign_source"],
            u64::from(injected),
            "channel {ch}: {s}"
        );
        assert_eq!(s["received"], u64::from(PACKETS), "channel {ch}: {s}");
        assert_eq!(s["ssrc_changes"], 0, "channel {ch}: {s}");
    }
    let w = export(&d, &id, dir.path());
    let burst = tone_burst(PACKETS);
    for ch in 0..2 {
        expect_bursts(&format!("channel {ch}"), &w.data[ch], &[&burst]);
    }
}

/// Reads one SIP message from a TCP stream (framed by Content-Length), bounded by the
/// stream's read timeout.
fn read_tcp_message(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    // At most 64 reads: a SIP response is a few hundred bytes.
    for _ in 0..64 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    let k = k.trim();
                    (k.eq_ignore_ascii_case("content-length") || k == "l")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

/// Sends `msg` over `s` and waits for the final response to `method`.
fn tcp_request(s: &mut std::net::TcpStream, msg: &str, method: &str) -> String {
    use std::io::Write;
    s.write_all(msg.as_bytes()).unwrap();
    let mut buf = Vec::new();
    // Provisional responses first; a final one within the stream's 15 s read timeout.
    for _ in 0..8 {
        let m = read_tcp_message(s, &mut buf)
            .unwrap_or_else(|| panic!("no response to {method} over TCP"));
        if siprec_client::status(&m) >= 200 && m.contains(&format!(" {method}\r\n")) {
            return m;
        }
    }
    panic!("no final response to {method} over TCP");
}

/// A TCP connection from a chosen loopback address (std cannot bind before connecting;
/// tokio's `TcpSocket` can), handed back as a blocking std stream with a read timeout
/// (a response takes milliseconds idle; 15 s bounds a loaded machine).
fn tcp_from(local: [u8; 4], d: &Daemon) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let to = srs(d);
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((local, 0))).unwrap();
        sock.connect(to).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Finding 2 over TCP, as docs/architecture.md ("The data path of an INVITE") states the
/// binding: an in-dialog request must come on the dialog's connection *or from its
/// address*. The SRC's connection drops and it reconnects from the same address: its BYE
/// on the new connection is taken. The same BYE from 127.0.0.2 over TCP is refused 403
/// and counted.
#[test]
fn tcp_dialog_survives_a_reconnect_but_not_another_address() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c1 = tcp_from([127, 0, 0, 1], &d);
    let me = c1.local_addr().unwrap();
    let call_id = format!("call-42-{}@test", std::process::id());
    let inv = siprec_client::invite_text(srs(&d), me, 42, siprec_client::SDP_TWO_STREAMS)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace(
            &format!("<sip:src@{me}>"),
            &format!("<sip:src@{me};transport=tcp>"),
        );
    let resp = tcp_request(&mut c1, &inv, "INVITE");
    assert_eq!(siprec_client::status(&resp), 200, "{resp}");
    let tag = to_tag(&resp);
    let ports = answer_ports(&resp);
    assert_eq!(ports.len(), 2, "{resp}");
    let in_dialog = |method: &str, cseq: u32, via: SocketAddr, branch: &str| {
        format!(
            "{method} sip:srs@{0} SIP/2.0\r\nVia: SIP/2.0/TCP {via};branch=z9hG4bK-42-{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag=src42\r\nTo: <sip:srs@127.0.0.1>;tag={tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            srs(&d)
        )
    };
    {
        use std::io::Write;
        c1.write_all(in_dialog("ACK", 1, me, "ack").as_bytes())
            .unwrap();
    }
    // Audio from the SRC's own address throughout.
    let rtp_socks: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let tone = tone_payload();
    let send_audio = |from_k: u32, n: u32| {
        let start = Instant::now();
        for k in from_k..from_k + n {
            let due = start + Duration::from_millis(20 * u64::from(k - from_k));
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            for (i, s) in rtp_socks.iter().enumerate() {
                let p = rtp(2000 + k as u16, k * 160, 0x2000_0000 + i as u32, &tone);
                s.send_to(&p, SocketAddr::from(([127, 0, 0, 1], ports[i])))
                    .unwrap();
            }
        }
    };
    send_audio(0, 50);
    // The connection drops (the SRC restarts its TCP stack); audio goes on.
    drop(c1);
    send_audio(50, 25);
    // The attacker over TCP from 127.0.0.2 with the dialog's identifiers: refused.
    let mut evil = tcp_from(ATTACKER, &d);
    let evil_addr = evil.local_addr().unwrap();
    let r = tcp_request(
        &mut evil,
        &in_dialog("BYE", 2, evil_addr, "evil-bye"),
        "BYE",
    );
    assert!(
        r.starts_with("SIP/2.0 403 Forbidden (not from the dialog's peer)"),
        "BYE from 127.0.0.2 over TCP: {r}"
    );
    send_audio(75, 25);
    end_of_audio();
    // The SRC reconnects from its own address (a new port) and ends the call.
    let mut c2 = tcp_from([127, 0, 0, 1], &d);
    let me2 = c2.local_addr().unwrap();
    assert_ne!(me2, me);
    let r = tcp_request(&mut c2, &in_dialog("BYE", 3, me2, "bye"), "BYE");
    assert_eq!(
        siprec_client::status(&r),
        200,
        "BYE over the new connection: {r}"
    );
    let rec = the_recording(&d);
    assert_eq!(rec["state"], "complete", "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let w = export(&d, &id, dir.path());
    let burst = tone_burst(100);
    for ch in 0..2 {
        expect_bursts(&format!("channel {ch}"), &w.data[ch], &[&burst]);
    }
    let st = status_json(&d);
    assert_eq!(st["sip_binding"]["sip_foreign_peer"], 1, "{st}");
}
