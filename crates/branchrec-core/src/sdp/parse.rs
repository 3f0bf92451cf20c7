//! Tolerant SDP parser.

use super::model::{
    Attribute, Bandwidth, Connection, MediaDescription, Origin, SdpLine, SessionDescription, Timing,
};
use super::SdpError;

/// Parse an SDP body.
///
/// Tolerant by design: accepts CRLF or LF, leading/trailing whitespace on lines, missing
/// `v=`/`o=`/`s=`/`t=` lines (defaults are filled in), addresses that are not IPs (kept as
/// text), and keeps lines of unknown type. Lines that are not of the form `x=...` are
/// skipped. Parsing stops at a second `v=` line (a stray second description pasted into
/// the same body part, seen in the wild). Fails only on an empty description or an
/// unreadable `m=` line, since the m-line index is what offer/answer is built on.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut sd = SessionDescription {
        version: 0,
        origin: Origin::default(),
        session_name: String::new(),
        connection: None,
        bandwidth: Vec::new(),
        timing: Vec::new(),
        attributes: Vec::new(),
        media: Vec::new(),
        other: Vec::new(),
    };
    let mut seen_any = false;
    let mut seen_v = false;

    for (idx, raw) in text.split('\n').enumerate() {
        let line = raw.trim();
        let mut chars = line.chars();
        let (kind, eq) = match (chars.next(), chars.next()) {
            (Some(k), Some(e)) => (k, e),
            _ => continue,
        };
        if eq != '=' || !kind.is_ascii_alphabetic() {
            continue;
        }
        // `kind` and `=` are both one byte, so index 2 is a char boundary.
        let value = line.get(2..).unwrap_or("");
        seen_any = true;
        let in_media = !sd.media.is_empty();

        match kind {
            'v' => {
                if seen_v {
                    break;
                }
                seen_v = true;
                sd.version = value.trim().parse().unwrap_or(0);
            }
            'o' if !in_media => sd.origin = parse_origin(value),
            's' if !in_media => sd.session_name = value.to_string(),
            'c' => match parse_connection(value) {
                Some(c) => match sd.media.last_mut() {
                    Some(m) => m.connection = Some(c),
                    None => sd.connection = Some(c),
                },
                None => push_other(&mut sd, kind, value),
            },
            'b' => match parse_bandwidth(value) {
                Some(b) => match sd.media.last_mut() {
                    Some(m) => m.bandwidth.push(b),
                    None => sd.bandwidth.push(b),
                },
                None => push_other(&mut sd, kind, value),
            },
            't' if !in_media => match parse_timing(value) {
                Some(t) => sd.timing.push(t),
                None => push_other(&mut sd, kind, value),
            },
            'a' => {
                let a = parse_attribute(value);
                match sd.media.last_mut() {
                    Some(m) => m.attributes.push(a),
                    None => sd.attributes.push(a),
                }
            }
            'm' => sd.media.push(parse_media(value, idx + 1)?),
            _ => push_other(&mut sd, kind, value),
        }
    }
    if !seen_any {
        return Err(SdpError::Empty);
    }
    Ok(sd)
}

fn push_other(sd: &mut SessionDescription, kind: char, value: &str) {
    let l = SdpLine {
        kind,
        value: value.to_string(),
    };
    match sd.media.last_mut() {
        Some(m) => m.other.push(l),
        None => sd.other.push(l),
    }
}

fn parse_origin(v: &str) -> Origin {
    let mut o = Origin::default();
    let mut it = v.split_ascii_whitespace();
    let fields: [&mut String; 6] = [
        &mut o.username,
        &mut o.session_id,
        &mut o.session_version,
        &mut o.net_type,
        &mut o.addr_type,
        &mut o.address,
    ];
    for f in fields {
        match it.next() {
            Some(t) => *f = t.to_string(),
            None => break,
        }
    }
    o
}

fn parse_connection(v: &str) -> Option<Connection> {
    let mut it = v.split_ascii_whitespace();
    let net_type = it.next()?.to_string();
    let addr_type = it.next()?.to_string();
    let address = it.next()?.to_string();
    Some(Connection {
        net_type,
        addr_type,
        address,
    })
}

fn parse_bandwidth(v: &str) -> Option<Bandwidth> {
    let (k, val) = v.split_once(':')?;
    Some(Bandwidth {
        kind: k.trim().to_string(),
        value: val.trim().parse().ok()?,
    })
}

fn parse_timing(v: &str) -> Option<Timing> {
    let mut it = v.split_ascii_whitespace();
    Some(Timing {
        start: it.next()?.parse().ok()?,
        stop: it.next()?.parse().ok()?,
    })
}

fn parse_attribute(v: &str) -> Attribute {
    match v.split_once(':') {
        Some((n, val)) => Attribute {
            name: n.trim().to_string(),
            value: Some(val.trim_end().to_string()),
        },
        None => Attribute {
            name: v.trim().to_string(),
            value: None,
        },
    }
}

fn parse_media(v: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let err = |reason: &str| SdpError::InvalidMedia {
        line,
        reason: reason.to_string(),
    };
    let mut it = v.split_ascii_whitespace();
    let media = it.next().ok_or_else(|| err("missing media type"))?;
    let port_s = it.next().ok_or_else(|| err("missing port"))?;
    let proto = it.next().ok_or_else(|| err("missing transport protocol"))?;
    let (port, port_count) = match port_s.split_once('/') {
        Some((p, n)) => (
            p.parse::<u16>().map_err(|_| err("bad port"))?,
            Some(n.parse::<u16>().map_err(|_| err("bad port count"))?),
        ),
        None => (port_s.parse::<u16>().map_err(|_| err("bad port"))?, None),
    };
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        proto: proto.to_string(),
        formats: it.map(str::to_string).collect(),
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{Direction, PayloadFormat};
    use std::net::{IpAddr, SocketAddr};

    const CISCO: &str = "v=0\r\no=CiscoSystemsSIP-GW-UserAgent 1247 9367 IN IP4 172.31.93.236\r\n\
s=SIP Call\r\nc=IN IP4 172.31.93.236\r\nt=0 0\r\nm=audio 10292 RTP/AVP 0 101\r\n\
c=IN IP4 172.31.93.236\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:20\r\na=sendonly\r\na=label:1\r\n\
m=audio 10294 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\n";

    #[test]
    fn parses_basic_siprec_offer() {
        let sd = parse(CISCO).unwrap();
        assert_eq!(sd.origin.username, "CiscoSystemsSIP-GW-UserAgent");
        assert_eq!(sd.origin.session_version, "9367");
        assert_eq!(sd.session_name, "SIP Call");
        assert_eq!(sd.timing, vec![Timing { start: 0, stop: 0 }]);
        assert_eq!(sd.media.len(), 2);
        let m0 = &sd.media[0];
        assert_eq!((m0.port, m0.proto.as_str()), (10292, "RTP/AVP"));
        assert_eq!(m0.formats, vec!["0", "101"]);
        assert_eq!(m0.label(), Some("1"));
        assert_eq!(m0.direction(&sd), Direction::SendOnly);
        assert_eq!(m0.ptime(), Some(20));
        assert_eq!(
            m0.codecs(),
            vec![
                PayloadFormat {
                    pt: 0,
                    encoding: "PCMU".into(),
                    clock_rate: 8000,
                    channels: 1,
                    fmtp: None
                },
                PayloadFormat {
                    pt: 101,
                    encoding: "telephone-event".into(),
                    clock_rate: 8000,
                    channels: 1,
                    fmtp: Some("0-16".into())
                },
            ]
        );
        // Second m-line: no media c=, falls back to session; no direction → sendrecv.
        let m1 = &sd.media[1];
        assert_eq!(
            m1.remote_addr(&sd),
            Some("172.31.93.236:10294".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(m1.direction(&sd), Direction::SendRecv);
        // PT 0 without rtpmap is still known from the static table.
        assert_eq!(m1.codecs()[0].encoding, "PCMU");
    }

    #[test]
    fn lf_only_and_indented_lines() {
        let sd = parse("  v=0\n  o=- 1 2 IN IP4 10.0.0.1\n  s=-\n  ...\n  m=audio 5000 RTP/AVP 8 18\n  a=label:x\n").unwrap();
        assert_eq!(sd.media.len(), 1);
        let c = sd.media[0].codecs();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].encoding.as_str(), c[1].encoding.as_str()),
            ("PCMA", "G729")
        );
        assert_eq!(sd.media[0].label(), Some("x"));
    }

    #[test]
    fn unknown_lines_are_kept_and_serialised() {
        let sd = parse("v=0\no=- 1 2 IN IP4 10.0.0.1\ns=x\ni=info\nt=0 0\ny=weird\nm=audio 1 RTP/AVP 0\ni=media info\n").unwrap();
        assert!(sd.other.iter().any(|l| l.kind == 'i' && l.value == "info"));
        assert!(sd.other.iter().any(|l| l.kind == 'y' && l.value == "weird"));
        assert_eq!(sd.media[0].other[0].value, "media info");
        let out = sd.to_string();
        assert!(out.contains("i=info\r\n"));
        assert!(out.contains("y=weird\r\n"));
        assert!(out.contains("m=audio 1 RTP/AVP 0\r\ni=media info\r\n"));
        assert!(!out.contains("\n\n"));
        // Round trip is stable.
        assert_eq!(parse(&out).unwrap(), sd);
    }

    #[test]
    fn display_is_crlf_and_roundtrips() {
        let sd = parse(CISCO).unwrap();
        let out = sd.to_string();
        assert!(out.starts_with("v=0\r\no=CiscoSystemsSIP-GW-UserAgent 1247 9367 IN IP4 172.31.93.236\r\ns=SIP Call\r\nc=IN IP4 172.31.93.236\r\nt=0 0\r\n"));
        assert_eq!(out.matches("\r\n").count(), out.matches('\n').count());
        assert_eq!(parse(&out).unwrap(), sd);
    }

    #[test]
    fn rfc5118_ipv6_sdp() {
        // RFC 5118 §4.6 / §4.8 / §4.9 SDP bodies.
        let sd = parse("v=0\r\no=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\ns=Live video feed for today's meeting\r\nc=IN IP6 2001:db8::20\r\nt=3338481189 3370017201\r\nm=audio 6000 RTP/AVP 2\r\na=rtpmap:2 G726-32/8000\r\nm=video 6024 RTP/AVP 107\r\na=rtpmap:107 H263-1998/90000\r\n").unwrap();
        assert_eq!(sd.origin.session_id, "971731711378798081");
        assert_eq!(
            sd.media[0].connection_addr(&sd),
            Some("2001:db8::20".parse::<IpAddr>().unwrap())
        );
        assert_eq!(sd.media[0].codecs()[0].encoding, "G726-32");
        assert_eq!(sd.timing[0].start, 3338481189);

        let sd = parse("v=0\r\no=bob 280744730 28977631 IN IP4 host.example.com\r\ns=\r\nt=0 0\r\nm=audio 22334 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nm=video 6024 RTP/AVP 107\r\nc=IN IP6 2001:db8::1\r\na=rtpmap:107 H263-1998/90000\r\n").unwrap();
        assert_eq!(sd.session_name, "");
        assert_eq!(sd.origin.address, "host.example.com");
        assert_eq!(
            sd.media[0].remote_addr(&sd),
            Some("192.0.2.1:22334".parse().unwrap())
        );
        assert_eq!(
            sd.media[1].remote_addr(&sd),
            Some("[2001:db8::1]:6024".parse().unwrap())
        );

        let sd = parse("v=0\r\no=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2\r\ns=Call me soon, please!\r\nc=IN IP6 ::ffff:192.0.2.2\r\nt=3338481189 3370017201\r\nm=audio 6000 RTP/AVP 2\r\n").unwrap();
        assert_eq!(
            sd.media[0].connection_addr(&sd),
            Some("::ffff:192.0.2.2".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn bad_media_lines_are_errors() {
        assert!(matches!(
            parse("v=0\nm=audio notaport RTP/AVP 0\n"),
            Err(SdpError::InvalidMedia { line: 2, .. })
        ));
        assert!(matches!(
            parse("v=0\nm=audio 70000 RTP/AVP 0\n"),
            Err(SdpError::InvalidMedia { .. })
        ));
        assert!(matches!(
            parse("v=0\nm=audio\n"),
            Err(SdpError::InvalidMedia { .. })
        ));
        assert_eq!(parse(""), Err(SdpError::Empty));
        assert_eq!(parse("garbage\nmore garbage"), Err(SdpError::Empty));
    }

    #[test]
    fn port_count_and_garbage_addresses() {
        let sd = parse("v=0\nc=IN IP4 X.X.X.X\nm=audio 4000/2 RTP/AVP 0\n").unwrap();
        assert_eq!(sd.media[0].port_count, Some(2));
        assert_eq!(sd.connection.as_ref().unwrap().address, "X.X.X.X");
        assert_eq!(sd.media[0].connection_addr(&sd), None);
        assert_eq!(sd.media[0].remote_addr(&sd), None);
        assert!(sd.to_string().contains("m=audio 4000/2 RTP/AVP 0\r\n"));
    }

    #[test]
    fn stops_at_second_description() {
        let sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1000 RTP/AVP 8\na=label:A\n--stray\nContent-Type: application/sdp\n\nv=0\no=- 2 2 IN IP4 1.2.3.4\nm=audio 2000 RTP/AVP 8\n").unwrap();
        assert_eq!(sd.media.len(), 1);
        assert_eq!(sd.origin.session_id, "1");
    }

    #[test]
    fn session_level_direction_and_hold_address() {
        let sd = parse("v=0\nc=IN IP4 0.0.0.0\na=inactive\nm=audio 1000 RTP/AVP 8\n").unwrap();
        assert_eq!(sd.media[0].direction(&sd), Direction::Inactive);
        assert!(sd.media[0].connection(&sd).unwrap().is_unspecified());
        assert_eq!(sd.media[0].remote_addr(&sd), None);
    }

    #[test]
    fn crypto_rtcp_mux_and_rtpmap_channels() {
        let sd = parse("v=0\nm=audio 1000 RTP/SAVP 111 96\na=rtpmap:111 opus/48000/2\na=rtpmap:96 weird\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abcd\na=rtcp-mux\na=ptime:20ms\n").unwrap();
        let m = &sd.media[0];
        assert_eq!(m.crypto(), vec!["1 AES_CM_128_HMAC_SHA1_80 inline:abcd"]);
        assert!(m.rtcp_mux());
        assert_eq!(m.ptime(), Some(20));
        let c = m.codecs();
        assert_eq!(
            c.len(),
            1,
            "96 has a malformed rtpmap and no static meaning"
        );
        assert_eq!((c[0].clock_rate, c[0].channels), (48000, 2));
    }
}
