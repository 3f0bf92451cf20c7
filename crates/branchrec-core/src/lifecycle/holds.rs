//! Legal holds: what a hold covers, and whether a recording is covered.

use super::pattern::aor_matches;

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldTarget {
    /// One recording by id.
    Recording(String),
    /// Every recording of a call: SIP Call-ID or SIPREC session id.
    Call(String),
    /// Every recording with a participant whose AoR or number matches this pattern.
    Participant(String),
    /// Every recording that overlaps `[from_ms, to_ms]` (unix ms).
    Window {
        /// Start.
        from_ms: i64,
        /// End.
        to_ms: i64,
    },
}

impl HoldTarget {
    /// Kind as stored in the catalogue.
    pub fn kind(&self) -> &'static str {
        match self {
            HoldTarget::Recording(_) => "recording",
            HoldTarget::Call(_) => "call",
            HoldTarget::Participant(_) => "participant",
            HoldTarget::Window { .. } => "window",
        }
    }
}

/// What hold matching needs to know about a recording.
#[derive(Debug, Clone, Default)]
pub struct HoldFacts<'a> {
    /// Recording id.
    pub id: &'a str,
    /// SIP Call-ID.
    pub call_id: &'a str,
    /// SIPREC session id.
    pub session_id: Option<&'a str>,
    /// Participant AoRs.
    pub participants: Vec<&'a str>,
    /// Start, unix ms.
    pub started_at_ms: i64,
    /// End, unix ms (`None` while recording: counts as "now").
    pub ended_at_ms: Option<i64>,
}

/// Whether `target` covers the recording described by `f` (at time `now_ms`).
pub fn covers(target: &HoldTarget, f: &HoldFacts<'_>, now_ms: i64) -> bool {
    match target {
        HoldTarget::Recording(id) => id == f.id,
        HoldTarget::Call(c) => c == f.call_id || f.session_id == Some(c.as_str()),
        HoldTarget::Participant(p) => f.participants.iter().any(|a| aor_matches(p, a)),
        HoldTarget::Window { from_ms, to_ms } => {
            let end = f.ended_at_ms.unwrap_or(now_ms);
            f.started_at_ms <= *to_ms && end >= *from_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let f = HoldFacts {
            id: "r1",
            call_id: "c1@x",
            session_id: Some("s1"),
            participants: vec!["sip:+4930111@pbx", "sip:1002@pbx"],
            started_at_ms: 1000,
            ended_at_ms: Some(2000),
        };
        assert!(covers(&HoldTarget::Recording("r1".into()), &f, 0));
        assert!(!covers(&HoldTarget::Recording("r2".into()), &f, 0));
        assert!(covers(&HoldTarget::Call("c1@x".into()), &f, 0));
        assert!(covers(&HoldTarget::Call("s1".into()), &f, 0));
        assert!(covers(&HoldTarget::Participant("+4930111".into()), &f, 0));
        assert!(covers(&HoldTarget::Participant("+4930*".into()), &f, 0));
        assert!(!covers(&HoldTarget::Participant("+4940*".into()), &f, 0));
        assert!(covers(
            &HoldTarget::Window {
                from_ms: 1500,
                to_ms: 1600
            },
            &f,
            0
        ));
        assert!(covers(
            &HoldTarget::Window {
                from_ms: 2000,
                to_ms: 3000
            },
            &f,
            0
        ));
        assert!(!covers(
            &HoldTarget::Window {
                from_ms: 2001,
                to_ms: 3000
            },
            &f,
            0
        ));
        assert!(!covers(
            &HoldTarget::Window {
                from_ms: 0,
                to_ms: 999
            },
            &f,
            0
        ));
        let running = HoldFacts {
            ended_at_ms: None,
            ..f
        };
        assert!(covers(
            &HoldTarget::Window {
                from_ms: 5000,
                to_ms: 6000
            },
            &running,
            5500
        ));
    }
}
