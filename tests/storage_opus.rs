//! Storage formats end to end (issue 8, "Storage format"): a recording rule selects
//! `opus` storage; SIPp plays an Oracle/Acme SIPREC client, branchrec-loadgen sends two
//! known speech-like signals (G.711), and the recording is exported as Ogg Opus and as
//! WAV. Third-party tools judge the Ogg file (ffprobe, opusinfo, opusdec); the decoded
//! audio must match what was sent per channel (correlation), in the right channel order
//! and frame alignment. A `wav` rule stays bit-exact, and a SIGKILL during an Opus
//! recording leaves a readable, verifiable interrupted recording.
//! Needs sipp (sip-tester), ffprobe (ffmpeg) and opusinfo/opusdec (opus-tools); missing
//! tools FAIL the test.

mod common;

use common::g711::Codec;
use common::*;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RATE: usize = 8000;

const OPUS_RULE: &str = "[[rules]]\nname = \"compact\"\nformat = \"opus\"\n\
                         [storage.opus]\nbitrate_bps = 32000\ncomplexity = 5\nvbr = true\n";

/// A speech-like test signal: harmonics of a gliding pitch under a syllable envelope,
/// passed through G.711 (what a recorder receives). `f0` and `syl` make the two
/// channels different voices. Never exactly zero while the syllable is on.
fn voice(f0: f64, syl: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let env = 0.15 + 0.85 * (0.5 + 0.5 * (2.0 * std::f64::consts::PI * syl * t).sin());
            let f = f0 * (1.0 + 0.04 * (2.0 * std::f64::consts::PI * 4.0 * t).sin());
            let mut x = 0.0;
            for h in 1..=(2000.0 / f0) as i32 {
                x += (2.0 * std::f64::consts::PI * f * f64::from(h) * t + f64::from(h * h)).sin()
                    / f64::from(h);
            }
            Codec::Pcmu.roundtrip((5000.0 * env * x).clamp(-30000.0, 30000.0) as i16)
        })
        .collect()
}

/// Normalised correlation of `rec[off..]` with `sent`.
fn corr_at(rec: &[i16], sent: &[i16], off: isize) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (i, &s) in sent.iter().enumerate() {
        let j = off + i as isize;
        let r = if j >= 0 && (j as usize) < rec.len() {
            f64::from(rec[j as usize])
        } else {
            0.0
        };
        let s = f64::from(s);
        xy += r * s;
        xx += r * r;
        yy += s * s;
    }
    xy / (xx.sqrt() * yy.sqrt()).max(1.0)
}

/// Where `sent` starts in `rec`: the best correlation within ±400 samples of the first
/// loud sample. Returns (offset, correlation).
fn locate(rec: &[i16], sent: &[i16]) -> (isize, f64) {
    let onset = rec.iter().position(|s| s.unsigned_abs() > 300).unwrap_or(0) as isize;
    (onset - 400..=onset + 400)
        .map(|o| (o, corr_at(rec, sent, o)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
}

/// Signal-to-noise ratio (dB) of `rec[off..]` against `sent`.
fn snr_db(rec: &[i16], sent: &[i16], off: isize) -> f64 {
    let (mut sig, mut err) = (0.0, 0.0);
    for (i, &s) in sent.iter().enumerate() {
        let r = rec.get((off + i as isize) as usize).copied().unwrap_or(0);
        sig += f64::from(s).powi(2);
        err += (f64::from(s) - f64::from(r)).powi(2);
    }
    10.0 * (sig / err.max(1.0)).log10()
}

fn run_tool(bin: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let st =
        wait_bounded(&mut child, Duration::from_secs(30)).unwrap_or_else(|| panic!("{bin} hung"));
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    (st.success(), out)
}

/// ffprobe of an Ogg Opus export: (codec, channels, duration in ms).
fn ffprobe_opus(path: &Path) -> (String, u64, f64) {
    let p = path.to_str().expect("utf-8 path");
    let (ok, out) = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,channels:format=duration,format_name",
            "-of",
            "json",
            p,
        ],
    );
    assert!(ok, "ffprobe failed on {p}: {out}");
    let v: Value = serde_json::from_str(&out).expect("ffprobe JSON");
    assert_eq!(v["format"]["format_name"], "ogg", "{v}");
    let s = &v["streams"][0];
    let dur: f64 = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {v}"));
    (
        s["codec_name"].as_str().unwrap_or("").to_string(),
        s["channels"].as_u64().unwrap_or(0),
        dur * 1000.0,
    )
}

/// opusinfo must not complain (it checks granules, pre-skip, page sequence, CRC).
/// Returns its report and the playback length in ms (granules minus pre-skip).
fn opusinfo_clean(path: &Path) -> (String, f64) {
    let (ok, out) = run_tool("opusinfo", &[path.to_str().expect("utf-8 path")]);
    assert!(ok, "opusinfo failed:\n{out}");
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("warning") && !lower.contains("error"),
        "opusinfo reports problems:\n{out}"
    );
    assert!(out.contains("Channels: 2"), "opusinfo:\n{out}");
    // "Playback length: 0m:02.627s"
    let len = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Playback length: "))
        .and_then(|t| {
            let (m, s) = t.trim_end_matches('s').split_once("m:")?;
            Some(m.parse::<f64>().ok()? * 60_000.0 + s.parse::<f64>().ok()? * 1000.0)
        })
        .unwrap_or_else(|| panic!("no playback length in:\n{out}"));
    (out, len)
}

fn one_recording(d: &Daemon, state: &str) -> Value {
    // Polled every 200 ms; closing is sub-second idle, 60 s bounds a loaded machine (then
    // the row is returned as it is and the caller's check of its state reports it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = d.recordings_json(&["list", "--json"]);
        let arr = list.as_array().expect("list --json is an array");
        assert_eq!(arr.len(), 1, "expected exactly one recording: {list}");
        if arr[0]["state"] == state || Instant::now() > deadline {
            return arr[0].clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The oracle_acme_basic.xml keys: loadgen sends `a` on channel 0 and `b` on channel 1
/// for `media_ms`.
fn sipp_keys(dir: &Path, a: &[i16], b: &[i16], media_ms: u32) -> Vec<(&'static str, String)> {
    write_raw(&dir.join("a.raw"), a);
    write_raw(&dir.join("b.raw"), b);
    let loadgen = private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "rtp");
    vec![
        ("loadgen", loadgen.display().to_string()),
        ("audio_a", dir.join("a.raw").display().to_string()),
        ("audio_b", dir.join("b.raw").display().to_string()),
        ("media_ms", media_ms.to_string()),
    ]
}

fn sipp_call(d: &Daemon, dir: &Path, a: &[i16], b: &[i16]) -> SippRun {
    let keys = sipp_keys(dir, a, b, 2600);
    let run = run_call_ok("oracle_acme_basic.xml", &d, &keys, dir);
    run
}

fn tools() {
    require_tool("sipp", "sip-tester");
    require_tool("ffprobe", "ffmpeg");
    require_tool("opusinfo", "opus-tools");
    require_tool("opusdec", "opus-tools");
}

#[test]
fn opus_rule_records_compact_audio_that_exports_to_ogg_opus_and_wav() {
    tools();
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = Daemon::start_with(dir, OPUS_RULE);
    let a = voice(130.0, 2.7, 2 * RATE); // 2.0 s on channel 0
    let b = voice(210.0, 3.9, 3 * RATE / 2); // 1.5 s on channel 1
    let run = sipp_call(&d, dir, &a, &b);
    let rec = one_recording(&d, "complete");
    assert_eq!(rec["state"], "complete", "{rec}");
    assert_eq!(rec["storage_format"], "opus", "list --json: {rec}");
    assert_eq!(rec["rule"], "compact", "{rec}");
    let id = rec["id"].as_str().expect("id").to_string();
    let show = d.recordings_json(&["show", &id, "--json"]);
    assert_eq!(show["storage_format"], "opus", "show --json");
    let dur_ms = rec["duration_ms"].as_f64().expect("duration_ms");
    assert_call_length("duration vs the call", dur_ms as i64, &run, 100);
    // Compact: the container is a fraction of the 32 kB/s a PCM recording takes.
    let bytes = show["file_bytes"].as_f64().expect("file_bytes");
    let per_s = bytes / (dur_ms / 1000.0);
    assert!(per_s < 6000.0, "{bytes} bytes for {dur_ms} ms: {per_s} B/s");
    // The file verifies (manifest signs the Opus packet stream).
    d.recordings(&["verify", &id]);

    // Ogg Opus (inferred from .opus), checked by third-party tools.
    let ogg = dir.join("call.opus");
    d.recordings(&["export", &id, "--out", ogg.to_str().unwrap()]);
    let (codec, ch, ogg_ms) = ffprobe_opus(&ogg);
    assert_eq!(
        (codec.as_str(), ch),
        ("opus", 2),
        "ffprobe of the Ogg export"
    );
    assert!(
        (ogg_ms - dur_ms).abs() <= 20.0,
        "Ogg duration {ogg_ms} ms vs call {dur_ms} ms"
    );
    let (info, play_ms) = opusinfo_clean(&ogg);
    assert!(info.contains("Original sample rate: 8000"), "{info}");
    // --format overrides the extension.
    let ogg2 = dir.join("call2.bin");
    d.recordings(&[
        "export",
        &id,
        "--out",
        ogg2.to_str().unwrap(),
        "--format",
        "opus",
    ]);
    assert_eq!(std::fs::read(&ogg2).unwrap(), std::fs::read(&ogg).unwrap());

    // opusdec (libopusfile's reference reader) decodes it to the same length.
    let dec = dir.join("opusdec.wav");
    let (ok, out) = run_tool(
        "opusdec",
        &[
            "--rate",
            "8000",
            ogg.to_str().unwrap(),
            dec.to_str().unwrap(),
        ],
    );
    assert!(ok, "opusdec: {out}");

    // WAV decoded by branchrec: exactly the call length, channels in order and aligned.
    let wavp = dir.join("call.wav");
    d.recordings(&["export", &id, "--out", wavp.to_str().unwrap()]);
    let w = read_wav(&wavp);
    assert_eq!((w.channels, w.rate, w.bits), (2, 8000, 16));
    let frames = w.data[0].len() as f64;
    assert!(
        (frames / 8.0 - dur_ms).abs() <= 1.0,
        "decoded WAV {frames} frames vs {dur_ms} ms"
    );
    // opusinfo's playback length honours pre-skip and end trimming: exactly the WAV.
    assert!(
        (frames / 8.0 - play_ms).abs() <= 1.0,
        "WAV {frames} frames vs Ogg playback {play_ms} ms"
    );
    let od = read_wav(&dec);
    assert!(
        (od.data[0].len() as f64 - frames).abs() <= 16.0,
        "opusdec {} frames vs ours {frames}",
        od.data[0].len()
    );
    let (off_a, ca) = locate(&w.data[0], &a);
    let (off_b, cb) = locate(&w.data[1], &b);
    let (sa, sb) = (snr_db(&w.data[0], &a, off_a), snr_db(&w.data[1], &b, off_b));
    eprintln!("opus storage: corr ch0 {ca:.3} ch1 {cb:.3}, SNR ch0 {sa:.1} dB ch1 {sb:.1} dB, {per_s:.0} B/s");
    assert!(ca > 0.6, "channel 0 correlation {ca}");
    assert!(cb > 0.6, "channel 1 correlation {cb}");
    assert!(
        off_a.abs_diff(off_b) <= 160,
        "channels misaligned: {off_a} vs {off_b}"
    );
    // The checks would catch a swapped channel order or a one-packet (20 ms) slip.
    let (_, swapped_a) = locate(&w.data[1], &a);
    let (_, swapped_b) = locate(&w.data[0], &b);
    assert!(
        swapped_a < 0.5 && swapped_b < 0.5,
        "swapped channels would pass: {swapped_a} {swapped_b}"
    );
    for slip in [-160isize, 160] {
        let c = corr_at(&w.data[0], &a, off_a + slip);
        assert!(c < 0.5, "a 20 ms slip would pass: {c}");
    }
    // opusdec's decode matches too (an independent decoder on our Ogg file).
    let (_, co) = locate(&od.data[0], &a);
    assert!(co > 0.6, "opusdec channel 0 correlation {co}");

    // Evidence bundle: the packet stream is what the manifest signed.
    let ev = dir.join("evidence");
    d.recordings(&["export", &id, "--evidence", ev.to_str().unwrap()]);
    let m: Value = serde_json::from_slice(&std::fs::read(ev.join("manifest.json")).unwrap())
        .expect("manifest JSON");
    assert_eq!(m["audio"]["encoding"], "opus");
    let (ok, sum) = run_tool(
        "sha256sum",
        &[ev.join("audio.opus-packets").to_str().unwrap()],
    );
    assert!(ok);
    assert_eq!(
        sum.split_whitespace().next(),
        m["audio"]["opus_packets_sha256"].as_str(),
        "sha256sum of audio.opus-packets vs manifest"
    );
    let (codec, ch, _) = ffprobe_opus(&ev.join("audio.opus"));
    assert_eq!((codec.as_str(), ch), ("opus", 2));
    d.stop();
}

#[test]
fn wav_rule_stays_bit_exact_and_exports_ogg_by_encoding() {
    tools();
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = Daemon::start_with(dir, "[[rules]]\nname = \"lossless\"\nformat = \"wav\"\n");
    let a = test_audio(1, 2 * RATE, Codec::Pcmu);
    let b = test_audio(2, 3 * RATE / 2, Codec::Pcmu);
    sipp_call(&d, dir, &a, &b);
    let rec = one_recording(&d, "complete");
    assert_eq!(rec["storage_format"], "wav", "{rec}");
    let id = rec["id"].as_str().expect("id").to_string();
    let wavp = dir.join("call.wav");
    d.recordings(&["export", &id, "--out", wavp.to_str().unwrap()]);
    let w = read_wav(&wavp);
    let off_a = expect_bursts("channel 0", &w.data[0], &[&a]);
    let off_b = expect_bursts("channel 1", &w.data[1], &[&b]);
    assert!(off_a[0].abs_diff(off_b[0]) <= 160);
    // Ogg Opus from WAV storage: encoded on export, same length as the WAV.
    let ogg = dir.join("call.ogg");
    d.recordings(&["export", &id, "--out", ogg.to_str().unwrap()]);
    let (codec, ch, ogg_ms) = ffprobe_opus(&ogg);
    assert_eq!((codec.as_str(), ch), ("opus", 2));
    let wav_ms = w.data[0].len() as f64 / 8.0;
    assert!(
        (ogg_ms - wav_ms).abs() <= 20.0,
        "Ogg {ogg_ms} ms vs WAV {wav_ms} ms"
    );
    let (_, play_ms) = opusinfo_clean(&ogg);
    assert!(
        (play_ms - wav_ms).abs() <= 1.0,
        "Ogg playback {play_ms} ms vs WAV {wav_ms} ms"
    );
    d.stop();
}

#[test]
fn sigkill_during_an_opus_recording_leaves_a_readable_interrupted_recording() {
    tools();
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut d = Daemon::start_with(dir, OPUS_RULE);
    let a = voice(130.0, 2.7, 6 * RATE);
    let b = voice(210.0, 3.9, 6 * RATE);
    let keys = sipp_keys(dir, &a, &b, 6500);
    let port = d.sip_port;
    let dir2 = dir.to_path_buf();
    // The call cannot be answered (its timeline cannot start) before SIPp is started.
    let spawned = Instant::now();
    let sipp = std::thread::spawn(move || {
        run_sipp(
            "oracle_acme_basic.xml",
            port,
            &keys,
            &dir2,
            Duration::from_secs(30),
        )
    });
    // Kill once about 3 s of audio are in (the flush interval is 1 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let start = loop {
        let list = d.recordings_json(&["list", "--json"]);
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no recording started:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(start.elapsed()));
    d.kill();
    // Reaped: the daemon wrote nothing after this.
    let dead_at = Instant::now();
    let _ = sipp.join();
    // Restart on the same data: start-up closes the recording as interrupted.
    let mut d = Daemon::start_with(dir, OPUS_RULE);
    let rec = one_recording(&d, "interrupted");
    assert_eq!(rec["state"], "interrupted", "{rec}");
    assert_eq!(rec["storage_format"], "opus");
    let dur_ms = rec["duration_ms"].as_f64().expect("duration_ms");
    // Lower: the row was seen (so the call was answered) at least 3 s before the kill; a
    // flush is due every 1 s and covers audio up to the 300 ms playout window before it:
    // 3000 - 1000 - 300 - 700 ms of tick/scheduling slack = 1000, as before. Upper: the
    // recorded timeline starts at the answer, after SIPp was started, and ends before the
    // daemon's death (was a fixed 3600 ms, which a slow `list` call overran: the kill
    // counts from when the row was *seen*, and the answer may be well before that).
    let upper = dead_at.duration_since(spawned).as_millis() as f64;
    assert!(
        (1000.0..=upper).contains(&dur_ms),
        "interrupted duration {dur_ms} ms (killed ~3 s in, 1 s flush interval; \
         SIPp start to death {upper} ms)"
    );
    let id = rec["id"].as_str().expect("id").to_string();
    d.recordings(&["verify", &id]);
    let ogg = dir.join("crash.opus");
    d.recordings(&["export", &id, "--out", ogg.to_str().unwrap()]);
    let (codec, ch, ogg_ms) = ffprobe_opus(&ogg);
    assert_eq!((codec.as_str(), ch), ("opus", 2));
    assert!((ogg_ms - dur_ms).abs() <= 20.0, "Ogg {ogg_ms} vs {dur_ms}");
    let (_, play_ms) = opusinfo_clean(&ogg);
    assert!(
        (play_ms - dur_ms).abs() <= 20.0,
        "Ogg playback {play_ms} vs {dur_ms}"
    );
    let wavp = dir.join("crash.wav");
    d.recordings(&["export", &id, "--out", wavp.to_str().unwrap()]);
    let w = read_wav(&wavp);
    assert!((w.data[0].len() as f64 / 8.0 - dur_ms).abs() <= 1.0);
    // The audio kept is the audio sent (from its start).
    let (_, c) = locate(&w.data[0], &a[..RATE]);
    eprintln!("interrupted opus recording: {dur_ms} ms kept, channel 0 correlation {c:.3}");
    assert!(c > 0.6, "interrupted recording channel 0 correlation {c}");
    d.stop();
}
