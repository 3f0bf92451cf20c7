//! The audit log's hash chain: entry hashing and verification (pure).
//!
//! Entry *n* stores `prev_hash` = hash of entry *n − 1* (64 zeros for entry 1) and
//! `hash = SHA-256("branchrec-audit-v1" ‖ seq ‖ at ‖ actor ‖ action ‖ target ‖ details ‖
//! prev_hash)`, integers as 8-byte big-endian, strings as 4-byte big-endian length then
//! UTF-8. Editing an entry breaks its hash; removing or reordering entries breaks the
//! sequence and the `prev_hash` links; cutting entries off the end is caught by the
//! signed chain heads (a head names a `seq` and `hash` that must still be in the chain).
//!
//! The entry hashes alone are unkeyed: anyone who can write the catalogue can re-hash a
//! rewritten chain. What makes a rewrite detectable is the *signed heads* (v2):
//! each head signs `seq`, `hash`, its time, its **ordinal** (1, 2, 3, … in signing order)
//! and the value of a **monotonic counter** incremented for it (a TPM NV counter on the
//! box, a counter file in development mode). [`verify`] then requires that
//!
//! - every head's signature verifies with the box's key (rewriting needs the sealed key);
//! - the ordinals run 1..=n without a gap (no head removed from the front or middle);
//! - the counters increase and the last one equals the counter's current value (no head
//!   removed from the end; with no head left at all, a counter that moved is a failure);
//! - every entry is covered by a head, or is younger than the allowed unsigned window
//!   (`max_unsigned_ms`), so entries cannot be quietly appended and then rewritten;
//! - heads published off the box ([`check_against`]) are still present, identical, and
//!   not newer than the local chain, so a rewrite on the box is caught centrally even if
//!   the box's counter were reset.
//!
//! **Keyed entries** (catalogue schema 9): each entry also carries
//! `mac = HMAC-SHA256(K, "branchrec-audit-mac-v1" ‖ seq ‖ hash)` ([`entry_mac`]) under the
//! audit MAC key K, which is available only where the custody keys unseal. Since `hash`
//! covers `prev_hash`, an entry's MAC authenticates it and everything before it: whoever
//! rewrites an entry and re-hashes the chain without K is caught at that entry, also in
//! the window after the newest signed head that heads alone leave open. Keying starts at
//! the first entry with action [`KEYED_ACTION`] (written, with its MAC, by the first
//! process holding K after the migration); from there on every entry must carry a MAC.
//! Entries before it are *unkeyed* and covered by the heads only. [`verify_macs`].

use sha2::{Digest, Sha256};

use crate::time::UnixMs;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When (serialized as unix ms).
    pub at_ms: UnixMs,
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
    /// HMAC under the audit MAC key ([`entry_mac`]); `None` for unkeyed entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The action of the entry from which every entry carries a MAC.
pub const KEYED_ACTION: &str = "audit.keyed";

/// The MAC an entry must carry under the audit MAC key `key`, written with the entry.
pub fn entry_mac(key: &[u8; 32], seq: i64, hash: &str) -> String {
    mac_with(key, b"branchrec-audit-mac-v1", seq, hash)
}

/// The MAC of an entry written without the key and keyed later, by the next process
/// holding it that signs a head over it ([`verify_macs`] tells the two apart).
pub fn entry_mac_late(key: &[u8; 32], seq: i64, hash: &str) -> String {
    mac_with(key, b"branchrec-audit-mac-late-v1", seq, hash)
}

fn mac_with(key: &[u8; 32], domain: &[u8], seq: i64, hash: &str) -> String {
    use hmac::Mac;
    let mut m =
        <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(domain);
    m.update(&seq.to_be_bytes());
    m.update(hash.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// What [`verify_macs`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MacReport {
    /// Seq of the [`KEYED_ACTION`] entry: every entry from it on must carry a MAC.
    pub keyed_from: Option<i64>,
    /// Entries before it (unkeyed, covered by the signed heads only).
    pub unkeyed: usize,
    /// Entries whose MAC was checked and matched (late ones included).
    pub verified: usize,
    /// Of those, entries written without the key and keyed later (seq list).
    pub keyed_late: Vec<i64>,
    /// Entries without a MAC yet, newer than the last head and within the unsigned
    /// window: written without the key, keyed by the next head.
    pub pending: usize,
    /// Whether the MACs were checked (the key was available).
    pub checked: bool,
    /// The first entry whose MAC is missing or wrong (and how many more follow).
    pub problems: Vec<Problem>,
}

/// Check the entries' MACs (`entries` ordered by seq). With `key` `None` only the
/// presence of MACs from [`KEYED_ACTION`] on is checked. An entry without a MAC is
/// pending (not a problem) while it is newer than `covered_seq` (the newest signed
/// head's seq) and younger than `policy.max_unsigned`; otherwise it is a problem.
/// Reports the first entry whose MAC is missing or fails, with its position; later
/// failures are counted in the message (a rewrite re-hashed from entry *k* on breaks
/// every MAC from *k*).
pub fn verify_macs(
    entries: &[AuditEntry],
    key: Option<&[u8; 32]>,
    covered_seq: i64,
    policy: &VerifyPolicy,
) -> MacReport {
    let mut r = MacReport {
        keyed_from: entries
            .iter()
            .find(|e| e.action == KEYED_ACTION)
            .map(|e| e.seq),
        checked: key.is_some(),
        ..MacReport::default()
    };
    let mut first: Option<(usize, &AuditEntry, &'static str)> = None;
    let mut more = 0usize;
    for (i, e) in entries.iter().enumerate() {
        let keyed = r.keyed_from.is_some_and(|k| e.seq >= k);
        let fault = match (&e.mac, keyed) {
            (None, false) => {
                r.unkeyed += 1;
                None
            }
            (Some(_), false) => Some(
                "carries a MAC but comes before the start of keying (audit.keyed entry removed or moved)",
            ),
            (None, true)
                if e.seq > covered_seq
                    && policy.now.millis_since(e.at_ms)
                        <= i64::try_from(policy.max_unsigned.as_millis()).unwrap_or(i64::MAX) =>
            {
                r.pending += 1;
                None
            }
            (None, true) => Some(
                "has no MAC although the log is keyed: written without the audit key and never keyed, or its MAC removed",
            ),
            (Some(m), true) => match key {
                Some(k) if *m == entry_mac(k, e.seq, &e.hash) => {
                    r.verified += 1;
                    None
                }
                Some(k) if *m == entry_mac_late(k, e.seq, &e.hash) => {
                    r.verified += 1;
                    r.keyed_late.push(e.seq);
                    None
                }
                Some(_) => Some(
                    "MAC does not match: the entry (or one before it) was rewritten without the audit key",
                ),
                None => None,
            },
        };
        if let Some(f) = fault {
            if first.is_none() {
                first = Some((i + 1, e, f));
            } else {
                more += 1;
            }
        }
    }
    if let Some((position, e, f)) = first {
        let tail = if more > 0 {
            format!(" ({more} later entries fail too)")
        } else {
            String::new()
        };
        r.problems.push(Problem {
            position,
            seq: e.seq,
            message: format!(
                "entry seq {} ({} by {}) {f}{tail}",
                e.seq, e.action, e.actor
            ),
        });
    }
    r
}

/// The newest seq covered by a signed head.
pub fn covered_seq(heads: &[SignedHead]) -> i64 {
    heads.iter().map(|h| h.seq).max().unwrap_or(0)
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The hash an entry must carry.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    seq: i64,
    at: UnixMs,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"branchrec-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(at.as_millis().to_be_bytes());
    put_str(&mut h, actor);
    put_str(&mut h, action);
    put_str(&mut h, target);
    put_str(&mut h, details);
    put_str(&mut h, prev_hash);
    hex::encode(h.finalize())
}

/// The message a chain-head signature covers.
pub fn head_message(seq: i64, hash: &str, at: UnixMs) -> Vec<u8> {
    let mut m = b"branchrec-audit-head-v1".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&at.as_millis().to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

/// The message a v2 chain-head signature covers: also the head's ordinal and the
/// monotonic counter value it was signed under.
pub fn head_message_v2(seq: i64, hash: &str, at: UnixMs, ordinal: i64, counter: i64) -> Vec<u8> {
    let mut m = b"branchrec-audit-head-v2".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&at.as_millis().to_be_bytes());
    m.extend_from_slice(&ordinal.to_be_bytes());
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

/// A signed chain head as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedHead {
    /// Sequence number of the entry signed.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed (serialized as unix ms).
    pub at_ms: UnixMs,
    /// Signing key id.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
    /// v2: position among the v2 heads, from 1 (`None`: a v1 head).
    #[serde(default)]
    pub ordinal: Option<i64>,
    /// v2: the monotonic counter's value after the increment made for this head.
    #[serde(default)]
    pub counter: Option<i64>,
}

impl SignedHead {
    /// The message its signature covers (v1 or v2).
    pub fn message(&self) -> Vec<u8> {
        match (self.ordinal, self.counter) {
            (Some(o), Some(c)) => head_message_v2(self.seq, &self.hash, self.at_ms, o, c),
            _ => head_message(self.seq, &self.hash, self.at_ms),
        }
    }
}

/// What the monotonic counter said when the log was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterReading {
    /// Never incremented (a fresh box, or no head signed yet).
    Unset,
    /// Its current value.
    Value(i64),
    /// It could not be read (the reason): a failure, the check cannot be made.
    Unavailable(String),
}

/// How strictly [`verify`] checks coverage by signed heads.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// The monotonic counter's reading.
    pub counter: CounterReading,
    /// Now.
    pub now: UnixMs,
    /// Entries not covered by a signed head may be at most this old.
    pub max_unsigned: std::time::Duration,
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

/// Verify the chain (`entries` ordered by `seq`, as read) and the signed heads (in
/// signing order). `check_sig(head)` says whether a head's signature is valid for its
/// key; `policy` gives the counter reading and the unsigned window (see the module doc).
pub fn verify(
    entries: &[AuditEntry],
    heads: &[SignedHead],
    policy: &VerifyPolicy,
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
    check_heads(entries, heads, policy, &mut out);
    out
}

/// Position (1-based) of the first entry after `seq` (entries ordered by seq).
fn position_after(entries: &[AuditEntry], seq: i64) -> usize {
    entries
        .iter()
        .position(|e| e.seq > seq)
        .map_or(entries.len() + 1, |i| i + 1)
}

/// Ordinals, the counter and coverage (see the module doc).
fn check_heads(
    entries: &[AuditEntry],
    heads: &[SignedHead],
    policy: &VerifyPolicy,
    out: &mut Vec<Problem>,
) {
    let v2: Vec<&SignedHead> = heads.iter().filter(|h| h.ordinal.is_some()).collect();
    let mut covered_seq = 0i64;
    let mut expect_ordinal = 1i64;
    let mut last_counter: Option<i64> = None;
    for h in &v2 {
        let (o, c) = (h.ordinal.unwrap_or(0), h.counter.unwrap_or(0));
        if o != expect_ordinal {
            out.push(Problem {
                position: position_after(entries, covered_seq),
                seq: h.seq,
                message: format!(
                    "signed heads #{expect_ordinal}..#{} are missing (next head present is #{o}): heads were removed",
                    o - 1
                ),
            });
        }
        if last_counter.is_some_and(|l| c <= l) {
            out.push(Problem {
                position: 0,
                seq: h.seq,
                message: format!("signed head #{o}: counter {c} does not increase"),
            });
        }
        expect_ordinal = o + 1;
        last_counter = Some(c);
        covered_seq = covered_seq.max(h.seq);
    }
    for h in heads.iter().filter(|h| h.ordinal.is_none()) {
        covered_seq = covered_seq.max(h.seq);
    }
    match (&policy.counter, last_counter) {
        (CounterReading::Unavailable(why), _) => out.push(Problem {
            position: 0,
            seq: 0,
            message: format!("the monotonic counter cannot be read ({why}): missing heads cannot be ruled out"),
        }),
        (CounterReading::Value(n), None) => out.push(Problem {
            position: 1,
            seq: entries.first().map_or(0, |e| e.seq),
            message: format!(
                "no signed head, but the monotonic counter is at {n}: every signed head was removed"
            ),
        }),
        (CounterReading::Value(n), Some(l)) if *n != l => out.push(Problem {
            position: position_after(entries, covered_seq),
            seq: covered_seq + 1,
            message: format!(
                "the last signed head has counter {l} but the monotonic counter is at {n}: the newest signed heads were removed (history after seq {covered_seq} rewritten or cut)"
            ),
        }),
        (CounterReading::Unset, Some(l)) => out.push(Problem {
            position: 0,
            seq: 0,
            message: format!("signed heads carry counter values (last {l}) but the monotonic counter was never set: it was reset or replaced"),
        }),
        _ => {}
    }
    // Coverage: the oldest entry after the last signed seq must be recent.
    if let Some(i) = entries.iter().position(|e| e.seq > covered_seq) {
        let e = &entries[i];
        let age = policy.now.millis_since(e.at_ms);
        let max_unsigned_ms = i64::try_from(policy.max_unsigned.as_millis()).unwrap_or(i64::MAX);
        if age > max_unsigned_ms {
            out.push(Problem {
                position: i + 1,
                seq: e.seq,
                message: format!(
                    "entries from seq {} on are not covered by a signed head ({} s old, at most {} s allowed): unsigned history",
                    e.seq,
                    age / 1000,
                    max_unsigned_ms / 1000
                ),
            });
        }
    }
}

/// Compare the local heads with heads published off the box (status document, archive):
/// each published head must still be here with the same signature, and the local
/// newest head must not be older than the newest published one.
pub fn check_against(local: &[SignedHead], published: &[SignedHead]) -> Vec<Problem> {
    let mut out = Vec::new();
    for p in published {
        let found = local
            .iter()
            .find(|l| l.seq == p.seq && l.ordinal == p.ordinal && l.at_ms == p.at_ms);
        match found {
            Some(l) if l.hash == p.hash && l.signature == p.signature => {}
            Some(_) => out.push(Problem {
                position: 0,
                seq: p.seq,
                message: format!(
                    "published head at seq {} (#{}) differs from the one on the box: history rewritten",
                    p.seq,
                    p.ordinal.unwrap_or(0)
                ),
            }),
            None => out.push(Problem {
                position: 0,
                seq: p.seq,
                message: format!(
                    "published head at seq {} (#{}) is missing on the box: heads removed",
                    p.seq,
                    p.ordinal.unwrap_or(0)
                ),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lax() -> VerifyPolicy {
        VerifyPolicy {
            counter: CounterReading::Unset,
            now: UnixMs(0),
            max_unsigned: std::time::Duration::MAX,
        }
    }

    fn head(c: &[AuditEntry], seq: i64, ordinal: i64, counter: i64) -> SignedHead {
        SignedHead {
            seq,
            hash: c[seq as usize - 1].hash.clone(),
            at_ms: UnixMs(2000 + seq),
            key_id: "k".into(),
            signature: String::new(),
            ordinal: Some(ordinal),
            counter: Some(counter),
        }
    }

    fn policy(counter: i64, now_ms: i64) -> VerifyPolicy {
        VerifyPolicy {
            counter: CounterReading::Value(counter),
            now: UnixMs(now_ms),
            max_unsigned: std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn heads_removed_are_found_with_the_position() {
        let c = chain(9);
        let heads = vec![head(&c, 3, 1, 41), head(&c, 6, 2, 42), head(&c, 9, 3, 43)];
        assert!(verify(&c, &heads, &policy(43, 1010), |_| Ok(())).is_empty());
        // The newest head removed: the counter is ahead; position is the first entry
        // no longer covered.
        let p = verify(&c, &heads[..2], &policy(43, 1010), |_| Ok(()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].position, 7);
        // A middle head removed: an ordinal gap.
        let p = verify(
            &c,
            &[heads[0].clone(), heads[2].clone()],
            &policy(43, 1010),
            |_| Ok(()),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].position, 4);
        // The first head removed.
        let p = verify(&c, &heads[1..], &policy(43, 1010), |_| Ok(()));
        assert_eq!(p[0].position, 1);
        // Every head removed while the counter moved.
        let p = verify(&c, &[], &policy(43, 1010), |_| Ok(()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].position, 1);
        // The counter cannot be read: a failure, never a pass.
        let pol = VerifyPolicy {
            counter: CounterReading::Unavailable("no TPM".into()),
            ..policy(43, 1010)
        };
        assert_eq!(verify(&c, &heads, &pol, |_| Ok(())).len(), 1);
    }

    #[test]
    fn unsigned_tail_must_be_recent() {
        let c = chain(9);
        let heads = vec![head(&c, 5, 1, 7)];
        // Entries 6..9 at 1006..1009 ms: fine at 1010, not 61 s later.
        assert!(verify(&c, &heads, &policy(7, 1010), |_| Ok(())).is_empty());
        let p = verify(&c, &heads, &policy(7, 62_000), |_| Ok(()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].position, 6);
        let p = verify(&c, &[], &policy(0, 62_000), |_| Ok(()));
        assert!(p
            .iter()
            .any(|p| p.position == 1 && p.message.contains("not covered")));
    }

    #[test]
    fn published_heads_must_still_be_there() {
        let c = chain(6);
        let local = vec![head(&c, 3, 1, 1)];
        let published = vec![head(&c, 3, 1, 1), head(&c, 6, 2, 2)];
        let p = check_against(&local, &published);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("missing"));
        let mut forged = local.clone();
        forged[0].signature = "00".into();
        assert_eq!(check_against(&forged, &published[..1]).len(), 1);
        assert!(check_against(&published, &published).is_empty());
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let details = format!("{{\"n\":{seq}}}");
            let hash = entry_hash(
                seq,
                UnixMs(1000 + seq),
                "cli",
                "hold.add",
                "x",
                &details,
                &prev,
            );
            out.push(AuditEntry {
                seq,
                at_ms: UnixMs(1000 + seq),
                actor: "cli".into(),
                action: "hold.add".into(),
                target: "x".into(),
                details,
                prev_hash: prev,
                hash: hash.clone(),
                mac: None,
            });
            prev = hash;
        }
        out
    }

    fn keyed(mut c: Vec<AuditEntry>, from: usize, key: &[u8; 32]) -> Vec<AuditEntry> {
        c[from].action = KEYED_ACTION.into();
        // Re-hash from the marker on (its action changed), then MAC.
        let mut prev = if from == 0 {
            GENESIS.to_string()
        } else {
            c[from - 1].hash.clone()
        };
        for e in c.iter_mut().skip(from) {
            e.prev_hash = prev.clone();
            e.hash = entry_hash(
                e.seq,
                e.at_ms,
                &e.actor,
                &e.action,
                &e.target,
                &e.details,
                &e.prev_hash,
            );
            e.mac = Some(entry_mac(key, e.seq, &e.hash));
            prev = e.hash.clone();
        }
        c
    }

    #[test]
    fn macs_catch_a_rehashed_rewrite_at_its_position() {
        let k = [7u8; 32];
        let c = keyed(chain(8), 3, &k);
        assert!(verify(&c, &[], &lax(), |_| Ok(())).is_empty());
        let r = verify_macs(&c, Some(&k), 0, &lax());
        assert_eq!((r.keyed_from, r.unkeyed, r.verified), (Some(4), 3, 5));
        assert!(r.problems.is_empty(), "{r:?}");
        // The attacker edits entry 6 and re-hashes everything after it: the chain is
        // consistent again, the MACs are not, from position 6 on.
        let mut bad = c.clone();
        bad[5].details = "{\"n\":666}".into();
        let mut prev = bad[4].hash.clone();
        for e in bad.iter_mut().skip(5) {
            e.prev_hash = prev.clone();
            e.hash = entry_hash(
                e.seq,
                e.at_ms,
                &e.actor,
                &e.action,
                &e.target,
                &e.details,
                &e.prev_hash,
            );
            prev = e.hash.clone();
        }
        assert!(
            verify(&bad, &[], &lax(), |_| Ok(())).is_empty(),
            "the re-hash is consistent"
        );
        let r = verify_macs(&bad, Some(&k), 0, &lax());
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert_eq!((r.problems[0].position, r.problems[0].seq), (6, 6));
        assert!(r.problems[0].message.contains("2 later"), "{r:?}");
        // Without the key only missing MACs are seen.
        assert!(verify_macs(&bad, None, 0, &lax()).problems.is_empty());
        // MACs stripped from the rewritten entries: caught without the key too.
        for e in bad.iter_mut().skip(5) {
            e.mac = None;
        }
        // Within the unsigned window and after the newest head, that is what an entry
        // written without the key looks like (pending); covered by a head, or older
        // than the window, it is a problem.
        let r = verify_macs(&bad, None, 0, &lax());
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(r.pending, 3);
        let r = verify_macs(&bad, None, 8, &lax());
        assert_eq!(r.problems[0].position, 6, "{r:?}");
        let r = verify_macs(&bad, None, 0, &policy(0, 70_000));
        assert_eq!(r.problems[0].position, 6, "{r:?}");
        // Keyed late (by the next head): verified, and listed as such.
        for e in bad.iter_mut().skip(5) {
            e.mac = Some(entry_mac_late(&k, e.seq, &e.hash));
        }
        let r = verify_macs(&bad, Some(&k), 8, &lax());
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(r.keyed_late, vec![6, 7, 8]);
        // The marker removed (and the chain renumbered): MACs before any marker.
        let mut moved = c.clone();
        moved[3].action = "hold.add".into();
        let r = verify_macs(&moved, Some(&k), 0, &lax());
        assert_eq!(r.problems[0].position, 4, "{r:?}");
        // A wrong key fails at the first keyed entry.
        let r = verify_macs(&c, Some(&[8u8; 32]), 0, &lax());
        assert_eq!(r.problems[0].position, 4, "{r:?}");
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(verify(&chain(5), &[], &lax(), |_| Ok(())).is_empty());
    }

    #[test]
    fn edit_remove_reorder_are_named() {
        let mut c = chain(5);
        c[2].target = "y".into();
        let p = verify(&c, &[], &lax(), |_| Ok(()));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].position, 3);

        let mut c = chain(5);
        c.remove(1);
        let p = verify(&c, &[], &lax(), |_| Ok(()));
        assert_eq!(p[0].position, 2);

        let mut c = chain(5);
        c.swap(2, 3);
        let p = verify(&c, &[], &lax(), |_| Ok(()));
        assert_eq!(p[0].position, 3);
    }

    #[test]
    fn truncation_needs_a_head() {
        let c = chain(5);
        let head = SignedHead {
            seq: 5,
            hash: c[4].hash.clone(),
            at_ms: UnixMs(0),
            key_id: "k".into(),
            signature: String::new(),
            ordinal: None,
            counter: None,
        };
        let short = &c[..3];
        assert!(verify(short, &[], &lax(), |_| Ok(())).is_empty());
        let p = verify(short, std::slice::from_ref(&head), &lax(), |_| Ok(()));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].position, 4);
        let p = verify(&c, &[head], &lax(), |_| Err("bad signature".into()));
        assert_eq!(p.len(), 1);
    }
}
