//! Signing keys for the audit chain head (and, later, manifests).
//!
//! [`AuditSigner`] is the trait; [`FileSigner`] is an Ed25519 key whose 32-byte seed is
//! kept in a 0600 key file next to the key-encryption key (`keys/signing.key`), created on
//! first use with the same checks as the KEK file. A TPM-held key can implement the same
//! trait. Verification needs only the public key ([`verify`]).

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

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

/// An Ed25519 signing key from a 0600 key file.
pub struct FileSigner {
    key: SigningKey,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// Key id of a public key: `ed1:` + first 16 hex digits of SHA-256(public key).
pub fn key_id_of(public: &[u8; 32]) -> String {
    let d = Sha256::digest(public);
    format!("ed1:{}", hex::encode(&d[..8]))
}

impl FileSigner {
    /// Load the seed at `path`, creating it (random, 0600) if missing.
    pub fn open_or_create(path: &Path) -> Result<Self, VaultError> {
        let seed = super::keyfile::open_or_create_secret(path)?;
        Ok(FileSigner {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Load an existing seed file.
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let seed = super::keyfile::load_secret(path)?;
        Ok(FileSigner {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A signer from raw seed bytes (tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        FileSigner {
            key: SigningKey::from_bytes(&seed),
        }
    }
}

impl AuditSigner for FileSigner {
    fn key_id(&self) -> String {
        key_id_of(&self.public_key())
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("signing.key");
        let s = FileSigner::open_or_create(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sig = hex::encode(s.sign(b"head"));
        verify(&s.public_key(), b"head", &sig).unwrap();
        assert!(verify(&s.public_key(), b"other", &sig).is_err());
        let again = FileSigner::load(&p).unwrap();
        assert_eq!(again.key_id(), s.key_id());
        assert!(s.key_id().starts_with("ed1:"));
    }
}
