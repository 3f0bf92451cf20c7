//! Server transactions (RFC 3261 17.2, with the RFC 6026 Accepted state): matching keys,
//! states, and the timers of a transaction once it has answered — retransmission of
//! non-2xx INVITE finals (Timer G), absorption of the ACK (Timer I) and expiry (Timers H,
//! J, end of Accepted). The endpoint owns the transaction table and drives these.

use crate::time::Mono;
use std::time::Duration;

use super::message::{Message, Method};
use super::transport::{Peer, Transmit};
use super::DialogId;

/// What identifies a server transaction (RFC 3261 17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TxnKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: Method,
}

/// State of a server transaction.
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

/// What is left of an INVITE server transaction once its 2xx is sent (RFC 6026
/// Accepted state, until Timer L = 64·T1): enough to absorb retransmissions of the
/// INVITE (and answer a late CANCEL), not the request nor the response. Kept outside the
/// transaction table, so answered INVITEs do not count against `max_transactions`.
#[derive(Debug)]
pub(super) struct AcceptedMemo {
    pub(super) id: super::TxnId,
    pub(super) dialog: Option<DialogId>,
    pub(super) local_tag: Option<String>,
    pub(super) peer: Peer,
    pub(super) expires_at: Mono,
    pub(super) bytes_in: Option<usize>,
    pub(super) bytes_out: usize,
}

impl AcceptedMemo {
    /// Whether `len` more response bytes stay within the budget (as
    /// [`ServerTxn::within_budget`]).
    pub(super) fn within_budget(&self, len: usize, pct: Option<u32>) -> bool {
        within_budget(self.peer, self.bytes_in, self.bytes_out, len, pct)
    }
}

fn within_budget(
    peer: Peer,
    bytes_in: Option<usize>,
    bytes_out: usize,
    len: usize,
    pct: Option<u32>,
) -> bool {
    match (pct, bytes_in, peer.transport) {
        (Some(pct), Some(inb), t) if t != super::transport::Transport::Tls => {
            let budget = inb.saturating_mul(pct as usize) / 100;
            bytes_out.saturating_add(len) <= budget
        }
        _ => true,
    }
}

/// One server transaction.
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
    pub(super) retrans_at: Option<Mono>,
    pub(super) retrans_interval: Duration,
    pub(super) expires_at: Mono,
    /// Initial INVITE: its dialog ends with a non-2xx final.
    pub(super) initial_invite: bool,
    /// INVITE/UPDATE with offer: glare guard of the dialog.
    pub(super) offer: bool,
    /// INVITE/UPDATE when we support session timers: what its 2xx negotiates.
    pub(super) timer: Option<super::session_timer::Negotiation>,
    /// Bytes of the request received so far (retransmissions included); `None` when the
    /// size is unknown (a message handed in parsed), which leaves retransmissions
    /// unbudgeted.
    pub(super) bytes_in: Option<usize>,
    /// Bytes of responses sent so far (retransmissions included).
    pub(super) bytes_out: usize,
}

/// The transaction key of a request (an ACK matches its INVITE's transaction). Requests
/// without an RFC 3261 branch get a key from Request-URI, From-tag, Call-ID and CSeq.
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

impl ServerTxn {
    /// A transaction in Proceeding that expires (app timeout) at `expires_at`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key: TxnKey,
        peer: Peer,
        request: Message,
        dialog: Option<DialogId>,
        local_tag: Option<String>,
        initial_invite: bool,
        offer: bool,
        t1: Duration,
        expires_at: Mono,
    ) -> Self {
        let method = request
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
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
            retrans_interval: t1,
            expires_at,
            initial_invite,
            offer,
            timer: None,
            bytes_in: None,
            bytes_out: 0,
        }
    }

    /// Whether `len` more response bytes stay within `pct` percent of the bytes received
    /// (the anti-amplification budget of unauthenticated peers; `None`: no budget).
    pub(super) fn within_budget(&self, len: usize, pct: Option<u32>) -> bool {
        within_budget(self.peer, self.bytes_in, self.bytes_out, len, pct)
    }

    /// Whether the final is settled (non-2xx sent or non-INVITE answered): the
    /// transaction only absorbs retransmissions now and may be evicted under pressure.
    pub(super) fn settled(&self) -> bool {
        matches!(self.state, TxnState::Completed | TxnState::Confirmed)
    }

    /// Whether this is an INVITE transaction.
    pub(super) fn is_invite(&self) -> bool {
        self.method == Method::Invite
    }

    /// A response `data` with `status` was sent: remember it for retransmitted requests
    /// and, for a final, enter the next state with its timers.
    pub(super) fn sent(&mut self, now: Mono, status: u16, data: Vec<u8>, t1: Duration) {
        self.last_response = Some(data);
        if status < 200 {
            return;
        }
        let reliable = self.peer.reliable();
        if self.is_invite() && status < 300 {
            self.state = TxnState::Accepted;
            self.retrans_at = None;
            self.expires_at = now + 64 * t1;
        } else if self.is_invite() {
            self.state = TxnState::Completed;
            self.retrans_at = (!reliable).then(|| now + t1);
            self.retrans_interval = t1;
            self.expires_at = now + 64 * t1;
        } else {
            self.state = TxnState::Completed;
            self.retrans_at = None;
            self.expires_at = if reliable { now } else { now + 64 * t1 };
        }
    }

    /// An ACK matched this transaction: true when it was absorbed (the ACK for our
    /// non-2xx final, or a retransmission of it), which starts Timer I.
    pub(super) fn absorb_ack(&mut self, now: Mono, t4: Duration) -> bool {
        match self.state {
            TxnState::Completed => {
                self.state = TxnState::Confirmed;
                self.retrans_at = None;
                self.expires_at = if self.peer.reliable() { now } else { now + t4 };
                true
            }
            TxnState::Confirmed => true,
            _ => false,
        }
    }

    /// Timer G: the final to retransmit now, if one is due (interval doubling up to T2).
    pub(super) fn retransmission_due(
        &mut self,
        now: Mono,
        t2: Duration,
        budget_pct: Option<u32>,
    ) -> Option<Transmit> {
        let at = self.retrans_at?;
        if at > now || self.state != TxnState::Completed {
            return None;
        }
        let len = self.last_response.as_ref().map_or(0, Vec::len);
        if !self.within_budget(len, budget_pct) {
            // Out of budget: no more retransmissions (the transaction still absorbs the
            // ACK until Timer H).
            self.retrans_at = None;
            return None;
        }
        self.bytes_out += len;
        let out = self.last_response.as_ref().map(|d| Transmit {
            peer: self.peer,
            data: d.clone(),
        });
        self.retrans_interval = (self.retrans_interval * 2).min(t2);
        self.retrans_at = Some(at + self.retrans_interval);
        out
    }
}
