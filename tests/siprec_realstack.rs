//! Issue #13 acceptance: a REAL SIP stack as the recording client. PJSIP 2.15 (the pjsua2
//! Python binding of the `pjsua2-python` wheel; scripts/test-all installs it) runs
//! tests/realstack/pjsua_src.py against the daemon: a two-stream SIPREC call with a
//! multipart body (SDP + rs-metadata), pause and resume by re-INVITE (`a=inactive`), a
//! transfer whose re-INVITE carries a complete metadata snapshot replacing Bob by Charlie,
//! a session-timer refresh by UPDATE, BYE. The recording is checked through the CLI: G.711
//! audio bit-exact against what the script played into PJSIP, the pause as events, Bob
//! kept in the participant history (searchable, with the time he left, in `show`, in the
//! signed manifest), the channel map following the transfer, one stats schema.
//! Missing python3/pjsua2 makes the test FAIL, not skip.

mod common;

use common::g711::Codec;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const RATE: usize = 8000;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/realstack/pjsua_src.py");

fn require_pjsua2() {
    let out = output_bounded(
        Command::new("python3").args(["-c", "import pjsua2"]),
        Duration::from_secs(60),
    );
    assert!(
        out.as_ref().is_some_and(|o| o.status.success()),
        "python3 with the pjsua2 module is required (pip install pjsua2-python): {:?}",
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
}

fn participant<'a>(detail: &'a Value, aor: &str) -> &'a Value {
    detail["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["aor"] == aor)
        .unwrap_or_else(|| panic!("no participant {aor} in {}", detail["participants"]))
}

#[test]
fn pjsip_src_two_streams_pause_transfer_refresh() {
    let _g = serial();
    require_pjsua2();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = Daemon::start(dir);
    let n = 3 * RATE / 2; // 1.5 s bursts
    let names = ["a1", "b1", "a2", "b2", "a3", "c3"];
    let bursts: Vec<Vec<i16>> = (0..6)
        .map(|i| test_audio(40 + i as u64, n, Codec::Pcmu))
        .collect();
    let mut args: Vec<String> = vec![
        SCRIPT.into(),
        "--srs".into(),
        format!("127.0.0.1:{}", d.sip_port),
        "--sip-port".into(),
        free_port().to_string(),
        "--rtp-port".into(),
        free_port_range(20).0.to_string(),
        "--burst-ms".into(),
        "1500".into(),
        // After each burst starts: 1.5 s of audio plus 1.5 s before the next step, so the
        // burst is out (PJSIP's clock thread sends it in real time) and the daemon's
        // playout delay (300 ms) has passed even on a loaded 2-core machine.
        "--gap-ms".into(),
        "1500".into(),
        "--result".into(),
        dir.join("result.json").display().to_string(),
        "--log".into(),
        dir.join("pjsua.log").display().to_string(),
        "--audio".into(),
    ];
    for (name, b) in names.iter().zip(&bursts) {
        let p = dir.join(format!("{name}.raw"));
        write_raw(&p, b);
        args.push(p.display().to_string());
    }
    // The script's own waits are bounded (15 s + 4 × 10 s for answers, 4 × 3 s of media);
    // 120 s kills it on a machine where even that does not suffice.
    let out = output_bounded(
        Command::new("python3").args(&args),
        Duration::from_secs(120),
    )
    .expect("pjsua_src.py did not finish within 120 s");
    let result: Value =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    let pj_log = || std::fs::read_to_string(dir.join("pjsua.log")).unwrap_or_default();
    assert!(
        out.status.success() && result["ok"] == true,
        "the PJSIP SRC failed: {}\n--- stderr\n{}\n--- pjsua log (tail)\n{}\n--- daemon\n{}",
        result["error"],
        String::from_utf8_lossy(&out.stderr),
        tail(&pj_log(), 6000),
        d.log_text()
    );
    wait_settled(&d, 1);
    let rec = the_recording(&d);
    assert_eq!(rec["state"], "complete", "{rec}");
    let id = rec["id"].as_str().expect("id").to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);

    // Session timer: PJSIP's refresh (UPDATE, carrying Session-Expires) is answered with
    // Session-Expires and Require: timer, as is every 2xx of the session.
    let responses: Vec<&str> = result["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let update_ok = responses
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains(" UPDATE\r\n"))
        .unwrap_or_else(|| panic!("no 200 to UPDATE among {responses:?}"));
    for h in ["Session-Expires: 90", "Require: timer", "+sip.srs"] {
        assert!(
            update_ok.contains(h),
            "200 to UPDATE lacks {h}: {update_ok}"
        );
    }
    assert!(
        pj_log().contains("Session-Expires: 90"),
        "PJSIP sent no Session-Expires"
    );

    // The pause by re-INVITE (a=inactive) and the resume are events.
    let pauses: Vec<(String, Value)> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["channel"].is_null())
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").into(),
                e["detail"]["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        pauses,
        vec![
            ("pause".to_string(), Value::from("siprec")),
            ("resume".to_string(), Value::from("siprec"))
        ],
        "{}",
        detail["events"]
    );

    // Participants as history: Bob (metadata v1) stays after the transfer, with the time
    // he left; Charlie joined at the snapshot's associate-time; both were heard on channel 1.
    let bob = participant(&detail, "sip:bob@realstack.example");
    assert_eq!(bob["joined_at"], "2026-01-01T10:00:00.000Z", "{bob}");
    assert!(
        bob["left_at"].is_string(),
        "Bob left at the transfer: {bob}"
    );
    assert_eq!(bob["channel"], 1, "{bob}");
    let charlie = participant(&detail, "sip:charlie@realstack.example");
    assert_eq!(
        charlie["joined_at"], "2026-01-01T10:00:09.000Z",
        "{charlie}"
    );
    assert!(charlie.get("left_at").is_none(), "{charlie}");
    assert_eq!(charlie["channel"], 1, "{charlie}");
    let alice = participant(&detail, "sip:alice@realstack.example");
    assert!(alice.get("left_at").is_none(), "{alice}");
    assert_eq!(alice["channel"], 0, "{alice}");
    let found = d.recordings_json(&[
        "list",
        "--participant",
        "sip:bob@realstack.example",
        "--json",
    ]);
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(1),
        "list --participant finds the call by Bob after the transfer: {found}"
    );
    // The channel map follows the stream association: channel 1 is Charlie's now.
    let ch1 = &detail["channels"][1];
    assert_eq!(ch1["aor"], "sip:charlie@realstack.example", "{ch1}");
    // The signed manifest lists the whole history.
    let file = detail["file_path"].as_str().expect("file_path");
    let manifest_path = dir.join("data").join(format!("{file}.manifest.json"));
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    let m: Value = serde_json::from_str(&manifest).expect("manifest JSON");
    let mbob = find_in(&m, "sip:bob@realstack.example")
        .unwrap_or_else(|| panic!("Bob missing from the manifest: {manifest}"));
    assert!(mbob["left_at_ms"].is_i64(), "{mbob}");
    assert_eq!(
        detail["metadata_versions"].as_array().map(Vec::len),
        Some(2)
    );

    // Stats: one schema; nothing lost, nothing sent while paused (PJSIP stops on inactive).
    let stats = assert_stats_schema(&detail, 2);
    for s in &stats {
        assert_eq!((s.lost, s.late, s.duplicates), (0, 0, 0), "{s:?}");
    }

    // Audio: each channel is exactly its three bursts, G.711 bit-exact, silence between.
    let wav = dir.join("export.wav");
    d.recordings(&["export", &id, "--out", wav.to_str().expect("utf-8 path")]);
    let w = read_wav(&wav);
    assert_eq!((w.channels, w.rate), (2, 8000));
    let chan = |c: usize| -> Vec<i16> { w.data[c].clone() };
    expect_bursts(
        "channel 0 (Alice)",
        &chan(0),
        &[&bursts[0], &bursts[2], &bursts[4]],
    );
    expect_bursts(
        "channel 1 (Bob, then Charlie)",
        &chan(1),
        &[&bursts[1], &bursts[3], &bursts[5]],
    );
    d.stop();
}

/// The first object anywhere in `v` whose `aor` is `aor`.
fn find_in<'a>(v: &'a Value, aor: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) => {
            if o.get("aor").and_then(Value::as_str) == Some(aor) {
                return Some(v);
            }
            o.values().find_map(|x| find_in(x, aor))
        }
        Value::Array(a) => a.iter().find_map(|x| find_in(x, aor)),
        _ => None,
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
