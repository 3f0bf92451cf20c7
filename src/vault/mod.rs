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

pub mod audit_key;
pub mod compliance;
pub mod counter;
pub mod custody;
pub mod escrow;
mod keyfile;
pub mod locked;
pub mod signing;
pub mod tpm;

pub use counter::{AuditCounter, HeadSigner};
pub use custody::{CustodyConfig, KekSet, Keys, Provider};
pub use keyfile::{load_secret, open_or_create_secret, KeyFileVault, WRAP_VERSION};
pub use signing::{public_key_pem, verify_ed25519, AuditSigner, Ed25519Signer, Signer};

pub use branchrec_core::keys::{DataKey, KeyWrap, VaultError, DATA_KEY_LEN};

/// Keep key material out of core dumps and away from other processes: `prctl(
/// PR_SET_DUMPABLE, 0)` (no core file, no `ptrace` attach and no `/proc/<pid>/mem` by
/// the same user; the systemd unit also sets `LimitCORE=0`) and a zero core-size limit.
/// Called first thing by the daemon and the CLI. Returns whether the process is now
/// non-dumpable.
pub fn harden_process() -> bool {
    use rustix::process::{set_dumpable_behavior, DumpableBehavior};
    let dumpable_off = set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    dumpable_off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardened_process_is_not_dumpable() {
        assert!(harden_process());
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
        // Dumpable again for the rest of the test binary (debuggers).
        let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable);
    }

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
