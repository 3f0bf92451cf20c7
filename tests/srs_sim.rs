//! The recording server core driven in simulated time with real SRC messages
//! (Metaswitch hold/resume series from the shared test data): no sockets, no clock.

use branchrec::time::Mono;
use std::net::SocketAddr;
use std::time::Duration;

use branchrec::sdp::{self, Direction};
use branchrec::sip::{
    parse_datagram, Endpoint, EndpointConfig, Message, Peer, Refusal, Transport, Unavailable,
};
use branchrec::siprec::srs::{Srs, SrsConfig, SrsEvent};

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/../shared/testdata/siprec/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let marker = "# ---- END HEADER (original bytes follow verbatim) ----\n";
    raw.split_once(marker)
        .expect("fixture header marker")
        .1
        .to_string()
}

/// Replace (or add) one header line of a message whose headers end at the first CRLFCRLF.
fn set_header(msg: &str, name: &str, value: &str) -> String {
    let (head, body) = msg.split_once("\r\n\r\n").expect("header/body split");
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut found = false;
    for l in lines.iter_mut().skip(1) {
        if l.to_ascii_lowercase().starts_with(&prefix) {
            *l = format!("{name}: {value}");
            found = true;
        }
    }
    if !found {
        lines.push(format!("{name}: {value}"));
    }
    format!("{}\r\n\r\n{}", lines.join("\r\n"), body)
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: "192.0.2.20:5060".parse::<SocketAddr>().unwrap(),
        local: "127.0.0.1:5060".parse::<SocketAddr>().unwrap(),
        conn: None,
    }
}

fn server() -> Srs {
    let ep = Endpoint::new(EndpointConfig {
        supported: vec!["siprec".into()],
        seed: 7,
        ..EndpointConfig::default()
    });
    Srs::new(
        ep,
        SrsConfig {
            sdp_addr: "127.0.0.1".parse().unwrap(),
            sdp_username: "branchrec".into(),
            session_id_seed: 1000,
            srtp_key_seed: [7; 32],
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

fn status(m: &Message) -> u16 {
    m.status().expect("a response")
}

fn ack(to_tag: &str, cseq: &str, branch: &str) -> String {
    format!(
        "ACK sip:192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\nCall-ID: 1-1234@192.0.2.20\r\n\
         From: <sip:7602922410@192.0.2.20:5060>;tag=1234sipptag001\r\n\
         To: <sip:7603213214@192.0.2.10:5060>;tag={to_tag}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn metaswitch_call_with_hold_and_resume() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();

    // 1. Initial SIPREC INVITE: 100 Trying, then an offer waiting for ports.
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-1",
    );
    srs.handle_receive(t0, peer(), invite.as_bytes());
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![100]);
    let ev = events(&mut srs);
    let offer = match ev.as_slice() {
        [SrsEvent::Offered(o)] => o,
        other => panic!("expected one offer, got {other:?}"),
    };
    assert!(offer.siprec);
    assert_eq!(offer.call_id, "1-1234@192.0.2.20");
    // Metaswitch forks one mixed stream (label 1) that both participants send.
    assert_eq!(offer.recordable, vec![0]);
    assert_eq!(offer.channels.len(), 1);
    assert!(
        offer.channels[0].participant_aor.is_some(),
        "{:?}",
        offer.channels
    );
    let call = offer.call;

    // 2. The shell accepts with two ports: 200 OK with a recvonly answer per m-line.
    srs.accept(t0 + Duration::from_millis(5), call, &[40000]);
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1);
    assert_eq!(status(&r[0]), 200);
    let to_tag = r[0].to_tag().expect("our To tag");
    let answer = sdp::parse(std::str::from_utf8(&r[0].body).unwrap()).unwrap();
    assert_eq!(answer.media.len(), 1);
    assert_eq!(answer.media[0].port, 40000);
    assert_eq!(answer.media[0].direction(&answer), Direction::RecvOnly);
    assert_eq!(answer.media[0].label(), Some("1"));
    let pts: Vec<u8> = answer.media[0].codecs().iter().map(|c| c.pt).collect();
    if cfg!(feature = "g729") {
        assert_eq!(
            pts,
            vec![18, 0, 8],
            "G.729 (g729 build), PCMU, PCMA in offer order"
        );
    } else {
        assert_eq!(
            pts,
            vec![0, 8],
            "G.729 refused, PCMU and PCMA kept in offer order"
        );
    }

    // 3. No ACK yet: the 2xx is retransmitted after T1.
    srs.handle_timeout(t0 + Duration::from_millis(510));
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![200]);

    // 4. ACK: established, and retransmissions stop.
    srs.handle_receive(
        t0 + Duration::from_millis(600),
        peer(),
        ack(&to_tag, "672675354", "z9hG4bK-ack1").as_bytes(),
    );
    assert!(matches!(
        events(&mut srs).as_slice(),
        [SrsEvent::Established { .. }]
    ));
    srs.handle_timeout(t0 + Duration::from_secs(10));
    assert!(
        responses(&mut srs).is_empty(),
        "no retransmission after ACK"
    );

    // 5. re-INVITE with new SDP (SRC moved its port) and a metadata update.
    let hold = fixture("metaswitch-miarec-hold-2.txt");
    let hold = set_header(&hold, "Via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-2");
    let hold = set_header(
        &hold,
        "To",
        &format!("<sip:7603213214@192.0.2.10:5060>;tag={to_tag}"),
    );
    srs.handle_receive(t0 + Duration::from_secs(11), peer(), hold.as_bytes());
    let r = responses(&mut srs);
    let last = r.last().expect("a response");
    assert_eq!(status(last), 200);
    let a2 = sdp::parse(std::str::from_utf8(&last.body).unwrap()).unwrap();
    let offered = sdp::parse(&hold[hold.find("v=0").unwrap()..]).unwrap();
    assert_eq!(
        a2.media.len(),
        offered.media.len(),
        "answer mirrors the offer's m-lines"
    );
    assert_eq!(a2.media[0].port, 40000, "the channel keeps its port");
    let ev = events(&mut srs);
    let updated = ev.iter().find_map(|e| match e {
        SrsEvent::MediaUpdated { streams, .. } => Some(streams.clone()),
        _ => None,
    });
    let streams = updated.expect("media update event");
    assert_eq!(streams.len(), 1);
    assert!(streams[0].is_some());
    assert!(ev.iter().any(
        |e| matches!(e, SrsEvent::Metadata { version, .. } if version.sip_method == "re-INVITE")
    ));

    // 6. A retransmission of the same re-INVITE is absorbed: same answer, no new events.
    srs.handle_receive(t0 + Duration::from_millis(11_100), peer(), hold.as_bytes());
    let r2 = responses(&mut srs);
    assert_eq!(r2.iter().map(status).collect::<Vec<_>>(), vec![200]);
    assert!(events(&mut srs).is_empty());

    // 7. BYE ends the session.
    let bye = format!(
        "BYE sip:192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-bye\r\n\
         Max-Forwards: 70\r\nCall-ID: 1-1234@192.0.2.20\r\n\
         From: <sip:7602922410@192.0.2.20:5060>;tag=1234sipptag001\r\n\
         To: <sip:7603213214@192.0.2.10:5060>;tag={to_tag}\r\nCSeq: 672675360 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    srs.handle_receive(t0 + Duration::from_secs(20), peer(), bye.as_bytes());
    let r = responses(&mut srs);
    assert!(r.iter().any(|m| status(m) == 200));
    assert!(events(&mut srs)
        .iter()
        .any(|e| matches!(e, SrsEvent::Ended { .. })));
    assert_eq!(srs.session_count(), 0);
}

#[test]
fn cannot_record_answers_503_with_retry_after() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    let invite = fixture("metaswitch-miarec-hold-1.txt");
    srs.handle_receive(t0, peer(), invite.as_bytes());
    responses(&mut srs);
    let call = match events(&mut srs).pop() {
        Some(SrsEvent::Offered(o)) => o.call,
        other => panic!("{other:?}"),
    };
    srs.reject(
        t0,
        call,
        Refusal::CannotRecord {
            why: Unavailable::Storage("storage full".into()),
            retry_after_s: 30,
        },
    );
    let r = responses(&mut srs);
    assert_eq!(status(&r[0]), 503);
    assert_eq!(r[0].header("Retry-After"), Some("30"));
    assert_eq!(srs.session_count(), 0);
}

#[test]
fn cancel_before_accept_ends_the_offer() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-c1",
    );
    srs.handle_receive(t0, peer(), invite.as_bytes());
    responses(&mut srs);
    let call = match events(&mut srs).pop() {
        Some(SrsEvent::Offered(o)) => o.call,
        other => panic!("{other:?}"),
    };
    let cancel = "CANCEL sip:7603213214@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-c1\r\n\
        Max-Forwards: 70\r\nCall-ID: 1-1234@192.0.2.20\r\nFrom: <sip:7602922410@192.0.2.20:5060>;tag=1234sipptag001\r\n\
        To: <sip:7603213214@192.0.2.10:5060>\r\nCSeq: 672675354 CANCEL\r\nContent-Length: 0\r\n\r\n";
    srs.handle_receive(t0 + Duration::from_millis(50), peer(), cancel.as_bytes());
    let codes: Vec<u16> = responses(&mut srs).iter().map(status).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert!(events(&mut srs)
        .iter()
        .any(|e| matches!(e, SrsEvent::Ended { call: c, .. } if *c == call)));
    // A late accept from the shell is harmless: nothing is sent.
    srs.accept(t0 + Duration::from_millis(60), call, &[40000, 40002]);
    assert!(responses(&mut srs).is_empty());
}

#[test]
fn offer_without_supported_codec_is_488_and_plain_sdp_is_not_siprec() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    // G.729 only: refused unless this is a `g729` build.
    let g729_only =
        fixture("metaswitch-miarec-hold-1.txt").replace("RTP/AVP 18 0 8", "RTP/AVP 18    ");
    let g729_only = set_header(
        &g729_only,
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-g729only",
    );
    srs.handle_receive(t0, peer(), g729_only.as_bytes());
    let codes: Vec<u16> = responses(&mut srs).iter().map(status).collect();
    if cfg!(feature = "g729") {
        assert_ne!(codes.last(), Some(&488), "{codes:?}");
    } else {
        assert_eq!(codes.last(), Some(&488), "{codes:?}");
    }
    let _ = events(&mut srs);
    // GSM (static PT 3) is never decoded: 488 in every build.
    let invite =
        fixture("metaswitch-miarec-hold-1.txt").replace("RTP/AVP 18 0 8", "RTP/AVP 3     ");
    let invite = set_header(
        &invite,
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-gsm",
    );
    srs.handle_receive(t0, peer(), invite.as_bytes());
    let codes: Vec<u16> = responses(&mut srs).iter().map(status).collect();
    assert_eq!(codes.last(), Some(&488), "{codes:?}");
    assert!(events(&mut srs).is_empty());

    let sdp_only = fixture("negative-non-siprec-sdp-only.txt");
    let msg = format!(
        "INVITE sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-plain\r\n\
         Max-Forwards: 70\r\nCall-ID: plain-1\r\nFrom: <sip:a@192.0.2.20>;tag=p1\r\nTo: <sip:rec@127.0.0.1>\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.20>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
        sdp_only.len(),
        sdp_only
    );
    srs.handle_receive(t0, peer(), msg.as_bytes());
    match events(&mut srs).pop() {
        Some(SrsEvent::Offered(o)) => {
            assert!(!o.siprec, "plain SDP INVITE recognised as not SIPREC");
            assert!(o.not_siprec_reason.is_some());
        }
        other => panic!("{other:?}"),
    }
}

/// Turn a fixture's `m=audio <port> RTP/AVP 18 0 8` into SDES-SRTP with `crypto` lines and
/// fix Content-Length.
fn to_srtp(msg: &str, crypto: &[String]) -> String {
    let start = msg.find("m=audio ").expect("m=audio line");
    let end = start + msg[start..].find("\r\n").expect("line end");
    let mline = msg[start..end].replace("RTP/AVP", "RTP/SAVP");
    let mut lines = mline;
    for c in crypto {
        lines.push_str(&format!("\r\na=crypto:{c}"));
    }
    let out = format!("{}{}{}", &msg[..start], lines, &msg[end..]);
    let body_len = out.split_once("\r\n\r\n").expect("body").1.len();
    set_header(&out, "Content-Length", &body_len.to_string())
}

#[test]
fn srtp_offer_is_answered_with_our_key_and_rekeyed_by_reinvite() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    let k1 = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";
    let k2 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz";
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-s1",
    );
    let invite = to_srtp(
        &invite,
        &[
            format!("1 AES_CM_128_HMAC_SHA1_32 inline:{k2}"),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{k1}|2^31"),
        ],
    );
    srs.handle_receive(t0, peer(), invite.as_bytes());
    responses(&mut srs);
    let ev = events(&mut srs);
    let offer = match ev.as_slice() {
        [SrsEvent::Offered(o)] => o,
        other => panic!("expected one offer, got {other:?}"),
    };
    assert_eq!(offer.recordable, vec![0]);
    let neg = offer.streams[0].srtp.as_ref().expect("SRTP negotiated");
    assert_eq!(neg.tag, 2);
    assert_eq!(neg.policy.keys[0].key.expose(), b"i know all your ");
    assert_eq!(neg.policy.keys[0].lifetime, Some(1 << 31));
    let call = offer.call;
    srs.accept(t0, call, &[40000]);
    let r = responses(&mut srs);
    let body = std::str::from_utf8(&r[0].body).unwrap().to_string();
    assert!(body.contains("m=audio 40000 RTP/SAVP "), "{body}");
    assert_eq!(body.matches("a=crypto:").count(), 1, "{body}");
    assert!(
        body.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{body}"
    );
    assert!(
        !body.contains(k1) && !body.contains(k2),
        "offerer's key echoed: {body}"
    );
    let ours = body
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"))
        .unwrap()
        .to_string();
    let to_tag = r[0].to_tag().expect("our To tag");
    srs.handle_receive(
        t0 + Duration::from_millis(100),
        peer(),
        ack(&to_tag, "672675354", "z9hG4bK-sack").as_bytes(),
    );
    events(&mut srs);

    // re-INVITE with a new key: the channel gets the new policy; our key stays.
    let re = fixture("metaswitch-miarec-hold-2.txt");
    let re = set_header(&re, "Via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-s2");
    let re = set_header(
        &re,
        "To",
        &format!("<sip:7603213214@192.0.2.10:5060>;tag={to_tag}"),
    );
    let re = to_srtp(&re, &[format!("5 AES_CM_128_HMAC_SHA1_80 inline:{k2}")]);
    srs.handle_receive(t0 + Duration::from_secs(2), peer(), re.as_bytes());
    let r = responses(&mut srs);
    let last = r.last().expect("a response");
    assert_eq!(status(last), 200);
    let body2 = std::str::from_utf8(&last.body).unwrap();
    assert!(
        body2.contains(&format!("a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:{ours}")),
        "same suite, same answer key, new tag: {body2}"
    );
    let streams = events(&mut srs)
        .into_iter()
        .find_map(|e| match e {
            SrsEvent::MediaUpdated { streams, .. } => Some(streams),
            _ => None,
        })
        .expect("media update");
    let p = &streams[0].as_ref().unwrap().srtp.as_ref().unwrap().policy;
    assert_eq!(p.keys[0].key.expose(), b"ABCDEFGHIJKLMNOP");

    // An SRTP-only offer without a usable suite: 488.
    let mut srs = server();
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-s3",
    );
    let invite = to_srtp(&invite, &[format!("1 F8_128_HMAC_SHA1_80 inline:{k1}")]);
    srs.handle_receive(t0, peer(), invite.as_bytes());
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).next_back(), Some(488), "{r:?}");
    assert!(events(&mut srs).is_empty());
}

// ---- Session timers (RFC 4028) as UAS, issue #13 item 6 ----

fn timer_server() -> Srs {
    let ep = Endpoint::new(EndpointConfig {
        supported: vec!["siprec".into(), "timer".into()],
        seed: 7,
        ..EndpointConfig::default()
    });
    Srs::new(
        ep,
        SrsConfig {
            sdp_addr: "127.0.0.1".parse().unwrap(),
            sdp_username: "branchrec".into(),
            session_id_seed: 1000,
            srtp_key_seed: [7; 32],
        },
    )
}

/// The Metaswitch INVITE asking for a session timer of `se` (a Session-Expires value).
fn timer_invite(se: &str) -> String {
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-st1",
    );
    let invite = set_header(
        &invite,
        "Supported",
        "resource-priority, siprec, 100rel, timer",
    );
    set_header(&invite, "Session-Expires", se)
}

/// INVITE at `t0`, accepted, ACKed: returns the session's To-tag.
fn timer_call(srs: &mut Srs, t0: Mono, se: &str) -> (String, Message) {
    srs.handle_receive(t0, peer(), timer_invite(se).as_bytes());
    assert_eq!(
        responses(srs).iter().map(status).collect::<Vec<_>>(),
        vec![100]
    );
    let call = match events(srs).as_slice() {
        [SrsEvent::Offered(o)] => o.call,
        other => panic!("{other:?}"),
    };
    srs.accept(t0, call, &[40000]);
    let r = responses(srs);
    assert_eq!(status(&r[0]), 200);
    let ok = r[0].clone();
    let tag = ok.to_tag().unwrap();
    srs.handle_receive(
        t0,
        peer(),
        ack(&tag, "672675354", "z9hG4bK-st-ack").as_bytes(),
    );
    assert!(matches!(
        events(srs).as_slice(),
        [SrsEvent::Established { .. }]
    ));
    (tag, ok)
}

fn update(to_tag: &str, cseq: u32, branch: &str, se: &str) -> String {
    format!(
        "UPDATE sip:192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\nCall-ID: 1-1234@192.0.2.20\r\n\
         From: <sip:7602922410@192.0.2.20:5060>;tag=1234sipptag001\r\n\
         To: <sip:7603213214@192.0.2.10:5060>;tag={to_tag}\r\nCSeq: {cseq} UPDATE\r\n\
         Contact: <sip:7602922410@192.0.2.20:5060>;+sip.src\r\n\
         Supported: timer\r\nSession-Expires: {se}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn ended_reason(srs: &mut Srs) -> Option<String> {
    events(srs).into_iter().find_map(|e| match e {
        SrsEvent::Ended { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn session_timer_is_negotiated_and_refreshes_keep_the_session() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = timer_server();
    let (tag, ok) = timer_call(&mut srs, t0, "120;refresher=uac");
    // The 2xx carries the negotiated timer, the SRC refreshes, and timer is in Supported.
    assert_eq!(ok.header("Session-Expires"), Some("120;refresher=uac"));
    assert!(ok.require().contains(&"timer"), "{:?}", ok.require());
    assert!(ok.supported().contains(&"timer"));
    // Refresh by UPDATE at 50 s (and by re-INVITE at 120 s): each is answered with the timer
    // and moves the expiry (120 - 32 = 88 s after the refresh).
    srs.handle_timeout(t0 + Duration::from_secs(50));
    srs.handle_receive(
        t0 + Duration::from_secs(50),
        peer(),
        update(&tag, 672675355, "z9hG4bK-st-u1", "120;refresher=uac").as_bytes(),
    );
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![200]);
    assert_eq!(r[0].header("Session-Expires"), Some("120;refresher=uac"));
    assert!(r[0].require().contains(&"timer"));
    let reinvite = set_header(
        &timer_invite("120"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-st-ri",
    );
    let reinvite = set_header(&reinvite, "CSeq", "672675356 INVITE");
    let reinvite = set_header(
        &reinvite,
        "To",
        &format!("<sip:7603213214@192.0.2.10:5060>;tag={tag}"),
    );
    srs.handle_timeout(t0 + Duration::from_secs(120));
    assert!(
        responses(&mut srs).is_empty(),
        "no BYE: the UPDATE refreshed the session"
    );
    srs.handle_receive(t0 + Duration::from_secs(120), peer(), reinvite.as_bytes());
    let r = responses(&mut srs);
    let last = r.last().unwrap();
    assert_eq!(status(last), 200);
    assert_eq!(last.header("Session-Expires"), Some("120;refresher=uac"));
    srs.handle_receive(
        t0 + Duration::from_secs(120),
        peer(),
        ack(&tag, "672675356", "z9hG4bK-st-ack2").as_bytes(),
    );
    srs.handle_timeout(t0 + Duration::from_millis(207_900));
    assert!(
        responses(&mut srs).is_empty(),
        "still alive 87.9 s after the re-INVITE"
    );
    assert_eq!(ended_reason(&mut srs), None);
    srs.handle_timeout(t0 + Duration::from_secs(208));
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1);
    assert!(
        matches!(r[0].method(), Some(branchrec::sip::Method::Bye)),
        "{r:?}"
    );
    assert_eq!(
        ended_reason(&mut srs).as_deref(),
        Some("SessionTimerExpired")
    );
}

#[test]
fn missing_refresh_ends_the_session_with_bye_at_expiry() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = timer_server();
    let (tag, ok) = timer_call(&mut srs, t0, "90");
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    // RFC 4028 §10: BYE at 90 - min(32, 90/3) = 60 s. (The INVITE transaction ends at
    // 64*T1 = 32 s first.)
    srs.handle_timeout(t0 + Duration::from_secs(32));
    assert!(responses(&mut srs).is_empty());
    assert_eq!(
        srs.poll_timeout(),
        Some(t0 + Duration::from_secs(60)),
        "the next timer is the session expiry"
    );
    srs.handle_timeout(t0 + Duration::from_millis(59_999));
    assert!(responses(&mut srs).is_empty());
    assert_eq!(ended_reason(&mut srs), None);
    srs.handle_timeout(t0 + Duration::from_secs(60));
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1, "{r:?}");
    let bye = &r[0];
    assert!(matches!(bye.method(), Some(branchrec::sip::Method::Bye)));
    // In the dialog (RFC 3261 12.2.1.1): to the SRC's Contact, our tag in From, theirs in To.
    assert_eq!(bye.request_uri(), Some("sip:7602922410@192.0.2.20:5060"));
    assert_eq!(bye.from_tag().as_deref(), Some(tag.as_str()));
    assert_eq!(bye.to_tag().as_deref(), Some("1234sipptag001"));
    assert_eq!(bye.call_id(), Some("1-1234@192.0.2.20"));
    assert_eq!(bye.cseq().unwrap().0, 1);
    assert_eq!(
        ended_reason(&mut srs).as_deref(),
        Some("SessionTimerExpired")
    );
    assert_eq!(srs.session_count(), 0);
    // Over UDP the BYE is retransmitted (Timer E) until its 200.
    srs.handle_timeout(t0 + Duration::from_millis(60_500));
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1);
    let branch = bye.top_via().unwrap().branch().unwrap().to_string();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: 1-1234@192.0.2.20\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        bye.header("From").unwrap(),
        bye.header("To").unwrap()
    );
    srs.handle_receive(t0 + Duration::from_millis(60_600), peer(), ok.as_bytes());
    srs.handle_timeout(t0 + Duration::from_secs(70));
    assert!(
        responses(&mut srs).is_empty(),
        "no retransmission after the 200"
    );
    assert_eq!(srs.endpoint().stats().requests_sent, 1);
    assert_eq!(srs.endpoint().stats().requests_timed_out, 0);
}

#[test]
fn session_interval_below_min_se_is_422() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = timer_server();
    srs.handle_receive(t0, peer(), timer_invite("30").as_bytes());
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![422]);
    assert_eq!(r[0].header("Min-SE"), Some("90"));
    assert!(events(&mut srs).is_empty(), "no offer for a refused INVITE");
    // Without `timer` in our Supported we do not do session timers at all.
    let mut plain = server();
    plain.handle_receive(t0, peer(), timer_invite("30").as_bytes());
    assert_eq!(
        responses(&mut plain).iter().map(status).collect::<Vec<_>>(),
        vec![100]
    );
}

// ---- A 2xx never ACKed (RFC 3261 §13.3.1.4), issue #13 item 4 ----

#[test]
fn unacknowledged_2xx_ends_the_session_with_bye_after_64_t1() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-na1",
    );
    srs.handle_receive(t0, peer(), invite.as_bytes());
    responses(&mut srs);
    let call = match events(&mut srs).as_slice() {
        [SrsEvent::Offered(o)] => o.call,
        other => panic!("{other:?}"),
    };
    srs.accept(t0, call, &[40000]);
    let ok = responses(&mut srs).pop().unwrap();
    let tag = ok.to_tag().unwrap();
    // The 2xx is retransmitted until 64*T1 = 32 s, and nothing else is sent.
    let mut t = t0;
    let mut oks = 0;
    while t < t0 + Duration::from_millis(31_900) {
        t += Duration::from_millis(100);
        srs.handle_timeout(t);
        for m in responses(&mut srs) {
            assert_eq!(
                m.status(),
                Some(200),
                "only 2xx retransmissions before 32 s: {m:?}"
            );
            oks += 1;
        }
    }
    assert_eq!(oks, 10);
    assert!(events(&mut srs).is_empty());
    srs.handle_timeout(t0 + Duration::from_secs(32));
    let r = responses(&mut srs);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(matches!(r[0].method(), Some(branchrec::sip::Method::Bye)));
    assert_eq!(r[0].request_uri(), Some("sip:7602922410@192.0.2.20:5060"));
    assert_eq!(r[0].from_tag().as_deref(), Some(tag.as_str()));
    let ended: Vec<_> = events(&mut srs)
        .into_iter()
        .filter_map(|e| match e {
            SrsEvent::Ended { call: c, cause, .. } => Some((c, cause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![(call, Some(branchrec::sip::TerminationReason::AckTimeout))]
    );
    assert_eq!(
        branchrec::sip::TerminationReason::AckTimeout.event_kind(),
        Some("unconfirmed")
    );
    assert_eq!(srs.session_count(), 0);
}

/// Issue #13 item 1: an SRC that starts the session with every stream disabled (port 0)
/// is still a recording session: the m-line becomes a channel that is on hold (answered
/// port 0, RFC 3264 §6), and a re-INVITE with a port activates it on the channel's port.
/// Before, the INVITE had nothing recordable and was refused 488.
#[test]
fn an_initial_offer_with_every_stream_at_port_0_starts_on_hold() {
    let t0 = Mono::from_secs(1_000);
    let mut srs = server();
    let invite = set_header(
        &fixture("metaswitch-miarec-hold-1.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-p0",
    )
    .replace("m=audio 16000 ", "m=audio 0 ");
    // The body length is unchanged minus the four digits: fix Content-Length.
    let body_len = invite.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    let invite = set_header(&invite, "Content-Length", &body_len.to_string());
    srs.handle_receive(t0, peer(), invite.as_bytes());
    let r = responses(&mut srs);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![100]);
    let ev = events(&mut srs);
    let offer = match ev.as_slice() {
        [SrsEvent::Offered(o)] => o,
        other => panic!("expected one offer, got {other:?}"),
    };
    assert_eq!(offer.recordable, vec![0], "the port-0 line is a channel");
    assert!(branchrec::siprec::srs::stream_on_hold(&offer.streams[0]));
    let call = offer.call;
    srs.accept(t0 + Duration::from_millis(5), call, &[40000]);
    let r = responses(&mut srs);
    assert_eq!(status(&r[0]), 200);
    let to_tag = r[0].to_tag().expect("our To tag");
    let answer = sdp::parse(std::str::from_utf8(&r[0].body).unwrap()).unwrap();
    assert_eq!(answer.media[0].port, 0, "a port-0 offer is answered port 0");
    srs.handle_receive(
        t0 + Duration::from_millis(600),
        peer(),
        ack(&to_tag, "672675354", "z9hG4bK-ackp0").as_bytes(),
    );
    events(&mut srs);
    // The SRC enables the stream: answered on the channel's port, no longer on hold.
    let live = set_header(
        &fixture("metaswitch-miarec-hold-2.txt"),
        "Via",
        "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-p1",
    );
    let live = set_header(
        &live,
        "To",
        &format!("<sip:7603213214@192.0.2.10:5060>;tag={to_tag}"),
    );
    srs.handle_receive(t0 + Duration::from_secs(2), peer(), live.as_bytes());
    let r = responses(&mut srs);
    let last = r.last().expect("a response");
    assert_eq!(status(last), 200);
    let a2 = sdp::parse(std::str::from_utf8(&last.body).unwrap()).unwrap();
    assert_eq!(a2.media[0].port, 40000);
    let streams = events(&mut srs)
        .into_iter()
        .find_map(|e| match e {
            SrsEvent::MediaUpdated { streams, .. } => Some(streams),
            _ => None,
        })
        .expect("media update");
    let s = streams[0].as_ref().expect("the channel's stream");
    assert!(!branchrec::siprec::srs::stream_on_hold(s), "{s:?}");
}
