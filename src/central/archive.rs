//! Reading a recording back from the archive: locate its objects, fetch them, and open
//! the envelopes of its metadata document and manifest with the compliance key.

use serde_json::Value;

use super::{CentralError, ComplianceKey};
use crate::compliance::{ArchiveEnvelope, ArchiveIndex};
use crate::uplink::config::UplinkConfig;
use crate::uplink::s3::S3Client;

/// A read-only view of the archive bucket (the S3 client of the uplink, driven on a
/// private single-threaded runtime: the central commands are synchronous).
pub struct ArchiveReader {
    client: S3Client,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

/// The objects of one archived recording, as fetched.
#[derive(Debug, Clone)]
pub struct ArchivedRecording {
    /// Object key of the container.
    pub key: String,
    /// The container (`<key>`).
    pub container: Vec<u8>,
    /// The metadata document (`<key>.json`): an envelope.
    pub document: Vec<u8>,
    /// The manifest (`<key>.manifest.json`): an envelope, if the box signed one.
    pub manifest: Option<Vec<u8>>,
    /// The manifest's raw Ed25519 signature (`<key>.manifest.sig`).
    pub manifest_sig: Option<Vec<u8>>,
}

/// What the compliance key revealed.
#[derive(Debug, Clone)]
pub struct OpenedDocument {
    /// The document envelope's plaintext index (authenticated).
    pub index: ArchiveIndex,
    /// The decrypted metadata document.
    pub document: Value,
    /// The decrypted manifest bytes (exactly what the box signed) and the signature.
    pub manifest: Option<(Vec<u8>, Vec<u8>)>,
}

pub(crate) fn s3(e: crate::uplink::s3::S3Error) -> CentralError {
    CentralError::Archive(e.to_string())
}

/// The S3 client (TLS, pinning and credentials as the uplink, no rate cap), the archive's
/// key prefix and a runtime to drive it: what every central reader and writer of the
/// archive connects with.
pub(crate) fn connect(
    cfg: &UplinkConfig,
) -> Result<(S3Client, String, tokio::runtime::Runtime), CentralError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CentralError::Archive(format!("starting the async runtime: {e}")))?;
    let shaper = std::sync::Arc::new(crate::uplink::s3::Shaper::new(None));
    let client =
        crate::uplink::client(cfg, shaper).map_err(|e| CentralError::Config(e.to_string()))?;
    Ok((client, cfg.prefix.clone(), rt))
}

impl ArchiveReader {
    /// Connect with the `[archive]` settings (TLS, pinning and credentials as the uplink).
    pub fn open(cfg: &UplinkConfig) -> Result<Self, CentralError> {
        let (client, prefix, rt) = connect(cfg)?;
        Ok(ArchiveReader { client, prefix, rt })
    }

    /// The container key of `recording`: an object key (contains `/`) as given, or a
    /// recording id, found by listing the prefix for `…/<id>.json`. (The PostgreSQL index
    /// replaces the listing once the indexer exists.)
    pub fn locate(&self, recording: &str) -> Result<String, CentralError> {
        if recording.contains('/') {
            return Ok(recording.trim_end_matches(".json").to_string());
        }
        let want = format!("/{recording}.json");
        let keys = self
            .rt
            .block_on(self.client.list(&self.prefix))
            .map_err(s3)?;
        let mut found: Vec<String> = keys
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with(&want) || *k == format!("{}{recording}.json", self.prefix))
            .map(|k| k.trim_end_matches(".json").to_string())
            .collect();
        found.sort();
        found.dedup();
        match found.len() {
            0 => Err(CentralError::NotFound(recording.into())),
            1 => Ok(found.remove(0)),
            n => Err(CentralError::Archive(format!(
                "recording id {recording} is under {n} keys ({}): give the object key",
                found.join(", ")
            ))),
        }
    }

    /// The archive's key prefix (`[archive] prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One ListObjectsV2 page (the indexer's incremental listing).
    pub fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<crate::uplink::s3::ListPage, CentralError> {
        self.rt
            .block_on(
                self.client
                    .list_page(prefix, start_after, delimiter, max_keys),
            )
            .map_err(s3)
    }

    /// GET one object (`None`: no such object).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CentralError> {
        Ok(self
            .rt
            .block_on(self.client.get_object(key))
            .map_err(s3)?
            .map(|b| b.to_vec()))
    }

    /// A recording's document, manifest and signature, without the container
    /// (`container` empty): `central export` streams the container with [`Self::spool`].
    pub fn fetch_meta(&self, key: &str) -> Result<ArchivedRecording, CentralError> {
        let document = self
            .get(&format!("{key}.json"))?
            .ok_or_else(|| CentralError::NotFound(key.into()))?;
        Ok(ArchivedRecording {
            key: key.to_string(),
            container: Vec::new(),
            document,
            manifest: self.get(&format!("{key}.manifest.json"))?,
            manifest_sig: self.get(&format!("{key}.manifest.sig"))?,
        })
    }

    /// Stream the object `key` into `f` as it arrives (256 KiB buffer), hashing it:
    /// (SHA-256 hex, bytes). Memory stays bounded whatever the object's size.
    pub fn spool(&self, key: &str, f: &mut std::fs::File) -> Result<(String, u64), CentralError> {
        use sha2::Digest as _;
        use std::io::Write as _;
        let mut h = sha2::Sha256::new();
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
        let n = self
            .rt
            .block_on(self.client.get_object_to(
                key,
                std::time::Duration::from_secs(3600),
                &mut |b: &[u8]| {
                    h.update(b);
                    w.write_all(b)
                },
            ))
            .map_err(s3)?
            .ok_or_else(|| CentralError::NotFound(key.into()))?;
        w.flush()
            .map_err(|e| CentralError::Output(format!("spooling {key}: {e}")))?;
        Ok((hex::encode(h.finalize()), n))
    }

    /// Fetch a recording's objects, the container whole in memory (the indexer, the
    /// evidence bundle; `central export --out` streams instead).
    pub fn fetch(&self, key: &str) -> Result<ArchivedRecording, CentralError> {
        let container = self
            .get(key)?
            .ok_or_else(|| CentralError::NotFound(key.into()))?;
        let document = self
            .get(&format!("{key}.json"))?
            .ok_or_else(|| CentralError::Archive(format!("{key}.json is missing")))?;
        Ok(ArchivedRecording {
            key: key.to_string(),
            container,
            document,
            manifest: self.get(&format!("{key}.manifest.json"))?,
            manifest_sig: self.get(&format!("{key}.manifest.sig"))?,
        })
    }
}

/// Open one envelope of `rec`: its kind and container key must be what is expected.
fn open_envelope(
    rec_key: &str,
    bytes: &[u8],
    kind: &str,
    key: &dyn ComplianceKey,
) -> Result<(ArchiveIndex, Vec<u8>), CentralError> {
    let env = ArchiveEnvelope::parse(bytes).map_err(|e| {
        CentralError::Tampered(format!(
            "{rec_key} {kind}: {e} (a box without [keys] compliance_public_key uploads plaintext documents and containers central cannot open)"
        ))
    })?;
    if env.index.kind != kind || env.index.container_key != rec_key {
        return Err(CentralError::Tampered(format!(
            "{rec_key} {kind}: the envelope is the {} of {}",
            env.index.kind, env.index.container_key
        )));
    }
    let enc = env
        .enc_bytes()
        .map_err(|e| CentralError::Tampered(format!("{rec_key} {kind}: {e}")))?;
    let dh = key.dh(&enc)?;
    let pt = env.open_with_dh(&dh, key.public_key()).map_err(|_| {
        CentralError::Tampered(format!(
            "{rec_key} {kind} does not open with {} (it names compliance key {:?}): altered, or encrypted to another key",
            key.describe(),
            env.index.compliance_key_id
        ))
    })?;
    Ok((env.index, pt.to_vec()))
}

impl ArchivedRecording {
    /// Decrypt the metadata document and the manifest with the compliance key. Both
    /// envelopes must name this container and agree on the recording and its hashes.
    pub fn open(&self, key: &dyn ComplianceKey) -> Result<OpenedDocument, CentralError> {
        let (index, doc) = open_envelope(&self.key, &self.document, "document", key)?;
        let document: Value = serde_json::from_slice(&doc).map_err(|e| {
            CentralError::Tampered(format!("{}: document is not JSON: {e}", self.key))
        })?;
        let manifest = match (&self.manifest, &self.manifest_sig) {
            (Some(m), Some(sig)) => {
                let (mi, bytes) = open_envelope(&self.key, m, "manifest", key)?;
                let same = ArchiveIndex {
                    kind: index.kind.clone(),
                    ..mi
                };
                if same != index {
                    return Err(CentralError::Tampered(format!(
                        "{}: the manifest's index differs from the document's",
                        self.key
                    )));
                }
                Some((bytes, sig.clone()))
            }
            _ => None,
        };
        Ok(OpenedDocument {
            index,
            document,
            manifest,
        })
    }
}
