//! One recorded call: its RTP sockets, timeline and encrypted file.
//!
//! The per-packet path is: `recv` on the stream's socket → [`CallTimeline::push_rtp`] →
//! (every tick) [`CallTimeline::poll_audio`] → [`ContainerWriter::push_block`] → sealed
//! chunk appended to the file. Nothing on it allocates per packet; the file write happens
//! once per chunk, and durability comes from the store's periodic `syncfs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::sync::mpsc;

use crate::app::ports::RtpSocket;
use crate::app::sink::{CloseInfo, RecordingSink};
use crate::app::Shared;
use crate::catalog::{EventRow, NewRecording};
use crate::media::{is_rtcp, Codec, SrtpChannel, StreamConfig};
use crate::sdp::{Direction, NegotiatedStream};

pub use crate::app::sink::{recording_rate, SAMPLE_RATE};

/// Messages from the SIP loop to a call task.
#[derive(Debug)]
pub enum CallCmd {
    /// New negotiated streams (re-INVITE / UPDATE), per channel; `None` = m-line gone.
    Streams(Vec<Option<NegotiatedStream>>),
    /// The dialog ended: close the recording.
    End(String),
    /// Add an event of this kind (no channel, no details) at the current offset.
    Event(String),
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
    /// The recording's sample rate ([`recording_rate`]).
    pub sample_rate: u32,
    /// How the audio is stored (from the recording rule).
    pub format: crate::recording::StorageFormat,
}

/// A call whose sockets and file are ready; run it with [`PreparedCall::run`].
pub struct PreparedCall {
    shared: Arc<Shared>,
    call_id: String,
    sockets: Vec<RtpSocket>,
    sink: RecordingSink,
    /// SRTP state per channel (plain RTP channels pass through).
    srtp: Vec<SrtpChannel>,
    start: Instant,
    /// Mirrors whether the recording is paused (for the REC LED).
    paused: Arc<std::sync::atomic::AtomicBool>,
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
        let (mut sink, rel) = RecordingSink::create(
            &shared.cfg,
            shared.vault.as_ref(),
            shared.catalog.clone(),
            setup.recordable.len(),
            setup.sample_rate,
            chrono::Utc::now(),
            true,
            setup.format,
        )
        .map_err(|e| SetupError::Storage(e.0))?;
        let row = new_row(sink.id(), &rel);
        shared
            .catalog
            .insert(row)
            .await
            .map_err(SetupError::Storage)?;
        let mut srtp: Vec<SrtpChannel> = (0..setup.recordable.len())
            .map(|_| SrtpChannel::default())
            .collect();
        for (ch, m) in setup.recordable.iter().enumerate() {
            if let Some(s) = setup.streams.get(*m) {
                set_srtp(&mut srtp[ch], sink.id(), ch, s, std::time::Duration::ZERO);
                sink.configure_channel(
                    ch,
                    stream_config(s),
                    audio_codec_names(s),
                    crate::siprec::srs::stream_on_hold(s),
                    None,
                    serde_json::Value::Null,
                );
            }
        }
        Ok(PreparedCall {
            shared,
            call_id: setup.call_id.clone(),
            sockets,
            sink,
            srtp,
            start: Instant::now(),
            paused: Default::default(),
        })
    }

    /// A flag that follows whether the recording is paused (by the control socket or the
    /// SRC), for the front panel.
    pub fn paused_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.paused.clone()
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        self.sink.id()
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
        let rtp_timeout =
            Duration::from_secs(u64::from(self.shared.cfg.media.rtp_timeout_s.max(1)));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    Some(CallCmd::Event(kind)) => self.sink.add_event(EventRow {
                        at_ms: self.start.elapsed().as_millis() as u64,
                        kind,
                        channel: None,
                        detail_json: None,
                    }),
                    Some(CallCmd::Pause { paused, source }) => {
                        let at_ms = self.start.elapsed().as_millis() as u64;
                        self.sink.set_paused(paused, &source, at_ms);
                        self.paused.store(self.sink.is_paused(), std::sync::atomic::Ordering::Relaxed);
                    }
                    None => break "signalling task gone".to_string(),
                },
                r = recv_any(&self.sockets, &mut buf) => {
                    let Some((ch, n, _from)) = r else { continue };
                    last_rtp = Instant::now();
                    self.on_packet(ch, n, &mut buf);
                    self.drain_sockets(&mut buf);
                }
                _ = tick.tick() => {
                    self.sink.tick(self.start.elapsed());
                    if last_rtp.elapsed() >= rtp_timeout {
                        break "no RTP and no BYE before media.rtp_timeout_s".to_string();
                    }
                }
            }
        };
        let end = self.start.elapsed();
        for (ch, s) in self.srtp.iter().enumerate() {
            self.sink.add_channel_stats(ch, s.stats_json());
        }
        let sink = self.sink;
        // Closing fsyncs the file: keep that off the async worker threads (in the call's
        // span, so its log lines keep the recording and call ids).
        let span = tracing::Span::current();
        let done = tokio::task::spawn_blocking(move || {
            let _in_call = span.enter();
            sink.close(CloseInfo {
                end,
                reason: &end_reason,
                ended_at_ms: chrono::Utc::now().timestamp_millis(),
                unsupported_if_no_audio: false,
            })
        })
        .await;
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

    fn on_packet(&mut self, ch: usize, n: usize, buf: &mut [u8]) {
        let Some(pkt) = buf.get_mut(..n) else { return };
        let at = self.start.elapsed();
        // SRTP is decrypted in place before the timeline; packets failing
        // authentication, replay or key checks are counted and never written.
        let pkt = match self.srtp.get_mut(ch) {
            Some(s) if s.is_secure() => match s.unprotect(pkt, at) {
                Ok(len) => &pkt[..len],
                Err(_) => return,
            },
            _ => &pkt[..],
        };
        if is_rtcp(pkt) {
            return;
        }
        self.sink.push_rtp(ch, at, pkt);
    }

    fn update_streams(&mut self, streams: &[Option<NegotiatedStream>]) {
        let at_ms = self.start.elapsed().as_millis() as u64;
        for (ch, s) in streams.iter().enumerate() {
            if let (Some(s), Some(sc)) = (s, self.srtp.get_mut(ch)) {
                set_srtp(sc, self.sink.id(), ch, s, self.start.elapsed());
            }
            match s {
                Some(s) => self.sink.configure_channel(
                    ch,
                    stream_config(s),
                    audio_codec_names(s),
                    crate::siprec::srs::stream_on_hold(s),
                    Some(at_ms),
                    serde_json::json!({ "direction": direction_str(&s.direction) }),
                ),
                // The m-line is gone from the offer: the channel is on hold.
                None => self.sink.set_hold(ch, true, at_ms),
            }
        }
        // RFC 7866 §6.1.3: an SRC pauses recording by making every stream inactive.
        let holds = self.sink.holds();
        let all_inactive = !holds.is_empty() && holds.iter().all(|h| *h);
        self.sink.set_paused(all_inactive, "siprec", at_ms);
        self.paused
            .store(self.sink.is_paused(), std::sync::atomic::Ordering::Relaxed);
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

/// Apply a stream's negotiated SRTP keys (or plain RTP) to its channel.
fn set_srtp(sc: &mut SrtpChannel, id: &str, ch: usize, s: &NegotiatedStream, at: Duration) {
    sc.set_policy(s.srtp.as_ref().map(|n| &n.policy), at);
    if let Some(e) = sc.rejected_policy.take() {
        tracing::warn!(recording = %id, channel = ch, error = %e, "SRTP keys refused; keeping the previous ones");
    } else if let Some(n) = &s.srtp {
        tracing::debug!(recording = %id, channel = ch, suite = %n.suite(), tag = n.tag, "SRTP keys set");
    }
}

pub(crate) fn stream_config(s: &NegotiatedStream) -> StreamConfig {
    let payload_types = s
        .formats
        .iter()
        .map(|f| (f.pt, Codec::from_encoding_name(&f.encoding), f.clock_rate))
        .collect();
    StreamConfig { payload_types }
}

/// The stream's preferred (first accepted) audio encoding.
fn audio_codec_names(s: &NegotiatedStream) -> Vec<String> {
    s.formats
        .iter()
        .find(|f| crate::media::codec::is_audio_encoding(&f.encoding))
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
