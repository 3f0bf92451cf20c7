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
