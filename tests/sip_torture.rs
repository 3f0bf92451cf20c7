//! RFC 4475 / RFC 5118 torture messages through the parser and the UAS endpoint.
//! Data: /work/shared/testdata/torture (see its INDEX.md and SOURCES.md).

use branchrec::time::Mono;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use branchrec::sip::{
    parse_datagram, parse_datagram_lenient, Endpoint, EndpointConfig, Event, Peer, StreamFramer,
    Transport,
};

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/torture"
    ))
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
        local: "192.0.2.100:5060".parse::<SocketAddr>().unwrap(),
        conn: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// Passed to the application as an INVITE (endpoint sent 100 Trying first).
    AppInvite,
    /// The endpoint answered with this final status.
    Status(u16),
    /// Nothing sent, nothing reported.
    Dropped,
}

/// Run one message through a fresh endpoint; returns what happened.
fn run_endpoint(data: &[u8]) -> Answer {
    let now = Mono::from_secs(1_000);
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_receive(now, peer(), data);
    let mut statuses = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        // A 400 echoes the request's (possibly malformed) Via, so parse leniently.
        let (m, _) = parse_datagram_lenient(&t.data).expect("our own responses must parse");
        statuses.push(m.status().expect("we only send responses"));
        // Every response must echo the request's Call-ID/CSeq if the request had them.
    }
    let mut invite = false;
    while let Some(e) = ep.poll_event() {
        match e {
            Event::Invite { txn, initial, .. } => {
                assert!(initial);
                invite = true;
                // The app answers; the response must be well-formed too.
                ep.respond(now, txn, 486, "Busy Here", vec![], None)
                    .unwrap();
            }
            Event::Terminated {
                reason: branchrec::sip::TerminationReason::Rejected,
                ..
            } if invite => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    // Run timers to the end: nothing may panic and all state must be collected.
    let mut t = now;
    for _ in 0..200 {
        t += Duration::from_millis(500);
        ep.handle_timeout(t);
        while ep.poll_transmit().is_some() {}
    }
    assert_eq!(ep.transaction_count(), 0);
    assert_eq!(ep.dialog_count(), 0);
    if invite {
        assert_eq!(statuses, vec![100]);
        return Answer::AppInvite;
    }
    match statuses.as_slice() {
        [] => Answer::Dropped,
        [s] => Answer::Status(*s),
        more => panic!("several answers {more:?}"),
    }
}

/// What parse_datagram must do with the file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parse {
    Ok,
    Err,
}

use Answer::*;
use Parse::{Err as PErr, Ok as POk};

/// Expectation per file (INDEX.md "expected handling" → our answer as a UAS that only
/// implements INVITE/ACK/BYE/CANCEL/OPTIONS/UPDATE/INFO).
const TABLE: &[(&str, Parse, Answer)] = &[
    // valid; To carries a tag → in-dialog INVITE for an unknown dialog → 481
    (
        "rfc4475/rfc4475-3.1.1.1-wsinv-A-Short-Tortuous-INVITE.dat",
        POk,
        Status(481),
    ),
    (
        "rfc4475/rfc4475-3.1.1.2-intmeth-Wide-Range-of-Valid-Characters.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.1.1.3-esc01-Valid-Use-of-the-Escaping-Mechanism.dat",
        POk,
        AppInvite,
    ),
    (
        "rfc4475/rfc4475-3.1.1.4-escnull-Escaped-Nulls-in-URIs.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.1.1.5-esc02-Use-of-When-It-Is-Not-an-Escape.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.1.1.6-lwsdisp-Message-with-No-LWS-between-Display-Name-and.dat",
        POk,
        Status(200),
    ),
    (
        "rfc4475/rfc4475-3.1.1.7-longreq-Long-Values-in-Header-Fields.dat",
        POk,
        AppInvite,
    ),
    // trailing INVITE ignored; the REGISTER gets 405
    (
        "rfc4475/rfc4475-3.1.1.8-dblreq-Extra-Trailing-Octets-in-a-UDP-Datagram.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.1.1.9-semiuri-Semicolon-Separated-Parameters-in-URI-User-Part.dat",
        POk,
        Status(200),
    ),
    (
        "rfc4475/rfc4475-3.1.1.10-transports-Varied-and-Unknown-Transport-Types.dat",
        POk,
        Status(200),
    ),
    (
        "rfc4475/rfc4475-3.1.1.11-mpart01-Multipart-MIME-Message.dat",
        POk,
        Status(405),
    ),
    // valid responses: parsed, dropped (we are a UAS only)
    (
        "rfc4475/rfc4475-3.1.1.12-unreason-Unusual-Reason-Phrase.dat",
        POk,
        Dropped,
    ),
    (
        "rfc4475/rfc4475-3.1.1.13-noreason-Empty-Reason-Phrase.dat",
        POk,
        Dropped,
    ),
    // invalid
    (
        "rfc4475/rfc4475-3.1.2.1-badinv01-Extraneous-Header-Field-Separators.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.2-clerr-Content-Length-Larger-Than-Message.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.3-ncl-Negative-Content-Length.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.4-scalar02-Request-Scalar-Fields-with-Overlarge-Values.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.5-scalarlg-Response-Scalar-Fields-with-Overlarge-Values.dat",
        PErr,
        Dropped,
    ),
    (
        "rfc4475/rfc4475-3.1.2.6-quotbal-Unterminated-Quoted-String-in-Display-Name.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.7-ltgtruri-Enclosing-Request-URI.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.8-lwsruri-Malformed-SIP-Request-URI-embedded-LWS.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.9-lwsstart-Multiple-SP-Separating-Request-Line-Elements.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.10-trws-SP-Characters-at-End-of-Request-Line.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.11-escruri-Escaped-Headers-in-SIP-Request-URI.dat",
        PErr,
        Status(400),
    ),
    // "tolerable if Date ignored": we ignore Date
    (
        "rfc4475/rfc4475-3.1.2.12-baddate-Invalid-Time-Zone-in-Date-Header-Field.dat",
        POk,
        AppInvite,
    ),
    (
        "rfc4475/rfc4475-3.1.2.13-regbadct-Failure-to-Enclose-name-addr-URI-in.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.14-badaspec-Spaces-within-addr-spec.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.15-baddn-Non-token-Characters-in-Display-Name.dat",
        PErr,
        Status(400),
    ),
    // syntactically a message; the endpoint answers 505
    (
        "rfc4475/rfc4475-3.1.2.16-badvers-Unknown-Protocol-Version.dat",
        POk,
        Status(505),
    ),
    (
        "rfc4475/rfc4475-3.1.2.17-mismatch01-Start-Line-and-CSeq-Method-Mismatch.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.18-mismatch02-Unknown-Method-with-CSeq-Method-Mismatch.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.1.2.19-bigcode-Overlarge-Response-Code.dat",
        PErr,
        Dropped,
    ),
    // branch is just the magic cookie: RFC 2543 matching, answered normally
    (
        "rfc4475/rfc4475-3.2.1-badbranch-Missing-Transaction-Identifier.dat",
        POk,
        Status(200),
    ),
    (
        "rfc4475/rfc4475-3.3.1-insuf-Missing-Required-Header-Fields.dat",
        POk,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.3.2-unkscm-Request-URI-with-Unknown-Scheme.dat",
        POk,
        Status(416),
    ),
    (
        "rfc4475/rfc4475-3.3.3-novelsc-Request-URI-with-Known-but-Atypical-Scheme.dat",
        POk,
        Status(416),
    ),
    (
        "rfc4475/rfc4475-3.3.4-unksm2-Unknown-URI-Schemes-in-Header-Fields.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.3.5-bext01-Proxy-Require-and-Require.dat",
        POk,
        Status(420),
    ),
    (
        "rfc4475/rfc4475-3.3.6-invut-Unknown-Content-Type.dat",
        POk,
        Status(415),
    ),
    (
        "rfc4475/rfc4475-3.3.7-regaut01-Unknown-Authorization-Scheme.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.3.8-multi01-Multiple-Values-in-Single-Value-Required-Fields.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.3.9-mcl01-Multiple-Content-Length-Values.dat",
        PErr,
        Status(400),
    ),
    (
        "rfc4475/rfc4475-3.3.10-bcast-200-OK-Response-with-Broadcast-Via-Header-Field-Value.dat",
        POk,
        Dropped,
    ),
    // a UAS (not a proxy) answers normally
    (
        "rfc4475/rfc4475-3.3.11-zeromf-Max-Forwards-of-Zero.dat",
        POk,
        Status(200),
    ),
    (
        "rfc4475/rfc4475-3.3.12-cparam01-REGISTER-with-a-Contact-Header-Parameter.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.3.13-cparam02-REGISTER-with-a-url-parameter.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.3.14-regescrt-REGISTER-with-a-URL-Escaped-Header.dat",
        POk,
        Status(405),
    ),
    (
        "rfc4475/rfc4475-3.3.15-sdp01-Unacceptable-Accept-Offering.dat",
        POk,
        Status(406),
    ),
    (
        "rfc4475/rfc4475-3.4.1-inv2543-INVITE-with-RFC-2543-Syntax.dat",
        POk,
        AppInvite,
    ),
    ("rfc5118/rfc5118-4.1-ipv6-good.sip", POk, Status(405)),
    ("rfc5118/rfc5118-4.2-ipv6-bad.sip", PErr, Status(400)),
    ("rfc5118/rfc5118-4.3-port-ambiguous.sip", POk, Status(405)),
    ("rfc5118/rfc5118-4.4-port-unambiguous.sip", POk, Status(405)),
    (
        "rfc5118/rfc5118-4.5-via-received-param-with-delim.sip",
        POk,
        Status(481),
    ),
    (
        "rfc5118/rfc5118-4.5-via-received-param-no-delim.sip",
        POk,
        Status(200),
    ),
    ("rfc5118/rfc5118-4.6-ipv6-in-sdp.sip", POk, AppInvite),
    (
        "rfc5118/rfc5118-4.7-mult-ip-in-header.sip",
        POk,
        Status(481),
    ),
    ("rfc5118/rfc5118-4.8-mult-ip-in-sdp.sip", POk, AppInvite),
    ("rfc5118/rfc5118-4.9-ipv4-mapped-ipv6.sip", POk, AppInvite),
    // robustly accepted
    (
        "rfc5118/rfc5118-4.10-ipv6-bug-abnf-3-colons.sip",
        POk,
        Status(200),
    ),
    (
        "rfc5118/rfc5118-4.10-ipv6-correct-abnf-2-colons.sip",
        POk,
        Status(200),
    ),
];

#[test]
fn table_covers_every_file() {
    let mut n = 0;
    for sub in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(dir().join(sub)).unwrap() {
            let name = format!("{sub}/{}", e.unwrap().file_name().to_string_lossy());
            assert!(
                TABLE.iter().any(|(f, _, _)| *f == name),
                "{name} missing from table"
            );
            n += 1;
        }
    }
    assert_eq!(n, TABLE.len());
    assert_eq!(n, 61);
}

#[test]
fn every_torture_message() {
    let mut failures = Vec::new();
    for (file, parse, answer) in TABLE {
        let data = std::fs::read(dir().join(file)).unwrap();
        let p = match parse_datagram(&data) {
            Ok(_) => POk,
            Err(_) => PErr,
        };
        let a = run_endpoint(&data);
        if p != *parse || a != *answer {
            failures.push(format!("{file}: parse {p:?} answer {a:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn stream_framer_on_every_file() {
    for (file, parse, _) in TABLE {
        let data = std::fs::read(dir().join(file)).unwrap();
        let dgram = parse_datagram(&data);
        // One byte at a time, then everything: never panics, and where the file has a
        // Content-Length that fits, TCP framing agrees with datagram parsing.
        let mut fr = StreamFramer::new();
        let mut got = None;
        for b in &data {
            fr.push(std::slice::from_ref(b));
            match fr.next() {
                Ok(Some(m)) => {
                    got = Some(Ok(m));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    got = Some(Err(e));
                    break;
                }
            }
        }
        if *parse == POk
            && dgram
                .as_ref()
                .is_ok_and(|m| m.header("Content-Length").is_some())
        {
            let m = got.unwrap_or_else(|| panic!("{file}: no frame")).unwrap();
            assert_eq!(Some(&m), dgram.as_ref().ok(), "{file}");
        }
    }
}

#[test]
fn torture_over_tcp_peer() {
    // Same messages through a TCP peer: no retransmissions, state still collected.
    for (file, _, _) in TABLE {
        let data = std::fs::read(dir().join(file)).unwrap();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Mono::from_secs(1_000);
        let p = Peer {
            transport: Transport::Tcp,
            conn: Some(7),
            ..peer()
        };
        ep.handle_receive(now, p, &data);
        while let Some(t) = ep.poll_transmit() {
            assert_eq!(t.peer.conn, Some(7));
        }
        while let Some(e) = ep.poll_event() {
            if let Event::Invite { txn, .. } = e {
                ep.respond(now, txn, 488, "Not Acceptable Here", vec![], None)
                    .unwrap();
            }
        }
        while ep.poll_transmit().is_some() {}
        ep.handle_timeout(now + Duration::from_secs(64));
        assert_eq!(ep.poll_transmit(), None, "{file}: TCP must not retransmit");
        assert_eq!(ep.transaction_count(), 0, "{file}");
    }
}

/// Deterministic mutation fuzzing of every torture file (the cargo-fuzz target in fuzz/
/// does the same with coverage guidance): parse, reserialise, frame, and drive an endpoint.
#[test]
fn mutated_torture_messages_never_panic() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const BYTES: &[u8] = b"\r\n :;,\"<>@[]/=%\\\t0z\x00\xff";
    let now = Mono::from_secs(1_000);
    for (file, _, _) in TABLE {
        let orig = std::fs::read(dir().join(file)).unwrap();
        for _ in 0..150 {
            let mut d = orig.clone();
            for _ in 0..(1 + rnd() % 4) {
                if d.is_empty() {
                    break;
                }
                let pos = (rnd() as usize) % d.len();
                let b = BYTES[(rnd() as usize) % BYTES.len()];
                match rnd() % 4 {
                    0 => d[pos] = b,
                    1 => d.insert(pos, b),
                    2 => {
                        d.remove(pos);
                    }
                    _ => d.truncate(pos),
                }
            }
            if let Ok(m) = parse_datagram(&d) {
                // Same message modulo Content-Length (rewritten and moved last).
                let again = parse_datagram(&m.to_bytes())
                    .unwrap_or_else(|e| panic!("{file}: reserialised {e:?} {d:?}"));
                let strip = |m: &branchrec::sip::Message| {
                    let mut m = m.clone();
                    m.headers.remove("Content-Length");
                    m
                };
                assert_eq!(strip(&again), strip(&m), "{file}");
            }
            let mut fr = StreamFramer::new();
            fr.push(&d);
            fr.push(&d);
            for _ in 0..3 {
                if !matches!(fr.next(), Ok(Some(_))) {
                    break;
                }
            }
            let mut ep = Endpoint::new(EndpointConfig::default());
            ep.handle_receive(now, peer(), &d);
            ep.handle_receive(now, peer(), &d);
            while let Some(e) = ep.poll_event() {
                if let Event::Invite { txn, .. } | Event::InDialogRequest { txn, .. } = e {
                    ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
                }
            }
            ep.handle_timeout(now + Duration::from_secs(33));
            ep.handle_timeout(now + Duration::from_secs(100_000));
            while ep.poll_transmit().is_some() {}
            assert_eq!(ep.transaction_count(), 0, "{file}");
        }
    }
}
