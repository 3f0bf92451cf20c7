//! Dialog state (RFC 3261 12): the dialog key, the remote CSeq, the pending offer
//! (glare guard), and the wait for the ACK of our 2xx with its retransmissions (RFC 3261
//! 13.3.1.4) — plus the idle timeout, the session timer (RFC 4028) and what we need to
//! send a request in the dialog (BYE, refreshing UPDATE; RFC 3261 12.2.1.1). The endpoint
//! owns the dialog table and drives these.

use crate::time::Mono;
use std::time::Duration;

use super::message::{Headers, Message, Method, StartLine};
use super::session_timer::{Negotiated, Refresher};
use super::transport::{Peer, Transmit, Transport};
use super::TxnId;

/// Why a dialog ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    /// BYE received (answered 200).
    Bye,
    /// 2xx to INVITE never acknowledged within 64*T1; we sent BYE (RFC 3261 13.3.1.4).
    AckTimeout,
    /// Initial INVITE cancelled (answered 487).
    Cancelled,
    /// The application answered the initial INVITE with a non-2xx final.
    Rejected,
    /// The application did not answer the initial INVITE in time (we sent 500).
    AppTimeout,
    /// No request in the dialog for `dialog_idle_timeout`.
    IdleTimeout,
    /// The SRC did not refresh the session in time (RFC 4028 §10); we sent BYE.
    SessionTimerExpired,
    /// Our session refresh (UPDATE) failed with 408/481 or timed out; we sent BYE.
    RefreshFailed,
}

impl TerminationReason {
    /// The recording event for a session we ended ourselves with BYE (`None` for the
    /// others): `session_timer_expired`, `session_refresh_failed`, `unconfirmed` (our 2xx
    /// was never ACKed).
    pub fn event_kind(self) -> Option<&'static str> {
        match self {
            TerminationReason::AckTimeout => Some("unconfirmed"),
            TerminationReason::SessionTimerExpired => Some("session_timer_expired"),
            TerminationReason::RefreshFailed => Some("session_refresh_failed"),
            _ => None,
        }
    }
}

/// Call-ID, remote (From) tag, local (To) tag.
pub(super) type DialogKey = (String, String, String);

/// Our 2xx to an INVITE, waiting for its ACK.
#[derive(Debug)]
pub(super) struct AckWait {
    pub(super) cseq: u32,
    pub(super) data: Vec<u8>,
    pub(super) next: Option<Mono>,
    pub(super) interval: Duration,
    pub(super) deadline: Mono,
}

/// One dialog (early or confirmed).
#[derive(Debug)]
pub(super) struct Dialog {
    pub(super) key: DialogKey,
    pub(super) peer: Peer,
    pub(super) remote_cseq: u32,
    pub(super) confirmed: bool,
    pub(super) pending_offer: Option<TxnId>,
    pub(super) ack_wait: Option<AckWait>,
    pub(super) last_activity: Mono,
    /// What requests we send in the dialog need (set from the initial INVITE).
    pub(super) uac: Option<UacState>,
    /// The negotiated session timer and when it next fires (expiry when the SRC
    /// refreshes, our next refresh when we do).
    pub(super) session_timer: Option<(Negotiated, Mono)>,
}

/// The dialog state of RFC 3261 12.1.1 that requests we send need.
#[derive(Debug, Clone)]
pub(super) struct UacState {
    /// Remote target: the SRC's Contact URI (updated by target refreshes).
    pub(super) remote_target: String,
    /// Route set: the Record-Route values of the INVITE, in order.
    pub(super) route_set: Vec<String>,
    /// Our URI with our tag (the INVITE's To + tag): the From of our requests.
    pub(super) local: String,
    /// The SRC's URI with its tag (the INVITE's From): the To of our requests.
    pub(super) remote: String,
    /// Call-ID.
    pub(super) call_id: String,
    /// Our last CSeq number.
    pub(super) local_cseq: u32,
}

impl UacState {
    /// From the initial INVITE and our To-tag.
    pub(super) fn from_invite(req: &Message, local_tag: &str) -> Self {
        let remote_target = req
            .contact()
            .and_then(Result::ok)
            .map(|c| c.uri.raw)
            .or_else(|| req.request_uri().map(str::to_string))
            .unwrap_or_default();
        let route_set = req
            .header_all("Record-Route")
            .into_iter()
            .flat_map(super::parse::split_list)
            .map(|s| s.trim().to_string())
            .collect();
        UacState {
            remote_target,
            route_set,
            local: format!("{};tag={local_tag}", req.header("To").unwrap_or("")),
            remote: req.header("From").unwrap_or("").to_string(),
            call_id: req.call_id().unwrap_or("").to_string(),
            local_cseq: 0,
        }
    }

    /// A target refresh (re-INVITE, UPDATE) with a Contact.
    pub(super) fn refresh_target(&mut self, req: &Message) {
        if let Some(c) = req.contact().and_then(Result::ok) {
            self.remote_target = c.uri.raw;
        }
    }

    /// A new request in the dialog (RFC 3261 12.2.1.1), sent over the dialog's peer.
    pub(super) fn request(
        &mut self,
        method: Method,
        via_host: &str,
        transport: Transport,
        branch: &str,
        user_agent: &str,
        extra: Vec<(String, String)>,
    ) -> Vec<u8> {
        self.local_cseq += 1;
        let mut h = Headers::new();
        let t = match transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        h.push(
            "Via",
            format!("SIP/2.0/{t} {via_host};branch={branch};rport"),
        );
        h.push("Max-Forwards", "70");
        for r in &self.route_set {
            h.push("Route", r.as_str());
        }
        h.push("From", self.local.as_str());
        h.push("To", self.remote.as_str());
        h.push("Call-ID", self.call_id.as_str());
        h.push("CSeq", format!("{} {}", self.local_cseq, method.as_str()));
        h.push("User-Agent", user_agent);
        for (k, v) in extra {
            h.push(&k, v);
        }
        Message {
            start: StartLine::Request {
                method,
                uri: self.remote_target.clone(),
                version: "SIP/2.0".into(),
            },
            headers: h,
            body: Vec::new(),
        }
        .to_bytes()
    }
}

/// What a dialog's timers ask for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DialogTimer {
    /// Nothing due.
    Idle,
    /// Retransmit our 2xx.
    Retransmit(Transmit),
    /// End the dialog.
    End(TerminationReason),
    /// Send a session refresh (we are the refresher).
    Refresh,
}

impl Dialog {
    /// A dialog created by an initial INVITE (its offer pending in `invite`).
    pub(super) fn new(key: DialogKey, peer: Peer, cseq: u32, invite: TxnId, now: Mono) -> Self {
        Dialog {
            key,
            peer,
            remote_cseq: cseq,
            confirmed: false,
            pending_offer: Some(invite),
            ack_wait: None,
            last_activity: now,
            uac: None,
            session_timer: None,
        }
    }

    /// A 2xx to an INVITE or UPDATE negotiated `timer` (None: the request had no
    /// Session-Expires, the session timer is off). The refresh is this 2xx.
    pub(super) fn set_session_timer(&mut self, now: Mono, timer: Option<Negotiated>) {
        self.session_timer = timer.map(|n| {
            let after = match n.refresher {
                Refresher::Uac => n.expiry(),
                Refresher::Uas => n.refresh_after(),
            };
            (n, now + after)
        });
    }

    /// We sent a 2xx (`data`) to the INVITE with `cseq`: retransmit it (unreliable
    /// transports) until the ACK, give up after 64*T1.
    pub(super) fn accepted(&mut self, now: Mono, cseq: u32, data: Vec<u8>, t1: Duration) {
        self.confirmed = true;
        self.last_activity = now;
        self.ack_wait = Some(AckWait {
            cseq,
            data,
            next: (!self.peer.reliable()).then(|| now + t1),
            interval: t1,
            deadline: now + 64 * t1,
        });
    }

    /// An ACK with `cseq` arrived: true when it acknowledges our 2xx.
    pub(super) fn take_ack(&mut self, now: Mono, cseq: u32) -> bool {
        if self.ack_wait.as_ref().is_some_and(|a| a.cseq == cseq) {
            self.ack_wait = None;
            self.confirmed = true;
            self.last_activity = now;
            true
        } else {
            false
        }
    }

    /// Earliest instants the dialog's timers fire: 2xx retransmission, ACK deadline, idle,
    /// session timer.
    pub(super) fn timeouts(&self, idle_timeout: Duration) -> [Option<Mono>; 4] {
        let (n, dl) = match &self.ack_wait {
            Some(a) => (a.next, Some(a.deadline)),
            None => (None, None),
        };
        let idle = self.confirmed.then(|| self.last_activity + idle_timeout);
        [n, dl, idle, self.session_timer.map(|(_, at)| at)]
    }

    /// Advance the timers to `now`.
    pub(super) fn on_timer(
        &mut self,
        now: Mono,
        t2: Duration,
        idle_timeout: Duration,
    ) -> DialogTimer {
        if let Some((n, at)) = &mut self.session_timer {
            if *at <= now {
                return match n.refresher {
                    Refresher::Uac => DialogTimer::End(TerminationReason::SessionTimerExpired),
                    Refresher::Uas => {
                        *at = now + n.refresh_after();
                        DialogTimer::Refresh
                    }
                };
            }
        }
        if let Some(a) = &mut self.ack_wait {
            if a.deadline <= now {
                return DialogTimer::End(TerminationReason::AckTimeout);
            }
            if let Some(n) = a.next {
                if n <= now {
                    let t = Transmit {
                        peer: self.peer,
                        data: a.data.clone(),
                    };
                    a.interval = (a.interval * 2).min(t2);
                    a.next = Some(n + a.interval);
                    return DialogTimer::Retransmit(t);
                }
            }
        } else if self.confirmed && self.last_activity + idle_timeout <= now {
            return DialogTimer::End(TerminationReason::IdleTimeout);
        }
        DialogTimer::Idle
    }
}
