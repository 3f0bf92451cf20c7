//! SIP message model (RFC 3261 section 7): start line, ordered headers, body.
//!
//! Accessors never panic; they return `Option`/`Result` and parse header values lazily
//! with the grammar helpers in [`super::parse`].

use std::fmt;
use std::str::FromStr;

use super::parse::{self, ContentType, NameAddr, ParseError, Via};

/// A SIP request method. Unknown methods are kept verbatim in [`Method::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261)
    Invite,
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// OPTIONS (RFC 3261)
    Options,
    /// UPDATE (RFC 3311)
    Update,
    /// INFO (RFC 6086)
    Info,
    /// REGISTER (RFC 3261)
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any other (extension) method, case preserved.
    Other(String),
}

impl Method {
    /// The method name as it appears on the wire (methods are case-sensitive).
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl FromStr for Method {
    type Err = ParseError;
    /// Parses a method token (case-sensitive, RFC 3261 7.1). Fails on non-token input.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if !parse::is_token(s) {
            return Err(ParseError::BadMethod);
        }
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`
    Request {
        /// Request method.
        method: Method,
        /// Request-URI, verbatim.
        uri: String,
        /// Protocol version, e.g. `SIP/2.0`.
        version: String,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`
    Response {
        /// Status code 100..=699.
        status: u16,
        /// Reason phrase (may be empty; UTF-8, lossily decoded).
        reason: String,
        /// Protocol version, e.g. `SIP/2.0`.
        version: String,
    },
}

/// Compact header forms (RFC 3261 7.3.3 and extensions) mapped to full names.
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("n", "Identity-Info"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Well-known header names in their canonical spelling.
const CANONICAL: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Normalise a header name: compact forms become full names, well-known names get their
/// canonical spelling, others are kept as written.
pub fn normalize_name(name: &str) -> String {
    if name.len() == 1 {
        if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
            return (*full).to_string();
        }
    }
    if let Some(c) = CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        return (*c).to_string();
    }
    name.to_string()
}

/// Ordered header list. Names are normalised on insertion (compact → full); lookup is
/// case-insensitive. Each entry is one header line (after unfolding), value trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a header line (name normalised).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.entries.push((normalize_name(name), value.into()));
    }

    /// First value of `name` (case-insensitive, compact forms accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        let n = normalize_name(name);
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&n))
            .map(|(_, v)| v.as_str())
    }

    /// All header lines named `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let n = normalize_name(name);
        self.entries
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&n))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Values of a comma-list header: every line split at top-level commas (outside
    /// quotes and `<>`), trimmed, empty elements dropped.
    pub fn get_list(&self, name: &str) -> Vec<&str> {
        self.get_all(name)
            .into_iter()
            .flat_map(parse::split_list)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Number of header lines named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).len()
    }

    /// Remove every header line named `name`.
    pub fn remove(&mut self, name: &str) {
        let n = normalize_name(name);
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(&n));
    }

    /// All header lines in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A parsed SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Header lines in order.
    pub headers: Headers,
    /// Body octets (exactly Content-Length octets once parsed).
    pub body: Vec<u8>,
}

impl Message {
    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// Request method, `None` for responses.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// Request-URI, `None` for responses.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Status code, `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// SIP version string of the start line.
    pub fn version(&self) -> &str {
        match &self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => version,
        }
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// All lines of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name)
    }

    /// Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID").filter(|s| !s.is_empty())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, Method), ParseError> {
        let v = self.header("CSeq").ok_or(ParseError::Missing("CSeq"))?;
        parse::parse_cseq(v)
    }

    /// Parsed From header.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        parse::parse_name_addr(self.header("From").ok_or(ParseError::Missing("From"))?)
    }

    /// Parsed To header.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        parse::parse_name_addr(self.header("To").ok_or(ParseError::Missing("To"))?)
    }

    /// The From tag, if present and parseable.
    pub fn from_tag(&self) -> Option<String> {
        self.from().ok()?.tag().map(str::to_string)
    }

    /// The To tag, if present and parseable.
    pub fn to_tag(&self) -> Option<String> {
        self.to().ok()?.tag().map(str::to_string)
    }

    /// All Via values (split at commas), topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        let mut out = Vec::new();
        for line in self.header_all("Via") {
            out.extend(parse::parse_via(line)?);
        }
        Ok(out)
    }

    /// Topmost Via (sent-by, branch, received/rport params).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let line = self.header("Via").ok_or(ParseError::Missing("Via"))?;
        parse::parse_via(line)?
            .into_iter()
            .next()
            .ok_or(ParseError::BadHeader("Via"))
    }

    /// Parsed Content-Type, `None` if absent.
    pub fn content_type(&self) -> Option<Result<ContentType, ParseError>> {
        self.header("Content-Type").map(parse::parse_content_type)
    }

    /// Content-Length value, `Ok(None)` if absent; error if repeated or not a number.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let all = self.header_all("Content-Length");
        match all.as_slice() {
            [] => Ok(None),
            [one] => parse::parse_content_length(one).map(Some),
            _ => Err(ParseError::Multiple("Content-Length")),
        }
    }

    /// Max-Forwards value, `Ok(None)` if absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        match self.header("Max-Forwards") {
            None => Ok(None),
            Some(v) => {
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::BadHeader("Max-Forwards"));
                }
                let trimmed = v.trim_start_matches('0');
                if trimmed.len() > 3 {
                    return Err(ParseError::BadHeader("Max-Forwards"));
                }
                let n: u32 = if trimmed.is_empty() {
                    0
                } else {
                    trimmed
                        .parse()
                        .map_err(|_| ParseError::BadHeader("Max-Forwards"))?
                };
                u8::try_from(n)
                    .map(Some)
                    .map_err(|_| ParseError::BadHeader("Max-Forwards"))
            }
        }
    }

    /// Option tags in Require.
    pub fn require(&self) -> Vec<&str> {
        self.headers.get_list("Require")
    }

    /// Option tags in Supported (compact `k` included).
    pub fn supported(&self) -> Vec<&str> {
        self.headers.get_list("Supported")
    }

    /// First Contact (name-addr), `None` if absent; `*` is reported as an error.
    pub fn contact(&self) -> Option<Result<NameAddr, ParseError>> {
        let first = self.headers.get_list("Contact").into_iter().next()?;
        Some(parse::parse_name_addr(first))
    }

    /// Serialise. Content-Length is always rewritten to the body length and placed last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                out.extend_from_slice(
                    format!("{} {} {}\r\n", method.as_str(), uri, version).as_bytes(),
                );
            }
            StartLine::Response {
                status,
                reason,
                version,
            } => {
                out.extend_from_slice(format!("{version} {status} {reason}\r\n").as_bytes());
            }
        }
        for (k, v) in self.headers.iter() {
            if k.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        let mut h = Headers::new();
        h.push("i", "abc");
        h.push("VIA", "SIP/2.0/UDP a");
        h.push("v", "SIP/2.0/UDP b, SIP/2.0/UDP c");
        assert_eq!(h.get("call-id"), Some("abc"));
        assert_eq!(h.get("I"), Some("abc"));
        assert_eq!(h.get_all("via").len(), 2);
        assert_eq!(h.get_list("Via").len(), 3);
        assert_eq!(h.iter().next().map(|(k, _)| k), Some("Call-ID"));
    }

    #[test]
    fn method_roundtrip() {
        for m in ["INVITE", "ACK", "FOO", "PRACK"] {
            assert_eq!(m.parse::<Method>().unwrap().as_str(), m);
        }
        assert_eq!(
            "invite".parse::<Method>().unwrap(),
            Method::Other("invite".into())
        );
        assert!("IN VITE".parse::<Method>().is_err());
    }

    #[test]
    fn to_bytes_fixes_content_length() {
        let mut headers = Headers::new();
        headers.push("Content-Length", "999");
        headers.push("Call-ID", "x");
        let m = Message {
            start: StartLine::Response {
                status: 200,
                reason: "OK".into(),
                version: "SIP/2.0".into(),
            },
            headers,
            body: b"hello".to_vec(),
        };
        let b = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            b,
            "SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\nhello"
        );
    }
}
