//! Box-wide counters of what the recorder dropped or refused because it did not come from
//! where it had to: RTP/RTCP from a source a stream is not bound to
//! ([`crate::media::source`]), in-dialog SIP requests from another peer than the dialog's
//! ([`crate::sip`] endpoint), metadata beyond the per-call caps ([`crate::siprec::srs`]);
//! and of what it could not take: requests refused at the SIP transaction cap, and the
//! audio gaps of the recordings ([`crate::media::timeline`]; filled in by the shell).
//! Shared by the call tasks and the SIP loop, read by the control socket (`branchrec
//! status`), the status document and `/metrics`.
//!
//! Plain atomics: the deciding happens in the cores; times come in as [`UnixMs`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::time::UnixMs;

/// How long the `foreign_media` alarm stays up after a channel crossed the threshold.
pub const FOREIGN_ALARM_HOLD_MS: i64 = 3_600_000;

/// The counters (see the module docs).
#[derive(Debug, Default)]
pub struct BindingCounters {
    rtp_foreign_source: AtomicU64,
    foreign_media_alarms: AtomicU64,
    /// Unix ms of the last channel crossing the threshold (0: never).
    last_foreign_alarm_ms: AtomicI64,
    sip_foreign_peer: AtomicU64,
    metadata_refused: AtomicU64,
    sip_transactions_refused: AtomicU64,
    sip_transaction_cap: AtomicU64,
}

/// A snapshot of [`BindingCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSnapshot {
    /// RTP/RTCP datagrams dropped because they came from a source the stream is not bound
    /// to (all calls since start).
    pub rtp_foreign_source: u64,
    /// Channels that dropped `media.foreign_alarm_packets` or more such datagrams.
    pub foreign_media_alarms: u64,
    /// In-dialog requests refused because they did not come over the dialog's transport,
    /// connection or peer address.
    pub sip_foreign_peer: u64,
    /// Metadata documents refused above the per-call caps (versions, bytes).
    pub metadata_refused: u64,
    /// When a channel last crossed the foreign-media threshold (RFC 3339 is the
    /// shell's business; unix ms here), `None` if never.
    pub last_foreign_alarm_ms: Option<i64>,
    /// SIP requests answered with a stateless 503 because the live server transaction
    /// table was full (`[sip] max_transactions`).
    #[serde(default)]
    pub sip_transactions_refused: u64,
    /// The configured cap on live server transactions (0: not reported).
    #[serde(default)]
    pub sip_transaction_cap: u64,
    /// Audio gaps of the recordings (`media_gap` events: forward re-anchor, late,
    /// overflow, rewind) since start, all channels.
    #[serde(default)]
    pub media_gaps: u64,
    /// Milliseconds of silence in them that is not the sender's audio.
    #[serde(default)]
    pub media_gap_ms: u64,
    /// Milliseconds of received audio dropped without silence marking it (rewind, at
    /// most; truncated at the end).
    #[serde(default)]
    pub media_dropped_ms: u64,
}

impl BindingSnapshot {
    /// Whether the `foreign_media` alarm is up at `now`.
    pub fn foreign_alarm_active(&self, now: UnixMs) -> bool {
        self.last_foreign_alarm_ms
            .is_some_and(|t| now.0.saturating_sub(t) < FOREIGN_ALARM_HOLD_MS)
    }
}

impl BindingCounters {
    /// `n` datagrams from foreign sources dropped.
    pub fn rtp_foreign(&self, n: u64) {
        self.rtp_foreign_source.fetch_add(n, Ordering::Relaxed);
    }

    /// A channel crossed the foreign-media threshold at `now`.
    pub fn foreign_alarm(&self, now: UnixMs) {
        self.foreign_media_alarms.fetch_add(1, Ordering::Relaxed);
        self.last_foreign_alarm_ms.store(now.0, Ordering::Relaxed);
    }

    /// Set the SIP counters from the cores' totals (they only grow).
    pub fn set_sip(&self, foreign_peer: u64, metadata_refused: u64) {
        self.sip_foreign_peer
            .fetch_max(foreign_peer, Ordering::Relaxed);
        self.metadata_refused
            .fetch_max(metadata_refused, Ordering::Relaxed);
    }

    /// Set the transaction-cap counters from the SIP core (refusals only grow).
    pub fn set_sip_transactions(&self, refused: u64, cap: u64) {
        self.sip_transactions_refused
            .fetch_max(refused, Ordering::Relaxed);
        self.sip_transaction_cap.store(cap, Ordering::Relaxed);
    }

    /// Current values (the media gap counters are the shell's to fill in).
    pub fn snapshot(&self) -> BindingSnapshot {
        let last = self.last_foreign_alarm_ms.load(Ordering::Relaxed);
        BindingSnapshot {
            rtp_foreign_source: self.rtp_foreign_source.load(Ordering::Relaxed),
            foreign_media_alarms: self.foreign_media_alarms.load(Ordering::Relaxed),
            sip_foreign_peer: self.sip_foreign_peer.load(Ordering::Relaxed),
            metadata_refused: self.metadata_refused.load(Ordering::Relaxed),
            last_foreign_alarm_ms: (last != 0).then_some(last),
            sip_transactions_refused: self.sip_transactions_refused.load(Ordering::Relaxed),
            sip_transaction_cap: self.sip_transaction_cap.load(Ordering::Relaxed),
            media_gaps: 0,
            media_gap_ms: 0,
            media_dropped_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_the_alarm_window() {
        let c = BindingCounters::default();
        c.rtp_foreign(3);
        c.rtp_foreign(2);
        c.set_sip(4, 1);
        c.set_sip(2, 1); // never goes back
        assert!(!c.snapshot().foreign_alarm_active(UnixMs(10)));
        c.foreign_alarm(UnixMs(1_000));
        let s = c.snapshot();
        assert_eq!(
            (
                s.rtp_foreign_source,
                s.foreign_media_alarms,
                s.sip_foreign_peer,
                s.metadata_refused
            ),
            (5, 1, 4, 1)
        );
        assert!(s.foreign_alarm_active(UnixMs(1_000 + FOREIGN_ALARM_HOLD_MS - 1)));
        assert!(!s.foreign_alarm_active(UnixMs(1_000 + FOREIGN_ALARM_HOLD_MS)));
    }
}
