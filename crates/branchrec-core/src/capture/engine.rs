//! One per-packet step from a captured frame to recording actions: decode → (TCP
//! reassembly) → SIP into the [`CallTracker`] or RTP bound to a call → [`Sink`].
//!
//! Sans-IO: the engine never reads a clock; time is the frames' capture timestamps (or
//! what the shell passes to [`Engine::tick`] when the link is quiet).

use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Mono;

use super::decode::{DecodeStats, Decoder, DecoderConfig, Transport};
use super::tcp::{looks_like_sip, TcpConfig, TcpStats, TcpStreams};
use super::tracker::{CallNo, CallTracker, Flow, TrackerConfig, TrackerEvent, TrackerStats};

/// Receives what the engine decided. Implemented by the recorder shell (and by tests).
pub trait Sink {
    /// A tracker event (start, media change, participants, flag, end).
    fn on_event(&mut self, ev: TrackerEvent);
    /// An RTP (or RTCP-mux) datagram of `call`'s channel `ch` from `src` (its bound
    /// source), captured at `ts`.
    fn on_rtp(&mut self, call: CallNo, ch: usize, ts: Mono, src: SocketAddr, pkt: &[u8]);
    /// A datagram towards `call`'s channel `ch` from `src`, which that channel's sender
    /// never announced: dropped (counted by the tracker); the recording may count it too.
    fn on_foreign_rtp(&mut self, _call: CallNo, _ch: usize, _ts: Mono, _src: SocketAddr) {}
    /// Time moved to `now` (at most every 100 ms of capture time).
    fn on_tick(&mut self, now: Mono);
}

/// Counters of the whole engine.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineStats {
    /// Link and network layer.
    pub decode: DecodeStats,
    /// TCP reassembly.
    pub tcp: TcpStats,
    /// Calls.
    pub tracker: TrackerStats,
    /// SIP datagrams / frames that failed to parse.
    pub sip_parse_errors: u64,
    /// UDP datagrams that were neither SIP nor bound RTP.
    pub udp_unbound: u64,
}

/// Decoder + TCP reassembly + call tracker.
pub struct Engine {
    decoder: Decoder,
    tcp: TcpStreams,
    tracker: CallTracker,
    sip_parse_errors: u64,
    udp_unbound: u64,
    last_tick: Option<Mono>,
    frames: Vec<Vec<u8>>,
}

impl Engine {
    /// An engine with these limits and rules.
    pub fn new(tracker: TrackerConfig) -> Self {
        Engine {
            decoder: Decoder::new(DecoderConfig::default()),
            tcp: TcpStreams::new(TcpConfig::default()),
            tracker: CallTracker::new(tracker),
            sip_parse_errors: 0,
            udp_unbound: 0,
            last_tick: None,
            frames: Vec::new(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            decode: self.decoder.stats().clone(),
            tcp: self.tcp.stats().clone(),
            tracker: self.tracker.stats().clone(),
            sip_parse_errors: self.sip_parse_errors,
            udp_unbound: self.udp_unbound,
        }
    }

    /// Calls being recorded.
    pub fn recording_calls(&self) -> usize {
        self.tracker.recording_calls()
    }

    /// Handle one captured frame.
    pub fn push_frame(&mut self, ts: Mono, linktype: u32, frame: &[u8], sink: &mut impl Sink) {
        if let Some(seg) = self.decoder.decode(ts, linktype, frame) {
            match seg.transport {
                Transport::Udp => {
                    let p: &[u8] = &seg.payload;
                    if looks_like_sip(p) {
                        match crate::sip::parse_datagram(p) {
                            Ok(msg) => self.tracker.on_sip(ts, seg.src, seg.dst, &msg),
                            Err(_) => self.sip_parse_errors += 1,
                        }
                        self.drain(sink);
                    } else if p.len() >= 12 && p.first().is_some_and(|b| b >> 6 == 2) {
                        let rtp = !crate::media::is_rtcp(p);
                        match self.tracker.classify_packet(ts, seg.src, seg.dst, rtp, p) {
                            Some(Flow::Bound(call, ch)) => {
                                self.drain(sink);
                                sink.on_rtp(call, ch, ts, seg.src, p);
                            }
                            Some(Flow::Foreign(call, ch)) => {
                                sink.on_foreign_rtp(call, ch, ts, seg.src);
                            }
                            None => self.udp_unbound += 1,
                        }
                    } else {
                        self.udp_unbound += 1;
                    }
                }
                Transport::Tcp { seq, syn, fin, rst }
                    if self
                        .tracker
                        .on_tls(ts, seg.src, seg.dst, &seg.payload, fin || rst) =>
                {
                    let _ = (seq, syn);
                    self.drain(sink);
                }
                Transport::Tcp { seq, syn, fin, rst } => {
                    let mut frames = std::mem::take(&mut self.frames);
                    self.tcp.push(
                        ts,
                        seg.src,
                        seg.dst,
                        seq,
                        syn,
                        fin || rst,
                        &seg.payload,
                        &mut frames,
                    );
                    for f in frames.drain(..) {
                        match crate::sip::parse_datagram(&f) {
                            Ok(msg) => self.tracker.on_sip(ts, seg.src, seg.dst, &msg),
                            Err(_) => self.sip_parse_errors += 1,
                        }
                        self.drain(sink);
                    }
                    self.frames = frames;
                }
            }
        }
        self.maybe_tick(ts, sink);
    }

    /// Let time pass without packets (live capture on a quiet link).
    pub fn tick(&mut self, now: Mono, sink: &mut impl Sink) {
        self.maybe_tick(now, sink);
    }

    /// End every call: the file ended or the recorder stops.
    pub fn finish(&mut self, now: Mono, reason: &str, sink: &mut impl Sink) {
        self.tracker.finish_all(now, reason);
        self.drain(sink);
    }

    fn maybe_tick(&mut self, ts: Mono, sink: &mut impl Sink) {
        let due = match self.last_tick {
            None => true,
            Some(t) => ts >= t.saturating_add(Duration::from_millis(100)),
        };
        if due {
            self.last_tick = Some(ts);
            self.tracker.on_time(ts);
            self.drain(sink);
            sink.on_tick(ts);
        }
    }

    fn drain(&mut self, sink: &mut impl Sink) {
        while let Some(ev) = self.tracker.poll_event() {
            sink.on_event(ev);
        }
    }
}
