//! The daemon's configuration: one TOML file, unknown keys rejected, validated on load.
//!
//! Every field has a default, so `branchrec run` with no file records on loopback into
//! `./branchrec-data`. The commented reference copy is `etc/branchrec.toml`; a test keeps
//! it loading so the two cannot drift apart.

use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// Why a configuration could not be used. The message names the file, key and problem.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File that was read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// File that was parsed.
        path: PathBuf,
        /// What toml/serde said, with line and column.
        message: String,
    },
    /// The values parse but make no sense together.
    #[error("config {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `media.rtp_ports`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP signalling.
    pub sip: SipConfig,
    /// RTP reception and the media pipeline.
    pub media: MediaConfig,
    /// Where and how recordings are stored.
    pub storage: StorageConfig,
    /// Key custody (TPM or software).
    pub keys: KeysConfig,
    /// Logging.
    pub log: LogConfig,
    /// Defaults of the recording rules and the site's own numbers.
    pub policy: crate::lifecycle::PolicyConfig,
    /// Retention classes, sweeping, disk watermarks.
    pub retention: crate::lifecycle::RetentionConfig,
    /// Ordered recording rules (`[[rules]]`), first match wins.
    pub rules: Vec<crate::lifecycle::RuleConfig>,
    /// Passive recording from mirrored traffic (off unless interfaces are listed).
    pub capture: CaptureConfig,
    /// Upload to the central archive and status reporting.
    pub uplink: crate::uplink::UplinkConfig,
    /// Status LEDs and the legal-hold button.
    pub board: crate::board::BoardConfig,
    /// The audit log: coverage by signed heads, the two-person rule.
    pub audit: AuditConfig,
    /// Development-only switches (each one weakens the recorder; never on a box).
    pub development: DevelopmentConfig,
    /// What personal data the catalogue keeps.
    pub privacy: PrivacyConfig,
    /// Commands from headquarters (`_commands/<box>/` in the archive).
    pub central: CentralCommandsConfig,
    /// Recording assurance: verdict thresholds and alarms (docs/assurance.md).
    pub assurance: AssuranceConfig,
    /// Trusted time: clock-state bound, step detection, RFC 3161 time stamps.
    pub time: TimeConfig,
}

/// `[assurance]` (docs/assurance.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssuranceConfig {
    /// A 20 ms frame above this level is voice, dBFS (−90 … −10).
    pub voice_dbfs: f64,
    /// A channel with voice in less of the call than this share is silent (0 … 1).
    pub min_voice_ratio: f64,
    /// Media gaps plus lost packets above this share of the call make it `partial`.
    pub max_gap_ratio: f64,
    /// One-way network delay assumed by the E-model, ms.
    pub assumed_delay_ms: u32,
    /// Alarm thresholds: `{ verdict, count, window_s }`.
    pub alarms: Vec<AssuranceAlarmConfig>,
}

/// One `[[assurance.alarms]]` threshold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssuranceAlarmConfig {
    /// The verdict counted (`one_way`, `silent`, `no_media`, `partial`, `refused`,
    /// `not_recorded`, `missed`).
    pub verdict: String,
    /// Calls that raise the alarm (≥ 1).
    pub count: u32,
    /// Within this many seconds (5 … 86400).
    pub window_s: u32,
}

impl Default for AssuranceConfig {
    fn default() -> Self {
        let p = crate::assurance::VerdictPolicy::default();
        AssuranceConfig {
            voice_dbfs: p.voice_dbfs,
            min_voice_ratio: p.min_voice_ratio,
            max_gap_ratio: p.max_gap_ratio,
            assumed_delay_ms: p.assumed_delay_ms as u32,
            alarms: crate::assurance::alarms::default_rules()
                .into_iter()
                .map(|r| AssuranceAlarmConfig {
                    verdict: r.verdict.as_str().into(),
                    count: r.count,
                    window_s: r.window.as_secs() as u32,
                })
                .collect(),
        }
    }
}

impl AssuranceConfig {
    /// The core's verdict thresholds.
    pub fn policy(&self) -> crate::assurance::VerdictPolicy {
        crate::assurance::VerdictPolicy {
            voice_dbfs: self.voice_dbfs,
            min_voice_ratio: self.min_voice_ratio,
            max_gap_ratio: self.max_gap_ratio,
            assumed_delay_ms: f64::from(self.assumed_delay_ms),
        }
    }

    /// The alarm rules (validated on load).
    pub fn rules(&self) -> Vec<crate::assurance::alarms::AlarmRule> {
        self.alarms
            .iter()
            .filter_map(|a| {
                Some(crate::assurance::alarms::AlarmRule {
                    verdict: crate::assurance::Verdict::parse(&a.verdict)?,
                    count: a.count,
                    window: Duration::from_secs(u64::from(a.window_s)),
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !(-90.0..=-10.0).contains(&self.voice_dbfs) {
            return Err(("voice_dbfs".into(), "must be between -90 and -10".into()));
        }
        if !(0.0..=1.0).contains(&self.min_voice_ratio) {
            return Err(("min_voice_ratio".into(), "must be between 0 and 1".into()));
        }
        if !(0.0..=1.0).contains(&self.max_gap_ratio) {
            return Err(("max_gap_ratio".into(), "must be between 0 and 1".into()));
        }
        if self.assumed_delay_ms > 2000 {
            return Err(("assumed_delay_ms".into(), "must be at most 2000".into()));
        }
        for (i, a) in self.alarms.iter().enumerate() {
            let k = format!("alarms[{i}]");
            match crate::assurance::Verdict::parse(&a.verdict) {
                None | Some(crate::assurance::Verdict::Recorded) => {
                    return Err((
                        format!("{k}.verdict"),
                        format!("`{}` is not a verdict an alarm can count", a.verdict),
                    ))
                }
                Some(_) => {}
            }
            if a.count == 0 {
                return Err((format!("{k}.count"), "must be at least 1".into()));
            }
            if !(5..=86_400).contains(&a.window_s) {
                return Err((
                    format!("{k}.window_s"),
                    "must be between 5 and 86400".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `[time]` (docs/assurance.md, "Trusted time").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// A recording made while the clock is unsynchronised or its error bound (adjtimex
    /// `maxerror`) or offset is above this is flagged and alarmed, ms (1 … 60000).
    pub max_error_ms: u32,
    /// The wall clock moving this much more or less than the monotonic clock between two
    /// looks during a call is a step (an event with its size), ms (≥ 50).
    pub step_threshold_ms: u32,
    /// NTP servers for the box image's time daemon (chrony).
    pub servers: Vec<String>,
    /// When an unsynchronised clock raises the `time_unsync` alarm: `always`, `never`,
    /// or `auto` (the default): always when `servers` is set, else only after the clock
    /// was seen synchronised since start. Recordings are flagged in every mode.
    pub alarm: crate::assurance::alarms::TimeAlarmMode,
    /// RFC 3161 time-stamp authority (`http://…/tsr`): every manifest gets a token,
    /// fetched by the uplink loop (queued while offline). Off when unset.
    pub tsa_url: Option<String>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            max_error_ms: 100,
            step_threshold_ms: 1000,
            servers: Vec::new(),
            alarm: crate::assurance::alarms::TimeAlarmMode::Auto,
            tsa_url: None,
        }
    }
}

impl TimeConfig {
    /// The alarm mode in force (`auto` with servers configured is `always`).
    pub fn alarm_mode(&self) -> crate::assurance::alarms::TimeAlarmMode {
        use crate::assurance::alarms::TimeAlarmMode;
        match self.alarm {
            TimeAlarmMode::Auto if !self.servers.is_empty() => TimeAlarmMode::Always,
            m => m,
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=60_000).contains(&self.max_error_ms) {
            return Err(("max_error_ms".into(), "must be between 1 and 60000".into()));
        }
        if self.step_threshold_ms < 50 {
            return Err(("step_threshold_ms".into(), "must be at least 50".into()));
        }
        if let Some(u) = &self.tsa_url {
            let ok = reqwest::Url::parse(u)
                .map(|x| matches!(x.scheme(), "http" | "https") && x.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(("tsa_url".into(), format!("`{u}` is not an http(s) URL")));
            }
        }
        Ok(())
    }
}

/// `[central]`: commands from headquarters, polled from the archive (docs/central.md,
/// "Commands to boxes"). Off unless `command_public_key` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CentralCommandsConfig {
    /// The central command key's public half (PEM SubjectPublicKeyInfo, Ed25519). Only
    /// documents signed by it are executed.
    pub command_public_key: Option<PathBuf>,
    /// How often the uplink looks for new commands, s.
    pub poll_interval_s: u32,
}

impl Default for CentralCommandsConfig {
    fn default() -> Self {
        CentralCommandsConfig {
            command_public_key: None,
            poll_interval_s: 60,
        }
    }
}

impl CentralCommandsConfig {
    /// The configured command public key, loaded and checked.
    pub fn load_public_key(&self) -> Result<Option<[u8; 32]>, String> {
        let Some(p) = &self.command_public_key else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        crate::vault::signing::ed25519_public_from_pem(&pem)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `audit verify` fails when an entry is older than this and still not covered by a
    /// signed head (the daemon signs every `retention.audit_sign_interval_s`).
    pub max_unsigned_s: u32,
    /// Releasing a legal hold needs a second, different operator within the window.
    pub two_person_hold_release: bool,
    /// Deleting a recording by request (`recordings delete`) needs a second operator.
    pub two_person_delete: bool,
    /// How long the first operator's request waits for the second operator, seconds.
    pub two_person_window_s: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_unsigned_s: 900,
            two_person_hold_release: true,
            two_person_delete: false,
            two_person_window_s: 3600,
        }
    }
}

/// `[development]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevelopmentConfig {
    /// Allow a clock that is not the real one: `retention sweep --now` and the
    /// `BRANCHREC_TEST_CLOCK_OFFSET_S` environment variable. Refused otherwise. Every
    /// audit entry written on such a clock carries `"dev_clock"` in its details.
    pub clock_override: bool,
}

/// `[privacy]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Keep the digits of DTMF events (PINs and card numbers typed to IVRs). Default
    /// false: a `dtmf` event keeps its time, duration and volume, the digit is masked.
    pub dtmf_digits: bool,
}

/// `[capture]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Interfaces to capture on (a SPAN/mirror port); empty = no live capture.
    pub interfaces: Vec<String>,
    /// BPF filter applied in the kernel; empty = every frame. Keep IP fragments and
    /// tunnels in mind: a filter such as `udp` drops non-first fragments.
    pub bpf_filter: String,
    /// Put the interfaces in promiscuous mode.
    pub promiscuous: bool,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Kernel capture buffer per interface, MiB.
    pub buffer_mb: u32,
    /// A recorded call without BYE is closed after this many seconds without RTP.
    pub media_timeout_s: u32,
    /// Most calls followed at once.
    pub max_calls: usize,
    /// Record only calls where a party's URI or number matches one of these globs
    /// (`*` wildcard); empty = every call.
    pub allow: Vec<String>,
    /// Never record calls where a party matches one of these (wins over `allow`).
    pub deny: Vec<String>,
    /// Seconds between capture statistics (kernel drops included) in the log and in
    /// `<data_dir>/capture-stats.json`.
    pub stats_interval_s: u32,
    /// Detect RTP flows that no captured SDP announced (mirror started mid-call,
    /// signalling not mirrored) and record them as `unsignalled` (no participants).
    pub unsignalled_rtp: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            bpf_filter: String::new(),
            promiscuous: true,
            snaplen: 65_535,
            buffer_mb: 32,
            media_timeout_s: 60,
            max_calls: 2000,
            allow: Vec::new(),
            deny: Vec::new(),
            stats_interval_s: 10,
            unsignalled_rtp: false,
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Listeners, `udp:ADDR:PORT` or `tcp:ADDR:PORT`.
    pub listen: Vec<Listen>,
    /// Value of the `Server` header.
    pub user_agent: String,
    /// Most calls recorded at once; further INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    /// Cap on live SIP server transactions (16 ..= 262144). Beyond it new requests get a
    /// stateless 503 (counted, WARN logged at most every 10 s); a BYE or CANCEL of a live
    /// call is never refused. An answered INVITE holds its slot 64·T1 (32 s), so this
    /// bounds sustained set-up to about `max_transactions / 32` calls per second.
    pub max_transactions: usize,
    /// Seconds to put in `Retry-After` when we cannot record.
    pub retry_after_s: u32,
    /// Sources allowed on the plain UDP/TCP listeners: addresses or CIDRs, IPv4 and IPv6
    /// (`["10.0.0.0/8", "127.0.0.1"]`). Empty = every source. Others are dropped without
    /// an answer (UDP) or disconnected (TCP), and counted.
    pub allowed_sources: Vec<String>,
    /// SIP over TLS (`[sip.tls]`); absent = no TLS listener.
    pub tls: Option<SipTlsConfig>,
    /// Session timers (RFC 4028): the longest session interval we accept (a longer
    /// Session-Expires is lowered to it), seconds.
    pub session_expires_s: u32,
    /// Session timers: the shortest session interval we accept (a shorter one is answered
    /// 422 with this as Min-SE), seconds.
    pub min_se_s: u32,
    /// RFC 7865 metadata documents kept per call (INVITE, re-INVITE, UPDATE, INFO); a
    /// request with one more is refused 403 and counted.
    pub max_metadata_versions: usize,
    /// Bytes of metadata kept per call, all documents together; beyond, refused 403.
    pub max_metadata_bytes: usize,
    /// Limits against one misbehaving or hostile peer (`[sip.limits]`).
    pub limits: SipLimits,
}

impl SipConfig {
    /// The SRS core's metadata caps.
    pub fn metadata_caps(&self) -> crate::siprec::srs::MetadataCaps {
        crate::siprec::srs::MetadataCaps {
            max_versions: self.max_metadata_versions,
            max_bytes: self.max_metadata_bytes,
        }
    }
}

/// `[sip.limits]`: what one peer may take (issue #12, "limits against one peer").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipLimits {
    /// Streams recorded per call; further audio m-lines are answered with port 0.
    pub max_streams_per_call: usize,
    /// Sustained SIP messages per second from one source not authenticated by TLS;
    /// beyond the burst, messages are dropped unanswered (and counted).
    pub rate_per_source_per_s: u32,
    /// Burst of SIP messages one such source may send above the sustained rate.
    pub burst_per_source: u32,
    /// Sessions from one such source not yet confirmed by ACK; further INVITEs get 503
    /// ("too many unconfirmed sessions from this source").
    pub max_pending_sessions_per_source: usize,
    /// Anti-amplification budget over UDP: response bytes of a transaction beyond its
    /// first final stay within this percentage of the request bytes received (its
    /// retransmissions included). 100 = never more bytes out than in.
    pub response_budget_pct: u32,
    /// Plain TCP connections open at once (TLS has `sip.tls.max_connections`).
    pub tcp_max_connections: usize,
    /// Plain TCP connections open at once from one source.
    pub tcp_max_connections_per_source: usize,
    /// A TCP/TLS connection with no bytes from the peer for this long is closed (SBCs
    /// send CRLF keep-alives well within it), seconds.
    pub tcp_idle_timeout_s: u32,
    /// A SIP message begun on a TCP/TLS connection must be complete (headers and the
    /// Content-Length of body) within this many ms, or the connection is closed.
    pub tcp_message_timeout_ms: u32,
    /// Responses queued for one TCP/TLS connection; beyond it (a peer that does not read)
    /// further responses are dropped and counted.
    pub tcp_send_queue: usize,
}

impl Default for SipLimits {
    fn default() -> Self {
        SipLimits {
            max_streams_per_call: 4,
            rate_per_source_per_s: 200,
            burst_per_source: 1000,
            max_pending_sessions_per_source: 32,
            response_budget_pct: 100,
            tcp_max_connections: 256,
            tcp_max_connections_per_source: 32,
            tcp_idle_timeout_s: 900,
            tcp_message_timeout_ms: 5000,
            tcp_send_queue: 256,
        }
    }
}

impl SipLimits {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let at_least = |k: &'static str, v: u64, min: u64| {
            if v < min {
                Err((k, format!("must be at least {min}")))
            } else {
                Ok(())
            }
        };
        if !(1..=64).contains(&self.max_streams_per_call) {
            return Err(("max_streams_per_call", "must be 1..=64".into()));
        }
        at_least(
            "rate_per_source_per_s",
            self.rate_per_source_per_s.into(),
            1,
        )?;
        at_least("burst_per_source", self.burst_per_source.into(), 1)?;
        at_least(
            "max_pending_sessions_per_source",
            self.max_pending_sessions_per_source as u64,
            1,
        )?;
        at_least("tcp_max_connections", self.tcp_max_connections as u64, 1)?;
        at_least(
            "tcp_max_connections_per_source",
            self.tcp_max_connections_per_source as u64,
            1,
        )?;
        at_least("tcp_idle_timeout_s", self.tcp_idle_timeout_s.into(), 1)?;
        at_least(
            "tcp_message_timeout_ms",
            self.tcp_message_timeout_ms.into(),
            100,
        )?;
        at_least("tcp_send_queue", self.tcp_send_queue as u64, 1)?;
        Ok(())
    }

    /// The core's view of these limits.
    pub fn core(&self) -> crate::sip::limits::LimitsConfig {
        crate::sip::limits::LimitsConfig {
            rate_per_s: self.rate_per_source_per_s,
            burst: self.burst_per_source,
            max_pending_sessions: self.max_pending_sessions_per_source,
            max_tcp_connections: self.tcp_max_connections,
            max_tcp_per_source: self.tcp_max_connections_per_source,
            ..crate::sip::limits::LimitsConfig::default()
        }
    }
}

/// `[sip.tls]`: SIP over TLS with mutual authentication of the SRC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTlsConfig {
    /// Addresses to listen on for SIP over TLS (`"0.0.0.0:5061"`).
    pub listen: Vec<SocketAddr>,
    /// Server certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the server certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificate(s), PEM, that issue the SRCs' client certificates.
    pub client_ca_file: PathBuf,
    /// SRC identities allowed to connect, matched against the client certificate's
    /// subject CN and subjectAltName: `"sbc1.example.com"`, `"*.sbc.example.com"`,
    /// `"cn:…"`, `"dns:…"`, `"uri:sip:sbc.example.com"`, `"ip:192.0.2.10"`.
    pub allowed_identities: Vec<String>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_tls_min")]
    pub min_version: String,
    /// A handshake must complete within this many milliseconds.
    #[serde(default = "default_tls_handshake_ms")]
    pub handshake_timeout_ms: u32,
    /// Most TLS connections open at once; further ones are refused and counted.
    #[serde(default = "default_tls_max_conns")]
    pub max_connections: usize,
    /// `host[:port]` for the Contact of TLS calls (a name in the server certificate);
    /// default: the local address of the connection.
    #[serde(default)]
    pub contact_host: Option<String>,
    /// A refused peer (per address and reason) is logged at most once per this many
    /// seconds; every refusal is counted.
    #[serde(default = "default_tls_log_interval")]
    pub log_interval_s: u32,
}

fn default_tls_min() -> String {
    "1.2".into()
}
fn default_tls_handshake_ms() -> u32 {
    5000
}
fn default_tls_max_conns() -> usize {
    256
}
fn default_tls_log_interval() -> u32 {
    60
}

impl Default for SipConfig {
    fn default() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        SipConfig {
            listen: vec![
                Listen {
                    transport: ListenTransport::Udp,
                    addr: SocketAddr::new(lo, 5060),
                },
                Listen {
                    transport: ListenTransport::Tcp,
                    addr: SocketAddr::new(lo, 5060),
                },
            ],
            user_agent: format!("branchrec/{}", env!("CARGO_PKG_VERSION")),
            max_calls: 2000,
            max_transactions: 8192,
            retry_after_s: 30,
            allowed_sources: Vec::new(),
            tls: None,
            session_expires_s: 1800,
            min_se_s: 90,
            max_metadata_versions: 64,
            max_metadata_bytes: 1 << 20,
            limits: SipLimits::default(),
        }
    }
}

impl SipTlsConfig {
    /// Checks that need no file access (the files are loaded and checked by
    /// `crate::app::tls::load`, which `check-config` and the daemon run).
    pub fn validate(&self, plain: &[Listen]) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.listen.is_empty() {
            return err(
                "listen",
                "at least one address, e.g. [\"0.0.0.0:5061\"]".into(),
            );
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(a) {
                return err("listen", format!("`{a}` is listed twice"));
            }
            if plain.iter().any(|l| {
                l.transport == ListenTransport::Tcp
                    && l.addr.port() == a.port()
                    && (l.addr.ip() == a.ip()
                        || l.addr.ip().is_unspecified()
                        || a.ip().is_unspecified())
            }) {
                return err(
                    "listen",
                    format!("`{a}` clashes with a tcp: listener in sip.listen"),
                );
            }
        }
        for (k, p) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("client_ca_file", &self.client_ca_file),
        ] {
            if p.as_os_str().is_empty() {
                return err(k, "must name a PEM file".into());
            }
        }
        if self.allowed_identities.is_empty() {
            return err(
                "allowed_identities",
                "must list the SRC identities allowed to connect (certificate CN or SAN); \
                 an empty list would let no one in"
                    .into(),
            );
        }
        crate::sip::access::IdentityAllowlist::parse(&self.allowed_identities)
            .map_err(|e| ("allowed_identities".to_string(), e.to_string()))?;
        if !matches!(self.min_version.as_str(), "1.2" | "1.3") {
            return err(
                "min_version",
                format!("`{}`: expected \"1.2\" or \"1.3\"", self.min_version),
            );
        }
        if !(100..=60_000).contains(&self.handshake_timeout_ms) {
            return err(
                "handshake_timeout_ms",
                "must be between 100 and 60000".into(),
            );
        }
        if self.max_connections == 0 {
            return err("max_connections", "must be at least 1".into());
        }
        if self.log_interval_s == 0 {
            return err("log_interval_s", "must be at least 1".into());
        }
        if let Some(h) = &self.contact_host {
            if h.is_empty() || h.contains([' ', '<', '>', ';', '@']) {
                return err("contact_host", format!("`{h}`: expected host[:port]"));
            }
        }
        Ok(())
    }
}

/// Transport of a SIP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
}

/// One SIP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// UDP or TCP.
    pub transport: ListenTransport,
    /// Address and port to bind.
    pub addr: SocketAddr,
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (t, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected `udp:ADDR:PORT` or `tcp:ADDR:PORT`"))?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => ListenTransport::Udp,
            "tcp" => ListenTransport::Tcp,
            other => return Err(format!("`{s}`: unknown transport `{other}` (udp or tcp)")),
        };
        let addr = rest
            .parse::<SocketAddr>()
            .map_err(|e| format!("`{s}`: bad address `{rest}`: {e} (IPv6 as [::1]:5060)"))?;
        Ok(Listen { transport, addr })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            ListenTransport::Udp => "udp",
            ListenTransport::Tcp => "tcp",
        };
        write!(f, "{t}:{}", self.addr)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive UDP port range, `"30000-39999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}`: expected FIRST-LAST, e.g. 30000-39999"))?;
        let first: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{a}` is not a port"))?;
        let last: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{b}` is not a port"))?;
        if first == 0 || first > last {
            return Err(format!("`{s}`: need 1 <= FIRST <= LAST"));
        }
        Ok(PortRange { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address RTP sockets bind to and that our SDP answers advertise.
    pub rtp_bind: IpAddr,
    /// Address to advertise in SDP if different from `rtp_bind` (e.g. bind 0.0.0.0).
    pub advertise: Option<IpAddr>,
    /// Inclusive RTP port range; each recorded stream takes one port.
    pub rtp_ports: PortRange,
    /// Reorder window: audio is committed this long after it is due.
    pub playout_delay_ms: u32,
    /// A call whose streams all stay silent this long (no RTP) is still recorded; this only
    /// limits how long a dialog without BYE lives: after it the recording is closed.
    pub rtp_timeout_s: u32,
    /// Which source a recorded stream takes RTP/RTCP from: `strict` (only the address of
    /// the SRC's SDP) or `latch` (SRCs behind NAT: the first source within
    /// `latch_window_ms` of the offer, else the SDP address). See `media::source`.
    pub source_binding: SourceBinding,
    /// The latch window of `source_binding = "latch"`, milliseconds.
    pub latch_window_ms: u32,
    /// A recording gets a `foreign_source` event (and the box the `foreign_media` alarm)
    /// when one of its channels has dropped this many packets from foreign sources.
    pub foreign_alarm_packets: u32,
}

/// `media.source_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceBinding {
    /// Only the SDP address (the default).
    Strict,
    /// First source within the latch window (NAT), else the SDP address.
    Latch,
}

impl MediaConfig {
    /// The core's policy for SIPREC calls.
    pub fn source_policy(&self) -> crate::media::SourcePolicy {
        match self.source_binding {
            SourceBinding::Strict => crate::media::SourcePolicy::Strict,
            SourceBinding::Latch => crate::media::SourcePolicy::Latch {
                window: Duration::from_millis(u64::from(self.latch_window_ms)),
            },
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
            rtp_ports: PortRange {
                first: 30000,
                last: 39999,
            },
            playout_delay_ms: 300,
            rtp_timeout_s: 3600,
            source_binding: SourceBinding::Strict,
            latch_window_ms: 2000,
            foreign_alarm_packets: 50,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of recordings, catalogue and keys.
    pub data_dir: PathBuf,
    /// Most audio (ms) that may sit in memory before it is sealed and fsynced to disk.
    pub flush_interval_ms: u32,
    /// Per-install key-encryption key file (created 0600 on first start).
    /// Default: `<data_dir>/keys/install.key`.
    pub key_file: Option<PathBuf>,
    /// Refuse new calls (503) when less than this many MiB are free on the data disk.
    pub min_free_mb: u64,
    /// Storage format of recordings whose rule does not choose one: `wav` or `opus`.
    pub format: crate::recording::StorageFormat,
    /// `[storage.opus]`: the Opus encoder of `opus` recordings.
    pub opus: OpusStorageConfig,
}

/// `[storage.opus]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpusStorageConfig {
    /// Total bitrate of the stereo stream, bit/s (both channels together).
    pub bitrate_bps: u32,
    /// libopus complexity 0–10.
    pub complexity: u8,
    /// Variable (`true`) or constant bitrate.
    pub vbr: bool,
}

impl Default for OpusStorageConfig {
    fn default() -> Self {
        let d = crate::recording::opus::OpusSettings::default();
        OpusStorageConfig {
            bitrate_bps: d.bitrate_bps,
            complexity: d.complexity,
            vbr: d.vbr,
        }
    }
}

impl OpusStorageConfig {
    /// The encoder settings.
    pub fn settings(&self) -> crate::recording::opus::OpusSettings {
        crate::recording::opus::OpusSettings {
            bitrate_bps: self.bitrate_bps,
            complexity: self.complexity,
            vbr: self.vbr,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./branchrec-data"),
            flush_interval_ms: 500,
            key_file: None,
            min_free_mb: 64,
            format: crate::recording::StorageFormat::Wav,
            opus: OpusStorageConfig::default(),
        }
    }
}

impl StorageConfig {
    /// The key file actually used.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("install.key"))
    }
    /// The SQLite catalogue.
    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.sqlite")
    }
    /// Local control socket of the running daemon (`recordings pause|resume`).
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
    /// Directory of recording containers.
    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }
}

/// `[keys]`: who holds the key-encryption key and the manifest signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// `"tpm"` (default: a KEK sealed in the TPM 2.0) or `"software"` (key files on disk,
    /// for development machines without a TPM; announced loudly at start-up).
    pub provider: String,
    /// TSS2 TCTI of the TPM: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, …
    pub tcti: String,
    /// Persistent TPM handle of the sealed key (0x81000000–0x81FFFFFF); a rotation uses
    /// this handle and the next one alternately.
    pub handle: u32,
    /// PCRs the key is sealed to, `BANK:N,N,…`.
    pub pcrs: String,
    /// Offline recovery RSA public key (PEM, ≥ 3072 bits): each KEK is escrowed to it.
    pub recovery_public_key: Option<PathBuf>,
    /// TPM NV index of the audit log's monotonic counter (owner range
    /// 0x01000000–0x013FFFFF; defined on first use). Software mode uses a counter file.
    pub audit_counter_index: u32,
    /// The central compliance public key (PEM SubjectPublicKeyInfo, P-256): every new
    /// recording's data key is also wrapped to it (the container's compliance slot) and
    /// the archive documents are encrypted to it (docs/central.md).
    pub compliance_public_key: Option<PathBuf>,
    /// Id of that key (1–64 of `A-Za-z0-9._-`), stored with every wrap; set both or
    /// neither. Rotation: a new key and id apply to new recordings only.
    pub compliance_key_id: Option<String>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            provider: "tpm".into(),
            tcti: "device:/dev/tpmrm0".into(),
            handle: 0x8101_0020,
            pcrs: "sha256:0,2,4,7".into(),
            recovery_public_key: None,
            audit_counter_index: 0x0101_0020,
            compliance_public_key: None,
            compliance_key_id: None,
        }
    }
}

impl Config {
    /// The key-custody settings for [`crate::vault::custody`].
    pub fn custody(&self) -> crate::vault::CustodyConfig {
        crate::vault::CustodyConfig {
            provider: if self.keys.provider == "software" {
                crate::vault::Provider::Software
            } else {
                crate::vault::Provider::Tpm
            },
            tcti: self.keys.tcti.clone(),
            handle: self.keys.handle,
            // Validated in `validate`; the default is a valid selection.
            pcrs: self
                .keys
                .pcrs
                .parse()
                .unwrap_or_else(|_| crate::vault::tpm::PcrSpec {
                    bank: "sha256".into(),
                    pcrs: vec![0, 2, 4, 7],
                }),
            recovery_public_key: self.keys.recovery_public_key.clone(),
            keys_dir: self.storage.data_dir.join("keys"),
            kek_file: self.storage.key_file(),
        }
    }

    /// The compliance recipient of `[keys]`, if configured (loads the PEM file).
    pub fn compliance(
        &self,
    ) -> Result<Option<crate::vault::compliance::ComplianceRecipient>, crate::vault::VaultError>
    {
        match (
            &self.keys.compliance_public_key,
            &self.keys.compliance_key_id,
        ) {
            (Some(p), Some(id)) => {
                // A rotation from headquarters wins while the configuration still names
                // the key it replaced.
                let f = self
                    .custody()
                    .keys_dir
                    .join(crate::vault::compliance::ROTATED_FILE);
                if let Ok(b) = std::fs::read(&f) {
                    let r: crate::vault::compliance::Rotation = serde_json::from_slice(&b)
                        .map_err(|e| {
                            crate::vault::VaultError::Custody(format!("{}: {e}", f.display()))
                        })?;
                    if r.replaces == *id {
                        return r.recipient().map(Some);
                    }
                }
                crate::vault::compliance::ComplianceRecipient::load(p, id).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `branchrec::sip=debug,info`.
    pub level: String,
    /// Redact phone numbers, URIs and names in logs (default true).
    pub redact_pii: bool,
    /// Where the daemon's log goes.
    pub target: LogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            redact_pii: true,
            target: LogTarget::Auto,
        }
    }
}

/// `[log] target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when systemd connected stderr to it (`JOURNAL_STREAM` names stderr),
    /// else stderr.
    Auto,
    /// The systemd journal, with structured fields (`RECORDING_ID`, `CALL_ID`, …).
    Journald,
    /// Plain text on stderr.
    Stderr,
}

/// Directory of drop-ins read after the main configuration file: `config.d` beside it
/// (`/etc/branchrec/config.d` for `/etc/branchrec/config.toml`).
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join("config.d")
}

/// The main file followed by its drop-ins (`config.d/*.toml`, lexical order).
fn config_files(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = vec![main.to_owned()];
    let dir = drop_in_dir(main);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(source) => return Err(ConfigError::Read { path: dir, source }),
    };
    let mut drop_ins = Vec::new();
    for e in rd {
        let e = e.map_err(|source| ConfigError::Read {
            path: dir.clone(),
            source,
        })?;
        let p = e.path();
        // Editor backups and disabled files (`x.toml.off`, `.x.toml.swp`) are not read.
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') && p.is_file() {
            drop_ins.push(p);
        }
    }
    drop_ins.sort();
    files.extend(drop_ins);
    Ok(files)
}

/// Merge `over` into `base`: tables key by key (recursively), anything else (values,
/// arrays, arrays of tables such as `[[rules]]`) replaced as a whole.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Whether a file's table sets dotted `key` or one of its parents' values.
fn sets_key(t: &toml::Table, key: &str) -> bool {
    let mut cur = t;
    for part in key.split('.') {
        // Keys such as `retention.classes.default` or `rules[2].name`.
        let part = part.split('[').next().unwrap_or(part);
        match cur.get(part) {
            Some(toml::Value::Table(next)) => cur = next,
            Some(_) => return true,
            None => return false,
        }
    }
    true
}

impl Config {
    /// Load and validate a file and its drop-ins (see [`Config::load_with_sources`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_sources(path).map(|(c, _)| c)
    }

    /// Load `path`, then every `*.toml` in [`drop_in_dir`]`(path)` in lexical order, merged
    /// table by table (a later file wins key by key; arrays are replaced whole), and
    /// validate the result. Each file is checked on its own for syntax and unknown keys,
    /// so an error names the file it is in. Returns the files read, in order.
    pub fn load_with_sources(path: &Path) -> Result<(Config, Vec<PathBuf>), ConfigError> {
        let files = config_files(path)?;
        let mut merged = toml::Table::new();
        let mut tables = Vec::with_capacity(files.len());
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
                path: f.clone(),
                source,
            })?;
            let parse_err = |message: String| ConfigError::Parse {
                path: f.clone(),
                message,
            };
            // Typed parse first: unknown keys and wrong types with line and column.
            toml::from_str::<Config>(&text).map_err(|e| parse_err(e.to_string()))?;
            let t: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
            tables.push(t.clone());
            merge_tables(&mut merged, t);
        }
        let cfg =
            Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
                path: files.last().cloned().unwrap_or_else(|| path.to_owned()),
                message: format!("after merging {} files: {e}", files.len()),
            })?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => {
                // Name the last file that set the key (or a parent of it).
                let from = files
                    .iter()
                    .zip(&tables)
                    .rev()
                    .find(|(_, t)| sets_key(t, &key))
                    .map(|(f, _)| f.display().to_string());
                let message = match from {
                    Some(f) => format!("{message} (set in {f})"),
                    None => message,
                };
                ConfigError::Invalid { key, message }
            }
            other => other,
        })?;
        Ok((cfg, files))
    }

    /// Load from `path` if given, else the built-in defaults; validated either way.
    ///
    /// The built-in defaults are for a development machine (loopback, `./branchrec-data`),
    /// so they keep keys in software, and the daemon says so loudly at start-up. A
    /// configuration *file* without `[keys]` gets `provider = "tpm"`: the box never falls
    /// back to software keys because a section is missing.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::load(p),
            None => {
                let mut c = Config::default();
                c.keys.provider = "software".into();
                c.validate()?;
                Ok(c)
            }
        }
    }

    /// Parse TOML text (`origin` only names it in errors) and validate.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        self.assurance
            .validate()
            .map_err(|(k, m)| invalid(&format!("assurance.{k}"), m))?;
        self.time
            .validate()
            .map_err(|(k, m)| invalid(&format!("time.{k}"), m))?;
        if self.sip.listen.is_empty() {
            return Err(invalid(
                "sip.listen",
                "at least one listener is needed".into(),
            ));
        }
        for (i, a) in self.sip.listen.iter().enumerate() {
            if self.sip.listen[..i].contains(a) {
                return Err(invalid("sip.listen", format!("`{a}` is listed twice")));
            }
        }
        if self.sip.max_calls == 0 {
            return Err(invalid("sip.max_calls", "must be at least 1".into()));
        }
        if !(16..=262_144).contains(&self.sip.max_transactions) {
            return Err(invalid(
                "sip.max_transactions",
                "must be between 16 and 262144".into(),
            ));
        }
        if self.sip.max_metadata_versions == 0 {
            return Err(invalid(
                "sip.max_metadata_versions",
                "must be at least 1 (the INVITE's own metadata)".into(),
            ));
        }
        if !(4096..=64 << 20).contains(&self.sip.max_metadata_bytes) {
            return Err(invalid(
                "sip.max_metadata_bytes",
                "must be between 4096 and 67108864".into(),
            ));
        }
        if self.sip.min_se_s == 0 {
            return Err(invalid("sip.min_se_s", "must be at least 1".into()));
        }
        if self.sip.session_expires_s < self.sip.min_se_s {
            return Err(invalid(
                "sip.session_expires_s",
                format!("must be at least sip.min_se_s ({})", self.sip.min_se_s),
            ));
        }
        crate::sip::access::SourceAllowlist::parse(&self.sip.allowed_sources)
            .map_err(|e| invalid("sip.allowed_sources", e.to_string()))?;
        self.sip
            .limits
            .validate()
            .map_err(|(k, m)| invalid(&format!("sip.limits.{k}"), m))?;
        if let Some(t) = &self.sip.tls {
            t.validate(&self.sip.listen)
                .map_err(|(k, m)| invalid(&format!("sip.tls.{k}"), m))?;
        }
        let r = self.media.rtp_ports;
        if u32::from(r.last) - u32::from(r.first) < 1 {
            return Err(invalid(
                "media.rtp_ports",
                "range must hold at least 2 ports (one call has two streams)".into(),
            ));
        }
        for l in &self.sip.listen {
            if l.transport == ListenTransport::Udp
                && l.addr.ip() == self.media.rtp_bind
                && (r.first..=r.last).contains(&l.addr.port())
            {
                return Err(invalid(
                    "media.rtp_ports",
                    format!("range contains SIP listener port {}", l.addr.port()),
                ));
            }
        }
        if let Some(a) = self.media.advertise {
            if a.is_unspecified() {
                return Err(invalid("media.advertise", "cannot be 0.0.0.0 / ::".into()));
            }
        } else if self.media.rtp_bind.is_unspecified() {
            return Err(invalid(
                "media.advertise",
                "rtp_bind is a wildcard address: set the address to put in SDP answers".into(),
            ));
        }
        if !(20..=5000).contains(&self.media.playout_delay_ms) {
            return Err(invalid(
                "media.playout_delay_ms",
                "must be between 20 and 5000".into(),
            ));
        }
        if !(100..=30_000).contains(&self.media.latch_window_ms) {
            return Err(invalid(
                "media.latch_window_ms",
                "must be between 100 and 30000: the window in which any source may bind a stream"
                    .into(),
            ));
        }
        if self.media.foreign_alarm_packets == 0 {
            return Err(invalid(
                "media.foreign_alarm_packets",
                "must be at least 1".into(),
            ));
        }
        if !(20..=1000).contains(&self.storage.flush_interval_ms) {
            return Err(invalid(
                "storage.flush_interval_ms",
                "must be between 20 and 1000: at most one second of audio may be at risk".into(),
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty".into()));
        }
        self.storage
            .opus
            .settings()
            .validate()
            .map_err(|m| invalid("storage.opus", m))?;
        self.retention.validate().map_err(|(k, m)| invalid(&k, m))?;
        self.board.validate().map_err(|(k, m)| invalid(&k, m))?;
        crate::lifecycle::rules::validate(&self.rules, &self.policy, |c| {
            self.retention.classes.contains_key(c)
        })
        .map_err(|(k, m)| invalid(&k, m))?;
        if !matches!(self.keys.provider.as_str(), "tpm" | "software") {
            return Err(invalid(
                "keys.provider",
                format!("`{}`: expected \"tpm\" or \"software\"", self.keys.provider),
            ));
        }
        if !(0x0100_0000..=0x013F_FFFF).contains(&self.keys.audit_counter_index) {
            return Err(invalid(
                "keys.audit_counter_index",
                format!(
                    "{:#010x} is not an owner NV index (0x01000000-0x013fffff)",
                    self.keys.audit_counter_index
                ),
            ));
        }
        if self.audit.max_unsigned_s <= self.retention.audit_sign_interval_s {
            return Err(invalid(
                "audit.max_unsigned_s",
                format!(
                    "{} s must be longer than retention.audit_sign_interval_s ({} s), or every verify between two signatures fails",
                    self.audit.max_unsigned_s, self.retention.audit_sign_interval_s
                ),
            ));
        }
        if self.audit.two_person_window_s < 60 {
            return Err(invalid(
                "audit.two_person_window_s",
                "at least 60 s: the second operator needs time".into(),
            ));
        }
        if !(0x8100_0000..=0x81FF_FFFE).contains(&self.keys.handle) {
            return Err(invalid(
                "keys.handle",
                format!(
                    "{:#010x}: must be a persistent handle 0x81000000–0x81fffffe",
                    self.keys.handle
                ),
            ));
        }
        let pcrs: crate::vault::tpm::PcrSpec = self
            .keys
            .pcrs
            .parse()
            .map_err(|e| invalid("keys.pcrs", e))?;
        if pcrs.pcrs.is_empty() {
            return Err(invalid("keys.pcrs", "select at least one PCR".into()));
        }
        match (
            &self.keys.compliance_public_key,
            &self.keys.compliance_key_id,
        ) {
            (None, None) => {}
            (Some(p), Some(id)) => {
                if !crate::compliance::valid_key_id(id) {
                    return Err(invalid(
                        "keys.compliance_key_id",
                        format!("{id:?}: 1-64 characters of A-Z a-z 0-9 . _ -"),
                    ));
                }
                crate::vault::compliance::load_public_key(p)
                    .map_err(|e| invalid("keys.compliance_public_key", e.to_string()))?;
            }
            (Some(_), None) => {
                return Err(invalid(
                    "keys.compliance_key_id",
                    "must be set with keys.compliance_public_key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "keys.compliance_public_key",
                    "must be set with keys.compliance_key_id".into(),
                ))
            }
        }
        if self.keys.tcti.is_empty() {
            return Err(invalid("keys.tcti", "must not be empty".into()));
        }
        self.central
            .load_public_key()
            .map_err(|e| invalid("central.command_public_key", e))?;
        if self.central.poll_interval_s == 0 || self.central.poll_interval_s > 86_400 {
            return Err(invalid(
                "central.poll_interval_s",
                "must be 1..=86400".into(),
            ));
        }
        if self.central.command_public_key.is_some() && !self.uplink.enabled {
            return Err(invalid(
                "central.command_public_key",
                "commands are polled by the uplink: needs [uplink] enabled = true".into(),
            ));
        }
        let c = &self.capture;
        for (i, name) in c.interfaces.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(invalid("capture.interfaces", "empty interface name".into()));
            }
            if c.interfaces[..i].contains(name) {
                return Err(invalid(
                    "capture.interfaces",
                    format!("`{name}` is listed twice"),
                ));
            }
        }
        if !(256..=262_144).contains(&c.snaplen) {
            return Err(invalid(
                "capture.snaplen",
                "must be between 256 and 262144".into(),
            ));
        }
        if !(1..=2048).contains(&c.buffer_mb) {
            return Err(invalid(
                "capture.buffer_mb",
                "must be between 1 and 2048".into(),
            ));
        }
        if !(5..=86_400).contains(&c.media_timeout_s) {
            return Err(invalid(
                "capture.media_timeout_s",
                "must be between 5 and 86400".into(),
            ));
        }
        if c.max_calls == 0 {
            return Err(invalid("capture.max_calls", "must be at least 1".into()));
        }
        if c.stats_interval_s == 0 {
            return Err(invalid(
                "capture.stats_interval_s",
                "must be at least 1".into(),
            ));
        }
        for p in c.allow.iter().chain(&c.deny) {
            if p.trim().is_empty() {
                return Err(invalid("capture.allow/deny", "empty pattern".into()));
            }
        }
        self.uplink
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("`{}`: {e}", self.log.level)))?;
        Ok(())
    }

    /// Address our SDP answers advertise.
    pub fn sdp_address(&self) -> IpAddr {
        self.media.advertise.unwrap_or(self.media.rtp_bind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml(s, Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let c = Config::load_or_default(None).unwrap();
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.listen[0].to_string(), "udp:127.0.0.1:5060");
        assert_eq!(c.sip.listen[1].to_string(), "tcp:127.0.0.1:5060");
        assert_eq!(c.storage.data_dir, PathBuf::from("./branchrec-data"));
        assert_eq!(c.media.rtp_ports.first, 30000);
    }

    /// `[assurance]` and `[time]` (issue #19): defaults, the reference file, validation.
    #[test]
    fn assurance_and_time_keys_are_validated() {
        let c = Config::load_or_default(None).unwrap();
        assert_eq!(c.time.max_error_ms, 100);
        assert_eq!(c.assurance.rules().len(), 4);
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/branchrec.toml"));
        let r = Config::load(p).unwrap();
        assert_eq!(
            r.assurance.alarms, c.assurance.alarms,
            "reference = defaults"
        );
        assert_eq!(r.assurance.policy(), c.assurance.policy());
        let c = parse("[assurance]\nalarms = [{ verdict = \"refused\", count = 2, window_s = 600 }]\n[time]\ntsa_url = \"http://127.0.0.1:9/tsr\"\n").unwrap();
        assert_eq!(
            c.assurance.rules()[0].verdict,
            crate::assurance::Verdict::Refused
        );
        assert_eq!(c.time.tsa_url.as_deref(), Some("http://127.0.0.1:9/tsr"));
        for (text, key) in [
            ("[assurance]\nvoice_dbfs = 3.0\n", "assurance.voice_dbfs"),
            (
                "[assurance]\nalarms = [{ verdict = \"recorded\", count = 1, window_s = 600 }]\n",
                "assurance.alarms[0].verdict",
            ),
            (
                "[assurance]\nalarms = [{ verdict = \"one_way\", count = 0, window_s = 600 }]\n",
                "assurance.alarms[0].count",
            ),
            (
                "[assurance]\nalarms = [{ verdict = \"one_way\", count = 1, window_s = 4 }]\n",
                "assurance.alarms[0].window_s",
            ),
            ("[time]\nmax_error_ms = 0\n", "time.max_error_ms"),
            ("[time]\ntsa_url = \"ftp://x\"\n", "time.tsa_url"),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(
            parse("[time]\nbogus = 1\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn reference_config_loads() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/branchrec.toml"));
        let c = Config::load(p).unwrap();
        assert_eq!(c.sip.listen.len(), 2);
        assert!(c.capture.interfaces.is_empty());
        assert_eq!(c.capture.media_timeout_s, 60);
    }

    /// The commented `[sip.tls]` block of the reference config parses once uncommented.
    #[test]
    fn reference_config_tls_block_parses() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/branchrec.toml"));
        let text = std::fs::read_to_string(p).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != "#[sip.tls]")
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# "))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        assert!(block.contains("allowed_identities"), "{block}");
        let c = parse(&block).unwrap();
        let t = c.sip.tls.unwrap();
        assert_eq!(t.listen[0].port(), 5061);
        assert_eq!(t.min_version, "1.2");
        assert!(c.sip.allowed_sources.is_empty());
    }

    /// `[central] command_public_key`: an Ed25519 PEM public key, refused when missing,
    /// another key type, or without the uplink that polls it.
    #[test]
    fn central_command_key_is_validated() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("cmd.pub.pem");
        std::fs::write(
            &good,
            ed25519_dalek::SigningKey::from_bytes(&[3; 32])
                .verifying_key()
                .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let up = "[uplink]\nenabled = true\nendpoint = \"https://s3.example\"\nbucket = \"b\"\n";
        let c = parse(&format!(
            "{up}[central]\ncommand_public_key = \"{}\"\npoll_interval_s = 5\n",
            good.display()
        ))
        .unwrap();
        assert_eq!(
            c.central.load_public_key().unwrap(),
            Some(
                ed25519_dalek::SigningKey::from_bytes(&[3; 32])
                    .verifying_key()
                    .to_bytes()
            )
        );
        let key_err = |text: String| match parse(&text) {
            Err(ConfigError::Invalid { key, message }) => format!("{key}: {message}"),
            other => panic!("accepted: {other:?}"),
        };
        let e = key_err(format!(
            "{up}[central]\ncommand_public_key = \"{}/missing.pem\"\n",
            d.path().display()
        ));
        assert!(e.starts_with("central.command_public_key"), "{e}");
        // A P-256 key is not a command key.
        let p256 = d.path().join("p256.pem");
        std::fs::write(
            &p256,
            p256::SecretKey::from_slice(&[5; 32])
                .unwrap()
                .public_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let e = key_err(format!(
            "{up}[central]\ncommand_public_key = \"{}\"\n",
            p256.display()
        ));
        assert!(e.contains("not an Ed25519 public key"), "{e}");
        let e = key_err(format!(
            "[central]\ncommand_public_key = \"{}\"\n",
            good.display()
        ));
        assert!(e.contains("needs [uplink] enabled"), "{e}");
        let e = key_err(format!("{up}[central]\npoll_interval_s = 0\n"));
        assert!(e.starts_with("central.poll_interval_s"), "{e}");
    }

    #[test]
    fn storage_format_and_opus() {
        let c = parse("").unwrap();
        assert_eq!(c.storage.format, crate::recording::StorageFormat::Wav);
        let c = parse("[storage]\nformat = \"opus\"\n[storage.opus]\nbitrate_bps = 24000\ncomplexity = 3\nvbr = false\n[[rules]]\nname = \"sales\"\nformat = \"wav\"\n").unwrap();
        assert_eq!(c.storage.format, crate::recording::StorageFormat::Opus);
        assert_eq!(c.storage.opus.settings().bitrate_bps, 24000);
        assert!(!c.storage.opus.vbr);
        assert_eq!(
            c.rules[0].format,
            Some(crate::recording::StorageFormat::Wav)
        );
        for bad in [
            "[storage]\nformat = \"mp3\"\n",
            "[storage.opus]\nbitrate_bps = 1000\n",
            "[storage.opus]\ncomplexity = 11\n",
            "[storage.opus]\nframe_ms = 40\n",
            "[[rules]]\nname = \"x\"\nformat = \"flac\"\n",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("storage")
                    || e.contains("format")
                    || e.contains("frame_ms")
                    || e.contains("flac"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn capture_section() {
        let c = parse("[capture]\ninterfaces = [\"eth1\", \"eth2\"]\nbpf_filter = \"udp or tcp\"\ndeny = [\"+4930*\"]\n").unwrap();
        assert_eq!(c.capture.interfaces, ["eth1", "eth2"]);
        assert_eq!(c.capture.deny, ["+4930*"]);
        let e = parse("[capture]\ninterfaces = [\"eth1\", \"eth1\"]\n").unwrap_err();
        assert!(e.to_string().contains("capture.interfaces"), "{e}");
        let e = parse("[capture]\nmedia_timeout_s = 1\n").unwrap_err();
        assert!(e.to_string().contains("capture.media_timeout_s"), "{e}");
        let e = parse("[capture]\ninterface = [\"eth1\"]\n").unwrap_err();
        assert!(e.to_string().contains("interface"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = parse("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nlissen = 1\n").unwrap_err();
        assert!(e.to_string().contains("lissen"), "{e}");
        let e = parse("[sipp]\n").unwrap_err();
        assert!(e.to_string().contains("sipp"), "{e}");
    }

    #[test]
    fn rules_and_retention_are_validated() {
        let c = parse(
            "[retention]\nclasses = { default = \"90 days\", mifid = \"5 years\" }\n\
             [[rules]]\nname = \"m\"\nparticipant = [\"+4930*\"]\nretention = \"mifid\"\n",
        )
        .unwrap();
        assert_eq!(c.rules.len(), 1);
        let e = parse("[[rules]]\nname = \"m\"\nretention = \"mifid\"\n").unwrap_err();
        assert!(e.to_string().contains("mifid"), "{e}");
        let e = parse("[retention]\nclasses = { default = \"ninety\" }\n").unwrap_err();
        assert!(e.to_string().contains("retention.classes.default"), "{e}");
        let e = parse("[[rules]]\nname = \"m\"\nrecrod = false\n").unwrap_err();
        assert!(e.to_string().contains("recrod"), "{e}");
    }

    #[test]
    fn session_timer_keys_have_defaults_and_are_validated() {
        let c = parse("").unwrap();
        assert_eq!((c.sip.session_expires_s, c.sip.min_se_s), (1800, 90));
        let c = parse("[sip]\nsession_expires_s = 600\nmin_se_s = 120\n").unwrap();
        assert_eq!((c.sip.session_expires_s, c.sip.min_se_s), (600, 120));
        let e = parse("[sip]\nmin_se_s = 0\n").unwrap_err();
        assert!(e.to_string().contains("sip.min_se_s"), "{e}");
        let e = parse("[sip]\nsession_expires_s = 60\n").unwrap_err();
        assert!(e.to_string().contains("sip.session_expires_s"), "{e}");
    }

    #[test]
    fn sip_transaction_cap_has_a_default_and_is_validated() {
        assert_eq!(parse("").unwrap().sip.max_transactions, 8192);
        let c = parse("[sip]\nmax_transactions = 16\n").unwrap();
        assert_eq!(c.sip.max_transactions, 16);
        for bad in ["15", "262145"] {
            let e = parse(&format!("[sip]\nmax_transactions = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("sip.max_transactions"), "{e}");
        }
    }

    #[test]
    fn drop_ins_merge_in_lexical_order_and_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "[sip]\nlisten = [\"udp:127.0.0.1:5070\"]\nmax_calls = 10\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        // No config.d: the file alone.
        let (c, files) = Config::load_with_sources(&main).unwrap();
        assert_eq!(files, std::slice::from_ref(&main));
        assert_eq!(c.sip.max_calls, 10);
        let d = dir.path().join("config.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("50-b.toml"), "[sip]\nmax_calls = 30\n").unwrap();
        std::fs::write(
            d.join("10-a.toml"),
            "[sip]\nmax_calls = 20\nretry_after_s = 7\n[log]\ntarget = \"stderr\"\n",
        )
        .unwrap();
        // Not read: wrong suffix, hidden.
        std::fs::write(d.join("60-c.toml.off"), "[sip]\nmax_calls = 40\n").unwrap();
        std::fs::write(d.join(".70-d.toml"), "garbage = [").unwrap();
        let (c, files) = Config::load_with_sources(&main).unwrap();
        assert_eq!(
            files,
            [main.clone(), d.join("10-a.toml"), d.join("50-b.toml")]
        );
        // Later file wins key by key; keys set only earlier survive.
        assert_eq!(c.sip.max_calls, 30);
        assert_eq!(c.sip.retry_after_s, 7);
        assert_eq!(c.sip.listen[0].to_string(), "udp:127.0.0.1:5070");
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.log.target, LogTarget::Stderr);
        // Unknown key in a drop-in: the error names that file and the key.
        std::fs::write(d.join("20-typo.toml"), "[sip]\nmax_cals = 5\n").unwrap();
        let e = Config::load(&main).unwrap_err().to_string();
        assert!(e.contains("20-typo.toml") && e.contains("max_cals"), "{e}");
        std::fs::remove_file(d.join("20-typo.toml")).unwrap();
        // An invalid merged value names the file that set it.
        std::fs::write(d.join("90-zero.toml"), "[sip]\nmax_calls = 0\n").unwrap();
        let e = Config::load(&main).unwrap_err().to_string();
        assert!(
            e.contains("sip.max_calls") && e.contains("90-zero.toml"),
            "{e}"
        );
        // Arrays are replaced whole, not appended.
        std::fs::write(
            d.join("90-zero.toml"),
            "[sip]\nlisten = [\"tcp:127.0.0.1:5071\", \"udp:127.0.0.1:5071\"]\n",
        )
        .unwrap();
        let c = Config::load(&main).unwrap();
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.listen[0].to_string(), "tcp:127.0.0.1:5071");
    }

    #[test]
    fn log_target_values() {
        assert_eq!(parse("").unwrap().log.target, LogTarget::Auto);
        let c = parse("[log]\ntarget = \"journald\"\n").unwrap();
        assert_eq!(c.log.target, LogTarget::Journald);
        let e = parse("[log]\ntarget = \"syslog\"\n").unwrap_err();
        assert!(e.to_string().contains("syslog"), "{e}");
    }

    #[test]
    fn box_config_with_a_site_drop_in_loads() {
        // dist/etc/branchrec/config.toml needs the site's address in a drop-in.
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/dist/etc/branchrec/config.toml"
            ),
            &main,
        )
        .unwrap();
        let e = Config::load(&main).unwrap_err().to_string();
        assert!(e.contains("media.advertise"), "{e}");
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(
            dir.path().join("config.d/50-site.toml"),
            "[media]\nadvertise = \"192.0.2.10\"\n",
        )
        .unwrap();
        let c = Config::load(&main).unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/branchrec"));
        assert_eq!(c.keys.provider, "tpm");
        assert_eq!(c.sdp_address().to_string(), "192.0.2.10");
    }

    #[test]
    fn sip_security_settings() {
        let tls = "[sip.tls]\nlisten = [\"127.0.0.1:5061\"]\ncert_file = \"s.crt\"\n\
                   key_file = \"s.key\"\nclient_ca_file = \"ca.crt\"\n";
        let c = parse(&format!(
            "[sip]\nallowed_sources = [\"10.0.0.0/8\", \"::1\"]\n{tls}allowed_identities = [\"sbc1.example.com\"]\n"
        ))
        .unwrap();
        assert_eq!(c.sip.allowed_sources.len(), 2);
        let t = c.sip.tls.unwrap();
        assert_eq!(
            (t.min_version.as_str(), t.handshake_timeout_ms),
            ("1.2", 5000)
        );
        let e = parse(&format!("{tls}allowed_identities = []\n")).unwrap_err();
        assert!(e.to_string().contains("sip.tls.allowed_identities"), "{e}");
        let e = parse(&format!("{tls}allowed_identities = [\"ip:1.2.3\"]\n")).unwrap_err();
        assert!(e.to_string().contains("sip.tls.allowed_identities"), "{e}");
        let e = parse(&format!(
            "{tls}allowed_identities = [\"a\"]\nmin_version = \"1.1\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("sip.tls.min_version"), "{e}");
        let e = parse("[sip.tls]\nlisten = [\"127.0.0.1:5061\"]\nallowed_identities = [\"a\"]\n")
            .unwrap_err();
        assert!(e.to_string().contains("cert_file"), "{e}");
        let e = parse(&format!(
            "[sip]\nlisten = [\"tcp:0.0.0.0:5061\"]\n{tls}allowed_identities = [\"a\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("clashes"), "{e}");
        let e = parse("[sip]\nallowed_sources = [\"10.0.0.1/8\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("sip.allowed_sources") && e.to_string().contains("10.0.0.0/8"),
            "{e}"
        );
        let e = parse("[sip]\nallowed_sources = [\"localhost\"]\n").unwrap_err();
        assert!(e.to_string().contains("sip.allowed_sources"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("[sip]\nlisten = [\"sctp:127.0.0.1:5060\"]\n").unwrap_err();
        assert!(e.to_string().contains("unknown transport"), "{e}");
        let e = parse("[media]\nrtp_ports = \"4000-3000\"\n").unwrap_err();
        assert!(e.to_string().contains("4000-3000"), "{e}");
        let e = parse("[storage]\nflush_interval_ms = 5000\n").unwrap_err();
        assert!(e.to_string().contains("storage.flush_interval_ms"), "{e}");
        let e = parse("[media]\nrtp_bind = \"0.0.0.0\"\n").unwrap_err();
        assert!(e.to_string().contains("media.advertise"), "{e}");
        let e = parse("[keys]\nprovider = \"hsm\"\n").unwrap_err();
        assert!(e.to_string().contains("keys.provider"), "{e}");
        let e = parse("[keys]\npcrs = \"sha256:0,99\"\n").unwrap_err();
        assert!(e.to_string().contains("keys.pcrs"), "{e}");
        let e = parse("[keys]\nhandle = 0x80000001\n").unwrap_err();
        assert!(e.to_string().contains("keys.handle"), "{e}");
        let e = parse("[sip]\nlisten = []\n").unwrap_err();
        assert!(e.to_string().contains("sip.listen"), "{e}");
    }
}
