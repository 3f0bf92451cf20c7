//! Schema migrations, applied in order; `PRAGMA user_version` holds the number applied.
//!
//! Rules for adding one: append a function to [`MIGRATIONS`], never edit or reorder an
//! existing one (databases in the field have already run it), and document the change in
//! `docs/catalog-schema.md`.

use rusqlite::Transaction;

/// One schema step: takes the database from version `n` to `n + 1`.
pub(super) type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// All migrations; entry `i` brings the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[Migration] = &[
    v1_initial,
    v2_lifecycle,
    uplink_uploads,
    storage_format,
    participant_aliases,
    participant_history,
    audit_heads_v2,
    tombstones_without_personal_data,
    audit_mac,
    list_indexes,
    upload_doc_held,
    assurance,
];

/// The schema version that added the audit entries' MACs ([`audit_mac`]).
pub const AUDIT_MAC_SCHEMA: i64 = 9;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: recordings, participants, channels, metadata_versions, events.
fn v1_initial(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
CREATE TABLE recordings (
    id            TEXT    PRIMARY KEY NOT NULL,
    source        TEXT    NOT NULL CHECK (source IN ('siprec', 'mirror')),
    call_id       TEXT    NOT NULL,
    session_id    TEXT,
    src_addr      TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    duration_ms   INTEGER CHECK (duration_ms IS NULL OR duration_ms >= 0),
    codec         TEXT    NOT NULL,
    sample_rate   INTEGER NOT NULL CHECK (sample_rate > 0),
    channels      INTEGER NOT NULL CHECK (channels > 0),
    state         TEXT    NOT NULL CHECK (state IN
                    ('recording', 'complete', 'interrupted', 'damaged', 'codec_unsupported')),
    file_path     TEXT,
    file_sha256   TEXT,
    file_bytes    INTEGER CHECK (file_bytes IS NULL OR file_bytes >= 0),
    kek_id        TEXT,
    stats_json    TEXT,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX recordings_started_at ON recordings (started_at);
CREATE INDEX recordings_call_id    ON recordings (call_id);
CREATE INDEX recordings_session_id ON recordings (session_id);
CREATE INDEX recordings_state      ON recordings (state);

CREATE TABLE participants (
    recording_id   TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    name           TEXT,
    aor            TEXT,
    PRIMARY KEY (recording_id, participant_id)
) STRICT;

CREATE INDEX participants_aor ON participants (aor);

CREATE TABLE channels (
    recording_id   TEXT    NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    channel        INTEGER NOT NULL CHECK (channel >= 0),
    mline          INTEGER CHECK (mline IS NULL OR mline >= 0),
    label          TEXT,
    stream_id      TEXT,
    participant_id TEXT,
    mapping_source TEXT    NOT NULL CHECK (mapping_source IN ('metadata', 'mline_order')),
    PRIMARY KEY (recording_id, channel)
) STRICT;

CREATE TABLE metadata_versions (
    recording_id TEXT    NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    received_at  INTEGER NOT NULL,
    sip_method   TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    data_mode    TEXT    CHECK (data_mode IS NULL OR data_mode IN ('complete', 'partial')),
    raw          BLOB    NOT NULL,
    PRIMARY KEY (recording_id, seq)
) STRICT;

CREATE TABLE events (
    recording_id TEXT    NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    at_ms        INTEGER NOT NULL CHECK (at_ms >= 0),
    kind         TEXT    NOT NULL,
    channel      INTEGER CHECK (channel IS NULL OR channel >= 0),
    detail_json  TEXT
) STRICT;

CREATE INDEX events_recording ON events (recording_id, at_ms);
"#,
    )
}

/// Version 2: the legal life cycle — rule outcome, retention and archive state on
/// `recordings`; `participants.number`; `tags`, `holds`, `tombstones`, `audit_log`,
/// `audit_heads`.
fn v2_lifecycle(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE recordings ADD COLUMN rule            TEXT;
ALTER TABLE recordings ADD COLUMN direction       TEXT;
ALTER TABLE recordings ADD COLUMN retention_class TEXT;
ALTER TABLE recordings ADD COLUMN retention_ms    INTEGER;
ALTER TABLE recordings ADD COLUMN expires_at      INTEGER;
ALTER TABLE recordings ADD COLUMN min_duration_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recordings ADD COLUMN archived_at     INTEGER;

CREATE INDEX recordings_expires_at ON recordings (expires_at);
CREATE INDEX recordings_state_started ON recordings (state, started_at);

ALTER TABLE participants ADD COLUMN number TEXT;
CREATE INDEX participants_number ON participants (number);
CREATE INDEX participants_recording_aor ON participants (recording_id, aor);

CREATE TABLE tags (
    recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    tag          TEXT NOT NULL,
    PRIMARY KEY (recording_id, tag)
) STRICT;
CREATE INDEX tags_tag ON tags (tag, recording_id);

CREATE TABLE holds (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('recording', 'call', 'participant', 'window')),
    value          TEXT,
    from_at        INTEGER,
    to_at          INTEGER,
    reason         TEXT    NOT NULL,
    operator       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    released_at    INTEGER,
    released_by    TEXT,
    release_reason TEXT,
    CHECK ((kind = 'window') = (from_at IS NOT NULL AND to_at IS NOT NULL)),
    CHECK ((kind = 'window') = (value IS NULL))
) STRICT;

CREATE TABLE tombstones (
    recording_id    TEXT    PRIMARY KEY NOT NULL,
    call_id         TEXT    NOT NULL,
    session_id      TEXT,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    duration_ms     INTEGER,
    file_sha256     TEXT,
    file_bytes      INTEGER,
    retention_class TEXT,
    expires_at      INTEGER,
    deleted_at      INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    detail          TEXT,
    actor           TEXT    NOT NULL,
    audit_seq       INTEGER NOT NULL
) STRICT;
CREATE INDEX tombstones_deleted_at ON tombstones (deleted_at);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    details   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

CREATE TABLE audit_heads (
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    public_key TEXT    NOT NULL,
    signature  TEXT    NOT NULL
) STRICT;
"#,
    )?;
    // Backfill the searchable number of existing participants.
    let rows: Vec<(i64, String)> = {
        let mut st = tx.prepare("SELECT rowid, aor FROM participants WHERE aor IS NOT NULL")?;
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<rusqlite::Result<_>>()?
    };
    let mut up = tx.prepare("UPDATE participants SET number = ?2 WHERE rowid = ?1")?;
    for (rowid, aor) in rows {
        up.execute(rusqlite::params![
            rowid,
            crate::lifecycle::pattern::number_of(&aor)
        ])?;
    }
    Ok(())
}

/// Uplink (issue #5): the archive upload state of each recording.
///
/// One row per recording that the uplink has looked at. `state` moves pending →
/// uploading → uploaded, or to failed (retried later); `parts_json` holds the resumable
/// multipart state (upload id and acknowledged parts). `held` is the hook for legal holds
/// (set by the holds feature), `archive_hold` what the archive was told. `archived_at` is
/// when the archive copy was verified: the local retention sweeper may delete the file
/// once it is set and the retention period has passed.
fn uplink_uploads(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
CREATE TABLE uploads (
    recording_id     TEXT    PRIMARY KEY NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'uploading', 'uploaded', 'failed')),
    object_key       TEXT,
    upload_id        TEXT,
    parts_json       TEXT,
    bytes_total      INTEGER NOT NULL DEFAULT 0 CHECK (bytes_total >= 0),
    bytes_sent       INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       TEXT,
    next_attempt_at  INTEGER,
    archive_etag     TEXT,
    archive_checksum TEXT,
    held             INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1)),
    archive_hold     TEXT    NOT NULL DEFAULT 'none'
                       CHECK (archive_hold IN ('none', 'on', 'unsupported')),
    updated_at       INTEGER NOT NULL,
    uploaded_at      INTEGER,
    archived_at      INTEGER
) STRICT;

CREATE INDEX uploads_state ON uploads (state);
"#,
    )
}

/// Version 4: `recordings.storage_format` — how the audio is stored (`wav` = PCM,
/// `opus` = Opus packets); every existing recording is PCM.
fn storage_format(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE recordings ADD COLUMN storage_format TEXT NOT NULL DEFAULT 'wav'
    CHECK (storage_format IN ('wav', 'opus'));
"#,
    )
}

/// Version 5: `participant_aliases` — the further display names and addresses of record
/// of a participant whose metadata gives several (`<nameID>`s / `<aor>`s). The first of
/// each stays in `participants.name` / `.aor`; the others follow here in document order
/// (`position` from 1). `number` is the searchable number of an `aor` alias.
fn participant_aliases(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
CREATE TABLE participant_aliases (
    recording_id   TEXT    NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    participant_id TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('name', 'aor')),
    position       INTEGER NOT NULL CHECK (position >= 1),
    value          TEXT    NOT NULL,
    number         TEXT,
    PRIMARY KEY (recording_id, participant_id, kind, position)
) STRICT;
CREATE INDEX participant_aliases_number ON participant_aliases (number);
CREATE INDEX participant_aliases_value ON participant_aliases (value);
"#,
    )
}

/// Version 6: participants are a history (issue #13). A participant stays in
/// `participants` after a later complete metadata snapshot drops it (a transfer replacing
/// Bob by Charlie): `joined_at` / `left_at` (unix ms; from the metadata's
/// `<associate-time>` / `<disassociate-time>`, else the arrival of the metadata version
/// that first listed it / that no longer did; `left_at` NULL = on the call until its end)
/// and `channel`, the recording channel the participant was last heard on.
fn participant_history(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE participants ADD COLUMN joined_at INTEGER;
ALTER TABLE participants ADD COLUMN left_at   INTEGER;
ALTER TABLE participants ADD COLUMN channel   INTEGER;
"#,
    )
}

/// Version 7 (issue #12): v2 signed audit heads carry their `ordinal` (1, 2, … in
/// signing order) and the monotonic `counter` value they were signed under (TPM NV
/// counter, or the development counter file); both are in the signed message. NULL for
/// heads signed before (v1).
fn audit_heads_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE audit_heads ADD COLUMN ordinal INTEGER;
ALTER TABLE audit_heads ADD COLUMN counter INTEGER;
"#,
    )
}

/// Version 8 (issue #12): tombstones keep no personal data. The Call-ID and the SIPREC
/// session id go (they name the call in the SBC's and the PBX's logs); what is left is the
/// random recording id, times, the content hash, the class and who deleted it and why.
/// The catalogue runs with `secure_delete`, so the dropped values are zeroed in the pages
/// SQLite rewrites, and the open path checkpoints the WAL after the migration.
fn tombstones_without_personal_data(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE tombstones DROP COLUMN call_id;
ALTER TABLE tombstones DROP COLUMN session_id;
"#,
    )
}

/// Version 9 (issue #12): audit entries carry `mac`, HMAC-SHA256 under the audit MAC key
/// (derived from the sealed custody seed, `vault::audit_key`) over their seq and hash;
/// NULL for entries written before (unkeyed, covered by the signed heads only). Keying
/// starts at the first `audit.keyed` entry, written by the first process holding the key;
/// the index finds it (and the two-person rule's requests) without a scan.
fn audit_mac(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE audit_log ADD COLUMN mac TEXT;
CREATE INDEX audit_log_action ON audit_log (action, seq);
"#,
    )
}

/// Version 10 (issue #12, `recordings list` on an encrypted catalogue): every list filter
/// is answered from an index that is ordered by the recording's start, so "the newest 50
/// of participant X / tag Y / the held set" reads a few index pages instead of every
/// matching row (each page read is an AES-CBC decryption and an HMAC check).
///
/// - `participants`, `participant_aliases` and `tags` carry a copy of their recording's
///   `started_at`, kept by triggers (set on every insert from `recordings`, followed on
///   an update of `recordings.started_at`), backfilled here; the indexes
///   `(number | aor | value | tag, started_at, recording_id)` replace the single-column
///   ones (same prefix, so every other lookup is served as before) and cover the query.
/// - `recordings_span` on `ended_at - started_at` gives the longest recording in one
///   index step: a hold by time window `[from, to]` then reads only recordings started in
///   `[from - longest, to]` instead of everything started before `to`;
///   `recordings_open` (partial, `ended_at IS NULL`) finds the running ones.
fn list_indexes(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE participants ADD COLUMN started_at INTEGER;
ALTER TABLE participant_aliases ADD COLUMN started_at INTEGER;
ALTER TABLE tags ADD COLUMN started_at INTEGER;

UPDATE participants SET started_at =
    (SELECT r.started_at FROM recordings r WHERE r.id = participants.recording_id);
UPDATE participant_aliases SET started_at =
    (SELECT r.started_at FROM recordings r WHERE r.id = participant_aliases.recording_id);
UPDATE tags SET started_at =
    (SELECT r.started_at FROM recordings r WHERE r.id = tags.recording_id);

DROP INDEX participants_number;
DROP INDEX participants_aor;
DROP INDEX participant_aliases_number;
DROP INDEX participant_aliases_value;
DROP INDEX tags_tag;
CREATE INDEX participants_number_started ON participants (number, started_at, recording_id);
CREATE INDEX participants_aor_started ON participants (aor, started_at, recording_id);
CREATE INDEX participant_aliases_number_started
    ON participant_aliases (number, started_at, recording_id, kind);
CREATE INDEX participant_aliases_value_started
    ON participant_aliases (value, started_at, recording_id, kind);
CREATE INDEX tags_tag_started ON tags (tag, started_at, recording_id);
CREATE INDEX recordings_span ON recordings ((ended_at - started_at));
CREATE INDEX recordings_open ON recordings (started_at) WHERE ended_at IS NULL;

CREATE TRIGGER participants_started_at AFTER INSERT ON participants
BEGIN
    UPDATE participants SET started_at =
        (SELECT r.started_at FROM recordings r WHERE r.id = NEW.recording_id)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER participant_aliases_started_at AFTER INSERT ON participant_aliases
BEGIN
    UPDATE participant_aliases SET started_at =
        (SELECT r.started_at FROM recordings r WHERE r.id = NEW.recording_id)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER tags_started_at AFTER INSERT ON tags
BEGIN
    UPDATE tags SET started_at =
        (SELECT r.started_at FROM recordings r WHERE r.id = NEW.recording_id)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER recordings_started_at AFTER UPDATE OF started_at ON recordings
BEGIN
    UPDATE participants SET started_at = NEW.started_at WHERE recording_id = NEW.id;
    UPDATE participant_aliases SET started_at = NEW.started_at WHERE recording_id = NEW.id;
    UPDATE tags SET started_at = NEW.started_at WHERE recording_id = NEW.id;
END;
"#,
    )
}

/// Version 11 (issue #14): `uploads.doc_held`, whether the recording's archived document
/// says it is held by the box's own holds (`held_locally`, as last published), and
/// `uploads.local_held`, whether it is now (kept by `sync_upload_holds`). A hold placed
/// or released on the box after the upload makes them differ: the uplink publishes the
/// document again (a new version of `<key>.json`) and the central indexer updates the
/// held state. Rows uploaded before: the flag they had.
fn upload_doc_held(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE uploads ADD COLUMN doc_held INTEGER;
ALTER TABLE uploads ADD COLUMN local_held INTEGER;
UPDATE uploads SET doc_held = held, local_held = held WHERE state = 'uploaded';
"#,
    )
}

/// Version 12 (issue #19): recording assurance. `recordings.verdict` (recorded, one_way,
/// silent, no_media, partial) and `assurance_json` (reason, per-channel quality, clock
/// state at start and end, clock steps); `calls_seen` keeps the calls that got no
/// recording (refused, not_recorded, missed) with their verdict and no personal data:
/// no Call-ID, no address, no participant — a random id, the time, source, reason, the
/// rule and direction.
fn assurance(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
ALTER TABLE recordings ADD COLUMN verdict TEXT;
ALTER TABLE recordings ADD COLUMN assurance_json TEXT;
CREATE INDEX recordings_verdict ON recordings (verdict, started_at);
CREATE TABLE calls_seen (
    id        TEXT    PRIMARY KEY NOT NULL,
    source    TEXT    NOT NULL CHECK (source IN ('siprec', 'mirror')),
    seen_at   INTEGER NOT NULL,
    verdict   TEXT    NOT NULL CHECK (verdict IN ('refused', 'not_recorded', 'missed', 'no_media')),
    reason    TEXT    NOT NULL,
    rule      TEXT,
    direction TEXT
);
CREATE INDEX calls_seen_at ON calls_seen (seen_at);
"#,
    )
}
