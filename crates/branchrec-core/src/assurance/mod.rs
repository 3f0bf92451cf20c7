//! Recording assurance (issue #19, docs/assurance.md): was every call that should have
//! been recorded recorded, with both voices audible, and is the time on it true.
//!
//! Sans-IO like every core: the per-channel figures ([`quality`], [`level`]) are measured
//! by the recording core from what it stores; the [`Verdict`] of a recording is decided
//! from them by `recording::verdict::judge`; [`alarms`] turns verdicts into box alarms over sliding windows;
//! [`clock`] judges the kernel clock's synchronisation state and finds clock steps;
//! [`cdr`] reconciles the calls seen against an external CDR list; [`tsa`] builds and
//! parses RFC 3161 time-stamp requests and responses.

pub mod alarms;
pub mod cdr;
pub mod clock;
pub mod level;
pub mod quality;
pub mod tsa;

use serde::{Deserialize, Serialize};

/// The verdict on one call the recorder saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every channel carries audio.
    Recorded,
    /// One channel (not all) is silent or near-silent for most of the call.
    OneWay,
    /// Every channel is silent or near-silent.
    Silent,
    /// Signalled, but no decodable RTP arrived on any channel.
    NoMedia,
    /// Gaps above the threshold, a storage gap, or the file ends early (interrupted).
    Partial,
    /// Refused with 503 (no keys, disk, limits): nothing recorded.
    Refused,
    /// Not recorded because a rule said so.
    NotRecorded,
    /// Mirror: a dialog was seen but no recording was made for another reason.
    Missed,
}

impl Verdict {
    /// Every verdict, in report order.
    pub const ALL: [Verdict; 8] = [
        Verdict::Recorded,
        Verdict::OneWay,
        Verdict::Silent,
        Verdict::NoMedia,
        Verdict::Partial,
        Verdict::Refused,
        Verdict::NotRecorded,
        Verdict::Missed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Recorded => "recorded",
            Verdict::OneWay => "one_way",
            Verdict::Silent => "silent",
            Verdict::NoMedia => "no_media",
            Verdict::Partial => "partial",
            Verdict::Refused => "refused",
            Verdict::NotRecorded => "not_recorded",
            Verdict::Missed => "missed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the call has a usable recording of both sides.
    pub fn is_good(self) -> bool {
        self == Verdict::Recorded
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds of [`judge`] (`[assurance]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerdictPolicy {
    /// A 20 ms frame above this level is voice, dBFS.
    pub voice_dbfs: f64,
    /// A channel with voice in less than this share of its frames is silent.
    pub min_voice_ratio: f64,
    /// A channel whose media gaps and lost packets (20 ms each) exceed this share of the
    /// call makes it `partial`.
    pub max_gap_ratio: f64,
    /// One-way network delay assumed for the E-model, ms (a recorder cannot measure it).
    pub assumed_delay_ms: f64,
}

impl Default for VerdictPolicy {
    fn default() -> Self {
        VerdictPolicy {
            voice_dbfs: -45.0,
            min_voice_ratio: 0.05,
            max_gap_ratio: 0.10,
            assumed_delay_ms: 40.0,
        }
    }
}

/// How the recording's file came out (from the shell's final state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// Stored whole.
    Complete,
    /// Ends early (interrupted, damaged).
    Cut,
    /// No decodable codec.
    CodecUnsupported,
}

/// Why a call got its verdict: the figures [`judge`] used, stored beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// One sentence: which rule decided.
    pub reason: String,
    /// Channels judged silent.
    pub silent_channels: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_round_trip() {
        for x in Verdict::ALL {
            assert_eq!(Verdict::parse(x.as_str()), Some(x));
            assert_eq!(
                serde_json::to_value(x).unwrap(),
                serde_json::json!(x.as_str())
            );
        }
        assert_eq!(Verdict::parse("loud"), None);
    }
}
