//! SDP data model, helpers and the CRLF serialiser (`Display`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A whole session description (RFC 4566 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `v=` (always 0 in practice; 0 when absent).
    pub version: u32,
    /// `o=`; a placeholder (`- 0 0 IN IP4 0.0.0.0`) when the offer had none.
    pub origin: Origin,
    /// `s=`; may be empty (RFC 5118 §4.8 has `s=`).
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidth: Vec<Bandwidth>,
    /// `t=` lines.
    pub timing: Vec<Timing>,
    /// Session-level `a=` lines in order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections in order.
    pub media: Vec<MediaDescription>,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `r=`, `z=`, `k=`, unknown letters,
    /// and `b=`/`t=` lines whose value did not parse) kept verbatim.
    pub other: Vec<SdpLine>,
}

/// A raw `x=value` line kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpLine {
    /// The type letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Username (`-` when none).
    pub username: String,
    /// Session id, kept as text (some SRCs exceed u64 or use non-digits).
    pub session_id: String,
    /// Session version, kept as text.
    pub session_version: String,
    /// Network type, normally `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// Address or host name as written.
    pub address: String,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            username: "-".into(),
            session_id: "0".into(),
            session_version: "0".into(),
            net_type: "IN".into(),
            addr_type: "IP4".into(),
            address: "0.0.0.0".into(),
        }
    }
}

/// `c=<nettype> <addrtype> <connection-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Network type, normally `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address as written (may carry `/ttl`, may be a host name or garbage such as
    /// `X.X.X.X` in pasted examples).
    pub address: String,
}

impl Connection {
    /// A `c=IN IP4|IP6 <ip>` for a concrete address.
    pub fn from_ip(ip: IpAddr) -> Self {
        Connection {
            net_type: "IN".into(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, if it is one (a multicast `/ttl` suffix is ignored).
    pub fn ip(&self) -> Option<IpAddr> {
        let a = self.address.split('/').next().unwrap_or("");
        a.trim().parse().ok()
    }

    /// RFC 2543-style hold: `0.0.0.0` (or `::`).
    pub fn is_unspecified(&self) -> bool {
        self.ip().map(|ip| ip.is_unspecified()).unwrap_or(false)
    }
}

/// `b=<bwtype>:<bandwidth>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `AS`, `CT`, `TIAS`, …
    pub kind: String,
    /// The value (kbit/s, or bit/s for TIAS).
    pub value: u64,
}

/// `t=<start> <stop>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// NTP start time (0 = unbounded).
    pub start: u64,
    /// NTP stop time (0 = unbounded).
    pub stop: u64,
}

/// `a=<name>[:<value>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name (`rtpmap`, `label`, `sendonly`, …).
    pub name: String,
    /// Value after the first `:`, if any.
    pub value: Option<String>,
}

impl Attribute {
    /// A property attribute without value, e.g. `a=recvonly`.
    pub fn flag(name: &str) -> Self {
        Attribute {
            name: name.into(),
            value: None,
        }
    }

    /// A value attribute, e.g. `a=label:1`.
    pub fn value(name: &str, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, …
    pub media: String,
    /// Transport port (0 = rejected / disabled stream).
    pub port: u16,
    /// `<port>/<count>` suffix.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, …
    pub proto: String,
    /// Format list (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=`.
    pub connection: Option<Connection>,
    /// Media-level `b=`.
    pub bandwidth: Vec<Bandwidth>,
    /// Media-level `a=` lines in order.
    pub attributes: Vec<Attribute>,
    /// Other media-level lines (`i=`, `k=`, unknown) kept verbatim.
    pub other: Vec<SdpLine>,
}

/// Media direction (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attr(name: &str) -> Option<Direction> {
        match name.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// A payload format resolved from the m= line, `a=rtpmap`, `a=fmtp` and the static table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding name as written (`PCMU`, `telephone-event`, `opus`).
    pub encoding: String,
    /// RTP clock rate (8000 for G.722 per RFC 3551).
    pub clock_rate: u32,
    /// Channel count (1 unless the rtpmap says otherwise).
    pub channels: u8,
    /// `a=fmtp` parameters for this payload type.
    pub fmtp: Option<String>,
}

/// RFC 3551 static audio payload types we may meet without an `a=rtpmap`.
fn static_payload(pt: u8) -> Option<(&'static str, u32, u8)> {
    Some(match pt {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        _ => return None,
    })
}

impl MediaDescription {
    /// First value of the attribute `name` (case-insensitive name match).
    pub fn attr(&self, name: &str) -> Option<&str> {
        attr_value(&self.attributes, name)
    }

    /// Whether a property attribute (or any attribute) called `name` is present.
    pub fn has_attr(&self, name: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// `a=label` (RFC 4574), which SIPREC metadata uses to name the stream.
    pub fn label(&self) -> Option<&str> {
        self.attr("label").map(str::trim)
    }

    /// The direction attribute at media level, if any.
    pub fn direction_attr(&self) -> Option<Direction> {
        self.attributes
            .iter()
            .filter(|a| a.value.is_none())
            .find_map(|a| Direction::from_attr(&a.name))
    }

    /// Effective direction: media level, else session level, else sendrecv.
    pub fn direction(&self, session: &SessionDescription) -> Direction {
        self.direction_attr()
            .or_else(|| session.direction_attr())
            .unwrap_or(Direction::SendRecv)
    }

    /// Effective connection: media-level `c=`, else session-level `c=`.
    pub fn connection<'a>(&'a self, session: &'a SessionDescription) -> Option<&'a Connection> {
        self.connection.as_ref().or(session.connection.as_ref())
    }

    /// Effective connection address as an IP (`0.0.0.0` means hold; see [`Connection::is_unspecified`]).
    pub fn connection_addr(&self, session: &SessionDescription) -> Option<IpAddr> {
        self.connection(session).and_then(Connection::ip)
    }

    /// Where the peer says it sends from/receives on: connection address + port, unless
    /// the port is 0 or the address is unspecified/unparsable.
    pub fn remote_addr(&self, session: &SessionDescription) -> Option<SocketAddr> {
        if self.port == 0 {
            return None;
        }
        let ip = self.connection_addr(session)?;
        if ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, self.port))
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        self.attr("ptime").and_then(parse_leading_u32)
    }

    /// `a=maxptime` in milliseconds.
    pub fn maxptime(&self) -> Option<u32> {
        self.attr("maxptime").and_then(parse_leading_u32)
    }

    /// Raw `a=crypto` values (RFC 4568 SDES), in order.
    pub fn crypto(&self) -> Vec<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
            .filter_map(|a| a.value.as_deref())
            .collect()
    }

    /// `a=rtcp-mux` (RFC 5761) present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attr("rtcp-mux")
    }

    /// `a=fmtp` parameters for payload type `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("fmtp"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (p, rest) = split_first_token(v);
                (p.parse::<u8>().ok() == Some(pt)).then(|| rest.trim())
            })
    }

    fn rtpmap(&self, pt: u8) -> Option<(String, u32, u8)> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (p, rest) = split_first_token(v);
                if p.parse::<u8>().ok() != Some(pt) {
                    return None;
                }
                let mut it = rest.trim().split('/');
                let enc = it.next()?.trim();
                if enc.is_empty() {
                    return None;
                }
                let rate = it.next().and_then(|r| r.trim().parse::<u32>().ok())?;
                let ch = it
                    .next()
                    .and_then(|c| c.trim().parse::<u8>().ok())
                    .unwrap_or(1);
                Some((enc.to_string(), rate, ch))
            })
    }

    /// Payload formats in m= line order. Dynamic types come from `a=rtpmap`; static types
    /// (0 PCMU, 8 PCMA, 9 G722, 18 G729, …) are known without one. Formats that are not
    /// numbers or that have no known mapping are skipped.
    pub fn codecs(&self) -> Vec<PayloadFormat> {
        self.formats
            .iter()
            .filter_map(|f| {
                let pt = f.trim().parse::<u8>().ok().filter(|p| *p < 128)?;
                let (encoding, clock_rate, channels) = match self.rtpmap(pt) {
                    Some(m) => m,
                    None => {
                        let (e, r, c) = static_payload(pt)?;
                        (e.to_string(), r, c)
                    }
                };
                Some(PayloadFormat {
                    pt,
                    encoding,
                    clock_rate,
                    channels,
                    fmtp: self.fmtp(pt).map(str::to_string),
                })
            })
            .collect()
    }
}

impl SessionDescription {
    /// First value of the session-level attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        attr_value(&self.attributes, name)
    }

    /// Session-level direction attribute, if any.
    pub fn direction_attr(&self) -> Option<Direction> {
        self.attributes
            .iter()
            .filter(|a| a.value.is_none())
            .find_map(|a| Direction::from_attr(&a.name))
    }

    /// The `a=label` of every m= line, in order (input for
    /// [`crate::siprec::channel_map`]).
    pub fn labels(&self) -> Vec<Option<String>> {
        self.media
            .iter()
            .map(|m| m.label().map(str::to_string))
            .collect()
    }
}

fn attr_value<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .and_then(|a| a.value.as_deref())
}

fn split_first_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(|c: char| c.is_ascii_whitespace()) {
        // `i` comes from `find` on this string and ASCII whitespace is one byte, so both
        // slices are on char boundaries.
        Some(i) => (s.get(..i).unwrap_or(s), s.get(i..).unwrap_or("")),
        None => (s, ""),
    }
}

fn parse_leading_u32(v: &str) -> Option<u32> {
    let v = v.trim();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v.get(..end)?.parse().ok()
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "a={}:{}\r\n", self.name, v),
            None => write!(f, "a={}\r\n", self.name),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c={} {} {}\r\n",
            self.net_type, self.addr_type, self.address
        )
    }
}

impl fmt::Display for SdpLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}\r\n", self.kind, self.value)
    }
}

fn write_other(f: &mut fmt::Formatter<'_>, other: &[SdpLine], kinds: &[char]) -> fmt::Result {
    for l in other.iter().filter(|l| kinds.contains(&l.kind)) {
        write!(f, "{l}")?;
    }
    Ok(())
}

fn write_other_except(
    f: &mut fmt::Formatter<'_>,
    other: &[SdpLine],
    kinds: &[char],
) -> fmt::Result {
    for l in other.iter().filter(|l| !kinds.contains(&l.kind)) {
        write!(f, "{l}")?;
    }
    Ok(())
}

/// Session-level line kinds with a fixed place in RFC 4566 order.
const SESSION_KNOWN: &[char] = &['i', 'u', 'e', 'p', 'b', 't', 'r', 'z', 'k'];

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt_ in &self.formats {
            write!(f, " {fmt_}")?;
        }
        f.write_str("\r\n")?;
        write_other(f, &self.other, &['i'])?;
        if let Some(c) = &self.connection {
            write!(f, "{c}")?;
        }
        for b in &self.bandwidth {
            write!(f, "b={}:{}\r\n", b.kind, b.value)?;
        }
        write_other(f, &self.other, &['b', 'k'])?;
        for a in &self.attributes {
            write!(f, "{a}")?;
        }
        write_other_except(f, &self.other, &['i', 'b', 'k'])
    }
}

/// Serialises in RFC 4566 line order with CRLF line endings.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v={}\r\n", self.version)?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        write_other(f, &self.other, &['i', 'u', 'e', 'p'])?;
        if let Some(c) = &self.connection {
            write!(f, "{c}")?;
        }
        for b in &self.bandwidth {
            write!(f, "b={}:{}\r\n", b.kind, b.value)?;
        }
        write_other(f, &self.other, &['b'])?;
        if self.timing.is_empty() && !self.other.iter().any(|l| l.kind == 't') {
            f.write_str("t=0 0\r\n")?;
        }
        for t in &self.timing {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
        }
        write_other(f, &self.other, &['t', 'r', 'z', 'k'])?;
        for a in &self.attributes {
            write!(f, "{a}")?;
        }
        write_other_except(f, &self.other, SESSION_KNOWN)?;
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::static_payload;
    use crate::media::codec::CODECS;

    #[test]
    fn static_payload_types_agree_with_the_codec_table() {
        for c in CODECS {
            let Some(pt) = c.static_pt else { continue };
            let (name, rate, channels) = static_payload(pt).expect("an RFC 3551 static type");
            assert!(c.has_name(name), "{pt}: {name} vs {c:?}");
            assert!(c.accepts_clock(rate), "{pt}: {rate} vs {c:?}");
            assert_eq!(channels, 1);
        }
    }
}
