//! Crypto-shredding of a recording file: destroy the wrapped data key in the header on
//! disk (overwrite + fsync), then unlink the file (+ fsync of the directory).
//!
//! Once the wrapped key is gone, no copy of the ciphertext taken afterwards (backup,
//! stolen disk image, a file recovered from free blocks) can be decrypted, because the
//! data key existed nowhere else. Copies taken *before* the shred still carry the wrapped
//! key and stay as safe as the key-encryption key (file today, TPM later). On flash with
//! wear levelling an overwrite in place may leave the old block in the FTL; that residue
//! is again only as readable as the KEK allows.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::container::{read_header, Header};

/// Byte range `(offset, len)` of the wrapped data key in a header as written by
/// `Header::to_bytes` (see `docs/recording-format.md` §1).
pub fn wrapped_key_range(h: &Header) -> (u64, u64) {
    let off = 12 // magic, version, body_len
        + 2 + h.recording_id.len()
        + 8 + 4 + 2 + 1 + 4
        + 2 + h.kek_id.len()
        + 2;
    (off as u64, h.wrapped_key.len() as u64)
}

/// What [`shred_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shredded {
    /// The wrapped key was overwritten and the file removed.
    KeyDestroyed,
    /// The header did not parse: the first `n` bytes (all of any possible header) were
    /// overwritten, then the file removed.
    HeaderWiped(u64),
    /// There was no file (already removed).
    NoFile,
}

/// Destroy the data key of the recording at `path` and remove the file.
pub fn shred_file(path: &Path) -> std::io::Result<Shredded> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Shredded::NoFile),
        Err(e) => return Err(e),
    };
    let what = match read_header(&mut f) {
        Ok((h, _)) => {
            let (off, len) = wrapped_key_range(&h);
            f.seek(SeekFrom::Start(off))?;
            f.write_all(&vec![0u8; len as usize])?;
            Shredded::KeyDestroyed
        }
        Err(_) => {
            let len = f.metadata()?.len().min(12 + (1 << 20));
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&vec![0u8; len as usize])?;
            Shredded::HeaderWiped(len)
        }
    };
    f.sync_all()?;
    drop(f);
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
        // The range really is the wrapped key.
        let (h, _) = read_header(&mut std::io::Cursor::new(&bytes)).unwrap();
        let (off, len) = wrapped_key_range(&h);
        assert_eq!(
            &bytes[off as usize..(off + len) as usize],
            wrapped.as_slice()
        );
        assert!(crate::recording::read_all_audio(std::io::Cursor::new(&bytes), &vault).is_ok());
        // Keep a hard link: a "copy" that survives the unlink.
        let copy = dir.path().join("copy.brec");
        std::fs::hard_link(&p, &copy).unwrap();
        assert_eq!(shred_file(&p).unwrap(), Shredded::KeyDestroyed);
        assert!(!p.exists());
        let after = std::fs::read(&copy).unwrap();
        assert_eq!(
            &after[off as usize..(off + len) as usize],
            vec![0u8; len as usize].as_slice()
        );
        assert!(crate::recording::read_all_audio(std::io::Cursor::new(&after), &vault).is_err());
        assert_eq!(shred_file(&p).unwrap(), Shredded::NoFile);
    }
}
