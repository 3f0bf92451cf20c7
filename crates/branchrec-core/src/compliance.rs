//! The central compliance key: what the box encrypts to it, as bytes (no IO).
//!
//! * **The compliance key slot** — a recording's data key wrapped a second time, with
//!   [`crate::hpke`] (DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM), to the
//!   compliance public key; stored in the container's third key slot
//!   (`docs/recording-format.md` 1a) under `kek_id = "hpke1:" ‖ key_id`.
//! * **The archive envelope** — the metadata document (`<key>.json`) and the signed
//!   manifest (`<key>.manifest.json`) encrypted to the same key, with only an
//!   [`ArchiveIndex`] (no personal data) in plaintext, authenticated as the AEAD's
//!   associated data.
//!
//! The sender's randomness (`ikm`) is an input; the private-key half ([`open_with_dh`]'s
//! `dh`) may come from an HSM: see `docs/central.md`.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::hpke::{self, Aead, HpkeError, PublicKey, ENC_LEN, SECRET_LEN};
use crate::keys::{DataKey, DATA_KEY_LEN};

/// Prefix of a compliance slot's `kek_id`.
pub const KEK_PREFIX: &str = "hpke1:";
/// Version byte of a compliance-wrapped data key.
pub const WRAP_VERSION: u8 = 1;
/// Length of a compliance-wrapped data key: version, `enc`, ciphertext and tag.
pub const WRAPPED_LEN: usize = 1 + ENC_LEN + DATA_KEY_LEN + hpke::TAG_LEN;
/// HPKE `info` of the data-key wrap.
pub const WRAP_INFO: &[u8] = b"branchrec compliance data-key wrap v1";
/// `format` of an archive envelope.
pub const ENVELOPE_FORMAT: &str = "branchrec-archive-envelope-v1";

/// Errors of the compliance wrap and the archive envelope.
#[derive(Debug, Error)]
pub enum ComplianceError {
    /// A key id that is not 1–64 characters of `[A-Za-z0-9._-]`.
    #[error("invalid compliance key id {0:?} (1-64 characters of A-Z a-z 0-9 . _ -)")]
    BadKeyId(String),
    /// Not a compliance slot (`kek_id` without the `hpke1:` prefix).
    #[error("not a compliance key slot: {0:?}")]
    NotCompliance(String),
    /// Wrong length or version.
    #[error("malformed compliance-wrapped key or envelope: {0}")]
    Malformed(String),
    /// HPKE failed (wrong key, altered data or context).
    #[error(transparent)]
    Hpke(#[from] HpkeError),
}

/// Whether `id` is a valid compliance key id.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The slot `kek_id` for compliance key `key_id`.
pub fn kek_id(key_id: &str) -> String {
    format!("{KEK_PREFIX}{key_id}")
}

/// The compliance key id of a slot's `kek_id`, if it is a compliance slot.
pub fn key_id_of(kek_id: &str) -> Option<&str> {
    kek_id.strip_prefix(KEK_PREFIX)
}

/// Wrap `dk` to the compliance public key: `0x01 ‖ enc (65) ‖ AES-256-GCM(dk) ‖ tag`,
/// HPKE info [`WRAP_INFO`], aad = the slot's `kek_id`.
pub fn wrap_data_key(
    pk: &PublicKey,
    key_id: &str,
    dk: &DataKey,
    ikm: &[u8; 32],
) -> Result<Vec<u8>, ComplianceError> {
    if !valid_key_id(key_id) {
        return Err(ComplianceError::BadKeyId(key_id.into()));
    }
    let kid = kek_id(key_id);
    let (enc, ct) = hpke::seal(
        Aead::Aes256Gcm,
        pk,
        WRAP_INFO,
        kid.as_bytes(),
        dk.as_bytes(),
        ikm,
    )?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&enc);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The `enc` (ephemeral public point) of a wrapped key: what the HSM's ECDH needs.
pub fn wrapped_enc(wrapped: &[u8]) -> Result<&[u8], ComplianceError> {
    if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
        return Err(ComplianceError::Malformed(format!(
            "wrapped key of {} bytes (want {WRAPPED_LEN}, version {WRAP_VERSION})",
            wrapped.len()
        )));
    }
    Ok(&wrapped[1..1 + ENC_LEN])
}

/// Unwrap a compliance-wrapped data key given `dh = DH(skR, enc)` (computed by the
/// holder of the private key) and the recipient public key `pk`.
pub fn unwrap_data_key(
    kek_id: &str,
    wrapped: &[u8],
    dh: &[u8; SECRET_LEN],
    pk: &PublicKey,
) -> Result<DataKey, ComplianceError> {
    if key_id_of(kek_id).is_none() {
        return Err(ComplianceError::NotCompliance(kek_id.into()));
    }
    let enc = wrapped_enc(wrapped)?;
    let pt = hpke::open_with_dh(
        Aead::Aes256Gcm,
        dh,
        enc,
        pk,
        WRAP_INFO,
        kek_id.as_bytes(),
        &wrapped[1 + ENC_LEN..],
    )?;
    let mut k = [0u8; DATA_KEY_LEN];
    if pt.len() != DATA_KEY_LEN {
        return Err(ComplianceError::Malformed("data key length".into()));
    }
    k.copy_from_slice(&pt);
    Ok(DataKey::from_bytes(k))
}

/// What an archive envelope leaves in plaintext: enough to index and route, nothing
/// personal (no number, name, AoR, Call-ID or SIPREC metadata). All of it is the
/// envelope's associated data, so none of it can be changed without the open failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveIndex {
    /// `document` (the metadata document) or `manifest` (the signed manifest's bytes).
    pub kind: String,
    /// The box that recorded.
    pub box_id: String,
    /// Its site.
    pub site: String,
    /// Recording id (UUID).
    pub recording_id: String,
    /// Start, Unix ms.
    pub started_at_ms: i64,
    /// End, Unix ms (absent for a recording without an end).
    pub ended_at_ms: Option<i64>,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Object key of the container in the archive.
    pub container_key: String,
    /// Size of the container object.
    pub container_bytes: u64,
    /// SHA-256 (hex) of the whole container object.
    pub container_sha256: String,
    /// SHA-256 (hex) of the container without key slots (the manifest's
    /// `container.content_sha256`, the catalogue's `file_sha256`).
    pub content_sha256: String,
    /// The compliance key the envelope (and the container's compliance slot) is
    /// encrypted to.
    pub compliance_key_id: String,
}

impl ArchiveIndex {
    /// The AEAD associated data: the format name and the index as JSON (serde's field
    /// order, so the same bytes on both sides).
    pub fn aad(&self) -> Vec<u8> {
        let mut v = ENVELOPE_FORMAT.as_bytes().to_vec();
        v.push(b'\n');
        // Panic means bug: a struct of strings and integers always serializes.
        v.extend_from_slice(&serde_json::to_vec(self).expect("index serializes"));
        v
    }

    fn info(&self) -> Vec<u8> {
        format!("branchrec archive {} v1", self.kind).into_bytes()
    }
}

/// An encrypted archive object (`<key>.json`, `<key>.manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEnvelope {
    /// [`ENVELOPE_FORMAT`].
    pub format: String,
    /// [`hpke::SUITE_NAME`].
    pub suite: String,
    /// The plaintext index.
    pub index: ArchiveIndex,
    /// HPKE `enc`, hex.
    pub enc: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

impl ArchiveEnvelope {
    /// Seal `plaintext` to `pk` under `index`.
    pub fn seal(
        pk: &PublicKey,
        index: ArchiveIndex,
        plaintext: &[u8],
        ikm: &[u8; 32],
    ) -> Result<Self, ComplianceError> {
        use base64::Engine as _;
        if !valid_key_id(&index.compliance_key_id) {
            return Err(ComplianceError::BadKeyId(index.compliance_key_id.clone()));
        }
        let (enc, ct) = hpke::seal(
            Aead::Aes256Gcm,
            pk,
            &index.info(),
            &index.aad(),
            plaintext,
            ikm,
        )?;
        Ok(ArchiveEnvelope {
            format: ENVELOPE_FORMAT.into(),
            suite: hpke::SUITE_NAME.into(),
            index,
            enc: hex::encode(enc),
            ciphertext: base64::engine::general_purpose::STANDARD.encode(ct),
        })
    }

    /// Parse an envelope from the archive object's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ComplianceError> {
        let e: ArchiveEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| ComplianceError::Malformed(format!("not an archive envelope: {e}")))?;
        if e.format != ENVELOPE_FORMAT || e.suite != hpke::SUITE_NAME {
            return Err(ComplianceError::Malformed(format!(
                "format {:?} suite {:?}",
                e.format, e.suite
            )));
        }
        Ok(e)
    }

    /// The ephemeral point (what an HSM's ECDH needs).
    pub fn enc_bytes(&self) -> Result<Vec<u8>, ComplianceError> {
        hex::decode(&self.enc).map_err(|_| ComplianceError::Malformed("enc is not hex".into()))
    }

    /// Open with `dh = DH(skR, enc)` and the recipient public key.
    pub fn open_with_dh(
        &self,
        dh: &[u8; SECRET_LEN],
        pk: &PublicKey,
    ) -> Result<Zeroizing<Vec<u8>>, ComplianceError> {
        use base64::Engine as _;
        let ct = base64::engine::general_purpose::STANDARD
            .decode(&self.ciphertext)
            .map_err(|_| ComplianceError::Malformed("ciphertext is not base64".into()))?;
        Ok(hpke::open_with_dh(
            Aead::Aes256Gcm,
            dh,
            &self.enc_bytes()?,
            pk,
            &self.index.info(),
            &self.index.aad(),
            &ct,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ArchiveIndex {
        ArchiveIndex {
            kind: "document".into(),
            box_id: "box-1".into(),
            site: "lon".into(),
            recording_id: "r1".into(),
            started_at_ms: 1,
            ended_at_ms: Some(2),
            duration_ms: Some(1),
            container_key: "lon/box-1/r1".into(),
            container_bytes: 10,
            container_sha256: "aa".into(),
            content_sha256: "bb".into(),
            compliance_key_id: "ck-2026".into(),
        }
    }

    #[test]
    fn slot_wrap_round_trip_and_binding() {
        let (sk, pk) = hpke::derive_key_pair(&[5; 32]).unwrap();
        let dk = DataKey::from_bytes([7; 32]);
        let w = wrap_data_key(&pk, "ck-2026", &dk, &[1; 32]).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        let enc = PublicKey::from_sec1(wrapped_enc(&w).unwrap()).unwrap();
        let dh = sk.dh(&enc);
        let got = unwrap_data_key("hpke1:ck-2026", &w, &dh, &pk).unwrap();
        assert_eq!(got, dk);
        // bound to the kek id (aad)
        assert!(unwrap_data_key("hpke1:ck-2027", &w, &dh, &pk).is_err());
        assert!(unwrap_data_key("kf1:ck-2026", &w, &dh, &pk).is_err());
        let mut bad = w.clone();
        bad[70] ^= 1;
        assert!(unwrap_data_key("hpke1:ck-2026", &bad, &dh, &pk).is_err());
        assert!(wrap_data_key(&pk, "bad id", &dk, &[1; 32]).is_err());
        assert!(wrap_data_key(&pk, "", &dk, &[1; 32]).is_err());
    }

    #[test]
    fn envelope_round_trip_and_index_is_authenticated() {
        let (sk, pk) = hpke::derive_key_pair(&[6; 32]).unwrap();
        let e = ArchiveEnvelope::seal(&pk, index(), b"{\"secret\":1}", &[2; 32]).unwrap();
        let bytes = serde_json::to_vec(&e).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
        let p = ArchiveEnvelope::parse(&bytes).unwrap();
        let dh = sk.dh(&PublicKey::from_sec1(&p.enc_bytes().unwrap()).unwrap());
        assert_eq!(&p.open_with_dh(&dh, &pk).unwrap()[..], b"{\"secret\":1}");
        // Any index edit (here: another recording id, or the document moved to another
        // kind) makes the open fail.
        let mut q = p.clone();
        q.index.recording_id = "r2".into();
        assert!(q.open_with_dh(&dh, &pk).is_err());
        let mut q = p.clone();
        q.index.kind = "manifest".into();
        assert!(q.open_with_dh(&dh, &pk).is_err());
        let mut q = p;
        q.index.container_sha256 = "ab".into();
        assert!(q.open_with_dh(&dh, &pk).is_err());
    }
}
