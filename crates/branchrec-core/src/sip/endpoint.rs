//! Sans-IO SIP UAS endpoint: server transactions (RFC 3261 17.2, with the RFC 6026
//! Accepted state), dialogs, and the request checks of RFC 3261 8.2.
//!
//! We never send requests. Responses always go back to the peer the request came from
//! (symmetric response routing, same TCP connection), which is what SBCs expect.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::message::{Headers, Message, Method, StartLine};
use super::parse;
use super::{SipError, TagGen};

/// Transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable: we retransmit responses).
    Udp,
    /// TCP (reliable: no retransmissions).
    Tcp,
    /// TLS over TCP (reliable; the only transport on which a `sips:` Request-URI is
    /// accepted, RFC 3261 §26.2.2 / RFC 5630).
    Tls,
}

/// Where a message came from / a response goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub remote: SocketAddr,
    /// Local address the message arrived on.
    pub local: SocketAddr,
    /// TCP/TLS connection id assigned by the shell.
    pub conn: Option<u64>,
}

impl Peer {
    fn reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp | Transport::Tls)
    }
}

/// Bytes to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (same transport/connection the request used).
    pub peer: Peer,
    /// One complete SIP message.
    pub data: Vec<u8>,
}

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
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
    /// Cap on live server transactions (new requests beyond it get 503).
    pub max_transactions: usize,
    /// Cap on live dialogs (new INVITEs beyond it get 503).
    pub max_dialogs: usize,
    /// If the application has not sent a final response by then, the endpoint answers 500.
    pub app_response_timeout: Duration,
    /// A confirmed dialog without any request for this long is ended (lost BYE).
    pub dialog_idle_timeout: Duration,
    /// Seed for To-tags (the shell passes randomness; tests a constant).
    pub seed: u64,
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
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            max_transactions: 4096,
            max_dialogs: 1024,
            app_response_timeout: Duration::from_secs(32),
            dialog_idle_timeout: Duration::from_secs(12 * 3600),
            seed: 0,
        }
    }
}

/// Server transaction handle given to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

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
}

/// Methods we implement (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TxnKey {
    branch: String,
    sent_by: String,
    method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnState {
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
struct ServerTxn {
    key: TxnKey,
    method: Method,
    peer: Peer,
    request: Message,
    dialog: Option<DialogId>,
    /// To-tag to add (None when the request already has one).
    local_tag: Option<String>,
    state: TxnState,
    last_response: Option<Vec<u8>>,
    retrans_at: Option<Instant>,
    retrans_interval: Duration,
    expires_at: Instant,
    /// Initial INVITE: its dialog ends with a non-2xx final.
    initial_invite: bool,
    /// INVITE/UPDATE with offer: glare guard of the dialog.
    offer: bool,
}

#[derive(Debug)]
struct AckWait {
    cseq: u32,
    data: Vec<u8>,
    next: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

#[derive(Debug)]
struct Dialog {
    key: (String, String, String),
    peer: Peer,
    remote_cseq: u32,
    confirmed: bool,
    pending_offer: Option<TxnId>,
    ack_wait: Option<AckWait>,
    last_activity: Instant,
}

/// The UAS endpoint state machine.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    tags: TagGen,
    next_id: u64,
    txns: HashMap<TxnId, ServerTxn>,
    txn_index: HashMap<TxnKey, TxnId>,
    dialogs: HashMap<DialogId, Dialog>,
    dialog_index: HashMap<(String, String, String), DialogId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

fn txn_key(msg: &Message) -> Option<TxnKey> {
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

fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 6) - 1)
}

fn sanitize_reason(r: &str) -> String {
    r.chars().filter(|c| *c != '\r' && *c != '\n').collect()
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
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live dialogs (early or confirmed).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Live server transactions.
    pub fn transaction_count(&self) -> usize {
        self.txns.len()
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
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self
            .txns
            .values()
            .flat_map(|t| [Some(t.expires_at), t.retrans_at])
            .flatten();
        let d = self.dialogs.values().flat_map(|d| {
            let (n, dl) = match &d.ack_wait {
                Some(a) => (a.next, Some(a.deadline)),
                None => (None, None),
            };
            let idle = d
                .confirmed
                .then(|| d.last_activity + self.cfg.dialog_idle_timeout);
            [n, dl, idle]
        });
        t.chain(d.flatten()).min()
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// One UDP datagram or one framed TCP message.
    pub fn handle_receive(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        match parse::parse_datagram_lenient(data) {
            Err(_) => self.stats.malformed_dropped += 1,
            Ok((msg, None)) => self.handle_message(now, peer, msg),
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
        self.send_stateless(peer, msg, &err, Vec::new());
    }

    fn send_stateless(
        &mut self,
        peer: Peer,
        req: &Message,
        err: &SipError,
        extra: Vec<(String, String)>,
    ) {
        let (status, _) = err.status();
        let tag = self.tags.next_tag();
        let data = self.build_response(
            req,
            &peer,
            status,
            &err.reason_phrase(),
            Some(&tag),
            extra,
            None,
        );
        self.stats.responses_sent[class_index(status)] += 1;
        self.transmits.push_back(Transmit { peer, data });
    }

    /// An already parsed message (e.g. from [`super::StreamFramer::next`]).
    pub fn handle_message(&mut self, now: Instant, peer: Peer, msg: Message) {
        let StartLine::Request {
            method, version, ..
        } = &msg.start
        else {
            self.stats.responses_dropped += 1;
            return;
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
                self.send_stateless(peer, &msg, &SipError::VersionNotSupported, Vec::new());
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
            return self.handle_ack(now, key, msg);
        }
        if let Some(id) = self.txn_index.get(&key).copied() {
            self.stats.retransmissions_absorbed += 1;
            if let Some(t) = self.txns.get(&id) {
                if let Some(data) = t.last_response.clone() {
                    self.stats.retransmissions_sent += 1;
                    self.transmits.push_back(Transmit { peer, data });
                }
            }
            return;
        }
        if self.txns.len() >= self.cfg.max_transactions {
            self.send_stateless(
                peer,
                &msg,
                &SipError::Overloaded,
                vec![("Retry-After".into(), "5".into())],
            );
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

    fn extra_for(&self, err: &SipError) -> Vec<(String, String)> {
        match err {
            SipError::MethodNotAllowed => vec![("Allow".into(), ALLOW.into())],
            SipError::UnsupportedMediaType => {
                vec![("Accept".into(), self.cfg.accepted_content_types.join(", "))]
            }
            SipError::BadExtension(tags) => vec![("Unsupported".into(), tags.join(", "))],
            SipError::SipsOverInsecureTransport => vec![(
                "Warning".into(),
                format!(
                    "399 {} \"sips: Request-URI received over a transport other than TLS; send it over TLS\"",
                    self.cfg.contact_host
                ),
            )],
            SipError::NotAcceptable => vec![("Accept".into(), "application/sdp".into())],
            SipError::Overloaded | SipError::RequestPending | SipError::CSeqOutOfOrder => {
                vec![("Retry-After".into(), "1".into())]
            }
            _ => Vec::new(),
        }
    }

    /// Final error response on a transaction.
    fn reject(&mut self, now: Instant, id: TxnId, err: SipError) {
        let (status, _) = err.status();
        let extra = self.extra_for(&err);
        // The transaction was just created or is pending, so respond cannot fail here
        // except for an already-final transaction, which callers exclude.
        let _ = self.respond_inner(now, id, status, &err.reason_phrase(), extra, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_txn(
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

    fn capability_headers(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("Allow".to_string(), ALLOW.to_string()),
            (
                "Accept".to_string(),
                self.cfg.accepted_content_types.join(", "),
            ),
        ];
        if !self.cfg.supported.is_empty() {
            v.push(("Supported".into(), self.cfg.supported.join(", ")));
        }
        v
    }

    fn out_of_dialog(
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
                let _ = self.respond_inner(now, id, 100, "Trying", Vec::new(), None);
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
                let _ = self.respond_inner(now, id, 200, "OK", extra, None);
            }
            _ => {
                let id = self.new_txn(now, peer, key, msg, None, None, false, false);
                self.reject(now, id, SipError::NoSuchDialog);
            }
        }
    }

    fn in_dialog(
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
                    let _ = self.respond_inner(now, p, 487, "Request Terminated", Vec::new(), None);
                }
                let _ = self.respond_inner(now, id, 200, "OK", Vec::new(), None);
                self.end_dialog(did, TerminationReason::Bye);
            }
            Method::Options => {
                let extra = self.capability_headers();
                let _ = self.respond_inner(now, id, 200, "OK", extra, None);
            }
            Method::Invite => {
                if let Some(d) = self.dialogs.get_mut(&did) {
                    d.pending_offer = Some(id);
                }
                let _ = self.respond_inner(now, id, 100, "Trying", Vec::new(), None);
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

    fn handle_cancel(&mut self, now: Instant, peer: Peer, key: TxnKey, msg: Message) {
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
        let _ = self.respond_inner(now, id, 200, "OK", Vec::new(), None);
        if pending {
            let _ = self.respond_inner(now, inv_id, 487, "Request Terminated", Vec::new(), None);
            if let Some(did) = did {
                let initial = self.txns.get(&inv_id).is_some_and(|t| t.initial_invite);
                if initial && self.dialogs.contains_key(&did) {
                    self.events.push_back(Event::Cancelled { dialog: did });
                    self.end_dialog(did, TerminationReason::Cancelled);
                }
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, key: TxnKey, msg: Message) {
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

    /// Answer a request the app was given in an event. Builds the response from the stored
    /// request (Via list, From, To + our tag, Call-ID, CSeq, Contact for INVITE 1xx/2xx,
    /// Server), adding `extra_headers` and `body` as `(content type, bytes)`. A 2xx to
    /// INVITE is retransmitted (UDP) until the ACK arrives; without ACK in 64*T1 the dialog
    /// ends with `Terminated { reason: AckTimeout }`.
    pub fn respond(
        &mut self,
        now: Instant,
        txn: TxnId,
        status: u16,
        reason: &str,
        extra_headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(), SipError> {
        self.respond_inner(now, txn, status, reason, extra_headers, body)
    }

    fn respond_inner(
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
                    let reason = if status == 487 {
                        TerminationReason::Cancelled
                    } else {
                        TerminationReason::Rejected
                    };
                    // A CANCEL ends the dialog itself (with a Cancelled event first).
                    if status != 487 {
                        self.end_dialog(did, reason);
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

    /// Our Contact for a dialog-creating response. Over TLS: `sips:` when the request
    /// asked for SIPS (Request-URI, or the top Record-Route / Contact when the SRC put a
    /// `sips:` URI there — RFC 3261 §12.1.1), else `sip:…;transport=tls`.
    fn contact_for(&self, req: &Message, peer: &Peer) -> String {
        match peer.transport {
            Transport::Udp => format!("<sip:{}>", self.cfg.contact_host),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.cfg.contact_host),
            Transport::Tls => {
                let host = self
                    .cfg
                    .tls_contact_host
                    .clone()
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
                let (st, _) = SipError::AppTimeout.status();
                let _ = self.respond_inner(
                    now,
                    id,
                    st,
                    &SipError::AppTimeout.reason_phrase(),
                    Vec::new(),
                    None,
                );
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
        h.push("Server", self.cfg.user_agent.clone());
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
    use crate::sip::parse_datagram;

    const T1: Duration = Duration::from_millis(500);

    fn peer(transport: Transport) -> Peer {
        Peer {
            transport,
            remote: "192.0.2.10:5062".parse().unwrap(),
            local: "192.0.2.1:5060".parse().unwrap(),
            conn: (transport == Transport::Tcp).then_some(3),
        }
    }

    fn ep() -> Endpoint {
        Endpoint::new(EndpointConfig {
            seed: 42,
            ..EndpointConfig::default()
        })
    }

    fn req(
        method: &str,
        branch: &str,
        call: &str,
        cseq: u32,
        to_tag: Option<&str>,
        extra: &str,
        body: &str,
    ) -> Vec<u8> {
        let cseq_m = method;
        let to = match to_tag {
            Some(t) => format!("<sip:srs@192.0.2.1>;tag={t}"),
            None => "<sip:srs@192.0.2.1>".into(),
        };
        format!(
            "{method} sip:srs@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:src@192.0.2.10>;tag=ft1\r\nTo: {to}\r\n\
Call-ID: {call}\r\nCSeq: {cseq} {cseq_m}\r\nContact: <sip:src@192.0.2.10:5062>\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn sdp_invite(branch: &str, call: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
        req(
            "INVITE",
            branch,
            call,
            cseq,
            to_tag,
            "Content-Type: application/sdp\r\n",
            "v=0\r\n",
        )
    }

    fn drain(ep: &mut Endpoint) -> Vec<Message> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| parse_datagram(&t.data).expect("our responses parse"))
            .collect()
    }

    fn statuses(msgs: &[Message]) -> Vec<u16> {
        msgs.iter().filter_map(Message::status).collect()
    }

    fn events(ep: &mut Endpoint) -> Vec<Event> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    /// INVITE in, app answers 200; returns (txn, dialog, our To-tag).
    fn establish(ep: &mut Endpoint, now: Instant, p: Peer) -> (TxnId, DialogId, String) {
        ep.handle_receive(now, p, &sdp_invite("z9hG4bKinv1", "call1", 1, None));
        assert_eq!(statuses(&drain(ep)), vec![100]);
        let ev = events(ep);
        let (txn, dialog) = match ev.as_slice() {
            [Event::Invite {
                txn,
                dialog,
                initial: true,
                request,
            }] => {
                assert_eq!(request.call_id(), Some("call1"));
                (*txn, *dialog)
            }
            other => panic!("{other:?}"),
        };
        ep.respond(
            now,
            txn,
            200,
            "OK",
            vec![("Require".into(), "siprec".into())],
            Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
        )
        .unwrap();
        let out = drain(ep);
        assert_eq!(statuses(&out), vec![200]);
        let ok = &out[0];
        let tag = ok.to_tag().expect("2xx carries our To-tag");
        assert_eq!(ok.from_tag().as_deref(), Some("ft1"));
        assert_eq!(ok.call_id(), Some("call1"));
        assert_eq!(ok.cseq().unwrap(), (1, Method::Invite));
        assert!(ok
            .contact()
            .unwrap()
            .unwrap()
            .uri
            .host
            .starts_with("127.0.0.1"));
        assert_eq!(ok.header("Server"), Some("branchrec"));
        assert_eq!(ok.header("Require"), Some("siprec"));
        assert_eq!(ok.body, b"v=0\r\n");
        assert_eq!(
            ok.content_type().unwrap().unwrap().media_type,
            "application/sdp"
        );
        let via = ok.top_via().unwrap();
        assert_eq!(via.rport(), Some(Some(5062)));
        (txn, dialog, tag)
    }

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
    fn invite_over(t: Transport, ruri: &str, tls_host: Option<&str>) -> Vec<Message> {
        let now = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig {
            seed: 42,
            tls_contact_host: tls_host.map(str::to_string),
            ..EndpointConfig::default()
        });
        let p = Peer {
            conn: Some(9),
            ..peer(t)
        };
        let raw = String::from_utf8(sdp_invite("z9hG4bKs1", "callS", 1, None))
            .unwrap()
            .replacen("INVITE sip:srs@192.0.2.1", &format!("INVITE {ruri}"), 1)
            .replace(
                "SIP/2.0/UDP",
                if t == Transport::Tls {
                    "SIP/2.0/TLS"
                } else {
                    "SIP/2.0/UDP"
                },
            );
        ep.handle_receive(now, p, raw.as_bytes());
        let mut out = drain(&mut ep);
        if let [Event::Invite { txn, .. }] = events(&mut ep).as_slice() {
            ep.respond(
                now,
                *txn,
                200,
                "OK",
                vec![],
                Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
            )
            .unwrap();
            out.extend(drain(&mut ep));
            // Reliable transport: no 2xx retransmission.
            ep.handle_timeout(now + 10 * T1);
            if t == Transport::Tls {
                assert!(drain(&mut ep).is_empty(), "2xx retransmitted over TLS");
            }
        }
        out
    }

    #[test]
    fn sips_request_uri_over_udp_or_tcp_gets_480() {
        for t in [Transport::Udp, Transport::Tcp] {
            let out = invite_over(t, "sips:srs@192.0.2.1", None);
            assert_eq!(statuses(&out), vec![480], "{t:?}");
            let w = out[0].header("Warning").expect("Warning explains the 480");
            assert!(w.starts_with("399 ") && w.contains("TLS"), "{w}");
        }
    }

    #[test]
    fn tls_calls_get_a_tls_contact() {
        // sips: Request-URI over TLS: accepted, Contact is sips: (RFC 3261 12.1.1).
        let out = invite_over(
            Transport::Tls,
            "sips:srs@192.0.2.1",
            Some("rec.example.com:5061"),
        );
        assert_eq!(statuses(&out), vec![100, 200]);
        assert_eq!(
            out[1].header("Contact"),
            Some("<sips:rec.example.com:5061>")
        );
        assert!(out[1].header("Via").unwrap().starts_with("SIP/2.0/TLS "));
        // sip: Request-URI over TLS: sip: Contact with transport=tls, local address.
        let out = invite_over(Transport::Tls, "sip:srs@192.0.2.1", None);
        assert_eq!(statuses(&out), vec![100, 200]);
        assert_eq!(
            out[1].header("Contact"),
            Some("<sip:192.0.2.1:5060;transport=tls>")
        );
        // Plain transports keep their Contact.
        let out = invite_over(Transport::Udp, "sip:srs@192.0.2.1", None);
        assert_eq!(out[1].header("Contact"), Some("<sip:127.0.0.1:5060>"));
    }

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
    #[allow(clippy::type_complexity)]
    fn rejections() {
        let now = Instant::now();
        let p = peer(Transport::Udp);
        let cases: Vec<(Vec<u8>, u16, Option<(&str, &str)>)> = vec![
            (
                req("REGISTER", "z9hG4bK1", "c", 1, None, "", ""),
                405,
                Some(("Allow", ALLOW)),
            ),
            (
                req("SUBSCRIBE", "z9hG4bK2", "c", 1, None, "", ""),
                405,
                None,
            ),
            (
                req(
                    "INVITE",
                    "z9hG4bK3",
                    "c",
                    1,
                    None,
                    "Content-Type: text/plain\r\n",
                    "hi",
                ),
                415,
                Some((
                    "Accept",
                    "application/sdp, multipart/mixed, application/rs-metadata+xml, application/rs-metadata",
                )),
            ),
            (
                req("INVITE", "z9hG4bK4", "c", 1, None, "Require: 100rel, foo\r\n", ""),
                420,
                Some(("Unsupported", "100rel, foo")),
            ),
            (
                String::from_utf8(req("OPTIONS", "z9hG4bK5", "c", 1, None, "", ""))
                    .unwrap()
                    .replacen("sip:srs@192.0.2.1", "http://x", 1)
                    .into_bytes(),
                416,
                None,
            ),
            (
                req("OPTIONS", "z9hG4bK6", "c", 1, None, "", ""),
                200,
                Some(("Allow", ALLOW)),
            ),
            (
                req("INFO", "z9hG4bK7", "c", 1, None, "", ""),
                481,
                None,
            ),
            (
                req("OPTIONS", "z9hG4bK8", "c", 1, Some("nosuch"), "", ""),
                481,
                None,
            ),
        ];
        for (data, status, hdr) in cases {
            let mut ep = ep();
            ep.handle_receive(now, p, &data);
            let out = drain(&mut ep);
            assert_eq!(statuses(&out), vec![status]);
            assert!(out[0].to_tag().is_some(), "final responses carry a To-tag");
            if let Some((h, v)) = hdr {
                assert_eq!(out[0].header(h), Some(v), "{status}");
            }
            assert!(events(&mut ep).is_empty());
        }
    }

    #[test]
    fn malformed_400_names_problem_or_dropped() {
        let now = Instant::now();
        let p = peer(Transport::Udp);
        let mut ep = ep();
        let bad = String::from_utf8(req("OPTIONS", "z9hG4bK1", "c", 1, None, "", ""))
            .unwrap()
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        ep.handle_receive(now, p, bad.as_bytes());
        let out: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(out.len(), 1);
        let text = String::from_utf8_lossy(&out[0].data);
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request - CSeq Method Mismatch\r\n"),
            "{text}"
        );
        assert!(text.contains("Call-ID: c\r\n"));
        // Missing header → 400 naming it.
        let nocall = String::from_utf8(req("OPTIONS", "z9hG4bK2", "c", 1, None, "", ""))
            .unwrap()
            .replace("Call-ID: c\r\n", "");
        ep.handle_receive(now, p, nocall.as_bytes());
        let m = drain(&mut ep);
        assert_eq!(
            m[0].start,
            StartLine::Response {
                status: 400,
                reason: "Bad Request - Missing Call-ID Header".into(),
                version: "SIP/2.0".into()
            }
        );
        // No Via: nothing can be answered.
        ep.handle_receive(now, p, b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: x\r\n\r\n");
        ep.handle_receive(now, p, b"\x00\x01garbage");
        ep.handle_receive(
            now,
            p,
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(drain(&mut ep).is_empty());
        assert_eq!(ep.stats().responses_dropped, 1);
        assert_eq!(ep.stats().malformed_answered, 2);
        assert!(ep.stats().malformed_dropped >= 2);
        assert_eq!(ep.stats().responses_sent[3], 2);
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
