//! Building responses: status line, copied headers (Via with `received`/`rport`, From,
//! To with our tag, Call-ID, CSeq), Server, Contact, capability headers.

use std::net::IpAddr;

use super::endpoint::{Endpoint, Peer, Transport, ALLOW};
use super::message::{Headers, Message, StartLine};
use super::parse;

pub(super) fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 6) - 1)
}

pub(super) fn sanitize_reason(r: &str) -> String {
    r.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

impl Endpoint {
    pub(super) fn capability_headers(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("Allow".to_string(), ALLOW.to_string()),
            (
                "Accept".to_string(),
                self.cfg.accepted_content_types.join(", "),
            ),
        ];
        if !self.cfg.supported.is_empty() {
            v.push(("Supported".into(), self.cfg.supported.join(", ")));
        }
        v
    }

    /// Our Contact for a dialog-creating response. Over TLS: `sips:` when the request
    /// asked for SIPS (Request-URI, or the top Record-Route / Contact when the SRC put a
    /// `sips:` URI there — RFC 3261 §12.1.1), else `sip:…;transport=tls`.
    pub(super) fn contact_for(&self, req: &Message, peer: &Peer) -> String {
        match peer.transport {
            Transport::Udp => format!("<sip:{}>", self.cfg.contact_host),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.cfg.contact_host),
            Transport::Tls => {
                let host = self
                    .cfg
                    .tls_contact_host
                    .clone()
                    .unwrap_or_else(|| peer.local.to_string());
                let scheme_of = |v: Option<&str>| {
                    v.and_then(|v| parse::parse_name_addr(parse::split_list(v).first()?).ok())
                        .map(|n| n.uri.scheme.clone())
                };
                let top = match req.header("Record-Route") {
                    Some(rr) => scheme_of(Some(rr)),
                    None => scheme_of(req.header("Contact")),
                };
                let sips = parse::parse_uri(req.request_uri().unwrap_or(""))
                    .is_ok_and(|u| u.scheme == "sips")
                    || top.as_deref() == Some("sips");
                if sips {
                    format!("<sips:{host}>")
                } else {
                    format!("<sip:{host};transport=tls>")
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_response(
        &self,
        req: &Message,
        peer: &Peer,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Vec<u8> {
        let mut h = Headers::new();
        for (i, line) in req.header_all("Via").into_iter().enumerate() {
            if i == 0 {
                h.push("Via", top_via_with_received(line, peer));
            } else {
                h.push("Via", line);
            }
        }
        if let Some(f) = req.header("From") {
            h.push("From", f);
        }
        if let Some(to) = req.header("To") {
            let has_tag = parse::parse_name_addr(to).is_ok_and(|n| n.tag().is_some());
            match to_tag {
                Some(tag) if !has_tag => h.push("To", format!("{to};tag={tag}")),
                _ => h.push("To", to),
            }
        }
        if let Some(c) = req.header("Call-ID") {
            h.push("Call-ID", c);
        }
        if let Some(c) = req.header("CSeq") {
            h.push("CSeq", c);
        }
        h.push("Server", self.cfg.user_agent.clone());
        for (k, v) in extra {
            if parse::is_token(&k) {
                h.push(&k, sanitize_reason(&v));
            }
        }
        let mut bytes = Vec::new();
        if let Some((ct, b)) = body {
            h.push("Content-Type", sanitize_reason(&ct));
            bytes = b;
        }
        Message {
            start: StartLine::Response {
                status,
                reason: sanitize_reason(reason),
                version: "SIP/2.0".into(),
            },
            headers: h,
            body: bytes,
        }
        .to_bytes()
    }
}

/// Add `received` (if the sent-by host is not the source IP) and fill `rport`
/// (RFC 3261 18.2.1, RFC 3581) on the first Via value of the line.
fn top_via_with_received(line: &str, peer: &Peer) -> String {
    let parts = parse::split_list(line);
    let Some(first) = parts.first() else {
        return line.to_string();
    };
    let Ok(mut vias) = parse::parse_via(first) else {
        return line.to_string();
    };
    let Some(v) = vias.pop() else {
        return line.to_string();
    };
    let src = peer.remote.ip();
    let host_ip: Option<IpAddr> = v.host.trim_matches(['[', ']']).parse().ok();
    let needs_received = host_ip != Some(src);
    let has_rport = v.rport().is_some();
    if !needs_received && !has_rport {
        return line.to_string();
    }
    let mut out = format!("{}/{} {}", v.protocol, v.transport, v.sent_by());
    for (k, val) in &v.params {
        if k.eq_ignore_ascii_case("received") && needs_received {
            continue;
        }
        if k.eq_ignore_ascii_case("rport") {
            out.push_str(&format!(";rport={}", peer.remote.port()));
            continue;
        }
        match val {
            Some(val) => out.push_str(&format!(";{k}={val}")),
            None => out.push_str(&format!(";{k}")),
        }
    }
    if needs_received {
        out.push_str(&format!(";received={src}"));
    }
    for p in parts.iter().skip(1) {
        out.push_str(", ");
        out.push_str(p.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::sip::endpoint::test_support::*;

    fn invite_over(t: Transport, ruri: &str, tls_host: Option<&str>) -> Vec<Message> {
        let now = Instant::now();
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
        let now = Instant::now();
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
        let now = Instant::now();
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
}
