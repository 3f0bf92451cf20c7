//! Dialog state (RFC 3261 12): creation by the initial INVITE, in-dialog requests (CSeq
//! order, offer/answer glare), CANCEL, ACK matching and the end of dialogs.

use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, Event, Peer};
use super::message::{Message, Method};
use super::transaction::{TxnKey, TxnState};
use super::{Refusal, SipError, TxnId};

/// Dialog handle; the application keys its call state by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId(pub u64);

/// Why a dialog ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationReason {
    /// BYE received (answered 200).
    Bye,
    /// 2xx to INVITE never acknowledged within 64*T1.
    AckTimeout,
    /// Initial INVITE cancelled (answered 487).
    Cancelled,
    /// The application answered the initial INVITE with a non-2xx final.
    Rejected,
    /// The application did not answer the initial INVITE in time (we sent 500).
    AppTimeout,
    /// No request in the dialog for `dialog_idle_timeout`.
    IdleTimeout,
}

#[derive(Debug)]
pub(super) struct AckWait {
    pub(super) cseq: u32,
    pub(super) data: Vec<u8>,
    pub(super) next: Option<Instant>,
    pub(super) interval: Duration,
    pub(super) deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Dialog {
    pub(super) key: (String, String, String),
    pub(super) peer: Peer,
    pub(super) remote_cseq: u32,
    pub(super) confirmed: bool,
    pub(super) pending_offer: Option<TxnId>,
    pub(super) ack_wait: Option<AckWait>,
    pub(super) last_activity: Instant,
}

impl Endpoint {
    pub(super) fn out_of_dialog(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        msg: Message,
        method: Method,
    ) {
        match method {
            Method::Invite => {
                if self.dialogs.len() >= self.cfg.max_dialogs {
                    let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                    self.reject(now, id, SipError::Overloaded);
                    return;
                }
                let local_tag = self.tags.next_tag();
                let dkey = (
                    msg.call_id().unwrap_or("").to_string(),
                    msg.from_tag().unwrap_or_default(),
                    local_tag.clone(),
                );
                let did = DialogId(self.alloc());
                let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
                let id = self.new_txn(
                    now,
                    peer,
                    key,
                    msg.clone(),
                    Some(did),
                    Some(local_tag.clone()),
                    true,
                    true,
                );
                self.dialog_index.insert(dkey.clone(), did);
                self.dialogs.insert(
                    did,
                    Dialog {
                        key: dkey,
                        peer,
                        remote_cseq: cseq,
                        confirmed: false,
                        pending_offer: Some(id),
                        ack_wait: None,
                        last_activity: now,
                    },
                );
                let res = self.respond_inner(now, id, 100, "Trying", Vec::new(), None);
                self.count_failure(res, "Trying");
                self.events.push_back(Event::Invite {
                    txn: id,
                    dialog: did,
                    request: msg,
                    initial: true,
                });
            }
            Method::Options => {
                let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                let extra = self.capability_headers();
                let res = self.respond_inner(now, id, 200, "OK", extra, None);
                self.count_failure(res, "OK");
            }
            _ => {
                let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                self.reject(now, id, SipError::NoSuchDialog);
            }
        }
    }

    pub(super) fn in_dialog(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxnKey,
        msg: Message,
        method: Method,
        to_tag: String,
    ) {
        let dkey = (
            msg.call_id().unwrap_or("").to_string(),
            msg.from_tag().unwrap_or_default(),
            to_tag,
        );
        let Some(did) = self.dialog_index.get(&dkey).copied() else {
            let id = self.new_txn(now, peer, key, msg, None, None, false, false);
            self.reject(now, id, SipError::NoSuchDialog);
            return;
        };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
        let has_body = !msg.body.is_empty();
        let (out_of_order, glare) = match self.dialogs.get_mut(&did) {
            Some(d) => {
                d.last_activity = now;
                let ooo = cseq < d.remote_cseq;
                if !ooo {
                    d.remote_cseq = cseq;
                }
                (ooo, d.pending_offer.is_some() || d.ack_wait.is_some())
            }
            None => (false, false),
        };
        let offer = method == Method::Invite || (method == Method::Update && has_body);
        let id = self.new_txn(now, peer, key, msg.clone(), Some(did), None, false, offer);
        if out_of_order {
            if let Some(t) = self.txns.get_mut(&id) {
                t.offer = false;
            }
            return self.reject(now, id, SipError::CSeqOutOfOrder);
        }
        if offer && glare {
            if let Some(t) = self.txns.get_mut(&id) {
                t.offer = false;
            }
            return self.reject(now, id, SipError::RequestPending);
        }
        match method {
            Method::Bye => {
                // Answer anything still pending in the dialog with 487 (RFC 3261 15.1.2).
                let pending: Vec<TxnId> = self
                    .txns
                    .iter()
                    .filter(|(tid, t)| {
                        **tid != id && t.dialog == Some(did) && t.state == TxnState::Proceeding
                    })
                    .map(|(tid, _)| *tid)
                    .collect();
                for p in pending {
                    let res = self.refuse(now, p, &Refusal::RequestTerminated);
                    self.count_failure(res, "Request Terminated");
                }
                let res = self.respond_inner(now, id, 200, "OK", Vec::new(), None);
                self.count_failure(res, "OK");
                self.end_dialog(did, TerminationReason::Bye);
            }
            Method::Options => {
                let extra = self.capability_headers();
                let res = self.respond_inner(now, id, 200, "OK", extra, None);
                self.count_failure(res, "OK");
            }
            Method::Invite => {
                if let Some(d) = self.dialogs.get_mut(&did) {
                    d.pending_offer = Some(id);
                }
                let res = self.respond_inner(now, id, 100, "Trying", Vec::new(), None);
                self.count_failure(res, "Trying");
                self.events.push_back(Event::Invite {
                    txn: id,
                    dialog: did,
                    request: msg,
                    initial: false,
                });
            }
            _ => {
                if offer {
                    if let Some(d) = self.dialogs.get_mut(&did) {
                        d.pending_offer = Some(id);
                    }
                }
                self.events.push_back(Event::InDialogRequest {
                    txn: id,
                    dialog: did,
                    request: msg,
                });
            }
        }
    }

    pub(super) fn end_dialog(&mut self, did: DialogId, reason: TerminationReason) {
        if let Some(d) = self.dialogs.remove(&did) {
            self.dialog_index.remove(&d.key);
            self.events.push_back(Event::Terminated {
                dialog: did,
                reason,
            });
        }
    }

    pub(super) fn handle_cancel(&mut self, now: Instant, peer: Peer, key: TxnKey, msg: Message) {
        let inv_key = TxnKey {
            method: Method::Invite,
            ..key.clone()
        };
        let inv = self.txn_index.get(&inv_key).copied();
        let Some(inv_id) = inv else {
            let id = self.new_txn(now, peer, key, msg, None, None, false, false);
            return self.reject(now, id, SipError::NoSuchDialog);
        };
        let (tag, pending, did) = match self.txns.get(&inv_id) {
            Some(t) => (
                t.local_tag.clone(),
                t.state == TxnState::Proceeding,
                t.dialog,
            ),
            None => (None, false, None),
        };
        let id = self.new_txn(now, peer, key, msg, None, tag, false, false);
        let res = self.respond_inner(now, id, 200, "OK", Vec::new(), None);
        self.count_failure(res, "OK");
        if pending {
            let res = self.refuse(now, inv_id, &Refusal::RequestTerminated);
            self.count_failure(res, "Request Terminated");
            if let Some(did) = did {
                let initial = self.txns.get(&inv_id).is_some_and(|t| t.initial_invite);
                if initial && self.dialogs.contains_key(&did) {
                    self.events.push_back(Event::Cancelled { dialog: did });
                    self.end_dialog(did, TerminationReason::Cancelled);
                }
            }
        }
    }

    pub(super) fn handle_ack(&mut self, now: Instant, key: TxnKey, msg: Message) {
        if let Some(id) = self.txn_index.get(&key).copied() {
            if let Some(t) = self.txns.get_mut(&id) {
                match t.state {
                    TxnState::Completed => {
                        t.state = TxnState::Confirmed;
                        t.retrans_at = None;
                        t.expires_at = if t.peer.reliable() {
                            now
                        } else {
                            now + self.cfg.t4
                        };
                        self.stats.retransmissions_absorbed += 1;
                        return;
                    }
                    TxnState::Confirmed => {
                        self.stats.retransmissions_absorbed += 1;
                        return;
                    }
                    _ => {}
                }
            }
        }
        let dkey = (
            msg.call_id().unwrap_or("").to_string(),
            msg.from_tag().unwrap_or_default(),
            msg.to_tag().unwrap_or_default(),
        );
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
        let Some(did) = self.dialog_index.get(&dkey).copied() else {
            self.stats.other_dropped += 1;
            return;
        };
        let Some(d) = self.dialogs.get_mut(&did) else {
            self.stats.other_dropped += 1;
            return;
        };
        if d.ack_wait.as_ref().is_some_and(|a| a.cseq == cseq) {
            d.ack_wait = None;
            d.confirmed = true;
            d.last_activity = now;
            self.events.push_back(Event::Ack {
                dialog: did,
                request: msg,
            });
        } else {
            self.stats.other_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::endpoint::test_support::*;

    #[test]
    fn cancel_gives_487() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
        drain(&mut ep);
        let (txn, dialog) = match events(&mut ep).as_slice() {
            [Event::Invite { txn, dialog, .. }] => (*txn, *dialog),
            other => panic!("{other:?}"),
        };
        ep.handle_receive(
            now,
            p,
            &req("CANCEL", "z9hG4bKinv1", "call1", 1, None, "", ""),
        );
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![200, 487]);
        assert_eq!(out[0].cseq().unwrap().1, Method::Cancel);
        assert_eq!(out[1].cseq().unwrap().1, Method::Invite);
        assert_eq!(
            events(&mut ep),
            vec![
                Event::Cancelled { dialog },
                Event::Terminated {
                    dialog,
                    reason: TerminationReason::Cancelled
                }
            ]
        );
        assert_eq!(
            ep.respond(now, txn, 200, "OK", vec![], None),
            Err(SipError::AlreadyFinal)
        );
        // 487 retransmitted (Timer G) until the ACK.
        ep.handle_timeout(now + T1);
        assert_eq!(statuses(&drain(&mut ep)), vec![487]);
        let tag = out[1].to_tag().unwrap();
        ep.handle_receive(
            now + T1,
            p,
            &req("ACK", "z9hG4bKinv1", "call1", 1, Some(&tag), "", ""),
        );
        assert!(events(&mut ep).is_empty());
        ep.handle_timeout(now + 3 * T1);
        assert!(drain(&mut ep).is_empty());
        ep.handle_timeout(now + 64 * T1);
        assert_eq!(ep.transaction_count(), 0);
        assert_eq!(ep.dialog_count(), 0);
    }

    #[test]
    fn cancel_without_match_481() {
        let now = Instant::now();
        let mut ep = ep();
        ep.handle_receive(
            now,
            peer(Transport::Udp),
            &req("CANCEL", "z9hG4bKnone", "callx", 1, None, "", ""),
        );
        assert_eq!(statuses(&drain(&mut ep)), vec![481]);
    }

    #[test]
    fn bye_terminates_and_retransmission_absorbed() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        let (_, dialog, tag) = establish(&mut ep, now, p);
        ep.handle_receive(
            now,
            p,
            &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
        );
        events(&mut ep);
        let bye = req("BYE", "z9hG4bKbye1", "call1", 2, Some(&tag), "", "");
        ep.handle_receive(now, p, &bye);
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![200]);
        assert_eq!(
            events(&mut ep),
            vec![Event::Terminated {
                dialog,
                reason: TerminationReason::Bye
            }]
        );
        assert_eq!(ep.dialog_count(), 0);
        ep.handle_receive(now, p, &bye);
        assert_eq!(drain(&mut ep), out);
        assert!(events(&mut ep).is_empty());
        // A new BYE (new branch) for the gone dialog: 481.
        ep.handle_receive(
            now,
            p,
            &req("BYE", "z9hG4bKbye2", "call1", 3, Some(&tag), "", ""),
        );
        assert_eq!(statuses(&drain(&mut ep)), vec![481]);
    }

    #[test]
    fn reinvite_glare_491_and_update() {
        let now = Instant::now();
        let mut ep = ep();
        let p = peer(Transport::Udp);
        let (_, dialog, tag) = establish(&mut ep, now, p);
        // 2xx not yet ACKed: a re-INVITE is glare.
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKre0", "call1", 2, Some(&tag)));
        assert_eq!(statuses(&drain(&mut ep)), vec![491]);
        ep.handle_receive(
            now,
            p,
            &req("ACK", "z9hG4bKack1", "call1", 1, Some(&tag), "", ""),
        );
        events(&mut ep);
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKre1", "call1", 3, Some(&tag)));
        assert_eq!(statuses(&drain(&mut ep)), vec![100]);
        let re = match events(&mut ep).as_slice() {
            [Event::Invite {
                txn,
                dialog: d,
                initial: false,
                ..
            }] => {
                assert_eq!(*d, dialog);
                *txn
            }
            other => panic!("{other:?}"),
        };
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKre2", "call1", 4, Some(&tag)));
        assert_eq!(statuses(&drain(&mut ep)), vec![491]);
        let upd = req(
            "UPDATE",
            "z9hG4bKup1",
            "call1",
            5,
            Some(&tag),
            "Content-Type: application/sdp\r\n",
            "v=0\r\n",
        );
        ep.handle_receive(now, p, &upd);
        assert_eq!(statuses(&drain(&mut ep)), vec![491]);
        // UPDATE without body and INFO reach the app.
        ep.handle_receive(
            now,
            p,
            &req("INFO", "z9hG4bKinfo", "call1", 6, Some(&tag), "", ""),
        );
        let info = match events(&mut ep).as_slice() {
            [Event::InDialogRequest { txn, .. }] => *txn,
            other => panic!("{other:?}"),
        };
        ep.respond(now, info, 200, "OK", vec![], None).unwrap();
        ep.respond(now, re, 200, "OK", vec![], None).unwrap();
        assert_eq!(statuses(&drain(&mut ep)), vec![200, 200]);
        ep.handle_receive(
            now,
            p,
            &req("ACK", "z9hG4bKack3", "call1", 3, Some(&tag), "", ""),
        );
        assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
        // Lower CSeq than the last seen (6) → 500.
        ep.handle_receive(
            now,
            p,
            &req("INFO", "z9hG4bKold", "call1", 5, Some(&tag), "", ""),
        );
        let out = drain(&mut ep);
        assert_eq!(statuses(&out), vec![500]);
        // A retransmission of the earlier UPDATE gets the same 491 again.
        ep.handle_receive(now, p, &upd.clone());
        assert_eq!(statuses(&drain(&mut ep)), vec![491]);
        assert!(events(&mut ep).is_empty());
        // Now a new UPDATE with offer reaches the app.
        let upd7 = String::from_utf8(upd)
            .unwrap()
            .replace("CSeq: 5", "CSeq: 7")
            .replace("z9hG4bKup1", "z9hG4bKup7");
        ep.handle_receive(now, p, upd7.as_bytes());
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::InDialogRequest { .. }]
        ));
    }
}
