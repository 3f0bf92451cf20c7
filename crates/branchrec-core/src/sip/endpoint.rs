//! Sans-IO SIP UAS endpoint: ties server transactions ([`super::transaction`], RFC 3261
//! 17.2 with the RFC 6026 Accepted state), dialogs ([`super::dialog`]) and responses
//! ([`super::response`]), and makes the request checks of RFC 3261 8.2.
//!
//! We never send requests. Responses always go back to the peer the request came from
//! (symmetric response routing, same TCP connection), which is what SBCs expect.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dialog::Dialog;
use super::message::{Message, Method, StartLine};
use super::parse;
use super::response::class_index;
use super::transaction::{txn_key, ServerTxn, TxnKey};
use super::{DialogId, TerminationReason, TxnId};
use super::{Refusal, SipError, TagGen};

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
    pub(super) fn reliable(&self) -> bool {
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
}

/// Retry-After (seconds) of the stateless 503 at the transaction cap.
const TXN_CAP_RETRY_AFTER_S: u32 = 5;

/// Methods we implement (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// The UAS endpoint state machine.
#[derive(Debug)]
pub struct Endpoint {
    pub(super) cfg: EndpointConfig,
    pub(super) tags: TagGen,
    pub(super) next_id: u64,
    pub(super) txns: HashMap<TxnId, ServerTxn>,
    pub(super) txn_index: HashMap<TxnKey, TxnId>,
    pub(super) dialogs: HashMap<DialogId, Dialog>,
    pub(super) dialog_index: HashMap<(String, String, String), DialogId>,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) stats: Stats,
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

    pub(super) fn alloc(&mut self) -> u64 {
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
        let refusal = err.refusal(&self.cfg);
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
    pub(super) fn reject(&mut self, now: Instant, id: TxnId, err: SipError) {
        let refusal = err.refusal(&self.cfg);
        // The transaction was just created or is pending, so this cannot fail except for
        // an already-final transaction, which callers exclude; counted if it does.
        let res = self.refuse(now, id, &refusal);
        self.count_failure(res, "refusal");
    }

    /// Count and log a response the endpoint meant to send itself but could not.
    pub(super) fn count_failure(&mut self, res: Result<(), SipError>, what: &'static str) {
        if let Err(e) = res {
            self.stats.respond_failures += 1;
            tracing::warn!(error = %e, what, "SIP endpoint could not send its response");
        }
    }

    /// Refuse a request the app was given in an event (or one the endpoint answers
    /// itself): status, reason phrase and headers come from [`Refusal::response`].
    pub fn refuse(&mut self, now: Instant, txn: TxnId, refusal: &Refusal) -> Result<(), SipError> {
        let r = refusal.response();
        self.respond_inner(now, txn, r.status, &r.reason, r.headers, None)
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
}

/// Helpers shared by the endpoint, transaction, dialog and response tests.
#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) use super::*;
    pub(crate) use crate::sip::parse_datagram;
    pub(crate) use crate::sip::{
        DialogId, Message, Method, SipError, StartLine, TerminationReason, TxnId,
    };
    pub(crate) use std::time::{Duration, Instant};

    pub(crate) const T1: Duration = Duration::from_millis(500);

    pub(crate) fn peer(transport: Transport) -> Peer {
        Peer {
            transport,
            remote: "192.0.2.10:5062".parse().unwrap(),
            local: "192.0.2.1:5060".parse().unwrap(),
            conn: (transport == Transport::Tcp).then_some(3),
        }
    }

    pub(crate) fn ep() -> Endpoint {
        Endpoint::new(EndpointConfig {
            seed: 42,
            ..EndpointConfig::default()
        })
    }

    pub(crate) fn req(
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

    pub(crate) fn sdp_invite(branch: &str, call: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
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

    pub(crate) fn drain(ep: &mut Endpoint) -> Vec<Message> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| parse_datagram(&t.data).expect("our responses parse"))
            .collect()
    }

    pub(crate) fn statuses(msgs: &[Message]) -> Vec<u16> {
        msgs.iter().filter_map(Message::status).collect()
    }

    pub(crate) fn events(ep: &mut Endpoint) -> Vec<Event> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    /// INVITE in, app answers 200; returns (txn, dialog, our To-tag).
    pub(crate) fn establish(ep: &mut Endpoint, now: Instant, p: Peer) -> (TxnId, DialogId, String) {
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
}
