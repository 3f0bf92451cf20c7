//! Human-readable `branchrec recordings list` output (the catalogue returns the rows,
//! this renders them).
//!
//! This output is for an authorised operator and does show names and numbers (unlike
//! logs, see [`crate::pii`]). Values that came from the network are stripped of control
//! characters so that a crafted display name cannot move the cursor or forge lines.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::catalog::{ParticipantSummary, RecordingSummary};

const HEADERS: [&str; 7] = [
    "ID",
    "START (UTC)",
    "DURATION",
    "STATE",
    "SOURCE",
    "CODEC",
    "PARTICIPANTS",
];

/// The assurance lines of `recordings show` (issue #19): verdict and why, per-channel
/// quality, and the clock state flag.
pub fn assurance_lines(show: &serde_json::Value) -> String {
    let a = &show["assurance"];
    if a.is_null() {
        return "verdict: - (not judged: recording in progress or closed before schema 11)".into();
    }
    let mut out = format!(
        "verdict: {}  ({})",
        a["verdict"].as_str().unwrap_or("-"),
        clean(a["reason"].as_str().unwrap_or(""))
    );
    for c in a["channels"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  channel {}: level {} dBFS, voice {:.0} %, loss {} %, jitter {} ms, R {}, MOS {}",
            c["channel"],
            c["rms_dbfs"],
            c["voice_ratio"].as_f64().unwrap_or(0.0) * 100.0,
            c["loss_pct"],
            c["jitter_ms"],
            c["r_factor"],
            c["mos"]
        ));
    }
    let clock = &a["clock"];
    match clock["flagged"].as_str() {
        Some(why) => out.push_str(&format!("\n  TIME FLAGGED: {}", clean(why))),
        None => out.push_str(&format!(
            "\n  time: synchronised (error bound {} µs at start, max {} ms)",
            clock["start"]["maxerror_us"], clock["max_error_ms"]
        )),
    }
    for s in clock["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  clock step of {} ms at {} ms",
            s["step_ms"], s["at_ms"]
        ));
    }
    out
}

/// Render `rows` as a table with aligned columns, one line per recording, header first.
/// Participants are shown as `name <aor>`, comma-separated.
pub fn render_table(rows: &[RecordingSummary]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                clean(&r.id),
                start_cell(&r.start),
                r.duration_ms.map_or_else(|| "-".to_owned(), hms),
                r.state.to_string(),
                r.source.to_string(),
                clean(&r.codec),
                r.participants
                    .iter()
                    .map(participant)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();

    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }

    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&cells) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = w.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat(' ').take(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `2024-05-01T09:30:00.000Z` → `2024-05-01 09:30:00`; anything unparsable is shown as is.
fn start_cell(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned(),
        Err(_) => clean(rfc3339),
    }
}

/// Milliseconds as `H:MM:SS` (rounded down to the second).
fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn participant(p: &ParticipantSummary) -> String {
    let name = p
        .name
        .as_deref()
        .map(clean)
        .filter(|n| !n.trim().is_empty());
    let aor = p.aor.as_deref().map(clean).filter(|a| !a.is_empty());
    let who = match (name, aor) {
        (Some(n), Some(a)) => format!("{} <{a}>", n.trim()),
        (None, Some(a)) => format!("<{a}>"),
        (Some(n), None) => n.trim().to_owned(),
        (None, None) => format!("[{}]", clean(&p.participant_id)),
    };
    // Participants are a history: one who left before the end (a transfer) is marked.
    if p.left_at.is_some() {
        format!("{who} (left)")
    } else {
        who
    }
}

/// Replace control characters (C0, DEL, C1, including newlines and ESC) by `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ChannelSummary, MappingSource, RecordingState, Source};

    fn summary(id: &str, participants: Vec<ParticipantSummary>) -> RecordingSummary {
        RecordingSummary {
            id: id.to_owned(),
            call_id: "c1".to_owned(),
            session_id: None,
            source: Source::Siprec,
            start: "2024-05-01T09:30:00.250Z".to_owned(),
            end: Some("2024-05-01T10:31:05.000Z".to_owned()),
            duration_ms: Some(3_665_999),
            participants,
            channels: vec![ChannelSummary {
                channel: 0,
                participant_id: None,
                name: None,
                aor: None,
                label: None,
                mapping_source: MappingSource::MlineOrder,
            }],
            codec: "PCMU".to_owned(),
            storage_format: "wav".to_owned(),
            state: RecordingState::Complete,
            verdict: Some("recorded".to_owned()),
            lifecycle: Default::default(),
        }
    }

    fn p(id: &str, name: Option<&str>, aor: Option<&str>) -> ParticipantSummary {
        ParticipantSummary {
            participant_id: id.to_owned(),
            name: name.map(str::to_owned),
            aor: aor.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn header_only_when_empty() {
        let t = render_table(&[]);
        assert_eq!(t.lines().count(), 1);
        assert!(t.starts_with("ID  START (UTC)  DURATION"));
        assert!(t.ends_with("PARTICIPANTS\n"));
    }

    #[test]
    fn columns_align_and_participants_show_name_and_aor() {
        let mut rec = summary("short", vec![p("a", None, Some("tel:+4930123"))]);
        rec.duration_ms = None;
        rec.end = None;
        rec.state = RecordingState::Recording;
        let rows = vec![
            summary(
                "0f5c1a52-3b8e-4c1e-9a43-6f2d3b1c9e77",
                vec![
                    p("a", Some("Alice Smith"), Some("sip:+4930111@pbx.example")),
                    p("b", Some("Bob"), None),
                ],
            ),
            rec,
        ];
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column starts at the same character offset on every line.
        for h in HEADERS.iter().skip(1) {
            let col = lines[0].find(h).expect("header present");
            let prev = &lines[1][..col];
            assert!(
                prev.ends_with("  "),
                "column {h} not aligned in {:?}",
                lines[1]
            );
            assert!(
                lines[2][..col].ends_with("  "),
                "column {h} in {:?}",
                lines[2]
            );
            assert!(!lines[1][col..].starts_with(' '));
        }
        assert!(lines[1].contains("2024-05-01 09:30:00"));
        assert!(lines[1].contains("1:01:05"));
        assert!(lines[1].ends_with("Alice Smith <sip:+4930111@pbx.example>, Bob"));
        assert!(lines[2].contains(" - "));
        assert!(lines[2].contains("recording"));
        assert!(lines[2].ends_with("<tel:+4930123>"));
    }

    #[test]
    fn control_characters_are_neutralised() {
        let rows = vec![summary(
            "x",
            vec![p("a", Some("Eve\n\u{1b}[2Jfake line"), Some("sip:e@x\r"))],
        )];
        let t = render_table(&rows);
        assert_eq!(t.lines().count(), 2);
        assert!(!t.contains('\u{1b}'));
        assert!(!t.contains('\r'));
        assert!(t.contains("Eve??[2Jfake line <sip:e@x?>"));
    }

    #[test]
    fn participant_without_name_or_aor_shows_id() {
        assert_eq!(participant(&p("p9", None, None)), "[p9]");
        assert_eq!(participant(&p("p9", Some("  "), None)), "[p9]");
    }
}
