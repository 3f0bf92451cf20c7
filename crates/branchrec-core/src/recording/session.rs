//! One call's recording as a sans-IO state machine, in the shape of str0m's `Rtc`: the
//! shell feeds datagrams ([`Recording::handle_rtp`]), media changes, pause requests and
//! time ([`Recording::handle_timeout`]), and drains [`Output`]s with
//! [`Recording::poll_output`]: bytes to append to the file, events for the catalogue, and
//! at the end the summary of the call.
//!
//! The object owns everything that decides what is stored: the call's
//! [`CallTimeline`], the SRTP context of every channel, the encoder stage and the chunk
//! writer ([`ContainerWriter`]), the codecs seen, hold state, the pause gate (who has the
//! recording paused, how many packets were dropped meanwhile), DTMF → events, the
//! per-channel statistics and the "no decodable audio" verdict. The shell keeps the file
//! (append, fsync, syncfs), the catalogue and the sockets. Both the SIPREC call task and
//! the capture (mirror, import) recorder drive this same object.
//!
//! Time is a [`Mono`] whose origin is the recording's start (`now`), the creation time a
//! [`UnixMs`] (the shell's wall clock, written into the header), randomness (the data
//! key and the nonce prefix) comes in at creation: the same inputs give the same bytes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::assurance::level::LevelMeter;
use crate::assurance::quality::ChannelQuality;
use crate::assurance::{FileOutcome, Judgement, VerdictPolicy};
use crate::keys::DataKey;
use crate::media::{is_rtcp, CallTimeline, PushOutcome, SrtpChannel, SrtpPolicy, StreamConfig};
use crate::media::{AudioBlock, TimelineConfig};
use crate::media::{SourceGate, SourcePolicy, SourceVerdict};
use crate::recording::container::{ContainerError, FinishedContainer, HeaderParams};
use crate::recording::encode::ContainerWriter;
use crate::recording::opus::OpusSettings;
use crate::recording::stats::ChannelStats;
use crate::time::{Mono, UnixMs};

/// What a new recording is (all but the keys).
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Recording id (a UUID string), also in log lines.
    pub recording_id: String,
    /// Creation time (the shell's wall clock).
    pub created: UnixMs,
    /// Sample rate of the stored audio (8000 or 16000, see `media::codec::recording_rate`).
    pub sample_rate: u32,
    /// Channels (one per recorded stream).
    pub channels: usize,
    /// Opus settings for Opus storage; `None` stores PCM.
    pub opus: Option<OpusSettings>,
    /// The timeline's playout delay.
    pub playout_delay: Duration,
    /// A partial chunk is sealed this often (and full chunks hold this much audio), so a
    /// crash loses little.
    pub flush_every: Duration,
    /// RFC 7866 §6.1.3 (SIPREC): when every stream is inactive after a media update the
    /// recording is paused (source `siprec`) until one is active again.
    pub pause_when_all_held: bool,
    /// If no channel decoded any audio but some received payload that cannot be decoded,
    /// the recording's verdict is [`Outcome::CodecUnsupported`] (capture).
    pub unsupported_if_no_audio: bool,
    /// Keep DTMF digits in the `dtmf` events; when false the digit is `"masked"` (the
    /// event keeps its time, duration and volume).
    pub dtmf_digits: bool,
    /// Which transport sources a channel takes packets from (see
    /// [`crate::media::source`]); [`SourcePolicy::Any`] when the caller binds flows itself.
    pub source_policy: SourcePolicy,
    /// A `foreign_source` event is raised when a channel has dropped this many packets
    /// from foreign sources (0: never).
    pub foreign_alarm_packets: u64,
}

/// The per-recording secrets, drawn by the shell.
pub struct RecordingKeys {
    /// The recording's data key.
    pub data_key: DataKey,
    /// `data_key` wrapped under `kek_id`.
    pub wrapped_key: Vec<u8>,
    /// The wrapping KEK.
    pub kek_id: String,
    /// The data key wrapped to the central compliance key, `(kek_id, wrapped)`
    /// (`crate::compliance`): the container's third key slot. `None`: two slots.
    pub compliance: Option<(String, Vec<u8>)>,
    /// Random nonce prefix of the container.
    pub nonce_prefix: [u8; crate::recording::container::NONCE_PREFIX_LEN],
}

/// What a channel carries after a media (re)negotiation.
#[derive(Debug, Clone)]
pub struct ChannelMedia {
    /// Payload types the channel may carry.
    pub config: StreamConfig,
    /// Codec names for the recording's codec string (e.g. `PCMU`).
    pub codecs: Vec<String>,
    /// Whether the channel is on hold.
    pub hold: bool,
    /// SRTP keys of the stream; `None` = plain RTP.
    pub srtp: Option<SrtpPolicy>,
    /// Detail of the `hold`/`resume` event if the hold state changes.
    pub detail: serde_json::Value,
    /// The SRC's RTP address for the stream from its SDP (`c=`/`m=`), `None` when it gave
    /// no usable one (on hold): packets are taken only from there (see
    /// [`crate::media::source`]).
    pub remote: Option<SocketAddr>,
}

/// Kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A channel went on hold.
    Hold,
    /// A channel came off hold, or (no channel) the recording resumed after a pause.
    Resume,
    /// The recording was paused.
    Pause,
    /// A DTMF digit (RFC 4733).
    Dtmf,
    /// The shell could not write the file: from here audio is not stored until
    /// [`Recording::storage_resumed`].
    StorageStalled,
    /// Storage is back: the frames between `from_ms` and `to_ms` (detail) were lost and
    /// are stored as silence, so the recording stays on one timeline.
    StorageGap,
    /// A channel dropped [`RecordingConfig::foreign_alarm_packets`] packets from sources
    /// other than its bound one (audio injection attempt or a misconfigured SRC/NAT).
    ForeignSource,
    /// A stretch of a channel without its sender's audio although its packets came (see
    /// [`crate::media::timeline`]): detail `cause` (`reanchor`, `late`, `overflow`,
    /// `rewind`, `truncated`), `from_ms`, `to_ms`, `gap_ms`, `from_frame`, `frames`.
    MediaGap,
}

impl EventKind {
    /// The name in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Hold => "hold",
            EventKind::Resume => "resume",
            EventKind::Pause => "pause",
            EventKind::Dtmf => "dtmf",
            EventKind::StorageStalled => "storage_stalled",
            EventKind::StorageGap => "storage_gap",
            EventKind::ForeignSource => "foreign_source",
            EventKind::MediaGap => "media_gap",
        }
    }
}

/// Something that happened during the call, on the recording's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Offset from the start of the recording, milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The channel it concerns, if any.
    pub channel: Option<u32>,
    /// Kind-specific details.
    pub detail: serde_json::Value,
}

/// How much of the output the shell got onto the disk (see [`Finished::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Every chunk, the final one included, was written and synced.
    All,
    /// The file was cut back to the last chunk boundary that was written (the disk
    /// stayed full, or the final sync failed): a verifiable prefix without the final chunk.
    Prefix,
    /// Not even a chunk boundary is known (the file could not be cut back).
    Unknown,
}

/// How the recording came out, given what the shell stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte is stored and there is audio (or a codec we could decode).
    Complete,
    /// The file ends at a chunk boundary before the final chunk: everything up to it
    /// verifies and exports.
    Interrupted,
    /// The file could not be brought back to a chunk boundary.
    Damaged,
    /// No channel carried a codec that could be decoded.
    CodecUnsupported,
}

/// The end of a recording.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Length of the recorded timeline, milliseconds.
    pub duration_ms: u64,
    /// The container's hashes and sizes (its `bytes` were already output as a chunk).
    pub container: FinishedContainer,
    /// Codec names seen, sorted, joined with `+`.
    pub codec: String,
    /// Per-channel statistics, one [`ChannelStats`] per channel (the one schema of
    /// `recordings.stats_json`).
    pub stats: Vec<ChannelStats>,
    /// The verdict that no decodable audio arrived (see
    /// [`RecordingConfig::unsupported_if_no_audio`]).
    pub codec_unsupported: bool,
    /// Per-channel quality and level (`crate::assurance`), one per channel.
    pub quality: Vec<ChannelQuality>,
    /// The thresholds the verdict is judged with.
    pub policy: VerdictPolicy,
}

impl Finished {
    /// The final state, `stored` telling what the shell got onto the disk.
    pub fn outcome(&self, stored: Stored) -> Outcome {
        if stored == Stored::Unknown {
            Outcome::Damaged
        } else if stored == Stored::Prefix {
            Outcome::Interrupted
        } else if self.codec_unsupported {
            Outcome::CodecUnsupported
        } else {
            Outcome::Complete
        }
    }
}

impl Finished {
    /// The assurance verdict for the recording as it came out (`outcome` from
    /// [`Finished::outcome`], possibly corrected by the shell from the file on disk).
    pub fn judgement(&self, outcome: Outcome) -> Judgement {
        let file = match outcome {
            Outcome::Complete => FileOutcome::Complete,
            Outcome::Interrupted | Outcome::Damaged => FileOutcome::Cut,
            Outcome::CodecUnsupported => FileOutcome::CodecUnsupported,
        };
        crate::recording::verdict::judge(
            &self.policy,
            &self.stats,
            &self.quality,
            self.duration_ms,
            file,
        )
    }
}

/// What [`Recording::handle_rtp`] did with a datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum RtpDisposition {
    /// From a source other than the channel's bound one (see [`crate::media::source`]):
    /// dropped before SRTP and the timeline, counted as `rtp_foreign_source`. `alarm` is
    /// true for the packet that reached [`RecordingConfig::foreign_alarm_packets`].
    Foreign {
        /// This packet raised the channel's `foreign_source` event.
        alarm: bool,
    },
    /// SRTP authentication or decryption failed: dropped (counted by the SRTP context).
    SrtpRejected,
    /// RTCP from the bound source: ignored.
    Rtcp,
    /// Dropped while paused.
    Paused,
    /// No such channel.
    NoSuchChannel,
    /// Handed to the timeline, with what it did.
    Timeline(PushOutcome),
}

impl RtpDisposition {
    /// Whether the packet came from the channel's accepted source (anything but
    /// [`RtpDisposition::Foreign`]): only such packets keep a call alive.
    pub fn from_bound_source(&self) -> bool {
        !matches!(
            self,
            RtpDisposition::Foreign { .. } | RtpDisposition::NoSuchChannel
        )
    }

    /// What the timeline did, if the packet reached it.
    pub fn timeline(&self) -> Option<&PushOutcome> {
        match self {
            RtpDisposition::Timeline(o) => Some(o),
            _ => None,
        }
    }
}

/// What the shell must do next.
#[derive(Debug)]
pub enum Output {
    /// Append these bytes to the recording's file.
    Chunk(Vec<u8>),
    /// Keep this event for the catalogue.
    Event(Event),
    /// The recording is finished; nothing follows.
    Finished(Box<Finished>),
}

/// One call's recording (see the module docs).
pub struct Recording {
    id: String,
    writer: Option<ContainerWriter>,
    timeline: CallTimeline,
    srtp: Vec<SrtpChannel>,
    /// Source binding per channel.
    sources: Vec<SourceGate>,
    foreign_alarm_packets: u64,
    /// Scratch for decrypting an SRTP datagram (reused).
    srtp_buf: Vec<u8>,
    codecs: Vec<String>,
    holds: Vec<bool>,
    /// Pause requests in force (by source); audio is dropped while any is.
    paused_by: Vec<String>,
    /// Packets dropped while paused, per channel.
    dropped_paused: Vec<u64>,
    flush_every: Duration,
    last_flush: Mono,
    scratch: Vec<i16>,
    pause_when_all_held: bool,
    unsupported_if_no_audio: bool,
    dtmf_digits: bool,
    out: VecDeque<Output>,
    /// Set while the shell cannot write (see [`Recording::storage_failed`]).
    stall: Option<Stall>,
    /// Storage gaps so far and the frames they cost.
    storage_gaps: u64,
    storage_gap_frames: u64,
    /// The session is not confirmed yet (SIPREC: our 200 not ACKed): while no audio
    /// packet arrived nothing is written (see [`Recording::await_confirmation`]).
    awaiting_confirmation: bool,
    /// An audio packet reached the timeline.
    audio_seen: bool,
    /// `media_gap` events output (at most [`MAX_GAP_EVENTS`]; the counters go on).
    gap_events: u64,
    /// Level and voice activity of the stored audio.
    levels: LevelMeter,
    policy: VerdictPolicy,
}

/// At most this many `media_gap` events per recording (a hostile stream could make one
/// per packet); the last says so, the statistics count every gap.
pub const MAX_GAP_EVENTS: u64 = 1000;

/// A storage stall in progress: the timeline's audio from `from_frame` on is discarded
/// (the shell could not write it), up to `next_frame`.
#[derive(Debug, Clone, Copy)]
struct Stall {
    from_frame: u64,
    next_frame: u64,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("id", &self.id)
            .field("paused_by", &self.paused_by)
            .field("finished", &self.writer.is_none())
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// A new recording. Returns it and the bytes the file starts with (header, key slots
    /// and chunk 0), for the shell to write (and sync) when it creates the file.
    pub fn new(
        cfg: RecordingConfig,
        keys: RecordingKeys,
    ) -> Result<(Self, Vec<u8>), ContainerError> {
        let channels = cfg.channels;
        let params = HeaderParams {
            recording_id: cfg.recording_id.clone(),
            created_unix_ms: crate::recording::container::unix_ms_on_disk(cfg.created),
            sample_rate: cfg.sample_rate,
            channels: u16::try_from(channels)
                .map_err(|_| ContainerError::InvalidParams("too many channels".into()))?,
            chunk_target_frames: (u128::from(cfg.sample_rate) * cfg.flush_every.as_millis() / 1000)
                as u32,
            kek_id: keys.kek_id,
            extra_json: String::new(),
        };
        let (writer, header) = ContainerWriter::with_slots(
            params,
            cfg.opus,
            keys.data_key,
            keys.wrapped_key,
            keys.compliance,
            keys.nonce_prefix,
        )?;
        let timeline = CallTimeline::new(TimelineConfig {
            channels,
            sample_rate: cfg.sample_rate,
            playout_delay: cfg.playout_delay,
        });
        Ok((
            Recording {
                id: cfg.recording_id,
                writer: Some(writer),
                timeline,
                srtp: (0..channels).map(|_| SrtpChannel::default()).collect(),
                sources: (0..channels)
                    .map(|_| SourceGate::new(cfg.source_policy))
                    .collect(),
                foreign_alarm_packets: cfg.foreign_alarm_packets,
                srtp_buf: Vec::new(),
                codecs: Vec::new(),
                holds: vec![false; channels],
                paused_by: Vec::new(),
                dropped_paused: vec![0; channels],
                flush_every: cfg.flush_every,
                last_flush: Mono::ZERO,
                scratch: Vec::new(),
                pause_when_all_held: cfg.pause_when_all_held,
                unsupported_if_no_audio: cfg.unsupported_if_no_audio,
                dtmf_digits: cfg.dtmf_digits,
                out: VecDeque::new(),
                stall: None,
                storage_gaps: 0,
                storage_gap_frames: 0,
                awaiting_confirmation: false,
                audio_seen: false,
                gap_events: 0,
                levels: LevelMeter::new(
                    channels,
                    cfg.sample_rate,
                    VerdictPolicy::default().voice_dbfs,
                ),
                policy: VerdictPolicy::default(),
            },
            header,
        ))
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The assurance thresholds (`[assurance]`); call before any audio.
    pub fn set_assurance_policy(&mut self, p: VerdictPolicy) {
        let rate = self.timeline.config().sample_rate;
        self.levels = LevelMeter::new(self.channels(), rate, p.voice_dbfs);
        self.policy = p;
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.holds.len()
    }

    /// Codec names seen so far, sorted, joined with `+`.
    pub fn codec_string(&self) -> String {
        self.codecs.join("+")
    }

    /// Hold state per channel.
    pub fn holds(&self) -> &[bool] {
        &self.holds
    }

    /// Whether any source has the recording paused.
    pub fn is_paused(&self) -> bool {
        !self.paused_by.is_empty()
    }

    /// The timeline (statistics, configuration).
    pub fn timeline(&self) -> &CallTimeline {
        &self.timeline
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.writer.is_none()
    }

    /// The next thing for the shell to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn event(
        &mut self,
        at_ms: u64,
        kind: EventKind,
        channel: Option<usize>,
        detail: serde_json::Value,
    ) {
        self.out.push_back(Output::Event(Event {
            at_ms,
            kind,
            channel: channel.map(|c| c as u32),
            detail,
        }));
    }

    /// The media of the channels after a negotiation, in channel order (`None` = the
    /// stream is gone: the channel is on hold). `now` = `None` for the configuration at
    /// the start (no hold events; the hold state is taken as it is); otherwise hold
    /// changes become `hold`/`resume` events. With
    /// [`RecordingConfig::pause_when_all_held`] the recording is paused while every
    /// channel is on hold — from the start too (a `pause` event at 0).
    pub fn set_media(&mut self, now: Option<Mono>, channels: Vec<Option<ChannelMedia>>) {
        let at = now.unwrap_or(Mono::ZERO);
        let at_ms = at.as_millis();
        for (ch, m) in channels.into_iter().enumerate() {
            match m {
                Some(m) => {
                    if let Some(g) = self.sources.get_mut(ch) {
                        g.set_announced(at, m.remote);
                    }
                    self.set_srtp(ch, m.srtp.as_ref(), at);
                    self.timeline.set_stream_config(ch, m.config);
                    for c in m.codecs {
                        if !self.codecs.contains(&c) {
                            self.codecs.push(c);
                        }
                    }
                    self.codecs.sort();
                    if let Some(&h) = self.holds.get(ch) {
                        if h != m.hold {
                            self.timeline.expect_discontinuity(ch);
                        }
                        if now.is_some() && h != m.hold {
                            let kind = if m.hold {
                                EventKind::Hold
                            } else {
                                EventKind::Resume
                            };
                            self.event(at_ms, kind, Some(ch), m.detail);
                        }
                        self.holds[ch] = m.hold;
                    }
                }
                None if now.is_some() => self.set_hold(at, ch, true),
                None => {
                    if let Some(h) = self.holds.get_mut(ch) {
                        *h = true;
                    }
                }
            }
        }
        if self.pause_when_all_held {
            // RFC 7866 §6.1.3: an SRC pauses recording by making every stream inactive —
            // also from the start (an initial offer with every stream inactive, recvonly,
            // `c=0.0.0.0` or port 0): nothing is stored until a stream becomes active, and
            // the pause is an event at 0, exactly as when a re-INVITE pauses.
            let all_held = !self.holds.is_empty() && self.holds.iter().all(|h| *h);
            self.set_paused(at, all_held, "siprec");
        }
    }

    /// Put a channel on hold (or take it off) without changing its formats.
    pub fn set_hold(&mut self, now: Mono, ch: usize, hold: bool) {
        if let Some(&h) = self.holds.get(ch) {
            if h != hold {
                self.holds[ch] = hold;
                self.timeline.expect_discontinuity(ch);
                let kind = if hold {
                    EventKind::Hold
                } else {
                    EventKind::Resume
                };
                self.event(
                    now.as_millis(),
                    kind,
                    Some(ch),
                    serde_json::json!({ "direction": null }),
                );
            }
        }
    }

    fn set_srtp(&mut self, ch: usize, policy: Option<&SrtpPolicy>, now: Mono) {
        let Some(sc) = self.srtp.get_mut(ch) else {
            return;
        };
        sc.set_policy(policy, now);
        if let Some(e) = sc.rejected_policy.take() {
            tracing::warn!(recording = %self.id, channel = ch, error = %e, "SRTP keys refused; keeping the previous ones");
        } else if let Some(p) = policy {
            tracing::debug!(recording = %self.id, channel = ch, suite = %p.suite.sdp_name(), "SRTP keys set");
        }
    }

    /// Pause storing audio on behalf of `source` (`siprec`, `control:<actor>`).
    pub fn pause(&mut self, now: Mono, source: &str) {
        self.set_paused(now, true, source);
    }

    /// Withdraw `source`'s pause (any `control:` source withdraws every `control:` pause).
    pub fn resume(&mut self, now: Mono, source: &str) {
        self.set_paused(now, false, source);
    }

    /// Pause or resume (see [`pause`](Self::pause)). Paused time becomes silence on the
    /// timeline; the interval is kept as `pause`/`resume` events.
    pub fn set_paused(&mut self, now: Mono, paused: bool, source: &str) {
        let was = !self.paused_by.is_empty();
        if paused {
            if !self.paused_by.iter().any(|s| s == source) {
                self.paused_by.push(source.to_string());
            }
        } else if source.starts_with("control:") {
            self.paused_by.retain(|s| !s.starts_with("control:"));
        } else {
            self.paused_by.retain(|s| s != source);
        }
        let is = !self.paused_by.is_empty();
        if was != is {
            for ch in 0..self.holds.len() {
                self.timeline.expect_discontinuity(ch);
            }
            tracing::info!(recording = %self.id, paused = is, source, "recording paused/resumed");
            let kind = if is {
                EventKind::Pause
            } else {
                EventKind::Resume
            };
            self.event(
                now.as_millis(),
                kind,
                None,
                serde_json::json!({ "source": source }),
            );
        }
    }

    fn rate(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(8000, |w| u64::from(w.header().sample_rate.max(1)))
    }

    /// Whether the recording is in a storage stall (see [`storage_failed`](Self::storage_failed)).
    pub fn is_storage_stalled(&self) -> bool {
        self.stall.is_some()
    }

    /// The shell could not write an output chunk (disk full, I/O error) and has cut the
    /// file back to the last chunk boundary it wrote; it keeps the chunks already output
    /// (sealed: they are retried byte for byte, never re-sealed, so no nonce is used
    /// twice) and retries them. Until [`storage_resumed`](Self::storage_resumed) the
    /// recording seals nothing more: the timeline keeps running and its audio is
    /// discarded, so memory stays bounded however long the disk is full. Emits a
    /// `storage_stalled` event once per stall.
    pub fn storage_failed(&mut self, now: Mono) {
        if self.stall.is_some() {
            return;
        }
        let Some(writer) = self.writer.as_ref() else {
            return;
        };
        let at = writer.frames();
        self.stall = Some(Stall {
            from_frame: at,
            next_frame: at,
        });
        tracing::warn!(recording = %self.id, "storage stalled: audio is not stored until the disk takes writes again");
        self.event(
            now.as_millis(),
            EventKind::StorageStalled,
            None,
            serde_json::json!({ "at_frame": at }),
        );
    }

    /// Every chunk the shell kept is written again: the lost interval is stored as
    /// silence (the recording stays on one timeline) and marked with a `storage_gap`
    /// event (`from_ms`, `to_ms`, `gap_ms`), and recording goes on.
    pub fn storage_resumed(&mut self, now: Mono) {
        let Some(st) = self.stall.take() else {
            return;
        };
        let rate = self.rate();
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        if let Err(e) = writer.fill_silence_to(st.next_frame) {
            tracing::error!(recording = %self.id, error = %e, "filling a storage gap refused by the container");
        }
        let lost = st.next_frame.saturating_sub(st.from_frame);
        self.storage_gaps += 1;
        self.storage_gap_frames += lost;
        let (from_ms, to_ms) = (st.from_frame * 1000 / rate, st.next_frame * 1000 / rate);
        tracing::warn!(recording = %self.id, from_ms, to_ms, "storage is back; the gap is stored as silence");
        self.event(
            from_ms,
            EventKind::StorageGap,
            None,
            serde_json::json!({
                "from_ms": from_ms,
                "to_ms": to_ms,
                "gap_ms": to_ms - from_ms,
                "from_frame": st.from_frame,
                "to_frame": st.next_frame,
                "resumed_at_ms": now.as_millis(),
            }),
        );
        // The gap's silence is sealed now, so the shell writes it before later audio.
        if let Some(w) = self.writer.as_mut() {
            while let Some(chunk) = w.poll_chunk() {
                self.out.push_back(Output::Chunk(chunk));
            }
            if let Some(chunk) = w.flush() {
                self.out.push_back(Output::Chunk(chunk));
            }
        }
    }

    /// One datagram received on `channel`'s RTP port from `from`, at `now`. First the
    /// source check ([`crate::media::source`]): a packet from anywhere but the channel's
    /// bound source is dropped and counted before anything else looks at it. Then SRTP is
    /// authenticated and decrypted (failures are counted and dropped), RTCP is ignored,
    /// and while paused the packet never reaches the timeline: no paused audio is ever
    /// stored.
    pub fn handle_rtp(
        &mut self,
        now: Mono,
        channel: usize,
        from: SocketAddr,
        bytes: &[u8],
    ) -> RtpDisposition {
        let Some(gate) = self.sources.get_mut(channel) else {
            return RtpDisposition::NoSuchChannel;
        };
        // RTCP's second byte (packet type) is in the clear in SRTCP too.
        let rtcp = is_rtcp(bytes);
        let rtp = !rtcp && bytes.len() >= 12 && bytes.first().is_some_and(|b| b >> 6 == 2);
        if gate.check(now, from, rtp) == SourceVerdict::Foreign {
            return self.foreign_dropped(now, channel);
        }
        let pkt: &[u8] = match self.srtp.get_mut(channel) {
            Some(s) if s.is_secure() => {
                self.srtp_buf.clear();
                self.srtp_buf.extend_from_slice(bytes);
                match s.unprotect(&mut self.srtp_buf, now) {
                    Ok(len) => self.srtp_buf.get(..len).unwrap_or_default(),
                    Err(_) => return RtpDisposition::SrtpRejected,
                }
            }
            _ => bytes,
        };
        if is_rtcp(pkt) {
            return RtpDisposition::Rtcp;
        }
        if !self.paused_by.is_empty() {
            if let Some(d) = self.dropped_paused.get_mut(channel) {
                *d += 1;
            }
            // Seen, not lost: the pause must not read as packet loss.
            self.timeline.skip_rtp(channel, pkt);
            return RtpDisposition::Paused;
        }
        self.audio_seen = true;
        RtpDisposition::Timeline(self.timeline.push_rtp(channel, now, pkt))
    }

    /// The session is not confirmed yet (a SIPREC INVITE whose 200 is not ACKed): until
    /// [`confirm`](Self::confirm) or the first audio packet, [`handle_timeout`](Self::handle_timeout)
    /// writes nothing — not even the silence the timeline would fill in — so an INVITE
    /// that is never ACKed leaves a file of the header alone (issue #12: a flood of
    /// un-ACKed INVITEs wrote ~32 KB/s of silence each until the ACK timeout). The
    /// timeline is untouched: once confirmed, the silence since the start is written at
    /// the next tick and the recording is the same as if it had been written all along.
    pub fn await_confirmation(&mut self) {
        self.awaiting_confirmation = true;
    }

    /// The session is confirmed (ACK received): writing proceeds.
    pub fn confirm(&mut self) {
        self.awaiting_confirmation = false;
    }

    /// A packet for `channel` from `from` that the caller found foreign (the capture
    /// tracker, which binds flows itself): counted like one [`handle_rtp`](Self::handle_rtp)
    /// drops.
    pub fn note_foreign(&mut self, now: Mono, channel: usize, from: SocketAddr) -> RtpDisposition {
        let Some(gate) = self.sources.get_mut(channel) else {
            return RtpDisposition::NoSuchChannel;
        };
        gate.note_foreign(from);
        self.foreign_dropped(now, channel)
    }

    /// After a foreign packet was counted on `channel`: the event at the threshold.
    fn foreign_dropped(&mut self, now: Mono, channel: usize) -> RtpDisposition {
        let Some(gate) = self.sources.get(channel) else {
            return RtpDisposition::NoSuchChannel;
        };
        let n = gate.foreign();
        let alarm = self.foreign_alarm_packets > 0 && n == self.foreign_alarm_packets;
        if alarm {
            let last = gate.last_foreign().map(|a| a.to_string());
            let bound = gate.latched().map(|a| a.to_string());
            let announced = gate.announced().map(|a| a.to_string());
            tracing::warn!(recording = %self.id, channel, foreign = n, source = ?last,
                announced = ?announced, latched = ?bound, "RTP from a foreign source dropped");
            self.event(
                now.as_millis(),
                EventKind::ForeignSource,
                Some(channel),
                serde_json::json!({
                    "dropped": n,
                    "source": last,
                    "announced": announced,
                    "latched": bound,
                }),
            );
        }
        RtpDisposition::Foreign { alarm }
    }

    /// Packets channel `ch` dropped as coming from a foreign source.
    pub fn foreign_packets(&self, ch: usize) -> u64 {
        self.sources.get(ch).map_or(0, SourceGate::foreign)
    }

    /// Let the recording advance to `now`: audio past the playout delay goes to the
    /// encoder, sealed chunks are output, and a partial chunk is sealed every
    /// [`RecordingConfig::flush_every`].
    pub fn handle_timeout(&mut self, now: Mono) {
        if self.awaiting_confirmation && !self.audio_seen {
            return;
        }
        self.advance(now);
        self.gap_events();
    }

    fn advance(&mut self, now: Mono) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let mut samples = std::mem::take(&mut self.scratch);
        let ch = self.holds.len().max(1);
        while let Some(start_frame) = self.timeline.poll_audio_into(now, &mut samples) {
            if let Some(st) = self.stall.as_mut() {
                // Nothing can be written: this audio is lost, its time becomes silence
                // when storage is back.
                st.next_frame = st.next_frame.max(start_frame + (samples.len() / ch) as u64);
                continue;
            }
            let block = AudioBlock {
                start_frame,
                samples,
            };
            self.levels.push(&block.samples);
            push_block(&self.id, writer, &block);
            samples = block.samples;
        }
        self.scratch = samples;
        if self.stall.is_some() {
            return;
        }
        while let Some(chunk) = writer.poll_chunk() {
            self.out.push_back(Output::Chunk(chunk));
        }
        if now.saturating_duration_since(self.last_flush) >= self.flush_every {
            self.last_flush = now;
            if let Some(chunk) = writer.flush() {
                self.out.push_back(Output::Chunk(chunk));
            }
        }
    }

    /// End the recording at `end` (its length): the rest of the audio and the final
    /// chunk are output, then the remaining events (an open pause is closed, the DTMF
    /// digits), then [`Output::Finished`]. Later calls do nothing.
    pub fn finish(&mut self, end: Mono) {
        if self.stall.is_some() {
            // The shell writes the rest with the final chunk, or ends the file at its
            // last chunk boundary (interrupted): either way the gap is marked here.
            self.storage_resumed(end);
        }
        // Before the writer is taken: the rate comes from its header.
        let gap_ms = self.storage_gap_frames * 1000 / self.rate();
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        if let Some(block) = self.timeline.finish(end) {
            self.levels.push(&block.samples);
            push_block(&self.id, &mut writer, &block);
        }
        let rate = u64::from(writer.header().sample_rate.max(1));
        self.gap_events_at(rate);
        // The timeline may have kept a tail past `end` (audio received before it).
        let end_ms = end
            .as_millis()
            .max(self.timeline.written_upto() * 1000 / rate);
        while let Some(chunk) = writer.poll_chunk() {
            self.out.push_back(Output::Chunk(chunk));
        }
        if let Some(chunk) = writer.flush() {
            self.out.push_back(Output::Chunk(chunk));
        }
        let mut container = writer.finish();
        self.out
            .push_back(Output::Chunk(std::mem::take(&mut container.bytes)));
        let mut stats = Vec::with_capacity(self.channels());
        let (mut decoded, mut unsupported) = (0u64, 0u64);
        for ch in 0..self.channels() {
            let s = self.timeline.stats(ch);
            unsupported += s.unsupported_payload;
            decoded += s.received.saturating_sub(s.unsupported_payload);
            let dropped = self.dropped_paused.get(ch).copied().unwrap_or(0);
            let mut st = ChannelStats::new(ch, s, self.srtp.get(ch), dropped);
            st.rtp_foreign_source = self.foreign_packets(ch);
            stats.push(st);
        }
        if !self.paused_by.is_empty() {
            self.event(
                end_ms,
                EventKind::Resume,
                None,
                serde_json::json!({ "source": "end of call" }),
            );
        }
        for st in &mut stats {
            st.storage_gaps = self.storage_gaps;
            st.storage_gap_ms = gap_ms;
        }
        for (ch, d) in self.timeline.take_dtmf() {
            let digit = if self.dtmf_digits {
                d.digit.to_string()
            } else {
                "masked".to_string()
            };
            self.event(
                d.start.as_millis(),
                EventKind::Dtmf,
                Some(ch),
                serde_json::json!({
                    "digit": digit,
                    "duration_ms": d.duration_ms,
                    "volume": d.volume,
                }),
            );
        }
        let codec = self.codecs.join("+");
        let quality = stats
            .iter()
            .enumerate()
            .map(|(ch, st)| {
                let empty = crate::assurance::quality::QualityTracker::default();
                let q = self.timeline.quality(ch).unwrap_or(&empty);
                crate::recording::verdict::channel_quality(
                    &self.policy,
                    st,
                    q,
                    &self.levels.level(ch),
                    &codec,
                )
            })
            .collect();
        self.out.push_back(Output::Finished(Box::new(Finished {
            duration_ms: end_ms,
            container,
            codec,
            stats,
            codec_unsupported: self.unsupported_if_no_audio && decoded == 0 && unsupported > 0,
            quality,
            policy: self.policy,
        })));
    }
}

impl Recording {
    /// The timeline's closed gaps as `media_gap` events.
    fn gap_events(&mut self) {
        let rate = self.rate();
        self.gap_events_at(rate);
    }

    fn gap_events_at(&mut self, rate: u64) {
        // Empty (no allocation) unless a gap closed.
        let gaps: Vec<crate::media::MediaGap> = self.timeline.drain_gaps().collect();
        for g in gaps {
            self.gap_event(g, rate);
        }
    }

    fn gap_event(&mut self, g: crate::media::MediaGap, rate: u64) {
        let from_ms = g.start_frame * 1000 / rate;
        let to_ms = (g.start_frame + g.frames) * 1000 / rate;
        let gap_ms = g.frames * 1000 / rate;
        if self.gap_events >= MAX_GAP_EVENTS {
            return;
        }
        tracing::warn!(recording = %self.id, channel = g.channel, cause = g.cause.as_str(), from_ms, gap_ms, "audio gap: the recording holds no audio from the sender here");
        self.gap_events += 1;
        let mut detail = serde_json::json!({
            "cause": g.cause.as_str(),
            "from_ms": from_ms,
            "to_ms": to_ms,
            "gap_ms": gap_ms,
            "from_frame": g.start_frame,
            "frames": g.frames,
        });
        if self.gap_events == MAX_GAP_EVENTS {
            detail["last_event"] =
                serde_json::json!("further gaps are only counted in the statistics");
        }
        self.event(from_ms, EventKind::MediaGap, Some(g.channel), detail);
    }
}

fn push_block(id: &str, writer: &mut ContainerWriter, block: &AudioBlock) {
    if let Err(e) = writer.push_block(block) {
        // The timeline only moves forward, so this is a bug; keep recording what we can.
        tracing::error!(recording = %id, error = %e, "audio block refused by the container");
    }
}

#[cfg(test)]
mod tests;
