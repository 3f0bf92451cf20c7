//! HPKE (RFC 9180), base mode, single shot, for one suite family: DHKEM(P-256,
//! HKDF-SHA256), HKDF-SHA256 and AES-256-GCM (AES-128-GCM too, for the RFC's published
//! test vectors of Appendix A.3).
//!
//! Why this suite and not X25519 or RSA-OAEP: the recipient's private key lives in an HSM
//! reached through PKCS#11, and the HSM must do the private-key step. P-256 ECDH
//! (`CKM_ECDH1_DERIVE`) is the one KEM primitive every PKCS#11 HSM has, SoftHSM2 2.6
//! included; X25519 (`CKM_EC_MONTGOMERY_KEY_PAIR_GEN`) is missing from many (SoftHSM2 2.6
//! among them) and SoftHSM2's `CKM_RSA_PKCS_OAEP` only takes SHA-1 (docs/central.md has
//! the evidence). So the decapsulation is split: the HSM computes `DH(skR, pkE)` and
//! [`open_with_dh`] does the rest (ExtractAndExpand, key schedule, AEAD) in software.
//!
//! No IO and no randomness of its own: the sender's ephemeral key comes from `ikm_e`
//! (RFC 9180 `DeriveKeyPair`), 32 random bytes the caller draws, which is also what makes
//! the RFC's test vectors checkable.

use aes_gcm::aead::{Aead as _, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// KEM id of DHKEM(P-256, HKDF-SHA256).
pub const KEM_P256_HKDF_SHA256: u16 = 0x0010;
/// KDF id of HKDF-SHA256.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// Length of the encapsulated key `enc` (an uncompressed P-256 point).
pub const ENC_LEN: usize = 65;
/// Length of the KEM shared secret and of a raw P-256 ECDH result (its x coordinate).
pub const SECRET_LEN: usize = 32;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;

/// The AEAD of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// AES-128-GCM (id 1): only for the RFC's test vectors.
    Aes128Gcm,
    /// AES-256-GCM (id 2): what branchrec uses.
    Aes256Gcm,
}

impl Aead {
    fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
        }
    }
    fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm => 32,
        }
    }
}

/// The suite branchrec uses, as written into documents.
pub const SUITE_NAME: &str = "DHKEM(P-256,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM";

/// Errors of HPKE.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HpkeError {
    /// A public key (recipient's or `enc`) is not a valid uncompressed P-256 point.
    #[error("not a valid P-256 public key")]
    BadPublicKey,
    /// A private key is zero or not below the group order.
    #[error("not a valid P-256 private key")]
    BadPrivateKey,
    /// DeriveKeyPair found no valid scalar in 256 candidates (practically impossible).
    #[error("DeriveKeyPair failed")]
    DeriveKeyPair,
    /// The ciphertext does not authenticate (wrong key, wrong info/aad, or altered).
    #[error("HPKE open failed (wrong key, wrong context, or altered ciphertext)")]
    OpenFailed,
    /// Sealing failed (message too long).
    #[error("HPKE seal failed")]
    SealFailed,
}

/// A P-256 public key (the recipient's `pkR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(p256::PublicKey);

impl PublicKey {
    /// Parse a SEC1 point (compressed or uncompressed).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, HpkeError> {
        p256::PublicKey::from_sec1_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| HpkeError::BadPublicKey)
    }

    /// From the `p256` type (e.g. parsed from a PEM by the caller).
    pub fn from_p256(k: p256::PublicKey) -> Self {
        PublicKey(k)
    }

    /// `SerializePublicKey`: the 65-byte uncompressed point.
    pub fn to_bytes(&self) -> [u8; ENC_LEN] {
        let ep = self.0.to_encoded_point(false);
        let mut out = [0u8; ENC_LEN];
        out.copy_from_slice(ep.as_bytes());
        out
    }
}

/// A P-256 private key (the recipient's `skR`, when it is held in software).
#[derive(Clone)]
pub struct SecretKey(p256::SecretKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// From the 32-byte big-endian scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HpkeError> {
        p256::SecretKey::from_slice(bytes)
            .map(SecretKey)
            .map_err(|_| HpkeError::BadPrivateKey)
    }

    /// From the `p256` type.
    pub fn from_p256(k: p256::SecretKey) -> Self {
        SecretKey(k)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.public_key())
    }

    /// The scalar, big-endian.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.0.to_bytes());
        out
    }

    /// Raw ECDH with a peer's public key: the x coordinate of `sk · pk`, what an HSM's
    /// `CKM_ECDH1_DERIVE` with `CKD_NULL` returns.
    pub fn dh(&self, peer: &PublicKey) -> Zeroizing<[u8; SECRET_LEN]> {
        let s = p256::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), peer.0.as_affine());
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        out.copy_from_slice(s.raw_secret_bytes());
        out
    }
}

fn kem_suite_id() -> [u8; 5] {
    let k = KEM_P256_HKDF_SHA256.to_be_bytes();
    [b'K', b'E', b'M', k[0], k[1]]
}

fn hpke_suite_id(aead: Aead) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[..4].copy_from_slice(b"HPKE");
    s[4..6].copy_from_slice(&KEM_P256_HKDF_SHA256.to_be_bytes());
    s[6..8].copy_from_slice(&KDF_HKDF_SHA256.to_be_bytes());
    s[8..10].copy_from_slice(&aead.id().to_be_bytes());
    s
}

/// `LabeledExtract(salt, label, ikm)` → PRK (32 bytes).
fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut labeled = Zeroizing::new(Vec::with_capacity(
        7 + suite.len() + label.len() + ikm.len(),
    ));
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), &labeled);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&prk);
    out
}

/// `LabeledExpand(prk, label, info, L)`.
fn labeled_expand(suite: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    let mut labeled = Vec::with_capacity(9 + suite.len() + label.len() + info.len());
    // L ≤ 32 everywhere here.
    labeled.extend_from_slice(&(out.len() as u16).to_be_bytes());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(info);
    // Panic means bug: a 32-byte PRK is a valid HKDF-SHA256 PRK and L ≤ 255 × 32.
    Hkdf::<Sha256>::from_prk(prk)
        .expect("32-byte PRK")
        .expand(&labeled, out)
        .expect("short output");
}

/// RFC 9180 §7.1.3 `DeriveKeyPair(ikm)` for P-256.
pub fn derive_key_pair(ikm: &[u8]) -> Result<(SecretKey, PublicKey), HpkeError> {
    let suite = kem_suite_id();
    let prk = labeled_extract(&suite, b"", b"dkp_prk", ikm);
    for counter in 0u8..=255 {
        let mut bytes = Zeroizing::new([0u8; 32]);
        labeled_expand(&suite, &prk, b"candidate", &[counter], &mut bytes[..]);
        // bitmask 0xFF for P-256: nothing to clear.
        if let Ok(sk) = SecretKey::from_bytes(&bytes[..]) {
            let pk = sk.public_key();
            return Ok((sk, pk));
        }
    }
    Err(HpkeError::DeriveKeyPair)
}

/// `ExtractAndExpand(dh, kem_context)` with `kem_context = enc ‖ pkRm`: the KEM shared
/// secret from a raw ECDH result.
pub fn shared_secret_from_dh(
    dh: &[u8; SECRET_LEN],
    enc: &[u8; ENC_LEN],
    pk_r: &PublicKey,
) -> Zeroizing<[u8; SECRET_LEN]> {
    let suite = kem_suite_id();
    let prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut ctx = [0u8; 2 * ENC_LEN];
    ctx[..ENC_LEN].copy_from_slice(enc);
    ctx[ENC_LEN..].copy_from_slice(&pk_r.to_bytes());
    let mut ss = Zeroizing::new([0u8; SECRET_LEN]);
    labeled_expand(&suite, &prk, b"shared_secret", &ctx, &mut ss[..]);
    ss
}

/// The base-mode key schedule: `(key, base_nonce)`.
pub fn key_schedule(
    aead: Aead,
    shared_secret: &[u8; SECRET_LEN],
    info: &[u8],
) -> (Zeroizing<Vec<u8>>, [u8; 12]) {
    let suite = hpke_suite_id(aead);
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let mut ctx = [0u8; 65];
    ctx[0] = 0; // mode_base
    ctx[1..33].copy_from_slice(&psk_id_hash[..]);
    ctx[33..].copy_from_slice(&info_hash[..]);
    let secret = labeled_extract(&suite, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new(vec![0u8; aead.key_len()]);
    labeled_expand(&suite, &secret, b"key", &ctx, &mut key);
    let mut nonce = [0u8; 12];
    labeled_expand(&suite, &secret, b"base_nonce", &ctx, &mut nonce);
    (key, nonce)
}

fn aead_seal(
    aead: Aead,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, HpkeError> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg: pt, aad };
    match aead {
        Aead::Aes128Gcm => Aes128Gcm::new_from_slice(key)
            .map_err(|_| HpkeError::SealFailed)?
            .encrypt(n, p),
        Aead::Aes256Gcm => Aes256Gcm::new_from_slice(key)
            .map_err(|_| HpkeError::SealFailed)?
            .encrypt(n, p),
    }
    .map_err(|_| HpkeError::SealFailed)
}

fn aead_open(
    aead: Aead,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    match aead {
        Aead::Aes128Gcm => Aes128Gcm::new_from_slice(key)
            .map_err(|_| HpkeError::OpenFailed)?
            .decrypt(n, p),
        Aead::Aes256Gcm => Aes256Gcm::new_from_slice(key)
            .map_err(|_| HpkeError::OpenFailed)?
            .decrypt(n, p),
    }
    .map(Zeroizing::new)
    .map_err(|_| HpkeError::OpenFailed)
}

/// Single-shot `Seal` (base mode, sequence 0): returns `(enc, ciphertext ‖ tag)`. The
/// ephemeral key is `DeriveKeyPair(ikm_e)`: `ikm_e` must be 32 fresh random bytes.
pub fn seal(
    aead: Aead,
    pk_r: &PublicKey,
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
    ikm_e: &[u8; 32],
) -> Result<([u8; ENC_LEN], Vec<u8>), HpkeError> {
    let (sk_e, pk_e) = derive_key_pair(ikm_e)?;
    let enc = pk_e.to_bytes();
    let dh = sk_e.dh(pk_r);
    let ss = shared_secret_from_dh(&dh, &enc, pk_r);
    let (key, nonce) = key_schedule(aead, &ss, info);
    let ct = aead_seal(aead, &key, &nonce, aad, pt)?;
    Ok((enc, ct))
}

/// Single-shot `Open` with the recipient's private key in software.
pub fn open(
    aead: Aead,
    sk_r: &SecretKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    let pk_e = PublicKey::from_sec1(enc)?;
    let dh = sk_r.dh(&pk_e);
    open_with_dh(aead, &dh, enc, &sk_r.public_key(), info, aad, ct)
}

/// Single-shot `Open` when someone else (an HSM) computed `dh = DH(skR, pkE)`: the
/// software half of `Decap` plus the key schedule and the AEAD. `enc` must be the
/// uncompressed ephemeral point the sender sent; `pk_r` the recipient's public key.
pub fn open_with_dh(
    aead: Aead,
    dh: &[u8; SECRET_LEN],
    enc: &[u8],
    pk_r: &PublicKey,
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    let enc: &[u8; ENC_LEN] = enc.try_into().map_err(|_| HpkeError::BadPublicKey)?;
    // The point must be valid (the HSM checked it too, but a software caller may not).
    PublicKey::from_sec1(enc)?;
    let mut ss = shared_secret_from_dh(dh, enc, pk_r);
    let (key, nonce) = key_schedule(aead, &ss, info);
    ss.zeroize();
    aead_open(aead, &key, &nonce, aad, ct)
}

#[cfg(test)]
mod tests;
