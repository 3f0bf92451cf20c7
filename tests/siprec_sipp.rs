//! End-to-end tests: SIPp plays a vendor's SIPREC client (tests/sipp/*.xml, bodies from
//! /work/shared/testdata/siprec), branchrec-loadgen sends known G.711 audio to the ports the
//! daemon answered, and the recording is checked through the CLI (list/show/export) sample
//! by sample. Needs `sipp` (package sip-tester) and `ffprobe` (ffmpeg); sox for the G.711
//! cross-check. Missing tools make the tests FAIL, not skip.

mod common;

use common::g711::{self, Codec};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RATE: usize = 8000;

fn loadgen(dir: &Path) -> String {
    private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "rtp")
        .display()
        .to_string()
}

fn mark(run: &SippRun, k: &str) -> i64 {
    *run.marks
        .get(k)
        .unwrap_or_else(|| panic!("scenario did not log {k}\n{}", run.diagnostics)) as i64
}

fn samples_to_ms(n: usize) -> i64 {
    (n * 1000 / RATE) as i64
}

fn assert_near(what: &str, got: i64, want: i64, tol: i64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, expected {want} ± {tol}"
    );
}

/// Where the recording places the start of the loadgen's audio (ms after the answer)
/// vs the scenario's media-start mark (SIPp logs it when it execs the loadgen).
/// The recorder anchors a stream at the arrival of its first packet, so this is arrival
/// timing, not audio content (the content is checked to the sample by `expect_bursts`):
/// - never more than 120 ms early (as before): audio cannot arrive before the loadgen
///   was started;
/// - up to 120 ms + 500 ms late: the first packet leaves after the loadgen process has
///   started and read its audio files, which SIPp's exec does not wait for; idle that is
///   a few ms, on a loaded 2-core machine it has been measured at 150+ ms.
fn assert_audio_start(what: &str, got: i64, want: i64) {
    assert!(
        got >= want - 120 && got <= want + 120 + 500,
        "{what}: got {got}, expected {want} - 120 .. + 620 (loadgen start-up)"
    );
}

fn aors(rec: &Value) -> BTreeSet<String> {
    rec["participants"]
        .as_array()
        .expect("participants array")
        .iter()
        .map(|p| p["aor"].as_str().unwrap_or("").to_string())
        .collect()
}

fn channel_aor(rec: &Value, ch: u64) -> String {
    rec["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .find(|c| c["channel"].as_u64() == Some(ch))
        .and_then(|c| c["aor"].as_str())
        .unwrap_or_else(|| panic!("no aor for channel {ch} in {rec}"))
        .to_string()
}

/// Exports the recording, checks it with ffprobe and returns the two channels.
fn export(d: &Daemon, id: &str, dir: &Path) -> Vec<Vec<i16>> {
    let wav = dir.join("export.wav");
    d.recordings(&["export", id, "--out", wav.to_str().expect("utf-8 path")]);
    let (codec, rate, ch) = ffprobe(&wav);
    assert_eq!(
        (codec.as_str(), rate, ch),
        ("pcm_s16le", 8000, 2),
        "ffprobe of the export"
    );
    let w = read_wav(&wav);
    assert_eq!((w.channels, w.rate, w.bits), (2, 8000, 16));
    w.data
}

fn common_checks(rec: &Value, run: &SippRun, expect_aors: &[&str; 2], codec: &str) {
    assert_eq!(rec["state"], "complete", "recording: {rec}");
    let want: BTreeSet<String> = expect_aors.iter().map(|s| s.to_string()).collect();
    assert_eq!(aors(rec), want, "participants' AoRs");
    assert_eq!(channel_aor(rec, 0), expect_aors[0], "channel 0 participant");
    assert_eq!(channel_aor(rec, 1), expect_aors[1], "channel 1 participant");
    assert!(
        rec["codec"]
            .as_str()
            .unwrap_or("")
            .to_ascii_uppercase()
            .contains(codec),
        "codec {} (want {codec})",
        rec["codec"]
    );
    assert!(rec["end"].is_string(), "end set once complete: {rec}");
    let dur = rec["duration_ms"].as_i64().expect("duration_ms");
    assert_call_length("duration_ms vs the call measured by SIPp", dur, run, 100);
}

fn start(dir: &Path) -> Daemon {
    require_tool("sipp", "sip-tester");
    require_tool("ffprobe", "ffmpeg");
    Daemon::start(dir)
}

#[test]
fn oracle_acme_basic_call_is_recorded_bit_exact() {
    oracle_acme_call(&[], None);
}

/// The same call with SIP over TCP (one connection, Content-Length framing).
#[test]
fn oracle_acme_basic_call_over_tcp() {
    oracle_acme_call(&["-t", "t1"], Some("TCP"));
}

/// An Oracle/Acme SIPREC call (SIPp with `sipp_args`) recorded bit-exact: participants,
/// stats, duration, both channels sample by sample and aligned.
/// The first 200 to an INVITE that SIPp received, from its message log.
fn invite_2xx(msgs: &str) -> Option<String> {
    msgs.split("message received")
        .filter_map(|b| {
            b.split_once("SIP/2.0 200")
                .map(|(_, r)| format!("SIP/2.0 200{r}"))
        })
        .find(|b| {
            b.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.contains("INVITE"))
        })
        .map(|b| b.split("\r\n\r\n").next().unwrap_or(&b).replace('\r', ""))
}

fn oracle_acme_call(sipp_args: &[&str], expect_transport: Option<&str>) {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = start(dir);
    let a = test_audio(1, 2 * RATE, Codec::Pcmu); // 2.0 s
    let b = test_audio(2, 3 * RATE / 2, Codec::Pcmu); // 1.5 s
    write_raw(&dir.join("a.raw"), &a);
    write_raw(&dir.join("b.raw"), &b);
    let keys = [
        ("loadgen", loadgen(dir)),
        ("audio_a", dir.join("a.raw").display().to_string()),
        ("audio_b", dir.join("b.raw").display().to_string()),
        // media_ms: the 2 s of audio plus a margin before SIPp's BYE. SIPp execs the loadgen
        // without waiting for it, so the loadgen's start-up eats into that margin: 1.6 s
        // (was 0.6 s) keeps a loaded machine from cutting the tail.
        ("media_ms", "3600".to_string()),
    ];
    let run = run_sipp_with(
        "oracle_acme_basic.xml",
        d.sip_port,
        &keys,
        dir,
        Duration::from_secs(40),
        sipp_args,
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    let msgs =
        std::fs::read_to_string(dir.join("oracle_acme_basic.msg.log")).expect("SIPp message log");
    // Issue #13 item 7: the 200 to the INVITE carries Allow and Supported (RFC 3261
    // §13.3.1.4) and the SRS feature tag in its Contact (RFC 7866 §6.1.2).
    let ok = invite_2xx(&msgs).expect("a 200 to the INVITE in the SIPp message log");
    let hdr = |name: &str| {
        ok.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    let allow = hdr("Allow").unwrap_or_else(|| panic!("no Allow in the 200:\n{ok}"));
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE"] {
        assert!(allow.contains(m), "Allow lacks {m}: {allow}");
    }
    let supported = hdr("Supported").unwrap_or_else(|| panic!("no Supported in the 200:\n{ok}"));
    assert!(supported.contains("siprec"), "Supported: {supported}");
    let contact = hdr("Contact").unwrap_or_else(|| panic!("no Contact in the 200:\n{ok}"));
    assert!(contact.ends_with(";+sip.srs"), "Contact: {contact}");
    if let Some(t) = expect_transport {
        assert!(
            msgs.contains(&format!("SIP/2.0/{t}")),
            "SIPp did not signal over {t}"
        );
    }
    // Closed, catalogued and signed (polled; was a fixed 500 ms).
    wait_settled(&d, 1);
    let rec = the_recording(&d);
    common_checks(
        &rec,
        &run,
        &["sip:9000@192.168.50.102", "sip:1002@192.168.50.10"],
        "PCMU",
    );
    // Issue #19: SIPp's call with audio on both streams is `recorded`.
    assert_eq!(rec["verdict"], "recorded", "{rec}");
    let id = rec["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| rec["id"].to_string());

    let detail = d.recordings_json(&["show", &id, "--json"]);
    for (ch, sent) in [(0, 100), (1, 75)] {
        let s = channel_stats(&detail, ch);
        assert_eq!(s["received"], sent, "channel {ch} received: {s}");
        assert_eq!(s["lost"], 0, "channel {ch}: {s}");
        assert_eq!(s["late"], 0, "channel {ch}: {s}");
        assert_eq!(s["duplicates"], 0, "channel {ch}: {s}");
    }

    let chans = export(&d, &id, dir);
    assert_call_length(
        "export length (ms) vs the call measured by SIPp",
        samples_to_ms(chans[0].len()),
        &run,
        60,
    );
    let off_a = expect_bursts("channel 0", &chans[0], &[&a]);
    let off_b = expect_bursts("channel 1", &chans[1], &[&b]);
    assert!(
        off_a[0].abs_diff(off_b[0]) <= 160,
        "channels misaligned: {off_a:?} vs {off_b:?}"
    );
    assert_audio_start(
        "audio start in the recording vs media start after ACK",
        samples_to_ms(off_a[0]),
        mark(&run, "T_MEDIA") - mark(&run, "T_ACK"),
    );
    d.stop();
}

#[test]
fn avaya_sbce_pcma_call_with_dtmf() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Digits are masked by default (issue #12); this test checks them, so it opts in.
    require_tool("sipp", "sip-tester");
    require_tool("ffprobe", "ffmpeg");
    let mut d = Daemon::start_with(dir, "[privacy]\ndtmf_digits = true\n");
    let a = test_audio(3, 2 * RATE, Codec::Pcma);
    let b = test_audio(4, 2 * RATE, Codec::Pcma);
    write_raw(&dir.join("a.raw"), &a);
    write_raw(&dir.join("b.raw"), &b);
    let keys = [
        ("loadgen", loadgen(dir)),
        ("audio_a", dir.join("a.raw").display().to_string()),
        ("audio_b", dir.join("b.raw").display().to_string()),
        // 2 s audio + 100 ms gap + 3 digits × (160 ms events + 100 ms gap) < 3.2 s.
        ("media_ms", "3300".to_string()),
    ];
    let run = run_call_ok("avaya_sbce_dtmf.xml", &d, &keys, dir);
    let rec = the_recording(&d);
    common_checks(
        &rec,
        &run,
        &[
            "sip:31624895902@10.10.128.62",
            "sip:33187164021@sip.webhelpgroupe.lan",
        ],
        "PCMA",
    );
    let id = rec["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| rec["id"].to_string());
    let detail = d.recordings_json(&["show", &id, "--json"]);
    for ch in 0..2 {
        let s = channel_stats(&detail, ch);
        assert_eq!(s["lost"], 0, "channel {ch}: {s}");
        assert_eq!(s["late"], 0, "channel {ch}: {s}");
    }
    assert_eq!(channel_stats(&detail, 1)["received"], 100);

    let chans = export(&d, &id, dir);
    // DTMF events are not audio: channel 0 holds exactly the sent audio, then silence.
    let off_a = expect_bursts("channel 0", &chans[0], &[&a]);
    let off_b = expect_bursts("channel 1", &chans[1], &[&b]);
    assert!(
        off_a[0].abs_diff(off_b[0]) <= 160,
        "channels misaligned: {off_a:?} vs {off_b:?}"
    );

    let dtmf = detail["dtmf"].as_array().expect("dtmf array");
    let digits: Vec<(u64, String)> = dtmf
        .iter()
        .map(|e| {
            (
                e["channel"].as_u64().unwrap_or(99),
                e["digit"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        digits,
        vec![
            (0, "1".to_string()),
            (0, "2".to_string()),
            (0, "#".to_string())
        ],
        "dtmf: {dtmf:?}"
    );
    // Digit k starts 100 ms + k × 260 ms after the end of the 2 s of audio; each lasts 100 ms.
    let audio_start_ms = samples_to_ms(off_a[0]);
    for (k, e) in dtmf.iter().enumerate() {
        let start = e["start_ms"].as_i64().expect("start_ms");
        assert_near(
            &format!("dtmf {k} start_ms"),
            start,
            audio_start_ms + 2000 + 100 + 260 * k as i64,
            60,
        );
        assert_near(
            &format!("dtmf {k} duration_ms"),
            e["duration_ms"].as_i64().expect("duration_ms"),
            100,
            25,
        );
    }
    d.stop();
}

#[test]
fn cisco_cube_hold_and_resume_with_metadata_updates() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = start(dir);
    let n = 3 * RATE / 2; // 1.5 s bursts = 75 packets
    let (a1, b1, a2, b2) = (
        test_audio(11, n, Codec::Pcmu),
        test_audio(12, n, Codec::Pcmu),
        test_audio(13, n, Codec::Pcmu),
        test_audio(14, n, Codec::Pcmu),
    );
    let mut keys = vec![("loadgen", loadgen(dir))];
    for (name, s) in [
        ("audio_a1", &a1),
        ("audio_b1", &b1),
        ("audio_a2", &a2),
        ("audio_b2", &b2),
    ] {
        let p = dir.join(format!("{name}.raw"));
        write_raw(&p, s);
        keys.push((name, p.display().to_string()));
    }
    // Each media phase: a 1.5 s burst, then a margin before the next re-INVITE or the BYE
    // for the loadgen's start-up, which SIPp's exec does not wait for (1.5 s; was 0.5 s,
    // and a loaded machine cut burst 2 short: silence from its 880th ms).
    keys.push(("media1_ms", "3000".into()));
    keys.push(("hold_ms", "1000".into()));
    keys.push(("media2_ms", "3000".into()));
    let run = run_sipp(
        "cisco_cube_hold.xml",
        d.sip_port,
        &keys,
        dir,
        Duration::from_secs(45),
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed (the hold re-INVITE must be answered a=inactive)\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    // Closed, catalogued and signed (polled; was a fixed 500 ms).
    wait_settled(&d, 1);
    let rec = the_recording(&d);
    common_checks(
        &rec,
        &run,
        &["sip:7301@35.162.237.204", "sip:7300@35.162.237.204"],
        "PCMU",
    );
    let id = rec["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| rec["id"].to_string());
    let detail = d.recordings_json(&["show", &id, "--json"]);
    for ch in 0..2 {
        let s = channel_stats(&detail, ch);
        assert_eq!(s["received"], 150, "channel {ch}: {s}");
        assert_eq!(s["lost"], 0, "channel {ch}: {s}");
        assert_eq!(s["late"], 0, "channel {ch}: {s}");
    }
    let versions = detail["metadata_versions"]
        .as_array()
        .expect("metadata_versions");
    assert!(
        versions.len() >= 3,
        "initial + hold + resume metadata: {versions:?}"
    );
    assert!(
        versions.iter().all(|v| v["data_mode"] == "complete"),
        "{versions:?}"
    );

    let chans = export(&d, &id, dir);
    assert_call_length(
        "export length (ms) vs the call measured by SIPp",
        samples_to_ms(chans[0].len()),
        &run,
        60,
    );
    let off_a = expect_bursts("channel 0", &chans[0], &[&a1, &a2]);
    let off_b = expect_bursts("channel 1", &chans[1], &[&b1, &b2]);
    for k in 0..2 {
        assert!(
            off_a[k].abs_diff(off_b[k]) <= 160,
            "burst {k} misaligned: {off_a:?} vs {off_b:?}"
        );
    }
    assert_audio_start(
        "burst 1 start vs media start after ACK",
        samples_to_ms(off_a[0]),
        mark(&run, "T_MEDIA1") - mark(&run, "T_ACK"),
    );
    assert_audio_start(
        "burst 2 start vs resume media start after ACK",
        samples_to_ms(off_a[1]),
        mark(&run, "T_MEDIA2") - mark(&run, "T_ACK"),
    );
    d.stop();
}

#[test]
fn metaswitch_single_mixed_stream() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = start(dir);
    let a = test_audio(31, 2 * RATE, Codec::Pcmu);
    write_raw(&dir.join("a.raw"), &a);
    let keys = [
        ("loadgen", loadgen(dir)),
        ("audio_a", dir.join("a.raw").display().to_string()),
        // media_ms: 2 s of audio, then a margin before the BYE for the loadgen's start-up,
        // which SIPp's exec does not wait for (1.5 s; was 0.5 s).
        ("media_ms", "3500".to_string()),
    ];
    let run = run_call_ok("metaswitch_single_stream.xml", &d, &keys, dir);
    let rec = the_recording(&d);
    assert_eq!(rec["state"], "complete", "recording: {rec}");
    let want: BTreeSet<String> = ["7602922411", "7602922410"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        aors(&rec),
        want,
        "participants' AoRs (bare numbers, as sent)"
    );
    assert_call_length(
        "duration_ms",
        rec["duration_ms"].as_i64().expect("duration_ms"),
        &run,
        100,
    );
    let id = rec["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| rec["id"].to_string());
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let s = channel_stats(&detail, 0);
    assert_eq!(s["received"], 100, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    let wav = dir.join("export.wav");
    d.recordings(&["export", &id, "--out", wav.to_str().expect("utf-8 path")]);
    let w = read_wav(&wav);
    let chans = w.data;
    assert_call_length(
        "export length (ms) vs the call measured by SIPp",
        samples_to_ms(chans[0].len()),
        &run,
        60,
    );
    let off = expect_bursts("channel 0", &chans[0], &[&a]);
    assert_audio_start(
        "audio start vs media start after ACK",
        samples_to_ms(off[0]),
        mark(&run, "T_MEDIA") - mark(&run, "T_ACK"),
    );
    d.stop();
    // One channel per recorded stream: a single mixed stream (both parties in it) is
    // exported mono rather than inventing a silent second party.
    assert_eq!(w.channels, 1, "one m-line, one channel");
    assert_eq!(ffprobe(&wav), ("pcm_s16le".to_string(), 8000, 1));
}

// ---- Checks of the test tooling itself (no daemon needed) ----

/// Our G.711 equals sox's (a third, independent implementation) over every input.
#[test]
fn g711_matches_sox() {
    require_tool("sox", "sox");
    let tmp = tempfile::tempdir().expect("tempdir");
    let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    let raw = tmp.path().join("all.raw");
    write_raw(&raw, &all);
    for (codec, enc) in [(Codec::Pcmu, "u-law"), (Codec::Pcma, "a-law")] {
        let out = tmp.path().join(format!("all.{enc}"));
        let st = Command::new("sox")
            .args([
                "-D", "-t", "raw", "-e", "signed", "-b", "16", "-r", "8000", "-c", "1",
            ])
            .arg(&raw)
            .args(["-t", "raw", "-e", enc, "-b", "8"])
            .arg(&out)
            .status()
            .expect("running sox");
        assert!(st.success());
        let theirs = std::fs::read(&out).expect("sox output");
        assert_eq!(theirs.len(), all.len());
        // Encoders may differ at decision thresholds (sox rounds to 14/13 bits, the Sun
        // reference truncates): only there, and both codes decode to neighbouring levels
        // around the input.
        let mut bad = 0;
        for (s, t) in all.iter().zip(&theirs) {
            let ours = codec.encode(*s);
            if ours != *t {
                bad += 1;
                let (lo, hi) = (
                    codec.decode(ours).min(codec.decode(*t)),
                    codec.decode(ours).max(codec.decode(*t)),
                );
                assert!(
                    lo <= *s && *s <= hi,
                    "{enc}: {s} not between the two candidate levels {lo}..{hi}"
                );
                assert!(
                    !(0..=255u8).any(|c| lo < codec.decode(c) && codec.decode(c) < hi),
                    "{enc}: {s} -> {ours:#x}, sox {t:#x}: not neighbouring levels"
                );
            }
        }
        assert!(
            bad < all.len() / 50,
            "{enc}: {bad} encodings differ from sox"
        );
        // Decoding: all 256 codes through sox back to s16.
        let codes: Vec<u8> = (0..=255).collect();
        let cf = tmp.path().join(format!("codes.{enc}"));
        std::fs::write(&cf, &codes).expect("write codes");
        let dec = tmp.path().join(format!("codes.{enc}.raw"));
        let st = Command::new("sox")
            .args([
                "-D", "-t", "raw", "-e", enc, "-b", "8", "-r", "8000", "-c", "1",
            ])
            .arg(&cf)
            .args(["-t", "raw", "-e", "signed", "-b", "16"])
            .arg(&dec)
            .status()
            .expect("running sox");
        assert!(st.success());
        let d = std::fs::read(&dec).expect("sox output");
        for (i, c) in codes.iter().enumerate() {
            let s = i16::from_le_bytes([d[2 * i], d[2 * i + 1]]);
            assert_eq!(codec.decode(*c), s, "{enc} decode of {c:#04x}");
        }
    }
    let _ = g711::linear_to_ulaw(0);
}

/// branchrec-loadgen rtp: wire format, both streams, pace, and DTMF events.
#[test]
fn loadgen_rtp_sends_exact_g711_at_real_time_pace() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let a = test_audio(21, 1600, Codec::Pcma); // 10 packets
    let b = test_audio(22, 800, Codec::Pcmu); // 5 packets
    write_raw(&dir.join("a.raw"), &a);
    write_raw(&dir.join("b.raw"), &b);
    let ra = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rb = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for s in [&ra, &rb] {
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
    }
    let t0 = Instant::now();
    let mut child = Command::new(loadgen(dir))
        .arg("rtp")
        .args(["--dtmf", "5"])
        .arg("--stream")
        .arg(format!(
            "{},{},pcma,0xDEADBEEF,65530,4294967000",
            ra.local_addr().expect("addr"),
            dir.join("a.raw").display()
        ))
        .arg("--stream")
        .arg(format!(
            "{},{},pcmu,7",
            rb.local_addr().expect("addr"),
            dir.join("b.raw").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run loadgen");
    // Each packet with its receive time and whether the receiver had caught up: no
    // further packet was already queued right after it was read (a peek in non-blocking
    // mode), so the next packet was sent after this receive time.
    let recv_n = |s: UdpSocket, n: usize| {
        std::thread::spawn(move || -> Vec<(Instant, Vec<u8>, bool)> {
            let mut buf = [0u8; 2048];
            (0..n)
                .map(|_| {
                    s.set_nonblocking(false).expect("blocking");
                    let (len, _) = s.recv_from(&mut buf).expect("packet within 3 s");
                    let at = Instant::now();
                    s.set_nonblocking(true).expect("non-blocking");
                    let mut probe = [0u8; 1];
                    let caught_up = s.peek(&mut probe).is_err();
                    (at, buf[..len].to_vec(), caught_up)
                })
                .collect()
        })
    };
    // Stream A: 10 audio packets + 8 DTMF event packets.
    let ta = recv_n(ra.try_clone().expect("clone"), 18);
    let tb = recv_n(rb.try_clone().expect("clone"), 5);
    let pa = ta.join().expect("receiver A");
    let pb = tb.join().expect("receiver B");
    let st = wait_bounded(&mut child, Duration::from_secs(10)).expect("loadgen finished");
    assert!(st.success());
    let mut decoded = Vec::new();
    for (k, (_, p, _)) in pa.iter().take(10).enumerate() {
        assert_eq!(p.len(), 172);
        assert_eq!(p[0], 0x80);
        assert_eq!(p[1] & 0x7F, 8, "PT PCMA");
        assert_eq!(p[1] & 0x80 != 0, k == 0, "marker only on the first packet");
        assert_eq!(
            u16::from_be_bytes([p[2], p[3]]),
            65530u16.wrapping_add(k as u16)
        );
        assert_eq!(
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            4_294_967_000u32.wrapping_add(160 * k as u32)
        );
        assert_eq!(&p[8..12], &[0xDE, 0xAD, 0xBE, 0xEF]);
        decoded.extend(p[12..].iter().map(|&c| Codec::Pcma.decode(c)));
    }
    assert_eq!(decoded, a, "PCMA payload decodes to the sent audio");
    let ev: Vec<&Vec<u8>> = pa[10..].iter().map(|(_, p, _)| p).collect();
    assert!(ev
        .iter()
        .all(|p| p.len() == 16 && p[1] & 0x7F == 101 && p[12] == 5));
    assert!(
        ev.iter().all(|p| p[4..8] == ev[0][4..8]),
        "one timestamp per event"
    );
    assert_eq!(
        ev.iter().filter(|p| p[13] & 0x80 != 0).count(),
        3,
        "three end packets"
    );
    let decoded_b: Vec<i16> = pb
        .iter()
        .flat_map(|(_, p, _)| p[12..].iter().map(|&c| Codec::Pcmu.decode(c)))
        .collect();
    assert_eq!(decoded_b, b);
    assert_eq!(pb[0].1[8..12], [0, 0, 0, 7]);
    // Pace: packet k of both streams leaves at k × 20 ms (absolute schedule).
    // Bounds are loose on purpose: receive times are taken by threads on a busy 2-core box;
    // a sender without pacing would deliver all 10 packets within a millisecond or two.
    // Lower bound, from what the receiver can prove rather than from its own luck: take
    // the first packet k after which the receiver had caught up (packet k+1 not yet
    // queued, so it was sent after pa[k] was received). Packet 9 is sent 20 × (9 - (k+1))
    // ms after packet k+1 when paced, and received after it is sent, so
    // pa[9] - pa[k] > 20 × (8 - k) ms: 160 ms when the receiver was on time from the
    // first packet. (Was: pa[9] - pa[0] >= 175 ms, which a receiver thread woken late for
    // packet 0 broke: 164 ms was seen on a loaded machine.) A sender without pacing
    // delivers all 10 within a millisecond or two: the receiver never catches up before
    // packet 9, or the span is far below the bound. The upper bound is unchanged.
    let k = (0..9)
        .find(|&k| pa[k].2)
        .unwrap_or_else(|| panic!("receiver never caught up before packet 9: not paced?"));
    assert!(
        k <= 4,
        "receiver caught up only at packet {k}: too few paced intervals seen"
    );
    let paced = pa[9].0 - pa[k].0;
    assert!(
        paced > Duration::from_millis(20 * (8 - k as u64)),
        "packets {k}..9 over {paced:?} (want > {} ms)",
        20 * (8 - k)
    );
    let span = pa[9].0 - pa[0].0;
    assert!(
        span <= Duration::from_millis(400),
        "10 packets over {span:?}"
    );
    // Packet j of both streams leaves at the same moment: the closest of the five pairs
    // (each receive time is late by its thread's wake-up; one pair read promptly by both
    // threads is enough) is within 30 ms (was: pair 4 only, so one late wake-up failed it).
    // Streams sent one after the other would be ≥ 100 ms apart in every pair.
    let skew = (0..5)
        .map(|j| {
            if pa[j].0 > pb[j].0 {
                pa[j].0 - pb[j].0
            } else {
                pb[j].0 - pa[j].0
            }
        })
        .min()
        .expect("five pairs");
    assert!(
        skew < Duration::from_millis(30),
        "streams not sent together: {skew:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Every SRC scenario runs to completion against SIPp's own stand-in SRS
/// (tests/sipp/fake_srs_uas.xml): checks the scenarios' syntax, ereg and exec paths.
#[test]
fn sipp_scenarios_complete_against_a_fake_srs() {
    let _g = serial();
    require_tool("sipp", "sip-tester");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let lg = loadgen(dir);
    let raw = |name: &str, seed: u64, codec: Codec| {
        let p = dir.join(format!("{name}.raw"));
        write_raw(&p, &test_audio(seed, 1600, codec));
        p.display().to_string()
    };
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, usize);
    let cases: Vec<Case> = vec![
        (
            "oracle_acme_basic.xml",
            vec![
                ("audio_a", raw("a", 1, Codec::Pcmu)),
                ("audio_b", raw("b", 2, Codec::Pcmu)),
                ("media_ms", "400".into()),
            ],
            1,
        ),
        (
            "avaya_sbce_dtmf.xml",
            vec![
                ("audio_a", raw("a", 1, Codec::Pcma)),
                ("audio_b", raw("b", 2, Codec::Pcma)),
                ("media_ms", "400".into()),
            ],
            1,
        ),
        (
            "metaswitch_single_stream.xml",
            vec![
                ("audio_a", raw("a", 1, Codec::Pcmu)),
                ("media_ms", "400".into()),
            ],
            1,
        ),
        (
            "cisco_cube_hold.xml",
            vec![
                ("audio_a1", raw("a", 1, Codec::Pcmu)),
                ("audio_b1", raw("b", 2, Codec::Pcmu)),
                ("audio_a2", raw("c", 3, Codec::Pcmu)),
                ("audio_b2", raw("d", 4, Codec::Pcmu)),
                ("media1_ms", "300".into()),
                ("hold_ms", "200".into()),
                ("media2_ms", "300".into()),
            ],
            2,
        ),
    ];
    for (scenario, mut keys, media_marks) in cases {
        keys.push(("loadgen", lg.clone()));
        let uas_port = free_port();
        let (mp, _) = free_port_range(6);
        let mut uas = Command::new("sipp")
            .arg("-sf")
            .arg(sipp_dir().join("fake_srs_uas.xml"))
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
            .args(["-p", &uas_port.to_string(), "-mp", &mp.to_string()])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("uas.err"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sipp UAS");
        wait_udp_bound(uas_port, "SIPp UAS");
        let run = run_sipp(scenario, uas_port, &keys, dir, Duration::from_secs(25));
        let uas_st = wait_bounded(&mut uas, Duration::from_secs(10));
        assert_eq!(run.code, Some(0), "{scenario}\n{}", run.diagnostics);
        assert_eq!(
            uas_st.and_then(|s| s.code()),
            Some(0),
            "{scenario}: fake SRS failed: {}",
            std::fs::read_to_string(dir.join("uas.err")).unwrap_or_default()
        );
        let medias = run
            .marks
            .keys()
            .filter(|k| k.starts_with("T_MEDIA"))
            .count();
        assert_eq!(medias, media_marks, "{scenario}: marks {:?}", run.marks);
        assert!(run.marks.contains_key("T_ACK") && run.marks.contains_key("T_BYE"));
    }
}

fn run_bench(dir: &Path, args: &[String]) -> Value {
    let mut child = Command::new(loadgen(dir))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running loadgen bench");
    // Read stdout in a thread so a full pipe cannot block the child.
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let st =
        wait_bounded(&mut child, Duration::from_secs(120)).expect("bench finished within 120 s");
    let out = reader.join().expect("reader");
    assert!(st.success(), "bench failed: {st}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench JSON: {e}\n{out}"))
}

/// The benchmark client against SIPp's stand-in SRS: all calls answered and completed,
/// exact packet count, /proc sampling of the far end works.
#[test]
fn loadgen_bench_against_a_fake_srs() {
    let _g = serial();
    require_tool("sipp", "sip-tester");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let port = free_port();
    let (mp, _) = free_port_range(6);
    let mut uas = Command::new("sipp")
        .arg("-sf")
        .arg(sipp_dir().join("fake_srs_uas.xml"))
        .args([
            "-m",
            "40",
            "-nostdin",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-timeout",
            "30s",
        ])
        .args(["-p", &port.to_string(), "-mp", &mp.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sipp UAS");
    wait_udp_bound(port, "SIPp UAS");
    let r = run_bench(
        dir,
        &[
            "--target".into(),
            format!("127.0.0.1:{port}"),
            "--calls".into(),
            "40".into(),
            "--duration-s".into(),
            "3".into(),
            "--ramp-s".into(),
            "1".into(),
            "--daemon-pid".into(),
            uas.id().to_string(),
            "--settle-ms".into(),
            "200".into(),
        ],
    );
    let _ = wait_bounded(&mut uas, Duration::from_secs(10));
    assert_eq!(r["calls_answered"], 40, "{r}");
    assert_eq!(r["calls_completed"], 40, "{r}");
    assert_eq!(r["packets_sent"], 40 * 2 * 150, "{r}");
    assert_eq!(r["deadline_hit"], false);
    // The loadgen's own scheduling lag (how late its 20 ms send ticks ran). It measures the
    // machine as much as the loadgen: 44 ms has been seen with both cores busy. What
    // matters is that lag never costs audio: a packet up to the recorder's playout window
    // late (playout_delay_ms = 300 in these tests) is still placed exactly, so the bound
    // is half of that window (was 20 ms).
    assert!(r["max_tick_lag_ms"].as_f64().expect("lag") < 150.0, "{r}");
    assert!(
        r["daemon"]["rss_kb_before"].as_u64().expect("rss sampled") > 0,
        "{r}"
    );
    assert!(
        r["daemon"]["cpu_us_per_packet"]
            .as_f64()
            .expect("cpu sampled")
            >= 0.0,
        "{r}"
    );
}

/// A small benchmark against the real daemon: every call recorded with zero loss,
/// verified by the load generator through `recordings list/show --json`.
#[test]
fn bench_8_concurrent_calls_zero_loss() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = start(dir);
    let pid = d.pid().to_string();
    let r = run_bench(
        dir,
        &[
            "--target".into(),
            format!("127.0.0.1:{}", d.sip_port),
            "--calls".into(),
            "8".into(), // the test config's RTP pool has 100 ports
            "--duration-s".into(),
            "4".into(),
            "--ramp-s".into(),
            "1".into(),
            "--daemon-pid".into(),
            pid,
            "--config".into(),
            d.config.display().to_string(),
            "--branchrec".into(),
            d.bin.display().to_string(),
        ],
    );
    assert_eq!(r["calls_answered"], 8, "{r}\n--- daemon\n{}", d.log_text());
    assert_eq!(r["calls_completed"], 8, "{r}");
    assert_eq!(r["verify"]["checked"], 8, "{r}");
    assert_eq!(r["verify"]["all_ok"], true, "{r}");
    assert_eq!(r["verify"]["states"]["complete"], 8, "{r}");
    d.stop();
}

/// `branchrec recordings pause|resume` during a live call: the paused interval is silence in
/// the file on both channels (the test audio has no zero sample, so silence proves nothing
/// was stored), audio before and after is bit-exact, and the interval is in the events.
#[test]
fn cli_pause_and_resume_store_no_paused_audio() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let mut d = start(&dir);
    let a = test_audio(11, 5 * RATE, Codec::Pcmu); // 5.0 s
    let b = test_audio(12, 5 * RATE, Codec::Pcmu);
    write_raw(&dir.join("a.raw"), &a);
    write_raw(&dir.join("b.raw"), &b);
    let keys = vec![
        ("loadgen", loadgen(&dir)),
        ("audio_a", dir.join("a.raw").display().to_string()),
        ("audio_b", dir.join("b.raw").display().to_string()),
        ("media_ms", "5600".to_string()),
    ];
    let port = d.sip_port;
    let sipp_dir = dir.clone();
    let sipp = std::thread::spawn(move || {
        let keys: Vec<(&str, String)> = keys.iter().map(|(k, v)| (*k, v.clone())).collect();
        run_sipp(
            "oracle_acme_basic.xml",
            port,
            &keys,
            &sipp_dir,
            Duration::from_secs(40),
        )
    });
    // Wait (bounded) until the call is being recorded: polled every 100 ms; SIPp start-up
    // and the answer take well under a second idle, 60 s bounds a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let rows = d.recordings_json(&["list", "--json"]);
        if let Some(r) = rows.as_array().and_then(|a| a.first()) {
            if r["state"] == "recording" {
                break r["id"].as_str().expect("id").to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no recording started\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Each CLI call takes effect somewhere between its start and its return; the times
    // bound the interval the daemon can have recorded (see the check of r - p below).
    let pause_start = Instant::now();
    d.recordings(&["pause", &id]);
    let pause_end = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let resume_start = Instant::now();
    d.recordings(&["resume", &id]);
    let resume_end = Instant::now();
    let run = sipp.join().expect("sipp thread");
    assert_eq!(run.code, Some(0), "SIPp failed\n{}", run.diagnostics);
    // Closed, catalogued and signed (polled; was a fixed 800 ms).
    wait_settled(&d, 1);

    let detail = d.recordings_json(&["show", &id, "--json"]);
    let events = detail["events"].as_array().expect("events");
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .and_then(|e| e["at_ms"].as_u64())
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    let (p, r) = (at("pause"), at("resume"));
    // The paused interval is what the test did: 1.5 s between the two CLI calls, plus
    // whatever of their run time falls inside it. Bounds: from the pause's return to the
    // resume's start, up to from the pause's start to the resume's return, ± 300 ms (the
    // call task applies control commands on its 100 ms tick; the events are in ms on the
    // call timeline). Idle this is the old 1200..=2200; a loaded machine's slow CLI start
    // only moves it by what was measured.
    let lo = resume_start.duration_since(pause_end).as_millis() as u64;
    let hi = resume_end.duration_since(pause_start).as_millis() as u64;
    assert!(
        r > p && (lo.saturating_sub(300)..=hi + 300).contains(&(r - p)),
        "pause {p} ms, resume {r} ms: want {lo}..{hi} ± 300 ms"
    );

    let chans = export(&d, &id, &dir);
    let ms = |x: u64| (x * u64::from(RATE as u32) / 1000) as usize;
    for (ch, sent) in [(0usize, &a), (1usize, &b)] {
        let c = &chans[ch];
        // Nothing stored while paused (margins cover the playout window edges).
        let quiet = &c[ms(p + 60)..ms(r - 60)];
        assert!(
            quiet.iter().all(|s| *s == 0),
            "channel {ch}: audio stored while paused"
        );
        // Before the pause the channel holds an exact prefix of what was sent.
        let start = c
            .iter()
            .position(|s| *s != 0)
            .expect("audio before the pause");
        let before = &c[start..ms(p)];
        let n = before.iter().rposition(|s| *s != 0).map_or(0, |i| i + 1);
        assert!(
            n > ms(800),
            "channel {ch}: only {n} samples before the pause"
        );
        assert_eq!(
            &before[..n],
            &sent[..n],
            "channel {ch}: audio before pause altered"
        );
        // After the resume there is audio again, and it is a contiguous piece of what was sent.
        let after = &c[ms(r + 60)..];
        let k = after
            .iter()
            .position(|s| *s != 0)
            .expect("audio after resume");
        let piece = &after[k..k + 400];
        assert!(
            sent.windows(400).any(|w| w == piece),
            "channel {ch}: audio after resume not found in what was sent"
        );
    }
    d.stop();
}

/// Issue #13 item 6: session timers end to end (tests/sipp/session_timer.xml): the 200s
/// carry Session-Expires and Require: timer, the refresh re-INVITE is answered, and the
/// missing next refresh makes the recorder send BYE; the recording is closed `complete`
/// with a `session_timer_expired` event.
#[test]
fn session_timer_refresh_then_expiry_ends_the_session_with_bye() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    require_tool("sipp", "sip-tester");
    let mut d = Daemon::start_with_sip(dir, "min_se_s = 4", "");
    let run = run_sipp_with(
        "session_timer.xml",
        d.sip_port,
        &[],
        dir,
        Duration::from_secs(30),
        &[],
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    let rec = the_recording(&d);
    assert_eq!(rec["state"], "complete", "{rec}");
    // ACK, 1.5 s, refresh, BYE 4 - 4/3 s later: about 4.2 s (not the RTP timeout).
    let dur = rec["duration_ms"].as_i64().expect("duration_ms");
    assert!((3500..=6000).contains(&dur), "duration {dur} ms");
    let id = rec["id"].as_str().expect("id").to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let events = detail["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "session_timer_expired"),
        "no session_timer_expired event: {events:?}"
    );
    d.stop();
}

/// Issue #13 item 4: an SRC that never ACKs our 200 (tests/sipp/no_ack.xml, no RTP):
/// after 64*T1 the recorder sends BYE (RFC 3261 §13.3.1.4) and the silent recording is
/// not kept as `complete` but discarded with a tombstone `unconfirmed`.
#[test]
fn unacknowledged_200_gets_bye_and_no_silent_recording_is_kept() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    require_tool("sipp", "sip-tester");
    let mut d = Daemon::start(dir);
    let t = Instant::now();
    let run = run_sipp_with(
        "no_ack.xml",
        d.sip_port,
        &[],
        dir,
        Duration::from_secs(60),
        &[],
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(30),
        "BYE after {took:?}, before 64*T1"
    );
    let msgs = std::fs::read_to_string(dir.join("no_ack.msg.log")).expect("SIPp message log");
    assert!(
        msgs.contains("BYE sip:src@"),
        "no BYE to the SRC's Contact:\n{msgs}"
    );
    // Discarded: no recording, one tombstone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = d.recordings_json(&["list", "--json"]);
        if list.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent unconfirmed recording kept: {list}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new(&d.bin)
        .args(["retention", "tombstones", "--json", "--config"])
        .arg(&d.config)
        .output()
        .expect("branchrec retention tombstones");
    let tomb: Value = serde_json::from_slice(&out.stdout).expect("tombstones JSON");
    let tomb = tomb.as_array().expect("array");
    assert_eq!(tomb.len(), 1, "{tomb:?}");
    assert_eq!(tomb[0]["reason"], "unconfirmed", "{tomb:?}");
    d.stop();
}

/// Issue #13 items 1 and 2: a recording session whose FIRST offer has every stream on
/// hold (tests/sipp/initial_inactive.xml) — `a=inactive`, `a=recvonly` (the SRC would only
/// receive) and `c=0.0.0.0` with `a=sendonly` — is answered `a=inactive` on both streams,
/// stores none of the RTP the SRC sends anyway, has a `pause` event at 0 (source
/// `siprec`) and a `resume` when the re-INVITE makes the streams `sendonly`; after it the
/// audio is stored bit-exact. The stats follow the one channel schema: the paused packets
/// are `dropped_while_paused` of their channel, not `lost`, and no extra element.
/// Unfixed, the first variant stored burst 1 (the answer was inactive but nothing paused)
/// and the c=0.0.0.0 variant was answered recvonly (the SIPp regexp fails).
#[test]
fn a_session_paused_from_its_first_offer_stores_nothing_until_resumed() {
    for (dir_attr, conn) in [
        ("inactive", "127.0.0.1"),
        ("recvonly", "127.0.0.1"),
        ("sendonly", "0.0.0.0"),
    ] {
        initial_hold_call(dir_attr, conn);
    }
}

fn initial_hold_call(dir_attr: &str, conn: &str) {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = start(dir);
    let n = 3 * RATE / 2; // 1.5 s bursts = 75 packets
    let (a1, b1, a2, b2) = (
        test_audio(21, n, Codec::Pcmu),
        test_audio(22, n, Codec::Pcmu),
        test_audio(23, n, Codec::Pcmu),
        test_audio(24, n, Codec::Pcmu),
    );
    let mut keys = vec![("loadgen", loadgen(dir))];
    for (name, s) in [
        ("audio_a1", &a1),
        ("audio_b1", &b1),
        ("audio_a2", &a2),
        ("audio_b2", &b2),
    ] {
        let p = dir.join(format!("{name}.raw"));
        write_raw(&p, s);
        keys.push((name, p.display().to_string()));
    }
    keys.push(("hold_dir", dir_attr.to_string()));
    keys.push(("hold_c", conn.to_string()));
    // 3 s after each burst starts: the 1.5 s burst plus 1.5 s for the loadgen's start-up,
    // which SIPp's exec does not wait for (the margin cisco_cube_hold uses on a loaded box).
    keys.push(("paused_ms", "3000".into()));
    keys.push(("media2_ms", "3000".into()));
    let run = run_sipp(
        "initial_inactive.xml",
        d.sip_port,
        &keys,
        dir,
        Duration::from_secs(45),
    );
    let what = format!("a={dir_attr} c={conn}");
    assert_eq!(
        run.code,
        Some(0),
        "{what}: SIPp failed (both streams must be answered a=inactive)\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    wait_settled(&d, 1);
    let rec = the_recording(&d);
    assert_eq!(rec["state"], "complete", "{what}: {rec}");
    let id = rec["id"].as_str().expect("id").to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let ev: Vec<(String, Option<u64>, Value)> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["channel"].is_null())
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["at_ms"].as_u64(),
                e["detail"]["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ev.first().map(|e| (e.0.as_str(), e.1)),
        Some(("pause", Some(0))),
        "{what}: {ev:?}"
    );
    assert_eq!(ev[0].2, "siprec", "{what}: {ev:?}");
    let resume_at = ev
        .iter()
        .find(|e| e.0 == "resume")
        .and_then(|e| e.1)
        .unwrap_or_else(|| panic!("{what}: no resume event: {ev:?}"));
    // Stats: one schema, one element per channel; burst 1 (75 packets) dropped, not lost.
    let stats = assert_stats_schema(&detail, 2);
    for s in &stats {
        assert_eq!(s.received, 75, "{what}: {s:?}");
        assert_eq!(s.lost, 0, "{what}: {s:?}");
        assert!(s.dropped_while_paused <= 75, "{what}: {s:?}");
        if conn != "0.0.0.0" {
            assert_eq!(s.dropped_while_paused, 75, "{what}: {s:?}");
        }
    }
    // Audio: silence until the resume, then exactly burst 2 on each channel.
    let chans = export(&d, &id, dir);
    let ms = |x: u64| (x as usize) * RATE / 1000;
    for (ch, (paused, live)) in [(&a1, &a2), (&b1, &b2)].into_iter().enumerate() {
        let c = &chans[ch];
        assert!(
            c[..ms(resume_at).min(c.len())].iter().all(|s| *s == 0),
            "{what}: channel {ch}: audio stored before the resume"
        );
        assert!(
            !c.windows(160)
                .any(|w| paused.chunks(160).take(5).any(|p| p == w)),
            "{what}: channel {ch}: paused burst found in the recording"
        );
        expect_bursts(&format!("{what} channel {ch}"), c, &[live]);
    }
    d.stop();
}

/// Issue #13 item 5 (tests/sipp/metadata_variants.xml): metadata a strict reader gets
/// nothing from. `<participant>`s nested in `<session>` behind a garbled Content-Type
/// (`application/ +xml`) are found and mapped to the channels, with no warning; a
/// document that names nobody, and one that is not well-formed, are kept raw and raise a
/// `metadata_unusable` event (with the reason) on the recording. Unfixed: the first call had
/// no participants and none of them warned.
#[test]
fn metadata_that_yields_nothing_is_parsed_or_warned() {
    const NESTED: &str = "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode><session session_id='S1'><participant participant_id='PA'><nameID aor='sip:alice@nested.example'><name>Alice</name></nameID><send>STA</send></participant><participant participant_id='PB'><nameID aor='sip:bob@nested.example'/><send>STB</send></participant><stream stream_id='STA' session_id='S1'><label>16777227</label></stream><stream stream_id='STB' session_id='S1'><label>16777228</label></stream></session></recording>";
    const NOBODY: &str = "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode><session session_id='S1'/><callinfo><party id='PA' aor='sip:alice@x'/></callinfo></recording>";
    const BROKEN: &str =
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><participant participant_id='PA'>";
    for (ct, xml, usable) in [
        ("application/ +xml", NESTED, true),
        ("application/rs-metadata+xml", NOBODY, false),
        ("application/rs-metadata+xml", BROKEN, false),
    ] {
        let _g = serial();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut d = start(dir);
        let keys = vec![
            ("meta_ct", ct.to_string()),
            ("meta_xml", xml.to_string()),
            ("media_ms", "500".to_string()),
        ];
        run_call_ok("metadata_variants.xml", &d, &keys, dir);
        let rec = the_recording(&d);
        let id = rec["id"].as_str().expect("id").to_string();
        let detail = d.recordings_json(&["show", &id, "--json"]);
        let warnings: Vec<&Value> = detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "metadata_unusable")
            .collect();
        let versions = detail["metadata_versions"].as_array().expect("versions");
        assert_eq!(versions.len(), 1, "{ct}: the part is kept: {versions:?}");
        if usable {
            assert!(warnings.is_empty(), "{ct}: {warnings:?}");
            assert_eq!(
                aors(&rec),
                ["sip:alice@nested.example", "sip:bob@nested.example"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                "{ct}: nested participants: {rec}"
            );
            assert_eq!(channel_aor(&rec, 0), "sip:alice@nested.example");
            assert_eq!(channel_aor(&rec, 1), "sip:bob@nested.example");
        } else {
            assert_eq!(
                warnings.len(),
                1,
                "{xml}: one warning per unusable version: {detail}"
            );
            assert!(
                warnings[0]["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
                "{:?}",
                warnings[0]
            );
            assert!(
                d.log_text().contains("metadata_unusable"),
                "a visible WARN line\n{}",
                d.log_text()
            );
        }
        d.stop();
    }
}
