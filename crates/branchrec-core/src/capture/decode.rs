//! Link and network layer decoding of captured frames down to a UDP datagram or a TCP
//! segment: Ethernet, 802.1Q/802.1ad VLAN tags (any depth, so QinQ), Linux cooked capture
//! (SLL and SLL2), raw IP and BSD loopback, IPv4 and IPv6 (extension headers skipped),
//! IPv4 and IPv6 fragment reassembly, IP-in-IP (protocol 4 and 41) and GRE (plain,
//! transparent Ethernet bridging, ERSPAN type I/II/III) decapsulation.
//!
//! Sans-IO: frames and their capture time in, segments out. Fragment reassembly keeps
//! bounded state whose timeouts run on the packets' own timestamps. Its memory is
//! accounted (payload plus [`FRAGMENT_OVERHEAD`] per fragment) per datagram
//! (`max_datagram_bytes`) and over the table (`max_total_bytes`); fragments are kept in
//! a `BTreeMap` by offset with the covered prefix tracked incrementally, so n fragments
//! of one datagram cost O(n log n), whatever their order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::time::Mono;

/// Link types (LINKTYPE_* numbers) the decoder understands.
pub mod linktype {
    /// BSD loopback (4-byte address family).
    pub const NULL: u32 = 0;
    /// Ethernet.
    pub const ETHERNET: u32 = 1;
    /// Raw IP (OpenBSD numbering).
    pub const RAW_12: u32 = 12;
    /// Raw IP.
    pub const RAW: u32 = 101;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u32 = 276;
}

/// Largest reassembled IP datagram.
const MAX_DATAGRAM: usize = 65_535;
/// Deepest nesting of tunnels we follow.
const MAX_DEPTH: u8 = 4;

/// Transport of a decoded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A TCP segment.
    Tcp {
        /// Sequence number of the first payload byte (of the SYN when `syn`).
        seq: u32,
        /// SYN flag.
        syn: bool,
        /// FIN flag.
        fin: bool,
        /// RST flag.
        rst: bool,
    },
}

/// A decoded UDP datagram or TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// UDP or TCP (with its sequence number and flags).
    pub transport: Transport,
    /// Transport payload (owned when it came out of fragment reassembly).
    pub payload: Cow<'a, [u8]>,
}

/// Counters of what the decoder saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    /// Frames offered.
    pub frames: u64,
    /// UDP datagrams and TCP segments produced.
    pub segments: u64,
    /// Frames that are not IP (ARP, LLDP, …) or carry neither UDP nor TCP.
    pub other: u64,
    /// Frames cut short or with inconsistent lengths.
    pub malformed: u64,
    /// Frames of a link type we do not decode.
    pub unsupported_linktype: u64,
    /// IP fragments received.
    pub fragments: u64,
    /// Datagrams rebuilt from fragments.
    pub reassembled: u64,
    /// Incomplete datagrams dropped (timeout, overlap, table full).
    pub fragments_dropped: u64,
    /// Packets taken out of a tunnel (IP-in-IP, GRE, ERSPAN).
    pub decapsulated: u64,
}

/// Limits of the fragment table.
#[derive(Debug, Clone, Copy)]
pub struct DecoderConfig {
    /// Most datagrams being reassembled at once; the oldest is dropped beyond.
    pub max_fragmented: usize,
    /// An incomplete datagram is dropped this long after its first fragment.
    pub fragment_timeout: Duration,
    /// Accounted memory (payload + [`FRAGMENT_OVERHEAD`] per fragment) one datagram may
    /// hold; beyond it the datagram is dropped (tiny-fragment floods).
    pub max_datagram_bytes: usize,
    /// Accounted memory of the whole table; beyond it the oldest datagrams are dropped.
    pub max_total_bytes: usize,
}

/// What one held fragment is charged besides its payload (map node, `Vec` header).
pub const FRAGMENT_OVERHEAD: usize = 64;

fn frag_cost(len: usize) -> usize {
    len.saturating_add(FRAGMENT_OVERHEAD)
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_fragmented: 1024,
            fragment_timeout: Duration::from_secs(30),
            // A 64 KiB datagram in 1480-byte fragments costs ≈ 68 KiB; 8-byte fragments
            // would cost 450 KiB.
            max_datagram_bytes: 4 * MAX_DATAGRAM,
            max_total_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Debug)]
struct FragEntry {
    first_seen: Mono,
    /// Bytes by offset (of two fragments at one offset the longer is kept).
    parts: BTreeMap<usize, Vec<u8>>,
    /// Total payload length once the last fragment was seen.
    total: Option<usize>,
    /// Accounted memory ([`frag_cost`] per part).
    bytes: usize,
    /// Bytes `0..covered` are all present in the parts with offsets `..=cursor`.
    covered: usize,
    /// The largest offset folded into `covered` (`None`: none yet).
    cursor: Option<usize>,
}

impl FragEntry {
    /// Fold the parts that now touch the covered prefix into it; each part is folded
    /// once over the datagram's life, so this is O(log n) amortised per fragment.
    fn advance(&mut self) {
        loop {
            let next = match self.cursor {
                None => self.parts.range(..).next(),
                Some(c) => self
                    .parts
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next(),
            };
            match next {
                Some((&o, d)) if o <= self.covered => {
                    self.covered = self.covered.max(o + d.len());
                    self.cursor = Some(o);
                }
                _ => return,
            }
        }
    }
}

/// Decodes frames into segments; owns the fragment table.
#[derive(Debug)]
pub struct Decoder {
    cfg: DecoderConfig,
    frags: HashMap<FragKey, FragEntry>,
    stats: DecodeStats,
    last_expire: Mono,
    /// Accounted memory of `frags`.
    frag_bytes: usize,
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

enum Net<'a> {
    V4(&'a [u8]),
    V6(&'a [u8]),
    Eth(&'a [u8]),
}

impl Decoder {
    /// A decoder with the given limits.
    pub fn new(cfg: DecoderConfig) -> Self {
        Decoder {
            cfg,
            frags: HashMap::new(),
            stats: DecodeStats::default(),
            last_expire: Mono::ZERO,
            frag_bytes: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Datagrams currently waiting for fragments.
    pub fn pending_fragments(&self) -> usize {
        self.frags.len()
    }

    /// Accounted memory of the fragment table.
    pub fn fragment_bytes(&self) -> usize {
        self.frag_bytes
    }

    /// Drop an incomplete datagram (counted).
    fn drop_datagram(&mut self, key: &FragKey) {
        if let Some(e) = self.frags.remove(key) {
            self.frag_bytes = self.frag_bytes.saturating_sub(e.bytes);
            self.stats.fragments_dropped += 1;
        }
    }

    /// Drop the oldest incomplete datagram other than `keep` (counted); false if none.
    fn drop_oldest(&mut self, keep: &FragKey) -> bool {
        let old = self
            .frags
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, e)| e.first_seen)
            .map(|(k, _)| k.clone());
        match old {
            Some(k) => {
                self.drop_datagram(&k);
                true
            }
            None => false,
        }
    }

    /// Decode one frame captured at `ts` on a link of type `linktype`. `None` for
    /// anything that is not (yet) a UDP datagram or TCP segment.
    pub fn decode<'a>(&mut self, ts: Mono, linktype: u32, frame: &'a [u8]) -> Option<Segment<'a>> {
        self.stats.frames += 1;
        if ts >= self.last_expire.saturating_add(Duration::from_secs(1)) || ts < self.last_expire {
            self.expire(ts);
            self.last_expire = ts;
        }
        let net = match linktype {
            linktype::ETHERNET => Net::Eth(frame),
            linktype::RAW | linktype::RAW_12 => match frame.first().map(|b| b >> 4) {
                Some(4) => Net::V4(frame),
                Some(6) => Net::V6(frame),
                _ => return self.other(),
            },
            linktype::IPV4 => Net::V4(frame),
            linktype::IPV6 => Net::V6(frame),
            linktype::NULL => {
                let fam = frame.get(..4)?;
                let fam = u32::from_le_bytes(fam.try_into().ok()?)
                    .min(u32::from_be_bytes(fam.try_into().ok()?));
                let rest = frame.get(4..)?;
                match fam {
                    2 => Net::V4(rest),
                    24 | 28 | 30 => Net::V6(rest),
                    _ => return self.other(),
                }
            }
            linktype::LINUX_SLL => {
                let Some(proto) = be16(frame, 14) else {
                    return self.malformed();
                };
                return self.ethertype(ts, proto, frame.get(16..)?, 0);
            }
            linktype::LINUX_SLL2 => {
                let Some(proto) = be16(frame, 0) else {
                    return self.malformed();
                };
                return self.ethertype(ts, proto, frame.get(20..)?, 0);
            }
            _ => {
                self.stats.unsupported_linktype += 1;
                return None;
            }
        };
        let seg = match net {
            Net::Eth(f) => self.ethernet(ts, f, 0),
            Net::V4(p) => self.ipv4(ts, p, 0),
            Net::V6(p) => self.ipv6(ts, p, 0),
        };
        if seg.is_some() {
            self.stats.segments += 1;
        }
        seg
    }

    fn other<T>(&mut self) -> Option<T> {
        self.stats.other += 1;
        None
    }

    fn malformed<T>(&mut self) -> Option<T> {
        self.stats.malformed += 1;
        None
    }

    fn ethernet<'a>(&mut self, ts: Mono, f: &'a [u8], depth: u8) -> Option<Segment<'a>> {
        let Some(et) = be16(f, 12) else {
            return self.malformed();
        };
        let Some(rest) = f.get(14..) else {
            return self.malformed();
        };
        self.ethertype(ts, et, rest, depth)
    }

    fn ethertype<'a>(
        &mut self,
        ts: Mono,
        mut et: u16,
        mut rest: &'a [u8],
        depth: u8,
    ) -> Option<Segment<'a>> {
        // 802.1Q, 802.1ad and the old 0x9100 QinQ tag: 2 bytes TCI then the next type.
        let mut tags = 0;
        while matches!(et, 0x8100 | 0x88a8 | 0x9100 | 0x9200) {
            tags += 1;
            if tags > 8 {
                return self.malformed();
            }
            let Some(next) = be16(rest, 2) else {
                return self.malformed();
            };
            et = next;
            rest = rest.get(4..)?;
        }
        match et {
            0x0800 => self.ipv4(ts, rest, depth),
            0x86dd => self.ipv6(ts, rest, depth),
            _ => self.other(),
        }
    }

    fn ipv4<'a>(&mut self, ts: Mono, p: &'a [u8], depth: u8) -> Option<Segment<'a>> {
        let Some(&vihl) = p.first() else {
            return self.malformed();
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return self.malformed();
        }
        let Some(total) = be16(p, 2).map(usize::from) else {
            return self.malformed();
        };
        // Some captures (TSO offload) carry total length 0; then trust the frame.
        let end = if total == 0 {
            p.len()
        } else {
            total.min(p.len())
        };
        if end < ihl {
            return self.malformed();
        }
        let id = u32::from(be16(p, 4)?);
        let frag = be16(p, 6)?;
        let more = frag & 0x2000 != 0;
        let offset = usize::from(frag & 0x1fff) * 8;
        let proto = *p.get(9)?;
        let src = IpAddr::V4(Ipv4Addr::from(be32(p, 12)?));
        let dst = IpAddr::V4(Ipv4Addr::from(be32(p, 16)?));
        let payload = p.get(ihl..end)?;
        if more || offset > 0 {
            let key = FragKey {
                src,
                dst,
                id,
                proto,
            };
            let whole = self.fragment(ts, key, offset, more, payload)?;
            return self.transport_owned(ts, src, dst, proto, whole, depth);
        }
        self.transport(ts, src, dst, proto, payload, depth)
    }

    fn ipv6<'a>(&mut self, ts: Mono, p: &'a [u8], depth: u8) -> Option<Segment<'a>> {
        if p.first().map(|b| b >> 4) != Some(6) || p.len() < 40 {
            return self.malformed();
        }
        let plen = usize::from(be16(p, 4)?);
        let mut next = *p.get(6)?;
        let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?));
        let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?));
        let end = if plen == 0 {
            p.len()
        } else {
            (40 + plen).min(p.len())
        };
        let mut off = 40;
        for _ in 0..16 {
            match next {
                // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
                0 | 43 | 60 | 135 | 139 | 140 => {
                    let Some(&n) = p.get(off) else {
                        return self.malformed();
                    };
                    let len = (usize::from(*p.get(off + 1)?) + 1) * 8;
                    next = n;
                    off += len;
                }
                // Authentication header: length in 4-octet units minus 2.
                51 => {
                    let Some(&n) = p.get(off) else {
                        return self.malformed();
                    };
                    let len = (usize::from(*p.get(off + 1)?) + 2) * 4;
                    next = n;
                    off += len;
                }
                44 => {
                    let Some(&n) = p.get(off) else {
                        return self.malformed();
                    };
                    let fo = be16(p, off + 2)?;
                    let id = be32(p, off + 4)?;
                    let offset = usize::from(fo & 0xfff8);
                    let more = fo & 1 != 0;
                    let Some(payload) = p.get(off + 8..end) else {
                        return self.malformed();
                    };
                    if !more && offset == 0 {
                        // Atomic fragment (RFC 6946).
                        return self.transport(ts, src, dst, n, payload, depth);
                    }
                    let key = FragKey {
                        src,
                        dst,
                        id,
                        proto: n,
                    };
                    let whole = self.fragment(ts, key, offset, more, payload)?;
                    return self.transport_owned(ts, src, dst, n, whole, depth);
                }
                59 => return self.other(),
                _ => break,
            }
        }
        let Some(payload) = p.get(off..end) else {
            return self.malformed();
        };
        self.transport(ts, src, dst, next, payload, depth)
    }

    fn transport<'a>(
        &mut self,
        ts: Mono,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        p: &'a [u8],
        depth: u8,
    ) -> Option<Segment<'a>> {
        match proto {
            17 => {
                let sport = be16(p, 0)?;
                let dport = be16(p, 2)?;
                let ulen = usize::from(be16(p, 4)?);
                let end = if ulen >= 8 {
                    ulen.min(p.len())
                } else {
                    p.len()
                };
                let Some(payload) = p.get(8..end) else {
                    return self.malformed();
                };
                Some(Segment {
                    src: SocketAddr::new(src, sport),
                    dst: SocketAddr::new(dst, dport),
                    transport: Transport::Udp,
                    payload: Cow::Borrowed(payload),
                })
            }
            6 => {
                let sport = be16(p, 0)?;
                let dport = be16(p, 2)?;
                let seq = be32(p, 4)?;
                let doff = usize::from(*p.get(12)? >> 4) * 4;
                let flags = *p.get(13)?;
                if doff < 20 {
                    return self.malformed();
                }
                let Some(payload) = p.get(doff..) else {
                    return self.malformed();
                };
                Some(Segment {
                    src: SocketAddr::new(src, sport),
                    dst: SocketAddr::new(dst, dport),
                    transport: Transport::Tcp {
                        seq,
                        syn: flags & 0x02 != 0,
                        fin: flags & 0x01 != 0,
                        rst: flags & 0x04 != 0,
                    },
                    payload: Cow::Borrowed(payload),
                })
            }
            4 | 41 if depth < MAX_DEPTH => {
                self.stats.decapsulated += 1;
                if proto == 4 {
                    self.ipv4(ts, p, depth + 1)
                } else {
                    self.ipv6(ts, p, depth + 1)
                }
            }
            47 if depth < MAX_DEPTH => self.gre(ts, p, depth + 1),
            _ => self.other(),
        }
    }

    fn transport_owned(
        &mut self,
        ts: Mono,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        whole: Vec<u8>,
        depth: u8,
    ) -> Option<Segment<'static>> {
        let seg = self.transport(ts, src, dst, proto, &whole, depth)?;
        Some(Segment {
            src: seg.src,
            dst: seg.dst,
            transport: seg.transport,
            payload: Cow::Owned(seg.payload.into_owned()),
        })
    }

    fn gre<'a>(&mut self, ts: Mono, p: &'a [u8], depth: u8) -> Option<Segment<'a>> {
        let flags = be16(p, 0)?;
        let proto = be16(p, 2)?;
        if flags & 0x0007 > 1 {
            return self.other(); // unknown GRE version
        }
        let mut off = 4;
        let has_seq = flags & 0x1000 != 0;
        if flags & 0x8000 != 0 {
            off += 4; // checksum + reserved
        }
        if flags & 0x2000 != 0 {
            off += 4; // key
        }
        if has_seq {
            off += 4;
        }
        let Some(inner) = p.get(off..) else {
            return self.malformed();
        };
        self.stats.decapsulated += 1;
        match proto {
            0x0800 => self.ipv4(ts, inner, depth),
            0x86dd => self.ipv6(ts, inner, depth),
            0x6558 => self.ethernet(ts, inner, depth),
            // ERSPAN type II (type I has no sequence number and no ERSPAN header).
            0x88be => {
                if has_seq {
                    self.ethernet(ts, inner.get(8..)?, depth)
                } else {
                    self.ethernet(ts, inner, depth)
                }
            }
            // ERSPAN type III: 12-byte header, plus an 8-byte platform sub-header if O=1.
            0x22eb => {
                let o = inner.get(11).map_or(0, |b| b & 0x01);
                let skip = if o != 0 { 20 } else { 12 };
                self.ethernet(ts, inner.get(skip..)?, depth)
            }
            _ => self.other(),
        }
    }

    /// Add a fragment; returns the whole payload once every byte is there.
    fn fragment(
        &mut self,
        ts: Mono,
        key: FragKey,
        offset: usize,
        more: bool,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        if offset + data.len() > MAX_DATAGRAM || (more && data.is_empty()) {
            if self.frags.contains_key(&key) {
                self.drop_datagram(&key);
            } else {
                self.stats.fragments_dropped += 1;
            }
            return None;
        }
        if !self.frags.contains_key(&key) && self.frags.len() >= self.cfg.max_fragmented {
            self.drop_oldest(&key);
        }
        let e = self.frags.entry(key.clone()).or_insert_with(|| FragEntry {
            first_seen: ts,
            parts: BTreeMap::new(),
            total: None,
            bytes: 0,
            covered: 0,
            cursor: None,
        });
        if !more {
            let t = offset + data.len();
            if e.total.is_some_and(|old| old != t) {
                self.drop_datagram(&key);
                return None;
            }
            e.total = Some(t);
        }
        // A retransmitted (or shorter) fragment at a known offset adds nothing.
        let kept = e.parts.get(&offset).map(Vec::len);
        if kept.is_some_and(|k| k >= data.len()) {
            return None;
        }
        let delta = frag_cost(data.len()) - kept.map_or(0, frag_cost);
        if e.bytes + delta > self.cfg.max_datagram_bytes {
            self.drop_datagram(&key);
            return None;
        }
        // Room in the table: the oldest other datagrams go first.
        while self.frag_bytes + delta > self.cfg.max_total_bytes {
            if !self.drop_oldest(&key) {
                self.drop_datagram(&key);
                return None;
            }
        }
        let e = self.frags.get_mut(&key)?;
        e.bytes += delta;
        self.frag_bytes += delta;
        e.parts.insert(offset, data.to_vec());
        if e.cursor.is_some_and(|c| offset <= c) {
            // Behind the cursor: within the covered prefix already folded.
            e.covered = e.covered.max(offset + data.len());
        }
        e.advance();
        let total = e.total?;
        if e.covered < total {
            return None;
        }
        let e = self.frags.remove(&key)?;
        self.frag_bytes = self.frag_bytes.saturating_sub(e.bytes);
        let mut whole = vec![0u8; total];
        for (o, d) in &e.parts {
            let end = (o + d.len()).min(total);
            if let (Some(dst), Some(src)) =
                (whole.get_mut(*o..end), d.get(..end.saturating_sub(*o)))
            {
                dst.copy_from_slice(src);
            }
        }
        self.stats.reassembled += 1;
        Some(whole)
    }

    fn expire(&mut self, now: Mono) {
        let timeout = self.cfg.fragment_timeout;
        let before = self.frags.len();
        let mut freed = 0usize;
        self.frags.retain(|_, e| {
            let keep = now.saturating_duration_since(e.first_seen) < timeout
                && e.first_seen <= now.saturating_add(timeout);
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        self.frag_bytes = self.frag_bytes.saturating_sub(freed);
        self.stats.fragments_dropped += (before - self.frags.len()) as u64;
    }
}

#[cfg(test)]
mod tests;
