//! Commands to boxes, the headquarters half (docs/central.md, "Commands to boxes"): the
//! central command key ([`CommandKey`]: Ed25519, PEM file), writing signed command
//! documents under `_commands/<box>/<seq>.json` with the next sequence number of that
//! box, reading them back (verified with the command key) and the boxes'
//! acknowledgements under `_acks/<box>/`. The document format and the sequence rules are
//! the core's ([`crate::command`]); holds, erasure and Object Lock are [`super::hold`].
//!
//! A box's recordings are found by listing the archive and reading the plaintext index of
//! each document envelope. With an `[index]` ([`super::command_db`]) the sequence is
//! allocated under a PostgreSQL row lock, acknowledgements are verified with the box's
//! trusted key, and holds are recorded in the index; every document is written with
//! `If-None-Match: *` (refused by servers that implement conditional writes).

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};

use super::CentralError;
use crate::command::{
    acks_prefix, commands_prefix, seq_name, seq_of_key, Action, Command, SignedAck, SignedCommand,
    COMMAND_FORMAT,
};
use crate::compliance::ArchiveEnvelope;
use crate::uplink::config::UplinkConfig;
use crate::uplink::s3::S3Client;

/// The central command key: signs command documents. The box is configured with its
/// public half (`[central] command_public_key`).
pub trait CommandKey {
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Sign `msg` (Ed25519, RFC 8032).
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], CentralError>;
    /// Where the key is, for messages.
    fn describe(&self) -> String;
    /// `ed1:` + the first 16 hex digits of SHA-256 of the public key (as the box's keys).
    fn key_id(&self) -> String {
        crate::vault::signing::key_id_of(&self.public_key())
    }
}

/// A command key in a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
pub struct PemCommandKey {
    key: SigningKey,
    what: String,
}

impl PemCommandKey {
    /// Load the PEM file.
    pub fn load(path: &Path) -> Result<Self, CentralError> {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| CentralError::Key(format!("command key {}: {e}", path.display())))?,
        );
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
            CentralError::Key(format!(
                "command key {}: not an Ed25519 PKCS#8 private key: {e}",
                path.display()
            ))
        })?;
        Ok(PemCommandKey {
            key,
            what: format!("file:{}", path.display()),
        })
    }
}

impl CommandKey for PemCommandKey {
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], CentralError> {
        Ok(self.key.sign(msg).to_bytes())
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
}

pub use crate::vault::signing::ed25519_public_from_pem as public_key_from_pem;

/// A verifier for [`crate::command`] with the Ed25519 public key `pk`.
pub fn verifier(pk: &[u8; 32]) -> impl Fn(&[u8], &[u8; 64]) -> bool + '_ {
    move |msg: &[u8], sig: &[u8; 64]| crate::vault::signing::verify_raw(pk, msg, sig)
}

pub use super::command_db::ArchivedRef;

/// One command as read back from the archive.
#[derive(Debug, Clone)]
pub struct IssuedCommand {
    /// Object key.
    pub key: String,
    /// Slot (seq in the object name).
    pub slot: u64,
    /// The document, if it parses and verifies with the command key, names this box
    /// and the slot's seq; else why not.
    pub command: Result<Command, String>,
    /// The box's acknowledgement, if any, verified with the box's trusted key (only
    /// then is the command acknowledged).
    pub ack: Option<SignedAck>,
    /// An object under `_acks/<box>/<slot>.json` that is not a valid acknowledgement of
    /// this command by the box: why (forged, unsigned, altered, no trusted key).
    pub ack_problem: Option<String>,
}

/// Read-write access to the archive for commands, holds and erasure (the central
/// credentials must allow PutObject under `_commands/`, PutObjectLegalHold,
/// ListObjectVersions and DeleteObject(Version)).
pub struct CommandArchive {
    pub(crate) client: S3Client,
    pub(crate) prefix: String,
    rt: tokio::runtime::Runtime,
    /// The index, when central.toml has `[index]`.
    pub(crate) db: Option<std::cell::RefCell<super::command_db::CommandDb>>,
}

use super::archive::s3;

fn pg(e: postgres::Error) -> CentralError {
    CentralError::Index(e.to_string())
}

impl CommandArchive {
    /// Connect with the `[archive]` settings.
    pub fn open(cfg: &UplinkConfig) -> Result<Self, CentralError> {
        let (client, prefix, rt) = super::archive::connect(cfg)?;
        Ok(CommandArchive {
            client,
            prefix,
            rt,
            db: None,
        })
    }

    /// Use the index for sequence allocation, acknowledgement keys and holds.
    pub fn with_index(mut self, db: super::command_db::CommandDb) -> Self {
        self.db = Some(std::cell::RefCell::new(db));
        self
    }

    /// The index, if configured.
    pub fn index(&self) -> Option<std::cell::RefMut<'_, super::command_db::CommandDb>> {
        self.db.as_ref().map(|d| d.borrow_mut())
    }

    /// Run one S3 request.
    pub(crate) fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, crate::uplink::s3::S3Error>>,
    ) -> Result<T, CentralError> {
        self.rt.block_on(f).map_err(s3)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CentralError> {
        Ok(self.block(self.client.get_object(key))?.map(|b| b.to_vec()))
    }

    /// The index of the document envelope at `doc_key` (`<container>.json`).
    fn index_of(&self, doc_key: &str) -> Result<ArchivedRef, CentralError> {
        let bytes = self
            .get(doc_key)?
            .ok_or_else(|| CentralError::NotFound(doc_key.into()))?;
        let env = ArchiveEnvelope::parse(&bytes).map_err(|e| {
            CentralError::Tampered(format!("{doc_key}: not an archive envelope: {e}"))
        })?;
        let want = doc_key.trim_end_matches(".json");
        if env.index.container_key != want || env.index.kind != "document" {
            return Err(CentralError::Tampered(format!(
                "{doc_key}: the envelope is the {} of {}",
                env.index.kind, env.index.container_key
            )));
        }
        Ok(ArchivedRef {
            id: env.index.recording_id,
            box_id: env.index.box_id,
            container_key: env.index.container_key,
        })
    }

    /// Document keys of recordings (`….json`, not manifests, not `_` prefixes).
    fn document_keys(&self) -> Result<Vec<String>, CentralError> {
        let keys = self.block(self.client.list(&self.prefix))?;
        Ok(keys
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.ends_with(".json")
                    && !k.ends_with(".manifest.json")
                    && !k[self.prefix.len().min(k.len())..].starts_with('_')
            })
            .collect())
    }

    /// Find a recording by id (or container key) in the archive's listing.
    pub fn find_recording(&self, id: &str) -> Result<ArchivedRef, CentralError> {
        if id.contains('/') {
            return self.index_of(&format!("{}.json", id.trim_end_matches(".json")));
        }
        let want = format!("/{id}.json");
        let found: Vec<String> = self
            .document_keys()?
            .into_iter()
            .filter(|k| k.ends_with(&want) || *k == format!("{}{id}.json", self.prefix))
            .collect();
        match &found[..] {
            [] => Err(CentralError::NotFound(id.into())),
            [k] => {
                let r = self.index_of(k)?;
                if r.id != id {
                    return Err(CentralError::Tampered(format!(
                        "{k}: the envelope is for recording {}",
                        r.id
                    )));
                }
                Ok(r)
            }
            many => Err(CentralError::Archive(format!(
                "recording id {id} is under {} keys ({}): give the object key",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// Every archived recording of `box_id` (reads each document envelope's index).
    pub fn box_recordings(&self, box_id: &str) -> Result<Vec<ArchivedRef>, CentralError> {
        let mut out = Vec::new();
        for k in self.document_keys()? {
            match self.index_of(&k) {
                Ok(r) if r.box_id == box_id => out.push(r),
                Ok(_) => {}
                Err(e) => tracing::warn!(key = %k, error = %e, "skipped"),
            }
        }
        Ok(out)
    }

    /// Boxes that have commands, acks or a status document.
    pub fn boxes(&self) -> Result<Vec<String>, CentralError> {
        let mut out = std::collections::BTreeSet::new();
        for (sub, strip_json) in [("_commands/", false), ("_acks/", false), ("_status/", true)] {
            let p = format!("{}{sub}", self.prefix);
            for (k, _) in self.block(self.client.list(&p))? {
                let rest = &k[p.len()..];
                let b = if strip_json {
                    rest.strip_suffix(".json").unwrap_or(rest)
                } else {
                    rest.split('/').next().unwrap_or("")
                };
                if !b.is_empty() && !b.contains('/') {
                    out.insert(b.to_string());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The commands of `box_id`, slot order, each verified with `pk`, with its ack.
    pub fn history(&self, box_id: &str, pk: &[u8; 32]) -> Result<Vec<IssuedCommand>, CentralError> {
        let cp = commands_prefix(&self.prefix, box_id);
        let mut slots: BTreeMap<u64, String> = BTreeMap::new();
        for (k, _) in self.block(self.client.list(&cp))? {
            if let Some(s) = seq_of_key(&k) {
                slots.insert(s, k);
            }
        }
        // The box's trusted key (index) verifies its acknowledgements.
        let box_key = match self.index() {
            Some(mut d) => d.box_key(box_id)?,
            None => None,
        };
        let ap = acks_prefix(&self.prefix, box_id);
        let mut acks: BTreeMap<u64, Result<SignedAck, String>> = BTreeMap::new();
        let mut stray: Vec<(String, String, String)> = Vec::new();
        for (k, _) in self.block(self.client.list(&ap))? {
            let Some(b) = self.get(&k)? else { continue };
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b));
            let checked = SignedAck::parse(&b)
                .map_err(|e| format!("not an acknowledgement: {e}"))
                .and_then(|a| match &box_key {
                    None => Err(
                        "not verified: no trusted key for the box (configure [index] and `central enrol` it)"
                            .to_string(),
                    ),
                    Some((der, _)) => {
                        if a.verify(|m, s| crate::vault::verify_ed25519(der, m, s).is_ok()) {
                            Ok(a)
                        } else {
                            Err("signature does not verify with the box's trusted key (forged or altered)".to_string())
                        }
                    }
                })
                .and_then(|a| {
                    if a.ack.box_id != box_id || Some(a.ack.seq) != seq_of_key(&k) {
                        Err(format!(
                            "names box {} seq {}, lies at {k}",
                            a.ack.box_id, a.ack.seq
                        ))
                    } else {
                        Ok(a)
                    }
                });
            match (seq_of_key(&k), checked) {
                (Some(s), c) => {
                    if let Err(e) = &c {
                        stray.push((k.clone(), sha, e.clone()));
                    }
                    // A valid ack wins over a bad object for the same slot (none can
                    // share a key, but keep it simple).
                    if !matches!(acks.get(&s), Some(Ok(_))) {
                        acks.insert(s, c);
                    }
                }
                (None, Err(e)) => stray.push((k.clone(), sha, e)),
                (None, Ok(_)) => {}
            }
        }
        if let Some(mut d) = self.index() {
            let now = chrono::Utc::now().timestamp_millis();
            for (k, sha, e) in &stray {
                if box_key.is_none() {
                    continue; // unverifiable, not forged
                }
                if d.flag_ack(box_id, k, sha, seq_of_key(k), e, now)? {
                    tracing::error!(box_id, object = %k, problem = %e, "acknowledgement refused");
                }
            }
        }
        let mut out = Vec::new();
        for (slot, key) in slots {
            let command = match self.get(&key)? {
                None => Err("vanished".to_string()),
                Some(b) => SignedCommand::parse(&b)
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        let sig = d.signature_bytes().map_err(|e| e.to_string())?;
                        if !verifier(pk)(&d.command.canonical_bytes(), &sig) {
                            return Err("not signed by this command key".into());
                        }
                        if d.command.box_id != box_id || d.command.seq != slot {
                            return Err(format!(
                                "names box {} seq {}",
                                d.command.box_id, d.command.seq
                            ));
                        }
                        Ok(d.command)
                    }),
            };
            let (ack, ack_problem) = match (acks.get(&slot), &command) {
                (None, _) => (None, None),
                (Some(Err(e)), _) => (None, Some(e.clone())),
                (Some(Ok(a)), Ok(c))
                    if a.ack.command_sha256 == crate::command::command_sha256(c) =>
                {
                    (Some(a.clone()), None)
                }
                (Some(Ok(_)), Ok(_)) => (
                    None,
                    Some("acknowledges another document than this command".into()),
                ),
                (Some(Ok(_)), Err(_)) => (None, Some("the command itself is invalid".into())),
            };
            out.push(IssuedCommand {
                key,
                slot,
                command,
                ack,
                ack_problem,
            });
        }
        Ok(out)
    }

    /// Sign and write the next command of `box_id`: seq = 1 + the highest seq of a valid
    /// command of that box (and, with the index, of every seq it allocated). With the
    /// index the seq is allocated under the box's `command_seq` row lock, held until the
    /// document is written: two operators never get the same seq. The document is put
    /// with `If-None-Match: *` (a server that implements it refuses a second writer of
    /// the slot: then the next seq is tried); only a slot holding an invalid document
    /// (never applied by the box) is overwritten.
    pub fn issue(
        &self,
        key: &dyn CommandKey,
        box_id: &str,
        operator: &str,
        now_ms: i64,
        action: Action,
    ) -> Result<Command, CentralError> {
        let mut guard = self.index();
        let mut tx = match guard.as_mut() {
            Some(d) => {
                let mut tx = d.client.transaction().map_err(pg)?;
                tx.execute(
                    "INSERT INTO command_seq (box_id, last_seq) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                    &[&box_id],
                )
                .map_err(pg)?;
                Some(tx)
            }
            None => None,
        };
        let allocated: i64 = match tx.as_mut() {
            Some(tx) => tx
                .query_one(
                    "SELECT last_seq FROM command_seq WHERE box_id = $1 FOR UPDATE",
                    &[&box_id],
                )
                .map_err(pg)?
                .get(0),
            None => 0,
        };
        let pk = key.public_key();
        for _attempt in 0..16 {
            // Read under the lock: what another operator wrote before it is visible.
            let hist = self.history_unchecked(box_id, &pk)?;
            let last = hist
                .iter()
                .filter_map(|c| c.1.then_some(c.0))
                .max()
                .unwrap_or(0)
                .max(allocated.max(0) as u64);
            let seq = last + 1;
            let invalid_slot = hist.iter().any(|(s, valid)| *s == seq && !valid);
            let cmd = Command {
                format: COMMAND_FORMAT.into(),
                box_id: box_id.into(),
                seq,
                issued_at_ms: now_ms,
                operator: operator.into(),
                key_id: key.key_id(),
                action: action.clone(),
            };
            cmd.validate()
                .map_err(|e| CentralError::Config(format!("command: {e}")))?;
            let sig = key.sign(&cmd.canonical_bytes())?;
            let doc = SignedCommand::sign(cmd.clone(), |_| sig);
            let obj = format!(
                "{}{}",
                commands_prefix(&self.prefix, box_id),
                seq_name(cmd.seq)
            );
            let body = bytes::Bytes::from(doc.to_bytes());
            let written = if invalid_slot {
                self.block(
                    self.client
                        .put_object(&obj, body.clone(), "application/json", &[]),
                )?;
                true
            } else {
                self.block(self.client.put_object_if_absent(
                    &obj,
                    body.clone(),
                    "application/json",
                ))?
            };
            if !written {
                tracing::warn!(box_id, seq, "slot taken meanwhile (412): next seq");
                continue;
            }
            if let Some(mut tx) = tx.take() {
                tx.execute(
                    "INSERT INTO commands (box_id, seq, action, operator, issued_ms, object_key, document)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (box_id, seq) DO UPDATE SET action = EXCLUDED.action,
                       operator = EXCLUDED.operator, issued_ms = EXCLUDED.issued_ms,
                       document = EXCLUDED.document",
                    &[
                        &box_id,
                        &(seq as i64),
                        &cmd.action.name(),
                        &operator,
                        &now_ms,
                        &obj,
                        &String::from_utf8_lossy(&body).into_owned(),
                    ],
                )
                .map_err(pg)?;
                tx.execute(
                    "UPDATE command_seq SET last_seq = GREATEST(last_seq, $2) WHERE box_id = $1",
                    &[&box_id, &(seq as i64)],
                )
                .map_err(pg)?;
                tx.commit().map_err(pg)?;
            }
            tracing::info!(
                box_id,
                seq = cmd.seq,
                action = cmd.action.name(),
                "command written"
            );
            return Ok(cmd);
        }
        Err(CentralError::Archive(format!(
            "no free command slot for box {box_id} after 16 attempts (another writer?)"
        )))
    }

    /// (slot, valid) of `box_id`'s command documents, acks not read.
    fn history_unchecked(
        &self,
        box_id: &str,
        pk: &[u8; 32],
    ) -> Result<Vec<(u64, bool)>, CentralError> {
        let cp = commands_prefix(&self.prefix, box_id);
        let mut out = Vec::new();
        for (k, _) in self.block(self.client.list(&cp))? {
            let Some(slot) = seq_of_key(&k) else { continue };
            let valid = self.get(&k)?.is_some_and(|b| {
                SignedCommand::parse(&b).is_ok_and(|d| {
                    d.signature_bytes().is_ok_and(|sig| {
                        verifier(pk)(&d.command.canonical_bytes(), &sig)
                            && d.command.box_id == box_id
                            && d.command.seq == slot
                    })
                })
            });
            out.push((slot, valid));
        }
        Ok(out)
    }

    /// Every version (and delete marker) of the recording's objects: (key, version id,
    /// delete marker).
    pub fn versions(&self, r: &ArchivedRef) -> Result<Vec<(String, String, bool)>, CentralError> {
        let keys = r.object_keys();
        Ok(self
            .block(self.client.list_versions(&r.container_key))?
            .into_iter()
            .filter(|(k, _, _)| keys.contains(k))
            .collect())
    }
}
