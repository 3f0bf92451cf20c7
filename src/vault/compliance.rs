//! The box's half of the central compliance key (`[keys] compliance_public_key`,
//! `compliance_key_id`): the public key, loaded from a PEM file, to which every new
//! recording's data key is wrapped a second time (the container's compliance slot) and
//! the archive documents are encrypted. The box never holds the private half: the central
//! service does, in an HSM (`docs/central.md`). The formats and HPKE are the core's
//! (`branchrec_core::compliance`, `branchrec_core::hpke`); this file only adds the file
//! and the OS randomness.

use std::path::Path;
use std::sync::Arc;

use p256::pkcs8::DecodePublicKey;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{DataKey, KeyWrap, VaultError};
use branchrec_core::compliance::{self, ArchiveEnvelope, ArchiveIndex};
use branchrec_core::hpke::PublicKey;

/// Load a compliance public key: a PEM SubjectPublicKeyInfo of a P-256 (prime256v1) key,
/// as `openssl pkey -pubout` or `pkcs11-tool --read-object --type pubkey` + `openssl`
/// writes it.
pub fn load_public_key(path: &Path) -> Result<PublicKey, VaultError> {
    let pem = std::fs::read_to_string(path).map_err(|e| VaultError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    parse_public_key_pem(&pem).map_err(|e| VaultError::Custody(format!("{}: {e}", path.display())))
}

/// Parse a P-256 public key PEM (SubjectPublicKeyInfo).
pub fn parse_public_key_pem(pem: &str) -> Result<PublicKey, String> {
    p256::PublicKey::from_public_key_pem(pem.trim())
        .map(PublicKey::from_p256)
        .map_err(|e| format!("not a P-256 public key PEM (SubjectPublicKeyInfo): {e}"))
}

/// The compliance public key and its id, ready to wrap and seal.
#[derive(Clone, Debug)]
pub struct ComplianceRecipient {
    /// The public key.
    pub public_key: PublicKey,
    /// Its id (`[keys] compliance_key_id`), written beside every wrap.
    pub key_id: String,
}

fn ikm() -> Zeroizing<[u8; 32]> {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut b[..]);
    b
}

impl ComplianceRecipient {
    /// Load from the configured file; the id must be valid.
    pub fn load(path: &Path, key_id: &str) -> Result<Self, VaultError> {
        if !compliance::valid_key_id(key_id) {
            return Err(VaultError::Custody(format!(
                "invalid compliance_key_id {key_id:?}"
            )));
        }
        Ok(ComplianceRecipient {
            public_key: load_public_key(path)?,
            key_id: key_id.to_string(),
        })
    }

    /// The compliance slot for `dk`: `(kek_id, wrapped)`.
    pub fn wrap(&self, dk: &DataKey) -> Result<(String, Vec<u8>), VaultError> {
        let w = compliance::wrap_data_key(&self.public_key, &self.key_id, dk, &ikm())
            .map_err(|_| VaultError::WrapFailed)?;
        Ok((compliance::kek_id(&self.key_id), w))
    }

    /// Seal an archive object (metadata document or manifest) under `index` (whose
    /// `compliance_key_id` is set to this key's id).
    pub fn seal(
        &self,
        mut index: ArchiveIndex,
        plaintext: &[u8],
    ) -> Result<ArchiveEnvelope, VaultError> {
        index.compliance_key_id = self.key_id.clone();
        ArchiveEnvelope::seal(&self.public_key, index, plaintext, &ikm())
            .map_err(|e| VaultError::Custody(format!("sealing the archive document: {e}")))
    }
}

/// Name of the rotation file under `<data_dir>/keys/`: a compliance key installed by a
/// central `rotate_compliance_key` command, valid while `[keys] compliance_key_id` is
/// still the id it replaced (editing the configuration later wins).
pub const ROTATED_FILE: &str = "compliance-rotated.json";

/// A compliance key rotation from headquarters, as persisted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// The configured key id it replaces.
    pub replaces: String,
    /// The new key id.
    pub key_id: String,
    /// The new public key (PEM).
    pub public_key_pem: String,
}

impl Rotation {
    /// The recipient.
    pub fn recipient(&self) -> Result<ComplianceRecipient, VaultError> {
        if !compliance::valid_key_id(&self.key_id) {
            return Err(VaultError::Custody(format!(
                "invalid compliance key id {:?}",
                self.key_id
            )));
        }
        Ok(ComplianceRecipient {
            public_key: parse_public_key_pem(&self.public_key_pem).map_err(VaultError::Custody)?,
            key_id: self.key_id.clone(),
        })
    }
}

/// The process's current compliance recipient when a rotation replaced the one the
/// daemon started with (read by [`WithCompliance`] and the uplink).
static CURRENT: std::sync::RwLock<Option<ComplianceRecipient>> = std::sync::RwLock::new(None);

/// Make `r` the compliance recipient of new recordings and archive documents of this
/// process from now on.
pub fn set_current(r: ComplianceRecipient) {
    *CURRENT.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
}

/// The recipient installed by [`set_current`], if any.
pub fn current() -> Option<ComplianceRecipient> {
    CURRENT.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A box KEK (the custody's [`KeyWrap`]) plus the compliance wrap: what the daemon
/// records with when `[keys] compliance_public_key` is set.
pub struct WithCompliance {
    inner: Arc<dyn KeyWrap>,
    recipient: ComplianceRecipient,
}

impl WithCompliance {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn KeyWrap>, recipient: ComplianceRecipient) -> Self {
        WithCompliance { inner, recipient }
    }
}

impl KeyWrap for WithCompliance {
    fn kek_id(&self) -> String {
        self.inner.kek_id()
    }
    fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError> {
        self.inner.wrap(dk)
    }
    fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        self.inner.unwrap(kek_id, wrapped)
    }
    fn compliance_wrap(&self, dk: &DataKey) -> Result<Option<(String, Vec<u8>)>, VaultError> {
        match current() {
            Some(r) => r.wrap(dk).map(Some),
            None => self.recipient.wrap(dk).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey;

    #[test]
    fn loads_p256_pem_and_refuses_others() {
        let (sk, _) = branchrec_core::hpke::derive_key_pair(&[3; 32]).unwrap();
        let p = p256::SecretKey::from_slice(&sk.to_bytes()[..]).unwrap();
        let pem = p
            .public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let k = parse_public_key_pem(&pem).unwrap();
        assert_eq!(k, sk.public_key());
        assert!(parse_public_key_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.pem");
        std::fs::write(&f, &pem).unwrap();
        assert!(ComplianceRecipient::load(&f, "ck 1").is_err());
        let r = ComplianceRecipient::load(&f, "ck-1").unwrap();
        let dk = DataKey::from_bytes([1; 32]);
        let (kid, w) = r.wrap(&dk).unwrap();
        assert_eq!(kid, "hpke1:ck-1");
        let enc = branchrec_core::hpke::PublicKey::from_sec1(compliance::wrapped_enc(&w).unwrap())
            .unwrap();
        let got = compliance::unwrap_data_key(&kid, &w, &sk.dh(&enc), &r.public_key).unwrap();
        assert_eq!(got, dk);
        // Two wraps of one key differ (fresh ephemeral key each time).
        assert_ne!(r.wrap(&dk).unwrap().1, w);
    }
}
