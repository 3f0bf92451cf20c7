//! Fuzz the SIP layer: datagram parsing, TCP stream framing (with arbitrary split points)
//! and the UAS endpoint, on arbitrary bytes. Any panic is a bug.
//! Run: `cd fuzz && cargo +nightly fuzz run sip_parse`.
#![no_main]

use branchrec::time::Mono;
use std::time::Duration;

use branchrec::sip::{parse_datagram, Endpoint, EndpointConfig, Peer, StreamFramer, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_datagram(data) {
        // Serialising a parsed message must give something that parses again.
        let again = parse_datagram(&m.to_bytes());
        assert!(again.is_ok(), "reparse failed: {again:?}");
        let _ = (m.cseq(), m.top_via(), m.from_tag(), m.to_tag(), m.contact());
        let _ = (
            m.content_type(),
            m.content_length(),
            m.max_forwards(),
            m.require(),
        );
    }

    // Stream framing, split at a data-dependent point, fed twice.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut framer = StreamFramer::new();
    framer.push(&data[..split]);
    let _ = framer.next();
    framer.push(&data[split..]);
    framer.push(data);
    for _ in 0..8 {
        match framer.next() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }

    // Byte at a time (the framer's incremental header search) frames exactly what the
    // whole buffer frames.
    let frames = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut f = StreamFramer::new();
        let mut out = Vec::new();
        for p in pieces {
            f.push(p);
            while let Ok(Some(frame)) = f.next_frame() {
                out.push(frame);
                if out.len() > 64 {
                    return out;
                }
            }
        }
        out
    };
    let whole = frames(&mut std::iter::once(data));
    let bytes = frames(&mut data.chunks(1));
    assert_eq!(whole, bytes, "byte-at-a-time framing differs");

    let now = Mono::from_secs(1_000);
    let peer = Peer {
        transport: if split % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        remote: "192.0.2.7:5060".parse().unwrap(), // constant literal
        local: "192.0.2.1:5060".parse().unwrap(),  // constant literal
        conn: Some(1),
    };
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_receive(now, peer, data);
    ep.handle_receive(now, peer, data); // retransmission path
    while let Some(ev) = ep.poll_event() {
        if let branchrec::sip::Event::Invite { txn, .. }
        | branchrec::sip::Event::InDialogRequest { txn, .. } = ev
        {
            let _ = ep.respond(
                now,
                txn,
                200,
                "OK",
                vec![],
                Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
            );
        }
    }
    while ep.poll_transmit().is_some() {}
    ep.handle_timeout(now + Duration::from_secs(40));
    ep.handle_timeout(now + Duration::from_secs(100_000));
    while ep.poll_transmit().is_some() {}
});
