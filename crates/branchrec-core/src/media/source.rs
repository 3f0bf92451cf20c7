//! Media source binding: which transport source a recorded stream takes RTP/RTCP from.
//!
//! An RTP port is a known number in a known range, so anyone who can reach the box can
//! send to it. Each channel therefore has a [`SourceGate`]: it takes packets only from the
//! address (IP) the SRC announced in its SDP (`c=`/`m=` of the offer, updated by
//! re-INVITE or UPDATE). Everything else is foreign: dropped before SRTP and the timeline
//! and counted. Because only that source reaches the timeline, an SSRC change (or a
//! sequence jump) can only come from it.
//!
//! The port is not part of the binding: SRCs commonly send from another port than the one
//! they announce (no symmetric RTP) and open new sockets after a hold or a re-INVITE, and
//! a process on the SRC's own host is not what this defends against.
//!
//! Two policies ([`SourcePolicy`]):
//! - `Strict` (the default): only the SDP address.
//! - `Latch { window }` for SRCs behind NAT, whose SDP address is not the one their
//!   packets come from: during `window` after the SDP address was (re)announced, the
//!   first RTP packet from anywhere *latches* its address, which is then taken besides the
//!   SDP one. This is weaker (whoever sends first within the window wins) and opt-in.
//!
//! RTCP never latches (an SRC without RTCP-mux may send it from elsewhere); it is taken
//! from the same addresses as RTP.
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
    /// The SDP address, and the first RTP source within `window` of its announcement.
    Latch {
        /// How long after the offer any source may latch the channel.
        window: Duration,
    },
    /// Any source (for a caller that has bound the flow already, e.g. the capture
    /// tracker, which binds flows by their 5-tuple from SDP).
    Any,
}

/// What [`SourceGate::check`] decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// From the bound source (or it just latched).
    Accept,
    /// From another source: drop and count.
    Foreign,
}

/// One channel's source binding and its counter of foreign packets.
#[derive(Debug, Clone, Default)]
pub struct SourceGate {
    policy: SourcePolicy,
    /// The SDP address of the stream (`None`: unknown / unusable).
    announced: Option<IpAddr>,
    /// The address latched in the window ([`SourcePolicy::Latch`]).
    latched: Option<IpAddr>,
    /// When the current SDP address was announced (start of the latch window).
    since: Mono,
    /// Packets dropped as foreign.
    foreign: u64,
    /// The last foreign source seen (for the event/log).
    last_foreign: Option<SocketAddr>,
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, from a dual-stack socket) compares as IPv4.
fn canon(a: IpAddr) -> IpAddr {
    a.to_canonical()
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

    /// The stream's SDP address after a (re)negotiation at `now`. `None` (on hold with
    /// `0.0.0.0`, no usable address) keeps the current binding. A different address
    /// replaces the old one (whose packets are foreign from now on) and, with
    /// [`SourcePolicy::Latch`], opens a new latch window.
    pub fn set_announced(&mut self, now: Mono, addr: Option<SocketAddr>) {
        let Some(ip) = addr.map(|a| canon(a.ip())) else {
            return;
        };
        if self.announced == Some(ip) {
            return;
        }
        self.announced = Some(ip);
        self.latched = None;
        self.since = now;
    }

    /// Whether a packet from `from` at `now` may be recorded; `rtp` says whether it looks
    /// like RTP (only RTP latches a source, RTCP never does).
    #[inline]
    pub fn check(&mut self, now: Mono, from: SocketAddr, rtp: bool) -> SourceVerdict {
        let ip = canon(from.ip());
        if self.announced == Some(ip) || self.latched == Some(ip) {
            return SourceVerdict::Accept;
        }
        match self.policy {
            SourcePolicy::Any => return SourceVerdict::Accept,
            SourcePolicy::Latch { window }
                if rtp
                    && self.latched.is_none()
                    && now.saturating_duration_since(self.since) <= window =>
            {
                self.latched = Some(ip);
                return SourceVerdict::Accept;
            }
            _ => {}
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

    /// The address latched in the window, if any.
    pub fn latched(&self) -> Option<IpAddr> {
        self.latched
    }

    /// The SDP address in force.
    pub fn announced(&self) -> Option<IpAddr> {
        self.announced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn ms(n: u64) -> Mono {
        Mono::ZERO + Duration::from_millis(n)
    }

    #[test]
    fn strict_takes_the_sdp_address_only() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("127.0.0.1:40000")));
        // Another host, with the announced port or any other: foreign.
        assert_eq!(
            g.check(ms(1), a("127.0.0.2:40000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(2), a("127.0.0.2:51000"), false),
            SourceVerdict::Foreign
        );
        // The SDP address from any port (not symmetric RTP, new sockets after a hold).
        assert_eq!(
            g.check(ms(3), a("127.0.0.1:51000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(
            g.check(ms(4), a("127.0.0.1:40000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.foreign(), 2);
        assert_eq!(g.last_foreign(), Some(a("127.0.0.2:51000")));
        assert_eq!(g.latched(), None);
    }

    #[test]
    fn strict_without_an_sdp_address_takes_nothing() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), None);
        assert_eq!(
            g.check(ms(0), a("127.0.0.1:4000"), true),
            SourceVerdict::Foreign
        );
    }

    #[test]
    fn rtcp_never_latches() {
        let mut g = SourceGate::new(SourcePolicy::Latch {
            window: Duration::from_secs(2),
        });
        g.set_announced(ms(0), Some(a("192.168.1.20:4000")));
        assert_eq!(
            g.check(ms(1), a("203.0.113.5:4001"), false),
            SourceVerdict::Foreign
        );
        assert_eq!(g.latched(), None);
        assert_eq!(
            g.check(ms(2), a("203.0.113.5:4000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.latched(), Some(ip("203.0.113.5")));
        // RTCP from the latched address is taken.
        assert_eq!(
            g.check(ms(3), a("203.0.113.5:4001"), false),
            SourceVerdict::Accept
        );
    }

    #[test]
    fn reinvite_with_a_new_address_moves_the_stream_and_the_old_source_is_foreign() {
        let mut g = SourceGate::new(SourcePolicy::Strict);
        g.set_announced(ms(0), Some(a("10.0.0.1:4000")));
        assert_eq!(
            g.check(ms(1), a("10.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
        // Hold (no usable address): the binding stays.
        g.set_announced(ms(20), None);
        assert_eq!(
            g.check(ms(21), a("10.0.0.1:4000"), true),
            SourceVerdict::Accept
        );
        // Moved (SBC fail-over): the old source is foreign, the new one is taken.
        g.set_announced(ms(30), Some(a("10.0.0.7:6000")));
        assert_eq!(
            g.check(ms(31), a("10.0.0.1:4000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(32), a("10.0.0.7:6002"), true),
            SourceVerdict::Accept
        );
        assert_eq!(g.announced(), Some(ip("10.0.0.7")));
    }

    #[test]
    fn latch_takes_the_first_source_in_the_window_then_only_it_and_the_sdp_address() {
        let w = Duration::from_millis(2000);
        let mut g = SourceGate::new(SourcePolicy::Latch { window: w });
        // A private SDP address behind NAT; packets arrive from the public one.
        g.set_announced(ms(0), Some(a("192.168.1.20:4000")));
        assert_eq!(
            g.check(ms(500), a("203.0.113.5:61000"), true),
            SourceVerdict::Accept
        );
        assert_eq!(
            g.check(ms(600), a("198.51.100.9:4000"), true),
            SourceVerdict::Foreign
        );
        assert_eq!(
            g.check(ms(700), a("192.168.1.20:4000"), true),
            SourceVerdict::Accept
        );
        // A new address opens a new window; after it nothing but the SDP address is taken.
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
            g.check(ms(2), a("[::ffff:127.0.0.2]:4000"), true),
            SourceVerdict::Foreign
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
