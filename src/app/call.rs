//! One recorded call: its RTP sockets, timeline and encrypted file.
//!
//! The per-packet path is: `recv` on the stream's socket → the call's
//! [`Recording`](crate::recording::Recording) core (SRTP, pause gate, timeline; every
//! tick: encoder and chunk writer) → sealed chunk appended to the file by the
//! [`RecordingSink`]. Nothing on it allocates per packet; the file write happens once per
//! chunk, and durability comes from the store's periodic `syncfs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::ReadBuf;
use tokio::sync::mpsc;

use crate::app::ports::RtpSocket;
use crate::app::sink::{CloseInfo, RecordingSink};
use crate::app::Shared;
use crate::catalog::{EventRow, NewRecording, Source};
use crate::clock::MonoClock;
use crate::media::StreamConfig;
use crate::recording::{ChannelMedia, RtpDisposition};
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
    /// Add an event of this kind with these details (no channel) at the current offset.
    EventWith(String, serde_json::Value),
    /// The SRC ACKed our 200: the session is confirmed (until then, and until the first
    /// audio packet, the recording writes nothing: `Recording::await_confirmation`).
    Confirmed,
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
    /// SRC address (the INVITE's transport peer).
    pub src: String,
    /// The SRC's authenticated TLS client identity, for calls over TLS.
    pub src_identity: Option<String>,
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
    /// The recording's clock: its origin is the call start.
    clock: MonoClock,
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

impl SetupError {
    /// What the SRC is told (503 reason): out of descriptors is said as such, whichever
    /// of the sockets or the file ran into it.
    pub fn unavailable(&self) -> crate::sip::Unavailable {
        use crate::sip::Unavailable;
        match self {
            SetupError::Ports(crate::app::ports::PortError::Descriptors) => {
                Unavailable::TooManyOpenFiles
            }
            // The sink reports io errors as text; EMFILE/ENFILE render as "os error 24/23".
            SetupError::Storage(m) if m.contains("os error 24") || m.contains("os error 23") => {
                Unavailable::TooManyOpenFiles
            }
            e => Unavailable::Setup(e.to_string()),
        }
    }
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
            shared.vault.clone(),
            shared.catalog.clone(),
            setup.recordable.len(),
            setup.sample_rate,
            chrono::Utc::now(),
            true,
            setup.format,
            Source::Siprec,
        )
        .map_err(|e| SetupError::Storage(e.0))?;
        let row = new_row(sink.id(), &rel);
        if let Some(identity) = &setup.src_identity {
            // The TLS peer is a fact of the transport, like src_addr: kept with the
            // recording (and so in its signed manifest).
            sink.add_event(EventRow {
                at_ms: 0,
                kind: "tls_peer".into(),
                channel: None,
                detail_json: Some(serde_json::json!({ "identity": identity })),
            });
        }
        shared
            .catalog
            .insert(row)
            .await
            .map_err(SetupError::Storage)?;
        let media = setup
            .recordable
            .iter()
            .map(|m| {
                setup
                    .streams
                    .get(*m)
                    .map(|s| channel_media(s, serde_json::Value::Null))
            })
            .collect();
        sink.set_media(None, media);
        Ok(PreparedCall {
            shared,
            call_id: setup.call_id.clone(),
            sockets,
            sink,
            clock: MonoClock::new(),
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
        let mut last_rtp = self.clock.now();
        let mut buf = vec![0u8; 2048];
        // Nothing is written for a session the SRC never ACKs (issue #12).
        self.sink.await_confirmation();
        let end_reason: String = loop {
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(CallCmd::End(reason)) => {
                        // Packets already queued when the BYE arrived belong to the call.
                        let _ = self.drain_sockets(&mut buf);
                        break reason;
                    }
                    Some(CallCmd::Streams(s)) => self.update_streams(&s),
                    Some(CallCmd::Event(kind)) => self.sink.add_event(EventRow {
                        at_ms: self.clock.now().as_millis(),
                        kind,
                        channel: None,
                        detail_json: None,
                    }),
                    Some(CallCmd::EventWith(kind, detail)) => self.sink.add_event(EventRow {
                        at_ms: self.clock.now().as_millis(),
                        kind,
                        channel: None,
                        detail_json: Some(detail),
                    }),
                    Some(CallCmd::Confirmed) => self.sink.confirm(),
                    Some(CallCmd::Pause { paused, source }) => {
                        self.sink.set_paused(paused, &source, self.clock.now());
                        self.paused.store(self.sink.is_paused(), std::sync::atomic::Ordering::Relaxed);
                    }
                    None => break "signalling task gone".to_string(),
                },
                r = recv_any(&self.sockets, &mut buf) => {
                    let Some((ch, n, from)) = r else { continue };
                    // Only packets from the stream's bound source keep the call alive.
                    if self.on_packet(ch, n, from, &mut buf) {
                        last_rtp = self.clock.now();
                    }
                    if self.drain_sockets(&mut buf) {
                        last_rtp = self.clock.now();
                    }
                }
                _ = tick.tick() => {
                    self.sink.tick(self.clock.now());
                    if self.clock.now() - last_rtp >= rtp_timeout {
                        break "no RTP and no BYE before media.rtp_timeout_s".to_string();
                    }
                }
            }
        };
        let end = self.clock.now();
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
            })
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "closing a recording failed");
        }
    }

    /// Read what is already queued on the sockets without waiting (bounded). Returns
    /// whether any packet came from a bound source.
    fn drain_sockets(&mut self, buf: &mut [u8]) -> bool {
        let mut bound = false;
        for _ in 0..256 {
            let mut got = false;
            for ch in 0..self.sockets.len() {
                if let Ok((n, from)) = self.sockets[ch].socket.try_recv_from(buf) {
                    bound |= self.on_packet(ch, n, from, buf);
                    got = true;
                }
            }
            if !got {
                break;
            }
        }
        bound
    }

    /// One datagram of channel `ch` from `from`; returns whether it came from the
    /// channel's bound source.
    fn on_packet(&mut self, ch: usize, n: usize, from: SocketAddr, buf: &mut [u8]) -> bool {
        let Some(pkt) = buf.get(..n) else {
            return false;
        };
        // The core checks the source first (foreign packets are counted and never
        // reach SRTP or the timeline), decrypts SRTP (failures are counted and never
        // written), ignores RTCP and drops what arrives while paused.
        match self.sink.push_rtp(ch, self.clock.now(), from, pkt) {
            RtpDisposition::Foreign { alarm } => {
                self.shared.binding.rtp_foreign(1);
                if alarm {
                    self.shared
                        .binding
                        .foreign_alarm(branchrec_core::time::UnixMs(self.shared.clock.now_ms()));
                }
                false
            }
            d => d.from_bound_source(),
        }
    }

    fn update_streams(&mut self, streams: &[Option<NegotiatedStream>]) {
        // `None` = the m-line is gone from the offer: the channel is on hold. With every
        // stream inactive the core pauses the recording (RFC 7866 §6.1.3).
        let media = streams
            .iter()
            .map(|s| {
                s.as_ref().map(|s| {
                    channel_media(
                        s,
                        serde_json::json!({ "direction": direction_str(&s.direction) }),
                    )
                })
            })
            .collect();
        self.sink.set_media(Some(self.clock.now()), media);
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

/// What a negotiated stream gives its channel: formats, codec names, hold state and
/// SRTP keys (or plain RTP).
fn channel_media(s: &NegotiatedStream, detail: serde_json::Value) -> ChannelMedia {
    ChannelMedia {
        config: stream_config(s),
        codecs: audio_codec_names(s),
        hold: crate::siprec::srs::stream_on_hold(s),
        srtp: s.srtp.as_ref().map(|n| n.policy.clone()),
        detail,
        remote: s.remote,
    }
}

pub(crate) fn stream_config(s: &NegotiatedStream) -> StreamConfig {
    super::streams::stream_config(&s.formats)
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
