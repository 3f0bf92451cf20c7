//! SIP (RFC 3261) for a recording server that is only ever a UAS.
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

pub mod access;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod parse;
pub mod response;
pub mod transaction;

pub use dialog::{DialogId, TerminationReason};
pub use endpoint::{Endpoint, EndpointConfig, Event, Peer, Stats, Transmit, Transport};
pub use message::{Headers, Message, Method, StartLine};
pub use parse::{
    parse_datagram, parse_datagram_lenient, ContentType, NameAddr, ParseError, StreamFramer, Uri,
    Via, MAX_MESSAGE_SIZE,
};
pub use transaction::TxnId;

use thiserror::Error;

/// Errors of the SIP layer. Request rejections carry the reason; [`SipError::status`] is the
/// single place mapping them to SIP status codes.
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
    /// The SIP status code and default reason phrase for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            SipError::Parse(_) | SipError::MissingHeader(_) => (400, "Bad Request"),
            SipError::VersionNotSupported => (505, "Version Not Supported"),
            SipError::MethodNotAllowed => (405, "Method Not Allowed"),
            SipError::UnsupportedUriScheme => (416, "Unsupported URI Scheme"),
            // 480, not 416: we do support sips: (on the TLS listener); 416 would say we
            // cannot handle the scheme at all and invite a downgrade to sip: (RFC 5630).
            SipError::SipsOverInsecureTransport => (480, "Temporarily Unavailable"),
            SipError::UnsupportedMediaType => (415, "Unsupported Media Type"),
            SipError::BadExtension(_) => (420, "Bad Extension"),
            SipError::NotAcceptable => (406, "Not Acceptable"),
            SipError::NoSuchDialog | SipError::UnknownTransaction => {
                (481, "Call/Transaction Does Not Exist")
            }
            SipError::CSeqOutOfOrder
            | SipError::AppTimeout
            | SipError::AlreadyFinal
            | SipError::InvalidStatus(_) => (500, "Server Internal Error"),
            SipError::RequestPending => (491, "Request Pending"),
            SipError::Overloaded => (503, "Service Unavailable"),
        }
    }

    /// Reason phrase for the wire: the default phrase, plus the specific problem for 400s
    /// (e.g. `Bad Request - Malformed Via Header`).
    pub fn reason_phrase(&self) -> String {
        let (_, base) = self.status();
        match self {
            SipError::Parse(e) => format!("{base} - {e}"),
            SipError::MissingHeader(h) => format!("{base} - Missing {h} Header"),
            SipError::CSeqOutOfOrder => format!("{base} - CSeq Out Of Order"),
            _ => base.to_string(),
        }
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
