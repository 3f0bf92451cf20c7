//! SIP message model (RFC 3261 section 7): start line, ordered headers, body.
//!
//! Plain data and serialisation only: this module depends on no other SIP module. The
//! typed header accessors (`cseq`, `from`, `top_via`, ...), `Headers::get_list` and
//! `FromStr for Method` live with the grammars in `sip::parse`, which builds on this
//! one (one-way dependency). Accessors never panic; they return `Option`/`Result`.

use std::fmt;

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
