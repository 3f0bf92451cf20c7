//! The monotonic counter behind the audit log's signed heads (see
//! `branchrec_core::lifecycle::audit`): every signed head increments it and carries the
//! new value, so removing the newest heads leaves the counter ahead of the last head.
//!
//! - TPM mode: a TPM 2.0 NV counter (`[keys] audit_counter_index`, owner-authorised,
//!   defined on first use). It only goes up, survives reinstalling the SSD, and is
//!   out of reach of anyone holding only the disk.
//! - Software mode (development): the file `keys/audit-counter` (0600, written
//!   atomically). **Weaker**: whoever can write the data directory can edit it along
//!   with the catalogue; it only catches a rewrite that forgot it.

use std::path::PathBuf;
use std::sync::Mutex;

use super::VaultError;

/// A counter that only goes up.
pub trait AuditCounter: Send + Sync {
    /// The current value (`None`: never incremented).
    fn read(&self) -> Result<Option<u64>, VaultError>;
    /// Add one and return the new value.
    fn increment(&self) -> Result<u64, VaultError>;
    /// What it is, for messages (`tpm-nv:0x01010020`, `file:/…/audit-counter`).
    fn describe(&self) -> String;
}

/// The software counter: a decimal number in a 0600 file.
#[derive(Debug)]
pub struct FileCounter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileCounter {
    /// The counter file `path`.
    pub fn new(path: PathBuf) -> Self {
        FileCounter {
            path,
            lock: Mutex::new(()),
        }
    }
}

impl AuditCounter for FileCounter {
    fn read(&self) -> Result<Option<u64>, VaultError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => {
                s.trim().parse().map(Some).map_err(|_| {
                    VaultError::Custody(format!("{}: not a number", self.path.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::Custody(format!("{}: {e}", self.path.display()))),
        }
    }

    fn increment(&self) -> Result<u64, VaultError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.read()?.unwrap_or(0) + 1;
        super::custody::write_atomic(&self.path, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// The TPM NV counter (one TPM connection per operation: the TPM is shared).
#[derive(Debug)]
pub struct TpmCounter {
    tcti: String,
    index: u32,
    lock: Mutex<()>,
}

impl TpmCounter {
    /// The NV counter at `index` of the TPM at `tcti`.
    pub fn new(tcti: &str, index: u32) -> Self {
        TpmCounter {
            tcti: tcti.to_string(),
            index,
            lock: Mutex::new(()),
        }
    }
}

impl AuditCounter for TpmCounter {
    fn read(&self) -> Result<Option<u64>, VaultError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        super::tpm::Tpm::open(&self.tcti)?.nv_counter_read(self.index)
    }

    fn increment(&self) -> Result<u64, VaultError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        super::tpm::Tpm::open(&self.tcti)?.nv_counter_increment(self.index)
    }

    fn describe(&self) -> String {
        format!("tpm-nv:{:#010x}", self.index)
    }
}

/// The counter of this installation: the TPM's in TPM mode, the file in software mode.
pub fn for_custody(cfg: &super::CustodyConfig, nv_index: u32) -> Box<dyn AuditCounter> {
    match cfg.provider {
        super::Provider::Tpm => Box::new(TpmCounter::new(&cfg.tcti, nv_index)),
        super::Provider::Software => Box::new(FileCounter::new(cfg.keys_dir.join("audit-counter"))),
    }
}

/// A signing key and the counter its heads advance: what signs audit heads.
pub struct HeadSigner {
    /// The custody signing key (sealed in the TPM in TPM mode).
    pub key: std::sync::Arc<dyn super::AuditSigner>,
    /// The monotonic counter.
    pub counter: Box<dyn AuditCounter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_counter_goes_up_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let c = FileCounter::new(d.path().join("audit-counter"));
        assert_eq!(c.read().unwrap(), None);
        assert_eq!(c.increment().unwrap(), 1);
        assert_eq!(c.increment().unwrap(), 2);
        assert_eq!(c.read().unwrap(), Some(2));
        let m = std::fs::metadata(d.path().join("audit-counter")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }
}
