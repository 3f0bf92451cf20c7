//! Issue #14, commands to boxes: a running daemon (polling `_commands/<box>/`) records a
//! SIPREC call and uploads it to moto, in a bucket created with Object Lock. Then
//! `branchrec-central hold add` puts every archive object of the recording under an
//! Object Lock legal hold (read back through the S3 API with boto3) and the box applies
//! the hold locally and acknowledges; `central erase` under hold is refused centrally,
//! and an erase command under hold is refused by the box (acknowledged `refused`); a
//! replayed, a forged, a wrong-box and a reordered document are refused, counted once
//! each and audited; after `central hold release`, `central erase` removes the recording
//! on the box (tombstone, file gone) and in the archive (no version left).

#[path = "common/central.rs"]
mod central_common;
mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use branchrec::command::{Action, Command as Cmd, SignedAck, SignedCommand, COMMAND_FORMAT};
use common::{output_bounded, Daemon};
use ed25519_dalek::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use s3::{s3check, Moto, Pki};
use serde_json::Value;
use siprec_client::{invite_parties, Invite};

const BUCKET: &str = "archive";
const BOX: &str = "box-cmd";

struct Env {
    moto: Moto,
    ca: PathBuf,
    cfg: PathBuf,
    key: PathBuf,
}

impl Env {
    fn s3(&self, args: &[&str]) -> Value {
        s3check(&self.moto, &self.ca, args)
    }

    fn central(&self, args: &[&str]) -> Output {
        output_bounded(
            Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
                .args(args)
                .env("BRANCHREC_CENTRAL_CONFIG", &self.cfg)
                .env("BRANCHREC_COMMAND_KEY", &self.key),
            Duration::from_secs(120),
        )
        .expect("branchrec-central hung")
    }

    fn central_ok(&self, args: &[&str]) -> String {
        let out = self.central(args);
        assert!(
            out.status.success(),
            "central {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn get(&self, key: &str) -> Option<String> {
        self.s3(&["get", BUCKET, key])["body"]
            .as_str()
            .map(str::to_string)
    }

    fn put(&self, dir: &Path, key: &str, body: &[u8]) {
        let f = dir.join("put.tmp");
        std::fs::write(&f, body).unwrap();
        self.s3(&["put", BUCKET, key, f.to_str().unwrap()]);
    }

    fn versions(&self, prefix: &str) -> Vec<Value> {
        self.s3(&["versions", BUCKET, prefix])
            .as_array()
            .unwrap()
            .clone()
    }
}

fn slot(seq: u64) -> String {
    format!("_commands/{BOX}/{seq:010}.json")
}

fn ack_key(seq: u64) -> String {
    format!("_acks/{BOX}/{seq:010}.json")
}

fn cli_json(d: &Daemon, args: &[&str]) -> Value {
    let out = output_bounded(
        Command::new(&d.bin)
            .args(args)
            .arg("--config")
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("branchrec hung");
    assert!(
        out.status.success(),
        "branchrec {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Polled every 250 ms up to `secs` (the box polls every second; moto and the daemon
/// share two busy cores).
fn wait_for<T>(what: &str, secs: u64, d: &Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The box's acknowledgement of `seq`, verified with the box's signing key.
fn wait_ack(env: &Env, d: &Daemon, box_pk: &[u8; 32], seq: u64) -> SignedAck {
    let t0 = Instant::now();
    let a = wait_for(&format!("ack {seq}"), 90, d, || env.get(&ack_key(seq)));
    eprintln!(
        "ack {seq} seen {} ms after the command was written (poll_interval_s = 1)",
        t0.elapsed().as_millis()
    );
    let a = SignedAck::parse(a.as_bytes()).unwrap();
    assert!(
        a.verify(|m, s| branchrec::vault::signing::verify_raw(box_pk, m, s)),
        "ack {seq} does not verify with the box's key"
    );
    assert_eq!((a.ack.seq, a.ack.box_id.as_str()), (seq, BOX));
    a
}

fn refused(d: &Daemon, kind: &str) -> u64 {
    cli_json(d, &["status", "--json"])["commands"]["refused"][kind]
        .as_u64()
        .unwrap_or(0)
}

fn sign(key: &ed25519_dalek::SigningKey, c: Cmd) -> Vec<u8> {
    SignedCommand::sign(c, |m| key.sign(m).to_bytes()).to_bytes()
}

fn audit(d: &Daemon) -> Vec<Value> {
    cli_json(d, &["audit", "show", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn central_holds_and_erasure_reach_box_and_archive_and_forged_commands_are_refused() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL runs as nobody under root: it must reach its directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pg = pg::Pg::start(&dir.path().join("pg"));

    // Keys: the compliance key (P-256, PEM here: the HSM path is tests/central_archive.rs)
    // and the central command key (Ed25519), the box gets both public halves.
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let ck = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let ck_pub = dir.path().join("compliance.pub.pem");
    std::fs::write(
        &ck_pub,
        ck.public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let cmd_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let cmd_priv = dir.path().join("command.key.pem");
    std::fs::write(
        &cmd_priv,
        cmd_key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let cmd_pub = dir.path().join("command.pub.pem");
    std::fs::write(
        &cmd_pub,
        cmd_key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();

    // The archive: moto behind TLS, the bucket with Object Lock (hence versioning).
    let s3::MotoArchive {
        moto,
        ca,
        toml: archive,
    } = s3::moto_archive(dir.path(), BUCKET);
    // Central: the index (command seqs, holds, the box's key for its acks).
    let audit_key = dir.path().join("central-audit.key");
    central_common::central_ok(&["audit-keygen", "--out", audit_key.to_str().unwrap()]);
    let cfg = dir.path().join("central.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\n{archive}\n[index]\ndatabase = \"{}\"\naudit_key = \"{}\"\nopen_days = 0\n",
            pg.conninfo,
            audit_key.display()
        ),
    )
    .unwrap();
    let env = Env {
        moto,
        ca,
        cfg,
        key: cmd_priv,
    };

    // The box: its own uplink sets no legal hold (object_lock = false), so every legal
    // hold seen below is central's. Hold release without the two-person rule here (the
    // rule itself is the CLI's, tests/lifecycle.rs).
    let bdir = dir.path().join("box");
    std::fs::create_dir_all(&bdir).unwrap();
    let keys = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-1\"",
        ck_pub.display()
    );
    let mut d = Daemon::start_full(
        &bdir,
        "",
        &keys,
        &format!(
            "[uplink]\nenabled = true\nsite = \"paris\"\nbox_id = \"{BOX}\"\npart_size_kb = 64\nobject_lock = false\nstatus_interval_s = 5\n{archive}\n\
             [central]\ncommand_public_key = \"{}\"\npoll_interval_s = 1\n\
             [audit]\ntwo_person_hold_release = false\n",
            cmd_pub.display()
        ),
    );
    let srs = SocketAddr::from(([127, 0, 0, 1], d.sip_port));
    let mut call = match invite_parties(
        srs,
        1,
        ("tel:+442079460001", "Alice"),
        ("tel:+441632960002", "Bob"),
    ) {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
    };
    call.stream(1000);
    std::thread::sleep(Duration::from_millis(100));
    assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    // One 1 s recording; 120 s bounds moto with both cores busy.
    wait_for("upload", 120, &d, || {
        let s = cli_json(&d, &["status", "--json"]);
        (s["uploaded"].as_u64() == Some(1) && s["pending"] == 0).then_some(())
    });
    let list = d.recordings_json(&["list", "--json"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let file = bdir
        .join("data")
        .join(detail["file_path"].as_str().unwrap());
    assert!(file.exists());
    let custody: Value =
        serde_json::from_slice(&std::fs::read(bdir.join("data/keys/custody.json")).unwrap())
            .unwrap();
    let box_pk: [u8; 32] = hex::decode(custody["signing_public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    // The box enrolled with its manifest key: its acknowledgements verify with it.
    let box_pem = dir.path().join("box.pem");
    std::fs::write(&box_pem, central_common::box_key_pem(&bdir.join("data"))).unwrap();
    env.central_ok(&["enrol", BOX, "--key", box_pem.to_str().unwrap()]);
    let objects: Vec<Value> = env.s3(&["objects", BUCKET]).as_array().unwrap().clone();
    let container = objects
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .find(|k| k.ends_with(&id))
        .expect("container in the archive");
    let none_held = env.versions(&container);
    assert!(
        none_held.iter().all(|v| v["legal_hold"] != "ON"),
        "{none_held:?}"
    );

    // 1. hold add: legal hold ON on every version of the four objects, command 1.
    let out = env.central_ok(&[
        "hold",
        "add",
        "--case",
        "CASE-7",
        "--reason",
        "regulator request 2026/41",
        &id,
    ]);
    assert!(out.contains(&format!("command 1 to box {BOX}")), "{out}");
    let held = env.versions(&container);
    let keys: std::collections::BTreeSet<&str> =
        held.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            container.clone(),
            format!("{container}.json"),
            format!("{container}.manifest.json"),
            format!("{container}.manifest.sig")
        ]
        .iter()
        .map(String::as_str)
        .collect(),
        "{held:?}"
    );
    assert!(held.iter().all(|v| v["legal_hold"] == "ON"), "{held:?}");
    // The box applies it and acknowledges, signed with its manifest key.
    let a1 = wait_ack(&env, &d, &box_pk, 1);
    assert_eq!(a1.ack.result.as_str(), "applied", "{:?}", a1.ack);
    let holds = cli_json(&d, &["hold", "list", "--json"]);
    let holds = holds.as_array().unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["recordings"], 1, "{holds:?}");
    assert!(
        holds[0]["operator"]
            .as_str()
            .unwrap()
            .starts_with("central:"),
        "{holds:?}"
    );
    assert!(holds[0]["reason"].as_str().unwrap().contains("CASE-7"));
    let log = audit(&d);
    assert!(
        log.iter()
            .any(|e| e["action"] == "hold.add"
                && e["actor"].as_str().unwrap().starts_with("central:")),
        "{log:?}"
    );
    // hold list at central.
    let cases: Value = serde_json::from_str(&env.central_ok(&["hold", "list", "--json"])).unwrap();
    assert_eq!(cases[0]["case"], "CASE-7");
    assert_eq!(cases[0]["boxes"][BOX]["acknowledged"], true, "{cases}");

    // 2. erase under hold: refused by central (no command written) ...
    let out = env.central(&["erase", &id, "--reason", "GDPR art. 17"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REFUSED") && err.contains("legal hold"),
        "{err}"
    );
    assert!(env.get(&slot(2)).is_none());
    assert!(env.versions(&container).len() >= 4);
    // ... and by the box: a valid erase command (seq 2) is acknowledged `refused`.
    let now = chrono::Utc::now().timestamp_millis();
    let mk = |seq: u64, box_id: &str, action: Action| Cmd {
        format: COMMAND_FORMAT.into(),
        box_id: box_id.into(),
        seq,
        issued_at_ms: now,
        operator: "mallory".into(),
        key_id: branchrec::vault::signing::key_id_of(&cmd_key.verifying_key().to_bytes()),
        action,
    };
    let erase = |seq| {
        mk(
            seq,
            BOX,
            Action::Erase {
                recording: id.clone(),
                reason: "test".into(),
            },
        )
    };
    env.put(dir.path(), &slot(2), &sign(&cmd_key, erase(2)));
    let a2 = wait_ack(&env, &d, &box_pk, 2);
    assert_eq!(a2.ack.result.as_str(), "refused", "{:?}", a2.ack);
    assert!(a2.ack.detail.contains("legal hold"), "{:?}", a2.ack);
    assert!(file.exists());
    assert_eq!(
        d.recordings_json(&["list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // 3. Replayed (command 1's document copied to slot 3), forged (another key), for
    // another box, reordered (slot 5 while 3 is next): each refused and counted once.
    let doc1 = env.get(&slot(1)).unwrap();
    env.put(dir.path(), &slot(3), doc1.as_bytes());
    wait_for("replay refused", 60, &d, || {
        (refused(&d, "replay") == 1).then_some(())
    });
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let release = |seq, b: &str| {
        mk(
            seq,
            b,
            Action::HoldRelease {
                case: "CASE-7".into(),
                reason: "forged".into(),
            },
        )
    };
    env.put(dir.path(), &slot(3), &sign(&other, release(3, BOX)));
    wait_for("forgery refused", 60, &d, || {
        (refused(&d, "signature") == 1).then_some(())
    });
    env.put(
        dir.path(),
        &slot(3),
        &sign(&cmd_key, release(3, "box-other")),
    );
    wait_for("wrong box refused", 60, &d, || {
        (refused(&d, "wrong_box") == 1).then_some(())
    });
    env.put(dir.path(), &slot(5), &sign(&cmd_key, release(5, BOX)));
    wait_for("reorder refused", 60, &d, || {
        (refused(&d, "out_of_order") == 1).then_some(())
    });
    // Several polls later: still counted once each, nothing executed.
    std::thread::sleep(Duration::from_secs(3));
    let st = cli_json(&d, &["status", "--json"]);
    let c = &st["commands"];
    assert_eq!(c["last_applied"], 2, "{st}");
    assert_eq!(c["applied"], 2, "{st}");
    assert_eq!(c["refused_by_box"], 1, "{st}");
    for k in ["replay", "signature", "wrong_box", "out_of_order"] {
        assert_eq!(c["refused"][k], 1, "{k}: {st}");
    }
    assert!(env.get(&ack_key(3)).is_none() && env.get(&ack_key(5)).is_none());
    assert_eq!(
        cli_json(&d, &["hold", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let refusals: Vec<Value> = audit(&d)
        .into_iter()
        .filter(|e| e["action"] == "central.command_refused")
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    // The test's own documents go; central writes the next ones.
    env.s3(&["purge", BUCKET, &slot(3)]);
    env.s3(&["purge", BUCKET, &slot(5)]);

    // 4. Release: command 3, legal hold OFF everywhere, the box releases.
    let out = env.central_ok(&["hold", "release", "--case", "CASE-7", "--reason", "closed"]);
    assert!(out.contains("release command 3"), "{out}");
    let v = env.versions(&container);
    assert!(v.iter().all(|v| v["legal_hold"] == "OFF"), "{v:?}");
    let a3 = wait_ack(&env, &d, &box_pk, 3);
    assert_eq!(a3.ack.result.as_str(), "applied", "{:?}", a3.ack);
    assert!(cli_json(&d, &["hold", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        serde_json::from_str::<Value>(&env.central_ok(&["hold", "list", "--json"])).unwrap(),
        serde_json::json!([])
    );

    // 5. Erase: every version gone from the archive; on the box shredded and tombstoned.
    let out = env.central_ok(&["erase", &id, "--reason", "GDPR art. 17"]);
    assert!(out.contains("command 4"), "{out}");
    assert_eq!(env.versions(&container), Vec::<Value>::new());
    let a4 = wait_ack(&env, &d, &box_pk, 4);
    assert_eq!(a4.ack.result.as_str(), "applied", "{:?}", a4.ack);
    // Every command from the CLI is in the central audit log with its outcome (the
    // refused erasure under hold too), and the chain verifies.
    let log: Vec<Value> = env
        .central_ok(&["audit", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |action: &str, target: &str, outcome: &str| {
        log.iter().any(|e| {
            e["action"] == action
                && e["target"] == target
                && e["detail"].as_str().unwrap_or_default().contains(outcome)
        })
    };
    assert!(has("hold_add", "CASE-7", "\"outcome\":\"ok\""), "{log:?}");
    assert!(
        has("hold_release", "CASE-7", "\"outcome\":\"ok\""),
        "{log:?}"
    );
    assert!(has("erase", &id, "refused"), "{log:?}");
    assert!(has("erase", &id, "\"versions_deleted\""), "{log:?}");
    assert!(env.central_ok(&["audit", "--verify"]).contains("verifies"));
    assert!(!file.exists(), "{} still there", file.display());
    assert!(d
        .recordings_json(&["list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    let t = cli_json(&d, &["retention", "tombstones", "--json"]);
    let t = t.as_array().unwrap();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["recording_id"], id.as_str());
    assert!(
        t[0]["actor"].as_str().unwrap().starts_with("central:"),
        "{t:?}"
    );

    // 6. Compliance key rotation: command 5; the next recording's compliance slot and
    // archive document are for the new key.
    let ck2_dir = dir.path().join("ck-2");
    std::fs::create_dir_all(&ck2_dir).unwrap();
    let (ck2_priv, ck2) = central_common::compliance_keypair(&ck2_dir);
    let out = env.central_ok(&[
        "rotate-compliance-key",
        "--box",
        BOX,
        "--key-id",
        "ck-2",
        "--public-key",
        ck2.to_str().unwrap(),
    ]);
    assert!(out.contains("command 5"), "{out}");
    let a5 = wait_ack(&env, &d, &box_pk, 5);
    assert_eq!(a5.ack.result.as_str(), "applied", "{:?}", a5.ack);
    let mut call = match invite_parties(
        srs,
        2,
        ("tel:+442079460003", "Carol"),
        ("tel:+441632960004", "Dan"),
    ) {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
    };
    call.stream(1000);
    std::thread::sleep(Duration::from_millis(100));
    assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    let id2 = wait_for("second recording", 60, &d, || {
        d.recordings_json(&["list", "--json"])
            .as_array()
            .unwrap()
            .first()
            .and_then(|r| r["id"].as_str().map(str::to_string))
    });
    let doc2 = wait_for("second upload", 120, &d, || {
        env.s3(&["objects", BUCKET])
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"].as_str().unwrap().ends_with(&format!("{id2}.json")))
            .and_then(|o| o["body"].as_str().map(str::to_string))
    });
    let doc2: Value = serde_json::from_str(&doc2).unwrap();
    assert_eq!(doc2["index"]["compliance_key_id"], "ck-2", "{doc2}");
    let ks = output_bounded(
        Command::new(&d.bin)
            .args(["keys", "status", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("keys status hung");
    let ks = String::from_utf8_lossy(&ks.stdout).to_string();
    assert!(
        ks.contains("compliance key     ck-2 (rotated from headquarters"),
        "{ks}"
    );
    assert!(ks.contains("compliance wraps   ck-2: 1"), "{ks}");
    assert!(audit(&d)
        .iter()
        .any(|e| e["action"] == "keys.compliance_rotate" && e["target"] == "ck-2"));

    // 7. `central commands`: five commands, all acknowledged, with their results.
    let cmds: Value =
        serde_json::from_str(&env.central_ok(&["commands", "--box", BOX, "--json"])).unwrap();
    let states: Vec<(u64, &str, &str)> = cmds
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["seq"].as_u64().unwrap(),
                c["action"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (1, "hold_add", "applied"),
            (2, "erase", "refused"),
            (3, "hold_release", "applied"),
            (4, "erase", "applied"),
            (5, "rotate_compliance_key", "applied"),
        ]
    );

    // 8. The index: three more calls, the last one held by the box itself (a local
    // participant hold placed before the call); all uploaded, then indexed.
    let out = output_bounded(
        Command::new(&d.bin)
            .args([
                "hold",
                "add",
                "--participant",
                "+441632960099",
                "--reason",
                "local incident 12",
                "--config",
            ])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("branchrec hold add hung");
    assert!(
        out.status.success(),
        "box hold add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uploaded_before = cli_json(&d, &["status", "--json"])["uploaded"]
        .as_u64()
        .unwrap();
    let parties = [
        ("tel:+442079460011", "Xena"),
        ("tel:+441632960077", "Yuri"),
        ("tel:+441632960099", "Zoe"),
    ];
    for (n, p) in parties.iter().enumerate() {
        let mut call = match invite_parties(srs, 3 + n as u32, *p, ("tel:+33142000055", "Agent")) {
            Invite::Up(c) => c,
            Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
        };
        call.stream(1000);
        std::thread::sleep(Duration::from_millis(100));
        assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    }
    wait_for("three more uploads", 180, &d, || {
        let s = cli_json(&d, &["status", "--json"]);
        (s["uploaded"].as_u64() == Some(uploaded_before + 3) && s["pending"] == 0).then_some(())
    });
    let by_party = |aor: &str| -> String {
        d.recordings_json(&["list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r.to_string().contains(aor))
            .and_then(|r| r["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no recording with {aor}"))
    };
    let (x, y, z) = (
        by_party("+442079460011"),
        by_party("+441632960077"),
        by_party("+441632960099"),
    );
    let idx = env.central_ok(&[
        "index",
        "--once",
        "--json",
        "--key-pem",
        ck2_priv.to_str().unwrap(),
    ]);
    let idx: Value = serde_json::from_str(idx.lines().last().unwrap()).unwrap();
    assert_eq!(idx["indexed"], 4, "{idx}");
    let held_ids = || -> std::collections::BTreeSet<String> {
        let v: Value =
            serde_json::from_str(&env.central_ok(&["search", "--json", "--held"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["recording_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(held_ids(), [z.clone()].into(), "only the box-held one");
    let objects_of = |rid: &str| -> String {
        env.s3(&["objects", BUCKET])
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_string())
            .find(|k| k.ends_with(rid))
            .unwrap()
    };
    let legal = |rid: &str| -> Vec<String> {
        let c = objects_of(rid);
        let v = env.versions(&c);
        assert!(v.len() >= 4, "{v:?}");
        v.iter()
            .map(|v| v["legal_hold"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let all = |v: Vec<String>, want: &str| v.iter().all(|s| s == want);

    // 9. A participant hold: every archive object of every matching recording under
    // legal hold, the index says held at once (no indexer pass), command 6 to the box.
    let out = env.central_ok(&[
        "hold",
        "add",
        "--case",
        "P-1",
        "--reason",
        "fraud inquiry",
        "--participant",
        "+442079460011",
        "--box",
        BOX,
    ]);
    assert!(
        out.contains("matched 1 indexed recording(s)") && out.contains(&x),
        "{out}"
    );
    assert!(out.contains(&format!("command 6 to box {BOX}")), "{out}");
    assert!(all(legal(&x), "ON"), "{:?}", legal(&x));
    assert!(legal(&y).iter().all(|s| s != "ON"), "{:?}", legal(&y));
    assert_eq!(held_ids(), [x.clone(), z.clone()].into());
    // The indexer rewriting X's row (an object's ETag changed) keeps it held.
    let mut db = pg.client();
    db.execute(
        "UPDATE recordings SET objects_etag = 'changed' WHERE recording_id = $1::text::uuid",
        &[&x],
    )
    .unwrap();
    let idx = env.central_ok(&[
        "index",
        "--once",
        "--rescan",
        "--json",
        "--key-pem",
        ck2_priv.to_str().unwrap(),
    ]);
    let idx: Value = serde_json::from_str(idx.lines().last().unwrap()).unwrap();
    assert_eq!(idx["reverified"], 1, "{idx}");
    assert_eq!(held_ids(), [x.clone(), z.clone()].into());
    let shown: Value = serde_json::from_str(&env.central_ok(&["show", &x])).unwrap();
    let ch = &shown["central_holds"][0];
    assert_eq!(
        (ch["case"].as_str(), ch["reason"].as_str()),
        (Some("P-1"), Some("fraud inquiry")),
        "{shown}"
    );
    assert!(!ch["operator"].as_str().unwrap().is_empty(), "{shown}");
    assert_eq!(
        wait_ack(&env, &d, &box_pk, 6).ack.result.as_str(),
        "applied"
    );

    // 10. A central hold on the box-held recording, then released: the box's own hold
    // keeps it held in the index and its legal hold stays ON.
    let out = env.central_ok(&["hold", "add", "--case", "P-2", "--reason", "audit", &z]);
    assert!(out.contains("command 7"), "{out}");
    assert!(all(legal(&z), "ON"));
    let out = env.central_ok(&["hold", "release", "--case", "P-2", "--reason", "done"]);
    assert!(out.contains("release command 8"), "{out}");
    assert!(
        out.contains(&format!("still held by other cases: {z}")),
        "{out}"
    );
    assert!(
        all(legal(&z), "ON"),
        "box-held recording lost its legal hold"
    );
    assert_eq!(held_ids(), [x.clone(), z.clone()].into());
    // 11. Releasing the participant case: X no longer held, its legal holds OFF.
    let out = env.central_ok(&["hold", "release", "--case", "P-1", "--reason", "closed"]);
    assert!(out.contains("release command 9"), "{out}");
    assert!(all(legal(&x), "OFF"), "{:?}", legal(&x));
    assert_eq!(held_ids(), [z.clone()].into());
    for s in [7, 8, 9] {
        assert_eq!(
            wait_ack(&env, &d, &box_pk, s).ack.result.as_str(),
            "applied"
        );
    }

    // 12. The sequence is allocated under a PostgreSQL row lock: while another
    // transaction holds the box's row, `hold add` waits and writes nothing.
    let mut tx = db.transaction().unwrap();
    tx.query_one(
        "SELECT last_seq FROM command_seq WHERE box_id = $1 FOR UPDATE",
        &[&BOX],
    )
    .unwrap();
    let spawn = |case: &str| {
        Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
            .args(["hold", "add", "--case", case, "--reason", "concurrent", &y])
            .env("BRANCHREC_CENTRAL_CONFIG", &env.cfg)
            .env("BRANCHREC_COMMAND_KEY", &env.key)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut blocked = spawn("C-0");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        blocked.try_wait().unwrap().is_none(),
        "hold add did not wait for the command_seq row lock"
    );
    assert!(env.get(&slot(10)).is_none());
    tx.commit().unwrap();
    let o = common::wait_bounded(&mut blocked, Duration::from_secs(120)).expect("hung");
    assert!(o.success());
    // Two operators at the same time: distinct seqs, both executed and acknowledged.
    let (a, b) = (spawn("C-A"), spawn("C-B"));
    let mut seqs = Vec::new();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let seq: u64 = text
            .split("command ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        seqs.push(seq);
    }
    seqs.sort();
    assert_eq!(seqs, vec![11, 12], "two operators got the same seq");
    for s in [10, 11, 12] {
        assert_eq!(
            wait_ack(&env, &d, &box_pk, s).ack.result.as_str(),
            "applied"
        );
    }
    let box_cases: Vec<String> = cli_json(&d, &["hold", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap().to_string())
        .collect();
    for case in ["C-0", "C-A", "C-B"] {
        assert!(
            box_cases.iter().any(|r| r.contains(case)),
            "{case} not applied by the box: {box_cases:?}"
        );
    }
    let n: i64 = db
        .query_one(
            "SELECT count(DISTINCT seq) FROM commands WHERE box_id = $1 AND seq IN (10, 11, 12)",
            &[&BOX],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    // 13. Acknowledgements are verified with the enrolled key: a forged one (another
    // key) replacing the box's ack of 12, and an unsigned one, are refused, counted and
    // alarmed; command 12 is not acknowledged.
    let real12 = SignedAck::parse(env.get(&ack_key(12)).unwrap().as_bytes()).unwrap();
    let forged = SignedAck::sign(real12.ack.clone(), |m| other.sign(m).to_bytes());
    env.put(dir.path(), &ack_key(12), &forged.to_bytes());
    let mut unsigned: Value = serde_json::from_slice(&real12.to_bytes()).unwrap();
    unsigned["seq"] = 13.into();
    unsigned["signature"] = "".into();
    env.put(
        dir.path(),
        &ack_key(13),
        serde_json::to_string(&unsigned).unwrap().as_bytes(),
    );
    let cmds: Value =
        serde_json::from_str(&env.central_ok(&["commands", "--box", BOX, "--json"])).unwrap();
    let c12 = cmds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["seq"] == 12)
        .unwrap();
    assert_eq!(c12["state"], "ack-refused", "{c12}");
    assert!(
        c12["ack_problem"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{c12}"
    );
    assert_eq!(
        cmds.as_array()
            .unwrap()
            .iter()
            .find(|c| c["seq"] == 11)
            .unwrap()["state"],
        "applied"
    );
    let table = env.central_ok(&["commands", "--box", BOX]);
    assert!(
        table.contains("2 acknowledgement object(s) refused"),
        "{table}"
    );
    let cases: Value = serde_json::from_str(&env.central_ok(&["hold", "list", "--json"])).unwrap();
    let ack_of = |case: &str| {
        cases
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case"] == case)
            .unwrap()["boxes"][BOX]["acknowledged"]
            .clone()
    };
    let (ack_a, ack_b) = (ack_of("C-A"), ack_of("C-B"));
    assert_eq!(
        [ack_a, ack_b].iter().filter(|v| **v == true).count(),
        1,
        "the case acknowledged by the forged ack counts as acknowledged: {cases}"
    );
    let alarms: i64 = db
        .query_one(
            "SELECT count FROM alarms WHERE box_id = $1 AND code = 'ack_signature'",
            &[&BOX],
        )
        .unwrap()
        .get(0);
    assert_eq!(alarms, 2);
    // Counted once per object version: looking again adds nothing.
    env.central_ok(&["commands", "--box", BOX]);
    let again: i64 = db
        .query_one(
            "SELECT count FROM alarms WHERE box_id = $1 AND code = 'ack_signature'",
            &[&BOX],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, 2);

    // 14. A hold placed on the box after the upload reaches the index: the box publishes
    // the recording's document again and a notice under _holds/<box>/; the indexer
    // (no --rescan: the document lies before its listing position) re-verifies it.
    let box_cli = |args: &[&str]| {
        let out = output_bounded(
            Command::new(&d.bin)
                .args(args)
                .arg("--config")
                .arg(&d.config),
            Duration::from_secs(60),
        )
        .expect("branchrec hung");
        assert!(
            out.status.success(),
            "branchrec {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let notices = || -> usize {
        env.s3(&["objects", BUCKET])
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| {
                let k = o["key"].as_str().unwrap();
                k.starts_with(&format!("_holds/{BOX}/")) && k.contains(&id2)
            })
            .count()
    };
    let index_pass = || -> Value {
        let out = env.central_ok(&[
            "index",
            "--once",
            "--json",
            "--key-pem",
            ck2_priv.to_str().unwrap(),
        ]);
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    assert!(!held_ids().contains(&id2));
    box_cli(&[
        "hold",
        "add",
        "--recording",
        &id2,
        "--reason",
        "box after upload",
    ]);
    wait_for("hold notice", 90, &d, || (notices() == 1).then_some(()));
    let r = index_pass();
    assert_eq!(r["reverified"], 1, "{r}");
    assert!(
        held_ids().contains(&id2),
        "box-placed hold not in the index"
    );
    // Released on the box: published again, not held in the index any more.
    let hid = cli_json(&d, &["hold", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["reason"] == "box after upload")
        .and_then(|h| h["id"].as_i64())
        .unwrap();
    box_cli(&[
        "hold",
        "release",
        &hid.to_string(),
        "--reason",
        "done locally",
    ]);
    wait_for("second hold notice", 90, &d, || {
        (notices() == 2).then_some(())
    });
    let r = index_pass();
    assert_eq!(r["reverified"], 1, "{r}");
    assert!(!held_ids().contains(&id2), "box release not in the index");
    // Z's box hold is untouched by all this; Y's central holds too.
    assert!(held_ids().contains(&z) && held_ids().contains(&y));
    d.stop();
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "central-command";
const KEY_LABEL: &str = "cmd-2026";
const PIN: &str = "27182818";

/// The command key in a SoftHSM2 token (Ed25519, generated there, not extractable):
/// `central rotate-compliance-key` signs through PKCS#11 (CKM_EDDSA) and the document
/// passes the box's checks with the token's public key; a box configured with another
/// key refuses it.
#[test]
fn command_key_in_softhsm2_signs_documents_the_box_accepts() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} missing: install the Debian package softhsm2 (scripts/test-all does)"
    );
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = output_bounded(
        Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--so-pin", "1234", "--pin", PIN]),
        Duration::from_secs(60),
    )
    .expect("softhsm2-util hung");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pk: [u8; 32] = {
        let ctx = Pkcs11::new(MODULE).unwrap();
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
            .unwrap();
        let s = ctx.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
            .unwrap();
        let label = KEY_LABEL.as_bytes().to_vec();
        // OID 1.3.101.112 (Ed25519)
        let (pubh, _) = s
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
                    Attribute::Label(label.clone()),
                    Attribute::Verify(true),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(label),
                ],
            )
            .unwrap();
        let point = match &s.get_attributes(pubh, &[AttributeType::EcPoint]).unwrap()[..] {
            [Attribute::EcPoint(p)] => p.clone(),
            other => panic!("EC point: {other:?}"),
        };
        let raw = if point.len() == 34 {
            &point[2..]
        } else {
            &point[..]
        };
        raw.try_into().unwrap()
    };

    let pki = Pki::new("archive");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (cert, key, _) = pki.server(false);
    let moto = Moto::start(dir.path(), &cert, &key);
    s3check(&moto, &ca, &["mkbucket", BUCKET]);
    let creds = dir.path().join("creds");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let cfg = dir.path().join("central.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\nendpoint = \"https://127.0.0.1:{}\"\nbucket = \"{BUCKET}\"\ncredentials_file = \"{}\"\nca_file = \"{}\"\n",
            moto.port,
            creds.display(),
            ca.display()
        ),
    )
    .unwrap();
    let new_ck = dir.path().join("ck-2027.pub.pem");
    std::fs::write(
        &new_ck,
        p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let run = |box_id: &str| {
        output_bounded(
            Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
                .args([
                    "rotate-compliance-key",
                    "--box",
                    box_id,
                    "--key-id",
                    "ck-2027",
                ])
                .arg("--public-key")
                .arg(&new_ck)
                .arg("--archive")
                .arg(&cfg)
                .args(["--command-pkcs11-module", MODULE])
                .args([
                    "--command-token-label",
                    TOKEN,
                    "--command-key-label",
                    KEY_LABEL,
                ])
                .env("SOFTHSM2_CONF", &conf)
                .env("BRANCHREC_COMMAND_PIN", PIN),
            Duration::from_secs(120),
        )
        .expect("branchrec-central hung")
    };
    for expect in [1, 2] {
        let out = run(BOX);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("command {expect} to box")),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let body = s3check(&moto, &ca, &["get", BUCKET, &slot(1)])["body"]
        .as_str()
        .unwrap()
        .to_string();
    let st = branchrec::command::SequenceState::default();
    let c = st
        .check(BOX, 1, body.as_bytes(), |m, s| {
            branchrec::vault::signing::verify_raw(&pk, m, s)
        })
        .expect("the box accepts the token-signed command");
    assert_eq!(c.key_id, branchrec::vault::signing::key_id_of(&pk));
    assert!(matches!(
        c.action,
        Action::RotateComplianceKey { ref key_id, .. } if key_id == "ck-2027"
    ));
    // Another command key: refused as a forgery.
    let other = ed25519_dalek::SigningKey::from_bytes(&[1; 32])
        .verifying_key()
        .to_bytes();
    assert!(matches!(
        st.check(BOX, 1, body.as_bytes(), |m, s| {
            branchrec::vault::signing::verify_raw(&other, m, s)
        }),
        Err(branchrec::command::Refusal::Signature { .. })
    ));
    // A wrong PIN: nothing written.
    let out = output_bounded(
        Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
            .args(["rotate-compliance-key", "--box", BOX, "--key-id", "ck-2027"])
            .arg("--public-key")
            .arg(&new_ck)
            .arg("--archive")
            .arg(&cfg)
            .args(["--command-pkcs11-module", MODULE])
            .args([
                "--command-token-label",
                TOKEN,
                "--command-key-label",
                KEY_LABEL,
            ])
            .env("SOFTHSM2_CONF", &conf)
            .env("BRANCHREC_COMMAND_PIN", "0000"),
        Duration::from_secs(120),
    )
    .expect("branchrec-central hung");
    assert!(!out.status.success());
    assert!(s3check(&moto, &ca, &["get", BUCKET, &slot(3)])["body"].is_null());
}
