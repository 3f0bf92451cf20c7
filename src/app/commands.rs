//! Commands from headquarters, the box half (docs/central.md, "Commands to boxes"). The
//! uplink polls `_commands/<own box>/` every `[central] poll_interval_s`; each document is
//! checked by the core's sequence state machine ([`crate::command::SequenceState`]):
//! signed by the configured command key, for this box, exactly the next sequence number.
//! Anything else (replayed, reordered, forged, for another box, malformed) is refused,
//! counted (status document, `/metrics`) and audited once per object version. A valid
//! command runs through the same service functions as the CLI (`hold add|release`,
//! `recordings delete`, with the two-person rules), audited with the central operator's
//! identity marked `central:<operator>`, and is acknowledged under `_acks/<box>/<seq>.json`
//! signed by the box's manifest key.
//!
//! State (`<data_dir>/central-commands.json`, written atomically): the last applied seq,
//! the counters, the local hold ids of each case, an acknowledgement not yet written,
//! and the refused objects already counted.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::lifecycle::DeleteMode;
use crate::catalog::{Catalog, CatalogError};
use crate::command::{
    acks_prefix, command_sha256, commands_prefix, seq_name, seq_of_key, Ack, AckResult, Action,
    Command, CommandCounters, Refusal, SequenceState, SignedAck, ACK_FORMAT,
};
use crate::config::Config;
use crate::lifecycle::holds::HoldTarget;
use crate::uplink::s3::S3Client;

/// The state file under the data directory.
pub const STATE_FILE: &str = "central-commands.json";
/// Most command documents fetched per poll.
const MAX_PER_POLL: usize = 32;
/// Refused objects remembered (so each is counted once).
const SEEN: usize = 512;

/// Errors of the command poller (all end the poll; the next one retries).
#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    /// The archive.
    #[error("archive: {0}")]
    Archive(#[from] crate::uplink::s3::S3Error),
    /// The state file.
    #[error("state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The catalogue.
    #[error("catalogue: {0}")]
    Catalog(String),
    /// No signing key to acknowledge with.
    #[error(
        "the box's signing key is not loaded: commands wait (acknowledgements must be signed)"
    )]
    NoSigner,
}

/// The persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandState {
    /// Position in the sequence.
    pub sequence: SequenceState,
    /// Counters.
    pub counters: CommandCounters,
    /// Case id → local hold ids placed for it.
    pub cases: BTreeMap<String, Vec<i64>>,
    /// An acknowledgement to write (the command was applied; the PutObject has not
    /// succeeded yet): (object key, document).
    pub pending_ack: Option<(String, String)>,
    /// `<object key> <sha256 of its bytes>` of refused documents already counted.
    pub seen: VecDeque<String>,
}

impl CommandState {
    /// Load the state of `data_dir` (fresh if absent).
    pub fn load(data_dir: &Path) -> Result<Self, CommandsError> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CommandsError::State {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CommandsError::State {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Write it atomically (fsync'd).
    pub fn save(&self, data_dir: &Path) -> Result<(), CommandsError> {
        let path = data_dir.join(STATE_FILE);
        let b = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::vault::custody::write_atomic(&path, &b).map_err(|e| CommandsError::State {
            path,
            message: e.to_string(),
        })
    }
}

/// The poller, owned by the uplink loop.
pub struct Commands {
    cfg: Config,
    pk: [u8; 32],
    state: CommandState,
    db: Arc<Mutex<Catalog>>,
    /// Now (Unix ms) of the current poll, on the daemon's clock.
    now: i64,
}

impl Commands {
    /// The poller of `cfg`, if `[central] command_public_key` is set.
    pub fn open(cfg: &Config, db: Arc<Mutex<Catalog>>) -> Result<Option<Self>, CommandsError> {
        let pk = match cfg.central.load_public_key() {
            Ok(Some(pk)) => pk,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(CommandsError::State {
                    path: cfg.central.command_public_key.clone().unwrap_or_default(),
                    message: e,
                })
            }
        };
        let state = CommandState::load(&cfg.storage.data_dir)?;
        Ok(Some(Commands {
            cfg: cfg.clone(),
            pk,
            state,
            db,
            now: 0,
        }))
    }

    /// The counters (for the status document and `/metrics`).
    pub fn counters(&self) -> &CommandCounters {
        &self.state.counters
    }

    fn save(&self) -> Result<(), CommandsError> {
        self.state.save(&self.cfg.storage.data_dir)
    }

    /// One poll at `now_ms`: write a pending ack, then look at the slots after the last
    /// applied one. `signer`: the box's signing key (acks must be signed: without it
    /// nothing is executed).
    pub async fn poll(
        &mut self,
        client: &S3Client,
        signer: Option<Arc<crate::vault::HeadSigner>>,
        now_ms: i64,
    ) -> Result<(), CommandsError> {
        self.now = now_ms;
        let signer = signer.ok_or(CommandsError::NoSigner)?;
        if let Some((k, body)) = self.state.pending_ack.clone() {
            client
                .put_object(&k, Bytes::from(body), "application/json", &[])
                .await?;
            self.state.pending_ack = None;
            self.save()?;
        }
        let ucfg = self.cfg.uplink.clone();
        let box_id = ucfg.box_id.clone();
        let mut slots: Vec<(u64, String)> = client
            .list(&commands_prefix(&ucfg.prefix, &box_id))
            .await?
            .into_iter()
            .filter_map(|(k, _)| seq_of_key(&k).map(|s| (s, k)))
            .filter(|(s, _)| *s > self.state.sequence.last_applied)
            .collect();
        slots.sort();
        for (slot, key) in slots.into_iter().take(MAX_PER_POLL) {
            let Some(body) = client.get_object(&key).await? else {
                continue;
            };
            let tag = format!("{key} {}", hex::encode(Sha256::digest(&body)));
            let pk = self.pk;
            match self.state.sequence.check(&box_id, slot, &body, |m, s| {
                crate::vault::signing::verify_raw(&pk, m, s)
            }) {
                Ok(cmd) => {
                    let (result, detail) = self.execute(&cmd, &signer).await?;
                    let ack = SignedAck::sign(
                        Ack {
                            format: ACK_FORMAT.into(),
                            box_id: box_id.clone(),
                            seq: cmd.seq,
                            command_sha256: command_sha256(&cmd),
                            action: cmd.action.name().into(),
                            result,
                            detail: detail.clone(),
                            acked_at_ms: self.shared_now(),
                            key_id: signer.key.key_id(),
                        },
                        |m| signer.key.sign(m),
                    );
                    let ack_key = format!(
                        "{}{}",
                        acks_prefix(&ucfg.prefix, &box_id),
                        seq_name(cmd.seq)
                    );
                    // Applied is durable before the ack is sent: never executed twice.
                    self.state.sequence.advance(cmd.seq);
                    self.state.counters.last_applied = cmd.seq;
                    self.state.counters.applied += 1;
                    if result == AckResult::Refused {
                        self.state.counters.refused_by_box += 1;
                    }
                    self.state.pending_ack = Some((
                        ack_key.clone(),
                        String::from_utf8_lossy(&ack.to_bytes()).into_owned(),
                    ));
                    self.save()?;
                    tracing::info!(
                        seq = cmd.seq, action = cmd.action.name(), operator = %cmd.operator,
                        result = result.as_str(), %detail, "central command executed"
                    );
                    client
                        .put_object(
                            &ack_key,
                            Bytes::from(ack.to_bytes()),
                            "application/json",
                            &[],
                        )
                        .await?;
                    self.state.pending_ack = None;
                    self.save()?;
                }
                Err(r) => {
                    if self.state.seen.contains(&tag) {
                        continue;
                    }
                    tracing::warn!(object = %key, refusal = %r, "central command refused");
                    self.state.counters.refuse(&r);
                    self.state.seen.push_back(tag);
                    while self.state.seen.len() > SEEN {
                        self.state.seen.pop_front();
                    }
                    self.refusal_audit(&key, &r, &signer).await?;
                    self.save()?;
                }
            }
        }
        Ok(())
    }

    fn shared_now(&self) -> i64 {
        self.now
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<T, CommandsError> + Send + 'static,
    ) -> Result<T, CommandsError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| CommandsError::Catalog(format!("catalogue task: {e}")))?
    }

    async fn refusal_audit(
        &self,
        key: &str,
        r: &Refusal,
        signer: &Arc<crate::vault::HeadSigner>,
    ) -> Result<(), CommandsError> {
        let now = self.shared_now();
        let cfg = self.cfg.clone();
        let (key, r, signer) = (key.to_string(), r.clone(), signer.clone());
        self.db(move |c| {
            c.audit(
                now,
                "central",
                "central.command_refused",
                &key,
                serde_json::json!({ "refusal": r, "message": r.to_string() }),
            )
            .map_err(|e| CommandsError::Catalog(e.to_string()))?;
            crate::service::audit::sign_head_with(c, &cfg, now, Some(&signer));
            Ok(())
        })
        .await
    }

    /// Run `cmd` through the service layer. `Err` only for catalogue trouble (the poll
    /// stops and retries); refusals by the box's rules are `Ok(Refused)`.
    async fn execute(
        &mut self,
        cmd: &Command,
        signer: &Arc<crate::vault::HeadSigner>,
    ) -> Result<(AckResult, String), CommandsError> {
        let now = self.shared_now();
        let cfg = self.cfg.clone();
        let actor = format!("central:{}", cmd.operator);
        let c2 = cmd.clone();
        let signer = signer.clone();
        let case_holds = match &cmd.action {
            Action::HoldRelease { case, .. } => self.state.cases.get(case).cloned(),
            _ => None,
        };
        let (result, detail, placed) = self
            .db(move |cat| {
                let r = run(cat, &cfg, &c2, &actor, now, &signer, case_holds);
                let (result, detail, placed) = match r {
                    Ok(x) => x,
                    Err(e) => (AckResult::Refused, format!("{e:#}"), Vec::new()),
                };
                cat.audit(
                    now,
                    &actor,
                    "central.command",
                    &format!("{}#{}", c2.box_id, c2.seq),
                    serde_json::json!({
                        "seq": c2.seq, "action": c2.action.name(), "result": result.as_str(),
                        "detail": detail, "key_id": c2.key_id, "issued_at_ms": c2.issued_at_ms,
                        "command_sha256": command_sha256(&c2),
                    }),
                )
                .map_err(|e| CommandsError::Catalog(e.to_string()))?;
                crate::service::audit::sign_head_with(cat, &cfg, now, Some(&signer));
                Ok((result, detail, placed))
            })
            .await?;
        match &cmd.action {
            Action::HoldAdd { case, .. } => {
                self.state
                    .cases
                    .entry(case.clone())
                    .or_default()
                    .extend(placed);
            }
            Action::HoldRelease { case, .. } if result == AckResult::Applied => {
                self.state.cases.remove(case);
            }
            _ => {}
        }
        Ok((result, detail))
    }
}

/// The command through the service layer: (result, detail, hold ids placed).
fn run(
    cat: &mut Catalog,
    cfg: &Config,
    cmd: &Command,
    actor: &str,
    now: i64,
    signer: &crate::vault::HeadSigner,
    case_holds: Option<Vec<i64>>,
) -> anyhow::Result<(AckResult, String, Vec<i64>)> {
    use crate::service::audit::TwoPerson;
    match &cmd.action {
        Action::HoldAdd {
            case,
            reason,
            recordings,
            participant,
        } => {
            let why = format!(
                "central case {case}: {reason} (command {}#{})",
                cmd.box_id, cmd.seq
            );
            let mut targets: Vec<HoldTarget> = recordings
                .iter()
                .map(|r| HoldTarget::Recording(r.clone()))
                .collect();
            if let Some(p) = participant {
                targets.push(HoldTarget::Participant(p.clone()));
            }
            let mut ids = Vec::new();
            let mut covered = 0;
            for t in &targets {
                let p =
                    crate::service::holds::place_hold(cat, cfg, t, &why, actor, now, Some(signer))?;
                ids.push(p.id);
                covered += p.recordings;
            }
            let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            Ok((
                AckResult::Applied,
                format!(
                    "holds {} placed ({covered} recording(s) covered)",
                    list.join(",")
                ),
                ids,
            ))
        }
        Action::HoldRelease { case, reason } => {
            let Some(ids) = case_holds.filter(|v| !v.is_empty()) else {
                return Ok((
                    AckResult::Refused,
                    format!("no hold of case {case} on this box"),
                    Vec::new(),
                ));
            };
            let active: Vec<i64> = cat.holds(false, now)?.iter().map(|h| h.id).collect();
            let mut released = Vec::new();
            let mut requested = Vec::new();
            for id in ids.iter().filter(|i| active.contains(i)) {
                match crate::service::holds::release_hold(cat, cfg, *id, actor, reason, now)? {
                    TwoPerson::Requested { seq, .. } => {
                        requested.push(format!("{id} (audit seq {seq})"))
                    }
                    _ => released.push(id.to_string()),
                }
            }
            if !requested.is_empty() {
                return Ok((
                    AckResult::Requested,
                    format!(
                        "release of hold(s) {} requested (two-person rule: a second, different central operator's release carries it out){}",
                        requested.join(", "),
                        if released.is_empty() { String::new() } else { format!("; released {}", released.join(",")) }
                    ),
                    Vec::new(),
                ));
            }
            Ok((
                AckResult::Applied,
                format!("holds {} released", released.join(",")),
                Vec::new(),
            ))
        }
        Action::Erase { recording, reason } => {
            if let TwoPerson::Requested { seq, .. } = crate::service::audit::two_person(
                cat,
                cfg,
                cfg.audit.two_person_delete,
                "recording.delete",
                recording,
                actor,
                reason,
                now,
            )? {
                return Ok((
                    AckResult::Requested,
                    format!("erase requested (audit seq {seq}; two-person rule)"),
                    Vec::new(),
                ));
            }
            match crate::service::retention::delete(
                cat,
                cfg,
                recording,
                DeleteMode::Manual,
                Some(reason),
                actor,
                now,
            ) {
                Ok(t) => Ok((
                    AckResult::Applied,
                    format!(
                        "deleted: data key shredded, file removed, tombstone kept (audit seq {})",
                        t.audit_seq
                    ),
                    Vec::new(),
                )),
                Err(e) => {
                    let msg = match &e {
                        CatalogError::NotFound(_) => {
                            format!("recording {recording} is not on this box")
                        }
                        other => other.to_string(),
                    };
                    cat.audit(
                        now,
                        actor,
                        "recording.delete_refused",
                        recording,
                        serde_json::json!({ "reason": reason, "error": msg }),
                    )?;
                    Ok((AckResult::Refused, msg, Vec::new()))
                }
            }
        }
        Action::RotateComplianceKey {
            key_id,
            public_key_pem,
        } => {
            // Only a box that records with a compliance key rotates it (one without would
            // start wrapping with no key configured: that is a configuration change).
            let Some(old) = cfg.compliance()? else {
                return Ok((
                    AckResult::Refused,
                    "no [keys] compliance_public_key on this box: configure one first".into(),
                    Vec::new(),
                ));
            };
            let replaces = cfg.keys.compliance_key_id.clone().unwrap_or_default();
            let rot = crate::vault::compliance::Rotation {
                replaces,
                key_id: key_id.clone(),
                public_key_pem: public_key_pem.clone(),
            };
            let r = match rot.recipient() {
                Ok(r) => r,
                Err(e) => return Ok((AckResult::Refused, e.to_string(), Vec::new())),
            };
            let f = cfg
                .custody()
                .keys_dir
                .join(crate::vault::compliance::ROTATED_FILE);
            crate::vault::custody::write_atomic(&f, &serde_json::to_vec_pretty(&rot)?)?;
            crate::vault::compliance::set_current(r);
            cat.audit(
                now,
                actor,
                "keys.compliance_rotate",
                key_id,
                serde_json::json!({ "previous": old.key_id, "key_id": key_id }),
            )?;
            Ok((
                AckResult::Applied,
                format!(
                    "new recordings and archive documents are encrypted to compliance key {key_id} (was {})",
                    old.key_id
                ),
                Vec::new(),
            ))
        }
    }
}
