//! A newcomer's first call, exactly as the README's "Your first call" section says it: the
//! recorder on its built-in defaults (no `--config`: SIP on 127.0.0.1:5060, data in
//! `./branchrec-data`), `branchrec status` on the fresh data directory, one
//! `branchrec-loadgen call`, then `recordings list` and `recordings export ID --out
//! call.wav` — and the exported audio is checked sample by sample against the tones the
//! load generator sends (recomputed here from their documented definition).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{g711, output_retrying_busy, private_copy, read_wav};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(bin: &Path, cwd: &Path, args: &[&str]) -> String {
    let o = output_retrying_busy(Command::new(bin).current_dir(cwd).args(args));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{} {args:?} failed: {}\n{out}",
        bin.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The tone `branchrec-loadgen call` sends (src/bin/loadgen/call.rs, documented there):
/// 8 kHz, amplitude 8000, magnitudes at least 64, then G.711 μ-law.
fn tone(hz: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let v = (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()).round()
                as i16;
            let v = match v {
                v if v.abs() >= 64 => v,
                v if v < 0 => -64,
                _ => 64,
            };
            g711::Codec::Pcmu.roundtrip(v)
        })
        .collect()
}

#[test]
fn readme_first_call_records_both_tones_bit_exact() {
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = private_copy(env!("CARGO_BIN_EXE_branchrec"), dir, "run");
    let loadgen = private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "call");

    // A fresh data directory: status answers (not recording yet, nothing pending).
    let st = run(&bin, dir, &["status"]);
    assert!(st.contains("not recording yet"), "{st}");
    assert!(st.contains("recorded       0"), "{st}");
    assert!(st.contains("pending        0 "), "{st}");

    // The recorder on its built-in defaults, from this directory.
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = Command::new(&bin)
        .current_dir(dir)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting branchrec run");
    let _daemon = Kill(child);
    // Ready when the log says so; bounded (a loaded machine takes a few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        if text.contains("branchrec ready") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon not ready in 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = run(&loadgen, dir, &["call", "--seconds", "3"]);
    assert!(out.contains("BYE answered 200"), "{out}");

    // `recordings list` shows the call; the catalogue closes it shortly after the BYE
    // (bounded wait for `complete`: the close is one catalogue transaction).
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let list = run(&bin, dir, &["recordings", "list"]);
        let line = list.lines().nth(1).unwrap_or("").to_string();
        if line.contains("complete") {
            assert!(line.contains("Caller 1"), "{list}");
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no complete recording in 20 s:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    run(
        &bin,
        dir,
        &["recordings", "export", &id, "--out", "call.wav"],
    );

    let wav = read_wav(&dir.join("call.wav"));
    assert_eq!((wav.channels, wav.rate), (2, 8000));
    for (ch, hz) in [(0usize, 440.0), (1, 660.0)] {
        let expected = tone(hz, 24_000);
        common::expect_bursts(&format!("channel {ch}"), &wav.data[ch], &[&expected]);
    }
}
