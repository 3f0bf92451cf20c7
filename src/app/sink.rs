//! The recording shell shared by SIPREC calls and passive capture: the file and the
//! catalogue around one call's [`Recording`] core (`branchrec_core::recording::session`),
//! which decides everything about what is stored — timeline, SRTP, codecs, holds, the
//! pause gate, events, statistics. This shell appends the chunks it outputs to the
//! encrypted file, syncs it, and sends the events and the `Finish` row to the catalogue.
//!
//! It is driven with [`Mono`] times whose origin is the recording's start, so the SIPREC
//! call task feeds it its monotonic clock and the capture engine packet capture time.
//! Nothing on the per-packet path allocates; file writes happen once per sealed chunk.
//!
//! **A write that fails** (disk full, I/O error, a short write) never tears the file: the
//! file is cut back to the end of the last output written whole (`durable_len`, always a
//! chunk boundary), the chunk is kept as sealed and the core is told
//! ([`Recording::storage_failed`]), which then seals nothing more. Every tick retries the
//! kept chunks byte for byte (never re-sealed: no GCM nonce is used twice); once they are
//! written the core is told ([`Recording::storage_resumed`]) and the lost interval goes
//! into the file as silence, marked by a `storage_gap` event. A recording whose final
//! chunk cannot be written ends at its last chunk boundary, `interrupted`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::app::store::{CatalogCmd, CatalogHandle};
use crate::catalog::{EventRow, Finish, RecordingState, Source};
use crate::config::Config;
use crate::recording::session::{Event, Finished, Outcome, Output, Stored};
use crate::recording::{
    ChannelMedia, Recording, RecordingConfig, RecordingKeys, RtpDisposition, StorageFormat,
};
use crate::vault::{DataKey, KeyWrap};
use branchrec_core::time::{Mono, UnixMs};
use std::net::SocketAddr;

pub use crate::media::codec::{recording_rate, SAMPLE_RATE, WIDEBAND_SAMPLE_RATE};

/// Why a recording could not be created.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct SinkError(pub String);

/// Storage health across every open recording, for `/metrics`, the alarm and admission.
#[derive(Debug, Default)]
pub struct StorageHealth {
    /// Recordings whose writes are failing right now.
    pub stalled: AtomicU64,
    /// Failed writes (each cut back to a chunk boundary) since start.
    pub write_failures: AtomicU64,
    /// Storage gaps closed (written as silence) since start.
    pub gaps: AtomicU64,
}

/// The daemon's storage health (one per process: every sink reports here).
pub static STORAGE_HEALTH: StorageHealth = StorageHealth {
    stalled: AtomicU64::new(0),
    write_failures: AtomicU64::new(0),
    gaps: AtomicU64::new(0),
};

/// Audio gaps of every recording since start (`media_gap` events and, past the per-recording
/// event cap, the statistics at close), for the status document and `/metrics`.
#[derive(Debug, Default)]
pub struct MediaGapHealth {
    /// Gaps (all channels).
    pub gaps: AtomicU64,
    /// Milliseconds of silence in them not from the sender.
    pub gap_ms: AtomicU64,
    /// Milliseconds of received audio replaced by backward re-anchors (at most).
    pub dropped_ms: AtomicU64,
}

/// The daemon's media gap counters (every sink reports here).
pub static MEDIA_GAPS: MediaGapHealth = MediaGapHealth {
    gaps: AtomicU64::new(0),
    gap_ms: AtomicU64::new(0),
    dropped_ms: AtomicU64::new(0),
};

/// Fill the media gap counters into a binding snapshot (status document, control socket).
pub fn add_media_gaps(s: &mut crate::binding::BindingSnapshot) {
    s.media_gaps = MEDIA_GAPS.gaps.load(Ordering::Relaxed);
    s.media_gap_ms = MEDIA_GAPS.gap_ms.load(Ordering::Relaxed);
    s.media_dropped_ms = MEDIA_GAPS.dropped_ms.load(Ordering::Relaxed);
}

/// Totals of a recording's gaps: (gaps, silence ms, dropped ms).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct GapTotals(u64, u64, u64);

impl GapTotals {
    /// Add `self - before` (what was not counted yet) to [`MEDIA_GAPS`].
    fn publish_beyond(self, before: GapTotals) {
        MEDIA_GAPS
            .gaps
            .fetch_add(self.0.saturating_sub(before.0), Ordering::Relaxed);
        MEDIA_GAPS
            .gap_ms
            .fetch_add(self.1.saturating_sub(before.1), Ordering::Relaxed);
        MEDIA_GAPS
            .dropped_ms
            .fetch_add(self.2.saturating_sub(before.2), Ordering::Relaxed);
    }
}

/// An open recording (see the module docs).
pub struct RecordingSink {
    catalog: CatalogHandle,
    vault: Arc<dyn KeyWrap>,
    file: File,
    /// The container's absolute path (manifest files sit beside it).
    path: PathBuf,
    rec: Recording,
    /// Events output so far (written to the catalogue at close).
    events: Vec<EventRow>,
    /// File length after the last output written whole: a chunk boundary.
    durable_len: u64,
    /// Outputs not yet written (only while stalled), in order, byte for byte as sealed.
    pending: VecDeque<Vec<u8>>,
    /// Cutting the file back failed: the tail may be torn (retried before every write).
    cut_pending: bool,
    /// When the kept outputs were last retried (at most every [`RETRY_EVERY`]).
    last_retry: Option<Mono>,
    sync: bool,
    sample_rate: u32,
    /// Gaps already counted in [`MEDIA_GAPS`] from this recording's events.
    gaps_published: GapTotals,
    /// Clock state at the start, step detection and the bound (issue #19).
    clock: ClockWatch,
}

/// The clock facts a recording collects (docs/assurance.md, "Trusted time").
struct ClockWatch {
    start: crate::assurance::clock::ClockReading,
    /// Whether to look for steps: not where the recording's `Mono` is packet time
    /// (capture, import).
    watch_steps: bool,
    /// Started at the first tick (both clocks read together on the call's own timeline).
    steps: Option<crate::assurance::clock::StepDetector>,
    step_threshold_ms: u32,
    last_look: Mono,
    found: Vec<crate::assurance::clock::ClockStep>,
    max_error_ms: u32,
}

/// How often a recording compares the wall clock with its monotonic timeline.
const CLOCK_LOOK_EVERY: Duration = Duration::from_millis(1000);

/// How often a stalled recording retries its write: the capture engine ticks per packet,
/// and a full disk must not cost a failed write for every one.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// How a recording ended, for [`RecordingSink::close`].
pub struct CloseInfo<'a> {
    /// End of the recording (origin: its start).
    pub end: Mono,
    /// Why it ended (logged).
    pub reason: &'a str,
    /// End time, unix milliseconds.
    pub ended_at_ms: i64,
}

fn event_row(e: Event) -> EventRow {
    EventRow {
        at_ms: e.at_ms,
        kind: e.kind.as_str().into(),
        channel: e.channel,
        detail_json: Some(e.detail),
    }
}

impl RecordingSink {
    /// Create the encrypted file with a fresh id and data key. The caller inserts the
    /// catalogue row (with [`id`](Self::id) and the returned path, relative to the data
    /// directory) before audio is written.
    ///
    /// With `sync` the header and directory entry are fsynced now and the file again at
    /// [`close`](Self::close) (SIPREC call tasks). Without it (the capture engine, whose
    /// single thread must never wait for the disk) durability comes from the daemon's
    /// periodic `syncfs`, or from one `syncfs` at the end of an import.
    ///
    /// `sample_rate` (8000 or 16000, see [`recording_rate`]) is fixed for the
    /// recording's life: it goes into the container header and every stream is decoded
    /// and resampled to it. `source` selects the source's rules: SIPREC pauses while
    /// every stream is inactive (RFC 7866 §6.1.3); a mirrored call without decodable
    /// audio ends `codec_unsupported`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        cfg: &Config,
        vault: Arc<dyn KeyWrap>,
        catalog: CatalogHandle,
        channels: usize,
        sample_rate: u32,
        created: chrono::DateTime<chrono::Utc>,
        sync: bool,
        format: StorageFormat,
        source: Source,
    ) -> Result<(Self, String), SinkError> {
        let id = uuid::Uuid::new_v4().to_string();
        let rel: PathBuf = PathBuf::from("recordings")
            .join(created.format("%Y/%m/%d").to_string())
            .join(format!("{id}.brec"));
        let abs = cfg.storage.data_dir.join(&rel);
        let mut rng = rand::rngs::OsRng;
        let dk = DataKey::generate(&mut rng);
        let wrapped = vault
            .wrap(&dk)
            .map_err(|e| SinkError(format!("wrapping data key: {e}")))?;
        let compliance = vault
            .compliance_wrap(&dk)
            .map_err(|e| SinkError(format!("wrapping data key to the compliance key: {e}")))?;
        let mut prefix = [0u8; 7];
        rng.fill_bytes(&mut prefix);
        let rcfg = RecordingConfig {
            recording_id: id,
            created: UnixMs::from_datetime(&created),
            sample_rate,
            channels,
            opus: (format == StorageFormat::Opus).then(|| cfg.storage.opus.settings()),
            playout_delay: Duration::from_millis(u64::from(cfg.media.playout_delay_ms)),
            flush_every: Duration::from_millis(u64::from(cfg.storage.flush_interval_ms)),
            pause_when_all_held: source == Source::Siprec,
            unsupported_if_no_audio: source == Source::Mirror,
            dtmf_digits: cfg.privacy.dtmf_digits,
            // Mirrored flows are bound by the capture tracker (5-tuple from SDP).
            source_policy: if source == Source::Siprec {
                cfg.media.source_policy()
            } else {
                crate::media::SourcePolicy::Any
            },
            foreign_alarm_packets: u64::from(cfg.media.foreign_alarm_packets),
        };
        let keys = RecordingKeys {
            data_key: dk,
            wrapped_key: wrapped,
            kek_id: vault.kek_id(),
            compliance,
            nonce_prefix: prefix,
        };
        let (mut rec, header) =
            Recording::new(rcfg, keys).map_err(|e| SinkError(format!("container: {e}")))?;
        rec.set_assurance_policy(cfg.assurance.policy());
        let probe = crate::clock::probe();
        let start = probe.reading();
        let clock = ClockWatch {
            start,
            // SIPREC calls run on the monotonic clock; capture runs on packet time.
            watch_steps: source == Source::Siprec,
            steps: None,
            step_threshold_ms: cfg.time.step_threshold_ms,
            last_look: Mono::ZERO,
            found: Vec::new(),
            max_error_ms: cfg.time.max_error_ms,
        };
        let file = create_file(&abs, &header, sync)
            .map_err(|e| SinkError(format!("creating {}: {e}", abs.display())))?;
        Ok((
            RecordingSink {
                catalog,
                vault,
                file,
                path: abs,
                rec,
                events: Vec::new(),
                durable_len: header.len() as u64,
                pending: VecDeque::new(),
                cut_pending: false,
                last_retry: None,
                sync,
                sample_rate,
                gaps_published: GapTotals::default(),
                clock,
            },
            rel.to_string_lossy().into_owned(),
        ))
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        self.rec.id()
    }

    /// Codec names seen so far, sorted, joined with `+`.
    pub fn codec_string(&self) -> String {
        self.rec.codec_string()
    }

    /// What the channels carry after a negotiation (see [`Recording::set_media`]):
    /// `now` = `None` for the initial configuration (no events).
    pub fn set_media(&mut self, now: Option<Mono>, channels: Vec<Option<ChannelMedia>>) {
        self.rec.set_media(now, channels);
        self.drain(now.unwrap_or(Mono::ZERO));
    }

    /// Keep an event for the catalogue (written at close).
    pub fn add_event(&mut self, ev: EventRow) {
        self.events.push(ev);
    }

    /// Feed one RTP/RTCP/SRTP datagram of `ch` from `from`, at `at` (see
    /// [`Recording::handle_rtp`]: the source check comes first).
    pub fn push_rtp(
        &mut self,
        ch: usize,
        at: Mono,
        from: SocketAddr,
        pkt: &[u8],
    ) -> RtpDisposition {
        // Its event (at the threshold) is drained with the next tick.
        self.rec.handle_rtp(at, ch, from, pkt)
    }

    /// Count a datagram for `ch` from `from` that the capture tracker found foreign.
    pub fn note_foreign(&mut self, ch: usize, at: Mono, from: SocketAddr) -> RtpDisposition {
        self.rec.note_foreign(at, ch, from)
    }

    /// Whether any source has the recording paused.
    pub fn is_paused(&self) -> bool {
        self.rec.is_paused()
    }

    /// The session is not confirmed yet (see [`Recording::await_confirmation`]).
    pub fn await_confirmation(&mut self) {
        self.rec.await_confirmation();
    }

    /// The session was confirmed (see [`Recording::confirm`]).
    pub fn confirm(&mut self) {
        self.rec.confirm();
    }

    /// Pause (or resume) storing audio on behalf of `source` (`siprec`,
    /// `control:<actor>`), at `at`.
    pub fn set_paused(&mut self, paused: bool, source: &str, at: Mono) {
        self.rec.set_paused(at, paused, source);
        self.drain(at);
    }

    /// Let the recording advance to `now` and write what it sealed (retrying what a
    /// full disk kept back first).
    pub fn tick(&mut self, now: Mono) {
        let due = self
            .last_retry
            .map_or(true, |t| now.saturating_duration_since(t) >= RETRY_EVERY);
        if !self.pending.is_empty() && due {
            self.last_retry = Some(now);
            self.retry(now);
        }
        self.rec.handle_timeout(now);
        self.drain(now);
        self.look_at_clock(now);
    }

    /// Compare the wall clock with the recording's monotonic timeline (at most every
    /// [`CLOCK_LOOK_EVERY`]): a step becomes a `clock_step` event; the timeline itself
    /// never jumps.
    fn look_at_clock(&mut self, now: Mono) {
        if !self.clock.watch_steps {
            return;
        }
        let Some(det) = self.clock.steps.as_mut() else {
            let t = self.clock.step_threshold_ms;
            self.clock.steps = Some(crate::assurance::clock::StepDetector::new(
                now,
                crate::clock::probe().wall(),
                t,
            ));
            self.clock.last_look = now;
            return;
        };
        if now.saturating_duration_since(self.clock.last_look) < CLOCK_LOOK_EVERY {
            return;
        }
        self.clock.last_look = now;
        if let Some(step) = det.observe(now, crate::clock::probe().wall()) {
            tracing::warn!(recording = %self.rec.id(), step_ms = step.step_ms, at_ms = step.at_ms, "the wall clock was stepped during the recording");
            self.events.push(EventRow {
                at_ms: step.at_ms,
                kind: "clock_step".into(),
                channel: None,
                detail_json: Some(serde_json::json!({
                    "step_ms": step.step_ms,
                    "expected_wall_ms": step.expected_wall_ms,
                    "wall_ms": step.wall_ms,
                })),
            });
            self.clock.found.push(step);
        }
    }

    /// Whether writes are failing (the recording is in a storage stall).
    pub fn is_stalled(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Carry out the core's outputs; returns the summary once it has finished.
    fn drain(&mut self, now: Mono) -> Option<Finished> {
        let mut finished = None;
        while let Some(o) = self.rec.poll_output() {
            match o {
                Output::Chunk(bytes) => self.append(now, bytes),
                Output::Event(e) => {
                    if e.kind == crate::recording::session::EventKind::MediaGap {
                        self.publish_gap(&e.detail);
                    }
                    self.events.push(event_row(e));
                }
                Output::Finished(f) => finished = Some(*f),
            }
        }
        finished
    }

    /// Count a `media_gap` event in [`MEDIA_GAPS`] as it happens.
    fn publish_gap(&mut self, detail: &serde_json::Value) {
        let ms = detail.get("gap_ms").and_then(|v| v.as_u64()).unwrap_or(0);
        let cause = detail.get("cause").and_then(|v| v.as_str());
        let rewind = matches!(cause, Some("rewind" | "truncated"));
        let add = if rewind {
            GapTotals(1, 0, ms)
        } else {
            GapTotals(1, ms, 0)
        };
        add.publish_beyond(GapTotals::default());
        let p = &mut self.gaps_published;
        *p = GapTotals(p.0 + add.0, p.1 + add.1, p.2 + add.2);
    }

    fn append(&mut self, now: Mono, bytes: Vec<u8>) {
        if !self.pending.is_empty() {
            self.pending.push_back(bytes);
            return;
        }
        if let Err(e) = self.write_whole(&bytes) {
            tracing::error!(recording = %self.rec.id(), error = %e, kept_bytes = bytes.len(), "writing recording failed: cut back to the last chunk, recording stalls until the disk takes writes");
            STORAGE_HEALTH.stalled.fetch_add(1, Ordering::Relaxed);
            self.pending.push_back(bytes);
            self.rec.storage_failed(now);
        }
    }

    /// Append `bytes` whole, or cut the file back to `durable_len` and fail.
    fn write_whole(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.cut_pending {
            self.file.set_len(self.durable_len)?;
            self.cut_pending = false;
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.durable_len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                STORAGE_HEALTH
                    .write_failures
                    .fetch_add(1, Ordering::Relaxed);
                // O_APPEND: later writes go to the (cut) end of file.
                if let Err(e2) = self.file.set_len(self.durable_len) {
                    tracing::error!(recording = %self.rec.id(), error = %e2, "cutting the recording back to its last chunk failed; retried before the next write");
                    self.cut_pending = true;
                }
                Err(e)
            }
        }
    }

    /// Write the outputs a stall kept back, in order; when all are written the core
    /// fills the gap and recording goes on.
    fn retry(&mut self, now: Mono) {
        if self.pending.is_empty() {
            return;
        }
        while let Some(b) = self.pending.pop_front() {
            if self.write_whole(&b).is_err() {
                self.pending.push_front(b);
                return;
            }
        }
        STORAGE_HEALTH.stalled.fetch_sub(1, Ordering::Relaxed);
        STORAGE_HEALTH.gaps.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(recording = %self.rec.id(), "recording writes again");
        self.rec.storage_resumed(now);
        self.drain(now);
    }

    /// Flush the rest, seal and fsync the file, send events and the `Finish` row.
    /// Returns the final state.
    pub fn close(mut self, info: CloseInfo<'_>) -> RecordingState {
        self.retry(info.end);
        self.rec.finish(info.end);
        let Some(fin) = self.drain(info.end) else {
            // finish() always ends with Finished; nothing to report otherwise.
            tracing::error!(recording = %self.rec.id(), "recording core did not finish");
            return RecordingState::Damaged;
        };
        // One last try for what a full disk kept back (the final chunk among it).
        self.retry(info.end);
        let id = self.rec.id().to_string();
        if !self.pending.is_empty() {
            tracing::error!(recording = %id, kept = self.pending.len(), "the disk stayed full: the recording ends at its last written chunk");
            STORAGE_HEALTH.stalled.fetch_sub(1, Ordering::Relaxed);
        }
        let mut stored = if self.cut_pending {
            Stored::Unknown
        } else if self.pending.is_empty() {
            Stored::All
        } else {
            Stored::Prefix
        };
        if self.sync {
            if let Err(e) = self.file.sync_all() {
                tracing::error!(recording = %id, error = %e, "fsync of recording failed");
                stored = Stored::Unknown;
            }
        }
        let mut state = match fin.outcome(stored) {
            Outcome::Complete => RecordingState::Complete,
            Outcome::Interrupted => RecordingState::Interrupted,
            Outcome::Damaged => RecordingState::Damaged,
            Outcome::CodecUnsupported => RecordingState::CodecUnsupported,
        };
        // Not everything stored: the file itself says what it holds (as at start-up
        // recovery), so the row and the manifest describe the bytes on disk.
        let mut on_disk = None;
        if stored != Stored::All {
            match super::store::scan_file(&self.path, self.vault.as_ref()) {
                Ok(rep) => {
                    state = match rep.state {
                        crate::recording::container::ScanState::Complete => {
                            RecordingState::Complete
                        }
                        crate::recording::container::ScanState::Interrupted { .. } => {
                            RecordingState::Interrupted
                        }
                        crate::recording::container::ScanState::Damaged { .. } => {
                            RecordingState::Damaged
                        }
                    };
                    on_disk = Some(rep);
                }
                Err(e) => {
                    tracing::error!(recording = %id, error = %format!("{e:#}"), "recording unreadable after failed writes");
                    state = RecordingState::Damaged;
                }
            }
        }
        if !self.events.is_empty() {
            self.catalog.send(CatalogCmd::Events(
                id.clone(),
                std::mem::take(&mut self.events),
            ));
        }
        // Gaps past the event cap (and any rounding) are in the statistics only.
        let totals = fin.stats.iter().fold(GapTotals::default(), |t, s| {
            GapTotals(
                t.0 + s.media_gaps,
                t.1 + s.media_gap_ms,
                t.2 + s.media_dropped_ms,
            )
        });
        totals.publish_beyond(self.gaps_published);
        if totals.0 > 0 {
            tracing::warn!(recording = %id, gaps = totals.0, gap_ms = totals.1, dropped_ms = totals.2, "recording has audio gaps (media_gap events)");
        }
        let c = &fin.container;
        let (duration_ms, file_sha256, file_bytes) = match &on_disk {
            Some(rep) => (
                rep.frames * 1000 / u64::from(self.sample_rate.max(1)),
                rep.sha256_hex.clone(),
                Some(rep.bytes),
            ),
            None => (
                fin.duration_ms,
                Some(hex::encode(c.sha256)),
                Some(c.total_bytes),
            ),
        };
        let finish = Finish {
            ended_at_ms: info.ended_at_ms,
            duration_ms,
            state,
            file_sha256,
            file_bytes,
            codec: Some(fin.codec.clone()),
            stats_json: Some(crate::recording::ChannelStats::to_json(&fin.stats)),
        };
        tracing::info!(recording = %id, duration_ms, reason = info.reason, state = state.as_str(), "recording closed");
        let assurance = self.assurance_doc(&fin, state, duration_ms);
        // What a stall left on disk is signed as read back from the file.
        let inputs = if on_disk.is_none() {
            (state == RecordingState::Complete).then(|| super::evidence::ManifestInputs {
                content_sha256: hex::encode(c.sha256),
                content_bytes: c.total_bytes - c.slot_bytes,
                pcm_sha256: hex::encode(c.audio_sha256),
                audio_encoding: c.sample_format,
                frames: c.frames,
            })
        } else if state == RecordingState::Damaged {
            None
        } else {
            super::evidence::inputs_from_file(&self.path, self.vault.as_ref())
                .map_err(|e| tracing::error!(recording = %id, error = %format!("{e:#}"), "reading the recording back for its manifest failed"))
                .ok()
        };
        // A crash between the row and the manifest leaves this marker: start-up signs then.
        if inputs.is_some() {
            let marker = super::evidence::pending_marker(&self.path);
            if let Err(e) = crate::vault::custody::write_atomic(&marker, b"") {
                tracing::error!(recording = %id, error = %e, "cannot write the manifest-pending marker");
            }
        }
        self.catalog
            .send(CatalogCmd::Finish(id.clone(), finish, None));
        let (verdict, doc) = assurance;
        self.catalog
            .send(CatalogCmd::Assurance(id.clone(), verdict, doc));
        if let Some(inputs) = inputs {
            self.catalog.send(CatalogCmd::Seal(id, inputs));
        }
        state
    }
}

impl RecordingSink {
    /// The verdict and the assurance document (`recordings.assurance_json`, the
    /// manifest's `assurance`) of the closed recording; the box-wide counters and alarms
    /// learn of it.
    fn assurance_doc(
        &mut self,
        fin: &Finished,
        state: RecordingState,
        duration_ms: u64,
    ) -> (crate::assurance::Verdict, serde_json::Value) {
        use crate::assurance::FileOutcome;
        let file = match state {
            RecordingState::Complete => FileOutcome::Complete,
            RecordingState::CodecUnsupported => FileOutcome::CodecUnsupported,
            _ => FileOutcome::Cut,
        };
        let j = crate::recording::verdict::judge(
            &fin.policy,
            &fin.stats,
            &fin.quality,
            duration_ms,
            file,
        );
        let end = crate::clock::probe().reading();
        let clock = crate::assurance::clock::RecordingClock::judge(
            self.clock.start,
            Some(end),
            self.clock.max_error_ms,
            std::mem::take(&mut self.clock.found),
        );
        super::assurance::note(j.verdict);
        super::assurance::note_clock(end.problem(self.clock.max_error_ms));
        if let Some(why) = &clock.flagged {
            tracing::warn!(recording = %self.rec.id(), reason = %why, "recording flagged: its time cannot be vouched for");
            super::assurance::note_flagged(clock.steps.len());
        }
        tracing::info!(recording = %self.rec.id(), verdict = j.verdict.as_str(), reason = %j.reason, "assurance verdict");
        let doc = serde_json::json!({
            "verdict": j.verdict,
            "reason": j.reason,
            "silent_channels": j.silent_channels,
            "channels": fin.quality,
            "clock": clock,
        });
        (j.verdict, doc)
    }
}

fn create_file(path: &std::path::Path, header: &[u8], sync: bool) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    f.write_all(header)?;
    if sync {
        f.sync_all()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(f)
}
