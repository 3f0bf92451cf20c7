//! The key types the recording format needs: a recording's [`DataKey`], the
//! [`KeyWrap`] trait a key-encryption key implements, and [`VaultError`]. The
//! implementations (key file, TPM-sealed KEK, escrow) are the daemon's `branchrec::vault`;
//! like rustls's `CryptoProvider`, the caller hands one in.

use rand_core::{CryptoRng, RngCore};
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
    /// The data key wrapped a second time, to the central compliance key, as the
    /// container's compliance slot `(kek_id, wrapped)` (`crate::compliance`). `None`
    /// (the default) when no compliance key is configured.
    fn compliance_wrap(&self, _dk: &DataKey) -> Result<Option<(String, Vec<u8>)>, VaultError> {
        Ok(None)
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_kek {
    //! A deterministic in-memory [`KeyWrap`] for tests and fuzzing: AES-256-GCM under a
    //! fixed KEK, nonces from a counter (never for real keys: the daemon's `KeyFileVault`
    //! draws nonces from the OS).
    use super::*;
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A KEK from raw bytes; ids look like the daemon's (`kf1:<hex>`).
    pub struct TestKek {
        kek: [u8; 32],
        id: String,
        counter: AtomicU64,
    }

    impl TestKek {
        /// A KEK around raw bytes.
        pub fn from_key(kek: [u8; 32]) -> Self {
            let mut h = Sha256::new();
            h.update(b"branchrec-kek-id-v1");
            h.update(kek);
            let id = format!("kf1:{}", hex::encode(&h.finalize()[..8]));
            TestKek {
                kek,
                id,
                counter: AtomicU64::new(1),
            }
        }
    }

    impl KeyWrap for TestKek {
        fn kek_id(&self) -> String {
            self.id.clone()
        }
        fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError> {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            let mut out = vec![1u8];
            out.extend_from_slice(&nonce);
            out.extend_from_slice(dk.as_bytes());
            let tag = Aes256Gcm::new((&self.kek).into())
                .encrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    self.id.as_bytes(),
                    &mut out[13..],
                )
                .map_err(|_| VaultError::WrapFailed)?;
            out.extend_from_slice(&tag);
            Ok(out)
        }
        fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
            if kek_id != self.id {
                return Err(VaultError::UnknownKek(kek_id.to_string()));
            }
            if wrapped.len() != 1 + 12 + DATA_KEY_LEN + 16 {
                return Err(VaultError::Malformed("wrong length"));
            }
            let (nonce, rest) = wrapped[1..].split_at(12);
            let (ct, tag) = rest.split_at(DATA_KEY_LEN);
            let mut key = [0u8; DATA_KEY_LEN];
            key.copy_from_slice(ct);
            Aes256Gcm::new((&self.kek).into())
                .decrypt_in_place_detached(
                    Nonce::from_slice(nonce),
                    kek_id.as_bytes(),
                    &mut key,
                    tag.into(),
                )
                .map_err(|_| VaultError::UnwrapFailed)?;
            Ok(DataKey::from_bytes(key))
        }
    }
}
