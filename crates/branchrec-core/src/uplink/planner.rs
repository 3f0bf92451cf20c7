//! Which recordings to upload next (sans-IO): held first, then oldest; a bounded number
//! at once; failed ones retried with exponential back-off.

use std::collections::HashSet;
use std::time::Duration;

use crate::time::UnixMs;

/// A recording waiting for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Recording id.
    pub id: String,
    /// Under legal hold: goes first.
    pub held: bool,
    /// When the recording started: oldest first.
    pub started_at: UnixMs,
    /// Not before this time — back-off after a failure.
    pub not_before: Option<UnixMs>,
}

/// Pick at most `slots` recordings not already `in_flight`, due at `now`, in order.
pub fn pick(
    candidates: &[Candidate],
    in_flight: &HashSet<String>,
    slots: usize,
    now: UnixMs,
) -> Vec<String> {
    let mut due: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !in_flight.contains(&c.id))
        .filter(|c| c.not_before.map_or(true, |t| t <= now))
        .collect();
    due.sort_by(|a, b| {
        b.held
            .cmp(&a.held)
            .then(a.started_at.cmp(&b.started_at))
            .then(a.id.cmp(&b.id))
    });
    due.into_iter().take(slots).map(|c| c.id.clone()).collect()
}

/// Delay before attempt `attempts + 1` after `attempts` failures: 5 s doubling, at most
/// 15 minutes.
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    Duration::from_millis((5_000u64 << exp).min(15 * 60 * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, held: bool, t: i64, nb: Option<i64>) -> Candidate {
        Candidate {
            id: id.into(),
            held,
            started_at: UnixMs(t),
            not_before: nb.map(UnixMs),
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
        assert_eq!(
            pick(&cs, &busy, 3, UnixMs(1000)),
            ["held-new", "old", "new"]
        );
        assert_eq!(
            pick(&cs, &HashSet::new(), 2, UnixMs(1000)),
            ["held-new", "old"]
        );
        assert_eq!(pick(&cs, &HashSet::new(), 1, UnixMs(20_000)), ["held-new"]);
        assert_eq!(
            pick(&cs, &HashSet::new(), 2, UnixMs(20_000)),
            ["held-new", "waiting"]
        );
        assert!(pick(&cs, &HashSet::new(), 0, UnixMs(0)).is_empty());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(5_000));
        assert_eq!(retry_delay(2), Duration::from_millis(10_000));
        assert_eq!(retry_delay(100), Duration::from_millis(900_000));
    }
}
