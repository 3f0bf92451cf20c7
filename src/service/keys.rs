//! Key rotation across the recording files: the custody steps of
//! [`crate::vault::custody`] around the file operations of [`crate::recording`].

use std::path::PathBuf;

use crate::recording::{clear_other_slots, rewrap_file, ContainerError, RewrapOutcome};
use crate::vault::custody::{self, CustodyConfig};
use crate::vault::VaultError;

/// Outcome of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new active KEK.
    pub new_kek_id: String,
    /// The KEK that was retired.
    pub old_kek_id: String,
    /// Files re-wrapped in this run.
    pub rewrapped: usize,
    /// Files already under the new KEK.
    pub already: usize,
    /// Files that could not be re-wrapped (path, error); the rotation is then not
    /// completed and the old KEK kept.
    pub failed: Vec<(PathBuf, String)>,
    /// Escrow record of the new KEK.
    pub escrow: Option<PathBuf>,
}

/// Rotate the KEK: create (or resume) a new KEK, re-wrap every recording file's data key
/// to it in the file's spare key slot, then retire the old KEK. Crash-safe at every
/// step: re-running resumes (see `docs/recording-format.md`). The daemon must not run.
pub fn rotate(cfg: &CustodyConfig, files: &[PathBuf]) -> Result<RotationReport, VaultError> {
    let rot = custody::begin_rotation(cfg)?;
    let mut rep = RotationReport {
        new_kek_id: rot.new_kek_id().to_string(),
        old_kek_id: rot.old_kek_id().to_string(),
        rewrapped: 0,
        already: 0,
        failed: Vec::new(),
        escrow: rot.escrow().map(PathBuf::from),
    };
    // The catalogue key gets its wrap under the new KEK first (the old one stays until
    // the switch): a crash anywhere leaves it unwrappable by whichever KEK is active.
    crate::catalog::rewrap(&cfg.keys_dir, rot.keys())
        .map_err(|e| VaultError::Custody(e.to_string()))?;
    for f in files {
        match rewrap_file(f, rot.keys()) {
            Ok(RewrapOutcome::AlreadyCurrent) => rep.already += 1,
            Ok(RewrapOutcome::Rewrapped { .. }) => rep.rewrapped += 1,
            Err(ContainerError::NoKeySlot) => {
                // Shredded: nothing to re-wrap.
                rep.already += 1;
            }
            Err(e) => rep.failed.push((f.clone(), e.to_string())),
        }
    }
    if !rep.failed.is_empty() {
        return Ok(rep);
    }
    // Every file has a slot under the new KEK: switch, then retire the old one.
    let retiring = rot.switch(cfg)?;
    for f in files {
        if let Err(e) = clear_other_slots(f, retiring.keys(), retiring.new_kek_id()) {
            if !matches!(e, ContainerError::NoKeySlot) {
                tracing::warn!(file = %f.display(), error = %e, "could not clear the old key slot");
            }
        }
    }
    if let Err(e) = crate::catalog::retain_only(&cfg.keys_dir, retiring.new_kek_id()) {
        tracing::warn!(error = %e, "could not drop the old KEK's wrap of the catalogue key");
    }
    retiring.retire()?;
    Ok(rep)
}

/// How many recording files carry a compliance slot for each compliance key id
/// (`"none"`: no compliance slot — recorded before a compliance key was configured, or
/// shredded; `"unreadable"`: the header does not parse). For `keys status`: after a
/// compliance-key rotation the old id's count stops growing.
pub fn compliance_wrap_counts(files: &[PathBuf]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for f in files {
        let id = match std::fs::File::open(f)
            .map_err(ContainerError::Io)
            .and_then(|h| crate::recording::read_header(&mut std::io::BufReader::new(h)))
        {
            Ok((h, _)) => h
                .compliance_slot()
                .and_then(|s| crate::compliance::key_id_of(&s.kek_id).map(str::to_string))
                .unwrap_or_else(|| "none".into()),
            Err(_) => "unreadable".into(),
        };
        *out.entry(id).or_insert(0) += 1;
    }
    out
}
