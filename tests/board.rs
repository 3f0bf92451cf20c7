//! The front panel end to end on the simulated board: SIPp records a call that ended 2 h
//! ago, one that ended 5 min ago and one in progress; the hold button (pressed through
//! `branchrec board press`) places ONE legal hold covering exactly the last two, audited
//! with operator `button`, through the same code path as `branchrec hold add`; the HOLD
//! LED blinks until the hold is durable, then is steady, then goes dark; a press too soon
//! after is refused, and a stuck press gives one more hold, not a flood. Needs `sipp` (package sip-tester): FAILS without it.

#[path = "common/catalog.rs"]
mod catalog;
mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::time::{Duration, Instant};

use daemon::Install;
use serde_json::Value;

const LONG_PRESS_MS: u64 = 400;

fn json(inst: &Install, args: &[&str]) -> Value {
    let out = inst.cli_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON {e}: {out}"))
}

fn board(inst: &Install) -> Value {
    let v = json(inst, &["status", "--json"]);
    assert!(
        v["board"].is_object(),
        "status --json has no board: {v:#}\nlog:\n{}",
        inst.log_text()
    );
    v["board"].clone()
}

/// Poll `status --json` until `pred` holds (bounded).
/// Polls the board state every 100 ms until `pred` holds. `limit` is a liveness bound
/// only (what is waited for takes at most a second or two idle, or the press/LED time the
/// test set); the limits are 30-60 s so that a loaded machine does not trip them. Nothing
/// asserts that a state comes *late*, except where a test says so explicitly.
fn wait_board(inst: &Install, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let b = board(inst);
        if pred(&b) {
            return b;
        }
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {what}; board: {b:#}\nlog:\n{}",
            inst.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn call(inst: &Install, dir: &std::path::Path, caller: &str, hold_ms: u64) {
    let run = common::run_sipp(
        "lifecycle-call.xml",
        inst.sip.port(),
        &[
            ("caller", caller.to_string()),
            ("callee", "sip:+4930222@pbx.example".into()),
            ("hold_ms", hold_ms.to_string()),
        ],
        dir,
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.diagnostics);
}

fn recordings(inst: &Install) -> Vec<Value> {
    json(inst, &["recordings", "list", "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn id_of(rows: &[Value], caller: &str) -> String {
    rows.iter()
        .find(|r| r.to_string().contains(caller))
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no recording of {caller} in {rows:#?}"))
        .to_string()
}

/// Move a closed recording back in time in the catalogue (as if it had been made then).
fn age(inst: &Install, id: &str, by_ms: i64) {
    let c = catalog::connection(&inst.data);
    let n = c
        .execute(
            "UPDATE recordings SET started_at = started_at - ?1, ended_at = ended_at - ?1 WHERE id = ?2",
            rusqlite::params![by_ms, id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn hold_button_holds_recent_calls_once() {
    common::require_tool("sipp", "sip-tester");
    let _serial = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let inst = Install::new(tmp.path(), "provider = \"software\"");
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg += &format!(
        "\n[board]\nkind = \"sim\"\nlong_press_ms = {LONG_PRESS_MS}\nmin_hold_interval_s = 8\nhold_led_s = 3\nhold_window_min = 30\n"
    );
    std::fs::write(&inst.config, cfg).unwrap();
    let d = inst.start();

    // Idle: the simulated board, every LED dark.
    let b = wait_board(&inst, "the panel", Duration::from_secs(60), |b| {
        b["leds"]["rec"]["pattern"] == "off"
    });
    assert_eq!(b["kind"], "sim");
    for l in ["rec", "sync", "fault", "hold"] {
        assert_eq!(b["leds"][l]["pattern"], "off", "{l}: {b:#}");
    }
    assert!(b["last_press"].is_null());

    // Two calls that have ended: one "2 h ago", one "5 min ago".
    call(&inst, tmp.path(), "sip:+4930100@pbx.example", 300);
    call(&inst, tmp.path(), "sip:+4930105@pbx.example", 300);
    let t = Instant::now();
    let rows = loop {
        let rows = recordings(&inst);
        if rows.len() == 2 && rows.iter().all(|r| r["state"] == "complete") {
            break rows;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let old = id_of(&rows, "+4930100");
    let recent = id_of(&rows, "+4930105");
    age(&inst, &old, 2 * 3600 * 1000);
    age(&inst, &recent, 5 * 60 * 1000);

    // One in progress.
    let (port, dir) = (inst.sip.port(), tmp.path().join("live"));
    std::fs::create_dir_all(&dir).unwrap();
    let live_call = std::thread::spawn(move || {
        common::run_sipp(
            "lifecycle-call.xml",
            port,
            &[
                ("caller", "sip:+4930199@pbx.example".to_string()),
                ("callee", "sip:+4930222@pbx.example".into()),
                ("hold_ms", "11000".into()),
            ],
            &dir,
            Duration::from_secs(40),
        )
    });
    let b = wait_board(&inst, "REC on", Duration::from_secs(60), |b| {
        b["leds"]["rec"]["pattern"] == "on"
    });
    assert_eq!(b["faults"].as_array().map(Vec::len), Some(0), "{b:#}");
    // Its participants reach the catalogue just after the row.
    let t = Instant::now();
    let live = loop {
        let rows = recordings(&inst);
        if rows.iter().any(|r| r.to_string().contains("+4930199")) {
            break id_of(&rows, "+4930199");
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Paused: REC blinks; resumed: steady again.
    inst.cli_ok(&["recordings", "pause", &live]);
    wait_board(&inst, "REC blinking", Duration::from_secs(30), |b| {
        b["leds"]["rec"]["pattern"] == "blink"
    });
    inst.cli_ok(&["recordings", "resume", &live]);
    wait_board(&inst, "REC steady", Duration::from_secs(30), |b| {
        b["leds"]["rec"]["pattern"] == "on"
    });

    // A short press does nothing.
    inst.cli_ok(&["board", "press", "--ms", "150"]);
    let b = wait_board(
        &inst,
        "short press released",
        Duration::from_secs(30),
        |b| {
            b["last_press"]["held_ms"]
                .as_u64()
                .is_some_and(|h| h >= 100)
                && b["button_pressed"] == false
        },
    );
    assert_eq!(b["last_press"]["action"], "none", "{b:#}");
    assert!(b["last_hold"].is_null(), "{b:#}");

    // The long press.
    inst.cli_ok(&["board", "press", "--ms", "900"]);
    let b = wait_board(&inst, "hold durable", Duration::from_secs(30), |b| {
        b["last_hold"]["state"] == "durable"
    });
    assert_eq!(b["leds"]["hold"]["pattern"], "on", "{b:#}");
    assert_eq!(b["last_press"]["action"], "hold", "{b:#}");
    assert_eq!(b["last_hold"]["recordings"], 2, "{b:#}");
    let first_hold = Instant::now();
    let hold_id = b["last_hold"]["hold_id"].as_i64().unwrap();

    // Exactly the call in progress and the one ended 5 min ago.
    let held: Vec<String> = json(&inst, &["recordings", "list", "--held", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![live.clone(), recent.clone()];
    want.sort();
    let mut got = held.clone();
    got.sort();
    assert_eq!(got, want, "held recordings (old one is {old})");
    let holds = json(&inst, &["hold", "list", "--json"]);
    let holds = holds.as_array().unwrap();
    assert_eq!(holds.len(), 1, "{holds:#?}");
    assert_eq!(holds[0]["id"], hold_id);
    assert_eq!(holds[0]["operator"], "button");
    assert_eq!(holds[0]["kind"], "window");
    assert!(
        holds[0]["reason"].as_str().unwrap().contains("box "),
        "{holds:#?}"
    );
    let audit = json(&inst, &["audit", "show", "--json"]);
    let adds: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "hold.add")
        .collect();
    assert_eq!(adds.len(), 1, "{audit:#}");
    assert_eq!(adds[0]["actor"], "button");
    assert_eq!(adds[0]["target"], format!("hold:{hold_id}"));
    // The audit chain (with the head the daemon signed) verifies.
    inst.cli_ok(&["audit", "verify"]);

    // HOLD blinked while the hold was being committed, then went steady (the daemon logs
    // every LED pattern change).
    let log = inst.log_text();
    let blink = log
        .find("hold=\"fast_blink\"")
        .unwrap_or_else(|| panic!("no HOLD blink in the log:\n{log}"));
    let steady = log[blink..]
        .find("hold=\"on\"")
        .unwrap_or_else(|| panic!("HOLD never steady after blinking:\n{log}"));
    assert!(
        log[blink..blink + steady].contains("LEGAL HOLD placed"),
        "{log}"
    );

    // Steady for hold_led_s, then dark.
    let b = wait_board(&inst, "HOLD dark", Duration::from_secs(30), |b| {
        b["leds"]["hold"]["pattern"] == "off"
    });
    assert_eq!(b["last_hold"]["state"], "durable");

    // Another long press within min_hold_interval_s (8 s) is refused.
    inst.cli_ok(&["board", "press", "--ms", "700"]);
    let b = wait_board(&inst, "suppressed press", Duration::from_secs(30), |b| {
        b["last_press"]["action"] == "suppressed" && b["button_pressed"] == false
    });
    assert_eq!(b["last_hold"]["hold_id"], hold_id, "{b:#}");
    assert_eq!(
        json(&inst, &["hold", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Past the interval, a stuck button (held 6 s, 15 long-press times): one more hold,
    // not fifteen.
    let wait = Duration::from_millis(8200).saturating_sub(first_hold.elapsed());
    std::thread::sleep(wait);
    inst.cli_ok(&["board", "press", "--ms", "6000"]);
    let b = wait_board(
        &inst,
        "stuck press released",
        Duration::from_secs(30),
        |b| {
            b["last_press"]["held_ms"]
                .as_u64()
                .is_some_and(|h| h >= 5900)
                && b["button_pressed"] == false
        },
    );
    assert_eq!(b["last_press"]["action"], "hold", "{b:#}");
    assert_eq!(b["last_hold"]["hold_id"], hold_id + 1, "{b:#}");
    let holds = json(&inst, &["hold", "list", "--json"]);
    assert_eq!(holds.as_array().unwrap().len(), 2, "{holds:#}");

    // The call in progress stays held once it has ended.
    let run = live_call.join().unwrap();
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.diagnostics);
    let t = Instant::now();
    loop {
        let rows = recordings(&inst);
        let r = rows.iter().find(|r| r["id"] == live.as_str()).unwrap();
        if r["state"] == "complete" {
            assert_eq!(r["held"], true, "{r:#}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = board(&inst);
    assert_eq!(b["leds"]["rec"]["pattern"], "off", "{b:#}");
    // Human status names the board and the LEDs.
    let human = inst.cli_ok(&["status"]);
    assert!(human.contains("board          sim (sim)"), "{human}");
    assert!(human.contains("LEDs           REC off"), "{human}");
    d.stop();
    // A clean stop leaves FAULT alone lit (nothing is being recorded).
    assert!(
        inst.log_text()
            .contains("front panel: stopped (FAULT on, other LEDs off)"),
        "{}",
        inst.log_text()
    );
}

#[test]
fn press_needs_a_simulated_board_and_sane_duration() {
    let tmp = tempfile::tempdir().unwrap();
    let inst = Install::new(tmp.path(), "provider = \"software\"");
    // No daemon: a clear error.
    let o = inst.cli(&["board", "press", "--ms", "2500"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is it running?"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // `status` without a daemon still works and says the panel is unknown.
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg += "\n[board]\nkind = \"sim\"\n";
    std::fs::write(&inst.config, &cfg).unwrap();
    let d = inst.start();
    let o = inst.cli(&["board", "press", "--ms", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("1..=3600000"));
    d.stop();
    let human = inst.cli_ok(&["status"]);
    assert!(human.contains("board          unknown"), "{human}");
    // A cdev board whose pin map names lines this machine does not have: start-up fails
    // and says which line.
    let pins = tmp.path().join("pins.toml");
    std::fs::write(
        &pins,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/board/qemu_aarch64_virt/pins.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        &inst.config,
        cfg.replace(
            "kind = \"sim\"",
            &format!("kind = \"cdev\"\npins = \"{}\"", pins.display()),
        ),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_branchrec"))
        .args(["run", "--config"])
        .arg(&inst.config)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("front panel"), "{err}");
    assert!(
        err.contains("branchrec-sim") || err.contains("/dev/gpiochip"),
        "{err}"
    );
}
