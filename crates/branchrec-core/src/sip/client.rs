//! Client transactions for the few requests we send ourselves, all non-INVITE (RFC 3261
//! 17.1.2): BYE when we end a session (ACK never came, session timer expired) and the
//! UPDATE that refreshes a session when we are the refresher. Retransmitted on unreliable
//! transports (Timer E, doubling to T2, T2 once a provisional arrives) until a response,
//! abandoned after 64*T1 (Timer F).

use crate::time::Mono;
use std::time::Duration;

use super::message::Method;
use super::transport::{Peer, Transmit};
use super::DialogId;

/// One request we sent, waiting for its final response.
#[derive(Debug)]
pub(super) struct ClientTxn {
    pub(super) method: Method,
    pub(super) dialog: DialogId,
    pub(super) peer: Peer,
    pub(super) data: Vec<u8>,
    pub(super) retrans_at: Option<Mono>,
    pub(super) interval: Duration,
    pub(super) deadline: Mono,
}

/// What a client transaction's timers ask for.
#[derive(Debug)]
pub(super) enum ClientTimer {
    /// Nothing due.
    Idle,
    /// Retransmit the request.
    Retransmit(Transmit),
    /// Timer F: no final response.
    TimedOut,
}

impl ClientTxn {
    /// A request `data` just sent.
    pub(super) fn new(
        now: Mono,
        method: Method,
        dialog: DialogId,
        peer: Peer,
        data: Vec<u8>,
        t1: Duration,
    ) -> Self {
        ClientTxn {
            method,
            dialog,
            peer,
            data,
            retrans_at: (!peer.reliable()).then(|| now + t1),
            interval: t1,
            deadline: now + 64 * t1,
        }
    }

    /// A provisional response: retransmit every T2 from now on.
    pub(super) fn provisional(&mut self, now: Mono, t2: Duration) {
        self.interval = t2;
        if self.retrans_at.is_some() {
            self.retrans_at = Some(now + t2);
        }
    }

    /// Earliest instant a timer fires.
    pub(super) fn timeout(&self) -> Mono {
        self.retrans_at
            .map_or(self.deadline, |r| r.min(self.deadline))
    }

    /// Advance to `now`.
    pub(super) fn on_timer(&mut self, now: Mono, t2: Duration) -> ClientTimer {
        if self.deadline <= now {
            return ClientTimer::TimedOut;
        }
        match self.retrans_at {
            Some(at) if at <= now => {
                self.interval = (self.interval * 2).min(t2);
                self.retrans_at = Some(now + self.interval);
                ClientTimer::Retransmit(Transmit {
                    peer: self.peer,
                    data: self.data.clone(),
                })
            }
            _ => ClientTimer::Idle,
        }
    }
}
