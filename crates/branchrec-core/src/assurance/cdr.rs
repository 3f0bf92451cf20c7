//! Reconciliation of the calls the recorder saw against an external CDR list
//! (docs/assurance.md): CDRs without a recording ("not recorded"), recordings without a
//! CDR ("recorded in error"), and matches whose verdict is not `recorded` ("incorrect
//! media"). Sans-IO: the CSV text and the calls come in, the report goes out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Verdict;
use crate::time::UnixMs;

/// One CDR: `start,caller,callee,duration` (duration in seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cdr {
    /// Line in the file (1-based).
    pub line: usize,
    /// Start, unix ms.
    pub start_ms: i64,
    /// Calling number as given.
    pub caller: String,
    /// Called number as given.
    pub callee: String,
    /// Duration, seconds.
    pub duration_s: u64,
}

/// A CSV problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdrError {
    /// A line does not have the four fields or a field does not parse.
    #[error("CDR line {line}: {message}")]
    Line {
        /// Line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Start times: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), or unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n.saturating_mul(1000));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

/// Parse a CDR CSV: four comma-separated fields per line; blank lines and `#` comments
/// are skipped, and a first line whose start does not parse is taken as the header.
pub fn parse_csv(text: &str) -> Result<Vec<Cdr>, CdrError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split(',').map(unquote).collect();
        let bad = |m: String| CdrError::Line { line, message: m };
        let Some(start) = f.first().and_then(|s| parse_time(s)) else {
            if out.is_empty() && line == first_content_line(text) {
                continue; // header
            }
            return Err(bad(format!(
                "start {:?} is not a time",
                f.first().unwrap_or(&"")
            )));
        };
        if f.len() != 4 {
            return Err(bad(format!(
                "{} fields, expected start,caller,callee,duration",
                f.len()
            )));
        }
        let duration_s = f[3]
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .ok_or_else(|| bad(format!("duration {:?} is not seconds", f[3])))?;
        out.push(Cdr {
            line,
            start_ms: start,
            caller: f[1].to_string(),
            callee: f[2].to_string(),
            duration_s: duration_s.round() as u64,
        });
    }
    Ok(out)
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .map_or(0, |i| i + 1)
}

/// A call the recorder saw (a recording, a refused or not-recorded call).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSeen {
    /// Recording id, or the id of the `calls_seen` row.
    pub id: String,
    /// Start, unix ms.
    pub start_ms: i64,
    /// Duration, ms (0 for refused calls).
    pub duration_ms: u64,
    /// Numbers of the parties the catalogue keeps (may be empty).
    pub numbers: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// `siprec` or `mirror`.
    pub source: String,
    /// The recording rule, if any.
    pub rule: Option<String>,
}

/// Digits of a number, for comparison (the last 9 digits: national forms and `+CC`
/// prefixes compare equal).
fn digits(n: &str) -> String {
    let d: String = n.chars().filter(char::is_ascii_digit).collect();
    let skip = d.len().saturating_sub(9);
    d[skip..].to_string()
}

/// One matched pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// The CDR's line.
    pub cdr_line: usize,
    /// The call's id.
    pub id: String,
    /// |start difference|, ms.
    pub start_diff_ms: i64,
    /// The call's verdict.
    pub verdict: Verdict,
}

/// The reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Matched pairs.
    pub matched: Vec<Match>,
    /// Matched, but the verdict is not `recorded` (incorrect media or not recorded).
    pub incorrect: Vec<Match>,
    /// CDRs without any call seen: the recorder never saw them (missing).
    pub cdr_without_recording: Vec<Cdr>,
    /// Calls seen without a CDR: ids.
    pub recording_without_cdr: Vec<String>,
}

/// Match CDRs to calls: each CDR to the unmatched call nearest in start time within
/// `tolerance_ms` whose numbers (when both sides have some) include the CDR's caller or
/// callee; CDRs in start order, so the result does not depend on the file's order.
pub fn reconcile(cdrs: &[Cdr], calls: &[CallSeen], tolerance_ms: i64) -> Reconciliation {
    let mut order: Vec<&Cdr> = cdrs.iter().collect();
    order.sort_by_key(|c| (c.start_ms, c.line));
    let mut taken = vec![false; calls.len()];
    let mut r = Reconciliation::default();
    for c in order {
        let want = [digits(&c.caller), digits(&c.callee)];
        let best = calls
            .iter()
            .enumerate()
            .filter(|(i, _)| !taken[*i])
            .filter(|(_, s)| (s.start_ms - c.start_ms).abs() <= tolerance_ms)
            .filter(|(_, s)| {
                let have: Vec<String> = s
                    .numbers
                    .iter()
                    .map(|n| digits(n))
                    .filter(|d| !d.is_empty())
                    .collect();
                have.is_empty()
                    || want.iter().all(String::is_empty)
                    || want.iter().any(|w| !w.is_empty() && have.contains(w))
            })
            .min_by_key(|(_, s)| ((s.start_ms - c.start_ms).abs(), s.id.clone()));
        match best {
            Some((i, s)) => {
                taken[i] = true;
                let m = Match {
                    cdr_line: c.line,
                    id: s.id.clone(),
                    start_diff_ms: (s.start_ms - c.start_ms).abs(),
                    verdict: s.verdict,
                };
                if !s.verdict.is_good() {
                    r.incorrect.push(m.clone());
                }
                r.matched.push(m);
            }
            None => r.cdr_without_recording.push(c.clone()),
        }
    }
    r.recording_without_cdr = calls
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|(s, _)| s.id.clone())
        .collect();
    r
}

/// Totals of a day: calls seen, by verdict, by rule and by source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Calls seen.
    pub calls: u64,
    /// By verdict (every verdict present).
    pub by_verdict: BTreeMap<String, u64>,
    /// By rule (`(none)` without a rule).
    pub by_rule: BTreeMap<String, BTreeMap<String, u64>>,
    /// By source.
    pub by_source: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Count `calls`.
pub fn totals(calls: &[CallSeen]) -> Totals {
    let mut t = Totals {
        by_verdict: Verdict::ALL
            .iter()
            .map(|v| (v.as_str().to_string(), 0))
            .collect(),
        ..Totals::default()
    };
    for c in calls {
        t.calls += 1;
        *t.by_verdict.entry(c.verdict.as_str().into()).or_default() += 1;
        let rule = c.rule.clone().unwrap_or_else(|| "(none)".into());
        *t.by_rule
            .entry(rule)
            .or_default()
            .entry(c.verdict.as_str().into())
            .or_default() += 1;
        *t.by_source
            .entry(c.source.clone())
            .or_default()
            .entry(c.verdict.as_str().into())
            .or_default() += 1;
    }
    t
}

/// The UTC day `[start, end)` of `YYYY-MM-DD`, unix ms.
pub fn day_bounds(day: &str) -> Option<(UnixMs, UnixMs)> {
    let d = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").ok()?;
    let s = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    Some((UnixMs(s), UnixMs(s + 86_400_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, start: i64, nums: &[&str], v: Verdict) -> CallSeen {
        CallSeen {
            id: id.into(),
            start_ms: start,
            duration_ms: 60_000,
            numbers: nums.iter().map(|s| s.to_string()).collect(),
            verdict: v,
            source: "siprec".into(),
            rule: None,
        }
    }

    #[test]
    fn parse_formats_and_errors() {
        let csv = "start,caller,callee,duration\n\
                   2026-12-03T10:00:00Z,+41441234567,0449876543,61\n\
                   \n# comment\n\
                   \"2026-12-03 10:05:00\",100,200,0.4\n\
                   1796292000,1,2,3\n";
        let c = parse_csv(csv).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0].start_ms,
            day_bounds("2026-12-03").unwrap().0 .0 + 10 * 3_600_000
        );
        assert_eq!(
            (c[1].line, c[1].duration_s, c[1].caller.as_str()),
            (5, 0, "100")
        );
        assert_eq!(c[2].start_ms, 1_796_292_000_000);
        assert!(matches!(
            parse_csv("2026-12-03T10:00:00Z,1,2\n"),
            Err(CdrError::Line { line: 1, .. })
        ));
        assert!(matches!(
            parse_csv("h\n2026-12-03T10:00:00Z,1,2,x\n"),
            Err(CdrError::Line { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("h\nnot a time,1,2,3\n"),
            Err(CdrError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn reconcile_both_ways() {
        let t0 = 1_800_000_000_000;
        let cdrs = parse_csv(&format!(
            "{},+41441234567,200,60\n{},300,400,60\n{},500,600,30\n{},700,800,10\n",
            t0 / 1000,
            t0 / 1000 + 600,
            t0 / 1000 + 1200,
            t0 / 1000 + 3000
        ))
        .unwrap();
        let calls = vec![
            call("a", t0 + 1500, &["0441234567"], Verdict::Recorded), // number in national form
            call("b", t0 + 600_000 - 800, &[], Verdict::OneWay),      // no numbers: time only
            call("c", t0 + 1_200_000 + 400, &["999"], Verdict::Recorded), // wrong numbers
            call("d", t0 + 3_000_000 + 100, &[], Verdict::Refused),
            call("e", t0 + 9_000_000, &["1"], Verdict::Recorded),
        ];
        let r = reconcile(&cdrs, &calls, 5_000);
        let ids: Vec<&str> = r.matched.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        assert_eq!(r.matched[0].start_diff_ms, 1500);
        assert_eq!(
            r.incorrect
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["b", "d"]
        );
        assert_eq!(
            r.cdr_without_recording
                .iter()
                .map(|c| c.line)
                .collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(r.recording_without_cdr, ["c", "e"]);
        // Outside the tolerance nothing matches.
        let r = reconcile(&cdrs, &calls, 100);
        assert_eq!(r.matched.len(), 1);
        let t = totals(&calls);
        assert_eq!(
            (
                t.calls,
                t.by_verdict["recorded"],
                t.by_verdict["one_way"],
                t.by_verdict["missed"]
            ),
            (5, 3, 1, 0)
        );
        assert_eq!(t.by_source["siprec"]["refused"], 1);
        assert_eq!(t.by_rule["(none)"]["recorded"], 3);
    }
}
