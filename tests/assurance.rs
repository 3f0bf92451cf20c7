//! Issue #19 acceptance, the real daemon on 127.0.0.1 with the SIPREC test client:
//! verdicts (recorded; one stream digital silence, and separately low-level comfort
//! noise → one_way; no RTP → no_media) in `recordings show`, `list --verdict`, the signed
//! manifest, `branchrec status --json` (the status document) and `/metrics`; the
//! one-way alarm raised and cleared by time; the clock-state hook flagging a recording
//! and raising `time_unsync`; a forward clock step during a call → a `clock_step` event,
//! the recording's timeline unaffected; `assurance report --cdr` with one call the
//! recorder never saw, totals exact; a call refused for lack of keys → `refused`.

mod common;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, serial, Daemon};
use serde_json::Value;
use siprec_client::{invite, Call, Invite};

fn get_metrics(port: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(line_prefix)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn up(d: &Daemon, n: u32) -> Call {
    match invite(SocketAddr::from(([127, 0, 0, 1], d.sip_port)), n) {
        Invite::Up(c) => c,
        Invite::Rejected(code, r) => panic!("call {n}: {code}\n{r}\n{}", d.log_text()),
    }
}

/// Wait (bounded) until `n` recordings are closed with a verdict; newest first.
fn closed(d: &Daemon, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = d.recordings_json(&["list", "--json"]);
        let arr = list.as_array().expect("array").clone();
        if arr.len() == n && arr.iter().all(|r| r["verdict"].is_string()) {
            return arr;
        }
        assert!(
            Instant::now() < deadline,
            "not {n} judged recordings: {list}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(&d.bin)
        .args(args)
        .arg("--config")
        .arg(&d.config)
        .output()
        .expect("running branchrec")
}

fn status_json(d: &Daemon) -> Value {
    let o = cli(d, &["status", "--json"]);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).expect("status json")
}

fn alarm_codes(status: &Value) -> Vec<String> {
    status["alarms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["code"].as_str().map(str::to_string))
        .collect()
}

/// Low-level comfort noise in µ-law: codes decoding to ±8 … ±56 (≈ −59 dBFS).
fn comfort_noise(k: u32) -> Vec<u8> {
    (0..160u32)
        .map(|i| [0xF8u8, 0x78, 0xFB, 0x7B, 0xFE, 0x7E][((k + i) % 6) as usize])
        .collect()
}

fn write_clock(path: &Path, json: &str) {
    std::fs::write(path, json).unwrap();
}

#[test]
fn verdicts_alarms_clock_and_reconciliation() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = tmp.path().join("clock-state.json");
    // The daemon inherits the hook (and needs clock_override for it).
    std::env::set_var("BRANCHREC_TEST_CLOCK_STATE", &clock);
    let mport = free_port();
    let d = Daemon::start_with(
        tmp.path(),
        &format!(
            "[uplink]\nenabled = false\nmetrics_listen = \"127.0.0.1:{mport}\"\n\
             [development]\nclock_override = true\n\
             [assurance]\nalarms = [{{ verdict = \"one_way\", count = 2, window_s = 8 }}]\n\
             [time]\nstep_threshold_ms = 500\nmax_error_ms = 100\n"
        ),
    );
    std::env::remove_var("BRANCHREC_TEST_CLOCK_STATE");
    let tone = siprec_client::TONE_ULAW[..].repeat(20);

    // 1. Both channels talk → recorded.
    let mut c = up(&d, 1);
    c.stream(1500);
    assert!(c.bye(), "{}", d.log_text());
    let r = closed(&d, 1);
    assert_eq!(r[0]["verdict"], "recorded", "{}", r[0]);

    // 2. Channel 1 digital silence → one_way.
    let mut c = up(&d, 2);
    c.stream_with(1500, |i, _| {
        if i == 1 {
            vec![0xFF; 160]
        } else {
            tone.clone()
        }
    });
    assert!(c.bye());
    let r = closed(&d, 2);
    assert_eq!(r[0]["verdict"], "one_way", "{}", r[0]);
    let silent_id = r[0]["id"].as_str().unwrap().to_string();
    let show = d.recordings_json(&["show", &silent_id, "--json"]);
    assert_eq!(show["verdict"], "one_way");
    assert_eq!(
        show["assurance"]["silent_channels"],
        serde_json::json!([1]),
        "{show}"
    );
    let ch = &show["assurance"]["channels"];
    assert_eq!(ch[1]["rms_dbfs"], -100.0, "digital silence: {ch}");
    assert!(ch[0]["voice_ratio"].as_f64().unwrap() > 0.8, "{ch}");
    assert!(
        ch[0]["mos"].as_f64().unwrap() > 4.0,
        "clean channel MOS: {ch}"
    );
    assert_eq!(ch[0]["loss_pct"], 0.0);
    assert!(ch[0]["jitter_ms"].as_f64().unwrap() < 20.0, "{ch}");
    let text = d.recordings(&["show", &silent_id]);
    assert!(text.contains("verdict: one_way"), "{text}");

    // 3. Channel 1 low-level comfort noise → one_way too; two in 8 s raise the alarm.
    let mut c = up(&d, 3);
    c.stream_with(1500, |i, k| {
        if i == 1 {
            comfort_noise(k)
        } else {
            tone.clone()
        }
    });
    assert!(c.bye());
    let r = closed(&d, 3);
    assert_eq!(r[0]["verdict"], "one_way", "{}", r[0]);
    let cn = d.recordings_json(&["show", r[0]["id"].as_str().unwrap(), "--json"]);
    let lvl = cn["assurance"]["channels"][1]["rms_dbfs"].as_f64().unwrap();
    assert!(lvl > -75.0 && lvl < -45.0, "comfort noise level {lvl}");
    let m = get_metrics(mport);
    assert_eq!(
        metric(&m, "branchrec_alarm{code=\"assurance_one_way\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchrec_calls_total{verdict=\"one_way\"}"),
        Some(2.0),
        "{m}"
    );
    let st = status_json(&d);
    assert!(
        alarm_codes(&st).contains(&"assurance_one_way".to_string()),
        "{st}"
    );
    assert_eq!(st["assurance"]["verdicts"]["recorded"], 1, "{st}");
    let raised = Instant::now();

    // 4. No RTP at all → no_media.
    let c = up(&d, 4);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(c.bye());
    let r = closed(&d, 4);
    assert_eq!(r[0]["verdict"], "no_media", "{}", r[0]);

    // `list --verdict`.
    let ow = d.recordings_json(&["list", "--json", "--verdict", "one_way"]);
    assert_eq!(ow.as_array().unwrap().len(), 2, "{ow}");
    let bad = cli(&d, &["recordings", "list", "--verdict", "loud"]);
    assert!(!bad.status.success());

    // The alarm clears by itself once the window passes (8 s after the calls).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get_metrics(mport);
        if metric(&m, "branchrec_alarm{code=\"assurance_one_way\"}").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "alarm not cleared: {m}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        raised.elapsed() >= Duration::from_secs(3),
        "cleared too early"
    );
    assert!(!alarm_codes(&status_json(&d)).contains(&"assurance_one_way".to_string()));

    // 5. The clock is unsynchronised (the adjtimex hook): the recording is flagged and
    // the time alarm raised.
    write_clock(
        &clock,
        r#"{"unsync": true, "maxerror_us": 16000000, "esterror_us": 16000000}"#,
    );
    let mut c = up(&d, 5);
    c.stream(1000);
    assert!(c.bye());
    let r = closed(&d, 5);
    let unsync = d.recordings_json(&["show", r[0]["id"].as_str().unwrap(), "--json"]);
    let clk = &unsync["assurance"]["clock"];
    assert!(
        clk["flagged"].as_str().unwrap_or("").contains("STA_UNSYNC"),
        "{clk}"
    );
    assert_eq!(clk["start"]["unsync"], true);
    assert_eq!(clk["start"]["source"], "test-hook");
    assert!(d
        .recordings(&["show", r[0]["id"].as_str().unwrap()])
        .contains("TIME FLAGGED"));
    let m = get_metrics(mport);
    assert_eq!(
        metric(&m, "branchrec_alarm{code=\"time_unsync\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchrec_time_flagged_recordings_total"),
        Some(1.0),
        "{m}"
    );

    // 6. Synchronised again, and the wall clock steps forward one hour mid-call.
    write_clock(&clock, "{}");
    let mut c = up(&d, 6);
    let t0 = Instant::now();
    c.stream(1500);
    write_clock(&clock, r#"{"step_ms": 3600000}"#);
    c.stream(2000);
    let real_ms = t0.elapsed().as_millis() as i64;
    assert!(c.bye());
    write_clock(&clock, "{}");
    let r = closed(&d, 6);
    let stepped = d.recordings_json(&["show", r[0]["id"].as_str().unwrap(), "--json"]);
    let events = stepped["events"].as_array().unwrap();
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "clock_step")
        .collect();
    assert_eq!(steps.len(), 1, "{events:?}");
    let size = steps[0]["detail"]["step_ms"].as_i64().unwrap();
    assert!((size - 3_600_000).abs() < 1000, "step {size}");
    let at = steps[0]["at_ms"].as_i64().unwrap();
    assert!((1000..=3500).contains(&at), "step at {at} ms");
    // The recording's own timeline did not jump: its length is the call's real length.
    let dur = stepped["duration_ms"].as_i64().unwrap();
    assert!(
        (dur - real_ms).abs() < 1500,
        "duration {dur} ms for {real_ms} ms of call"
    );
    let ats: Vec<i64> = events.iter().filter_map(|e| e["at_ms"].as_i64()).collect();
    assert!(ats.iter().all(|a| *a <= dur + 500), "{ats:?}");
    assert_eq!(
        stepped["assurance"]["clock"]["steps"][0]["step_ms"].as_i64(),
        Some(size)
    );
    assert!(stepped["assurance"]["clock"]["flagged"]
        .as_str()
        .unwrap()
        .contains("stepped"));
    let m = get_metrics(mport);
    assert_eq!(metric(&m, "branchrec_clock_steps_total"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "branchrec_alarm{code=\"time_unsync\"}"),
        None,
        "cleared by a good reading: {m}"
    );

    // The manifest signs the verdict and the figures; verification passes.
    let data = tmp.path().join("data");
    let fp = show["file_path"].as_str().expect("file_path");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("{fp}.manifest.json"))).expect("manifest"),
    )
    .unwrap();
    assert_eq!(manifest["assurance"]["verdict"], "one_way", "{manifest}");
    assert_eq!(manifest["assurance"], show["assurance"]);
    let v = cli(&d, &["recordings", "verify", "--all"]);
    assert!(
        v.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // The report and the CDR reconciliation: the six calls plus one never seen.
    let all = d.recordings_json(&["list", "--json"]);
    let all = all.as_array().unwrap();
    let day = all[0]["start"].as_str().unwrap()[..10].to_string();
    let mut csv = String::from("start,caller,callee,duration\n");
    for r in all.iter().rev() {
        csv.push_str(&format!(
            "{},,,{}\n",
            r["start"].as_str().unwrap(),
            r["duration_ms"].as_u64().unwrap() / 1000
        ));
    }
    let first =
        chrono::DateTime::parse_from_rfc3339(all.last().unwrap()["start"].as_str().unwrap())
            .unwrap();
    let unseen = if first.format("%H").to_string() == "00" {
        format!("{day}T23:59:00Z")
    } else {
        format!("{day}T00:00:30Z")
    };
    csv.push_str(&format!("{unseen},+41441234567,+41449876543,95\n"));
    let cdr = tmp.path().join("cdr.csv");
    std::fs::write(&cdr, csv).unwrap();
    let o = cli(
        &d,
        &[
            "assurance",
            "report",
            "--day",
            &day,
            "--cdr",
            cdr.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &rep["totals"];
    assert_eq!(t["calls"], 6, "{rep}");
    assert_eq!(
        (
            t["by_verdict"]["recorded"].as_u64(),
            t["by_verdict"]["one_way"].as_u64(),
            t["by_verdict"]["no_media"].as_u64(),
            t["by_verdict"]["refused"].as_u64()
        ),
        (Some(3), Some(2), Some(1), Some(0)),
        "{t}"
    );
    assert_eq!(t["by_source"]["siprec"]["one_way"], 2);
    let rc = &rep["reconciliation"];
    assert_eq!(rc["matched"].as_array().unwrap().len(), 6, "{rc}");
    let missing = rc["cdr_without_recording"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{rc}");
    assert_eq!(missing[0]["caller"], "+41441234567");
    assert_eq!(rc["recording_without_cdr"].as_array().unwrap().len(), 0);
    assert_eq!(
        rc["incorrect"].as_array().unwrap().len(),
        3,
        "two one-way, one without media: {rc}"
    );
    let o = cli(
        &d,
        &[
            "assurance",
            "report",
            "--day",
            &day,
            "--cdr",
            cdr.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("MISSING  CDR line 8"), "{text}");
}

#[test]
fn a_call_refused_for_lack_of_keys_is_refused() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mport = free_port();
    let extra = format!("[uplink]\nenabled = false\nmetrics_listen = \"127.0.0.1:{mport}\"\n");
    let mut d = Daemon::start_with(tmp.path(), &extra);
    let mut c = up(&d, 1);
    c.stream(500);
    assert!(c.bye());
    closed(&d, 1);
    d.stop();
    // Another key file: the recordings' KEK is gone, the keys are unavailable.
    let kf = tmp.path().join("data/keys/install.key");
    assert!(kf.exists(), "software key file");
    std::fs::remove_file(&kf).unwrap();
    let d = Daemon::start_with(tmp.path(), &extra);
    match invite(SocketAddr::from(([127, 0, 0, 1], d.sip_port)), 2) {
        Invite::Rejected(503, m) => assert!(m.contains("keys unavailable"), "{m}"),
        Invite::Rejected(code, m) => panic!("expected 503, got {code}: {m}"),
        Invite::Up(_) => panic!("call accepted without keys\n{}", d.log_text()),
    }
    let m = get_metrics(mport);
    assert_eq!(
        metric(&m, "branchrec_calls_total{verdict=\"refused\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchrec_calls_total{verdict=\"recorded\"}"),
        Some(0.0),
        "{m}"
    );
}

/// Retention is immune to a forward clock step the time daemon does not vouch for: the
/// wall clock jumps two days ahead (the clock-state hook's step) while unsynchronised —
/// a one-day recording is *not* deleted; once the clock reads synchronised the step is
/// taken and the recording expires.
#[test]
fn retention_does_not_delete_early_after_an_unvouched_forward_step() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = tmp.path().join("clock-state.json");
    write_clock(&clock, "{}");
    std::env::set_var("BRANCHREC_TEST_CLOCK_STATE", &clock);
    let d = Daemon::start_with(
        tmp.path(),
        "[uplink]\nenabled = false\n[development]\nclock_override = true\n\
         [retention]\nsweep_interval_s = 1\nclasses = { default = \"1 day\" }\n",
    );
    std::env::remove_var("BRANCHREC_TEST_CLOCK_STATE");
    let mut c = up(&d, 1);
    c.stream(500);
    assert!(c.bye());
    closed(&d, 1);
    // Two days ahead, unsynchronised (as `date -s` leaves the kernel clock).
    write_clock(&clock, r#"{"step_ms": 172800000, "unsync": true}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log_text().contains("retention=\"refused\"")
        && !d.log_text().contains("retention=refused")
    {
        assert!(Instant::now() < deadline, "no step seen\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(4)); // four sweeps
    let list = d.recordings_json(&["list", "--json"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "deleted early after an unvouched step: {list}"
    );
    // The time daemon vouches for the new time: the step is taken, the recording expires.
    write_clock(&clock, r#"{"step_ms": 172800000}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.recordings_json(&["list", "--json"]);
        if list.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not expired after a vouched step: {list}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let audit = cli(&d, &["audit", "show", "--json"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("clock.step"), "{text}");
}
