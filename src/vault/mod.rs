//! Key management for recordings (envelope encryption).
//!
//! Every recording is encrypted with its own random 256-bit [`DataKey`]. The data key is
//! stored in the recording's header only in *wrapped* form: encrypted under a
//! key-encryption key (KEK) held by a [`KeyWrap`] implementation. [`KeyFileVault`] is the
//! per-install software KEK kept in a 0600 key file; [`custody`] loads the KEK sealed in
//! the TPM ([`tpm`]) or the software one, provisions, rotates and recovers from
//! [`escrow`]; [`signer`] signs recording manifests.
//!
//! The wrapped-key format of [`KeyFileVault`] is documented in `docs/recording-format.md`.

pub mod custody;
pub mod escrow;
mod keyfile;
pub mod signer;
pub mod signing;
pub mod tpm;

pub use custody::{CustodyConfig, KekSet, Keys, Provider};
pub use keyfile::{load_secret, open_or_create_secret, KeyFileVault, WRAP_VERSION};
pub use signer::{Ed25519Signer, Signer};
pub use signing::{AuditSigner, FileSigner};

use rand::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A recording's 256-bit data-encryption key. Zeroised on drop; `Debug` never prints it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    /// A fresh random key from the caller's cryptographic RNG.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut k = [0u8; DATA_KEY_LEN];
        rng.fill_bytes(&mut k);
        let dk = DataKey(k);
        k.zeroize();
        dk
    }

    /// Wrap existing key bytes (e.g. just unwrapped). The caller should zeroise its copy.
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        DataKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Errors of the key vault.
#[derive(Debug, Error)]
pub enum VaultError {
    /// Reading or creating the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable by group or others.
    #[error(
        "key file {path} has insecure permissions {mode:o} (must not be group/world accessible)"
    )]
    InsecurePermissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not a regular file of exactly 32 bytes.
    #[error("key file {path} is invalid: {reason}")]
    BadKeyFile {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The wrapped key names a KEK this vault does not hold.
    #[error("unknown key-encryption key {0:?}")]
    UnknownKek(String),
    /// The wrapped key is malformed (wrong length or version).
    #[error("malformed wrapped key: {0}")]
    Malformed(&'static str),
    /// Authentication of the wrapped key failed (wrong KEK, or it was altered).
    #[error("wrapped key failed authentication (wrong key-encryption key or altered)")]
    UnwrapFailed,
    /// Encryption failed (should not happen with valid inputs).
    #[error("key wrapping failed")]
    WrapFailed,
    /// A TPM operation failed.
    #[error("TPM: {0}")]
    Tpm(String),
    /// The KEK exists (per the custody state) but cannot be loaded: the recorder must
    /// not record, and must not make a new key.
    #[error("key unavailable: {0}")]
    KeyUnavailable(String),
    /// Custody state problem.
    #[error("key custody: {0}")]
    Custody(String),
    /// Escrow problem.
    #[error("escrow: {0}")]
    Escrow(String),
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A key-encryption key that wraps and unwraps recording data keys.
pub trait KeyWrap: Send + Sync {
    /// Identifier of the KEK, stored in each recording header next to the wrapped key.
    fn kek_id(&self) -> String;
    /// Encrypt (wrap) a data key.
    fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError>;
    /// Decrypt (unwrap) a data key wrapped under `kek_id`.
    fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_generate_and_debug() {
        let mut rng = rand::rngs::OsRng;
        let a = DataKey::generate(&mut rng);
        let b = DataKey::generate(&mut rng);
        assert_ne!(a, b);
        assert_ne!(a.as_bytes(), &[0u8; 32]);
        assert_eq!(format!("{a:?}"), "DataKey(..)");
        let c = DataKey::from_bytes(*a.as_bytes());
        assert_eq!(a, c);
    }
}
