//! The Session Recording Server core (RFC 7866), sans-IO.
//!
//! [`Srs`] owns the SIP [`Endpoint`] and turns SIP dialogs into recording sessions: it
//! splits SIPREC bodies, parses and merges metadata, negotiates SDP and asks the shell
//! for ports. Bytes and time in; bytes to send and [`SrsEvent`]s out. The shell decides
//! whether it can record (ports, storage) and answers [`SrsEvent::Offered`] with
//! [`Srs::accept`] or [`Srs::reject`].

use crate::time::Mono;
use std::collections::HashMap;
use std::net::IpAddr;

use crate::media::srtp::{Secret, SrtpSuite};
use crate::sdp::{self, AnswerParams, Direction, NegotiatedStream, SessionDescription};
use crate::sip::{
    DialogId, Endpoint, Event as SipEvent, Message, Peer, Refusal, SipError, TerminationReason,
    Transmit, TxnId,
};
use crate::siprec::metadata::{self, RecordingMetadata};
use crate::siprec::{channel_map, classify, ChannelAssignment, Classification};

use crate::media::codec::DecoderKind;

/// Encodings we can record (G.729 only in builds with the `g729` feature). Offers are
/// answered with the offered formats among these; see docs/codecs.md. Derived from the
/// codec table ([`crate::media::codec::CODECS`]), in its order.
pub const SUPPORTED_ENCODINGS: &[&str] = crate::media::codec::SUPPORTED_ENCODINGS;

/// Settings of the recording server core.
#[derive(Debug, Clone)]
pub struct SrsConfig {
    /// Address put in `c=` of our answers.
    pub sdp_addr: IpAddr,
    /// `o=` username of our answers.
    pub sdp_username: String,
    /// Seed for SDP session ids (the shell passes randomness; tests pass a constant).
    pub session_id_seed: u64,
    /// Seed of the CSPRNG (ChaCha) that makes our SRTP answer keys: the shell passes 32
    /// bytes from the OS once, tests a constant (the core never reads entropy itself).
    pub srtp_key_seed: [u8; 32],
}

/// Per-call caps on the metadata kept (RFC 7865 documents in INVITE, re-INVITE, UPDATE,
/// INFO): a request whose metadata would go beyond either is refused with
/// [`Refusal::MetadataLimit`] and counted ([`SrsStats::metadata_refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataCaps {
    /// Documents per call (the initial INVITE's included).
    pub max_versions: usize,
    /// Bytes of all documents of a call together.
    pub max_bytes: usize,
}

impl Default for MetadataCaps {
    fn default() -> Self {
        MetadataCaps {
            max_versions: 64,
            max_bytes: 1 << 20,
        }
    }
}

impl MetadataCaps {
    /// Why one more document of `len` bytes would go beyond the caps, after `versions`
    /// documents of `bytes` bytes (`None`: it fits).
    pub fn exceeded(&self, versions: usize, bytes: usize, len: usize) -> Option<String> {
        if versions >= self.max_versions {
            Some(format!(
                "metadata version cap of {} per call reached",
                self.max_versions
            ))
        } else if bytes.saturating_add(len) > self.max_bytes {
            Some(format!(
                "metadata byte cap of {} per call reached",
                self.max_bytes
            ))
        } else {
            None
        }
    }
}

/// One metadata document as received, kept verbatim with its context.
#[derive(Debug, Clone)]
pub struct MetadataVersion {
    /// When it arrived.
    pub received_at: Mono,
    /// `INVITE`, `re-INVITE`, `UPDATE`, ...
    pub sip_method: String,
    /// Content-Type of the metadata part.
    pub content_type: String,
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// `complete` / `partial` when the document says so.
    pub data_mode: Option<String>,
    /// Why it did not parse, if it did not (it is kept anyway).
    pub parse_error: Option<String>,
}

/// What the recording server tells its shell.
#[derive(Debug)]
pub enum SrsEvent {
    /// A new recording session is offered. Answer with [`Srs::accept`] (one port per
    /// entry of `recordable`) or [`Srs::reject`].
    Offered(Box<Offer>),
    /// The SRC acknowledged our answer; media flows.
    Established {
        /// Session.
        call: DialogId,
    },
    /// A re-INVITE or UPDATE changed the media description.
    MediaUpdated {
        /// Session.
        call: DialogId,
        /// Per channel (the order of [`Offer::recordable`]): the stream as now negotiated,
        /// or `None` when the new offer no longer carries that channel's m-line.
        streams: Vec<Option<NegotiatedStream>>,
        /// SIP method that carried the change.
        sip_method: String,
    },
    /// New metadata arrived (in INVITE, re-INVITE, UPDATE or INFO).
    Metadata {
        /// Session.
        call: DialogId,
        /// The document as received.
        version: MetadataVersion,
        /// The session's metadata after merging this document.
        merged: Option<RecordingMetadata>,
        /// Channel ↔ participant mapping after the merge.
        channels: Vec<ChannelAssignment>,
    },
    /// The session ended (BYE, CANCEL, ACK timeout, ...).
    Ended {
        /// Session.
        call: DialogId,
        /// Why, for the log and the catalogue.
        reason: String,
        /// How the SIP dialog ended, when it did not end by the shell's or the SRC's
        /// answer (None: cancelled, answer failed). [`TerminationReason::event_kind`]
        /// names the recording event the shell adds for ends on our side.
        cause: Option<TerminationReason>,
    },
}

/// A new recording session, waiting for ports.
#[derive(Debug)]
pub struct Offer {
    /// Key of the session from now on.
    pub call: DialogId,
    /// SIP Call-ID.
    pub call_id: String,
    /// Who sent it: the transport peer of the INVITE (`ip:port`), never a header value.
    pub src: String,
    /// The authenticated TLS client identity of the INVITE's connection, over TLS.
    pub src_identity: Option<String>,
    /// URI of the INVITE's `From` header (the SRC's identity), when it parses.
    pub from_uri: Option<String>,
    /// Whether it was a SIPREC INVITE (metadata present / `+sip.src`) or plain SDP.
    pub siprec: bool,
    /// Why it is not SIPREC, when it is not.
    pub not_siprec_reason: Option<String>,
    /// Indices of the offered m-lines we can record; one port is needed for each.
    pub recordable: Vec<usize>,
    /// The m-lines as negotiated if every recordable one gets a port.
    pub streams: Vec<NegotiatedStream>,
    /// Metadata from the INVITE, when any.
    pub metadata: Option<MetadataVersion>,
    /// Parsed metadata, when it parsed.
    pub parsed_metadata: Option<RecordingMetadata>,
    /// Channel ↔ participant mapping for the recordable m-lines, channel order.
    pub channels: Vec<ChannelAssignment>,
    /// Recordable m-lines beyond the per-call stream cap, answered with port 0.
    pub streams_over_cap: usize,
    /// Cisco UCM built-in-bridge tags of the `From` header, when this is a BiB leg
    /// (see [`crate::siprec::cisco_bib`]).
    pub bib: Option<crate::siprec::cisco_bib::BibLeg>,
    /// Delayed offer (offerless BiB INVITE): `streams` are what we offer; the real ones
    /// come with the ACK's answer as [`SrsEvent::MediaUpdated`] (`sip_method` "ACK").
    pub delayed_offer: bool,
}

enum Phase {
    /// Waiting for the shell to accept or reject.
    Offered { txn: TxnId },
    /// Answered 2xx, waiting for ACK.
    Answered,
    /// Established.
    Active,
}

struct Session {
    phase: Phase,
    offer: SessionDescription,
    /// Ports per offered m-line (None = rejected with port 0).
    ports: Vec<Option<u16>>,
    session_id: u64,
    session_version: u64,
    last_answer: Option<String>,
    metadata: Option<RecordingMetadata>,
    /// Initial m-line index of each channel.
    recordable: Vec<usize>,
    /// `a=label` of each channel's initial m-line.
    channel_labels: Vec<Option<String>>,
    /// Our port of each channel (set on accept).
    channel_ports: Vec<u16>,
    /// Our SDES answer keys, per (m-line, suite): stable for the dialog.
    srtp_keys: Vec<(usize, SrtpSuite, Secret)>,
    /// Metadata documents kept so far, and their bytes (see [`MetadataCaps`]).
    metadata_versions: usize,
    metadata_bytes: usize,
    /// Our last 2xx carried an offer (delayed-offer INVITE or offerless re-INVITE): the
    /// ACK carries the answer.
    awaiting_ack_answer: bool,
}

/// The recording server core.
pub struct Srs {
    ep: Endpoint,
    cfg: SrsConfig,
    sessions: HashMap<DialogId, Session>,
    events: std::collections::VecDeque<SrsEvent>,
    next_session_id: u64,
    /// Randomness for our SRTP answer keys (a CSPRNG seeded by the shell, once).
    key_rng: rand::rngs::StdRng,
    stats: SrsStats,
    caps: MetadataCaps,
    /// Most streams recorded per call ([`Srs::set_max_streams`]).
    max_streams: usize,
}

/// Streams recorded per call unless [`Srs::set_max_streams`] says otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 4;

/// Counters of the recording server core (the SIP ones are in [`Endpoint::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SrsStats {
    /// Responses (answers and refusals) the endpoint would not send: the transaction was
    /// gone or already answered. Each is also logged.
    pub respond_failures: u64,
    /// Requests refused because their metadata went beyond the call's [`MetadataCaps`].
    pub metadata_refused: u64,
    /// Recordable m-lines answered with port 0 because the offer had more than the
    /// per-call stream cap.
    pub streams_over_cap: u64,
}

impl Srs {
    /// A server core around a SIP endpoint.
    pub fn new(ep: Endpoint, cfg: SrsConfig) -> Self {
        let next_session_id = cfg.session_id_seed;
        let key_rng = rand::SeedableRng::from_seed(cfg.srtp_key_seed);
        Srs {
            ep,
            cfg,
            sessions: HashMap::new(),
            events: Default::default(),
            next_session_id,
            key_rng,
            stats: SrsStats::default(),
            caps: MetadataCaps::default(),
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }

    /// The same server with other metadata caps.
    pub fn with_metadata_caps(mut self, caps: MetadataCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Record at most `n` streams per call (at least 1): recordable m-lines beyond the
    /// first `n` are answered with port 0 (RFC 3264 §6: a declined stream) and get no
    /// channel, port or file space.
    pub fn set_max_streams(&mut self, n: usize) {
        self.max_streams = n.max(1);
    }

    /// Counters.
    pub fn stats(&self) -> &SrsStats {
        &self.stats
    }

    /// Count and log a response the endpoint would not send.
    fn check_sent(&mut self, res: Result<(), SipError>, what: &str) {
        if let Err(e) = res {
            self.stats.respond_failures += 1;
            tracing::warn!(error = %e, what, "could not send SIP response");
        }
    }

    /// Send a refusal on a transaction (status, reason and headers from
    /// [`Refusal::response`]).
    fn refuse(&mut self, now: Mono, txn: TxnId, refusal: Refusal) {
        let res = self.ep.refuse(now, txn, &refusal);
        self.check_sent(res, "refusal");
    }

    /// The SIP endpoint (statistics).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// The TLS client identity of a connection (see [`Endpoint::set_conn_identity`]).
    pub fn set_conn_identity(&mut self, conn: u64, identity: Option<String>) {
        self.ep.set_conn_identity(conn, identity);
    }

    /// Sessions offered or active.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// One datagram or one framed stream message.
    pub fn handle_receive(&mut self, now: Mono, peer: Peer, data: &[u8]) {
        self.ep.handle_receive(now, peer, data);
        self.drain(now);
    }

    /// An already framed message (TCP).
    pub fn handle_message(&mut self, now: Mono, peer: Peer, msg: Message) {
        self.ep.handle_message(now, peer, msg);
        self.drain(now);
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Mono) {
        self.ep.handle_timeout(now);
        self.drain(now);
    }

    /// When to call [`Srs::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.ep.poll_timeout()
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ep.poll_transmit()
    }

    /// Events for the shell.
    pub fn poll_event(&mut self) -> Option<SrsEvent> {
        self.events.pop_front()
    }

    /// Accept an offered session: `ports[i]` is the local port for `offer.recordable[i]`.
    pub fn accept(&mut self, now: Mono, call: DialogId, ports: &[u16]) {
        let Some(s) = self.sessions.get_mut(&call) else {
            return; // cancelled meanwhile: the shell sees Ended and frees the ports
        };
        let Phase::Offered { txn } = s.phase else {
            return;
        };
        s.channel_ports = ports.to_vec();
        s.ports = ports_for_offer(s).0;
        match answer_for(&self.cfg, s, &mut self.key_rng) {
            Ok((text, _streams)) => {
                s.last_answer = Some(text.clone());
                s.phase = Phase::Answered;
                let res = self.ep.respond(
                    now,
                    txn,
                    200,
                    "OK",
                    vec![],
                    Some(("application/sdp".into(), text.into_bytes())),
                );
                self.check_sent(res, "200 OK");
            }
            Err(e) => {
                self.refuse(now, txn, Refusal::NotAcceptableHere(e.to_string()));
                self.sessions.remove(&call);
                self.events.push_back(SrsEvent::Ended {
                    call,
                    reason: format!("answer failed: {e}"),
                    cause: None,
                });
            }
        }
        self.drain(now);
    }

    /// Refuse an offered session (usually [`Refusal::CannotRecord`]: 503 + Retry-After
    /// when the box cannot record now).
    pub fn reject(&mut self, now: Mono, call: DialogId, refusal: Refusal) {
        if let Some(Session {
            phase: Phase::Offered { txn },
            ..
        }) = self.sessions.get(&call)
        {
            let txn = *txn;
            self.refuse(now, txn, refusal);
            self.sessions.remove(&call);
        }
        self.drain(now);
    }

    fn drain(&mut self, now: Mono) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                SipEvent::Invite {
                    txn,
                    dialog,
                    request,
                    initial,
                } => {
                    if initial {
                        self.on_initial_invite(now, txn, dialog, request);
                    } else {
                        self.on_reoffer(now, txn, dialog, request, "re-INVITE");
                    }
                }
                SipEvent::InDialogRequest {
                    txn,
                    dialog,
                    request,
                } => {
                    let method = request
                        .method()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default();
                    self.on_reoffer(now, txn, dialog, request, &method);
                }
                SipEvent::Ack { dialog, request } => {
                    self.on_ack_answer(dialog, &request);
                    if let Some(s) = self.sessions.get_mut(&dialog) {
                        if matches!(s.phase, Phase::Answered) {
                            s.phase = Phase::Active;
                            self.events
                                .push_back(SrsEvent::Established { call: dialog });
                        }
                    }
                }
                SipEvent::Cancelled { dialog } => {
                    if self.sessions.remove(&dialog).is_some() {
                        self.events.push_back(SrsEvent::Ended {
                            call: dialog,
                            reason: "cancelled".into(),
                            cause: None,
                        });
                    }
                }
                SipEvent::Terminated { dialog, reason } => {
                    if self.sessions.remove(&dialog).is_some() {
                        self.events.push_back(SrsEvent::Ended {
                            call: dialog,
                            reason: format!("{reason:?}"),
                            cause: Some(reason),
                        });
                    }
                }
            }
        }
    }

    fn on_initial_invite(&mut self, now: Mono, txn: TxnId, dialog: DialogId, req: Message) {
        let ct = req.header("Content-Type").unwrap_or("").to_string();
        let require: Vec<&str> = req.require();
        let supported: Vec<&str> = req.supported();
        let contact_src = req
            .header_all("Contact")
            .iter()
            .any(|c| contact_marks_src(c));
        let bib = req
            .header("From")
            .and_then(crate::siprec::cisco_bib::BibLeg::from_header);
        let (body, siprec, not_reason) = if req.body.is_empty() && bib.is_some() {
            // Cisco BiB leg with delayed offer: no body at all.
            let empty = crate::siprec::SiprecBody {
                sdp: None,
                metadata: None,
                other: vec![],
            };
            let why = "Cisco built-in-bridge leg (delayed offer)".to_string();
            (empty, false, Some(why))
        } else {
            match classify(&ct, &req.body, &require, &supported, contact_src) {
                Classification::Siprec(b) => (b, true, None),
                Classification::NotSiprec { reason } => {
                    match crate::siprec::split_body(&ct, &req.body) {
                        Ok(b) => (b, false, Some(reason)),
                        Err(e) => {
                            self.refuse(now, txn, Refusal::BadBody(e.to_string()));
                            return;
                        }
                    }
                }
                Classification::Invalid(e) => {
                    self.refuse(now, txn, Refusal::BadBody(e.to_string()));
                    return;
                }
            }
        };
        let delayed_offer = body.sdp.is_none() && bib.is_some();
        let virtual_offer;
        let sdp_text = match body.sdp.as_deref() {
            Some(t) => t,
            None if delayed_offer => {
                // Cisco BiB delayed offer: we offer one receive-only audio stream with
                // every encoding we record; UCM's ACK answers with the phone's choice.
                virtual_offer = delayed_offer_template();
                virtual_offer.as_str()
            }
            None => {
                // Offerless INVITE: a recording server needs the SRC's offer to know the
                // streams (only Cisco BiB legs are recorded by delayed offer).
                self.refuse(now, txn, Refusal::NoOffer);
                return;
            }
        };
        let offer = match sdp::parse(sdp_text) {
            Ok(o) => o,
            Err(e) => {
                self.refuse(now, txn, Refusal::BadBody(format!("SDP: {e}")));
                return;
            }
        };
        let mut recordable = recordable_mlines(&offer);
        if recordable.is_empty() {
            let why = "no audio stream with a supported codec";
            self.refuse(now, txn, Refusal::NotAcceptableHere(why.into()));
            return;
        }
        if let Some(part) = &body.metadata {
            if let Some(why) = self.caps.exceeded(0, 0, part.bytes.len()) {
                self.stats.metadata_refused += 1;
                self.refuse(now, txn, Refusal::MetadataLimit(why));
                return;
            }
        }
        let meta_bytes = body.metadata.as_ref().map_or(0, |p| p.bytes.len());
        // One peer must not take every port (and write silence for each) with one
        // INVITE of hundreds of m-lines: the first `max_streams` are recorded.
        let over_cap = recordable.len().saturating_sub(self.max_streams);
        if over_cap > 0 {
            recordable.truncate(self.max_streams);
            self.stats.streams_over_cap += over_cap as u64;
        }
        let (version, parsed) = match &body.metadata {
            Some(part) => {
                let (parsed, err) = match metadata::parse(&part.bytes) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let v = MetadataVersion {
                    received_at: now,
                    sip_method: "INVITE".into(),
                    content_type: part.content_type.clone(),
                    raw: part.bytes.clone(),
                    data_mode: parsed.as_ref().and_then(data_mode_str),
                    parse_error: err,
                };
                (Some(v), parsed)
            }
            None => (None, None),
        };
        let channels = channels_for(
            parsed.as_ref(),
            &labels_of(&offer.labels(), &recordable),
            &recordable,
        );
        let session_id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        let offer_labels = offer.labels();
        let mut s = Session {
            phase: Phase::Offered { txn },
            offer,
            ports: vec![],
            session_id,
            session_version: 1,
            last_answer: None,
            metadata: parsed.clone(),
            recordable: recordable.clone(),
            channel_labels: labels_of(&offer_labels, &recordable),
            channel_ports: vec![],
            srtp_keys: vec![],
            metadata_versions: usize::from(version.is_some()),
            metadata_bytes: meta_bytes,
            awaiting_ack_answer: delayed_offer,
        };
        // Negotiate with placeholder ports to tell the shell what each stream carries.
        s.ports = ports_for_offer(&s).0;
        let streams = match answer_for(&self.cfg, &mut s, &mut self.key_rng) {
            // Delayed offer: the peer's address is not known before the ACK (the template
            // carries a TEST-NET placeholder that must never be used as a source).
            Ok((_, mut streams)) if delayed_offer => {
                streams.iter_mut().for_each(|st| st.remote = None);
                streams
            }
            Ok((_, streams)) => streams,
            Err(e) => {
                self.refuse(now, txn, Refusal::NotAcceptableHere(e.to_string()));
                return;
            }
        };
        let call_id = req.call_id().unwrap_or_default().to_string();
        // The facts about the SRC come from the socket (issue #12 finding 6): its Via (and
        // `received=`) is whatever it chose to write.
        let (src, src_identity) = match self.ep.dialog_peer(dialog) {
            Some((p, id)) => (p.remote.to_string(), id.map(str::to_string)),
            None => (String::new(), None),
        };
        self.sessions.insert(dialog, s);
        self.events.push_back(SrsEvent::Offered(Box::new(Offer {
            call: dialog,
            call_id,
            src,
            src_identity,
            from_uri: req.from().ok().map(|f| f.uri.raw),
            siprec,
            not_siprec_reason: not_reason,
            recordable,
            streams,
            metadata: version,
            parsed_metadata: parsed,
            channels,
            streams_over_cap: over_cap,
            bib,
            delayed_offer,
        })));
    }

    /// The ACK of a 2xx that carried our offer: its SDP is the answer. The negotiated
    /// streams follow from it as from an offer (our formats intersected with the peer's
    /// choice, its direction mirrored) and go to the shell as a media update.
    fn on_ack_answer(&mut self, dialog: DialogId, ack: &Message) {
        let Some(s) = self.sessions.get_mut(&dialog) else {
            return;
        };
        if !std::mem::take(&mut s.awaiting_ack_answer) {
            return;
        }
        let ct = ack.header("Content-Type").unwrap_or("").to_string();
        let text = match crate::siprec::split_body(&ct, &ack.body) {
            Ok(b) => b.sdp,
            Err(_) => None,
        };
        let Some(answer) = text.and_then(|t| sdp::parse(&t).ok()) else {
            tracing::warn!("ACK without a usable SDP answer to our offer: nothing recorded");
            let streams = vec![None; s.channel_ports.len()];
            self.events.push_back(SrsEvent::MediaUpdated {
                call: dialog,
                streams,
                sip_method: "ACK".into(),
            });
            return;
        };
        let old_offer = std::mem::replace(&mut s.offer, answer);
        let (ports, binding) = ports_for_offer(s);
        let old_ports = std::mem::replace(&mut s.ports, ports);
        let version = s.session_version;
        let keys = s.srtp_keys.clone();
        match answer_for(&self.cfg, s, &mut self.key_rng) {
            Ok((_, streams)) => {
                let streams = binding
                    .iter()
                    .map(|m| m.and_then(|m| streams.get(m).cloned()))
                    .collect();
                self.events.push_back(SrsEvent::MediaUpdated {
                    call: dialog,
                    streams,
                    sip_method: "ACK".into(),
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SDP answer in ACK does not fit our offer");
                s.offer = old_offer;
                s.ports = old_ports;
                let streams = vec![None; s.channel_ports.len()];
                self.events.push_back(SrsEvent::MediaUpdated {
                    call: dialog,
                    streams,
                    sip_method: "ACK".into(),
                });
            }
        }
        // The answer text is never sent; our description stays the one we offered.
        s.session_version = version;
        s.srtp_keys = keys;
    }

    /// re-INVITE, UPDATE, INFO and other in-dialog requests that may carry SDP and/or metadata.
    fn on_reoffer(&mut self, now: Mono, txn: TxnId, dialog: DialogId, req: Message, m: &str) {
        let Some(s) = self.sessions.get_mut(&dialog) else {
            self.refuse(now, txn, Refusal::NoSuchDialog);
            return;
        };
        if matches!(s.phase, Phase::Offered { .. }) {
            // The SRC must wait for our answer to the initial INVITE.
            self.refuse(now, txn, Refusal::RequestPending);
            return;
        }
        let ct = req.header("Content-Type").unwrap_or("").to_string();
        let body = if req.body.is_empty() {
            None
        } else {
            match crate::siprec::split_body(&ct, &req.body) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.refuse(now, txn, Refusal::BadBody(e.to_string()));
                    return;
                }
            }
        };
        if let Some(part) = body.as_ref().and_then(|b| b.metadata.as_ref()) {
            let len = part.bytes.len();
            if let Some(why) = self
                .caps
                .exceeded(s.metadata_versions, s.metadata_bytes, len)
            {
                self.stats.metadata_refused += 1;
                tracing::warn!(
                    method = m,
                    bytes = len,
                    versions = s.metadata_versions,
                    "{why}: request refused"
                );
                self.refuse(now, txn, Refusal::MetadataLimit(why));
                return;
            }
        }
        let is_invite = m == "re-INVITE";
        let sdp_text = body.as_ref().and_then(|b| b.sdp.clone());
        let mut answer: Option<String> = None;
        if let Some(text) = sdp_text {
            match sdp::parse(&text) {
                Ok(new_offer) => {
                    // m-lines are matched to channels by label (index as fallback); some SRCs
                    // drop a stream's m-line during hold, and streams added after the
                    // initial offer are answered with port 0 (not recorded).
                    let old_offer = std::mem::replace(&mut s.offer, new_offer);
                    let (ports, binding) = ports_for_offer(s);
                    let old_ports = std::mem::replace(&mut s.ports, ports);
                    match answer_for(&self.cfg, s, &mut self.key_rng) {
                        Ok((text, streams)) => {
                            let streams: Vec<Option<NegotiatedStream>> = binding
                                .iter()
                                .map(|m| m.and_then(|m| streams.get(m).cloned()))
                                .collect();
                            if s.last_answer.as_deref() != Some(&text) {
                                s.session_version += 1;
                                if let Ok((t2, _)) = answer_for(&self.cfg, s, &mut self.key_rng) {
                                    s.last_answer = Some(t2);
                                }
                            }
                            answer = s.last_answer.clone();
                            self.events.push_back(SrsEvent::MediaUpdated {
                                call: dialog,
                                streams,
                                sip_method: m.to_string(),
                            });
                        }
                        Err(e) => {
                            s.offer = old_offer;
                            s.ports = old_ports;
                            self.refuse(now, txn, Refusal::NotAcceptableHere(e.to_string()));
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.refuse(now, txn, Refusal::BadBody(format!("SDP: {e}")));
                    return;
                }
            }
        } else if is_invite {
            // Offerless re-INVITE: our current description is the offer, the ACK answers.
            answer = s.last_answer.clone();
            s.awaiting_ack_answer = true;
        }
        if let Some(part) = body.as_ref().and_then(|b| b.metadata.clone()) {
            s.metadata_versions += 1;
            s.metadata_bytes += part.bytes.len();
            let (parsed, err) = match metadata::parse(&part.bytes) {
                Ok(md) => (Some(md), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let version = MetadataVersion {
                received_at: now,
                sip_method: m.to_string(),
                content_type: part.content_type.clone(),
                raw: part.bytes.clone(),
                data_mode: parsed.as_ref().and_then(data_mode_str),
                parse_error: err,
            };
            if let Some(update) = parsed {
                match &mut s.metadata {
                    Some(cur) => cur.merge(update),
                    None => s.metadata = Some(update),
                }
            }
            let channels = channels_for(s.metadata.as_ref(), &s.channel_labels, &s.recordable);
            self.events.push_back(SrsEvent::Metadata {
                call: dialog,
                version,
                merged: s.metadata.clone(),
                channels,
            });
        }
        let body_out = answer.map(|a| ("application/sdp".to_string(), a.into_bytes()));
        let res = self.ep.respond(now, txn, 200, "OK", vec![], body_out);
        self.check_sent(res, m);
    }
}

/// RFC 7866 `+sip.src` feature tag, or the bare `;src` parameter BroadWorks, Webex and
/// AudioCodes send.
fn contact_marks_src(contact: &str) -> bool {
    let c = contact.to_ascii_lowercase();
    c.contains("+sip.src")
        || c.split(';').skip(1).any(|p| {
            let name = p.split(['=', '>', ',', ' ']).next().unwrap_or("");
            name.trim() == "src"
        })
}

/// Channel ↔ participant mapping of the recorded m-lines, in channel order.
fn channels_for(
    meta: Option<&RecordingMetadata>,
    channel_labels: &[Option<String>],
    recordable: &[usize],
) -> Vec<ChannelAssignment> {
    let empty;
    let meta = match meta {
        Some(m) => m,
        None => {
            empty = RecordingMetadata {
                namespace: metadata::Namespace::Other(String::new()),
                data_mode: None,
                recording_id: None,
                groups: vec![],
                sessions: vec![],
                participants: vec![],
                streams: vec![],
                session_recording_assocs: vec![],
                participant_session_assocs: vec![],
                participant_stream_assocs: vec![],
            };
            &empty
        }
    };
    let mut out = channel_map(meta, channel_labels);
    for (c, m) in out.iter_mut().zip(recordable) {
        c.mline = *m;
    }
    out
}

fn labels_of(all: &[Option<String>], idx: &[usize]) -> Vec<Option<String>> {
    idx.iter().map(|i| all.get(*i).cloned().flatten()).collect()
}

/// Ports to answer the session's current offer with (per m-line), and which m-line now
/// carries each channel.
fn ports_for_offer(s: &Session) -> (Vec<Option<u16>>, Vec<Option<usize>>) {
    let labels = s.offer.labels();
    let mut binding: Vec<Option<usize>> = vec![None; s.channel_labels.len()];
    let mut taken = vec![false; labels.len()];
    // 1. by label
    for (ch, cl) in s.channel_labels.iter().enumerate() {
        let Some(cl) = cl else { continue };
        if let Some(j) = labels
            .iter()
            .enumerate()
            .position(|(j, l)| !taken[j] && l.as_deref() == Some(cl.as_str()))
        {
            taken[j] = true;
            binding[ch] = Some(j);
        }
    }
    // 2. by initial m-line position, for m-lines without a label match
    for (ch, m) in s.recordable.iter().enumerate() {
        if binding[ch].is_some() {
            continue;
        }
        let label_elsewhere = s.channel_labels[ch]
            .as_deref()
            .is_some_and(|cl| labels.iter().any(|l| l.as_deref() == Some(cl)));
        if !label_elsewhere && *m < labels.len() && !taken[*m] && labels[*m].is_none() {
            taken[*m] = true;
            binding[ch] = Some(*m);
        }
    }
    let recordable_now = recordable_mlines(&s.offer);
    let mut ports = vec![None; labels.len()];
    for (ch, b) in binding.iter().enumerate() {
        if let (Some(j), Some(p)) = (b, s.channel_ports.get(ch)) {
            if recordable_now.contains(j) || s.offer.media.get(*j).is_some_and(|m| m.port != 0) {
                ports[*j] = Some(*p);
            }
        }
    }
    // Before accept (no ports yet), negotiate with a placeholder to learn the formats.
    if s.channel_ports.is_empty() {
        for j in &s.recordable {
            if let Some(slot) = ports.get_mut(*j) {
                *slot = Some(9);
            }
        }
    }
    (ports, binding)
}

fn data_mode_str(m: &RecordingMetadata) -> Option<String> {
    m.data_mode
        .as_ref()
        .map(|d| format!("{d:?}").to_ascii_lowercase())
}

/// Offered m-lines we can record: audio, a port, at least one supported encoding.
pub fn recordable_mlines(offer: &SessionDescription) -> Vec<usize> {
    recordable_mlines_with(offer, DecoderKind::G729.available())
}

/// [`recordable_mlines`] for a build with (`g729`) or without the G.729 decoder. Without
/// it a G.729-only offer has nothing recordable and is answered 488.
///
/// An offer whose every recordable audio m-line has port 0 (an SRC that starts the
/// recording session paused by disabling its streams) keeps those m-lines: they become
/// channels that are on hold, answered with port 0 (RFC 3264 §6), and a later offer with a
/// port activates them. A port-0 line beside a live one stays unrecorded.
pub fn recordable_mlines_with(offer: &SessionDescription, g729: bool) -> Vec<usize> {
    let live = recordable_audio(offer, g729, false);
    if live.is_empty() {
        recordable_audio(offer, g729, true)
    } else {
        live
    }
}

fn recordable_audio(offer: &SessionDescription, g729: bool, port0: bool) -> Vec<usize> {
    offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.media.eq_ignore_ascii_case("audio")
                && (m.port != 0 || port0)
                && (!sdp::is_sdes_proto(&m.proto) || sdp::select_crypto(m).is_ok())
                && m.codecs().iter().any(|c| {
                    DecoderKind::from_sdp(&c.encoding, c.clock_rate)
                        .is_some_and(|k| k != DecoderKind::G729 || g729)
                })
        })
        .map(|(i, _)| i)
        .collect()
}

fn answer_for(
    cfg: &SrsConfig,
    s: &mut Session,
    rng: &mut rand::rngs::StdRng,
) -> Result<(String, Vec<NegotiatedStream>), sdp::SdpError> {
    let params = AnswerParams {
        local_addr: cfg.sdp_addr,
        ports: s.ports.clone(),
        session_id: s.session_id,
        session_version: s.session_version,
        username: cfg.sdp_username.clone(),
        supported: SUPPORTED_ENCODINGS,
    };
    let keys = &mut s.srtp_keys;
    let a = sdp::build_answer_with_keys(&s.offer, &params, &mut |m, suite| {
        if let Some((_, _, k)) = keys.iter().find(|(km, ks, _)| *km == m && *ks == suite) {
            return k.clone();
        }
        let k = sdp::random_key(rng, suite);
        keys.push((m, suite, k.clone()));
        k
    })?;
    Ok((a.sdp.to_string(), a.streams))
}

/// The offer we answer ourselves to make our offer for a delayed-offer (Cisco BiB)
/// INVITE: one audio stream, every encoding we record at its usual payload type, the
/// peer sending only, so that our description (the "answer" to it) is `a=recvonly`. Its
/// address is TEST-NET-1 (RFC 5737), not `0.0.0.0`, which would read as hold.
fn delayed_offer_template() -> String {
    let mut m = String::from("m=audio 9 RTP/AVP");
    let mut attrs = String::new();
    let table: &[(&str, u8, &str)] = &[
        ("PCMU", 0, "PCMU/8000"),
        ("PCMA", 8, "PCMA/8000"),
        ("G722", 9, "G722/8000"),
        ("G729", 18, "G729/8000"),
        ("opus", 114, "opus/48000/2"),
        ("telephone-event", 101, "telephone-event/8000"),
    ];
    for (enc, pt, map) in table {
        if !SUPPORTED_ENCODINGS
            .iter()
            .any(|e| e.eq_ignore_ascii_case(enc))
        {
            continue;
        }
        if *enc == "G729" && !DecoderKind::G729.available() {
            continue;
        }
        m.push_str(&format!(" {pt}"));
        attrs.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
        if *enc == "telephone-event" {
            attrs.push_str("a=fmtp:101 0-15\r\n");
        }
    }
    format!(
        "v=0\r\no=- 0 0 IN IP4 192.0.2.0\r\ns=-\r\nc=IN IP4 192.0.2.0\r\nt=0 0\r\n{m}\r\n{attrs}a=sendonly\r\n"
    )
}

/// Whether a negotiated stream currently carries no media towards us.
pub fn stream_on_hold(s: &NegotiatedStream) -> bool {
    s.port.is_none() || matches!(s.direction, Direction::Inactive)
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    fn offer(m: &str) -> SessionDescription {
        let text =
            format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}");
        sdp::parse(&text).expect("valid SDP")
    }

    #[test]
    fn g729_only_offer_is_not_recordable_without_the_decoder() {
        let o = offer(
            "m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=sendonly\r\n",
        );
        // Without the feature: nothing recordable → the INVITE is answered 488.
        assert!(recordable_mlines_with(&o, false).is_empty());
        assert_eq!(recordable_mlines_with(&o, true), vec![0]);
        assert_eq!(Refusal::NotAcceptableHere("x".into()).status(), 488);
    }

    #[test]
    fn wideband_offers_are_recordable_and_answered_with_fmtp() {
        let o = offer(
            "m=audio 4000 RTP/AVP 18 9 111 101\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=yes\r\n\
             a=rtpmap:9 G722/8000\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n",
        );
        assert_eq!(recordable_mlines_with(&o, false), vec![0]);
        let params = sdp::AnswerParams {
            local_addr: "127.0.0.1".parse().unwrap(),
            ports: vec![Some(30000)],
            session_id: 1,
            session_version: 1,
            username: "-".into(),
            supported: SUPPORTED_ENCODINGS,
        };
        let a = sdp::build_answer(
            &o,
            &params,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
        )
        .unwrap();
        let text = a.sdp.to_string();
        let names: Vec<&str> = a.streams[0]
            .formats
            .iter()
            .map(|f| f.encoding.as_str())
            .collect();
        if cfg!(feature = "g729") {
            assert_eq!(names, ["G729", "G722", "opus", "telephone-event"]);
            assert!(text.contains("a=fmtp:18 annexb=yes"), "{text}");
        } else {
            assert_eq!(names, ["G722", "opus", "telephone-event"]);
            assert!(!text.contains("G729"), "{text}");
        }
        assert!(text.contains("a=rtpmap:111 opus/48000/2"), "{text}");
        assert!(text.contains("a=fmtp:111 useinbandfec=1"), "{text}");
        // 16 kHz recording: a wideband codec was accepted.
        assert_eq!(
            crate::media::codec::recording_rate(
                a.streams[0]
                    .formats
                    .iter()
                    .map(|f| (f.encoding.as_str(), f.clock_rate))
            ),
            16000
        );
        assert_eq!(crate::media::codec::recording_rate([]), 8000);
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn metadata_caps_count_versions_and_bytes() {
        let caps = MetadataCaps {
            max_versions: 3,
            max_bytes: 1000,
        };
        assert_eq!(caps.exceeded(0, 0, 1000), None);
        assert_eq!(caps.exceeded(2, 500, 500), None);
        let v = caps.exceeded(3, 0, 1).unwrap();
        assert_eq!(v, "metadata version cap of 3 per call reached");
        let b = caps.exceeded(1, 600, 401).unwrap();
        assert_eq!(b, "metadata byte cap of 1000 per call reached");
        assert_eq!(
            Refusal::MetadataLimit(b).response().reason,
            "Forbidden (metadata byte cap of 1000 per call reached)"
        );
        assert_eq!(MetadataCaps::default().max_versions, 64);
        assert_eq!(MetadataCaps::default().max_bytes, 1 << 20);
    }
}
