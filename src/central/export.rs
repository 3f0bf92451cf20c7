//! `central export`: from the archive copy alone to a WAV, refusing anything that does
//! not verify. The checks, in order: the container's SHA-256 is the one the (encrypted,
//! authenticated) document names; the manifest's signature verifies with the trusted box
//! key; the container's content hash, recording id and audio hash are the manifest's.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ArchivedRecording, CentralError, ComplianceKey, ComplianceUnwrap, OpenedDocument};
use crate::recording::SampleFormat;

/// Which key the manifest signature must verify with.
#[derive(Debug, Clone)]
pub enum TrustedSigner {
    /// The box's enrolled manifest public key (DER SubjectPublicKeyInfo), given by the
    /// operator (`--box-key`): a manifest signed by any other key is refused.
    Enrolled(Vec<u8>),
    /// The key the (decrypted) document carries. Weaker: anyone who can write to the
    /// archive can encrypt to the public compliance key; the export says so.
    FromDocument,
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct CentralExport {
    /// Recording id.
    pub recording_id: String,
    /// The WAV written.
    pub out: PathBuf,
    /// Frames written.
    pub frames: u64,
    /// Channels.
    pub channels: u16,
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// SHA-256 (hex) of the verified audio (the manifest's).
    pub audio_sha256: String,
    /// Whether the signing key was the enrolled one (else taken from the document).
    pub signer_enrolled: bool,
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The box's signing key as the document carries it (`signer.public_key_der`, base64).
pub fn document_signer(doc: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b = doc.pointer("/signer/public_key_der")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b).ok()
}

/// Steps 1–3 of the checks (whole-object hash, manifest signature with `der`, content
/// hash and recording id against the signed manifest): what `central export` and the
/// indexer both require. Returns the parsed manifest and the container header.
pub fn verify_archived(
    rec: &ArchivedRecording,
    opened: &OpenedDocument,
    der: &[u8],
) -> Result<(serde_json::Value, crate::recording::Header), CentralError> {
    let whole = sha_hex(&rec.container);
    verify_source(
        &rec.key,
        opened,
        der,
        &whole,
        rec.container.len() as u64,
        &mut || Ok(Box::new(Cursor::new(&rec.container[..]))),
    )
}

/// A reader of the container from its start.
type Source<'a> = dyn FnMut() -> Result<Box<dyn std::io::Read + 'a>, CentralError> + 'a;

/// [`verify_archived`] over a container read from `open` (read twice, sequentially),
/// whose whole-object SHA-256 and size were computed as it was received.
fn verify_source(
    rec_key: &str,
    opened: &OpenedDocument,
    der: &[u8],
    whole: &str,
    len: u64,
    open: &mut Source<'_>,
) -> Result<(serde_json::Value, crate::recording::Header), CentralError> {
    let idx = &opened.index;
    let tampered = |m: String| CentralError::Tampered(format!("{rec_key}: {m}"));
    // 1. The object is the one the box uploaded.
    if !whole.eq_ignore_ascii_case(&idx.container_sha256) || len != idx.container_bytes {
        return Err(tampered(format!(
            "container SHA-256 {whole} ({len} bytes) differs from the archived document's {} ({} bytes)",
            idx.container_sha256,
            idx.container_bytes
        )));
    }
    // 2. The manifest is signed by the box.
    let Some((manifest, sig)) = &opened.manifest else {
        return Err(tampered("no signed manifest in the archive".into()));
    };
    crate::vault::verify_ed25519(der, manifest, sig)
        .map_err(|e| CentralError::Signature(format!("{rec_key}: {e}")))?;
    let m: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| tampered(format!("manifest is not JSON: {e}")))?;
    let field = |p: &str| {
        m.pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    if field("/signer/public_key_sha256") != sha_hex(der) {
        return Err(CentralError::Signature(format!(
            "{}: the manifest names signing key {} but verifies with {}",
            rec_key,
            field("/signer/public_key_sha256"),
            sha_hex(der)
        )));
    }
    if field("/recording_id") != idx.recording_id {
        return Err(tampered(format!(
            "the manifest is for recording {}, the document for {}",
            field("/recording_id"),
            idx.recording_id
        )));
    }
    // 3. The container is the one the manifest signed.
    let (content, _) = crate::recording::container::content_sha256(open()?)
        .map_err(|e| tampered(format!("container: {e}")))?;
    let content = hex::encode(content);
    if content != field("/container/content_sha256") {
        return Err(tampered(format!(
            "container content SHA-256 {content} differs from the signed manifest's {}",
            field("/container/content_sha256")
        )));
    }
    let (header, _) = crate::recording::read_header(&mut open()?)
        .map_err(|e| tampered(format!("container header: {e}")))?;
    if header.recording_id != idx.recording_id {
        return Err(tampered(format!(
            "the container is recording {}, not {}",
            header.recording_id, idx.recording_id
        )));
    }
    Ok((m, header))
}

/// Verify `rec` (opened as `opened`) and write its audio as WAV to `out` (a new 0600
/// file, `<out>.partial` linked into place; never replaces anything). The container is
/// `rec.container` (in memory); `central export` uses [`export_wav_streaming`].
pub fn export_wav(
    rec: &ArchivedRecording,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    signer: &TrustedSigner,
    out: &Path,
) -> Result<CentralExport, CentralError> {
    let whole = sha_hex(&rec.container);
    let mut open = || -> Result<Box<dyn std::io::Read + '_>, CentralError> {
        Ok(Box::new(Cursor::new(&rec.container[..])))
    };
    export_from(
        &rec.key,
        opened,
        key,
        signer,
        out,
        &whole,
        rec.container.len() as u64,
        &mut open,
    )
    .map(|(e, _)| e)
}

/// Timings of a streaming export (milliseconds from the start of the container's GET).
#[derive(Debug, Clone, Copy)]
pub struct ExportTimings {
    /// The container received, hashed and spooled.
    pub download_ms: u128,
    /// The first byte of audio written to the output.
    pub first_byte_ms: u128,
    /// The output verified, synced and in place.
    pub total_ms: u128,
}

/// `central export --out`: stream the container from the archive into an anonymous
/// spool file beside `out` (unlinked at once; it stays encrypted), hashing it as it
/// arrives; verify it as [`export_wav`] does, reading the spool; then decrypt chunk by
/// chunk into the output. Memory stays bounded (a few buffers) for any length.
pub fn export_wav_streaming(
    ar: &super::ArchiveReader,
    rec: &ArchivedRecording,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    signer: &TrustedSigner,
    out: &Path,
) -> Result<(CentralExport, ExportTimings), CentralError> {
    use std::io::{Seek as _, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt as _;
    let t0 = std::time::Instant::now();
    let mut spool_path = out.as_os_str().to_owned();
    spool_path.push(".spool");
    let spool_path = PathBuf::from(spool_path);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(&spool_path)
        .map_err(|e| CentralError::Output(format!("{}: {e}", spool_path.display())))?;
    let _ = std::fs::remove_file(&spool_path);
    let (whole, len) = ar.spool(&rec.key, &mut f)?;
    let download_ms = t0.elapsed().as_millis();
    let mut open = || -> Result<Box<dyn std::io::Read>, CentralError> {
        let mut g = f
            .try_clone()
            .map_err(|e| CentralError::Output(format!("spool: {e}")))?;
        g.seek(SeekFrom::Start(0))
            .map_err(|e| CentralError::Output(format!("spool: {e}")))?;
        Ok(Box::new(std::io::BufReader::with_capacity(256 * 1024, g)))
    };
    let (e, first) = export_from(&rec.key, opened, key, signer, out, &whole, len, &mut open)?;
    Ok((
        e,
        ExportTimings {
            download_ms,
            first_byte_ms: first.map_or(0, |f| f.duration_since(t0).as_millis()),
            total_ms: t0.elapsed().as_millis(),
        },
    ))
}

/// Notes when the first byte is written.
struct FirstByte<W> {
    inner: W,
    first: Option<std::time::Instant>,
}

impl<W: std::io::Write> std::io::Write for FirstByte<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.first.is_none() && !b.is_empty() {
            self.first = Some(std::time::Instant::now());
        }
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: std::io::Seek> std::io::Seek for FirstByte<W> {
    fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(p)
    }
}

#[allow(clippy::too_many_arguments)]
fn export_from(
    rec_key: &str,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    signer: &TrustedSigner,
    out: &Path,
    whole: &str,
    len: u64,
    open: &mut Source<'_>,
) -> Result<(CentralExport, Option<std::time::Instant>), CentralError> {
    let verified = verify_for_export(rec_key, opened, signer, whole, len, open)?;
    let src = open()?;
    crate::recording::files::write_new_private(out, |tmp, f| {
        let (e, w) = decrypt_to(
            rec_key,
            opened,
            key,
            &verified,
            out,
            src,
            FirstByte {
                inner: std::io::BufWriter::new(f),
                first: None,
            },
        )?;
        let first = w.first;
        let f = w
            .inner
            .into_inner()
            .map_err(|e| CentralError::Output(format!("{}: {}", tmp.display(), e.error())))?;
        f.sync_all()
            .map_err(|e| CentralError::Output(format!("{}: {e}", tmp.display())))?;
        Ok((e, first))
    })
}

/// [`export_wav`] into memory (the web console streams it; nothing in plaintext on
/// disk): the same checks, the same bytes.
pub fn wav_in_memory(
    rec: &ArchivedRecording,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    signer: &TrustedSigner,
) -> Result<(CentralExport, zeroize::Zeroizing<Vec<u8>>), CentralError> {
    let whole = sha_hex(&rec.container);
    let mut open = || -> Result<Box<dyn std::io::Read + '_>, CentralError> {
        Ok(Box::new(Cursor::new(&rec.container[..])))
    };
    let verified = verify_for_export(
        &rec.key,
        opened,
        signer,
        &whole,
        rec.container.len() as u64,
        &mut open,
    )?;
    // Room for the whole WAV up front: a growing Vec would leave plaintext copies behind
    // in freed memory.
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(rec.container.len() * 2 + 65536));
    let (e, _) = decrypt_to(
        &rec.key,
        opened,
        key,
        &verified,
        Path::new("-"),
        open()?,
        Cursor::new(&mut *buf),
    )?;
    Ok((e, buf))
}

/// What [`verify_for_export`] established: the signed manifest, the container header,
/// and whether the signer is an enrolled key.
struct Verified {
    manifest: serde_json::Value,
    header: crate::recording::Header,
    enrolled: bool,
}

/// Steps 1-3 (signature, manifest, container hash) and the compliance slot's presence.
fn verify_for_export(
    rec_key: &str,
    opened: &OpenedDocument,
    signer: &TrustedSigner,
    whole: &str,
    len: u64,
    open: &mut Source<'_>,
) -> Result<Verified, CentralError> {
    let (der, enrolled) = match signer {
        TrustedSigner::Enrolled(d) => (d.clone(), true),
        TrustedSigner::FromDocument => (
            document_signer(&opened.document).ok_or_else(|| {
                CentralError::Signature("the document names no signing key: give --box-key".into())
            })?,
            false,
        ),
    };
    let (manifest, header) = verify_source(rec_key, opened, &der, whole, len, open)?;
    if header.compliance_slot().is_none() {
        return Err(CentralError::Key(format!(
            "{rec_key}: the container has no compliance key slot (recorded before the box had a compliance key)"
        )));
    }
    Ok(Verified {
        manifest,
        header,
        enrolled,
    })
}

/// 4. Decrypt `src` (every chunk authenticates) as WAV into `w` and check the audio
/// against the signed manifest after the last byte (a caller that gets an error
/// discards `w`).
fn decrypt_to<W: std::io::Write + std::io::Seek>(
    rec_key: &str,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    v: &Verified,
    out: &Path,
    src: Box<dyn std::io::Read + '_>,
    w: W,
) -> Result<(CentralExport, W), CentralError> {
    let tampered = |m: String| CentralError::Tampered(format!("{rec_key}: {m}"));
    let field = |p: &str| {
        v.manifest
            .pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let interrupted = opened.document.get("state").and_then(|s| s.as_str()) == Some("interrupted");
    let (e, w) =
        crate::recording::export::to_wav(src, &ComplianceUnwrap(key), interrupted, w)
            .map_err(|e| tampered(format!("decrypting: {e}")))?;
    let want = match v.header.sample_format {
        SampleFormat::S16Le => field("/audio/pcm_sha256"),
        SampleFormat::Opus => field("/audio/opus_packets_sha256"),
    };
    let got = hex::encode(e.audio_sha256);
    if got != want {
        return Err(tampered(format!(
            "decrypted audio hashes to {got}, the signed manifest says {want}"
        )));
    }
    Ok((
        CentralExport {
            recording_id: opened.index.recording_id.clone(),
            out: out.to_path_buf(),
            frames: e.frames,
            channels: v.header.channels,
            sample_rate: v.header.sample_rate,
            audio_sha256: got,
            signer_enrolled: v.enrolled,
        },
        w,
    ))
}

/// What an evidence export did.
#[derive(Debug, Clone)]
pub struct CentralEvidence {
    /// Recording id.
    pub recording_id: String,
    /// The bundle directory.
    pub dir: PathBuf,
    /// SHA-256 (hex) of the manifest-signing key the bundle carries.
    pub signer_sha256: String,
    /// Warnings also written at the top of the bundle's README.txt.
    pub warnings: Vec<String>,
}

/// `central export ID --evidence DIR`: verify `rec` as [`export_wav`] does, then write
/// the box's evidence-bundle layout (docs/evidence.md) from the archive copy alone, with
/// the same writer as the box ([`crate::service::evidence::write_evidence_bundle`]).
/// `signer_note`: why the signing key is trusted, when it is not an operator-enrolled
/// one (goes into the README as a warning).
pub fn export_evidence(
    rec: &ArchivedRecording,
    opened: &OpenedDocument,
    key: &dyn ComplianceKey,
    signer: &TrustedSigner,
    dir: &Path,
    mut warnings: Vec<String>,
) -> Result<CentralEvidence, CentralError> {
    use base64::Engine as _;
    let tampered = |m: String| CentralError::Tampered(format!("{}: {m}", rec.key));
    let der = match signer {
        TrustedSigner::Enrolled(d) => d.clone(),
        TrustedSigner::FromDocument => {
            warnings.push(format!(
                "the manifest-signing key in signing-key.pem was taken from the archived document itself, not from an enrolment: whoever can write to the archive could have put it there. Compare its fingerprint ({}) with the one recorded for box {} at installation.",
                document_signer(&opened.document)
                    .map(|d| sha_hex(&d))
                    .unwrap_or_default(),
                opened.index.box_id
            ));
            document_signer(&opened.document).ok_or_else(|| {
                CentralError::Signature("the document names no signing key: give --box-key".into())
            })?
        }
    };
    let (m, header) = verify_archived(rec, opened, &der)?;
    if header.compliance_slot().is_none() {
        return Err(CentralError::Key(format!(
            "{}: the container has no compliance key slot (recorded before the box had a compliance key)",
            rec.key
        )));
    }
    let Some((manifest, sig)) = &opened.manifest else {
        return Err(tampered("no signed manifest in the archive".into()));
    };
    // The SIPREC documents as received, each checked against the signed hash.
    let signed_versions = m
        .pointer("/metadata/metadata_versions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let mut docs = Vec::new();
    let raw = opened
        .document
        .get("metadata_raw")
        .and_then(|v| v.as_array());
    match raw {
        Some(raw) => {
            for e in raw {
                let seq = e.get("seq").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                let bytes = e
                    .get("raw")
                    .and_then(|v| v.as_str())
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or_else(|| tampered(format!("metadata document {seq} is not base64")))?;
                let want = signed_versions
                    .iter()
                    .find(|v| v.get("seq").and_then(|s| s.as_u64()) == Some(seq))
                    .and_then(|v| v.get("sha256"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if sha_hex(&bytes) != want {
                    return Err(tampered(format!(
                        "SIPREC metadata document {seq} differs from the signed manifest's"
                    )));
                }
                let seq = u32::try_from(seq)
                    .map_err(|_| tampered(format!("metadata document sequence {seq}")))?;
                docs.push((seq, bytes));
            }
            if docs.len() != signed_versions.len() {
                return Err(tampered(format!(
                    "the archive carries {} SIPREC metadata documents, the manifest signs {}",
                    docs.len(),
                    signed_versions.len()
                )));
            }
        }
        None if !signed_versions.is_empty() => warnings.push(
            "the archived document does not carry the SIPREC metadata documents (uploaded by an older box): no metadata-N.xml files, step 4 of the checks does not apply".into(),
        ),
        None => {}
    }
    let metadata = m
        .get("metadata")
        .cloned()
        .ok_or_else(|| tampered("the signed manifest has no metadata".into()))?;
    let interrupted = opened.document.get("state").and_then(|s| s.as_str()) == Some("interrupted");
    let unwrap = ComplianceUnwrap(key);
    let open = || -> anyhow::Result<Box<dyn std::io::Read + '_>> {
        Ok(Box::new(Cursor::new(&rec.container[..])))
    };
    crate::service::evidence::write_evidence_bundle(
        &crate::service::evidence::BundleSource {
            id: &opened.index.recording_id,
            header: &header,
            open: &open,
            wrap: &unwrap,
            interrupted,
            manifest,
            signature: sig,
            signer_public_der: &der,
            metadata_documents: docs,
            metadata,
            warnings: warnings.clone(),
            // The archive does not carry the token yet (docs/assurance.md).
            timestamp_token: None,
        },
        dir,
    )
    .map_err(|e| CentralError::Output(format!("{}: {e:#}", dir.display())))?;
    Ok(CentralEvidence {
        recording_id: opened.index.recording_id.clone(),
        dir: dir.to_path_buf(),
        signer_sha256: sha_hex(&der),
        warnings,
    })
}
