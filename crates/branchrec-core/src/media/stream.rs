//! Per-stream configuration, statistics and RTP sequence-number bookkeeping.

use super::codec::{lookup, DecoderKind, Role};

/// What a negotiated payload type carries (from the codec table,
/// [`CODECS`](super::codec::CODECS)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Voice for this decoder (G.711, G.722, Opus, G.729 — decodable if the build has it,
    /// see [`DecoderKind::available`]).
    Audio(DecoderKind),
    /// RFC 4733 telephone-event (DTMF).
    TelephoneEvent,
    /// Anything else (by its SDP encoding name, comfort noise included); recorded as
    /// silence and counted.
    Unsupported(String),
}

impl Codec {
    /// Map an SDP `a=rtpmap` encoding name (case-insensitive) to a codec.
    pub fn from_encoding_name(name: &str) -> Codec {
        match lookup(name).map(|c| c.role) {
            Some(Role::Audio(k)) => Codec::Audio(k),
            Some(Role::TelephoneEvent) => Codec::TelephoneEvent,
            Some(Role::ComfortNoise) | None => Codec::Unsupported(name.to_string()),
        }
    }
}

/// The payload types negotiated for one stream: `(payload type, codec, RTP clock rate)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Negotiated payload types. Payload types above 127 are ignored.
    pub payload_types: Vec<(u8, Codec, u32)>,
}

impl Default for StreamConfig {
    /// The static RTP/AVP assignments: 0 = PCMU/8000, 8 = PCMA/8000.
    fn default() -> Self {
        StreamConfig {
            payload_types: vec![
                (0, Codec::Audio(DecoderKind::Pcmu), 8000),
                (8, Codec::Audio(DecoderKind::Pcma), 8000),
            ],
        }
    }
}

/// Counters for one channel of a [`CallTimeline`](super::CallTimeline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Valid RTP packets that were not duplicates (including late and unsupported ones).
    pub received: u64,
    /// Sequence numbers that were expected but never arrived (summed over SSRCs).
    pub lost: u64,
    /// Packets (wholly or partly) discarded because their slots were already written,
    /// plus packets of a previous SSRC arriving after the switch.
    pub late: u64,
    /// Packets with a sequence number already received.
    pub duplicates: u64,
    /// Number of times the SSRC changed.
    pub ssrc_changes: u64,
    /// Packets whose payload type is not negotiated or not decodable.
    pub unsupported_payload: u64,
    /// DTMF events decoded.
    pub dtmf_events: u64,
    /// Datagrams that failed RTP parsing (or malformed telephone-event payloads).
    pub malformed: u64,
    /// RTCP packets seen on the RTP port (RTCP-mux); ignored.
    pub rtcp: u64,
    /// Packets placed too far ahead of the playout window to be buffered (the shell
    /// did not poll); their samples beyond the window were dropped.
    pub overflow: u64,
    /// Times the stream's timestamp anchor was reset (SSRC change, hold/resume, restart).
    pub reanchors: u64,
    /// Lost packets rebuilt from the next packet's in-band FEC data (Opus).
    pub fec_recovered: u64,
    /// Milliseconds synthesised by packet-loss concealment or comfort-noise generation.
    pub concealed_ms: u64,
    /// Payloads the codec rejected (malformed for the codec, decoder error); silence.
    pub decode_errors: u64,
    /// Times the stream switched to another codec (re-INVITE, or the SRC changing PT).
    pub codec_changes: u64,
    /// Stretches of the stream's timeline that hold no audio from the sender although
    /// its packets arrived (see [`GapCause`](super::timeline::GapCause)): silence the
    /// recorder inserted at a forward re-anchor, slots finalised before their packet came
    /// (`late`), packets dropped beyond the window (`overflow`), audio replaced by a
    /// backward re-anchor. One `media_gap` event each. Not loss (`lost`) nor concealment.
    pub gaps: u64,
    /// Milliseconds of silence in those gaps (re-anchor, late, overflow): audio on the
    /// timeline that is not from the sender, and is not loss concealment.
    pub gap_ms: u64,
    /// Milliseconds of received audio not stored where silence does not mark it: replaced
    /// by later audio after a backward re-anchor (`rewind`, at most), or placed past the
    /// recording's end and its tail allowance (`truncated`).
    pub dropped_ms: u64,
}

/// Size of the duplicate-detection window, in sequence numbers.
const SEQ_WINDOW: i64 = 1024;
/// A forward sequence jump larger than this is treated as a possible sender restart.
const MAX_DROPOUT: i64 = 3000;

/// Verdict of [`SeqTracker::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqVerdict {
    /// First time this sequence number is seen; `in_order` if it is the newest so far
    /// (or starts the sequence space), i.e. not a reordered straggler.
    New {
        /// Newest sequence number so far.
        in_order: bool,
    },
    /// Seen before.
    Duplicate,
    /// Far outside the current sequence space (stale, or a restart not yet confirmed).
    /// The packet is not recorded in the sequence state.
    Stray,
}

/// RFC 3550-style extended sequence tracking with a 1024-packet duplicate bitmap.
#[derive(Debug, Clone)]
pub(crate) struct SeqTracker {
    started: bool,
    base_ext: i64,
    max_ext: i64,
    bitmap: [u64; (SEQ_WINDOW / 64) as usize],
    received_epoch: u64,
    lost_prev_epochs: u64,
    bad_seq: Option<u16>,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            started: false,
            base_ext: 0,
            max_ext: 0,
            bitmap: [0; (SEQ_WINDOW / 64) as usize],
            received_epoch: 0,
            lost_prev_epochs: 0,
            bad_seq: None,
        }
    }
}

impl SeqTracker {
    #[inline]
    fn bit(ext: i64) -> (usize, u64) {
        let i = ext.rem_euclid(SEQ_WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    #[inline]
    fn test_and_set(&mut self, ext: i64) -> bool {
        let (w, m) = Self::bit(ext);
        match self.bitmap.get_mut(w) {
            Some(word) => {
                let was = *word & m != 0;
                *word |= m;
                was
            }
            None => false,
        }
    }

    fn start_epoch(&mut self, seq: u16) {
        self.lost_prev_epochs += self.epoch_lost();
        self.started = true;
        // Start the extended space high enough that early reordered packets stay positive.
        let ext = 0x1_0000 + i64::from(seq);
        self.base_ext = ext;
        self.max_ext = ext;
        self.bitmap = [0; (SEQ_WINDOW / 64) as usize];
        self.received_epoch = 0;
        self.bad_seq = None;
    }

    /// End the current epoch (new SSRC): its loss is frozen into the total.
    pub(crate) fn reset(&mut self) {
        self.lost_prev_epochs += self.epoch_lost();
        self.started = false;
        self.received_epoch = 0;
        self.base_ext = 0;
        self.max_ext = 0;
        self.bad_seq = None;
    }

    fn epoch_lost(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let expected = (self.max_ext - self.base_ext + 1).max(0) as u64;
        expected.saturating_sub(self.received_epoch)
    }

    /// Packets lost so far over all epochs.
    pub(crate) fn lost(&self) -> u64 {
        self.lost_prev_epochs + self.epoch_lost()
    }

    /// Classify a sequence number and record it.
    pub(crate) fn check(&mut self, seq: u16) -> SeqVerdict {
        if !self.started {
            self.start_epoch(seq);
            self.test_and_set(self.max_ext);
            self.received_epoch = 1;
            return SeqVerdict::New { in_order: true };
        }
        let delta = i64::from(seq.wrapping_sub(self.max_ext as u16) as i16);
        let ext = self.max_ext + delta;
        let in_range = -SEQ_WINDOW < delta && delta <= MAX_DROPOUT;
        if !in_range {
            if self.bad_seq == Some(seq) {
                // Two consecutive packets in the new space: the sender restarted.
                self.start_epoch(seq);
                self.test_and_set(self.max_ext);
                self.received_epoch = 1;
                return SeqVerdict::New { in_order: true };
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqVerdict::Stray;
        }
        self.bad_seq = None;
        if delta > 0 {
            if delta >= SEQ_WINDOW {
                self.bitmap = [0; (SEQ_WINDOW / 64) as usize];
            } else {
                for e in self.max_ext + 1..=ext {
                    let (w, m) = Self::bit(e);
                    if let Some(word) = self.bitmap.get_mut(w) {
                        *word &= !m;
                    }
                }
            }
            self.max_ext = ext;
        }
        if self.test_and_set(ext) {
            return SeqVerdict::Duplicate;
        }
        if ext < self.base_ext {
            self.base_ext = ext;
        }
        self.received_epoch += 1;
        SeqVerdict::New {
            in_order: delta > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reorder_dup_and_loss() {
        let mut t = SeqTracker::default();
        assert!(matches!(t.check(10), SeqVerdict::New { .. }));
        assert_eq!(t.check(12), SeqVerdict::New { in_order: true });
        assert_eq!(t.lost(), 1);
        assert_eq!(t.check(11), SeqVerdict::New { in_order: false });
        assert_eq!(t.lost(), 0);
        assert_eq!(t.check(11), SeqVerdict::Duplicate);
        assert_eq!(t.check(12), SeqVerdict::Duplicate);
        // A packet from before the first one (reordered at the start).
        assert!(matches!(t.check(9), SeqVerdict::New { .. }));
        assert_eq!(t.lost(), 0);
        assert!(matches!(t.check(20), SeqVerdict::New { .. }));
        assert_eq!(t.lost(), 7);
    }

    #[test]
    fn wraps_at_65535() {
        let mut t = SeqTracker::default();
        for s in [65533u16, 65534, 65535, 0, 1, 2] {
            assert!(matches!(t.check(s), SeqVerdict::New { .. }), "seq {s}");
        }
        assert_eq!(t.check(65535), SeqVerdict::Duplicate);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn restart_needs_two_consecutive() {
        let mut t = SeqTracker::default();
        for s in 100..110u16 {
            t.check(s);
        }
        assert_eq!(t.check(40000), SeqVerdict::Stray);
        assert!(matches!(t.check(110), SeqVerdict::New { .. }));
        assert_eq!(t.lost(), 0);
        assert_eq!(t.check(50000), SeqVerdict::Stray);
        assert!(matches!(t.check(50001), SeqVerdict::New { .. }));
        assert!(matches!(t.check(50002), SeqVerdict::New { .. }));
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn codec_names() {
        let audio = |k| Codec::Audio(k);
        assert_eq!(Codec::from_encoding_name("pcmu"), audio(DecoderKind::Pcmu));
        assert_eq!(Codec::from_encoding_name("PCMA"), audio(DecoderKind::Pcma));
        assert_eq!(
            Codec::from_encoding_name("Telephone-Event"),
            Codec::TelephoneEvent
        );
        assert_eq!(Codec::from_encoding_name("G722"), audio(DecoderKind::G722));
        assert_eq!(Codec::from_encoding_name("OPUS"), audio(DecoderKind::Opus));
        assert_eq!(Codec::from_encoding_name("g729"), audio(DecoderKind::G729));
        assert_eq!(Codec::from_encoding_name("G729A"), audio(DecoderKind::G729));
        assert_eq!(
            Codec::from_encoding_name("GSM"),
            Codec::Unsupported("GSM".into())
        );
        assert_eq!(
            Codec::from_encoding_name("CN"),
            Codec::Unsupported("CN".into())
        );
    }
}
