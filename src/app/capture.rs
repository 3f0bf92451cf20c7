//! Shells of passive recording: capture files (`import-pcap`) and live interfaces, both
//! driving one [`Engine`] and recording through the same [`RecordingSink`] as SIPREC.
//!
//! Time is the packets' capture time, so importing a file is deterministic and runs as
//! fast as the disk allows. Live capture reads each interface with libpcap on a thread
//! of its own and hands frames to one engine thread; kernel drop counters are logged and
//! written to `<data_dir>/capture-stats.json`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::app::sink::{CloseInfo, RecordingSink};
use crate::app::store::{CatalogCmd, CatalogHandle};
use crate::capture::capture_time;
use crate::capture::engine::{Engine, EngineStats, Sink};
use crate::capture::pcapfile::PcapReader;
use crate::capture::tracker::{
    CallKind, CallNo, CallRules, DeclaredFlow, Party, TrackerConfig, TrackerEvent,
};
use crate::catalog::{
    ChannelRow, EventRow, Finish, MappingSource, NewRecording, ParticipantRow, RecordingState,
    Source,
};
use crate::clock::MonoClock;
use crate::config::Config;
use crate::media::{codec, SrtpPolicy, StreamConfig};
use crate::pii::Pii;
use crate::recording::ChannelMedia;
use crate::sdp::PayloadFormat;
use crate::vault::KeyWrap;
use branchrec_core::time::{Mono, UnixMs};

/// Tracker settings from `[capture]`.
pub fn tracker_config(cfg: &Config) -> TrackerConfig {
    TrackerConfig {
        media_timeout: Duration::from_secs(u64::from(cfg.capture.media_timeout_s)),
        setup_timeout: Duration::from_secs(300),
        max_calls: cfg.capture.max_calls,
        rules: CallRules {
            allow: cfg.capture.allow.clone(),
            deny: cfg.capture.deny.clone(),
        },
        unsignalled: cfg.capture.unsignalled_rtp,
        declared: Vec::new(),
    }
}

/// Why a `--srtp-key` argument is unusable.
#[derive(Debug, thiserror::Error)]
pub enum FlowKeyError {
    /// Not `SENDER=SUITE:inline:KEY`.
    #[error("expected SENDER_IP:PORT=SUITE:inline:BASE64 (e.g. 10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:...), got {0:?}")]
    Syntax(String),
    /// The key part does not parse as an `a=crypto` key.
    #[error("SRTP key: {0}")]
    Key(#[from] crate::sdp::CryptoError),
}

/// Parse `SENDER=SUITE:inline:KEY[|lifetime][|MKI:len]`: RTP sent from SENDER is SRTP
/// protected with that master key and salt (the `a=crypto` key syntax of RFC 4568).
pub fn parse_flow_key(arg: &str) -> Result<DeclaredFlow, FlowKeyError> {
    let syntax = || FlowKeyError::Syntax(arg.to_string());
    let (sender, key) = arg.split_once('=').ok_or_else(syntax)?;
    let sender: SocketAddr = sender.trim().parse().map_err(|_| syntax())?;
    let (suite, params) = key.trim().split_once(':').ok_or_else(syntax)?;
    let attr = crate::sdp::parse_crypto(&format!("1 {suite} {params}"))?;
    Ok(DeclaredFlow {
        sender,
        srtp: Some(attr.policy),
    })
}

/// One call recorded (or catalogued) by a [`Recorder`], for reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordedCall {
    /// Recording id.
    pub id: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// Final state.
    pub state: String,
    /// Codec(s).
    pub codec: String,
    /// Where it was captured.
    pub capture_point: String,
}

enum Kind {
    Audio(Box<RecordingSink>),
    /// No decodable codec: catalogued without a file.
    Unsupported,
}

struct Active {
    id: String,
    call_id: String,
    /// Start of the recording on the capture time axis.
    start: Mono,
    kind: Kind,
    codec: String,
    point: String,
    events: Vec<EventRow>,
}

/// Records what the engine finds (the engine's [`Sink`]).
pub struct Recorder {
    cfg: Config,
    vault: Arc<dyn KeyWrap>,
    catalog: CatalogHandle,
    point: String,
    calls: HashMap<CallNo, Active>,
    done: Vec<RecordedCall>,
}

/// The wall-clock time of a point on the capture time axis (see
/// [`branchrec_core::capture`]: frame timestamps, whose origin is the Unix epoch), for the
/// catalogue. The one place where capture time becomes a [`UnixMs`].
fn wall_clock(t: Mono) -> UnixMs {
    UnixMs(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

/// A point on the capture time axis as a time of the recording that started at `start`
/// (the [`RecordingSink`]'s axis, whose origin is the recording start).
fn on_recording(start: Mono, t: Mono) -> Mono {
    Mono::from_duration(t.saturating_duration_since(start))
}

/// A format passive capture records (a voice codec this build decodes: G.711, G.722,
/// Opus, G.729 with the `g729` feature; see the codec table).
fn is_captured(f: &PayloadFormat) -> bool {
    codec::is_captured(&f.encoding, f.clock_rate)
}

/// The recording's sample rate (fixed at its start, as for SIPREC): 16 kHz when a
/// channel's negotiated codec (its first audio format, the answer's choice) is wideband
/// (G.722, Opus), else 8 kHz. A later codec change is resampled to it.
fn capture_rate(formats: &[Vec<PayloadFormat>]) -> u32 {
    crate::app::sink::recording_rate(formats.iter().filter_map(|fs| {
        fs.iter()
            .find(|f| is_audio_codec(f))
            .map(|f| (f.encoding.as_str(), f.clock_rate))
    }))
}

fn is_audio_codec(f: &PayloadFormat) -> bool {
    codec::is_audio_encoding(&f.encoding)
}

fn stream_config(formats: &[PayloadFormat]) -> StreamConfig {
    if formats.is_empty() {
        return StreamConfig::default();
    }
    super::streams::stream_config(formats)
}

/// The codec a channel uses: the first audio format of the receiver's SDP (an answer
/// lists the chosen codec first).
fn codec_names(formats: &[PayloadFormat]) -> Vec<String> {
    formats
        .iter()
        .find(|f| is_audio_codec(f))
        .map(|f| f.encoding.to_ascii_uppercase())
        .into_iter()
        .collect()
}

/// What the two channels of a captured call carry (caller, callee); hold changes are
/// events with the side that caused them.
fn channel_media(
    formats: &[Vec<PayloadFormat>],
    hold: &[bool],
    srtp: &[Option<SrtpPolicy>],
) -> Vec<Option<ChannelMedia>> {
    (0..formats.len())
        .map(|ch| {
            let f = formats.get(ch).map(Vec::as_slice).unwrap_or_default();
            Some(ChannelMedia {
                config: stream_config(f),
                codecs: codec_names(f),
                hold: hold.get(ch).copied().unwrap_or(false),
                // SDES keys from the mirrored SDP: decrypted, authenticated and
                // replay-checked by the same SRTP receiver as SIPREC streams.
                srtp: srtp.get(ch).cloned().flatten(),
                detail: serde_json::json!({
                    "by": if ch % 2 == 0 { "caller" } else { "callee" },
                    "channel": ch,
                }),
                // The tracker binds flows (by their 5-tuple from SDP) before they get here.
                remote: None,
            })
        })
        .collect()
}

impl Recorder {
    /// A recorder writing into the catalogue behind `catalog`.
    pub fn new(cfg: Config, vault: Arc<dyn KeyWrap>, catalog: CatalogHandle) -> Self {
        Recorder {
            cfg,
            vault,
            catalog,
            point: String::new(),
            calls: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// Name of the capture point for calls that start from now on (`if:eth1`,
    /// `file:trace.pcap`).
    pub fn set_capture_point(&mut self, point: String) {
        self.point = point;
    }

    /// Calls finished so far.
    pub fn take_done(&mut self) -> Vec<RecordedCall> {
        std::mem::take(&mut self.done)
    }

    /// Calls open now.
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        call: CallNo,
        at: Mono,
        call_id: String,
        sip_src: std::net::SocketAddr,
        parties: [Party; 2],
        formats: Vec<Vec<PayloadFormat>>,
        hold: Vec<bool>,
        srtp: Vec<Option<SrtpPolicy>>,
        kind: CallKind,
    ) {
        let unsignalled = !matches!(kind, CallKind::Sip | CallKind::MirroredSiprec);
        let siprec = kind == CallKind::MirroredSiprec;
        let created = wall_clock(at).to_datetime().unwrap_or_default();
        let all: Vec<&PayloadFormat> = formats.iter().flatten().collect();
        // SIP over TLS: nothing to decode. Catalogued without a file, the verdict in the
        // codec column (`encrypted_signalling`) and an event of that kind; the row's
        // state is `codec_unsupported` ("no usable audio"), see docs/capture.md.
        let encrypted = kind == CallKind::EncryptedSignalling;
        let supported = !encrypted && (all.is_empty() || all.iter().any(|f| is_captured(f)));
        let mut names: Vec<String> = if encrypted {
            vec!["encrypted_signalling".to_string()]
        } else {
            formats.iter().flat_map(|f| codec_names(f)).collect()
        };
        names.sort();
        names.dedup();
        let src_addr = format!("{} {}", self.point, sip_src);
        let rate = capture_rate(&formats);
        // Two channels per audio stream: 2i = the caller's i-th m-line, 2i+1 the callee's.
        let channels = formats.len().max(2);
        let (kind, id, file_path, kek_id) = if supported {
            match RecordingSink::create(
                &self.cfg,
                self.vault.clone(),
                self.catalog.clone(),
                channels,
                rate,
                created,
                false,
                self.cfg.storage.format,
                Source::Mirror,
            ) {
                Ok((mut sink, rel)) => {
                    sink.set_media(None, channel_media(&formats, &hold, &srtp));
                    let id = sink.id().to_string();
                    (
                        Kind::Audio(Box::new(sink)),
                        id,
                        Some(rel),
                        Some(self.vault.kek_id()),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, call_id = %Pii(&call_id), "cannot record captured call");
                    return;
                }
            }
        } else {
            (
                Kind::Unsupported,
                uuid::Uuid::new_v4().to_string(),
                None,
                None,
            )
        };
        let codec = if names.is_empty() {
            "PCMU+PCMA".to_string()
        } else {
            names.join("+")
        };
        let row = NewRecording {
            id: id.clone(),
            source: Source::Mirror,
            call_id: call_id.clone(),
            session_id: None,
            src_addr,
            started_at_ms: wall_clock(at).as_millis(),
            codec: codec.clone(),
            sample_rate: rate,
            channels: u16::try_from(channels).unwrap_or(2),
            file_path,
            kek_id,
            storage_format: self.cfg.storage.format.as_str().to_string(),
        };
        // Not waited for: the engine thread never blocks on the disk, and every later
        // write for this recording is queued behind the insert.
        self.catalog.insert_nowait(row);
        let ids = ["caller", "callee"];
        // RTP without SDP has no participants: the channels carry the two directions of
        // the flow (label = the sender's address), pairable by 5-tuple.
        if !unsignalled {
            self.catalog.send(CatalogCmd::Participants(
                id.clone(),
                parties
                    .iter()
                    .zip(ids)
                    .map(|(p, pid)| ParticipantRow {
                        participant_id: pid.into(),
                        name: p.name.clone(),
                        aor: p.aor.clone(),
                        other_names: Vec::new(),
                        other_aors: Vec::new(),
                        ..Default::default()
                    })
                    .collect(),
            ));
        }
        let flow_label = |ch: usize| {
            let ch = ch % 2;
            unsignalled.then(|| {
                let mut ends = call_id
                    .split_once(':')
                    .map_or("", |(_, f)| f)
                    .split('-')
                    .map(str::to_string);
                let a = ends.next().unwrap_or_default();
                let b = ends.next().unwrap_or_default();
                if ch == 0 {
                    format!("{a} -> {b}")
                } else {
                    format!("{b} -> {a}")
                }
            })
        };
        self.catalog.send(CatalogCmd::Channels(
            id.clone(),
            (0..channels)
                .map(|ch| (ch, ids[ch % 2]))
                .map(|(ch, pid)| ChannelRow {
                    channel: ch as u32,
                    // The party's audio m-line number (among its audio m-lines); for a
                    // mirrored SIPREC session the SRC's m-line, one per channel.
                    mline: if siprec {
                        Some(ch as u32)
                    } else {
                        (!unsignalled).then_some((ch / 2) as u32)
                    },
                    label: flow_label(ch),
                    stream_id: None,
                    participant_id: if siprec {
                        (ch < 2).then(|| pid.into())
                    } else {
                        (!unsignalled).then(|| pid.into())
                    },
                    mapping_source: if siprec {
                        MappingSource::Metadata
                    } else {
                        MappingSource::MlineOrder
                    },
                })
                .collect(),
        ));
        tracing::info!(
            recording = %id,
            call_id = %Pii(&call_id),
            caller = %Pii(parties[0].aor.clone().unwrap_or_default()),
            callee = %Pii(parties[1].aor.clone().unwrap_or_default()),
            codec = %codec,
            supported,
            point = %self.point,
            "captured call: recording started"
        );
        let events = vec![EventRow {
            at_ms: 0,
            kind: "capture".into(),
            channel: None,
            detail_json: Some(
                serde_json::json!({ "capture_point": self.point, "sip_src": sip_src.to_string() }),
            ),
        }];
        self.calls.insert(
            call,
            Active {
                id,
                call_id,
                start: at,
                kind,
                codec,
                point: self.point.clone(),
                events,
            },
        );
    }

    fn end(&mut self, call: CallNo, at: Mono, reason: &str) {
        let Some(mut a) = self.calls.remove(&call) else {
            return;
        };
        let end = on_recording(a.start, at);
        let ended_at_ms = wall_clock(a.start.saturating_add(end.since_origin())).as_millis();
        let state = match a.kind {
            Kind::Audio(mut sink) => {
                for ev in a.events.drain(..) {
                    sink.add_event(ev);
                }
                let codec = sink.codec_string();
                if !codec.is_empty() {
                    a.codec = codec;
                }
                sink.close(CloseInfo {
                    end,
                    reason,
                    ended_at_ms,
                })
            }
            Kind::Unsupported => {
                if !a.events.is_empty() {
                    self.catalog.send(CatalogCmd::Events(
                        a.id.clone(),
                        std::mem::take(&mut a.events),
                    ));
                }
                self.catalog.send(CatalogCmd::Finish(
                    a.id.clone(),
                    Finish {
                        ended_at_ms,
                        duration_ms: end.as_millis(),
                        state: RecordingState::CodecUnsupported,
                        file_sha256: None,
                        file_bytes: None,
                        codec: Some(a.codec.clone()),
                        stats_json: None,
                    },
                    None,
                ));
                tracing::info!(recording = %a.id, codec = %a.codec, reason, "captured call catalogued: codec not supported");
                // Seen, not recorded (no file): missed (issue #19).
                crate::app::assurance::note(crate::assurance::Verdict::Missed);
                self.catalog.send(CatalogCmd::Assurance(
                    a.id.clone(),
                    crate::assurance::Verdict::Missed,
                    serde_json::json!({
                        "verdict": "missed",
                        "reason": format!("codec {} cannot be decoded: no audio stored", a.codec),
                        "silent_channels": [],
                        "channels": [],
                        "clock": null,
                    }),
                ));
                RecordingState::CodecUnsupported
            }
        };
        self.done.push(RecordedCall {
            id: a.id,
            call_id: a.call_id,
            state: state.as_str().to_string(),
            codec: a.codec,
            capture_point: a.point,
        });
    }
}

impl Sink for Recorder {
    fn on_event(&mut self, ev: TrackerEvent) {
        match ev {
            TrackerEvent::Start {
                call,
                at,
                call_id,
                sip_src,
                parties,
                formats,
                hold,
                srtp,
                kind,
            } => self.start(
                call, at, call_id, sip_src, parties, formats, hold, srtp, kind,
            ),
            TrackerEvent::Media {
                call,
                at,
                formats,
                hold,
                srtp,
            } => {
                let Some(a) = self.calls.get_mut(&call) else {
                    return;
                };
                if let Kind::Audio(sink) = &mut a.kind {
                    sink.set_media(
                        Some(on_recording(a.start, at)),
                        channel_media(&formats, &hold, &srtp),
                    );
                }
            }
            TrackerEvent::Parties { call, parties } => {
                let Some(a) = self.calls.get(&call) else {
                    return;
                };
                self.catalog.send(CatalogCmd::Participants(
                    a.id.clone(),
                    parties
                        .iter()
                        .zip(["caller", "callee"])
                        .map(|(p, pid)| ParticipantRow {
                            participant_id: pid.into(),
                            name: p.name.clone(),
                            aor: p.aor.clone(),
                            other_names: Vec::new(),
                            other_aors: Vec::new(),
                            ..Default::default()
                        })
                        .collect(),
                ));
            }
            TrackerEvent::Flag {
                call,
                at,
                kind,
                detail,
            } => {
                let Some(a) = self.calls.get_mut(&call) else {
                    return;
                };
                a.events.push(EventRow {
                    at_ms: on_recording(a.start, at).as_millis(),
                    kind: kind.into(),
                    channel: None,
                    detail_json: Some(serde_json::json!({ "detail": detail })),
                });
            }
            TrackerEvent::End { call, at, reason } => self.end(call, at, &reason),
        }
    }

    fn on_rtp(&mut self, call: CallNo, ch: usize, ts: Mono, src: SocketAddr, pkt: &[u8]) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        if let Kind::Audio(sink) = &mut a.kind {
            sink.push_rtp(ch, on_recording(a.start, ts), src, pkt);
        }
    }

    fn on_foreign_rtp(&mut self, call: CallNo, ch: usize, ts: Mono, src: SocketAddr) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        if let Kind::Audio(sink) = &mut a.kind {
            sink.note_foreign(ch, on_recording(a.start, ts), src);
        }
    }

    fn on_tick(&mut self, now: Mono) {
        for a in self.calls.values_mut() {
            if let Kind::Audio(sink) = &mut a.kind {
                sink.tick(on_recording(a.start, now));
            }
        }
    }
}

/// What an import found.
#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    /// Calls recorded or catalogued.
    pub calls: Vec<RecordedCall>,
    /// Frames read.
    pub frames: u64,
    /// Engine counters.
    pub stats: EngineStats,
}

/// Record the calls in capture files, in order, as one continuous capture.
pub fn import_files(
    cfg: &Config,
    vault: Arc<dyn KeyWrap>,
    catalog: CatalogHandle,
    files: &[std::path::PathBuf],
) -> anyhow::Result<ImportReport> {
    import_files_with(cfg, vault, catalog, files, Vec::new())
}

/// [`import_files`] with RTP flows the operator declared (`--srtp-key`): recorded as
/// `unsignalled` when no SDP binds them, decrypted with the given keys.
pub fn import_files_with(
    cfg: &Config,
    vault: Arc<dyn KeyWrap>,
    catalog: CatalogHandle,
    files: &[std::path::PathBuf],
    declared: Vec<DeclaredFlow>,
) -> anyhow::Result<ImportReport> {
    let mut tcfg = tracker_config(cfg);
    tcfg.declared = declared;
    let mut engine = Engine::new(tcfg);
    let mut rec = Recorder::new(cfg.clone(), vault, catalog.clone());
    let mut frames = 0u64;
    let mut last_ts = Mono::ZERO;
    for f in files {
        let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let mut reader = PcapReader::new(std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("reading {}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        rec.set_capture_point(format!("file:{name}"));
        loop {
            match reader.next_frame() {
                Ok(Some(fr)) => {
                    frames += 1;
                    let ts = capture_time(fr.ts);
                    last_ts = last_ts.max(ts);
                    engine.push_frame(ts, fr.linktype, &fr.data, &mut rec);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "capture file ends in a damaged record; importing what came before");
                    break;
                }
            }
        }
    }
    engine.finish(last_ts, "end of capture file", &mut rec);
    // One syncfs makes every recording of the import durable before the report.
    if let Err(e) = crate::app::store::sync_fs(&cfg.storage.recordings_dir()) {
        tracing::error!(error = %e, "syncfs after import failed");
    }
    catalog.wait_idle_blocking();
    Ok(ImportReport {
        calls: rec.take_done(),
        frames,
        stats: engine.stats(),
    })
}

/// A frame from a live interface.
struct LiveFrame {
    /// Kernel capture timestamp, on the capture time axis.
    ts: Mono,
    linktype: u32,
    iface: usize,
    data: Vec<u8>,
}

/// Kernel counters of one interface.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IfaceStats {
    /// Interface name.
    pub interface: String,
    /// Frames the filter accepted.
    pub received: u64,
    /// Frames dropped because the capture buffer was full.
    pub dropped: u64,
    /// Frames dropped by the interface / driver.
    pub if_dropped: u64,
}

/// Live capture on `[capture] interfaces` until `stop` is set. Runs on the calling
/// thread (plus one reader thread per interface); returns when every call is closed.
pub fn run_live(
    cfg: Config,
    vault: Arc<dyn KeyWrap>,
    catalog: CatalogHandle,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<LiveFrame>(65_536);
    let stats: Arc<std::sync::Mutex<Vec<IfaceStats>>> = Arc::new(std::sync::Mutex::new(
        cfg.capture
            .interfaces
            .iter()
            .map(|i| IfaceStats {
                interface: i.clone(),
                ..IfaceStats::default()
            })
            .collect(),
    ));
    let mut readers = Vec::new();
    let mut caps = Vec::new();
    for name in &cfg.capture.interfaces {
        match open_live(&cfg, name) {
            Ok(c) => caps.push(c),
            Err(e) => {
                let _ = ready.send(Err(format!("{e:#}")));
                return Err(e);
            }
        }
    }
    let _ = ready.send(Ok(()));
    for ((idx, name), cap) in cfg.capture.interfaces.iter().enumerate().zip(caps) {
        let tx = tx.clone();
        let stop = stop.clone();
        let stats = stats.clone();
        let name = name.clone();
        readers.push(
            std::thread::Builder::new()
                .name(format!("capture-{name}"))
                .spawn(move || read_live(cap, idx, tx, stop, stats))?,
        );
    }
    drop(tx);
    tracing::info!(interfaces = ?cfg.capture.interfaces, filter = %cfg.capture.bpf_filter, "live capture started");
    let mut engine = Engine::new(tracker_config(&cfg));
    let mut rec = Recorder::new(cfg.clone(), vault, catalog.clone());
    let stats_every = Duration::from_secs(u64::from(cfg.capture.stats_interval_s));
    let clock = MonoClock::new();
    let mut last_stats = clock.now();
    let stats_file = cfg.storage.data_dir.join("capture-stats.json");
    let names = cfg.capture.interfaces.clone();
    // Ticks are on the capture time axis too (the kernel's timestamps are wall-clock
    // time since the Unix epoch), so a quiet link ends calls on the same clock.
    let now_ts = || {
        capture_time(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    };
    let mut cur_iface = usize::MAX;
    let mut set_point = |rec: &mut Recorder, i: usize| {
        if i != cur_iface {
            cur_iface = i;
            if let Some(n) = names.get(i) {
                rec.set_capture_point(format!("if:{n}"));
            }
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => {
                set_point(&mut rec, f.iface);
                engine.push_frame(f.ts, f.linktype, &f.data, &mut rec);
                // Drain a burst without re-checking the clock for each frame.
                for _ in 0..1024 {
                    let Ok(f) = rx.try_recv() else { break };
                    set_point(&mut rec, f.iface);
                    engine.push_frame(f.ts, f.linktype, &f.data, &mut rec);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        engine.tick(now_ts(), &mut rec);
        rec.take_done();
        if clock.now() - last_stats >= stats_every {
            last_stats = clock.now();
            write_stats(&stats, &engine, &stats_file);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    for r in readers {
        let _ = r.join();
    }
    // Frames still queued after the readers stopped.
    while let Ok(f) = rx.try_recv() {
        engine.push_frame(f.ts, f.linktype, &f.data, &mut rec);
    }
    engine.finish(now_ts(), "recorder stopped", &mut rec);
    if let Err(e) = crate::app::store::sync_fs(&cfg.storage.recordings_dir()) {
        tracing::error!(error = %e, "syncfs at capture stop failed");
    }
    write_stats(&stats, &engine, &stats_file);
    catalog.wait_idle_blocking();
    tracing::info!("live capture stopped");
    Ok(())
}

fn write_stats(stats: &std::sync::Mutex<Vec<IfaceStats>>, engine: &Engine, path: &Path) {
    let ifs = stats.lock().map(|s| s.clone()).unwrap_or_default();
    for s in &ifs {
        tracing::info!(
            interface = %s.interface,
            received = s.received,
            kernel_dropped = s.dropped,
            if_dropped = s.if_dropped,
            calls = engine.recording_calls(),
            "capture statistics"
        );
        if s.dropped > 0 || s.if_dropped > 0 {
            tracing::warn!(interface = %s.interface, dropped = s.dropped, if_dropped = s.if_dropped, "kernel dropped captured packets: recordings may have gaps");
        }
    }
    let doc = serde_json::json!({
        "at_unix_ms": chrono::Utc::now().timestamp_millis(),
        "interfaces": ifs,
        "engine": engine.stats(),
        "recording_calls": engine.recording_calls(),
    });
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, doc.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::debug!(path = %path.display(), "could not write capture statistics");
    }
}

fn open_live(cfg: &Config, name: &str) -> anyhow::Result<pcap::Capture<pcap::Active>> {
    let c = &cfg.capture;
    let mut cap = pcap::Capture::from_device(name)
        .with_context(|| format!("capture interface {name}"))?
        .promisc(c.promiscuous)
        .snaplen(i32::try_from(c.snaplen).unwrap_or(65_535))
        .buffer_size(i32::try_from(c.buffer_mb.saturating_mul(1024 * 1024)).unwrap_or(i32::MAX))
        // Not immediate mode: the kernel hands over blocks of frames at least every 20 ms
        // (TPACKET_V3 block timeout), far cheaper per packet than one wake-up each; 20 ms
        // is well inside the playout delay.
        .immediate_mode(false)
        .timeout(20)
        .open()
        .with_context(|| format!("opening capture on {name} (needs root or CAP_NET_RAW)"))?;
    if !c.bpf_filter.trim().is_empty() {
        cap.filter(&c.bpf_filter, true)
            .with_context(|| format!("BPF filter `{}`", c.bpf_filter))?;
    }
    Ok(cap)
}

fn read_live(
    mut cap: pcap::Capture<pcap::Active>,
    iface: usize,
    tx: std::sync::mpsc::SyncSender<LiveFrame>,
    stop: Arc<AtomicBool>,
    stats: Arc<std::sync::Mutex<Vec<IfaceStats>>>,
) {
    let linktype = cap.get_datalink().0 as u32;
    let clock = MonoClock::new();
    let mut last_stats = clock.now();
    let update = |cap: &mut pcap::Capture<pcap::Active>| {
        if let Ok(s) = cap.stats() {
            if let Ok(mut all) = stats.lock() {
                if let Some(e) = all.get_mut(iface) {
                    e.received = u64::from(s.received);
                    e.dropped = u64::from(s.dropped);
                    e.if_dropped = u64::from(s.if_dropped);
                }
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(p) => {
                let ts = capture_time(Duration::new(
                    u64::try_from(p.header.ts.tv_sec).unwrap_or(0),
                    u32::try_from(p.header.ts.tv_usec).unwrap_or(0).min(999_999) * 1000,
                ));
                let f = LiveFrame {
                    ts,
                    linktype,
                    iface,
                    data: p.data.to_vec(),
                };
                if tx.send(f).is_err() {
                    break;
                }
            }
            Err(pcap::Error::TimeoutExpired) => {}
            Err(e) => {
                tracing::error!(iface, error = %e, "capture read failed; interface stopped");
                break;
            }
        }
        if clock.now() - last_stats >= Duration::from_secs(1) {
            last_stats = clock.now();
            update(&mut cap);
        }
    }
    update(&mut cap);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_keys_parse_and_reject() {
        let f = parse_flow_key(
            "10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz",
        )
        .unwrap();
        assert_eq!(f.sender, "10.1.1.1:10000".parse::<SocketAddr>().unwrap());
        let p = f.srtp.unwrap();
        assert_eq!(p.suite, crate::media::SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(p.keys[0].key.expose(), b"i know all your ");
        for bad in [
            "10.1.1.1=AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz",
            "10.1.1.1:10000 AES_CM_128_HMAC_SHA1_80:inline:aSBr",
            "10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:c2hvcnQ=",
            "10.1.1.1:10000=NULL_CIPHER:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz",
        ] {
            assert!(parse_flow_key(bad).is_err(), "{bad}");
        }
    }
}
