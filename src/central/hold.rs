//! Central holds and erasure: `central hold add|release|list` and `central erase`. A hold
//! sets the S3 Object Lock legal hold on every version of every archive object of the
//! recordings concerned (container, document, manifest, signature) and sends a hold
//! command to each box concerned; release sends the release and clears the legal holds
//! no other active case needs; erase is refused while a case or a legal hold covers the
//! recording, else it sends the erase command and deletes every version of the objects.
//!
//! The cases are the command history itself (every box's `_commands/`, verified with the
//! command key): a case is active from its `hold_add` until its `hold_release`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::command::{ArchivedRef, CommandArchive, CommandKey};
use super::command_db::HeldRecording;
use super::CentralError;
use crate::command::{Action, Command};

/// An active case as the command history shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Case id.
    pub case: String,
    /// Reason of the first hold command.
    pub reason: String,
    /// Who placed it (first command).
    pub operator: String,
    /// When (first command), Unix ms.
    pub issued_at_ms: i64,
    /// Per box: the recording ids held and the participant patterns.
    pub boxes: BTreeMap<String, CaseBox>,
}

/// A case's holds on one box.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseBox {
    /// Recording ids.
    pub recordings: BTreeSet<String>,
    /// Participant patterns (held by the box as such).
    pub participants: BTreeSet<String>,
    /// Seqs of the hold commands.
    pub seqs: Vec<u64>,
    /// Whether every hold command of the case on this box is acknowledged `applied`.
    pub acknowledged: bool,
}

/// The active cases, from every box's verified command history.
pub fn active_cases(ar: &CommandArchive, pk: &[u8; 32]) -> Result<Vec<Case>, CentralError> {
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    // Per box in seq order; a release ends the case on that box.
    for b in ar.boxes()? {
        for ic in ar.history(&b, pk)? {
            let Ok(c) = &ic.command else { continue };
            let applied = ic
                .ack
                .as_ref()
                .is_some_and(|a| a.ack.result == crate::command::AckResult::Applied);
            match &c.action {
                Action::HoldAdd {
                    case,
                    reason,
                    recordings,
                    participant,
                } => {
                    let e = cases.entry(case.clone()).or_insert_with(|| Case {
                        case: case.clone(),
                        reason: reason.clone(),
                        operator: c.operator.clone(),
                        issued_at_ms: c.issued_at_ms,
                        boxes: BTreeMap::new(),
                    });
                    let cb = e.boxes.entry(b.clone()).or_insert_with(|| CaseBox {
                        acknowledged: true,
                        ..Default::default()
                    });
                    cb.recordings.extend(recordings.iter().cloned());
                    cb.participants.extend(participant.iter().cloned());
                    cb.seqs.push(c.seq);
                    cb.acknowledged &= applied;
                }
                Action::HoldRelease { case, .. } => {
                    if let Some(e) = cases.get_mut(case) {
                        e.boxes.remove(&b);
                        if e.boxes.is_empty() {
                            cases.remove(case);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(cases.into_values().collect())
}

/// Set or clear the legal hold on every version of `r`'s objects; returns how many.
fn legal_hold(ar: &CommandArchive, r: &ArchivedRef, on: bool) -> Result<usize, CentralError> {
    let mut n = 0;
    for (k, v, marker) in ar.versions(r)? {
        if marker {
            continue;
        }
        ar.block(ar.client.put_legal_hold_version(&k, Some(&v), on))
            .map_err(|e| {
                CentralError::Archive(format!(
                    "PutObjectLegalHold {} on {k} (version {v}): {e} (is Object Lock enabled on the bucket?)",
                    if on { "ON" } else { "OFF" }
                ))
            })?;
        n += 1;
    }
    Ok(n)
}

/// What `hold add` did.
#[derive(Debug, Clone, Serialize)]
pub struct HoldPlaced {
    /// Case id.
    pub case: String,
    /// Per box: the command's seq and the recordings.
    pub commands: Vec<(String, u64, Vec<String>)>,
    /// Object versions put under legal hold.
    pub legal_holds: usize,
    /// Recordings the participant pattern matched in the index.
    pub matched: Vec<String>,
}

/// `central hold add`: legal hold ON for every archive object of `ids` (each found in
/// the archive; grouped by box) and, for a participant pattern, of every recording of
/// `participant_box` the index finds matching it (the index is required for patterns:
/// the archive's documents are encrypted); then one hold command per box (the pattern
/// goes to the box as such: it also holds its future recordings). With the index, the
/// case is recorded per recording (`central_holds`: case, reason, operator) and the
/// recordings are `held` in the index at once.
#[allow(clippy::too_many_arguments)]
pub fn hold_add(
    ar: &CommandArchive,
    key: &dyn CommandKey,
    operator: &str,
    now_ms: i64,
    case: &str,
    reason: &str,
    ids: &[String],
    participant: Option<(&str, &str)>,
) -> Result<HoldPlaced, CentralError> {
    let mut by_box: BTreeMap<String, Vec<ArchivedRef>> = BTreeMap::new();
    let mut held: Vec<HeldRecording> = Vec::new();
    for id in ids {
        let r = ar.find_recording(id)?;
        held.push(HeldRecording {
            r: r.clone(),
            matched_by: r.id.clone(),
        });
        by_box.entry(r.box_id.clone()).or_default().push(r);
    }
    let mut matched: Vec<ArchivedRef> = Vec::new();
    if let Some((b, p)) = participant {
        by_box.entry(b.to_string()).or_default();
        let Some(mut d) = ar.index() else {
            return Err(CentralError::Config(
                "--participant needs the index ([index] in central.toml): the pattern is matched against the indexed recordings, whose archive objects get the legal hold".into(),
            ));
        };
        matched = d.matching(b, p)?;
        for r in &matched {
            if !held.iter().any(|h| h.r.id == r.id) {
                held.push(HeldRecording {
                    r: r.clone(),
                    matched_by: format!("participant {p}"),
                });
            }
        }
    }
    if by_box.is_empty() {
        return Err(CentralError::Config(
            "give recording ids or --participant with --box".into(),
        ));
    }
    let mut legal_holds = 0;
    for h in &held {
        legal_holds += legal_hold(ar, &h.r, true)?;
    }
    if let Some(mut d) = ar.index() {
        d.place(case, reason, operator, &held, now_ms)?;
    }
    let mut commands = Vec::new();
    for (b, rs) in by_box {
        let recordings: Vec<String> = rs.iter().map(|r| r.id.clone()).collect();
        let c = ar.issue(
            key,
            &b,
            operator,
            now_ms,
            Action::HoldAdd {
                case: case.into(),
                reason: reason.into(),
                recordings: recordings.clone(),
                participant: participant
                    .filter(|(pb, _)| *pb == b)
                    .map(|(_, p)| p.to_string()),
            },
        )?;
        commands.push((b, c.seq, recordings));
    }
    Ok(HoldPlaced {
        case: case.into(),
        commands,
        legal_holds,
        matched: matched.into_iter().map(|r| r.id).collect(),
    })
}

/// What `hold release` did.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReleased {
    /// Per box: the release command's seq.
    pub commands: Vec<(String, u64)>,
    /// Object versions whose legal hold was cleared.
    pub legal_holds_cleared: usize,
    /// Recordings kept under legal hold by another active case.
    pub still_held: Vec<String>,
}

/// `central hold release`: a release command to every box the case holds recordings on,
/// and legal hold OFF on the objects of its recordings that nothing else holds: no other
/// active case (command history, and the index), and no hold the box placed itself (the
/// index: its archived document says held). With the index the case's recordings come
/// from `central_holds` (participant matches included) and are released there.
pub fn hold_release(
    ar: &CommandArchive,
    key: &dyn CommandKey,
    operator: &str,
    now_ms: i64,
    case: &str,
    reason: &str,
) -> Result<HoldReleased, CentralError> {
    let pk = key.public_key();
    let cases = active_cases(ar, &pk)?;
    let this = cases.iter().find(|c| c.case == case);
    let mut recs: BTreeMap<String, ArchivedRef> = BTreeMap::new();
    if let Some(mut d) = ar.index() {
        for r in d.case_recordings(case)? {
            recs.insert(r.id.clone(), r);
        }
    }
    if this.is_none() && recs.is_empty() {
        return Err(CentralError::NotFound(format!("active case {case}")));
    }
    let mut others: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.case != case)
        .flat_map(|c| c.boxes.values().flat_map(|b| b.recordings.iter().cloned()))
        .collect();
    let mut ids: Vec<String> = recs.keys().cloned().collect();
    if let Some(t) = this {
        for cb in t.boxes.values() {
            for id in &cb.recordings {
                if !recs.contains_key(id) {
                    ids.push(id.clone());
                }
            }
        }
    }
    if let Some(mut d) = ar.index() {
        others.extend(d.held_otherwise(case, &ids)?);
    }
    // Legal holds first: if this stops half-way the case is still active and the same
    // command finishes it (clearing twice is harmless).
    let mut cleared = 0;
    let mut still_held = Vec::new();
    for id in &ids {
        if others.contains(id) {
            still_held.push(id.clone());
            continue;
        }
        let r = match recs.get(id) {
            Some(r) => r.clone(),
            None => ar.find_recording(id)?,
        };
        cleared += legal_hold(ar, &r, false)?;
    }
    if let Some(mut d) = ar.index() {
        d.release(case, operator, reason, now_ms)?;
    }
    let mut boxes: BTreeSet<String> = recs.values().map(|r| r.box_id.clone()).collect();
    if let Some(t) = this {
        boxes.extend(t.boxes.keys().cloned());
    }
    let mut commands = Vec::new();
    for b in &boxes {
        let c = ar.issue(
            key,
            b,
            operator,
            now_ms,
            Action::HoldRelease {
                case: case.into(),
                reason: reason.into(),
            },
        )?;
        commands.push((b.clone(), c.seq));
    }
    Ok(HoldReleased {
        commands,
        legal_holds_cleared: cleared,
        still_held,
    })
}

/// What `erase` did.
#[derive(Debug, Clone, Serialize)]
pub struct Erased {
    /// The box and the erase command's seq.
    pub command: (String, u64),
    /// Object versions and delete markers removed.
    pub versions_deleted: usize,
}

/// `central erase`: refused while an active case or an Object Lock legal hold covers the
/// recording; otherwise an erase command to its box, then every version of its archive
/// objects deleted.
pub fn erase(
    ar: &CommandArchive,
    key: &dyn CommandKey,
    operator: &str,
    now_ms: i64,
    id: &str,
    reason: &str,
) -> Result<Erased, CentralError> {
    let r = ar.find_recording(id)?;
    let pk = key.public_key();
    let held_by: Vec<String> = active_cases(ar, &pk)?
        .into_iter()
        .filter(|c| {
            c.boxes
                .get(&r.box_id)
                .is_some_and(|b| b.recordings.contains(&r.id))
        })
        .map(|c| c.case)
        .collect();
    let mut held_by = held_by;
    if let Some(mut d) = ar.index() {
        if d.held_otherwise("", std::slice::from_ref(&r.id))?
            .contains(&r.id)
        {
            held_by.push("held in the index (a central case or the box)".into());
        }
    }
    if !held_by.is_empty() {
        return Err(CentralError::Refused(format!(
            "recording {} is under legal hold (case {}): release it first (`central hold release`)",
            r.id,
            held_by.join(", ")
        )));
    }
    let versions = ar.versions(&r)?;
    for (k, v, marker) in &versions {
        if *marker {
            continue;
        }
        if ar.block(ar.client.get_legal_hold(k, Some(v)))? == Some(true) {
            return Err(CentralError::Refused(format!(
                "{k} (version {v}) has an Object Lock legal hold: recording {} is held",
                r.id
            )));
        }
    }
    let cmd: Command = ar.issue(
        key,
        &r.box_id,
        operator,
        now_ms,
        Action::Erase {
            recording: r.id.clone(),
            reason: reason.into(),
        },
    )?;
    // The document (`<key>.json`, how the recording is found) goes last: if this stops
    // half-way, the same command finds the recording and finishes.
    let mut versions = versions;
    let doc = format!("{}.json", r.container_key);
    versions.sort_by_key(|(k, _, _)| *k == doc);
    let mut n = 0;
    for (k, v, _) in &versions {
        ar.block(ar.client.delete_object(k, Some(v)))?;
        n += 1;
    }
    // A version written meanwhile (the box re-uploading a document) goes too.
    for (k, v, _) in ar.versions(&r)? {
        ar.block(ar.client.delete_object(&k, Some(&v)))?;
        n += 1;
    }
    Ok(Erased {
        command: (r.box_id, cmd.seq),
        versions_deleted: n,
    })
}

/// The Object Lock legal hold of every version of a recording's archive objects:
/// (object key, version id, ON). What the console shows on a case.
pub fn legal_hold_state(
    ar: &CommandArchive,
    id: &str,
) -> Result<Vec<(String, String, bool)>, CentralError> {
    let r = ar.find_recording(id)?;
    let mut out = Vec::new();
    for (k, v, marker) in ar.versions(&r)? {
        if marker {
            continue;
        }
        let on = ar
            .block(ar.client.get_legal_hold(&k, Some(&v)))
            .map_err(|e| CentralError::Archive(format!("GetObjectLegalHold {k}: {e}")))?
            .unwrap_or(false);
        out.push((k, v, on));
    }
    Ok(out)
}
