//! TCP stream reassembly for SIP over TCP seen on a mirror port.
//!
//! One [`TcpStreams`] keeps, per direction of a connection, the next expected sequence
//! number, a bounded set of out-of-order segments and a [`StreamFramer`] that cuts the
//! byte stream into SIP messages. A stream picked up mid-connection (capture started
//! after the SYN) resynchronises on the first segment that starts with a SIP start line.
//! Memory is bounded: per-stream buffered bytes, number of streams, idle timeout on
//! packet time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Mono;

use crate::sip::StreamFramer;

/// Limits of the reassembler.
#[derive(Debug, Clone, Copy)]
pub struct TcpConfig {
    /// Most streams (one per direction) followed at once; the idlest is dropped beyond.
    pub max_streams: usize,
    /// Out-of-order bytes buffered per stream before the stream skips the hole.
    pub max_ooo_bytes: usize,
    /// A stream silent this long is forgotten.
    pub idle_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_streams: 4096,
            max_ooo_bytes: 256 * 1024,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpStats {
    /// SIP messages framed out of TCP streams.
    pub messages: u64,
    /// Holes skipped (lost segments that never came).
    pub gaps: u64,
    /// Streams reset because the byte stream did not frame as SIP.
    pub resyncs: u64,
    /// Streams dropped for the table limit or idleness.
    pub evicted: u64,
}

#[derive(Debug)]
struct Stream {
    next: Option<u32>,
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
    framer: StreamFramer,
    /// Waiting for a segment that starts a SIP message.
    resync: bool,
    last: Mono,
}

/// Whether `p` starts like a SIP request or status line.
pub fn looks_like_sip(p: &[u8]) -> bool {
    let p = p.get(..p.len().min(64)).unwrap_or(p);
    if p.starts_with(b"SIP/2.0 ") {
        return true;
    }
    let Some(sp) = p.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (m, rest) = p.split_at(sp);
    !m.is_empty()
        && m.iter().all(|b| b.is_ascii_uppercase())
        && (rest
            .get(1..5)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"sip:"))
            || rest
                .get(1..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"sips:"))
            || rest
                .get(1..5)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"tel:")))
}

/// Reassembles the SIP streams of many connections.
#[derive(Debug)]
pub struct TcpStreams {
    cfg: TcpConfig,
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    stats: TcpStats,
    last_expire: Mono,
}

/// `a < b` in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl TcpStreams {
    /// An empty table.
    pub fn new(cfg: TcpConfig) -> Self {
        TcpStreams {
            cfg,
            streams: HashMap::new(),
            stats: TcpStats::default(),
            last_expire: Mono::ZERO,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Streams currently followed.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is followed.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Feed one segment; complete SIP messages (raw bytes) are appended to `out`.
    /// Segments of connections not yet followed start a stream only if they begin with a
    /// SIP start line (or carry SYN).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts: Mono,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        syn: bool,
        fin_or_rst: bool,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) {
        if ts >= self.last_expire.saturating_add(Duration::from_secs(5)) {
            self.last_expire = ts;
            let idle = self.cfg.idle_timeout;
            let before = self.streams.len();
            self.streams
                .retain(|_, s| ts.saturating_duration_since(s.last) < idle);
            self.stats.evicted += (before - self.streams.len()) as u64;
        }
        let key = (src, dst);
        if !self.streams.contains_key(&key) {
            if !syn && !looks_like_sip(payload) {
                return;
            }
            if self.streams.len() >= self.cfg.max_streams {
                if let Some(k) = self
                    .streams
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| *k)
                {
                    self.streams.remove(&k);
                    self.stats.evicted += 1;
                }
            }
            self.streams.insert(
                key,
                Stream {
                    next: if syn { Some(seq.wrapping_add(1)) } else { None },
                    ooo: BTreeMap::new(),
                    ooo_bytes: 0,
                    framer: StreamFramer::new(),
                    resync: false,
                    last: ts,
                },
            );
            if syn {
                return;
            }
        }
        let Some(st) = self.streams.get_mut(&key) else {
            return;
        };
        st.last = ts;
        if !payload.is_empty() {
            let next = *st.next.get_or_insert(seq);
            if seq == next {
                Self::deliver(st, &mut self.stats, payload, out);
                st.next = Some(seq.wrapping_add(payload.len() as u32));
                Self::drain_ooo(st, &mut self.stats, out);
            } else if seq_lt(seq, next) {
                // Retransmission, possibly overlapping new data.
                let skip = next.wrapping_sub(seq) as usize;
                if let Some(new) = payload.get(skip..).filter(|n| !n.is_empty()) {
                    Self::deliver(st, &mut self.stats, new, out);
                    st.next = Some(next.wrapping_add(new.len() as u32));
                    Self::drain_ooo(st, &mut self.stats, out);
                }
            } else {
                if !st.ooo.contains_key(&seq) {
                    st.ooo_bytes += payload.len();
                    st.ooo.insert(seq, payload.to_vec());
                }
                if st.ooo_bytes > self.cfg.max_ooo_bytes {
                    // Give up on the hole: skip to the first buffered segment, and resync.
                    self.stats.gaps += 1;
                    if let Some(first) = Self::first_ooo(st, next) {
                        st.next = Some(first);
                        st.framer = StreamFramer::new();
                        st.resync = true;
                        Self::drain_ooo(st, &mut self.stats, out);
                    }
                }
            }
        }
        if fin_or_rst {
            self.streams.remove(&key);
        }
    }

    fn first_ooo(st: &Stream, next: u32) -> Option<u32> {
        st.ooo.keys().copied().min_by_key(|k| k.wrapping_sub(next))
    }

    fn drain_ooo(st: &mut Stream, stats: &mut TcpStats, out: &mut Vec<Vec<u8>>) {
        for _ in 0..10_000 {
            let Some(next) = st.next else { return };
            let Some(first) = Self::first_ooo(st, next) else {
                return;
            };
            if seq_lt(next, first) {
                return; // still a hole
            }
            let Some(data) = st.ooo.remove(&first) else {
                return;
            };
            st.ooo_bytes = st.ooo_bytes.saturating_sub(data.len());
            let skip = next.wrapping_sub(first) as usize;
            if let Some(new) = data.get(skip..).filter(|n| !n.is_empty()) {
                Self::deliver(st, stats, new, out);
                st.next = Some(next.wrapping_add(new.len() as u32));
            }
        }
    }

    fn deliver(st: &mut Stream, stats: &mut TcpStats, data: &[u8], out: &mut Vec<Vec<u8>>) {
        if st.resync {
            if !looks_like_sip(data) {
                return;
            }
            st.resync = false;
        }
        st.framer.push(data);
        for _ in 0..1000 {
            match st.framer.next_frame() {
                Ok(Some(frame)) => {
                    stats.messages += 1;
                    out.push(frame);
                }
                Ok(None) => return,
                Err(_) => {
                    stats.resyncs += 1;
                    st.framer = StreamFramer::new();
                    st.resync = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn split_and_reordered_segments() {
        let (a, b) = (sa("10.0.0.1:1000"), sa("10.0.0.2:5060"));
        let mut data = MSG.to_vec();
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(MSG);
        let mut t = TcpStreams::new(TcpConfig::default());
        let mut out = Vec::new();
        t.push(Mono::ZERO, a, b, 99, true, false, b"", &mut out);
        let parts: Vec<(u32, &[u8])> =
            vec![(100, &data[..10]), (110, &data[10..50]), (150, &data[50..])];
        // deliver 0, 2, 1 (1 retransmitted)
        t.push(
            Mono::ZERO,
            a,
            b,
            parts[0].0,
            false,
            false,
            parts[0].1,
            &mut out,
        );
        t.push(
            Mono::ZERO,
            a,
            b,
            parts[2].0,
            false,
            false,
            parts[2].1,
            &mut out,
        );
        assert!(out.is_empty());
        t.push(
            Mono::ZERO,
            a,
            b,
            parts[1].0,
            false,
            false,
            parts[1].1,
            &mut out,
        );
        t.push(
            Mono::ZERO,
            a,
            b,
            parts[1].0,
            false,
            false,
            parts[1].1,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], MSG);
    }

    #[test]
    fn mid_stream_pickup_and_garbage() {
        let (a, b) = (sa("10.0.0.1:1000"), sa("10.0.0.2:5060"));
        let mut t = TcpStreams::new(TcpConfig::default());
        let mut out = Vec::new();
        t.push(
            Mono::ZERO,
            a,
            b,
            5,
            false,
            false,
            b"tail of something",
            &mut out,
        );
        assert!(t.is_empty());
        t.push(Mono::ZERO, a, b, 500, false, false, MSG, &mut out);
        assert_eq!(out.len(), 1);
        // A message without Content-Length poisons; the stream resyncs on the next one.
        t.push(
            Mono::ZERO,
            a,
            b,
            500 + MSG.len() as u32,
            false,
            false,
            b"BYE sip:x SIP/2.0\r\n\r\n",
            &mut out,
        );
        let s = 500 + MSG.len() as u32 + 21;
        t.push(Mono::ZERO, a, b, s, false, false, MSG, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn bounded() {
        let mut t = TcpStreams::new(TcpConfig {
            max_streams: 4,
            max_ooo_bytes: 1000,
            idle_timeout: Duration::from_secs(10),
        });
        let mut out = Vec::new();
        for p in 0..50u16 {
            let a = SocketAddr::new("10.0.0.1".parse().unwrap(), 1000 + p);
            t.push(
                Mono::ZERO,
                a,
                sa("10.0.0.2:5060"),
                0,
                false,
                false,
                MSG,
                &mut out,
            );
            for i in 0..20u32 {
                t.push(
                    Mono::ZERO,
                    a,
                    sa("10.0.0.2:5060"),
                    10_000 + i * 100,
                    false,
                    false,
                    &[b'x'; 100],
                    &mut out,
                );
            }
        }
        assert!(t.len() <= 4);
        t.push(
            Mono::from_secs(100),
            sa("10.9.9.9:1"),
            sa("10.0.0.2:5060"),
            0,
            false,
            false,
            b"x",
            &mut out,
        );
        assert!(t.len() <= 4);
    }
}
