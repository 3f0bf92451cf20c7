//! RFC 3264 answer for a recording server (RFC 7866 §8: the SRS only receives).

use std::net::{IpAddr, SocketAddr};

use super::crypto::{is_sdes_proto, select_crypto, SrtpNegotiated};
use super::model::{
    Attribute, Connection, Direction, MediaDescription, Origin, PayloadFormat, SessionDescription,
    Timing,
};
use super::SdpError;
use crate::media::srtp::{Secret, SrtpSuite};

/// What the recording server brings to the answer.
#[derive(Debug, Clone)]
pub struct AnswerParams<'a> {
    /// Our media address (goes into the session-level `c=` and `o=`).
    pub local_addr: IpAddr,
    /// One entry per offered m-line: the local RTP port we allocated, or `None` to reject
    /// that m-line (answered with port 0).
    pub ports: Vec<Option<u16>>,
    /// `o=` session id (keep it for the dialog's lifetime).
    pub session_id: u64,
    /// `o=` session version; the caller bumps it for every new answer in the dialog.
    pub session_version: u64,
    /// `o=` username.
    pub username: String,
    /// Encoding names we can record (case-insensitive), e.g. `["PCMU", "PCMA", "telephone-event"]`.
    pub supported: &'a [&'a str],
}

/// The answer and what was negotiated per m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The SDP to send (serialise with `to_string()`; CRLF line endings).
    pub sdp: SessionDescription,
    /// One entry per offered m-line, same order.
    pub streams: Vec<NegotiatedStream>,
}

/// Outcome for one offered m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedStream {
    /// Index of the m-line in the offer (and in the answer).
    pub mline: usize,
    /// The offer's `a=label`.
    pub label: Option<String>,
    /// Our port, `None` if the m-line was rejected.
    pub port: Option<u16>,
    /// Accepted payload formats, in offer order (empty if rejected).
    pub formats: Vec<PayloadFormat>,
    /// The direction we answered (`RecvOnly`, or `Inactive`; `Inactive` for rejected lines).
    pub direction: Direction,
    /// The SRC's RTP address for this stream, if it gave a usable one (not on hold).
    pub remote: Option<SocketAddr>,
    /// Why the m-line was rejected.
    pub reject_reason: Option<String>,
    /// SDES-SRTP keys for an `RTP/SAVP(F)` stream (RFC 4568); `None` for plain RTP.
    pub srtp: Option<SrtpNegotiated>,
}

/// Whether a media stream is currently "on hold" / paused from our (recording) point of
/// view: port 0, a `0.0.0.0`/`::` connection address, or a direction in which the SRC does
/// not send (`inactive`, `recvonly`). `sendonly` is the normal SIPREC direction and is not
/// hold.
pub fn is_hold(m: &MediaDescription, session: &SessionDescription) -> bool {
    if m.port == 0 {
        return true;
    }
    if m.connection(session)
        .map(Connection::is_unspecified)
        .unwrap_or(false)
    {
        return true;
    }
    matches!(
        m.direction(session),
        Direction::Inactive | Direction::RecvOnly
    )
}

fn is_rtp_avp(proto: &str) -> Option<bool> {
    // Some(false) = plain RTP we can take; Some(true) = SRTP/DTLS; None = not RTP.
    let p = proto.to_ascii_uppercase();
    match p.as_str() {
        "RTP/AVP" | "RTP/AVPF" => Some(false),
        "RTP/SAVP" | "RTP/SAVPF" | "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF" => Some(true),
        _ => None,
    }
}

fn is_telephone_event(enc: &str) -> bool {
    crate::media::codec::lookup(enc)
        .is_some_and(|c| c.role == crate::media::codec::Role::TelephoneEvent)
}

/// Build our answer to an SRC's offer.
///
/// Per m-line: audio over RTP/AVP(F) with at least one supported non-DTMF codec and a port
/// from `p.ports` is accepted — we echo only supported formats (in offer order, keeping
/// `telephone-event` at a matching clock rate and every accepted format's `a=fmtp`), copy `a=label` and `a=ptime`,
/// and answer `a=recvonly` (or `a=inactive` if the offer is `inactive` or `recvonly`, or
/// holds with `c=0.0.0.0`).
/// Everything else is rejected RFC 3264-style: port 0 with the offered formats echoed.
/// The m-line count and order are those of the offer; our address goes in a session-level
/// `c=`. For a re-INVITE call this again with `session_version` bumped.
/// Our SRTP keys come from `rng` (the caller's CSPRNG: the core reads no entropy).
pub fn build_answer(
    offer: &SessionDescription,
    p: &AnswerParams<'_>,
    rng: &mut (impl rand::RngCore + rand::CryptoRng),
) -> Result<Answer, SdpError> {
    build_answer_with_keys(offer, p, &mut |_, suite| random_key(rng, suite))
}

/// A fresh random master key||salt for `suite` (our side of an SDES exchange).
pub fn random_key(rng: &mut impl rand::RngCore, suite: SrtpSuite) -> Secret {
    let mut k = vec![0u8; suite.key_len() + suite.salt_len()];
    rng.fill_bytes(&mut k);
    Secret::new(k)
}

/// [`build_answer`] with the caller choosing our SRTP answer keys: `local_key(mline,
/// suite)` returns the key||salt for that m-line (keep it stable for a dialog, so a
/// re-sent answer carries the same key).
///
/// `RTP/SAVP`/`RTP/SAVPF` m-lines are accepted when one of their `a=crypto` lines has a
/// supported suite (best first: AEAD_AES_256_GCM, AEAD_AES_128_GCM,
/// AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32); the answer keeps the offered profile
/// and carries one `a=crypto` with the chosen tag and our own key. Without a usable line the m-line is rejected (port 0).
pub fn build_answer_with_keys(
    offer: &SessionDescription,
    p: &AnswerParams<'_>,
    local_key: &mut dyn FnMut(usize, SrtpSuite) -> Secret,
) -> Result<Answer, SdpError> {
    if p.ports.len() != offer.media.len() {
        return Err(SdpError::BadParams(format!(
            "{} ports given for {} offered m-lines",
            p.ports.len(),
            offer.media.len()
        )));
    }
    let conn = Connection::from_ip(p.local_addr);
    let username = if p.username.trim().is_empty() || p.username.contains(char::is_whitespace) {
        "-".to_string()
    } else {
        p.username.clone()
    };
    let mut sdp = SessionDescription {
        version: 0,
        origin: Origin {
            username,
            session_id: p.session_id.to_string(),
            session_version: p.session_version.to_string(),
            net_type: conn.net_type.clone(),
            addr_type: conn.addr_type.clone(),
            address: conn.address.clone(),
        },
        session_name: "-".into(),
        connection: Some(conn),
        bandwidth: Vec::new(),
        timing: vec![Timing { start: 0, stop: 0 }],
        attributes: Vec::new(),
        media: Vec::with_capacity(offer.media.len()),
        other: Vec::new(),
    };
    let mut streams = Vec::with_capacity(offer.media.len());

    for (i, (m, port)) in offer.media.iter().zip(p.ports.iter()).enumerate() {
        let label = m.label().map(str::to_string);
        let offered_dir = m.direction(offer);
        let accepted: Vec<PayloadFormat> = m
            .codecs()
            .into_iter()
            .filter(|c| {
                p.supported
                    .iter()
                    .any(|s| s.trim().eq_ignore_ascii_case(&c.encoding))
            })
            .collect();
        // RFC 4733 §7.1.1: telephone-event must use the clock rate of the voice codec, so
        // keep only DTMF formats whose rate matches an accepted voice format.
        let voice_rates: Vec<u32> = accepted
            .iter()
            .filter(|c| !is_telephone_event(&c.encoding))
            .map(|c| c.clock_rate)
            .collect();
        let accepted: Vec<PayloadFormat> = accepted
            .into_iter()
            .filter(|c| !is_telephone_event(&c.encoding) || voice_rates.contains(&c.clock_rate))
            .collect();
        let has_voice = !voice_rates.is_empty();
        let crypto = is_sdes_proto(&m.proto).then(|| select_crypto(m));

        let reject = if !m.media.eq_ignore_ascii_case("audio") {
            Some(format!("media type {} not recorded", m.media))
        } else if m.port == 0 {
            Some("stream disabled in offer (port 0)".to_string())
        } else if is_rtp_avp(&m.proto).is_none() {
            Some(format!("transport {} not supported", m.proto))
        } else if is_rtp_avp(&m.proto) == Some(true) && !is_sdes_proto(&m.proto) {
            Some(format!("secure transport {} not supported", m.proto))
        } else if let Some(Err(reason)) = crypto.as_ref() {
            Some(reason.to_string())
        } else if !has_voice {
            Some("no supported codec".to_string())
        } else if port.is_none() {
            Some("no local port allocated".to_string())
        } else {
            None
        };

        match (reject, *port) {
            (None, Some(local_port)) => {
                // A stream on hold (inactive, recvonly, or the RFC 2543 `c=0.0.0.0` hold
                // with any direction) carries nothing to us: answered `inactive`, and the
                // recording treats it as paused (RFC 7866 §6.1.3), from the first offer on.
                let direction = if is_hold(m, offer) {
                    Direction::Inactive
                } else {
                    match offered_dir {
                        Direction::Inactive | Direction::RecvOnly => Direction::Inactive,
                        Direction::SendOnly | Direction::SendRecv => Direction::RecvOnly,
                    }
                };
                let mut attributes = Vec::new();
                for c in &accepted {
                    let rtpmap = if c.channels > 1 {
                        format!("{} {}/{}/{}", c.pt, c.encoding, c.clock_rate, c.channels)
                    } else {
                        format!("{} {}/{}", c.pt, c.encoding, c.clock_rate)
                    };
                    attributes.push(Attribute::value("rtpmap", rtpmap));
                    if let Some(f) = &c.fmtp {
                        attributes.push(Attribute::value("fmtp", format!("{} {}", c.pt, f)));
                    }
                }
                if let Some(pt) = m.ptime() {
                    attributes.push(Attribute::value("ptime", pt.to_string()));
                }
                if let Some(l) = &label {
                    attributes.push(Attribute::value("label", l.clone()));
                }
                attributes.push(Attribute::flag(direction.as_str()));
                let srtp = match crypto {
                    Some(Ok(c)) => {
                        let neg = SrtpNegotiated {
                            tag: c.tag,
                            local_key: local_key(i, c.policy.suite),
                            policy: c.policy,
                        };
                        attributes.push(Attribute::value("crypto", neg.answer_value()));
                        Some(neg)
                    }
                    _ => None,
                };
                sdp.media.push(MediaDescription {
                    media: m.media.clone(),
                    port: local_port,
                    port_count: None,
                    proto: m.proto.clone(),
                    formats: accepted.iter().map(|c| c.pt.to_string()).collect(),
                    connection: None,
                    bandwidth: Vec::new(),
                    attributes,
                    other: Vec::new(),
                });
                streams.push(NegotiatedStream {
                    mline: i,
                    label,
                    port: Some(local_port),
                    formats: accepted,
                    direction,
                    remote: m.remote_addr(offer),
                    reject_reason: None,
                    srtp,
                });
            }
            (reason, _) => {
                let mut attributes = Vec::new();
                if let Some(l) = &label {
                    attributes.push(Attribute::value("label", l.clone()));
                }
                let mut formats = m.formats.clone();
                if formats.is_empty() {
                    // RFC 4566 requires at least one format on an m-line.
                    formats.push("0".into());
                }
                sdp.media.push(MediaDescription {
                    media: m.media.clone(),
                    port: 0,
                    port_count: None,
                    proto: m.proto.clone(),
                    formats,
                    connection: None,
                    bandwidth: Vec::new(),
                    attributes,
                    other: Vec::new(),
                });
                streams.push(NegotiatedStream {
                    mline: i,
                    label,
                    port: None,
                    formats: Vec::new(),
                    direction: Direction::Inactive,
                    remote: None,
                    reject_reason: Some(
                        reason.unwrap_or_else(|| "no local port allocated".to_string()),
                    ),
                    srtp: None,
                });
            }
        }
    }
    Ok(Answer { sdp, streams })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::parse;

    const SUPPORTED: &[&str] = &["PCMU", "PCMA", "telephone-event"];

    fn test_rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    fn params(n: usize) -> AnswerParams<'static> {
        AnswerParams {
            local_addr: "198.51.100.7".parse().unwrap(),
            ports: (0..n).map(|i| Some(30000 + 2 * i as u16)).collect(),
            session_id: 42,
            session_version: 1,
            username: "branchrec".into(),
            supported: SUPPORTED,
        }
    }

    #[test]
    fn two_stream_offer_is_answered_recvonly_with_labels() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 7232 RTP/AVP 18 0 101\r\na=ptime:20\r\na=sendonly\r\na=label:1\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15,16\r\n\
m=audio 7236 RTP/AVP 0 101\r\na=sendonly\r\na=label:2\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
        .unwrap();
        let a = build_answer(&offer, &params(2), &mut test_rng()).unwrap();
        let text = a.sdp.to_string();
        assert!(text.starts_with("v=0\r\no=branchrec 42 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15,16\r\na=ptime:20\r\na=label:1\r\na=recvonly\r\n"), "{text}");
        assert!(text.contains("m=audio 30002 RTP/AVP 0 101\r\n"));
        assert!(!text.contains("sendonly"));
        assert_eq!(a.streams.len(), 2);
        assert_eq!(a.streams[0].label.as_deref(), Some("1"));
        assert_eq!(a.streams[0].direction, Direction::RecvOnly);
        assert_eq!(a.streams[0].remote, Some("10.0.0.1:7232".parse().unwrap()));
        assert_eq!(
            a.streams[0]
                .formats
                .iter()
                .map(|f| f.pt)
                .collect::<Vec<_>>(),
            vec![0, 101],
            "G.729 (18) is not supported and is dropped; order is the offer's"
        );
        // The answer parses back to the same thing.
        assert_eq!(parse(&text).unwrap(), a.sdp);
    }

    #[test]
    fn unsupported_codec_and_video_are_rejected_with_port_zero() {
        let offer = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 18 101\na=rtpmap:101 telephone-event/8000\na=label:1\nm=video 4002 RTP/AVP 96\na=rtpmap:96 H264/90000\nm=audio 4004 RTP/AVP 8\n").unwrap();
        let a = build_answer(&offer, &params(3), &mut test_rng()).unwrap();
        assert_eq!(a.sdp.media.len(), 3);
        // Only telephone-event supported → not recordable → rejected.
        assert_eq!(a.sdp.media[0].port, 0);
        assert_eq!(a.sdp.media[0].formats, vec!["18", "101"]);
        assert_eq!(a.sdp.media[0].label(), Some("1"));
        assert_eq!(a.streams[0].port, None);
        assert_eq!(
            a.streams[0].reject_reason.as_deref(),
            Some("no supported codec")
        );
        assert_eq!(a.sdp.media[1].port, 0);
        assert_eq!(a.sdp.media[1].media, "video");
        assert!(a.streams[1]
            .reject_reason
            .as_deref()
            .unwrap()
            .contains("video"));
        assert_eq!(a.sdp.media[2].port, 30004);
        assert_eq!(a.streams[2].direction, Direction::RecvOnly);
        let text = a.sdp.to_string();
        assert!(text.contains("m=audio 0 RTP/AVP 18 101\r\n"));
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"));
    }

    #[test]
    fn none_port_rejects_and_count_mismatch_errors() {
        let offer =
            parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\n")
                .unwrap();
        let mut p = params(2);
        p.ports[1] = None;
        let a = build_answer(&offer, &p, &mut test_rng()).unwrap();
        assert_eq!(a.sdp.media[0].port, 30000);
        assert_eq!(a.sdp.media[1].port, 0);
        assert_eq!(
            a.streams[1].reject_reason.as_deref(),
            Some("no local port allocated")
        );
        p.ports.pop();
        assert!(matches!(
            build_answer(&offer, &p, &mut test_rng()),
            Err(SdpError::BadParams(_))
        ));
    }

    #[test]
    fn inactive_offer_gets_inactive_answer_and_is_hold() {
        let offer = parse("v=0\nc=IN IP4 192.168.1.2\nm=audio 19254 RTP/AVP 0 101 19\na=rtpmap:101 telephone-event/8000\na=rtpmap:19 CN/8000\na=inactive\na=label:1\n").unwrap();
        assert!(is_hold(&offer.media[0], &offer));
        let a = build_answer(&offer, &params(1), &mut test_rng()).unwrap();
        assert_eq!(a.streams[0].direction, Direction::Inactive);
        assert_eq!(a.sdp.media[0].direction_attr(), Some(Direction::Inactive));
        assert_eq!(a.sdp.media[0].formats, vec!["0", "101"]);
    }

    #[test]
    fn hold_detection() {
        let s = parse("v=0\nc=IN IP4 0.0.0.0\nm=audio 16000 RTP/AVP 8\na=label:1\n").unwrap();
        assert!(is_hold(&s.media[0], &s));
        let a = build_answer(&s, &params(1), &mut test_rng()).unwrap();
        // Still answered (recvonly) so the session survives; but no remote address.
        assert_eq!(a.streams[0].port, Some(30000));
        assert_eq!(a.streams[0].remote, None);
        let s = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 16000 RTP/AVP 8\na=sendonly\n").unwrap();
        assert!(!is_hold(&s.media[0], &s));
        let s = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 0 RTP/AVP 8\n").unwrap();
        assert!(is_hold(&s.media[0], &s));
        let s = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 5 RTP/AVP 8\na=recvonly\n").unwrap();
        assert!(is_hold(&s.media[0], &s));
        let a = build_answer(&s, &params(1), &mut test_rng()).unwrap();
        assert_eq!(a.streams[0].direction, Direction::Inactive);
        let s = parse("v=0\nc=IN IP6 ::\nm=audio 5 RTP/AVP 8\n").unwrap();
        assert!(is_hold(&s.media[0], &s));
    }

    #[test]
    fn srtp_with_unusable_key_is_rejected_and_ipv6_local_address() {
        let offer = parse("v=0\nc=IN IP6 2001:db8::1\nm=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xx\nm=audio 4002 RTP/AVP 0\n").unwrap();
        let mut p = params(2);
        p.local_addr = "2001:db8::99".parse().unwrap();
        let a = build_answer(&offer, &p, &mut test_rng()).unwrap();
        assert_eq!(a.sdp.media[0].port, 0);
        assert!(a.streams[0]
            .reject_reason
            .as_deref()
            .unwrap()
            .contains("crypto"));
        assert_eq!(
            a.streams[1].remote,
            Some("[2001:db8::1]:4002".parse().unwrap())
        );
        let text = a.sdp.to_string();
        assert!(text.contains("c=IN IP6 2001:db8::99\r\n"));
        assert!(text.contains("o=branchrec 42 1 IN IP6 2001:db8::99\r\n"));
    }

    #[test]
    fn srtp_best_suite_is_answered_with_our_own_key() {
        let k30 = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";
        let k28 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
        let offer = parse(&format!(
            "v=0\nc=IN IP4 10.0.0.1\n\
m=audio 4000 RTP/SAVP 8\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{k30}\n\
a=crypto:2 F8_128_HMAC_SHA1_80 inline:{k30}\na=crypto:3 AEAD_AES_128_GCM inline:{k28}\n\
a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{k30}\n\
m=audio 4002 RTP/SAVPF 8\na=crypto:9 F8_128_HMAC_SHA1_80 inline:{k30}\n\
m=audio 4004 UDP/TLS/RTP/SAVP 8\na=fingerprint:sha-256 00\n\
m=audio 4006 RTP/SAVP 8\n"
        ))
        .unwrap();
        let a = build_answer(&offer, &params(4), &mut test_rng()).unwrap();
        let text = a.sdp.to_string();
        let s = a.streams[0].srtp.as_ref().expect("SRTP negotiated");
        assert_eq!(s.tag, 3);
        assert_eq!(s.suite(), SrtpSuite::AeadAes128Gcm);
        assert_eq!(
            s.policy.keys[0].key.expose(),
            &(0u8..16).collect::<Vec<_>>()[..]
        );
        assert_eq!(s.local_key.len(), 28);
        assert_ne!(
            s.local_key.expose()[..16],
            s.policy.keys[0].key.expose()[..]
        );
        assert!(text.contains("m=audio 30000 RTP/SAVP 8\r\n"), "{text}");
        assert!(
            text.contains(&format!("a=crypto:{}\r\n", s.answer_value())),
            "{text}"
        );
        assert_eq!(
            text.matches("a=crypto:").count(),
            1,
            "one line, for the accepted m-line"
        );
        assert!(
            !text.contains(k28) && !text.contains(k30),
            "never echo the offerer's key"
        );
        for (i, what) in [
            (1, "crypto suite"),
            (2, "not supported"),
            (3, "without a=crypto"),
        ] {
            assert_eq!(a.sdp.media[i].port, 0);
            let r = a.streams[i].reject_reason.as_deref().unwrap();
            assert!(r.contains(what), "{i}: {r}");
        }
        // Our key is stable when the caller says so (re-sent answers).
        let fixed = Secret::new(vec![1; 28]);
        let a2 = build_answer_with_keys(&offer, &params(4), &mut |_, _| fixed.clone()).unwrap();
        assert_eq!(a2.streams[0].srtp.as_ref().unwrap().local_key, fixed);
    }

    #[test]
    fn telephone_event_only_at_voice_clock_rate() {
        let offer = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 111 101 0 8 107\na=rtpmap:111 opus/48000/2\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=rtpmap:107 telephone-event/48000\n").unwrap();
        let a = build_answer(&offer, &params(1), &mut test_rng()).unwrap();
        assert_eq!(a.sdp.media[0].formats, vec!["101", "0", "8"]);
    }

    #[test]
    fn reinvite_bumps_version_only() {
        let offer = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n").unwrap();
        let a1 = build_answer(&offer, &params(1), &mut test_rng()).unwrap();
        let mut p = params(1);
        p.session_version = 2;
        let a2 = build_answer(&offer, &p, &mut test_rng()).unwrap();
        assert_eq!(a1.sdp.origin.session_id, a2.sdp.origin.session_id);
        assert_eq!(a2.sdp.origin.session_version, "2");
        assert_eq!(a1.sdp.media, a2.sdp.media);
    }
}
