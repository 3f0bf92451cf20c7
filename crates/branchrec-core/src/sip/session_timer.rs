//! Session timers (RFC 4028) as a UAS: reading Session-Expires / Min-SE from a request,
//! negotiating the interval and the refresher, the headers of our 2xx, and when the side
//! that does not refresh ends the session. The endpoint applies these to its dialogs.

use std::time::Duration;

use super::message::Message;
use super::parse;

/// The option tag.
pub const TIMER: &str = "timer";

/// Who refreshes the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    /// The SRC (the UAC of the dialog) refreshes; we end the session if it does not.
    Uac,
    /// We refresh (with UPDATE).
    Uas,
}

impl Refresher {
    /// `uac` / `uas`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// Our session timer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// The longest interval we accept (a larger requested one is lowered to it).
    pub session_expires: Duration,
    /// The smallest interval we accept (smaller: 422 with this as Min-SE).
    pub min_se: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

/// What a request asks for and what we answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// The request has no Session-Expires: no session timer (the dialog's idle timeout
    /// still applies).
    Off,
    /// Answer 422 with `Min-SE: min_se_s`.
    TooSmall {
        /// Our Min-SE, seconds.
        min_se_s: u32,
    },
    /// Use a session timer with this interval and refresher.
    On(Negotiated),
}

/// A negotiated session timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// Whether the UAC supports the extension (Supported/Require: timer): then our 2xx
    /// carries `Require: timer`.
    pub uac_supports: bool,
}

impl Negotiated {
    /// Session-Expires and Require of our 2xx.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![(
            "Session-Expires".to_string(),
            format!(
                "{};refresher={}",
                self.interval.as_secs(),
                self.refresher.as_str()
            ),
        )];
        if self.uac_supports {
            h.push(("Require".into(), TIMER.into()));
        }
        h
    }

    /// How long after a refresh the side that does not refresh ends the session (RFC 4028
    /// §10: the interval minus the smaller of 32 s and a third of it).
    pub fn expiry(&self) -> Duration {
        self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }

    /// How long after a refresh the refresher sends the next one (half the interval).
    pub fn refresh_after(&self) -> Duration {
        self.interval / 2
    }
}

/// Delta-seconds of a Session-Expires or Min-SE value and its parameters.
fn delta_and_params(v: &str) -> Option<(u64, parse::Params)> {
    let mut parts = v.splitn(2, ';');
    let secs = parts.next()?.trim().parse::<u64>().ok()?;
    let params = parts
        .next()
        .map(|p| {
            p.split(';')
                .filter(|s| !s.trim().is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                    None => (kv.trim().to_ascii_lowercase(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    Some((secs, params))
}

/// Negotiate the session timer of an INVITE or UPDATE (RFC 4028 §9).
pub fn negotiate(req: &Message, cfg: &TimerConfig) -> Negotiation {
    let Some((se, params)) = req.header("Session-Expires").and_then(delta_and_params) else {
        return Negotiation::Off;
    };
    let min_se_s = u32::try_from(cfg.min_se.as_secs()).unwrap_or(u32::MAX);
    let requested = Duration::from_secs(se);
    if requested < cfg.min_se {
        return Negotiation::TooSmall { min_se_s };
    }
    let has_timer = |tags: Vec<&str>| tags.iter().any(|t| t.eq_ignore_ascii_case(TIMER));
    let uac_supports = has_timer(req.supported()) || has_timer(req.require());
    let req_min_se = req
        .header("Min-SE")
        .and_then(delta_and_params)
        .map(|(s, _)| Duration::from_secs(s))
        .unwrap_or_default();
    let interval = requested
        .min(cfg.session_expires.max(cfg.min_se))
        .max(req_min_se)
        .max(cfg.min_se);
    // RFC 4028 §9: a UAC without the extension cannot refresh; one that chose the
    // refresher keeps its choice; otherwise we prefer the SRC to refresh.
    let refresher = if !uac_supports {
        Refresher::Uas
    } else {
        match parse::param(&params, "refresher").flatten() {
            Some(r) if r.eq_ignore_ascii_case("uas") => Refresher::Uas,
            _ => Refresher::Uac,
        }
    };
    Negotiation::On(Negotiated {
        interval,
        refresher,
        uac_supports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_datagram;

    fn req(extra: &str) -> Message {
        parse_datagram(
            format!(
                "INVITE sip:srs@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                 From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                 {extra}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn negotiation() {
        let cfg = TimerConfig::default();
        assert_eq!(negotiate(&req(""), &cfg), Negotiation::Off);
        assert_eq!(
            negotiate(&req("Session-Expires: 30\r\nSupported: timer\r\n"), &cfg),
            Negotiation::TooSmall { min_se_s: 90 }
        );
        let on = |e: &str| match negotiate(&req(e), &cfg) {
            Negotiation::On(n) => n,
            o => panic!("{o:?}"),
        };
        let n = on("Session-Expires: 600\r\nSupported: timer\r\n");
        assert_eq!(n.interval, Duration::from_secs(600));
        assert_eq!(n.refresher, Refresher::Uac);
        assert_eq!(n.expiry(), Duration::from_secs(568));
        assert_eq!(
            n.headers(),
            vec![
                (
                    "Session-Expires".to_string(),
                    "600;refresher=uac".to_string()
                ),
                ("Require".to_string(), "timer".to_string())
            ]
        );
        let n = on("x: 7200;refresher=uas\r\nk: timer\r\nMin-SE: 120\r\n");
        assert_eq!(n.interval, Duration::from_secs(1800));
        assert_eq!(n.refresher, Refresher::Uas);
        // A proxy-inserted Session-Expires without UAC support: we refresh.
        let n = on("Session-Expires: 90\r\n");
        assert_eq!((n.refresher, n.uac_supports), (Refresher::Uas, false));
        assert_eq!(n.expiry(), Duration::from_secs(60));
        assert_eq!(n.headers().len(), 1);
    }
}
