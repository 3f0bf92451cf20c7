//! Follows calls from the SIP packets seen on a mirror port and binds RTP flows to them.
//!
//! Sans-IO: SIP messages and UDP flows with their capture time go in; [`TrackerEvent`]s
//! come out, and [`CallTracker::classify`] says which call and channel an RTP datagram
//! belongs to. Channel 0 carries what the caller sends (RTP towards the callee's SDP
//! address, or from the caller's own), channel 1 what the callee sends; with several
//! audio m-lines, channel `2i` / `2i + 1` carry the caller's / callee's `i`-th stream.
//! SDES keys (`a=crypto`) go with the channel of the party that sent them; SIP over TLS
//! becomes an `encrypted_signalling` call per connection; a mirrored SIPREC session is
//! recorded as the original call; RTP without SDP is detected when enabled
//! (`unsignalled`). See `docs/capture.md`.
//!
//! A dialog is keyed by Call-ID; the caller is the sender of the initial INVITE (its
//! From tag), the callee answers with its To tag. Every SDP (offer or answer, in INVITE,
//! 18x, 200, ACK, PRACK, UPDATE, re-INVITE) updates the media address and payload types
//! of the party that sent it. A call picked up mid-way (no initial INVITE seen: a
//! re-INVITE, UPDATE or 200 with SDP starts it) is recorded as best the packets allow
//! and flagged; a call without BYE ends on media timeout, also flagged.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Mono;

use crate::media::{SourceGate, SourcePolicy, SourceVerdict, SrtpPolicy};
use crate::sdp::{CryptoAttr, Direction, PayloadFormat};
use crate::sip::{Message, Method};

/// Identifies a tracked call for the life of the tracker.
pub type CallNo = u64;

/// Simple record/skip rules: glob patterns (`*` matches any run of characters) matched
/// against the caller's and callee's address of record (`sip:1234@host`, `tel:+4930…`)
/// and their user part alone (`1234`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRules {
    /// If not empty, only calls where a party matches one of these are recorded.
    pub allow: Vec<String>,
    /// Calls where a party matches one of these are never recorded (wins over allow).
    pub deny: Vec<String>,
}

/// Glob match with `*` only, case-insensitive.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.to_lowercase().chars().collect();
    let t: Vec<char> = s.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p.get(pi) != Some(&'*') && p.get(pi) == t.get(ti) {
            pi += 1;
            ti += 1;
        } else if p.get(pi) == Some(&'*') {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while p.get(pi) == Some(&'*') {
        pi += 1;
    }
    pi == p.len()
}

impl CallRules {
    /// Whether a call between these parties is recorded.
    pub fn allows(&self, parties: &[&Party]) -> bool {
        let keys: Vec<String> = parties
            .iter()
            .filter_map(|p| p.aor.as_deref())
            .flat_map(|a| {
                let user = a
                    .split_once(':')
                    .map(|(_, r)| r.split(['@', ';']).next().unwrap_or(r).to_string());
                std::iter::once(a.to_string()).chain(user)
            })
            .collect();
        let hit = |pats: &[String]| pats.iter().any(|p| keys.iter().any(|k| glob_match(p, k)));
        if hit(&self.deny) {
            return false;
        }
        self.allow.is_empty() || hit(&self.allow)
    }
}

/// Limits and timers.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// A recorded call without RTP for this long is closed (no BYE seen).
    pub media_timeout: Duration,
    /// A call that is neither answered nor carrying media is forgotten after this long.
    pub setup_timeout: Duration,
    /// Most calls followed at once (recorded or not); new dialogs beyond are ignored.
    pub max_calls: usize,
    /// Which calls to record.
    pub rules: CallRules,
    /// Detect RTP flows that no SDP announced (`unsignalled` recordings; off by default).
    pub unsignalled: bool,
    /// RTP flows declared by the operator (e.g. `import-pcap --srtp-key`): recorded as
    /// `unsignalled` even with detection off, decrypted with the given keys.
    pub declared: Vec<DeclaredFlow>,
}

/// An RTP flow the operator names: what `sender` sends is recorded (as `unsignalled`
/// when no SDP binds it), SRTP-protected with `srtp` if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredFlow {
    /// The sending endpoint (IP and port).
    pub sender: SocketAddr,
    /// Its SRTP keys, `None` for plain RTP.
    pub srtp: Option<SrtpPolicy>,
}

/// Most audio streams (m-lines) per party recorded in one call: 2 × this many channels.
pub const MAX_STREAMS: usize = 4;

/// What a tracked call was found from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A SIP dialog in plain signalling (UDP or TCP).
    Sip,
    /// RTP without SDP: no participants; channel 0 is the flow seen first, channel 1
    /// its reverse (same two addresses, swapped).
    Unsignalled,
    /// SIP over TLS (a TLS connection to or from port 5061): no Call-ID, no SDP, no keys,
    /// so no audio; catalogued so the call is not silently missing.
    EncryptedSignalling,
    /// A SIPREC session (SRC → a third-party SRS) seen on the mirror: recorded as the
    /// original call, one channel per recorded stream (m-line `i` of the SRC's offer →
    /// channel `i`), parties from the metadata (the participants heard on m-lines 0
    /// and 1).
    MirroredSiprec,
}

/// The SIP-over-TLS port: TCP payload that is a TLS record on it is encrypted signalling.
pub const SIPS_PORT: u16 = 5061;

/// Whether a TCP payload between `src` and `dst` is TLS carrying SIP: a TLS record
/// (content type 20..=23, version 3.x) with port 5061 on either side, or a ClientHello
/// to/from port 5060 (TLS on the plain SIP port).
pub fn is_sip_tls(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
    let record = matches!(payload, [20..=23, 3, 0..=4, ..]);
    let hello = matches!(payload, [22, 3, 0..=4, _, _, 1, ..]);
    let port = |p: u16| src.port() == p || dst.port() == p;
    (record && port(SIPS_PORT)) || (hello && port(5060))
}

/// Consecutive packets a flow must show before it is taken for RTP without SDP.
pub const UNSIGNALLED_PACKETS: u32 = 8;
/// Most flows watched at once by the detector.
const MAX_CANDIDATES: usize = 4096;

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            media_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(300),
            max_calls: 10_000,
            rules: CallRules::default(),
            unsignalled: false,
            declared: Vec::new(),
        }
    }
}

/// A party of the call as the signalling names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Party {
    /// Display name.
    pub name: Option<String>,
    /// Address of record (URI as written).
    pub aor: Option<String>,
}

/// The media one party asked to receive (its SDP's first audio m-line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyMedia {
    /// Where it receives RTP (`None` on hold with 0.0.0.0 / port 0).
    pub addr: Option<SocketAddr>,
    /// Payload formats of the m-line.
    pub formats: Vec<PayloadFormat>,
    /// Its direction attribute.
    pub direction: Direction,
    /// The m-line's transport is SRTP (`RTP/SAVP`, `RTP/SAVPF`).
    pub srtp: bool,
    /// Its usable SDES `a=crypto` lines (RFC 4568), in order: the keys this party
    /// protects what it *sends* with.
    pub crypto: Vec<CryptoAttr>,
    /// Its `a=label` (ties a SIPREC stream to its metadata).
    pub label: Option<String>,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackerEvent {
    /// Start recording a call (first RTP or answer seen).
    Start {
        /// The call.
        call: CallNo,
        /// Capture time of the start (t = 0 of the recording).
        at: Mono,
        /// SIP Call-ID.
        call_id: String,
        /// Source of the first signalling packet seen.
        sip_src: SocketAddr,
        /// Caller (channel 0) and callee (channel 1).
        parties: [Party; 2],
        /// Payload formats per channel (what each channel's RTP may carry). There are
        /// two channels per audio stream (m-line): channel `2i` is what the caller sends
        /// on its `i`-th audio m-line, `2i + 1` what the callee sends on its `i`-th; the
        /// count is fixed at the start ([`MAX_STREAMS`] at most).
        formats: Vec<Vec<PayloadFormat>>,
        /// Per channel: the sender put the stream on hold.
        hold: Vec<bool>,
        /// Per channel: the SRTP keys its sender protects its RTP with (from the
        /// sender's own `a=crypto`, the tag the answer chose), `None` for plain RTP.
        srtp: Vec<Option<SrtpPolicy>>,
        /// What kind of call: SIP dialog, RTP without SDP, or encrypted signalling.
        kind: CallKind,
    },
    /// New SDP for a recorded call (re-INVITE, UPDATE, late answer).
    Media {
        /// The call.
        call: CallNo,
        /// Capture time.
        at: Mono,
        /// Payload formats per channel (as many as at the start).
        formats: Vec<Vec<PayloadFormat>>,
        /// Hold state per channel.
        hold: Vec<bool>,
        /// SRTP keys per channel (see [`TrackerEvent::Start`]).
        srtp: Vec<Option<SrtpPolicy>>,
    },
    /// Participants learned late (P-Asserted-Identity in a response).
    Parties {
        /// The call.
        call: CallNo,
        /// Caller and callee.
        parties: [Party; 2],
    },
    /// Something about the call's signalling worth keeping (missing INVITE, …).
    Flag {
        /// The call.
        call: CallNo,
        /// Capture time.
        at: Mono,
        /// Short machine-readable kind, e.g. `signalling_incomplete`.
        kind: &'static str,
        /// Human-readable detail.
        detail: String,
    },
    /// Stop recording.
    End {
        /// The call.
        call: CallNo,
        /// Capture time of the end.
        at: Mono,
        /// Why.
        reason: String,
    },
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    /// SIP messages handled.
    pub sip_messages: u64,
    /// INVITE dialogs seen.
    pub calls_seen: u64,
    /// Calls recorded (Start emitted).
    pub calls_recorded: u64,
    /// Calls skipped by the rules.
    pub calls_denied: u64,
    /// Calls started from incomplete signalling.
    pub calls_partial: u64,
    /// RTP datagrams bound to a call.
    pub rtp_packets: u64,
    /// Dialogs ignored because `max_calls` was reached.
    pub calls_over_limit: u64,
    /// RTP flows recorded without SDP (`unsignalled`).
    pub calls_unsignalled: u64,
    /// SIP-over-TLS connections catalogued as `encrypted_signalling`.
    pub calls_encrypted: u64,
    /// RTP datagrams towards a call's media address from a source its sender never
    /// announced (or not the one bound): dropped, never recorded.
    pub rtp_foreign_source: u64,
}

/// What [`CallTracker::classify_flow`] says about an RTP datagram of a known call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Call and channel; record it.
    Bound(CallNo, usize),
    /// Towards (or from) a media address of this call and channel, but not from the
    /// sender's announced (bound) source: drop and count.
    Foreign(CallNo, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

#[derive(Debug)]
struct Call {
    call_id: String,
    caller_tag: Option<String>,
    callee_tag: Option<String>,
    parties: [Party; 2],
    /// Per party, its audio m-lines in SDP order (index = stream number).
    media: [Vec<PartyMedia>; 2],
    /// Streams recorded (fixed when the recording starts; channels = 2 × this).
    streams: usize,
    /// Flags raised before the recording started (emitted right after `Start`).
    pending_flags: Vec<(Mono, &'static str, String)>,
    /// Which party's SDP came last (the answer, in a completed offer/answer).
    last_sdp: Option<Side>,
    sip_src: SocketAddr,
    answered: bool,
    recording: bool,
    denied: bool,
    last_activity: Mono,
    last_rtp: Option<Mono>,
    started_at: Option<Mono>,
    addrs: Vec<SocketAddr>,
    /// Per channel (= sending party): which source its RTP is taken from. Strict on the
    /// party's SDP address (nothing before its SDP is seen), except in a call picked up
    /// mid-way, where the first source towards the call's media address binds the channel
    /// of a party whose SDP has not been seen.
    sources: [SourceGate; 2],
    /// RTP without SDP: the two endpoints (channel 0's sender first).
    unsignalled: Option<(SocketAddr, SocketAddr)>,
    /// SIP over TLS: the connection (client, server).
    tls: Option<(SocketAddr, SocketAddr)>,
    /// A SIPREC session between an SRC (the "caller") and an SRS.
    siprec: bool,
    /// SRTP keys per channel for an unsignalled flow (declared by the operator).
    declared_srtp: [Option<SrtpPolicy>; 2],
}

/// A flow watched by the RTP-without-SDP detector.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    /// Consecutive packets that looked like one RTP stream.
    good: u32,
    last: Mono,
}

/// The gate of a party whose SDP has not been seen yet.
fn unannounced_gate() -> SourceGate {
    SourceGate::new(SourcePolicy::Latch {
        window: Duration::MAX,
    })
}

/// The call tracker (see the module docs).
#[derive(Debug)]
pub struct CallTracker {
    cfg: TrackerConfig,
    next_no: CallNo,
    calls: HashMap<CallNo, Call>,
    by_call_id: HashMap<String, CallNo>,
    /// Receive address of a party → (call, whose address, stream number).
    media: HashMap<SocketAddr, (CallNo, Side, usize)>,
    /// Unsignalled calls by (channel 0 sender, its destination).
    flows: HashMap<(SocketAddr, SocketAddr), CallNo>,
    /// SIP-over-TLS connections by (client, server).
    tls: HashMap<(SocketAddr, SocketAddr), CallNo>,
    /// Flows the detector is watching, by (src, dst).
    candidates: HashMap<(SocketAddr, SocketAddr), Candidate>,
    events: VecDeque<TrackerEvent>,
    stats: TrackerStats,
    last_sweep: Mono,
}

fn party_index(s: Side) -> usize {
    match s {
        Side::Caller => 0,
        Side::Callee => 1,
    }
}

fn party_from(na: &crate::sip::NameAddr) -> Party {
    Party {
        name: na.display.clone().filter(|s| !s.trim().is_empty()),
        aor: Some(na.uri.raw.clone()),
    }
}

fn pai(msg: &Message) -> Option<Party> {
    let v = msg.header("P-Asserted-Identity")?;
    // Several identities may be listed (sip and tel); the first is enough.
    let first = crate::sip::parse::split_list(v).into_iter().next()?;
    crate::sip::parse::parse_name_addr(first.trim())
        .ok()
        .map(|na| party_from(&na))
}

/// Every audio m-line of an SDP body carried by `msg` (plain or multipart), in order;
/// empty without SDP.
fn sdp_media(msg: &Message) -> Vec<PartyMedia> {
    sdp_media_opt(msg).unwrap_or_default()
}

fn sdp_media_opt(msg: &Message) -> Option<Vec<PartyMedia>> {
    if msg.body.is_empty() {
        return None;
    }
    let ct = msg.header("Content-Type").unwrap_or("application/sdp");
    let body = crate::siprec::body::split_body(ct, &msg.body).ok()?;
    let sdp = crate::sdp::parse(body.sdp.as_deref()?).ok()?;
    let v: Vec<PartyMedia> = sdp
        .media
        .iter()
        .filter(|m| m.media.eq_ignore_ascii_case("audio"))
        .map(|m| audio_line(&sdp, m))
        .collect();
    (!v.is_empty()).then_some(v)
}

fn audio_line(
    sdp: &crate::sdp::SessionDescription,
    m: &crate::sdp::MediaDescription,
) -> PartyMedia {
    let addr = m
        .remote_addr(sdp)
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified());
    let crypto = m
        .crypto()
        .into_iter()
        .filter_map(|v| crate::sdp::parse_crypto(v).ok())
        .collect();
    PartyMedia {
        addr,
        formats: m.codecs(),
        direction: m.direction(sdp),
        srtp: crate::sdp::is_sdes_proto(&m.proto),
        crypto,
        label: m.label().map(str::to_string),
    }
}

impl CallTracker {
    /// A tracker with the given limits and rules.
    pub fn new(cfg: TrackerConfig) -> Self {
        CallTracker {
            cfg,
            next_no: 1,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            media: HashMap::new(),
            flows: HashMap::new(),
            tls: HashMap::new(),
            candidates: HashMap::new(),
            events: VecDeque::new(),
            stats: TrackerStats::default(),
            last_sweep: Mono::ZERO,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// Calls currently followed.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Calls currently being recorded.
    pub fn recording_calls(&self) -> usize {
        self.calls.values().filter(|c| c.recording).count()
    }

    /// Next event for the shell.
    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// Handle one SIP message seen from `src` to `dst` at `ts`.
    pub fn on_sip(&mut self, ts: Mono, src: SocketAddr, _dst: SocketAddr, msg: &Message) {
        self.stats.sip_messages += 1;
        self.sweep(ts);
        let Some(call_id) = msg.call_id() else { return };
        let Ok((_, cseq_method)) = msg.cseq() else {
            return;
        };
        if !matches!(
            cseq_method,
            Method::Invite
                | Method::Ack
                | Method::Bye
                | Method::Cancel
                | Method::Update
                | Method::Prack
        ) {
            return;
        }
        let from = msg.from().ok();
        let to = msg.to().ok();
        let from_tag = from.as_ref().and_then(|f| f.tag().map(str::to_string));
        let to_tag = to.as_ref().and_then(|t| t.tag().map(str::to_string));
        let media = sdp_media(msg);
        let has_sdp = !media.is_empty();

        let no = match self.by_call_id.get(call_id) {
            Some(n) => *n,
            None => {
                let initial_invite = msg.method() == Some(&Method::Invite) && to_tag.is_none();
                // Mid-call pickup only from a message that carries media.
                if !initial_invite && media.is_empty() {
                    return;
                }
                if self.calls.len() >= self.cfg.max_calls {
                    self.stats.calls_over_limit += 1;
                    return;
                }
                let no = self.next_no;
                self.next_no += 1;
                self.stats.calls_seen += 1;
                // From names the dialog initiator on the INVITE and on every response to a
                // request of the caller; for a mid-call pickup it is a guess.
                let (caller, callee) = (
                    from.as_ref().map(party_from).unwrap_or_default(),
                    to.as_ref().map(party_from).unwrap_or_default(),
                );
                let caller = if initial_invite {
                    pai(msg).unwrap_or(caller)
                } else {
                    caller
                };
                let call = Call {
                    call_id: call_id.to_string(),
                    caller_tag: from_tag.clone(),
                    callee_tag: to_tag.clone(),
                    parties: [caller, callee],
                    media: [Vec::new(), Vec::new()],
                    streams: 0,
                    last_sdp: None,
                    pending_flags: Vec::new(),
                    sip_src: src,
                    answered: !initial_invite,
                    recording: false,
                    denied: false,
                    last_activity: ts,
                    last_rtp: None,
                    started_at: None,
                    addrs: Vec::new(),
                    // A call picked up mid-way may never show one party's SDP; a call
                    // seen from its INVITE shows both (offer and answer).
                    sources: if initial_invite {
                        Default::default()
                    } else {
                        [unannounced_gate(), unannounced_gate()]
                    },
                    unsignalled: None,
                    tls: None,
                    siprec: false,
                    declared_srtp: [None, None],
                };
                let mut call = call;
                if initial_invite {
                    if let Some(p) = siprec_parties(msg, &media) {
                        // A mirrored SIPREC session: the recorded call's participants.
                        call.siprec = true;
                        call.parties = p;
                    }
                }
                let denied = !self.cfg.rules.allows(&[&call.parties[0], &call.parties[1]]);
                self.calls.insert(no, call);
                self.by_call_id.insert(call_id.to_string(), no);
                if denied {
                    self.stats.calls_denied += 1;
                    if let Some(c) = self.calls.get_mut(&no) {
                        c.denied = true;
                    }
                }
                if !initial_invite {
                    self.stats.calls_partial += 1;
                    if let Some(c) = self.calls.get_mut(&no) {
                        c.pending_flags.push((
                            ts,
                            "signalling_incomplete",
                            format!(
                                "initial INVITE not captured; call picked up from {}; caller/callee guessed from From/To",
                                describe(msg)
                            ),
                        ));
                    }
                }
                no
            }
        };
        let Some(call) = self.calls.get_mut(&no) else {
            return;
        };
        call.last_activity = ts;
        // Whose message is it? Requests are sent by the From party, responses by the To party.
        let sender_tag = if msg.is_request() { &from_tag } else { &to_tag };
        let sender = match (sender_tag, &call.caller_tag, &call.callee_tag) {
            (Some(t), Some(c), _) if t == c => Side::Caller,
            (Some(t), _, Some(c)) if t == c => Side::Callee,
            _ if msg.is_request() => {
                if from_tag.is_some() && call.caller_tag.is_some() && from_tag != call.caller_tag {
                    Side::Callee
                } else {
                    Side::Caller
                }
            }
            _ => Side::Callee,
        };
        if !msg.is_request()
            && call.callee_tag.is_none()
            && to_tag.is_some()
            && cseq_method == Method::Invite
        {
            call.callee_tag = to_tag.clone();
        }
        if has_sdp {
            let idx = party_index(sender);
            if let Some(g) = call.sources.get_mut(idx) {
                // From now on this party's RTP comes from its SDP address only.
                if g.policy() != SourcePolicy::Strict {
                    *g = SourceGate::new(SourcePolicy::Strict);
                }
                g.set_announced(ts, media.iter().find_map(|m| m.addr));
            }
            // Every audio m-line is a stream of this party (early media on another port
            // keeps its address in the table too: it is still this party's stream).
            for (i, m) in media.iter().enumerate().take(MAX_STREAMS) {
                if let Some(a) = m.addr {
                    if !call.addrs.contains(&a) {
                        call.addrs.push(a);
                    }
                    self.media.insert(a, (no, sender, i));
                }
            }
            if call.recording && media.len() > call.streams && call.streams < MAX_STREAMS {
                self.events.push_back(TrackerEvent::Flag {
                    call: no,
                    at: ts,
                    kind: "stream_not_recorded",
                    detail: format!(
                        "the {} now has {} audio streams; the recording has channels for {}",
                        side_name(sender),
                        media.len(),
                        call.streams
                    ),
                });
            }
            let changed = call.media[idx] != media;
            call.media[idx] = media;
            call.last_sdp = Some(sender);
            if changed && call.recording {
                let (formats, hold) = channel_formats(call);
                let srtp = shape(call, channel_srtp(call));
                self.events.push_back(TrackerEvent::Media {
                    call: no,
                    at: ts,
                    formats,
                    hold,
                    srtp,
                });
            }
        }
        // (A mirrored SIPREC session's parties come from its metadata, not the SRS.)
        if !msg.is_request() && sender == Side::Callee && !call.siprec {
            if let Some(p) = pai(msg) {
                if call.parties[1] != p {
                    call.parties[1] = p;
                    if call.recording {
                        self.events.push_back(TrackerEvent::Parties {
                            call: no,
                            parties: call.parties.clone(),
                        });
                    }
                }
            }
        }
        match (msg.method(), msg.status()) {
            (Some(Method::Bye), _) => {
                self.end(no, ts, format!("BYE from the {}", side_name(sender)));
            }
            (Some(Method::Cancel), _) if !call.answered => {
                self.end(no, ts, "CANCEL before answer".into());
            }
            (None, Some(s)) if cseq_method == Method::Invite && (200..300).contains(&s) => {
                if !call.answered {
                    call.answered = true;
                }
                self.start(no, ts);
            }
            // Early media (183 Session Progress with SDP): recorded like the call itself.
            (None, Some(s))
                if cseq_method == Method::Invite && (101..200).contains(&s) && has_sdp =>
            {
                self.start(no, ts);
            }
            (None, Some(s)) if cseq_method == Method::Invite && s >= 300 && !call.answered => {
                if call.recording {
                    self.events.push_back(TrackerEvent::Flag {
                        call: no,
                        at: ts,
                        kind: "not_answered",
                        detail: format!("call failed with {s} after early media"),
                    });
                }
                self.end(no, ts, format!("call not answered ({s})"));
            }
            _ => {}
        }
    }

    /// Which call and channel an RTP datagram from `src` to `dst` belongs to; starts the
    /// recording of its call if needed (drain [`poll_event`](Self::poll_event) before
    /// pushing the packet).
    pub fn classify(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(CallNo, usize)> {
        match self.classify_flow(ts, src, dst, true)? {
            Flow::Bound(no, ch) => Some((no, ch)),
            Flow::Foreign(..) => None,
        }
    }

    /// Like [`classify`](Self::classify), saying also when a datagram of a known call
    /// comes from a source its sender did not announce ([`Flow::Foreign`], counted in
    /// [`TrackerStats::rtp_foreign_source`]): an unannounced flow never takes a channel
    /// nor starts a recording. `rtp` = false for RTCP, which never binds a source.
    pub fn classify_flow(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        rtp: bool,
    ) -> Option<Flow> {
        self.classify_packet(ts, src, dst, rtp, &[])
    }

    /// Like [`classify_flow`](Self::classify_flow) with the datagram itself, which the
    /// RTP-without-SDP detector (and declared flows) need: a flow no SDP announced is
    /// bound to an `unsignalled` call once its packets look like one RTP stream.
    pub fn classify_packet(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        rtp: bool,
        pkt: &[u8],
    ) -> Option<Flow> {
        let (no, ch) = if let Some((no, side, i)) = self.media.get(&dst) {
            // Sent to the callee: the caller speaks (channel 2i), and vice versa.
            (*no, 2 * i + usize::from(*side != Side::Callee))
        } else if let Some((no, side, i)) = self.media.get(&src) {
            (*no, 2 * i + usize::from(*side != Side::Caller))
        } else {
            return self.classify_unsignalled(ts, src, dst, rtp, pkt);
        };
        let call = self.calls.get_mut(&no)?;
        if call.denied {
            return None;
        }
        // One source gate per sending party (all its streams come from its address).
        let gate = ch % 2;
        // A mirrored SIPREC session: the SRC's stream i is channel i; the SRS sends none.
        let ch = if call.siprec {
            if gate != 0 {
                return None;
            }
            ch / 2
        } else {
            ch
        };
        // A stream the recording has no channel for (added after the start).
        if call.recording && ch >= channel_count(call) {
            return None;
        }
        let verdict = call
            .sources
            .get_mut(gate)
            .map_or(SourceVerdict::Foreign, |g| g.check(ts, src, rtp));
        if verdict == SourceVerdict::Foreign {
            self.stats.rtp_foreign_source += 1;
            return Some(Flow::Foreign(no, ch));
        }
        call.last_rtp = Some(ts);
        call.last_activity = ts;
        self.stats.rtp_packets += 1;
        if !call.recording {
            self.start(no, ts);
        }
        Some(Flow::Bound(no, ch))
    }

    fn classify_unsignalled(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        rtp: bool,
        pkt: &[u8],
    ) -> Option<Flow> {
        let (no, ch) = if let Some(no) = self.flows.get(&(src, dst)) {
            (*no, 0)
        } else if let Some(no) = self.flows.get(&(dst, src)) {
            (*no, 1)
        } else {
            let declared = self.cfg.declared.iter().any(|d| d.sender == src);
            if !rtp || (!self.cfg.unsignalled && !declared) {
                return None;
            }
            let pt = self.detect(ts, src, dst, pkt, declared)?;
            self.start_unsignalled(ts, src, dst, pt)?
        };
        let call = self.calls.get_mut(&no)?;
        if call.denied {
            return None;
        }
        call.last_rtp = Some(ts);
        call.last_activity = ts;
        self.stats.rtp_packets += 1;
        Some(Flow::Bound(no, ch))
    }

    /// Feed the detector; the payload type once the flow looks like RTP: the same SSRC
    /// and payload type, sequence numbers +1 and timestamps advancing by one constant
    /// plausible step (1..=8000 units) for [`UNSIGNALLED_PACKETS`] packets in a row, a
    /// static audio payload type of the codec table (dynamic ones cannot be decoded
    /// without SDP). A declared flow needs one packet.
    fn detect(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        pkt: &[u8],
        declared: bool,
    ) -> Option<u8> {
        let p = crate::media::parse_rtp(pkt).ok()?;
        let pt = p.payload_type;
        crate::media::codec::lookup_static_pt(pt).filter(|c| c.available)?;
        if declared {
            return Some(pt);
        }
        if src.port() < 1024 || dst.port() < 1024 || p.payload.is_empty() {
            return None;
        }
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&(src, dst)) {
            // Full: forget flows silent for 5 s, else refuse new ones.
            self.candidates
                .retain(|_, c| ts.saturating_duration_since(c.last) < Duration::from_secs(5));
            if self.candidates.len() >= MAX_CANDIDATES {
                return None;
            }
        }
        let c = self.candidates.entry((src, dst)).or_insert(Candidate {
            ssrc: p.ssrc,
            pt,
            seq: p.sequence.wrapping_sub(1),
            ts: p.timestamp,
            good: 0,
            last: ts,
        });
        let step = p.timestamp.wrapping_sub(c.ts);
        let fits = c.ssrc == p.ssrc
            && c.pt == pt
            && p.sequence == c.seq.wrapping_add(1)
            && (c.good == 0 || (1..=8000).contains(&step));
        *c = Candidate {
            ssrc: p.ssrc,
            pt,
            seq: p.sequence,
            ts: p.timestamp,
            good: if fits { c.good + 1 } else { 1 },
            last: ts,
        };
        if c.good >= UNSIGNALLED_PACKETS {
            self.candidates.remove(&(src, dst));
            return Some(pt);
        }
        None
    }

    fn start_unsignalled(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        pt: u8,
    ) -> Option<(CallNo, usize)> {
        if self.calls.len() >= self.cfg.max_calls {
            self.stats.calls_over_limit += 1;
            return None;
        }
        let no = self.next_no;
        self.next_no += 1;
        self.stats.calls_seen += 1;
        self.stats.calls_unsignalled += 1;
        let key_of = |a: SocketAddr| {
            self.cfg
                .declared
                .iter()
                .find(|d| d.sender == a)
                .and_then(|d| d.srtp.clone())
        };
        let fmt = |a: SocketAddr| {
            let f = crate::sdp::PayloadFormat {
                pt,
                encoding: crate::media::codec::lookup_static_pt(pt)
                    .map(|c| c.names[0].to_string())
                    .unwrap_or_default(),
                clock_rate: crate::media::codec::lookup_static_pt(pt)
                    .and_then(|c| c.clock_rate)
                    .unwrap_or(8000),
                channels: 1,
                fmtp: None,
            };
            PartyMedia {
                addr: Some(a),
                formats: vec![f],
                direction: Direction::SendRecv,
                srtp: key_of(a).is_some(),
                crypto: Vec::new(),
                label: None,
            }
        };
        let mut sources: [SourceGate; 2] = Default::default();
        sources[0].set_announced(ts, Some(src));
        sources[1].set_announced(ts, Some(dst));
        let call = Call {
            call_id: format!("unsignalled:{src}-{dst}"),
            caller_tag: None,
            callee_tag: None,
            parties: [Party::default(), Party::default()],
            // Channel 0's sender receives at `src` (symmetric RTP), channel 1's at `dst`.
            media: [vec![fmt(src)], vec![fmt(dst)]],
            streams: 0,
            pending_flags: vec![(
                ts,
                "unsignalled",
                format!("RTP without SDP: {src} -> {dst}, payload type {pt}; no participants"),
            )],
            last_sdp: None,
            sip_src: src,
            answered: true,
            recording: false,
            denied: false,
            last_activity: ts,
            last_rtp: Some(ts),
            started_at: None,
            addrs: Vec::new(),
            sources,
            unsignalled: Some((src, dst)),
            tls: None,
            siprec: false,
            declared_srtp: [key_of(src), key_of(dst)],
        };
        self.calls.insert(no, call);
        self.flows.insert((src, dst), no);
        self.start(no, ts);
        Some((no, 0))
    }

    /// A TCP segment of SIP over TLS ([`is_sip_tls`], or any segment of a connection
    /// already known as such) from `src` to `dst`; `closing` = FIN or RST. The first one
    /// catalogues an [`CallKind::EncryptedSignalling`] call for the connection (client =
    /// the side not on port 5061), which ends when the connection closes, after
    /// `media_timeout` without segments, or at the end of the capture. Returns whether
    /// the segment belongs to such a connection (then it is not SIP to reassemble).
    pub fn on_tls(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        closing: bool,
    ) -> bool {
        let key = if self.tls.contains_key(&(src, dst)) {
            (src, dst)
        } else if self.tls.contains_key(&(dst, src)) {
            (dst, src)
        } else if is_sip_tls(src, dst, payload) {
            let key = if src.port() == SIPS_PORT && dst.port() != SIPS_PORT {
                (dst, src)
            } else {
                (src, dst)
            };
            if self.calls.len() >= self.cfg.max_calls {
                self.stats.calls_over_limit += 1;
                return true;
            }
            let no = self.next_no;
            self.next_no += 1;
            self.stats.calls_seen += 1;
            self.stats.calls_encrypted += 1;
            let call = Call {
                call_id: format!("tls:{}-{}", key.0, key.1),
                caller_tag: None,
                callee_tag: None,
                parties: [Party::default(), Party::default()],
                media: [Vec::new(), Vec::new()],
                streams: 0,
                pending_flags: vec![(
                    ts,
                    "encrypted_signalling",
                    format!(
                        "SIP over TLS between {} and {}: no Call-ID, participants, SDP or SRTP keys visible; the call's audio cannot be recorded from the mirror",
                        key.0, key.1
                    ),
                )],
                last_sdp: None,
                sip_src: key.0,
                answered: true,
                recording: false,
                denied: false,
                last_activity: ts,
                last_rtp: None,
                started_at: None,
                addrs: Vec::new(),
                sources: Default::default(),
                unsignalled: None,
                tls: Some(key),
                siprec: false,
                declared_srtp: [None, None],
            };
            self.calls.insert(no, call);
            self.tls.insert(key, no);
            self.start(no, ts);
            key
        } else {
            return false;
        };
        let Some(&no) = self.tls.get(&key) else {
            return true;
        };
        if let Some(c) = self.calls.get_mut(&no) {
            c.last_activity = ts;
        }
        if closing {
            self.end(no, ts, "TLS connection closed".into());
        }
        true
    }

    /// Let timers run up to `now` (call this now and then when no packets arrive).
    pub fn on_time(&mut self, now: Mono) {
        self.sweep(now);
    }

    /// End every call (end of a capture file, shutdown).
    pub fn finish_all(&mut self, now: Mono, reason: &str) {
        let mut nos: Vec<CallNo> = self.calls.keys().copied().collect();
        nos.sort_unstable();
        for no in nos {
            if let Some(c) = self.calls.get(&no) {
                if c.recording {
                    let at = c
                        .last_rtp
                        .unwrap_or(now)
                        .max(c.last_activity)
                        .min(now.max(c.last_activity));
                    self.events.push_back(TrackerEvent::Flag {
                        call: no,
                        at,
                        kind: "signalling_incomplete",
                        detail: format!("no BYE seen: {reason}"),
                    });
                    self.end(no, at, reason.to_string());
                } else {
                    self.forget(no);
                }
            }
        }
    }

    fn start(&mut self, no: CallNo, ts: Mono) {
        let Some(call) = self.calls.get_mut(&no) else {
            return;
        };
        if call.recording || call.denied {
            return;
        }
        call.recording = true;
        call.started_at = Some(ts);
        call.streams = call.media[0]
            .len()
            .max(call.media[1].len())
            .clamp(1, MAX_STREAMS);
        self.stats.calls_recorded += 1;
        let (formats, hold) = channel_formats(call);
        let srtp = if call.unsignalled.is_some() {
            call.declared_srtp.to_vec()
        } else {
            shape(call, channel_srtp(call))
        };
        self.events.push_back(TrackerEvent::Start {
            call: no,
            at: ts,
            call_id: call.call_id.clone(),
            sip_src: call.sip_src,
            parties: call.parties.clone(),
            formats,
            hold,
            srtp,
            kind: if call.unsignalled.is_some() {
                CallKind::Unsignalled
            } else if call.tls.is_some() {
                CallKind::EncryptedSignalling
            } else if call.siprec {
                CallKind::MirroredSiprec
            } else {
                CallKind::Sip
            },
        });
        for (ch, m) in call.media.iter().enumerate() {
            let keyless = m.iter().any(|m| m.srtp && m.crypto.is_empty());
            if keyless && call.unsignalled.is_none() {
                call.pending_flags.push((
                    ts,
                    "srtp_no_keys",
                    format!(
                        "the {} offers SRTP without usable a=crypto keys (DTLS-SRTP, MIKEY or an unsupported suite): its audio cannot be decrypted",
                        if ch == 0 { "caller" } else { "callee" }
                    ),
                ));
            }
        }
        for (at, kind, detail) in call.pending_flags.drain(..) {
            self.events.push_back(TrackerEvent::Flag {
                call: no,
                at: at.max(ts),
                kind,
                detail,
            });
        }
        if call.unsignalled.is_none()
            && call.tls.is_none()
            && (call.media[0].is_empty() || call.media[1].is_empty())
        {
            let missing = if call.media[0].is_empty() {
                "caller"
            } else {
                "callee"
            };
            self.events.push_back(TrackerEvent::Flag {
                call: no,
                at: ts,
                kind: "signalling_incomplete",
                detail: format!("no SDP from the {missing} seen when recording started"),
            });
        }
    }

    fn end(&mut self, no: CallNo, ts: Mono, reason: String) {
        let Some(call) = self.calls.get(&no) else {
            return;
        };
        if call.recording {
            let at = ts.max(call.started_at.unwrap_or(ts));
            if call.last_rtp.is_none() && call.tls.is_none() {
                self.events.push_back(TrackerEvent::Flag {
                    call: no,
                    at,
                    kind: "no_media",
                    detail: "no RTP of this call was captured".into(),
                });
            }
            self.events.push_back(TrackerEvent::End {
                call: no,
                at,
                reason,
            });
        }
        self.forget(no);
    }

    fn forget(&mut self, no: CallNo) {
        if let Some(call) = self.calls.remove(&no) {
            if self.by_call_id.get(&call.call_id) == Some(&no) {
                self.by_call_id.remove(&call.call_id);
            }
            for a in call.addrs {
                if self.media.get(&a).map(|(n, _, _)| *n) == Some(no) {
                    self.media.remove(&a);
                }
            }
            if let Some(f) = call.unsignalled {
                self.flows.remove(&f);
            }
            if let Some(c) = call.tls {
                self.tls.remove(&c);
            }
        }
    }

    fn sweep(&mut self, now: Mono) {
        if now < self.last_sweep.saturating_add(Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = now;
        let mut expired: Vec<(CallNo, Mono, bool)> = Vec::new();
        for (no, c) in &self.calls {
            if c.recording {
                let last = c.last_rtp.unwrap_or(c.last_activity).max(c.last_activity);
                if now.saturating_duration_since(last) >= self.cfg.media_timeout {
                    expired.push((*no, last, true));
                }
            } else if now.saturating_duration_since(c.last_activity) >= self.cfg.setup_timeout {
                expired.push((*no, c.last_activity, false));
            }
        }
        expired.sort_unstable();
        for (no, last, rec) in expired {
            if rec {
                self.events.push_back(TrackerEvent::Flag {
                    call: no,
                    at: last,
                    kind: "signalling_incomplete",
                    detail: format!(
                        "no BYE seen: ended after {} s without RTP",
                        self.cfg.media_timeout.as_secs()
                    ),
                });
                self.end(no, last, "media timeout (no BYE seen)".into());
            } else {
                self.forget(no);
            }
        }
    }
}

fn describe(msg: &Message) -> String {
    match (msg.method(), msg.status()) {
        (Some(m), _) => m.as_str().to_string(),
        (None, Some(s)) => format!("a {s} response"),
        _ => "a message".into(),
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Caller => "caller",
        Side::Callee => "callee",
    }
}

/// The SRTP keys of each channel (= sending party): SDES keys protect what the party
/// that put them in its SDP sends (RFC 4568 §6.1). The offerer may list several
/// `a=crypto` lines; the answer carries one, whose tag says which offered line is in use.
/// So a sender's line is the one whose tag (and suite) the other party's SDP also has,
/// else its first usable line (offer seen alone, or the answerer's single line).
fn channel_srtp(call: &Call) -> Vec<Option<SrtpPolicy>> {
    let pick = |send: &Option<PartyMedia>, other: &Option<PartyMedia>| -> Option<SrtpPolicy> {
        let send = send.as_ref()?;
        let other_lines = other
            .as_ref()
            .map(|o| o.crypto.as_slice())
            .unwrap_or_default();
        send.crypto
            .iter()
            .find(|c| {
                other_lines
                    .iter()
                    .any(|o| o.tag == c.tag && o.policy.suite == c.policy.suite)
            })
            .or_else(|| send.crypto.first())
            .map(|c| c.policy.clone())
    };
    (0..call.streams.max(1))
        .flat_map(|i| {
            let (caller, callee) = (stream(call, 0, i), stream(call, 1, i));
            [pick(&caller, &callee), pick(&callee, &caller)]
        })
        .collect()
}

/// Party `p`'s `i`-th audio stream.
fn stream(call: &Call, p: usize, i: usize) -> Option<PartyMedia> {
    call.media.get(p).and_then(|v| v.get(i)).cloned()
}

/// Formats per channel: a channel's RTP uses the receiver's payload numbering, so the
/// receiver's SDP wins, with the sender's as fallback. Hold: the sender does not send.
fn channel_formats(call: &Call) -> (Vec<Vec<PayloadFormat>>, Vec<bool>) {
    let mut formats = Vec::new();
    let mut hold = Vec::new();
    for i in 0..call.streams.max(1) {
        let (f, h) = stream_formats(call, &stream(call, 0, i), &stream(call, 1, i));
        formats.extend(f);
        hold.extend(h);
    }
    (shape(call, formats), shape(call, hold))
}

/// Channels of the recording: two per stream, or one per stream (at least two) for a
/// mirrored SIPREC session.
fn channel_count(call: &Call) -> usize {
    if call.siprec {
        call.streams.max(2)
    } else {
        2 * call.streams.max(1)
    }
}

/// Per-channel values (two per stream, caller's first) as the recording's channels:
/// for a mirrored SIPREC session only the SRC's streams (even entries), padded to two.
fn shape<T: Clone + Default>(call: &Call, v: Vec<T>) -> Vec<T> {
    if !call.siprec {
        return v;
    }
    let mut out: Vec<T> = v.into_iter().step_by(2).collect();
    while out.len() < 2 {
        out.push(T::default());
    }
    out
}

/// The participants heard on the SRC's first two m-lines, if `msg` carries SIPREC
/// metadata (RFC 7865) next to its SDP.
fn siprec_parties(msg: &Message, media: &[PartyMedia]) -> Option<[Party; 2]> {
    let ct = msg.header("Content-Type")?;
    let body = crate::siprec::body::split_body(ct, &msg.body).ok()?;
    let meta = crate::siprec::metadata::parse(&body.metadata?.bytes).ok()?;
    let labels: Vec<Option<String>> = media.iter().map(|m| m.label.clone()).collect();
    let map = crate::siprec::metadata::channel_map(&meta, &labels);
    let party = |i: usize| {
        map.get(i)
            .map(|a| Party {
                name: a.participant_name.clone(),
                aor: a.participant_aor.clone(),
            })
            .unwrap_or_default()
    };
    Some([party(0), party(1)])
}

/// [`channel_formats`] of one stream (the two parties' `i`-th audio m-lines).
fn stream_formats(
    call: &Call,
    caller: &Option<PartyMedia>,
    callee: &Option<PartyMedia>,
) -> ([Vec<PayloadFormat>; 2], [bool; 2]) {
    let pick = |recv: &Option<PartyMedia>, send: &Option<PartyMedia>| -> Vec<PayloadFormat> {
        let mut f: Vec<PayloadFormat> =
            recv.as_ref().map(|m| m.formats.clone()).unwrap_or_default();
        if let Some(s) = send {
            for x in &s.formats {
                if !f.iter().any(|y| y.pt == x.pt) {
                    f.push(x.clone());
                }
            }
        }
        f
    };
    let hold = |send: &Option<PartyMedia>| {
        send.as_ref().is_some_and(|m| {
            m.addr.is_none() || matches!(m.direction, Direction::Inactive | Direction::RecvOnly)
        })
    };
    let mut formats = [pick(callee, caller), pick(caller, callee)];
    // The negotiated codec is the answer's first audio format: list it first on both
    // channels (payload type numbers stay those of each receiver).
    let answer = match call.last_sdp {
        Some(Side::Caller) if callee.is_some() => caller,
        Some(Side::Callee) if caller.is_some() => callee,
        _ => &None,
    };
    let chosen = answer.as_ref().and_then(|m| {
        m.formats
            .iter()
            .find(|f| crate::media::codec::is_audio_encoding(&f.encoding))
            .map(|f| f.encoding.to_ascii_uppercase())
    });
    if let Some(c) = chosen {
        for f in &mut formats {
            f.sort_by_key(|x| !x.encoding.eq_ignore_ascii_case(&c));
        }
    }
    (formats, [hold(caller), hold(callee)])
}

#[cfg(test)]
mod tests;
