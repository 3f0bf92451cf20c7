//! Minimal SIP (RFC 3261) for the load generator acting as a SIPREC client (SRC): formats
//! INVITE / ACK / BYE with an RFC 7866 multipart body, and parses just enough of responses
//! (status, Call-ID, CSeq, To-tag, Contact, SDP ports). Never panics on input.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Boundary used in our multipart bodies.
pub const BOUNDARY: &str = "branchrec-loadgen-boundary";

/// Dialog identifiers of one outgoing call.
#[derive(Debug, Clone)]
pub struct CallIds {
    /// Call-ID.
    pub call_id: String,
    /// Our From tag.
    pub from_tag: String,
    /// Per-call unique number used in metadata ids and AoRs.
    pub index: u32,
}

/// Builds the SDP offer: two sendonly m-lines (labels 1 and 2) with the given ports.
pub fn sdp_offer(local_ip: &str, ports: [u16; 2], pt: u8, codec_name: &str) -> String {
    let mut s = String::with_capacity(400);
    let _ = write!(
        s,
        "v=0\r\no=loadgen 1 1 IN IP4 {local_ip}\r\ns=-\r\nc=IN IP4 {local_ip}\r\nt=0 0\r\n"
    );
    for (i, port) in ports.iter().enumerate() {
        let _ = write!(
            s,
            "m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {codec_name}/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n\
             a=sendonly\r\na=label:{}\r\n",
            i + 1
        );
    }
    s
}

/// Builds RFC 7865 metadata (namespace `urn:ietf:params:xml:ns:recording:1`) for two
/// participants, each sending one stream (labels 1 and 2).
pub fn metadata(ids: &CallIds) -> String {
    let n = ids.index;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
<datamode>complete</datamode>\r\n\
<session session_id=\"lg-sess-{n}\">\r\n<sipSessionID>{cid}</sipSessionID>\r\n</session>\r\n\
<participant participant_id=\"lg-pa-{n}\">\r\n<nameID aor=\"sip:a{n}@loadgen.invalid\">\r\n<name>Caller {n}</name>\r\n</nameID>\r\n</participant>\r\n\
<participant participant_id=\"lg-pb-{n}\">\r\n<nameID aor=\"sip:b{n}@loadgen.invalid\">\r\n<name>Callee {n}</name>\r\n</nameID>\r\n</participant>\r\n\
<participantsessionassoc participant_id=\"lg-pa-{n}\" session_id=\"lg-sess-{n}\"/>\r\n\
<participantsessionassoc participant_id=\"lg-pb-{n}\" session_id=\"lg-sess-{n}\"/>\r\n\
<stream stream_id=\"lg-s1-{n}\" session_id=\"lg-sess-{n}\">\r\n<label>1</label>\r\n</stream>\r\n\
<stream stream_id=\"lg-s2-{n}\" session_id=\"lg-sess-{n}\">\r\n<label>2</label>\r\n</stream>\r\n\
<participantstreamassoc participant_id=\"lg-pa-{n}\">\r\n<send>lg-s1-{n}</send>\r\n<recv>lg-s2-{n}</recv>\r\n</participantstreamassoc>\r\n\
<participantstreamassoc participant_id=\"lg-pb-{n}\">\r\n<send>lg-s2-{n}</send>\r\n<recv>lg-s1-{n}</recv>\r\n</participantstreamassoc>\r\n\
</recording>\r\n",
        cid = ids.call_id
    )
}

/// Builds the multipart/mixed body (SDP first, then metadata).
pub fn multipart(sdp: &str, meta: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{meta}\r\n\
--{BOUNDARY}--\r\n"
    )
}

/// Parameters shared by every request of a run.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Our SIP socket's address.
    pub local: SocketAddr,
    /// The recorder's address.
    pub target: SocketAddr,
}

/// Formats the initial INVITE.
pub fn invite(ep: &Endpoint, ids: &CallIds, branch: &str, cseq: u32, body: &str) -> String {
    let (l, t) = (ep.local, ep.target);
    format!(
        "INVITE sip:srs@{t} SIP/2.0\r\n\
Via: SIP/2.0/UDP {l};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:src@{l}>;tag={ft}\r\n\
To: <sip:srs@{t}>\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} INVITE\r\n\
Contact: <sip:src@{l}>;+sip.src\r\n\
Require: siprec\r\n\
Accept: application/sdp, application/rs-metadata+xml\r\n\
Content-Type: multipart/mixed;boundary={BOUNDARY}\r\n\
Content-Length: {len}\r\n\r\n{body}",
        ft = ids.from_tag,
        cid = ids.call_id,
        len = body.len()
    )
}

/// Formats an in-dialog request without body (ACK or BYE).
pub fn in_dialog(
    method: &str,
    request_uri: &str,
    ep: &Endpoint,
    ids: &CallIds,
    to_tag: &str,
    branch: &str,
    cseq: u32,
) -> String {
    let (l, t) = (ep.local, ep.target);
    format!(
        "{method} {request_uri} SIP/2.0\r\n\
Via: SIP/2.0/UDP {l};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:src@{l}>;tag={ft}\r\n\
To: <sip:srs@{t}>;tag={to_tag}\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n",
        ft = ids.from_tag,
        cid = ids.call_id,
    )
}

/// A parsed SIP response, or the parts of a request we need to answer it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed<'a> {
    /// Status code for responses, `None` for requests.
    pub status: Option<u16>,
    /// Request method for requests.
    pub method: Option<&'a str>,
    /// Call-ID value.
    pub call_id: Option<&'a str>,
    /// CSeq number.
    pub cseq: Option<u32>,
    /// CSeq method.
    pub cseq_method: Option<&'a str>,
    /// To tag.
    pub to_tag: Option<&'a str>,
    /// URI in the Contact header.
    pub contact_uri: Option<&'a str>,
    /// Connection address of the SDP (first c= line).
    pub sdp_addr: Option<&'a str>,
    /// Ports of the SDP m=audio lines, in order (at most 4).
    pub audio_ports: Vec<u16>,
    /// Raw header lines (name, value) for echoing in responses.
    pub headers: Vec<(&'a str, &'a str)>,
}

fn header_name_is(name: &str, long: &str, short: &str) -> bool {
    name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)
}

/// Parses a SIP message; returns `None` if the start line is not SIP.
pub fn parse(buf: &[u8]) -> Option<Parsed<'_>> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], text.get(i + 4..).unwrap_or("")),
        None => (text, ""),
    };
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let mut p = Parsed::default();
    if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        p.status = Some(rest.get(..3)?.parse().ok()?);
    } else {
        let mut it = start.split(' ');
        p.method = Some(it.next()?);
        let _uri = it.next()?;
        if it.next()? != "SIP/2.0" {
            return None;
        }
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        p.headers.push((name, value));
        if header_name_is(name, "Call-ID", "i") {
            p.call_id = Some(value);
        } else if name.eq_ignore_ascii_case("CSeq") {
            let mut it = value.split_whitespace();
            p.cseq = it.next().and_then(|n| n.parse().ok());
            p.cseq_method = it.next();
        } else if header_name_is(name, "To", "t") {
            p.to_tag = value
                .split(';')
                .skip(1)
                .find_map(|param| param.trim().strip_prefix("tag="));
        } else if header_name_is(name, "Contact", "m") {
            if let (Some(a), Some(b)) = (value.find('<'), value.find('>')) {
                p.contact_uri = value.get(a + 1..b);
            }
        }
    }
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=audio ") {
            if let Some(port) = rest.split(' ').next().and_then(|s| s.parse().ok()) {
                if p.audio_ports.len() < 4 {
                    p.audio_ports.push(port);
                }
            }
        } else if let Some(rest) = line.strip_prefix("c=IN IP4 ") {
            if p.sdp_addr.is_none() {
                p.sdp_addr = rest.split('/').next();
            }
        }
    }
    Some(p)
}

/// Formats a response to a request (used to answer whatever the recorder sends us, e.g.
/// a BYE or OPTIONS): echoes Via/From/To/Call-ID/CSeq.
pub fn response_to(req: &Parsed<'_>, code: u16, reason: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &req.headers {
        if header_name_is(name, "Via", "v")
            || header_name_is(name, "From", "f")
            || header_name_is(name, "To", "t")
            || header_name_is(name, "Call-ID", "i")
            || name.eq_ignore_ascii_case("CSeq")
        {
            let _ = write!(s, "{name}: {value}\r\n");
        }
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_200_with_multipart_sdp() {
        let msg = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:src@127.0.0.1>;tag=abc\r\nTo: <sip:srs@127.0.0.1> ; tag=xyz;foo\r\n\
i: call-1\r\nCSeq: 7 INVITE\r\nContact: \"SRS\" <sip:srs@127.0.0.1:5060;transport=udp>\r\n\
Content-Type: application/sdp\r\nContent-Length: 99\r\n\r\n\
v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\na=recvonly\r\nm=audio 30002 RTP/AVP 0\r\n";
        let p = parse(msg.as_bytes()).unwrap();
        assert_eq!(p.status, Some(200));
        assert_eq!(p.call_id, Some("call-1"));
        assert_eq!(p.cseq, Some(7));
        assert_eq!(p.cseq_method, Some("INVITE"));
        assert_eq!(p.to_tag, Some("xyz"));
        assert_eq!(p.contact_uri, Some("sip:srs@127.0.0.1:5060;transport=udp"));
        assert_eq!(p.sdp_addr, Some("127.0.0.1"));
        assert_eq!(p.audio_ports, vec![30000, 30002]);
    }

    #[test]
    fn garbage_does_not_panic() {
        for g in [
            &b""[..],
            b"SIP/2.0 ",
            b"SIP/2.0 2",
            b"\xff\xfe",
            b"FOO",
            b"A B SIP/2.0\r\nCSeq:\r\n\r\nm=audio x",
        ] {
            let _ = parse(g);
        }
        assert!(
            parse(b"BYE sip:x SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n")
                .unwrap()
                .method
                == Some("BYE")
        );
    }

    #[test]
    fn invite_has_correct_content_length() {
        let ep = Endpoint {
            local: "127.0.0.1:5070".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
        };
        let ids = CallIds {
            call_id: "c1".into(),
            from_tag: "t1".into(),
            index: 3,
        };
        let body = multipart(
            &sdp_offer("127.0.0.1", [4000, 4002], 0, "PCMU"),
            &metadata(&ids),
        );
        let msg = invite(&ep, &ids, "z9hG4bKx", 1, &body);
        let (head, b) = msg.split_once("\r\n\r\n").unwrap();
        let cl: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cl, b.len());
        assert!(b.ends_with(&format!("--{BOUNDARY}--\r\n")));
        assert!(b.contains("a=label:2"));
        assert!(b.contains("sip:b3@loadgen.invalid"));
    }
}
