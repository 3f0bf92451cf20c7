//! Limits against one peer (issue #12): what a single source address not authenticated
//! by TLS may take — a request rate (token bucket), sessions not yet confirmed by ACK,
//! and open TCP connections (in total and per source).
//!
//! Sans-IO: the shell asks before it hands a datagram to the SIP core, before it offers a
//! session for recording and before it serves an accepted connection, and tells when
//! sessions and connections end. Every table is bounded; refusals are counted.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::time::Mono;

/// The limits (from `[sip.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Sustained SIP messages per second per source.
    pub rate_per_s: u32,
    /// Burst allowance per source (bucket size).
    pub burst: u32,
    /// Sessions offered but not yet confirmed by ACK, per source.
    pub max_pending_sessions: usize,
    /// Plain TCP connections open at once, in total.
    pub max_tcp_connections: usize,
    /// Plain TCP connections open at once from one source.
    pub max_tcp_per_source: usize,
    /// Sources whose rate is tracked at once (beyond, full buckets are forgotten first,
    /// then the idlest).
    pub max_sources: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_s: 200,
            burst: 1000,
            max_pending_sessions: 32,
            max_tcp_connections: 256,
            max_tcp_per_source: 32,
            max_sources: 4096,
        }
    }
}

/// Why a TCP connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// `max_tcp_connections` reached.
    Total,
    /// `max_tcp_per_source` reached for this source.
    PerSource,
}

/// Counters (what `branchrec status` shows under `access`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LimitStats {
    /// SIP messages dropped for the per-source rate.
    pub rate_limited: u64,
    /// Sessions refused (503) because the source had too many unconfirmed ones.
    pub pending_sessions_refused: u64,
    /// TCP connections refused at the total cap.
    pub tcp_refused_total: u64,
    /// TCP connections refused at the per-source cap.
    pub tcp_refused_per_source: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in thousandths.
    milli: u64,
    last: Mono,
}

/// The per-source limiter.
#[derive(Debug)]
pub struct SourceLimiter {
    cfg: LimitsConfig,
    buckets: HashMap<IpAddr, Bucket>,
    pending: HashMap<IpAddr, usize>,
    tcp: HashMap<IpAddr, usize>,
    tcp_total: usize,
    stats: LimitStats,
}

impl SourceLimiter {
    /// A limiter with these limits.
    pub fn new(cfg: LimitsConfig) -> Self {
        SourceLimiter {
            cfg,
            buckets: HashMap::new(),
            pending: HashMap::new(),
            tcp: HashMap::new(),
            tcp_total: 0,
            stats: LimitStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &LimitStats {
        &self.stats
    }

    /// The limits.
    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn refill(cfg: &LimitsConfig, b: &mut Bucket, now: Mono) {
        let cap = u64::from(cfg.burst) * 1000;
        let dt = now.saturating_duration_since(b.last);
        let add = (dt.as_micros() as u64 / 1000).saturating_mul(u64::from(cfg.rate_per_s));
        b.milli = b.milli.saturating_add(add).min(cap);
        b.last = now;
    }

    /// One message from `ip` at `now`: true if it may be handled, false if it is over the
    /// source's rate (drop it without an answer: answering a flood is what it wants).
    pub fn allow_message(&mut self, now: Mono, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let cfg = self.cfg;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= cfg.max_sources.max(1) {
            // A full bucket is the same as no entry: forget those first, then the idlest.
            let buckets = &mut self.buckets;
            buckets.retain(|_, b| {
                Self::refill(&cfg, b, now);
                b.milli < u64::from(cfg.burst) * 1000
            });
            if buckets.len() >= cfg.max_sources.max(1) {
                if let Some(k) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                    buckets.remove(&k);
                }
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            milli: u64::from(cfg.burst) * 1000,
            last: now,
        });
        Self::refill(&cfg, b, now);
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            self.stats.rate_limited += 1;
            false
        }
    }

    /// A session from `ip` is offered: true if it may be set up (call
    /// [`SourceLimiter::session_confirmed`] when it is ACKed or ends), false if the source
    /// already has `max_pending_sessions` unconfirmed ones (refuse it).
    pub fn session_offered(&mut self, ip: IpAddr) -> bool {
        let n = self.pending.entry(ip.to_canonical()).or_insert(0);
        if *n >= self.cfg.max_pending_sessions {
            self.stats.pending_sessions_refused += 1;
            return false;
        }
        *n += 1;
        true
    }

    /// A session admitted by [`SourceLimiter::session_offered`] was confirmed or ended.
    pub fn session_confirmed(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.pending.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&ip);
            }
        }
    }

    /// Unconfirmed sessions of `ip`.
    pub fn pending_sessions(&self, ip: IpAddr) -> usize {
        self.pending.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// A plain TCP connection from `ip` was accepted: `Ok` to serve it (call
    /// [`SourceLimiter::tcp_closed`] when it closes), `Err` to close it at once.
    pub fn tcp_opened(&mut self, ip: IpAddr) -> Result<(), ConnRefusal> {
        let ip = ip.to_canonical();
        if self.tcp_total >= self.cfg.max_tcp_connections {
            self.stats.tcp_refused_total += 1;
            return Err(ConnRefusal::Total);
        }
        let n = self.tcp.entry(ip).or_insert(0);
        if *n >= self.cfg.max_tcp_per_source {
            self.stats.tcp_refused_per_source += 1;
            return Err(ConnRefusal::PerSource);
        }
        *n += 1;
        self.tcp_total += 1;
        Ok(())
    }

    /// A connection admitted by [`SourceLimiter::tcp_opened`] closed.
    pub fn tcp_closed(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.tcp.get_mut(&ip) {
            *n = n.saturating_sub(1);
            self.tcp_total = self.tcp_total.saturating_sub(1);
            if *n == 0 {
                self.tcp.remove(&ip);
            }
        }
    }

    /// Plain TCP connections open.
    pub fn tcp_open(&self) -> usize {
        self.tcp_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rate_is_a_token_bucket_per_source() {
        let mut l = SourceLimiter::new(LimitsConfig {
            rate_per_s: 10,
            burst: 5,
            ..LimitsConfig::default()
        });
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Mono::from_secs(1);
        assert_eq!((0..8).filter(|_| l.allow_message(t0, a)).count(), 5);
        assert_eq!(l.stats().rate_limited, 3);
        // Another source is not affected.
        assert!(l.allow_message(t0, b));
        // 10/s: one more token every 100 ms; never above the burst.
        assert!(l.allow_message(t0.saturating_add(std::time::Duration::from_millis(100)), a));
        let later = Mono::from_secs(100);
        assert_eq!((0..8).filter(|_| l.allow_message(later, a)).count(), 5);
        // IPv4-mapped IPv6 is the same source.
        assert!(!l.allow_message(later, ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn source_table_is_bounded() {
        let mut l = SourceLimiter::new(LimitsConfig {
            burst: 2,
            max_sources: 16,
            ..LimitsConfig::default()
        });
        for i in 0..1000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.allow_message(Mono::from_secs(1), a);
            assert!(l.buckets.len() <= 16);
        }
    }

    #[test]
    fn pending_sessions_and_tcp_connections_are_capped() {
        let mut l = SourceLimiter::new(LimitsConfig {
            max_pending_sessions: 2,
            max_tcp_connections: 3,
            max_tcp_per_source: 2,
            ..LimitsConfig::default()
        });
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(l.session_offered(a));
        assert!(l.session_offered(a));
        assert!(!l.session_offered(a));
        assert!(l.session_offered(b));
        l.session_confirmed(a);
        assert!(l.session_offered(a));
        assert_eq!(l.stats().pending_sessions_refused, 1);

        assert_eq!(l.tcp_opened(a), Ok(()));
        assert_eq!(l.tcp_opened(a), Ok(()));
        assert_eq!(l.tcp_opened(a), Err(ConnRefusal::PerSource));
        assert_eq!(l.tcp_opened(b), Ok(()));
        assert_eq!(l.tcp_opened(b), Err(ConnRefusal::Total));
        l.tcp_closed(a);
        assert_eq!(l.tcp_open(), 2);
        assert_eq!(l.tcp_opened(b), Ok(()));
        // Closing what was never opened changes nothing.
        l.tcp_closed(ip("10.9.9.9"));
        assert_eq!(l.tcp_open(), 3);
    }
}
