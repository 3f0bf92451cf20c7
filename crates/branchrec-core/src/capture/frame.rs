//! Frame builder: Ethernet (optionally VLAN/QinQ tagged) + IPv4/IPv6 + UDP/TCP, with IP
//! fragmentation and GRE/IP-in-IP encapsulation. Used by the tests to write captures of
//! known content and by `bench-capture` to generate traffic; checksums are left zero
//! (the decoder does not verify them, like the capture path of any passive recorder).

use std::net::{IpAddr, SocketAddr};

/// How to wrap the IP packet.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// VLAN ids, outermost first (two = QinQ with an 802.1ad outer tag).
    pub vlans: Vec<u16>,
}

/// The IP payload protocol and header.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    /// UDP.
    Udp,
    /// TCP with a sequence number and flags (PSH|ACK when `flags` is 0x18).
    Tcp {
        /// Sequence number.
        seq: u32,
        /// Flag byte.
        flags: u8,
    },
}

/// The transport header followed by `payload`.
pub fn l4(src: SocketAddr, dst: SocketAddr, kind: L4, payload: &[u8]) -> (u8, Vec<u8>) {
    let mut v = Vec::with_capacity(payload.len() + 20);
    v.extend(src.port().to_be_bytes());
    v.extend(dst.port().to_be_bytes());
    match kind {
        L4::Udp => {
            let len = u16::try_from(payload.len() + 8).unwrap_or(u16::MAX);
            v.extend(len.to_be_bytes());
            v.extend([0, 0]);
            v.extend(payload);
            (17, v)
        }
        L4::Tcp { seq, flags } => {
            v.extend(seq.to_be_bytes());
            v.extend(0u32.to_be_bytes());
            v.push(5 << 4);
            v.push(flags);
            v.extend(65535u16.to_be_bytes());
            v.extend([0, 0, 0, 0]);
            v.extend(payload);
            (6, v)
        }
    }
}

/// IPv4 header + payload; `frag` = (offset in bytes, more fragments).
pub fn ipv4(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    frag: (usize, bool),
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        return Vec::new();
    };
    let mut v = Vec::with_capacity(payload.len() + 20);
    v.push(0x45);
    v.push(0);
    v.extend(
        u16::try_from(payload.len() + 20)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    v.extend(id.to_be_bytes());
    let fo = ((frag.0 / 8) as u16 & 0x1fff) | if frag.1 { 0x2000 } else { 0 };
    v.extend(fo.to_be_bytes());
    v.push(64);
    v.push(proto);
    v.extend([0, 0]);
    v.extend(s.octets());
    v.extend(d.octets());
    v.extend(payload);
    v
}

/// IPv6 header (+ fragment header when `frag` is given: (offset, more, id)) + payload.
pub fn ipv6(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    frag: Option<(usize, bool, u32)>,
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        return Vec::new();
    };
    let mut v = Vec::with_capacity(payload.len() + 48);
    v.extend([0x60, 0, 0, 0]);
    let extra = if frag.is_some() { 8 } else { 0 };
    v.extend(
        u16::try_from(payload.len() + extra)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    v.push(if frag.is_some() { 44 } else { proto });
    v.push(64);
    v.extend(s.octets());
    v.extend(d.octets());
    if let Some((off, more, id)) = frag {
        v.push(proto);
        v.push(0);
        v.extend(((off as u16 & 0xfff8) | u16::from(more)).to_be_bytes());
        v.extend(id.to_be_bytes());
    }
    v.extend(payload);
    v
}

/// Ethernet frame around an IP packet.
pub fn ethernet(link: &Link, ip: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ip.len() + 22);
    v.extend([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    for (i, id) in link.vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && link.vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        v.extend(tpid.to_be_bytes());
        v.extend((id & 0x0fff).to_be_bytes());
    }
    let et: u16 = if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    v.extend(et.to_be_bytes());
    v.extend(ip);
    v
}

/// One or more Ethernet frames carrying `payload` from `src` to `dst`: IPv4 fragments of
/// at most `mtu` bytes of IP payload each when the datagram is bigger (`mtu` is rounded
/// down to a multiple of 8), IPv6 with fragment headers likewise.
pub fn frames(
    link: &Link,
    src: SocketAddr,
    dst: SocketAddr,
    kind: L4,
    payload: &[u8],
    ip_id: u16,
    mtu: usize,
) -> Vec<Vec<u8>> {
    let (proto, seg) = l4(src, dst, kind, payload);
    let mtu = (mtu / 8 * 8).max(8);
    let v6 = src.is_ipv6();
    if seg.len() <= mtu {
        let ip = if v6 {
            ipv6(src.ip(), dst.ip(), proto, None, &seg)
        } else {
            ipv4(src.ip(), dst.ip(), proto, ip_id, (0, false), &seg)
        };
        return vec![ethernet(link, &ip)];
    }
    seg.chunks(mtu)
        .enumerate()
        .map(|(i, c)| {
            let off = i * mtu;
            let more = off + c.len() < seg.len();
            let ip = if v6 {
                ipv6(
                    src.ip(),
                    dst.ip(),
                    proto,
                    Some((off, more, u32::from(ip_id))),
                    c,
                )
            } else {
                ipv4(src.ip(), dst.ip(), proto, ip_id, (off, more), c)
            };
            ethernet(link, &ip)
        })
        .collect()
}

/// A minimal RTP packet (version 2, no CSRC, no extension).
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + payload.len());
    v.push(0x80);
    v.push(pt | if marker { 0x80 } else { 0 });
    v.extend(seq.to_be_bytes());
    v.extend(ts.to_be_bytes());
    v.extend(ssrc.to_be_bytes());
    v.extend(payload);
    v
}

/// Wrap an IPv4 packet in GRE (protocol `proto`, optional sequence number) inside IPv4.
pub fn gre_v4(
    outer_src: IpAddr,
    outer_dst: IpAddr,
    proto: u16,
    seq: Option<u32>,
    inner: &[u8],
) -> Vec<u8> {
    let mut g = Vec::with_capacity(inner.len() + 8);
    g.extend(if seq.is_some() { 0x1000u16 } else { 0 }.to_be_bytes());
    g.extend(proto.to_be_bytes());
    if let Some(s) = seq {
        g.extend(s.to_be_bytes());
    }
    g.extend(inner);
    ipv4(outer_src, outer_dst, 47, 1, (0, false), &g)
}
