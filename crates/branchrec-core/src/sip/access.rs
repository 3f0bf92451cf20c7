//! Who may talk SIP to the recorder: source-address allowlists for the plain UDP/TCP
//! listeners, and the SRC identity allowlist of the TLS listener (client certificate
//! subject CN and subjectAltName DNS/URI/IP entries).
//!
//! Pure logic (sans-IO): parsing, matching, refusal counters and a per-peer log limiter.
//! The rustls glue lives in `crate::app::tls`.

use crate::time::Mono;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use thiserror::Error;

/// Errors of this module (configuration values that do not parse).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessError {
    /// An `allowed_sources` entry is not an address or CIDR.
    #[error(
        "`{0}`: not an IP address or CIDR (e.g. \"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\")"
    )]
    BadSource(String),
    /// A CIDR with bits set below its prefix (`10.0.0.1/8`): almost always a typo.
    #[error("`{given}`: host bits set below the prefix; did you mean `{meant}`?")]
    HostBits {
        /// What was written.
        given: String,
        /// The network it denotes.
        meant: String,
    },
    /// An `allowed_identities` entry that cannot match anything.
    #[error("`{0}`: {1}")]
    BadIdentity(String, &'static str),
}

// ---------------------------------------------------------------------------------------
// Source allowlist

/// Source addresses allowed on the plain UDP/TCP listeners. Empty = everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAllowlist {
    nets: Vec<IpNet>,
}

impl SourceAllowlist {
    /// Parse `["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]`. A bare address is a /32 or
    /// /128; a prefix with host bits set is refused (it is a typo more often than not).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AccessError> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            nets.push(parse_net(e.as_ref())?);
        }
        Ok(SourceAllowlist { nets })
    }

    /// True when no list is configured (every source allowed).
    pub fn is_open(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` may send. IPv4-mapped IPv6 sources (`::ffff:10.1.2.3`, as seen on a
    /// dual-stack socket) are matched as the IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The networks, normalised (`127.0.0.1/32`).
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn parse_net(s: &str) -> Result<IpNet, AccessError> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    let net = t
        .parse::<IpNet>()
        .map_err(|_| AccessError::BadSource(s.to_string()))?;
    if net.trunc() != net {
        return Err(AccessError::HostBits {
            given: s.to_string(),
            meant: net.trunc().to_string(),
        });
    }
    Ok(net)
}

// ---------------------------------------------------------------------------------------
// Certificate identities

/// The identities a certificate presents: subject CN(s) and subjectAltName entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentities {
    /// Subject commonName values.
    pub cn: Vec<String>,
    /// dNSName SANs.
    pub dns: Vec<String>,
    /// uniformResourceIdentifier SANs (e.g. `sip:sbc1.example.com`).
    pub uri: Vec<String>,
    /// iPAddress SANs.
    pub ip: Vec<IpAddr>,
}

impl CertIdentities {
    /// Parse a DER certificate. `None` if it is not a well-formed X.509 certificate
    /// (never panics, whatever the bytes).
    pub fn from_der(der: &[u8]) -> Option<CertIdentities> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::SubjectAltName;
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut out = CertIdentities::default();
        const CN: x509_cert::der::asn1::ObjectIdentifier =
            x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
        const SAN: x509_cert::der::asn1::ObjectIdentifier =
            x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == CN {
                    // DirectoryString: UTF8String, PrintableString, IA5String, … — all
                    // ASCII-compatible for host names; anything not UTF-8 is skipped.
                    if let Ok(s) = std::str::from_utf8(atv.value.value()) {
                        out.cn.push(s.to_string());
                    }
                }
            }
        }
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id != SAN {
                continue;
            }
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).ok()?;
            for name in san.0 {
                match name {
                    GeneralName::DnsName(d) => out.dns.push(d.to_string()),
                    GeneralName::UniformResourceIdentifier(u) => out.uri.push(u.to_string()),
                    GeneralName::IpAddress(o) => match o.as_bytes().len() {
                        4 => {
                            let mut a = [0u8; 4];
                            a.copy_from_slice(o.as_bytes());
                            out.ip.push(IpAddr::from(a));
                        }
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(o.as_bytes());
                            out.ip.push(IpAddr::from(a));
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// Every identity as `cn:…`, `dns:…`, `uri:…`, `ip:…` (for logs and error messages).
    pub fn describe(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        v.extend(self.cn.iter().map(|s| format!("cn:{s}")));
        v.extend(self.dns.iter().map(|s| format!("dns:{s}")));
        v.extend(self.uri.iter().map(|s| format!("uri:{s}")));
        v.extend(self.ip.iter().map(|s| format!("ip:{s}")));
        v
    }
}

/// One `allowed_identities` entry.
///
/// - `cn:NAME` — subject commonName, case-insensitive;
/// - `dns:NAME` — a dNSName SAN, case-insensitive; `dns:*.example.com` matches exactly one
///   label in front of `example.com`;
/// - `uri:URI` — a URI SAN (`uri:sip:sbc1.example.com`), scheme and host case-insensitive;
/// - `ip:ADDR` — an iPAddress SAN;
/// - no prefix — any of the above: a host name matches CN, dNSName and a `sip:`/`sips:`
///   URI SAN with that host (RFC 5922 domain identity); an address matches iPAddress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    /// `cn:`
    Cn(String),
    /// `dns:`
    Dns(String),
    /// `uri:`
    Uri(String),
    /// `ip:`
    Ip(IpAddr),
    /// No prefix: host name (or `*.domain`).
    AnyName(String),
}

impl FromStr for IdentityPattern {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, AccessError> {
        let t = s.trim();
        let bad = |why| AccessError::BadIdentity(s.to_string(), why);
        if t.is_empty() {
            return Err(bad("empty identity"));
        }
        let (kind, value) = match t.split_once(':') {
            Some((k, v))
                if ["cn", "dns", "uri", "ip"].contains(&k.to_ascii_lowercase().as_str()) =>
            {
                (Some(k.to_ascii_lowercase()), v.trim())
            }
            _ => (None, t),
        };
        if value.is_empty() {
            return Err(bad("empty value after the prefix"));
        }
        let check_name = |v: &str| -> Result<String, AccessError> {
            let rest = v.strip_prefix("*.").unwrap_or(v);
            if rest.is_empty() || rest.contains('*') {
                return Err(bad(
                    "a wildcard is only allowed as the whole first label (`*.example.com`)",
                ));
            }
            if !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err(bad("not a host name (letters, digits, '-', '.')"));
            }
            Ok(v.to_ascii_lowercase())
        };
        Ok(match kind.as_deref() {
            Some("ip") => IdentityPattern::Ip(
                value
                    .parse::<IpAddr>()
                    .map_err(|_| bad("not an IP address"))?
                    .to_canonical(),
            ),
            Some("uri") => {
                if !value.contains(':') {
                    return Err(bad("a URI needs a scheme (`uri:sip:sbc.example.com`)"));
                }
                IdentityPattern::Uri(value.to_string())
            }
            Some("cn") => IdentityPattern::Cn(value.to_ascii_lowercase()),
            Some(_) => IdentityPattern::Dns(check_name(value)?),
            None => match value.parse::<IpAddr>() {
                Ok(ip) => IdentityPattern::Ip(ip.to_canonical()),
                Err(_) => IdentityPattern::AnyName(check_name(value)?),
            },
        })
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityPattern::Cn(s) => write!(f, "cn:{s}"),
            IdentityPattern::Dns(s) => write!(f, "dns:{s}"),
            IdentityPattern::Uri(s) => write!(f, "uri:{s}"),
            IdentityPattern::Ip(s) => write!(f, "ip:{s}"),
            IdentityPattern::AnyName(s) => f.write_str(s),
        }
    }
}

/// Host name match: case-insensitive, trailing dot ignored, `*.d` = one label + `.d`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(domain) => name.split_once('.').is_some_and(|(label, rest)| {
            !label.is_empty() && !label.contains('*') && rest == domain
        }),
        None => name == pattern,
    }
}

/// `sip:host[:port][;params]` / `sips:…` without a user part → host.
fn sip_domain(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    if rest.contains('@') {
        return None;
    }
    let host = rest.split([';', '?']).next()?;
    let host = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    Some(host)
}

/// URIs equal with scheme and host case-insensitive (user part exact).
fn uri_matches(pattern: &str, uri: &str) -> bool {
    let norm = |u: &str| -> String {
        match u.split_once(':') {
            Some((scheme, rest)) => {
                let (user, host) = match rest.rsplit_once('@') {
                    Some((user, host)) => (format!("{user}@"), host),
                    None => (String::new(), rest),
                };
                format!(
                    "{}:{}{}",
                    scheme.to_ascii_lowercase(),
                    user,
                    host.to_ascii_lowercase()
                )
            }
            None => u.to_string(),
        }
    };
    norm(pattern) == norm(uri)
}

impl IdentityPattern {
    /// Whether a certificate with these identities matches this entry.
    pub fn matches(&self, id: &CertIdentities) -> bool {
        match self {
            IdentityPattern::Cn(p) => id.cn.iter().any(|c| name_matches(p, c)),
            IdentityPattern::Dns(p) => id.dns.iter().any(|d| name_matches(p, d)),
            IdentityPattern::Uri(p) => id.uri.iter().any(|u| uri_matches(p, u)),
            IdentityPattern::Ip(p) => id.ip.iter().any(|i| i.to_canonical() == *p),
            IdentityPattern::AnyName(p) => {
                id.cn.iter().chain(&id.dns).any(|n| name_matches(p, n))
                    || id
                        .uri
                        .iter()
                        .filter_map(|u| sip_domain(u))
                        .any(|h| name_matches(p, h))
            }
        }
    }
}

/// The SRC identities allowed on the TLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityAllowlist {
    patterns: Vec<IdentityPattern>,
}

impl IdentityAllowlist {
    /// Parse the configured entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AccessError> {
        let patterns = entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IdentityAllowlist { patterns })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when there are no entries (which allows nobody).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The first entry the identities match, if any. An empty list matches nothing.
    pub fn find(&self, id: &CertIdentities) -> Option<&IdentityPattern> {
        self.patterns.iter().find(|p| p.matches(id))
    }
}

// ---------------------------------------------------------------------------------------
// Refusals, counters, log limiter

/// Why a TLS connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsRefusal {
    /// The client sent no certificate.
    NoCertificate,
    /// The chain does not lead to the configured CA (or its signature is wrong).
    UnknownCa,
    /// Certificate expired or not yet valid.
    Expired,
    /// Chain fine, identity not in `allowed_identities`.
    NotAllowlisted,
    /// Any other certificate problem (revoked, wrong key usage, malformed).
    BadCertificate,
    /// The handshake failed for another reason (protocol version, no common cipher,
    /// not TLS at all, connection reset).
    Handshake,
    /// The handshake did not finish within `handshake_timeout_ms`.
    Timeout,
    /// `max_connections` TLS connections were already open.
    TooManyConnections,
}

impl TlsRefusal {
    /// Every reason, in display order.
    pub const ALL: [TlsRefusal; 8] = [
        TlsRefusal::NoCertificate,
        TlsRefusal::UnknownCa,
        TlsRefusal::Expired,
        TlsRefusal::NotAllowlisted,
        TlsRefusal::BadCertificate,
        TlsRefusal::Handshake,
        TlsRefusal::Timeout,
        TlsRefusal::TooManyConnections,
    ];

    /// Stable name (counters, logs, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsRefusal::NoCertificate => "no_certificate",
            TlsRefusal::UnknownCa => "unknown_ca",
            TlsRefusal::Expired => "expired",
            TlsRefusal::NotAllowlisted => "not_allowlisted",
            TlsRefusal::BadCertificate => "bad_certificate",
            TlsRefusal::Handshake => "handshake_failed",
            TlsRefusal::Timeout => "handshake_timeout",
            TlsRefusal::TooManyConnections => "too_many_connections",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Connection counters of the SIP listeners (shared by the socket tasks, read by the
/// control socket).
#[derive(Debug, Default)]
pub struct AccessCounters {
    tls_accepted: AtomicU64,
    tls_refused: [AtomicU64; TlsRefusal::ALL.len()],
    udp_source_denied: AtomicU64,
    tcp_source_denied: AtomicU64,
}

/// A snapshot of [`AccessCounters`] (what `branchrec status` shows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AccessSnapshot {
    /// TLS connections whose handshake and identity check passed.
    pub tls_accepted: u64,
    /// Refused TLS connections by reason (every reason present, 0 included).
    pub tls_refused: std::collections::BTreeMap<String, u64>,
    /// UDP datagrams dropped because their source is not in `allowed_sources`.
    pub udp_source_denied: u64,
    /// TCP connections closed because their source is not in `allowed_sources`.
    pub tcp_source_denied: u64,
}

impl AccessCounters {
    /// One accepted TLS connection.
    pub fn tls_accepted(&self) {
        self.tls_accepted.fetch_add(1, Ordering::Relaxed);
    }
    /// One refused TLS connection.
    pub fn tls_refused(&self, why: TlsRefusal) {
        if let Some(c) = self.tls_refused.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// One UDP datagram from a source not allowed.
    pub fn udp_denied(&self) {
        self.udp_source_denied.fetch_add(1, Ordering::Relaxed);
    }
    /// One TCP connection from a source not allowed.
    pub fn tcp_denied(&self) {
        self.tcp_source_denied.fetch_add(1, Ordering::Relaxed);
    }
    /// Current values.
    pub fn snapshot(&self) -> AccessSnapshot {
        AccessSnapshot {
            tls_accepted: self.tls_accepted.load(Ordering::Relaxed),
            tls_refused: TlsRefusal::ALL
                .iter()
                .map(|r| {
                    let n = self
                        .tls_refused
                        .get(r.index())
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    (r.as_str().to_string(), n)
                })
                .collect(),
            udp_source_denied: self.udp_source_denied.load(Ordering::Relaxed),
            tcp_source_denied: self.tcp_source_denied.load(Ordering::Relaxed),
        }
    }
}

/// Logs a refused peer once per `interval` (per source IP and reason), so a scanner or a
/// misconfigured SBC retrying every second cannot flood the log. Bounded in memory.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    max_peers: usize,
    seen: HashMap<(IpAddr, &'static str), (Mono, u64)>,
}

impl RefusalLog {
    /// A limiter remembering at most `max_peers` (peer, reason) pairs.
    pub fn new(interval: Duration, max_peers: usize) -> Self {
        RefusalLog {
            interval,
            max_peers: max_peers.max(1),
            seen: HashMap::new(),
        }
    }

    /// Record a refusal at `now`. `Some(suppressed)` means: log it now, mentioning that
    /// `suppressed` earlier refusals of this peer and reason were not logged.
    pub fn note(&mut self, now: Mono, peer: IpAddr, reason: &'static str) -> Option<u64> {
        let key = (peer.to_canonical(), reason);
        if let Some((last, suppressed)) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(n);
        }
        if self.seen.len() >= self.max_peers {
            let interval = self.interval;
            self.seen
                .retain(|_, (last, _)| now.saturating_duration_since(*last) < interval);
            if self.seen.len() >= self.max_peers {
                // Still full of active peers: forget the oldest one.
                if let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| *k)
                {
                    self.seen.remove(&oldest);
                }
            }
        }
        self.seen.insert(key, (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_matching() {
        let l =
            SourceAllowlist::parse(&["10.0.0.0/8", "127.0.0.1", " 2001:db8::/32 ", "::1"]).unwrap();
        assert!(l.allows("10.200.3.4".parse().unwrap()));
        assert!(l.allows("127.0.0.1".parse().unwrap()));
        assert!(!l.allows("127.0.0.2".parse().unwrap()));
        assert!(!l.allows("11.0.0.1".parse().unwrap()));
        assert!(l.allows("2001:db8:1::5".parse().unwrap()));
        assert!(!l.allows("2001:db9::5".parse().unwrap()));
        assert!(l.allows("::1".parse().unwrap()));
        // Dual-stack sockets report IPv4 peers as mapped addresses.
        assert!(l.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!l.allows("::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(l.nets()[1].to_string(), "127.0.0.1/32");
        // A mapped address in the list is the IPv4 address.
        let m = SourceAllowlist::parse(&["::ffff:192.0.2.9"]).unwrap();
        assert!(m.allows("192.0.2.9".parse().unwrap()));
        assert!(SourceAllowlist::parse(&["0.0.0.0/0"])
            .unwrap()
            .allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn empty_source_list_allows_everyone() {
        let l = SourceAllowlist::parse::<&str>(&[]).unwrap();
        assert!(l.is_open());
        assert!(l.allows("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn bad_cidrs_are_explained() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "ten",
            "",
            "10.0.0.0/",
            "fe80::/129",
            "1.2.3.4/8/9",
        ] {
            let e = SourceAllowlist::parse(&[bad]).unwrap_err();
            assert!(matches!(e, AccessError::BadSource(_)), "{bad}: {e}");
        }
        let e = SourceAllowlist::parse(&["10.0.0.1/8"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.0.0.1/8`: host bits set below the prefix; did you mean `10.0.0.0/8`?"
        );
    }

    fn ids() -> CertIdentities {
        CertIdentities {
            cn: vec!["SBC1.Example.com".into()],
            dns: vec!["sbc1.example.com".into(), "sbc-a.site.example.net".into()],
            uri: vec!["sip:SBC.example.org".into(), "sip:rec@host.example".into()],
            ip: vec![
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
        }
    }

    fn allow(entries: &[&str]) -> IdentityAllowlist {
        IdentityAllowlist::parse(entries).unwrap()
    }

    #[test]
    fn identity_matching() {
        let id = ids();
        for ok in [
            "sbc1.example.com",
            "SBC1.EXAMPLE.COM.",
            "cn:sbc1.example.com",
            "dns:sbc-a.site.example.net",
            "dns:*.site.example.net",
            "*.example.com",
            "uri:sip:sbc.example.org",
            "uri:SIP:rec@HOST.example",
            "sbc.example.org",
            "ip:192.0.2.10",
            "192.0.2.10",
            "2001:db8:0::10",
            "ip:::ffff:192.0.2.10",
        ] {
            assert!(allow(&[ok]).find(&id).is_some(), "{ok} should match");
        }
        for no in [
            "sbc2.example.com",
            "example.com",
            "dns:*.example.org",
            "dns:*.example.net",
            "cn:sbc-a.site.example.net",
            "dns:sbc.example.org",
            "uri:sip:REC@host.example",
            "host.example",
            "192.0.2.11",
            "uri:sips:sbc.example.org",
        ] {
            assert!(allow(&[no]).find(&id).is_none(), "{no} must not match");
        }
        assert!(IdentityAllowlist::default().find(&id).is_none());
        let l = allow(&["nope.example", "ip:192.0.2.10"]);
        assert_eq!(
            l.find(&id).map(|p| p.to_string()).as_deref(),
            Some("ip:192.0.2.10")
        );
    }

    #[test]
    fn wildcard_is_one_label_only() {
        let id = CertIdentities {
            dns: vec!["a.b.example.com".into(), "*.evil.example.com".into()],
            ..Default::default()
        };
        assert!(allow(&["*.example.com"]).find(&id).is_none());
        assert!(allow(&["*.b.example.com"]).find(&id).is_some());
        // A wildcard in the certificate is not a name that matches a pattern.
        assert!(allow(&["*.evil.example.com"]).find(&id).is_none());
        assert!(allow(&["x.evil.example.com"]).find(&id).is_none());
    }

    #[test]
    fn bad_identities_are_refused() {
        for bad in [
            "",
            "dns:",
            "ip:300.1.1.1",
            "uri:nocolon",
            "a*.example.com",
            "*.",
            "dns:sb c",
            "x.*.com",
        ] {
            assert!(
                IdentityAllowlist::parse(&[bad]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn cert_identities_from_a_real_certificate() {
        let mut p = rcgen::CertificateParams::new(vec!["sbc1.example.com".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::Ia5String::try_from("sip:sbc1.example.com").unwrap(),
        ));
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("192.0.2.10".parse().unwrap()));
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("2001:db8::1".parse().unwrap()));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "SBC One");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let id = CertIdentities::from_der(cert.der()).unwrap();
        assert_eq!(id.cn, ["SBC One"]);
        assert_eq!(id.dns, ["sbc1.example.com"]);
        assert_eq!(id.uri, ["sip:sbc1.example.com"]);
        assert_eq!(
            id.ip,
            [
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(id.describe().len(), 5);
    }

    #[test]
    fn cert_parsing_never_panics() {
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "a");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().to_vec();
        // Every truncation, and every single-byte corruption, of a real certificate.
        for n in 0..der.len() {
            let _ = CertIdentities::from_der(&der[..n]);
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..der.len() {
            let mut d = der.clone();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            d[i] = (x & 0xff) as u8;
            let _ = CertIdentities::from_der(&d);
        }
        for len in [0usize, 1, 2, 5, 64, 1000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(CertIdentities::from_der(&junk).is_none());
        }
    }

    #[test]
    fn refusal_log_is_rate_limited_per_peer() {
        let t0 = Mono::from_secs(1_000);
        let mut l = RefusalLog::new(Duration::from_secs(60), 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.note(t0, a, "unknown_ca"), Some(0));
        assert_eq!(l.note(t0 + Duration::from_secs(1), a, "unknown_ca"), None);
        assert_eq!(l.note(t0 + Duration::from_secs(2), a, "unknown_ca"), None);
        assert_eq!(l.note(t0 + Duration::from_secs(2), a, "expired"), Some(0));
        assert_eq!(
            l.note(t0 + Duration::from_secs(61), a, "unknown_ca"),
            Some(2)
        );
        // Bounded: a third pair evicts, never grows past max_peers.
        assert_eq!(
            l.note(t0 + Duration::from_secs(62), b, "unknown_ca"),
            Some(0)
        );
        assert!(l.seen.len() <= 2);
    }

    #[test]
    fn counters_snapshot_lists_every_reason() {
        let c = AccessCounters::default();
        c.tls_refused(TlsRefusal::UnknownCa);
        c.tls_refused(TlsRefusal::UnknownCa);
        c.tls_accepted();
        c.udp_denied();
        let s = c.snapshot();
        assert_eq!(s.tls_accepted, 1);
        assert_eq!(s.tls_refused["unknown_ca"], 2);
        assert_eq!(s.tls_refused["expired"], 0);
        assert_eq!(s.tls_refused.len(), TlsRefusal::ALL.len());
        assert_eq!(s.udp_source_denied, 1);
    }
}
