//! SDES (RFC 4568) `a=crypto` attributes: parsing, suite choice and our answer line.
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
//! key-params  = inline:<base64 key||salt>[|<lifetime>][|<MKI value>:<MKI length>] *(";" ...)
//! ```
//!
//! Keys are secrets: they are held in [`Secret`] (zeroized, redacted in `Debug`), never
//! logged and never stored in the catalogue.

use base64::Engine;

use super::model::MediaDescription;
use crate::media::srtp::{MasterKey, Secret, SrtpPolicy, SrtpSuite};

/// Largest master key lifetime accepted (RFC 3711: 2^48 SRTP packets).
const MAX_LIFETIME: u64 = 1 << 48;

/// Why an `a=crypto` line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Structure wrong (missing fields, bad tag, bad key parameter).
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    /// A suite we do not implement (e.g. `F8_128_HMAC_SHA1_80`).
    #[error("unsupported crypto suite")]
    UnsupportedSuite,
    /// A mandatory session parameter we do not implement (RFC 4568 §6.3.7: unknown
    /// parameters without a leading `-` make the line unusable).
    #[error("unsupported session parameter")]
    UnsupportedParam,
}

/// Why no `a=crypto` of an SRTP m-line can be used ([`select_crypto`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoSelectError {
    /// SRTP m-line without any `a=crypto` (keyed by DTLS-SRTP or MIKEY instead).
    #[error("SRTP offered without a=crypto (DTLS-SRTP/MIKEY not supported)")]
    NoCryptoAttribute,
    /// Every `a=crypto` line was unusable; the last line's problem.
    #[error("no supported SRTP crypto suite ({0})")]
    NoSupportedSuite(CryptoError),
}

/// One parsed `a=crypto` attribute with a supported suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag (echoed in the answer).
    pub tag: u32,
    /// The SRC's keys and parameters: what its packets to us are protected with.
    pub policy: SrtpPolicy,
}

/// What was negotiated for an SRTP m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpNegotiated {
    /// Tag of the chosen offer line (and of our answer line).
    pub tag: u32,
    /// The SRC's keys: the receive context is built from this.
    pub policy: SrtpPolicy,
    /// Our own key||salt sent in the answer (fresh, never the offerer's).
    pub local_key: Secret,
}

impl SrtpNegotiated {
    /// The suite in use.
    pub fn suite(&self) -> SrtpSuite {
        self.policy.suite
    }

    /// Our answer's `a=crypto` value: `<tag> <suite> inline:<base64>`.
    pub fn answer_value(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.local_key.expose());
        format!(
            "{} {} inline:{}",
            self.tag,
            self.policy.suite.sdp_name(),
            b64
        )
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

fn parse_lifetime(s: &str) -> Result<u64, CryptoError> {
    let v = if let Some(exp) = s.strip_prefix("2^") {
        let e: u32 = exp
            .parse()
            .map_err(|_| CryptoError::Malformed("lifetime"))?;
        if e > 48 {
            return Err(CryptoError::Malformed("lifetime above 2^48"));
        }
        1u64 << e
    } else {
        s.parse().map_err(|_| CryptoError::Malformed("lifetime"))?
    };
    if v == 0 || v > MAX_LIFETIME {
        return Err(CryptoError::Malformed("lifetime out of range"));
    }
    Ok(v)
}

/// Parse the value of one `a=crypto` attribute (everything after `crypto:`).
pub fn parse_crypto(value: &str) -> Result<CryptoAttr, CryptoError> {
    let mut it = value.split_ascii_whitespace();
    let tag: u32 = it
        .next()
        .and_then(|t| (t.len() <= 9).then_some(t))
        .and_then(|t| t.parse().ok())
        .ok_or(CryptoError::Malformed("tag"))?;
    let suite = SrtpSuite::from_sdp_name(it.next().ok_or(CryptoError::Malformed("suite"))?)
        .ok_or(CryptoError::UnsupportedSuite)?;
    let key_params = it.next().ok_or(CryptoError::Malformed("key parameters"))?;
    let mut keys = Vec::new();
    let mut mki_len: Option<usize> = None;
    for kp in key_params.split(';') {
        let rest = kp
            .strip_prefix("inline:")
            .ok_or(CryptoError::Malformed("key method is not inline"))?;
        let mut parts = rest.split('|');
        let material = decode_b64(parts.next().unwrap_or(""))
            .ok_or(CryptoError::Malformed("key is not base64"))?;
        let material = Secret::new(material);
        if material.len() != suite.key_len() + suite.salt_len() {
            return Err(CryptoError::Malformed(
                "key||salt length does not fit the suite",
            ));
        }
        let mut lifetime = None;
        let mut mki = None;
        for p in parts {
            if let Some((v, l)) = p.split_once(':') {
                let v: u64 = (v.len() <= 10)
                    .then(|| v.parse().ok())
                    .flatten()
                    .ok_or(CryptoError::Malformed("MKI value"))?;
                let l: usize = l
                    .parse()
                    .map_err(|_| CryptoError::Malformed("MKI length"))?;
                if l == 0 || l > 128 || (l < 8 && v >> (8 * l) != 0) {
                    return Err(CryptoError::Malformed("MKI length"));
                }
                if mki_len.is_some_and(|m| m != l) {
                    return Err(CryptoError::Malformed("MKI lengths differ"));
                }
                mki_len = Some(l);
                mki = Some(v);
            } else {
                lifetime = Some(parse_lifetime(p)?);
            }
        }
        let k = suite.key_len();
        keys.push(MasterKey {
            key: Secret::new(material.expose()[..k].to_vec()),
            salt: Secret::new(material.expose()[k..].to_vec()),
            mki,
            lifetime,
        });
    }
    if keys.is_empty() {
        return Err(CryptoError::Malformed("no key"));
    }
    let mki_len = mki_len.unwrap_or(0);
    if mki_len > 0 && keys.iter().any(|k| k.mki.is_none()) {
        return Err(CryptoError::Malformed("MKI on some keys only"));
    }
    if mki_len == 0 && keys.len() > 1 && keys[..keys.len() - 1].iter().any(|k| k.lifetime.is_none())
    {
        // Without MKI the next key is only used once the previous one's lifetime is over.
        return Err(CryptoError::Malformed(
            "several keys without MKI or lifetimes",
        ));
    }
    let mut policy = SrtpPolicy {
        suite,
        keys,
        mki_len,
        kdr: 0,
        unencrypted_srtp: false,
        unencrypted_srtcp: false,
        unauthenticated_srtp: false,
    };
    for sp in it {
        match sp {
            "UNENCRYPTED_SRTP" => policy.unencrypted_srtp = true,
            "UNENCRYPTED_SRTCP" => policy.unencrypted_srtcp = true,
            "UNAUTHENTICATED_SRTP" => {
                if suite.is_aead() {
                    return Err(CryptoError::UnsupportedParam);
                }
                policy.unauthenticated_srtp = true
            }
            _ if sp.starts_with("KDR=") => {
                let n: u8 = sp[4..].parse().map_err(|_| CryptoError::Malformed("KDR"))?;
                if n > 24 {
                    return Err(CryptoError::Malformed("KDR above 24"));
                }
                policy.kdr = n;
            }
            // Window size hints and FEC parameters do not change what we must do.
            _ if sp.starts_with("WSH=") || sp.starts_with("FEC_ORDER=") => {}
            _ if sp.starts_with('-') => {}
            _ => return Err(CryptoError::UnsupportedParam),
        }
    }
    Ok(CryptoAttr { tag, policy })
}

/// Whether an m-line's transport is SDES-keyed SRTP (`RTP/SAVP`, `RTP/SAVPF`).
pub fn is_sdes_proto(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/SAVP") || proto.eq_ignore_ascii_case("RTP/SAVPF")
}

/// The best usable `a=crypto` of an SRTP m-line (AEAD_AES_256_GCM > AEAD_AES_128_GCM >
/// AES_CM_128_HMAC_SHA1_80 > _32; among equals the first offered), or why none is.
pub fn select_crypto(m: &MediaDescription) -> Result<CryptoAttr, CryptoSelectError> {
    let mut best: Option<CryptoAttr> = None;
    let mut offered = 0usize;
    let mut last_err = None;
    for a in m
        .attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
    {
        offered += 1;
        match parse_crypto(a.value.as_deref().unwrap_or("")) {
            Ok(c) => {
                if best
                    .as_ref()
                    .map_or(true, |b| c.policy.suite.rank() < b.policy.suite.rank())
                {
                    best = Some(c);
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    match (best, offered, last_err) {
        (Some(b), _, _) => Ok(b),
        (None, 0, _) => Err(CryptoSelectError::NoCryptoAttribute),
        (None, _, Some(e)) => Err(CryptoSelectError::NoSupportedSuite(e)),
        // Lines were offered and none parsed, so there is always a last error.
        (None, _, None) => Err(CryptoSelectError::NoSupportedSuite(
            CryptoError::UnsupportedSuite,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY30: &str = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";

    #[test]
    fn parses_rfc4568_examples_and_parameters() {
        let c = parse_crypto(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4;inline:{KEY30}|2^20|2:4 KDR=1 UNENCRYPTED_SRTCP -FOO"
        ))
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.policy.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(c.policy.keys.len(), 2);
        assert_eq!(c.policy.mki_len, 4);
        assert_eq!(c.policy.keys[1].mki, Some(2));
        assert_eq!(c.policy.keys[0].lifetime, Some(1 << 20));
        assert_eq!(c.policy.keys[0].key.expose(), b"i know all your ");
        assert_eq!(c.policy.keys[0].salt.expose(), b"little secrets");
        assert_eq!(c.policy.kdr, 1);
        assert!(c.policy.unencrypted_srtcp && !c.policy.unencrypted_srtp);
        // Lifetime in decimal, MKI before lifetime is allowed too.
        let c = parse_crypto(&format!(
            "7 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|1:1|1048576"
        ))
        .unwrap();
        assert_eq!(c.policy.keys[0].lifetime, Some(1_048_576));
        assert_eq!(c.policy.mki_len, 1);
        // GCM key lengths.
        let k44 = base64::engine::general_purpose::STANDARD.encode([7u8; 44]);
        let c = parse_crypto(&format!("3 AEAD_AES_256_GCM inline:{k44}")).unwrap();
        assert_eq!(c.policy.keys[0].key.len(), 32);
        assert_eq!(c.policy.keys[0].salt.len(), 12);
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        let bad = [
            format!("x AES_CM_128_HMAC_SHA1_80 inline:{KEY30}"),
            format!("1 F8_128_HMAC_SHA1_80 inline:{KEY30}"),
            format!("1 AEAD_AES_128_GCM inline:{KEY30}"), // 30 bytes, GCM-128 needs 28
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!".to_string(),
            format!("1 AES_CM_128_HMAC_SHA1_80 uri:{KEY30}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^60"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|300:1"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FUTURE_PARAM"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=30"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}"),
            "1 AES_CM_128_HMAC_SHA1_80".to_string(),
            String::new(),
        ];
        for b in bad {
            assert!(parse_crypto(&b).is_err(), "{b}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("105, 32, 107"), "{d}");
        assert!(!d.contains(KEY30));
    }
}
