//! The status document a box pushes to `<prefix>_status/<box>.json`, and the fleet view
//! built from many of them (sans-IO: documents and "now" in, rows out). Times in the
//! document are RFC 3339 text (its wire format); "now" is [`UnixMs`].

use serde::{Deserialize, Serialize};

use crate::time::UnixMs;

/// One active alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Stable code: `tls`, `auth`, `link`, `integrity`, `config`.
    pub code: String,
    /// Human explanation (no personal data, never credentials).
    pub message: String,
    /// Raised at (RFC 3339).
    pub since: String,
}

/// Status document (schema 1). Unknown fields are ignored when reading so older fleet
/// tools read newer boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Document schema.
    pub schema: u32,
    /// Box id.
    pub box_id: String,
    /// Site.
    pub site: String,
    /// Software version.
    pub version: String,
    /// When the box wrote this (RFC 3339 UTC).
    pub generated_at: String,
    /// Daemon uptime, seconds.
    pub uptime_s: u64,
    /// Recordings in the local catalogue.
    pub recorded: u64,
    /// Finished, not yet verified in the archive.
    pub pending: u64,
    /// Verified in the archive.
    pub uploaded: u64,
    /// Whose last attempt failed.
    pub failed: u64,
    /// Bytes waiting.
    pub pending_bytes: u64,
    /// Start of the oldest waiting recording (RFC 3339).
    pub oldest_pending_at: Option<String>,
    /// Its age in seconds.
    pub oldest_pending_age_s: Option<u64>,
    /// Change of `pending` over the last hour (positive: the backlog grows).
    pub pending_delta_1h: Option<i64>,
    /// Last verified upload (RFC 3339).
    pub last_upload_at: Option<String>,
    /// Rate cap now in force, bytes/s (`None`: full speed).
    pub rate_limit_bps: Option<u64>,
    /// Measured upload rate over the last status interval, bytes/s.
    pub rate_bps: u64,
    /// Share of the scheduled rate left by congestion back-off.
    pub congestion_share: f64,
    /// Bytes sent since start.
    pub bytes_sent: u64,
    /// Free space on the data disk, MiB.
    pub disk_free_mb: Option<u64>,
    /// Size of the data disk, MiB.
    pub disk_total_mb: Option<u64>,
    /// Key custody: `keyfile` (per-install key file) or `tpm`.
    pub key_custody: String,
    /// The key is present and usable.
    pub key_present: bool,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// The newest signed audit-chain heads: kept off the box so that a rewrite of the
    /// box's audit log is caught centrally (`branchrec audit verify --against`).
    #[serde(default)]
    pub audit_heads: Vec<crate::lifecycle::audit::SignedHead>,
    /// Media and dialog binding counters (RTP from foreign sources, in-dialog requests
    /// from other peers, metadata over the caps); absent in documents of older boxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<crate::binding::BindingSnapshot>,
    /// Commands from headquarters: last applied seq, executed, refused by kind (absent
    /// when `[central] command_public_key` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<crate::command::CommandCounters>,
    /// Recording assurance (issue #19): calls per verdict since start, the assurance and
    /// clock alarms (also in `alarms`), flagged recordings and clock steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assurance: Option<crate::assurance::alarms::AssuranceSnapshot>,
}

/// Code of the alarm raised while a channel recently crossed the foreign-media threshold.
pub const FOREIGN_MEDIA_ALARM: &str = "foreign_media";

impl StatusDoc {
    /// Add the assurance alarms of [`StatusDoc::assurance`] (raised at `since`, RFC 3339).
    pub fn add_assurance_alarms(&mut self, since: &str) {
        let Some(a) = &self.assurance else {
            return;
        };
        for al in &a.alarms {
            if !self.alarms.iter().any(|x| x.code == al.code) {
                self.alarms.push(Alarm {
                    code: al.code.clone(),
                    message: al.message.clone(),
                    since: since.into(),
                });
            }
        }
    }

    /// Add the alarms the binding counters call for at `now` (`foreign_media` for an hour
    /// after a channel dropped `media.foreign_alarm_packets` datagrams from foreign
    /// sources), raised at `since` (RFC 3339).
    pub fn add_binding_alarms(&mut self, now: UnixMs, since: &str) {
        let Some(b) = &self.binding else {
            return;
        };
        if b.foreign_alarm_active(now) && !self.alarms.iter().any(|a| a.code == FOREIGN_MEDIA_ALARM)
        {
            self.alarms.push(Alarm {
                code: FOREIGN_MEDIA_ALARM.into(),
                message: format!(
                    "RTP from sources a stream is not bound to: {} datagrams dropped, {} channels over the threshold (audio injection attempt or a misconfigured SRC/NAT; see the recordings' foreign_source events)",
                    b.rtp_foreign_source, b.foreign_media_alarms
                ),
                since: since.into(),
            });
        }
    }
}

/// Thresholds of the fleet view.
#[derive(Debug, Clone, Copy)]
pub struct FleetThresholds {
    /// A heartbeat older than this is stale, seconds.
    pub stale_after_s: i64,
    /// A pending recording older than this is a backlog, seconds.
    pub backlog_age_s: u64,
}

/// One line of the fleet view.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRow {
    /// The document.
    #[serde(flatten)]
    pub doc: StatusDoc,
    /// Seconds since the document was written.
    pub heartbeat_age_s: i64,
    /// Heartbeat older than the threshold.
    pub stale: bool,
    /// Backlog older than the threshold, or growing.
    pub backlog: bool,
    /// Flags as words: `STALE`, `BACKLOG`, `ALARM`.
    pub flags: Vec<String>,
}

/// Evaluate documents at `now`.
pub fn fleet_rows(docs: Vec<StatusDoc>, now: UnixMs, th: FleetThresholds) -> Vec<FleetRow> {
    let now = now.to_datetime();
    let mut rows: Vec<FleetRow> = docs
        .into_iter()
        .map(|doc| {
            // Through chrono, not whole milliseconds: sub-millisecond parts of
            // `generated_at` count as before.
            let age = chrono::DateTime::parse_from_rfc3339(&doc.generated_at)
                .ok()
                .zip(now)
                .map(|(t, now)| (now - t.with_timezone(&chrono::Utc)).num_seconds())
                .unwrap_or(i64::MAX);
            let stale = age > th.stale_after_s;
            let old = doc.oldest_pending_age_s.unwrap_or(0);
            let growing = doc.pending_delta_1h.unwrap_or(0) > 0 && old > 3600;
            let backlog = old > th.backlog_age_s || growing;
            let mut flags = Vec::new();
            if stale {
                flags.push("STALE".to_string());
            }
            if backlog {
                flags.push(
                    if growing {
                        "BACKLOG-GROWING"
                    } else {
                        "BACKLOG"
                    }
                    .to_string(),
                );
            }
            if !doc.alarms.is_empty() {
                flags.push("ALARM".to_string());
            }
            FleetRow {
                doc,
                heartbeat_age_s: age,
                stale,
                backlog,
                flags,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.doc.site, &a.doc.box_id).cmp(&(&b.doc.site, &b.doc.box_id)));
    rows
}

/// Human duration: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn human_age(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1}k", b as f64 / 1024.0)
    } else {
        format!("{b}")
    }
}

/// The fleet table.
pub fn render_fleet(rows: &[FleetRow]) -> String {
    let mut t = vec![[
        "SITE",
        "BOX",
        "VERSION",
        "HEARTBEAT",
        "PENDING",
        "BYTES",
        "OLDEST",
        "UPLOADED",
        "LAST UPLOAD",
        "RATE",
        "ALARMS",
        "FLAGS",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        let d = &r.doc;
        t.push(vec![
            d.site.clone(),
            d.box_id.clone(),
            d.version.clone(),
            if r.heartbeat_age_s == i64::MAX {
                "?".into()
            } else {
                format!("{} ago", human_age(r.heartbeat_age_s.max(0) as u64))
            },
            d.pending.to_string(),
            human_bytes(d.pending_bytes),
            d.oldest_pending_age_s.map_or("-".into(), human_age),
            d.uploaded.to_string(),
            d.last_upload_at.clone().unwrap_or_else(|| "-".into()),
            format!("{}/s", human_bytes(d.rate_bps)),
            d.alarms
                .iter()
                .map(|a| a.code.as_str())
                .collect::<Vec<_>>()
                .join(","),
            r.flags.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..t[0].len())
        .map(|i| {
            t.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &t {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, at: &str, oldest: Option<u64>, delta: Option<i64>) -> StatusDoc {
        StatusDoc {
            schema: 1,
            box_id: id.into(),
            site: "s".into(),
            version: "0.1.0".into(),
            generated_at: at.into(),
            uptime_s: 10,
            recorded: 5,
            pending: 2,
            uploaded: 3,
            failed: 0,
            pending_bytes: 2048,
            oldest_pending_at: None,
            oldest_pending_age_s: oldest,
            pending_delta_1h: delta,
            last_upload_at: None,
            rate_limit_bps: None,
            rate_bps: 100,
            congestion_share: 1.0,
            bytes_sent: 0,
            disk_free_mb: None,
            disk_total_mb: None,
            key_custody: "keyfile".into(),
            key_present: true,
            alarms: vec![],
            audit_heads: Vec::new(),
            binding: None,
            commands: None,
            assurance: None,
        }
    }

    #[test]
    fn assurance_alarms_reach_the_document_once() {
        use crate::assurance::alarms::{default_rules, AssuranceMonitor};
        use crate::assurance::Verdict;
        use crate::time::Mono;
        let mut m = AssuranceMonitor::new(default_rules());
        m.note(Mono::from_secs(1), Verdict::Missed);
        let mut d = doc("b", "2026-12-03T10:00:00Z", None, None);
        d.assurance = Some(m.snapshot(Mono::from_secs(2)));
        d.add_assurance_alarms("2026-12-03T10:00:00Z");
        d.add_assurance_alarms("2026-12-03T10:00:00Z");
        assert_eq!(
            d.alarms
                .iter()
                .filter(|a| a.code == "assurance_missed")
                .count(),
            1
        );
        let back: StatusDoc = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.assurance.unwrap().verdicts["missed"], 1);
        // Older documents without the field still read.
        let mut v = serde_json::to_value(&d).unwrap();
        v.as_object_mut().unwrap().remove("assurance");
        assert!(serde_json::from_value::<StatusDoc>(v)
            .unwrap()
            .assurance
            .is_none());
    }

    #[test]
    fn binding_counters_raise_the_foreign_media_alarm_for_an_hour() {
        let mut d = doc("b", "2025-01-01T12:00:00Z", None, None);
        let now = UnixMs::parse_rfc3339("2025-01-01T12:00:00Z").unwrap();
        d.add_binding_alarms(now, "x");
        assert!(d.alarms.is_empty(), "no counters, no alarm");
        d.binding = Some(crate::binding::BindingSnapshot {
            rtp_foreign_source: 120,
            foreign_media_alarms: 2,
            last_foreign_alarm_ms: Some(now.0 - 60_000),
            ..Default::default()
        });
        d.add_binding_alarms(now, "x");
        d.add_binding_alarms(now, "x");
        assert_eq!(d.alarms.len(), 1);
        assert_eq!(d.alarms[0].code, FOREIGN_MEDIA_ALARM);
        assert!(d.alarms[0].message.contains("120 datagrams"));
        // An old document without the field still reads.
        let mut v = serde_json::to_value(&d).unwrap();
        v.as_object_mut().unwrap().remove("binding");
        let back: StatusDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back.binding, None);
        let mut later = d.clone();
        later.alarms.clear();
        later.add_binding_alarms(UnixMs(now.0 + crate::binding::FOREIGN_ALARM_HOLD_MS), "x");
        assert!(
            later.alarms.is_empty(),
            "the alarm ends an hour after the last crossing"
        );
    }

    #[test]
    fn stale_and_backlog_flags() {
        let now = UnixMs::parse_rfc3339("2025-01-01T12:00:00Z").unwrap();
        let th = FleetThresholds {
            stale_after_s: 600,
            backlog_age_s: 86_400,
        };
        let rows = fleet_rows(
            vec![
                doc("b", "2025-01-01T11:59:00Z", Some(60), Some(0)),
                doc("a", "2025-01-01T10:00:00Z", Some(60), None),
                doc("c", "2025-01-01T11:59:30Z", Some(7200), Some(5)),
                doc("d", "garbage", Some(100_000), None),
            ],
            now,
            th,
        );
        let f: Vec<(String, Vec<String>)> = rows
            .iter()
            .map(|r| (r.doc.box_id.clone(), r.flags.clone()))
            .collect();
        assert_eq!(f[0], ("a".into(), vec!["STALE".to_string()]));
        assert_eq!(f[1], ("b".into(), vec![]));
        assert_eq!(f[2], ("c".into(), vec!["BACKLOG-GROWING".to_string()]));
        assert_eq!(f[3].1, vec!["STALE".to_string(), "BACKLOG".to_string()]);
        let t = render_fleet(&rows);
        assert!(t.lines().next().unwrap().starts_with("SITE"));
        assert_eq!(t.lines().count(), 5);
        assert_eq!(human_age(3700), "1h01m");
    }
}
