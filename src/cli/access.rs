//! The SIP access counters in `branchrec status`, asked of the running daemon over its
//! control socket (`{"cmd":"access"}`, see `crate::app::control`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::binding::BindingSnapshot;
use crate::config::Config;
use crate::sip::access::AccessSnapshot;

/// Ask the daemon `{"cmd":CMD}` and take the answer's `CMD` member, or `None` when no
/// daemon answers on the control socket.
fn ask<T: serde::de::DeserializeOwned>(cfg: &Config, cmd: &str) -> Option<T> {
    let mut s = UnixStream::connect(cfg.storage.control_socket()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(s.take_limited()).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    serde_json::from_value(v.get(cmd)?.clone()).ok()
}

/// The daemon's counters, or `None` when no daemon answers on the control socket.
pub fn sip_access(cfg: &Config) -> Option<AccessSnapshot> {
    ask(cfg, "access")
}

/// The daemon's media/dialog binding counters (`None`: no daemon).
pub fn sip_binding(cfg: &Config) -> Option<BindingSnapshot> {
    ask(cfg, "binding")
}

/// The daemon's assurance counters and alarms (`None`: no daemon).
pub fn assurance(cfg: &Config) -> Option<crate::assurance::alarms::AssuranceSnapshot> {
    ask(cfg, "assurance")
}

/// The `binding` lines of `branchrec status`.
pub fn print_binding(b: Option<&BindingSnapshot>) {
    let Some(b) = b else {
        return;
    };
    println!(
        "media foreign  {} RTP/RTCP datagrams from sources a stream is not bound to dropped ({} channels over the alarm threshold)",
        b.rtp_foreign_source, b.foreign_media_alarms
    );
    println!(
        "sip binding    {} in-dialog requests from another peer refused, {} metadata documents over the per-call caps refused",
        b.sip_foreign_peer, b.metadata_refused
    );
}

trait TakeLimited {
    fn take_limited(self) -> std::io::Take<UnixStream>;
}
impl TakeLimited for UnixStream {
    fn take_limited(self) -> std::io::Take<UnixStream> {
        std::io::Read::take(self, 64 * 1024)
    }
}

/// The `sip access` / `tls` lines of `branchrec status`.
pub fn print_sip_access(cfg: &Config, a: Option<&AccessSnapshot>) {
    let sources = if cfg.sip.allowed_sources.is_empty() {
        "any (sip.allowed_sources empty)".to_string()
    } else {
        cfg.sip.allowed_sources.join(", ")
    };
    println!("sip sources    {sources}");
    let Some(a) = a else {
        println!("sip access     daemon not running (no counters)");
        return;
    };
    println!(
        "sip dropped    {} UDP datagrams, {} TCP connections from sources not allowed",
        a.udp_source_denied, a.tcp_source_denied
    );
    if cfg.sip.tls.is_none() {
        println!("sip tls        off");
        return;
    }
    let refused: u64 = a.tls_refused.values().sum();
    let reasons: Vec<String> = a
        .tls_refused
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "sip tls        {} accepted, {} refused{}",
        a.tls_accepted,
        refused,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
}

/// The `sip.allowed_sources` / `sip.tls` lines of `check-config`; loads the TLS files
/// (so an unreadable key or a certificate that does not parse fails the check).
pub fn print_check(cfg: &Config) -> anyhow::Result<()> {
    if cfg.sip.allowed_sources.is_empty() {
        println!("  sip.allowed_sources = any source (empty list)");
        if cfg.sip.listen.iter().any(|l| !l.addr.ip().is_loopback()) {
            println!("  WARNING: a UDP/TCP SIP listener is reachable from outside this box and takes SIP from any source; list the SBCs in sip.allowed_sources");
        }
    } else {
        println!(
            "  sip.allowed_sources = {}",
            cfg.sip.allowed_sources.join(", ")
        );
    }
    let Some(t) = &cfg.sip.tls else {
        println!("  sip.tls          = off");
        return Ok(());
    };
    let server = crate::app::tls::load(t)?;
    let s = &server.summary;
    let listen: Vec<String> = t.listen.iter().map(|a| format!("tls:{a}")).collect();
    println!(
        "  sip.tls          = {} (TLS {}+, client certificate required)",
        listen.join(", "),
        t.min_version
    );
    println!(
        "  sip.tls server   = {} ({} certificate(s) in chain), valid until {}",
        s.server_identities.join(" "),
        s.chain_len,
        s.server_not_after
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or("?".into(), |d| d.to_rfc3339())
    );
    if let Some(m) = s.key_mode_too_open {
        println!(
            "  WARNING: sip.tls.key_file is mode {m:03o}: make it readable by the recorder's user only (chmod 0400)"
        );
    }
    if let Some(na) = s.server_not_after {
        if na < chrono::Utc::now().timestamp() {
            println!(
                "  WARNING: the server certificate has EXPIRED; SRCs will refuse the connection"
            );
        }
    }
    println!(
        "  sip.tls clients  = {} CA certificate(s), {} allowed identit{}: {}",
        s.client_cas,
        s.allowed_identities,
        if s.allowed_identities == 1 {
            "y"
        } else {
            "ies"
        },
        t.allowed_identities.join(", ")
    );
    Ok(())
}
