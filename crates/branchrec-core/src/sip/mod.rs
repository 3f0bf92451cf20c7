//! SIP (RFC 3261) for a recording server that is a UAS (it sends requests only to end or
//! refresh a session: BYE, UPDATE; session timers per RFC 4028).
//!
//! Sans-IO: [`parse`] turns bytes into [`Message`]s (UDP datagrams via
//! [`parse_datagram`], TCP streams via [`StreamFramer`]); [`Endpoint`] is the server
//! transaction + dialog state machine. The shell feeds it received bytes and the current
//! time, and drains [`Transmit`]s and [`Event`]s.
//!
//! Shell loop: UDP datagram → [`Endpoint::handle_receive`]. TCP bytes →
//! [`StreamFramer::push`], then `while let Ok(Some(frame)) = framer.next_frame()` →
//! `handle_receive(frame)` (so malformed-but-framed requests still get a 400); an `Err` from
//! `next_frame` means the stream is out of sync: close the connection. After every input,
//! drain `poll_transmit` / `poll_event` and re-arm a timer at `poll_timeout`, calling
//! `handle_timeout` when it fires.

// Module layers (each uses only the ones above it): message → parse → transport →
// response, session_timer → transaction, dialog, client → endpoint. `access` stands apart.
pub mod access;
mod client;
pub mod dialog;
pub mod endpoint;
pub mod limits;
pub mod message;
pub mod parse;
pub mod response;
pub mod session_timer;
pub mod transaction;
pub mod transport;

pub use dialog::TerminationReason;
pub use endpoint::{Endpoint, EndpointConfig, Event, Stats};
pub use message::{Headers, Message, Method, StartLine};
pub use parse::{
    parse_datagram, parse_datagram_lenient, ContentType, NameAddr, ParseError, StreamFramer, Uri,
    Via, MAX_MESSAGE_SIZE,
};
pub use response::{Refusal, RefusalContext, RefusalResponse, Unavailable};
pub use transport::{Peer, Transmit, Transport};

use thiserror::Error;

/// Server transaction handle given to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// Dialog handle; the application keys its call state by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId(pub u64);

/// Errors of the SIP layer. Request rejections carry the reason; [`SipError::refusal`] says
/// how each is answered ([`Refusal::response`] maps that to the wire).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SipError {
    /// Malformed message.
    #[error("malformed message: {0}")]
    Parse(#[from] ParseError),
    /// A mandatory header (Call-ID, CSeq, From, To, Via) is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// SIP version other than 2.0.
    #[error("SIP version not supported")]
    VersionNotSupported,
    /// Method we do not implement.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Request-URI scheme not sip/sips/tel.
    #[error("unsupported URI scheme")]
    UnsupportedUriScheme,
    /// A `sips:` Request-URI that did not arrive over TLS (RFC 3261 §26.2.2: the last hop
    /// of a SIPS request is TLS).
    #[error("sips: Request-URI over a transport other than TLS")]
    SipsOverInsecureTransport,
    /// Body with a Content-Type we do not accept.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Require lists option tags we do not support.
    #[error("unsupported extensions: {0:?}")]
    BadExtension(Vec<String>),
    /// Accept does not allow the body type we would answer with.
    #[error("not acceptable")]
    NotAcceptable,
    /// In-dialog request or CANCEL that matches nothing.
    #[error("call/transaction does not exist")]
    NoSuchDialog,
    /// In-dialog request, CANCEL or ACK from another peer than the dialog's.
    #[error("not from the dialog's peer")]
    ForeignPeer,
    /// In-dialog CSeq lower than the last one seen.
    #[error("CSeq out of order")]
    CSeqOutOfOrder,
    /// Another offer/answer transaction is pending in the dialog (glare).
    #[error("request pending")]
    RequestPending,
    /// Transaction or dialog limit reached.
    #[error("overloaded")]
    Overloaded,
    /// The application did not answer in time.
    #[error("application did not respond")]
    AppTimeout,
    /// `respond` on a transaction that does not exist (any more).
    #[error("unknown transaction")]
    UnknownTransaction,
    /// `respond` after a final response was already sent.
    #[error("final response already sent")]
    AlreadyFinal,
    /// `respond` with a status outside 100..=699.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
}

impl SipError {
    /// The refusal this error is answered with. `ctx` supplies the Accept list of a 415
    /// and the warn-agent of the 480's Warning.
    pub fn refusal(&self, ctx: &RefusalContext<'_>) -> Refusal {
        match self {
            SipError::Parse(e) => Refusal::Malformed(e.to_string()),
            SipError::MissingHeader(h) => Refusal::Malformed(format!("Missing {h} Header")),
            SipError::VersionNotSupported => Refusal::VersionNotSupported,
            SipError::MethodNotAllowed => Refusal::MethodNotAllowed,
            SipError::UnsupportedUriScheme => Refusal::UnsupportedUriScheme,
            SipError::SipsOverInsecureTransport => Refusal::SipsOverInsecureTransport {
                agent: ctx.contact_host.to_string(),
            },
            SipError::UnsupportedMediaType => Refusal::UnsupportedMediaType {
                accept: ctx.accepted_content_types.join(", "),
            },
            SipError::BadExtension(tags) => Refusal::BadExtension(tags.clone()),
            SipError::NotAcceptable => Refusal::NotAcceptable,
            SipError::NoSuchDialog | SipError::UnknownTransaction => Refusal::NoSuchDialog,
            SipError::ForeignPeer => Refusal::ForeignPeer,
            SipError::CSeqOutOfOrder => Refusal::CSeqOutOfOrder,
            SipError::AppTimeout => Refusal::AppTimeout,
            SipError::AlreadyFinal | SipError::InvalidStatus(_) => Refusal::Internal,
            SipError::RequestPending => Refusal::RequestPending,
            SipError::Overloaded => Refusal::Overloaded {
                retry_after_s: response::SHORT_RETRY_AFTER_S,
            },
        }
    }

    /// The SIP status code and default reason phrase for this error (through
    /// [`Refusal::response`], the single mapping to status codes).
    pub fn status(&self) -> (u16, &'static str) {
        let r = self.refusal(&RefusalContext::default()).response();
        (r.status, r.phrase)
    }

    /// Reason phrase for the wire: the default phrase, plus the specific problem for 400s
    /// (e.g. `Bad Request - Malformed Via Header`).
    pub fn reason_phrase(&self) -> String {
        self.refusal(&RefusalContext::default()).response().reason
    }
}

/// Deterministic tag / identifier generator (sans-IO: the shell seeds it with randomness,
/// tests with a constant).
#[derive(Debug, Clone)]
pub struct TagGen {
    seed: u64,
    counter: u64,
}

impl TagGen {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// Next tag: 16 lower-case hex digits, unique per generator.
    pub fn next_tag(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        new_tag(self.seed, self.counter)
    }
}

/// A tag from a seed and a counter (SplitMix64 mixing; distinct counters give distinct
/// tags for one seed).
pub fn new_tag(seed: u64, counter: u64) -> String {
    let mut z = seed.wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{z:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_unique_and_deterministic() {
        let mut a = TagGen::new(7);
        let mut b = TagGen::new(7);
        let t1 = a.next_tag();
        assert_eq!(t1, b.next_tag());
        assert_ne!(t1, a.next_tag());
        assert_ne!(new_tag(1, 1), new_tag(2, 1));
    }

    #[test]
    fn status_mapping() {
        assert_eq!(SipError::MethodNotAllowed.status().0, 405);
        assert_eq!(SipError::RequestPending.status().0, 491);
        assert_eq!(
            SipError::Parse(ParseError::BadHeader("Via")).reason_phrase(),
            "Bad Request - Malformed Via Header"
        );
    }
}
