use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sdp(ip: &str, port: u16, pts: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\na=rtpmap:101 telephone-event/8000\r\n")
}

fn msg(
    start: &str,
    from_tag: Option<&str>,
    to_tag: Option<&str>,
    cseq: &str,
    extra: &str,
    body: &str,
) -> Message {
    let ft = from_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let tt = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    let text = format!(
        "{start}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: \"Alice\" <sip:100@pbx>{ft}\r\nTo: <sip:200@pbx>{tt}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    crate::sip::parse_datagram(text.as_bytes()).unwrap()
}

fn events(t: &mut CallTracker) -> Vec<TrackerEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

#[test]
fn full_call_binds_both_directions() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let s = Mono::from_secs;
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 INVITE",
            "P-Asserted-Identity: \"Alice A\" <tel:+100>\r\n",
            &sdp("10.0.0.1", 4000, "0 8 101"),
        ),
    );
    t.on_sip(
        s(2),
        sa(B),
        sa(A),
        &msg(
            "SIP/2.0 180 Ringing",
            Some("a"),
            Some("b"),
            "1 INVITE",
            "",
            "",
        ),
    );
    assert!(events(&mut t).is_empty());
    t.on_sip(
        s(3),
        sa(B),
        sa(A),
        &msg(
            "SIP/2.0 200 OK",
            Some("a"),
            Some("b"),
            "1 INVITE",
            "",
            &sdp("10.0.0.2", 5000, "8 101"),
        ),
    );
    let ev = events(&mut t);
    let TrackerEvent::Start {
        parties,
        formats,
        at,
        ..
    } = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*at, s(3));
    assert_eq!(parties[0].aor.as_deref(), Some("tel:+100"));
    assert_eq!(parties[0].name.as_deref(), Some("Alice A"));
    assert_eq!(parties[1].aor.as_deref(), Some("sip:200@pbx"));
    assert_eq!(formats[0][0].encoding, "PCMA");
    assert_eq!(ev.len(), 1);
    assert_eq!(
        t.classify(s(4), sa("10.0.0.1:4000"), sa("10.0.0.2:5000")),
        Some((1, 0))
    );
    assert_eq!(
        t.classify(s(4), sa("10.0.0.2:5000"), sa("10.0.0.1:4000")),
        Some((1, 1))
    );
    assert_eq!(t.classify(s(4), sa("10.0.0.9:1"), sa("10.0.0.8:2")), None);
    // re-INVITE from the callee puts the call on hold.
    let hold = sdp("10.0.0.2", 5000, "8").replace(
        "m=audio 5000 RTP/AVP 8\r\n",
        "m=audio 5000 RTP/AVP 8\r\na=sendonly\r\n",
    );
    t.on_sip(
        s(5),
        sa(B),
        sa(A),
        &msg(
            "INVITE sip:100@pbx SIP/2.0",
            Some("b"),
            Some("a"),
            "7 INVITE",
            "",
            &hold,
        )
        .clone(),
    );
    let ev = events(&mut t);
    assert!(matches!(&ev[0], TrackerEvent::Media { .. }), "{ev:?}");
    t.on_sip(
        s(9),
        sa(A),
        sa(B),
        &msg(
            "BYE sip:200@pbx SIP/2.0",
            Some("a"),
            Some("b"),
            "2 BYE",
            "",
            "",
        ),
    );
    let ev = events(&mut t);
    assert!(
        matches!(&ev[0], TrackerEvent::End { at, .. } if *at == s(9)),
        "{ev:?}"
    );
    assert_eq!(t.active_calls(), 0);
    assert_eq!(
        t.classify(s(10), sa("10.0.0.1:4000"), sa("10.0.0.2:5000")),
        None
    );
}

#[test]
fn cancelled_call_is_not_recorded() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let s = Mono::from_secs;
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 INVITE",
            "",
            &sdp("10.0.0.1", 4000, "0"),
        ),
    );
    t.on_sip(
        s(2),
        sa(A),
        sa(B),
        &msg(
            "CANCEL sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 CANCEL",
            "",
            "",
        ),
    );
    assert!(events(&mut t).is_empty());
    assert_eq!(t.active_calls(), 0);
}

#[test]
fn mid_call_pickup_and_media_timeout() {
    let mut t = CallTracker::new(TrackerConfig {
        media_timeout: Duration::from_secs(10),
        ..TrackerConfig::default()
    });
    let s = Mono::from_secs;
    // A BYE alone does not start anything.
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "BYE sip:200@pbx SIP/2.0",
            Some("x"),
            Some("y"),
            "9 BYE",
            "",
            "",
        ),
    );
    assert_eq!(t.active_calls(), 0);
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            Some("b"),
            "5 INVITE",
            "",
            &sdp("10.0.0.1", 4000, "0"),
        ),
    );
    assert!(events(&mut t).is_empty());
    // RTP towards the caller's address only: the callee speaks.
    assert_eq!(
        t.classify(s(2), sa("10.0.0.2:7000"), sa("10.0.0.1:4000")),
        Some((1, 1))
    );
    let ev = events(&mut t);
    assert!(matches!(&ev[0], TrackerEvent::Start { .. }), "{ev:?}");
    assert!(
        matches!(
            &ev[1],
            TrackerEvent::Flag {
                kind: "signalling_incomplete",
                ..
            }
        ),
        "{ev:?}"
    );
    t.on_time(s(30));
    let ev = events(&mut t);
    assert!(
        ev.iter()
            .any(|e| matches!(e, TrackerEvent::End { at, .. } if *at == s(2))),
        "{ev:?}"
    );
}

#[test]
fn rules() {
    assert!(glob_match("+4930*", "+4930123"));
    assert!(!glob_match("+4930*", "+4940123"));
    assert!(glob_match("*@bank.example", "sip:9@bank.example"));
    assert!(glob_match("*", ""));
    let r = CallRules {
        allow: vec![],
        deny: vec!["200".into()],
    };
    let p1 = Party {
        name: None,
        aor: Some("sip:100@pbx".into()),
    };
    let p2 = Party {
        name: None,
        aor: Some("sip:200@pbx".into()),
    };
    assert!(!r.allows(&[&p1, &p2]));
    assert!(r.allows(&[&p1]));
    let r = CallRules {
        allow: vec!["1*".into()],
        deny: vec![],
    };
    assert!(r.allows(&[&p1, &p2]));
    assert!(!r.allows(&[&p2]));
    let mut t = CallTracker::new(TrackerConfig {
        rules: CallRules {
            allow: vec![],
            deny: vec!["sip:200@*".into()],
        },
        ..TrackerConfig::default()
    });
    t.on_sip(
        Mono::ZERO,
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 INVITE",
            "",
            &sdp("10.0.0.1", 4000, "0"),
        ),
    );
    t.on_sip(
        Mono::ZERO,
        sa(B),
        sa(A),
        &msg(
            "SIP/2.0 200 OK",
            Some("a"),
            Some("b"),
            "1 INVITE",
            "",
            &sdp("10.0.0.2", 5000, "0"),
        ),
    );
    assert!(events(&mut t).is_empty());
    assert_eq!(
        t.classify(Mono::ZERO, sa("10.0.0.1:4000"), sa("10.0.0.2:5000")),
        None
    );
    assert_eq!(t.stats().calls_denied, 1);
}

/// Issue #12 finding 1, mirror mode: a flow the sender never announced never takes a
/// channel nor starts the recording; once the parties' SDP is known, only their own
/// addresses are recorded.
#[test]
fn unannounced_flows_never_take_a_channel() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let s = Mono::from_secs;
    let invite = msg(
        "INVITE sip:200@pbx SIP/2.0",
        Some("a"),
        None,
        "1 INVITE",
        "",
        &sdp("10.0.0.1", 4000, "0"),
    );
    t.on_sip(s(1), sa(A), sa(B), &invite);
    let ok = msg(
        "SIP/2.0 200 OK",
        Some("a"),
        Some("b"),
        "1 INVITE",
        "",
        &sdp("10.0.0.2", 5000, "0"),
    );
    // An injector on another host, towards either party's media address.
    t.on_sip(s(2), sa(B), sa(A), &ok);
    let _ = events(&mut t);
    let evil = sa("10.0.0.66:4000");
    for (src, dst, ch) in [
        (evil, sa("10.0.0.2:5000"), 0),
        (evil, sa("10.0.0.1:4000"), 1),
    ] {
        assert_eq!(
            t.classify_flow(s(3), src, dst, true),
            Some(Flow::Foreign(1, ch))
        );
    }
    assert_eq!(t.stats().rtp_foreign_source, 2);
    assert_eq!(t.recording_calls(), 1, "the 200 started the call");
    // The real parties, from any port of their own address.
    assert_eq!(
        t.classify_flow(s(3), sa("10.0.0.1:4000"), sa("10.0.0.2:5000"), true),
        Some(Flow::Bound(1, 0))
    );
    assert_eq!(
        t.classify_flow(s(3), sa("10.0.0.2:5002"), sa("10.0.0.1:4000"), true),
        Some(Flow::Bound(1, 1))
    );
}

#[test]
fn an_unannounced_flow_does_not_start_a_recording() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let s = Mono::from_secs;
    // Only the offer is known: RTP towards the caller would start the call.
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 INVITE",
            "",
            &sdp("10.0.0.1", 4000, "0"),
        ),
    );
    let _ = events(&mut t);
    assert_eq!(
        t.classify_flow(s(2), sa("10.0.0.66:9"), sa("10.0.0.1:4000"), true),
        Some(Flow::Foreign(1, 1))
    );
    assert_eq!(t.recording_calls(), 0);
    assert!(events(&mut t).is_empty());
    assert_eq!(t.stats().rtp_packets, 0);
}

/// Offer from A (with `offer_media`), 200 from B (with `answer_media`); the events.
fn offer_answer(t: &mut CallTracker, offer: &str, answer: &str) -> Vec<TrackerEvent> {
    let s = Mono::from_secs;
    t.on_sip(
        s(1),
        sa(A),
        sa(B),
        &msg(
            "INVITE sip:200@pbx SIP/2.0",
            Some("a"),
            None,
            "1 INVITE",
            "",
            offer,
        ),
    );
    t.on_sip(
        s(2),
        sa(B),
        sa(A),
        &msg(
            "SIP/2.0 200 OK",
            Some("a"),
            Some("b"),
            "1 INVITE",
            "",
            answer,
        ),
    );
    events(t)
}

const K30A: &str = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";
const K30B: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
const K44: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWI=";

fn savp(ip: &str, port: u16, crypto: &[&str]) -> String {
    let mut s = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\n");
    for c in crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s
}

#[test]
fn sdes_keys_protect_what_their_sender_sends() {
    let mut t = CallTracker::new(TrackerConfig::default());
    // The offer's first line is GCM, the answer takes tag 2: the caller's key is its
    // tag-2 line, the callee's its own answer line.
    let ev = offer_answer(
        &mut t,
        &savp(
            "10.0.0.1",
            4000,
            &[
                &format!("1 AEAD_AES_256_GCM inline:{K44}"),
                &format!("2 AES_CM_128_HMAC_SHA1_80 inline:{K30A}"),
            ],
        ),
        &savp(
            "10.0.0.2",
            5000,
            &[&format!("2 AES_CM_128_HMAC_SHA1_80 inline:{K30B}")],
        ),
    );
    let Some(TrackerEvent::Start { srtp, formats, .. }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(formats.len(), 2);
    let key = |v: &str| {
        crate::sdp::parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{v}"))
            .unwrap()
            .policy
    };
    assert_eq!(srtp[0].as_ref(), Some(&key(K30A)), "caller: its tag-2 line");
    assert_eq!(
        srtp[1].as_ref(),
        Some(&key(K30B)),
        "callee: its answer line"
    );
}

#[test]
fn every_audio_mline_is_a_stream_of_its_party() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let two = |ip: &str, p: u16| {
        format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\nm=video {} RTP/AVP 96\r\nm=audio {} RTP/AVP 8\r\n", p + 10, p + 2)
    };
    let ev = offer_answer(&mut t, &two("10.0.0.1", 4000), &two("10.0.0.2", 5000));
    let Some(TrackerEvent::Start { formats, .. }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        formats.len(),
        4,
        "two audio m-lines per party (video ignored)"
    );
    assert_eq!(formats[2][0].encoding, "PCMA");
    let s = Mono::from_secs(3);
    let c =
        |t: &mut CallTracker, src: &str, dst: &str| t.classify(s, sa(src), sa(dst)).map(|x| x.1);
    assert_eq!(c(&mut t, "10.0.0.1:4000", "10.0.0.2:5000"), Some(0));
    assert_eq!(c(&mut t, "10.0.0.2:5000", "10.0.0.1:4000"), Some(1));
    assert_eq!(c(&mut t, "10.0.0.1:4002", "10.0.0.2:5002"), Some(2));
    assert_eq!(c(&mut t, "10.0.0.2:5002", "10.0.0.1:4002"), Some(3));
    // The video ports are not audio streams.
    assert_eq!(c(&mut t, "10.0.0.1:4010", "10.0.0.2:5010"), None);
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    crate::capture::frame::rtp(pt, seq, ts, ssrc, false, &[0x55; 160])
}

#[test]
fn rtp_without_sdp_needs_a_steady_flow_and_detection_on() {
    let (src, dst) = (sa("10.9.0.1:30000"), sa("10.9.0.2:40000"));
    let feed = |t: &mut CallTracker, pkts: &[Vec<u8>]| {
        pkts.iter()
            .enumerate()
            .filter_map(|(i, p)| {
                t.classify_packet(Mono::from_millis(20 * i as u64), src, dst, true, p)
            })
            .count()
    };
    let steady: Vec<Vec<u8>> = (0..20u16)
        .map(|k| rtp(8, 100 + k, 160 * u32::from(k), 7))
        .collect();
    // Off by default.
    let mut off = CallTracker::new(TrackerConfig::default());
    assert_eq!(feed(&mut off, &steady), 0);
    let cfg = TrackerConfig {
        unsignalled: true,
        ..TrackerConfig::default()
    };
    let mut on = CallTracker::new(cfg.clone());
    assert_eq!(
        feed(&mut on, &steady),
        20 - 7,
        "bound from the 8th packet on"
    );
    assert_eq!(on.stats().calls_unsignalled, 1);
    let ev = events(&mut on);
    assert!(
        matches!(
            ev.first(),
            Some(TrackerEvent::Start {
                kind: CallKind::Unsignalled,
                ..
            })
        ),
        "{ev:?}"
    );
    // The reverse direction is channel 1 of the same call.
    assert_eq!(
        on.classify_packet(Mono::from_secs(1), dst, src, true, &rtp(8, 1, 0, 9)),
        Some(Flow::Bound(1, 1))
    );
    // Not RTP-like: SSRC changing, sequence jumping, dynamic payload type.
    for bad in [
        (0..20u16)
            .map(|k| rtp(8, 100 + k, 160 * u32::from(k), u32::from(k)))
            .collect::<Vec<_>>(),
        (0..20u16)
            .map(|k| rtp(8, 100 + 3 * k, 160 * u32::from(k), 7))
            .collect(),
        (0..20u16)
            .map(|k| rtp(111, 100 + k, 960 * u32::from(k), 7))
            .collect(),
    ] {
        let mut t = CallTracker::new(cfg.clone());
        assert_eq!(feed(&mut t, &bad), 0);
    }
}

#[test]
fn sip_over_tls_is_one_encrypted_signalling_call_per_connection() {
    let mut t = CallTracker::new(TrackerConfig::default());
    let (phone, pbx) = (sa("10.0.0.1:40000"), sa("10.0.0.2:5061"));
    assert!(!t.on_tls(
        Mono::from_secs(1),
        phone,
        sa("10.0.0.2:443"),
        &[22, 3, 1, 0, 5, 1],
        false
    ));
    assert!(!t.on_tls(
        Mono::from_secs(1),
        phone,
        pbx,
        b"INVITE sip:x SIP/2.0\r\n",
        false
    ));
    assert!(t.on_tls(
        Mono::from_secs(1),
        phone,
        pbx,
        &[22, 3, 1, 0, 5, 1, 0, 0, 1],
        false
    ));
    assert!(t.on_tls(Mono::from_secs(2), pbx, phone, &[23, 3, 3, 0, 1, 0], false));
    let ev = events(&mut t);
    assert!(
        matches!(
            ev.first(),
            Some(TrackerEvent::Start {
                kind: CallKind::EncryptedSignalling,
                ..
            })
        ),
        "{ev:?}"
    );
    assert!(t.on_tls(Mono::from_secs(5), pbx, phone, &[], true));
    let ev = events(&mut t);
    assert!(
        matches!(ev.last(), Some(TrackerEvent::End { at, .. }) if *at == Mono::from_secs(5)),
        "{ev:?}"
    );
    assert_eq!(t.stats().calls_encrypted, 1);
}
