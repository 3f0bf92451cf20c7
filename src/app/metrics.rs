//! Prometheus `/metrics`: a tiny HTTP/1.1 responder on tokio (GET only, one request per
//! connection, bounded reads and time).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::uplink::UplinkShared;
use crate::uplink::status::StatusDoc;

/// Render the status document as Prometheus text format 0.0.4.
pub fn render(doc: &StatusDoc) -> String {
    let mut o = String::new();
    let mut g = |name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    g(
        "branchrec_uptime_seconds",
        "Daemon uptime.",
        "gauge",
        doc.uptime_s as f64,
    );
    g(
        "branchrec_recordings",
        "Recordings in the catalogue.",
        "gauge",
        doc.recorded as f64,
    );
    g(
        "branchrec_uplink_pending_recordings",
        "Finished recordings not yet verified in the archive.",
        "gauge",
        doc.pending as f64,
    );
    g(
        "branchrec_uplink_uploaded_recordings",
        "Recordings verified in the archive.",
        "gauge",
        doc.uploaded as f64,
    );
    g(
        "branchrec_uplink_failed_recordings",
        "Recordings whose last upload attempt failed.",
        "gauge",
        doc.failed as f64,
    );
    g(
        "branchrec_uplink_pending_bytes",
        "Bytes waiting for upload.",
        "gauge",
        doc.pending_bytes as f64,
    );
    g(
        "branchrec_uplink_oldest_pending_age_seconds",
        "Age of the oldest recording waiting for upload.",
        "gauge",
        doc.oldest_pending_age_s.unwrap_or(0) as f64,
    );
    g(
        "branchrec_uplink_sent_bytes_total",
        "Bytes sent to the archive since start.",
        "counter",
        doc.bytes_sent as f64,
    );
    g(
        "branchrec_uplink_rate_bytes_per_second",
        "Measured upload rate.",
        "gauge",
        doc.rate_bps as f64,
    );
    g(
        "branchrec_uplink_rate_limit_bytes_per_second",
        "Rate cap in force (0: none).",
        "gauge",
        doc.rate_limit_bps.unwrap_or(0) as f64,
    );
    g(
        "branchrec_uplink_congestion_share",
        "Share of the scheduled rate left by congestion back-off.",
        "gauge",
        doc.congestion_share,
    );
    let last = doc
        .last_upload_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp());
    g(
        "branchrec_uplink_last_upload_timestamp_seconds",
        "Time of the last verified upload.",
        "gauge",
        last as f64,
    );
    if let Some(f) = doc.disk_free_mb {
        g(
            "branchrec_disk_free_bytes",
            "Free space on the data disk.",
            "gauge",
            (f * 1024 * 1024) as f64,
        );
    }
    g(
        "branchrec_key_present",
        "The key-encryption key is present.",
        "gauge",
        f64::from(u8::from(doc.key_present)),
    );
    if let Some(c) = &doc.commands {
        g(
            "branchrec_central_commands_last_applied",
            "Sequence number of the last command from headquarters applied.",
            "gauge",
            c.last_applied as f64,
        );
        g(
            "branchrec_central_commands_applied_total",
            "Commands from headquarters executed (any result).",
            "counter",
            c.applied as f64,
        );
        let _ = writeln!(
            o,
            "# HELP branchrec_central_commands_refused_total Command documents refused (replayed, reordered, forged, for another box, malformed).\n# TYPE branchrec_central_commands_refused_total counter"
        );
        for k in [
            "malformed",
            "signature",
            "wrong_box",
            "replay",
            "out_of_order",
            "name_mismatch",
        ] {
            let _ = writeln!(
                o,
                "branchrec_central_commands_refused_total{{kind=\"{k}\"}} {}",
                c.refused.get(k).copied().unwrap_or(0)
            );
        }
    }
    let stalled = render_counters(&mut o, doc.binding.as_ref());
    if let Some(a) = &doc.assurance {
        render_assurance(&mut o, a);
    }
    let _ = writeln!(
        o,
        "# HELP branchrec_alarm Active alarms (1 per code).\n# TYPE branchrec_alarm gauge"
    );
    if stalled > 0 {
        let _ = writeln!(o, "branchrec_alarm{{code=\"storage_write_failed\"}} 1");
    }
    for a in &doc.alarms {
        let _ = writeln!(
            o,
            "branchrec_alarm{{code=\"{}\"}} 1",
            a.code.replace(['"', '\\', '\n'], "_")
        );
    }
    o
}

/// The box's live counters (storage health, binding, SIP transaction cap, media gaps);
/// returns the number of stalled recordings (for the alarm).
fn render_counters(o: &mut String, binding: Option<&crate::binding::BindingSnapshot>) -> u64 {
    let mut g = |name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    let health = &crate::app::sink::STORAGE_HEALTH;
    let stalled = health.stalled.load(Ordering::Relaxed);
    g(
        "branchrec_storage_stalled_recordings",
        "Recordings whose file writes are failing now (disk full or I/O error).",
        "gauge",
        stalled as f64,
    );
    g(
        "branchrec_storage_write_failures_total",
        "Recording writes that failed and were cut back to a chunk boundary.",
        "counter",
        health.write_failures.load(Ordering::Relaxed) as f64,
    );
    g(
        "branchrec_storage_gaps_total",
        "Storage gaps closed (the lost interval stored as silence).",
        "counter",
        health.gaps.load(Ordering::Relaxed) as f64,
    );
    if let Some(b) = binding {
        g(
            "branchrec_rtp_foreign_source_total",
            "RTP/RTCP datagrams dropped because they came from a source the stream is not bound to.",
            "counter",
            b.rtp_foreign_source as f64,
        );
        g(
            "branchrec_sip_foreign_peer_total",
            "In-dialog requests refused because they did not come from the dialog's peer.",
            "counter",
            b.sip_foreign_peer as f64,
        );
        g(
            "branchrec_metadata_refused_total",
            "Metadata documents refused above the per-call caps.",
            "counter",
            b.metadata_refused as f64,
        );
        g(
            "branchrec_sip_transactions_refused_total",
            "SIP requests answered 503 because the live server transaction table was full.",
            "counter",
            b.sip_transactions_refused as f64,
        );
        g(
            "branchrec_sip_transaction_cap",
            "Cap on live SIP server transactions ([sip] max_transactions).",
            "gauge",
            b.sip_transaction_cap as f64,
        );
        g(
            "branchrec_media_gaps_total",
            "Stretches of recorded channels without the sender's audio although its packets came (media_gap events: re-anchor, late, overflow, rewind).",
            "counter",
            b.media_gaps as f64,
        );
        g(
            "branchrec_media_gap_seconds_total",
            "Silence in those gaps that is not the sender's audio (not loss concealment).",
            "counter",
            b.media_gap_ms as f64 / 1000.0,
        );
        g(
            "branchrec_media_dropped_seconds_total",
            "Received audio not stored where no silence marks it: replaced after a backward re-anchor (at most) or past the end of its recording.",
            "counter",
            b.media_dropped_ms as f64 / 1000.0,
        );
    }
    stalled
}

/// `/metrics` before the first status document (or without the uplink worker, which
/// builds it): the live counters alone.
pub fn render_live(shared: &UplinkShared) -> String {
    let mut o = String::new();
    let b = shared.binding.get().map(|b| {
        let mut s = b.snapshot();
        crate::app::sink::add_media_gaps(&mut s);
        s
    });
    let stalled = render_counters(&mut o, b.as_ref());
    let a = crate::app::assurance::snapshot();
    render_assurance(&mut o, &a);
    let _ = writeln!(
        o,
        "# HELP branchrec_alarm Active alarms (1 per code).\n# TYPE branchrec_alarm gauge"
    );
    if stalled > 0 {
        let _ = writeln!(o, "branchrec_alarm{{code=\"storage_write_failed\"}} 1");
    }
    for al in &a.alarms {
        let _ = writeln!(o, "branchrec_alarm{{code=\"{}\"}} 1", al.code);
    }
    o
}

/// Calls per verdict, flagged recordings and clock steps (issue #19).
fn render_assurance(o: &mut String, a: &crate::assurance::alarms::AssuranceSnapshot) {
    let _ = writeln!(
        o,
        "# HELP branchrec_calls_total Calls seen since start, by assurance verdict.\n# TYPE branchrec_calls_total counter"
    );
    for (v, n) in &a.verdicts {
        let _ = writeln!(o, "branchrec_calls_total{{verdict=\"{v}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP branchrec_time_flagged_recordings_total Recordings flagged for their clock state (unsynchronised, error above time.max_error_ms, stepped).\n# TYPE branchrec_time_flagged_recordings_total counter\nbranchrec_time_flagged_recordings_total {}",
        a.time_flagged
    );
    let _ = writeln!(
        o,
        "# HELP branchrec_clock_steps_total Wall-clock steps seen during recordings.\n# TYPE branchrec_clock_steps_total counter\nbranchrec_clock_steps_total {}",
        a.clock_steps
    );
}

async fn serve_one(mut s: tokio::net::TcpStream, shared: Arc<UplinkShared>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 {
            return Ok(());
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else if path == "/metrics" {
        match shared.last_doc() {
            Some(d) => ("200 OK", "text/plain; version=0.0.4", render(&d)),
            None if shared.binding.get().is_some() => {
                ("200 OK", "text/plain; version=0.0.4", render_live(&shared))
            }
            None => ("503 Service Unavailable", "text/plain", "starting\n".into()),
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".into())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// Serve `/metrics` on `addr` until aborted.
pub async fn serve(addr: SocketAddr, shared: Arc<UplinkShared>) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    let mut errors = crate::app::accept::AcceptErrors::new("metrics");
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE, ECONNABORTED, …: never the end of the listener; back off and
                // accept again once descriptors are free.
                errors.failed(&e).await;
                continue;
            }
        };
        let sh = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), serve_one(s, sh)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_counters_and_the_foreign_media_alarm_are_exported() {
        let mut doc: StatusDoc = serde_json::from_value(serde_json::json!({
            "schema": 1, "box_id": "b", "site": "s", "version": "v",
            "generated_at": "2026-01-01T00:00:00Z", "uptime_s": 1, "recorded": 0,
            "pending": 0, "uploaded": 0, "failed": 0, "pending_bytes": 0,
            "oldest_pending_at": null, "oldest_pending_age_s": null, "pending_delta_1h": null,
            "last_upload_at": null, "rate_limit_bps": null, "rate_bps": 0,
            "congestion_share": 1.0, "bytes_sent": 0, "disk_free_mb": null,
            "disk_total_mb": null, "key_custody": "keyfile", "key_present": true, "alarms": []
        }))
        .unwrap();
        assert!(!render(&doc).contains("branchrec_rtp_foreign_source_total"));
        doc.binding = Some(crate::binding::BindingSnapshot {
            rtp_foreign_source: 205,
            foreign_media_alarms: 2,
            sip_foreign_peer: 3,
            metadata_refused: 8,
            last_foreign_alarm_ms: Some(1_767_225_600_000),
            sip_transactions_refused: 4,
            sip_transaction_cap: 16,
            media_gaps: 2,
            media_gap_ms: 1500,
            media_dropped_ms: 0,
        });
        doc.add_binding_alarms(branchrec_core::time::UnixMs(1_767_225_600_000), "now");
        let text = render(&doc);
        for line in [
            "branchrec_rtp_foreign_source_total 205",
            "branchrec_sip_foreign_peer_total 3",
            "branchrec_metadata_refused_total 8",
            "branchrec_sip_transactions_refused_total 4",
            "branchrec_sip_transaction_cap 16",
            "branchrec_media_gaps_total 2",
            "branchrec_media_gap_seconds_total 1.5",
            "branchrec_alarm{code=\"foreign_media\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
