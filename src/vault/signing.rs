//! Signing keys: one Ed25519 key signs recording manifests and audit-chain heads.
//!
//! [`Signer`] is the manifest side (DER public key, `Vec<u8>` signatures, fallible: a
//! TPM-held key may refuse); [`AuditSigner`] is the audit-head side (raw 32-byte public
//! key, key id stored next to each signature). [`Ed25519Signer`] is the custody key,
//! whose 32-byte seed is either sealed in the TPM next to the KEK (provider `tpm`) or kept
//! in a 0600 key file `keys/signing.key` (provider `software` only); it implements both
//! traits. There is no other signing key: in TPM mode no key file exists, and while the
//! custody keys cannot be loaded nothing is signed (audit heads wait for the keys).
//! Verification needs only the public key ([`verify`], [`verify_ed25519`]).
//! Signatures verify with stock OpenSSL 3:
//! `openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in MSG -sigfile SIG`.

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::locked::LockedKey;
use super::VaultError;

/// Something that signs audit chain heads.
pub trait AuditSigner: Send + Sync {
    /// Id of the key (stored next to each signature).
    fn key_id(&self) -> String;
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Sign `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// Key id of a public key: `ed1:` + first 16 hex digits of SHA-256(public key).
pub fn key_id_of(public: &[u8; 32]) -> String {
    let d = Sha256::digest(public);
    format!("ed1:{}", hex::encode(&d[..8]))
}

/// Verify an Ed25519 signature (hex) over `msg` with `public`.
pub fn verify(public: &[u8; 32], msg: &[u8], sig_hex: &str) -> Result<(), String> {
    let vk = VerifyingKey::from_bytes(public).map_err(|e| format!("bad public key: {e}"))?;
    let raw = hex::decode(sig_hex).map_err(|_| "signature is not hex".to_string())?;
    let arr: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_string())?;
    vk.verify(msg, &Signature::from_bytes(&arr))
        .map_err(|_| "signature does not verify".to_string())
}

/// Something that signs messages with a private key it keeps to itself.
pub trait Signer: Send + Sync {
    /// Sign `msg` (the whole message; the algorithm hashes as it needs).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, VaultError>;
    /// The public key as DER `SubjectPublicKeyInfo`.
    fn public_key_der(&self) -> Vec<u8>;
    /// Algorithm name as written in manifests (`"ed25519"`).
    fn algorithm(&self) -> &'static str;
}

/// An Ed25519 signing key (RFC 8032, pure Ed25519). The 32-byte seed is kept in a
/// locked page ([`LockedKey`]); the expanded signing key exists only while one
/// signature is made (`SigningKey` zeroises itself on drop).
pub struct Ed25519Signer {
    seed: LockedKey,
    public: VerifyingKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("public", &hex::encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// The key for a 32-byte seed.
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Self {
        let public = SigningKey::from_bytes(seed).verifying_key();
        Ed25519Signer {
            seed: LockedKey::from_bytes(seed),
            public,
        }
    }

    /// The raw 32-byte public key.
    pub fn public_key_raw(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(self.seed.as_bytes())
    }

    /// A 32-byte key derived from the seed for `label` (HMAC-SHA256 keyed by the seed),
    /// in a locked page: the audit MAC key (`vault::audit_key`). The seed is sealed
    /// with the KEK and, unlike the KEK, kept across `keys rotate`.
    pub fn derive_key(&self, label: &[u8]) -> LockedKey {
        use hmac::Mac;
        // Cannot fail: HMAC accepts keys of any length.
        let mut m = <hmac::Hmac<Sha256> as Mac>::new_from_slice(self.seed.as_bytes())
            .expect("HMAC takes keys of any length");
        m.update(label);
        let mut out = LockedKey::zeroed();
        out.bytes_mut().copy_from_slice(&m.finalize().into_bytes());
        out
    }
}

/// The custody key also signs the audit chain heads (one signing key for manifests and
/// audit, held by the TPM in TPM mode).
impl AuditSigner for Ed25519Signer {
    fn key_id(&self) -> String {
        key_id_of(&self.public_key_raw())
    }
    fn public_key(&self) -> [u8; 32] {
        self.public_key_raw()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing_key().sign(msg).to_bytes()
    }
}

impl Signer for Ed25519Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, VaultError> {
        Ok(self.signing_key().sign(msg).to_bytes().to_vec())
    }

    fn public_key_der(&self) -> Vec<u8> {
        spki_der(&self.public)
    }

    fn algorithm(&self) -> &'static str {
        "ed25519"
    }
}

fn spki_der(k: &VerifyingKey) -> Vec<u8> {
    match k.to_public_key_der() {
        Ok(d) => d.as_bytes().to_vec(),
        // Encoding a valid Ed25519 point into a fixed 44-byte SPKI cannot fail; fall
        // back to building it by hand rather than panic.
        Err(_) => {
            let mut v = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ];
            v.extend_from_slice(k.as_bytes());
            v
        }
    }
}

/// PEM (`-----BEGIN PUBLIC KEY-----`) of a DER SubjectPublicKeyInfo.
pub fn public_key_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// Verify an Ed25519 signature given the signer's DER SubjectPublicKeyInfo.
pub fn verify_ed25519(public_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), VaultError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let vk = VerifyingKey::from_public_key_der(public_der)
        .map_err(|_| VaultError::Malformed("not an Ed25519 public key"))?;
    let sig = Signature::from_slice(sig).map_err(|_| VaultError::Malformed("signature length"))?;
    vk.verify(msg, &sig).map_err(|_| VaultError::BadSignature)
}

/// An Ed25519 public key from a PEM SubjectPublicKeyInfo (`openssl pkey -pubout`): the
/// central command key the box is configured with (`[central] command_public_key`).
pub fn ed25519_public_from_pem(pem: &str) -> Result<[u8; 32], String> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_pem(pem.trim())
        .map(|k| k.to_bytes())
        .map_err(|e| format!("not an Ed25519 public key (PEM SubjectPublicKeyInfo): {e}"))
}

/// Whether `sig` is a valid Ed25519 signature of `msg` by the raw public key `pk`.
pub fn verify_raw(pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(pk)
        .map(|k| k.verify(msg, &Signature::from_bytes(sig)).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_signature_verifies() {
        let s = Ed25519Signer::from_seed(&Zeroizing::new([9; 32]));
        let sig = hex::encode(AuditSigner::sign(&s, b"head"));
        verify(&AuditSigner::public_key(&s), b"head", &sig).unwrap();
        assert!(verify(&AuditSigner::public_key(&s), b"other", &sig).is_err());
        assert!(s.key_id().starts_with("ed1:"));
    }

    #[test]
    fn sign_verify_and_der() {
        let s = Ed25519Signer::from_seed(&Zeroizing::new([5; 32]));
        let sig = Signer::sign(&s, b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        let der = s.public_key_der();
        assert_eq!(der.len(), 44);
        verify_ed25519(&der, b"hello", &sig).unwrap();
        assert!(verify_ed25519(&der, b"hellO", &sig).is_err());
        assert!(public_key_pem(&der).starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert_eq!(s.algorithm(), "ed25519");
    }
}
