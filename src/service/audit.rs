//! The audit log as the CLI and the daemon share it: signing the chain head with the
//! software key file, and verifying the chain against this box's signing key.

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::lifecycle::audit::Problem;

/// Sign the audit head with the daemon's key if this user can read it (software keys;
/// with a TPM the daemon signs it at its next interval).
pub fn sign_head(cat: &mut Catalog, cfg: &Config, now: i64) {
    if let Ok(s) = crate::vault::FileSigner::load(&cfg.storage.signing_key_file()) {
        if let Err(e) = cat.sign_audit_head(&s, now) {
            eprintln!("warning: could not sign the audit chain head: {e}");
        }
    }
}

/// Sign the audit head with `signer` (the daemon's custody key) or, without one, with the
/// software key file if readable ([`sign_head`]).
pub fn sign_head_with(
    cat: &mut Catalog,
    cfg: &Config,
    now: i64,
    signer: Option<&dyn crate::vault::AuditSigner>,
) {
    match signer {
        Some(s) => {
            if let Err(e) = cat.sign_audit_head(s, now) {
                tracing::warn!(error = %e, "could not sign the audit chain head");
            }
        }
        None => sign_head(cat, cfg, now),
    }
}

/// The box's signing public key: from the key-custody state (TPM or software), else from
/// the software key file.
pub fn own_public_key(cfg: &Config) -> Option<[u8; 32]> {
    let from_state = crate::vault::custody::read_state(&cfg.custody())
        .ok()
        .flatten()
        .and_then(|s| hex::decode(s.signing_public_key).ok())
        .and_then(|v| <[u8; 32]>::try_from(v).ok());
    from_state.or_else(|| {
        crate::vault::FileSigner::load(&cfg.storage.signing_key_file())
            .ok()
            .map(|s| crate::vault::AuditSigner::public_key(&s))
    })
}

/// What [`verify_log`] found.
#[derive(Debug, Clone, Serialize)]
pub struct LogVerification {
    /// Entries in the log.
    pub entries: usize,
    /// Signed heads.
    pub signed_heads: usize,
    /// Seq of the last signed head.
    pub last_signed_seq: Option<i64>,
    /// Every problem (empty: the log verifies).
    pub problems: Vec<Problem>,
}

impl LogVerification {
    /// Whether the log verifies.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the hash chain and the signed heads. Trusts only the key on this box: a head
/// signed by another key is a problem.
pub fn verify_log(cat: &Catalog, cfg: &Config) -> Result<LogVerification, CatalogError> {
    let entries = cat.audit_entries(0, None)?;
    let heads = cat.audit_heads()?;
    let own_pub = own_public_key(cfg);
    let heads_only: Vec<_> = heads.iter().map(|(h, _)| h.clone()).collect();
    let problems = crate::lifecycle::audit::verify(&entries, &heads_only, |h| {
        let pk_hex = heads
            .iter()
            .find(|(x, _)| x == h)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let pk: [u8; 32] = hex::decode(&pk_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| "public key unreadable".to_string())?;
        if let Some(own) = own_pub {
            if own != pk {
                return Err("signed by a key that is not this box's signing key".into());
            }
        }
        crate::vault::signing::verify(
            &pk,
            &crate::lifecycle::audit::head_message(h.seq, &h.hash, h.at_ms),
            &h.signature,
        )
    });
    Ok(LogVerification {
        entries: entries.len(),
        signed_heads: heads.len(),
        last_signed_seq: heads.last().map(|(h, _)| h.seq),
        problems,
    })
}
