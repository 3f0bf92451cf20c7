//! `branchrec assurance report` (issue #19, docs/assurance.md): every call seen on a
//! day with its verdict, the totals by verdict, rule and source, and optionally the
//! reconciliation against an external CDR list.

use serde::Serialize;

use crate::assurance::cdr::{self, CallSeen, Reconciliation, Totals};
use crate::catalog::Catalog;

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Totals.
    pub totals: Totals,
    /// Recordings of the day without a verdict (in progress, or closed before schema 11).
    pub unjudged: u64,
    /// Every call seen, by start.
    pub calls: Vec<CallSeen>,
    /// The CDR comparison, with `--cdr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Reconciliation>,
    /// CDRs in the file for that day (with `--cdr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdrs: Option<usize>,
}

/// Build the report of `day` (UTC); with `cdr_csv` (text) reconcile the CDRs that start
/// on that day, matching within `tolerance_ms`.
pub fn report(
    cat: &Catalog,
    day: &str,
    cdr_csv: Option<&str>,
    tolerance_ms: i64,
) -> anyhow::Result<Report> {
    let (from, to) = cdr::day_bounds(day)
        .ok_or_else(|| anyhow::anyhow!("--day {day:?}: expected YYYY-MM-DD"))?;
    let (calls, unjudged) = cat.calls_seen_between(from.0, to.0)?;
    let (reconciliation, cdrs) = match cdr_csv {
        Some(text) => {
            let all = cdr::parse_csv(text)?;
            let day_cdrs: Vec<_> = all
                .into_iter()
                .filter(|c| c.start_ms >= from.0 && c.start_ms < to.0)
                .collect();
            // Calls just outside the day may match CDRs just inside it: look around.
            let (around, _) = cat.calls_seen_between(from.0 - tolerance_ms, to.0 + tolerance_ms)?;
            let mut r = cdr::reconcile(&day_cdrs, &around, tolerance_ms);
            // Recordings without a CDR: only those of the day itself.
            r.recording_without_cdr
                .retain(|id| calls.iter().any(|c| &c.id == id));
            (Some(r), Some(day_cdrs.len()))
        }
        None => (None, None),
    };
    Ok(Report {
        day: day.to_string(),
        totals: cdr::totals(&calls),
        unjudged,
        calls,
        reconciliation,
        cdrs,
    })
}
