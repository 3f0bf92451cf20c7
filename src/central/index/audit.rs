//! The central audit log: every access at headquarters (search with its filter, show,
//! export, enrol, fleet, index passes) is an entry in PostgreSQL, chained by SHA-256 and
//! signed with the central audit key (Ed25519). A changed, removed or inserted entry
//! breaks the chain or a signature: `central audit --verify`.
//!
//! hash(n) = SHA-256( hash(n-1) "\n" seq "\n" at_ms "\n" actor "\n" action "\n" target "\n"
//! detail ), hash(0) = 64 zeros; signature = Ed25519 over
//! `branchrec-central-audit-v1\n` ‖ hash(n) (hex).

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use postgres::{Client, GenericClient};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::IndexError;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const SIG_CONTEXT: &str = "branchrec-central-audit-v1\n";

/// The central audit key.
pub struct AuditKey {
    sk: SigningKey,
    /// `ed1:` + first 16 hex of SHA-256 of the public key.
    pub key_id: String,
}

fn key_id(vk: &VerifyingKey) -> String {
    format!("ed1:{}", &hex::encode(Sha256::digest(vk.as_bytes()))[..16])
}

impl AuditKey {
    /// Load a PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<Self, IndexError> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            IndexError::Audit(format!("reading the audit key {}: {e}", path.display()))
        })?);
        let sk = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| {
            IndexError::Audit(format!(
                "{}: not an Ed25519 PKCS#8 PEM private key",
                path.display()
            ))
        })?;
        let key_id = key_id(&sk.verifying_key());
        Ok(AuditKey { sk, key_id })
    }

    /// Generate a key into a new 0600 file (refuses to replace one).
    pub fn generate(path: &Path) -> Result<Self, IndexError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let sk = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = sk
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| IndexError::Audit(format!("encoding the key: {e}")))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| IndexError::Audit(format!("{}: {e}", path.display())))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| IndexError::Audit(format!("{}: {e}", path.display())))?;
        let key_id = key_id(&sk.verifying_key());
        Ok(AuditKey { sk, key_id })
    }

    /// The public key (raw 32 bytes).
    pub fn public(&self) -> VerifyingKey {
        self.sk.verifying_key()
    }
}

fn entry_hash(
    prev: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        target,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.update(detail.as_bytes());
    hex::encode(h.finalize())
}

/// Append an entry in `c`'s transaction (or as its own statement group): serialised by
/// an advisory lock so the chain stays linear with several central processes.
pub fn append(
    c: &mut impl GenericClient,
    key: &AuditKey,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<i64, IndexError> {
    let mut tx = c.transaction()?;
    // Durable even on a session that relaxed commits (the indexer's).
    tx.batch_execute("SET LOCAL synchronous_commit TO on")?;
    tx.execute("SELECT pg_advisory_xact_lock(72431402)", &[])?;
    let (prev_seq, prev_hash): (i64, String) = tx
        .query_opt(
            "SELECT seq, hash FROM central_audit ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, GENESIS.to_string()));
    let seq = prev_seq + 1;
    let at = super::now_ms();
    let detail = detail.to_string();
    let hash = entry_hash(&prev_hash, seq, at, actor, action, target, &detail);
    let sig = hex::encode(
        key.sk
            .sign(format!("{SIG_CONTEXT}{hash}").as_bytes())
            .to_bytes(),
    );
    tx.execute(
        "INSERT INTO central_audit (seq, at_ms, actor, action, target, detail, prev_hash, hash, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[&seq, &at, &actor, &action, &target, &detail, &prev_hash, &hash, &key.key_id, &sig],
    )?;
    tx.commit()?;
    Ok(seq)
}

/// One entry as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Sequence.
    pub seq: i64,
    /// When.
    pub at_ms: i64,
    /// Who (OS account of the central process).
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Details (JSON text as hashed).
    pub detail: String,
    /// Chain hash.
    pub hash: String,
    /// Signing key.
    pub key_id: String,
}

/// The entries from `from_seq` on (at most `limit`).
pub fn entries(c: &mut Client, from_seq: i64, limit: i64) -> Result<Vec<Entry>, IndexError> {
    Ok(c.query(
        "SELECT seq, at_ms, actor, action, target, detail, hash, key_id FROM central_audit
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
        &[&from_seq, &limit],
    )?
    .iter()
    .map(|r| Entry {
        seq: r.get(0),
        at_ms: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: r.get(4),
        detail: r.get(5),
        hash: r.get(6),
        key_id: r.get(7),
    })
    .collect())
}

/// Verify the whole chain with `public` (the central audit key's public half): every
/// entry's hash from its predecessor, consecutive sequence numbers, every signature.
/// Returns the number of entries, or the first problem.
pub fn verify(c: &mut Client, public: &VerifyingKey) -> Result<i64, IndexError> {
    let mut prev = GENESIS.to_string();
    let mut n = 0i64;
    let rows = c.query(
        "SELECT seq, at_ms, actor, action, target, detail, prev_hash, hash, signature
         FROM central_audit ORDER BY seq",
        &[],
    )?;
    for r in rows {
        let seq: i64 = r.get(0);
        n += 1;
        if seq != n {
            return Err(IndexError::Audit(format!(
                "entry {n} missing (next is {seq})"
            )));
        }
        let stored_prev: String = r.get(6);
        let hash: String = r.get(7);
        let want = entry_hash(
            &prev,
            seq,
            r.get(1),
            r.get::<_, String>(2).as_str(),
            r.get::<_, String>(3).as_str(),
            r.get::<_, String>(4).as_str(),
            r.get::<_, String>(5).as_str(),
        );
        if stored_prev != prev || hash != want {
            return Err(IndexError::Audit(format!(
                "entry {seq} does not chain: altered, inserted or removed"
            )));
        }
        let sig: String = r.get(8);
        let sig = hex::decode(&sig)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| IndexError::Audit(format!("entry {seq}: malformed signature")))?;
        public
            .verify(format!("{SIG_CONTEXT}{hash}").as_bytes(), &sig)
            .map_err(|_| {
                IndexError::Audit(format!(
                    "entry {seq}: signature does not verify with the central audit key"
                ))
            })?;
        prev = hash;
    }
    Ok(n)
}
