//! Signed manifests, verification and evidence bundles (see `docs/evidence.md`).
//!
//! Each closed recording gets `<file>.manifest.json` (the exact bytes that are signed)
//! and `<file>.manifest.sig` (raw 64-byte Ed25519 signature) beside its container. The
//! manifest covers the container's content hash, the hash of the decrypted audio, and
//! the catalogue's metadata and times; `verify` re-derives every one of them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, ListFilter, RecordingDetail, RecordingState};
use crate::recording::{ContainerError, ContainerReader, Header, SampleFormat, ScanState};
use crate::vault::custody::write_atomic;
use crate::vault::signing::{public_key_pem, verify_ed25519};
use crate::vault::{KeyWrap, Signer};

/// Manifest format name.
pub const MANIFEST_FORMAT: &str = "branchrec-manifest-v1";
/// Byte offset of the audio data in an exported WAV (canonical 44-byte header).
pub const WAV_DATA_OFFSET: u64 = 44;

/// What the recorder knows about a closed container when it signs its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInputs {
    /// SHA-256 (hex) of the container without its key slots.
    pub content_sha256: String,
    /// Bytes covered by `content_sha256`.
    pub content_bytes: u64,
    /// SHA-256 (hex) of the stored audio: s16le interleaved PCM, or for Opus
    /// recordings the length-prefixed packet stream (docs/evidence.md).
    pub pcm_sha256: String,
    /// Audio frames.
    pub frames: u64,
    /// How the audio is stored.
    pub audio_encoding: SampleFormat,
}

/// Manifest and signature paths for a container at `abs`.
pub fn manifest_paths(abs: &Path) -> (PathBuf, PathBuf) {
    let s = abs.as_os_str().to_string_lossy();
    (
        PathBuf::from(format!("{s}.manifest.json")),
        PathBuf::from(format!("{s}.manifest.sig")),
    )
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Marker written (durably) before a recording's row is closed and removed once its
/// manifest is written; lets start-up sign a manifest a crash left unwritten.
pub fn pending_marker(abs: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}.manifest.pending",
        abs.as_os_str().to_string_lossy()
    ))
}

/// The catalogue facts a manifest signs (and `verify` compares).
pub fn metadata_json(d: &RecordingDetail) -> Value {
    let r = &d.recording;
    let channels: Vec<Value> = d
        .channels
        .iter()
        .map(|c| {
            json!({
                "channel": c.channel, "mline": c.mline, "label": c.label,
                "stream_id": c.stream_id, "participant_id": c.participant_id,
                "mapping_source": c.mapping_source.as_str(),
            })
        })
        .collect();
    let versions: Vec<Value> = d
        .metadata_versions
        .iter()
        .map(|m| {
            json!({
                "seq": m.seq, "received_at_ms": m.version.received_at_ms,
                "sip_method": m.version.sip_method, "content_type": m.version.content_type,
                "bytes": m.version.raw.len(), "sha256": sha_hex(&m.version.raw),
            })
        })
        .collect();
    let events = super::archive::event_entries(d);
    json!({
        "recording_id": r.id,
        "call_id": r.call_id,
        "session_id": r.session_id,
        "source": r.source.as_str(),
        "src_addr": r.src_addr,
        "started_at_ms": r.started_at_ms,
        "ended_at_ms": r.ended_at_ms,
        "duration_ms": r.duration_ms,
        "codec": r.codec,
        "sample_rate": r.sample_rate,
        "channels": r.channels,
        "state": r.state.as_str(),
        "file_path": r.file_path,
        "participants": d.participants,
        "channel_map": channels,
        "metadata_versions": versions,
        "events": events,
    })
}

/// Build and sign the manifest; returns (manifest bytes, signature).
pub fn build_manifest(
    d: &RecordingDetail,
    inputs: &ManifestInputs,
    signer: &dyn Signer,
    now_ms: i64,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let r = &d.recording;
    let m = json!({
        "format": MANIFEST_FORMAT,
        "recording_id": r.id,
        "signed_at_ms": now_ms,
        "signer": {
            "algorithm": signer.algorithm(),
            "public_key_sha256": sha_hex(&signer.public_key_der()),
        },
        "container": {
            "content_sha256": inputs.content_sha256,
            "content_bytes": inputs.content_bytes,
        },
        "audio": match inputs.audio_encoding {
            SampleFormat::S16Le => json!({
                "encoding": "s16le",
                "sample_rate": r.sample_rate,
                "channels": r.channels,
                "frames": inputs.frames,
                "pcm_sha256": inputs.pcm_sha256,
                "wav_data_offset": WAV_DATA_OFFSET,
            }),
            SampleFormat::Opus => json!({
                "encoding": "opus",
                "sample_rate": r.sample_rate,
                "channels": r.channels,
                "frames": inputs.frames,
                "opus_packets_sha256": inputs.pcm_sha256,
            }),
        },
        "metadata": metadata_json(d),
        // Issue #19: verdict, per-channel quality, clock state and steps (docs/assurance.md).
        "assurance": r.assurance_json,
    });
    let mut bytes = serde_json::to_vec_pretty(&m)?;
    bytes.push(b'\n');
    let sig = signer.sign(&bytes)?;
    Ok((bytes, sig))
}

/// Sign and write the manifest of recording `id` (after its row is final).
pub fn write_manifest(
    cat: &Catalog,
    data_dir: &Path,
    id: &str,
    inputs: &ManifestInputs,
    signer: &dyn Signer,
) -> anyhow::Result<()> {
    let Some(d) = cat.get(id)? else {
        bail!("no catalogue row");
    };
    let Some(rel) = d.recording.file_path.as_deref() else {
        bail!("no file");
    };
    let abs = crate::recording::files::confined(data_dir, rel)?;
    let (mp, sp) = manifest_paths(&abs);
    let (bytes, sig) = build_manifest(&d, inputs, signer, chrono::Utc::now().timestamp_millis())?;
    write_atomic(&sp, &sig)?;
    write_atomic(&mp, &bytes)?;
    let _ = std::fs::remove_file(pending_marker(&abs));
    Ok(())
}

/// Hash a decrypted audio prefix the way manifests do.
pub fn pcm_sha256(samples: &[i16]) -> String {
    let mut h = Sha256::new();
    for part in samples.chunks(4096) {
        let b: Vec<u8> = part.iter().flat_map(|s| s.to_le_bytes()).collect();
        h.update(&b);
    }
    hex::encode(h.finalize())
}

/// What [`hash_audio`] finds in a container.
#[derive(Debug, Clone)]
pub struct AudioDigest {
    /// The header.
    pub header: Header,
    /// SHA-256 of the stored audio of the verified chunks.
    pub audio_sha256: [u8; 32],
    /// Frames on the timeline.
    pub frames: u64,
    /// Complete or interrupted.
    pub state: ScanState,
}

/// Verify a container chunk by chunk and hash its stored audio, holding one chunk in
/// memory. With `allow_interrupted` the verified prefix of an interrupted file counts;
/// a damaged file is always an error.
pub fn hash_audio(
    path: &Path,
    wrap: &dyn KeyWrap,
    allow_interrupted: bool,
) -> Result<AudioDigest, ContainerError> {
    let mut rd = ContainerReader::open(std::io::BufReader::new(std::fs::File::open(path)?), wrap)?;
    let state = loop {
        match rd.next_chunk() {
            Ok(Some(c)) if c.last => break ScanState::Complete,
            Ok(Some(_)) => {}
            Ok(None) => break ScanState::Complete,
            Err(e) => break rd.end_of_prefix(e, allow_interrupted)?,
        }
    };
    Ok(AudioDigest {
        header: rd.header().clone(),
        audio_sha256: rd.audio_sha256(),
        frames: rd.frames(),
        state,
    })
}

/// Manifest inputs computed from the file itself (recovered recordings).
pub fn inputs_from_file(path: &Path, wrap: &dyn KeyWrap) -> anyhow::Result<ManifestInputs> {
    let (sum, n) =
        crate::recording::content_sha256(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let d = hash_audio(path, wrap, true)?;
    Ok(ManifestInputs {
        content_sha256: hex::encode(sum),
        content_bytes: n,
        pcm_sha256: hex::encode(d.audio_sha256),
        frames: d.frames,
        audio_encoding: d.header.sample_format,
    })
}

/// Result of verifying one recording.
#[derive(Debug)]
pub struct Verified {
    /// Recording id.
    pub id: String,
    /// Everything that does not match; empty = verified.
    pub problems: Vec<String>,
    /// The verified container's header and path (only when `problems` is empty); read
    /// the audio from the file with [`crate::recording::export`].
    pub audio: Option<(Header, PathBuf)>,
    /// Whether the recording is an interrupted one (its verified prefix is the audio).
    pub interrupted: bool,
    /// Manifest bytes and signature (when present).
    pub manifest: Option<(Vec<u8>, Vec<u8>)>,
    /// The catalogue detail.
    pub detail: Option<RecordingDetail>,
}

/// Verify recording `id`: catalogue row, file, container integrity, signed manifest,
/// audio hash and metadata. Never returns audio unless everything matches.
pub fn verify(
    cat: &Catalog,
    data_dir: &Path,
    wrap: &dyn KeyWrap,
    signer_public_der: &[u8],
    id: &str,
) -> Verified {
    let mut v = Verified {
        id: id.into(),
        problems: Vec::new(),
        audio: None,
        interrupted: false,
        manifest: None,
        detail: None,
    };
    let d = match cat.get(id) {
        Ok(Some(d)) => d,
        Ok(None) => {
            v.problems.push("no catalogue row".into());
            return v;
        }
        Err(e) => {
            v.problems.push(format!("catalogue: {e}"));
            return v;
        }
    };
    let state = d.recording.state;
    let Some(rel) = d.recording.file_path.clone() else {
        v.problems.push("catalogue row names no file".into());
        v.detail = Some(d);
        return v;
    };
    let abs = match crate::recording::files::confined(data_dir, &rel) {
        Ok(p) => p,
        Err(e) => {
            v.problems.push(e.to_string());
            v.detail = Some(d);
            return v;
        }
    };
    if !abs.exists() {
        v.problems
            .push(format!("file {} is missing", abs.display()));
        v.detail = Some(d);
        return v;
    }
    // Signed manifest.
    let (mp, sp) = manifest_paths(&abs);
    let manifest: Option<Value> = match (std::fs::read(&mp), std::fs::read(&sp)) {
        (Ok(m), Ok(s)) => {
            if let Err(e) = verify_ed25519(signer_public_der, &m, &s) {
                v.problems.push(format!("manifest signature: {e}"));
            }
            let parsed = serde_json::from_slice::<Value>(&m).ok();
            if parsed.is_none() {
                v.problems.push("manifest is not JSON".into());
            }
            v.manifest = Some((m, s));
            parsed
        }
        _ => {
            v.problems
                .push(format!("no signed manifest ({})", mp.display()));
            None
        }
    };
    let get = |p: &str| manifest.as_ref().and_then(|m| m.pointer(p)).cloned();
    if let Some(mid) = get("/recording_id") {
        if mid.as_str() != Some(id) {
            v.problems.push(format!("manifest is for recording {mid}"));
        }
    }
    // Container content hash: file vs manifest vs catalogue.
    match std::fs::File::open(&abs)
        .map_err(anyhow::Error::from)
        .and_then(|f| {
            Ok(crate::recording::content_sha256(std::io::BufReader::new(
                f,
            ))?)
        }) {
        Ok((sum, _)) => {
            let sum = hex::encode(sum);
            if d.recording.file_sha256.as_deref() != Some(sum.as_str()) {
                v.problems.push(format!(
                    "file content SHA-256 {sum} differs from the catalogue's {:?}",
                    d.recording.file_sha256
                ));
            }
            if manifest.is_some()
                && get("/container/content_sha256") != Some(Value::from(sum.clone()))
            {
                v.problems.push(format!(
                    "file content SHA-256 {sum} differs from the signed manifest"
                ));
            }
        }
        Err(e) => v.problems.push(format!("hashing the file: {e}")),
    }
    // Decrypt and check the audio, chunk by chunk.
    let d_row_format = d.recording.storage_format.clone();
    v.interrupted = state == RecordingState::Interrupted;
    let audio = match hash_audio(&abs, wrap, v.interrupted) {
        Ok(d) => {
            if d.header.recording_id != id {
                v.problems.push(format!(
                    "file {} holds recording {}",
                    abs.display(),
                    d.header.recording_id
                ));
            }
            let hash = Value::from(hex::encode(d.audio_sha256));
            let key = match d.header.sample_format {
                SampleFormat::S16Le => "/audio/pcm_sha256",
                SampleFormat::Opus => "/audio/opus_packets_sha256",
            };
            if manifest.is_some() && get(key) != Some(hash) {
                v.problems
                    .push("decrypted audio does not match the signed manifest's hash".into());
            }
            if d.header.sample_format.storage_name() != d_row_format {
                v.problems.push(format!(
                    "file stores {} audio, the catalogue says {d_row_format}",
                    d.header.sample_format.storage_name()
                ));
            }
            Some((d.header, abs.clone()))
        }
        Err(e) => {
            v.problems.push(format!("container: {e}"));
            None
        }
    };
    // Metadata: catalogue vs manifest.
    if let Some(signed) = get("/metadata") {
        let now = metadata_json(&d);
        if signed != now {
            let mut keys = Vec::new();
            if let (Some(a), Some(b)) = (signed.as_object(), now.as_object()) {
                for (k, va) in a {
                    if b.get(k) != Some(va) {
                        keys.push(k.clone());
                    }
                }
                for k in b.keys() {
                    if !a.contains_key(k) {
                        keys.push(k.clone());
                    }
                }
            }
            v.problems.push(format!(
                "catalogue metadata differs from the signed manifest: {}",
                keys.join(", ")
            ));
        }
    }
    // Assurance (issue #19): what was signed is what the catalogue says.
    if let Some(signed) = get("/assurance").filter(|a| !a.is_null()) {
        if Some(&signed) != d.recording.assurance_json.as_ref() {
            v.problems.push(
                "catalogue assurance (verdict, quality, clock) differs from the signed manifest"
                    .into(),
            );
        }
    }
    if v.problems.is_empty() {
        v.audio = audio;
    }
    v.detail = Some(d);
    v
}

/// The RFC 3161 token of a manifest (`[time] tsa_url`, docs/assurance.md): the DER
/// `TimeStampResp` beside it, `<file>.brec.manifest.json.tsr`.
pub fn timestamp_token_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".tsr");
    PathBuf::from(s)
}

/// Write an evidence bundle for a verified recording into `dir` (created; must be
/// empty or new). The audio is streamed from the container and its hash checked
/// against the signed manifest once more (the file could change after `verify`).
pub fn export_evidence(
    v: &Verified,
    wrap: &dyn KeyWrap,
    signer_public_der: &[u8],
    dir: &Path,
) -> anyhow::Result<()> {
    if !v.problems.is_empty() {
        bail!(
            "recording {} failed verification: {}",
            v.id,
            v.problems.join("; ")
        );
    }
    let (Some((h, path)), Some((m, s)), Some(d)) = (&v.audio, &v.manifest, &v.detail) else {
        bail!("recording {} has no verified audio/manifest", v.id);
    };
    let open = || -> anyhow::Result<Box<dyn std::io::Read>> {
        Ok(Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )))
    };
    let token = std::fs::read(timestamp_token_path(&manifest_paths(path).0)).ok();
    write_evidence_bundle(
        &BundleSource {
            timestamp_token: token.as_deref(),
            id: &v.id,
            header: h,
            open: &open,
            wrap,
            interrupted: v.interrupted,
            manifest: m,
            signature: s,
            signer_public_der,
            metadata_documents: d
                .metadata_versions
                .iter()
                .map(|mv| (mv.seq, mv.version.raw.clone()))
                .collect(),
            metadata: metadata_json(d),
            warnings: Vec::new(),
        },
        dir,
    )
}

/// Everything an evidence bundle is made of, wherever the recording comes from: the
/// box's own files (`recordings export --evidence`) or the archive copy opened with the
/// compliance key (`central export --evidence`). One writer, one layout, so the same
/// openssl commands (docs/evidence.md) verify both.
pub struct BundleSource<'a> {
    /// Recording id.
    pub id: &'a str,
    /// The verified container's header.
    pub header: &'a Header,
    /// Opens the container from its start (called once per rendering).
    pub open: &'a dyn Fn() -> anyhow::Result<Box<dyn std::io::Read + 'a>>,
    /// Unwraps the container's data key (the box's KEK, or the compliance key's slot).
    pub wrap: &'a dyn KeyWrap,
    /// An interrupted recording: its verified prefix is the audio.
    pub interrupted: bool,
    /// The signed manifest's exact bytes.
    pub manifest: &'a [u8],
    /// Its raw Ed25519 signature.
    pub signature: &'a [u8],
    /// The manifest-signing public key (DER SubjectPublicKeyInfo) for `signing-key.pem`.
    pub signer_public_der: &'a [u8],
    /// The SIPREC metadata documents exactly as received: `(seq, bytes)`.
    pub metadata_documents: Vec<(u32, Vec<u8>)>,
    /// `metadata.json` (= the manifest's signed `metadata`).
    pub metadata: Value,
    /// Printed at the top of `README.txt` (e.g. a signing key nobody vouched for).
    pub warnings: Vec<String>,
    /// The manifest's RFC 3161 time-stamp token (DER `TimeStampResp`), if it has one.
    pub timestamp_token: Option<&'a [u8]>,
}

/// Write the bundle of `src` into `dir` (new, or empty and not a symbolic link; created
/// 0700). Every file is created `O_EXCL|O_NOFOLLOW`, 0600; on failure what was written
/// is removed, and the directory if this call made it.
pub fn write_evidence_bundle(src: &BundleSource<'_>, dir: &Path) -> anyhow::Result<()> {
    let made_dir = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a symbolic link: refused", dir.display())
        }
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            if std::fs::read_dir(dir)?.next().is_some() {
                bail!("{} is not empty", dir.display());
            }
            false
        }
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            true
        }
    };
    let mut b = Bundle {
        dir,
        created: Vec::new(),
    };
    let res = write_bundle(src, &mut b);
    if res.is_err() {
        // Nothing half-written stays behind: the files this export created, and the
        // directory if it made it.
        for f in b.created.iter().rev() {
            let _ = std::fs::remove_file(f);
        }
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    res
}

/// The files of an evidence bundle being written: each created `O_EXCL|O_NOFOLLOW`, 0600.
struct Bundle<'a> {
    dir: &'a Path,
    created: Vec<PathBuf>,
}

/// A writable, seekable file of a bundle (the WAV writer seeks back to its header).
pub trait BundleFile: std::io::Write + std::io::Seek {}
impl<T: std::io::Write + std::io::Seek> BundleFile for T {}

/// Where the files of a bundle go: a directory ([`write_evidence_bundle`]) or memory
/// ([`evidence_bundle_in_memory`]).
trait BundleSink {
    fn create(&mut self, name: &str) -> anyhow::Result<Box<dyn BundleFile + '_>>;

    fn write(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let mut f = self.create(name)?;
        std::io::Write::write_all(&mut f, bytes)?;
        std::io::Write::flush(&mut f)?;
        Ok(())
    }
}

impl BundleSink for Bundle<'_> {
    fn create(&mut self, name: &str) -> anyhow::Result<Box<dyn BundleFile + '_>> {
        let p = self.dir.join(name);
        let f = crate::recording::files::create_private(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        self.created.push(p);
        Ok(Box::new(Synced(f)))
    }
}

/// A bundle file synced to disk when flushed.
struct Synced(std::fs::File);

impl std::io::Write for Synced {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.0.sync_all()
    }
}

impl std::io::Seek for Synced {
    fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(p)
    }
}

/// The files of a bundle in memory, in the order written.
struct MemoryBundle {
    files: Vec<(String, std::io::Cursor<Vec<u8>>)>,
    reserve: usize,
}

impl BundleSink for MemoryBundle {
    fn create(&mut self, name: &str) -> anyhow::Result<Box<dyn BundleFile + '_>> {
        // Room up front for the audio (a growing Vec would leave plaintext copies in
        // freed memory).
        let cap = if name.starts_with("audio.") {
            self.reserve
        } else {
            0
        };
        self.files.push((
            name.to_string(),
            std::io::Cursor::new(Vec::with_capacity(cap)),
        ));
        // Cannot fail: the entry was pushed on the line above.
        let (_, c) = self.files.last_mut().expect("just pushed");
        Ok(Box::new(c))
    }
}

/// The bundle of `src` in memory (nothing on disk): `(file name, bytes)` in the order
/// [`write_evidence_bundle`] writes them; `reserve`: capacity for each audio file.
/// The caller zeroises the bytes when done (they hold the decrypted audio).
pub fn evidence_bundle_in_memory(
    src: &BundleSource<'_>,
    reserve: usize,
) -> anyhow::Result<Vec<(String, zeroize::Zeroizing<Vec<u8>>)>> {
    let mut b = MemoryBundle {
        files: Vec::new(),
        reserve,
    };
    let res = write_bundle(src, &mut b);
    let files: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = b
        .files
        .into_iter()
        .map(|(n, c)| (n, zeroize::Zeroizing::new(c.into_inner())))
        .collect();
    res?;
    Ok(files)
}

fn write_bundle(src: &BundleSource<'_>, b: &mut dyn BundleSink) -> anyhow::Result<()> {
    let (h, wrap, open) = (src.header, src.wrap, src.open);
    let signed: Value = serde_json::from_slice(src.manifest)?;
    let check = |got: [u8; 32], key: &str| -> anyhow::Result<()> {
        if signed.pointer(key) != Some(&Value::from(hex::encode(got))) {
            bail!("the recording changed after verification: audio hash differs from the manifest");
        }
        Ok(())
    };
    let wav = b.create("audio.wav")?;
    let (e, _) = crate::recording::export::to_wav(open()?, wrap, src.interrupted, wav)?;
    let opus_steps = match h.sample_format {
        SampleFormat::S16Le => {
            check(e.audio_sha256, "/audio/pcm_sha256")?;
            String::new()
        }
        SampleFormat::Opus => {
            check(e.audio_sha256, "/audio/opus_packets_sha256")?;
            // The signed packet stream itself, and the same packets as Ogg Opus.
            let mut f = std::io::BufWriter::new(b.create("audio.opus-packets")?);
            let mut rd = ContainerReader::open(open()?, wrap)?;
            loop {
                match rd.next_chunk() {
                    Ok(Some(c)) => {
                        let mut b = Vec::new();
                        crate::recording::opus::frame_packets(&c.packets, &mut b);
                        std::io::Write::write_all(&mut f, &b)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        rd.end_of_prefix(e, src.interrupted)?;
                        break;
                    }
                }
            }
            std::io::Write::flush(&mut f)?;
            drop(f);
            check(rd.audio_sha256(), "/audio/opus_packets_sha256")?;
            let ogg = std::io::BufWriter::new(b.create("audio.opus")?);
            crate::recording::export::to_ogg_opus(
                open()?,
                wrap,
                src.interrupted,
                &crate::recording::opus::OpusSettings::default(),
                ogg_serial(src.id),
                &[format!("BRANCHREC_RECORDING_ID={}", src.id)],
                ogg,
            )?;
            "\t(audio.opus holds the same packets in Ogg; audio.wav is decoded from them\n\
             \t and is not covered by the hash: decoders may differ in the last bit)\n"
                .to_string()
        }
    };
    b.write("manifest.json", src.manifest)?;
    b.write("manifest.sig", src.signature)?;
    b.write(
        "signing-key.pem",
        public_key_pem(src.signer_public_der).as_ref(),
    )?;
    for (seq, raw) in &src.metadata_documents {
        b.write(&format!("metadata-{seq}.xml"), raw)?;
    }
    b.write("metadata.json", &serde_json::to_vec_pretty(&src.metadata)?)?;
    let step5 = match src.timestamp_token {
        Some(t) => {
            b.write("manifest.tsr", t)?;
            "5. The RFC 3161 time stamp over the manifest (prints \"Verification: OK\"; the\n\
             \tTSA's CA certificate and its own certificate come from the TSA):\n\
             \topenssl ts -verify -data manifest.json -in manifest.tsr -CAfile tsa-ca.pem -untrusted tsa.pem\n\
             \topenssl ts -reply -in manifest.tsr -text   (its genTime)\n"
        }
        None => "",
    };
    let step3 = match h.sample_format {
        SampleFormat::S16Le => format!(
            "3. The audio is what was signed (manifest.json \"audio\".\"pcm_sha256\"):\n\
             \ttail -c +{} audio.wav | sha256sum\n",
            WAV_DATA_OFFSET + 1
        ),
        SampleFormat::Opus => format!(
            "3. The audio is what was signed (manifest.json \"audio\".\"opus_packets_sha256\"):\n\
             \tsha256sum audio.opus-packets\n{opus_steps}"
        ),
    };
    let warnings: String = src
        .warnings
        .iter()
        .map(|w| format!("WARNING: {w}\n\n"))
        .collect();
    b.write(
        "README.txt",
        format!(
            "{warnings}Evidence bundle for recording {id}\n\n\
             1. Signature over the manifest (prints \"Signature Verified Successfully\"):\n\
             \topenssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.sig\n\
             2. Compare the key's fingerprint with the one published for the recorder:\n\
             \topenssl pkey -pubin -in signing-key.pem -outform DER | sha256sum\n\
             \t(manifest.json \"signer\".\"public_key_sha256\")\n\
             {step3}\
             4. The SIPREC metadata documents (manifest.json \"metadata\".\"metadata_versions\"[].sha256):\n\
             \tsha256sum metadata-*.xml\n\
             {step5}\
             See docs/evidence.md.\n",
            id = src.id,
        )
        .as_bytes(),
    )?;
    Ok(())
}

/// A stable Ogg serial number for a recording (first 4 bytes of SHA-256 of its id).
pub fn ogg_serial(id: &str) -> u32 {
    let d = Sha256::digest(id.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// What [`verify_recordings`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// One entry per recording: `id`, `state`, `ok`, `skipped` (still recording),
    /// `problems`.
    pub recordings: Vec<Value>,
    /// With every recording checked: files that have no catalogue row.
    pub files_without_row: Vec<String>,
    /// Recordings that failed plus files without a row.
    pub failed: usize,
}

/// Verify recording `id`, or (`None`) every recording plus that catalogue and files match,
/// with the box's keys. Recordings still being written are skipped.
pub fn verify_recordings(
    cat: &Catalog,
    cfg: &crate::config::Config,
    id: Option<&str>,
) -> anyhow::Result<VerifyReport> {
    let all = id.is_none();
    let keys = crate::vault::custody::open_existing(&cfg.custody())
        .context("loading the recording keys")?;
    let pubder = crate::vault::Signer::public_key_der(&keys.signer);
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_string()],
        None => cat
            .list(&ListFilter::default())?
            .into_iter()
            .map(|r| r.id)
            .collect(),
    };
    let mut results = Vec::new();
    let mut failed = 0usize;
    let mut known_files = std::collections::HashSet::new();
    for id in &ids {
        let v = verify(cat, &cfg.storage.data_dir, &keys.wrap, &pubder, id);
        let state = v
            .detail
            .as_ref()
            .map(|d| d.recording.state.as_str())
            .unwrap_or("?");
        if let Some(p) = v
            .detail
            .as_ref()
            .and_then(|d| d.recording.file_path.clone())
        {
            known_files.insert(cfg.storage.data_dir.join(p));
        }
        // Recordings still being written cannot be verified yet.
        let skip = state == "recording";
        if !v.problems.is_empty() && !skip {
            failed += 1;
        }
        results.push(serde_json::json!({
            "id": id, "state": state,
            "ok": v.problems.is_empty(),
            "skipped": skip,
            "problems": v.problems,
        }));
    }
    let mut orphans = Vec::new();
    if all {
        for f in crate::recording::recording_files(&cfg.storage.recordings_dir()) {
            if !known_files.contains(&f) {
                orphans.push(f.display().to_string());
            }
        }
        failed += orphans.len();
    }
    Ok(VerifyReport {
        recordings: results,
        files_without_row: orphans,
        failed,
    })
}
