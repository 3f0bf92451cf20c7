//! Legal holds: what a hold covers, and whether a recording is covered.

use super::pattern::aor_matches;
use crate::time::UnixMs;

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldTarget {
    /// One recording by id.
    Recording(String),
    /// Every recording of a call: SIP Call-ID or SIPREC session id.
    Call(String),
    /// Every recording with a participant whose AoR or number matches this pattern.
    Participant(String),
    /// Every recording that overlaps `[from, to]`.
    Window {
        /// Start.
        from: UnixMs,
        /// End.
        to: UnixMs,
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
    /// Start.
    pub started_at: UnixMs,
    /// End (`None` while recording: counts as "now").
    pub ended_at: Option<UnixMs>,
}

/// Whether `target` covers the recording described by `f` (at time `now`).
pub fn covers(target: &HoldTarget, f: &HoldFacts<'_>, now: UnixMs) -> bool {
    match target {
        HoldTarget::Recording(id) => id == f.id,
        HoldTarget::Call(c) => c == f.call_id || f.session_id == Some(c.as_str()),
        HoldTarget::Participant(p) => f.participants.iter().any(|a| aor_matches(p, a)),
        HoldTarget::Window { from, to } => {
            let end = f.ended_at.unwrap_or(now);
            f.started_at <= *to && end >= *from
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
            started_at: UnixMs(1000),
            ended_at: Some(UnixMs(2000)),
        };
        assert!(covers(&HoldTarget::Recording("r1".into()), &f, UnixMs(0)));
        assert!(!covers(&HoldTarget::Recording("r2".into()), &f, UnixMs(0)));
        assert!(covers(&HoldTarget::Call("c1@x".into()), &f, UnixMs(0)));
        assert!(covers(&HoldTarget::Call("s1".into()), &f, UnixMs(0)));
        assert!(covers(
            &HoldTarget::Participant("+4930111".into()),
            &f,
            UnixMs(0)
        ));
        assert!(covers(
            &HoldTarget::Participant("+4930*".into()),
            &f,
            UnixMs(0)
        ));
        assert!(!covers(
            &HoldTarget::Participant("+4940*".into()),
            &f,
            UnixMs(0)
        ));
        assert!(covers(
            &HoldTarget::Window {
                from: UnixMs(1500),
                to: UnixMs(1600)
            },
            &f,
            UnixMs(0)
        ));
        assert!(covers(
            &HoldTarget::Window {
                from: UnixMs(2000),
                to: UnixMs(3000)
            },
            &f,
            UnixMs(0)
        ));
        assert!(!covers(
            &HoldTarget::Window {
                from: UnixMs(2001),
                to: UnixMs(3000)
            },
            &f,
            UnixMs(0)
        ));
        assert!(!covers(
            &HoldTarget::Window {
                from: UnixMs(0),
                to: UnixMs(999)
            },
            &f,
            UnixMs(0)
        ));
        let running = HoldFacts {
            ended_at: None,
            ..f
        };
        assert!(covers(
            &HoldTarget::Window {
                from: UnixMs(5000),
                to: UnixMs(6000)
            },
            &running,
            UnixMs(5500)
        ));
    }
}
