//! The SQLite catalogue of recordings.
//!
//! Unlike the protocol modules this one does I/O: it owns the database file. It is
//! synchronous; the daemon drives a [`Catalog`] from one dedicated thread, and the CLI
//! opens the same file with [`Catalog::open_read_only`] for `recordings list` and export.
//!
//! The database runs in WAL mode so readers never block the writer (and the other way
//! round), with `synchronous=FULL` because a recording's row is part of the evidence:
//! once a call returns, the change survives a power cut. Both kinds of connection wait
//! up to [`BUSY_TIMEOUT`] for a lock instead of failing at once.
//!
//! The schema is versioned with `PRAGMA user_version` (see [`SCHEMA_VERSION`] and
//! `docs/catalog-schema.md`). [`Catalog::open`] creates and migrates; a database written
//! by a newer branchrec is refused rather than touched.

mod assurance;
mod key;
pub mod lifecycle;
mod schema;
mod types;
mod uploads;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::clock::Clock;
use crate::time::UnixMs;

pub use assurance::CallSeenRow;
pub use key::{
    file_kind, key_file, retain_only, rewrap, wrapped_under, CatalogAccess, CatalogKey,
    CatalogKeyError, Converted, FileKind, KEY_FILE,
};
pub use schema::{AUDIT_MAC_SCHEMA, SCHEMA_VERSION};
pub use types::{
    ChannelRow, ChannelSummary, DataMode, EventRow, Finish, LifecycleSummary, ListFilter,
    MappingSource, MetadataVersion, NewRecording, ParticipantRow, ParticipantSummary,
    RecordingDetail, RecordingRow, RecordingState, RecordingSummary, Source, StoredMetadataVersion,
};
pub use uploads::{UplinkCounts, UploadCandidate, UploadRow, UploadState};

/// How long a connection waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the catalogue.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite reported an error (I/O, lock timeout, constraint, ...).
    #[error("catalogue database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer branchrec; opening it could damage it.
    #[error(
        "catalogue {path} has schema version {found} but this branchrec only knows up to \
         version {supported}; refusing to open it (upgrade branchrec)"
    )]
    SchemaTooNew {
        /// Database file.
        path: PathBuf,
        /// `user_version` found in the file.
        found: i64,
        /// [`SCHEMA_VERSION`] of this build.
        supported: i64,
    },
    /// A read-only open found a schema that has not been migrated to this build's version.
    #[error(
        "catalogue {path} has schema version {found}, expected {expected}; start the \
         branchrec daemon once so that it migrates the database"
    )]
    SchemaTooOld {
        /// Database file.
        path: PathBuf,
        /// `user_version` found in the file.
        found: i64,
        /// [`SCHEMA_VERSION`] of this build.
        expected: i64,
    },
    /// A read-only open was asked for a file that does not exist.
    #[error("catalogue {0} does not exist")]
    Missing(PathBuf),
    /// The catalogue key cannot be had (KEK unavailable, key file missing or not ours).
    #[error(transparent)]
    Key(#[from] CatalogKeyError),
    /// The catalogue is closed: there is no catalogue key in this process (why).
    #[error("catalogue is locked: {0}")]
    Locked(String),
    /// The file does not open with this box's catalogue key.
    #[error(
        "catalogue {0} does not decrypt with this box's catalogue key (it was encrypted \
         under another key — another box's catalogue or key file? — or it is damaged)"
    )]
    WrongKey(PathBuf),
    /// The file is a plaintext catalogue of a build before encryption.
    #[error(
        "catalogue {0} is not encrypted yet: start the branchrec daemon once so that it \
         encrypts it"
    )]
    NotEncrypted(PathBuf),
    /// This build's SQLite has no SQLCipher (it would ignore the key and write plaintext).
    #[error("this build's SQLite has no SQLCipher: refusing to open the catalogue unencrypted")]
    NoCipher,
    /// A file operation of the encryption (conversion, removal of the plaintext) failed.
    #[error("catalogue file {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// No recording has this id.
    #[error("no recording with id {0}")]
    NotFound(String),
    /// A recording with this id already exists.
    #[error("a recording with id {0} already exists")]
    Duplicate(String),
    /// `finish_recording` on a recording that is no longer in state `recording`.
    #[error("recording {id} is already finished (state {state})")]
    AlreadyFinished {
        /// Recording id.
        id: String,
        /// Its current state.
        state: RecordingState,
    },
    /// The life cycle protects this recording (hold, archive, still recording).
    #[error("recording {id} is protected and was not deleted: {reason}")]
    Protected {
        /// Recording id.
        id: String,
        /// Why (hold ids, not archived, ...).
        reason: String,
    },
    /// A value given to the catalogue is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why (never contains personal data).
        reason: String,
    },
    /// A value read back from the database is not what this build wrote.
    #[error("catalogue holds an unreadable value in {field}: {reason}")]
    Corrupt {
        /// Which column.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Handle on the catalogue database. `Send`, not `Sync`: use it from one thread.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    read_only: bool,
    /// The holds table as last seen by [`Catalog::sync_upload_holds`] (count, max id,
    /// latest release): unchanged holds only need checking against new recordings.
    hold_fingerprint: Option<(i64, i64, i64)>,
    /// `now_ms` of the last [`Catalog::sync_upload_holds`] round.
    hold_round_at_ms: i64,
    /// Where the catalogue's own timestamps come from (`created_at`, `updated_at`, "now"
    /// of a list without one): the system clock unless [`Catalog::set_clock`] says.
    clock: CatalogClock,
    /// MACs the audit entries appended through this handle (schema 9): the key the
    /// process installed (`vault::audit_key::install`) when it opened the catalogue.
    audit_key: Option<Arc<crate::vault::audit_key::AuditMacKey>>,
}

/// The catalogue's clock (a newtype for `Debug`).
#[derive(Clone)]
struct CatalogClock(Arc<dyn Clock>);

impl Default for CatalogClock {
    fn default() -> Self {
        CatalogClock(Arc::new(crate::clock::SystemClock))
    }
}

impl std::fmt::Debug for CatalogClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogClock")
    }
}

impl Catalog {
    /// Open (creating if needed) the catalogue at `path` for reading and writing, and
    /// migrate it to [`SCHEMA_VERSION`].
    ///
    /// Fails with [`CatalogError::SchemaTooNew`] if the file comes from a newer branchrec.
    /// The file is encrypted under `key` (a new file is created encrypted); a plaintext
    /// one is refused ([`CatalogError::NotEncrypted`]: the daemon converts it at start,
    /// [`CatalogAccess::encrypt_if_plaintext`]).
    pub fn open(path: &Path, key: &CatalogKey) -> Result<Self, CatalogError> {
        let conn = key::keyed_connection(
            path,
            key,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        Self::open_conn(conn, path)
    }

    /// A plaintext catalogue, as builds before encryption wrote it: only for the upgrade
    /// test (an old build's layout) and the plaintext side of `examples/list_bench.rs`.
    /// The daemon and the CLI never open one.
    #[doc(hidden)]
    pub fn open_unencrypted(path: &Path) -> Result<Self, CatalogError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::open_conn(conn, path)
    }

    fn open_conn(conn: Connection, path: &Path) -> Result<Self, CatalogError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Check before changing anything in a file we may not understand.
        check_not_newer(&conn, path)?;
        // journal_mode is persistent in the file; synchronous and foreign_keys are
        // per connection. None of them may be changed inside a transaction.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Invalid {
                field: "journal_mode",
                reason: format!("SQLite refused WAL mode (got {mode:?})"),
            });
        }
        // secure_delete: deleted rows are zeroed in their pages instead of lingering in
        // free space (a deleted recording's numbers and names must not survive).
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
        )?;
        let mut cat = Catalog {
            hold_fingerprint: None,
            hold_round_at_ms: 0,
            conn,
            read_only: false,
            clock: CatalogClock::default(),
            audit_key: crate::vault::audit_key::installed(),
        };
        let before = user_version(&cat.conn)?;
        cat.migrate(path)?;
        if before != SCHEMA_VERSION {
            cat.scrub_wal();
        }
        Ok(cat)
    }

    /// After deleting personal data: copy the WAL into the database and truncate it, so the
    /// old page images (which still hold the deleted rows) leave the `-wal` file. Best
    /// effort: a reader in the middle of a transaction makes SQLite give up (`busy`); the
    /// next deletion or the next start retries. Logged.
    pub fn scrub_wal(&self) {
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        match r {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "WAL checkpoint after a deletion was blocked by a reader; retried at the next deletion"
            ),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint after a deletion failed"),
        }
    }

    /// Open an existing catalogue for reading only (CLI `list`/export). Never blocks nor
    /// is blocked by the daemon writing at the same time.
    pub fn open_read_only(path: &Path, key: &CatalogKey) -> Result<Self, CatalogError> {
        if !path.exists() {
            return Err(CatalogError::Missing(path.to_path_buf()));
        }
        let conn = key::keyed_connection(path, key, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Self::read_only_conn(conn, path)
    }

    /// A plaintext catalogue read-only (see [`Catalog::open_unencrypted`]).
    #[doc(hidden)]
    pub fn open_unencrypted_read_only(path: &Path) -> Result<Self, CatalogError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::read_only_conn(conn, path)
    }

    fn read_only_conn(conn: Connection, path: &Path) -> Result<Self, CatalogError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        let found = user_version(&conn)?;
        if found > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooOld {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(Catalog {
            hold_fingerprint: None,
            hold_round_at_ms: 0,
            conn,
            read_only: true,
            clock: CatalogClock::default(),
            audit_key: crate::vault::audit_key::installed(),
        })
    }

    /// Take timestamps from `clock` (the daemon's, shifted by
    /// `BRANCHREC_TEST_CLOCK_OFFSET_S`) instead of the system clock.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = CatalogClock(clock);
    }

    /// MAC the audit entries appended from now on with `key` (`None`: unkeyed). Opening
    /// takes the process's installed key (`vault::audit_key::install`).
    pub fn set_audit_key(&mut self, key: Option<Arc<crate::vault::audit_key::AuditMacKey>>) {
        self.audit_key = key;
    }

    /// Now (unix ms) on the catalogue's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.0.now_ms()
    }

    /// Whether this handle was opened with [`Catalog::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Apply all pending migrations in one IMMEDIATE transaction (so two processes
    /// opening a fresh file at once cannot both migrate).
    fn migrate(&mut self, path: &Path) -> Result<(), CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = user_version(&tx)?;
        if found > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let done = usize::try_from(found)
            .map_err(|_| corrupt("user_version", format!("negative schema version {found}")))?;
        for (i, m) in schema::MIGRATIONS.iter().enumerate().skip(done) {
            m(&tx)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Run several writes in one transaction (one fsync). Each write inside still succeeds
    /// or fails on its own (savepoints); the batch commits what succeeded.
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut Catalog) -> T) -> Result<T, CatalogError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let out = f(self);
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(out)
    }

    /// Insert a new recording in state `recording`.
    pub fn insert_recording(&mut self, r: &NewRecording) -> Result<(), CatalogError> {
        check_id(&r.id)?;
        if let Some(p) = &r.file_path {
            check_relative_path(p)?;
        }
        if r.sample_rate == 0 {
            return Err(invalid("sample_rate", "must be positive"));
        }
        if r.channels == 0 {
            return Err(invalid("channels", "must be positive"));
        }
        let created_at = self.now_ms();
        let tx = write_tx(&mut self.conn)?;
        if recording_state(&tx, &r.id)?.is_some() {
            return Err(CatalogError::Duplicate(r.id.clone()));
        }
        tx.execute(
            "INSERT INTO recordings (id, source, call_id, session_id, src_addr, started_at,
                 ended_at, duration_ms, codec, sample_rate, channels, state, file_path,
                 file_sha256, file_bytes, kek_id, stats_json, created_at, storage_format)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?8, ?9, 'recording', ?10,
                 NULL, NULL, ?11, NULL, ?12, ?13)",
            params![
                r.id,
                r.source.as_str(),
                r.call_id,
                r.session_id,
                r.src_addr,
                r.started_at_ms,
                r.codec,
                r.sample_rate,
                r.channels,
                r.file_path,
                r.kek_id,
                created_at,
                r.storage_format,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Apply a metadata snapshot's participants `ps` (arrived at `at_ms`, unix ms) to the
    /// recording's participant *history* (atomically): participants in `ps` are updated
    /// (keeping the earliest known `joined_at_ms` and their last known channel), those the
    /// recording had but `ps` no longer lists are kept and marked as having left at
    /// `at_ms` (unless an earlier `left_at_ms` is known). So a participant who was on the
    /// call stays findable (`list --participant`) after a transfer replaced them.
    pub fn update_participants(
        &mut self,
        id: &str,
        ps: &[ParticipantRow],
        at_ms: i64,
    ) -> Result<(), CatalogError> {
        let old = load_participants(&self.conn, id)?;
        let mut all: Vec<ParticipantRow> = Vec::with_capacity(ps.len() + old.len());
        for p in ps {
            let mut p = p.clone();
            if let Some(o) = old.iter().find(|o| o.participant_id == p.participant_id) {
                p.joined_at_ms = o.joined_at_ms.or(p.joined_at_ms);
                p.channel = p.channel.or(o.channel);
            }
            all.push(p);
        }
        for o in old {
            if !ps.iter().any(|p| p.participant_id == o.participant_id) {
                let mut o = o;
                o.left_at_ms = o.left_at_ms.or(Some(at_ms));
                all.push(o);
            }
        }
        self.set_participants(id, &all)
    }

    /// Replace the participants of a recording with `ps` (atomically).
    pub fn set_participants(
        &mut self,
        id: &str,
        ps: &[ParticipantRow],
    ) -> Result<(), CatalogError> {
        let tx = write_tx(&mut self.conn)?;
        require_recording(&tx, id)?;
        tx.execute("DELETE FROM participants WHERE recording_id = ?1", [id])?;
        tx.execute(
            "DELETE FROM participant_aliases WHERE recording_id = ?1",
            [id],
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO participants
                     (recording_id, participant_id, name, aor, number, joined_at, left_at, channel)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut alias = tx.prepare_cached(
                "INSERT INTO participant_aliases
                     (recording_id, participant_id, kind, position, value, number)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in ps {
                let number = p
                    .aor
                    .as_deref()
                    .and_then(crate::lifecycle::pattern::number_of);
                ins.execute(params![
                    id,
                    p.participant_id,
                    p.name,
                    p.aor,
                    number,
                    p.joined_at_ms,
                    p.left_at_ms,
                    p.channel
                ])
                .map_err(|e| constraint_as_invalid(e, "participant_id", "duplicate id"))?;
                for (i, n) in p.other_names.iter().enumerate() {
                    let pos = i as i64 + 1;
                    let none: Option<String> = None;
                    alias.execute(params![id, p.participant_id, "name", pos, n, none])?;
                }
                for (i, a) in p.other_aors.iter().enumerate() {
                    let pos = i as i64 + 1;
                    let number = crate::lifecycle::pattern::number_of(a);
                    alias.execute(params![id, p.participant_id, "aor", pos, a, number])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replace the channel map of a recording with `cs` (atomically).
    pub fn set_channels(&mut self, id: &str, cs: &[ChannelRow]) -> Result<(), CatalogError> {
        let tx = write_tx(&mut self.conn)?;
        require_recording(&tx, id)?;
        tx.execute("DELETE FROM channels WHERE recording_id = ?1", [id])?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO channels (recording_id, channel, mline, label, stream_id,
                     participant_id, mapping_source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for c in cs {
                ins.execute(params![
                    id,
                    c.channel,
                    c.mline,
                    c.label,
                    c.stream_id,
                    c.participant_id,
                    c.mapping_source.as_str()
                ])
                .map_err(|e| constraint_as_invalid(e, "channel", "duplicate channel index"))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Store a metadata document; returns its sequence number (1, 2, ... per recording).
    pub fn add_metadata_version(
        &mut self,
        id: &str,
        v: &MetadataVersion,
    ) -> Result<u32, CatalogError> {
        let tx = write_tx(&mut self.conn)?;
        require_recording(&tx, id)?;
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM metadata_versions WHERE recording_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let seq = u32::try_from(last)
            .ok()
            .and_then(|s| s.checked_add(1))
            .ok_or_else(|| corrupt("metadata_versions.seq", format!("{last} out of range")))?;
        tx.execute(
            "INSERT INTO metadata_versions (recording_id, seq, received_at, sip_method,
                 content_type, data_mode, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                seq,
                v.received_at_ms,
                v.sip_method,
                v.content_type,
                v.data_mode.map(DataMode::as_str),
                v.raw,
            ],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// Append events to a recording.
    pub fn add_events(&mut self, id: &str, evs: &[EventRow]) -> Result<(), CatalogError> {
        let tx = write_tx(&mut self.conn)?;
        require_recording(&tx, id)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (recording_id, at_ms, kind, channel, detail_json)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in evs {
                let at = i64::try_from(e.at_ms).map_err(|_| invalid("at_ms", "too large"))?;
                let detail = e.detail_json.as_ref().map(|d| d.to_string());
                ins.execute(params![id, at, e.kind, e.channel, detail])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every recording file path in the catalogue (relative to the data directory).
    pub fn file_paths(&self) -> Result<Vec<String>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT file_path FROM recordings WHERE file_path IS NOT NULL")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// `(id, file_path, file_sha256)` of every closed (`complete`/`interrupted`) recording
    /// that has a file.
    pub fn closed_files(&self) -> Result<Vec<(String, String, Option<String>)>, CatalogError> {
        let mut st = self.conn.prepare(
            "SELECT id, file_path, file_sha256 FROM recordings \
             WHERE state IN ('complete', 'interrupted') AND file_path IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// After a key rotation: every recording that has a file is now wrapped under `kek_id`.
    pub fn set_all_kek_ids(&mut self, kek_id: &str) -> Result<usize, CatalogError> {
        Ok(self.conn.execute(
            "UPDATE recordings SET kek_id = ?1 WHERE file_path IS NOT NULL",
            [kek_id],
        )?)
    }

    /// Record the SIPREC session id once the metadata has named it.
    pub fn set_session_id(&mut self, id: &str, session_id: &str) -> Result<(), CatalogError> {
        let n = self.conn.execute(
            "UPDATE recordings SET session_id = ?2 WHERE id = ?1",
            params![id, session_id],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Close a recording: end time, duration, final state, file hash and size, stats.
    ///
    /// Only a recording in state `recording` can be finished, and only once: the hash
    /// of a finished recording is never overwritten.
    pub fn finish_recording(&mut self, id: &str, f: &Finish) -> Result<(), CatalogError> {
        if f.state == RecordingState::Recording {
            return Err(invalid(
                "state",
                "a finished recording cannot be 'recording'",
            ));
        }
        if let Some(h) = &f.file_sha256 {
            check_sha256(h)?;
        }
        let duration =
            i64::try_from(f.duration_ms).map_err(|_| invalid("duration_ms", "too large"))?;
        let bytes = f
            .file_bytes
            .map(i64::try_from)
            .transpose()
            .map_err(|_| invalid("file_bytes", "too large"))?;
        let stats = f.stats_json.as_ref().map(|s| s.to_string());
        let tx = write_tx(&mut self.conn)?;
        match recording_state(&tx, id)? {
            None => return Err(CatalogError::NotFound(id.to_owned())),
            Some(RecordingState::Recording) => {}
            Some(state) => {
                return Err(CatalogError::AlreadyFinished {
                    id: id.to_owned(),
                    state,
                })
            }
        }
        tx.execute(
            "UPDATE recordings SET ended_at = ?2, duration_ms = ?3, state = ?4,
                 file_sha256 = ?5, file_bytes = ?6, codec = COALESCE(?7, codec),
                 stats_json = ?8,
                 expires_at = CASE WHEN retention_ms IS NULL THEN NULL ELSE ?2 + retention_ms END
             WHERE id = ?1",
            params![
                id,
                f.ended_at_ms,
                duration,
                f.state.as_str(),
                f.file_sha256,
                bytes,
                f.codec,
                stats,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Recordings matching `filter`, newest first.
    ///
    /// Every filter is served by an index (schema 10, `docs/catalog-schema.md`): with no
    /// set filter the newest rows come from `started_at` / `(state, started_at)`; a tag,
    /// participant pattern, Call-ID or the held set is first turned into a set of
    /// `(id, started_at)` from covering indexes ordered by the start time (participants,
    /// aliases and tags carry their recording's `started_at`), and only the rows of that
    /// set are looked up in `recordings` — with a `LIMIT` and no further condition on the
    /// row, only the newest `LIMIT` of them. The held set is the union of one indexed
    /// lookup per active hold (a time window reads the recordings started in `[from -
    /// longest recording, to]` and the running ones), never an OR over the table.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<RecordingSummary>, CatalogError> {
        let tx = self.conn.unchecked_transaction()?;
        let now = if filter.now_ms == 0 {
            self.now_ms()
        } else {
            filter.now_ms
        };
        let holds = lifecycle::active_holds_pub(&tx)?;
        let q = list_query(&tx, filter, &holds, now)?;
        let heads = {
            let mut st = tx.prepare_cached(&q.sql)?;
            let rows = st.query_map(
                rusqlite::params_from_iter(q.args.iter()),
                SummaryHead::from_row,
            )?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let out = heads
            .into_iter()
            .map(|h| h.complete(&tx, &holds, now))
            .collect::<Result<Vec<_>, _>>()?;
        tx.finish()?;
        Ok(out)
    }

    /// `EXPLAIN QUERY PLAN` of the query [`Catalog::list`] runs for `filter` (one line
    /// per plan step, as SQLite words it), with the same arguments bound.
    #[cfg(test)]
    pub(crate) fn list_plan(&self, filter: &ListFilter) -> Result<Vec<String>, CatalogError> {
        let tx = self.conn.unchecked_transaction()?;
        let now = if filter.now_ms == 0 {
            self.now_ms()
        } else {
            filter.now_ms
        };
        let holds = lifecycle::active_holds_pub(&tx)?;
        let q = list_query(&tx, filter, &holds, now)?;
        let plan = {
            let mut st = tx.prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))?;
            let rows = st.query_map(rusqlite::params_from_iter(q.args.iter()), |r| {
                r.get::<_, String>(3)
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.finish()?;
        Ok(plan)
    }

    /// Everything about one recording, or `None` if the id is unknown.
    pub fn get(&self, id: &str) -> Result<Option<RecordingDetail>, CatalogError> {
        let tx = self.conn.unchecked_transaction()?;
        let raw = tx
            .query_row(
                &format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = ?1"),
                [id],
                RawRecording::from_row,
            )
            .optional()?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let recording = raw.parse()?;
        let participants = load_participants(&tx, id)?;
        let channels = load_channels(&tx, id)?;
        let metadata_versions = load_metadata_versions(&tx, id)?;
        let events = load_events(&tx, id)?;
        tx.finish()?;
        Ok(Some(RecordingDetail {
            recording,
            participants,
            channels,
            metadata_versions,
            events,
        }))
    }

    /// All recordings in `state` (e.g. `"recording"` at start-up: calls that were in
    /// progress when the daemon stopped), oldest first.
    pub fn recordings_in_state(&self, state: &str) -> Result<Vec<RecordingSummary>, CatalogError> {
        let state: RecordingState = state.parse()?;
        let mut rows = self.list(&ListFilter {
            state: Some(state),
            ..ListFilter::default()
        })?;
        rows.reverse();
        Ok(rows)
    }
}

impl RecordingDetail {
    /// The same entry [`Catalog::list`] would return for this recording.
    pub fn summary(&self) -> Result<RecordingSummary, CatalogError> {
        let r = &self.recording;
        let participants = participant_summaries(&self.participants);
        let channels = channel_summaries(&self.channels, &self.participants);
        Ok(RecordingSummary {
            id: r.id.clone(),
            call_id: r.call_id.clone(),
            session_id: r.session_id.clone(),
            source: r.source,
            start: rfc3339(r.started_at_ms, "started_at")?,
            end: r.ended_at_ms.map(|t| rfc3339(t, "ended_at")).transpose()?,
            duration_ms: r.duration_ms,
            participants,
            channels,
            codec: r.codec.clone(),
            storage_format: r.storage_format.clone(),
            state: r.state,
            verdict: r.verdict.clone(),
            lifecycle: LifecycleSummary::default(),
        })
    }
}

/// The participants as a list entry shows them.
fn participant_summaries(participants: &[ParticipantRow]) -> Vec<ParticipantSummary> {
    participants
        .iter()
        .map(|p| ParticipantSummary {
            participant_id: p.participant_id.clone(),
            name: p.name.clone(),
            aor: p.aor.clone(),
            joined_at: p
                .joined_at_ms
                .and_then(|t| rfc3339(t, "participants.joined_at").ok()),
            left_at: p
                .left_at_ms
                .and_then(|t| rfc3339(t, "participants.left_at").ok()),
            channel: p.channel,
        })
        .collect()
}

/// The channels as a list entry shows them: each with its participant's name and AoR.
fn channel_summaries(
    channels: &[ChannelRow],
    participants: &[ParticipantRow],
) -> Vec<ChannelSummary> {
    channels
        .iter()
        .map(|c| {
            let p = c
                .participant_id
                .as_ref()
                .and_then(|pid| participants.iter().find(|p| &p.participant_id == pid));
            ChannelSummary {
                channel: c.channel,
                participant_id: c.participant_id.clone(),
                name: p.and_then(|p| p.name.clone()),
                aor: p.and_then(|p| p.aor.clone()),
                label: c.label.clone(),
                mapping_source: c.mapping_source,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A write transaction: a top-level IMMEDIATE transaction, or a savepoint when the caller
/// already opened one with [`Catalog::batch`] (group commit: one fsync for many writes).
enum WriteTx<'c> {
    Top(rusqlite::Transaction<'c>),
    Nested(rusqlite::Savepoint<'c>),
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Top(t) => t,
            WriteTx::Nested(s) => s,
        }
    }
}

impl WriteTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Top(t) => t.commit(),
            WriteTx::Nested(s) => s.commit(),
        }
    }
}

fn write_tx(conn: &mut Connection) -> rusqlite::Result<WriteTx<'_>> {
    if conn.is_autocommit() {
        Ok(WriteTx::Top(conn.transaction_with_behavior(
            TransactionBehavior::Immediate,
        )?))
    } else {
        Ok(WriteTx::Nested(conn.savepoint()?))
    }
}

fn invalid(field: &'static str, reason: &str) -> CatalogError {
    CatalogError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

fn corrupt(field: &'static str, reason: String) -> CatalogError {
    CatalogError::Corrupt { field, reason }
}

/// Turn a constraint violation while inserting into [`CatalogError::Invalid`].
fn constraint_as_invalid(e: rusqlite::Error, field: &'static str, reason: &str) -> CatalogError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => invalid(field, reason),
        _ => CatalogError::Sqlite(e),
    }
}

fn user_version(conn: &Connection) -> Result<i64, CatalogError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn check_not_newer(conn: &Connection, path: &Path) -> Result<(), CatalogError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(CatalogError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), CatalogError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("id", "must be 1..=128 printable ASCII characters"));
    }
    Ok(())
}

/// `file_path` must stay inside the data directory: relative, no `..`, not empty.
fn check_relative_path(p: &str) -> Result<(), CatalogError> {
    let path = Path::new(p);
    if p.is_empty() || p.contains('\0') {
        return Err(invalid("file_path", "empty or contains NUL"));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid(
            "file_path",
            "must be relative to the data directory, without '..'",
        ));
    }
    Ok(())
}

fn check_sha256(h: &str) -> Result<(), CatalogError> {
    if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid("file_sha256", "must be 64 lowercase hex digits"));
    }
    Ok(())
}

fn rfc3339(ms: i64, field: &'static str) -> Result<String, CatalogError> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or_else(|| corrupt(field, format!("timestamp {ms} out of range")))
}

fn recording_state(conn: &Connection, id: &str) -> Result<Option<RecordingState>, CatalogError> {
    let s: Option<String> = conn
        .query_row("SELECT state FROM recordings WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    s.map(|s| parse_col(&s, "recordings.state")).transpose()
}

fn require_recording(conn: &Connection, id: &str) -> Result<(), CatalogError> {
    match recording_state(conn, id)? {
        Some(_) => Ok(()),
        None => Err(CatalogError::NotFound(id.to_owned())),
    }
}

/// Parse a vocabulary column read back from the database.
fn parse_col<T: std::str::FromStr>(s: &str, field: &'static str) -> Result<T, CatalogError> {
    s.parse()
        .map_err(|_| corrupt(field, format!("unknown value {s:?}")))
}

fn to_u64(v: i64, field: &'static str) -> Result<u64, CatalogError> {
    u64::try_from(v).map_err(|_| corrupt(field, format!("negative value {v}")))
}

fn to_u32(v: i64, field: &'static str) -> Result<u32, CatalogError> {
    u32::try_from(v).map_err(|_| corrupt(field, format!("value {v} out of range")))
}

fn parse_json(
    s: Option<String>,
    field: &'static str,
) -> Result<Option<serde_json::Value>, CatalogError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| corrupt(field, e.to_string())))
        .transpose()
}

/// The SQL of one [`Catalog::list`] call and its arguments.
struct ListQuery {
    sql: String,
    args: Vec<rusqlite::types::Value>,
}

/// Numbered arguments of a query being assembled.
#[derive(Default)]
struct Args(Vec<rusqlite::types::Value>);

impl Args {
    fn push(&mut self, v: impl Into<rusqlite::types::Value>) -> String {
        self.0.push(v.into());
        format!("?{}", self.0.len())
    }
}

/// Columns of a list entry's head ([`SummaryHead::from_row`]).
const SUMMARY_COLUMNS: &str = "r.id, r.call_id, r.session_id, r.source, r.started_at, r.ended_at, \
     r.duration_ms, r.codec, r.state, r.rule, r.retention_class, r.expires_at, r.archived_at, \
     r.storage_format, r.verdict";

/// A set of recordings as `SELECT id, started_at` parts to be joined with `UNION`; each
/// part is one indexed lookup. `time` (`AND started_at …`) is appended to every part.
type IdSet = Vec<String>;

fn union_of(set: &IdSet) -> String {
    if set.is_empty() {
        "SELECT NULL AS id, NULL AS started_at WHERE 0".to_string()
    } else {
        set.join(" UNION ")
    }
}

/// Recordings with a participant (or an alias AoR) whose number or AoR matches the
/// pattern bound as `a`: the same four lookups `lifecycle::pattern::aor_matches` makes in
/// memory, each on a `(column, started_at, recording_id)` index.
fn participant_set(a: &str, time: &str) -> IdSet {
    vec![
        format!(
            "SELECT recording_id AS id, started_at FROM participants WHERE number GLOB {a}{time}"
        ),
        format!("SELECT recording_id AS id, started_at FROM participants WHERE aor GLOB {a}{time}"),
        format!(
            "SELECT recording_id AS id, started_at FROM participant_aliases \
             WHERE number GLOB {a} AND kind = 'aor'{time}"
        ),
        format!(
            "SELECT recording_id AS id, started_at FROM participant_aliases \
             WHERE value GLOB {a} AND kind = 'aor'{time}"
        ),
    ]
}

fn call_set(a: &str, time: &str) -> IdSet {
    vec![
        format!("SELECT id, started_at FROM recordings WHERE call_id = {a}{time}"),
        format!("SELECT id, started_at FROM recordings WHERE session_id = {a}{time}"),
    ]
}

/// The recordings covered by the active `holds` at `now`: exactly what
/// `lifecycle::holds::covers` decides per recording, as a union of indexed lookups.
fn held_set(
    conn: &Connection,
    holds: &[(i64, crate::lifecycle::holds::HoldTarget)],
    now: i64,
    time: &str,
    args: &mut Args,
) -> Result<IdSet, CatalogError> {
    use crate::lifecycle::holds::HoldTarget as H;
    let mut longest: Option<i64> = None;
    let mut set = IdSet::new();
    for (_, h) in holds {
        match h {
            H::Recording(id) => {
                let a = args.push(id.clone());
                set.push(format!(
                    "SELECT id, started_at FROM recordings WHERE id = {a}{time}"
                ));
            }
            H::Call(c) => {
                let a = args.push(c.clone());
                set.extend(call_set(&a, time));
            }
            H::Participant(p) => {
                let a = args.push(p.clone());
                set.extend(participant_set(&a, time));
            }
            H::Window { from, to } => {
                // Covered: started_at <= to AND COALESCE(ended_at, now) >= from. A
                // finished recording that ends at or after `from` started at or after
                // `from - longest`, longest = the largest ended_at - started_at (one step
                // in `recordings_span`).
                let longest = match longest {
                    Some(l) => l,
                    None => {
                        let l = conn
                            .query_row(
                                "SELECT MAX(ended_at - started_at) FROM recordings",
                                [],
                                |r| r.get::<_, Option<i64>>(0),
                            )?
                            .unwrap_or(0)
                            .max(0);
                        longest = Some(l);
                        l
                    }
                };
                let (from, to) = (from.as_millis(), to.as_millis());
                let lo = args.push(from.saturating_sub(longest));
                let t = args.push(to);
                let f = args.push(from);
                set.push(format!(
                    "SELECT id, started_at FROM recordings \
                     WHERE started_at >= {lo} AND started_at <= {t} AND ended_at >= {f}{time}"
                ));
                if now >= from {
                    set.push(format!(
                        "SELECT id, started_at FROM recordings \
                         WHERE ended_at IS NULL AND started_at <= {t}{time}"
                    ));
                }
            }
        }
    }
    Ok(set)
}

/// Assemble the query of [`Catalog::list`].
fn list_query(
    conn: &Connection,
    filter: &ListFilter,
    holds: &[(i64, crate::lifecycle::holds::HoldTarget)],
    now: i64,
) -> Result<ListQuery, CatalogError> {
    let mut args = Args::default();
    // Conditions on the recording row itself.
    let mut conds: Vec<String> = Vec::new();
    // The start-time range, appended to every lookup of a set.
    let mut time = String::new();
    if let Some(st) = filter.state {
        let a = args.push(st.as_str().to_string());
        conds.push(format!("r.state = {a}"));
    }
    if let Some(t) = filter.since_ms {
        let a = args.push(t);
        time.push_str(&format!(" AND started_at >= {a}"));
    }
    if let Some(t) = filter.until_ms {
        let a = args.push(t);
        time.push_str(&format!(" AND started_at < {a}"));
    }
    // Sets, most selective first: the first drives the query, the others are conditions.
    let mut sets: Vec<IdSet> = Vec::new();
    if let Some(c) = &filter.call {
        let a = args.push(c.clone());
        sets.push(call_set(&a, &time));
    }
    if let Some(t) = &filter.tag {
        let a = args.push(t.clone());
        sets.push(vec![format!(
            "SELECT recording_id AS id, started_at FROM tags WHERE tag = {a}{time}"
        )]);
    }
    if let Some(v) = &filter.verdict {
        // Index `recordings(verdict, started_at)` (schema 11).
        let a = args.push(v.clone());
        sets.push(vec![format!(
            "SELECT id, started_at FROM recordings WHERE verdict = {a}{time}"
        )]);
    }
    if let Some(p) = &filter.participant {
        crate::lifecycle::pattern::check(p).map_err(|m| CatalogError::Invalid {
            field: "participant",
            reason: m,
        })?;
        let a = args.push(p.clone());
        sets.push(participant_set(&a, &time));
    }
    match filter.held {
        Some(true) => sets.push(held_set(conn, holds, now, &time, &mut args)?),
        Some(false) => {
            let held = held_set(conn, holds, now, "", &mut args)?;
            if !held.is_empty() {
                conds.push(format!(
                    "r.id NOT IN (SELECT id FROM ({}))",
                    union_of(&held)
                ));
            }
        }
        None => {}
    }
    let order = "ORDER BY r.started_at DESC, r.id ASC";
    let sql = if sets.is_empty() {
        // Newest first along `started_at` (or `(state, started_at)`).
        let where_ = if conds.is_empty() && time.is_empty() {
            String::new()
        } else {
            let time = time.replace("started_at", "r.started_at");
            let mut all = conds.join(" AND ");
            if all.is_empty() {
                all = "1".into();
            }
            format!("WHERE {all}{time}")
        };
        let limit = args.push(filter.limit.map_or(-1, i64::from));
        format!("SELECT {SUMMARY_COLUMNS} FROM recordings r {where_} {order} LIMIT {limit}")
    } else {
        let mut sets = sets.into_iter();
        let driver = union_of(&sets.next().unwrap_or_default());
        for s in sets {
            conds.push(format!("r.id IN (SELECT id FROM ({}))", union_of(&s)));
        }
        match filter.limit {
            // Only the newest `limit` of the set are looked up.
            Some(n) if conds.is_empty() => {
                let limit = args.push(i64::from(n));
                format!(
                    "SELECT {SUMMARY_COLUMNS} FROM \
                     ({driver} ORDER BY started_at DESC, id ASC LIMIT {limit}) m \
                     CROSS JOIN recordings r ON r.id = m.id {order}"
                )
            }
            _ => {
                let where_ = if conds.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", conds.join(" AND "))
                };
                let limit = args.push(filter.limit.map_or(-1, i64::from));
                format!(
                    "SELECT {SUMMARY_COLUMNS} FROM ({driver}) m \
                     CROSS JOIN recordings r ON r.id = m.id {where_} {order} LIMIT {limit}"
                )
            }
        }
    };
    Ok(ListQuery { sql, args: args.0 })
}

/// The `recordings` columns a summary needs, as read (before validation).
struct SummaryHead {
    id: String,
    call_id: String,
    session_id: Option<String>,
    source: String,
    started_at: i64,
    ended_at: Option<i64>,
    duration_ms: Option<i64>,
    codec: String,
    state: String,
    rule: Option<String>,
    retention_class: Option<String>,
    expires_at: Option<i64>,
    archived_at: Option<i64>,
    storage_format: String,
    verdict: Option<String>,
}

impl SummaryHead {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(SummaryHead {
            id: r.get(0)?,
            call_id: r.get(1)?,
            session_id: r.get(2)?,
            source: r.get(3)?,
            started_at: r.get(4)?,
            ended_at: r.get(5)?,
            duration_ms: r.get(6)?,
            codec: r.get(7)?,
            state: r.get(8)?,
            rule: r.get(9)?,
            retention_class: r.get(10)?,
            expires_at: r.get(11)?,
            archived_at: r.get(12)?,
            storage_format: r.get(13)?,
            verdict: r.get(14)?,
        })
    }

    fn complete(
        self,
        conn: &Connection,
        holds: &[(i64, crate::lifecycle::holds::HoldTarget)],
        now_ms: i64,
    ) -> Result<RecordingSummary, CatalogError> {
        let prows = load_participants(conn, &self.id)?;
        let held = {
            let hf = crate::lifecycle::holds::HoldFacts {
                id: &self.id,
                call_id: &self.call_id,
                session_id: self.session_id.as_deref(),
                participants: prows
                    .iter()
                    .flat_map(|p| p.aor.iter().chain(p.other_aors.iter()))
                    .map(String::as_str)
                    .collect(),
                started_at: UnixMs(self.started_at),
                ended_at: self.ended_at.map(UnixMs),
            };
            holds
                .iter()
                .any(|(_, t)| crate::lifecycle::holds::covers(t, &hf, UnixMs(now_ms)))
        };
        let lifecycle = LifecycleSummary {
            rule: self.rule.clone(),
            tags: {
                let mut st = conn
                    .prepare_cached("SELECT tag FROM tags WHERE recording_id = ?1 ORDER BY tag")?;
                let r = st.query_map([&self.id], |r| r.get(0))?;
                r.collect::<Result<Vec<String>, _>>()?
            },
            retention_class: self.retention_class.clone(),
            expires: self
                .expires_at
                .map(|t| rfc3339(t, "recordings.expires_at"))
                .transpose()?,
            archived: self
                .archived_at
                .map(|t| rfc3339(t, "recordings.archived_at"))
                .transpose()?,
            held,
        };
        let channels = channel_summaries(&load_channels(conn, &self.id)?, &prows);
        let participants = participant_summaries(&prows);
        Ok(RecordingSummary {
            start: rfc3339(self.started_at, "recordings.started_at")?,
            end: self
                .ended_at
                .map(|t| rfc3339(t, "recordings.ended_at"))
                .transpose()?,
            duration_ms: self
                .duration_ms
                .map(|d| to_u64(d, "recordings.duration_ms"))
                .transpose()?,
            source: parse_col(&self.source, "recordings.source")?,
            state: parse_col(&self.state, "recordings.state")?,
            id: self.id,
            call_id: self.call_id,
            session_id: self.session_id,
            participants,
            channels,
            codec: self.codec,
            storage_format: self.storage_format,
            verdict: self.verdict,
            lifecycle,
        })
    }
}

/// The columns [`RawRecording::from_row`] reads, in its order.
pub(super) const RECORDING_COLUMNS: &str = "id, source, call_id, session_id, src_addr, \
     started_at, ended_at, duration_ms, codec, sample_rate, channels, state, file_path, \
     file_sha256, file_bytes, kek_id, stats_json, created_at, storage_format, verdict, \
     assurance_json";

/// A full `recordings` row as read (before validation).
struct RawRecording {
    id: String,
    source: String,
    call_id: String,
    session_id: Option<String>,
    src_addr: String,
    started_at: i64,
    ended_at: Option<i64>,
    duration_ms: Option<i64>,
    codec: String,
    sample_rate: i64,
    channels: i64,
    state: String,
    file_path: Option<String>,
    file_sha256: Option<String>,
    file_bytes: Option<i64>,
    kek_id: Option<String>,
    stats_json: Option<String>,
    created_at: i64,
    storage_format: String,
    verdict: Option<String>,
    assurance_json: Option<String>,
}

impl RawRecording {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRecording {
            id: r.get(0)?,
            source: r.get(1)?,
            call_id: r.get(2)?,
            session_id: r.get(3)?,
            src_addr: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            duration_ms: r.get(7)?,
            codec: r.get(8)?,
            sample_rate: r.get(9)?,
            channels: r.get(10)?,
            state: r.get(11)?,
            file_path: r.get(12)?,
            file_sha256: r.get(13)?,
            file_bytes: r.get(14)?,
            kek_id: r.get(15)?,
            stats_json: r.get(16)?,
            created_at: r.get(17)?,
            storage_format: r.get(18)?,
            verdict: r.get(19)?,
            assurance_json: r.get(20)?,
        })
    }

    fn parse(self) -> Result<RecordingRow, CatalogError> {
        Ok(RecordingRow {
            source: parse_col(&self.source, "recordings.source")?,
            state: parse_col(&self.state, "recordings.state")?,
            duration_ms: self
                .duration_ms
                .map(|d| to_u64(d, "recordings.duration_ms"))
                .transpose()?,
            sample_rate: to_u32(self.sample_rate, "recordings.sample_rate")?,
            channels: u16::try_from(self.channels).map_err(|_| {
                corrupt(
                    "recordings.channels",
                    format!("value {} out of range", self.channels),
                )
            })?,
            file_bytes: self
                .file_bytes
                .map(|b| to_u64(b, "recordings.file_bytes"))
                .transpose()?,
            stats_json: parse_json(self.stats_json, "recordings.stats_json")?,
            assurance_json: parse_json(self.assurance_json, "recordings.assurance_json")?,
            verdict: self.verdict,
            id: self.id,
            call_id: self.call_id,
            session_id: self.session_id,
            src_addr: self.src_addr,
            started_at_ms: self.started_at,
            ended_at_ms: self.ended_at,
            codec: self.codec,
            file_path: self.file_path,
            file_sha256: self.file_sha256,
            kek_id: self.kek_id,
            storage_format: self.storage_format,
            created_at_ms: self.created_at,
        })
    }
}

fn load_participants(conn: &Connection, id: &str) -> Result<Vec<ParticipantRow>, CatalogError> {
    let mut st = conn.prepare_cached(
        "SELECT participant_id, name, aor, joined_at, left_at, channel FROM participants
         WHERE recording_id = ?1 ORDER BY participant_id",
    )?;
    let rows = st.query_map([id], |r| {
        Ok(ParticipantRow {
            participant_id: r.get(0)?,
            name: r.get(1)?,
            aor: r.get(2)?,
            other_names: Vec::new(),
            other_aors: Vec::new(),
            joined_at_ms: r.get(3)?,
            left_at_ms: r.get(4)?,
            channel: r.get(5)?,
        })
    })?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    let mut st = conn.prepare_cached(
        "SELECT participant_id, kind, value FROM participant_aliases
         WHERE recording_id = ?1 ORDER BY participant_id, kind, position",
    )?;
    let aliases = st.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for a in aliases {
        let (pid, kind, value) = a?;
        if let Some(p) = out.iter_mut().find(|p| p.participant_id == pid) {
            match kind.as_str() {
                "name" => p.other_names.push(value),
                _ => p.other_aors.push(value),
            }
        }
    }
    Ok(out)
}

fn load_channels(conn: &Connection, id: &str) -> Result<Vec<ChannelRow>, CatalogError> {
    let mut st = conn.prepare_cached(
        "SELECT channel, mline, label, stream_id, participant_id, mapping_source
         FROM channels WHERE recording_id = ?1 ORDER BY channel",
    )?;
    let rows = st.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (channel, mline, label, stream_id, participant_id, ms) = row?;
        out.push(ChannelRow {
            channel: to_u32(channel, "channels.channel")?,
            mline: mline.map(|m| to_u32(m, "channels.mline")).transpose()?,
            label,
            stream_id,
            participant_id,
            mapping_source: parse_col(&ms, "channels.mapping_source")?,
        });
    }
    Ok(out)
}

fn load_metadata_versions(
    conn: &Connection,
    id: &str,
) -> Result<Vec<StoredMetadataVersion>, CatalogError> {
    let mut st = conn.prepare_cached(
        "SELECT seq, received_at, sip_method, content_type, data_mode, raw
         FROM metadata_versions WHERE recording_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Vec<u8>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, received_at_ms, sip_method, content_type, data_mode, raw) = row?;
        out.push(StoredMetadataVersion {
            seq: to_u32(seq, "metadata_versions.seq")?,
            version: MetadataVersion {
                received_at_ms,
                sip_method,
                content_type,
                data_mode: data_mode
                    .map(|d| parse_col(&d, "metadata_versions.data_mode"))
                    .transpose()?,
                raw,
            },
        });
    }
    Ok(out)
}

fn load_events(conn: &Connection, id: &str) -> Result<Vec<EventRow>, CatalogError> {
    let mut st = conn.prepare_cached(
        "SELECT at_ms, kind, channel, detail_json FROM events
         WHERE recording_id = ?1 ORDER BY at_ms, rowid",
    )?;
    let rows = st.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (at, kind, channel, detail) = row?;
        out.push(EventRow {
            at_ms: to_u64(at, "events.at_ms")?,
            kind,
            channel: channel.map(|c| to_u32(c, "events.channel")).transpose()?,
            detail_json: parse_json(detail, "events.detail_json")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
