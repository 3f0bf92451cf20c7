//! Media source binding: which transport source a recorded stream takes RTP/RTCP from.
//!
//! An RTP port is a known number in a known range, so anyone who can reach the box can
//! send to it. Each channel therefore has a [`SourceGate`]: it takes packets only from the
//! address the SRC announced in its SDP (`c=`/`m=` of the offer, updated by re-INVITE or
//! UPDATE) and, once the first RTP packet from there has arrived, only from exactly that
//! `ip:port` (the *bound* source). Everything else is foreign: dropped before SRTP and the
//! timeline and counted. Because only the bound source reaches the timeline, an SSRC change
//! (or a sequence jump) can only come from it.
//!
//! Two policies ([`SourcePolicy`]):
//! - `Strict` (the default): the bound source's IP is the SDP address. A port other than
//!   the announced one is accepted for the first packet (many SRCs send from another port
//!   than the one they receive on), and is then the only one.
//! - `Latch { window }` for SRCs behind NAT, whose SDP address is not the one their
//!   packets come from: during `window` after the (re)negotiation the first RTP packet
//!   from anywhere binds the channel; after it, only the SDP address can still bind. This
//!   is weaker (whoever sends first within the window wins) and is therefore opt-in.
//!
//! RTCP never binds (an SRC without RTCP-mux may send it from its RTCP port); it is taken
//! from the bound source, or from the SDP address before a source is bound.
//!
//! Sans-IO: addresses and time come in, verdicts go out; a check is a few comparisons.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::time::Mono;

/// How a channel picks the source it records (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePolicy {
    /// Only from the SDP address (the default).
    #[default]
    Strict,
    /// The first RTP source within `window` of a (re)negotiation, else the SDP address.
    Latch {
        /// How long after the offer any source may bind the channel.
        window: Duration,
    },
    /// Any source (for a caller that has bound the flow already, e.g. the capture
    /// tracker, which binds flows by their 5-tuple from SDP).
    Any,
}

/// What [`SourceGate::check`] decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// From the bound source (or it just became the bound source).
    Accept,
    /// From another source: drop and count.
    Foreign,
}

/// One channel's source binding and its counter of foreign packets.
#[derive(Debug, Clone, Default)]
pub struct SourceGate {
    policy: SourcePolicy,
    /// The SDP address of the stream (`None`: unknown / unusable).
    announced: Option<SocketAddr>,
    /// The source packets are taken from, once the first RTP packet has arrived.
    bound: Option<SocketAddr>,
    /// When the current description was negotiated (start of the latch window).
    since: Mono,
    /// Packets dropped as foreign.
    foreign: u64,
    /// The last foreign source seen (for the event/log).
    last_foreign: Option<SocketAddr>,
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, from a dual-stack socket) compares as IPv4.
fn canon(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

impl SourceGate {
    /// A gate with `policy` and no announced address yet.
    pub fn new(policy: SourcePolicy) -> Self {
        SourceGate {
            policy,
            ..SourceGate::default()
        }
    }

    /// The policy.
    pub fn policy(&self) -> SourcePolicy {
        self.policy
    }

    /// The stream's SDP address after a (re)negotiation at `now`. `None` (on hold,
    /// `0.0.0.0`, no usable address) keeps the current binding. A different address
    /// unbinds the channel: the next RTP packet from the new address binds it (and, with
    /// [`SourcePolicy::Latch`], a new window opens).
    pub fn set_announced(&mut self, now: Mono, addr: Option<SocketAddr>) {
        let Some(addr) = addr.map(canon) else {
            return;
        };
        if self.announced == Some(addr) && self.bound.is_some() {
            return;
        }
        self.announced = Some(addr);
        self.bound = None;
        self.since = now;
    }

    /// Whether a packet from `from` at `now` may be recorded; `rtp` says whether it looks
    /// like RTP (only RTP binds a source, RTCP never does).
    #[inline]
    pub fn check(&mut self, now: Mono, from: SocketAddr, rtp: bool) -> SourceVerdict {
        let from = canon(from);
        if self.bound == Some(from) || self.policy == SourcePolicy::Any {
            return SourceVerdict::Accept;
        }
        if self.bound.is_none() {
            let announced_ip = self.announced.is_some_and(|a| a.ip() == from.ip());
            let in_window = match self.policy {
                SourcePolicy::Latch { window } => {
                    now.saturating_duration_since(self.since) <= window
                }
                _ => false,
            };
            if announced_ip || in_window {
                if rtp {
                    self.bound = Some(from);
                }
                // RTCP before the first RTP packet: taken from the SDP address (or, in the
                // latch window, from anywhere), without binding.
                return SourceVerdict::Accept;
            }
        }
        self.note_foreign(from);
        SourceVerdict::Foreign
    }

    /// Count a packet from `from` that the caller decided is foreign (the capture
    /// tracker binds flows itself).
    pub fn note_foreign(&mut self, from: SocketAddr) {
        self.foreign += 1;
        self.last_foreign = Some(from);
    }

    /// Packets dropped as foreign so far.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// The last foreign source.
    pub fn last_foreign(&self) -> Option<SocketAddr> {
        self.last_foreign
    }

    /// The bound source, if any.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.bound
    }

    /// The SDP address in force.
    pub fn announced(&self) -> Option<SocketAddr> {
        self.announced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn ms(n: u64) -> Mono {
        Mono::ZERO + Duration::from_millis(n)
    }

    #[test]
    fn strict_binds_the_first_rtp_source_on_the_sdp_address_only() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("127.0.0.1:40000")));
        // Another host, before and after the real source: foreign.
        assert_eq!(
            g.check(ms(1), a("127.0.0.2:40000"), true),
            SourceVerdict::Foreign
        );
        // The SDP address from another port (not symmetric RTP): binds.
        assert_eq!(
            g.check(ms(2), a("127.0.0.1:51000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.bound(), Some(a("127.0.0.1:51000")));
        assert_eq!(
            g.check(ms(3), a("127.0.0.2:40000"), true),
            SourceVerdict::Foreign
        );
        // Same host, another port, once bound: foreign too (no second SSRC from elsewhere).
        assert_eq!(
            g.check(ms(4), a("127.0.0.1:40000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(5), a("127.0.0.1:51000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.foreign(), 3);
        assert_eq!(g.last_foreign(), Some(a("127.0.0.1:40000")));
    }

    #[test]
    fn strict_without_an_sdp_address_takes_nothing() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), None);
        assert_eq!(
            g.check(ms(0), a("127.0.0.1:4000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(g.bound(), None);
    }

    #[test]
    fn rtcp_never_binds() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("10.0.0.1:4000")));
        // RTCP from the RTCP port first: accepted (ignored later), not bound.
        assert_eq!(
            g.check(ms(1), a("10.0.0.1:4001"), false),
            SourceVerdict::Accept
        );
        assert_eq!(g.bound(), None);
        assert_eq!(
            g.check(ms(2), a("10.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.bound(), Some(a("10.0.0.1:4000")));
        // Foreign RTCP is foreign.
        assert_eq!(
            g.check(ms(3), a("10.0.0.9:4001"), false),
            SourceVerdict::Foreign
        );
    }

    #[test]
    fn reinvite_with_a_new_address_rebinds_and_the_old_source_is_foreign() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("10.0.0.1:4000")));
        assert_eq!(
            g.check(ms(1), a("10.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
        // Same description again (session refresh): the binding stays.
        g.set_announced(ms(10), Some(a("10.0.0.1:4000")));
        assert_eq!(g.bound(), Some(a("10.0.0.1:4000")));
        // Hold (no usable address): the binding stays.
        g.set_announced(ms(20), None);
        assert_eq!(
            g.check(ms(21), a("10.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
        // Moved (SBC fail-over): the old source is foreign, the new one binds.
        g.set_announced(ms(30), Some(a("10.0.0.7:6000")));
        assert_eq!(
            g.check(ms(31), a("10.0.0.1:4000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(32), a("10.0.0.7:6000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.bound(), Some(a("10.0.0.7:6000")));
    }

    #[test]
    fn latch_takes_the_first_source_in_the_window_then_only_the_sdp_address() {
        let w = Duration::from_millis(2000);
        let mut g = SourceGate::new(SourcePolicy::Latch { window: w });
        // A private SDP address behind NAT; packets arrive from the public one.
        g.set_announced(ms(0), Some(a("192.168.1.20:4000")));
        assert_eq!(
            g.check(ms(500), a("203.0.113.5:61000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.bound(), Some(a("203.0.113.5:61000")));
        assert_eq!(
            g.check(ms(600), a("198.51.100.9:4000"), true),
            SourceVerdict::Foreign
        );
        // A new description opens a new window; after it, nothing but the SDP address binds.
        g.set_announced(ms(10_000), Some(a("192.168.1.21:4000")));
        assert_eq!(
            g.check(ms(12_001), a("203.0.113.5:61000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(12_002), a("192.168.1.21:4002"), true),
            SourceVerdict::Accept
        );
    }

    #[test]
    fn ipv4_mapped_sources_compare_as_ipv4() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("127.0.0.1:4000")));
        assert_eq!(
            g.check(ms(1), a("[::ffff:127.0.0.1]:4000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(
            g.check(ms(2), a("127.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
    }

    #[test]
    fn any_accepts_everything() {
        let mut g = SourceGate::new(SourcePolicy::Any);
        assert_eq!(
            g.check(ms(0), a("127.0.0.2:1"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.foreign(), 0);
    }
}
