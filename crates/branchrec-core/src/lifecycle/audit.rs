//! The audit log's hash chain: entry hashing and verification (pure).
//!
//! Entry *n* stores `prev_hash` = hash of entry *n − 1* (64 zeros for entry 1) and
//! `hash = SHA-256("branchrec-audit-v1" ‖ seq ‖ at ‖ actor ‖ action ‖ target ‖ details ‖
//! prev_hash)`, integers as 8-byte big-endian, strings as 4-byte big-endian length then
//! UTF-8. Editing an entry breaks its hash; removing or reordering entries breaks the
//! sequence and the `prev_hash` links; cutting entries off the end is caught by the
//! signed chain heads (a head names a `seq` and `hash` that must still be in the chain).

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, unix ms.
    pub at_ms: i64,
    /// Who: `daemon`, `cli:<user>`, `rule`, `sweeper`, …
    pub actor: String,
    /// What: `recording.export`, `hold.add`, `recording.delete`, …
    pub action: String,
    /// On what (recording id, hold id, …); may be empty.
    pub target: String,
    /// JSON details.
    pub details: String,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The hash an entry must carry.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"branchrec-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    put_str(&mut h, actor);
    put_str(&mut h, action);
    put_str(&mut h, target);
    put_str(&mut h, details);
    put_str(&mut h, prev_hash);
    hex::encode(h.finalize())
}

/// The message a chain-head signature covers.
pub fn head_message(seq: i64, hash: &str, at_ms: i64) -> Vec<u8> {
    let mut m = b"branchrec-audit-head-v1".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

/// A signed chain head as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignedHead {
    /// Sequence number of the entry signed.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed, unix ms.
    pub at_ms: i64,
    /// Signing key id.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based position in the log as read (ordered by seq); 0 for head problems.
    pub position: usize,
    /// Sequence number at that position (or the head's).
    pub seq: i64,
    /// What is wrong.
    pub message: String,
}

/// Verify the chain (`entries` ordered by `seq`, as read) and the signed heads.
/// `check_sig(head)` says whether a head's signature is valid for its key.
pub fn verify(
    entries: &[AuditEntry],
    heads: &[SignedHead],
    check_sig: impl Fn(&SignedHead) -> Result<(), String>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut prev_hash = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let pos = i + 1;
        let expected_seq = pos as i64;
        if e.seq != expected_seq {
            out.push(Problem {
                position: pos,
                seq: e.seq,
                message: format!(
                    "expected seq {expected_seq}, found {}: entries removed or reordered before it",
                    e.seq
                ),
            });
        }
        if e.prev_hash != prev_hash {
            out.push(Problem {
                position: pos,
                seq: e.seq,
                message: "prev_hash does not match the entry before it: an entry was removed, reordered or edited".into(),
            });
        }
        let h = entry_hash(
            e.seq,
            e.at_ms,
            &e.actor,
            &e.action,
            &e.target,
            &e.details,
            &e.prev_hash,
        );
        if h != e.hash {
            out.push(Problem {
                position: pos,
                seq: e.seq,
                message: "content does not match its hash: the entry was edited".into(),
            });
        }
        prev_hash = e.hash.clone();
    }
    let max_seq = entries.last().map_or(0, |e| e.seq);
    for h in heads {
        if let Err(m) = check_sig(h) {
            out.push(Problem {
                position: 0,
                seq: h.seq,
                message: format!("signed head at seq {}: {m}", h.seq),
            });
            continue;
        }
        match entries.iter().position(|e| e.seq == h.seq) {
            Some(i) => {
                if entries[i].hash != h.hash {
                    out.push(Problem {
                        position: i + 1,
                        seq: h.seq,
                        message: format!("differs from the chain head signed at seq {}: history rewritten", h.seq),
                    });
                }
            }
            None if h.seq > max_seq => out.push(Problem {
                position: entries.len() + 1,
                seq: h.seq,
                message: format!(
                    "log ends at seq {max_seq} but a signed head covers seq {}: entries removed from the end",
                    h.seq
                ),
            }),
            None => out.push(Problem {
                position: 0,
                seq: h.seq,
                message: format!("entry seq {} named by a signed head is missing", h.seq),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let details = format!("{{\"n\":{seq}}}");
            let hash = entry_hash(seq, 1000 + seq, "cli", "hold.add", "x", &details, &prev);
            out.push(AuditEntry {
                seq,
                at_ms: 1000 + seq,
                actor: "cli".into(),
                action: "hold.add".into(),
                target: "x".into(),
                details,
                prev_hash: prev,
                hash: hash.clone(),
            });
            prev = hash;
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(verify(&chain(5), &[], |_| Ok(())).is_empty());
    }

    #[test]
    fn edit_remove_reorder_are_named() {
        let mut c = chain(5);
        c[2].target = "y".into();
        let p = verify(&c, &[], |_| Ok(()));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].position, 3);

        let mut c = chain(5);
        c.remove(1);
        let p = verify(&c, &[], |_| Ok(()));
        assert_eq!(p[0].position, 2);

        let mut c = chain(5);
        c.swap(2, 3);
        let p = verify(&c, &[], |_| Ok(()));
        assert_eq!(p[0].position, 3);
    }

    #[test]
    fn truncation_needs_a_head() {
        let c = chain(5);
        let head = SignedHead {
            seq: 5,
            hash: c[4].hash.clone(),
            at_ms: 0,
            key_id: "k".into(),
            signature: String::new(),
        };
        let short = &c[..3];
        assert!(verify(short, &[], |_| Ok(())).is_empty());
        let p = verify(short, std::slice::from_ref(&head), |_| Ok(()));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].position, 4);
        let p = verify(&c, &[head], |_| Err("bad signature".into()));
        assert_eq!(p.len(), 1);
    }
}
