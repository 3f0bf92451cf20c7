//! Server transactions (RFC 3261 17.2, with the RFC 6026 Accepted state): matching,
//! sending finals, retransmission timers (G, H, I, J, 2xx until ACK) and expiry.

use std::time::{Duration, Instant};

use super::dialog::AckWait;
use super::endpoint::{Endpoint, Event, Peer, Transmit};
use super::message::{Message, Method};
use super::response::class_index;
use super::{DialogId, Refusal, SipError, TerminationReason};

/// Server transaction handle given to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TxnKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxnState {
    /// Waiting for the app (or provisional sent).
    Proceeding,
    /// Final non-2xx sent (INVITE: waiting for ACK) / non-INVITE final sent.
    Completed,
    /// INVITE: ACK for non-2xx received (Timer I).
    Confirmed,
    /// INVITE: 2xx sent (RFC 6026), absorbs retransmitted INVITEs.
    Accepted,
}

#[derive(Debug)]
pub(super) struct ServerTxn {
    pub(super) key: TxnKey,
    pub(super) method: Method,
    pub(super) peer: Peer,
    pub(super) request: Message,
    pub(super) dialog: Option<DialogId>,
    /// To-tag to add (None when the request already has one).
    pub(super) local_tag: Option<String>,
    pub(super) state: TxnState,
    pub(super) last_response: Option<Vec<u8>>,
    pub(super) retrans_at: Option<Instant>,
    pub(super) retrans_interval: Duration,
    pub(super) expires_at: Instant,
    /// Initial INVITE: its dialog ends with a non-2xx final.
    pub(super) initial_invite: bool,
    /// INVITE/UPDATE with offer: glare guard of the dialog.
    pub(super) offer: bool,
}

pub(super) fn txn_key(msg: &Message) -> Option<TxnKey> {
    let via = msg.top_via().ok()?;
    let method = match msg.method()? {
        Method::Ack => Method::Invite,
        m => m.clone(),
    };
    let branch = match via.branch() {
        Some(b) if b.len() > 7 && b.starts_with("z9hG4bK") => b.to_string(),
        _ => format!(
            "legacy|{}|{}|{}|{}",
            msg.request_uri().unwrap_or(""),
            msg.from_tag().unwrap_or_default(),
            msg.call_id().unwrap_or(""),
            msg.cseq().map(|c| c.0).unwrap_or(0)
        ),
    };
    Some(TxnKey {
        branch,
        sent_by: via.sent_by().to_ascii_lowercase(),
        method,
    })
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_txn(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        request: Message,
        dialog: Option<DialogId>,
        local_tag: Option<String>,
        initial_invite: bool,
        offer: bool,
    ) -> TxnId {
        let id = TxnId(self.alloc());
        let method = request
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
        let local_tag = if request.to_tag().is_some() {
            None
        } else {
            Some(local_tag.unwrap_or_else(|| self.tags.next_tag()))
        };
        self.txn_index.insert(key.clone(), id);
        self.txns.insert(
            id,
            ServerTxn {
                key,
                method,
                peer,
                request,
                dialog,
                local_tag,
                state: TxnState::Proceeding,
                last_response: None,
                retrans_at: None,
                retrans_interval: self.cfg.t1,
                expires_at: now + self.cfg.app_response_timeout,
                initial_invite,
                offer,
            },
        );
        id
    }

    pub(super) fn respond_inner(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        reason: &str,
        extra: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(), SipError> {
        if !(100..=699).contains(&status) {
            return Err(SipError::InvalidStatus(status));
        }
        let t = self.txns.get(&id).ok_or(SipError::UnknownTransaction)?;
        if t.state != TxnState::Proceeding {
            return Err(SipError::AlreadyFinal);
        }
        let is_invite = t.method == Method::Invite;
        let mut extra = extra;
        if is_invite && (101..300).contains(&status) {
            extra.insert(0, ("Contact".into(), self.contact_for(&t.request, &t.peer)));
        }
        let tag = if status == 100 {
            None
        } else {
            t.local_tag.clone()
        };
        let data = self.build_response(
            &t.request,
            &t.peer,
            status,
            reason,
            tag.as_deref(),
            extra,
            body,
        );
        let peer = t.peer;
        let did = t.dialog;
        let initial = t.initial_invite;
        let offer = t.offer;
        let cseq = t.request.cseq().map(|c| c.0).unwrap_or(0);
        self.stats.responses_sent[class_index(status)] += 1;
        self.transmits.push_back(Transmit {
            peer,
            data: data.clone(),
        });
        let t1 = self.cfg.t1;
        let reliable = peer.reliable();
        let Some(t) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        t.last_response = Some(data.clone());
        if status < 200 {
            return Ok(());
        }
        if offer {
            if let Some(d) = did.and_then(|d| self.dialogs.get_mut(&d)) {
                if d.pending_offer == Some(id) {
                    d.pending_offer = None;
                }
            }
        }
        if is_invite && status < 300 {
            t.state = TxnState::Accepted;
            t.retrans_at = None;
            t.expires_at = now + 64 * t1;
            if let Some(d) = did.and_then(|d| self.dialogs.get_mut(&d)) {
                d.confirmed = true;
                d.last_activity = now;
                d.ack_wait = Some(AckWait {
                    cseq,
                    data,
                    next: (!reliable).then(|| now + t1),
                    interval: t1,
                    deadline: now + 64 * t1,
                });
            }
        } else if is_invite {
            t.state = TxnState::Completed;
            t.retrans_at = (!reliable).then(|| now + t1);
            t.retrans_interval = t1;
            t.expires_at = now + 64 * t1;
            if initial {
                if let Some(did) = did {
                    // A CANCEL ends the dialog itself (with a Cancelled event first).
                    if status != Refusal::RequestTerminated.status() {
                        self.end_dialog(did, TerminationReason::Rejected);
                    }
                }
            }
        } else {
            t.state = TxnState::Completed;
            t.retrans_at = None;
            t.expires_at = if reliable { now } else { now + 64 * t1 };
        }
        Ok(())
    }

    /// Advance timers: retransmissions, transaction expiry, ACK timeouts, idle dialogs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.cfg.t2;
        // Expiry (Timers H, I, J, Accepted end, app timeout).
        let expired: Vec<TxnId> = self
            .txns
            .iter()
            .filter(|(_, t)| t.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let proceeding = self
                .txns
                .get(&id)
                .is_some_and(|t| t.state == TxnState::Proceeding);
            if proceeding {
                let initial = self.txns.get(&id).is_some_and(|t| t.initial_invite);
                let did = self.txns.get(&id).and_then(|t| t.dialog);
                let res = self.refuse(now, id, &Refusal::AppTimeout);
                self.count_failure(res, "Server Internal Error after app timeout");
                // respond_inner ended an initial dialog as Rejected; it was an app timeout.
                if initial {
                    if let Some(Event::Terminated { dialog, reason }) = self.events.back_mut() {
                        if Some(*dialog) == did {
                            *reason = TerminationReason::AppTimeout;
                        }
                    }
                }
            } else if let Some(t) = self.txns.remove(&id) {
                if self.txn_index.get(&t.key) == Some(&id) {
                    self.txn_index.remove(&t.key);
                }
            }
        }
        // Retransmissions of non-2xx INVITE finals (Timer G).
        for t in self.txns.values_mut() {
            if let Some(at) = t.retrans_at {
                if at <= now && t.state == TxnState::Completed {
                    if let Some(d) = &t.last_response {
                        self.transmits.push_back(Transmit {
                            peer: t.peer,
                            data: d.clone(),
                        });
                        self.stats.retransmissions_sent += 1;
                    }
                    t.retrans_interval = (t.retrans_interval * 2).min(t2);
                    t.retrans_at = Some(at + t.retrans_interval);
                }
            }
        }
        // 2xx retransmission and ACK timeout; idle dialogs.
        let mut ended = Vec::new();
        for (did, d) in self.dialogs.iter_mut() {
            if let Some(a) = &mut d.ack_wait {
                if a.deadline <= now {
                    ended.push((*did, TerminationReason::AckTimeout));
                    continue;
                }
                if let Some(n) = a.next {
                    if n <= now {
                        self.transmits.push_back(Transmit {
                            peer: d.peer,
                            data: a.data.clone(),
                        });
                        self.stats.retransmissions_sent += 1;
                        a.interval = (a.interval * 2).min(t2);
                        a.next = Some(n + a.interval);
                    }
                }
            } else if d.confirmed && d.last_activity + self.cfg.dialog_idle_timeout <= now {
                ended.push((*did, TerminationReason::IdleTimeout));
            }
        }
        ended.sort_by_key(|(d, _)| *d);
        for (did, r) in ended {
            self.end_dialog(did, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::endpoint::test_support::*;

    #[test]
    fn invite_200_retransmitted_until_ack() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        let (_, dialog, tag) = establish(&mut ep, now, p);
        assert_eq!(ep.poll_timeout(), Some(now + T1));
        // Retransmits at T1, 3T1 (T1+2T1), 7T1 (…+4T1).
        let mut sent_at = Vec::new();
        let mut t = now;
        while t < now + 8 * T1 {
            t += Duration::from_millis(50);
            ep.handle_timeout(t);
            for m in drain(&mut ep) {
                assert_eq!(m.status(), Some(200));
                assert_eq!(m.to_tag().as_deref(), Some(tag.as_str()));
                sent_at.push(t - now);
            }
        }
        assert_eq!(sent_at, vec![T1, 3 * T1, 7 * T1]);
        ep.handle_receive(
            t,
            p,
            &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
        );
        match events(&mut ep).as_slice() {
            [Event::Ack { dialog: d, .. }] => assert_eq!(*d, dialog),
            other => panic!("{other:?}"),
        }
        // No more retransmissions; a duplicate ACK gives no second event.
        ep.handle_receive(
            t,
            p,
            &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
        );
        assert!(events(&mut ep).is_empty());
        ep.handle_timeout(t + 64 * T1);
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.dialog_count(), 1);
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn ack_timeout_ends_dialog() {
        let now = Instant::now();
        let mut ep = ep();
        let (_, dialog, _) = establish(&mut ep, now, peer(Transport::Udp));
        let mut n = 0;
        let mut t = now;
        while t < now + 64 * T1 {
            t += Duration::from_millis(100);
            ep.handle_timeout(t);
            n += drain(&mut ep).len();
        }
        // T1,3,7,15 then every T2 (4 s) until 32 s: 1.5,3.5,7.5,11.5,...,31.5 → 10.
        assert_eq!(n, 10);
        assert_eq!(
            events(&mut ep),
            vec![Event::Terminated {
                dialog,
                reason: TerminationReason::AckTimeout
            }]
        );
        assert_eq!(ep.dialog_count(), 0);
    }

    #[test]
    fn tcp_2xx_not_retransmitted() {
        let now = Instant::now();
        let mut ep = ep();
        let (_, _, _) = establish(&mut ep, now, peer(Transport::Tcp));
        ep.handle_timeout(now + 10 * T1);
        assert!(drain(&mut ep).is_empty());
        ep.handle_timeout(now + 64 * T1);
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::Terminated {
                reason: TerminationReason::AckTimeout,
                ..
            }]
        ));
    }

    /// An INVITE over `t` with Request-URI `ruri`; returns our responses after the app
    /// answers 200 (if the endpoint offered it the INVITE at all).

    #[test]
    fn retransmitted_invite_absorbed() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        let inv = sdp_invite("z9hG4bKinv1", "call1", 1, None);
        ep.handle_receive(now, p, &inv);
        let first = drain(&mut ep);
        let txn = match events(&mut ep).as_slice() {
            [Event::Invite { txn, .. }] => *txn,
            other => panic!("{other:?}"),
        };
        ep.handle_receive(now, p, &inv);
        assert_eq!(drain(&mut ep), first, "100 resent");
        assert!(events(&mut ep).is_empty());
        ep.respond(now, txn, 200, "OK", vec![], None).unwrap();
        let ok = drain(&mut ep);
        ep.handle_receive(now, p, &inv);
        assert_eq!(drain(&mut ep), ok, "2xx resent");
        assert!(events(&mut ep).is_empty());
        assert_eq!(
            ep.respond(now, txn, 200, "OK", vec![], None),
            Err(SipError::AlreadyFinal)
        );
        assert_eq!(ep.stats().retransmissions_absorbed, 2);
    }

    #[test]
    fn rejected_invite_retransmits_until_ack_and_ends_dialog() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
        drain(&mut ep);
        let (txn, dialog) = match events(&mut ep).as_slice() {
            [Event::Invite { txn, dialog, .. }] => (*txn, *dialog),
            other => panic!("{other:?}"),
        };
        ep.respond(now, txn, 488, "Not Acceptable Here", vec![], None)
            .unwrap();
        assert_eq!(statuses(&drain(&mut ep)), vec![488]);
        assert_eq!(
            events(&mut ep),
            vec![Event::Terminated {
                dialog,
                reason: TerminationReason::Rejected
            }]
        );
        ep.handle_timeout(now + T1);
        ep.handle_timeout(now + 3 * T1);
        assert_eq!(statuses(&drain(&mut ep)), vec![488, 488]);
        // Timer H: give up after 64*T1.
        ep.handle_timeout(now + 64 * T1);
        drain(&mut ep);
        assert_eq!(ep.transaction_count(), 0);
        assert_eq!(ep.poll_timeout(), None);
    }

    #[test]
    fn app_timeout_and_caps() {
        let now = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig {
            max_dialogs: 1,
            ..EndpointConfig::default()
        });
        let p = peer(Transport::Udp);
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKa", "a", 1, None));
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKb", "b", 1, None));
        assert_eq!(statuses(&drain(&mut ep)), vec![100, 503]);
        let dialog = match events(&mut ep).as_slice() {
            [Event::Invite { dialog, .. }] => *dialog,
            other => panic!("{other:?}"),
        };
        ep.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(statuses(&drain(&mut ep)), vec![500]);
        assert_eq!(
            events(&mut ep),
            vec![Event::Terminated {
                dialog,
                reason: TerminationReason::AppTimeout
            }]
        );
        assert_eq!(ep.dialog_count(), 0);
    }
}
