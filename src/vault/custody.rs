//! Key custody: which provider holds the KEK and the signing key, provisioning on first
//! start, the custody state file, rotation state and recovery from escrow.
//!
//! The state file `<data_dir>/keys/custody.json` (written atomically: temp file, fsync,
//! rename, fsync of the directory) records which KEK was provisioned. It is what stops
//! the recorder from ever silently generating a new KEK that would orphan existing
//! recordings: with a state file, a KEK that cannot be loaded is an error, never a
//! reason to make a new one; without one, a new KEK is provisioned only if the data
//! directory holds no recordings.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::escrow::{self, EscrowFile};
use super::signing::Ed25519Signer;
use super::tpm::{PcrSpec, Tpm, Unseal, SEALED_LEN};
use super::{keyfile, DataKey, KeyFileVault, KeyWrap, VaultError};

/// Which provider holds the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// TPM 2.0 sealed object (production).
    Tpm,
    /// Key files on disk (development machines without a TPM).
    Software,
}

impl Provider {
    /// `"tpm"` or `"software"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Tpm => "tpm",
            Provider::Software => "software",
        }
    }
}

/// Key-custody settings (from `[keys]` in the configuration).
#[derive(Debug, Clone)]
pub struct CustodyConfig {
    /// Provider.
    pub provider: Provider,
    /// TCTI of the TPM.
    pub tcti: String,
    /// Persistent handle of the sealed object (rotation alternates with `handle + 1`).
    pub handle: u32,
    /// PCR policy.
    pub pcrs: PcrSpec,
    /// Offline recovery public key (RSA ≥ 3072, PEM) for escrow, if any.
    pub recovery_public_key: Option<PathBuf>,
    /// `<data_dir>/keys`.
    pub keys_dir: PathBuf,
    /// Software KEK file.
    pub kek_file: PathBuf,
}

/// One KEK as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KekRecord {
    /// Its id (`tpm1:…` or `kf1:…`).
    pub kek_id: String,
    /// Persistent TPM handle holding it (TPM provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
}

/// The custody state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustodyState {
    /// `"branchrec-custody-v1"`.
    pub format: String,
    /// Provider that holds the keys.
    pub provider: Provider,
    /// The KEK new recordings are wrapped under.
    pub active: KekRecord,
    /// A rotation in progress: the new KEK (recordings are being re-wrapped to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<KekRecord>,
    /// PCR policy the TPM objects were sealed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<String>,
    /// Hex raw Ed25519 public key of the manifest signer.
    pub signing_public_key: String,
    /// When the active KEK was provisioned (unix ms).
    pub provisioned_unix_ms: u64,
}

const STATE_FORMAT: &str = "branchrec-custody-v1";

/// A set of KEKs: the first wraps, all unwrap (dispatch by KEK id).
pub struct KekSet {
    keks: Vec<KeyFileVault>,
}

impl std::fmt::Debug for KekSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keks.iter().map(|k| k.kek_id()).collect();
        f.debug_struct("KekSet").field("keks", &ids).finish()
    }
}

impl KekSet {
    /// `keks[0]` is the one that wraps. Must not be empty.
    pub fn new(keks: Vec<KeyFileVault>) -> Result<Self, VaultError> {
        if keks.is_empty() {
            return Err(VaultError::Custody("no key-encryption key".into()));
        }
        Ok(KekSet { keks })
    }
}

impl KeyWrap for KekSet {
    fn kek_id(&self) -> String {
        self.keks.first().map(|k| k.kek_id()).unwrap_or_default()
    }
    fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError> {
        self.keks.first().ok_or(VaultError::WrapFailed)?.wrap(dk)
    }
    fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        match self.keks.iter().find(|k| k.kek_id() == kek_id) {
            Some(k) => k.unwrap(kek_id, wrapped),
            None => Err(VaultError::UnknownKek(kek_id.into())),
        }
    }
}

/// Loaded keys.
pub struct Keys {
    /// Provider.
    pub provider: Provider,
    /// KEKs (active first, then a pending rotation's other KEK).
    pub wrap: KekSet,
    /// Manifest signer.
    pub signer: Ed25519Signer,
    /// The state file's contents.
    pub state: CustodyState,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("provider", &self.provider)
            .field("wrap", &self.wrap)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// The state file of a TPM provisioned (or restored) with `kek_id` at the configured
/// handle under the configured PCR policy, no rotation pending.
fn tpm_state(cfg: &CustodyConfig, kek_id: String, signer: &Ed25519Signer) -> CustodyState {
    CustodyState {
        format: STATE_FORMAT.into(),
        provider: Provider::Tpm,
        active: KekRecord {
            kek_id,
            handle: Some(cfg.handle),
        },
        pending: None,
        pcrs: Some(cfg.pcrs.to_string()),
        signing_public_key: hex::encode(signer.public_key_raw()),
        provisioned_unix_ms: now_ms(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl CustodyConfig {
    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.keys_dir.join("custody.json")
    }
    /// Software signing seed file.
    pub fn signing_file(&self) -> PathBuf {
        self.keys_dir.join("signing.key")
    }
    /// Where the escrow record of `kek_id` is kept on the box.
    pub fn escrow_path(&self, kek_id: &str) -> PathBuf {
        self.keys_dir
            .join(format!("escrow-{}.json", kek_id.replace(':', "-")))
    }
}

/// Read the state file (`None` if there is none).
pub fn read_state(cfg: &CustodyConfig) -> Result<Option<CustodyState>, VaultError> {
    let p = cfg.state_path();
    match std::fs::read(&p) {
        Ok(b) => {
            let s: CustodyState = serde_json::from_slice(&b)
                .map_err(|e| VaultError::Custody(format!("{}: {e}", p.display())))?;
            if s.format != STATE_FORMAT {
                return Err(VaultError::Custody(format!(
                    "{}: unknown format {:?}",
                    p.display(),
                    s.format
                )));
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&p, e)),
    }
}

/// Write a file atomically and durably (temp, fsync, rename, fsync dir), mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, e))
}

fn write_state(cfg: &CustodyConfig, s: &CustodyState) -> Result<(), VaultError> {
    let bytes = serde_json::to_vec_pretty(s)
        .map_err(|e| VaultError::Custody(format!("encoding state: {e}")))?;
    write_atomic(&cfg.state_path(), &bytes)
}

fn ensure_keys_dir(cfg: &CustodyConfig) -> Result<(), VaultError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.keys_dir)
        .map_err(|e| io_err(&cfg.keys_dir, e))
}

/// Split the sealed secret into (KEK vault, signer).
fn split_secret(secret: &[u8]) -> Result<(KeyFileVault, Ed25519Signer), VaultError> {
    if secret.len() != SEALED_LEN {
        return Err(VaultError::Custody(format!(
            "sealed secret has {} bytes, expected {SEALED_LEN}",
            secret.len()
        )));
    }
    let mut kek = Zeroizing::new([0u8; 32]);
    kek.copy_from_slice(&secret[..32]);
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&secret[32..]);
    Ok((
        KeyFileVault::with_id_prefix(*kek, "tpm1"),
        Ed25519Signer::from_seed(&seed),
    ))
}

fn escrow_if_configured(
    cfg: &CustodyConfig,
    kek_id: &str,
    secret: &[u8],
) -> Result<Option<PathBuf>, VaultError> {
    let Some(pk) = &cfg.recovery_public_key else {
        return Ok(None);
    };
    let key = escrow::load_recovery_public_key(pk)?;
    let e = escrow::seal(&key, kek_id, secret, now_ms())?;
    let path = cfg.escrow_path(kek_id);
    let bytes = serde_json::to_vec_pretty(&e)
        .map_err(|e| VaultError::Custody(format!("encoding escrow: {e}")))?;
    write_atomic(&path, &bytes)?;
    Ok(Some(path))
}

fn unseal_checked(
    tpm: &mut Tpm,
    cfg: &CustodyConfig,
    rec: &KekRecord,
    pcrs: &PcrSpec,
) -> Result<(KeyFileVault, Ed25519Signer, Zeroizing<Vec<u8>>), VaultError> {
    let handle = rec.handle.ok_or_else(|| {
        VaultError::Custody(format!("state names no TPM handle for {}", rec.kek_id))
    })?;
    match tpm.unseal(handle, pcrs)? {
        Unseal::Ok(secret) => {
            let (kek, signer) = split_secret(&secret)?;
            if kek.kek_id() != rec.kek_id {
                return Err(VaultError::KeyUnavailable(format!(
                    "the TPM object at {handle:#010x} holds KEK {}, but recordings use {}: \
                     another key was put there; restore with `branchrec keys recover`",
                    kek.kek_id(),
                    rec.kek_id
                )));
            }
            Ok((kek, signer, secret))
        }
        Unseal::Missing => Err(VaultError::KeyUnavailable(format!(
            "the TPM ({}) holds no key at handle {handle:#010x}: it was cleared or replaced. \
             Recordings under KEK {} cannot be read until it is restored from escrow with \
             `branchrec keys recover --escrow FILE --recovery-key KEY.pem`",
            cfg.tcti, rec.kek_id
        ))),
        Unseal::Refused(why) => Err(VaultError::KeyUnavailable(format!(
            "the TPM refuses to unseal KEK {} at handle {handle:#010x} under PCR policy {pcrs}: \
             the boot measurements changed since provisioning (firmware, boot loader or \
             Secure Boot state). TPM said: {why}",
            rec.kek_id
        ))),
    }
}

/// Load the keys, provisioning them on the very first start (no state file and no
/// recordings). `recordings_dir` is checked so a lost state file never leads to a new
/// KEK beside recordings wrapped under an old one.
pub fn open(cfg: &CustodyConfig, recordings_dir: &Path) -> Result<Keys, VaultError> {
    open_inner(cfg, recordings_dir, true)
}

/// Load the keys for a tool (export, verify, rotate): never provisions.
pub fn open_existing(cfg: &CustodyConfig) -> Result<Keys, VaultError> {
    open_inner(cfg, Path::new("/nonexistent"), false)
}

fn open_inner(
    cfg: &CustodyConfig,
    recordings_dir: &Path,
    allow_provision: bool,
) -> Result<Keys, VaultError> {
    if !allow_provision && read_state(cfg)?.is_none() {
        return Err(VaultError::Custody(format!(
            "no keys provisioned ({} missing): has the recorder run with this data_dir?",
            cfg.state_path().display()
        )));
    }
    ensure_keys_dir(cfg)?;
    let state = read_state(cfg)?;
    if let Some(s) = &state {
        if s.provider != cfg.provider {
            return Err(VaultError::Custody(format!(
                "the keys were provisioned with provider {:?} but the configuration says {:?}; \
                 refusing to switch providers silently",
                s.provider.as_str(),
                cfg.provider.as_str()
            )));
        }
    }
    match cfg.provider {
        Provider::Software => open_software(cfg, state),
        Provider::Tpm => match state {
            Some(s) => open_tpm(cfg, s),
            None => {
                if crate::recording::files::has_recordings(recordings_dir) {
                    return Err(VaultError::KeyUnavailable(format!(
                        "{} is missing but {} holds recordings: refusing to provision a new \
                         key that would orphan them. Restore the state file, or restore the \
                         key with `branchrec keys recover`",
                        cfg.state_path().display(),
                        recordings_dir.display()
                    )));
                }
                provision_tpm(cfg)
            }
        },
    }
}

fn open_software(cfg: &CustodyConfig, state: Option<CustodyState>) -> Result<Keys, VaultError> {
    if state.is_none() && cfg.kek_file.exists() {
        tracing::info!("adopting existing software key file into custody state");
    }
    let kek = KeyFileVault::open_or_create(&cfg.kek_file)?;
    let seed = keyfile::open_or_create_secret(&cfg.signing_file())?;
    let signer = Ed25519Signer::from_seed(&seed);
    let s = match state {
        Some(s) => {
            if s.active.kek_id != kek.kek_id() {
                return Err(VaultError::KeyUnavailable(format!(
                    "key file {} holds KEK {}, but recordings use {}",
                    cfg.kek_file.display(),
                    kek.kek_id(),
                    s.active.kek_id
                )));
            }
            s
        }
        None => {
            let s = CustodyState {
                format: STATE_FORMAT.into(),
                provider: Provider::Software,
                active: KekRecord {
                    kek_id: kek.kek_id(),
                    handle: None,
                },
                pending: None,
                pcrs: None,
                signing_public_key: hex::encode(signer.public_key_raw()),
                provisioned_unix_ms: now_ms(),
            };
            write_state(cfg, &s)?;
            s
        }
    };
    Ok(Keys {
        provider: Provider::Software,
        wrap: KekSet::new(vec![kek])?,
        signer,
        state: s,
    })
}

fn fresh_secret(seed: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(vec![0u8; SEALED_LEN]);
    rand::rngs::OsRng.fill_bytes(&mut s);
    if let Some(seed) = seed {
        s[32..].copy_from_slice(seed);
    }
    s
}

fn provision_tpm(cfg: &CustodyConfig) -> Result<Keys, VaultError> {
    let mut tpm = Tpm::open(&cfg.tcti)?;
    let secret = fresh_secret(None);
    let (kek, signer) = split_secret(&secret)?;
    let kek_id = kek.kek_id();
    // Escrow first: a key that cannot be escrowed as configured is never used.
    let escrow = escrow_if_configured(cfg, &kek_id, &secret)?;
    tpm.seal_persist(&secret, &cfg.pcrs, cfg.handle)?;
    let s = tpm_state(cfg, kek_id.clone(), &signer);
    write_state(cfg, &s)?;
    tracing::warn!(
        kek = %kek_id,
        handle = format!("{:#010x}", cfg.handle),
        pcrs = %cfg.pcrs,
        escrow = ?escrow,
        "provisioned a new key-encryption key sealed in the TPM"
    );
    Ok(Keys {
        provider: Provider::Tpm,
        wrap: KekSet::new(vec![kek])?,
        signer,
        state: s,
    })
}

fn state_pcrs(cfg: &CustodyConfig, s: &CustodyState) -> Result<PcrSpec, VaultError> {
    match &s.pcrs {
        Some(p) => p.parse().map_err(VaultError::Custody),
        None => Ok(cfg.pcrs.clone()),
    }
}

fn open_tpm(cfg: &CustodyConfig, s: CustodyState) -> Result<Keys, VaultError> {
    let mut tpm = Tpm::open(&cfg.tcti)?;
    let pcrs = state_pcrs(cfg, &s)?;
    let (kek, signer, _) = unseal_checked(&mut tpm, cfg, &s.active, &pcrs)?;
    let mut keks = vec![kek];
    if let Some(p) = &s.pending {
        match unseal_checked(&mut tpm, cfg, p, &pcrs) {
            Ok((k, _, _)) => keks.push(k),
            Err(e) => {
                tracing::error!(error = %e, "the KEK of the unfinished rotation does not load")
            }
        }
    }
    if hex::encode(signer.public_key_raw()) != s.signing_public_key {
        return Err(VaultError::KeyUnavailable(
            "the sealed signing key does not match the state file".into(),
        ));
    }
    Ok(Keys {
        provider: Provider::Tpm,
        wrap: KekSet::new(keks)?,
        signer,
        state: s,
    })
}

/// A KEK rotation under way (see [`begin_rotation`]): the state file names the new KEK as
/// pending and both KEKs are loaded. The caller re-wraps every recording file's data key
/// to [`Rotation::keys`] (the new KEK first), then [`Rotation::switch`]es.
pub struct Rotation {
    state: CustodyState,
    set: KekSet,
    new_kek_id: String,
    old_kek_id: String,
    escrow: Option<PathBuf>,
    tpm: Tpm,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("new_kek_id", &self.new_kek_id)
            .field("old_kek_id", &self.old_kek_id)
            .finish_non_exhaustive()
    }
}

impl Rotation {
    /// The new KEK (wraps) and the old one (still unwraps).
    pub fn keys(&self) -> &KekSet {
        &self.set
    }
    /// Id of the new KEK.
    pub fn new_kek_id(&self) -> &str {
        &self.new_kek_id
    }
    /// Id of the KEK being retired.
    pub fn old_kek_id(&self) -> &str {
        &self.old_kek_id
    }
    /// Escrow record of the new KEK, if escrow is configured.
    pub fn escrow(&self) -> Option<&Path> {
        self.escrow.as_deref()
    }

    /// Every file has a slot under the new KEK: make it the active KEK in the state file.
    /// The old KEK stays loaded (to clear the old slots) until [`Retiring::retire`].
    pub fn switch(mut self, cfg: &CustodyConfig) -> Result<Retiring, VaultError> {
        let Some(pending) = self.state.pending.take() else {
            return Err(VaultError::Custody("rotation state lost".into()));
        };
        let old_handle = self.state.active.handle;
        self.state.active = pending;
        self.state.provisioned_unix_ms = now_ms();
        write_state(cfg, &self.state)?;
        Ok(Retiring {
            set: self.set,
            new_kek_id: self.new_kek_id,
            old_handle,
            tpm: self.tpm,
        })
    }
}

/// The last step of a rotation: the new KEK is active; the old key slots can be cleared
/// (with [`Retiring::keys`]) and the old KEK evicted.
pub struct Retiring {
    set: KekSet,
    new_kek_id: String,
    old_handle: Option<u32>,
    tpm: Tpm,
}

impl std::fmt::Debug for Retiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retiring")
            .field("new_kek_id", &self.new_kek_id)
            .finish_non_exhaustive()
    }
}

impl Retiring {
    /// Both KEKs (to check the slots kept before clearing the others).
    pub fn keys(&self) -> &KekSet {
        &self.set
    }
    /// Id of the (now active) new KEK.
    pub fn new_kek_id(&self) -> &str {
        &self.new_kek_id
    }
    /// Evict the old KEK from the TPM.
    pub fn retire(mut self) -> Result<(), VaultError> {
        if let Some(h) = self.old_handle {
            self.tpm.evict(h)?;
        }
        Ok(())
    }
}

/// Start (or resume) a KEK rotation: create a new KEK beside the active one (or load the
/// pending one of an interrupted rotation) and record it as pending in the state file.
/// Crash-safe at every step: re-running resumes (see `docs/recording-format.md`). The
/// daemon must not run. The whole rotation, files included, is
/// `crate::service::keys::rotate`.
pub fn begin_rotation(cfg: &CustodyConfig) -> Result<Rotation, VaultError> {
    let mut s = read_state(cfg)?
        .ok_or_else(|| VaultError::Custody("no keys provisioned yet: nothing to rotate".into()))?;
    if s.provider != cfg.provider {
        return Err(VaultError::Custody(
            "provider differs from the state file".into(),
        ));
    }
    let (old, new, escrow, tpm) = match cfg.provider {
        Provider::Software => {
            return Err(VaultError::Custody(
                "rotation is implemented for the TPM provider; the software provider is for \
                 development only"
                    .into(),
            ))
        }
        Provider::Tpm => {
            let mut tpm = Tpm::open(&cfg.tcti)?;
            let pcrs = state_pcrs(cfg, &s)?;
            let (old, signer, old_secret) = unseal_checked(&mut tpm, cfg, &s.active, &pcrs)?;
            let (new, escrow) = match &s.pending {
                Some(p) => {
                    let (k, _, _) = unseal_checked(&mut tpm, cfg, p, &pcrs)?;
                    (k, Some(cfg.escrow_path(&p.kek_id)).filter(|p| p.exists()))
                }
                None => {
                    let cur = s.active.handle.unwrap_or(cfg.handle);
                    let next = if cur == cfg.handle {
                        cfg.handle + 1
                    } else {
                        cfg.handle
                    };
                    // Anything at `next` is not referenced by the state file (a crashed
                    // earlier attempt): no recording is wrapped under it.
                    tpm.evict(next)?;
                    let secret = fresh_secret(Some(&old_secret[32..]));
                    let (k, _) = split_secret(&secret)?;
                    let escrow = escrow_if_configured(cfg, &k.kek_id(), &secret)?;
                    tpm.seal_persist(&secret, &cfg.pcrs, next)?;
                    s.pending = Some(KekRecord {
                        kek_id: k.kek_id(),
                        handle: Some(next),
                    });
                    s.pcrs = Some(cfg.pcrs.to_string());
                    write_state(cfg, &s)?;
                    (k, escrow)
                }
            };
            let _ = signer;
            (old, new, escrow, tpm)
        }
    };
    let new_kek_id = new.kek_id();
    let old_kek_id = old.kek_id();
    Ok(Rotation {
        state: s,
        set: KekSet::new(vec![new, old])?,
        new_kek_id,
        old_kek_id,
        escrow,
        tpm,
    })
}

/// Restore the keys from an escrow record on a replacement box (or after a TPM clear):
/// decrypt with the recovery private key, seal into this TPM at the configured handle
/// under the current PCR values, and write the state file.
pub fn recover(
    cfg: &CustodyConfig,
    escrow_file: &EscrowFile,
    recovery_private_pem: &str,
) -> Result<CustodyState, VaultError> {
    if cfg.provider != Provider::Tpm {
        return Err(VaultError::Custody(
            "keys recover needs [keys] provider = \"tpm\"".into(),
        ));
    }
    ensure_keys_dir(cfg)?;
    let secret = escrow::open(escrow_file, recovery_private_pem)?;
    let (kek, signer) = split_secret(&secret)?;
    if kek.kek_id() != escrow_file.kek_id {
        return Err(VaultError::Escrow(format!(
            "escrow names KEK {} but holds {}",
            escrow_file.kek_id,
            kek.kek_id()
        )));
    }
    let prior = read_state(cfg)?;
    if let Some(s) = &prior {
        if s.active.kek_id != kek.kek_id() {
            return Err(VaultError::Custody(format!(
                "this box's state file names KEK {}, the escrow is for {}: move {} away first \
                 if you really mean to replace it",
                s.active.kek_id,
                kek.kek_id(),
                cfg.state_path().display()
            )));
        }
    }
    let mut tpm = Tpm::open(&cfg.tcti)?;
    if tpm.exists(cfg.handle)? {
        let ours = matches!(tpm.unseal(cfg.handle, &cfg.pcrs)?,
            Unseal::Ok(sec) if split_secret(&sec)?.0.kek_id() == kek.kek_id());
        // The state file says this handle holds this very KEK, now locked (e.g. after a
        // firmware update changed the PCRs): the escrow has its secret, so re-seal it
        // under the current PCR values.
        let locked_same = prior.as_ref().is_some_and(|s| {
            s.active.kek_id == kek.kek_id() && s.active.handle == Some(cfg.handle)
        });
        if !ours {
            if !locked_same {
                return Err(VaultError::Custody(format!(
                    "TPM handle {:#010x} holds another object; evict it (tpm2_evictcontrol) or \
                     configure another [keys] handle",
                    cfg.handle
                )));
            }
            tpm.evict(cfg.handle)?;
            tpm.seal_persist(&secret, &cfg.pcrs, cfg.handle)?;
        }
    } else {
        tpm.seal_persist(&secret, &cfg.pcrs, cfg.handle)?;
    }
    let s = tpm_state(cfg, kek.kek_id(), &signer);
    write_state(cfg, &s)?;
    let path = cfg.escrow_path(&escrow_file.kek_id);
    if !path.exists() {
        let bytes = serde_json::to_vec_pretty(escrow_file)
            .map_err(|e| VaultError::Custody(format!("encoding escrow: {e}")))?;
        write_atomic(&path, &bytes)?;
    }
    Ok(s)
}
