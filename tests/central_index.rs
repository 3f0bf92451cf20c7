//! Issue #14, the central index: a real PostgreSQL 15 (initdb + pg_ctl in a temporary
//! directory, Unix socket, as `nobody` under root), moto behind TLS, three daemons with
//! their own data directories recording SIPREC calls with distinct participants and
//! uploading with a compliance key. Then `branchrec-central`: box A enrolled with its
//! real key, box C enrolled with another key (a changed key), box B unknown (first
//! seen); `index --once`; `search --participant` exact and prefix across boxes; a second
//! indexer run indexes nothing twice; one flipped byte in an indexed container is
//! quarantined with an alarm on `--rescan`; C's manifests are quarantined as signed by a
//! changed key until the operator enrols its real key; no test number or name in
//! plaintext in any object of the bucket; the central audit log has every access and a
//! changed entry breaks its verification.

#[path = "common/central.rs"]
mod central_common;
mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use central_common::{central, central_ok};
use common::{output_bounded, Daemon};
use s3::s3check;
use serde_json::Value;
use siprec_client::{invite_parties, Invite};

const BUCKET: &str = "archive";

/// (box, site, calls: ((aor, name), (aor, name))).
type Party = (&'static str, &'static str);
const BOXES: [(&str, &str, &[(Party, Party)]); 3] = [
    (
        "box-a",
        "london",
        &[
            (
                ("tel:+442079460001", "Alice Ashworth"),
                ("sip:+441632960002@branch.example", "Bob Brennan"),
            ),
            (
                ("tel:+442079460099", "Carol Carter"),
                ("sip:+441632960003@branch.example", "Dan Dawson"),
            ),
        ],
    ),
    (
        "box-b",
        "london",
        &[
            (
                ("tel:+442079460001", "Alice Ashworth"),
                ("sip:+33142000001@paris.example", "Eve Evans"),
            ),
            (
                ("tel:+442079461234", "Frank Fischer"),
                ("sip:+33142000002@paris.example", "Gina Gauthier"),
            ),
        ],
    ),
    (
        "box-c",
        "paris",
        &[(
            ("tel:+442079460001", "Alice Ashworth"),
            ("sip:+33142000003@paris.example", "Hugo Hamel"),
        )],
    ),
];

fn srs(d: &Daemon) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], d.sip_port))
}

fn status_json(d: &Daemon) -> Value {
    let out = output_bounded(
        Command::new(&d.bin)
            .args(["status", "--json", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("status hung");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

struct Central {
    cfg: String,
    key_pem: String,
}

impl Central {
    fn index(&self, extra: &[&str]) -> Value {
        let mut a = vec![
            "index",
            "--once",
            "--json",
            "--config",
            &self.cfg,
            "--key-pem",
            &self.key_pem,
        ];
        a.extend_from_slice(extra);
        let out = central_ok(&a);
        serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap()
    }
    fn search(&self, extra: &[&str]) -> Vec<Value> {
        let mut a = vec!["search", "--json", "--config", &self.cfg];
        a.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&central_ok(&a)).unwrap();
        v.as_array().unwrap().clone()
    }
    fn fleet(&self) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&central_ok(&["fleet", "--json", "--config", &self.cfg])).unwrap();
        v.as_array().unwrap().clone()
    }
}

fn ids(hits: &[Value]) -> BTreeSet<String> {
    hits.iter()
        .map(|h| h["recording_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn central_index_searches_across_boxes_quarantines_tampering_and_flags_keys() {
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // PostgreSQL runs as nobody under root: it must reach its directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pg = pg::Pg::start(&dir.join("pg"));

    // The compliance key pair (PEM here; the PKCS#11 path is tests/central_archive.rs).
    let (ck_priv, ck_pub) = central_common::compliance_keypair(dir);

    // The archive: moto behind TLS.
    let s3::MotoArchive {
        moto,
        ca,
        toml: archive,
    } = s3::moto_archive(dir, BUCKET);

    // Three boxes record their calls and upload.
    let keys = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-2026\"",
        ck_pub.display()
    );
    let mut daemons = Vec::new();
    let mut n = 0u32;
    let mut call_ids = Vec::new();
    for (bx, site, calls) in BOXES {
        let bdir = dir.join(bx);
        std::fs::create_dir_all(&bdir).unwrap();
        let d = Daemon::start_full(
            &bdir,
            "",
            &keys,
            &format!(
                "[uplink]\nenabled = true\nsite = \"{site}\"\nbox_id = \"{bx}\"\npart_size_kb = 64\nstatus_interval_s = 5\n{archive}"
            ),
        );
        for (a, b) in calls.iter() {
            n += 1;
            let mut call = match invite_parties(srs(&d), n, *a, *b) {
                Invite::Up(c) => c,
                Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
            };
            call_ids.push(call.call_id().to_string());
            call.stream(1000);
            std::thread::sleep(Duration::from_millis(100));
            assert!(call.bye(), "BYE not answered\n{}", d.log_text());
        }
        daemons.push((bx, bdir, d, calls.len()));
    }
    // Every box uploads its recordings (a few ~35 kB objects each; 180 s bounds moto
    // with both cores busy), and pushes a status document saying so.
    let deadline = Instant::now() + Duration::from_secs(180);
    for (bx, _, d, want) in &daemons {
        loop {
            let s = status_json(d);
            if s["uploaded"].as_u64() == Some(*want as u64) && s["pending"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{bx} not uploaded: {s}\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // One more status interval so the pushed documents show the finished uploads.
    std::thread::sleep(Duration::from_secs(6));
    let mut rec_ids: Vec<Vec<String>> = Vec::new();
    let mut box_keys = Vec::new();
    for (_, bdir, d, _) in daemons.iter_mut() {
        let list = d.recordings_json(&["list", "--json"]);
        // Oldest first: the order the calls were made.
        let mut v: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["start"].as_str().unwrap().to_string(),
                    r["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        rec_ids.push(v.into_iter().map(|x| x.1).collect());
        box_keys.push(central_common::box_key_pem(&bdir.join("data")));
        d.stop();
    }
    let (a1, a2) = (rec_ids[0][0].clone(), rec_ids[0][1].clone());
    let (b1, b2) = (rec_ids[1][0].clone(), rec_ids[1][1].clone());
    let c1 = rec_ids[2][0].clone();

    // Nothing personal in plaintext in any object of the bucket.
    let dump = dir.join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    let objs = s3check(&moto, &ca, &["dump", BUCKET, dump.to_str().unwrap()]);
    let objs: Vec<String> = objs
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(
        objs.iter().any(|k| k.contains("_status/box-b.json")),
        "{objs:?}"
    );
    let mut needles: Vec<String> = Vec::new();
    for (_, _, calls) in BOXES {
        for (a, b) in calls.iter() {
            for (aor, name) in [a, b] {
                let digits: String = aor.chars().filter(|c| c.is_ascii_digit()).collect();
                needles.push(digits);
                needles.extend(name.split(' ').map(str::to_string));
            }
        }
    }
    needles.extend(call_ids.iter().cloned());
    // Short first names could occur by chance in ciphertext; surnames, numbers and
    // Call-IDs cannot.
    needles.retain(|n| n.len() >= 5);
    let mut scanned = 0;
    for e in std::fs::read_dir(&dump).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        scanned += 1;
        for n in &needles {
            assert!(
                !b.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} in plaintext in {}",
                p.display()
            );
        }
    }
    assert!(scanned >= 5 * 4 + 3, "only {scanned} objects");

    // Central: config, audit key, enrolment.
    let audit_key = dir.join("central-audit.key");
    central_ok(&["audit-keygen", "--out", audit_key.to_str().unwrap()]);
    let cfg = dir.join("central.toml");
    std::fs::write(
        &cfg,
        format!(
            // Pages of 5 keys: one recording per batch (the next one's first object is
            // carried over), so a pass commits several batches per box.
            "[archive]\n{archive}\n[index]\ndatabase = \"{}\"\naudit_key = \"{}\"\nunknown_boxes = \"first_seen\"\nopen_days = 0\nlist_page = 5\nworkers = 2\n",
            pg.conninfo,
            audit_key.display()
        ),
    )
    .unwrap();
    let c = Central {
        cfg: cfg.to_str().unwrap().to_string(),
        key_pem: ck_priv.to_str().unwrap().to_string(),
    };
    let pem_a = dir.join("box-a.pem");
    std::fs::write(&pem_a, &box_keys[0]).unwrap();
    central_ok(&[
        "enrol",
        "box-a",
        "--config",
        &c.cfg,
        "--key",
        pem_a.to_str().unwrap(),
    ]);
    // box-c is enrolled with a key that is not the one its manifests are signed with.
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let pem_wrong = dir.join("box-c-old.pem");
    std::fs::write(&pem_wrong, other).unwrap();
    central_ok(&[
        "enrol",
        "box-c",
        "--config",
        &c.cfg,
        "--key",
        pem_wrong.to_str().unwrap(),
    ]);

    // A pass that fails in the middle: PostgreSQL refuses box-a's second recording in
    // listing order (box-a is the first box listed). Its first page is committed with
    // the position past it; nothing of the failed page is, and the pass stops.
    let mut a_keys: Vec<&String> = objs
        .iter()
        .filter(|k| k.contains("/box-a/") && !k.contains('.'))
        .collect();
    a_keys.sort();
    assert_eq!(a_keys.len(), 2, "{objs:?}");
    let refused = a_keys[1].rsplit('/').next().unwrap().to_string();
    let first = a_keys[0].rsplit('/').next().unwrap().to_string();
    let mut db = pg.client();
    db.batch_execute(&format!(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.recording_id = '{refused}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
           RETURN NEW; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON recordings FOR EACH ROW EXECUTE FUNCTION refuse();"
    ))
    .unwrap();
    let out = central(&[
        "index",
        "--once",
        "--json",
        "--config",
        &c.cfg,
        "--key-pem",
        &c.key_pem,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused by the test"),
        "{err}"
    );
    let indexed: Vec<String> = db
        .query("SELECT recording_id::text FROM recordings", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexed, vec![first.clone()]);
    let pos: String = db
        .query_one(
            "SELECT start_after FROM index_positions WHERE box_id = 'box-a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pos, format!("{}.manifest.sig", a_keys[0]));
    let statuses: i64 = db
        .query_one("SELECT count(DISTINCT box_id) FROM box_status", &[])
        .unwrap()
        .get(0);
    assert_eq!(statuses, 3);
    db.batch_execute("DROP TRIGGER refuse ON recordings; DROP FUNCTION refuse();")
        .unwrap();

    // The next pass (a restart) goes on from the committed position: the rest of A's and
    // B's recordings indexed, C's quarantined.
    let r = c.index(&[]);
    assert_eq!(r["boxes"], 3, "{r}");
    assert_eq!(r["indexed"], 3, "{r}");
    assert_eq!(r["quarantined"], 1, "{r}");
    assert_eq!(r["waiting"], 0, "{r}");
    assert_eq!(r["known"], 0, "{r}");

    // Participant search across boxes: exact, prefix, name, AoR.
    let exact = c.search(&["--participant", "+442079460001"]);
    assert_eq!(
        ids(&exact),
        BTreeSet::from([a1.clone(), b1.clone()]),
        "{exact:?}"
    );
    let exact2 = c.search(&["--participant", "+44 20 7946 0001"]);
    assert_eq!(ids(&exact2), ids(&exact));
    let prefix = c.search(&["--participant", "+4420794600*"]);
    assert_eq!(
        ids(&prefix),
        BTreeSet::from([a1.clone(), a2.clone(), b1.clone()]),
        "{prefix:?}"
    );
    let prefix2 = c.search(&["--participant", "+44207946*"]);
    assert_eq!(
        ids(&prefix2),
        BTreeSet::from([a1.clone(), a2.clone(), b1.clone(), b2.clone()])
    );
    assert!(c.search(&["--participant", "+4420794600"]).is_empty());
    let by_name = c.search(&["--participant", "frank*"]);
    assert_eq!(ids(&by_name), BTreeSet::from([b2.clone()]));
    let by_aor = c.search(&["--aor", "sip:+33142000001@paris.example"]);
    assert_eq!(ids(&by_aor), BTreeSet::from([b1.clone()]));
    let both = c.search(&["--participant", "+442079460001", "--participant", "eve*"]);
    assert_eq!(ids(&both), BTreeSet::from([b1.clone()]));
    let on_b = c.search(&["--box", "box-b"]);
    assert_eq!(ids(&on_b), BTreeSet::from([b1.clone(), b2.clone()]));
    assert!(on_b.iter().all(|h| h["trust"] == "first_seen"), "{on_b:?}");
    let on_a = c.search(&["--box", "box-a", "--site", "london", "--min-duration", "0"]);
    assert!(on_a.iter().all(|h| h["trust"] == "enrolled"), "{on_a:?}");
    assert_eq!(c.search(&["--box", "box-a", "--limit", "1"]).len(), 1);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(c.search(&["--since", &tomorrow]).is_empty());
    // The table form names the participants.
    let table = central_ok(&[
        "search",
        "--config",
        &c.cfg,
        "--participant",
        "+442079460001",
    ]);
    assert!(
        table.contains("Alice Ashworth") && table.contains("UNENROLLED"),
        "{table}"
    );

    // show from the index: the decrypted document and its rows.
    let shown: Value =
        serde_json::from_str(&central_ok(&["show", &a1, "--archive", &c.cfg])).unwrap();
    assert_eq!(shown["recording_id"], a1.as_str());
    assert_eq!(shown["integrity"], "ok");
    assert_eq!(shown["document"]["id"], a1.as_str());
    assert!(shown.to_string().contains("Bob Brennan"));

    // Box C: flagged as a changed key, its recording not indexed.
    let fleet = c.fleet();
    let get = |f: &[Value], b: &str| f.iter().find(|x| x["box_id"] == b).unwrap().clone();
    let fc = get(&fleet, "box-c");
    assert_eq!(fc["key_changed"], true, "{fc}");
    assert_eq!(fc["quarantined"], 1, "{fc}");
    assert!(fc["alarms"]["key_changed"].as_i64().unwrap() >= 1, "{fc}");
    let fb = get(&fleet, "box-b");
    assert_eq!(fb["trust"], "first_seen", "{fb}");
    assert!(fb["alarms"]["first_seen"].as_i64().unwrap() >= 1, "{fb}");
    let fa = get(&fleet, "box-a");
    assert_eq!(
        (fa["trust"].clone(), fa["indexed"].clone()),
        ("enrolled".into(), 2.into())
    );
    assert_eq!(fa["quarantined"], 0);
    assert_eq!(fa["pending"], 0, "{fa}");
    assert!(fa["status_history"].as_i64().unwrap() >= 1, "{fa}");
    let q = central_ok(&["show", &c1, "--archive", &c.cfg]);
    assert!(q.contains("key_changed"), "{q}");

    // A second indexer run (a restart) indexes nothing twice.
    let count = |db: &mut postgres::Client, t: &str| -> i64 {
        db.query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .unwrap()
            .get(0)
    };
    let before = (
        count(&mut db, "recordings"),
        count(&mut db, "participants"),
        count(&mut db, "recording_documents"),
    );
    let r2 = c.index(&[]);
    assert_eq!(
        (r2["indexed"].clone(), r2["quarantined"].clone()),
        (0.into(), 0.into()),
        "{r2}"
    );
    let positions: i64 = db
        .query_one(
            "SELECT count(*) FROM index_positions WHERE start_after <> ''",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(positions, 3);
    // Even listing everything again (positions ignored) finds it all known.
    let r3 = c.index(&["--rescan"]);
    assert_eq!(
        (r3["indexed"].clone(), r3["quarantined"].clone()),
        (0.into(), 0.into()),
        "{r3}"
    );
    assert_eq!(r3["known"], 5, "{r3}");
    assert_eq!(
        before,
        (
            count(&mut db, "recordings"),
            count(&mut db, "participants"),
            count(&mut db, "recording_documents")
        )
    );
    assert_eq!(before.0, 4);

    // One byte flipped in A2's archived container: quarantined with an alarm, out of
    // the search results.
    let a2_key = objs
        .iter()
        .find(|k| k.ends_with(&a2) && !k.contains('.'))
        .unwrap()
        .clone();
    let f = dump.join(a2_key.replace('/', "%2F"));
    let mut bytes = std::fs::read(&f).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let bad = dir.join("bad.brec");
    std::fs::write(&bad, &bytes).unwrap();
    s3check(&moto, &ca, &["put", BUCKET, &a2_key, bad.to_str().unwrap()]);
    let r4 = c.index(&["--rescan"]);
    assert_eq!(r4["quarantined"], 1, "{r4}");
    let prefix = c.search(&["--participant", "+4420794600*"]);
    assert_eq!(
        ids(&prefix),
        BTreeSet::from([a1.clone(), b1.clone()]),
        "{prefix:?}"
    );
    let with_q = c.search(&["--participant", "+4420794600*", "--include-quarantined"]);
    assert!(ids(&with_q).contains(&a2));
    let fa = get(&c.fleet(), "box-a");
    assert_eq!(fa["quarantined"], 1, "{fa}");
    assert!(fa["alarms"]["tampered"].as_i64().unwrap() >= 1, "{fa}");
    let shown: Value =
        serde_json::from_str(&central_ok(&["show", &a2, "--archive", &c.cfg])).unwrap();
    assert_eq!(shown["integrity"], "quarantined");
    let msg: String = db
        .query_one(
            "SELECT message FROM quarantine WHERE object_key = $1",
            &[&a2_key],
        )
        .unwrap()
        .get(0);
    assert!(msg.contains("container SHA-256"), "{msg}");

    // The operator enrols box C's real key: its recording verifies and is indexed.
    let pem_c = dir.join("box-c.pem");
    std::fs::write(&pem_c, &box_keys[2]).unwrap();
    central_ok(&[
        "enrol",
        "box-c",
        "--config",
        &c.cfg,
        "--key",
        pem_c.to_str().unwrap(),
    ]);
    let r5 = c.index(&[]);
    assert_eq!(r5["indexed"], 1, "{r5}");
    let exact = c.search(&["--participant", "+442079460001"]);
    assert_eq!(
        ids(&exact),
        BTreeSet::from([a1.clone(), b1.clone(), c1.clone()])
    );
    let fc = get(&c.fleet(), "box-c");
    assert_eq!(
        (fc["key_changed"].clone(), fc["quarantined"].clone()),
        (false.into(), 0.into())
    );

    // The central audit log: every access, chained and signed; one altered entry breaks it.
    let log = central_ok(&["audit", "--json", "--config", &c.cfg]);
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["enrol", "index", "search", "show", "fleet"] {
        assert!(actions.contains(a), "{a} not audited: {actions:?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "search"
                && e["detail"].as_str().unwrap().contains("+4420794600*"))
    );
    let v = central_ok(&["audit", "--verify", "--config", &c.cfg]);
    assert!(v.contains("verifies"), "{v}");
    db.execute(
        "UPDATE central_audit SET detail = replace(detail, '+4420794600*', '+4499*') WHERE action = 'search'",
        &[],
    )
    .unwrap();
    let out = central(&["audit", "--verify", "--config", &c.cfg]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not chain"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(moto);
}

/// Migrations apply once, record themselves, and a database from a newer program is
/// refused.
#[test]
fn index_schema_migrates_once_and_refuses_a_newer_schema() {
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pg = pg::Pg::start(&tmp.path().join("pg"));
    let mut c = branchrec::central::index::db::connect(&pg.conninfo).unwrap();
    let v: i32 = c
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        v,
        branchrec::central::index::schema::MIGRATIONS
            .last()
            .unwrap()
            .0
    );
    // Again: nothing to do, nothing duplicated.
    let _c2 = branchrec::central::index::db::connect(&pg.conninfo).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n as usize,
        branchrec::central::index::schema::MIGRATIONS.len()
    );
    c.execute(
        "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (999, 'future', 0)",
        &[],
    )
    .unwrap();
    let e = branchrec::central::index::db::connect(&pg.conninfo)
        .err()
        .expect("a newer schema must be refused")
        .to_string();
    assert!(e.contains("999"), "{e}");
}
