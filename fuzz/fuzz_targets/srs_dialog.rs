//! Fuzz the SRS core's dialog binding (issue #12 finding 2) in simulated time: a SIPREC
//! INVITE from the SRC sets up a call, then the input is a sequence of datagrams from the
//! SRC (192.0.2.20) and from another host (192.0.2.66), either in-dialog requests built
//! from templates with fuzzed CSeq, method and body, or raw bytes. No input may panic,
//! and nothing the other host sends may change the dialog: no event for the call follows
//! one of its datagrams, the dialog's peer stays the SRC, and each of its in-dialog
//! requests is answered (403/481) or counted — never taken.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use branchrec::sip::{Endpoint, EndpointConfig, Peer, Transport};
use branchrec::siprec::srs::{Srs, SrsConfig, SrsEvent};
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n\
m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n";

const META: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\r\n\
<session session_id=\"c2Vzc2lvbjE=\"></session>\r\n\
<participant participant_id=\"cDE=\"><nameID aor=\"sip:alice@example.com\"/></participant>\r\n\
<stream stream_id=\"czE=\" session_id=\"c2Vzc2lvbjE=\"><label>1</label></stream>\r\n\
<stream stream_id=\"czI=\" session_id=\"c2Vzc2lvbjE=\"><label>2</label></stream>\r\n\
</recording>\r\n";

fn peer(remote: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        remote: remote.parse::<SocketAddr>().unwrap(),
        local: "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
        conn: None,
    }
}

fn request(method: &str, from: &str, cseq: u32, branch: u32, to_tag: &str, body: &str) -> String {
    let (ct, body) = if body.is_empty() {
        (String::new(), String::new())
    } else {
        (
            "Content-Type: multipart/mixed;boundary=B\r\n".to_string(),
            format!(
                "--B\r\nContent-Type: application/sdp\r\n\r\n{body}\r\n--B\r\n\
                 Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{META}\r\n--B--\r\n"
            ),
        )
    };
    let to = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@192.0.2.20>;tag=srctag\r\nTo: <sip:srs@192.0.2.10>{to}\r\n\
         Call-ID: fuzz-call@192.0.2.20\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@{from}>;+sip.src\r\n\
         Require: siprec\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fuzz_target!(|data: &[u8]| {
    let ep = Endpoint::new(EndpointConfig {
        supported: vec!["siprec".into()],
        seed: 7,
        ..EndpointConfig::default()
    });
    let mut srs = Srs::new(
        ep,
        SrsConfig {
            sdp_addr: "192.0.2.10".parse().unwrap(),
            sdp_username: "branchrec".into(),
            session_id_seed: 1,
            srtp_key_seed: [7; 32],
        },
    );
    let src = "192.0.2.20:5060";
    let evil = "192.0.2.66:5060";
    let mut now = Mono::from_secs(1000);
    let inv = request("INVITE", src, 1, 1, "", SDP);
    srs.handle_receive(now, peer(src), inv.as_bytes());
    let mut call = None;
    while let Some(e) = srs.poll_event() {
        if let SrsEvent::Offered(o) = e {
            call = Some(o.call);
        }
    }
    let call = call.expect("the template INVITE is offered");
    srs.accept(now, call, &[30000, 30002]);
    let mut to_tag = String::new();
    while let Some(t) = srs.poll_transmit() {
        if let Ok(m) = branchrec::sip::parse_datagram(&t.data) {
            if let Some(tag) = m.to_tag() {
                to_tag = tag.to_string();
            }
        }
    }
    let src_ip = peer(src).remote.ip();
    let mut branch = 100u32;
    let methods = [
        "ACK", "BYE", "INVITE", "INFO", "UPDATE", "CANCEL", "OPTIONS",
    ];
    let mut rest = data;
    // Ops: [who, kind, cseq, step, len, bytes…].
    while let [who, kind, cseq, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (raw, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(*step) * 50);
        srs.handle_timeout(now);
        // Events from timers (e.g. the ACK timeout ending the call) are the SRC's doing.
        while srs.poll_event().is_some() {}
        while srs.poll_transmit().is_some() {}
        let foreign = who & 1 == 1;
        let from = if foreign { evil } else { src };
        branch += 1;
        let msg: Vec<u8> = match kind % 9 {
            7 | 8 => raw.to_vec(),
            k => {
                let m = methods[usize::from(k)];
                let body = match (m, raw.first()) {
                    ("INVITE" | "UPDATE" | "INFO", Some(b)) if b & 1 == 0 => {
                        String::from_utf8_lossy(raw).into_owned()
                    }
                    ("INVITE" | "UPDATE", _) => SDP.replace("sendonly", "inactive"),
                    _ => String::new(),
                };
                let tag = if who & 2 == 0 { to_tag.as_str() } else { "" };
                request(m, from, u32::from(*cseq) + 1, branch, tag, &body).into_bytes()
            }
        };
        let refused_before = srs.endpoint().stats().foreign_peer_refused;
        srs.handle_receive(now, peer(from), &msg);
        let mut answered = false;
        while let Some(t) = srs.poll_transmit() {
            answered |= branchrec::sip::parse_datagram(&t.data).is_ok();
        }
        while let Some(e) = srs.poll_event() {
            if foreign {
                let touched = match &e {
                    SrsEvent::Offered(o) => o.call == call,
                    SrsEvent::Established { call: c }
                    | SrsEvent::MediaUpdated { call: c, .. }
                    | SrsEvent::Metadata { call: c, .. }
                    | SrsEvent::Ended { call: c, .. } => *c == call,
                };
                assert!(
                    !touched,
                    "a datagram from another host changed the call: {e:?}"
                );
            }
        }
        if let Some((p, _)) = srs.endpoint().dialog_peer(call) {
            assert_eq!(
                p.remote.ip(),
                src_ip,
                "the dialog's peer moved to {}",
                p.remote
            );
        }
        // Bad input gets a response or a counted drop: every templated request from the
        // other host (an ACK has no response) is answered or counted as foreign.
        if foreign && kind % 9 < 7 && kind % 9 != 0 {
            assert!(
                answered || srs.endpoint().stats().foreign_peer_refused > refused_before,
                "{} from another host neither answered nor counted",
                methods[usize::from(kind % 9)]
            );
        }
    }
});
