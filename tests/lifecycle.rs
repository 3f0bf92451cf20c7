//! Life cycle end to end: real SIPREC calls from SIPp into `branchrec run`, then rules,
//! min-duration discard, retention expiry with a controlled clock (`retention sweep
//! --now`, `BRANCHREC_TEST_CLOCK_OFFSET_S`), legal holds, archive protection, disk
//! watermarks on a small tmpfs, and audit-log tamper detection (rusqlite edits).

#[path = "common/catalog.rs"]
mod catalog;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn sipp_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp"))
}

fn require_sipp() {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`sipp` not found: install the `sip-tester` package (CI installs it)"
    );
}

fn free_port() -> u16 {
    for _ in 0..200 {
        let p: u16 = 20000 + rand::random::<u16>() % 10000;
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port in 200 tries");
}

fn free_range(n: u16) -> (u16, u16) {
    for _ in 0..200 {
        let base: u16 = (40000 + rand::random::<u16>() % 20000) & !1;
        if (base..base + n).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return (base, base + n - 1);
        }
    }
    panic!("no free UDP range");
}

struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    sip_port: u16,
    data: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, data: &Path, extra: &str, clock_offset_s: i64) -> Daemon {
        let sip_port = free_port();
        let (lo, hi) = free_range(40);
        std::fs::create_dir_all(data).unwrap();
        let config = dir.join("branchrec.toml");
        std::fs::write(
            &config,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:{sip_port}\"]\n\
                 [media]\nrtp_bind = \"127.0.0.1\"\nrtp_ports = \"{lo}-{hi}\"\n\
                 [storage]\ndata_dir = \"{}\"\nmin_free_mb = 0\n\
                 [keys]\nprovider = \"software\"\n\
                 [log]\nlevel = \"info\"\n\
                 # `retention sweep --now` and the clock offset need the development\n\
                 # clock; hold releases here are single-operator (the two-person rule\n\
                 # has its own test in hostile_audit.rs).\n\
                 [development]\nclock_override = true\n\
                 [audit]\ntwo_person_hold_release = false\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("daemon-{}.log", rand::random::<u32>()));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_branchrec"))
            .args(["run", "--config"])
            .arg(&config)
            .env("BRANCHREC_TEST_CLOCK_OFFSET_S", clock_offset_s.to_string())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("starting branchrec");
        let mut d = Daemon {
            child: Some(child),
            config,
            log,
            sip_port,
            data: data.to_path_buf(),
        };
        // Polled every 50 ms; start-up is well under a second idle, 60 s bounds a machine
        // whose cores are both busy.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = d.log_text();
            if t.contains("branchrec ready") {
                return d;
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("branchrec exited ({st}) before ready:\n{t}");
            }
            assert!(Instant::now() < deadline, "not ready after 60 s:\n{t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            // A clean stop is sub-second idle; 30 s bounds a loaded machine.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("branchrec did not stop within 30 s");
        }
    }

    /// `branchrec ARGS --config CFG`, bounded to 30 s.
    fn cli(&self, args: &[&str]) -> Output {
        let child = Command::new(env!("CARGO_BIN_EXE_branchrec"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The pipes are drained while the CLI runs (wait_with_output on a thread): polling
        // for the exit first would block a CLI whose output fills the 64 KiB pipe. A CLI call
        // is well under a second idle; 60 s bounds a loaded machine.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                panic!("branchrec {args:?} hung (60 s)");
            }
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "branchrec {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON {e}: {out}"))
    }

    /// One SIPp call; returns whether SIPp succeeded.
    fn call(&self, scenario: &str, caller: &str, callee: &str, hold_ms: u64) -> bool {
        let (mp, _) = free_range(6);
        let local = free_port();
        let mut child = Command::new("sipp")
            .arg(format!("127.0.0.1:{}", self.sip_port))
            .arg("-sf")
            .arg(sipp_dir().join(scenario))
            .args([
                "-m",
                "1",
                "-nostdin",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-timeout",
                "20s",
                "-timeout_error",
            ])
            .args(["-p", &local.to_string(), "-mp", &mp.to_string()])
            .args([
                "-key",
                "caller",
                caller,
                "-key",
                "callee",
                callee,
                "-key",
                "hold_ms",
                &hold_ms.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sipp");
        // SIPp's own -timeout (20 s) ends a stuck call; 5 s more for it to exit.
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn list(&self, extra: &[&str]) -> Vec<Value> {
        let mut a = vec!["recordings", "list", "--json"];
        a.extend_from_slice(extra);
        self.json(&a).as_array().unwrap().clone()
    }

    /// Wait until `n` recordings are closed (state != recording), bounded: polled every
    /// 200 ms; closing is sub-second idle, 60 s bounds a loaded machine.
    fn wait_closed(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = self.list(&[]);
            if rows.len() >= n && rows.iter().all(|r| r["state"] != "recording") {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "recordings not closed: {rows:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn id_of(rows: &[Value], aor: &str) -> String {
    rows.iter()
        .find(|r| {
            r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["aor"] == aor)
        })
        .unwrap_or_else(|| panic!("no recording with {aor}: {rows:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rfc3339_in(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

const RULES: &str = r#"
[policy]
internal = ["1???"]
default_retention = "long"

[retention]
classes = { long = "30 days", short = "1 day", mifid = "5 years" }

[[rules]]
name = "hr-line"
participant = ["+4930999*"]
record = false

[[rules]]
name = "support"
participant = ["+4940*"]
retention = "short"
min_duration_s = 2
tags = ["support"]
"#;

#[test]
fn rules_retention_holds_and_audit() {
    require_sipp();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &dir.path().join("data"), RULES, 0);

    // 1: the rule says do not record → 200 OK, no recording at all.
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:1001@pbx",
        "sip:+4930999123@pstn",
        300
    ));
    // 2: support call shorter than 2 s → discarded after BYE.
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4940111@pstn",
        "sip:1002@pbx",
        300
    ));
    // 3, 5: support calls long enough; 4: default class.
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4940222@pstn",
        "sip:1003@pbx",
        2600
    ));
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4950333@pstn",
        "sip:1004@pbx",
        300
    ));
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4940444@pstn",
        "sip:1005@pbx",
        2600
    ));

    // The short call's row is discarded after its close is committed, so for a while
    // there may be 4 closed rows: polled until exactly 3 (was: once more after a fixed
    // 500 ms). All four rows exist once the calls have ended (each is inserted when its
    // call is answered), so the count only goes down. Bounded at 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = d.wait_closed(3);
        if rows.len() <= 3 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        rows.len(),
        3,
        "skip + discard leave 3 recordings: {rows:#?}\n{}",
        d.log_text()
    );
    let r3 = id_of(&rows, "sip:+4940222@pstn");
    let r4 = id_of(&rows, "sip:+4950333@pstn");
    let r5 = id_of(&rows, "sip:+4940444@pstn");
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id(&r3)["tags"], serde_json::json!(["support"]));
    assert_eq!(by_id(&r3)["retention_class"], "short");
    assert_eq!(by_id(&r3)["rule"], "support");
    assert_eq!(by_id(&r4)["retention_class"], "long");
    assert_eq!(by_id(&r4)["tags"], serde_json::json!([]));

    // Filters.
    let tagged = d.list(&["--tag", "support"]);
    assert_eq!(tagged.len(), 2);
    assert_eq!(d.list(&["--participant", "+4950*"]).len(), 1);
    assert_eq!(d.list(&["--participant", "sip:+4950333@pstn"]).len(), 1);
    assert_eq!(d.list(&["--since", "1h"]).len(), 3);
    assert_eq!(d.list(&["--until", "1h"]).len(), 0);

    // Tombstone of the discarded short call; audit of the skipped one.
    let tomb = d.json(&["retention", "tombstones", "--json"]);
    let tomb = tomb.as_array().unwrap();
    assert_eq!(tomb.len(), 1, "{tomb:?}");
    assert_eq!(tomb[0]["reason"], "min_duration");
    assert!(tomb[0]["file_sha256"]
        .as_str()
        .is_some_and(|h| h.len() == 64));
    let audit = d.json(&["audit", "show", "--json"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"call.not_recorded"), "{actions:?}");
    assert!(
        actions.contains(&"rules.change") && actions.contains(&"daemon.start"),
        "{actions:?}"
    );
    assert!(actions.contains(&"key.create"), "{actions:?}");
    assert!(actions.contains(&"recording.delete"), "{actions:?}");

    // Hold by participant on call 5.
    let out = d.ok(&[
        "hold",
        "add",
        "--participant",
        "+4940444",
        "--reason",
        "case 17",
    ]);
    assert!(out.contains("1 recording(s)"), "{out}");
    assert_eq!(d.list(&["--held"]).len(), 1);
    assert_eq!(d.list(&["--held"])[0]["id"], r5.as_str());
    assert_eq!(d.list(&["--not-held"]).len(), 2);
    // Deleting a held recording is refused with a clear message.
    let o = d.cli(&["recordings", "delete", &r5, "--reason", "GDPR art. 17"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("legal hold"), "{err}");

    // Expiry two days on: only the short-class, unheld recording goes.
    let files_before: Vec<_> = walk_brec(&d.data.join("recordings"));
    assert_eq!(files_before.len(), 3);
    let rep = d.json(&["retention", "sweep", "--now", &rfc3339_in(2), "--json"]);
    let deleted: Vec<&str> = rep["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["recording_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![r3.as_str()]);
    assert_eq!(rep["blocked"][0][0], r5.as_str());
    assert_eq!(rep["blocked"][0][1], "held");
    assert_eq!(walk_brec(&d.data.join("recordings")).len(), 2);
    // 40 days on: the long one goes too; the held one survives.
    let rep = d.json(&["retention", "sweep", "--now", &rfc3339_in(40), "--json"]);
    let deleted: Vec<&str> = rep["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["recording_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![r4.as_str()]);
    let left = d.list(&[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], r5.as_str());
    // Release (audited), then it expires like any other.
    let holds = d.json(&["hold", "list", "--json"]);
    let hid = holds[0]["id"].as_i64().unwrap().to_string();
    d.ok(&["hold", "release", &hid, "--reason", "case closed"]);
    let rep = d.json(&["retention", "sweep", "--now", &rfc3339_in(2), "--json"]);
    assert_eq!(rep["deleted"].as_array().unwrap().len(), 1);
    assert!(d.list(&[]).is_empty());
    assert!(walk(&d.data.join("recordings")).is_empty());
    let tomb = d.json(&["retention", "tombstones", "--json"]);
    assert_eq!(tomb.as_array().unwrap().len(), 4);

    // Audit: intact, then tampering is found with its position.
    let v = d.json(&["audit", "verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    d.ok(&["audit", "show"]); // one more access entry
    let n: i64 = {
        let c = catalog::connection(&d.data);
        c.query_row("SELECT MAX(seq) FROM audit_log", [], |r| r.get(0))
            .unwrap()
    };
    assert!(n > 10);
    let verify_fail = |what: &str| -> Value {
        let o = d.cli(&["audit", "verify", "--json"]);
        assert!(!o.status.success(), "{what}: verify should fail");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // Edit entry 5.
    let c = catalog::connection(&d.data);
    let orig: String = c
        .query_row("SELECT details FROM audit_log WHERE seq = 5", [], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute("UPDATE audit_log SET details = '{}' WHERE seq = 5", [])
        .unwrap();
    let v = verify_fail("edit");
    assert_eq!(v["problems"][0]["position"], 5, "{v}");
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("edited"),
        "{v}"
    );
    c.execute("UPDATE audit_log SET details = ?1 WHERE seq = 5", [&orig])
        .unwrap();
    assert_eq!(d.json(&["audit", "verify", "--json"])["ok"], true);
    // Remove entry 4 (and put it back as it was, MAC included).
    #[allow(clippy::type_complexity)]
    let row: (i64, String, String, String, String, String, String, Option<String>) = c
        .query_row("SELECT at, actor, action, target, details, prev_hash, hash, mac FROM audit_log WHERE seq = 4", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })
        .unwrap();
    c.execute("DELETE FROM audit_log WHERE seq = 4", [])
        .unwrap();
    let v = verify_fail("delete");
    assert_eq!(v["problems"][0]["position"], 4, "{v}");
    c.execute(
        "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash, mac) VALUES (4, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7],
    )
    .unwrap();
    assert_eq!(d.json(&["audit", "verify", "--json"])["ok"], true);
    // Reorder entries 6 and 7.
    c.execute_batch("UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 7; UPDATE audit_log SET seq = 7 WHERE seq = -1;").unwrap();
    let v = verify_fail("reorder");
    assert_eq!(v["problems"][0]["position"], 6, "{v}");
    c.execute_batch("UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 7; UPDATE audit_log SET seq = 7 WHERE seq = -1;").unwrap();
    // Cut the tail after a signed head.
    let signed: i64 = c
        .query_row("SELECT MAX(seq) FROM audit_heads", [], |r| r.get(0))
        .unwrap();
    c.execute("DELETE FROM audit_log WHERE seq >= ?1", [signed])
        .unwrap();
    let v = verify_fail("truncate");
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["message"]
                .as_str()
                .unwrap()
                .contains("removed from the end")),
        "{v}"
    );
    drop(c);
    let mut d = d;
    d.stop();
}

/// Recording containers under `dir` (manifests and markers beside them left out).
fn walk_brec(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "brec"))
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    for _ in 0..10_000 {
        let Some(d) = stack.pop() else { break };
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn unarchived_recordings_survive_unless_local_only() {
    require_sipp();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let extra = "[retention]\nlocal_only = false\nclasses = { default = \"1 day\" }\n";
    let d = Daemon::start(dir.path(), &dir.path().join("data"), extra, 0);
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4960111@pstn",
        "sip:1001@pbx",
        300
    ));
    let rows = d.wait_closed(1);
    let id = rows[0]["id"].as_str().unwrap().to_string();
    let rep = d.json(&["retention", "sweep", "--now", &rfc3339_in(5), "--json"]);
    assert!(rep["deleted"].as_array().unwrap().is_empty(), "{rep}");
    assert!(
        rep["blocked"][0][1]
            .as_str()
            .unwrap()
            .contains("not archived"),
        "{rep}"
    );
    let o = d.cli(&["recordings", "delete", &id, "--reason", "request 1"]);
    assert!(
        !o.status.success(),
        "operator delete must wait for the archive too"
    );
    let st = d.json(&["retention", "status", "--json"]);
    assert_eq!(st["deletion_blocked_until_archived"], true);
    // The uplink (issue #5) will set archived_at; emulate its confirmation.
    let c = catalog::connection(&d.data);
    c.execute("UPDATE recordings SET archived_at = 1 WHERE id = ?1", [&id])
        .unwrap();
    let rep = d.json(&["retention", "sweep", "--now", &rfc3339_in(5), "--json"]);
    assert_eq!(rep["deleted"].as_array().unwrap().len(), 1, "{rep}");
    let mut d = d;
    d.stop();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn watermarks_on_a_small_filesystem() {
    require_sipp();
    assert!(
        is_root(),
        "this test mounts a small tmpfs and must run as root (CI does)"
    );
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m"])
        .arg("tmpfs")
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs failed");
    let _m = Mount(data.clone());
    let extra = "[retention]\nhigh_watermark_pct = 60\nlow_watermark_pct = 40\nclasses = { default = \"1 day\", keep = \"5 years\" }\n\
                 [[rules]]\nname = \"keep\"\nparticipant = [\"+4911*\"]\nretention = \"keep\"\n";
    let mut d = Daemon::start(dir.path(), &data, extra, 0);
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4970111@pstn",
        "sip:1001@pbx",
        500
    )); // expires in 1 day
    assert!(d.call(
        "lifecycle-call.xml",
        "sip:+4911222@pstn",
        "sip:1002@pbx",
        500
    )); // kept 5 years
    let rows = d.wait_closed(2);
    let expiring = id_of(&rows, "sip:+4970111@pstn");
    let kept = id_of(&rows, "sip:+4911222@pstn");
    d.ok(&["hold", "add", "--last", "1h", "--reason", "incident"]);
    d.ok(&["hold", "release", "1", "--reason", "test"]);
    // Fill the disk to ~75 % with something that is not a recording (protected by definition).
    let ballast = data.join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 * 1024 * 1024]).unwrap();
    // Within a few seconds the sweeper refuses calls: nothing is expired, all protected.
    // Polled every 200 ms; the daemon re-checks disk space every second or so, so this
    // takes a few seconds idle; 60 s bounds a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value =
            serde_json::from_slice(&std::fs::read(data.join("status.json")).unwrap_or_default())
                .unwrap_or(Value::Null);
        if s["pressure"] == "refusing" {
            assert!(
                s["alarm"].as_str().is_some_and(|a| a.contains("protected")),
                "{s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal: {s}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.call(
            "lifecycle-refused.xml",
            "sip:+4970999@pstn",
            "sip:1003@pbx",
            0
        ),
        "new call must get 503"
    );
    assert!(d.log_text().contains("ALARM"), "{}", d.log_text());
    assert_eq!(d.list(&[]).len(), 2, "nothing protected deleted");
    // Two days later the first recording has expired: it goes first, the 5-year one stays.
    d.stop();
    let mut d = Daemon::start(dir.path(), &data, extra, 2 * 86_400);
    // Polled every 200 ms; the daemon re-checks disk space every second or so, so this
    // takes a few seconds idle; 60 s bounds a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<String> = d
            .list(&[])
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        if ids == vec![kept.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired recording not deleted under pressure: {ids:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tomb = d.json(&["retention", "tombstones", "--json"]);
    assert_eq!(tomb[0]["recording_id"], expiring.as_str());
    // Still above the watermark with only protected data: still refusing.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.call(
        "lifecycle-refused.xml",
        "sip:+4970999@pstn",
        "sip:1003@pbx",
        0
    ));
    // Space frees: recording resumes by itself.
    std::fs::remove_file(&ballast).unwrap();
    // Polled every 200 ms; the daemon re-checks disk space every second or so, so this
    // takes a few seconds idle; 60 s bounds a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value =
            serde_json::from_slice(&std::fs::read(data.join("status.json")).unwrap_or_default())
                .unwrap_or(Value::Null);
        if s["pressure"] == "normal" {
            break;
        }
        assert!(Instant::now() < deadline, "still refusing: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.call(
            "lifecycle-call.xml",
            "sip:+4970555@pstn",
            "sip:1004@pbx",
            300
        ),
        "call after space freed"
    );
    d.wait_closed(2);
    d.stop();
}
