//! One recording session's audio timeline: N channels (one per RTP stream) placed on a
//! common sample clock whose frame 0 is the call start.
//!
//! # Placement
//! Each stream anchors its RTP timestamp to the arrival offset of its first packet
//! (`frame = anchor_frame + (ts - anchor_ts)`, wrapping-aware); later packets are placed
//! by RTP timestamp, which absorbs network jitter and reordering. The anchor is reset on
//! an SSRC change, and whenever the timestamp-derived position and the arrival-derived
//! position disagree by more than [`reanchor_threshold`] (hold/resume with continuous
//! timestamps, sender restart, timestamp jumps). Slow clock drift between sender and
//! recorder therefore shows up as one small gap or overlap each time it accumulates past
//! the threshold.
//!
//! # Output
//! Frames are finalised `playout_delay` behind `now` by [`CallTimeline::poll_audio`]; all
//! channels advance together, so channels stay sample-aligned and the total length is
//! exactly `end * sample_rate` after [`CallTimeline::finish`]. A packet whose slots were
//! already finalised is counted `late` and never rewrites history. Gaps, loss, hold and
//! DTMF-only periods are silence (0). PCMU/PCMA samples are written unaltered into an
//! 8 kHz timeline.
//!
//! # Gaps
//! Wherever a stream's packets arrived but the timeline holds no audio of theirs, the
//! stretch is a [`MediaGap`] with its [`GapCause`]: a forward re-anchor (the timestamps
//! say the audio is contiguous, the arrival says it came later — a backlog in the
//! recorder, or a sender pausing without a timestamp jump: the difference is silence the
//! recorder inserted), a late packet (its slots were finalised as silence before it
//! came), an overflow (dropped beyond the window), a backward re-anchor over audio not
//! finalised yet (that audio is replaced: `rewind`), audio placed past the end of the
//! recording (`truncated`, see [`CallTimeline::finish`]). Adjacent gaps of one cause merge.
//! They are counted in [`StreamStats::gaps`], [`StreamStats::gap_ms`] (silence) and
//! [`StreamStats::dropped_ms`] (rewind, truncated) and drained with [`CallTimeline::drain_gaps`] (the
//! recording turns each into a `media_gap` event). Loss (`lost`, concealment) is not a
//! gap, nor a re-anchor after a hold, a pause ([`CallTimeline::expect_discontinuity`]),
//! an SSRC change or a codec switch, whose placement by arrival is all there is.
//!
//! # Other codecs and sample rates
//! G.722, Opus, G.729 (and G.711 in a 16 kHz timeline) go through a per-stream
//! [`Decoder`] and, when its output rate differs from the timeline's, a
//! [`Resampler`]; the resampler's delay is compensated so streams stay aligned. RTP
//! timestamps are converted with each payload type's own clock (G.722: 8000 Hz clock for
//! 16 kHz audio; Opus: 48000). These decoders keep state, so they must see packets in
//! sequence order: a packet that arrives after a gap waits up to [`REORDER_WAIT`] for the
//! missing ones; then the gap is concealed (Opus in-band FEC from the packet after the
//! loss, else PLC; G.729 PLC, or comfort noise after an Annex B SID) and decoding goes
//! on. A straggler arriving after its gap was concealed is `late`. When a stream changes
//! codec (re-INVITE) and with it the RTP clock, the new codec's first packet continues
//! exactly where the previous one ended if it arrives no more than 80 ms after that (or
//! overlaps it), so a seamless switch leaves no gap or overlap; after a real pause it is
//! placed at its arrival like any re-anchor.
//!
//! # Cost
//! The per-packet path does not allocate: samples are decoded straight from the
//! payload into a preallocated ring buffer (interleaved, `ring_frames × channels`), and
//! duplicate detection uses a fixed bitmap. [`CallTimeline::poll_audio`] allocates the
//! returned block; [`CallTimeline::poll_audio_into`] reuses a caller-supplied buffer.

use std::time::Duration;

use crate::time::Mono;

use super::codec::{new_decoder, Decoder, DecoderKind, Resampler};
use super::dtmf::{DtmfDecoder, DtmfEvent};
use super::g711::{ALAW_TO_LINEAR, ULAW_TO_LINEAR};
use super::rtp::{self, RtpError};
use super::stream::{Codec, SeqTracker, SeqVerdict, StreamConfig, StreamStats};

/// Parameters of a [`CallTimeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Number of channels (streams); 2 for a typical two-party call.
    pub channels: usize,
    /// Output sample rate in Hz (8000 for G.711).
    pub sample_rate: u32,
    /// How long after `now` frames stay open for reordered packets (e.g. 300 ms).
    pub playout_delay: Duration,
}

/// A block of finalised audio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioBlock {
    /// Index of the first frame on the call timeline.
    pub start_frame: u64,
    /// Interleaved samples, `channels × frames`.
    pub samples: Vec<i16>,
}

impl AudioBlock {
    /// Number of frames in the block for the given channel count.
    pub fn frames(&self, channels: usize) -> u64 {
        (self.samples.len() / channels.max(1)) as u64
    }
}

/// What [`CallTimeline::push_rtp`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Audio was written into the timeline (possibly clipped, see [`StreamStats::late`]).
    Placed,
    /// A telephone-event packet was consumed.
    Dtmf,
    /// The sequence number was already received; dropped.
    Duplicate,
    /// All its slots were already finalised, or it belongs to the previous SSRC; dropped.
    Late,
    /// Too far ahead of the playout window (the shell is not polling); dropped.
    Overflow,
    /// Payload type not negotiated or not decodable; recorded as silence.
    Unsupported,
    /// An RTCP packet (RTCP-mux); ignored.
    Rtcp,
    /// Not a valid RTP packet.
    Malformed(RtpError),
    /// A valid packet with a malformed telephone-event payload.
    MalformedDtmf,
    /// The channel index is out of range.
    NoSuchChannel,
    /// [`CallTimeline::finish`] was already called.
    Finished,
}

/// Re-anchor when timestamp- and arrival-derived positions differ by more than this:
/// 500 ms, or `playout_delay + 200 ms` if that is larger (so reordering inside the
/// window never triggers it).
pub fn reanchor_threshold(playout_delay: Duration) -> Duration {
    Duration::from_millis(500).max(playout_delay + Duration::from_millis(200))
}

/// How long a packet that follows a sequence gap waits for the missing packets before
/// the gap is concealed (stateful codecs only).
pub const REORDER_WAIT: Duration = Duration::from_millis(60);
/// At most this many packets wait for a gap to fill.
const MAX_PENDING: usize = 8;
/// A sequence jump larger than this is a discontinuity, not loss: nothing is concealed.
const MAX_CONCEAL_GAP: u16 = 16;
/// Timestamp gaps longer than this (clock ticks → seconds) are never concealed.
const MAX_CONCEAL_SECS: i64 = 10;

/// Closed gaps a channel keeps until [`CallTimeline::drain_gaps`] (preallocated: the
/// per-packet path does not allocate); beyond it a gap is counted but not listed.
const GAP_QUEUE: usize = 16;

/// Why a stretch of a channel's timeline holds no audio from its sender (see the module
/// docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// A forward re-anchor: silence inserted between where the timestamps put the
    /// packet and where its arrival put it.
    Reanchor,
    /// A backward re-anchor placed the stream over received audio not finalised yet,
    /// which later audio replaced (at most this much).
    Rewind,
    /// The packet's slots were already finalised (as silence) when it arrived.
    Late,
    /// The packet lay beyond the open window and was dropped.
    Overflow,
    /// Audio received before the end of the recording but placed after it and its
    /// tail allowance (see [`CallTimeline::finish`]): dropped.
    Truncated,
}

impl GapCause {
    /// The name in events and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::Reanchor => "reanchor",
            GapCause::Rewind => "rewind",
            GapCause::Late => "late",
            GapCause::Overflow => "overflow",
            GapCause::Truncated => "truncated",
        }
    }
}

/// A stretch of one channel without its sender's audio (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaGap {
    /// The channel.
    pub channel: usize,
    /// First frame of the stretch on the call timeline.
    pub start_frame: u64,
    /// Its length in frames.
    pub frames: u64,
    /// Why.
    pub cause: GapCause,
}

/// A gap still growing (adjacent gaps of one cause merge).
#[derive(Debug, Clone, Copy)]
struct OpenGap {
    start: i64,
    end: i64,
    cause: GapCause,
}

/// Extra ring capacity beyond `playout_delay + threshold`, for the shell's poll interval.
const RING_SLACK: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PtKind {
    Unknown,
    Pcmu,
    Pcma,
    /// Decoded (and resampled if needed); the RTP clock rate.
    Decoded(DecoderKind, u32),
    Dtmf(u32),
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    frame: i64,
    ts: u32,
    /// RTP clock rate `ts` is counted in.
    clock: u32,
}

/// A packet waiting for a sequence gap to fill.
#[derive(Debug)]
struct Pending {
    seq: u16,
    ts: u32,
    at: Mono,
    may_reanchor: bool,
    payload: Vec<u8>,
}

/// Decoder state of one stream (stateful codecs and resampled G.711).
#[derive(Debug)]
struct DecState {
    pt: u8,
    kind: DecoderKind,
    clock: u32,
    decoder: Box<dyn Decoder>,
    resampler: Option<Resampler>,
    /// Leading resampler output still to discard (its warm-up precedes the stream).
    prime: usize,
    /// Sequence number and RTP timestamp expected next (after the last decoded packet).
    next: Option<(u16, u32)>,
    /// Sequence numbers consumed by other payload types (DTMF) ahead of `next`.
    foreign: Vec<u16>,
    pending: Vec<Pending>,
    /// Reusable payload buffers.
    spare: Vec<Vec<u8>>,
}

impl DecState {
    /// Index of the waiting packet that comes first in sequence order.
    fn oldest_pending(&self) -> Option<usize> {
        self.pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| {
                let base = self.next.map_or(p.seq, |(s, _)| s);
                p.seq.wrapping_sub(base)
            })
            .map(|(i, _)| i)
    }

    /// Return a waiting packet's buffer for reuse.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.spare.len() < MAX_PENDING {
            self.spare.push(buf);
        }
    }

    /// Whether `seq` is the next packet, counting sequence numbers used by DTMF.
    fn is_next(&self, seq: u16) -> bool {
        let Some((mut want, _)) = self.next else {
            return true;
        };
        for _ in 0..=self.foreign.len() {
            if want == seq {
                return true;
            }
            if !self.foreign.contains(&want) {
                return false;
            }
            want = want.wrapping_add(1);
        }
        false
    }
}

#[derive(Debug)]
struct Channel {
    pts: [PtKind; 128],
    stats: StreamStats,
    seq: SeqTracker,
    anchor: Option<Anchor>,
    ssrc: Option<u32>,
    prev_ssrc: Option<u32>,
    dtmf: DtmfDecoder,
    dec: Option<DecState>,
    /// Timeline frame just after the last audio placed (for codec switches).
    last_end: Option<i64>,
    /// The gap being extended, if any.
    open_gap: Option<OpenGap>,
    /// Closed gaps not drained yet (capacity [`GAP_QUEUE`], never grown).
    gaps: Vec<MediaGap>,
    /// The next forward re-anchor follows a hold or pause: not a gap.
    discontinuity: bool,
    /// RFC 3550 jitter and loss bursts (`assurance::quality`).
    quality: crate::assurance::quality::QualityTracker,
}

impl Channel {
    fn new(sample_rate: u32) -> Self {
        let mut ch = Channel {
            pts: [PtKind::Unknown; 128],
            stats: StreamStats::default(),
            seq: SeqTracker::default(),
            anchor: None,
            ssrc: None,
            prev_ssrc: None,
            dtmf: DtmfDecoder::new(),
            dec: None,
            last_end: None,
            open_gap: None,
            gaps: Vec::with_capacity(GAP_QUEUE),
            discontinuity: false,
            quality: Default::default(),
        };
        ch.configure(&StreamConfig::default(), sample_rate);
        ch
    }

    fn configure(&mut self, cfg: &StreamConfig, sample_rate: u32) {
        self.pts = [PtKind::Unknown; 128];
        for (pt, codec, clock) in &cfg.payload_types {
            let Some(slot) = self.pts.get_mut(usize::from(*pt)) else {
                continue;
            };
            *slot = match codec {
                // G.711 is decoded 1:1 into a timeline at its own rate, resampled into others.
                Codec::Audio(DecoderKind::Pcmu) if *clock == sample_rate => PtKind::Pcmu,
                Codec::Audio(DecoderKind::Pcma) if *clock == sample_rate => PtKind::Pcma,
                // The table's clock for the codec (RFC 3551: G.722 counts 8000 although it
                // samples at 16 kHz; RFC 7587: Opus 48000), if this build decodes it.
                Codec::Audio(k) if k.spec().accepts_clock(*clock) && k.available() => {
                    PtKind::Decoded(*k, *clock)
                }
                Codec::TelephoneEvent if *clock > 0 => PtKind::Dtmf(*clock),
                _ => PtKind::Unsupported,
            };
        }
    }
}

/// The audio timeline of one recording session (see the module docs).
#[derive(Debug)]
pub struct CallTimeline {
    cfg: TimelineConfig,
    channels: Vec<Channel>,
    /// Interleaved ring; frame `f` (for `written_upto <= f < written_upto + ring_frames`)
    /// lives at `(f % ring_frames) * channels`.
    ring: Vec<i16>,
    ring_frames: u64,
    /// Frames `[0, written_upto)` have been returned and are immutable.
    written_upto: u64,
    delay_frames: u64,
    threshold_frames: i64,
    dtmf_out: Vec<(usize, DtmfEvent)>,
    scratch_dtmf: Vec<DtmfEvent>,
    /// Decoder output / resampler output scratch (reused).
    scratch_a: Vec<i16>,
    scratch_b: Vec<i16>,
    finished: bool,
}

fn dur_to_frames(d: Duration, rate: u32) -> u64 {
    let v = d.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000;
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl CallTimeline {
    /// A new timeline; `Mono::ZERO` (frame 0) is the call start. `channels` is clamped to at least 1 and
    /// `sample_rate` to at least 1 Hz.
    pub fn new(cfg: TimelineConfig) -> Self {
        let cfg = TimelineConfig {
            channels: cfg.channels.max(1),
            sample_rate: cfg.sample_rate.max(1),
            playout_delay: cfg.playout_delay,
        };
        let threshold = reanchor_threshold(cfg.playout_delay);
        let ring_frames =
            dur_to_frames(cfg.playout_delay + threshold + RING_SLACK, cfg.sample_rate).max(1);
        let ring_len = usize::try_from(ring_frames)
            .unwrap_or(usize::MAX)
            .saturating_mul(cfg.channels);
        CallTimeline {
            channels: (0..cfg.channels)
                .map(|_| Channel::new(cfg.sample_rate))
                .collect(),
            ring: vec![0; ring_len],
            ring_frames,
            written_upto: 0,
            delay_frames: dur_to_frames(cfg.playout_delay, cfg.sample_rate),
            threshold_frames: i64::try_from(dur_to_frames(threshold, cfg.sample_rate))
                .unwrap_or(i64::MAX),
            dtmf_out: Vec::new(),
            scratch_dtmf: Vec::new(),
            scratch_a: Vec::new(),
            scratch_b: Vec::new(),
            finished: false,
            cfg,
        }
    }

    /// The (clamped) configuration.
    pub fn config(&self) -> &TimelineConfig {
        &self.cfg
    }

    /// Frames finalised so far (the start frame of the next block).
    pub fn written_upto(&self) -> u64 {
        self.written_upto
    }

    /// Set the negotiated payload types of a channel (replaces the previous set; e.g. on
    /// re-INVITE). Before the first call a channel accepts the static PT 0 (PCMU) and 8
    /// (PCMA). G.711 entries whose clock differs from the timeline's sample rate are
    /// treated as unsupported.
    pub fn set_stream_config(&mut self, channel: usize, cfg: StreamConfig) {
        let rate = self.cfg.sample_rate;
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.configure(&cfg, rate);
        }
    }

    /// Statistics of a channel. An out-of-range channel yields all-zero statistics.
    pub fn stats(&self, channel: usize) -> &StreamStats {
        static EMPTY: StreamStats = StreamStats {
            received: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            ssrc_changes: 0,
            unsupported_payload: 0,
            dtmf_events: 0,
            malformed: 0,
            rtcp: 0,
            overflow: 0,
            reanchors: 0,
            fec_recovered: 0,
            concealed_ms: 0,
            decode_errors: 0,
            codec_changes: 0,
            gaps: 0,
            gap_ms: 0,
            dropped_ms: 0,
        };
        self.channels.get(channel).map_or(&EMPTY, |c| &c.stats)
    }

    /// Jitter and loss-burst tracker of a channel (`None` out of range).
    pub fn quality(&self, channel: usize) -> Option<&crate::assurance::quality::QualityTracker> {
        self.channels.get(channel).map(|c| &c.quality)
    }

    /// The channel's next re-anchor follows a hold, a resume or a pause (the sender may
    /// have stopped with its timestamps running on, or not): placing it at its arrival is
    /// not a gap.
    pub fn expect_discontinuity(&mut self, channel: usize) {
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.discontinuity = true;
        }
    }

    /// The gaps closed since the last call, channel by channel (see the module docs).
    /// A gap closes when audio is placed after it, when the timeline is finalised a
    /// second past it, or at [`finish`](Self::finish); its counters are updated then.
    pub fn drain_gaps(&mut self) -> impl Iterator<Item = MediaGap> + '_ {
        self.channels
            .iter_mut()
            .enumerate()
            .flat_map(|(i, c)| c.gaps.drain(..).map(move |g| MediaGap { channel: i, ..g }))
    }

    /// DTMF events decoded since the last call, in the order they completed.
    pub fn take_dtmf(&mut self) -> Vec<(usize, DtmfEvent)> {
        std::mem::take(&mut self.dtmf_out)
    }

    /// A datagram of `channel` that the recording drops unstored (it arrived while the
    /// recording was paused): its sequence number counts as seen, so the pause does not
    /// show up as `lost`, and a decoder expects no gap before the next stored packet.
    /// Nothing is placed on the timeline and `received` is not counted. A packet of an
    /// SSRC the channel has not seen yet is ignored (that stream's count starts with its
    /// first stored packet).
    pub fn skip_rtp(&mut self, channel: usize, packet: &[u8]) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let Ok(pkt) = rtp::parse(packet) else {
            return;
        };
        if ch.ssrc != Some(pkt.ssrc) {
            return;
        }
        let _ = ch.seq.check(pkt.sequence);
        ch.stats.lost = ch.seq.lost();
        if let Some(d) = ch.dec.as_mut() {
            if d.pending.is_empty() {
                d.next = None;
                d.foreign.clear();
            }
        }
    }

    /// Feed one datagram received on `channel`'s RTP port, at `at` (origin: the call start).
    pub fn push_rtp(&mut self, channel: usize, at: Mono, packet: &[u8]) -> PushOutcome {
        if self.finished {
            return PushOutcome::Finished;
        }
        let rate = self.cfg.sample_rate;
        let threshold = self.threshold_frames;
        let Some(ch) = self.channels.get_mut(channel) else {
            return PushOutcome::NoSuchChannel;
        };
        if rtp::is_rtcp(packet) {
            ch.stats.rtcp += 1;
            return PushOutcome::Rtcp;
        }
        let pkt = match rtp::parse(packet) {
            Ok(p) => p,
            Err(e) => {
                ch.stats.malformed += 1;
                return PushOutcome::Malformed(e);
            }
        };

        // SSRC handling.
        match ch.ssrc {
            Some(s) if s == pkt.ssrc => {}
            Some(_) if ch.prev_ssrc == Some(pkt.ssrc) => {
                // Straggler of the stream we already switched away from.
                ch.stats.late += 1;
                return PushOutcome::Late;
            }
            old => {
                if old.is_some() {
                    ch.stats.ssrc_changes += 1;
                    ch.stats.reanchors += 1;
                    ch.seq.reset();
                    ch.dtmf.reset(&mut self.scratch_dtmf);
                    if let Some(d) = ch.dec.as_mut() {
                        // Packets of the old SSRC still waiting for a gap are dropped.
                        ch.stats.late += d.pending.len() as u64;
                        for p in std::mem::take(&mut d.pending) {
                            d.recycle(p.payload);
                        }
                        d.next = None;
                        d.foreign.clear();
                    }
                }
                ch.prev_ssrc = old;
                ch.ssrc = Some(pkt.ssrc);
                ch.anchor = None;
            }
        }

        // Only the newest packet of a stream may move its anchor: a straggler that is
        // very late must not drag the whole stream to its arrival time.
        let may_reanchor = match ch.seq.check(pkt.sequence) {
            SeqVerdict::Duplicate => {
                ch.stats.duplicates += 1;
                ch.stats.lost = ch.seq.lost();
                return PushOutcome::Duplicate;
            }
            SeqVerdict::New { in_order } => in_order,
            SeqVerdict::Stray => false,
        };
        ch.stats.received += 1;
        ch.stats.lost = ch.seq.lost();

        let kind = ch
            .pts
            .get(usize::from(pkt.payload_type))
            .copied()
            .unwrap_or(PtKind::Unknown);
        let arrival = i64::try_from(dur_to_frames(at.since_origin(), rate)).unwrap_or(i64::MAX);
        match kind {
            PtKind::Decoded(_, clock) => ch.quality.on_packet(
                pkt.ssrc,
                pkt.sequence,
                pkt.timestamp,
                clock,
                at,
                may_reanchor,
            ),
            PtKind::Pcmu | PtKind::Pcma => ch.quality.on_packet(
                pkt.ssrc,
                pkt.sequence,
                pkt.timestamp,
                rate,
                at,
                may_reanchor,
            ),
            _ => {}
        }

        let outcome = match kind {
            PtKind::Unknown | PtKind::Unsupported => {
                note_foreign_seq(ch, pkt.sequence);
                ch.stats.unsupported_payload += 1;
                PushOutcome::Unsupported
            }
            PtKind::Decoded(kind, clock) => {
                let pending = Pending {
                    seq: pkt.sequence,
                    ts: pkt.timestamp,
                    at,
                    may_reanchor,
                    payload: Vec::new(),
                };
                let mut ctx = Ctx {
                    ring: &mut self.ring,
                    ring_frames: self.ring_frames,
                    chn: self.cfg.channels,
                    channel,
                    written_upto: self.written_upto,
                    rate,
                    threshold,
                    scratch_a: &mut self.scratch_a,
                    scratch_b: &mut self.scratch_b,
                };
                push_decoded(
                    ch,
                    &mut ctx,
                    pkt.payload_type,
                    kind,
                    clock,
                    pending,
                    pkt.payload,
                )
            }
            PtKind::Dtmf(clock) => {
                // Event packets all carry the event's start timestamp, so they must not
                // be checked against arrival (a long digit would look "late").
                note_foreign_seq(ch, pkt.sequence);
                let anchor = *ch.anchor.get_or_insert(Anchor {
                    frame: arrival,
                    ts: pkt.timestamp,
                    clock,
                });
                let frame = anchor.frame + ts_delta_frames(pkt.timestamp, anchor.ts, clock, rate);
                let start =
                    Mono::from_millis((frame.max(0) as u64).saturating_mul(1000) / u64::from(rate));
                match ch.dtmf.push(
                    pkt.timestamp,
                    pkt.payload,
                    start,
                    clock,
                    &mut self.scratch_dtmf,
                ) {
                    Ok(()) => PushOutcome::Dtmf,
                    Err(_) => {
                        ch.stats.malformed += 1;
                        PushOutcome::MalformedDtmf
                    }
                }
            }
            PtKind::Pcmu | PtKind::Pcma => {
                note_foreign_seq(ch, pkt.sequence);
                let pos = place(
                    ch,
                    pkt.timestamp,
                    rate,
                    rate,
                    arrival,
                    may_reanchor,
                    threshold,
                    self.written_upto,
                );
                ch.last_end = Some(pos + pkt.payload.len() as i64);
                let table = if kind == PtKind::Pcmu {
                    &ULAW_TO_LINEAR
                } else {
                    &ALAW_TO_LINEAR
                };
                let res = write_ring(
                    &mut self.ring,
                    self.ring_frames,
                    self.cfg.channels,
                    channel,
                    self.written_upto,
                    pos,
                    pkt.payload.len(),
                    |i| pkt.payload.get(i).map_or(0, |&b| table[usize::from(b)]),
                );
                outcome_of(res, ch, rate)
            }
        };
        self.collect_dtmf(channel);
        outcome
    }

    fn collect_dtmf(&mut self, channel: usize) {
        if self.scratch_dtmf.is_empty() {
            return;
        }
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.stats.dtmf_events += self.scratch_dtmf.len() as u64;
        }
        self.dtmf_out
            .extend(self.scratch_dtmf.drain(..).map(|e| (channel, e)));
    }

    /// Finalise and return the frames `[written_upto, now - playout_delay)`, or None if
    /// there are none yet. Allocates the returned block.
    pub fn poll_audio(&mut self, now: Mono) -> Option<AudioBlock> {
        let mut samples = Vec::new();
        let start_frame = self.poll_audio_into(now, &mut samples)?;
        Some(AudioBlock {
            start_frame,
            samples,
        })
    }

    /// Like [`poll_audio`](Self::poll_audio) but writes the interleaved samples into
    /// `out` (cleared first; its capacity is reused) and returns the start frame.
    pub fn poll_audio_into(&mut self, now: Mono, out: &mut Vec<i16>) -> Option<u64> {
        if self.finished {
            return None;
        }
        self.release_pending(Some(now));
        let target = dur_to_frames(now.since_origin(), self.cfg.sample_rate)
            .saturating_sub(self.delay_frames);
        self.comfort_noise(target);
        let res = self.emit_upto(target, out);
        if res.is_some() {
            self.close_settled_gaps();
        }
        res
    }

    /// Close the open gaps audio was placed after, or that the output passed a second ago.
    fn close_settled_gaps(&mut self) {
        let rate = self.cfg.sample_rate;
        let done = i64::try_from(self.written_upto).unwrap_or(i64::MAX) - i64::from(rate);
        for ch in &mut self.channels {
            if let Some(g) = ch.open_gap {
                if ch.last_end.is_some_and(|e| e > g.end) || g.end <= done {
                    close_gap(ch, rate);
                }
            }
        }
    }

    /// Flush everything up to `end` (including frames still inside the playout window)
    /// and stop: afterwards the total length is `end × sample_rate` frames (`end` since
    /// the origin), or what was already returned if that is more — or longer by at most
    /// the playout delay when audio received before `end` is placed after it (a stream
    /// whose first packet was read late sits later on the timeline than the clock that
    /// stamps the end; its last packets are kept, not cut). What lies beyond that is a
    /// `truncated` gap. Pending DTMF events are completed.
    pub fn finish(&mut self, end: Mono) -> Option<AudioBlock> {
        if self.finished {
            return None;
        }
        self.release_pending(None);
        self.flush_resamplers();
        let end_frames = dur_to_frames(end.since_origin(), self.cfg.sample_rate);
        let placed = self
            .channels
            .iter()
            .filter_map(|c| c.last_end)
            .max()
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0)
            .min(self.written_upto + self.ring_frames);
        let target = end_frames.max(placed.min(end_frames + self.delay_frames));
        let lo = i64::try_from(target.max(self.written_upto)).unwrap_or(i64::MAX);
        let hi = i64::try_from(self.written_upto + self.ring_frames).unwrap_or(i64::MAX);
        for ch in &mut self.channels {
            if let Some(e) = ch.last_end {
                record_gap(ch, lo, e.min(hi), GapCause::Truncated, self.cfg.sample_rate);
            }
        }
        let mut samples = Vec::new();
        let res = self.emit_upto(target, &mut samples);
        for i in 0..self.channels.len() {
            if let Some(ch) = self.channels.get_mut(i) {
                ch.dtmf.flush(&mut self.scratch_dtmf);
                close_gap(ch, self.cfg.sample_rate);
            }
            self.collect_dtmf(i);
        }
        self.finished = true;
        res.map(|start_frame| AudioBlock {
            start_frame,
            samples,
        })
    }

    /// Decode packets waiting for a gap whose wait expired by `now` (all if `None`).
    fn release_pending(&mut self, now: Option<Mono>) {
        self.each_decoded_channel(|ch, ctx| {
            if ch.dec.as_ref().is_some_and(|d| !d.pending.is_empty()) {
                drain_pending(ch, ctx, now);
            }
        });
    }

    /// Run `f` on every channel with decoder state, with its [`Ctx`].
    fn each_decoded_channel(&mut self, mut f: impl FnMut(&mut Channel, &mut Ctx<'_>)) {
        let rate = self.cfg.sample_rate;
        let threshold = self.threshold_frames;
        for (channel, ch) in self.channels.iter_mut().enumerate() {
            if ch.dec.is_none() {
                continue;
            }
            let mut ctx = Ctx {
                ring: &mut self.ring,
                ring_frames: self.ring_frames,
                chn: self.cfg.channels,
                channel,
                written_upto: self.written_upto,
                rate,
                threshold,
                scratch_a: &mut self.scratch_a,
                scratch_b: &mut self.scratch_b,
            };
            f(ch, &mut ctx);
        }
    }

    /// Streams in DTX (after an Annex B SID frame) get comfort noise up to `target`, the
    /// frame about to be finalised, so silence periods are filled as they pass.
    fn comfort_noise(&mut self, target: u64) {
        let rate = self.cfg.sample_rate;
        let target = i64::try_from(target).unwrap_or(i64::MAX);
        self.each_decoded_channel(|ch, ctx| {
            let (Some(d), Some(end)) = (ch.dec.as_mut(), ch.last_end) else {
                return;
            };
            if !d.decoder.in_dtx() || !d.pending.is_empty() || end >= target {
                return;
            }
            let Some((seq, next_ts)) = d.next else { return };
            let dec_rate = i64::from(d.decoder.output_rate().max(1));
            // At most one second per poll (the poll interval is far shorter).
            let want_out = (target - end).min(i64::from(rate));
            let want = (want_out * dec_rate / i64::from(rate)) as usize;
            let a = &mut *ctx.scratch_a;
            a.clear();
            let Ok(c) = d.decoder.conceal(want, None, a) else {
                return;
            };
            ch.stats.concealed_ms += (c.plc_samples as u64 * 1000) / dec_rate as u64;
            let ticks = (a.len() as u64 * u64::from(d.clock) / dec_rate as u64) as u32;
            d.next = Some((seq, next_ts.wrapping_add(ticks)));
            let (n, _) = write_decoded_at(d, ctx, end);
            ch.last_end = Some(end + n as i64);
        });
    }

    /// At the end of the call: write every resampled stream's filter tail.
    fn flush_resamplers(&mut self) {
        self.each_decoded_channel(flush_resampler);
    }

    fn emit_upto(&mut self, target: u64, out: &mut Vec<i16>) -> Option<u64> {
        out.clear();
        if target <= self.written_upto {
            return None;
        }
        let start = self.written_upto;
        let n = target - start;
        let chn = self.cfg.channels;
        let total = usize::try_from(n).ok()?.checked_mul(chn)?;
        out.reserve(total);
        // Frames from the ring (at most one full ring), then silence beyond it.
        let from_ring = n.min(self.ring_frames);
        let mut f = start;
        let end_ring = start + from_ring;
        while f < end_ring {
            let idx = f % self.ring_frames;
            let run = (self.ring_frames - idx).min(end_ring - f);
            let a = (idx as usize) * chn;
            let b = a + (run as usize) * chn;
            if let Some(slice) = self.ring.get_mut(a..b) {
                out.extend_from_slice(slice);
                slice.fill(0);
            }
            f += run;
        }
        out.resize(total, 0);
        self.written_upto = target;
        Some(start)
    }
}

/// The parts of a [`CallTimeline`] the decoded path writes to (split borrows).
struct Ctx<'a> {
    ring: &'a mut Vec<i16>,
    ring_frames: u64,
    chn: usize,
    channel: usize,
    written_upto: u64,
    rate: u32,
    threshold: i64,
    scratch_a: &'a mut Vec<i16>,
    scratch_b: &'a mut Vec<i16>,
}

/// A new codec whose first packet arrives at most this long after the previous codec's
/// audio ended (or overlaps it) continues it seamlessly: 80 ms, in frames.
fn continue_tol(rate: u32) -> i64 {
    i64::from(rate) * 80 / 1000
}

/// Timeline frame of RTP timestamp `ts` (in `clock` ticks) for the stream, (re)anchoring
/// as described in the module docs.
#[allow(clippy::too_many_arguments)]
fn place(
    ch: &mut Channel,
    ts: u32,
    clock: u32,
    rate: u32,
    arrival: i64,
    may_reanchor: bool,
    threshold: i64,
    written_upto: u64,
) -> i64 {
    let discontinuity = std::mem::take(&mut ch.discontinuity);
    let anchor = match ch.anchor {
        Some(a) if a.clock == clock => a,
        old => {
            // First packet, or a new RTP clock (codec switch): timestamps of different
            // clocks are unrelated, so continue where the stream ended if that is
            // consistent with this packet's arrival.
            let frame = match (old, ch.last_end) {
                (Some(_), Some(end))
                    if (-threshold..=continue_tol(rate)).contains(&(arrival - end)) =>
                {
                    end
                }
                _ => arrival,
            };
            if old.is_some() {
                ch.stats.reanchors += 1;
            }
            let a = Anchor { frame, ts, clock };
            ch.anchor = Some(a);
            return frame;
        }
    };
    let pos = anchor.frame + ts_delta_frames(ts, anchor.ts, clock, rate);
    let diff = pos - arrival;
    if may_reanchor && (diff > threshold || diff < -threshold) {
        ch.anchor = Some(Anchor {
            frame: arrival,
            ts,
            clock,
        });
        ch.stats.reanchors += 1;
        if diff < 0 && !discontinuity {
            // The timestamps say this audio follows on at `pos`; it goes at its arrival:
            // what lies between is silence the recorder inserted.
            record_gap(ch, pos, arrival, GapCause::Reanchor, rate);
        } else if diff > 0 {
            // Back over the stream's audio that is not final yet: later audio replaces it.
            let from = arrival.max(i64::try_from(written_upto).unwrap_or(i64::MAX));
            if let Some(end) = ch.last_end {
                record_gap(ch, from, end, GapCause::Rewind, rate);
            }
        }
        return arrival;
    }
    if ts.wrapping_sub(anchor.ts) > 1 << 30 && ts.wrapping_sub(anchor.ts) < 1 << 31 {
        // Keep the anchor within ±2^30 ticks so wrap-aware deltas stay exact.
        ch.anchor = Some(Anchor {
            frame: pos,
            ts,
            clock,
        });
    }
    pos
}

/// A packet of another payload type (DTMF, G.711 direct) used sequence number `seq`:
/// the stream's decoder must not wait for it.
fn note_foreign_seq(ch: &mut Channel, seq: u16) {
    if let Some(d) = ch.dec.as_mut() {
        if d.next.is_some() {
            if d.foreign.len() >= 16 {
                d.foreign.remove(0);
            }
            d.foreign.push(seq);
        }
    }
}

/// Count what [`write_ring`] did; the frames it could not write are a gap.
fn outcome_of(res: WriteResult, ch: &mut Channel, rate: u32) -> PushOutcome {
    match res {
        WriteResult::Full => PushOutcome::Placed,
        WriteResult::ClippedLate(a, b) => {
            ch.stats.late += 1;
            record_gap(ch, a, b, GapCause::Late, rate);
            PushOutcome::Placed
        }
        WriteResult::ClippedOverflow(a, b) => {
            ch.stats.overflow += 1;
            record_gap(ch, a, b, GapCause::Overflow, rate);
            PushOutcome::Placed
        }
        WriteResult::Late(a, b) => {
            ch.stats.late += 1;
            record_gap(ch, a, b, GapCause::Late, rate);
            PushOutcome::Late
        }
        WriteResult::Overflow(a, b) => {
            ch.stats.overflow += 1;
            record_gap(ch, a, b, GapCause::Overflow, rate);
            PushOutcome::Overflow
        }
    }
}

/// The frames `[start, end)` of `ch` hold none of its sender's audio: extend the open gap
/// (same cause, adjacent or overlapping) or close it and open a new one.
fn record_gap(ch: &mut Channel, start: i64, end: i64, cause: GapCause, rate: u32) {
    let start = start.max(0);
    if end <= start {
        return;
    }
    if let Some(g) = ch.open_gap.as_mut() {
        if g.cause == cause && start <= g.end && end >= g.start {
            g.start = g.start.min(start);
            g.end = g.end.max(end);
            return;
        }
        close_gap(ch, rate);
    }
    ch.open_gap = Some(OpenGap { start, end, cause });
}

/// Count the open gap of `ch` and queue it for [`CallTimeline::drain_gaps`].
fn close_gap(ch: &mut Channel, rate: u32) {
    let Some(g) = ch.open_gap.take() else { return };
    let frames = u64::try_from(g.end - g.start).unwrap_or(0);
    let ms = frames * 1000 / u64::from(rate.max(1));
    ch.stats.gaps += 1;
    if matches!(g.cause, GapCause::Rewind | GapCause::Truncated) {
        ch.stats.dropped_ms += ms;
    } else {
        ch.stats.gap_ms += ms;
    }
    if ch.gaps.len() < GAP_QUEUE {
        ch.gaps.push(MediaGap {
            channel: 0,
            start_frame: u64::try_from(g.start).unwrap_or(0),
            frames,
            cause: g.cause,
        });
    }
}

/// Handle one packet of a decoded payload type: decode it now if it is the next in
/// sequence, else let it wait for the gap (see the module docs).
fn push_decoded(
    ch: &mut Channel,
    ctx: &mut Ctx<'_>,
    pt: u8,
    kind: DecoderKind,
    clock: u32,
    mut pkt: Pending,
    payload: &[u8],
) -> PushOutcome {
    let same = ch
        .dec
        .as_ref()
        .is_some_and(|d| d.pt == pt && d.kind == kind && d.clock == clock);
    if !same {
        // Codec switch: whatever waits for the old decoder is decoded first, and the
        // old resampler's tail is written out.
        if ch.dec.is_some() {
            drain_pending(ch, ctx, None);
            flush_resampler(ch, ctx);
            ch.stats.codec_changes += 1;
        }
        let out_rate = if kind == DecoderKind::Opus {
            ctx.rate
        } else {
            0
        };
        let decoder = match new_decoder(kind, out_rate) {
            Ok(d) => d,
            Err(_) => {
                ch.dec = None;
                ch.stats.unsupported_payload += 1;
                return PushOutcome::Unsupported;
            }
        };
        let dr = decoder.output_rate();
        let resampler = (dr != ctx.rate).then(|| Resampler::new(dr, ctx.rate));
        ch.dec = Some(DecState {
            pt,
            kind,
            clock,
            prime: resampler.as_ref().map_or(0, Resampler::delay),
            resampler,
            decoder,
            next: None,
            foreign: Vec::new(),
            pending: Vec::new(),
            spare: Vec::new(),
        });
    }
    let Some(d) = ch.dec.as_mut() else {
        return PushOutcome::Unsupported;
    };
    if d.is_next(pkt.seq) {
        let res = decode_one(ch, ctx, &pkt, payload, false);
        drain_pending(ch, ctx, Some(pkt.at));
        return res;
    }
    let (want, _) = d.next.unwrap_or((pkt.seq, 0));
    let ahead = pkt.seq.wrapping_sub(want);
    if ahead >= 0x8000 {
        // Behind the decoder: its gap was already concealed.
        ch.stats.late += 1;
        return PushOutcome::Late;
    }
    if ahead > MAX_CONCEAL_GAP {
        // A discontinuity, not loss: flush and decode without concealment.
        drain_pending(ch, ctx, None);
        if let Some(d) = ch.dec.as_mut() {
            d.next = None;
        }
        let res = decode_one(ch, ctx, &pkt, payload, false);
        return res;
    }
    if d.pending.iter().any(|p| p.seq == pkt.seq) {
        return PushOutcome::Duplicate;
    }
    let mut buf = d.spare.pop().unwrap_or_default();
    buf.clear();
    buf.extend_from_slice(payload);
    pkt.payload = buf;
    let at = pkt.at;
    d.pending.push(pkt);
    if d.pending.len() > MAX_PENDING {
        drain_one_forced(ch, ctx);
    }
    drain_pending(ch, ctx, Some(at));
    PushOutcome::Placed
}

/// Decode waiting packets that are now in sequence, and — once the oldest has waited
/// [`REORDER_WAIT`] by `now` (or always, with `None`) — conceal the gap before it.
fn drain_pending(ch: &mut Channel, ctx: &mut Ctx<'_>, now: Option<Mono>) {
    loop {
        let Some(d) = ch.dec.as_mut() else { return };
        let Some(i) = d.oldest_pending() else { return };
        let Some(p) = d.pending.get(i) else { return };
        let ready = d.is_next(p.seq);
        let expired = match now {
            None => true,
            Some(now) => now >= p.at + REORDER_WAIT,
        };
        if !ready && !expired {
            return;
        }
        let p = d.pending.swap_remove(i);
        let _ = decode_one(ch, ctx, &p, &p.payload, !ready);
        if let Some(d) = ch.dec.as_mut() {
            d.recycle(p.payload);
        }
    }
}

/// The reorder buffer is full: decode its oldest packet, concealing the gap before it.
fn drain_one_forced(ch: &mut Channel, ctx: &mut Ctx<'_>) {
    let Some(d) = ch.dec.as_mut() else { return };
    let Some(i) = d.oldest_pending() else { return };
    let p = d.pending.swap_remove(i);
    let _ = decode_one(ch, ctx, &p, &p.payload, true);
    if let Some(d) = ch.dec.as_mut() {
        d.recycle(p.payload);
    }
}

/// Push the resampler's last `delay` output samples (still inside its filter) out
/// with zeros and write them just before the stream's end.
fn flush_resampler(ch: &mut Channel, ctx: &mut Ctx<'_>) {
    let Some(end) = ch.last_end else { return };
    let Some(r) = ch.dec.as_mut().and_then(|d| d.resampler.as_mut()) else {
        return;
    };
    let delay = r.delay();
    let zeros = (delay as u64 * u64::from(r.in_rate())).div_ceil(u64::from(r.out_rate())) as usize;
    let a = &mut *ctx.scratch_a;
    a.clear();
    a.resize(zeros, 0);
    let b = &mut *ctx.scratch_b;
    b.clear();
    r.process(a, b);
    let n = delay.min(b.len());
    let tail = b.get(..n).unwrap_or(&[]);
    let _ = write_ring(
        ctx.ring,
        ctx.ring_frames,
        ctx.chn,
        ctx.channel,
        ctx.written_upto,
        end - delay as i64,
        n,
        |i| tail.get(i).copied().unwrap_or(0),
    );
}

/// Decode one packet (after concealing the gap before it) and write it to the ring.
/// `lost_before`: packets before it were lost (its data may repair the last of them).
fn decode_one(
    ch: &mut Channel,
    ctx: &mut Ctx<'_>,
    p: &Pending,
    payload: &[u8],
    lost_before: bool,
) -> PushOutcome {
    let arrival = i64::try_from(dur_to_frames(p.at.since_origin(), ctx.rate)).unwrap_or(i64::MAX);
    let Some(clock) = ch.dec.as_ref().map(|d| d.clock) else {
        return PushOutcome::Unsupported;
    };
    let pos = place(
        ch,
        p.ts,
        clock,
        ctx.rate,
        arrival,
        p.may_reanchor,
        ctx.threshold,
        ctx.written_upto,
    );
    let Some(d) = ch.dec.as_mut() else {
        return PushOutcome::Unsupported;
    };
    let dec_rate = d.decoder.output_rate();
    let a = &mut *ctx.scratch_a;
    a.clear();

    // Conceal the gap between the previous packet's end and this one.
    let mut concealed_dec = 0usize;
    if let Some((_, next_ts)) = d.next {
        let gap_ticks = i64::from(p.ts.wrapping_sub(next_ts) as i32);
        if gap_ticks > 0 && gap_ticks <= MAX_CONCEAL_SECS * i64::from(clock) {
            // Only what can still be placed: not before the open window or the
            // stream's previous audio.
            let gap_out = ts_delta_frames(p.ts, next_ts, clock, ctx.rate);
            let floor = (ctx.written_upto as i64).max(ch.last_end.unwrap_or(i64::MIN));
            let room_out = (pos - floor).clamp(0, gap_out);
            let want = (room_out * i64::from(dec_rate) / i64::from(ctx.rate)) as usize;
            if want > 0 {
                let next = lost_before.then_some(payload);
                match d.decoder.conceal(want, next, a) {
                    Ok(c) => {
                        if c.fec_samples > 0 {
                            ch.stats.fec_recovered += 1;
                        }
                        ch.stats.concealed_ms +=
                            (c.plc_samples as u64 * 1000) / u64::from(dec_rate.max(1));
                        concealed_dec = a.len();
                    }
                    Err(_) => {
                        a.clear();
                        ch.stats.decode_errors += 1;
                    }
                }
            }
        }
    }
    let decoded = d.decoder.decode(payload, a);
    let payload_dec = a.len() - concealed_dec;
    if decoded.is_err() {
        ch.stats.decode_errors += 1;
        a.truncate(concealed_dec);
    }
    // Advance the expected sequence number and timestamp.
    let dur_ticks = (payload_dec as u64 * u64::from(clock) / u64::from(dec_rate.max(1))) as u32;
    d.next = Some((p.seq.wrapping_add(1), p.ts.wrapping_add(dur_ticks)));
    d.foreign.clear();

    let concealed_out = concealed_dec as i64 * i64::from(ctx.rate) / i64::from(dec_rate.max(1));
    let total_dec = a.len();
    let (n, res) = write_decoded_at(d, ctx, pos - concealed_out);
    let payload_out = n as i64 - concealed_out.min(n as i64);
    ch.last_end = Some(pos + payload_out);
    if decoded.is_err() && total_dec == 0 {
        return PushOutcome::Unsupported;
    }
    outcome_of(res, ch, ctx.rate)
}

/// Resample (if needed) the decoder output in `ctx.scratch_a` and write it so that its
/// first sample lands on frame `at`; returns the samples written and the ring's verdict.
/// A fresh resampler's first `delay` outputs are its warm-up, before the stream's first
/// sample: they are dropped rather than written early; after that its delay is
/// compensated.
fn write_decoded_at(d: &mut DecState, ctx: &mut Ctx<'_>, at: i64) -> (usize, WriteResult) {
    let a = &*ctx.scratch_a;
    let (samples, delay): (&[i16], i64) = match d.resampler.as_mut() {
        Some(r) => {
            let b = &mut *ctx.scratch_b;
            b.clear();
            r.process(a, b);
            let skip = d.prime.min(b.len());
            d.prime -= skip;
            (b.get(skip..).unwrap_or(&[]), r.delay() as i64 - skip as i64)
        }
        None => (a.as_slice(), 0),
    };
    let res = write_ring(
        ctx.ring,
        ctx.ring_frames,
        ctx.chn,
        ctx.channel,
        ctx.written_upto,
        at - delay,
        samples.len(),
        |i| samples.get(i).copied().unwrap_or(0),
    );
    (samples.len(), res)
}

/// Frames between two RTP timestamps (wrapping-aware), converted from `clock` to `rate`.
#[inline]
fn ts_delta_frames(ts: u32, anchor_ts: u32, clock: u32, rate: u32) -> i64 {
    let d = i64::from(ts.wrapping_sub(anchor_ts) as i32);
    if clock == rate || clock == 0 {
        d
    } else {
        d * i64::from(rate) / i64::from(clock)
    }
}

/// What [`write_ring`] did; the frames `[a, b)` it could not write.
enum WriteResult {
    Full,
    ClippedLate(i64, i64),
    ClippedOverflow(i64, i64),
    Late(i64, i64),
    Overflow(i64, i64),
}

/// Write the `len` samples `sample(0..len)` into channel `channel` of the ring at frame
/// `pos`, clipped to the open window `[written_upto, written_upto + ring_frames)`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn write_ring(
    ring: &mut [i16],
    ring_frames: u64,
    chn: usize,
    channel: usize,
    written_upto: u64,
    pos: i64,
    len: usize,
    sample: impl Fn(usize) -> i16,
) -> WriteResult {
    let n = len as i64;
    let lo = i64::try_from(written_upto).unwrap_or(i64::MAX);
    let hi = lo.saturating_add(i64::try_from(ring_frames).unwrap_or(i64::MAX));
    let start = pos.max(lo);
    let end = pos.saturating_add(n).min(hi);
    if end <= start {
        if n == 0 {
            return WriteResult::Full;
        }
        return if pos.saturating_add(n) <= lo {
            WriteResult::Late(pos, pos.saturating_add(n))
        } else {
            WriteResult::Overflow(pos, pos.saturating_add(n))
        };
    }
    let mut i = (start - pos) as usize;
    let i_end = (end - pos) as usize;
    let mut f = start as u64;
    while i < i_end {
        let idx = f % ring_frames;
        let run = ((ring_frames - idx) as usize).min(i_end - i);
        let a = idx as usize * chn;
        if let Some(dst) = ring.get_mut(a..a + run * chn) {
            for (k, frame) in dst.chunks_exact_mut(chn).enumerate() {
                if let Some(s) = frame.get_mut(channel) {
                    *s = sample(i + k);
                }
            }
        }
        i += run;
        f += run as u64;
    }
    if start > pos {
        WriteResult::ClippedLate(pos, start)
    } else if end < pos.saturating_add(n) {
        WriteResult::ClippedOverflow(end, pos.saturating_add(n))
    } else {
        WriteResult::Full
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::g711::ulaw_to_linear;

    const MS: Duration = Duration::from_millis(1);

    /// The point `d` after the call start (the timeline's origin).
    pub(crate) fn mono(d: Duration) -> Mono {
        Mono::from_duration(d)
    }

    /// An RTP datagram (no CSRC, no extension).
    pub(crate) fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, pt];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// 160 non-silent µ-law bytes that differ per packet `k` and stream `tag`.
    fn payload(k: u32, tag: u32) -> Vec<u8> {
        (0..160u32)
            .map(|i| 0x80 + ((k * 7 + i + tag * 31) % 0x7f) as u8)
            .collect()
    }

    fn tl(channels: usize) -> CallTimeline {
        CallTimeline::new(TimelineConfig {
            channels,
            sample_rate: 8000,
            playout_delay: Duration::from_millis(300),
        })
    }

    /// A packet to deliver: (channel, arrival, datagram).
    type Delivery = (usize, Duration, Vec<u8>);

    /// Deliver packets in arrival order, polling every 20 ms, then finish at `end`.
    /// Returns the whole recording (interleaved) and checks block continuity and that
    /// no block ever reaches past `now - playout_delay`.
    fn run(t: &mut CallTimeline, mut pkts: Vec<Delivery>, end: Duration) -> Vec<i16> {
        pkts.sort_by_key(|p| p.1);
        let mut out = Vec::new();
        let chn = t.config().channels;
        let mut next = 0u64;
        let mut now = Duration::ZERO;
        let mut it = pkts.into_iter().peekable();
        while now < end {
            while let Some((c, at, p)) = it.next_if(|p| p.1 <= now) {
                t.push_rtp(c, mono(at), &p);
            }
            if let Some(b) = t.poll_audio(mono(now)) {
                assert_eq!(b.start_frame, next);
                next += b.frames(chn);
                assert!(next * 1000 / 8000 <= (now.as_millis() as u64).saturating_sub(300));
                out.extend_from_slice(&b.samples);
            }
            now += 20 * MS;
        }
        for (c, at, p) in it {
            t.push_rtp(c, mono(at), &p);
        }
        if let Some(b) = t.finish(mono(end)) {
            assert_eq!(b.start_frame, next);
            out.extend_from_slice(&b.samples);
        }
        out
    }

    fn expect_packet(exp: &mut [i16], chn: usize, ch: usize, frame: usize, pl: &[u8]) {
        for (i, &b) in pl.iter().enumerate() {
            exp[(frame + i) * chn + ch] = ulaw_to_linear(b);
        }
    }

    /// 50 in-order packets (1 s) on channel 0 starting at arrival `start`.
    fn stream(ch: usize, start: Duration, seq0: u16, ts0: u32, ssrc: u32, n: u32) -> Vec<Delivery> {
        (0..n)
            .map(|k| {
                (
                    ch,
                    start + 20 * MS * k,
                    rtp(
                        0,
                        seq0.wrapping_add(k as u16),
                        ts0.wrapping_add(160 * k),
                        ssrc,
                        &payload(k, ssrc),
                    ),
                )
            })
            .collect()
    }

    fn expected_stream(
        exp: &mut [i16],
        chn: usize,
        ch: usize,
        start_frame: usize,
        ssrc: u32,
        ks: impl Iterator<Item = u32>,
    ) {
        for k in ks {
            expect_packet(
                exp,
                chn,
                ch,
                start_frame + 160 * k as usize,
                &payload(k, ssrc),
            );
        }
    }

    #[test]
    fn in_order() {
        let mut t = tl(2);
        let out = run(
            &mut t,
            stream(0, Duration::ZERO, 1000, 5000, 7, 50),
            1000 * MS,
        );
        let mut exp = vec![0i16; 8000 * 2];
        expected_stream(&mut exp, 2, 0, 0, 7, 0..50);
        assert_eq!(out, exp);
        let s = t.stats(0);
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (50, 0, 0, 0));
        assert_eq!(t.stats(1).received, 0);
    }

    #[test]
    fn reordered_within_window_and_jitter() {
        let mut t = tl(2);
        let mut pkts = stream(0, 100 * MS, 1, 0, 7, 50);
        // Swap arrival of neighbours and add up to 250 ms of jitter to some packets.
        for k in (0..50).step_by(2) {
            let a = pkts[k].1;
            pkts[k].1 = pkts[k + 1].1;
            pkts[k + 1].1 = a;
        }
        for k in (5..50).step_by(7) {
            pkts[k].1 += 250 * MS;
        }
        // The first packet to arrive is k=1 (at 100 ms): it anchors ts 160 at frame 800.
        let out = run(&mut t, pkts, 1200 * MS);
        let mut exp = vec![0i16; 9600 * 2];
        expected_stream(&mut exp, 2, 0, 800 - 160, 7, 0..50);
        assert_eq!(out, exp);
        assert_eq!(t.stats(0).late, 0);
        assert_eq!(t.stats(0).lost, 0);
    }

    #[test]
    fn lost_packets_are_exact_silence() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 50);
        pkts.retain(|p| !(10..13).contains(&u16::from_be_bytes([p.2[2], p.2[3]])));
        let out = run(&mut t, pkts, 1000 * MS);
        let mut exp = vec![0i16; 8000];
        expected_stream(
            &mut exp,
            1,
            0,
            0,
            7,
            (0..50).filter(|k| !(9..12).contains(k)),
        );
        assert_eq!(out, exp);
        assert!(out[160 * 9..160 * 12].iter().all(|&s| s == 0));
        assert_eq!(t.stats(0).lost, 3);
    }

    #[test]
    fn duplicate_dropped() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 50);
        let mut dup = pkts[5].clone();
        dup.1 += 30 * MS;
        pkts.push(dup);
        assert_eq!(
            t.push_rtp(0, mono(Duration::ZERO), &pkts[0].2),
            PushOutcome::Placed
        );
        assert_eq!(
            t.push_rtp(0, mono(Duration::ZERO), &pkts[0].2),
            PushOutcome::Duplicate
        );
        let out = run(&mut t, pkts, 1000 * MS);
        let mut exp = vec![0i16; 8000];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..50);
        assert_eq!(out, exp);
        // Two re-deliveries of packet 0 plus one of packet 5.
        assert_eq!(t.stats(0).duplicates, 3);
        assert_eq!(t.stats(0).received, 50);
    }

    #[test]
    fn late_packet_never_rewrites_history() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 50);
        pkts[10].1 = 650 * MS; // its slot (200..220 ms) was finalised at 520 ms
        let out = run(&mut t, pkts, 1000 * MS);
        let mut exp = vec![0i16; 8000];
        expected_stream(&mut exp, 1, 0, 0, 7, (0..50).filter(|&k| k != 10));
        assert_eq!(out, exp);
        let s = t.stats(0);
        assert_eq!((s.late, s.lost, s.reanchors), (1, 0, 0));
        // Its slot is silence not from the sender: one 20 ms `late` gap.
        assert_eq!((s.gaps, s.gap_ms, s.dropped_ms), (1, 20, 0));
        let gaps: Vec<MediaGap> = t.drain_gaps().collect();
        assert_eq!(
            gaps,
            vec![MediaGap {
                channel: 0,
                start_frame: 1600,
                frames: 160,
                cause: GapCause::Late
            }]
        );
    }

    /// The silent runs of channel `ch` at least `min` frames long: (start, len).
    fn silent_runs(out: &[i16], chn: usize, ch: usize, min: usize) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        let n = out.len() / chn;
        for f in 0..=n {
            let silent = f < n && out[f * chn + ch] == 0;
            match (silent, start) {
                (true, None) => start = Some(f),
                (false, Some(s)) => {
                    if f - s >= min {
                        runs.push((s, f - s));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        runs
    }

    #[test]
    fn sender_pause_without_timestamp_jump_is_a_counted_gap() {
        // 25 packets, nothing for 1.5 s, 25 more whose timestamps continue as if no
        // time had passed: the re-anchor inserts 1.5 s of silence.
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 25);
        for k in 25..50u32 {
            pkts.push((
                0,
                2000 * MS + 20 * MS * (k - 25),
                rtp(0, k as u16 + 1, 160 * k, 7, &payload(k, 7)),
            ));
        }
        let out = run(&mut t, pkts, 2500 * MS);
        let s = t.stats(0).clone();
        assert_eq!((s.reanchors, s.lost, s.late), (1, 0, 0));
        assert_eq!((s.gaps, s.gap_ms, s.dropped_ms), (1, 1500, 0));
        let gaps: Vec<MediaGap> = t.drain_gaps().collect();
        assert_eq!(
            gaps,
            vec![MediaGap {
                channel: 0,
                start_frame: 4000,
                frames: 12000,
                cause: GapCause::Reanchor
            }]
        );
        // The recording's one silent run is exactly that gap.
        assert_eq!(silent_runs(&out, 1, 0, 80), vec![(4000, 12000)]);
        assert!(t.drain_gaps().next().is_none());
    }

    #[test]
    fn stalled_shell_burst_counts_the_inserted_and_the_replaced_audio() {
        // The shell stalls for 1 s: packets 25..75 (sent 500..1480 ms) are all read at
        // 1500 ms, then reading is back to real time.
        let mut t = tl(1);
        let mut pkts: Vec<Delivery> = stream(0, Duration::ZERO, 1, 0, 7, 100);
        for p in pkts.iter_mut().take(75).skip(25) {
            p.1 = 1500 * MS;
        }
        let out = run(&mut t, pkts, 2000 * MS);
        let s = t.stats(0).clone();
        assert_eq!((s.reanchors, s.lost, s.received), (2, 0, 100));
        // Packet 25 re-anchors to its arrival: 1 s of silence inserted. Packet 51 is
        // then more than the threshold ahead of its arrival and re-anchors back onto
        // packets 25..51, not yet final, which later audio replaces (520 ms). The stream
        // stays 480 ms ahead of its arrival: at the end 300 ms of it are kept as a tail,
        // the last 180 ms are truncated.
        assert_eq!((s.gaps, s.gap_ms, s.dropped_ms), (3, 1000, 700));
        let gaps: Vec<MediaGap> = t.drain_gaps().collect();
        assert_eq!(
            gaps,
            vec![
                MediaGap {
                    channel: 0,
                    start_frame: 4000,
                    frames: 8000,
                    cause: GapCause::Reanchor
                },
                MediaGap {
                    channel: 0,
                    start_frame: 12000,
                    frames: 4160,
                    cause: GapCause::Rewind
                },
                MediaGap {
                    channel: 0,
                    start_frame: 18400,
                    frames: 1440,
                    cause: GapCause::Truncated
                }
            ]
        );
        // The one silent run is the re-anchor gap; after it, packets 51.. as placed.
        assert_eq!(silent_runs(&out, 1, 0, 80), vec![(4000, 8000)]);
        let mut exp = vec![0i16; 20000];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..25);
        for k in 51..100usize {
            expect_packet(
                &mut exp,
                1,
                0,
                12000 + 160 * (k - 51),
                &payload(k as u32, 7),
            );
        }
        assert_eq!(&out[..], &exp[..18400]);
    }

    #[test]
    fn audio_received_before_the_end_but_placed_after_it_is_kept() {
        // The first packets are read 50 ms late (the first anchors the stream), the
        // others on time: the stream sits 50 ms later on the timeline than the clock of the end.
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 50);
        for p in pkts.iter_mut().take(3) {
            p.1 = 50 * MS;
        }
        let out = run(&mut t, pkts, 1000 * MS);
        assert_eq!(out.len(), 8400, "a 50 ms tail");
        let mut exp = vec![0i16; 8400];
        expected_stream(&mut exp, 1, 0, 400, 7, 0..50);
        assert_eq!(out, exp);
        assert_eq!(t.stats(0).gaps, 0);
    }

    #[test]
    fn consecutive_late_packets_are_one_gap_and_a_resume_is_none() {
        // A 400 ms backlog (below the re-anchor threshold, above the playout delay):
        // packets 10..20 are read at 600 ms; those whose slots were final are late.
        let mut t = tl(1);
        let mut pkts: Vec<Delivery> = stream(0, Duration::ZERO, 1, 0, 7, 50);
        for p in pkts.iter_mut().take(20).skip(10) {
            p.1 = 600 * MS;
        }
        let out = run(&mut t, pkts, 1000 * MS);
        let s = t.stats(0).clone();
        assert_eq!(s.reanchors, 0);
        // Final up to 280 ms when they are read: packets 10..14 (200..280 ms) are late.
        assert_eq!((s.late, s.gaps, s.gap_ms), (4, 1, 80));
        assert_eq!(silent_runs(&out, 1, 0, 80), vec![(1600, 640)]);
        // After a hold the re-anchor at resume is not a gap.
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 25);
        pkts.extend(stream(0, 2000 * MS, 26, 160 * 25, 7, 25));
        pkts.sort_by_key(|p| p.1);
        for (c, at, p) in pkts.iter().filter(|p| p.1 < 1000 * MS) {
            t.push_rtp(*c, mono(*at), p);
            let _ = t.poll_audio(mono(*at));
        }
        t.expect_discontinuity(0);
        for (c, at, p) in pkts.iter().filter(|p| p.1 >= 1000 * MS) {
            let _ = t.poll_audio(mono(*at));
            t.push_rtp(*c, mono(*at), p);
        }
        let _ = t.finish(mono(2600 * MS));
        assert_eq!((t.stats(0).reanchors, t.stats(0).gaps), (1, 0));
    }

    #[test]
    fn very_late_straggler_does_not_reanchor() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 100);
        pkts[10].1 = 1500 * MS; // 1.3 s late: beyond the re-anchor threshold
        let out = run(&mut t, pkts, 2000 * MS);
        let mut exp = vec![0i16; 16000];
        expected_stream(&mut exp, 1, 0, 0, 7, (0..100).filter(|&k| k != 10));
        assert_eq!(out, exp);
        assert_eq!(t.stats(0).reanchors, 0);
        assert_eq!(t.stats(0).late, 1);
    }

    #[test]
    fn sequence_wrap() {
        let mut t = tl(1);
        let out = run(
            &mut t,
            stream(0, Duration::ZERO, 65520, 0, 7, 50),
            1000 * MS,
        );
        let mut exp = vec![0i16; 8000];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..50);
        assert_eq!(out, exp);
        assert_eq!(t.stats(0).lost, 0);
        assert_eq!(t.stats(0).duplicates, 0);
    }

    #[test]
    fn timestamp_wrap() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, u32::MAX - 800, 7, 50);
        pkts.swap(4, 6); // reordered right around the wrap
        let out = run(&mut t, pkts, 1000 * MS);
        let mut exp = vec![0i16; 8000];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..50);
        assert_eq!(out, exp);
        assert_eq!(t.stats(0).reanchors, 0);
    }

    #[test]
    fn ssrc_change_mid_call() {
        let mut t = tl(1);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 25);
        // New SSRC at 520 ms with unrelated seq/ts.
        pkts.extend(stream(0, 520 * MS, 40000, 123_456_789, 9, 25));
        // A straggler of the old SSRC after the switch.
        pkts.push((0, 560 * MS, rtp(0, 26, 160 * 26, 7, &payload(99, 7))));
        let out = run(&mut t, pkts, 1100 * MS);
        let mut exp = vec![0i16; 8800];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..25);
        expected_stream(&mut exp, 1, 0, 4160, 9, 0..25);
        assert_eq!(out, exp);
        let s = t.stats(0);
        assert_eq!((s.ssrc_changes, s.late, s.lost), (1, 1, 0));
    }

    fn hold(jump_ts: bool) -> (Vec<i16>, StreamStats) {
        let mut t = tl(2);
        let mut pkts = stream(0, Duration::ZERO, 1, 1000, 7, 50);
        // Channel 1 talks throughout the hold so the timeline keeps moving.
        pkts.extend(stream(1, Duration::ZERO, 500, 0, 8, 350));
        // Resume at 6 s: seq continues; ts continues (+160) or jumped by the real gap.
        let ts0 = if jump_ts {
            1000 + 6 * 8000
        } else {
            1000 + 160 * 50
        };
        for k in 0..25u32 {
            pkts.push((
                0,
                6000 * MS + 20 * MS * k,
                rtp(0, 51 + k as u16, ts0 + 160 * k, 7, &payload(k, 70)),
            ));
        }
        let out = run(&mut t, pkts, 7000 * MS);
        (out, t.stats(0).clone())
    }

    #[test]
    fn hold_gap_continuous_or_jumped_timestamps() {
        let mut exp = vec![0i16; 56000 * 2];
        expected_stream(&mut exp, 2, 0, 0, 7, 0..50);
        for k in 0..25u32 {
            expect_packet(&mut exp, 2, 0, 48000 + 160 * k as usize, &payload(k, 70));
        }
        expected_stream(&mut exp, 2, 1, 0, 8, 0..350);
        let (cont, s_cont) = hold(false);
        assert_eq!(cont, exp);
        assert_eq!(s_cont.reanchors, 1);
        let (jump, s_jump) = hold(true);
        assert_eq!(jump, exp);
        assert_eq!(s_jump.reanchors, 0);
        assert_eq!(s_cont.lost, 0);
    }

    #[test]
    fn channels_stay_aligned_when_one_starts_late() {
        let mut t = tl(2);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 50);
        pkts.extend(stream(1, 300 * MS, 9000, 77, 8, 50));
        let out = run(&mut t, pkts, 1300 * MS);
        let mut exp = vec![0i16; 10400 * 2];
        expected_stream(&mut exp, 2, 0, 0, 7, 0..50);
        expected_stream(&mut exp, 2, 1, 2400, 8, 0..50);
        assert_eq!(out, exp);
    }

    #[test]
    fn dtmf_events_on_call_timeline() {
        let mut t = tl(1);
        let mut cfg = StreamConfig::default();
        cfg.payload_types.push((101, Codec::TelephoneEvent, 8000));
        t.set_stream_config(0, cfg);
        let mut pkts = stream(0, Duration::ZERO, 1, 0, 7, 20);
        // Digit '7' starting at ts 3200 (400 ms), 6 updates then 3 redundant ends.
        for (seq, i) in (21u16..).zip(1..=9u32) {
            let dur = (160 * i.min(7)) as u16;
            let end = i >= 7;
            let pl = [
                7u8,
                if end { 0x80 | 10 } else { 10 },
                (dur >> 8) as u8,
                dur as u8,
            ];
            let mut p = rtp(101, seq, 3200, 7, &pl);
            if i == 1 {
                p[1] |= 0x80;
            }
            pkts.push((0, 400 * MS + 20 * MS * i.min(7), p));
        }
        let out = run(&mut t, pkts, 1000 * MS);
        let ev = t.take_dtmf();
        assert_eq!(
            ev,
            vec![(
                0,
                DtmfEvent {
                    digit: '7',
                    start: Mono::from_millis(400),
                    duration_ms: 140,
                    volume: 10
                }
            )]
        );
        assert_eq!(t.stats(0).dtmf_events, 1);
        // The DTMF period is silence; the audio before it is intact.
        let mut exp = vec![0i16; 8000];
        expected_stream(&mut exp, 1, 0, 0, 7, 0..20);
        assert_eq!(out, exp);
        assert!(t.take_dtmf().is_empty());
    }

    #[test]
    fn finish_length_is_exact_and_final() {
        let mut t = tl(2);
        let out = run(&mut t, stream(0, Duration::ZERO, 1, 0, 7, 30), 1234 * MS);
        assert_eq!(out.len(), 9872 * 2);
        assert_eq!(t.written_upto(), 9872);
        assert_eq!(
            t.push_rtp(0, mono(1300 * MS), &rtp(0, 99, 0, 7, &[1; 160])),
            PushOutcome::Finished
        );
        assert!(t.poll_audio(mono(5000 * MS)).is_none());
        // A call with no packets at all is silence of the exact length.
        let mut t = tl(2);
        let b = t.finish(mono(250 * MS)).unwrap();
        assert_eq!((b.start_frame, b.samples.len()), (0, 4000));
        assert!(b.samples.iter().all(|&s| s == 0));
    }

    #[test]
    fn unsupported_rtcp_and_garbage() {
        let mut t = tl(2);
        assert_eq!(
            t.push_rtp(0, mono(MS), &rtp(9, 1, 0, 7, &[1; 160])),
            PushOutcome::Unsupported
        );
        assert_eq!(
            t.push_rtp(0, mono(MS), &[0x81, 200, 0, 6, 0, 0, 0, 1]),
            PushOutcome::Rtcp
        );
        assert_eq!(
            t.push_rtp(0, mono(MS), &[0x80, 0]),
            PushOutcome::Malformed(RtpError::TooShort(2))
        );
        assert_eq!(
            t.push_rtp(5, mono(MS), &rtp(0, 1, 0, 7, &[1; 160])),
            PushOutcome::NoSuchChannel
        );
        let s = t.stats(0);
        assert_eq!(
            (s.unsupported_payload, s.rtcp, s.malformed, s.received),
            (1, 1, 1, 1)
        );
        // Renegotiation to PCMA only: PT 0 becomes unsupported.
        t.set_stream_config(
            1,
            StreamConfig {
                payload_types: vec![(8, Codec::Audio(DecoderKind::Pcma), 8000)],
            },
        );
        assert_eq!(
            t.push_rtp(1, mono(MS), &rtp(0, 1, 0, 8, &[1; 160])),
            PushOutcome::Unsupported
        );
        assert_eq!(
            t.push_rtp(1, mono(MS), &rtp(8, 2, 160, 8, &[1; 160])),
            PushOutcome::Placed
        );
        let b = t.finish(mono(100 * MS)).unwrap();
        let ch1: Vec<i16> = b.samples.iter().skip(1).step_by(2).copied().collect();
        // Unsupported packets do not anchor: the PCMA packet anchors at its arrival
        // (1 ms = frame 8).
        assert!(ch1[8..168]
            .iter()
            .all(|&s| s == crate::media::g711::alaw_to_linear(1)));
        assert!(ch1[..8].iter().chain(&ch1[168..]).all(|&s| s == 0));
    }

    #[test]
    fn ahead_of_window_is_dropped_not_buffered() {
        let mut t = tl(1);
        // Shell never polls: a packet 10 s after start cannot be buffered.
        assert_eq!(
            t.push_rtp(0, mono(Duration::ZERO), &rtp(0, 1, 0, 7, &[0x80; 160])),
            PushOutcome::Placed
        );
        assert_eq!(
            t.push_rtp(0, mono(10_000 * MS), &rtp(0, 2, 80_000, 7, &[0x80; 160])),
            PushOutcome::Overflow
        );
        assert_eq!(t.stats(0).overflow, 1);
    }
}
