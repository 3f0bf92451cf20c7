//! The audit MAC key: every audit entry carries `HMAC-SHA256(key, …)` over its seq and
//! hash (`branchrec_core::lifecycle::audit::entry_mac`), so rewriting an entry — even with
//! the SHA-256 chain recomputed — needs this key.
//!
//! The key is derived from the custody signing seed (`HMAC-SHA256(seed,
//! "branchrec-audit-mac-v1")`), which is sealed in the TPM together with the KEK (TPM
//! provider) or kept in `keys/signing.key` (software provider): there is no key file of
//! its own, and it is available exactly when the custody keys unseal. Derived from the
//! seed rather than the KEK because `keys rotate` replaces the KEK but keeps the seed; a
//! MAC key that changed with the KEK would leave every older entry unverifiable.
//!
//! A process that loaded the custody keys installs the key once ([`install`]); the
//! catalogues it opens afterwards MAC each entry they append. The key lives in a locked
//! page ([`super::locked::LockedKey`]).

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::locked::LockedKey;

/// Label of the derivation.
pub const DERIVATION_LABEL: &[u8] = b"branchrec-audit-mac-v1";

/// The audit MAC key (32 bytes, locked memory, zeroised on drop).
pub struct AuditMacKey(LockedKey);

impl std::fmt::Debug for AuditMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuditMacKey").field(&self.key_id()).finish()
    }
}

impl AuditMacKey {
    /// The key derived from the custody signing seed.
    pub fn from_signer(s: &super::Ed25519Signer) -> Self {
        AuditMacKey(s.derive_key(DERIVATION_LABEL))
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        AuditMacKey(LockedKey::from_bytes(b))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// A short id that names the key without revealing it.
    pub fn key_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"branchrec-audit-mac-id-v1");
        h.update(self.0.as_bytes());
        format!("mac1:{}", hex::encode(&h.finalize()[..8]))
    }
}

impl super::Keys {
    /// This installation's audit MAC key.
    pub fn audit_mac_key(&self) -> AuditMacKey {
        AuditMacKey::from_signer(&self.signer)
    }
}

static INSTALLED: RwLock<Option<Arc<AuditMacKey>>> = RwLock::new(None);

/// Make `key` the one catalogues opened from now on in this process MAC their audit
/// entries with.
pub fn install(key: Arc<AuditMacKey>) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
}

/// The key installed in this process, if any.
pub fn installed() -> Option<Arc<AuditMacKey>> {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[test]
    fn derived_from_the_seed_and_stable() {
        let a = super::super::Ed25519Signer::from_seed(&Zeroizing::new([3; 32]));
        let b = super::super::Ed25519Signer::from_seed(&Zeroizing::new([3; 32]));
        let c = super::super::Ed25519Signer::from_seed(&Zeroizing::new([4; 32]));
        let (ka, kb, kc) = (
            AuditMacKey::from_signer(&a),
            AuditMacKey::from_signer(&b),
            AuditMacKey::from_signer(&c),
        );
        assert_eq!(ka.as_bytes(), kb.as_bytes());
        assert_ne!(ka.as_bytes(), kc.as_bytes());
        // Not the seed itself.
        assert_ne!(ka.as_bytes(), &[3; 32]);
        assert!(format!("{ka:?}").starts_with("AuditMacKey(\"mac1:"));
    }
}
