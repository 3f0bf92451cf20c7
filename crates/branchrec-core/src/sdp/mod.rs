//! SDP (RFC 4566 / RFC 8866) parsing, serialisation and the RFC 3264 answer a SIPREC
//! recording server gives to a Session Recording Client's offer.
//!
//! Everything here is pure: text in, values out. The parser is deliberately tolerant
//! (CRLF or bare LF, indentation, unknown line types kept, unparsable addresses kept as
//! text) because real SRCs send all sorts of SDP; it only fails on things that make the
//! offer meaningless for us, such as an unreadable `m=` line.
//!
//! ```
//! use branchrec_core::sdp;
//! let offer = sdp::parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
//!     t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n").unwrap();
//! assert_eq!(offer.media[0].label(), Some("1"));
//! ```

mod answer;
pub mod crypto;
mod model;
mod parse;

pub use answer::{
    build_answer, build_answer_with_keys, is_hold, random_key, Answer, AnswerParams,
    NegotiatedStream,
};
pub use crypto::{
    is_sdes_proto, parse_crypto, select_crypto, CryptoAttr, CryptoError, CryptoSelectError,
    SrtpNegotiated,
};
pub use model::{
    Attribute, Bandwidth, Connection, Direction, MediaDescription, Origin, PayloadFormat, SdpLine,
    SessionDescription, Timing,
};
pub use parse::parse;

/// Errors from SDP parsing and answer building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The text contains no SDP lines at all.
    #[error("empty SDP")]
    Empty,
    /// An `m=` line could not be understood (line number is 1-based within the SDP).
    #[error("invalid m= line {line}: {reason}")]
    InvalidMedia {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The answer parameters do not match the offer.
    #[error("answer parameters: {0}")]
    BadParams(String),
}
