//! Issue #18 step 3: every audio m-line of offer and answer is recorded, bound to its
//! party: channel 2i carries what the caller sends on its i-th audio m-line, 2i+1 what
//! the callee sends on its i-th (docs/capture.md). Early media from another port than
//! the answer's stays on the callee's channel.

mod capture_common;

use capture_common::gen::*;
use capture_common::*;
use std::net::SocketAddr;
use std::path::Path;

fn import(dir: &Path, args: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let cfg = config(dir, "");
    let mut a = vec!["import-pcap", "--json", "--config", cfg.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = run_ok(&a);
    (cfg, serde_json::from_str(&out).unwrap())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pcm(b: &[u8]) -> Vec<i16> {
    b.iter()
        .map(|&x| branchrec::media::ulaw_to_linear(x))
        .collect()
}

/// Sends `n` 20 ms PCMU packets from `src` to `dst` from `t` on; returns the samples.
fn stream(
    cap: &mut Pcap,
    t: std::time::Duration,
    src: SocketAddr,
    dst: SocketAddr,
    seed: u32,
    n: u32,
    ssrc: u32,
) -> Vec<i16> {
    let mut out = Vec::new();
    for k in 0..n {
        let pl = tone_ulaw(seed, k * 160, 160);
        out.extend(pcm(&pl));
        cap.udp(
            t + MS(u64::from(k) * 20),
            src,
            dst,
            &branchrec::capture::frame::rtp(0, k as u16, k * 160, ssrc, k == 0, &pl),
        );
    }
    out
}

fn assert_contains(chan: &[i16], want: &[i16], what: &str) {
    let at = find_exact(chan, &want[..320]).unwrap_or_else(|| panic!("{what}: audio not found"));
    assert_eq!(&chan[at..at + want.len()], want, "{what}");
}

#[test]
fn two_audio_streams_per_party_and_early_media_on_another_port() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cap = Pcap::default();
    let t0 = MS(1_700_000_000_000);
    let pcmu: &[&str] = &["a=sendrecv"];

    // Call 1: two audio m-lines each side.
    let d = Dialog::new("two-streams@test", "10.60.0.1:5060", "10.60.0.2:5060");
    d.request(
        &mut cap,
        t0,
        "INVITE",
        1,
        false,
        &sdp(
            "10.60.0.1",
            &[(40000, "RTP/AVP", "0", pcmu), (40002, "RTP/AVP", "0", pcmu)],
        ),
    );
    d.response(
        &mut cap,
        t0 + MS(100),
        "200 OK",
        "1 INVITE",
        &sdp(
            "10.60.0.2",
            &[(50000, "RTP/AVP", "0", pcmu), (50002, "RTP/AVP", "0", pcmu)],
        ),
    );
    d.request(&mut cap, t0 + MS(110), "ACK", 1, true, "");
    let t1 = t0 + MS(120);
    let s0 = stream(
        &mut cap,
        t1,
        addr("10.60.0.1:40000"),
        addr("10.60.0.2:50000"),
        1,
        50,
        1,
    );
    let s1 = stream(
        &mut cap,
        t1,
        addr("10.60.0.2:50000"),
        addr("10.60.0.1:40000"),
        2,
        50,
        2,
    );
    let s2 = stream(
        &mut cap,
        t1,
        addr("10.60.0.1:40002"),
        addr("10.60.0.2:50002"),
        3,
        50,
        3,
    );
    let s3 = stream(
        &mut cap,
        t1,
        addr("10.60.0.2:50002"),
        addr("10.60.0.1:40002"),
        4,
        50,
        4,
    );
    d.request(&mut cap, t1 + MS(1100), "BYE", 2, true, "");

    // Call 2: 183 with early media from port 50010, the 200 answers with port 50020.
    let e = Dialog::new("early-media@test", "10.61.0.1:5060", "10.61.0.2:5060");
    e.request(
        &mut cap,
        t0,
        "INVITE",
        1,
        false,
        &sdp("10.61.0.1", &[(40010, "RTP/AVP", "0", pcmu)]),
    );
    e.response(
        &mut cap,
        t0 + MS(50),
        "183 Session Progress",
        "1 INVITE",
        &sdp("10.61.0.2", &[(50010, "RTP/AVP", "0", pcmu)]),
    );
    let early = stream(
        &mut cap,
        t0 + MS(60),
        addr("10.61.0.2:50010"),
        addr("10.61.0.1:40010"),
        5,
        25,
        5,
    );
    e.response(
        &mut cap,
        t0 + MS(600),
        "200 OK",
        "1 INVITE",
        &sdp("10.61.0.2", &[(50020, "RTP/AVP", "0", pcmu)]),
    );
    let answered = stream(
        &mut cap,
        t0 + MS(610),
        addr("10.61.0.2:50020"),
        addr("10.61.0.1:40010"),
        6,
        25,
        6,
    );
    let caller = stream(
        &mut cap,
        t0 + MS(610),
        addr("10.61.0.1:40010"),
        addr("10.61.0.2:50020"),
        7,
        25,
        7,
    );
    e.request(&mut cap, t0 + MS(1200), "BYE", 2, true, "");

    let pcap = dir.join("streams.pcap");
    cap.write(&pcap);
    let (cfg, rep) = import(dir, &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 2, "{rep}");
    let recs = list(&cfg);

    let r = recs
        .iter()
        .find(|r| r["call_id"] == "two-streams@test")
        .unwrap();
    assert_eq!(r["state"], "complete", "{r}");
    let s = show(&cfg, r["id"].as_str().unwrap());
    let chans = s["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 4, "{s}");
    for (ch, c) in chans.iter().enumerate() {
        assert_eq!(
            c["participant_id"],
            if ch % 2 == 0 { "caller" } else { "callee" },
            "{c}"
        );
    }
    let samples = export(&cfg, dir, r["id"].as_str().unwrap());
    for (ch, want) in [&s0, &s1, &s2, &s3].into_iter().enumerate() {
        let chan = channel(&samples, ch, 4);
        assert_contains(&chan, want, &format!("two streams ch{ch}"));
        assert_eq!(s["stats"][ch]["received"], 50, "ch{ch}: {}", s["stats"][ch]);
    }

    let r = recs
        .iter()
        .find(|r| r["call_id"] == "early-media@test")
        .unwrap();
    assert_eq!(r["state"], "complete", "{r}");
    let s = show(&cfg, r["id"].as_str().unwrap());
    assert_eq!(s["channels"].as_array().unwrap().len(), 2);
    let samples = export(&cfg, dir, r["id"].as_str().unwrap());
    let c1 = channel(&samples, 1, 2);
    assert_contains(&c1, &early, "early media on the callee's channel");
    assert_contains(&c1, &answered, "answered audio on the callee's channel");
    assert_contains(&channel(&samples, 0, 2), &caller, "caller");
    assert_eq!(s["stats"][1]["received"], 50, "{}", s["stats"][1]);
}

const METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="S1"><sipSessionID>ab30317f;remote=47755a9d</sipSessionID></session>
  <participant participant_id="PA"><nameID aor="sip:alice@atlanta.com"><name>Alice</name></nameID></participant>
  <participant participant_id="PB"><nameID aor="sip:bob@biloxy.com"><name>Bob</name></nameID></participant>
  <stream stream_id="SB" session_id="S1"><label>98</label></stream>
  <stream stream_id="SA" session_id="S1"><label>96</label></stream>
  <participantstreamassoc participant_id="PB"><send>SB</send><recv>SA</recv></participantstreamassoc>
  <participantstreamassoc participant_id="PA"><send>SA</send><recv>SB</recv></participantstreamassoc>
</recording>"#;

#[test]
fn mirrored_siprec_session_is_recorded_as_the_original_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cap = Pcap::default();
    let t0 = MS(1_700_000_000_000);
    let (src, srs): (SocketAddr, SocketAddr) = (addr("10.70.0.1:5060"), addr("10.70.0.9:5060"));
    // The SRC's offer: Bob's stream (label 98) on the first m-line, Alice's second.
    let offer = sdp(
        "10.70.0.1",
        &[
            (41000, "RTP/AVP", "0", &["a=label:98", "a=sendonly"]),
            (41002, "RTP/AVP", "0", &["a=label:96", "a=sendonly"]),
        ],
    );
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{offer}\r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{METADATA}\r\n--b1--\r\n"
    );
    let invite = format!(
        "INVITE sip:srs@10.70.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.70.0.1;branch=z9hG4bKs1\r\nFrom: <sip:src@10.70.0.1>;tag=src1\r\nTo: <sip:srs@10.70.0.9>\r\nCall-ID: siprec-mirror@test\r\nCSeq: 1 INVITE\r\nContact: <sip:src@10.70.0.1>;+sip.src\r\nRequire: siprec\r\nContent-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    cap.udp(t0, src, srs, invite.as_bytes());
    let answer = sdp(
        "10.70.0.9",
        &[
            (60000, "RTP/AVP", "0", &["a=label:98", "a=recvonly"]),
            (60002, "RTP/AVP", "0", &["a=label:96", "a=recvonly"]),
        ],
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.70.0.1;branch=z9hG4bKs1\r\nFrom: <sip:src@10.70.0.1>;tag=src1\r\nTo: <sip:srs@10.70.0.9>;tag=srs1\r\nCall-ID: siprec-mirror@test\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:recorder@vendor.example>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len()
    );
    cap.udp(t0 + MS(50), srs, src, ok.as_bytes());
    let bob = stream(
        &mut cap,
        t0 + MS(100),
        addr("10.70.0.1:41000"),
        addr("10.70.0.9:60000"),
        1,
        40,
        1,
    );
    let alice = stream(
        &mut cap,
        t0 + MS(100),
        addr("10.70.0.1:41002"),
        addr("10.70.0.9:60002"),
        2,
        40,
        2,
    );
    let pcap = dir.join("siprec.pcap");
    cap.write(&pcap);
    let (cfg, rep) = import(dir, &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{rep}");
    let r = &list(&cfg)[0];
    assert_eq!(r["state"], "complete", "{r}");
    let s = show(&cfg, r["id"].as_str().unwrap());
    let chans = s["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 2, "one channel per recorded stream: {s}");
    // The participants of the recorded call, from the metadata, in m-line order.
    assert_eq!(chans[0]["aor"], "sip:bob@biloxy.com", "{s}");
    assert_eq!(chans[1]["aor"], "sip:alice@atlanta.com", "{s}");
    assert_eq!(chans[0]["mapping_source"], "metadata");
    assert_eq!(participant(&s, "caller")["name"], "Bob");
    assert_eq!(
        participant(&s, "callee")["name"],
        "Alice",
        "not the SRS's identity"
    );
    let samples = export(&cfg, dir, r["id"].as_str().unwrap());
    assert_contains(&channel(&samples, 0, 2), &bob, "Bob on channel 0");
    assert_contains(&channel(&samples, 1, 2), &alice, "Alice on channel 1");
}
