//! Cisco UCM built-in-bridge (BiB) recording: the recording server core driven in
//! simulated time with the INVITE/ACK/re-INVITE series UCM sends (From tags from Cisco
//! Unified CM 15 "Recording Use Cases", basic call Step 5/Step 6 and the transfer's
//! Step 14), no sockets. See docs/cisco-bib.md.

mod common;

use branchrec::time::Mono;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

use branchrec::sdp::Direction;
use branchrec::sip::{parse_datagram, Endpoint, EndpointConfig, Message, Peer, Transport};
use branchrec::siprec::cisco_bib::{BibLeg, Pairer, Placement, Side};
use branchrec::siprec::srs::{Srs, SrsConfig, SrsEvent};

const UCM: &str = "192.0.2.30:5060";

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: UCM.parse::<SocketAddr>().unwrap(),
        local: "127.0.0.1:5060".parse::<SocketAddr>().unwrap(),
        conn: None,
    }
}

fn server() -> Srs {
    let ep = Endpoint::new(EndpointConfig {
        seed: 11,
        ..EndpointConfig::default()
    });
    Srs::new(
        ep,
        SrsConfig {
            sdp_addr: "127.0.0.1".parse().unwrap(),
            sdp_username: "branchrec".into(),
            session_id_seed: 500,
            srtp_key_seed: [3; 32],
        },
    )
}

fn responses(srs: &mut Srs) -> Vec<Message> {
    let mut out = vec![];
    while let Some(t) = srs.poll_transmit() {
        out.push(parse_datagram(&t.data).expect("our own responses parse"));
    }
    out
}

fn events(srs: &mut Srs) -> Vec<SrsEvent> {
    let mut out = vec![];
    while let Some(e) = srs.poll_event() {
        out.push(e);
    }
    out
}

/// `x-nearend` or `x-farend` leg of the basic call (refci ci2, far end ci1).
fn from_of(side: &str, refci: &str, far_refci: &str, far_addr: &str, tag: &str) -> String {
    format!(
        "<sip:2000@ucm1;{side};x-refci={refci};x-nearenddevice=SEP0011223344AA;\
         x-farendrefci={far_refci};x-farenddevice=SEP0011223344BB;x-farendaddr={far_addr};\
         x-nearendclusterid=StandAloneCluster>;tag={tag}"
    )
}

fn invite(call_id: &str, from: &str, branch: &str, cseq: u32, sdp: Option<&str>) -> String {
    let (ct, body) = match sdp {
        Some(s) => ("Content-Type: application/sdp\r\n", s.to_string()),
        None => ("", String::new()),
    };
    format!(
        "INVITE sip:rec@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UCM};branch={branch}\r\n\
         Max-Forwards: 70\r\nCall-ID: {call_id}\r\nFrom: {from}\r\nTo: <sip:rec@127.0.0.1>{}\r\n\
         CSeq: {cseq} INVITE\r\nContact: <sip:2000@{UCM};transport=udp>\r\n\
         User-Agent: Cisco-CUCM15.0\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        if cseq > 101 { ";tag=TOTAG" } else { "" },
        body.len()
    )
}

fn ack(call_id: &str, from: &str, to_tag: &str, cseq: u32, sdp: Option<&str>) -> String {
    let (ct, body) = match sdp {
        Some(s) => ("Content-Type: application/sdp\r\n", s.to_string()),
        None => ("", String::new()),
    };
    format!(
        "ACK sip:rec@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UCM};branch=z9hG4bK-ack{cseq}{to_tag}\r\n\
         Max-Forwards: 70\r\nCall-ID: {call_id}\r\nFrom: {from}\r\nTo: <sip:rec@127.0.0.1>;tag={to_tag}\r\n\
         CSeq: {cseq} ACK\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The phone's SDP in UCM's ACK: it sends only, PCMA chosen from our offer.
fn phone_sdp(port: u16, dir: &str) -> String {
    format!(
        "v=0\r\no=CiscoSystemsCCM-SIP 2000 1 IN IP4 192.0.2.40\r\ns=SIP Call\r\n\
         c=IN IP4 192.0.2.40\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na={dir}\r\n"
    )
}

#[test]
fn delayed_offer_bib_leg_is_offered_recvonly_answered_by_ack_and_held_by_reinvite() {
    let t0 = Mono::from_secs(100);
    let mut srs = server();
    let from = from_of("x-nearend", "ci2", "ci1", "1000", "fromtag1");
    srs.handle_receive(
        t0,
        peer(),
        invite("bib-1@ucm1", &from, "z9hG4bK-n1", 101, None).as_bytes(),
    );
    let r = responses(&mut srs);
    assert_eq!(
        r.iter().filter_map(|m| m.status()).collect::<Vec<_>>(),
        vec![100]
    );
    let offer = match events(&mut srs).pop() {
        Some(SrsEvent::Offered(o)) => o,
        other => panic!("expected an offer, got {other:?}"),
    };
    assert!(offer.delayed_offer);
    let bib = offer.bib.clone().expect("BiB tags read");
    assert_eq!(bib.side, Side::Near);
    assert_eq!(
        (bib.refci.as_str(), bib.farendrefci.as_deref()),
        ("ci2", Some("ci1"))
    );
    assert_eq!(bib.nearendaddr.as_deref(), Some("2000"));
    assert_eq!(bib.farendaddr.as_deref(), Some("1000"));
    assert_eq!(offer.recordable, vec![0]);
    let call = offer.call;

    srs.accept(t0, call, &[41000]);
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status(), Some(200));
    let ours = String::from_utf8(r[0].body.clone()).unwrap();
    assert!(ours.contains("m=audio 41000 RTP/AVP 0 8"), "{ours}");
    assert!(ours.contains("a=recvonly"), "{ours}");
    assert!(ours.contains("a=rtpmap:8 PCMA/8000"), "{ours}");
    let to_tag = r[0]
        .header("To")
        .and_then(|t| t.split("tag=").nth(1))
        .unwrap()
        .to_string();

    // ACK with the phone's answer: the negotiated stream is PCMA from 192.0.2.40:24580.
    let a = ack(
        "bib-1@ucm1",
        &from,
        &to_tag,
        101,
        Some(&phone_sdp(24580, "sendonly")),
    );
    srs.handle_receive(t0 + Duration::from_millis(20), peer(), a.as_bytes());
    let ev = events(&mut srs);
    match ev.as_slice() {
        [SrsEvent::MediaUpdated {
            streams,
            sip_method,
            ..
        }, SrsEvent::Established { .. }] => {
            assert_eq!(sip_method, "ACK");
            let s = streams[0].as_ref().expect("stream negotiated");
            assert_eq!(s.port, Some(41000));
            assert_eq!(s.remote, Some("192.0.2.40:24580".parse().unwrap()));
            let enc: Vec<&str> = s.formats.iter().map(|f| f.encoding.as_str()).collect();
            assert_eq!(enc, ["PCMA"]);
            assert_eq!(s.direction, Direction::RecvOnly);
        }
        other => panic!("{other:?}"),
    }

    // Hold: re-INVITE with a=inactive → the stream pauses; resume with sendonly.
    let reinv = invite(
        "bib-1@ucm1",
        &from,
        "z9hG4bK-n2",
        102,
        Some(&phone_sdp(24580, "inactive")),
    )
    .replace(
        "To: <sip:rec@127.0.0.1>;tag=TOTAG",
        &format!("To: <sip:rec@127.0.0.1>;tag={to_tag}"),
    );
    srs.handle_receive(t0 + Duration::from_secs(5), peer(), reinv.as_bytes());
    let r = responses(&mut srs);
    assert_eq!(r.last().and_then(|m| m.status()), Some(200));
    match events(&mut srs).as_slice() {
        [SrsEvent::MediaUpdated { streams, .. }] => {
            assert!(branchrec::siprec::srs::stream_on_hold(
                streams[0].as_ref().unwrap()
            ));
        }
        other => panic!("{other:?}"),
    }
    let a = ack("bib-1@ucm1", &from, &to_tag, 102, None);
    srs.handle_receive(t0 + Duration::from_secs(5), peer(), a.as_bytes());
    assert!(
        events(&mut srs).is_empty(),
        "an ACK without SDP after an answered re-INVITE"
    );
    let reinv = invite(
        "bib-1@ucm1",
        &from,
        "z9hG4bK-n3",
        103,
        Some(&phone_sdp(24580, "sendonly")),
    )
    .replace(
        "To: <sip:rec@127.0.0.1>;tag=TOTAG",
        &format!("To: <sip:rec@127.0.0.1>;tag={to_tag}"),
    );
    srs.handle_receive(t0 + Duration::from_secs(9), peer(), reinv.as_bytes());
    let _ = responses(&mut srs);
    match events(&mut srs).as_slice() {
        [SrsEvent::MediaUpdated { streams, .. }] => {
            assert!(!branchrec::siprec::srs::stream_on_hold(
                streams[0].as_ref().unwrap()
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn offerless_invites_without_bib_tags_are_still_refused() {
    let mut srs = server();
    let from = "<sip:src@192.0.2.30>;tag=plain";
    srs.handle_receive(
        Mono::from_secs(1),
        peer(),
        invite("plain@x", from, "z9hG4bK-p", 101, None).as_bytes(),
    );
    let codes: Vec<u16> = responses(&mut srs)
        .iter()
        .filter_map(|m| m.status())
        .collect();
    // As before this change: an empty body is a bad request (400), no session.
    assert_eq!(codes.last(), Some(&400), "{codes:?}");
    assert!(events(&mut srs).is_empty());
}

#[test]
fn two_legs_pair_into_one_call_and_a_transfer_starts_another() {
    let t0 = Mono::from_secs(100);
    let mut srs = server();
    let mut pairer = Pairer::new(Duration::from_secs(10), 64);
    let mut legs = vec![];
    for (i, (side, refci, far, addr)) in [
        ("x-nearend", "ci2", "ci1", "1000"),
        ("x-farend", "ci2", "ci1", "1000"),
        // Transfer (Step 14): the recorded phone's leg gets a new far end → new refci pair.
        ("x-nearend", "ci3", "ci4", "2001"),
    ]
    .iter()
    .enumerate()
    {
        let from = from_of(side, refci, far, addr, &format!("ft{i}"));
        let inv = invite(
            &format!("bib-{i}@ucm1"),
            &from,
            &format!("z9hG4bK-l{i}"),
            101,
            None,
        );
        srs.handle_receive(t0, peer(), inv.as_bytes());
        let _ = responses(&mut srs);
        let o = match events(&mut srs).pop() {
            Some(SrsEvent::Offered(o)) => o,
            other => panic!("{other:?}"),
        };
        let bib: BibLeg = o.bib.clone().unwrap();
        legs.push(pairer.add(t0, o.call, &bib));
    }
    assert_eq!(legs[0], Placement::First);
    assert!(matches!(legs[1], Placement::Joins { .. }));
    assert_eq!(legs[2], Placement::First, "a transfer is a new recording");
    let lonely = pairer.expired(t0 + Duration::from_secs(10));
    assert_eq!(lonely.len(), 1, "only the transfer's near leg is one-sided");
    assert_eq!(lonely[0].side, Side::Near);
    assert_eq!(lonely[0].key.refci, "ci3");
}

/// Through the daemon: one delayed-offer near leg (tests/sipp/cisco_bib_leg.xml) whose far
/// leg never comes is recorded, carries a `bib.leg` event with its tags and, after the
/// pairing timeout, a `bib.one_sided` event naming the missing side.
#[test]
fn a_lone_delayed_offer_leg_is_recorded_and_marked_one_sided() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    require_tool("sipp", "sip-tester");
    let mut d = Daemon::start(dir);
    let run = run_sipp_with(
        "cisco_bib_leg.xml",
        d.sip_port,
        &[],
        dir,
        Duration::from_secs(60),
        &[],
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    wait_settled(&d, 1);
    let list = d.recordings_json(&["list", "--json"]);
    let list = list.as_array().expect("list array").clone();
    assert_eq!(list.len(), 1, "{list:?}\n{}", d.log_text());
    let id = list[0]["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| list[0]["id"].to_string());
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let events = detail["events"].as_array().expect("events");
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
            .clone()
    };
    let leg = find("bib.leg");
    let leg_d = leg.to_string().replace('\\', "");
    for want in ["\"near\"", "ci2", "ci1", "1000", "deviceB", "\"first\""] {
        assert!(leg_d.contains(want), "{want} not in {leg}");
    }
    let lone = find("bib.one_sided");
    let lone_d = lone.to_string().replace('\\', "");
    assert!(lone_d.contains("\"missing\":\"far\""), "{lone}");
    let at = lone["at_ms"].as_u64().unwrap();
    assert!(
        (9_000..=12_500).contains(&at),
        "one-sided mark at {at} ms, timeout is 10 s"
    );
    d.stop();
}
