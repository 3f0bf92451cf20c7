//! Key escrow: the sealed key material (KEK and signing seed) encrypted to an offline
//! recovery RSA public key with RSA-OAEP (SHA-256, MGF1-SHA-256), so recordings survive a
//! dead box or a cleared TPM. The private key never comes near the box except on the
//! replacement, for `branchrec keys recover`.
//!
//! Escrow file (JSON): `{"format": "branchrec-escrow-v1", "kek_id", "algorithm":
//! "RSA-OAEP-SHA256", "recovery_key_sha256": hex SHA-256 of the recovery public key's
//! DER, "created_unix_ms", "ciphertext": hex}`. The plaintext is the 64-byte secret
//! `KEK (32) || signing seed (32)`. It can also be opened by hand:
//! `xxd -r -p <<< "$ct" | openssl pkeyutl -decrypt -inkey recovery.key -pkeyopt
//! rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`.

use std::path::Path;

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;

/// Name of the escrow format.
pub const ESCROW_FORMAT: &str = "branchrec-escrow-v1";

/// An escrow record (what is written to disk).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowFile {
    /// [`ESCROW_FORMAT`].
    pub format: String,
    /// The KEK this escrow recovers.
    pub kek_id: String,
    /// `"RSA-OAEP-SHA256"`.
    pub algorithm: String,
    /// SHA-256 (hex) of the recovery public key (DER SubjectPublicKeyInfo).
    pub recovery_key_sha256: String,
    /// When the escrow was made.
    pub created_unix_ms: u64,
    /// Hex RSA-OAEP ciphertext of `KEK || signing seed`.
    pub ciphertext: String,
}

fn bad(reason: impl Into<String>) -> VaultError {
    VaultError::Escrow(reason.into())
}

/// Load a recovery public key (PEM SubjectPublicKeyInfo, RSA ≥ 3072 bits).
pub fn load_recovery_public_key(path: &Path) -> Result<RsaPublicKey, VaultError> {
    let pem = std::fs::read_to_string(path).map_err(|e| VaultError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let k = RsaPublicKey::from_public_key_pem(&pem).map_err(|e| {
        bad(format!(
            "{}: not an RSA public key PEM: {e}",
            path.display()
        ))
    })?;
    if k.size() * 8 < 3072 {
        return Err(bad(format!(
            "{}: recovery key has {} bits, at least 3072 required",
            path.display(),
            k.size() * 8
        )));
    }
    Ok(k)
}

/// Encrypt `secret` (KEK || seed) for `kek_id` to the recovery key.
pub fn seal(
    recovery: &RsaPublicKey,
    kek_id: &str,
    secret: &[u8],
    now_unix_ms: u64,
) -> Result<EscrowFile, VaultError> {
    let der = recovery
        .to_public_key_der()
        .map_err(|e| bad(format!("encoding recovery key: {e}")))?;
    let ct = recovery
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), secret)
        .map_err(|e| bad(format!("RSA-OAEP encryption: {e}")))?;
    Ok(EscrowFile {
        format: ESCROW_FORMAT.into(),
        kek_id: kek_id.into(),
        algorithm: "RSA-OAEP-SHA256".into(),
        recovery_key_sha256: hex::encode(Sha256::digest(der.as_bytes())),
        created_unix_ms: now_unix_ms,
        ciphertext: hex::encode(ct),
    })
}

/// Decrypt an escrow record with the recovery private key (PEM PKCS#8).
pub fn open(file: &EscrowFile, private_pem: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if file.format != ESCROW_FORMAT || file.algorithm != "RSA-OAEP-SHA256" {
        return Err(bad(format!(
            "unsupported escrow {} / {}",
            file.format, file.algorithm
        )));
    }
    let k = RsaPrivateKey::from_pkcs8_pem(private_pem)
        .map_err(|e| bad(format!("not a PKCS#8 RSA private key PEM: {e}")))?;
    let ct = hex::decode(&file.ciphertext).map_err(|_| bad("ciphertext is not hex"))?;
    let pt = k
        .decrypt(Oaep::new::<Sha256>(), &ct)
        .map_err(|_| bad("decryption failed: wrong recovery key or altered escrow"))?;
    Ok(Zeroizing::new(pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        use rsa::pkcs8::EncodePrivateKey;
        let k = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = k.to_pkcs8_pem(Default::default()).unwrap();
        let e = seal(&k.to_public_key(), "tpm1:ab", &[7u8; 64], 5).unwrap();
        assert_eq!(&open(&e, &pem).unwrap()[..], &[7u8; 64][..]);
        let mut t = e.clone();
        t.ciphertext.replace_range(0..2, "00");
        assert!(open(&t, &pem).is_err());
        let other = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let opem = other.to_pkcs8_pem(Default::default()).unwrap();
        assert!(open(&e, &opem).is_err());
    }
}
