//! The recording sink shared by SIPREC calls and passive capture: one call's
//! [`CallTimeline`] → [`ContainerWriter`] → encrypted file → catalogue `Finish` row.
//!
//! It is driven with time offsets from the call start (`Duration`), so the SIPREC call
//! task feeds it wall-clock time and the capture engine feeds it packet capture time.
//! Nothing on the per-packet path allocates; file writes happen once per sealed chunk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore;

use crate::app::store::{CatalogCmd, CatalogHandle};
use crate::catalog::{EventRow, Finish, RecordingState};
use crate::config::Config;
use crate::media::{AudioBlock, CallTimeline, PushOutcome, StreamConfig, TimelineConfig};
use crate::recording::{ContainerWriter, HeaderParams, StorageFormat};
use crate::vault::{DataKey, KeyWrap};

pub use crate::media::codec::{recording_rate, SAMPLE_RATE, WIDEBAND_SAMPLE_RATE};

/// Why a recording could not be created.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct SinkError(pub String);

/// An open recording (see the module docs).
pub struct RecordingSink {
    catalog: CatalogHandle,
    id: String,
    file: File,
    /// The container's absolute path (manifest files sit beside it).
    path: PathBuf,
    /// Pause requests in force (by source); audio is dropped while any is.
    paused_by: Vec<String>,
    /// Packets dropped while paused.
    dropped_paused: u64,
    writer: ContainerWriter,
    timeline: CallTimeline,
    codecs: Vec<String>,
    holds: Vec<bool>,
    events: Vec<EventRow>,
    write_failed: bool,
    flush_every: Duration,
    last_flush: Duration,
    scratch: Vec<i16>,
    sync: bool,
    /// Extra per-channel counters merged into the stats at close (e.g. `srtp_*`).
    extra_stats: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// How a recording ended, for [`RecordingSink::close`].
pub struct CloseInfo<'a> {
    /// End of the recording as an offset from its start.
    pub end: Duration,
    /// Why it ended (logged).
    pub reason: &'a str,
    /// End time, unix milliseconds.
    pub ended_at_ms: i64,
    /// If no channel received any decodable audio but some channel received packets of a
    /// payload type that cannot be decoded, mark the recording `codec_unsupported`.
    pub unsupported_if_no_audio: bool,
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
    /// and resampled to it.
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
        let params = HeaderParams {
            recording_id: id.clone(),
            created_unix_ms: created.timestamp_millis().max(0) as u64,
            sample_rate,
            channels: channels as u16,
            chunk_target_frames: (u64::from(sample_rate) * u64::from(cfg.storage.flush_interval_ms)
                / 1000) as u32,
            kek_id: vault.kek_id(),
            extra_json: String::new(),
        };
        let opus = (format == StorageFormat::Opus).then(|| cfg.storage.opus.settings());
        let (writer, header) = ContainerWriter::with_format(params, opus, dk, wrapped, prefix)
            .map_err(|e| SinkError(format!("container: {e}")))?;
        let file = create_file(&abs, &header, sync)
            .map_err(|e| SinkError(format!("creating {}: {e}", abs.display())))?;
        let timeline = CallTimeline::new(TimelineConfig {
            channels,
            sample_rate,
            playout_delay: Duration::from_millis(u64::from(cfg.media.playout_delay_ms)),
        });
        Ok((
            RecordingSink {
                catalog,
                id,
                file,
                path: abs,
                paused_by: Vec::new(),
                dropped_paused: 0,
                writer,
                timeline,
                codecs: Vec::new(),
                holds: vec![false; channels],
                events: Vec::new(),
                write_failed: false,
                flush_every: Duration::from_millis(u64::from(cfg.storage.flush_interval_ms)),
                last_flush: Duration::ZERO,
                scratch: Vec::new(),
                sync,
                extra_stats: vec![serde_json::Map::new(); channels],
            },
            rel.to_string_lossy().into_owned(),
        ))
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Codec names seen so far, sorted, joined with `+`.
    pub fn codec_string(&self) -> String {
        self.codecs.join("+")
    }

    /// Set what a channel may carry. `at_ms` = `None` for the initial configuration (no
    /// event); otherwise a change of hold state is recorded as a `hold`/`resume` event
    /// with `detail`.
    pub fn configure_channel(
        &mut self,
        ch: usize,
        cfg: StreamConfig,
        codec_names: Vec<String>,
        hold: bool,
        at_ms: Option<u64>,
        detail: serde_json::Value,
    ) {
        self.timeline.set_stream_config(ch, cfg);
        for c in codec_names {
            if !self.codecs.contains(&c) {
                self.codecs.push(c);
            }
        }
        self.codecs.sort();
        if let Some(h) = self.holds.get_mut(ch) {
            if let Some(at_ms) = at_ms {
                if *h != hold {
                    self.events.push(EventRow {
                        at_ms,
                        kind: if hold { "hold" } else { "resume" }.into(),
                        channel: Some(ch as u32),
                        detail_json: Some(detail),
                    });
                }
            }
            *h = hold;
        }
    }

    /// Put a channel on hold (or take it off) without changing its formats.
    pub fn set_hold(&mut self, ch: usize, hold: bool, at_ms: u64) {
        if let Some(h) = self.holds.get_mut(ch) {
            if *h != hold {
                *h = hold;
                self.events.push(EventRow {
                    at_ms,
                    kind: if hold { "hold" } else { "resume" }.into(),
                    channel: Some(ch as u32),
                    detail_json: Some(serde_json::json!({ "direction": null })),
                });
            }
        }
    }

    /// Add counters to a channel's stats (merged into `stats_json` at close).
    pub fn add_channel_stats(&mut self, ch: usize, m: serde_json::Map<String, serde_json::Value>) {
        if let Some(e) = self.extra_stats.get_mut(ch) {
            e.extend(m);
        }
    }

    /// Keep an event for the catalogue (written at close).
    pub fn add_event(&mut self, ev: EventRow) {
        self.events.push(ev);
    }

    /// Feed one RTP/RTCP datagram of `ch`, `at` after the recording start. While paused the
    /// packet never reaches the timeline: no paused audio is ever stored.
    pub fn push_rtp(&mut self, ch: usize, at: Duration, pkt: &[u8]) -> Option<PushOutcome> {
        if !self.paused_by.is_empty() {
            self.dropped_paused += 1;
            return None;
        }
        Some(self.timeline.push_rtp(ch, at, pkt))
    }

    /// Whether any channel is on hold, per channel.
    pub fn holds(&self) -> &[bool] {
        &self.holds
    }

    /// Whether any source has the recording paused.
    pub fn is_paused(&self) -> bool {
        !self.paused_by.is_empty()
    }

    /// Pause (or resume) storing audio on behalf of `source` (`siprec` when every stream
    /// is inactive, `control:<actor>` from the CLI). Paused time becomes silence on the
    /// timeline; the interval is kept as `pause`/`resume` events.
    pub fn set_paused(&mut self, paused: bool, source: &str, at_ms: u64) {
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
        let now = !self.paused_by.is_empty();
        if was != now {
            tracing::info!(recording = %self.id, paused = now, source, "recording paused/resumed");
            self.events.push(EventRow {
                at_ms,
                kind: if now { "pause" } else { "resume" }.into(),
                channel: None,
                detail_json: Some(serde_json::json!({ "source": source })),
            });
        }
    }

    /// Let the recording advance to `now`: finalise audio past the playout delay, write
    /// sealed chunks, and flush a partial chunk every `flush_interval_ms`.
    pub fn tick(&mut self, now: Duration) {
        let mut samples = std::mem::take(&mut self.scratch);
        while let Some(start_frame) = self.timeline.poll_audio_into(now, &mut samples) {
            let block = AudioBlock {
                start_frame,
                samples,
            };
            self.push_block(&block);
            samples = block.samples;
        }
        self.scratch = samples;
        self.write_ready_chunks();
        if now.saturating_sub(self.last_flush) >= self.flush_every {
            self.last_flush = now;
            if let Some(chunk) = self.writer.flush() {
                self.append(&chunk);
            }
        }
    }

    fn push_block(&mut self, block: &AudioBlock) {
        if let Err(e) = self.writer.push_block(block) {
            // The timeline only moves forward, so this is a bug; keep recording what we can.
            tracing::error!(recording = %self.id, error = %e, "audio block refused by the container");
        }
    }

    fn write_ready_chunks(&mut self) {
        while let Some(chunk) = self.writer.poll_chunk() {
            self.append(&chunk);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Err(e) = self.file.write_all(bytes) {
            if !self.write_failed {
                tracing::error!(recording = %self.id, error = %e, "writing recording failed");
            }
            self.write_failed = true;
        }
    }

    /// Flush the rest, seal and fsync the file, send events and the `Finish` row.
    /// Returns the final state.
    pub fn close(mut self, info: CloseInfo<'_>) -> RecordingState {
        let end = info.end;
        if let Some(block) = self.timeline.finish(end) {
            self.push_block(&block);
        }
        self.write_ready_chunks();
        if let Some(chunk) = self.writer.flush() {
            self.append(&chunk);
        }
        let fin = self.writer.finish();
        if let Err(e) = self.file.write_all(&fin.bytes) {
            tracing::error!(recording = %self.id, error = %e, "writing final chunk failed");
            self.write_failed = true;
        }
        let synced = if self.sync {
            self.file.sync_all()
        } else {
            Ok(())
        };
        let mut state = match synced {
            Ok(()) if !self.write_failed => RecordingState::Complete,
            Ok(()) => RecordingState::Damaged,
            Err(e) => {
                tracing::error!(recording = %self.id, error = %e, "fsync of recording failed");
                RecordingState::Damaged
            }
        };
        let channels = self.holds.len();
        let mut stats = Vec::new();
        let (mut decoded, mut unsupported) = (0u64, 0u64);
        for ch in 0..channels {
            let s = self.timeline.stats(ch);
            unsupported += s.unsupported_payload;
            decoded += s.received.saturating_sub(s.unsupported_payload);
            let mut st = serde_json::json!({
                "channel": ch,
                "received": s.received,
                "lost": s.lost,
                "late": s.late,
                "duplicates": s.duplicates,
                "ssrc_changes": s.ssrc_changes,
                "unsupported_payload": s.unsupported_payload,
                "fec_recovered": s.fec_recovered,
                "concealed_ms": s.concealed_ms,
                "decode_errors": s.decode_errors,
                "codec_changes": s.codec_changes,
            });
            if let (Some(o), Some(extra)) = (st.as_object_mut(), self.extra_stats.get_mut(ch)) {
                o.extend(std::mem::take(extra));
            }
            stats.push(st);
        }
        if info.unsupported_if_no_audio
            && state == RecordingState::Complete
            && decoded == 0
            && unsupported > 0
        {
            state = RecordingState::CodecUnsupported;
        }
        if !self.paused_by.is_empty() {
            self.events.push(EventRow {
                at_ms: end.as_millis() as u64,
                kind: "resume".into(),
                channel: None,
                detail_json: Some(serde_json::json!({ "source": "end of call" })),
            });
        }
        if self.dropped_paused > 0 {
            stats.push(serde_json::json!({ "dropped_while_paused": self.dropped_paused }));
        }
        for (ch, d) in self.timeline.take_dtmf() {
            self.events.push(EventRow {
                at_ms: d.start_ms,
                kind: "dtmf".into(),
                channel: Some(ch as u32),
                detail_json: Some(serde_json::json!({
                    "digit": d.digit.to_string(),
                    "duration_ms": d.duration_ms,
                    "volume": d.volume,
                })),
            });
        }
        if !self.events.is_empty() {
            self.catalog.send(CatalogCmd::Events(
                self.id.clone(),
                std::mem::take(&mut self.events),
            ));
        }
        let duration_ms = end.as_millis() as u64;
        let finish = Finish {
            ended_at_ms: info.ended_at_ms,
            duration_ms,
            state,
            file_sha256: Some(hex::encode(fin.sha256)),
            file_bytes: Some(fin.total_bytes),
            codec: Some(self.codecs.join("+")),
            stats_json: Some(serde_json::Value::Array(stats)),
        };
        tracing::info!(recording = %self.id, duration_ms, reason = info.reason, state = state.as_str(), "recording closed");
        // A crash between the row and the manifest leaves this marker: start-up signs then.
        if state == RecordingState::Complete {
            let marker = super::evidence::pending_marker(&self.path);
            if let Err(e) = crate::vault::custody::write_atomic(&marker, b"") {
                tracing::error!(recording = %self.id, error = %e, "cannot write the manifest-pending marker");
            }
        }
        self.catalog
            .send(CatalogCmd::Finish(self.id.clone(), finish, None));
        if state == RecordingState::Complete {
            self.catalog.send(CatalogCmd::Seal(
                self.id.clone(),
                super::evidence::ManifestInputs {
                    content_sha256: hex::encode(fin.sha256),
                    content_bytes: fin.total_bytes
                        - (crate::recording::container::KEY_SLOT_LEN
                            * crate::recording::container::KEY_SLOT_COUNT)
                            as u64,
                    pcm_sha256: hex::encode(fin.audio_sha256),
                    audio_encoding: fin.sample_format,
                    frames: fin.frames,
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
