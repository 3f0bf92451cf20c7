//! The audit log as the CLI and the daemon share it: signing the chain head with the
//! custody key under the monotonic counter, verifying the chain against this box's key
//! and counter (and, centrally, against heads published in status documents), and the
//! two-person rule.
//!
//! There is no separate signing-key file: heads are signed only by the custody key (the
//! one sealed in the TPM in TPM mode). While it cannot be loaded, entries stay unsigned
//! and the next head signed after the keys are back covers them.

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::lifecycle::audit::{CounterReading, Problem, SignedHead, VerifyPolicy};
use crate::time::UnixMs;
use crate::vault::audit_key::AuditMacKey;
use crate::vault::HeadSigner;

/// The head signer of this installation from its custody keys, if they load (software
/// key files readable by this user, or a TPM this user may use).
pub fn head_signer(cfg: &Config) -> Result<HeadSigner, String> {
    let keys = crate::vault::custody::open_existing(&cfg.custody()).map_err(|e| e.to_string())?;
    Ok(HeadSigner {
        key: std::sync::Arc::new(keys.signer),
        counter: counter(cfg),
    })
}

/// The audit MAC key of this process: the one installed when the keys were loaded, or
/// else loaded now from the custody keys (and installed, so catalogues opened from now
/// on MAC their entries). `Err`: why it is not available (the keys do not load).
pub fn audit_mac_key(cfg: &Config) -> Result<std::sync::Arc<AuditMacKey>, String> {
    if let Some(k) = crate::vault::audit_key::installed() {
        return Ok(k);
    }
    let keys = crate::vault::custody::open_existing(&cfg.custody()).map_err(|e| e.to_string())?;
    let k = std::sync::Arc::new(keys.audit_mac_key());
    crate::vault::audit_key::install(k.clone());
    Ok(k)
}

/// The monotonic counter of this installation.
pub fn counter(cfg: &Config) -> Box<dyn crate::vault::AuditCounter> {
    crate::vault::counter::for_custody(&cfg.custody(), cfg.keys.audit_counter_index)
}

/// Sign the audit head with the custody key if this user can load it; otherwise the
/// daemon signs it at its next interval.
pub fn sign_head(cat: &mut Catalog, cfg: &Config, now: i64) {
    if let Ok(s) = head_signer(cfg) {
        if let Err(e) = cat.sign_audit_head(&s, now) {
            eprintln!("warning: could not sign the audit chain head: {e}");
        }
    }
}

/// Sign the audit head with `signer` (the daemon's) or, without one, as [`sign_head`].
pub fn sign_head_with(cat: &mut Catalog, cfg: &Config, now: i64, signer: Option<&HeadSigner>) {
    match signer {
        Some(s) => {
            if let Err(e) = cat.sign_audit_head(s, now) {
                tracing::warn!(error = %e, "could not sign the audit chain head");
            }
        }
        None => sign_head(cat, cfg, now),
    }
}

/// The box's signing public key, from the key-custody state only (never from a loose
/// key file: whoever can write the data directory could plant one).
pub fn own_public_key(cfg: &Config) -> Result<[u8; 32], String> {
    let st = crate::vault::custody::read_state(&cfg.custody())
        .map_err(|e| format!("key custody state unreadable: {e}"))?
        .ok_or_else(|| {
            "no key custody state (keys/custody.json): the signing key is unknown, signed heads cannot be trusted".to_string()
        })?;
    hex::decode(&st.signing_public_key)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| "custody state has no valid signing public key".to_string())
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
    /// The monotonic counter (its kind and value, or why it could not be read).
    pub counter: String,
    /// The entries' MACs: where keying starts, how many entries are unkeyed (before
    /// schema 9) and how many MACs were checked.
    pub macs: crate::lifecycle::audit::MacReport,
    /// The audit MAC key (its id), or why the MACs could not be checked.
    pub mac_key: String,
    /// Every problem (empty: the log verifies).
    pub problems: Vec<Problem>,
}

impl LogVerification {
    /// Whether the log verifies.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the hash chain, the signed heads (signature by this box's custody key, ordinals
/// without gaps, the last one at the monotonic counter's value), that the newest entries
/// are covered by a head within `[audit] max_unsigned_s`, and, with `published`, that
/// every head published off the box is still here unchanged.
pub fn verify_log(
    cat: &Catalog,
    cfg: &Config,
    now_ms: i64,
    published: Option<&[SignedHead]>,
) -> Result<LogVerification, CatalogError> {
    let entries = cat.audit_entries(0, None)?;
    let heads = cat.audit_heads()?;
    let own_pub = own_public_key(cfg);
    let heads_only: Vec<_> = heads.iter().map(|(h, _)| h.clone()).collect();
    let ctr = counter(cfg);
    let reading = match ctr.read() {
        Ok(None) => CounterReading::Unset,
        Ok(Some(v)) => CounterReading::Value(v as i64),
        Err(e) => CounterReading::Unavailable(format!("{}: {e}", ctr.describe())),
    };
    let counter_text = match &reading {
        CounterReading::Unset => format!("{} (never incremented)", ctr.describe()),
        CounterReading::Value(v) => format!("{} = {v}", ctr.describe()),
        CounterReading::Unavailable(w) => format!("unavailable: {w}"),
    };
    let policy = VerifyPolicy {
        counter: reading,
        now: UnixMs(now_ms),
        max_unsigned: std::time::Duration::from_secs(u64::from(cfg.audit.max_unsigned_s)),
    };
    let mut problems = Vec::new();
    if let Err(m) = &own_pub {
        if !heads.is_empty() || !entries.is_empty() {
            problems.push(Problem {
                position: 0,
                seq: 0,
                message: m.clone(),
            });
        }
    }
    problems.extend(crate::lifecycle::audit::verify(
        &entries,
        &heads_only,
        &policy,
        |h| {
            let pk_hex = heads
                .iter()
                .find(|(x, _)| x == h)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let pk: [u8; 32] = hex::decode(&pk_hex)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| "public key unreadable".to_string())?;
            match &own_pub {
                Ok(own) if *own != pk => {
                    return Err("signed by a key that is not this box's signing key".into())
                }
                Ok(_) => {}
                Err(_) => return Err("no trusted signing key to check it with".into()),
            }
            crate::vault::signing::verify(&pk, &h.message(), &h.signature)
        },
    ));
    if let Some(p) = published {
        problems.extend(crate::lifecycle::audit::check_against(&heads_only, p));
    }
    // The MACs, when this process can unseal the key; without it only their presence.
    let key = audit_mac_key(cfg);
    let macs = crate::lifecycle::audit::verify_macs(
        &entries,
        key.as_ref().ok().map(|k| k.as_bytes()),
        crate::lifecycle::audit::covered_seq(&heads_only),
        &policy,
    );
    problems.extend(macs.problems.iter().cloned());
    Ok(LogVerification {
        entries: entries.len(),
        signed_heads: heads.len(),
        last_signed_seq: heads.last().map(|(h, _)| h.seq),
        counter: counter_text,
        mac_key: match &key {
            Ok(k) => k.key_id(),
            Err(e) => format!("unavailable, MACs not checked: {e}"),
        },
        macs,
        problems,
    })
}

/// The newest `n` signed heads, for the status document and the archive: published off
/// the box so that a rewrite on it is caught centrally (`audit verify --against`).
pub fn published_heads(cat: &Catalog, n: usize) -> Result<Vec<SignedHead>, CatalogError> {
    let heads = cat.audit_heads()?;
    let skip = heads.len().saturating_sub(n);
    Ok(heads.into_iter().skip(skip).map(|(h, _)| h).collect())
}

/// Heads from a published document: a status document (`audit_heads`), an archive
/// document, or a bare JSON array of heads.
pub fn heads_from_document(v: &serde_json::Value) -> Result<Vec<SignedHead>, String> {
    let arr = v
        .get("audit_heads")
        .or_else(|| v.pointer("/audit/heads"))
        .unwrap_or(v);
    serde_json::from_value(arr.clone()).map_err(|e| format!("no audit heads in the document: {e}"))
}

/// What the two-person rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwoPerson {
    /// Not required by the configuration: go ahead.
    NotRequired,
    /// A second, different operator confirms the request of `requested_by` (audit `seq`).
    Confirmed {
        /// Who asked first.
        requested_by: String,
        /// The request's audit seq.
        request_seq: i64,
    },
    /// This is the first operator: the request is recorded (audit `seq`); a different
    /// operator must repeat the command within the window.
    Requested {
        /// The request's audit seq.
        seq: i64,
        /// The window, seconds.
        window_s: u32,
    },
}

/// Apply the two-person rule to `action` on `target` by `actor`: the first operator's
/// command is recorded as `<action>.request` (audited, with `reason`); a *different*
/// operator's same command within `[audit] two_person_window_s` carries it out. The same
/// operator asking again is refused.
#[allow(clippy::too_many_arguments)]
pub fn two_person(
    cat: &mut Catalog,
    cfg: &Config,
    required: bool,
    action: &str,
    target: &str,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> anyhow::Result<TwoPerson> {
    if !required {
        return Ok(TwoPerson::NotRequired);
    }
    let req_action = format!("{action}.request");
    let window_ms = i64::from(cfg.audit.two_person_window_s) * 1000;
    let pending = cat
        .last_audit_entry_for(&req_action, target)?
        .filter(|e| UnixMs(now_ms).millis_since(e.at_ms) <= window_ms && e.at_ms <= UnixMs(now_ms))
        // A request already carried out (the action audited after it) is spent.
        .filter(|e| {
            cat.last_audit_entry_for(action, target)
                .ok()
                .flatten()
                .map_or(true, |done| done.seq < e.seq)
        });
    match pending {
        Some(e) if e.actor != actor => Ok(TwoPerson::Confirmed {
            requested_by: e.actor,
            request_seq: e.seq,
        }),
        Some(e) => anyhow::bail!(
            "{action} of {target} needs a second, different operator: {} asked at seq {} and must not confirm it too (two-person rule, [audit] window {} s)",
            e.actor,
            e.seq,
            cfg.audit.two_person_window_s
        ),
        None => {
            let seq = cat.audit(
                now_ms,
                actor,
                &req_action,
                target,
                serde_json::json!({ "reason": reason, "window_s": cfg.audit.two_person_window_s }),
            )?;
            sign_head(cat, cfg, now_ms);
            Ok(TwoPerson::Requested {
                seq,
                window_s: cfg.audit.two_person_window_s,
            })
        }
    }
}
