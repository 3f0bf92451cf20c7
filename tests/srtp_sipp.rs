//! SRTP with SDES keys end to end: SIPp offers a SIPREC session over RTP/SAVP with
//! `a=crypto` lines (tests/sipp/srtp_siprec.xml), an independent SRTP peer written in
//! Python with python3-cryptography (tests/srtp/srtp_tool.py, not project code) sends the
//! media, and the recording is checked through the CLI sample by sample.
//!
//! - the published SRTP capture (AES_CM_128_HMAC_SHA1_80, SSRC 0xdeadbeef, PCMA) replayed
//!   at real-time pace records exactly the audio Python decrypts from the same packets;
//! - the same capture offered with a wrong key writes silence only and counts every
//!   packet as an authentication failure;
//! - AEAD_AES_256_GCM with an MKI and a sequence wrap (ROC 0 → 1), encrypted by Python,
//!   records bit-exact.
//!
//! Needs `sipp` (sip-tester) and `python3` with `cryptography` (python3-cryptography);
//! missing tools make the tests FAIL.

mod common;

use base64::Engine;
use common::g711::Codec;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/testdata/pcap/srtp-marseillaise-aes128-sha1-80.pcap"
);
/// The capture's published key (../shared/testdata/pcap/SOURCES.md).
const CAPTURE_KEY: &str = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";

fn tool() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/srtp/srtp_tool.py").to_string()
}

fn require_python_cryptography() {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography.hazmat.primitives.ciphers.aead"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with `cryptography` is needed (Debian: python3 python3-cryptography); CI installs it"
    );
}

/// Serialised with the other timing-sensitive tests; the tools checked; a scratch dir.
fn setup() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir) {
    let g = serial();
    require_tool("sipp", "sip-tester");
    require_python_cryptography();
    (g, tempfile::tempdir().expect("tempdir"))
}

fn read_count(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .expect("sender wrote its count")
        .trim()
        .parse()
        .expect("count")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn random_key(n: usize) -> String {
    b64(&(0..n).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

struct CallResult {
    detail: Value,
    channel: Vec<i16>,
    /// Our answer as SIPp saw it: tag, suite, key, proto.
    answer: Vec<String>,
}

/// One SIPREC call through `srtp_siprec.xml` against a fresh daemon; returns the
/// recording's `show --json`, its exported channel 0 and the answer's crypto line.
fn call(dir: &Path, keys: Vec<(&str, String)>, media_ms: u64) -> CallResult {
    let mut d = Daemon::start(dir);
    let mut keys = keys;
    keys.push(("tool", tool()));
    keys.push(("decoy_key", random_key(30)));
    keys.push(("media_ms", media_ms.to_string()));
    let run = run_sipp(
        "srtp_siprec.xml",
        d.sip_port,
        &keys,
        dir,
        Duration::from_secs(media_ms / 1000 + 30),
    );
    assert_eq!(
        run.code,
        Some(0),
        "SIPp failed\n{}\n--- daemon\n{}",
        run.diagnostics,
        d.log_text()
    );
    let answer: Vec<String> = run
        .diagnostics
        .lines()
        .find_map(|l| l.trim().strip_prefix("ANSWER "))
        .unwrap_or_else(|| panic!("no ANSWER line logged\n{}", run.diagnostics))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // Polled every 200 ms; closing is sub-second idle, 60 s bounds a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rec = loop {
        let list = d.recordings_json(&["list", "--json"]);
        let r = list[0].clone();
        if r["state"] == "complete" || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rec["state"], "complete", "{rec}");
    let id = rec["id"].as_str().expect("id").to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);
    // Issue #13 item 2: the SRTP path writes the one channel stats schema.
    assert_stats_schema(&detail, 1);
    let wav = dir.join("export.wav");
    d.recordings(&["export", &id, "--out", wav.to_str().expect("utf-8 path")]);
    let log = d.log_text();
    d.stop();
    let mut w = read_wav(&wav);
    assert_eq!(w.channels, 1, "one m-line, one channel");
    // The keys are secrets: neither the offered nor our answer key is ever logged.
    for (k, v) in &keys {
        if *k == "crypto_key" || *k == "decoy_key" {
            let key_only = v.split('|').next().unwrap_or(v);
            assert!(!log.contains(key_only), "offered key in the daemon log");
        }
    }
    assert!(answer.len() == 4, "answer: {answer:?}");
    assert!(
        !log.contains(&answer[2]),
        "our answer key in the daemon log"
    );
    CallResult {
        detail,
        channel: w.data.swap_remove(0),
        answer,
    }
}

fn alaw_file(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .map(|b| Codec::Pcma.decode(b))
        .collect()
}

/// Where `want` starts in `got`, sample-exact, or a failure describing the mismatch.
fn find_exact(got: &[i16], want: &[i16]) -> usize {
    assert!(want.len() >= 160, "expected audio too short");
    let head = &want[..160];
    let off = (0..got.len().saturating_sub(want.len() - 1))
        .find(|&i| &got[i..i + 160] == head)
        .unwrap_or_else(|| {
            panic!(
                "the first 20 ms of the expected audio are nowhere in the export ({} samples, {} non-zero)",
                got.len(),
                got.iter().filter(|s| **s != 0).count()
            )
        });
    let end = off + want.len();
    if got[off..end] != *want {
        let bad = (0..want.len())
            .find(|&i| got[off + i] != want[i])
            .unwrap_or(0);
        panic!(
            "export differs from the expected audio at sample {bad} of {} (offset {off})",
            want.len()
        );
    }
    off
}

fn stats(detail: &Value) -> Value {
    channel_stats(detail, 0)
}

fn assert_answer(a: &[String], tag: &str, suite: &str, key_len: usize, offered: &str) {
    assert_eq!(a[0], tag, "answer tag: {a:?}");
    assert_eq!(a[1], suite, "answer suite: {a:?}");
    assert_eq!(a[3], "RTP/SAVP", "answer proto: {a:?}");
    let k = base64::engine::general_purpose::STANDARD
        .decode(&a[2])
        .expect("answer key is base64");
    assert_eq!(k.len(), key_len, "answer key||salt length");
    assert_ne!(a[2], offered, "answer echoes the offerer's key");
}

#[test]
fn srtp_capture_replayed_decrypts_to_the_known_audio() {
    let (_g, tmp) = setup();
    let dir = tmp.path();
    let seconds = "8";
    // The expected audio: the same packets decrypted by Python.
    let expected_file = dir.join("expected.alaw");
    let st = Command::new("python3")
        .args([&tool(), "decrypt-pcap", CAPTURE, CAPTURE_KEY, seconds])
        .arg(&expected_file)
        .status()
        .expect("python3");
    assert!(st.success(), "independent decryption of the capture failed");
    let want = alaw_file(&expected_file);
    assert_eq!(want.len(), 400 * 160, "8 s of 20 ms PCMA packets");
    let count_file = dir.join("sent.count");
    let r = call(
        dir,
        vec![
            ("crypto_tag", "10".into()),
            ("crypto_suite", "AES_CM_128_HMAC_SHA1_80".into()),
            ("crypto_key", CAPTURE_KEY.into()),
            ("send_mode", "send-pcap".into()),
            (
                "send_args",
                format!("{CAPTURE} {seconds} {}", count_file.display()),
            ),
        ],
        8800,
    );
    assert_answer(&r.answer, "10", "AES_CM_128_HMAC_SHA1_80", 30, CAPTURE_KEY);
    let sent = read_count(&count_file);
    assert_eq!(sent, 400);
    let s = stats(&r.detail);
    assert_eq!(s["srtp_suite"], "AES_CM_128_HMAC_SHA1_80", "{s}");
    assert_eq!(s["srtp_ok"], sent, "{s}");
    assert_eq!(s["srtp_auth_fail"], 0, "{s}");
    assert_eq!(s["srtp_replay"], 0, "{s}");
    assert_eq!(s["received"], sent, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    find_exact(&r.channel, &want);
}

#[test]
fn wrong_key_writes_no_audio_and_counts_every_packet() {
    let (_g, tmp) = setup();
    let dir = tmp.path();
    let count_file = dir.join("sent.count");
    let wrong = random_key(30);
    let r = call(
        dir,
        vec![
            ("crypto_tag", "10".into()),
            ("crypto_suite", "AES_CM_128_HMAC_SHA1_80".into()),
            ("crypto_key", wrong.clone()),
            ("send_mode", "send-pcap".into()),
            ("send_args", format!("{CAPTURE} 2 {}", count_file.display())),
        ],
        2800,
    );
    assert_answer(&r.answer, "10", "AES_CM_128_HMAC_SHA1_80", 30, &wrong);
    let sent = read_count(&count_file);
    assert_eq!(sent, 100);
    let s = stats(&r.detail);
    assert_eq!(s["srtp_auth_fail"], sent, "{s}");
    assert_eq!(s["srtp_ok"], 0, "{s}");
    assert_eq!(s["received"], 0, "nothing reached the timeline: {s}");
    assert!(
        r.channel.len() > 8000,
        "the call's length is kept as silence"
    );
    assert!(
        r.channel.iter().all(|x| *x == 0),
        "audio written from packets that failed authentication"
    );
}

#[test]
fn aead_aes_256_gcm_with_mki_across_sequence_wrap_is_bit_exact() {
    let (_g, tmp) = setup();
    let dir = tmp.path();
    let key = random_key(44);
    let plain_file: PathBuf = dir.join("sent.alaw");
    let packets = 150;
    let r = call(
        dir,
        vec![
            ("crypto_tag", "4".into()),
            ("crypto_suite", "AEAD_AES_256_GCM".into()),
            ("crypto_key", format!("{key}|2^31|7:4")),
            ("send_mode", "send-gcm".into()),
            (
                "send_args",
                // 65450 + 150 crosses the wrap after 86 packets: ROC 0 → 1.
                format!("{key} 7 4 {packets} 65450 {}", plain_file.display()),
            ),
        ],
        3600,
    );
    assert_answer(&r.answer, "4", "AEAD_AES_256_GCM", 44, &key);
    let want = alaw_file(&plain_file);
    assert_eq!(want.len(), packets * 160);
    let s = stats(&r.detail);
    assert_eq!(s["srtp_suite"], "AEAD_AES_256_GCM", "{s}");
    assert_eq!(s["srtp_ok"], packets as u64, "{s}");
    assert_eq!(s["srtp_auth_fail"], 0, "{s}");
    assert_eq!(s["srtp_unknown_mki"], 0, "{s}");
    find_exact(&r.channel, &want);
}
