//! Sans-IO core of the indexer: what the listed keys are, which objects make one
//! recording, whether they are all there, whether they verify, and which rows they give.
//! No PostgreSQL, no S3: the shell ([`super::ingest`]) fetches and writes.

use serde_json::Value;

use super::UnknownBoxes;
use crate::central::export::{document_signer, verify_archived};
use crate::central::{ArchivedRecording, CentralError, ComplianceKey};
use crate::lifecycle::audit::SignedHead;
use crate::uplink::s3::ListedObject;

/// The objects of one recording in a listing (`K`, `K.json`, `K.manifest.json`,
/// `K.manifest.sig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The container key `K`.
    pub key: String,
    /// `K`.
    pub container: Option<ListedObject>,
    /// `K.json`.
    pub document: Option<ListedObject>,
    /// `K.manifest.json`.
    pub manifest: Option<ListedObject>,
    /// `K.manifest.sig`.
    pub signature: Option<ListedObject>,
}

const SUFFIXES: [&str; 3] = [".manifest.json", ".manifest.sig", ".json"];

impl Group {
    /// The ETags of the four objects, comma-separated (`-` for an absent one): a change
    /// means an object was replaced and the recording is verified again.
    pub fn objects_etag(&self) -> String {
        [
            &self.container,
            &self.document,
            &self.manifest,
            &self.signature,
        ]
        .iter()
        .map(|o| o.as_ref().map_or("-", |o| o.etag.as_str()))
        .collect::<Vec<_>>()
        .join(",")
    }

    /// The last key of the group in listing order.
    pub fn last_key(&self) -> &str {
        [
            &self.signature,
            &self.manifest,
            &self.document,
            &self.container,
        ]
        .iter()
        .find_map(|o| o.as_ref().map(|o| o.key.as_str()))
        .unwrap_or(&self.key)
    }
}

/// Group a listing (in key order, as ListObjectsV2 returns it) into recordings. `K`
/// sorts before `K.json` < `K.manifest.json` < `K.manifest.sig`, and no other key falls
/// between them (ids are UUIDs), so one pass suffices.
pub fn group(objects: &[ListedObject]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for o in objects {
        let (base, slot) = match SUFFIXES.iter().find(|s| o.key.ends_with(*s)) {
            Some(s) => (&o.key[..o.key.len() - s.len()], *s),
            None => (o.key.as_str(), ""),
        };
        if out.last().map(|g| g.key.as_str()) != Some(base) {
            out.push(Group {
                key: base.to_string(),
                ..Group::default()
            });
        }
        // Cannot fail: a group was pushed just above when `out` was empty or ended with
        // another key.
        let g = out.last_mut().expect("pushed above");
        let o = Some(o.clone());
        match slot {
            "" => g.container = o,
            ".json" => g.document = o,
            ".manifest.json" => g.manifest = o,
            _ => g.signature = o,
        }
    }
    out
}

/// Whether a group can be verified now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// All four objects are there.
    Ready,
    /// Still uploading (the box sends container, document, manifest, signature in that
    /// order): try again on the next pass.
    Wait,
    /// Incomplete for longer than the grace period: quarantine (what is missing).
    Incomplete(String),
}

/// Parse an S3 LastModified (RFC 3339) to unix ms.
pub fn last_modified_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Readiness of `g` at `now_ms` with a grace period of `grace_ms`.
pub fn readiness(g: &Group, now_ms: i64, grace_ms: i64) -> Readiness {
    let missing: Vec<&str> = [
        (&g.container, "container"),
        (&g.document, "document"),
        (&g.manifest, "manifest"),
        (&g.signature, "manifest signature"),
    ]
    .iter()
    .filter(|(o, _)| o.is_none())
    .map(|(_, n)| *n)
    .collect();
    if missing.is_empty() {
        return Readiness::Ready;
    }
    let newest = [&g.container, &g.document, &g.manifest, &g.signature]
        .iter()
        .filter_map(|o| o.as_ref())
        .filter_map(|o| last_modified_ms(&o.last_modified))
        .max();
    match newest {
        Some(t) if now_ms - t < grace_ms => Readiness::Wait,
        // An unparseable LastModified: give it the grace period from now on next pass.
        None => Readiness::Wait,
        Some(_) => Readiness::Incomplete(format!("missing {}", missing.join(", "))),
    }
}

/// `site` and `box` of a key under `prefix` with a layout starting `{site}/{box}/`.
pub fn site_box_of(prefix: &str, key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(prefix)?;
    let mut it = rest.splitn(3, '/');
    let site = it.next()?;
    let bx = it.next()?;
    it.next()?;
    if site.is_empty() || bx.is_empty() || site.starts_with('_') {
        return None;
    }
    Some((site.to_string(), bx.to_string()))
}

/// The `yyyy/mm/dd` day (as `yyyymmdd`) of a key under a box prefix, if the layout puts
/// one there.
pub fn key_day(box_prefix: &str, key: &str) -> Option<u32> {
    let rest = key.strip_prefix(box_prefix)?;
    let mut it = rest.split('/');
    let y: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    Some(y * 10_000 + m * 100 + d)
}

/// Digits of a telephone number in an AoR (`tel:+44 20 7946 0001`, `sip:+4420…@host;
/// user=phone`, a bare number): the index's `number` column and what a number pattern is
/// compared with. `None` for an AoR whose user part is not a number.
pub fn number_of(aor: &str) -> Option<String> {
    let s = aor.trim();
    let lower = s.to_ascii_lowercase();
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|p| lower.strip_prefix(p).map(|_| &s[p.len()..]))
        .unwrap_or(s);
    let user = rest.split('@').next()?.split(';').next()?;
    let mut out = String::new();
    for (i, c) in user.chars().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            '+' if i == 0 => {}
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    (out.len() >= 2).then_some(out)
}

/// Trust in the key a box's manifests are checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Registered by an operator.
    Enrolled,
    /// Trusted on first use; flagged.
    FirstSeen,
}

impl Trust {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Enrolled => "enrolled",
            Trust::FirstSeen => "first_seen",
        }
    }
}

/// What the index knows about a box's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBox {
    /// The trusted key (DER SubjectPublicKeyInfo).
    pub der: Vec<u8>,
    /// How it came to be trusted.
    pub trust: Trust,
}

/// Why an object is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Changed bytes: hashes do not match, an envelope does not open, …
    Tampered,
    /// The manifest signature does not verify with the trusted key.
    Signature,
    /// Signed by another key than the box's trusted one (which verifies it).
    KeyChanged,
    /// A box that is not enrolled (policy `quarantine`), or without a signing key.
    UnknownBox,
    /// Objects missing past the grace period.
    Incomplete,
    /// The envelope's box or key is not where the object lies.
    Misplaced,
    /// The compliance key cannot open it (another key id, HSM error).
    Key,
}

impl Reason {
    /// Column value and alarm code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Tampered => "tampered",
            Reason::Signature => "signature",
            Reason::KeyChanged => "key_changed",
            Reason::UnknownBox => "unknown_box",
            Reason::Incomplete => "incomplete",
            Reason::Misplaced => "misplaced",
            Reason::Key => "compliance_key",
        }
    }
}

/// A recording that is not indexed as good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Why.
    pub reason: Reason,
    /// What failed, for the operator.
    pub message: String,
    /// For [`Reason::KeyChanged`] / [`Reason::UnknownBox`]: the key that did sign (DER).
    pub seen_key: Option<Vec<u8>>,
}

/// One `recordings` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRow {
    /// UUID.
    pub recording_id: String,
    /// Box.
    pub box_id: String,
    /// Site.
    pub site: String,
    /// Container key.
    pub container_key: String,
    /// Start, unix ms.
    pub started_at_ms: i64,
    /// End.
    pub ended_at_ms: Option<i64>,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// `inbound`/`outbound`/`internal`, when the document states it.
    pub direction: Option<String>,
    /// `siprec`/`mirror`/…
    pub source: Option<String>,
    /// Box state when archived.
    pub state: Option<String>,
    /// Codec.
    pub codec: Option<String>,
    /// `wav`/`opus`.
    pub storage_format: Option<String>,
    /// SIP Call-ID.
    pub call_id: Option<String>,
    /// SIPREC session id.
    pub session_id: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Held by the box's own holds (the document's `held_locally`; older documents:
    /// `held`, any hold).
    pub held: bool,
    /// Central cases whose holds on the box cover the recording (`hold_cases`).
    pub hold_cases: Vec<String>,
    /// Container object size.
    pub container_bytes: i64,
    /// Whole-object SHA-256.
    pub container_sha256: String,
    /// Content SHA-256 (the manifest's).
    pub content_sha256: String,
    /// Compliance key id.
    pub compliance_key_id: String,
    /// Trust of the key the manifest verified with.
    pub trust: Trust,
    /// [`Group::objects_etag`].
    pub objects_etag: String,
    /// The decrypted document as the index keeps it ([`stored_document`]).
    pub document: Value,
}

/// One participant address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRow {
    /// Participant id.
    pub participant_id: String,
    /// Name.
    pub name: Option<String>,
    /// AoR.
    pub aor: Option<String>,
    /// Digits of the number in the AoR.
    pub number: Option<String>,
    /// Joined, unix ms.
    pub joined_at_ms: Option<i64>,
    /// Left, unix ms.
    pub left_at_ms: Option<i64>,
    /// Channel.
    pub channel: Option<i32>,
}

/// Everything one verified recording writes.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRows {
    /// The recording.
    pub recording: RecordingRow,
    /// Its participants' addresses.
    pub participants: Vec<ParticipantRow>,
    /// Signed audit heads the document carries.
    pub heads: Vec<SignedHead>,
}

/// The outcome of verifying one recording.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Verified: write these rows. `first_seen_key`: the box was unknown and this key
    /// (which verified the manifest) is to be recorded as first seen.
    Index {
        /// Rows.
        rows: Box<RecordingRows>,
        /// Key to record for an unknown box.
        first_seen_key: Option<Vec<u8>>,
    },
    /// Not indexed as good.
    Quarantine(Quarantined),
}

fn q(reason: Reason, message: String) -> Outcome {
    Outcome::Quarantine(Quarantined {
        reason,
        message,
        seen_key: None,
    })
}

fn reason_of(e: &CentralError) -> Reason {
    match e {
        CentralError::Signature(_) => Reason::Signature,
        CentralError::Key(_) => Reason::Key,
        _ => Reason::Tampered,
    }
}

/// Verify a fetched recording lying under `box_id`'s prefix and plan its rows:
/// envelopes open with the compliance key and name this container and box; the
/// whole-object hash is the document's; the manifest verifies with the box's trusted
/// key (`known`; an unknown box per `policy`); content hash and recording id are the
/// signed manifest's.
pub fn verify_recording(
    rec: &ArchivedRecording,
    key: &dyn ComplianceKey,
    box_id: &str,
    site: &str,
    known: Option<&KnownBox>,
    policy: UnknownBoxes,
    objects_etag: String,
) -> Outcome {
    let opened = match rec.open(key) {
        Ok(o) => o,
        Err(e) => return q(reason_of(&e), e.to_string()),
    };
    if opened.index.box_id != box_id || opened.index.site != site {
        return q(
            Reason::Misplaced,
            format!(
                "{}: the envelope is box {} site {}, the object lies under {site}/{box_id}/",
                rec.key, opened.index.box_id, opened.index.site
            ),
        );
    }
    let doc_key = document_signer(&opened.document);
    let (der, trust, first_seen) = match known {
        Some(k) => (k.der.clone(), k.trust, None),
        None => {
            let Some(d) = doc_key.clone() else {
                return q(
                    Reason::UnknownBox,
                    format!(
                        "{}: box {box_id} is not enrolled and its document names no signing key",
                        rec.key
                    ),
                );
            };
            if policy == UnknownBoxes::Quarantine {
                // Does it verify with the key it names? Either way it waits for enrolment.
                let m = match verify_archived(rec, &opened, &d) {
                    Ok(_) => format!("{}: box {box_id} is not enrolled (central enrol)", rec.key),
                    Err(e) => format!("{}: box {box_id} is not enrolled; {e}", rec.key),
                };
                return Outcome::Quarantine(Quarantined {
                    reason: Reason::UnknownBox,
                    message: m,
                    seen_key: Some(d),
                });
            }
            (d.clone(), Trust::FirstSeen, Some(d))
        }
    };
    if let Err(e) = verify_archived(rec, &opened, &der) {
        if let (CentralError::Signature(_), Some(d)) = (&e, &doc_key) {
            if *d != der && verify_archived(rec, &opened, d).is_ok() {
                return Outcome::Quarantine(Quarantined {
                    reason: Reason::KeyChanged,
                    message: format!(
                        "{}: signed by key sha256 {}, not box {box_id}'s {} key sha256 {}",
                        rec.key,
                        sha_hex(d),
                        trust.as_str(),
                        sha_hex(&der)
                    ),
                    seen_key: Some(d.clone()),
                });
            }
        }
        return q(reason_of(&e), e.to_string());
    }
    let rows = rows_from_document(
        &opened.index,
        &opened.document,
        &rec.key,
        trust,
        objects_etag,
    );
    Outcome::Index {
        rows: Box::new(rows),
        first_seen_key: first_seen,
    }
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(str::to_string)
}
fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(|x| x.as_i64())
}

/// The rows of a verified recording: the plaintext index (authenticated) for where and
/// when, the decrypted document for the rest. Used by the indexer and by the bench.
pub fn rows_from_document(
    idx: &crate::compliance::ArchiveIndex,
    doc: &Value,
    container_key: &str,
    trust: Trust,
    objects_etag: String,
) -> RecordingRows {
    let mut participants = Vec::new();
    for p in doc
        .get("participants")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let pid = s(p, "participant_id").unwrap_or_default();
        let name = s(p, "name");
        let joined = i(p, "joined_at_ms");
        let left = i(p, "left_at_ms");
        let channel = i(p, "channel").and_then(|c| i32::try_from(c).ok());
        let mut aors: Vec<Option<String>> = vec![s(p, "aor")];
        aors.extend(
            p.get("other_aors")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(|x| Some(x.to_string()))),
        );
        let mut names = vec![name];
        names.extend(
            p.get("other_names")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(|x| Some(x.to_string()))),
        );
        let n = aors.len().max(names.len());
        for k in 0..n {
            let aor = aors.get(k).cloned().flatten();
            participants.push(ParticipantRow {
                participant_id: pid.clone(),
                name: names.get(k).cloned().flatten(),
                number: aor.as_deref().and_then(number_of),
                aor,
                joined_at_ms: joined,
                left_at_ms: left,
                channel,
            });
        }
    }
    let tags = doc
        .get("tags")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let heads = crate::service::audit::heads_from_document(doc).unwrap_or_default();
    RecordingRows {
        recording: RecordingRow {
            recording_id: idx.recording_id.clone(),
            box_id: idx.box_id.clone(),
            site: idx.site.clone(),
            container_key: container_key.to_string(),
            started_at_ms: idx.started_at_ms,
            ended_at_ms: idx.ended_at_ms,
            duration_ms: idx.duration_ms,
            direction: s(doc, "direction"),
            source: doc.get("source").map(|v| match v.as_str() {
                Some(x) => x.to_string(),
                None => v.to_string(),
            }),
            state: s(doc, "state"),
            codec: s(doc, "codec"),
            storage_format: s(doc, "storage_format"),
            call_id: s(doc, "call_id"),
            session_id: s(doc, "session_id"),
            tags,
            held: doc
                .get("held_locally")
                .or_else(|| doc.get("held"))
                .and_then(|h| h.as_bool())
                .unwrap_or(false),
            hold_cases: doc
                .get("hold_cases")
                .and_then(|h| h.as_array())
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            container_bytes: i64::try_from(idx.container_bytes).unwrap_or(i64::MAX),
            container_sha256: idx.container_sha256.clone(),
            content_sha256: idx.content_sha256.clone(),
            compliance_key_id: idx.compliance_key_id.clone(),
            trust,
            objects_etag,
            document: stored_document(doc),
        },
        participants,
        heads,
    }
}

/// Top-level members of an archive document the index does not keep: `metadata_raw`
/// (the SIPREC XML as received, base64: export reads it from the archive, where the
/// signed manifest covers it) and `audit` (the published heads, kept in
/// `box_audit_heads`).
pub const NOT_STORED: [&str; 2] = ["metadata_raw", "audit"];

/// The document as `recording_documents` keeps it: everything but [`NOT_STORED`]
/// (channels, events, stats and the rest stay, for `show`).
pub fn stored_document(doc: &Value) -> Value {
    match doc.as_object() {
        Some(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !NOT_STORED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => doc.clone(),
    }
}

/// One status document (`_status/<box>.json`) as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// Box (from the document; must match the key).
    pub box_id: String,
    /// Site.
    pub site: Option<String>,
    /// `generated_at`.
    pub generated_at: Option<String>,
    /// Counters.
    pub pending: Option<i64>,
    /// Uploaded.
    pub uploaded: Option<i64>,
    /// Failed.
    pub failed: Option<i64>,
    /// Bytes pending.
    pub pending_bytes: Option<i64>,
    /// Oldest pending age.
    pub oldest_pending_age_s: Option<i64>,
    /// Last upload.
    pub last_upload_at: Option<String>,
    /// Alarms.
    pub alarms: Value,
    /// Published heads.
    pub heads: Vec<SignedHead>,
    /// The document.
    pub document: Value,
}

/// Parse a status document found at `_status/<key_box>.json`.
pub fn parse_status(key_box: &str, body: &[u8]) -> Result<StatusRow, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let box_id = s(&v, "box_id").ok_or("no box_id")?;
    if box_id != key_box {
        return Err(format!(
            "the document is box {box_id}'s but lies at _status/{key_box}.json"
        ));
    }
    Ok(StatusRow {
        site: s(&v, "site"),
        generated_at: s(&v, "generated_at"),
        pending: i(&v, "pending"),
        uploaded: i(&v, "uploaded"),
        failed: i(&v, "failed"),
        pending_bytes: i(&v, "pending_bytes"),
        oldest_pending_age_s: i(&v, "oldest_pending_age_s"),
        last_upload_at: s(&v, "last_upload_at"),
        alarms: v.get("alarms").cloned().unwrap_or(Value::Array(vec![])),
        heads: crate::service::audit::heads_from_document(&v).unwrap_or_default(),
        box_id,
        document: v,
    })
}

/// Whether a published head verifies with the box key `der` (Ed25519 SPKI).
pub fn head_verifies(der: &[u8], h: &SignedHead) -> bool {
    let Some(raw) = der
        .len()
        .checked_sub(32)
        .and_then(|o| <[u8; 32]>::try_from(&der[o..]).ok())
    else {
        return false;
    };
    crate::vault::signing::verify(&raw, &h.message(), &h.signature).is_ok()
}

/// Problems in the v2 heads a box published over time (ordinal, hash), sorted by
/// ordinal: a gap (heads signed and never published: possibly removed) or a fork (one
/// ordinal, two hashes: the log was rewritten).
pub fn head_problems(heads: &[(i64, String)]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for w in heads.windows(2) {
        let ((a, ha), (b, hb)) = (&w[0], &w[1]);
        if a == b && ha != hb {
            out.push((
                "audit_fork",
                format!("audit head ordinal {a} published with two hashes"),
            ));
        } else if *b > a + 1 {
            out.push((
                "audit_gap",
                format!(
                    "audit heads {}..{} were never published (between {a} and {b})",
                    a + 1,
                    b - 1
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &str, t: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 1,
            etag: format!("e-{key}"),
            last_modified: t.into(),
        }
    }

    #[test]
    fn listing_groups_into_recordings_and_waits_for_missing_objects() {
        let t = "2026-12-03T10:00:00.000Z";
        let l = vec![
            o("p/lyon/b1/2026/12/03/aaa", t),
            o("p/lyon/b1/2026/12/03/aaa.json", t),
            o("p/lyon/b1/2026/12/03/aaa.manifest.json", t),
            o("p/lyon/b1/2026/12/03/aaa.manifest.sig", t),
            o("p/lyon/b1/2026/12/03/bbb", t),
            o("p/lyon/b1/2026/12/03/bbb.json", t),
            o("p/lyon/b1/2026/12/03/ccc.json", t),
        ];
        let g = group(&l);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].key, "p/lyon/b1/2026/12/03/aaa");
        assert_eq!(g[0].last_key(), "p/lyon/b1/2026/12/03/aaa.manifest.sig");
        assert!(g[0]
            .objects_etag()
            .starts_with("e-p/lyon/b1/2026/12/03/aaa,"));
        assert_eq!(g[1].objects_etag().matches('-').count() >= 2, true);
        let now = last_modified_ms(t).unwrap();
        assert_eq!(readiness(&g[0], now, 3_600_000), Readiness::Ready);
        assert_eq!(readiness(&g[1], now + 1000, 3_600_000), Readiness::Wait);
        assert_eq!(
            readiness(&g[1], now + 3_600_001, 3_600_000),
            Readiness::Incomplete("missing manifest, manifest signature".into())
        );
        assert!(
            matches!(readiness(&g[2], now + 3_600_001, 3_600_000), Readiness::Incomplete(m) if m.contains("container"))
        );
        assert_eq!(
            site_box_of("p/", "p/lyon/b1/2026/12/03/aaa"),
            Some(("lyon".into(), "b1".into()))
        );
        assert_eq!(site_box_of("p/", "p/_status/b1.json"), None);
        assert_eq!(
            key_day("p/lyon/b1/", "p/lyon/b1/2026/12/03/aaa"),
            Some(20261203)
        );
    }

    #[test]
    fn numbers_are_the_digits_of_tel_and_sip_user_parts() {
        assert_eq!(
            number_of("tel:+442079460001").as_deref(),
            Some("442079460001")
        );
        assert_eq!(
            number_of("sip:+44 (20) 7946-0001@branch.example;user=phone").as_deref(),
            Some("442079460001")
        );
        assert_eq!(number_of("SIP:0612345678@x").as_deref(), Some("0612345678"));
        assert_eq!(number_of("sip:alice@example.com"), None);
        assert_eq!(number_of("1+2"), None);
    }

    #[test]
    fn document_rows_carry_every_address_and_the_lifecycle() {
        let idx = crate::compliance::ArchiveIndex {
            kind: "document".into(),
            box_id: "b1".into(),
            site: "lyon".into(),
            recording_id: "4c8e3a5e-8d43-4f0e-9d0f-3f2b1c9e7a10".into(),
            started_at_ms: 1_700_000_000_000,
            ended_at_ms: Some(1_700_000_060_000),
            duration_ms: Some(60_000),
            container_key: "k".into(),
            container_bytes: 10,
            container_sha256: "aa".into(),
            content_sha256: "bb".into(),
            compliance_key_id: "ck".into(),
        };
        let doc = serde_json::json!({
            "call_id": "c1", "codec": "PCMU", "tags": ["vip"], "held": true,
            "direction": "inbound",
            "participants": [
                {"participant_id": "p1", "name": "Alice", "aor": "tel:+442079460001",
                 "other_aors": ["sip:alice@example.com"], "channel": 0},
                {"participant_id": "p2", "name": null, "aor": null}
            ],
            "channels": [{"channel": 0, "participant_id": "p1", "mapping_source": "label"}],
            "events": [{"at_ms": 5, "kind": "dtmf", "channel": 0, "detail": {"digit": "5"}}],
            "metadata_raw": [{"seq": 1, "raw": "PHJlY29yZGluZy8+"}],
            "audit": {"heads": []}
        });
        let r = rows_from_document(&idx, &doc, "k", Trust::Enrolled, "e".into());
        assert_eq!(r.participants.len(), 3);
        assert_eq!(r.participants[0].number.as_deref(), Some("442079460001"));
        assert_eq!(
            r.participants[1].aor.as_deref(),
            Some("sip:alice@example.com")
        );
        assert_eq!(r.participants[1].number, None);
        assert_eq!(r.recording.tags, vec!["vip".to_string()]);
        assert!(r.recording.held);
        assert_eq!(r.recording.direction.as_deref(), Some("inbound"));
        // The channel map and events stay in the stored document; the heads do not.
        assert_eq!(
            r.recording.document["channels"][0]["mapping_source"],
            "label"
        );
        assert_eq!(r.recording.document["events"][0]["kind"], "dtmf");
        assert!(r.recording.document.get("audit").is_none());
        assert!(r.recording.document.get("metadata_raw").is_none());
    }

    #[test]
    fn head_gaps_and_forks_are_found() {
        let h = |o: i64, x: &str| (o, x.to_string());
        assert!(head_problems(&[h(1, "a"), h(2, "b"), h(3, "c")]).is_empty());
        let p = head_problems(&[h(1, "a"), h(4, "d")]);
        assert_eq!(p[0].0, "audit_gap");
        let p = head_problems(&[h(1, "a"), h(1, "x")]);
        assert_eq!(p[0].0, "audit_fork");
    }

    #[test]
    fn status_documents_must_lie_under_their_box() {
        let b = br#"{"box_id":"b1","pending":2,"uploaded":5,"alarms":[],"audit_heads":[]}"#;
        let s = parse_status("b1", b).unwrap();
        assert_eq!((s.pending, s.uploaded), (Some(2), Some(5)));
        assert!(parse_status("b2", b).unwrap_err().contains("b1"));
    }
}
