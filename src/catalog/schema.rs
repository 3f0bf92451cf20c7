//! Schema migrations, applied in order; `PRAGMA user_version` holds the number applied.
//!
//! Rules for adding one: append a function to [`MIGRATIONS`], never edit or reorder an
//! existing one (databases in the field have already run it), and document the change in
//! `docs/catalog-schema.md`.

use rusqlite::Transaction;

/// One schema step: takes the database from version `n` to `n + 1`.
pub(super) type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// All migrations; entry `i` brings the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[Migration] = &[v1_initial, uplink_uploads];

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
