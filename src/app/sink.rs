//! The recording shell shared by SIPREC calls and passive capture: the file and the
//! catalogue around one call's [`Recording`] core (`branchrec_core::recording::session`),
//! which decides everything about what is stored — timeline, SRTP, codecs, holds, the
//! pause gate, events, statistics. This shell appends the chunks it outputs to the
//! encrypted file, syncs it, and sends the events and the `Finish` row to the catalogue.
//!
//! It is driven with [`Mono`] times whose origin is the recording's start, so the SIPREC
//! call task feeds it its monotonic clock and the capture engine packet capture time.
//! Nothing on the per-packet path allocates; file writes happen once per sealed chunk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore;

use crate::app::store::{CatalogCmd, CatalogHandle};
use crate::catalog::{EventRow, Finish, RecordingState, Source};
use crate::config::Config;
use crate::media::PushOutcome;
use crate::recording::session::{Event, Finished, Outcome, Output};
use crate::recording::{ChannelMedia, Recording, RecordingConfig, RecordingKeys, StorageFormat};
use crate::vault::{DataKey, KeyWrap};
use branchrec_core::time::{Mono, UnixMs};

pub use crate::media::codec::{recording_rate, SAMPLE_RATE, WIDEBAND_SAMPLE_RATE};

/// Why a recording could not be created.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct SinkError(pub String);

/// An open recording (see the module docs).
pub struct RecordingSink {
    catalog: CatalogHandle,
    file: File,
    /// The container's absolute path (manifest files sit beside it).
    path: PathBuf,
    rec: Recording,
    /// Events output so far (written to the catalogue at close).
    events: Vec<EventRow>,
    write_failed: bool,
    sync: bool,
}

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
        vault: &dyn KeyWrap,
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
        };
        let keys = RecordingKeys {
            data_key: dk,
            wrapped_key: wrapped,
            kek_id: vault.kek_id(),
            nonce_prefix: prefix,
        };
        let (rec, header) =
            Recording::new(rcfg, keys).map_err(|e| SinkError(format!("container: {e}")))?;
        let file = create_file(&abs, &header, sync)
            .map_err(|e| SinkError(format!("creating {}: {e}", abs.display())))?;
        Ok((
            RecordingSink {
                catalog,
                file,
                path: abs,
                rec,
                events: Vec::new(),
                write_failed: false,
                sync,
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
        self.drain();
    }

    /// Keep an event for the catalogue (written at close).
    pub fn add_event(&mut self, ev: EventRow) {
        self.events.push(ev);
    }

    /// Feed one RTP/RTCP/SRTP datagram of `ch`, at `at` (see
    /// [`Recording::handle_rtp`]).
    pub fn push_rtp(&mut self, ch: usize, at: Mono, pkt: &[u8]) -> Option<PushOutcome> {
        self.rec.handle_rtp(at, ch, pkt)
    }

    /// Whether any source has the recording paused.
    pub fn is_paused(&self) -> bool {
        self.rec.is_paused()
    }

    /// Pause (or resume) storing audio on behalf of `source` (`siprec`,
    /// `control:<actor>`), at `at`.
    pub fn set_paused(&mut self, paused: bool, source: &str, at: Mono) {
        self.rec.set_paused(at, paused, source);
        self.drain();
    }

    /// Let the recording advance to `now` and write what it sealed.
    pub fn tick(&mut self, now: Mono) {
        self.rec.handle_timeout(now);
        self.drain();
    }

    /// Carry out the core's outputs; returns the summary once it has finished.
    fn drain(&mut self) -> Option<Finished> {
        let mut finished = None;
        while let Some(o) = self.rec.poll_output() {
            match o {
                Output::Chunk(bytes) => self.append(&bytes),
                Output::Event(e) => self.events.push(event_row(e)),
                Output::Finished(f) => finished = Some(*f),
            }
        }
        finished
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Err(e) = self.file.write_all(bytes) {
            if !self.write_failed {
                tracing::error!(recording = %self.rec.id(), error = %e, "writing recording failed");
            }
            self.write_failed = true;
        }
    }

    /// Flush the rest, seal and fsync the file, send events and the `Finish` row.
    /// Returns the final state.
    pub fn close(mut self, info: CloseInfo<'_>) -> RecordingState {
        self.rec.finish(info.end);
        let Some(fin) = self.drain() else {
            // finish() always ends with Finished; nothing to report otherwise.
            tracing::error!(recording = %self.rec.id(), "recording core did not finish");
            return RecordingState::Damaged;
        };
        let id = self.rec.id().to_string();
        let synced = if self.sync {
            self.file.sync_all()
        } else {
            Ok(())
        };
        let stored = match synced {
            Ok(()) => !self.write_failed,
            Err(e) => {
                tracing::error!(recording = %id, error = %e, "fsync of recording failed");
                false
            }
        };
        let state = match fin.outcome(stored) {
            Outcome::Complete => RecordingState::Complete,
            Outcome::Damaged => RecordingState::Damaged,
            Outcome::CodecUnsupported => RecordingState::CodecUnsupported,
        };
        if !self.events.is_empty() {
            self.catalog.send(CatalogCmd::Events(
                id.clone(),
                std::mem::take(&mut self.events),
            ));
        }
        let duration_ms = fin.duration_ms;
        let c = &fin.container;
        let finish = Finish {
            ended_at_ms: info.ended_at_ms,
            duration_ms,
            state,
            file_sha256: Some(hex::encode(c.sha256)),
            file_bytes: Some(c.total_bytes),
            codec: Some(fin.codec.clone()),
            stats_json: Some(crate::recording::ChannelStats::to_json(&fin.stats)),
        };
        tracing::info!(recording = %id, duration_ms, reason = info.reason, state = state.as_str(), "recording closed");
        // A crash between the row and the manifest leaves this marker: start-up signs then.
        if state == RecordingState::Complete {
            let marker = super::evidence::pending_marker(&self.path);
            if let Err(e) = crate::vault::custody::write_atomic(&marker, b"") {
                tracing::error!(recording = %id, error = %e, "cannot write the manifest-pending marker");
            }
        }
        self.catalog
            .send(CatalogCmd::Finish(id.clone(), finish, None));
        if state == RecordingState::Complete {
            self.catalog.send(CatalogCmd::Seal(
                id,
                super::evidence::ManifestInputs {
                    content_sha256: hex::encode(c.sha256),
                    content_bytes: c.total_bytes
                        - (crate::recording::container::KEY_SLOT_LEN
                            * crate::recording::container::KEY_SLOT_COUNT)
                            as u64,
                    pcm_sha256: hex::encode(c.audio_sha256),
                    audio_encoding: c.sample_format,
                    frames: c.frames,
                },
            ));
        }
        state
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
