//! Dialog state (RFC 3261 12): the dialog key, the remote CSeq, the pending offer
//! (glare guard), and the wait for the ACK of our 2xx with its retransmissions (RFC 3261
//! 13.3.1.4) — plus the idle timeout. The endpoint owns the dialog table and drives these.

use std::time::{Duration, Instant};

use super::transport::{Peer, Transmit};
use super::TxnId;

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

/// Call-ID, remote (From) tag, local (To) tag.
pub(super) type DialogKey = (String, String, String);

/// Our 2xx to an INVITE, waiting for its ACK.
#[derive(Debug)]
pub(super) struct AckWait {
    pub(super) cseq: u32,
    pub(super) data: Vec<u8>,
    pub(super) next: Option<Instant>,
    pub(super) interval: Duration,
    pub(super) deadline: Instant,
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
    pub(super) last_activity: Instant,
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
}

impl Dialog {
    /// A dialog created by an initial INVITE (its offer pending in `invite`).
    pub(super) fn new(key: DialogKey, peer: Peer, cseq: u32, invite: TxnId, now: Instant) -> Self {
        Dialog {
            key,
            peer,
            remote_cseq: cseq,
            confirmed: false,
            pending_offer: Some(invite),
            ack_wait: None,
            last_activity: now,
        }
    }

    /// We sent a 2xx (`data`) to the INVITE with `cseq`: retransmit it (unreliable
    /// transports) until the ACK, give up after 64*T1.
    pub(super) fn accepted(&mut self, now: Instant, cseq: u32, data: Vec<u8>, t1: Duration) {
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
    pub(super) fn take_ack(&mut self, now: Instant, cseq: u32) -> bool {
        if self.ack_wait.as_ref().is_some_and(|a| a.cseq == cseq) {
            self.ack_wait = None;
            self.confirmed = true;
            self.last_activity = now;
            true
        } else {
            false
        }
    }

    /// Earliest instants the dialog's timers fire: 2xx retransmission, ACK deadline, idle.
    pub(super) fn timeouts(&self, idle_timeout: Duration) -> [Option<Instant>; 3] {
        let (n, dl) = match &self.ack_wait {
            Some(a) => (a.next, Some(a.deadline)),
            None => (None, None),
        };
        let idle = self.confirmed.then(|| self.last_activity + idle_timeout);
        [n, dl, idle]
    }

    /// Advance the timers to `now`.
    pub(super) fn on_timer(
        &mut self,
        now: Instant,
        t2: Duration,
        idle_timeout: Duration,
    ) -> DialogTimer {
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
