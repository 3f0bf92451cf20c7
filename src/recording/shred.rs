//! Crypto-shredding of a recording file: destroy the wrapped data key (both key slots,
//! see `docs/recording-format.md`) on disk with an fsync, then unlink the file and fsync
//! the directory.
//!
//! Once the wrapped key is gone, no copy of the ciphertext taken afterwards (backup,
//! stolen disk image, a file recovered from free blocks) can be decrypted, because the
//! data key existed nowhere else. Copies taken *before* the shred still carry the wrapped
//! key and stay as safe as the key-encryption key. On flash with wear levelling an
//! overwrite in place may leave the old block in the FTL; that residue is again only as
//! readable as the KEK allows.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::container::ContainerError;

/// What [`shred_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shredded {
    /// The key slots were overwritten and the file removed.
    KeyDestroyed,
    /// The header did not parse: the first `n` bytes (all of any possible header and key
    /// slots) were overwritten, then the file removed.
    HeaderWiped(u64),
    /// There was no file (already removed).
    NoFile,
}

/// Destroy the data key of the recording at `path` and remove the file.
pub fn shred_file(path: &Path) -> std::io::Result<Shredded> {
    if !path.exists() {
        return Ok(Shredded::NoFile);
    }
    let what = match super::slots::shred_file(path) {
        Ok(()) => Shredded::KeyDestroyed,
        Err(ContainerError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Shredded::NoFile)
        }
        Err(_) => {
            // Not a container we can parse: wipe everything a header and slots could hold.
            let mut f = OpenOptions::new().write(true).open(path)?;
            let len = f.metadata()?.len().min(12 + (1 << 20) + 4096);
            f.write_all(&vec![0u8; len as usize])?;
            f.sync_all()?;
            Shredded::HeaderWiped(len)
        }
    };
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{ContainerWriter, HeaderParams};
    use crate::vault::{DataKey, KeyFileVault, KeyWrap};

    #[test]
    fn shredded_copy_cannot_be_read() {
        let vault = KeyFileVault::from_key([7u8; 32]);
        let dk = DataKey::generate(&mut rand::rngs::OsRng);
        let wrapped = vault.wrap(&dk).unwrap();
        let params = HeaderParams {
            recording_id: "rec-1".into(),
            created_unix_ms: 1,
            sample_rate: 8000,
            channels: 2,
            chunk_target_frames: 8000,
            kek_id: vault.kek_id(),
            extra_json: String::new(),
        };
        let (w, header) = ContainerWriter::new(params, dk, wrapped.clone(), [1; 7]).unwrap();
        let fin = w.finish();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.brec");
        let mut bytes = header.clone();
        bytes.extend_from_slice(&fin.bytes);
        std::fs::write(&p, &bytes).unwrap();
        assert!(crate::recording::read_all_audio(std::io::Cursor::new(&bytes), &vault).is_ok());
        // Keep a hard link: a "copy" that survives the unlink.
        let copy = dir.path().join("copy.brec");
        std::fs::hard_link(&p, &copy).unwrap();
        assert_eq!(shred_file(&p).unwrap(), Shredded::KeyDestroyed);
        assert!(!p.exists());
        let after = std::fs::read(&copy).unwrap();
        assert_eq!(after.len(), bytes.len(), "only overwritten, not truncated");
        assert_ne!(after, bytes);
        assert!(crate::recording::read_all_audio(std::io::Cursor::new(&after), &vault).is_err());
        assert_eq!(shred_file(&p).unwrap(), Shredded::NoFile);
    }
}
