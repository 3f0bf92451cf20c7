//! Which recordings to upload next (sans-IO): held first, then oldest; a bounded number
//! at once; failed ones retried with exponential back-off.

use std::collections::HashSet;

/// A recording waiting for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Recording id.
    pub id: String,
    /// Under legal hold: goes first.
    pub held: bool,
    /// When the recording started (ms since the epoch): oldest first.
    pub started_at_ms: i64,
    /// Not before this time (ms) — back-off after a failure.
    pub not_before_ms: Option<i64>,
}

/// Pick at most `slots` recordings not already `in_flight`, due at `now_ms`, in order.
pub fn pick(
    candidates: &[Candidate],
    in_flight: &HashSet<String>,
    slots: usize,
    now_ms: i64,
) -> Vec<String> {
    let mut due: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !in_flight.contains(&c.id))
        .filter(|c| c.not_before_ms.map_or(true, |t| t <= now_ms))
        .collect();
    due.sort_by(|a, b| {
        b.held
            .cmp(&a.held)
            .then(a.started_at_ms.cmp(&b.started_at_ms))
            .then(a.id.cmp(&b.id))
    });
    due.into_iter().take(slots).map(|c| c.id.clone()).collect()
}

/// Delay before attempt `attempts + 1` after `attempts` failures: 5 s doubling, at most
/// 15 minutes.
pub fn retry_delay_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (5_000i64 << exp).min(15 * 60 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, held: bool, t: i64, nb: Option<i64>) -> Candidate {
        Candidate {
            id: id.into(),
            held,
            started_at_ms: t,
            not_before_ms: nb,
        }
    }

    #[test]
    fn held_first_then_oldest_skipping_busy_and_backed_off() {
        let cs = [
            c("new", false, 300, None),
            c("old", false, 100, None),
            c("held-new", true, 500, None),
            c("mid", false, 200, None),
            c("waiting", false, 50, Some(10_000)),
        ];
        let busy: HashSet<String> = ["mid".to_string()].into();
        assert_eq!(pick(&cs, &busy, 3, 1000), ["held-new", "old", "new"]);
        assert_eq!(pick(&cs, &HashSet::new(), 2, 1000), ["held-new", "old"]);
        assert_eq!(pick(&cs, &HashSet::new(), 1, 20_000), ["held-new"]);
        assert_eq!(
            pick(&cs, &HashSet::new(), 2, 20_000),
            ["held-new", "waiting"]
        );
        assert!(pick(&cs, &HashSet::new(), 0, 0).is_empty());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(retry_delay_ms(1), 5_000);
        assert_eq!(retry_delay_ms(2), 10_000);
        assert_eq!(retry_delay_ms(100), 900_000);
    }
}
