//! Building responses: status line, copied headers (Via with `received`/`rport`, From,
//! To with our tag, Call-ID, CSeq), Server, Contact, capability headers — and the one
//! refusal vocabulary: every final error response the endpoint, the SRS core and the
//! daemon shell send is a [`Refusal`], and [`Refusal::response`] is the only place that
//! turns one into a status code, reason phrase and extra headers.

use std::net::IpAddr;

use super::message::{Headers, Message, StartLine};
use super::parse;
use super::transport::{Peer, Transport};

/// Methods we implement (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// Seconds in the Retry-After of a 491, a 500 for an out-of-order CSeq and a 503 at the
/// dialog cap (RFC 3261 §14.1: the UAC retries a glare after a short while).
pub const SHORT_RETRY_AFTER_S: u32 = 1;

/// Why the recording server cannot record a call now (answered 503 with Retry-After).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The recording keys could not be loaded.
    #[error("recording keys unavailable")]
    NoKeys,
    /// The configured number of simultaneous calls is reached.
    #[error("call limit reached")]
    CallLimit,
    /// The data disk is full or unusable (the detail says which).
    #[error("{0}")]
    Storage(String),
    /// Setting up the recording failed (no RTP port, no file, ...).
    #[error("{0}")]
    Setup(String),
    /// The process is out of file descriptors (sockets and files share them): say so,
    /// rather than blaming the RTP port range.
    #[error("too many open files")]
    TooManyOpenFiles,
    /// The source already has `max_pending_sessions_per_source` sessions not confirmed by
    /// ACK (a peer that never ACKs must not take every port).
    #[error("too many unconfirmed sessions from this source")]
    SourceLimit,
}

/// Every refusal (final 4xx/5xx response) we send. Map with [`Refusal::response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed request; the detail names the problem (`Malformed Via Header`).
    Malformed(String),
    /// 400: the body (multipart, SDP, metadata framing) cannot be used.
    BadBody(String),
    /// 405 with Allow.
    MethodNotAllowed,
    /// 406 with `Accept: application/sdp` (the INVITE's Accept excludes SDP).
    NotAcceptable,
    /// 415 with Accept: the body types we take.
    UnsupportedMediaType {
        /// Value of the Accept header.
        accept: String,
    },
    /// 416: Request-URI scheme not sip/sips/tel.
    UnsupportedUriScheme,
    /// 420 with Unsupported: Require listed option tags we do not support.
    BadExtension(Vec<String>),
    /// 480 with a 399 Warning: a `sips:` Request-URI that did not arrive over TLS. 480,
    /// not 416: we do support sips: (on the TLS listener); 416 would say we cannot handle
    /// the scheme at all and invite a downgrade to sip: (RFC 5630).
    SipsOverInsecureTransport {
        /// Our host:port, the warn-agent of the Warning header.
        agent: String,
    },
    /// 422 with Min-SE: the Session-Expires of the request is below our minimum (RFC 4028).
    SessionIntervalTooSmall {
        /// Our Min-SE, seconds.
        min_se_s: u32,
    },
    /// 403: an in-dialog request (or CANCEL/ACK) that did not arrive from the dialog's
    /// peer: another transport, another TCP/TLS connection (and TLS identity), or over UDP
    /// another source address than the initial INVITE's.
    ForeignPeer,
    /// 403: the call's metadata cap (versions or bytes, RFC 7865 documents kept per call)
    /// is reached; the detail names it.
    MetadataLimit(String),
    /// 481: the in-dialog request or CANCEL matches nothing.
    NoSuchDialog,
    /// 487: the INVITE was cancelled or its dialog ended by BYE.
    RequestTerminated,
    /// 488: nothing in the offer can be recorded / answered (the detail says why).
    NotAcceptableHere(String),
    /// 488 with Accept: an initial INVITE without an SDP offer.
    NoOffer,
    /// 491 with Retry-After: another offer/answer is pending in the dialog.
    RequestPending,
    /// 500 with Retry-After: an in-dialog CSeq lower than the last one.
    CSeqOutOfOrder,
    /// 500: the application did not answer in time.
    AppTimeout,
    /// 500: any other internal failure.
    Internal,
    /// 503 with Retry-After: transaction or dialog limit of the endpoint.
    Overloaded {
        /// Seconds in Retry-After.
        retry_after_s: u32,
    },
    /// 503 with Retry-After: the recording server cannot record now.
    CannotRecord {
        /// Why.
        why: Unavailable,
        /// Seconds in Retry-After.
        retry_after_s: u32,
    },
    /// 505: SIP version other than 2.0.
    VersionNotSupported,
}

/// A [`Refusal`] as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalResponse {
    /// Status code (4xx/5xx).
    pub status: u16,
    /// The default reason phrase of the code (`Bad Request`).
    pub phrase: &'static str,
    /// The reason phrase we send (the default one, with the detail when there is one).
    pub reason: String,
    /// Extra headers (Allow, Accept, Unsupported, Warning, Retry-After).
    pub headers: Vec<(String, String)>,
}

impl Refusal {
    /// The one mapping from a refusal to status code, reason phrase and extra headers.
    pub fn response(&self) -> RefusalResponse {
        fn h(name: &str, value: impl Into<String>) -> Vec<(String, String)> {
            vec![(name.to_string(), value.into())]
        }
        let retry = |s: u32| h("Retry-After", s.to_string());
        let (status, phrase, detail, headers): (u16, &'static str, Option<String>, _) = match self {
            Refusal::Malformed(d) => (400, "Bad Request", Some(format!(" - {d}")), vec![]),
            Refusal::BadBody(d) => (400, "Bad Request", Some(format!(" ({d})")), vec![]),
            Refusal::MethodNotAllowed => (405, "Method Not Allowed", None, h("Allow", ALLOW)),
            Refusal::NotAcceptable => (406, "Not Acceptable", None, h("Accept", "application/sdp")),
            Refusal::UnsupportedMediaType { accept } => {
                (415, "Unsupported Media Type", None, h("Accept", accept.clone()))
            }
            Refusal::UnsupportedUriScheme => (416, "Unsupported URI Scheme", None, vec![]),
            Refusal::BadExtension(tags) => (420, "Bad Extension", None, h("Unsupported", tags.join(", "))),
            Refusal::SipsOverInsecureTransport { agent } => (
                480,
                "Temporarily Unavailable",
                None,
                h(
                    "Warning",
                    format!("399 {agent} \"sips: Request-URI received over a transport other than TLS; send it over TLS\""),
                ),
            ),
            Refusal::SessionIntervalTooSmall { min_se_s } => {
                (422, "Session Interval Too Small", None, h("Min-SE", min_se_s.to_string()))
            }
            Refusal::ForeignPeer => (403, "Forbidden", Some(" (not from the dialog's peer)".into()), vec![]),
            Refusal::MetadataLimit(d) => (403, "Forbidden", Some(format!(" ({d})")), vec![]),
            Refusal::NoSuchDialog => (481, "Call/Transaction Does Not Exist", None, vec![]),
            Refusal::RequestTerminated => (487, "Request Terminated", None, vec![]),
            Refusal::NotAcceptableHere(d) => (488, "Not Acceptable Here", Some(format!(" ({d})")), vec![]),
            Refusal::NoOffer => (
                488,
                "Not Acceptable Here",
                Some(" (SIPREC INVITE without SDP offer)".into()),
                h("Accept", "application/sdp, multipart/mixed"),
            ),
            Refusal::RequestPending => (491, "Request Pending", None, retry(SHORT_RETRY_AFTER_S)),
            Refusal::CSeqOutOfOrder => (
                500,
                "Server Internal Error",
                Some(" - CSeq Out Of Order".into()),
                retry(SHORT_RETRY_AFTER_S),
            ),
            Refusal::AppTimeout | Refusal::Internal => (500, "Server Internal Error", None, vec![]),
            Refusal::Overloaded { retry_after_s } => (503, "Service Unavailable", None, retry(*retry_after_s)),
            Refusal::CannotRecord { why, retry_after_s } => {
                (503, "Service Unavailable", Some(format!(" ({why})")), retry(*retry_after_s))
            }
            Refusal::VersionNotSupported => (505, "Version Not Supported", None, vec![]),
        };
        RefusalResponse {
            status,
            phrase,
            reason: format!("{phrase}{}", detail.unwrap_or_default()),
            headers,
        }
    }

    /// Its status code.
    pub fn status(&self) -> u16 {
        self.response().status
    }
}

pub(super) fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 6) - 1)
}

pub(super) fn sanitize_reason(r: &str) -> String {
    r.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// What a refusal's headers need from the endpoint configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefusalContext<'a> {
    /// Body types we accept (the Accept of a 415).
    pub accepted_content_types: &'a [String],
    /// Our host:port (the warn-agent of a 480's Warning).
    pub contact_host: &'a str,
}

/// Allow, Accept and Supported of a 200 to OPTIONS.
pub(super) fn capability_headers(
    accepted: &[String],
    supported: &[String],
) -> Vec<(String, String)> {
    let mut v = vec![
        ("Allow".to_string(), ALLOW.to_string()),
        ("Accept".to_string(), accepted.join(", ")),
    ];
    if !supported.is_empty() {
        v.push(("Supported".into(), supported.join(", ")));
    }
    v
}

/// Our Contact for a dialog-creating response. Over TLS: `sips:` when the request
/// asked for SIPS (Request-URI, or the top Record-Route / Contact when the SRC put a
/// `sips:` URI there — RFC 3261 §12.1.1), else `sip:…;transport=tls`.
/// `contact_host` is used on UDP/TCP, `tls_contact_host` (else the local address) on TLS.
pub(super) fn contact_for(
    contact_host: &str,
    tls_contact_host: Option<&str>,
    req: &Message,
    peer: &Peer,
) -> String {
    match peer.transport {
        Transport::Udp => format!("<sip:{contact_host}>"),
        Transport::Tcp => format!("<sip:{contact_host};transport=tcp>"),
        Transport::Tls => {
            let host = tls_contact_host
                .map(str::to_string)
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

/// A response to `req`: its Via list (top one with `received`/`rport`), From, To (with
/// `to_tag` added when it has none), Call-ID, CSeq, then Server, `extra` and the body.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_response(
    user_agent: &str,
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
    h.push("Server", user_agent);
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
    use super::*;
    use crate::sip::SipError;

    /// Every refusal maps to a 4xx/5xx with a non-empty reason starting with the default
    /// phrase, and carries exactly the headers it promises.
    #[test]
    #[allow(clippy::type_complexity)]
    fn every_refusal_maps_to_an_error_response() {
        let cases: Vec<(Refusal, u16, &str, Vec<(&str, &str)>)> = vec![
            (Refusal::Malformed("Missing Call-ID Header".into()), 400, "Bad Request - Missing Call-ID Header", vec![]),
            (Refusal::BadBody("SDP: x".into()), 400, "Bad Request (SDP: x)", vec![]),
            (Refusal::MethodNotAllowed, 405, "Method Not Allowed", vec![("Allow", ALLOW)]),
            (Refusal::NotAcceptable, 406, "Not Acceptable", vec![("Accept", "application/sdp")]),
            (
                Refusal::UnsupportedMediaType { accept: "application/sdp".into() },
                415,
                "Unsupported Media Type",
                vec![("Accept", "application/sdp")],
            ),
            (Refusal::UnsupportedUriScheme, 416, "Unsupported URI Scheme", vec![]),
            (
                Refusal::BadExtension(vec!["100rel".into(), "foo".into()]),
                420,
                "Bad Extension",
                vec![("Unsupported", "100rel, foo")],
            ),
            (
                Refusal::SipsOverInsecureTransport { agent: "h:5060".into() },
                480,
                "Temporarily Unavailable",
                vec![(
                    "Warning",
                    "399 h:5060 \"sips: Request-URI received over a transport other than TLS; send it over TLS\"",
                )],
            ),
            (
                Refusal::SessionIntervalTooSmall { min_se_s: 90 },
                422,
                "Session Interval Too Small",
                vec![("Min-SE", "90")],
            ),
            (Refusal::ForeignPeer, 403, "Forbidden (not from the dialog's peer)", vec![]),
            (
                Refusal::MetadataLimit("metadata version cap of 64 per call reached".into()),
                403,
                "Forbidden (metadata version cap of 64 per call reached)",
                vec![],
            ),
            (Refusal::NoSuchDialog, 481, "Call/Transaction Does Not Exist", vec![]),
            (Refusal::RequestTerminated, 487, "Request Terminated", vec![]),
            (
                Refusal::NotAcceptableHere("no codec".into()),
                488,
                "Not Acceptable Here (no codec)",
                vec![],
            ),
            (
                Refusal::NoOffer,
                488,
                "Not Acceptable Here (SIPREC INVITE without SDP offer)",
                vec![("Accept", "application/sdp, multipart/mixed")],
            ),
            (Refusal::RequestPending, 491, "Request Pending", vec![("Retry-After", "1")]),
            (
                Refusal::CSeqOutOfOrder,
                500,
                "Server Internal Error - CSeq Out Of Order",
                vec![("Retry-After", "1")],
            ),
            (Refusal::AppTimeout, 500, "Server Internal Error", vec![]),
            (Refusal::Internal, 500, "Server Internal Error", vec![]),
            (
                Refusal::Overloaded { retry_after_s: 5 },
                503,
                "Service Unavailable",
                vec![("Retry-After", "5")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::NoKeys, retry_after_s: 30 },
                503,
                "Service Unavailable (recording keys unavailable)",
                vec![("Retry-After", "30")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::CallLimit, retry_after_s: 30 },
                503,
                "Service Unavailable (call limit reached)",
                vec![("Retry-After", "30")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::Storage("storage full".into()), retry_after_s: 7 },
                503,
                "Service Unavailable (storage full)",
                vec![("Retry-After", "7")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::Setup("no RTP port".into()), retry_after_s: 7 },
                503,
                "Service Unavailable (no RTP port)",
                vec![("Retry-After", "7")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::TooManyOpenFiles, retry_after_s: 7 },
                503,
                "Service Unavailable (too many open files)",
                vec![("Retry-After", "7")],
            ),
            (
                Refusal::CannotRecord { why: Unavailable::SourceLimit, retry_after_s: 7 },
                503,
                "Service Unavailable (too many unconfirmed sessions from this source)",
                vec![("Retry-After", "7")],
            ),
            (Refusal::VersionNotSupported, 505, "Version Not Supported", vec![]),
        ];
        for (refusal, status, reason, headers) in cases {
            let r = refusal.response();
            assert!((400..600).contains(&r.status), "{refusal:?}");
            assert_eq!(r.status, status, "{refusal:?}");
            assert_eq!(refusal.status(), status);
            assert!(
                !r.phrase.is_empty() && r.reason.starts_with(r.phrase),
                "{refusal:?}"
            );
            assert_eq!(r.reason, reason, "{refusal:?}");
            let got: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(got, headers, "{refusal:?}");
        }
    }

    /// The SIP layer's errors are answered through the same mapping.
    #[test]
    fn sip_errors_go_through_the_refusal_mapping() {
        let accepted = ["application/sdp".to_string(), "multipart/mixed".to_string()];
        let cfg = RefusalContext {
            accepted_content_types: &accepted,
            contact_host: "h:5060",
        };
        let e = SipError::UnsupportedMediaType;
        assert_eq!(e.status(), (415, "Unsupported Media Type"));
        assert_eq!(
            e.refusal(&cfg),
            Refusal::UnsupportedMediaType {
                accept: "application/sdp, multipart/mixed".into()
            }
        );
        assert_eq!(
            SipError::SipsOverInsecureTransport.refusal(&cfg),
            Refusal::SipsOverInsecureTransport {
                agent: "h:5060".into()
            }
        );
        assert_eq!(
            SipError::RequestPending.refusal(&cfg).response().headers,
            vec![("Retry-After".to_string(), "1".to_string())]
        );
        assert_eq!(SipError::AppTimeout.status().0, 500);
        assert_eq!(SipError::UnknownTransaction.status().0, 481);
        assert_eq!(SipError::InvalidStatus(7).status().0, 500);
        assert_eq!(SipError::VersionNotSupported.status().0, 505);
    }
}
