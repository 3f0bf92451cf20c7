//! Catalogue side of recording assurance (issue #19, docs/assurance.md): the verdict
//! and assurance document of a recording, the `calls_seen` rows of calls that got no
//! recording, and the calls of a period for `branchrec assurance report`.

use rusqlite::params;

use super::{invalid, write_tx, Catalog, CatalogError, Source};
use crate::assurance::cdr::CallSeen;
use crate::assurance::Verdict;

/// A call that got no recording (refused, not recorded by rule, missed). No personal
/// data: the row has a random id, the time, how the call came, why, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSeenRow {
    /// A random id (not the Call-ID).
    pub id: String,
    /// SIPREC or mirror.
    pub source: Source,
    /// When the call was seen, unix ms.
    pub seen_at_ms: i64,
    /// `refused`, `not_recorded` or `missed` (`no_media`: a mirrored dialog whose RTP
    /// never came, so no recording was started).
    pub verdict: Verdict,
    /// A short reason code (`no_keys`, `call_limit`, `storage`, `rule`, …).
    pub reason: String,
    /// The rule that decided, if any.
    pub rule: Option<String>,
    /// Direction of the call as the rules saw it.
    pub direction: Option<String>,
}

impl Catalog {
    /// Store the verdict and the assurance document of a finished recording.
    pub fn set_assurance(
        &mut self,
        id: &str,
        verdict: Verdict,
        doc: &serde_json::Value,
    ) -> Result<(), CatalogError> {
        // `missed`: a mirrored call catalogued without a file (codec not decodable).
        if matches!(verdict, Verdict::Refused | Verdict::NotRecorded) {
            return Err(invalid(
                "verdict",
                "a recording cannot be refused or not recorded",
            ));
        }
        let tx = write_tx(&mut self.conn)?;
        let n = tx.execute(
            "UPDATE recordings SET verdict = ?2, assurance_json = ?3 WHERE id = ?1",
            params![id, verdict.as_str(), doc.to_string()],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Keep a call that got no recording.
    pub fn add_call_seen(&mut self, row: &CallSeenRow) -> Result<(), CatalogError> {
        if !matches!(
            row.verdict,
            Verdict::Refused | Verdict::NotRecorded | Verdict::Missed | Verdict::NoMedia
        ) {
            return Err(invalid(
                "verdict",
                "calls_seen holds calls without a recording",
            ));
        }
        let tx = write_tx(&mut self.conn)?;
        tx.execute(
            "INSERT INTO calls_seen (id, source, seen_at, verdict, reason, rule, direction)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.id,
                row.source.as_str(),
                row.seen_at_ms,
                row.verdict.as_str(),
                row.reason,
                row.rule,
                row.direction
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every call seen that started in `[from_ms, to_ms)`: recordings with a verdict
    /// (their participants' numbers for CDR matching) and the `calls_seen` rows, by
    /// start. Also returns how many recordings there have no verdict yet (in progress,
    /// or closed before schema 11).
    pub fn calls_seen_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<CallSeen>, u64), CatalogError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::new();
        let mut unjudged = 0u64;
        {
            let mut st = tx.prepare_cached(
                "SELECT id, started_at, duration_ms, verdict, source, rule FROM recordings
                 WHERE started_at >= ?1 AND started_at < ?2 ORDER BY started_at, id",
            )?;
            let mut nums = tx.prepare_cached(
                "SELECT number FROM participants WHERE recording_id = ?1 AND number IS NOT NULL
                 ORDER BY participant_id",
            )?;
            let rows = st.query_map(params![from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            for row in rows {
                let (id, start, dur, verdict, source, rule) = row?;
                let Some(v) = verdict.as_deref().and_then(Verdict::parse) else {
                    unjudged += 1;
                    continue;
                };
                let numbers = nums
                    .query_map([&id], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(CallSeen {
                    id,
                    start_ms: start,
                    duration_ms: dur.map_or(0, |d| d.max(0) as u64),
                    numbers,
                    verdict: v,
                    source,
                    rule,
                });
            }
            let mut st = tx.prepare_cached(
                "SELECT id, seen_at, verdict, source, rule FROM calls_seen
                 WHERE seen_at >= ?1 AND seen_at < ?2 ORDER BY seen_at, id",
            )?;
            let rows = st.query_map(params![from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            for row in rows {
                let (id, at, verdict, source, rule) = row?;
                let v = Verdict::parse(&verdict).ok_or_else(|| {
                    super::corrupt("calls_seen.verdict", format!("unknown verdict {verdict:?}"))
                })?;
                out.push(CallSeen {
                    id,
                    start_ms: at,
                    duration_ms: 0,
                    numbers: Vec::new(),
                    verdict: v,
                    source,
                    rule,
                });
            }
        }
        tx.finish()?;
        out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
        Ok((out, unjudged))
    }
}
