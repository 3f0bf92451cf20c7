//! Key management for recordings (envelope encryption).
//!
//! Every recording is encrypted with its own random 256-bit [`DataKey`]. The data key is
//! stored in the recording's header only in *wrapped* form: encrypted under a
//! key-encryption key (KEK) held by a [`KeyWrap`] implementation. [`KeyFileVault`] is the
//! per-install software KEK kept in a 0600 key file; [`custody`] loads the KEK sealed in
//! the TPM ([`tpm`]) or the software one, provisions, rotates and recovers from
//! [`escrow`]; [`signing`] holds the one signing key of manifests and audit heads.
//!
//! The wrapped-key format of [`KeyFileVault`] is documented in `docs/recording-format.md`.

pub mod custody;
pub mod escrow;
mod keyfile;
pub mod signing;
pub mod tpm;

pub use custody::{CustodyConfig, KekSet, Keys, Provider};
pub use keyfile::{load_secret, open_or_create_secret, KeyFileVault, WRAP_VERSION};
pub use signing::{public_key_pem, verify_ed25519, AuditSigner, Ed25519Signer, FileSigner, Signer};

pub use branchrec_core::keys::{DataKey, KeyWrap, VaultError, DATA_KEY_LEN};

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
