//! Sans-IO SIP UAS endpoint: ties server transactions ([`super::transaction`], RFC 3261
//! 17.2 with the RFC 6026 Accepted state), dialogs ([`super::dialog`]) and responses
//! ([`super::response`]) together: it routes requests, makes the request checks of
//! RFC 3261 8.2, owns the transaction and dialog tables and drives their timers. The
//! modules it ties depend only on data modules below them, never on this one.
//!
//! The only requests we send are in-dialog ones ending or refreshing a session
//! ([`super::client`]: BYE when our 2xx is never ACKed or the SRC stops refreshing its
//! session timer, UPDATE when we are the refresher); they go to the dialog's peer. Responses
//! always go back to the peer the request came from (symmetric response routing, same TCP
//! connection), which is what SBCs expect.

use crate::time::Mono;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::client::{ClientTimer, ClientTxn};
use super::dialog::{Dialog, DialogKey, DialogTimer, TerminationReason, UacState};
use super::message::{Message, Method, StartLine};
use super::parse;
pub use super::response::ALLOW;
use super::response::{self, class_index, Refusal, RefusalContext};
use super::session_timer::{self, Negotiation, Refresher, TimerConfig};
use super::transaction::{txn_key, AcceptedMemo, ServerTxn, TxnKey, TxnState};
pub use super::transport::{Peer, Transmit, Transport};
use super::{DialogId, SipError, TagGen, TxnId};

/// Endpoint configuration.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Value of the Server header.
    pub user_agent: String,
    /// host:port for our Contact header.
    pub contact_host: String,
    /// host:port for the Contact of calls over TLS (a name in the server certificate);
    /// `None`: the local address of the TLS connection.
    pub tls_contact_host: Option<String>,
    /// Body types we accept (lower-case `type/subtype`).
    pub accepted_content_types: Vec<String>,
    /// Option tags we support (listed in Supported; Require of others → 420).
    pub supported: Vec<String>,
    /// Feature-tag parameters appended to the Contact of our 1xx/2xx to INVITE, with
    /// their leading `;` (the SRS passes `;+sip.srs`: RFC 7866 §6.2, "The SRS MUST include
    /// the '+sip.srs' feature tag in the Contact URI, as per RFC 3840, for all recording
    /// sessions"), on 1xx/2xx to INVITE and 2xx to UPDATE; empty: none.
    pub contact_params: String,
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
    /// Cap on live server transactions (new requests beyond it get 503). Settled ones
    /// (final non-2xx sent, non-INVITE answered: they only absorb retransmissions) are
    /// evicted, oldest first, to make room, so a flood of requests we answer or refuse
    /// does not hold slots a new INVITE needs. A BYE of a live dialog or a CANCEL of a
    /// live INVITE is never refused at the cap: it takes a slot from a reserve of
    /// `max_dialogs` more. Completed non-INVITE transactions hold their slot for Timer J
    /// (64·T1) over UDP only, not at all over TCP/TLS (RFC 3261 §17.2.2). An INVITE
    /// answered with a 2xx leaves the table at once: its RFC 6026 Accepted state (Timer L,
    /// 64·T1, absorbing retransmitted INVITEs) is kept as a small memo outside it, at most
    /// [`ACCEPTED_PER_TRANSACTION`] × `max_transactions` of them (oldest dropped first,
    /// counted in [`Stats::accepted_evicted`]).
    pub max_transactions: usize,
    /// Anti-amplification budget of peers not authenticated by TLS: response bytes of a
    /// transaction (first sends included) may exceed this percentage of its request bytes
    /// (retransmissions included) only by the first final; later retransmissions stop at
    /// the budget. `None`: RFC 3261 timers only.
    pub response_budget_pct: Option<u32>,
    /// Cap on live dialogs (new INVITEs beyond it get 503).
    pub max_dialogs: usize,
    /// If the application has not sent a final response by then, the endpoint answers 500.
    pub app_response_timeout: Duration,
    /// A confirmed dialog without any request for this long is ended (lost BYE).
    pub dialog_idle_timeout: Duration,
    /// Seed for To-tags (the shell passes randomness; tests a constant).
    pub seed: u64,
    /// Session timers (RFC 4028), used when `supported` lists `timer`.
    pub session_timer: TimerConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            user_agent: "branchrec".into(),
            contact_host: "127.0.0.1:5060".into(),
            tls_contact_host: None,
            accepted_content_types: vec![
                "application/sdp".into(),
                "multipart/mixed".into(),
                "application/rs-metadata+xml".into(),
                "application/rs-metadata".into(),
            ],
            supported: Vec::new(),
            contact_params: String::new(),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            max_transactions: 4096,
            response_budget_pct: None,
            max_dialogs: 1024,
            app_response_timeout: Duration::from_secs(32),
            dialog_idle_timeout: Duration::from_secs(12 * 3600),
            seed: 0,
            session_timer: TimerConfig::default(),
        }
    }
}

/// Something the application must know or act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New INVITE (`initial: true`) or re-INVITE. The app must `respond(txn, ..)`.
    Invite {
        /// Transaction to answer.
        txn: TxnId,
        /// Dialog.
        dialog: DialogId,
        /// The request.
        request: Message,
        /// True for a dialog-creating INVITE.
        initial: bool,
    },
    /// UPDATE or INFO in a dialog; the app must respond.
    InDialogRequest {
        /// Transaction to answer.
        txn: TxnId,
        /// Dialog.
        dialog: DialogId,
        /// The request.
        request: Message,
    },
    /// ACK for a 2xx we sent.
    Ack {
        /// Dialog.
        dialog: DialogId,
        /// The ACK (may carry an SDP answer).
        request: Message,
    },
    /// CANCEL matched a pending INVITE; 200 (CANCEL) and 487 (INVITE) already sent.
    Cancelled {
        /// Dialog.
        dialog: DialogId,
    },
    /// The dialog ended. Emitted exactly once for every dialog announced by an initial
    /// `Invite` event.
    Terminated {
        /// Dialog.
        dialog: DialogId,
        /// Why.
        reason: TerminationReason,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received (parsed).
    pub requests_received: u64,
    /// Responses sent by class: index 0 = 1xx .. 5 = 6xx (first sends, not retransmits).
    pub responses_sent: [u64; 6],
    /// Response retransmissions (ours).
    pub retransmissions_sent: u64,
    /// Retransmitted requests absorbed by a transaction.
    pub retransmissions_absorbed: u64,
    /// Unparseable messages dropped without an answer.
    pub malformed_dropped: u64,
    /// Malformed requests answered with 400.
    pub malformed_answered: u64,
    /// Responses received (we are a UAS only) and dropped.
    pub responses_dropped: u64,
    /// Stray ACKs and other requests dropped.
    pub other_dropped: u64,
    /// Responses the endpoint meant to send itself (100, 200 to BYE/CANCEL/OPTIONS, 487,
    /// refusals) but could not, because the transaction was gone or already answered.
    pub respond_failures: u64,
    /// Requests we sent (BYE, refreshing UPDATE), first sends.
    pub requests_sent: u64,
    /// Requests we sent that got no final response (Timer F).
    pub requests_timed_out: u64,
    /// In-dialog requests, CANCELs and ACKs refused (or dropped) because they did not come
    /// from the dialog's peer ([`Peer::may_act_for`]).
    pub foreign_peer_refused: u64,
    /// Settled transactions evicted at the cap to make room for a new request.
    pub transactions_evicted: u64,
    /// Requests answered with a stateless 503 because the transaction table was full
    /// (after eviction; BYE/CANCEL of live calls use the reserve instead).
    pub transactions_refused: u64,
    /// Response retransmissions not sent: the peer's byte budget was spent.
    pub retransmissions_over_budget: u64,
    /// Accepted-state memos (answered INVITEs within Timer L) dropped before Timer L
    /// because the memo was full: a retransmission of such an INVITE would no longer be
    /// recognised.
    pub accepted_evicted: u64,
}

/// Accepted-state memos (answered INVITEs within Timer L) kept per slot of
/// `max_transactions`: with the default 8192, 32,768 memos ≈ 1,000 calls/s sustained over
/// the 32 s of Timer L, a few MB.
pub const ACCEPTED_PER_TRANSACTION: usize = 4;

/// Retry-After (seconds) of the stateless 503 at the transaction cap.
const TXN_CAP_RETRY_AFTER_S: u32 = 5;

/// The UAS endpoint state machine.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    tags: TagGen,
    next_id: u64,
    txns: HashMap<TxnId, ServerTxn>,
    txn_index: HashMap<TxnKey, TxnId>,
    dialogs: HashMap<DialogId, Dialog>,
    dialog_index: HashMap<DialogKey, DialogId>,
    /// Our own requests by Via branch.
    clients: HashMap<String, ClientTxn>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// TLS client identity per connection (set by the shell after the handshake).
    conn_identities: HashMap<u64, String>,
    /// Transactions in the order they settled (eviction candidates; stale ids skipped).
    settled: VecDeque<TxnId>,
    /// Answered INVITEs in their Accepted state (RFC 6026), outside `txns`.
    accepted: HashMap<TxnKey, AcceptedMemo>,
    /// Their keys in the order they were accepted (= expiry order: Timer L is constant).
    accepted_order: VecDeque<TxnKey>,
    /// Their transaction ids (a late `respond` gets `AlreadyFinal`).
    accepted_ids: HashSet<TxnId>,
    /// Size of the message being handled ([`Endpoint::handle_receive`]).
    rx_len: Option<usize>,
}

impl Endpoint {
    /// A new endpoint.
    pub fn new(cfg: EndpointConfig) -> Self {
        Self {
            tags: TagGen::new(cfg.seed),
            cfg,
            next_id: 1,
            txns: HashMap::new(),
            txn_index: HashMap::new(),
            dialogs: HashMap::new(),
            dialog_index: HashMap::new(),
            clients: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            conn_identities: HashMap::new(),
            settled: VecDeque::new(),
            accepted: HashMap::new(),
            accepted_order: VecDeque::new(),
            accepted_ids: HashSet::new(),
            rx_len: None,
        }
    }

    /// The authenticated TLS client identity of connection `conn` (the shell calls this
    /// after the handshake, before the first message), or `None` when it closed.
    pub fn set_conn_identity(&mut self, conn: u64, identity: Option<String>) {
        match identity {
            Some(i) => {
                self.conn_identities.insert(conn, i);
            }
            None => {
                self.conn_identities.remove(&conn);
            }
        }
    }

    /// The TLS client identity of the connection a message came over.
    pub fn identity_of(&self, peer: &Peer) -> Option<&str> {
        match peer.transport {
            Transport::Tls => peer
                .conn
                .and_then(|c| self.conn_identities.get(&c))
                .map(String::as_str),
            _ => None,
        }
    }

    /// The transport peer of a dialog's initial INVITE (the facts about the SRC come from
    /// here, never from header values) and its TLS identity.
    pub fn dialog_peer(&self, did: DialogId) -> Option<(Peer, Option<&str>)> {
        self.dialogs
            .get(&did)
            .map(|d| (d.peer, d.identity.as_deref()))
    }

    /// Whether `peer` may act in dialog `did` (see [`Peer::may_act_for`]); an allowed
    /// new connection becomes the dialog's peer. Refusals are counted.
    fn bound_to_dialog(&mut self, did: DialogId, peer: &Peer) -> bool {
        let identity = self.identity_of(peer).map(str::to_string);
        let Some(d) = self.dialogs.get_mut(&did) else {
            return true; // no dialog: the caller answers 481
        };
        if !peer.may_act_for(identity.as_deref(), &d.peer, d.identity.as_deref()) {
            self.stats.foreign_peer_refused += 1;
            tracing::warn!(transport = ?peer.transport, from = %peer.remote, dialog_peer = %d.peer.remote,
                "in-dialog request from another peer than the dialog's refused");
            return false;
        }
        if peer.reliable() && peer.conn != d.peer.conn {
            d.peer = *peer;
        }
        true
    }

    /// Drop the oldest settled transaction to make room; false if there is none.
    fn evict_settled(&mut self) -> bool {
        while let Some(id) = self.settled.pop_front() {
            if self.txns.get(&id).is_some_and(ServerTxn::settled) {
                if let Some(t) = self.txns.remove(&id) {
                    if self.txn_index.get(&t.key) == Some(&id) {
                        self.txn_index.remove(&t.key);
                    }
                }
                self.stats.transactions_evicted += 1;
                return true;
            }
        }
        false
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live dialogs (early or confirmed).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Live server transactions (answered INVITEs in their Accepted state are not among
    /// them: see [`Endpoint::accepted_count`]).
    pub fn transaction_count(&self) -> usize {
        self.txns.len()
    }

    /// Answered INVITEs still in their Accepted state (Timer L), kept as memos.
    pub fn accepted_count(&self) -> usize {
        self.accepted.len()
    }

    /// The INVITE transaction `id` got its 2xx: move it out of the table into the
    /// Accepted-state memo (RFC 6026 §7.1: it absorbs retransmitted INVITEs until
    /// Timer L; the dialog retransmits the 2xx until the ACK).
    fn accept(&mut self, id: TxnId) {
        let Some(t) = self.txns.remove(&id) else {
            return;
        };
        if self.txn_index.get(&t.key) == Some(&id) {
            self.txn_index.remove(&t.key);
        }
        let cap = self
            .cfg
            .max_transactions
            .max(1)
            .saturating_mul(ACCEPTED_PER_TRANSACTION);
        while self.accepted.len() >= cap {
            let Some(k) = self.accepted_order.pop_front() else {
                break;
            };
            if let Some(m) = self.accepted.remove(&k) {
                self.accepted_ids.remove(&m.id);
                self.stats.accepted_evicted += 1;
            }
        }
        let memo = AcceptedMemo {
            id,
            dialog: t.dialog,
            local_tag: t.local_tag,
            peer: t.peer,
            expires_at: t.expires_at,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        };
        if let Some(old) = self.accepted.insert(t.key.clone(), memo) {
            self.accepted_ids.remove(&old.id);
        } else {
            self.accepted_order.push_back(t.key);
        }
        self.accepted_ids.insert(id);
    }

    /// Drop the Accepted-state memos whose Timer L fired.
    fn expire_accepted(&mut self, now: Mono) {
        while let Some(k) = self.accepted_order.front() {
            match self.accepted.get(k) {
                Some(m) if m.expires_at > now => break,
                Some(_) => {
                    if let Some(m) = self.accepted.remove(k) {
                        self.accepted_ids.remove(&m.id);
                    }
                }
                None => {}
            }
            self.accepted_order.pop_front();
        }
    }

    /// A retransmitted INVITE of an answered transaction: absorbed (RFC 6026); while the
    /// dialog still waits for the ACK its 2xx goes out again (within the byte budget).
    fn absorb_accepted(&mut self, key: &TxnKey) -> bool {
        let Some(m) = self.accepted.get_mut(key) else {
            return false;
        };
        self.stats.retransmissions_absorbed += 1;
        let rx = self.rx_len;
        m.bytes_in = m.bytes_in.zip(rx).map(|(a, b)| a.saturating_add(b));
        let data = m
            .dialog
            .and_then(|d| self.dialogs.get(&d))
            .and_then(|d| d.ack_wait.as_ref())
            .map(|a| a.data.clone());
        if let Some(data) = data {
            if m.within_budget(data.len(), self.cfg.response_budget_pct) {
                m.bytes_out += data.len();
                self.stats.retransmissions_sent += 1;
                self.transmits.push_back(Transmit { peer: m.peer, data });
            } else {
                self.stats.retransmissions_over_budget += 1;
            }
        }
        true
    }

    /// Next datagram / stream message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest instant `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Mono> {
        let t = self
            .txns
            .values()
            .flat_map(|t| [Some(t.expires_at), t.retrans_at])
            .flatten();
        let d = self
            .dialogs
            .values()
            .flat_map(|d| d.timeouts(self.cfg.dialog_idle_timeout));
        let c = self.clients.values().map(ClientTxn::timeout);
        let a = self
            .accepted_order
            .front()
            .and_then(|k| self.accepted.get(k))
            .map(|m| m.expires_at);
        t.chain(d.flatten()).chain(c).chain(a).min()
    }

    /// Whether we do session timers (`timer` in Supported).
    fn timers_enabled(&self) -> bool {
        self.cfg
            .supported
            .iter()
            .any(|s| s.eq_ignore_ascii_case(session_timer::TIMER))
    }

    /// Negotiate the session timer of an INVITE/UPDATE (None: we do not do timers).
    fn negotiate_timer(&self, msg: &Message) -> Option<Negotiation> {
        self.timers_enabled()
            .then(|| session_timer::negotiate(msg, &self.cfg.session_timer))
    }

    /// Send a request in a dialog (BYE, UPDATE) as a client transaction.
    fn send_request(
        &mut self,
        now: Mono,
        did: DialogId,
        method: Method,
        extra: Vec<(String, String)>,
    ) {
        let branch = format!("z9hG4bK{}", self.tags.next_tag());
        let Some(d) = self.dialogs.get_mut(&did) else {
            return;
        };
        let peer = d.peer;
        let via_host = match peer.transport {
            Transport::Tls => self
                .cfg
                .tls_contact_host
                .clone()
                .unwrap_or_else(|| peer.local.to_string()),
            _ => self.cfg.contact_host.clone(),
        };
        let Some(uac) = d.uac.as_mut() else {
            return;
        };
        let data = uac.request(
            method.clone(),
            &via_host,
            peer.transport,
            &branch,
            &self.cfg.user_agent,
            extra,
        );
        self.stats.requests_sent += 1;
        self.transmits.push_back(Transmit {
            peer,
            data: data.clone(),
        });
        let txn = ClientTxn::new(now, method, did, peer, data, self.cfg.t1);
        self.clients.insert(branch, txn);
    }

    /// End a dialog from our side: BYE to the SRC, then `Terminated` with `reason`.
    fn hang_up(&mut self, now: Mono, did: DialogId, reason: TerminationReason) {
        self.send_request(now, did, Method::Bye, Vec::new());
        self.end_dialog(did, reason);
    }

    /// A response to one of our requests.
    fn handle_response(&mut self, now: Mono, msg: Message) {
        let branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string));
        let Some(status) = msg.status() else { return };
        let Some(c) = branch.as_ref().and_then(|b| self.clients.get_mut(b)) else {
            self.stats.responses_dropped += 1;
            return;
        };
        if status < 200 {
            c.provisional(now, self.cfg.t2);
            return;
        }
        let (method, did) = (c.method.clone(), c.dialog);
        if let Some(b) = branch {
            self.clients.remove(&b);
        }
        // RFC 4028 §10: a refresh answered 408 or 481 ends the session.
        if method == Method::Update && (status == 408 || status == 481) {
            self.hang_up(now, did, TerminationReason::RefreshFailed);
        }
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// One UDP datagram or one framed TCP message.
    pub fn handle_receive(&mut self, now: Mono, peer: Peer, data: &[u8]) {
        match parse::parse_datagram_lenient(data) {
            Err(_) => self.stats.malformed_dropped += 1,
            Ok((msg, None)) => {
                self.rx_len = Some(data.len());
                self.handle_message(now, peer, msg);
                self.rx_len = None;
            }
            Ok((msg, Some(e))) => self.reject_malformed(peer, &msg, SipError::Parse(e)),
        }
    }

    fn reject_malformed(&mut self, peer: Peer, msg: &Message, err: SipError) {
        let is_ack = matches!(msg.method(), Some(Method::Ack));
        if !msg.is_request() || is_ack || msg.headers.get("Via").is_none() {
            self.stats.malformed_dropped += 1;
            return;
        }
        self.stats.malformed_answered += 1;
        let refusal = err.refusal(&self.refusal_context());
        self.send_stateless(peer, msg, &refusal);
    }

    fn send_stateless(&mut self, peer: Peer, req: &Message, refusal: &Refusal) {
        let r = refusal.response();
        let tag = self.tags.next_tag();
        let data =
            self.build_response(req, &peer, r.status, &r.reason, Some(&tag), r.headers, None);
        self.stats.responses_sent[class_index(r.status)] += 1;
        self.transmits.push_back(Transmit { peer, data });
    }

    /// An already parsed message (e.g. from [`super::StreamFramer::next`]).
    pub fn handle_message(&mut self, now: Mono, peer: Peer, msg: Message) {
        let StartLine::Request {
            method, version, ..
        } = &msg.start
        else {
            return self.handle_response(now, msg);
        };
        let method = method.clone();
        if let Err(e) = parse::validate(&msg) {
            return self.reject_malformed(peer, &msg, SipError::Parse(e));
        }
        if msg.headers.get("Via").is_none() {
            self.stats.malformed_dropped += 1;
            return;
        }
        self.stats.requests_received += 1;
        if version != "SIP/2.0" {
            if method != Method::Ack {
                self.send_stateless(peer, &msg, &Refusal::VersionNotSupported);
            }
            return;
        }
        for h in ["Call-ID", "CSeq", "From", "To"] {
            if msg.header(h).is_none() {
                return self.reject_malformed(peer, &msg, SipError::MissingHeader(h));
            }
        }
        let Some(key) = txn_key(&msg) else {
            self.stats.malformed_dropped += 1;
            return;
        };
        if method == Method::Ack {
            return self.handle_ack(now, peer, key, msg);
        }
        if let Some(id) = self.txn_index.get(&key).copied() {
            self.stats.retransmissions_absorbed += 1;
            let (rx, pct) = (self.rx_len, self.cfg.response_budget_pct);
            if let Some(t) = self.txns.get_mut(&id) {
                t.bytes_in = t.bytes_in.zip(rx).map(|(a, b)| a.saturating_add(b));
                if let Some(data) = t.last_response.clone() {
                    if t.within_budget(data.len(), pct) {
                        t.bytes_out += data.len();
                        self.stats.retransmissions_sent += 1;
                        self.transmits.push_back(Transmit { peer, data });
                    } else {
                        self.stats.retransmissions_over_budget += 1;
                    }
                }
            }
            return;
        }
        if self.absorb_accepted(&key) {
            return;
        }
        // Down below the cap (the reserve may have taken it over).
        while self.txns.len() >= self.cfg.max_transactions && self.evict_settled() {}
        if self.txns.len() >= self.cfg.max_transactions
            && !self.may_use_reserve(&msg, &method, &key)
        {
            self.stats.transactions_refused += 1;
            let refusal = Refusal::Overloaded {
                retry_after_s: TXN_CAP_RETRY_AFTER_S,
            };
            self.send_stateless(peer, &msg, &refusal);
            return;
        }
        if method == Method::Cancel {
            return self.handle_cancel(now, peer, key, msg);
        }
        if let Err(e) = self.check_request(&msg, &method, &peer) {
            let id = self.new_txn(now, peer, key, msg, None, None, false, false);
            self.reject(now, id, e);
            return;
        }
        let to_tag = msg.to_tag();
        match to_tag {
            Some(tt) => self.in_dialog(now, peer, key, msg, method, tt),
            None => self.out_of_dialog(now, peer, key, msg, method),
        }
    }

    /// Whether a request may take a transaction beyond the cap: a BYE in a live dialog,
    /// or a CANCEL of a live INVITE transaction — ending a call is never refused for lack
    /// of a slot (else the recording stays open). The reserve is one slot per live
    /// dialog (`max_dialogs`), so a flood cannot grow the table without bound.
    fn may_use_reserve(&self, msg: &Message, method: &Method, key: &TxnKey) -> bool {
        if self.txns.len()
            >= self
                .cfg
                .max_transactions
                .saturating_add(self.cfg.max_dialogs)
        {
            return false;
        }
        match method {
            Method::Bye => {
                let Some(to_tag) = msg.to_tag() else {
                    return false;
                };
                let dkey = (
                    msg.call_id().unwrap_or("").to_string(),
                    msg.from_tag().unwrap_or_default(),
                    to_tag,
                );
                self.dialog_index.contains_key(&dkey)
            }
            Method::Cancel => {
                let inv = TxnKey {
                    method: Method::Invite,
                    ..key.clone()
                };
                self.txn_index.contains_key(&inv) || self.accepted.contains_key(&inv)
            }
            _ => false,
        }
    }

    /// RFC 3261 8.2.1-8.2.4 checks, in order: 405, 416 (480 for `sips:` off TLS), 420,
    /// 415, 406.
    fn check_request(&self, msg: &Message, method: &Method, peer: &Peer) -> Result<(), SipError> {
        if !matches!(
            method,
            Method::Invite | Method::Bye | Method::Options | Method::Update | Method::Info
        ) {
            return Err(SipError::MethodNotAllowed);
        }
        let uri = parse::parse_uri(msg.request_uri().unwrap_or(""))?;
        if !(uri.is_sip() || uri.scheme == "tel") {
            return Err(SipError::UnsupportedUriScheme);
        }
        if uri.scheme == "sips" && peer.transport != Transport::Tls {
            return Err(SipError::SipsOverInsecureTransport);
        }
        let unsupported: Vec<String> = msg
            .require()
            .into_iter()
            .filter(|t| !self.cfg.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .map(str::to_string)
            .collect();
        if !unsupported.is_empty() {
            return Err(SipError::BadExtension(unsupported));
        }
        if !msg.body.is_empty() {
            let ok = match msg.content_type() {
                Some(Ok(ct)) => self
                    .cfg
                    .accepted_content_types
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&ct.media_type)),
                _ => false,
            };
            if !ok {
                return Err(SipError::UnsupportedMediaType);
            }
        }
        if *method == Method::Invite && msg.header("Accept").is_some() {
            let acc = msg.headers.get_list("Accept");
            let sdp_ok = acc.iter().any(|a| {
                let mt = a
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mt == "application/sdp" || mt == "application/*" || mt == "*/*"
            });
            if !sdp_ok {
                return Err(SipError::NotAcceptable);
            }
        }
        Ok(())
    }

    /// Final error response on a transaction.
    fn reject(&mut self, now: Mono, id: TxnId, err: SipError) {
        let refusal = err.refusal(&self.refusal_context());
        // The transaction was just created or is pending, so this cannot fail except for
        // an already-final transaction, which callers exclude; counted if it does.
        let res = self.refuse(now, id, &refusal);
        self.count_failure(res, "refusal");
    }

    /// What refusals need from the configuration.
    fn refusal_context(&self) -> RefusalContext<'_> {
        RefusalContext {
            accepted_content_types: &self.cfg.accepted_content_types,
            contact_host: &self.cfg.contact_host,
        }
    }

    fn capability_headers(&self) -> Vec<(String, String)> {
        response::capability_headers(&self.cfg.accepted_content_types, &self.cfg.supported)
    }

    fn contact_for(&self, req: &Message, peer: &Peer) -> String {
        let tls_host = self.cfg.tls_contact_host.as_deref();
        response::contact_for(&self.cfg.contact_host, tls_host, req, peer)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_response(
        &self,
        req: &Message,
        peer: &Peer,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Vec<u8> {
        let ua = &self.cfg.user_agent;
        response::build_response(ua, req, peer, status, reason, to_tag, extra, body)
    }

    /// Count and log a response the endpoint meant to send itself but could not.
    fn count_failure(&mut self, res: Result<(), SipError>, what: &'static str) {
        if let Err(e) = res {
            self.stats.respond_failures += 1;
            tracing::warn!(error = %e, what, "SIP endpoint could not send its response");
        }
    }

    /// Refuse a request the app was given in an event (or one the endpoint answers
    /// itself): status, reason phrase and headers come from [`Refusal::response`].
    pub fn refuse(&mut self, now: Mono, txn: TxnId, refusal: &Refusal) -> Result<(), SipError> {
        let r = refusal.response();
        self.respond_inner(now, txn, r.status, &r.reason, r.headers, None)
    }

    /// Answer a request the app was given in an event. Builds the response from the stored
    /// request (Via list, From, To + our tag, Call-ID, CSeq, Contact for INVITE 1xx/2xx,
    /// Server), adding `extra_headers` and `body` as `(content type, bytes)`. A 2xx to
    /// INVITE is retransmitted (UDP) until the ACK arrives; without ACK in 64*T1 we send
    /// BYE and the dialog ends with `Terminated { reason: AckTimeout }`.
    pub fn respond(
        &mut self,
        now: Mono,
        txn: TxnId,
        status: u16,
        reason: &str,
        extra_headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(), SipError> {
        self.respond_inner(now, txn, status, reason, extra_headers, body)
    }

    fn out_of_dialog(&mut self, now: Mono, peer: Peer, key: TxnKey, msg: Message, method: Method) {
        match method {
            Method::Invite => {
                if self.dialogs.len() >= self.cfg.max_dialogs {
                    let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                    self.reject(now, id, SipError::Overloaded);
                    return;
                }
                let timer = self.negotiate_timer(&msg);
                if let Some(Negotiation::TooSmall { min_se_s }) = timer {
                    let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                    let res = self.refuse(now, id, &Refusal::SessionIntervalTooSmall { min_se_s });
                    self.count_failure(res, "Session Interval Too Small");
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
                let mut dialog = Dialog::new(dkey, peer, cseq, id, now);
                dialog.identity = self.identity_of(&peer).map(str::to_string);
                dialog.uac = Some(UacState::from_invite(&msg, &local_tag));
                self.dialogs.insert(did, dialog);
                if let Some(t) = self.txns.get_mut(&id) {
                    t.timer = timer;
                }
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

    fn in_dialog(
        &mut self,
        now: Mono,
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
        // Before the request touches the dialog (CSeq, activity, offers, BYE).
        if !self.bound_to_dialog(did, &peer) {
            let id = self.new_txn(now, peer, key, msg, None, None, false, false);
            self.reject(now, id, SipError::ForeignPeer);
            return;
        }
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
        if matches!(method, Method::Invite | Method::Update) {
            let timer = self.negotiate_timer(&msg);
            if let Some(Negotiation::TooSmall { min_se_s }) = timer {
                if let Some(t) = self.txns.get_mut(&id) {
                    t.offer = false;
                }
                let res = self.refuse(now, id, &Refusal::SessionIntervalTooSmall { min_se_s });
                self.count_failure(res, "Session Interval Too Small");
                return;
            }
            if let Some(t) = self.txns.get_mut(&id) {
                t.timer = timer;
            }
            if let Some(u) = self.dialogs.get_mut(&did).and_then(|d| d.uac.as_mut()) {
                u.refresh_target(&msg);
            }
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

    fn end_dialog(&mut self, did: DialogId, reason: TerminationReason) {
        if let Some(d) = self.dialogs.remove(&did) {
            self.dialog_index.remove(&d.key);
            self.events.push_back(Event::Terminated {
                dialog: did,
                reason,
            });
        }
    }

    fn handle_cancel(&mut self, now: Mono, peer: Peer, key: TxnKey, msg: Message) {
        let inv_key = TxnKey {
            method: Method::Invite,
            ..key.clone()
        };
        let inv = self.txn_index.get(&inv_key).copied();
        if inv.is_none() {
            if let Some(m) = self.accepted.get(&inv_key) {
                // Already answered 2xx: the CANCEL has no effect (RFC 3261 §9.2), 200.
                let (tag, did) = (m.local_tag.clone(), m.dialog);
                if let Some(did) = did {
                    if !self.bound_to_dialog(did, &peer) {
                        let id = self.new_txn(now, peer, key, msg, None, tag, false, false);
                        return self.reject(now, id, SipError::ForeignPeer);
                    }
                }
                let id = self.new_txn(now, peer, key, msg, None, tag, false, false);
                let res = self.respond_inner(now, id, 200, "OK", Vec::new(), None);
                self.count_failure(res, "OK");
                return;
            }
        }
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
        // Only the INVITE's own peer may cancel it.
        if let Some(did) = did {
            if !self.bound_to_dialog(did, &peer) {
                let id = self.new_txn(now, peer, key, msg, None, tag, false, false);
                return self.reject(now, id, SipError::ForeignPeer);
            }
        }
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

    fn handle_ack(&mut self, now: Mono, peer: Peer, key: TxnKey, msg: Message) {
        if let Some(id) = self.txn_index.get(&key).copied() {
            if let Some(t) = self.txns.get_mut(&id) {
                if t.absorb_ack(now, self.cfg.t4) {
                    self.stats.retransmissions_absorbed += 1;
                    return;
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
        if !self.bound_to_dialog(did, &peer) {
            return; // counted; an ACK gets no answer
        }
        let Some(d) = self.dialogs.get_mut(&did) else {
            self.stats.other_dropped += 1;
            return;
        };
        if d.take_ack(now, cseq) {
            self.events.push_back(Event::Ack {
                dialog: did,
                request: msg,
            });
        } else {
            self.stats.other_dropped += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_txn(
        &mut self,
        now: Mono,
        peer: Peer,
        key: TxnKey,
        request: Message,
        dialog: Option<DialogId>,
        local_tag: Option<String>,
        initial_invite: bool,
        offer: bool,
    ) -> TxnId {
        let id = TxnId(self.alloc());
        let local_tag = if request.to_tag().is_some() {
            None
        } else {
            Some(local_tag.unwrap_or_else(|| self.tags.next_tag()))
        };
        self.txn_index.insert(key.clone(), id);
        let expires_at = now + self.cfg.app_response_timeout;
        let mut txn = ServerTxn::new(
            key,
            peer,
            request,
            dialog,
            local_tag,
            initial_invite,
            offer,
            self.cfg.t1,
            expires_at,
        );
        txn.bytes_in = self.rx_len;
        self.txns.insert(id, txn);
        id
    }

    fn respond_inner(
        &mut self,
        now: Mono,
        id: TxnId,
        status: u16,
        reason: &str,
        extra: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(), SipError> {
        if !(100..=699).contains(&status) {
            return Err(SipError::InvalidStatus(status));
        }
        let Some(t) = self.txns.get(&id) else {
            return Err(if self.accepted_ids.contains(&id) {
                SipError::AlreadyFinal
            } else {
                SipError::UnknownTransaction
            });
        };
        if t.state != TxnState::Proceeding {
            return Err(SipError::AlreadyFinal);
        }
        let is_invite = t.is_invite();
        let mut extra = extra;
        // A Contact with our feature tags on every response that creates or refreshes the
        // dialog's target: 1xx/2xx to INVITE, and 2xx to UPDATE (RFC 3311 §5.2, a target
        // refresh; RFC 7866 §6.2: the SRS includes `+sip.srs` in the Contact for all
        // recording sessions, in responses that create *and modify* the dialog).
        let refreshes = t.method == Method::Update && (200..300).contains(&status);
        if (is_invite && (101..300).contains(&status)) || refreshes {
            let contact = format!(
                "{}{}",
                self.contact_for(&t.request, &t.peer),
                self.cfg.contact_params
            );
            extra.insert(0, ("Contact".into(), contact));
        }
        let timer = match t.timer {
            Some(Negotiation::On(n)) if (200..300).contains(&status) => Some(Some(n)),
            Some(Negotiation::Off) if (200..300).contains(&status) => Some(None),
            _ => None,
        };
        if let Some(Some(n)) = timer {
            extra.extend(n.headers());
        }
        if is_invite && (200..300).contains(&status) {
            // RFC 3261 §13.3.1.4: the 2xx to an INVITE SHOULD carry Allow and Supported.
            let has = |extra: &[(String, String)], n: &str| {
                extra.iter().any(|(h, _)| h.eq_ignore_ascii_case(n))
            };
            if !has(&extra, "Allow") {
                extra.push(("Allow".into(), ALLOW.into()));
            }
            if !has(&extra, "Supported") && !self.cfg.supported.is_empty() {
                extra.push(("Supported".into(), self.cfg.supported.join(", ")));
            }
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
        let Some(t) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        t.bytes_out += data.len();
        t.sent(now, status, data.clone(), t1);
        if status < 200 {
            return Ok(());
        }
        if t.settled() {
            self.settled.push_back(id);
            if self.settled.len() > 2 * self.cfg.max_transactions.max(1) {
                let txns = &self.txns;
                self.settled
                    .retain(|i| txns.get(i).is_some_and(ServerTxn::settled));
            }
        }
        if offer {
            if let Some(d) = did.and_then(|d| self.dialogs.get_mut(&d)) {
                if d.pending_offer == Some(id) {
                    d.pending_offer = None;
                }
            }
        }
        if let (Some(timer), Some(d)) = (timer, did.and_then(|d| self.dialogs.get_mut(&d))) {
            d.set_session_timer(now, timer);
        }
        if is_invite && status < 300 {
            if let Some(d) = did.and_then(|d| self.dialogs.get_mut(&d)) {
                d.accepted(now, cseq, data, t1);
            }
            self.accept(id);
        } else if is_invite && initial {
            if let Some(did) = did {
                // A CANCEL ends the dialog itself (with a Cancelled event first).
                if status != Refusal::RequestTerminated.status() {
                    self.end_dialog(did, TerminationReason::Rejected);
                }
            }
        }
        Ok(())
    }

    /// Advance timers: retransmissions, transaction expiry, ACK timeouts, idle dialogs.
    pub fn handle_timeout(&mut self, now: Mono) {
        let t2 = self.cfg.t2;
        // Timer L of answered INVITEs.
        self.expire_accepted(now);
        // Expiry (Timers H, I, J, app timeout).
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
        let pct = self.cfg.response_budget_pct;
        for t in self.txns.values_mut() {
            let due = t.retrans_at.is_some_and(|at| at <= now);
            match t.retransmission_due(now, t2, pct) {
                Some(tx) => {
                    self.transmits.push_back(tx);
                    self.stats.retransmissions_sent += 1;
                }
                None if due && t.retrans_at.is_none() => {
                    self.stats.retransmissions_over_budget += 1
                }
                None => {}
            }
        }
        // 2xx retransmission and ACK timeout; idle dialogs.
        let idle = self.cfg.dialog_idle_timeout;
        let mut ended = Vec::new();
        let mut refresh = Vec::new();
        for (did, d) in self.dialogs.iter_mut() {
            match d.on_timer(now, t2, idle) {
                DialogTimer::Idle => {}
                DialogTimer::Retransmit(tx) => {
                    self.transmits.push_back(tx);
                    self.stats.retransmissions_sent += 1;
                }
                DialogTimer::End(reason) => ended.push((*did, reason)),
                DialogTimer::Refresh => refresh.push(*did),
            }
        }
        ended.sort_by_key(|(d, _)| *d);
        for (did, r) in ended {
            match r {
                // RFC 4028 §10: the side not refreshing sends BYE at expiry. RFC 3261
                // §13.3.1.4: a 2xx never ACKed within 64*T1 confirms the dialog, but the
                // session SHOULD be ended with BYE.
                TerminationReason::SessionTimerExpired | TerminationReason::AckTimeout => {
                    self.hang_up(now, did, r)
                }
                _ => self.end_dialog(did, r),
            }
        }
        refresh.sort();
        for did in refresh {
            let n = self
                .dialogs
                .get(&did)
                .and_then(|d| d.session_timer.map(|(n, _)| n));
            if let Some(n) = n {
                let se = format!(
                    "{};refresher={}",
                    n.interval.as_secs(),
                    Refresher::Uas.as_str()
                );
                let extra = vec![
                    ("Session-Expires".to_string(), se),
                    ("Supported".to_string(), session_timer::TIMER.to_string()),
                ];
                self.send_request(now, did, Method::Update, extra);
            }
        }
        // Our requests: retransmissions (Timer E) and Timer F.
        let mut timed_out = Vec::new();
        for (b, c) in self.clients.iter_mut() {
            match c.on_timer(now, t2) {
                ClientTimer::Idle => {}
                ClientTimer::Retransmit(tx) => {
                    self.transmits.push_back(tx);
                    self.stats.retransmissions_sent += 1;
                }
                ClientTimer::TimedOut => timed_out.push(b.clone()),
            }
        }
        timed_out.sort();
        for b in timed_out {
            if let Some(c) = self.clients.remove(&b) {
                self.stats.requests_timed_out += 1;
                // RFC 4028 §10: a refresh that times out ends the session.
                if c.method == Method::Update && self.dialogs.contains_key(&c.dialog) {
                    self.hang_up(now, c.dialog, TerminationReason::RefreshFailed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
