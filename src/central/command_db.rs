//! The PostgreSQL half of commands and holds (docs/central.md, *Commands to boxes* and
//! *Holds*), used when central.toml has an `[index]`:
//!
//! - the **command sequence** of each box is allocated under a row lock
//!   (`command_seq ... FOR UPDATE`, held while the document is written), so two operators
//!   issuing commands to one box at once get distinct seqs; every command written is
//!   recorded in `commands`;
//! - the **box's trusted key** (`boxes`, enrolled or first seen) verifies its
//!   acknowledgements; one that does not verify is recorded in `ack_problems` (once per
//!   object version) and alarmed (`ack_signature`);
//! - **central holds** (`central_holds`: case, reason, operator, per recording) update
//!   `recordings.held` at once; a box-placed hold (`holds`, source = box) and a central
//!   hold never clear each other.

use std::collections::BTreeSet;

use postgres::Client;

use super::CentralError;

fn db(e: postgres::Error) -> CentralError {
    CentralError::Index(e.to_string())
}

fn ix(e: super::index::IndexError) -> CentralError {
    CentralError::Index(e.to_string())
}

/// The index connection of the command tools.
pub struct CommandDb {
    pub(crate) client: Client,
}

/// A recording a central hold covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRecording {
    /// The archive reference.
    pub r: ArchivedRef,
    /// Its id, or the pattern it matched.
    pub matched_by: String,
}

impl CommandDb {
    /// Connect (and migrate) with `[index] database`.
    pub fn connect(conninfo: &str) -> Result<Self, CentralError> {
        let client = super::index::db::connect(conninfo).map_err(ix)?;
        Ok(CommandDb { client })
    }

    /// The trusted signing key of `box_id` (DER SubjectPublicKeyInfo) and its trust
    /// (`enrolled`, `first_seen`), if it has one.
    pub fn box_key(&mut self, box_id: &str) -> Result<Option<(Vec<u8>, String)>, CentralError> {
        let b = super::index::db::get_box(&mut self.client, box_id).map_err(ix)?;
        Ok(b.and_then(|b| {
            let der = b.der?;
            (b.trust == "enrolled" || b.trust == "first_seen").then_some((der, b.trust))
        }))
    }

    /// Record an acknowledgement that does not verify; true when it is new (then it is
    /// counted in the alarm `ack_signature` of the box).
    pub fn flag_ack(
        &mut self,
        box_id: &str,
        object_key: &str,
        sha256: &str,
        seq: Option<u64>,
        problem: &str,
        now: i64,
    ) -> Result<bool, CentralError> {
        let mut tx = self.client.transaction().map_err(db)?;
        let n = tx
            .execute(
                "INSERT INTO ack_problems (object_key, sha256, box_id, seq, problem, first_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &object_key,
                    &sha256,
                    &box_id,
                    &seq.map(|s| s as i64),
                    &problem,
                    &now,
                ],
            )
            .map_err(db)?;
        if n == 1 {
            super::index::db::raise_alarm(
                &mut tx,
                box_id,
                "ack_signature",
                &format!("{object_key}: acknowledgement refused: {problem}"),
                now,
            )
            .map_err(ix)?;
        }
        tx.commit().map_err(db)?;
        Ok(n == 1)
    }

    /// How many refused acknowledgements of `box_id` are recorded.
    pub fn ack_problems(&mut self, box_id: &str) -> Result<i64, CentralError> {
        Ok(self
            .client
            .query_one(
                "SELECT count(*) FROM ack_problems WHERE box_id = $1",
                &[&box_id],
            )
            .map_err(db)?
            .get(0))
    }

    /// Recordings of `box_id` in the index with a participant matching `pattern` (the
    /// rules of `central search --participant`), quarantined ones included.
    pub fn matching(
        &mut self,
        box_id: &str,
        pattern: &str,
    ) -> Result<Vec<ArchivedRef>, CentralError> {
        let f = super::index::search::Filter {
            participant: vec![pattern.to_string()],
            box_id: Some(box_id.to_string()),
            limit: 100_000,
            include_quarantined: true,
            ..Default::default()
        };
        let hits = super::index::search::search(&mut self.client, &f).map_err(ix)?;
        let ids: Vec<String> = hits.iter().map(|h| h.recording_id.clone()).collect();
        let rows = self
            .client
            .query(
                "SELECT recording_id::text, box_id, container_key FROM recordings
                 WHERE recording_id = ANY($1::text[]::uuid[]) ORDER BY started_at_ms",
                &[&ids],
            )
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ArchivedRef {
                id: r.get(0),
                box_id: r.get(1),
                container_key: r.get(2),
            })
            .collect())
    }

    /// Record the central hold of `case` on each recording and mark them held.
    pub fn place(
        &mut self,
        case: &str,
        reason: &str,
        operator: &str,
        recs: &[HeldRecording],
        now: i64,
    ) -> Result<(), CentralError> {
        let mut tx = self.client.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO central_cases (case_id, reason, operator, placed_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (case_id) DO UPDATE SET released_ms = NULL, released_by = NULL",
            &[&case, &reason, &operator, &now],
        )
        .map_err(db)?;
        for h in recs {
            tx.execute(
                "INSERT INTO central_holds (recording_id, box_id, container_key, case_id, reason,
                   operator, matched_by, placed_ms)
                 VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (recording_id, case_id) DO UPDATE SET released_ms = NULL,
                   released_by = NULL, release_reason = NULL, reason = EXCLUDED.reason,
                   operator = EXCLUDED.operator, matched_by = EXCLUDED.matched_by,
                   placed_ms = EXCLUDED.placed_ms",
                &[
                    &h.r.id,
                    &h.r.box_id,
                    &h.r.container_key,
                    &case,
                    &reason,
                    &operator,
                    &h.matched_by,
                    &now,
                ],
            )
            .map_err(db)?;
        }
        let ids: Vec<&str> = recs.iter().map(|h| h.r.id.as_str()).collect();
        tx.execute(
            "UPDATE recordings SET held = true WHERE recording_id = ANY($1::text[]::uuid[])",
            &[&ids],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// The recordings the active central hold of `case` covers.
    pub fn case_recordings(&mut self, case: &str) -> Result<Vec<ArchivedRef>, CentralError> {
        Ok(self
            .client
            .query(
                "SELECT recording_id::text, box_id, container_key FROM central_holds
                 WHERE case_id = $1 AND released_ms IS NULL ORDER BY placed_ms, recording_id",
                &[&case],
            )
            .map_err(db)?
            .iter()
            .map(|r| ArchivedRef {
                id: r.get(0),
                box_id: r.get(1),
                container_key: r.get(2),
            })
            .collect())
    }

    /// Of `ids`, the recordings still held by something other than `case`: another
    /// active central case, or a hold the box placed (its archived document says held).
    pub fn held_otherwise(
        &mut self,
        case: &str,
        ids: &[String],
    ) -> Result<BTreeSet<String>, CentralError> {
        Ok(self
            .client
            .query(
                "SELECT recording_id::text FROM central_holds
                   WHERE recording_id = ANY($1::text[]::uuid[]) AND case_id <> $2
                     AND released_ms IS NULL
                 UNION
                 SELECT recording_id::text FROM holds
                   WHERE recording_id = ANY($1::text[]::uuid[]) AND source = 'box'
                     AND released_ms IS NULL",
                &[&ids, &case],
            )
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Release the central hold of `case` (every recording), and recompute `held`: a
    /// recording stays held while another case or the box holds it. Returns how many
    /// recordings were released.
    pub fn release(
        &mut self,
        case: &str,
        operator: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, CentralError> {
        let mut tx = self.client.transaction().map_err(db)?;
        let ids: Vec<String> = tx
            .query(
                "UPDATE central_holds SET released_ms = $2, released_by = $3, release_reason = $4
                 WHERE case_id = $1 AND released_ms IS NULL RETURNING recording_id::text",
                &[&case, &now, &operator, &reason],
            )
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "UPDATE central_cases SET released_ms = $2, released_by = $3
             WHERE case_id = $1 AND released_ms IS NULL",
            &[&case, &now, &operator],
        )
        .map_err(db)?;
        tx.execute(
            "UPDATE recordings r SET held =
                EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = r.recording_id
                          AND h.released_ms IS NULL)
                OR EXISTS (SELECT 1 FROM central_holds c WHERE c.recording_id = r.recording_id
                          AND c.released_ms IS NULL)
             WHERE r.recording_id = ANY($1::text[]::uuid[])",
            &[&ids],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(ids.len() as u64)
    }
}

/// One archived recording as the plaintext index of its document envelope names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRef {
    /// Recording id.
    pub id: String,
    /// The box that recorded it.
    pub box_id: String,
    /// Object key of the container.
    pub container_key: String,
}

impl ArchivedRef {
    /// Every object key of the recording in the archive.
    pub fn object_keys(&self) -> [String; 4] {
        let k = &self.container_key;
        [
            k.clone(),
            format!("{k}.json"),
            format!("{k}.manifest.json"),
            format!("{k}.manifest.sig"),
        ]
    }
}
