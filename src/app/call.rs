//! One recorded call: its RTP sockets, timeline and encrypted file.
//!
//! The per-packet path is: `recv` on the stream's socket → [`CallTimeline::push_rtp`] →
//! (every tick) [`CallTimeline::poll_audio`] → [`ContainerWriter::push_block`] → sealed
//! chunk appended to the file. Nothing on it allocates per packet; the file write happens
//! once per chunk, and durability comes from the store's periodic `syncfs`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::sync::mpsc;

use crate::app::ports::RtpSocket;
use crate::app::store::CatalogCmd;
use crate::app::Shared;
use crate::catalog::{EventRow, Finish, NewRecording, RecordingState};
use crate::media::{is_rtcp, CallTimeline, Codec, StreamConfig, TimelineConfig};
use crate::recording::{ContainerWriter, HeaderParams};
use crate::sdp::{Direction, NegotiatedStream};
use crate::vault::DataKey;

/// Sample rate of recordings made today (G.711).
pub const SAMPLE_RATE: u32 = 8000;

/// Messages from the SIP loop to a call task.
#[derive(Debug)]
pub enum CallCmd {
    /// New negotiated streams (re-INVITE / UPDATE), per channel; `None` = m-line gone.
    Streams(Vec<Option<NegotiatedStream>>),
    /// The dialog ended: close the recording.
    End(String),
    /// Pause (or resume) storing audio: packets are dropped at the timeline input while
    /// paused, so paused time is silence; the interval is kept as `pause`/`resume` events.
    Pause {
        /// Pause (true) or resume (false).
        paused: bool,
        /// Who asked: `siprec` (all streams inactive), `control:<actor>`.
        source: String,
    },
}

/// What the SIP loop keeps of a running call.
pub struct CallHandle {
    /// Recording id.
    pub recording_id: String,
    /// Commands to the task.
    pub tx: mpsc::UnboundedSender<CallCmd>,
}

/// Everything known when the call is set up.
pub struct CallSetup {
    /// SIP Call-ID.
    pub call_id: String,
    /// SRC address.
    pub src: String,
    /// Negotiated streams, m-line order (with placeholder ports).
    pub streams: Vec<NegotiatedStream>,
    /// m-line index of each channel.
    pub recordable: Vec<usize>,
}

/// A call whose sockets and file are ready; run it with [`PreparedCall::run`].
pub struct PreparedCall {
    shared: Arc<Shared>,
    id: String,
    call_id: String,
    sockets: Vec<RtpSocket>,
    file: File,
    /// The container's absolute path.
    path: PathBuf,
    writer: ContainerWriter,
    timeline: CallTimeline,
    start: Instant,
    codecs: Vec<String>,
    holds: Vec<bool>,
    events: Vec<EventRow>,
    write_failed: bool,
    /// Pause requests in force (by source); audio is dropped while any is.
    paused_by: Vec<String>,
    /// Packets dropped while paused.
    dropped_paused: u64,
}

/// Why a call could not be set up (the SRC gets 503).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No RTP port.
    #[error("no RTP port: {0}")]
    Ports(#[from] crate::app::ports::PortError),
    /// Storage problem.
    #[error("storage: {0}")]
    Storage(String),
}

impl PreparedCall {
    /// Bind the sockets, create the encrypted file and its catalogue row.
    pub async fn prepare(
        shared: Arc<Shared>,
        setup: &CallSetup,
        new_row: impl FnOnce(&str, &str) -> NewRecording,
    ) -> Result<Self, SetupError> {
        let mut sockets = Vec::with_capacity(setup.recordable.len());
        for _ in &setup.recordable {
            sockets.push(shared.ports.bind()?);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let created = chrono::Utc::now();
        let rel: PathBuf = PathBuf::from("recordings")
            .join(created.format("%Y/%m/%d").to_string())
            .join(format!("{id}.brec"));
        let abs = shared.cfg.storage.data_dir.join(&rel);
        let mut rng = rand::rngs::OsRng;
        let dk = DataKey::generate(&mut rng);
        let wrapped = shared
            .vault
            .wrap(&dk)
            .map_err(|e| SetupError::Storage(format!("wrapping data key: {e}")))?;
        let mut prefix = [0u8; 7];
        rng.fill_bytes(&mut prefix);
        let params = HeaderParams {
            recording_id: id.clone(),
            created_unix_ms: created.timestamp_millis().max(0) as u64,
            sample_rate: SAMPLE_RATE,
            channels: setup.recordable.len() as u16,
            chunk_target_frames: (SAMPLE_RATE as u64
                * u64::from(shared.cfg.storage.flush_interval_ms)
                / 1000) as u32,
            kek_id: shared.vault.kek_id(),
            extra_json: String::new(),
        };
        let (writer, header) = ContainerWriter::new(params, dk, wrapped, prefix)
            .map_err(|e| SetupError::Storage(format!("container: {e}")))?;
        let file = create_file(&abs, &header)
            .map_err(|e| SetupError::Storage(format!("creating {}: {e}", abs.display())))?;
        let row = new_row(&id, &rel.to_string_lossy());
        shared
            .catalog
            .insert(row)
            .await
            .map_err(SetupError::Storage)?;
        let mut timeline = CallTimeline::new(TimelineConfig {
            channels: setup.recordable.len(),
            sample_rate: SAMPLE_RATE,
            playout_delay: Duration::from_millis(u64::from(shared.cfg.media.playout_delay_ms)),
        });
        let mut codecs = Vec::new();
        let mut holds = Vec::new();
        for (ch, m) in setup.recordable.iter().enumerate() {
            if let Some(s) = setup.streams.get(*m) {
                timeline.set_stream_config(ch, stream_config(s));
                codecs.extend(audio_codec_names(s));
                holds.push(crate::siprec::srs::stream_on_hold(s));
            }
        }
        codecs.sort();
        codecs.dedup();
        Ok(PreparedCall {
            shared,
            id,
            call_id: setup.call_id.clone(),
            sockets,
            path: abs,
            file,
            writer,
            timeline,
            start: Instant::now(),
            codecs,
            holds,
            events: Vec::new(),
            write_failed: false,
            paused_by: Vec::new(),
            dropped_paused: 0,
        })
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// SIP Call-ID of the recording session.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Local ports, channel order.
    pub fn ports(&self) -> Vec<u16> {
        self.sockets.iter().map(|s| s.port).collect()
    }

    /// Receive and record until [`CallCmd::End`] (or the command channel closes).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CallCmd>) {
        let tick_every = Duration::from_millis(100);
        let flush_every =
            Duration::from_millis(u64::from(self.shared.cfg.storage.flush_interval_ms));
        let rtp_timeout =
            Duration::from_secs(u64::from(self.shared.cfg.media.rtp_timeout_s.max(1)));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        let mut last_rtp = Instant::now();
        let mut buf = vec![0u8; 2048];
        let end_reason: String = loop {
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(CallCmd::End(reason)) => {
                        // Packets already queued when the BYE arrived belong to the call.
                        self.drain_sockets(&mut buf);
                        break reason;
                    }
                    Some(CallCmd::Streams(s)) => self.update_streams(&s),
                    Some(CallCmd::Pause { paused, source }) => self.set_paused(paused, &source),
                    None => break "signalling task gone".to_string(),
                },
                r = recv_any(&self.sockets, &mut buf) => {
                    let Some((ch, n, _from)) = r else { continue };
                    last_rtp = Instant::now();
                    self.on_packet(ch, n, &buf);
                    self.drain_sockets(&mut buf);
                }
                _ = tick.tick() => {
                    let now = self.start.elapsed();
                    while let Some(block) = self.timeline.poll_audio(now) {
                        self.push_block(&block);
                    }
                    self.write_ready_chunks();
                    if last_flush.elapsed() >= flush_every {
                        last_flush = Instant::now();
                        if let Some(chunk) = self.writer.flush() {
                            self.append(&chunk);
                        }
                    }
                    if last_rtp.elapsed() >= rtp_timeout {
                        break "no RTP and no BYE before media.rtp_timeout_s".to_string();
                    }
                }
            }
        };
        // Closing fsyncs the file: keep that off the async worker threads.
        let done = tokio::task::spawn_blocking(move || self.close(&end_reason)).await;
        if let Err(e) = done {
            tracing::error!(error = %e, "closing a recording failed");
        }
    }

    /// Read what is already queued on the sockets without waiting (bounded).
    fn drain_sockets(&mut self, buf: &mut [u8]) {
        for _ in 0..256 {
            let mut got = false;
            for ch in 0..self.sockets.len() {
                if let Ok((n, _)) = self.sockets[ch].socket.try_recv_from(buf) {
                    self.on_packet(ch, n, buf);
                    got = true;
                }
            }
            if !got {
                break;
            }
        }
    }

    fn on_packet(&mut self, ch: usize, n: usize, buf: &[u8]) {
        let Some(pkt) = buf.get(..n) else { return };
        if is_rtcp(pkt) {
            return;
        }
        if !self.paused_by.is_empty() {
            // No paused audio is ever stored: the timeline never sees these packets.
            self.dropped_paused += 1;
            return;
        }
        let at = self.start.elapsed();
        self.timeline.push_rtp(ch, at, pkt);
    }

    fn set_paused(&mut self, paused: bool, source: &str) {
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
            let at_ms = self.start.elapsed().as_millis() as u64;
            tracing::info!(recording = %self.id, paused = now, source, "recording paused/resumed");
            self.events.push(EventRow {
                at_ms,
                kind: if now { "pause" } else { "resume" }.into(),
                channel: None,
                detail_json: Some(serde_json::json!({ "source": source })),
            });
        }
    }

    fn update_streams(&mut self, streams: &[Option<NegotiatedStream>]) {
        let at_ms = self.start.elapsed().as_millis() as u64;
        for (ch, s) in streams.iter().enumerate() {
            if let Some(s) = s {
                self.timeline.set_stream_config(ch, stream_config(s));
                for c in audio_codec_names(s) {
                    if !self.codecs.contains(&c) {
                        self.codecs.push(c);
                    }
                }
            }
            let hold = s.as_ref().is_none_or(crate::siprec::srs::stream_on_hold);
            if let Some(h) = self.holds.get_mut(ch) {
                if *h != hold {
                    *h = hold;
                    self.events.push(EventRow {
                        at_ms,
                        kind: if hold { "hold" } else { "resume" }.into(),
                        channel: Some(ch as u32),
                        detail_json: Some(serde_json::json!({
                            "direction": s.as_ref().map(|s| direction_str(&s.direction)),
                        })),
                    });
                }
            }
        }
        // RFC 7866 §6.1.3: an SRC pauses recording by making every stream inactive.
        let all_inactive = !self.holds.is_empty() && self.holds.iter().all(|h| *h);
        self.set_paused(all_inactive, "siprec");
    }

    fn push_block(&mut self, block: &crate::media::AudioBlock) {
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

    fn close(mut self, reason: &str) {
        let end = self.start.elapsed();
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
        let state = match self.file.sync_all() {
            Ok(()) if !self.write_failed => RecordingState::Complete,
            Ok(()) => RecordingState::Damaged,
            Err(e) => {
                tracing::error!(recording = %self.id, error = %e, "fsync of recording failed");
                RecordingState::Damaged
            }
        };
        let mut stats = Vec::new();
        for ch in 0..self.sockets.len() {
            let s = self.timeline.stats(ch);
            stats.push(serde_json::json!({
                "channel": ch,
                "received": s.received,
                "lost": s.lost,
                "late": s.late,
                "duplicates": s.duplicates,
                "ssrc_changes": s.ssrc_changes,
                "unsupported_payload": s.unsupported_payload,
            }));
        }
        if !self.paused_by.is_empty() {
            let at_ms = end.as_millis() as u64;
            self.events.push(EventRow {
                at_ms,
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
            self.shared.catalog.send(CatalogCmd::Events(
                self.id.clone(),
                std::mem::take(&mut self.events),
            ));
        }
        let duration_ms = end.as_millis() as u64;
        let ended_at = chrono::Utc::now().timestamp_millis();
        let finish = Finish {
            ended_at_ms: ended_at,
            duration_ms,
            state,
            file_sha256: Some(hex::encode(fin.sha256)),
            file_bytes: Some(fin.total_bytes),
            codec: Some(self.codecs.join("+")),
            stats_json: Some(serde_json::Value::Array(stats)),
        };
        tracing::info!(recording = %self.id, duration_ms, reason, state = state.as_str(), "recording closed");
        if state == RecordingState::Complete {
            let marker = super::evidence::pending_marker(&self.path);
            if let Err(e) = crate::vault::custody::write_atomic(&marker, b"") {
                tracing::error!(recording = %self.id, error = %e, "cannot write the manifest-pending marker");
            }
        }
        self.shared
            .catalog
            .send(CatalogCmd::Finish(self.id.clone(), finish, None));
        if state == RecordingState::Complete {
            self.shared.catalog.send(CatalogCmd::Seal(
                self.id.clone(),
                super::evidence::ManifestInputs {
                    content_sha256: hex::encode(fin.sha256),
                    content_bytes: fin.total_bytes
                        - (crate::recording::container::KEY_SLOT_LEN
                            * crate::recording::container::KEY_SLOT_COUNT)
                            as u64,
                    pcm_sha256: hex::encode(fin.pcm_sha256),
                    frames: fin.frames,
                },
            ));
        }
    }
}

/// Wait until any of the sockets has a datagram; returns (channel, length, source).
async fn recv_any(sockets: &[RtpSocket], buf: &mut [u8]) -> Option<(usize, usize, SocketAddr)> {
    if sockets.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, s) in sockets.iter().enumerate() {
            let mut rb = ReadBuf::new(buf);
            match s.socket.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => return Poll::Ready(Some((i, rb.filled().len(), from))),
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "RTP receive error");
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

fn create_file(path: &std::path::Path, header: &[u8]) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    f.write_all(header)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

fn stream_config(s: &NegotiatedStream) -> StreamConfig {
    let payload_types = s
        .formats
        .iter()
        .map(|f| {
            let codec = match f.encoding.to_ascii_uppercase().as_str() {
                "PCMU" => Codec::Pcmu,
                "PCMA" => Codec::Pcma,
                "TELEPHONE-EVENT" => Codec::TelephoneEvent,
                other => Codec::Unsupported(other.to_string()),
            };
            (f.pt, codec, f.clock_rate)
        })
        .collect();
    StreamConfig { payload_types }
}

/// The stream's preferred (first accepted) audio encoding.
fn audio_codec_names(s: &NegotiatedStream) -> Vec<String> {
    s.formats
        .iter()
        .find(|f| !f.encoding.eq_ignore_ascii_case("telephone-event"))
        .map(|f| f.encoding.to_ascii_uppercase())
        .into_iter()
        .collect()
}

/// Direction helper for logs.
pub fn direction_str(d: &Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "sendonly",
        Direction::RecvOnly => "recvonly",
        Direction::Inactive => "inactive",
    }
}
