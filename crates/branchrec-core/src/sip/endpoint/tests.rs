//! Endpoint behaviour end to end: server transactions and their timers, dialogs, CANCEL
//! and ACK, the responses and refusals on the wire.

use super::*;
use crate::sip::{
    parse_datagram, DialogId, Message, Method, SipError, StartLine, TerminationReason, TxnId,
};
use crate::time::Mono;
use std::time::Duration;

const T1: Duration = Duration::from_millis(500);

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        remote: "192.0.2.10:5062".parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        conn: (transport == Transport::Tcp).then_some(3),
    }
}

fn ep() -> Endpoint {
    Endpoint::new(EndpointConfig {
        seed: 42,
        ..EndpointConfig::default()
    })
}

fn req(
    method: &str,
    branch: &str,
    call: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let cseq_m = method;
    let to = match to_tag {
        Some(t) => format!("<sip:srs@192.0.2.1>;tag={t}"),
        None => "<sip:srs@192.0.2.1>".into(),
    };
    format!(
        "{method} sip:srs@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:src@192.0.2.10>;tag=ft1\r\nTo: {to}\r\n\
Call-ID: {call}\r\nCSeq: {cseq} {cseq_m}\r\nContact: <sip:src@192.0.2.10:5062>\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn sdp_invite(branch: &str, call: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
    req(
        "INVITE",
        branch,
        call,
        cseq,
        to_tag,
        "Content-Type: application/sdp\r\n",
        "v=0\r\n",
    )
}

fn drain(ep: &mut Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| parse_datagram(&t.data).expect("our responses parse"))
        .collect()
}

fn statuses(msgs: &[Message]) -> Vec<u16> {
    msgs.iter().filter_map(Message::status).collect()
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// INVITE in, app answers 200; returns (txn, dialog, our To-tag).
fn establish(ep: &mut Endpoint, now: Mono, p: Peer) -> (TxnId, DialogId, String) {
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
    assert_eq!(statuses(&drain(ep)), vec![100]);
    let ev = events(ep);
    let (txn, dialog) = match ev.as_slice() {
        [Event::Invite {
            txn,
            dialog,
            initial: true,
            request,
        }] => {
            assert_eq!(request.call_id(), Some("call1"));
            (*txn, *dialog)
        }
        other => panic!("{other:?}"),
    };
    ep.respond(
        now,
        txn,
        200,
        "OK",
        vec![("Require".into(), "siprec".into())],
        Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
    )
    .unwrap();
    let out = drain(ep);
    assert_eq!(statuses(&out), vec![200]);
    let ok = &out[0];
    let tag = ok.to_tag().expect("2xx carries our To-tag");
    assert_eq!(ok.from_tag().as_deref(), Some("ft1"));
    assert_eq!(ok.call_id(), Some("call1"));
    assert_eq!(ok.cseq().unwrap(), (1, Method::Invite));
    assert!(ok
        .contact()
        .unwrap()
        .unwrap()
        .uri
        .host
        .starts_with("127.0.0.1"));
    assert_eq!(ok.header("Server"), Some("branchrec"));
    assert_eq!(ok.header("Require"), Some("siprec"));
    assert_eq!(ok.body, b"v=0\r\n");
    assert_eq!(
        ok.content_type().unwrap().unwrap().media_type,
        "application/sdp"
    );
    let via = ok.top_via().unwrap();
    assert_eq!(via.rport(), Some(Some(5062)));
    (txn, dialog, tag)
}

#[test]
fn invite_200_retransmitted_until_ack() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    let (_, dialog, tag) = establish(&mut ep, now, p);
    assert_eq!(ep.poll_timeout(), Some(now + T1));
    // Retransmits at T1, 3T1 (T1+2T1), 7T1 (…+4T1).
    let mut sent_at = Vec::new();
    let mut t = now;
    while t < now + 8 * T1 {
        t += Duration::from_millis(50);
        ep.handle_timeout(t);
        for m in drain(&mut ep) {
            assert_eq!(m.status(), Some(200));
            assert_eq!(m.to_tag().as_deref(), Some(tag.as_str()));
            sent_at.push(t - now);
        }
    }
    assert_eq!(sent_at, vec![T1, 3 * T1, 7 * T1]);
    ep.handle_receive(
        t,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    match events(&mut ep).as_slice() {
        [Event::Ack { dialog: d, .. }] => assert_eq!(*d, dialog),
        other => panic!("{other:?}"),
    }
    // No more retransmissions; a duplicate ACK gives no second event.
    ep.handle_receive(
        t,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    assert!(events(&mut ep).is_empty());
    ep.handle_timeout(t + 64 * T1);
    assert!(drain(&mut ep).is_empty());
    assert_eq!(ep.dialog_count(), 1);
    assert_eq!(ep.transaction_count(), 0);
}

#[test]
fn ack_timeout_ends_dialog() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let (_, dialog, tag) = establish(&mut ep, now, peer(Transport::Udp));
    let mut n = 0;
    let mut requests = Vec::new();
    let mut t = now;
    while t < now + 64 * T1 {
        t += Duration::from_millis(100);
        ep.handle_timeout(t);
        for m in drain(&mut ep) {
            if m.is_request() {
                requests.push(m);
            } else {
                n += 1;
            }
        }
    }
    // T1,3,7,15 then every T2 (4 s) until 32 s: 1.5,3.5,7.5,11.5,...,31.5 → 10.
    assert_eq!(n, 10);
    // Then the session is ended with BYE (RFC 3261 13.3.1.4), at 64*T1.
    assert_eq!(requests.len(), 1, "{requests:?}");
    let bye = &requests[0];
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.request_uri(), Some("sip:src@192.0.2.10:5062"));
    assert_eq!(bye.from_tag().as_deref(), Some(tag.as_str()));
    assert_eq!(bye.to_tag().as_deref(), Some("ft1"));
    assert_eq!(bye.call_id(), Some("call1"));
    assert_eq!(ep.stats().requests_sent, 1);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::AckTimeout
        }]
    );
    assert_eq!(ep.dialog_count(), 0);
}

#[test]
fn tcp_2xx_not_retransmitted() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let (_, _, _) = establish(&mut ep, now, peer(Transport::Tcp));
    ep.handle_timeout(now + 10 * T1);
    assert!(drain(&mut ep).is_empty());
    ep.handle_timeout(now + 64 * T1);
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::Terminated {
            reason: TerminationReason::AckTimeout,
            ..
        }]
    ));
}

/// An INVITE over `t` with Request-URI `ruri`; returns our responses after the app
/// answers 200 (if the endpoint offered it the INVITE at all).

#[test]
fn retransmitted_invite_absorbed() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    let inv = sdp_invite("z9hG4bKinv1", "call1", 1, None);
    ep.handle_receive(now, p, &inv);
    let first = drain(&mut ep);
    let txn = match events(&mut ep).as_slice() {
        [Event::Invite { txn, .. }] => *txn,
        other => panic!("{other:?}"),
    };
    ep.handle_receive(now, p, &inv);
    assert_eq!(drain(&mut ep), first, "100 resent");
    assert!(events(&mut ep).is_empty());
    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
    let ok = drain(&mut ep);
    ep.handle_receive(now, p, &inv);
    assert_eq!(drain(&mut ep), ok, "2xx resent");
    assert!(events(&mut ep).is_empty());
    assert_eq!(
        ep.respond(now, txn, 200, "OK", vec![], None),
        Err(SipError::AlreadyFinal)
    );
    assert_eq!(ep.stats().retransmissions_absorbed, 2);
}

#[test]
fn rejected_invite_retransmits_until_ack_and_ends_dialog() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
    drain(&mut ep);
    let (txn, dialog) = match events(&mut ep).as_slice() {
        [Event::Invite { txn, dialog, .. }] => (*txn, *dialog),
        other => panic!("{other:?}"),
    };
    ep.respond(now, txn, 488, "Not Acceptable Here", vec![], None)
        .unwrap();
    assert_eq!(statuses(&drain(&mut ep)), vec![488]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::Rejected
        }]
    );
    ep.handle_timeout(now + T1);
    ep.handle_timeout(now + 3 * T1);
    assert_eq!(statuses(&drain(&mut ep)), vec![488, 488]);
    // Timer H: give up after 64*T1.
    ep.handle_timeout(now + 64 * T1);
    drain(&mut ep);
    assert_eq!(ep.transaction_count(), 0);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn app_timeout_and_caps() {
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        max_dialogs: 1,
        ..EndpointConfig::default()
    });
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKa", "a", 1, None));
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKb", "b", 1, None));
    assert_eq!(statuses(&drain(&mut ep)), vec![100, 503]);
    let dialog = match events(&mut ep).as_slice() {
        [Event::Invite { dialog, .. }] => *dialog,
        other => panic!("{other:?}"),
    };
    ep.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(statuses(&drain(&mut ep)), vec![500]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::AppTimeout
        }]
    );
    assert_eq!(ep.dialog_count(), 0);
}

#[test]
fn cancel_gives_487() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
    drain(&mut ep);
    let (txn, dialog) = match events(&mut ep).as_slice() {
        [Event::Invite { txn, dialog, .. }] => (*txn, *dialog),
        other => panic!("{other:?}"),
    };
    ep.handle_receive(
        now,
        p,
        &req("CANCEL", "z9hG4bKinv1", "call1", 1, None, "", ""),
    );
    let out = drain(&mut ep);
    assert_eq!(statuses(&out), vec![200, 487]);
    assert_eq!(out[0].cseq().unwrap().1, Method::Cancel);
    assert_eq!(out[1].cseq().unwrap().1, Method::Invite);
    assert_eq!(
        events(&mut ep),
        vec![
            Event::Cancelled { dialog },
            Event::Terminated {
                dialog,
                reason: TerminationReason::Cancelled
            }
        ]
    );
    assert_eq!(
        ep.respond(now, txn, 200, "OK", vec![], None),
        Err(SipError::AlreadyFinal)
    );
    // 487 retransmitted (Timer G) until the ACK.
    ep.handle_timeout(now + T1);
    assert_eq!(statuses(&drain(&mut ep)), vec![487]);
    let tag = out[1].to_tag().unwrap();
    ep.handle_receive(
        now + T1,
        p,
        &req("ACK", "z9hG4bKinv1", "call1", 1, Some(&tag), "", ""),
    );
    assert!(events(&mut ep).is_empty());
    ep.handle_timeout(now + 3 * T1);
    assert!(drain(&mut ep).is_empty());
    ep.handle_timeout(now + 64 * T1);
    assert_eq!(ep.transaction_count(), 0);
    assert_eq!(ep.dialog_count(), 0);
}

#[test]
fn cancel_without_match_481() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    ep.handle_receive(
        now,
        peer(Transport::Udp),
        &req("CANCEL", "z9hG4bKnone", "callx", 1, None, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![481]);
}

#[test]
fn bye_terminates_and_retransmission_absorbed() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    let (_, dialog, tag) = establish(&mut ep, now, p);
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    events(&mut ep);
    let bye = req("BYE", "z9hG4bKbye1", "call1", 2, Some(&tag), "", "");
    ep.handle_receive(now, p, &bye);
    let out = drain(&mut ep);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::Bye
        }]
    );
    assert_eq!(ep.dialog_count(), 0);
    ep.handle_receive(now, p, &bye);
    assert_eq!(drain(&mut ep), out);
    assert!(events(&mut ep).is_empty());
    // A new BYE (new branch) for the gone dialog: 481.
    ep.handle_receive(
        now,
        p,
        &req("BYE", "z9hG4bKbye2", "call1", 3, Some(&tag), "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![481]);
}

#[test]
fn reinvite_glare_491_and_update() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    let (_, dialog, tag) = establish(&mut ep, now, p);
    // 2xx not yet ACKed: a re-INVITE is glare.
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKre0", "call1", 2, Some(&tag)));
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    events(&mut ep);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKre1", "call1", 3, Some(&tag)));
    assert_eq!(statuses(&drain(&mut ep)), vec![100]);
    let re = match events(&mut ep).as_slice() {
        [Event::Invite {
            txn,
            dialog: d,
            initial: false,
            ..
        }] => {
            assert_eq!(*d, dialog);
            *txn
        }
        other => panic!("{other:?}"),
    };
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKre2", "call1", 4, Some(&tag)));
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    let upd = req(
        "UPDATE",
        "z9hG4bKup1",
        "call1",
        5,
        Some(&tag),
        "Content-Type: application/sdp\r\n",
        "v=0\r\n",
    );
    ep.handle_receive(now, p, &upd);
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    // UPDATE without body and INFO reach the app.
    ep.handle_receive(
        now,
        p,
        &req("INFO", "z9hG4bKinfo", "call1", 6, Some(&tag), "", ""),
    );
    let info = match events(&mut ep).as_slice() {
        [Event::InDialogRequest { txn, .. }] => *txn,
        other => panic!("{other:?}"),
    };
    ep.respond(now, info, 200, "OK", vec![], None).unwrap();
    ep.respond(now, re, 200, "OK", vec![], None).unwrap();
    assert_eq!(statuses(&drain(&mut ep)), vec![200, 200]);
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack3", "call1", 3, Some(&tag), "", ""),
    );
    assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
    // Lower CSeq than the last seen (6) → 500.
    ep.handle_receive(
        now,
        p,
        &req("INFO", "z9hG4bKold", "call1", 5, Some(&tag), "", ""),
    );
    let out = drain(&mut ep);
    assert_eq!(statuses(&out), vec![500]);
    // A retransmission of the earlier UPDATE gets the same 491 again.
    ep.handle_receive(now, p, &upd.clone());
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    assert!(events(&mut ep).is_empty());
    // Now a new UPDATE with offer reaches the app.
    let upd7 = String::from_utf8(upd)
        .unwrap()
        .replace("CSeq: 5", "CSeq: 7")
        .replace("z9hG4bKup1", "z9hG4bKup7");
    ep.handle_receive(now, p, upd7.as_bytes());
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::InDialogRequest { .. }]
    ));
}

fn invite_over(t: Transport, ruri: &str, tls_host: Option<&str>) -> Vec<Message> {
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 42,
        tls_contact_host: tls_host.map(str::to_string),
        ..EndpointConfig::default()
    });
    let p = Peer {
        conn: Some(9),
        ..peer(t)
    };
    let raw = String::from_utf8(sdp_invite("z9hG4bKs1", "callS", 1, None))
        .unwrap()
        .replacen("INVITE sip:srs@192.0.2.1", &format!("INVITE {ruri}"), 1)
        .replace(
            "SIP/2.0/UDP",
            if t == Transport::Tls {
                "SIP/2.0/TLS"
            } else {
                "SIP/2.0/UDP"
            },
        );
    ep.handle_receive(now, p, raw.as_bytes());
    let mut out = drain(&mut ep);
    if let [Event::Invite { txn, .. }] = events(&mut ep).as_slice() {
        ep.respond(
            now,
            *txn,
            200,
            "OK",
            vec![],
            Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
        )
        .unwrap();
        out.extend(drain(&mut ep));
        // Reliable transport: no 2xx retransmission.
        ep.handle_timeout(now + 10 * T1);
        if t == Transport::Tls {
            assert!(drain(&mut ep).is_empty(), "2xx retransmitted over TLS");
        }
    }
    out
}

#[test]
fn sips_request_uri_over_udp_or_tcp_gets_480() {
    for t in [Transport::Udp, Transport::Tcp] {
        let out = invite_over(t, "sips:srs@192.0.2.1", None);
        assert_eq!(statuses(&out), vec![480], "{t:?}");
        let w = out[0].header("Warning").expect("Warning explains the 480");
        assert!(w.starts_with("399 ") && w.contains("TLS"), "{w}");
    }
}

#[test]
fn tls_calls_get_a_tls_contact() {
    // sips: Request-URI over TLS: accepted, Contact is sips: (RFC 3261 12.1.1).
    let out = invite_over(
        Transport::Tls,
        "sips:srs@192.0.2.1",
        Some("rec.example.com:5061"),
    );
    assert_eq!(statuses(&out), vec![100, 200]);
    assert_eq!(
        out[1].header("Contact"),
        Some("<sips:rec.example.com:5061>")
    );
    assert!(out[1].header("Via").unwrap().starts_with("SIP/2.0/TLS "));
    // sip: Request-URI over TLS: sip: Contact with transport=tls, local address.
    let out = invite_over(Transport::Tls, "sip:srs@192.0.2.1", None);
    assert_eq!(statuses(&out), vec![100, 200]);
    assert_eq!(
        out[1].header("Contact"),
        Some("<sip:192.0.2.1:5060;transport=tls>")
    );
    // Plain transports keep their Contact.
    let out = invite_over(Transport::Udp, "sip:srs@192.0.2.1", None);
    assert_eq!(out[1].header("Contact"), Some("<sip:127.0.0.1:5060>"));
}

#[test]
#[allow(clippy::type_complexity)]
fn rejections() {
    let now = Mono::from_secs(1_000);
    let p = peer(Transport::Udp);
    let cases: Vec<(Vec<u8>, u16, Option<(&str, &str)>)> = vec![
        (
            req("REGISTER", "z9hG4bK1", "c", 1, None, "", ""),
            405,
            Some(("Allow", ALLOW)),
        ),
        (
            req("SUBSCRIBE", "z9hG4bK2", "c", 1, None, "", ""),
            405,
            None,
        ),
        (
            req(
                "INVITE",
                "z9hG4bK3",
                "c",
                1,
                None,
                "Content-Type: text/plain\r\n",
                "hi",
            ),
            415,
            Some((
                "Accept",
                "application/sdp, multipart/mixed, application/rs-metadata+xml, application/rs-metadata",
            )),
        ),
        (
            req("INVITE", "z9hG4bK4", "c", 1, None, "Require: 100rel, foo\r\n", ""),
            420,
            Some(("Unsupported", "100rel, foo")),
        ),
        (
            String::from_utf8(req("OPTIONS", "z9hG4bK5", "c", 1, None, "", ""))
                .unwrap()
                .replacen("sip:srs@192.0.2.1", "http://x", 1)
                .into_bytes(),
            416,
            None,
        ),
        (
            req("OPTIONS", "z9hG4bK6", "c", 1, None, "", ""),
            200,
            Some(("Allow", ALLOW)),
        ),
        (
            req("INFO", "z9hG4bK7", "c", 1, None, "", ""),
            481,
            None,
        ),
        (
            req("OPTIONS", "z9hG4bK8", "c", 1, Some("nosuch"), "", ""),
            481,
            None,
        ),
    ];
    for (data, status, hdr) in cases {
        let mut ep = ep();
        ep.handle_receive(now, p, &data);
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![status]);
        assert!(out[0].to_tag().is_some(), "final responses carry a To-tag");
        if let Some((h, v)) = hdr {
            assert_eq!(out[0].header(h), Some(v), "{status}");
        }
        assert!(events(&mut ep).is_empty());
    }
}

#[test]
fn malformed_400_names_problem_or_dropped() {
    let now = Mono::from_secs(1_000);
    let p = peer(Transport::Udp);
    let mut ep = ep();
    let bad = String::from_utf8(req("OPTIONS", "z9hG4bK1", "c", 1, None, "", ""))
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    ep.handle_receive(now, p, bad.as_bytes());
    let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
    assert_eq!(out.len(), 1);
    let text = String::from_utf8_lossy(&out[0].data);
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request - CSeq Method Mismatch\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: c\r\n"));
    // Missing header → 400 naming it.
    let nocall = String::from_utf8(req("OPTIONS", "z9hG4bK2", "c", 1, None, "", ""))
        .unwrap()
        .replace("Call-ID: c\r\n", "");
    ep.handle_receive(now, p, nocall.as_bytes());
    let m = drain(&mut ep);
    assert_eq!(
        m[0].start,
        StartLine::Response {
            status: 400,
            reason: "Bad Request - Missing Call-ID Header".into(),
            version: "SIP/2.0".into()
        }
    );
    // No Via: nothing can be answered.
    ep.handle_receive(now, p, b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: x\r\n\r\n");
    ep.handle_receive(now, p, b"\x00\x01garbage");
    ep.handle_receive(
        now,
        p,
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(drain(&mut ep).is_empty());
    assert_eq!(ep.stats().responses_dropped, 1);
    assert_eq!(ep.stats().malformed_answered, 2);
    assert!(ep.stats().malformed_dropped >= 2);
    assert_eq!(ep.stats().responses_sent[3], 2);
}

#[test]
fn invite_2xx_carries_allow_supported_and_contact_feature_tag() {
    // RFC 3261 §13.3.1.4 (Allow, Supported in the 2xx); RFC 7866 §6.2 (`+sip.srs`).
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 42,
        supported: vec!["siprec".into()],
        contact_params: ";+sip.srs".into(),
        ..EndpointConfig::default()
    });
    let now = Mono::from_secs(1_000);
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv7", "call7", 1, None));
    drain(&mut ep);
    let Some(Event::Invite { txn, .. }) = events(&mut ep).pop() else {
        panic!("no INVITE event")
    };
    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
    let out = drain(&mut ep);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(out[0].header("Allow"), Some(ALLOW));
    assert_eq!(out[0].header("Supported"), Some("siprec"));
    assert_eq!(
        out[0].header("Contact"),
        Some("<sip:127.0.0.1:5060>;+sip.srs")
    );
    let c = out[0].contact().unwrap().unwrap();
    assert!(c.params.iter().any(|(k, _)| k == "+sip.srs"), "{c:?}");
}

#[test]
fn update_2xx_carries_the_contact_feature_tag() {
    // RFC 3311 §5.2: UPDATE is a target refresh, its 2xx has a Contact; RFC 7866 §6.2: the
    // SRS's Contact carries `+sip.srs` in responses that create *and modify* the dialog.
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 42,
        contact_params: ";+sip.srs".into(),
        ..EndpointConfig::default()
    });
    let now = Mono::from_secs(1_000);
    let p = peer(Transport::Udp);
    let (_, _, tag) = establish(&mut ep, now, p);
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    events(&mut ep);
    ep.handle_receive(
        now,
        p,
        &req("UPDATE", "z9hG4bKup9", "call1", 2, Some(&tag), "", ""),
    );
    let txn = match events(&mut ep).as_slice() {
        [Event::InDialogRequest { txn, .. }] => *txn,
        other => panic!("{other:?}"),
    };
    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
    let out = drain(&mut ep);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        out[0].header("Contact"),
        Some("<sip:127.0.0.1:5060>;+sip.srs")
    );
}

#[test]
fn we_refresh_with_update_when_the_uac_lacks_timer_and_bye_on_481() {
    // A Session-Expires without `Supported: timer` (inserted by a proxy): we are the
    // refresher (RFC 4028 §9) and send UPDATE at half the interval; a 481 ends it.
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 42,
        supported: vec!["timer".into()],
        ..EndpointConfig::default()
    });
    let now = Mono::from_secs(1_000);
    let p = peer(Transport::Tcp);
    let inv = req(
        "INVITE",
        "z9hG4bKst1",
        "callst",
        1,
        None,
        "Session-Expires: 120\r\nContent-Type: application/sdp\r\n",
        "v=0\r\n",
    );
    ep.handle_receive(now, p, &inv);
    drain(&mut ep);
    let Some(Event::Invite { txn, dialog, .. }) = events(&mut ep).pop() else {
        panic!("no INVITE event")
    };
    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
    let ok = drain(&mut ep).pop().unwrap();
    assert_eq!(ok.header("Session-Expires"), Some("120;refresher=uas"));
    assert_eq!(
        ok.header("Require"),
        None,
        "no Require: timer for a UAC without it"
    );
    let tag = ok.to_tag().unwrap();
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKst1", "callst", 1, Some(&tag), "", ""),
    );
    assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
    ep.handle_timeout(now + Duration::from_secs(59));
    assert!(drain(&mut ep).is_empty());
    ep.handle_timeout(now + Duration::from_secs(60));
    let out = drain(&mut ep);
    assert_eq!(out.len(), 1);
    let upd = &out[0];
    assert_eq!(upd.method(), Some(&Method::Update));
    assert_eq!(upd.header("Session-Expires"), Some("120;refresher=uas"));
    assert_eq!(upd.cseq().unwrap(), (1, Method::Update));
    assert!(upd.top_via().unwrap().sent_by().contains("127.0.0.1"));
    let branch = upd.top_via().unwrap().branch().unwrap().to_string();
    let resp = format!(
        "SIP/2.0 481 Call/Transaction Does Not Exist\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch={branch}\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: callst\r\nCSeq: 1 UPDATE\r\nContent-Length: 0\r\n\r\n",
        upd.header("From").unwrap(),
        upd.header("To").unwrap()
    );
    ep.handle_receive(now + Duration::from_secs(60), p, resp.as_bytes());
    let out = drain(&mut ep);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method(), Some(&Method::Bye));
    assert_eq!(out[0].cseq().unwrap(), (2, Method::Bye));
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::RefreshFailed
        }]
    );
}

fn elsewhere(p: Peer, remote: &str, conn: Option<u64>) -> Peer {
    Peer {
        remote: remote.parse().unwrap(),
        conn,
        ..p
    }
}

/// Issue #12 finding 2: in-dialog requests from another peer are refused 403 before they
/// touch the dialog (CSeq, offers, BYE); the real peer's requests still work.
#[test]
fn in_dialog_requests_from_another_peer_are_refused() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    let (_, dialog, tag) = establish(&mut ep, now, p);
    let evil = elsewhere(p, "192.0.2.66:5062", None);
    // A foreign ACK is dropped (and counted): the dialog still waits for the real one.
    ep.handle_receive(
        now,
        evil,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    assert!(events(&mut ep).is_empty());
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
    for (i, m) in ["INVITE", "BYE", "INFO", "UPDATE"].iter().enumerate() {
        let branch = format!("z9hG4bKevil{i}");
        // CSeq far ahead: had it been taken, the real SRC's next request would be 500.
        ep.handle_receive(
            now,
            evil,
            &req(m, &branch, "call1", 900, Some(&tag), "", ""),
        );
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![403], "{m}");
        assert!(
            matches!(&out[0].start, StartLine::Response { status: 403, reason, .. }
                if reason == "Forbidden (not from the dialog's peer)"),
            "{:?}",
            out[0].start
        );
        assert!(events(&mut ep).is_empty(), "{m} reached the application");
    }
    // Another port of the same address is the same peer over UDP.
    let same_host = elsewhere(p, "192.0.2.10:5070", None);
    ep.handle_receive(
        now,
        same_host,
        &req("INFO", "z9hG4bKinfo", "call1", 2, Some(&tag), "", ""),
    );
    match events(&mut ep).as_slice() {
        [Event::InDialogRequest { txn, .. }] => {
            ep.respond(now, *txn, 200, "OK", vec![], None).unwrap()
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert_eq!(ep.stats().foreign_peer_refused, 5);
    // The real BYE ends the dialog.
    ep.handle_receive(
        now,
        p,
        &req("BYE", "z9hG4bKbye", "call1", 3, Some(&tag), "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::Bye
        }]
    );
}

#[test]
fn cancel_from_another_peer_is_refused() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
    drain(&mut ep);
    events(&mut ep);
    let evil = elsewhere(p, "192.0.2.66:5062", None);
    ep.handle_receive(
        now,
        evil,
        &req("CANCEL", "z9hG4bKinv1", "call1", 1, None, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![403]);
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.dialog_count(), 1);
    assert_eq!(ep.stats().foreign_peer_refused, 1);
}

#[test]
fn a_dialog_is_bound_to_its_transport_connection_and_tls_identity() {
    let now = Mono::from_secs(1_000);
    // Set up over TLS, connection 7, identity "src-a".
    let tls = Peer {
        transport: Transport::Tls,
        conn: Some(7),
        ..peer(Transport::Tcp)
    };
    let mut ep = ep();
    ep.set_conn_identity(7, Some("CN=src-a".into()));
    ep.set_conn_identity(8, Some("CN=src-b".into()));
    ep.set_conn_identity(9, Some("CN=src-a".into()));
    ep.handle_receive(now, tls, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
    let txn = match events(&mut ep).as_slice() {
        [Event::Invite { txn, .. }] => *txn,
        other => panic!("{other:?}"),
    };
    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
    let out = drain(&mut ep);
    let tag = out
        .last()
        .and_then(Message::to_tag)
        .expect("2xx with our tag");
    assert_eq!(
        ep.dialog_peer(DialogId(1))
            .map(|(p, i)| (p.conn, i.map(str::to_string))),
        Some((Some(7), Some("CN=src-a".to_string())))
    );
    let info = |b: &str, cseq| req("INFO", b, "call1", cseq, Some(&tag), "", "");
    // The same request over plain UDP from the same address (the downgrade of the
    // finding): refused.
    ep.handle_receive(now, peer(Transport::Udp), &info("z9hG4bKi1", 2));
    assert_eq!(statuses(&drain(&mut ep)), vec![403]);
    // Another TLS client (another identity), same address: refused.
    ep.handle_receive(
        now,
        Peer {
            conn: Some(8),
            ..tls
        },
        &info("z9hG4bKi2", 2),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![403]);
    assert!(events(&mut ep).is_empty());
    // The same identity on a new connection (reconnect): taken, and our requests go there.
    ep.handle_receive(
        now,
        Peer {
            conn: Some(9),
            ..tls
        },
        &info("z9hG4bKi3", 2),
    );
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::InDialogRequest { .. }]
    ));
    drain(&mut ep);
    assert_eq!(
        ep.dialog_peer(DialogId(1)).map(|(p, _)| p.conn),
        Some(Some(9))
    );
    assert_eq!(ep.stats().foreign_peer_refused, 2);
}

#[test]
fn tcp_dialogs_take_their_connection_or_their_address_only() {
    let tcp = peer(Transport::Tcp);
    let d = tcp;
    assert!(tcp.may_act_for(None, &d, None));
    // Reconnect from the same address.
    assert!(elsewhere(tcp, "192.0.2.10:40000", Some(4)).may_act_for(None, &d, None));
    // Another host, even naming the same connection id, is another peer only when its
    // connection differs; the connection id is ours, so the same id is the same socket.
    assert!(!elsewhere(tcp, "192.0.2.66:5062", Some(5)).may_act_for(None, &d, None));
    // UDP from the TCP dialog's address.
    assert!(!peer(Transport::Udp).may_act_for(None, &d, None));
}

/// Issue #12: requests the endpoint has answered (here OPTIONS) only absorb
/// retransmissions; at the transaction cap the oldest of them make room, so a flood of
/// them never blocks a new request, while a transaction still waiting for the app (an
/// INVITE) is kept.
#[test]
fn settled_transactions_are_evicted_at_the_cap() {
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        max_transactions: 4,
        ..EndpointConfig::default()
    });
    let p = peer(Transport::Udp);
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv", "inv", 1, None));
    let txn = match events(&mut ep).as_slice() {
        [Event::Invite { txn, .. }] => *txn,
        other => panic!("{other:?}"),
    };
    for i in 0..20 {
        let b = format!("z9hG4bKopt{i}");
        ep.handle_receive(
            now,
            p,
            &req("OPTIONS", &b, &format!("o{i}"), 1, None, "", ""),
        );
    }
    let st = statuses(&drain(&mut ep));
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 20, "{st:?}");
    assert!(!st.contains(&503), "{st:?}");
    assert!(ep.transaction_count() <= 4);
    assert_eq!(ep.stats().transactions_evicted, 17);
    // The INVITE's transaction survived the flood.
    ep.respond(now, txn, 486, "Busy Here", vec![], None)
        .expect("the pending INVITE can still be answered");
}

/// Issue #12: over UDP a rejected INVITE's final is retransmitted (Timer G) only while the
/// responses stay within `response_budget_pct` of the request bytes; the transaction
/// still absorbs the ACK. Without a budget: RFC 3261 timers only.
#[test]
fn udp_retransmissions_stay_within_the_byte_budget() {
    let run = |pct: Option<u32>| -> (usize, usize, usize) {
        let now = Mono::from_secs(1_000);
        let mut ep = Endpoint::new(EndpointConfig {
            response_budget_pct: pct,
            ..EndpointConfig::default()
        });
        let p = peer(Transport::Udp);
        let inv = sdp_invite("z9hG4bKamp", "amp", 1, None);
        ep.handle_receive(now, p, &inv);
        let txn = match events(&mut ep).as_slice() {
            [Event::Invite { txn, .. }] => *txn,
            other => panic!("{other:?}"),
        };
        ep.refuse(now, txn, &Refusal::NotAcceptableHere("no codec".into()))
            .unwrap();
        let first: usize = std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| t.data.len())
            .sum();
        let mut out = first;
        for ms in (0..=32_000u64).step_by(250) {
            ep.handle_timeout(now + Duration::from_millis(ms));
            out += std::iter::from_fn(|| ep.poll_transmit())
                .map(|t| t.data.len())
                .sum::<usize>();
        }
        (inv.len(), first, out)
    };
    // The 100 and the final always go (here already more than this small INVITE); no
    // retransmission beyond the budget.
    let (inb, first, out) = run(Some(100));
    assert!(
        out <= inb.max(first),
        "{out} B out for {inb} B in (first sends {first})"
    );
    let (inb, _, out) = run(None);
    assert!(
        out > 2 * inb,
        "RFC timers alone retransmit more: {out} for {inb}"
    );
}

/// Issue #16: with the table full of transactions nothing may evict (INVITEs waiting
/// for the app), a new INVITE gets a counted 503, but the BYE of a live call and the
/// CANCEL of a pending INVITE are never refused for lack of a slot: they take one from
/// the reserve. An answered INVITE (Accepted, RFC 6026) holds no slot.
#[test]
fn bye_and_cancel_of_live_calls_pass_a_full_transaction_table() {
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        max_transactions: 4,
        max_dialogs: 8,
        seed: 42,
        ..EndpointConfig::default()
    });
    let p = peer(Transport::Udp);
    let (_, dialog, tag) = establish(&mut ep, now, p);
    assert_eq!(
        ep.transaction_count(),
        0,
        "the answered INVITE left the table"
    );
    assert_eq!(ep.accepted_count(), 1);
    ep.handle_receive(
        now,
        p,
        &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
    );
    events(&mut ep);
    for i in 0..4 {
        ep.handle_receive(
            now,
            p,
            &sdp_invite(&format!("z9hG4bKp{i}"), &format!("p{i}"), 1, None),
        );
    }
    assert_eq!(statuses(&drain(&mut ep)), vec![100, 100, 100, 100]);
    events(&mut ep);
    assert_eq!(ep.transaction_count(), 4);
    // Full: a new INVITE (and an OPTIONS) is refused statelessly and counted.
    ep.handle_receive(now, p, &sdp_invite("z9hG4bKnew", "new", 1, None));
    ep.handle_receive(now, p, &req("OPTIONS", "z9hG4bKo", "o", 1, None, "", ""));
    assert_eq!(statuses(&drain(&mut ep)), vec![503, 503]);
    assert_eq!(ep.stats().transactions_refused, 2);
    assert!(events(&mut ep).is_empty());
    // The live call's BYE passes.
    ep.handle_receive(
        now,
        p,
        &req("BYE", "z9hG4bKbye1", "call1", 2, Some(&tag), "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Terminated {
            dialog,
            reason: TerminationReason::Bye
        }]
    );
    // So does the CANCEL of a pending INVITE (200, and 487 for the INVITE).
    let cancel = req("CANCEL", "z9hG4bKp0", "p0", 1, None, "", "");
    ep.handle_receive(now, p, &cancel);
    let st = statuses(&drain(&mut ep));
    assert!(st.contains(&200) && st.contains(&487), "{st:?}");
    assert_eq!(ep.stats().transactions_refused, 2);
    // The settled BYE, CANCEL and cancelled INVITE make room for one more, then the
    // table is full again.
    for i in 0..3 {
        ep.handle_receive(
            now,
            p,
            &sdp_invite(&format!("z9hG4bKq{i}"), &format!("q{i}"), 1, None),
        );
    }
    assert_eq!(statuses(&drain(&mut ep)), vec![100, 503, 503]);
    assert_eq!(ep.stats().transactions_refused, 4);
    assert_eq!(ep.transaction_count(), 4);
}

/// Issue #16 (answered INVITE slot): with a small cap, 3 × `max_transactions` calls are
/// set up (INVITE → 200 → ACK → BYE) within Timer L; every INVITE is answered by the app
/// and none is refused. Retransmitted INVITEs of answered calls are still absorbed
/// (RFC 6026): no second dialog, no event, until Timer L ends.
#[test]
fn set_up_beyond_max_transactions_within_timer_l() {
    let cap = 16;
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        max_transactions: cap,
        max_dialogs: 1024,
        seed: 7,
        ..EndpointConfig::default()
    });
    let p = peer(Transport::Udp);
    let n = 3 * cap;
    let mut invites = Vec::new();
    for i in 0..n {
        // All within one second, far inside Timer L (32 s).
        let at = now + Duration::from_millis(20 * i as u64);
        let call = format!("c{i}");
        let inv = sdp_invite(&format!("z9hG4bKi{i}"), &call, 1, None);
        ep.handle_receive(at, p, &inv);
        let txn = match events(&mut ep).as_slice() {
            [Event::Invite {
                txn, initial: true, ..
            }] => *txn,
            other => panic!("call {i}: {other:?}"),
        };
        ep.respond(at, txn, 200, "OK", vec![], None).unwrap();
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![100, 200], "call {i}");
        let tag = out[1].to_tag().unwrap();
        ep.handle_receive(
            at,
            p,
            &req("ACK", &format!("z9hG4bKa{i}"), &call, 1, Some(&tag), "", ""),
        );
        assert!(
            matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]),
            "call {i}"
        );
        ep.handle_receive(
            at,
            p,
            &req("BYE", &format!("z9hG4bKb{i}"), &call, 2, Some(&tag), "", ""),
        );
        assert_eq!(statuses(&drain(&mut ep)), vec![200], "BYE of call {i}");
        events(&mut ep);
        assert!(ep.transaction_count() <= cap);
        invites.push(inv);
    }
    assert_eq!(ep.stats().transactions_refused, 0);
    assert_eq!(ep.stats().responses_sent[4], 0, "no 5xx");
    assert_eq!(ep.accepted_count(), n);
    assert_eq!(ep.stats().accepted_evicted, 0);
    // A late retransmission of an answered (and ended) INVITE is absorbed: no new call.
    let at = now + Duration::from_secs(2);
    ep.handle_receive(at, p, &invites[0]);
    assert!(events(&mut ep).is_empty(), "absorbed, not a new dialog");
    assert!(drain(&mut ep).is_empty(), "dialog gone: nothing to resend");
    assert_eq!(ep.dialog_count(), 0);
    // Timer L: the memos go 64·T1 after their 2xx.
    ep.handle_timeout(now + 64 * T1 + Duration::from_secs(1));
    assert_eq!(ep.accepted_count(), 0);
    assert!(ep.poll_timeout().is_none() || ep.transaction_count() > 0);
}

/// The Accepted-state memo is bounded: beyond `ACCEPTED_PER_TRANSACTION` × the cap the
/// oldest memo is dropped (counted), set-up still succeeds.
#[test]
fn accepted_memo_is_bounded() {
    let cap = 16;
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig {
        max_transactions: cap,
        max_dialogs: 4096,
        seed: 9,
        ..EndpointConfig::default()
    });
    let p = peer(Transport::Tcp);
    let n = ACCEPTED_PER_TRANSACTION * cap + 10;
    for i in 0..n {
        ep.handle_receive(
            now,
            p,
            &sdp_invite(&format!("z9hG4bKm{i}"), &format!("m{i}"), 1, None),
        );
        let txn = match events(&mut ep).as_slice() {
            [Event::Invite { txn, .. }] => *txn,
            other => panic!("{other:?}"),
        };
        ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
        drain(&mut ep);
    }
    assert_eq!(ep.accepted_count(), ACCEPTED_PER_TRANSACTION * cap);
    assert_eq!(ep.stats().accepted_evicted, 10);
    assert_eq!(ep.stats().transactions_refused, 0);
}

/// RFC 3261 §17.2.2: Timer J is 64·T1 over UDP and zero over TCP/TLS — an answered
/// non-INVITE request holds no slot on a reliable transport.
#[test]
fn completed_non_invite_transactions_hold_no_slot_over_tcp() {
    let now = Mono::from_secs(1_000);
    let mut ep = ep();
    ep.handle_receive(
        now,
        peer(Transport::Tcp),
        &req("OPTIONS", "z9hG4bKt", "t", 1, None, "", ""),
    );
    ep.handle_receive(
        now,
        peer(Transport::Udp),
        &req("OPTIONS", "z9hG4bKu", "u", 1, None, "", ""),
    );
    assert_eq!(statuses(&drain(&mut ep)), vec![200, 200]);
    ep.handle_timeout(now);
    assert_eq!(ep.transaction_count(), 1, "the TCP one is gone at once");
    ep.handle_timeout(now + 64 * T1 - Duration::from_millis(1));
    assert_eq!(ep.transaction_count(), 1);
    ep.handle_timeout(now + 64 * T1);
    assert_eq!(ep.transaction_count(), 0);
}
