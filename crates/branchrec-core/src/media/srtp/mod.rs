//! SRTP/SRTCP receive contexts (RFC 3711) for SDES-keyed streams (RFC 4568), sans-IO.
//!
//! Bytes in, plaintext RTP/RTCP (decrypted in place) or a typed [`SrtpError`] out; no
//! clock, no IO, no allocation per packet. Suites: `AES_CM_128_HMAC_SHA1_80`,
//! `AES_CM_128_HMAC_SHA1_32` (RFC 3711 / RFC 4568) and `AEAD_AES_128_GCM`,
//! `AEAD_AES_256_GCM` (RFC 7714). Supported: key derivation with and without a key
//! derivation rate (`KDR=n`), ROC estimation across sequence wrap (RFC 3711 Appendix A),
//! a 128-packet replay window per SSRC (SRTP and SRTCP), MKI (key selected by the MKI in
//! the packet), master key lifetime (packets past it are dropped and counted), several
//! master keys, SRTCP with the `E` flag and its 31-bit index, and the session parameters
//! `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`.
//!
//! # Why not `webrtc-srtp`
//!
//! `webrtc-srtp` (0.x) decrypts into freshly allocated `Bytes`, pulls `tokio` and
//! `webrtc-util` into the dependency tree, has no SDES MKI handling nor master key
//! lifetimes, and its AEAD_AES_256_GCM support is recent. A receive-only recorder needs
//! none of its DTLS glue, so this module is built on the RustCrypto primitives the
//! project already trusts for its own container (`aes`, `ctr`, `aes-gcm`, `hmac`,
//! `sha1`): every transform is checked against the RFC 3711 Appendix B and RFC 7714
//! §16/§17 vectors (`tests.rs`) and, end to end, against Python's `cryptography`
//! (tests/srtp_sipp.rs).
//!
//! Secrets: master keys live in [`Secret`] (zeroized on drop, redacted in `Debug`); the
//! AES key schedules zeroize themselves on drop (`aes` crate); the precomputed HMAC-SHA1
//! state does not (the `sha1` crate offers no zeroizing state), which is the only copy of
//! key-derived material left to the allocator.

use std::fmt;

use aes::{Aes128, Aes256};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ctr::cipher::{InnerIvInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::{Zeroize, Zeroizing};

pub mod channel;
#[cfg(test)]
mod tests;

pub use channel::SrtpChannel;

type Ctr128<C> = ctr::Ctr128BE<C>;

/// At most this many SSRCs are tracked per context; the least recently used is forgotten.
pub const MAX_STREAMS: usize = 16;
/// Replay window, packets (RFC 3711 requires at least 64).
pub const REPLAY_WINDOW: u64 = 128;

/// A secret byte string: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Take ownership of key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The bytes (only for the crypto and for encoding our own SDP answer).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// SRTP crypto suites we can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714 §14.1).
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714 §14.1).
    AeadAes256Gcm,
}

impl SrtpSuite {
    /// All suites, most preferred first (what the SDP answer picks from).
    pub const PREFERENCE: [SrtpSuite; 4] = [
        SrtpSuite::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The RFC 4568 name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// From an `a=crypto` suite name (case-sensitive per RFC 4568, accepted in any case).
    pub fn from_sdp_name(name: &str) -> Option<SrtpSuite> {
        Self::PREFERENCE
            .into_iter()
            .find(|s| s.sdp_name().eq_ignore_ascii_case(name))
    }

    /// Rank in [`PREFERENCE`](Self::PREFERENCE) (0 = best).
    pub fn rank(self) -> usize {
        Self::PREFERENCE
            .iter()
            .position(|s| *s == self)
            .unwrap_or(usize::MAX)
    }

    /// Master key length, bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length, bytes.
    pub fn salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Authentication tag length on SRTP packets, bytes.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => 16,
        }
    }

    /// Authentication tag length on SRTCP packets (80 bits for both CM suites).
    pub fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// AES-GCM (RFC 7714)?
    pub fn is_aead(self) -> bool {
        matches!(self, SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm)
    }
}

impl fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

/// One master key with its salt, MKI value and lifetime (one `inline:` of `a=crypto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// Master key.
    pub key: Secret,
    /// Master salt.
    pub salt: Secret,
    /// MKI value (its length on the wire is [`SrtpPolicy::mki_len`]).
    pub mki: Option<u64>,
    /// Lifetime in packets (`|2^31`), `None` = the suite maximum.
    pub lifetime: Option<u64>,
}

/// Everything needed to receive one SRTP stream (one `a=crypto` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpPolicy {
    /// Crypto suite.
    pub suite: SrtpSuite,
    /// Master keys in offer order (at least one).
    pub keys: Vec<MasterKey>,
    /// MKI length on the wire, bytes (0 = no MKI).
    pub mki_len: usize,
    /// Key derivation rate exponent: keys are re-derived every `2^kdr` packets; 0 = once.
    pub kdr: u8,
    /// `UNENCRYPTED_SRTP`: RTP payloads are authenticated but not encrypted.
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: RTCP is sent with `E` = 0 (the receiver follows the `E` flag).
    pub unencrypted_srtcp: bool,
    /// `UNAUTHENTICATED_SRTP`: RTP packets carry no tag (not allowed with AEAD suites).
    pub unauthenticated_srtp: bool,
}

impl SrtpPolicy {
    /// A single-key policy without session parameters.
    pub fn simple(suite: SrtpSuite, key: Vec<u8>, salt: Vec<u8>) -> Self {
        SrtpPolicy {
            suite,
            keys: vec![MasterKey {
                key: Secret::new(key),
                salt: Secret::new(salt),
                mki: None,
                lifetime: None,
            }],
            mki_len: 0,
            kdr: 0,
            unencrypted_srtp: false,
            unencrypted_srtcp: false,
            unauthenticated_srtp: false,
        }
    }

    fn validate(&self) -> Result<(), SrtpError> {
        if self.keys.is_empty() {
            return Err(SrtpError::BadPolicy("no master key"));
        }
        for k in &self.keys {
            if k.key.len() != self.suite.key_len() {
                return Err(SrtpError::BadPolicy(
                    "master key length does not fit the suite",
                ));
            }
            if k.salt.len() != self.suite.salt_len() {
                return Err(SrtpError::BadPolicy(
                    "master salt length does not fit the suite",
                ));
            }
            if self.mki_len > 0 && k.mki.is_none() {
                return Err(SrtpError::BadPolicy(
                    "MKI length given but a key has no MKI",
                ));
            }
        }
        if self.mki_len > 128 {
            return Err(SrtpError::BadPolicy("MKI longer than 128 bytes"));
        }
        if self.kdr > 24 {
            return Err(SrtpError::BadPolicy("KDR above 2^24"));
        }
        if self.unauthenticated_srtp && self.suite.is_aead() {
            return Err(SrtpError::BadPolicy(
                "UNAUTHENTICATED_SRTP is meaningless with an AEAD suite",
            ));
        }
        Ok(())
    }
}

/// Why a packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Too short, not RTP/RTCP version 2, or header longer than the packet.
    #[error("malformed SRTP/SRTCP packet")]
    Malformed,
    /// The packet's MKI names no key we were given.
    #[error("unknown MKI")]
    UnknownMki,
    /// The authentication tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// Already received, or older than the replay window.
    #[error("replayed packet")]
    Replayed,
    /// The master key that protects it has reached its lifetime.
    #[error("master key lifetime exhausted")]
    KeyExpired,
    /// The policy cannot be used (lengths, parameters).
    #[error("invalid SRTP parameters: {0}")]
    BadPolicy(&'static str),
}

/// Counters of one receive context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    /// SRTP packets authenticated and decrypted.
    pub rtp_ok: u64,
    /// SRTP packets whose tag failed.
    pub rtp_auth_fail: u64,
    /// SRTP packets dropped as replays.
    pub rtp_replay: u64,
    /// SRTCP packets authenticated and decrypted.
    pub rtcp_ok: u64,
    /// SRTCP packets whose tag failed.
    pub rtcp_auth_fail: u64,
    /// SRTCP packets dropped as replays.
    pub rtcp_replay: u64,
    /// Packets (SRTP or SRTCP) dropped because their master key's lifetime was over.
    pub key_expired: u64,
    /// Packets with an MKI naming no key.
    pub unknown_mki: u64,
    /// Malformed packets.
    pub malformed: u64,
}

impl SrtpStats {
    /// Add another context's counters (a replaced context keeps counting into the call).
    pub fn add(&mut self, o: &SrtpStats) {
        self.rtp_ok += o.rtp_ok;
        self.rtp_auth_fail += o.rtp_auth_fail;
        self.rtp_replay += o.rtp_replay;
        self.rtcp_ok += o.rtcp_ok;
        self.rtcp_auth_fail += o.rtcp_auth_fail;
        self.rtcp_replay += o.rtcp_replay;
        self.key_expired += o.key_expired;
        self.unknown_mki += o.unknown_mki;
        self.malformed += o.malformed;
    }

    fn counter(&mut self, e: SrtpError, rtcp: bool) -> &mut u64 {
        match (e, rtcp) {
            (SrtpError::AuthFailed, false) => &mut self.rtp_auth_fail,
            (SrtpError::AuthFailed, true) => &mut self.rtcp_auth_fail,
            (SrtpError::Replayed, false) => &mut self.rtp_replay,
            (SrtpError::Replayed, true) => &mut self.rtcp_replay,
            (SrtpError::KeyExpired, _) => &mut self.key_expired,
            (SrtpError::UnknownMki, _) => &mut self.unknown_mki,
            (SrtpError::Malformed | SrtpError::BadPolicy(_), _) => &mut self.malformed,
        }
    }

    fn count(&mut self, e: SrtpError, rtcp: bool) {
        *self.counter(e, rtcp) += 1;
    }

    fn uncount(&mut self, e: SrtpError, rtcp: bool) {
        let c = self.counter(e, rtcp);
        *c = c.saturating_sub(1);
    }
}

// ---------------------------------------------------------------------------------------
// Key derivation (RFC 3711 §4.3, AES-CM PRF; RFC 7714 §11 for the 12-byte salts)
// ---------------------------------------------------------------------------------------

const LABEL_RTP: u8 = 0x00;
const LABEL_RTCP: u8 = 0x03;

/// The AES-CM PRF of RFC 3711 §4.3.3: `out` = keystream under the master key with
/// `IV = (master_salt XOR (label || r)) || 0x0000`; a 12-byte (AEAD) salt is padded with
/// zeros on the right to 14 bytes, as libsrtp does.
pub(crate) fn kdf(master_key: &[u8], master_salt: &[u8], label: u8, r: u64, out: &mut [u8]) {
    let mut iv = Zeroizing::new([0u8; 16]);
    let n = master_salt.len().min(14);
    iv[..n].copy_from_slice(&master_salt[..n]);
    iv[7] ^= label;
    let rb = r.to_be_bytes();
    for i in 0..6 {
        iv[8 + i] ^= rb[2 + i];
    }
    out.fill(0);
    match master_key.len() {
        32 => {
            let mut c = Ctr128::<Aes256>::new(master_key.into(), (&*iv).into());
            c.apply_keystream(out);
        }
        _ => {
            let mut key = Zeroizing::new([0u8; 16]);
            let n = master_key.len().min(16);
            key[..n].copy_from_slice(&master_key[..n]);
            let mut c = Ctr128::<Aes128>::new((&*key).into(), (&*iv).into());
            c.apply_keystream(out);
        }
    }
}

/// Session keys for one direction type (SRTP or SRTCP) at one `r`.
// A handful live per call (one per master key and direction); the GCM states are boxed
// because of their size, the AES-CM one stays inline to keep the per-packet path
// free of an extra indirection.
#[allow(clippy::large_enum_variant)]
enum SessionCipher {
    Cm {
        aes: Aes128,
        auth: Hmac<Sha1>,
        salt: [u8; 14],
    },
    Gcm128 {
        aead: Box<Aes128Gcm>,
        salt: [u8; 12],
    },
    Gcm256 {
        aead: Box<Aes256Gcm>,
        salt: [u8; 12],
    },
}

impl Drop for SessionCipher {
    fn drop(&mut self) {
        match self {
            SessionCipher::Cm { salt, .. } => salt.zeroize(),
            SessionCipher::Gcm128 { salt, .. } | SessionCipher::Gcm256 { salt, .. } => {
                salt.zeroize()
            }
        }
    }
}

impl SessionCipher {
    fn derive(suite: SrtpSuite, mk: &MasterKey, base: u8, r: u64) -> SessionCipher {
        let (key, salt) = (mk.key.expose(), mk.salt.expose());
        match suite {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => {
                let mut k = Zeroizing::new([0u8; 16]);
                let mut a = Zeroizing::new([0u8; 20]);
                let mut s = [0u8; 14];
                kdf(key, salt, base, r, &mut *k);
                kdf(key, salt, base + 1, r, &mut *a);
                kdf(key, salt, base + 2, r, &mut s);
                SessionCipher::Cm {
                    aes: Aes128::new((&*k).into()),
                    // 20-byte keys are always valid HMAC keys; new_from_slice never fails.
                    auth: <Hmac<Sha1> as KeyInit>::new_from_slice(&*a)
                        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
                    salt: s,
                }
            }
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => {
                let mut buf = Zeroizing::new([0u8; 32]);
                let k = &mut buf[..suite.key_len()];
                let mut s = [0u8; 12];
                kdf(key, salt, base, r, k);
                kdf(key, salt, base + 2, r, &mut s);
                if suite == SrtpSuite::AeadAes128Gcm {
                    SessionCipher::Gcm128 {
                        aead: Box::new(Aes128Gcm::new(aes_gcm::Key::<Aes128Gcm>::from_slice(k))),
                        salt: s,
                    }
                } else {
                    SessionCipher::Gcm256 {
                        aead: Box::new(Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(k))),
                        salt: s,
                    }
                }
            }
        }
    }

    /// AES-CM keystream over `data` with the RFC 3711 §4.1.1 IV.
    fn cm_crypt(aes: &Aes128, salt: &[u8; 14], ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..8]) {
            *d ^= s;
        }
        let core = ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
            aes.clone(),
            (&iv).into(),
        );
        let mut c = Ctr128::<Aes128>::from_core(core);
        c.apply_keystream(data);
        iv.zeroize();
    }

    /// Verify and decrypt `buf` = SRTP packet with header length `hdr`; the MKI starts
    /// at `mki_at`, the tag is `tag_len` bytes. Returns the plaintext length.
    #[allow(clippy::too_many_arguments)]
    fn open_rtp(
        &self,
        buf: &mut [u8],
        hdr: usize,
        mki_at: usize,
        tag_len: usize,
        ssrc: u32,
        index: u64,
        unencrypted: bool,
    ) -> Result<usize, SrtpError> {
        let len = buf.len();
        match self {
            SessionCipher::Cm { aes, auth, salt } => {
                let end = mki_at;
                if tag_len > 0 {
                    let mut mac = auth.clone();
                    mac.update(&buf[..end]);
                    mac.update(&((index >> 16) as u32).to_be_bytes());
                    mac.verify_truncated_left(&buf[len - tag_len..])
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
                if !unencrypted {
                    SessionCipher::cm_crypt(aes, salt, ssrc, index, &mut buf[hdr..end]);
                }
                Ok(end)
            }
            SessionCipher::Gcm128 { .. } | SessionCipher::Gcm256 { .. } => {
                let end = mki_at;
                if end < hdr + 16 {
                    return Err(SrtpError::Malformed);
                }
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&buf[end - 16..end]);
                let nonce = rtp_nonce(self.gcm_salt(), ssrc, index);
                if unencrypted {
                    self.gcm_open(&nonce, &buf[..end - 16], &mut [], &tag)?;
                } else {
                    let (aad, rest) = buf.split_at_mut(hdr);
                    self.gcm_open(&nonce, aad, &mut rest[..end - 16 - hdr], &tag)?;
                }
                Ok(end - 16)
            }
        }
    }

    /// Verify and decrypt an SRTCP packet whose `E`+index word is at `idx_at` and MKI at
    /// `mki_at`. Returns the plaintext RTCP length.
    fn open_rtcp(
        &self,
        buf: &mut [u8],
        idx_at: usize,
        mki_at: usize,
        tag_len: usize,
        ssrc: u32,
        word: u32,
    ) -> Result<usize, SrtpError> {
        let len = buf.len();
        let encrypted = word & 0x8000_0000 != 0;
        let index = word & 0x7fff_ffff;
        match self {
            SessionCipher::Cm { aes, auth, salt } => {
                let mut mac = auth.clone();
                mac.update(&buf[..mki_at]);
                mac.verify_truncated_left(&buf[len - tag_len..])
                    .map_err(|_| SrtpError::AuthFailed)?;
                if encrypted {
                    SessionCipher::cm_crypt(aes, salt, ssrc, u64::from(index), &mut buf[8..idx_at]);
                }
                Ok(idx_at)
            }
            SessionCipher::Gcm128 { .. } | SessionCipher::Gcm256 { .. } => {
                if idx_at < 8 + 16 {
                    return Err(SrtpError::Malformed);
                }
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&buf[idx_at - 16..idx_at]);
                let nonce = rtcp_nonce(self.gcm_salt(), ssrc, index);
                let body_end = idx_at - 16;
                if encrypted {
                    // AAD = first 8 octets || E+index (RFC 7714 §9.2).
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&word.to_be_bytes());
                    self.gcm_open(&nonce, &aad, &mut buf[8..body_end], &tag)?;
                } else {
                    // AAD = whole packet || E+index: move E+index over the tag.
                    buf[body_end..body_end + 4].copy_from_slice(&word.to_be_bytes());
                    self.gcm_open(&nonce, &buf[..body_end + 4], &mut [], &tag)?;
                }
                Ok(body_end)
            }
        }
    }

    fn gcm_open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), SrtpError> {
        let r = match self {
            SessionCipher::Gcm128 { aead, .. } => {
                aead.decrypt_in_place_detached(nonce.into(), aad, data, tag.into())
            }
            SessionCipher::Gcm256 { aead, .. } => {
                aead.decrypt_in_place_detached(nonce.into(), aad, data, tag.into())
            }
            SessionCipher::Cm { .. } => return Err(SrtpError::AuthFailed),
        };
        r.map_err(|_| SrtpError::AuthFailed)
    }

    fn gcm_seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let r = match self {
            SessionCipher::Gcm128 { aead, .. } => {
                aead.encrypt_in_place_detached(nonce.into(), aad, data)
            }
            SessionCipher::Gcm256 { aead, .. } => {
                aead.encrypt_in_place_detached(nonce.into(), aad, data)
            }
            SessionCipher::Cm { .. } => return [0; 16],
        };
        let mut out = [0u8; 16];
        if let Ok(t) = r {
            out.copy_from_slice(&t);
        }
        out
    }

    fn gcm_salt(&self) -> &[u8; 12] {
        match self {
            SessionCipher::Gcm128 { salt, .. } | SessionCipher::Gcm256 { salt, .. } => salt,
            SessionCipher::Cm { .. } => &[0; 12],
        }
    }
}

/// A master key and its derived session keys (cached for the current `r`).
struct KeyState {
    master: MasterKey,
    rtp: Option<(u64, SessionCipher)>,
    rtcp: Option<(u64, SessionCipher)>,
    rtp_used: u64,
    rtcp_used: u64,
}

impl KeyState {
    fn cipher(&mut self, suite: SrtpSuite, rtcp: bool, r: u64) -> &SessionCipher {
        let slot = if rtcp { &mut self.rtcp } else { &mut self.rtp };
        if slot.as_ref().map(|(sr, _)| *sr) != Some(r) {
            let base = if rtcp { LABEL_RTCP } else { LABEL_RTP };
            *slot = Some((r, SessionCipher::derive(suite, &self.master, base, r)));
        }
        match slot {
            Some((_, c)) => c,
            // Filled just above.
            None => unreachable!("session cipher derived above"),
        }
    }

    fn expired(&self, rtcp: bool) -> bool {
        let used = if rtcp { self.rtcp_used } else { self.rtp_used };
        self.master.lifetime.is_some_and(|l| used >= l)
    }

    fn mki_matches(&self, wire: &[u8]) -> bool {
        let Some(v) = self.master.mki else {
            return false;
        };
        let vb = v.to_be_bytes();
        let n = wire.len();
        // Leading bytes beyond the 8 of the value must be zero; the value must fit.
        wire.iter().enumerate().all(|(i, b)| {
            let from_end = n - 1 - i;
            if from_end < 8 {
                *b == vb[7 - from_end]
            } else {
                *b == 0
            }
        }) && (n >= 8 || v >> (8 * n) == 0)
    }
}

#[derive(Clone, Copy)]
struct Window {
    ssrc: u32,
    /// Highest authenticated index.
    highest: u64,
    /// Bit i = index `highest - i` seen.
    bits: u128,
    last_use: u64,
}

impl Window {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let d = self.highest - index;
        if d >= REPLAY_WINDOW || self.bits & (1u128 << d) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn commit(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = index;
        } else {
            self.bits |= 1u128 << (self.highest - index);
        }
    }
}

/// Streams by SSRC, bounded, least recently used evicted.
struct Windows {
    v: Vec<Window>,
    clock: u64,
}

impl Windows {
    fn new() -> Self {
        Windows {
            v: Vec::with_capacity(MAX_STREAMS),
            clock: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<&Window> {
        self.v.iter().find(|w| w.ssrc == ssrc)
    }

    fn commit(&mut self, ssrc: u32, index: u64) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(w) = self.v.iter_mut().find(|w| w.ssrc == ssrc) {
            w.commit(index);
            w.last_use = clock;
            return;
        }
        let w = Window {
            ssrc,
            highest: index,
            bits: 1,
            last_use: clock,
        };
        if self.v.len() < MAX_STREAMS {
            self.v.push(w);
        } else if let Some(old) = self.v.iter_mut().min_by_key(|w| w.last_use) {
            *old = w;
        }
    }
}

/// RFC 3711 Appendix A: the index of a packet with sequence `seq` given the highest
/// authenticated index so far (`None` for the first packet of a stream: ROC 0).
pub fn estimate_index(highest: Option<u64>, seq: u16) -> u64 {
    let Some(h) = highest else {
        return u64::from(seq);
    };
    let roc = h >> 16;
    let s_l = (h & 0xffff) as u16;
    let v = if s_l < 32768 {
        if seq > s_l && seq - s_l > 32768 {
            // Before the wrap; at ROC 0 there is no earlier cycle (take it as ahead).
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    };
    ((v & 0xffff_ffff) << 16) | u64::from(seq)
}

/// Length of an RTP header including CSRCs and the extension, if it fits in `len`.
fn rtp_header_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let mut n = 12 + 4 * usize::from(buf[0] & 0x0f);
    if buf[0] & 0x10 != 0 {
        let ext = buf.get(n + 2..n + 4)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (n <= buf.len()).then_some(n)
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn rtp_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[2..6].copy_from_slice(&ssrc.to_be_bytes());
    n[6..12].copy_from_slice(&index.to_be_bytes()[2..8]);
    for (d, s) in n.iter_mut().zip(salt) {
        *d ^= s;
    }
    n
}

fn rtcp_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[2..6].copy_from_slice(&ssrc.to_be_bytes());
    n[8..12].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
    for (d, s) in n.iter_mut().zip(salt) {
        *d ^= s;
    }
    n
}

/// Shared state of a sender or receiver.
struct Context {
    suite: SrtpSuite,
    keys: Vec<KeyState>,
    mki_len: usize,
    kdr: u8,
    unencrypted_srtp: bool,
    unauthenticated_srtp: bool,
    /// Key in use when there is no MKI (advances when a key's lifetime is over).
    active: usize,
}

impl Context {
    fn new(p: &SrtpPolicy) -> Result<Self, SrtpError> {
        p.validate()?;
        Ok(Context {
            suite: p.suite,
            keys: p
                .keys
                .iter()
                .map(|k| KeyState {
                    master: k.clone(),
                    rtp: None,
                    rtcp: None,
                    rtp_used: 0,
                    rtcp_used: 0,
                })
                .collect(),
            mki_len: p.mki_len,
            kdr: p.kdr,
            unencrypted_srtp: p.unencrypted_srtp,
            unauthenticated_srtp: p.unauthenticated_srtp,
            active: 0,
        })
    }

    fn r(&self, index: u64) -> u64 {
        if self.kdr == 0 {
            0
        } else {
            index >> self.kdr
        }
    }

    fn rtp_tag_len(&self) -> usize {
        if self.unauthenticated_srtp {
            0
        } else {
            self.suite.rtp_tag_len()
        }
    }

    /// The key for a packet: by MKI, or the active one (moving past expired keys).
    fn select(&mut self, mki: &[u8], rtcp: bool) -> Result<usize, SrtpError> {
        if self.mki_len > 0 {
            let i = self
                .keys
                .iter()
                .position(|k| k.mki_matches(mki))
                .ok_or(SrtpError::UnknownMki)?;
            if self.keys[i].expired(rtcp) {
                return Err(SrtpError::KeyExpired);
            }
            return Ok(i);
        }
        while self.keys[self.active].expired(rtcp) {
            if self.active + 1 >= self.keys.len() {
                return Err(SrtpError::KeyExpired);
            }
            self.active += 1;
        }
        Ok(self.active)
    }
}

/// Receive context for one SRTP stream (any number of SSRCs) and its SRTCP.
pub struct SrtpReceiver {
    ctx: Context,
    rtp: Windows,
    rtcp: Windows,
    stats: SrtpStats,
}

impl fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("suite", &self.ctx.suite)
            .field("keys", &self.ctx.keys.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// A context for `policy` (checked: key lengths, MKI, KDR, parameters).
    pub fn new(policy: &SrtpPolicy) -> Result<Self, SrtpError> {
        Ok(SrtpReceiver {
            ctx: Context::new(policy)?,
            rtp: Windows::new(),
            rtcp: Windows::new(),
            stats: SrtpStats::default(),
        })
    }

    /// Suite in use.
    pub fn suite(&self) -> SrtpSuite {
        self.ctx.suite
    }

    /// Counters so far.
    pub fn stats(&self) -> &SrtpStats {
        &self.stats
    }

    /// Authenticate and decrypt an SRTP packet in place; returns the length of the
    /// plaintext RTP packet at the start of `buf` (tag and MKI removed). On error the
    /// buffer content is unspecified and must be dropped.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let r = self.rtp_inner(buf);
        match r {
            Ok(_) => self.stats.rtp_ok += 1,
            Err(e) => self.stats.count(e, false),
        }
        r
    }

    /// Authenticate and decrypt an SRTCP packet in place; returns the plaintext RTCP
    /// length (index, tag and MKI removed).
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let r = self.rtcp_inner(buf);
        match r {
            Ok(_) => self.stats.rtcp_ok += 1,
            Err(e) => self.stats.count(e, true),
        }
        r
    }

    /// Take back a failure counted by the last call (the caller found the packet valid
    /// under other keys, see [`SrtpChannel`]).
    pub(crate) fn forget_failure(&mut self, e: SrtpError, rtcp: bool) {
        self.stats.uncount(e, rtcp);
    }

    fn rtp_inner(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let hdr = rtp_header_len(buf).ok_or(SrtpError::Malformed)?;
        let len = buf.len();
        let suite = self.ctx.suite;
        let tag_len = self.ctx.rtp_tag_len();
        let mki_len = self.ctx.mki_len;
        if len < hdr + tag_len + mki_len {
            return Err(SrtpError::Malformed);
        }
        let mki_at = if suite.is_aead() {
            len - mki_len
        } else {
            len - tag_len - mki_len
        };
        let key = self.ctx.select(&buf[mki_at..mki_at + mki_len], false)?;
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let win = self.rtp.get(ssrc);
        let index = estimate_index(win.map(|w| w.highest), seq);
        if let Some(w) = win {
            w.check(index)?;
        }
        let r = self.ctx.r(index);
        let unencrypted = self.ctx.unencrypted_srtp;
        let cipher = self.ctx.keys[key].cipher(suite, false, r);
        let plain_len = cipher.open_rtp(buf, hdr, mki_at, tag_len, ssrc, index, unencrypted)?;
        self.ctx.keys[key].rtp_used += 1;
        self.rtp.commit(ssrc, index);
        Ok(plain_len)
    }

    fn rtcp_inner(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let suite = self.ctx.suite;
        let tag_len = suite.rtcp_tag_len();
        let mki_len = self.ctx.mki_len;
        if len < 8 + 4 + tag_len + mki_len || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        // CM: header | enc | E+index | MKI | tag;  AEAD: header | enc+tag | E+index | MKI.
        let (idx_at, mki_at) = if suite.is_aead() {
            (len - mki_len - 4, len - mki_len)
        } else {
            (len - tag_len - mki_len - 4, len - tag_len - mki_len)
        };
        let key = self.ctx.select(&buf[mki_at..mki_at + mki_len], true)?;
        let word = be32(&buf[idx_at..idx_at + 4]);
        let index = word & 0x7fff_ffff;
        let ssrc = be32(&buf[4..8]);
        if let Some(w) = self.rtcp.get(ssrc) {
            w.check(u64::from(index))?;
        }
        let r = self.ctx.r(u64::from(index));
        let cipher = self.ctx.keys[key].cipher(suite, true, r);
        let plain_len = cipher.open_rtcp(buf, idx_at, mki_at, tag_len, ssrc, word)?;
        self.ctx.keys[key].rtcp_used += 1;
        self.rtcp.commit(ssrc, u64::from(index));
        Ok(plain_len)
    }
}

/// Send side of the same transforms, for the tests, the benchmark and fuzz seeds (the
/// recorder itself never sends media). The caller supplies the ROC / SRTCP index.
pub struct SrtpSender {
    ctx: Context,
}

impl SrtpSender {
    /// A sender for `policy`.
    pub fn new(policy: &SrtpPolicy) -> Result<Self, SrtpError> {
        Ok(SrtpSender {
            ctx: Context::new(policy)?,
        })
    }

    /// Protect the RTP packet in `buf[..len]` with ROC `roc` and master key `key` (index
    /// into the policy's keys); `buf` needs room for the tag and MKI. Returns the length.
    pub fn protect_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        roc: u32,
        key: usize,
    ) -> Result<usize, SrtpError> {
        let hdr = rtp_header_len(buf.get(..len).ok_or(SrtpError::Malformed)?)
            .ok_or(SrtpError::Malformed)?;
        let suite = self.ctx.suite;
        let tag_len = self.ctx.rtp_tag_len();
        let mki_len = self.ctx.mki_len;
        let total = len + tag_len + mki_len;
        if buf.len() < total || key >= self.ctx.keys.len() {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[8..12]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let r = self.ctx.r(index);
        let unencrypted = self.ctx.unencrypted_srtp;
        let mki = self.ctx.keys[key].master.mki.unwrap_or(0).to_be_bytes();
        let cipher = self.ctx.keys[key].cipher(suite, false, r);
        match cipher {
            SessionCipher::Cm { aes, auth, salt } => {
                if !unencrypted {
                    SessionCipher::cm_crypt(aes, salt, ssrc, index, &mut buf[hdr..len]);
                }
                write_mki(&mut buf[len..len + mki_len], &mki);
                if tag_len > 0 {
                    let mut mac = auth.clone();
                    mac.update(&buf[..len]);
                    mac.update(&roc.to_be_bytes());
                    let t = mac.finalize().into_bytes();
                    buf[len + mki_len..total].copy_from_slice(&t[..tag_len]);
                }
            }
            c => {
                let nonce = rtp_nonce(c.gcm_salt(), ssrc, index);
                let tag = if unencrypted {
                    c.gcm_seal(&nonce, &buf[..len], &mut [])
                } else {
                    let (aad, rest) = buf.split_at_mut(hdr);
                    c.gcm_seal(&nonce, aad, &mut rest[..len - hdr])
                };
                buf[len..len + 16].copy_from_slice(&tag);
                write_mki(&mut buf[len + 16..total], &mki);
            }
        }
        Ok(total)
    }

    /// Protect the RTCP packet in `buf[..len]` with SRTCP index `index`, encrypted
    /// unless `encrypt` is false (`E` = 0). Returns the length.
    pub fn protect_rtcp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        index: u32,
        encrypt: bool,
        key: usize,
    ) -> Result<usize, SrtpError> {
        let suite = self.ctx.suite;
        let tag_len = suite.rtcp_tag_len();
        let mki_len = self.ctx.mki_len;
        let total = len + 4 + tag_len + mki_len;
        if len < 8 || buf.len() < total || key >= self.ctx.keys.len() {
            return Err(SrtpError::Malformed);
        }
        let index = index & 0x7fff_ffff;
        let word = index | if encrypt { 0x8000_0000 } else { 0 };
        let ssrc = be32(&buf[4..8]);
        let r = self.ctx.r(u64::from(index));
        let mki = self.ctx.keys[key].master.mki.unwrap_or(0).to_be_bytes();
        let cipher = self.ctx.keys[key].cipher(suite, true, r);
        match cipher {
            SessionCipher::Cm { aes, auth, salt } => {
                if encrypt {
                    SessionCipher::cm_crypt(aes, salt, ssrc, u64::from(index), &mut buf[8..len]);
                }
                buf[len..len + 4].copy_from_slice(&word.to_be_bytes());
                write_mki(&mut buf[len + 4..len + 4 + mki_len], &mki);
                let mut mac = auth.clone();
                mac.update(&buf[..len + 4]);
                let t = mac.finalize().into_bytes();
                buf[len + 4 + mki_len..total].copy_from_slice(&t[..tag_len]);
            }
            c => {
                let nonce = rtcp_nonce(c.gcm_salt(), ssrc, index);
                let tag = if encrypt {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&word.to_be_bytes());
                    c.gcm_seal(&nonce, &aad, &mut buf[8..len])
                } else {
                    buf[len..len + 4].copy_from_slice(&word.to_be_bytes());
                    c.gcm_seal(&nonce, &buf[..len + 4], &mut [])
                };
                buf[len..len + 16].copy_from_slice(&tag);
                buf[len + 16..len + 20].copy_from_slice(&word.to_be_bytes());
                write_mki(&mut buf[len + 20..total], &mki);
            }
        }
        Ok(total)
    }
}

fn write_mki(out: &mut [u8], value: &[u8; 8]) {
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        let from_end = n - 1 - i;
        *b = if from_end < 8 { value[7 - from_end] } else { 0 };
    }
}
