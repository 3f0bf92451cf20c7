//! One recorded channel's SRTP state across re-INVITEs, sans-IO (time comes in as a
//! [`Mono`] whose origin is the call start).
//!
//! A new offer with different keys replaces the receive context; the old one stays
//! usable for [`REKEY_GRACE`] so packets already in flight under the old keys are not
//! lost. Counters survive replacement and end up in the recording's channel stats.

use std::time::Duration;

use crate::time::Mono;

use super::{SrtpError, SrtpPolicy, SrtpReceiver, SrtpStats, SrtpSuite};

/// How long the previous context still decrypts after a re-key.
pub const REKEY_GRACE: Duration = Duration::from_secs(2);

/// Largest datagram kept for a retry under the previous keys.
const RETRY_MAX: usize = 2048;

/// SRTP state of one channel (plain RTP when no policy is set).
pub struct SrtpChannel {
    current: Option<(SrtpPolicy, SrtpReceiver)>,
    previous: Option<(SrtpReceiver, Mono)>,
    /// Counters of contexts already dropped.
    retired: SrtpStats,
    /// Failures under the current keys that the previous keys then accepted.
    rescued_rtp: u64,
    rescued_rtcp: u64,
    suite: Option<SrtpSuite>,
    scratch: Box<[u8; RETRY_MAX]>,
    /// Policies that could not be used (logged by the caller once).
    pub rejected_policy: Option<SrtpError>,
}

impl Default for SrtpChannel {
    fn default() -> Self {
        SrtpChannel {
            current: None,
            previous: None,
            retired: SrtpStats::default(),
            rescued_rtp: 0,
            rescued_rtcp: 0,
            suite: None,
            scratch: Box::new([0; RETRY_MAX]),
            rejected_policy: None,
        }
    }
}

impl std::fmt::Debug for SrtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpChannel")
            .field("suite", &self.suite)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SrtpChannel {
    /// Whether packets on this channel are SRTP.
    pub fn is_secure(&self) -> bool {
        self.current.is_some()
    }

    /// Set the keys negotiated now (`None` = plain RTP). The same policy as before keeps
    /// the context (and its replay state); a different one replaces it, keeping the old
    /// one for [`REKEY_GRACE`] after `now`.
    pub fn set_policy(&mut self, policy: Option<&SrtpPolicy>, now: Mono) {
        match policy {
            None => {
                if let Some((_, rx)) = self.current.take() {
                    self.retire(rx);
                }
            }
            Some(p) => {
                if self.current.as_ref().is_some_and(|(cur, _)| cur == p) {
                    return;
                }
                match SrtpReceiver::new(p) {
                    Ok(rx) => {
                        self.suite = Some(p.suite);
                        if let Some((_, old)) = self.current.replace((p.clone(), rx)) {
                            if let Some((older, _)) =
                                self.previous.replace((old, now + REKEY_GRACE))
                            {
                                self.retire(older);
                            }
                        }
                    }
                    Err(e) => {
                        // Keep what we had; the caller reports the refusal.
                        self.rejected_policy = Some(e);
                    }
                }
            }
        }
    }

    fn retire(&mut self, rx: SrtpReceiver) {
        self.retired.add(rx.stats());
    }

    /// Authenticate and decrypt one datagram in place (SRTP or SRTCP by its header);
    /// returns the plaintext length. Plain RTP channels return the length unchanged.
    pub fn unprotect(&mut self, buf: &mut [u8], now: Mono) -> Result<usize, SrtpError> {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            if let Some((old, _)) = self.previous.take() {
                self.retire(old);
            }
        }
        let Some((_, cur)) = self.current.as_mut() else {
            return Ok(buf.len());
        };
        let rtcp = crate::media::is_rtcp(buf);
        let open = |rx: &mut SrtpReceiver, b: &mut [u8]| {
            if rtcp {
                rx.unprotect_rtcp(b)
            } else {
                rx.unprotect_rtp(b)
            }
        };
        let Some((prev, _)) = self.previous.as_mut() else {
            return open(cur, buf);
        };
        // During the grace period keep a copy: a failed attempt may have touched `buf`.
        let n = buf.len();
        if n > RETRY_MAX {
            return open(cur, buf);
        }
        self.scratch[..n].copy_from_slice(buf);
        match open(cur, buf) {
            Ok(len) => Ok(len),
            Err(e @ (SrtpError::AuthFailed | SrtpError::UnknownMki)) => {
                buf.copy_from_slice(&self.scratch[..n]);
                match open(prev, buf) {
                    Ok(len) => {
                        cur.forget_failure(e, rtcp);
                        if rtcp {
                            self.rescued_rtcp += 1;
                        } else {
                            self.rescued_rtp += 1;
                        }
                        Ok(len)
                    }
                    Err(pe) => {
                        // Counted once, under the current keys.
                        prev.forget_failure(pe, rtcp);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The suite in use (last negotiated).
    pub fn suite(&self) -> Option<SrtpSuite> {
        self.suite
    }

    /// All counters of this channel (current, previous and retired contexts).
    pub fn stats(&self) -> SrtpStats {
        let mut s = self.retired;
        if let Some((_, c)) = &self.current {
            s.add(c.stats());
        }
        if let Some((p, _)) = &self.previous {
            s.add(p.stats());
        }
        s
    }

    /// Failures under the current keys that the previous keys then accepted (the
    /// `srtp_old_key_after_rekey` statistic).
    pub fn rescued(&self) -> u64 {
        self.rescued_rtp + self.rescued_rtcp
    }
}

#[cfg(test)]
mod tests {
    use super::super::SrtpSender;
    use super::*;

    fn pol(fill: u8) -> SrtpPolicy {
        SrtpPolicy::simple(
            SrtpSuite::AesCm128HmacSha1_80,
            vec![fill; 16],
            vec![fill; 14],
        )
    }

    fn pkt(tx: &mut SrtpSender, seq: u16) -> Vec<u8> {
        let mut b = vec![0x80, 8];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        b.extend_from_slice(&[0xd5; 160]);
        let n = b.len();
        b.resize(n + 10, 0);
        tx.protect_rtp(&mut b, n, 0, 0).unwrap();
        b
    }

    #[test]
    fn rekey_keeps_old_keys_for_the_grace_period_only() {
        let mut ch = SrtpChannel::default();
        let (mut a, mut b) = (
            SrtpSender::new(&pol(1)).unwrap(),
            SrtpSender::new(&pol(2)).unwrap(),
        );
        let t0 = Mono::from_secs(10);
        ch.set_policy(Some(&pol(1)), Mono::ZERO);
        assert_eq!(ch.unprotect(&mut pkt(&mut a, 1), t0), Ok(172));
        // Same keys again (a re-INVITE that changes nothing): context kept, so a replay
        // is still caught.
        ch.set_policy(Some(&pol(1)), t0);
        assert_eq!(
            ch.unprotect(&mut pkt(&mut a, 1), t0),
            Err(SrtpError::Replayed)
        );
        ch.set_policy(Some(&pol(2)), t0);
        // Old-key packet in flight: accepted within the grace period.
        assert_eq!(
            ch.unprotect(&mut pkt(&mut a, 2), t0 + Duration::from_millis(500)),
            Ok(172)
        );
        assert_eq!(
            ch.unprotect(&mut pkt(&mut b, 3), t0 + Duration::from_millis(600)),
            Ok(172)
        );
        // After it, old keys fail.
        assert_eq!(
            ch.unprotect(&mut pkt(&mut a, 4), t0 + REKEY_GRACE),
            Err(SrtpError::AuthFailed)
        );
        let s = ch.stats();
        assert_eq!((s.rtp_ok, s.rtp_auth_fail, s.rtp_replay), (3, 1, 1));
        let j = crate::recording::stats::ChannelStats::new(0, &Default::default(), Some(&ch), 0);
        assert_eq!(j.srtp_auth_fail, 1);
        assert_eq!(j.srtp_old_key_after_rekey, 1);
        assert_eq!(j.srtp_suite.as_deref(), Some("AES_CM_128_HMAC_SHA1_80"));
    }

    #[test]
    fn plain_channels_pass_through() {
        let mut ch = SrtpChannel::default();
        let mut b = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        assert_eq!(ch.unprotect(&mut b, Mono::ZERO), Ok(13));
        let j = crate::recording::stats::ChannelStats::new(0, &Default::default(), Some(&ch), 0);
        assert_eq!(j.srtp_suite, None);
        assert_eq!(j.srtp_ok, 0);
    }
}
