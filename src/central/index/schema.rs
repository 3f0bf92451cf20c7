//! The index schema: numbered migrations, applied in order on start, each in its own
//! transaction, recorded in `schema_migrations` (docs/central.md, *Index schema*).
//! Never edit a released migration: add the next.

/// (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", V1),
    (2, "web console", V2),
    (3, "central holds, command sequence, ack problems", V3),
    (4, "compact", V4),
];

const V1: &str = r#"
CREATE TABLE boxes (
    box_id              text PRIMARY KEY,
    site                text,
    -- The trusted manifest/audit-head signing key (DER SubjectPublicKeyInfo, Ed25519).
    signing_key_der     bytea,
    signing_key_sha256  text,
    -- enrolled: registered by an operator (central enrol); first_seen: trusted on first
    -- use, flagged until an operator confirms; none: seen, no key trusted yet.
    trust               text NOT NULL CHECK (trust IN ('enrolled', 'first_seen', 'none')),
    first_seen_ms       bigint NOT NULL,
    enrolled_ms         bigint,
    enrolled_by         text,
    -- A manifest signed by another key than the trusted one was seen: never trusted.
    key_changed         boolean NOT NULL DEFAULT false,
    changed_key_sha256  text,
    changed_key_seen_ms bigint
);

CREATE TABLE recordings (
    recording_id      uuid PRIMARY KEY,
    box_id            text NOT NULL REFERENCES boxes(box_id),
    site              text NOT NULL,
    container_key     text NOT NULL UNIQUE,
    started_at_ms     bigint NOT NULL,
    ended_at_ms       bigint,
    duration_ms       bigint,
    direction         text,
    source            text,
    state             text,
    codec             text,
    storage_format    text,
    call_id           text,
    session_id        text,
    tags              text[] NOT NULL DEFAULT '{}',
    held              boolean NOT NULL DEFAULT false,
    container_bytes   bigint NOT NULL,
    container_sha256  text NOT NULL,
    content_sha256    text NOT NULL,
    compliance_key_id text NOT NULL,
    -- enrolled or first_seen: the trust of the key the manifest verified with.
    trust             text NOT NULL,
    -- ok, or quarantined (an object changed after indexing and no longer verifies).
    integrity         text NOT NULL DEFAULT 'ok',
    -- ETags of container, document, manifest, signature: a change means re-verify.
    objects_etag      text NOT NULL,
    document          jsonb NOT NULL,
    indexed_at_ms     bigint NOT NULL
);
CREATE INDEX recordings_started ON recordings (started_at_ms DESC);
CREATE INDEX recordings_box_started ON recordings (box_id, started_at_ms DESC);
CREATE INDEX recordings_site_started ON recordings (site, started_at_ms DESC);
CREATE INDEX recordings_held ON recordings (started_at_ms DESC) WHERE held;
CREATE INDEX recordings_tags ON recordings USING gin (tags);

-- One row per address of a participant (its AoR and each further AoR); number is the
-- normalised +digits of a tel: or sip: user part, name_lc the lower-cased name.
CREATE TABLE participants (
    recording_id   uuid NOT NULL REFERENCES recordings(recording_id) ON DELETE CASCADE,
    participant_id text NOT NULL,
    name           text,
    name_lc        text,
    aor            text,
    aor_lc         text,
    number         text,
    joined_at_ms   bigint,
    left_at_ms     bigint,
    channel        integer
);
CREATE INDEX participants_recording ON participants (recording_id);
CREATE INDEX participants_number ON participants (number text_pattern_ops);
CREATE INDEX participants_aor ON participants (aor_lc text_pattern_ops);
CREATE INDEX participants_name ON participants (name_lc text_pattern_ops);

CREATE TABLE channels (
    recording_id   uuid NOT NULL REFERENCES recordings(recording_id) ON DELETE CASCADE,
    channel        integer NOT NULL,
    participant_id text,
    label          text,
    mapping_source text,
    PRIMARY KEY (recording_id, channel)
);

CREATE TABLE events (
    recording_id uuid NOT NULL REFERENCES recordings(recording_id) ON DELETE CASCADE,
    at_ms        bigint NOT NULL,
    kind         text NOT NULL,
    channel      integer,
    detail       jsonb
);
CREATE INDEX events_recording ON events (recording_id);

-- Legal holds known centrally: from the boxes' documents (source = box) or placed at
-- headquarters (source = central: central hold add).
CREATE TABLE holds (
    hold_id        bigserial PRIMARY KEY,
    recording_id   uuid REFERENCES recordings(recording_id) ON DELETE CASCADE,
    source         text NOT NULL,
    case_id        text,
    reason         text,
    created_by     text,
    created_ms     bigint NOT NULL,
    released_ms    bigint,
    released_by    text
);
CREATE INDEX holds_recording ON holds (recording_id);

-- Every distinct status document a box pushed (its ETag), oldest first.
CREATE TABLE box_status (
    box_id        text NOT NULL REFERENCES boxes(box_id),
    etag          text NOT NULL,
    generated_at  text,
    received_ms   bigint NOT NULL,
    pending       bigint,
    uploaded      bigint,
    failed        bigint,
    pending_bytes bigint,
    oldest_pending_age_s bigint,
    last_upload_at text,
    alarms        jsonb,
    document      jsonb NOT NULL,
    PRIMARY KEY (box_id, etag)
);
CREATE INDEX box_status_latest ON box_status (box_id, received_ms DESC);

-- Signed audit-chain heads the boxes published (status and archive documents).
CREATE TABLE box_audit_heads (
    box_id     text NOT NULL REFERENCES boxes(box_id),
    seq        bigint NOT NULL,
    hash       text NOT NULL,
    at_ms      bigint NOT NULL,
    key_id     text NOT NULL,
    signature  text NOT NULL,
    ordinal    bigint,
    counter    bigint,
    -- verified with the trusted box key; false: no key yet, or it did not verify.
    verified   boolean NOT NULL,
    source     text NOT NULL,
    seen_ms    bigint NOT NULL,
    PRIMARY KEY (box_id, seq, hash)
);

-- Archive objects that failed verification: never indexed as good.
CREATE TABLE quarantine (
    object_key  text PRIMARY KEY,
    box_id      text,
    reason      text NOT NULL,
    message     text NOT NULL,
    objects_etag text NOT NULL,
    first_ms    bigint NOT NULL,
    last_ms     bigint NOT NULL,
    seen        integer NOT NULL DEFAULT 1
);
CREATE INDEX quarantine_box ON quarantine (box_id);

-- Alarms per box (and '' for the indexer itself): raised, counted, cleared.
CREATE TABLE alarms (
    box_id    text NOT NULL,
    code      text NOT NULL,
    message   text NOT NULL,
    count     bigint NOT NULL DEFAULT 1,
    first_ms  bigint NOT NULL,
    last_ms   bigint NOT NULL,
    PRIMARY KEY (box_id, code)
);

-- The indexer's StartAfter position per box prefix (site/box/).
CREATE TABLE index_positions (
    box_prefix   text PRIMARY KEY,
    box_id       text NOT NULL,
    start_after  text NOT NULL,
    updated_ms   bigint NOT NULL
);

-- The central audit log: seq, hash = SHA-256(prev_hash "\n" canonical entry), Ed25519
-- signature of the hash with the central audit key.
CREATE TABLE central_audit (
    seq        bigint PRIMARY KEY,
    at_ms      bigint NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    -- The exact JSON text that was hashed (jsonb would reorder it).
    detail     text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL,
    key_id     text NOT NULL,
    signature  text NOT NULL
);
"#;

/// The web console (`branchrec-central serve`, docs/web-console.md): local accounts,
/// sessions (only the SHA-256 of a session id is stored), cases and their recordings,
/// release requests of the two-person rule.
const V2: &str = r#"
CREATE TABLE web_users (
    user_id         bigserial PRIMARY KEY,
    username        text NOT NULL UNIQUE,
    role            text NOT NULL CHECK (role IN ('auditor', 'compliance', 'supervisor', 'it', 'admin')),
    sites           text[] NOT NULL DEFAULT '{}',
    -- Argon2id PHC string; NULL for accounts that only sign in through SSO.
    password_hash   text,
    totp_secret     bytea,
    last_totp_step  bigint,
    failed_logins   integer NOT NULL DEFAULT 0,
    locked_until_ms bigint,
    disabled        boolean NOT NULL DEFAULT false,
    -- OpenID Connect: issuer and subject this account is bound to.
    oidc_issuer     text,
    oidc_subject    text,
    created_ms      bigint NOT NULL,
    UNIQUE (oidc_issuer, oidc_subject)
);

CREATE TABLE web_sessions (
    -- SHA-256 (hex) of the cookie's session id.
    session_hash    text PRIMARY KEY,
    -- anon (login form), mfa (password good, TOTP pending), auth.
    state           text NOT NULL CHECK (state IN ('anon', 'mfa', 'auth')),
    user_id         bigint REFERENCES web_users(user_id) ON DELETE CASCADE,
    csrf_token      text NOT NULL,
    created_ms      bigint NOT NULL,
    last_seen_ms    bigint NOT NULL,
    -- OIDC: state, nonce and PKCE verifier of a login in flight.
    oidc_pending    jsonb
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_seen ON web_sessions (last_seen_ms);

CREATE TABLE web_cases (
    case_id         text PRIMARY KEY,
    title           text NOT NULL,
    created_by      text NOT NULL,
    created_ms      bigint NOT NULL
);

CREATE TABLE web_case_recordings (
    case_id         text NOT NULL REFERENCES web_cases(case_id),
    recording_id    uuid NOT NULL,
    added_by        text NOT NULL,
    added_ms        bigint NOT NULL,
    PRIMARY KEY (case_id, recording_id)
);

CREATE TABLE web_releases (
    release_id      bigserial PRIMARY KEY,
    case_id         text NOT NULL REFERENCES web_cases(case_id),
    requested_by    text NOT NULL,
    reason          text NOT NULL,
    requested_ms    bigint NOT NULL,
    approved_by     text,
    approved_ms     bigint,
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
);
"#;

const V3: &str = r#"
-- Holds placed at headquarters (`central hold add`), per recording and case. No foreign
-- key: the indexer rewrites a recording's row when an object changes (and a hold may be
-- placed on a recording not indexed yet); the trigger below keeps `recordings.held`.
-- A box-placed hold is a `holds` row with source = box (from the box's documents): the
-- two never replace each other.
CREATE TABLE central_holds (
    recording_id   uuid NOT NULL,
    box_id         text NOT NULL,
    container_key  text NOT NULL,
    case_id        text NOT NULL,
    reason         text NOT NULL,
    operator       text NOT NULL,
    -- how the recording was named: its id, or the participant pattern it matched.
    matched_by     text NOT NULL,
    placed_ms      bigint NOT NULL,
    released_ms    bigint,
    released_by    text,
    release_reason text,
    PRIMARY KEY (recording_id, case_id)
);
CREATE INDEX central_holds_active ON central_holds (recording_id) WHERE released_ms IS NULL;
-- The central cases (a participant case may match nothing yet). A box reports in its
-- archived documents which central cases hold a recording (`hold_cases`: a participant
-- pattern it holds covers recordings made later); the indexer adds those recordings to
-- the case while it is active.
CREATE TABLE central_cases (
    case_id     text PRIMARY KEY,
    reason      text NOT NULL,
    operator    text NOT NULL,
    placed_ms   bigint NOT NULL,
    released_ms bigint,
    released_by text
);
CREATE INDEX central_holds_case ON central_holds (case_id) WHERE released_ms IS NULL;

-- A recording (re)written by the indexer stays held while a central hold is active.
CREATE FUNCTION recordings_central_held() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF NOT NEW.held AND EXISTS (SELECT 1 FROM central_holds
                                WHERE recording_id = NEW.recording_id AND released_ms IS NULL) THEN
        NEW.held := true;
    END IF;
    RETURN NEW;
END
$f$;
CREATE TRIGGER recordings_central_held BEFORE INSERT ON recordings
    FOR EACH ROW EXECUTE FUNCTION recordings_central_held();

-- The last command seq written per box: allocated under this row's lock, so two central
-- operators never write the same seq (docs/central.md, *Commands to boxes*).
CREATE TABLE command_seq (
    box_id   text PRIMARY KEY,
    last_seq bigint NOT NULL
);
-- Every command written through the index.
CREATE TABLE commands (
    box_id     text NOT NULL,
    seq        bigint NOT NULL,
    action     text NOT NULL,
    operator   text NOT NULL,
    issued_ms  bigint NOT NULL,
    object_key text NOT NULL,
    document   text NOT NULL,
    PRIMARY KEY (box_id, seq)
);

-- Acknowledgements under _acks/<box>/ that do not verify with the box's trusted key
-- (forged, unsigned, altered): counted once per object version, alarmed, never counted
-- as acknowledged.
CREATE TABLE ack_problems (
    object_key text NOT NULL,
    sha256     text NOT NULL,
    box_id     text NOT NULL,
    seq        bigint,
    problem    text NOT NULL,
    first_ms   bigint NOT NULL,
    PRIMARY KEY (object_key, sha256)
);
"#;

/// Smaller index (docs/central.md, *Scale*): the decrypted document leaves the hot
/// `recordings` heap for `recording_documents` (lz4-compressed, without the raw SIPREC
/// XML and the audit heads: the archive and `box_audit_heads` have them); `channels` and
/// `events` go (they are in the document, no search reads them); participants lose the
/// lower-cased copies of name and AoR (expression indexes instead) and index only the
/// rows that have a number / name / AoR; published heads get an index by ordinal.
const V4: &str = r#"
CREATE TABLE recording_documents (
    recording_id uuid PRIMARY KEY REFERENCES recordings(recording_id) ON DELETE CASCADE,
    document     jsonb NOT NULL
);
ALTER TABLE recording_documents ALTER COLUMN document SET COMPRESSION lz4;
INSERT INTO recording_documents (recording_id, document)
    SELECT recording_id, document - 'metadata_raw' - 'audit' FROM recordings;
ALTER TABLE recordings DROP COLUMN document;

DROP TABLE events;
DROP TABLE channels;

DROP INDEX participants_number;
DROP INDEX participants_aor;
DROP INDEX participants_name;
ALTER TABLE participants DROP COLUMN name_lc;
ALTER TABLE participants DROP COLUMN aor_lc;
CREATE INDEX participants_number ON participants (number text_pattern_ops)
    WHERE number IS NOT NULL;
CREATE INDEX participants_aor ON participants (lower(aor) text_pattern_ops)
    WHERE aor IS NOT NULL;
CREATE INDEX participants_name ON participants (lower(name) text_pattern_ops)
    WHERE name IS NOT NULL;

-- The indexer looks at a box's published heads around the new ordinals only.
CREATE INDEX box_audit_heads_ordinal ON box_audit_heads (box_id, ordinal)
    WHERE ordinal IS NOT NULL;
"#;
