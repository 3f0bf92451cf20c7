use super::*;
use serde_json::json;
use tempfile::TempDir;

#[path = "../../tests/common/sqlcipher_pages.rs"]
mod pages;

fn db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.sqlite");
    (dir, path)
}

fn new_rec(id: &str, started_at_ms: i64) -> NewRecording {
    NewRecording {
        id: id.to_owned(),
        source: Source::Siprec,
        call_id: format!("call-{id}@sbc.example"),
        session_id: None,
        src_addr: "192.0.2.10:5060".to_owned(),
        started_at_ms,
        codec: "PCMU".to_owned(),
        sample_rate: 8000,
        channels: 2,
        file_path: Some(format!("2024/05/01/{id}.brec")),
        kek_id: Some("kek-1".to_owned()),
        storage_format: "wav".to_owned(),
    }
}

fn finish(state: RecordingState) -> Finish {
    Finish {
        ended_at_ms: 1_714_555_865_000,
        duration_ms: 65_000,
        state,
        file_sha256: Some("ab".repeat(32)),
        file_bytes: Some(1_040_512),
        codec: Some("PCMU+PCMA".to_owned()),
        stats_json: Some(json!({"streams": [{"ssrc": 1234, "packets": 3250, "lost": 2}]})),
    }
}

fn participants() -> Vec<ParticipantRow> {
    vec![
        ParticipantRow {
            participant_id: "p-alice".to_owned(),
            name: Some("Alice".to_owned()),
            aor: Some("sip:+4930111@pbx.example".to_owned()),
            other_names: vec![],
            other_aors: vec![],
            ..Default::default()
        },
        ParticipantRow {
            participant_id: "p-bob".to_owned(),
            name: None,
            aor: Some("tel:+4930222".to_owned()),
            other_names: vec![],
            other_aors: vec![],
            ..Default::default()
        },
    ]
}

fn channels() -> Vec<ChannelRow> {
    vec![
        ChannelRow {
            channel: 1,
            mline: Some(1),
            label: Some("2".to_owned()),
            stream_id: Some("s-2".to_owned()),
            participant_id: Some("p-bob".to_owned()),
            mapping_source: MappingSource::Metadata,
        },
        ChannelRow {
            channel: 0,
            mline: Some(0),
            label: Some("1".to_owned()),
            stream_id: Some("s-1".to_owned()),
            participant_id: Some("p-alice".to_owned()),
            mapping_source: MappingSource::Metadata,
        },
    ]
}

/// A real SIPREC body (Amazon Chime SDK documentation example), original bytes.
fn real_metadata_body() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/siprec/amazon-chime-doc-1-initial.txt"
    );
    let all = std::fs::read(path).expect("shared testdata present");
    let marker = b"# ---- END HEADER (original bytes follow verbatim) ----";
    let pos = all
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("header marker");
    let rest = &all[pos + marker.len()..];
    // Skip the line end after the marker.
    let skip = rest.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    rest[skip..].to_vec()
}

/// The unit tests' catalogue key.
fn key() -> CatalogKey {
    CatalogKey::for_tests(7)
}

/// A plain connection keyed with the tests' catalogue key (what a raw `Connection::open`
/// was before the catalogue was encrypted).
fn raw_conn(path: &Path) -> Connection {
    key::keyed_connection(
        path,
        &key(),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .expect("raw open")
}

#[test]
fn catalog_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Catalog>();
}

#[test]
fn migrates_from_empty() {
    let (_d, path) = db();
    let cat = Catalog::open(&path, &key()).unwrap();
    assert!(!cat.is_read_only());
    let v: i64 = cat
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = cat
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = cat
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = cat
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);

    let cols = |table: &str| -> Vec<String> {
        let mut st = cat
            .conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap();
        st.query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        cols("recordings"),
        [
            "id",
            "source",
            "call_id",
            "session_id",
            "src_addr",
            "started_at",
            "ended_at",
            "duration_ms",
            "codec",
            "sample_rate",
            "channels",
            "state",
            "file_path",
            "file_sha256",
            "file_bytes",
            "kek_id",
            "stats_json",
            "created_at",
            "rule",
            "direction",
            "retention_class",
            "retention_ms",
            "expires_at",
            "min_duration_ms",
            "archived_at",
            "storage_format",
            "verdict",
            "assurance_json",
        ]
    );
    assert_eq!(
        cols("participants"),
        [
            "recording_id",
            "participant_id",
            "name",
            "aor",
            "number",
            "joined_at",
            "left_at",
            "channel",
            "started_at"
        ]
    );
    assert_eq!(
        cols("channels"),
        [
            "recording_id",
            "channel",
            "mline",
            "label",
            "stream_id",
            "participant_id",
            "mapping_source"
        ]
    );
    assert_eq!(
        cols("metadata_versions"),
        [
            "recording_id",
            "seq",
            "received_at",
            "sip_method",
            "content_type",
            "data_mode",
            "raw"
        ]
    );
    assert_eq!(
        cols("events"),
        ["recording_id", "at_ms", "kind", "channel", "detail_json"]
    );

    let mut st = cat
        .conn
        .prepare("SELECT tbl_name || '.' || sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap();
    let idx: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for want in [
        "(started_at)",
        "(call_id)",
        "(session_id)",
        "(state)",
        "(aor, started_at, recording_id)",
        "(number, started_at, recording_id)",
        "(tag, started_at, recording_id)",
    ] {
        assert!(
            idx.iter().any(|s| s.ends_with(want)),
            "missing index {want} in {idx:?}"
        );
    }
}

#[test]
fn reopen_is_idempotent() {
    let (_d, path) = db();
    {
        let mut cat = Catalog::open(&path, &key()).unwrap();
        cat.insert_recording(&new_rec("r1", 1_000)).unwrap();
    }
    for _ in 0..3 {
        let cat = Catalog::open(&path, &key()).unwrap();
        let all = cat.list(&ListFilter::default()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "r1");
    }
    let v: i64 = raw_conn(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn refuses_newer_schema_without_touching_it() {
    let (_d, path) = db();
    {
        let c = raw_conn(&path);
        c.execute_batch("CREATE TABLE future (x INTEGER);").unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Catalog::open(&path, &key()).unwrap_err();
    match &err {
        CatalogError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("newer") || msg.contains("only knows"), "{msg}");
    assert!(msg.contains("upgrade branchrec"), "{msg}");

    assert!(matches!(
        Catalog::open_read_only(&path, &key()),
        Err(CatalogError::SchemaTooNew { .. })
    ));
    // Still in its original journal mode, no tables of ours created.
    let c = raw_conn(&path);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'recordings'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn read_only_needs_an_existing_migrated_file() {
    let (d, path) = db();
    assert!(matches!(
        Catalog::open_read_only(&path, &key()),
        Err(CatalogError::Missing(_))
    ));
    assert!(!path.exists(), "read-only open must not create the file");
    let old = d.path().join("old.sqlite");
    raw_conn(&old)
        .execute_batch("CREATE TABLE x (y INTEGER);")
        .unwrap();
    match Catalog::open_read_only(&old, &key()) {
        Err(CatalogError::SchemaTooOld {
            found, expected, ..
        }) => {
            assert_eq!(found, 0);
            assert_eq!(expected, SCHEMA_VERSION);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn insert_finish_list_get_round_trip() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    let rec = new_rec("0f5c1a52-3b8e-4c1e-9a43-6f2d3b1c9e77", 1_714_555_800_250);
    cat.insert_recording(&rec).unwrap();
    cat.set_participants(&rec.id, &participants()).unwrap();
    cat.set_channels(&rec.id, &channels()).unwrap();
    cat.set_session_id(&rec.id, "dXJ+nAb8TkW1mx6eX0oDXQ==")
        .unwrap();

    // While recording: no end, no duration.
    let live = cat.list(&ListFilter::default()).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].state, RecordingState::Recording);
    assert_eq!(live[0].end, None);
    assert_eq!(live[0].duration_ms, None);
    assert_eq!(live[0].start, "2024-05-01T09:30:00.250Z");

    cat.finish_recording(&rec.id, &finish(RecordingState::Complete))
        .unwrap();

    let list = cat.list(&ListFilter::default()).unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.id, rec.id);
    assert_eq!(s.call_id, rec.call_id);
    assert_eq!(s.session_id.as_deref(), Some("dXJ+nAb8TkW1mx6eX0oDXQ=="));
    assert_eq!(s.source, Source::Siprec);
    assert_eq!(s.end.as_deref(), Some("2024-05-01T09:31:05.000Z"));
    assert_eq!(s.duration_ms, Some(65_000));
    assert_eq!(s.codec, "PCMU+PCMA");
    assert_eq!(s.state, RecordingState::Complete);
    assert_eq!(
        s.participants
            .iter()
            .map(|p| p.participant_id.as_str())
            .collect::<Vec<_>>(),
        ["p-alice", "p-bob"]
    );
    // Channels sorted by index, participant resolved through the join.
    assert_eq!(s.channels.len(), 2);
    assert_eq!(s.channels[0].channel, 0);
    assert_eq!(s.channels[0].name.as_deref(), Some("Alice"));
    assert_eq!(
        s.channels[0].aor.as_deref(),
        Some("sip:+4930111@pbx.example")
    );
    assert_eq!(s.channels[1].channel, 1);
    assert_eq!(s.channels[1].name, None);
    assert_eq!(s.channels[1].aor.as_deref(), Some("tel:+4930222"));
    assert_eq!(s.channels[1].label.as_deref(), Some("2"));

    let d = cat.get(&rec.id).unwrap().expect("present");
    let r = &d.recording;
    assert_eq!(r.src_addr, "192.0.2.10:5060");
    assert_eq!(r.started_at_ms, 1_714_555_800_250);
    assert_eq!(r.ended_at_ms, Some(1_714_555_865_000));
    assert_eq!(r.sample_rate, 8000);
    assert_eq!(r.channels, 2);
    assert_eq!(r.file_path.as_deref(), rec.file_path.as_deref());
    assert_eq!(r.file_sha256, Some("ab".repeat(32)));
    assert_eq!(r.file_bytes, Some(1_040_512));
    assert_eq!(r.kek_id.as_deref(), Some("kek-1"));
    assert_eq!(r.stats_json, finish(RecordingState::Complete).stats_json);
    assert!(r.created_at_ms > 1_700_000_000_000);
    assert_eq!(d.participants, participants());
    let mut want_ch = channels();
    want_ch.sort_by_key(|c| c.channel);
    assert_eq!(d.channels, want_ch);
    assert_eq!(d.summary().unwrap(), *s);

    assert!(cat.get("nope").unwrap().is_none());
}

#[test]
fn finish_is_once_and_validated() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    assert!(matches!(
        cat.finish_recording("r1", &finish(RecordingState::Recording)),
        Err(CatalogError::Invalid { field: "state", .. })
    ));
    let mut bad = finish(RecordingState::Complete);
    bad.file_sha256 = Some("AB".repeat(32));
    assert!(matches!(
        cat.finish_recording("r1", &bad),
        Err(CatalogError::Invalid {
            field: "file_sha256",
            ..
        })
    ));
    assert!(matches!(
        cat.finish_recording("nope", &finish(RecordingState::Complete)),
        Err(CatalogError::NotFound(_))
    ));
    let mut keep = finish(RecordingState::Interrupted);
    keep.codec = None;
    cat.finish_recording("r1", &keep).unwrap();
    let mut again = finish(RecordingState::Complete);
    again.file_sha256 = Some("cd".repeat(32));
    match cat.finish_recording("r1", &again) {
        Err(CatalogError::AlreadyFinished { state, .. }) => {
            assert_eq!(state, RecordingState::Interrupted)
        }
        other => panic!("unexpected {other:?}"),
    }
    let r = cat.get("r1").unwrap().unwrap().recording;
    assert_eq!(r.state, RecordingState::Interrupted);
    assert_eq!(r.file_sha256, Some("ab".repeat(32)), "hash not overwritten");
    assert_eq!(r.codec, "PCMU", "codec: None keeps the inserted value");
}

#[test]
fn insert_rejects_duplicates_and_escaping_paths() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    assert!(matches!(
        cat.insert_recording(&new_rec("r1", 2)),
        Err(CatalogError::Duplicate(_))
    ));
    for bad in ["/etc/passwd", "../x.brec", "a/../../x", ""] {
        let mut r = new_rec("r2", 1);
        r.file_path = Some(bad.to_owned());
        assert!(
            matches!(
                cat.insert_recording(&r),
                Err(CatalogError::Invalid {
                    field: "file_path",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
    let mut r = new_rec("r2", 1);
    r.file_path = None;
    r.kek_id = None;
    cat.insert_recording(&r).unwrap();
    assert_eq!(cat.list(&ListFilter::default()).unwrap().len(), 2);
}

#[test]
fn writes_to_unknown_recording_fail() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    assert!(matches!(
        cat.set_participants("x", &participants()),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        cat.set_channels("x", &channels()),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        cat.set_session_id("x", "s"),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        cat.add_events("x", &[]),
        Err(CatalogError::NotFound(_))
    ));
}

#[test]
fn participants_are_replaced_atomically() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    cat.set_participants("r1", &participants()).unwrap();
    let carol = ParticipantRow {
        participant_id: "p-carol".to_owned(),
        name: Some("Carol".to_owned()),
        aor: None,
        other_names: vec![],
        other_aors: vec![],
        ..Default::default()
    };
    // A set with a duplicate id fails and leaves the previous set in place.
    assert!(matches!(
        cat.set_participants("r1", &[carol.clone(), carol.clone()]),
        Err(CatalogError::Invalid { .. })
    ));
    assert_eq!(cat.get("r1").unwrap().unwrap().participants, participants());
    cat.set_participants("r1", std::slice::from_ref(&carol))
        .unwrap();
    assert_eq!(cat.get("r1").unwrap().unwrap().participants, vec![carol]);
    // Channel pointing at a participant that is gone: name/aor resolve to null.
    cat.set_channels("r1", &channels()).unwrap();
    let s = &cat.list(&ListFilter::default()).unwrap()[0];
    assert_eq!(s.channels[0].participant_id.as_deref(), Some("p-alice"));
    assert_eq!(s.channels[0].name, None);
    // Replacing channels with an empty set clears them.
    cat.set_channels("r1", &[]).unwrap();
    assert!(cat.get("r1").unwrap().unwrap().channels.is_empty());
}

#[test]
fn metadata_versions_are_sequenced_per_recording_and_stored_verbatim() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    cat.insert_recording(&new_rec("r2", 2)).unwrap();
    let body = real_metadata_body();
    assert!(body.len() > 100);
    let v = |method: &str, mode: Option<DataMode>, raw: Vec<u8>| MetadataVersion {
        received_at_ms: 1_714_555_800_000,
        sip_method: method.to_owned(),
        content_type: "application/rs-metadata+xml".to_owned(),
        data_mode: mode,
        raw,
    };
    assert_eq!(
        cat.add_metadata_version("r1", &v("INVITE", Some(DataMode::Complete), body.clone()))
            .unwrap(),
        1
    );
    assert_eq!(
        cat.add_metadata_version("r2", &v("INVITE", None, b"<x/>".to_vec()))
            .unwrap(),
        1
    );
    assert_eq!(
        cat.add_metadata_version(
            "r1",
            &v("re-INVITE", Some(DataMode::Partial), vec![0, 255, 13, 10])
        )
        .unwrap(),
        2
    );
    assert_eq!(
        cat.add_metadata_version("r1", &v("UPDATE", None, Vec::new()))
            .unwrap(),
        3
    );
    assert!(matches!(
        cat.add_metadata_version("x", &v("INVITE", None, Vec::new())),
        Err(CatalogError::NotFound(_))
    ));
    let d = cat.get("r1").unwrap().unwrap();
    let seqs: Vec<u32> = d.metadata_versions.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(d.metadata_versions[0].version.raw, body);
    assert_eq!(
        d.metadata_versions[0].version.data_mode,
        Some(DataMode::Complete)
    );
    assert_eq!(d.metadata_versions[1].version.sip_method, "re-INVITE");
    assert_eq!(d.metadata_versions[1].version.raw, vec![0, 255, 13, 10]);
    assert_eq!(d.metadata_versions[2].version.data_mode, None);
    assert_eq!(cat.get("r2").unwrap().unwrap().metadata_versions.len(), 1);
}

#[test]
fn events_round_trip_in_timeline_order() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    let e = |at: u64, kind: &str, ch: Option<u32>, d: Option<serde_json::Value>| EventRow {
        at_ms: at,
        kind: kind.to_owned(),
        channel: ch,
        detail_json: d,
    };
    cat.add_events(
        "r1",
        &[
            e(5_000, "hold", None, None),
            e(
                1_200,
                "dtmf",
                Some(0),
                Some(json!({"digit": "5", "duration_ms": 120})),
            ),
        ],
    )
    .unwrap();
    cat.add_events("r1", &[e(5_000, "resume", None, None)])
        .unwrap();
    let evs = cat.get("r1").unwrap().unwrap().events;
    assert_eq!(
        evs,
        vec![
            e(
                1_200,
                "dtmf",
                Some(0),
                Some(json!({"digit": "5", "duration_ms": 120}))
            ),
            e(5_000, "hold", None, None),
            e(5_000, "resume", None, None),
        ]
    );
    assert!(matches!(
        cat.add_events("r1", &[e(u64::MAX, "dtmf", None, None)]),
        Err(CatalogError::Invalid { field: "at_ms", .. })
    ));
}

#[test]
fn list_filters_orders_and_recovers() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    for (id, t) in [("a", 3_000), ("b", 1_000), ("c", 2_000), ("d", 4_000)] {
        cat.insert_recording(&new_rec(id, t)).unwrap();
    }
    cat.finish_recording("d", &finish(RecordingState::Complete))
        .unwrap();
    cat.finish_recording("b", &finish(RecordingState::Damaged))
        .unwrap();

    let ids = |v: Vec<RecordingSummary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(cat.list(&ListFilter::default()).unwrap()),
        ["d", "a", "c", "b"]
    );
    assert_eq!(
        ids(cat
            .list(&ListFilter {
                limit: Some(2),
                state: None,
                ..ListFilter::default()
            })
            .unwrap()),
        ["d", "a"]
    );
    assert_eq!(
        ids(cat
            .list(&ListFilter {
                limit: None,
                state: Some(RecordingState::Recording),
                ..ListFilter::default()
            })
            .unwrap()),
        ["a", "c"]
    );
    assert!(cat
        .list(&ListFilter {
            limit: Some(0),
            state: None,
            ..ListFilter::default()
        })
        .unwrap()
        .is_empty());
    // Crash recovery: oldest first.
    assert_eq!(
        ids(cat.recordings_in_state("recording").unwrap()),
        ["c", "a"]
    );
    assert_eq!(ids(cat.recordings_in_state("damaged").unwrap()), ["b"]);
    assert!(cat
        .recordings_in_state("codec_unsupported")
        .unwrap()
        .is_empty());
    assert!(matches!(
        cat.recordings_in_state("bogus"),
        Err(CatalogError::Invalid { field: "state", .. })
    ));
}

#[test]
fn read_only_reader_lists_while_writer_holds_the_db() {
    let (_d, path) = db();
    let mut writer = Catalog::open(&path, &key()).unwrap();
    writer.insert_recording(&new_rec("committed", 1)).unwrap();

    // The writer holds the write lock with an uncommitted change.
    writer.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer
        .conn
        .execute(
            "UPDATE recordings SET codec = 'G722' WHERE id = 'committed'",
            [],
        )
        .unwrap();

    let reader = Catalog::open_read_only(&path, &key()).unwrap();
    assert!(reader.is_read_only());
    let t0 = std::time::Instant::now();
    let seen = reader.list(&ListFilter::default()).unwrap();
    assert!(
        t0.elapsed() < BUSY_TIMEOUT / 2,
        "reader waited for the writer"
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].codec, "PCMU", "uncommitted change invisible");
    assert!(reader.get("committed").unwrap().is_some());

    writer.conn.execute_batch("COMMIT").unwrap();
    writer.insert_recording(&new_rec("later", 2)).unwrap();
    let seen = reader.list(&ListFilter::default()).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].codec, "G722");
}

#[test]
fn read_only_handle_cannot_write() {
    let (_d, path) = db();
    Catalog::open(&path, &key())
        .unwrap()
        .insert_recording(&new_rec("r1", 1))
        .unwrap();
    let mut ro = Catalog::open_read_only(&path, &key()).unwrap();
    assert!(ro.insert_recording(&new_rec("r2", 1)).is_err());
    assert!(ro.set_session_id("r1", "s").is_err());
    assert_eq!(ro.get("r1").unwrap().unwrap().recording.session_id, None);
}

#[test]
fn summary_json_shape() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1_714_555_800_250))
        .unwrap();
    cat.set_participants("r1", &participants()).unwrap();
    cat.set_channels("r1", &channels()).unwrap();
    let live = serde_json::to_value(&cat.list(&ListFilter::default()).unwrap()[0]).unwrap();
    assert_eq!(live["end"], serde_json::Value::Null);
    assert_eq!(live["duration_ms"], serde_json::Value::Null);
    assert_eq!(live["state"], "recording");

    let mut f = finish(RecordingState::CodecUnsupported);
    f.codec = None;
    cat.finish_recording("r1", &f).unwrap();
    let v = serde_json::to_value(&cat.list(&ListFilter::default()).unwrap()[0]).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "archived",
            "call_id",
            "channels",
            "codec",
            "duration_ms",
            "end",
            "expires",
            "held",
            "id",
            "participants",
            "retention_class",
            "rule",
            "session_id",
            "source",
            "start",
            "state",
            "storage_format",
            "tags",
            "verdict"
        ]
    );
    assert_eq!(v["id"], "r1");
    assert_eq!(v["source"], "siprec");
    assert_eq!(v["session_id"], serde_json::Value::Null);
    assert_eq!(v["start"], "2024-05-01T09:30:00.250Z");
    assert_eq!(v["end"], "2024-05-01T09:31:05.000Z");
    assert_eq!(v["duration_ms"], 65_000);
    assert_eq!(v["codec"], "PCMU");
    assert_eq!(v["state"], "codec_unsupported");
    assert_eq!(
        v["participants"][0],
        json!({"participant_id": "p-alice", "name": "Alice", "aor": "sip:+4930111@pbx.example"})
    );
    assert_eq!(
        v["participants"][1],
        json!({"participant_id": "p-bob", "name": null, "aor": "tel:+4930222"})
    );
    assert_eq!(
        v["channels"][0],
        json!({
            "channel": 0,
            "participant_id": "p-alice",
            "name": "Alice",
            "aor": "sip:+4930111@pbx.example",
            "label": "1",
            "mapping_source": "metadata"
        })
    );
    assert_eq!(v["channels"][1]["channel"], 1);
}

#[test]
fn vocabularies_round_trip_through_text() {
    for s in RecordingState::ALL {
        assert_eq!(s.as_str().parse::<RecordingState>().unwrap(), *s);
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    for s in Source::ALL {
        assert_eq!(s.as_str().parse::<Source>().unwrap(), *s);
    }
    for s in MappingSource::ALL {
        assert_eq!(s.as_str().parse::<MappingSource>().unwrap(), *s);
    }
    for s in DataMode::ALL {
        assert_eq!(s.as_str().parse::<DataMode>().unwrap(), *s);
    }
    assert!("Complete".parse::<RecordingState>().is_err());
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    cat.add_events("r1", &[]).unwrap();
    // Bypass the API: a stats blob that is not JSON, a timestamp chrono cannot represent.
    cat.conn
        .execute(
            "UPDATE recordings SET stats_json = '{not json', started_at = ?1",
            [i64::MAX],
        )
        .unwrap();
    assert!(matches!(cat.get("r1"), Err(CatalogError::Corrupt { .. })));
    assert!(matches!(
        cat.list(&ListFilter::default()),
        Err(CatalogError::Corrupt { .. })
    ));
}

#[test]
fn second_writer_waits_for_the_first() {
    let (_d, path) = db();
    let a = Catalog::open(&path, &key()).unwrap();
    let mut b = Catalog::open(&path, &key()).unwrap();
    a.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let handle = std::thread::spawn(move || b.insert_recording(&new_rec("from-b", 1)).map(|_| b));
    std::thread::sleep(Duration::from_millis(300));
    a.conn.execute_batch("COMMIT").unwrap();
    let b = handle.join().expect("thread").expect("insert after wait");
    assert_eq!(b.list(&ListFilter::default()).unwrap().len(), 1);
}

#[test]
fn garbage_file_is_an_error_and_left_alone() {
    let (_d, path) = db();
    let junk = b"this is not an SQLite database, it is a recording someone misplaced".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    // SQLCipher cannot tell junk from a file under another key: the typed error says so.
    assert!(matches!(
        Catalog::open(&path, &key()),
        Err(CatalogError::WrongKey(_))
    ));
    assert!(matches!(
        Catalog::open_read_only(&path, &key()),
        Err(CatalogError::WrongKey(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

/// Holds reach the uplink: a recording an active hold covers is flagged for the archive's
/// legal hold; new recordings under an unchanged hold are found too; no hold, no flag.
#[test]
fn sync_upload_holds_flags_what_holds_cover() {
    use crate::lifecycle::holds::HoldTarget;
    let (_d, path) = db();
    let mut c = Catalog::open(&path, &key()).unwrap();
    for (id, t) in [("a", 1_714_555_800_000), ("b", 1_714_555_900_000)] {
        c.insert_recording(&new_rec(id, t)).unwrap();
        c.finish_recording(id, &finish(RecordingState::Complete))
            .unwrap();
    }
    let now = 1_714_600_000_000;
    assert_eq!(
        c.sync_upload_holds(now).unwrap(),
        0,
        "no hold, nothing flagged"
    );
    c.add_hold(&HoldTarget::Recording("a".into()), "case 1", "judge", now)
        .unwrap();
    assert_eq!(c.sync_upload_holds(now).unwrap(), 1);
    assert!(c.upload_row("a").unwrap().unwrap().held);
    assert!(c.upload_row("b").unwrap().is_none_or(|u| !u.held));
    assert_eq!(c.sync_upload_holds(now).unwrap(), 0, "already flagged");
    // A call-id hold placed later covers the second recording.
    c.add_hold(
        &HoldTarget::Call("call-b@sbc.example".into()),
        "case 2",
        "judge",
        now,
    )
    .unwrap();
    assert_eq!(c.sync_upload_holds(now).unwrap(), 1);
    assert!(c.upload_row("b").unwrap().unwrap().held);
}

/// A hold placed while its recording is still being written: the round that sees the
/// hold does not flag it (not final yet); the recording then finishes and is uploaded
/// within one round. The next round, holds unchanged (backlog-only mode), must still
/// find it — before, it was in neither the backlog nor a full scan, and its hold never
/// reached the archive.
#[test]
fn sync_upload_holds_finds_a_recording_uploaded_between_rounds() {
    use crate::catalog::uploads::{UploadRow, UploadState};
    use crate::lifecycle::holds::HoldTarget;
    let (_d, path) = db();
    let mut c = Catalog::open(&path, &key()).unwrap();
    let now = 1_714_600_000_000;
    c.insert_recording(&new_rec("c", now - 5_000)).unwrap();
    c.add_hold(&HoldTarget::Recording("c".into()), "case 3", "judge", now)
        .unwrap();
    assert_eq!(c.sync_upload_holds(now).unwrap(), 0, "still recording");
    c.finish_recording("c", &finish(RecordingState::Complete))
        .unwrap();
    let mut u = UploadRow::pending("c");
    u.state = UploadState::Uploaded;
    u.uploaded_at_ms = Some(now + 500);
    c.save_upload(&u).unwrap();
    assert_eq!(c.sync_upload_holds(now + 2_000).unwrap(), 1);
    assert!(c.upload_row("c").unwrap().unwrap().held);
}

#[test]
fn participants_keep_every_name_and_aor() {
    // Issue #13 item 7: a participant with several <nameID>/<aor> keeps all of them; the
    // first stays the primary name/aor, the others are stored as aliases (schema v5).
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1)).unwrap();
    let dave = ParticipantRow {
        participant_id: "p-dave".to_owned(),
        name: Some("Dave".to_owned()),
        aor: Some("sip:dave@pbx.example".to_owned()),
        other_names: vec!["David Jones".to_owned()],
        other_aors: vec![
            "tel:+4930333".to_owned(),
            "sip:+4930444@pbx.example".to_owned(),
        ],
        ..Default::default()
    };
    cat.set_participants("r1", std::slice::from_ref(&dave))
        .unwrap();
    assert_eq!(
        cat.get("r1").unwrap().unwrap().participants,
        vec![dave.clone()]
    );
    // Search by the number of a further aor finds the recording.
    let f = ListFilter {
        participant: Some("+4930444".to_owned()),
        ..ListFilter::default()
    };
    assert_eq!(cat.list(&f).unwrap().len(), 1);
    // Replacing the set replaces the aliases too.
    let plain = ParticipantRow {
        other_names: vec![],
        other_aors: vec![],
        ..dave
    };
    cat.set_participants("r1", std::slice::from_ref(&plain))
        .unwrap();
    assert_eq!(cat.get("r1").unwrap().unwrap().participants, vec![plain]);
    assert_eq!(cat.list(&f).unwrap().len(), 0);
}

/// Issue #13 item 3: a later complete snapshot that replaces Bob by Charlie keeps Bob in
/// the history (with the time he left), searchable; Charlie joins; the earliest join of
/// someone listed again is kept.
#[test]
fn participants_are_a_history_across_snapshots() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1_000)).unwrap();
    let mut first = participants();
    first[0].joined_at_ms = Some(1_000);
    first[1].joined_at_ms = Some(1_000);
    first[1].channel = Some(1);
    cat.update_participants("r1", &first, 1_000).unwrap();
    let charlie = ParticipantRow {
        participant_id: "p-charlie".to_owned(),
        aor: Some("tel:+4930333".to_owned()),
        joined_at_ms: Some(5_000),
        channel: Some(1),
        ..Default::default()
    };
    let mut alice_again = participants()[0].clone();
    alice_again.joined_at_ms = Some(5_000); // arrival time of the new version
    cat.update_participants("r1", &[alice_again, charlie.clone()], 5_000)
        .unwrap();
    let ps = cat.get("r1").unwrap().unwrap().participants;
    let by = |id: &str| ps.iter().find(|p| p.participant_id == id).cloned();
    let bob = by("p-bob").expect("Bob kept after the transfer");
    assert_eq!(
        (bob.joined_at_ms, bob.left_at_ms, bob.channel),
        (Some(1_000), Some(5_000), Some(1))
    );
    let alice = by("p-alice").unwrap();
    assert_eq!((alice.joined_at_ms, alice.left_at_ms), (Some(1_000), None));
    assert_eq!(by("p-charlie"), Some(charlie));
    for who in ["tel:+4930222", "tel:+4930333"] {
        let f = ListFilter {
            participant: Some(who.to_owned()),
            ..Default::default()
        };
        assert_eq!(cat.list(&f).unwrap().len(), 1, "{who}");
    }
}

/// Schema 8 on an existing catalogue: a version-5 file whose tombstone holds a Call-ID
/// and a session id is upgraded; afterwards neither value is anywhere in the file bytes
/// (main file or WAL) and the tombstone still reads back.
#[test]
fn upgrade_drops_personal_data_from_old_tombstones() {
    let (_d, path) = db();
    {
        let mut c = raw_conn(&path);
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        let tx = c.transaction().unwrap();
        for m in &schema::MIGRATIONS[..5] {
            m(&tx).unwrap();
        }
        tx.pragma_update(None, "user_version", 5).unwrap();
        tx.execute(
            "INSERT INTO tombstones (recording_id, call_id, session_id, started_at, deleted_at,
                 reason, actor, audit_seq)
             VALUES ('r-old', 'secret-call-4711@pbx', 'secret-session-4711', 1, 2, 'operator', 'op', 1)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    // The file bytes are encrypted: look at the decrypted page images (main file and WAL
    // frames, free space included) — and at the raw bytes, which must never hold it.
    let grep = |needle: &[u8]| -> bool {
        let raw = ["", "-wal"].iter().any(|sfx| {
            let mut p = path.clone().into_os_string();
            p.push(sfx);
            std::fs::read(&p).is_ok_and(|b| pages::contains(&b, needle))
        });
        assert!(!raw, "plaintext in the encrypted file bytes");
        pages::contains(&pages::plaintext_images(&[7; 32], &path), needle)
    };
    assert!(grep(b"secret-call-4711@pbx"), "positive control");
    let cat = Catalog::open(&path, &key()).unwrap();
    let t = cat.tombstones(None).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].recording_id, "r-old");
    assert!(
        !grep(b"secret-call-4711@pbx"),
        "Call-ID survives the upgrade"
    );
    assert!(
        !grep(b"secret-session-4711"),
        "session id survives the upgrade"
    );
}

// ---- Encryption at rest (issue 12, finding 8) ----

use crate::vault::KeyWrap as _;

fn kek(b: u8) -> crate::vault::KeyFileVault {
    crate::vault::KeyFileVault::from_key([b; 32])
}

/// The catalogue key is created once, wrapped by the KEK (0600 file, no raw key in it),
/// unwraps with that KEK to a key that opens the catalogue; another KEK, a missing key
/// file beside an encrypted catalogue or an altered wrap give the typed "cannot be
/// unwrapped" error — and never a new key.
#[test]
fn catalogue_key_wraps_unwraps_and_refuses_other_keks() {
    use std::os::unix::fs::PermissionsExt;
    let (d, path) = db();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a, created) = CatalogAccess::unlock_or_create(&path, &keys, &kek(1)).unwrap();
    assert!(created);
    a.open()
        .unwrap()
        .insert_recording(&new_rec("r1", 1))
        .unwrap();
    let file = key_file(&keys);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Again: the same key, not a new one.
    let (b, created) = CatalogAccess::unlock_or_create(&path, &keys, &kek(1)).unwrap();
    assert!(!created);
    assert_eq!(
        b.open_read_only()
            .unwrap()
            .list(&ListFilter::default())
            .unwrap()
            .len(),
        1
    );
    let c = CatalogAccess::unlock(&path, &keys, &kek(1)).unwrap();
    assert!(c.open_existing().unwrap().get("r1").unwrap().is_some());
    // The unwrapped key bytes live in a locked page (vault::locked), as the KEK's do.
    assert!(c.key_is_locked(), "catalogue key page not mlocked");
    assert_eq!(
        wrapped_under(&keys).unwrap().unwrap(),
        vec![kek(1).kek_id()]
    );

    // Another KEK: typed error naming the KEKs, and the key file is left alone.
    let before = std::fs::read(&file).unwrap();
    for res in [
        CatalogAccess::unlock(&path, &keys, &kek(2)).map(|_| ()),
        CatalogAccess::unlock_or_create(&path, &keys, &kek(2)).map(|_| ()),
    ] {
        let e = res.unwrap_err();
        assert!(matches!(e, CatalogKeyError::Unwrap { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("catalogue key cannot be unwrapped: "),
            "{msg}"
        );
        assert!(msg.contains(&kek(2).kek_id()), "{msg}");
        assert!(!msg.contains("not a database"), "{msg}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // An altered wrap fails authentication.
    let mut v: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let w = v["wraps"][0]["wrapped"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", &w[..20], if &w[20..21] == "0" { "1" } else { "0" }) + &w[21..];
    v["wraps"][0]["wrapped"] = json!(flipped);
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = CatalogAccess::unlock(&path, &keys, &kek(1)).unwrap_err();
    assert!(e.to_string().contains("failed authentication"), "{e}");
    std::fs::write(&file, &before).unwrap();

    // The key file gone beside an encrypted catalogue: refused, nothing created.
    std::fs::remove_file(&file).unwrap();
    let e = CatalogAccess::unlock_or_create(&path, &keys, &kek(1)).unwrap_err();
    assert!(matches!(e, CatalogKeyError::Missing { .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with("catalogue key cannot be unwrapped: "));
    assert!(
        !file.exists(),
        "a new key was made beside an encrypted catalogue"
    );
    // A locked access says why on every open.
    let l = CatalogAccess::unavailable(&path, "TPM refuses".into());
    assert!(matches!(l.open(), Err(CatalogError::Locked(ref w)) if w == "TPM refuses"));
}

/// A file under another catalogue key is a typed error, never SQLite's "file is not a
/// database"; the bytes are left alone.
#[test]
fn wrong_catalogue_key_is_a_typed_error() {
    let (_d, path) = db();
    Catalog::open(&path, &key())
        .unwrap()
        .insert_recording(&new_rec("r1", 1))
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    for e in [
        Catalog::open(&path, &CatalogKey::for_tests(8)).unwrap_err(),
        Catalog::open_read_only(&path, &CatalogKey::for_tests(8)).unwrap_err(),
    ] {
        assert!(matches!(e, CatalogError::WrongKey(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("does not decrypt with this box's catalogue key"),
            "{msg}"
        );
        assert!(!msg.contains("not a database"), "{msg}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

fn file_has(p: &Path, needle: &[u8]) -> bool {
    std::fs::read(p).is_ok_and(|b| pages::contains(&b, needle))
}

fn sibling_file(p: &Path, sfx: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(sfx);
    PathBuf::from(s)
}

/// An old build's plaintext catalogue (the schema code creating it without a key) is
/// refused by every keyed open until the daemon's start-up converts it: once, with every
/// row, readable and searchable under the key, and afterwards no plaintext in the main
/// file, WAL or shared memory, no leftover copy. A second start does nothing.
#[test]
fn plaintext_catalogue_is_encrypted_once() {
    let (d, path) = db();
    {
        let mut c = Catalog::open_unencrypted(&path).unwrap();
        c.insert_recording(&new_rec("r-old", 1_000)).unwrap();
        c.set_participants("r-old", &participants()).unwrap();
        c.add_metadata_version(
            "r-old",
            &MetadataVersion {
                received_at_ms: 1_001,
                sip_method: "INVITE".into(),
                content_type: "application/rs-metadata+xml".into(),
                data_mode: None,
                raw: b"<recording><nameID aor=\"sip:+4930111@pbx.example\"/></recording>".to_vec(),
            },
        )
        .unwrap();
        // As after a crash of the old build: its WAL and shared memory are left beside it
        // (copied while open, put back after the close removed them).
        let wal = std::fs::read(sibling_file(&path, "-wal")).unwrap();
        let shm = std::fs::read(sibling_file(&path, "-shm")).unwrap();
        drop(c);
        std::fs::write(sibling_file(&path, "-wal"), wal).unwrap();
        std::fs::write(sibling_file(&path, "-shm"), shm).unwrap();
    }
    let needle = b"+4930111";
    assert!(
        [path.clone(), sibling_file(&path, "-wal")]
            .iter()
            .any(|p| file_has(p, needle)),
        "positive control: the old layout is plaintext"
    );
    assert_eq!(file_kind(&path).unwrap(), FileKind::Plaintext);
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a, created) = CatalogAccess::unlock_or_create(&path, &keys, &kek(3)).unwrap();
    assert!(
        created,
        "the key is created with the first encrypted catalogue"
    );
    assert!(matches!(
        a.open_read_only(),
        Err(CatalogError::NotEncrypted(_))
    ));
    assert!(matches!(a.open(), Err(CatalogError::NotEncrypted(_))));
    let conv = a.encrypt_if_plaintext().unwrap().expect("converted");
    assert_eq!((conv.recordings, conv.schema_version), (1, SCHEMA_VERSION));
    assert_eq!(file_kind(&path).unwrap(), FileKind::Encrypted);
    for sfx in ["", "-wal", "-shm", ".plaintext", ".encrypting"] {
        assert!(
            !file_has(&sibling_file(&path, sfx), needle),
            "plaintext left in {sfx:?}"
        );
    }
    assert!(!sibling_file(&path, ".plaintext").exists());
    assert!(!sibling_file(&path, ".encrypting").exists());
    let cat = a.open().unwrap();
    let f = ListFilter {
        participant: Some("+4930111".into()),
        ..Default::default()
    };
    assert_eq!(cat.list(&f).unwrap().len(), 1);
    let got = cat.get("r-old").unwrap().unwrap();
    assert_eq!(got.participants.len(), 2);
    assert_eq!(got.metadata_versions.len(), 1);
    drop(cat);
    for sfx in ["", "-wal", "-shm"] {
        assert!(
            !file_has(&sibling_file(&path, sfx), needle),
            "{sfx:?} after use"
        );
    }
    assert!(
        a.encrypt_if_plaintext().unwrap().is_none(),
        "converted twice"
    );
    // A crash after the rename left the retired plaintext: the next start removes it.
    std::fs::write(
        sibling_file(&path, ".plaintext"),
        b"SQLite format 3\0 +4930111",
    )
    .unwrap();
    assert!(a.encrypt_if_plaintext().unwrap().is_none());
    assert!(!sibling_file(&path, ".plaintext").exists());
}

/// KEK rotation: the catalogue key gets a wrap under the new KEK before the switch and
/// loses the old one after; the new KEK alone then opens the catalogue, the old no more.
#[test]
fn rotation_rewraps_the_catalogue_key() {
    let (d, path) = db();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a, _) = CatalogAccess::unlock_or_create(&path, &keys, &kek(4)).unwrap();
    a.open()
        .unwrap()
        .insert_recording(&new_rec("r1", 1))
        .unwrap();
    let both = crate::vault::KekSet::new(vec![kek(5), kek(4)]).unwrap();
    rewrap(&keys, &both).unwrap();
    rewrap(&keys, &both).unwrap(); // idempotent (a resumed rotation)
    assert_eq!(
        wrapped_under(&keys).unwrap().unwrap(),
        vec![kek(5).kek_id(), kek(4).kek_id()]
    );
    // Mid-rotation either KEK opens it.
    for k in [kek(4), kek(5)] {
        let a = CatalogAccess::unlock(&path, &keys, &k).unwrap();
        assert!(a.open_read_only().unwrap().get("r1").unwrap().is_some());
    }
    retain_only(&keys, &kek(5).kek_id()).unwrap();
    assert!(CatalogAccess::unlock(&path, &keys, &kek(4)).is_err());
    let a = CatalogAccess::unlock(&path, &keys, &kek(5)).unwrap();
    assert!(a.open_read_only().unwrap().get("r1").unwrap().is_some());
}

#[test]
fn audit_entries_are_keyed_from_the_marker_on() {
    use crate::lifecycle::audit::{verify_macs, KEYED_ACTION};
    use crate::vault::audit_key::AuditMacKey;
    let (_d, path) = db();
    let ck = key();
    let mut cat = Catalog::open(&path, &ck).unwrap();
    cat.set_audit_key(None);
    for i in 0..3 {
        cat.audit(1000 + i, "cli:a", "hold.add", "x", json!({}))
            .unwrap();
    }
    let key = Arc::new(AuditMacKey::from_bytes(&[1; 32]));
    cat.set_audit_key(Some(key.clone()));
    cat.audit(2000, "cli:a", "hold.add", "y", json!({}))
        .unwrap();
    cat.audit(2001, "cli:a", "hold.add", "z", json!({}))
        .unwrap();
    let e = cat.audit_entries(0, None).unwrap();
    assert_eq!(e.len(), 6, "{e:?}");
    // The marker comes first, written by the first keyed append.
    assert_eq!(e[3].action, KEYED_ACTION);
    assert!(e[..3].iter().all(|e| e.mac.is_none()));
    assert!(e[3..].iter().all(|e| e.mac.is_some()));
    let lax = crate::lifecycle::audit::VerifyPolicy {
        counter: crate::lifecycle::audit::CounterReading::Unset,
        now: crate::time::UnixMs(2001),
        max_unsigned: std::time::Duration::MAX,
    };
    let r = verify_macs(&e, Some(key.as_bytes()), 0, &lax);
    assert_eq!((r.keyed_from, r.unkeyed, r.verified), (Some(4), 3, 3));
    assert!(r.problems.is_empty(), "{r:?}");
    // The chain itself is unchanged by keying.
    assert!(crate::lifecycle::audit::verify(&e, &[], &lax, |_| Ok(())).is_empty());
    // A writer without the key after keying started: pending until the next head…
    cat.set_audit_key(None);
    cat.audit(2002, "cli:b", "recordings.list", "", json!({}))
        .unwrap();
    let e = cat.audit_entries(0, None).unwrap();
    let r = verify_macs(&e, Some(key.as_bytes()), 0, &lax);
    assert_eq!((r.pending, r.problems.len()), (1, 0), "{r:?}");
    // …a head that covers it without keying it (or a MAC stripped) is a problem…
    let r = verify_macs(&e, Some(key.as_bytes()), 7, &lax);
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert_eq!(r.problems[0].position, 7);
    // …and the next head signed with the key keys it late.
    cat.set_audit_key(Some(key.clone()));
    let dir = tempfile::tempdir().unwrap();
    let hs = crate::vault::HeadSigner {
        key: Arc::new(crate::vault::Ed25519Signer::from_seed(
            &zeroize::Zeroizing::new([2; 32]),
        )),
        counter: Box::new(crate::vault::counter::FileCounter::new(
            dir.path().join("c"),
        )),
    };
    assert_eq!(cat.sign_audit_head(&hs, 2003).unwrap(), Some(7));
    let e = cat.audit_entries(0, None).unwrap();
    let r = verify_macs(&e, Some(key.as_bytes()), 7, &lax);
    assert!(r.problems.is_empty(), "{r:?}");
    assert_eq!(r.keyed_late, vec![7]);
    // Reopened: the marker is not written twice.
    drop(cat);
    let mut cat = Catalog::open(&path, &ck).unwrap();
    cat.set_audit_key(Some(key));
    cat.audit(2003, "cli:a", "hold.add", "w", json!({}))
        .unwrap();
    let e = cat.audit_entries(0, None).unwrap();
    assert_eq!(e.iter().filter(|e| e.action == KEYED_ACTION).count(), 1);
}

/// A crash of the conversion between the hard link and the rename leaves the plaintext
/// catalogue linked as `<db>.plaintext` beside an unfinished `<db>.encrypting`: the next
/// start must not overwrite the link (it is the catalogue itself) but drop it and convert
/// again, with every row. (Before: the leftover clean-up zeroed it, catalogue and all.)
#[test]
fn crash_between_link_and_rename_keeps_the_catalogue() {
    let (d, path) = db();
    {
        let mut c = Catalog::open_unencrypted(&path).unwrap();
        c.insert_recording(&new_rec("r-crash", 1_000)).unwrap();
        c.set_participants("r-crash", &participants()).unwrap();
    }
    std::fs::hard_link(&path, sibling_file(&path, ".plaintext")).unwrap();
    std::fs::write(sibling_file(&path, ".encrypting"), b"half an export").unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a, _) = CatalogAccess::unlock_or_create(&path, &keys, &kek(6)).unwrap();
    let conv = a.encrypt_if_plaintext().unwrap().expect("converted again");
    assert_eq!(conv.recordings, 1);
    assert_eq!(file_kind(&path).unwrap(), FileKind::Encrypted);
    assert!(!sibling_file(&path, ".plaintext").exists());
    assert!(!sibling_file(&path, ".encrypting").exists());
    let got = a.open().unwrap().get("r-crash").unwrap().expect("row kept");
    assert_eq!(got.participants.len(), 2);
}

#[test]
fn direction_reads_what_the_rules_stored() {
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    cat.insert_recording(&new_rec("r1", 1_714_555_800_250))
        .unwrap();
    assert_eq!(cat.direction("r1").unwrap(), None);
    cat.set_policy(
        "r1",
        &super::lifecycle::Policy {
            rule: Some("vip".into()),
            direction: Some("outbound".into()),
            retention_class: "long".into(),
            retention_ms: None,
            min_duration_ms: 0,
            tags: vec!["vip".into()],
        },
    )
    .unwrap();
    assert_eq!(cat.direction("r1").unwrap().as_deref(), Some("outbound"));
    assert_eq!(cat.direction("nope").unwrap(), None);
}

/// Issue #19: verdicts of recordings, `calls_seen` rows without personal data, the
/// `--verdict` filter and the calls of a period.
#[test]
fn assurance_verdicts_and_calls_seen() {
    use crate::assurance::Verdict;
    let (_d, path) = db();
    let mut cat = Catalog::open(&path, &key()).unwrap();
    let t0 = 1_714_555_800_000;
    for (id, t) in [("r1", t0), ("r2", t0 + 60_000), ("r3", t0 + 120_000)] {
        cat.insert_recording(&new_rec(id, t)).unwrap();
        cat.set_participants(id, &participants()).unwrap();
    }
    cat.finish_recording("r1", &finish(RecordingState::Complete))
        .unwrap();
    cat.finish_recording("r2", &finish(RecordingState::Complete))
        .unwrap();
    cat.set_assurance("r1", Verdict::Recorded, &json!({"verdict": "recorded"}))
        .unwrap();
    cat.set_assurance(
        "r2",
        Verdict::OneWay,
        &json!({"verdict": "one_way", "silent_channels": [1]}),
    )
    .unwrap();
    assert!(
        cat.set_assurance("r1", Verdict::Refused, &json!({}))
            .is_err(),
        "a recording is never refused"
    );
    assert!(matches!(
        cat.set_assurance("nope", Verdict::Recorded, &json!({})),
        Err(CatalogError::NotFound(_))
    ));
    let one_way = cat
        .list(&ListFilter {
            verdict: Some("one_way".into()),
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(
        one_way.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r2"]
    );
    assert_eq!(one_way[0].verdict.as_deref(), Some("one_way"));
    let d = cat.get("r2").unwrap().unwrap();
    assert_eq!(
        d.recording.assurance_json.unwrap()["silent_channels"],
        json!([1])
    );
    cat.add_call_seen(&CallSeenRow {
        id: "seen-1".into(),
        source: Source::Siprec,
        seen_at_ms: t0 + 30_000,
        verdict: Verdict::Refused,
        reason: "no_keys".into(),
        rule: None,
        direction: None,
    })
    .unwrap();
    assert!(cat
        .add_call_seen(&CallSeenRow {
            id: "seen-2".into(),
            source: Source::Siprec,
            seen_at_ms: t0,
            verdict: Verdict::Recorded,
            reason: "x".into(),
            rule: None,
            direction: None,
        })
        .is_err());
    let (calls, unjudged) = cat.calls_seen_between(t0, t0 + 86_400_000).unwrap();
    assert_eq!(unjudged, 1, "r3 is still recording");
    let got: Vec<(&str, Verdict)> = calls.iter().map(|c| (c.id.as_str(), c.verdict)).collect();
    assert_eq!(
        got,
        [
            ("r1", Verdict::Recorded),
            ("seen-1", Verdict::Refused),
            ("r2", Verdict::OneWay)
        ]
    );
    assert_eq!(calls[0].numbers, ["+4930111", "+4930222"]);
    assert!(calls[1].numbers.is_empty());
    // The calls_seen table has no column for personal data.
    let cols: Vec<String> = cat
        .conn
        .prepare("PRAGMA table_info(calls_seen)")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        cols,
        [
            "id",
            "source",
            "seen_at",
            "verdict",
            "reason",
            "rule",
            "direction"
        ]
    );
}

// ---- `recordings list` through indexes (schema 10, issue 12) ----

use crate::lifecycle::holds::HoldTarget;
use crate::lifecycle::pattern::aor_matches;
use crate::time::UnixMs;
use lifecycle::Policy;

const MIN: i64 = 60_000;

/// A catalogue of `n` recordings, one a minute from t = 0, finished after `i % 7 + 1`
/// minutes except every 10th (running); two participants each (`sip:+4930<i%13>@pbx`
/// and `tel:+4940<i>`), every 5th with an alias AoR `sip:+4950<i%3>@alias`; tags
/// `support` (every 3rd) and `mifid` (every 11th); one recording of 3 hours at i = 40.
fn list_catalogue(path: &Path, n: i64) -> Catalog {
    let mut cat = Catalog::open(path, &key()).unwrap();
    for i in 0..n {
        let id = format!("r{i:03}");
        let mut rec = new_rec(&id, i * MIN);
        rec.session_id = Some(format!("sess-{i}"));
        cat.insert_recording(&rec).unwrap();
        let mut ps = vec![
            ParticipantRow {
                participant_id: "a".into(),
                aor: Some(format!("sip:+4930{}@pbx", i % 13)),
                ..Default::default()
            },
            ParticipantRow {
                participant_id: "b".into(),
                aor: Some(format!("tel:+4940{i}")),
                ..Default::default()
            },
        ];
        if i % 5 == 0 {
            ps[1].other_aors.push(format!("sip:+4950{}@alias", i % 3));
            ps[1].other_names.push(format!("Name {i}"));
        }
        cat.set_participants(&id, &ps).unwrap();
        let mut tags = Vec::new();
        if i % 3 == 0 {
            tags.push("support".to_string());
        }
        if i % 11 == 0 {
            tags.push("mifid".to_string());
        }
        cat.set_policy(
            &id,
            &Policy {
                retention_class: "default".into(),
                tags,
                ..Default::default()
            },
        )
        .unwrap();
        if i % 10 != 9 {
            let len = if i == 40 {
                180 * MIN
            } else {
                (i % 7 + 1) * MIN
            };
            let f = Finish {
                ended_at_ms: i * MIN + len,
                duration_ms: len as u64,
                ..finish(RecordingState::Complete)
            };
            cat.finish_recording(&id, &f).unwrap();
            // Issue #19: some verdicts for `--verdict`.
            let v = if i % 3 == 0 {
                crate::assurance::Verdict::OneWay
            } else {
                crate::assurance::Verdict::Recorded
            };
            cat.set_assurance(&id, v, &json!({ "verdict": v })).unwrap();
        }
    }
    cat
}

/// The filters `recordings list` offers, each alone and in the combinations the CLI
/// allows, with a `LIMIT` and without.
fn list_cases(now: i64) -> Vec<(&'static str, ListFilter)> {
    let f = |lf: ListFilter| ListFilter { now_ms: now, ..lf };
    let mut v = vec![
        (
            "since",
            f(ListFilter {
                since_ms: Some(40 * MIN),
                ..Default::default()
            }),
        ),
        (
            "since+until",
            f(ListFilter {
                since_ms: Some(40 * MIN),
                until_ms: Some(50 * MIN),
                ..Default::default()
            }),
        ),
        (
            "state",
            f(ListFilter {
                state: Some(RecordingState::Recording),
                ..Default::default()
            }),
        ),
        (
            "call",
            f(ListFilter {
                call: Some("call-r007@sbc.example".into()),
                ..Default::default()
            }),
        ),
        (
            "call (session id)",
            f(ListFilter {
                call: Some("sess-8".into()),
                ..Default::default()
            }),
        ),
        (
            "participant exact",
            f(ListFilter {
                participant: Some("+49307".into()),
                ..Default::default()
            }),
        ),
        (
            "participant prefix",
            f(ListFilter {
                participant: Some("+49301*".into()),
                ..Default::default()
            }),
        ),
        (
            "participant aor",
            f(ListFilter {
                participant: Some("sip:+49305@pbx".into()),
                ..Default::default()
            }),
        ),
        (
            "participant alias",
            f(ListFilter {
                participant: Some("+49501".into()),
                ..Default::default()
            }),
        ),
        (
            "tag",
            f(ListFilter {
                tag: Some("mifid".into()),
                ..Default::default()
            }),
        ),
        (
            "held",
            f(ListFilter {
                held: Some(true),
                ..Default::default()
            }),
        ),
        (
            "tag+since",
            f(ListFilter {
                tag: Some("support".into()),
                since_ms: Some(30 * MIN),
                ..Default::default()
            }),
        ),
        (
            "participant+tag",
            f(ListFilter {
                participant: Some("+4930*".into()),
                tag: Some("support".into()),
                ..Default::default()
            }),
        ),
        (
            "held+participant+state",
            f(ListFilter {
                held: Some(true),
                participant: Some("+4930*".into()),
                state: Some(RecordingState::Complete),
                ..Default::default()
            }),
        ),
        (
            "held+since",
            f(ListFilter {
                held: Some(true),
                since_ms: Some(50 * MIN),
                ..Default::default()
            }),
        ),
        (
            "verdict",
            f(ListFilter {
                verdict: Some("one_way".into()),
                ..Default::default()
            }),
        ),
        (
            "verdict+since",
            f(ListFilter {
                verdict: Some("one_way".into()),
                since_ms: Some(30 * MIN),
                ..Default::default()
            }),
        ),
    ];
    let limited: Vec<_> = v
        .iter()
        .map(|(n, lf)| {
            (
                *n,
                ListFilter {
                    limit: Some(5),
                    ..lf.clone()
                },
            )
        })
        .collect();
    v.extend(limited);
    v
}

/// Holds of every kind: a recording, a call, a session id, participant patterns (one
/// matching only through an alias AoR), two windows (one reached only by the 3-hour
/// recording, one after the running recordings started), and a released hold.
fn place_holds(cat: &mut Catalog, now: i64) {
    let add = |cat: &mut Catalog, t: HoldTarget| cat.add_hold(&t, "case", "op", now).unwrap();
    add(cat, HoldTarget::Recording("r003".into()));
    add(cat, HoldTarget::Call("call-r017@sbc.example".into()));
    add(cat, HoldTarget::Call("sess-23".into()));
    add(cat, HoldTarget::Participant("+49304".into()));
    add(cat, HoldTarget::Participant("sip:+49502@*".into()));
    add(cat, HoldTarget::Participant("tel:+49401?".into()));
    // Only r040 (3 hours from minute 40) overlaps minutes 200..201 among the early ones.
    add(
        cat,
        HoldTarget::Window {
            from: UnixMs(200 * MIN),
            to: UnixMs(201 * MIN),
        },
    );
    // Running recordings (ended_at NULL) count as ending "now".
    add(
        cat,
        HoldTarget::Window {
            from: UnixMs(now - MIN),
            to: UnixMs(now),
        },
    );
    let released = add(cat, HoldTarget::Participant("+49309".into()));
    cat.release_hold(released, "op2", "done", now).unwrap();
}

/// Every list filter is answered through indexes: no step of the plan scans
/// `recordings`, `participants`, `participant_aliases` or `tags` (a `SCAN` of the
/// subquery `m` the filters build is fine: it is their result), before and after
/// `ANALYZE`, on the query `Catalog::list` really runs with its arguments bound.
#[test]
fn every_list_filter_uses_an_index() {
    let (_d, path) = db();
    let mut cat = list_catalogue(&path, 60);
    let now = 10_000 * MIN;
    place_holds(&mut cat, now);
    let tables = [
        "r",
        "recordings",
        "participants",
        "participant_aliases",
        "tags",
    ];
    let check = |cat: &Catalog, stats: &str| {
        for (name, lf) in list_cases(now) {
            let plan = cat.list_plan(&lf).unwrap();
            for step in &plan {
                let scanned = step
                    .strip_prefix("SCAN ")
                    .map(|rest| rest.split_whitespace().next().unwrap_or(""));
                if let Some(t) = scanned {
                    assert!(
                        !tables.contains(&t),
                        "{name} ({stats}): `{step}` scans a table: {plan:#?}"
                    );
                }
            }
            assert!(
                plan.iter().any(|s| s.starts_with("SEARCH")),
                "{name} ({stats}): no index search at all: {plan:#?}"
            );
            let uses = |idx: &str| plan.iter().any(|s| s.contains(idx));
            let want: &[&str] = match name {
                "since" | "since+until" => &["recordings_started_at"],
                "state" => &["recordings_state"],
                "call" | "call (session id)" => &["recordings_call_id", "recordings_session_id"],
                "participant exact" | "participant prefix" | "participant aor"
                | "participant alias" => &[
                    "participants_number_started",
                    "participants_aor_started",
                    "participant_aliases_number_started",
                    "participant_aliases_value_started",
                ],
                "tag" | "tag+since" => &["COVERING INDEX tags_tag_started"],
                "verdict" | "verdict+since" => &["recordings_verdict"],
                "held" | "held+since" => &[
                    "recordings_call_id",
                    "participants_number_started",
                    "recordings_started_at",
                    "recordings_open",
                ],
                _ => &[],
            };
            for idx in want {
                assert!(uses(idx), "{name} ({stats}): {idx} not used: {plan:#?}");
            }
            // The list itself still runs.
            cat.list(&lf).unwrap();
        }
        // Without any filter the newest rows come along `started_at` (a scan of that
        // index, stopped by the LIMIT) — the one case where reading in order is the plan.
        let plan = cat
            .list_plan(&ListFilter {
                limit: Some(50),
                ..Default::default()
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|s| s == "SCAN r USING INDEX recordings_started_at"),
            "{plan:#?}"
        );
        // Not held: the same walk, dropping the (indexed) held set's rows; never a bare
        // table scan.
        let plan = cat
            .list_plan(&ListFilter {
                held: Some(false),
                limit: Some(50),
                now_ms: now,
                ..Default::default()
            })
            .unwrap();
        assert!(
            plan.iter().all(|s| s != "SCAN r" && s != "SCAN recordings"),
            "{plan:#?}"
        );
        assert!(
            plan.iter().any(|s| s.contains("recordings_open")),
            "{plan:#?}"
        );
    };
    check(&cat, "no statistics");
    // Statistics of a catalogue of realistic size: 20,000 more recordings (before the
    // others, finished, two participants each, every 4th tagged), then ANALYZE — the
    // plans must still be the indexed ones (on 60 rows the planner rightly prefers scans).
    {
        let tx = cat.conn.unchecked_transaction().unwrap();
        tx.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO recordings (id, source, call_id, src_addr, started_at, ended_at,
                 duration_ms, codec, sample_rate, channels, state, created_at)
             SELECT 'bulk-' || i, 'siprec', 'bulk-call-' || i, '192.0.2.1:5060',
                 -i * 60000, -i * 60000 + 120000, 120000, 'PCMU', 8000, 2, 'complete', 0 FROM n;
             INSERT INTO participants (recording_id, participant_id, aor, number)
             SELECT id, 'a', 'sip:+4960' || substr(id, 6) || '@pbx', '+4960' || substr(id, 6)
             FROM recordings WHERE id GLOB 'bulk-*';
             INSERT INTO participants (recording_id, participant_id, aor, number)
             SELECT id, 'b', 'sip:' || (abs(random()) % 500) || '@pbx', '' || (abs(random()) % 500)
             FROM recordings WHERE id GLOB 'bulk-*';
             INSERT INTO tags (recording_id, tag)
             SELECT id, 'bulk' FROM recordings WHERE id GLOB 'bulk-*' AND rowid % 4 = 0;",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    cat.conn.execute_batch("ANALYZE").unwrap();
    drop(cat);
    let cat = Catalog::open_read_only(&path, &key()).unwrap();
    check(&cat, "after ANALYZE");
}

/// What every recording's facts say, decided in memory (`lifecycle::holds::covers`
/// through `holds_covering`, `pattern::aor_matches` over every AoR and alias AoR) —
/// against what `list` returns through the indexes, for every filter and combination,
/// with and without a limit: the same recordings, newest first, and the same `held` flag.
#[test]
fn list_results_match_the_in_memory_rules_exactly() {
    let (_d, path) = db();
    let mut cat = list_catalogue(&path, 60);
    let now = 10_000 * MIN;
    place_holds(&mut cat, now);
    // Rows as the catalogue holds them, newest first (ids break ties ascending).
    let all = cat
        .list(&ListFilter {
            now_ms: now,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 60);
    let detail: Vec<RecordingDetail> = all
        .iter()
        .map(|s| cat.get(&s.id).unwrap().unwrap())
        .collect();
    let held: Vec<bool> = all
        .iter()
        .map(|s| !cat.holds_covering(&s.id, now).unwrap().is_empty())
        .collect();
    // The holds cover what they should (so the comparison below is not vacuous).
    let held_ids: Vec<&str> = all
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(s, _)| s.id.as_str())
        .collect();
    for want in ["r003", "r017", "r023", "r004", "r040", "r059", "r049"] {
        assert!(held_ids.contains(&want), "{want} not held: {held_ids:?}");
    }
    // r005 and r020 only through their alias AoR sip:+49502@alias, r010 by `tel:+49401?`;
    // r000 (alias +49500), r001 (tel:+49401, one digit short) and r002 by nothing.
    for want in ["r005", "r020", "r010"] {
        assert!(held_ids.contains(&want), "{want} not held: {held_ids:?}");
    }
    for not in ["r000", "r001", "r002"] {
        assert!(!held_ids.contains(&not), "{not} held: {held_ids:?}");
    }
    for s in &all {
        let i = all.iter().position(|x| x.id == s.id).unwrap();
        assert_eq!(s.lifecycle.held, held[i], "held flag of {}", s.id);
    }
    let matches_participant = |d: &RecordingDetail, p: &str| {
        d.participants.iter().any(|x| {
            x.aor
                .iter()
                .chain(x.other_aors.iter())
                .any(|a| aor_matches(p, a))
        })
    };
    for (name, lf) in list_cases(now) {
        let want: Vec<&str> = all
            .iter()
            .zip(&detail)
            .zip(&held)
            .filter(|((s, d), h)| {
                let r = &d.recording;
                lf.state.is_none_or(|st| s.state == st)
                    && lf.since_ms.is_none_or(|t| r.started_at_ms >= t)
                    && lf.until_ms.is_none_or(|t| r.started_at_ms < t)
                    && lf.call.as_ref().is_none_or(|c| {
                        *c == r.call_id || r.session_id.as_deref() == Some(c.as_str())
                    })
                    && lf.tag.as_ref().is_none_or(|t| s.lifecycle.tags.contains(t))
                    && lf
                        .participant
                        .as_ref()
                        .is_none_or(|p| matches_participant(d, p.as_str()))
                    && lf.held.is_none_or(|w| **h == w)
                    && lf
                        .verdict
                        .as_ref()
                        .is_none_or(|v| s.verdict.as_deref() == Some(v.as_str()))
            })
            .map(|((s, _), _)| s.id.as_str())
            .take(lf.limit.map_or(usize::MAX, |n| n as usize))
            .collect();
        assert!(!want.is_empty(), "{name}: the case selects nothing");
        let got = cat.list(&lf).unwrap();
        let got_ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(got_ids, want, "{name}");
        for g in &got {
            let i = all.iter().position(|x| x.id == g.id).unwrap();
            assert_eq!(g.lifecycle.held, held[i], "{name}: held flag of {}", g.id);
        }
    }
    // Not held: the complement, newest first.
    let not_held = cat
        .list(&ListFilter {
            held: Some(false),
            now_ms: now,
            ..Default::default()
        })
        .unwrap();
    let want: Vec<&str> = all
        .iter()
        .zip(&held)
        .filter(|(_, h)| !**h)
        .map(|(s, _)| s.id.as_str())
        .collect();
    assert_eq!(
        not_held.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        want
    );
    // Releasing the participant hold drops exactly its recordings from the held set.
    let hid = cat
        .holds(false, now)
        .unwrap()
        .into_iter()
        .find(|h| h.value.as_deref() == Some("+49304"))
        .unwrap()
        .id;
    cat.release_hold(hid, "op2", "done", now).unwrap();
    let after: Vec<String> = cat
        .list(&ListFilter {
            held: Some(true),
            now_ms: now,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let want: Vec<String> = all
        .iter()
        .filter(|s| !cat.holds_covering(&s.id, now).unwrap().is_empty())
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(after, want);
    assert!(!after.contains(&"r004".to_string()) && after.contains(&"r003".to_string()));
}

/// A catalogue of schema 9 upgrades in place: the start times are copied to
/// participants, aliases and tags, the new indexes exist, the old single-column ones are
/// gone, and later inserts and a changed start time keep the copies right.
#[test]
fn list_indexes_upgrade_in_place() {
    let (_d, path) = db();
    {
        let mut c = raw_conn(&path);
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        let tx = c.transaction().unwrap();
        for m in &schema::MIGRATIONS[..9] {
            m(&tx).unwrap();
        }
        tx.pragma_update(None, "user_version", 9).unwrap();
        tx.execute_batch(
            "INSERT INTO recordings (id, source, call_id, src_addr, started_at, codec, sample_rate,
                 channels, state, created_at)
             VALUES ('old', 'siprec', 'c-old', '192.0.2.1:5060', 5000, 'PCMU', 8000, 2, 'recording', 5000);
             INSERT INTO participants (recording_id, participant_id, aor, number)
             VALUES ('old', 'a', 'sip:+4930777@pbx', '+4930777');
             INSERT INTO participant_aliases (recording_id, participant_id, kind, position, value, number)
             VALUES ('old', 'a', 'aor', 1, 'sip:+4930888@pbx', '+4930888');
             INSERT INTO tags (recording_id, tag) VALUES ('old', 'mifid');
             INSERT INTO holds (kind, value, reason, operator, created_at)
             VALUES ('participant', '+4930888', 'case', 'op', 1);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let mut cat = Catalog::open(&path, &key()).unwrap();
    let copies = |cat: &Catalog| -> Vec<Option<i64>> {
        ["participants", "participant_aliases", "tags"]
            .iter()
            .map(|t| {
                cat.conn
                    .query_row(
                        &format!("SELECT started_at FROM {t} WHERE recording_id = 'old'"),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(copies(&cat), [Some(5000); 3]);
    let names: Vec<String> = cat
        .conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for want in [
        "participants_number_started",
        "participants_aor_started",
        "participant_aliases_number_started",
        "participant_aliases_value_started",
        "tags_tag_started",
        "recordings_span",
        "recordings_open",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for gone in [
        "participants_number",
        "participants_aor",
        "tags_tag",
        "participant_aliases_number",
    ] {
        assert!(!names.iter().any(|n| n == gone), "{gone} still there");
    }
    let lf = |p: &str| ListFilter {
        participant: Some(p.into()),
        limit: Some(5),
        now_ms: 9_000,
        ..Default::default()
    };
    assert_eq!(cat.list(&lf("+4930888")).unwrap().len(), 1);
    let held = cat
        .list(&ListFilter {
            held: Some(true),
            now_ms: 9_000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].lifecycle.held, "held through its alias AoR");
    // A changed start time follows into every copy; new rows get theirs from the insert.
    cat.conn
        .execute(
            "UPDATE recordings SET started_at = 7000 WHERE id = 'old'",
            [],
        )
        .unwrap();
    assert_eq!(copies(&cat), [Some(7000); 3]);
    cat.insert_recording(&new_rec("new", 8000)).unwrap();
    cat.set_participants("new", &participants()).unwrap();
    cat.set_policy(
        "new",
        &Policy {
            retention_class: "d".into(),
            tags: vec!["mifid".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let n: i64 = cat
        .conn
        .query_row(
            "SELECT (SELECT count(*) FROM participants WHERE recording_id = 'new' AND started_at = 8000)
                  + (SELECT count(*) FROM tags WHERE recording_id = 'new' AND started_at = 8000)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 3);
    let tagged: Vec<String> = cat
        .list(&ListFilter {
            tag: Some("mifid".into()),
            limit: Some(1),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(tagged, ["new"]);
}
