//! The per-install software KEK, kept in a key file (the only file access in `vault`).
//!
//! Wrapped key format (61 bytes): `version (1) = 0x01 || nonce (12) || AES-256-GCM
//! ciphertext of the 32-byte data key (32) || tag (16)`, with AAD = the KEK id (UTF-8).
//! The KEK id is `"kf1:"` followed by the first 16 hex digits of
//! `SHA-256("branchrec-kek-id-v1" || kek)`; it identifies the key without revealing it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::{DataKey, KeyWrap, VaultError, DATA_KEY_LEN};

/// Version byte at the start of every key wrapped by [`KeyFileVault`].
pub const WRAP_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + DATA_KEY_LEN + TAG_LEN;

/// A software key-encryption key loaded from (or created in) a 0600 key file.
pub struct KeyFileVault {
    /// In an mlocked, MADV_DONTDUMP page, zeroised on drop.
    kek: super::locked::LockedKey,
    kek_id: String,
}

impl std::fmt::Debug for KeyFileVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFileVault")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl KeyFileVault {
    /// Load the key file at `path`, or create it with 32 random bytes if it does not
    /// exist. Creation uses `O_CREAT|O_EXCL` with mode 0600, then fsyncs the file and
    /// its directory. Loading refuses symlinks, non-regular files, files of the wrong
    /// size and files accessible by group or others.
    pub fn open_or_create(path: &Path) -> Result<Self, VaultError> {
        let key = open_or_create_secret(path)?;
        Ok(Self::from_key(*key))
    }

    /// Load an existing key file (see [`open_or_create`](Self::open_or_create) for the checks).
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let key = load_secret(path)?;
        Ok(Self::from_key(*key))
    }
}

/// Load the 32-byte secret in `path`, or create the file (0600, `O_EXCL`, fsynced with its
/// directory) with 32 random bytes if it does not exist.
pub fn open_or_create_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            if let Err(e) = f.write_all(key.as_ref()).and_then(|()| f.sync_all()) {
                // Do not leave a short key file behind that would fail every later start.
                let _ = std::fs::remove_file(path);
                return Err(io_err(path, e));
            }
            // Make the new directory entry durable too.
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
            tracing::info!(path = %path.display(), "created new secret key file");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_secret(path),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Load a 32-byte secret from a key file (same checks as [`KeyFileVault::load`]).
pub fn load_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let meta = f.metadata().map_err(|e| io_err(path, e))?;
    let pstr = path.display().to_string();
    if !meta.is_file() {
        return Err(VaultError::BadKeyFile {
            path: pstr,
            reason: "not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::InsecurePermissions { path: pstr, mode });
    }
    if meta.len() != 32 {
        return Err(VaultError::BadKeyFile {
            path: pstr,
            reason: format!("size {} bytes, expected 32", meta.len()),
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(33));
    (&mut f)
        .take(33)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    let key: [u8; 32] = buf
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::BadKeyFile {
            path: pstr,
            reason: format!("read {} bytes, expected 32", buf.len()),
        })?;
    let out = Zeroizing::new(key);
    let mut key = key;
    key.zeroize();
    Ok(out)
}

impl KeyFileVault {
    /// A vault around raw KEK bytes (tests, tools, fuzzing).
    pub fn from_key(kek: [u8; 32]) -> Self {
        Self::with_id_prefix(kek, "kf1")
    }

    /// A vault around raw KEK bytes whose id carries `prefix` (`"kf1"` for a key file,
    /// `"tpm1"` for a KEK sealed in the TPM); the wrapped-key format is the same.
    pub fn with_id_prefix(mut kek: [u8; 32], prefix: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"branchrec-kek-id-v1");
        h.update(kek);
        let digest = h.finalize();
        let kek_id = format!("{prefix}:{}", hex::encode(&digest[..8]));
        let locked = super::locked::LockedKey::from_bytes(&kek);
        // The by-value copy this function got.
        kek.zeroize();
        KeyFileVault {
            kek: locked,
            kek_id,
        }
    }

    /// The AES-256-GCM state for one wrap or unwrap (dropped, and zeroised by aes-gcm's
    /// `zeroize` feature, right after).
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.kek.as_bytes().into())
    }
}

impl KeyWrap for KeyFileVault {
    fn kek_id(&self) -> String {
        self.kek_id.clone()
    }

    fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(dk.as_bytes());
        let tag = self
            .cipher()
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                self.kek_id.as_bytes(),
                out.get_mut(1 + NONCE_LEN..).ok_or(VaultError::WrapFailed)?,
            )
            .map_err(|_| VaultError::WrapFailed)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        if kek_id != self.kek_id {
            return Err(VaultError::UnknownKek(kek_id.to_string()));
        }
        if wrapped.len() != WRAPPED_LEN {
            return Err(VaultError::Malformed("wrong length"));
        }
        let (version, rest) = wrapped.split_at(1);
        if version != [WRAP_VERSION] {
            return Err(VaultError::Malformed("unknown version"));
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(DATA_KEY_LEN);
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(ct);
        self.cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                kek_id.as_bytes(),
                key.as_mut(),
                tag.into(),
            )
            .map_err(|_| VaultError::UnwrapFailed)?;
        Ok(DataKey::from_bytes(*key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        let a = KeyFileVault::open_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 32);
        let b = KeyFileVault::open_or_create(&p).unwrap();
        assert_eq!(a.kek_id(), b.kek_id());
        assert!(a.kek_id().starts_with("kf1:"));
        let dk = DataKey::generate(&mut rand::rngs::OsRng);
        let w = a.wrap(&dk).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(b.unwrap(&a.kek_id(), &w).unwrap(), dk);
        // Random nonce: wrapping twice differs.
        assert_ne!(a.wrap(&dk).unwrap(), w);
    }

    #[test]
    fn refuses_insecure_or_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        KeyFileVault::open_or_create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            KeyFileVault::open_or_create(&p),
            Err(VaultError::InsecurePermissions { mode: 0o640, .. })
        ));
        let q = dir.path().join("short");
        std::fs::write(&q, [1u8; 31]).unwrap();
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            KeyFileVault::load(&q),
            Err(VaultError::BadKeyFile { .. })
        ));
        // Symlinks are refused.
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&q, &l).unwrap();
        assert!(KeyFileVault::open_or_create(&l).is_err());
        // A directory is not a key file.
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(KeyFileVault::open_or_create(&d).is_err());
    }

    #[test]
    fn unwrap_detects_tamper_and_wrong_kek() {
        let a = KeyFileVault::from_key([1; 32]);
        let b = KeyFileVault::from_key([2; 32]);
        let dk = DataKey::from_bytes([9; 32]);
        let w = a.wrap(&dk).unwrap();
        assert!(matches!(
            b.unwrap(&a.kek_id(), &w),
            Err(VaultError::UnknownKek(_))
        ));
        // Even if the id is forged, the wrong KEK fails authentication.
        assert!(matches!(
            b.unwrap(&b.kek_id(), &w),
            Err(VaultError::UnwrapFailed)
        ));
        for i in 0..w.len() {
            let mut t = w.clone();
            t[i] ^= 0x01;
            assert!(a.unwrap(&a.kek_id(), &t).is_err(), "flip at {i}");
        }
        assert!(matches!(
            a.unwrap(&a.kek_id(), &w[..60]),
            Err(VaultError::Malformed(_))
        ));
    }
}
