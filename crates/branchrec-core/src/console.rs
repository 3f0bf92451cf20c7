//! The sans-IO parts of the web compliance console (`branchrec-central serve`,
//! docs/web-console.md): roles and what they may do, TOTP (RFC 6238) with base32 secrets,
//! HTTP `Range` parsing, waveform peaks from decoded PCM, the login limiter and HTML
//! escaping. Time and random bytes come in as arguments.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the console cores.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsoleError {
    /// Not a base32 (RFC 4648) string.
    #[error("invalid base32")]
    Base32,
    /// An unknown role name.
    #[error("unknown role {0:?} (auditor, compliance, supervisor, it, admin)")]
    Role(String),
    /// A `Range` header that cannot be satisfied.
    #[error("range not satisfiable")]
    Range,
    /// A file name that does not fit a ustar header (or is not plain ASCII).
    #[error("file name {0:?} does not fit a tar header")]
    TarName(String),
}

/// A POSIX ustar archive (what `tar -x` reads) of regular files, each `dir/name`, mode
/// 0600, owner 0, modified at `mtime` (unix seconds): for the evidence-bundle download.
/// Names: printable ASCII without `..`, `dir/name` at most 100 bytes.
pub fn ustar(dir: &str, files: &[(&str, &[u8])], mtime: u64) -> Result<Vec<u8>, ConsoleError> {
    fn octal(field: &mut [u8], v: u64) {
        // Zero-padded octal, NUL-terminated, filling the field.
        let n = field.len() - 1;
        let s = format!("{:0w$o}", v, w = n);
        field[..n].copy_from_slice(&s.as_bytes()[s.len() - n..]);
        field[n] = 0;
    }
    let total: usize = files
        .iter()
        .map(|(_, b)| 512 + b.len().div_ceil(512) * 512)
        .sum();
    let mut out = Vec::with_capacity(total + 1024);
    for (name, bytes) in files {
        let path = format!("{dir}/{name}");
        if path.len() > 100
            || name.is_empty()
            || path.contains("..")
            || !path.bytes().all(|c| (0x21..0x7f).contains(&c))
        {
            return Err(ConsoleError::TarName(path));
        }
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut h[100..108], 0o600);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], bytes.len() as u64);
        octal(&mut h[136..148], mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // Checksum: the header's bytes summed with the checksum field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// A console role (docs/web-console.md, *Roles*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Audit log and recording metadata; no audio.
    Auditor,
    /// Search, play, hold, export.
    Compliance,
    /// Search and play within the assigned sites only.
    Supervisor,
    /// The fleet; no recordings.
    It,
    /// Users.
    Admin,
}

/// Something a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Search and read recording metadata.
    Metadata,
    /// Listen (stream) and see the waveform.
    Play,
    /// Download audio or evidence.
    Download,
    /// Cases and legal holds.
    Hold,
    /// Read and verify the central audit log.
    Audit,
    /// Fleet status.
    Fleet,
    /// Users and roles.
    Users,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 5] = [
        Role::Auditor,
        Role::Compliance,
        Role::Supervisor,
        Role::It,
        Role::Admin,
    ];

    /// The name used in config, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Compliance => "compliance",
            Role::Supervisor => "supervisor",
            Role::It => "it",
            Role::Admin => "admin",
        }
    }

    /// Parse a role name.
    pub fn parse(s: &str) -> Result<Role, ConsoleError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ConsoleError::Role(s.to_string()))
    }

    /// Whether the role grants `p` at all (a supervisor's site scope is checked
    /// separately with [`Role::site_scoped`]).
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Auditor => matches!(p, Metadata | Audit),
            Role::Compliance => matches!(p, Metadata | Play | Download | Hold | Audit),
            Role::Supervisor => matches!(p, Metadata | Play),
            Role::It => matches!(p, Fleet),
            Role::Admin => matches!(p, Users),
        }
    }

    /// Recordings are limited to the user's assigned sites.
    pub fn site_scoped(self) -> bool {
        self == Role::Supervisor
    }
}

/// Whether a user with `role` and assigned `sites` may do `p` on a recording of `site`.
pub fn may_on_recording(role: Role, sites: &[String], p: Permission, site: &str) -> bool {
    role.allows(p) && (!role.site_scoped() || sites.iter().any(|s| s == site))
}

// ---------------------------------------------------------------------------------------
// base32 and TOTP

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what authenticator apps take).
pub fn base32_encode(b: &[u8]) -> String {
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &x in b {
        acc = (acc << 8) | u32::from(x);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decode base32 (case-insensitive, spaces and `=` padding ignored).
pub fn base32_decode(s: &str) -> Result<Vec<u8>, ConsoleError> {
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let c = c.to_ascii_uppercase() as u8;
        let v = B32
            .iter()
            .position(|&x| x == c)
            .ok_or(ConsoleError::Base32)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// TOTP time step (RFC 6238 default 30 s).
pub const TOTP_STEP_S: u64 = 30;

/// The 6-digit HOTP (RFC 4226, HMAC-SHA1) value of `counter`.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    // Cannot fail: HMAC accepts keys of any length (longer ones are hashed first).
    let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(&counter.to_be_bytes());
    let h = m.finalize().into_bytes();
    let o = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[o] & 0x7f) << 24)
        | (u32::from(h[o + 1]) << 16)
        | (u32::from(h[o + 2]) << 8)
        | u32::from(h[o + 3]);
    bin % 1_000_000
}

/// The TOTP value at unix time `now_s`.
pub fn totp(secret: &[u8], now_s: u64) -> u32 {
    hotp(secret, now_s / TOTP_STEP_S)
}

/// Check `code` at `now_s`, accepting one step of clock skew either way, and refusing
/// any step at or before `last_step` (a code is good once). Returns the step used.
pub fn totp_check(secret: &[u8], code: &str, now_s: u64, last_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let want: u32 = code.parse().ok()?;
    let step = now_s / TOTP_STEP_S;
    for s in [step.saturating_sub(1), step, step + 1] {
        if last_step.is_some_and(|l| s <= l) {
            continue;
        }
        let v = hotp(secret, s);
        if subtle::ConstantTimeEq::ct_eq(&v.to_be_bytes()[..], &want.to_be_bytes()[..]).into() {
            return Some(s);
        }
    }
    None
}

/// The `otpauth://` URI an authenticator app enrols from.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(account),
        base32_encode(secret),
        enc(issuer)
    )
}

// ---------------------------------------------------------------------------------------
// HTTP Range

/// A byte range `start..=end` of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// Parse a `Range` header (RFC 9110 §14.2) for a body of `len` bytes: `Ok(None)` means
/// serve the whole body (no header, another unit, or several ranges, which we answer
/// whole); `Err(Range)` means 416.
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<ByteRange>, ConsoleError> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(ConsoleError::Range)?;
    let (a, b) = (a.trim(), b.trim());
    if len == 0 {
        return Err(ConsoleError::Range);
    }
    let r = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ConsoleError::Range)?;
        if n == 0 {
            return Err(ConsoleError::Range);
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        let start: u64 = a.parse().map_err(|_| ConsoleError::Range)?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>()
                .map_err(|_| ConsoleError::Range)?
                .min(len - 1)
        };
        if start >= len || end < start {
            return Err(ConsoleError::Range);
        }
        ByteRange { start, end }
    };
    Ok(Some(r))
}

// ---------------------------------------------------------------------------------------
// Waveform

/// Per-channel peaks of interleaved 16-bit PCM: `buckets` (min, max) pairs per channel,
/// normalised to -1..1. Each channel is one lane of the player.
pub fn peaks(interleaved: &[i16], channels: usize, buckets: usize) -> Vec<Vec<(f32, f32)>> {
    let channels = channels.max(1);
    let frames = interleaved.len() / channels;
    let buckets = buckets.max(1).min(frames.max(1));
    let mut out = vec![vec![(0f32, 0f32); buckets]; channels];
    if frames == 0 {
        return out;
    }
    for b in 0..buckets {
        let from = b * frames / buckets;
        let to = ((b + 1) * frames / buckets).max(from + 1).min(frames);
        for (ch, lane) in out.iter_mut().enumerate() {
            let (mut lo, mut hi) = (i16::MAX, i16::MIN);
            for f in from..to {
                let s = interleaved[f * channels + ch];
                lo = lo.min(s);
                hi = hi.max(s);
            }
            lane[b] = (f32::from(lo) / 32768.0, f32::from(hi) / 32768.0);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Login limiter

/// Failed logins per client address in a sliding window: after `max` failures within
/// `window_ms`, further attempts from that address are refused until the oldest ages out.
#[derive(Debug, Clone)]
pub struct LoginLimiter {
    max: usize,
    window_ms: i64,
    failures: std::collections::HashMap<String, std::collections::VecDeque<i64>>,
}

impl LoginLimiter {
    /// A limiter allowing `max` failures per `window_ms`.
    pub fn new(max: usize, window_ms: i64) -> Self {
        LoginLimiter {
            max: max.max(1),
            window_ms,
            failures: Default::default(),
        }
    }

    fn prune(&mut self, now_ms: i64) {
        let w = self.window_ms;
        self.failures.retain(|_, q| {
            while q.front().is_some_and(|&t| t <= now_ms - w) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// Whether `client` may try now.
    pub fn allowed(&mut self, client: &str, now_ms: i64) -> bool {
        self.prune(now_ms);
        self.failures.get(client).map_or(0, |q| q.len()) < self.max
    }

    /// Record a failure of `client`.
    pub fn failed(&mut self, client: &str, now_ms: i64) {
        self.prune(now_ms);
        // Bounded: an address past `max` is refused before it gets here.
        let q = self.failures.entry(client.to_string()).or_default();
        if q.len() < self.max * 2 {
            q.push_back(now_ms);
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTML

/// Escape text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_headers_are_well_formed() {
        let t = ustar(
            "rec",
            &[("a.txt", b"hello"), ("b.bin", &[7u8; 600])],
            1_700_000_000,
        )
        .unwrap();
        // header + 1 block, header + 2 blocks, 2 end blocks
        assert_eq!(t.len(), 512 * (2 + 3 + 2));
        assert_eq!(&t[..9], b"rec/a.txt");
        assert_eq!(&t[124..136], b"00000000005\0");
        assert_eq!(&t[257..263], b"ustar\0");
        let mut h = t[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&t[512..517], b"hello");
        assert_eq!(&t[1024..1033], b"rec/b.bin");
        assert_eq!(&t[1024 + 124..1024 + 136], b"00000001130\0");
        assert!(t[t.len() - 1024..].iter().all(|&b| b == 0));
        assert!(ustar("rec", &[("../x", b"")], 0).is_err());
        assert!(ustar("rec", &[(&"x".repeat(97), b"")], 0).is_err());
        assert!(ustar("rec", &[("a b", b"")], 0).is_err());
    }

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", 8 digits there; the
        // 6-digit value is the last six.
        let k = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(totp(k, t), want % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn totp_window_and_replay() {
        let k = b"12345678901234567890";
        let now = 1111111111;
        let code = format!("{:06}", totp(k, now));
        let step = totp_check(k, &code, now, None).unwrap();
        assert_eq!(step, now / 30);
        // Once only.
        assert_eq!(totp_check(k, &code, now, Some(step)), None);
        // One step of skew accepted, two refused.
        let prev = format!("{:06}", totp(k, now - 30));
        assert!(totp_check(k, &prev, now, None).is_some());
        let old = format!("{:06}", totp(k, now - 90));
        assert!(totp_check(k, &old, now, None).is_none());
        assert!(totp_check(k, "12345", now, None).is_none());
        assert!(totp_check(k, "abcdef", now, None).is_none());
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        for n in 0..25 {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&v)).unwrap(), v);
        }
        assert_eq!(base32_decode("1"), Err(ConsoleError::Base32));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(
            parse_range(Some("bytes=0-"), 10).unwrap(),
            Some(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10).unwrap(),
            Some(ByteRange { start: 2, end: 4 })
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10).unwrap(),
            Some(ByteRange { start: 5, end: 9 })
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10).unwrap(),
            Some(ByteRange { start: 7, end: 9 })
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(ConsoleError::Range));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(ConsoleError::Range));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10).unwrap(), None);
    }

    #[test]
    fn roles() {
        let london = vec!["london".to_string()];
        assert!(may_on_recording(
            Role::Supervisor,
            &london,
            Permission::Play,
            "london"
        ));
        assert!(!may_on_recording(
            Role::Supervisor,
            &london,
            Permission::Metadata,
            "paris"
        ));
        assert!(!Role::Auditor.allows(Permission::Play));
        assert!(Role::Auditor.allows(Permission::Audit));
        assert!(!Role::It.allows(Permission::Metadata));
        assert!(Role::Compliance.allows(Permission::Download));
        assert_eq!(Role::parse("it").unwrap(), Role::It);
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn peaks_per_lane() {
        // Channel 0 silent, channel 1 a full-scale square.
        let pcm: Vec<i16> = (0..800)
            .flat_map(|i| [0i16, if i % 2 == 0 { 32767 } else { -32768 }])
            .collect();
        let p = peaks(&pcm, 2, 4);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], vec![(0.0, 0.0); 4]);
        assert!(p[1].iter().all(|&(lo, hi)| lo == -1.0 && hi > 0.99));
    }

    #[test]
    fn limiter() {
        let mut l = LoginLimiter::new(3, 1000);
        for t in 0..3 {
            assert!(l.allowed("a", t));
            l.failed("a", t);
        }
        assert!(!l.allowed("a", 10));
        assert!(l.allowed("b", 10));
        assert!(l.allowed("a", 1001));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
