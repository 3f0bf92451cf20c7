//! Issue #16 defect 3 (memory runaway): recordings open, real RTP on every stream, and
//! `recordings list` polled every 0.5 s (each call writes an audit row). The daemon's
//! memory and the catalogue's WAL stay bounded while the poll runs, and a SIGTERM with the
//! recordings still open closes every one of them within the daemon's 10 s limit.
//!
//! A correctness check under a small load (a debug build on a shared machine), not a
//! timing benchmark: the bounds are generous. What the runaway itself was (gap events held
//! per recording until its end) is unit-tested in `app::sink`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{output_bounded, private_copy, serial, Daemon};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const CALLS: usize = 30;

#[test]
fn memory_and_wal_stay_bounded_under_a_list_poll_and_shutdown_closes_everything() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut d = Daemon::start_with_sections(dir, "", "rtp_timeout_s = 120\n", "");
    let loadgen = private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "bench");
    let pid = d.pid();
    // Media for longer than the test polls: the recordings are still open at SIGTERM.
    let lg = Kill(
        Command::new(&loadgen)
            .args(["bench", "--target"])
            .arg(format!("127.0.0.1:{}", d.sip_port))
            .args(["--calls", &CALLS.to_string(), "--duration-s", "90"])
            .args(["--ramp-s", "3", "--deadline-s", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting branchrec-loadgen"),
    );
    // Wait until every call is recording.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = d.log_text().matches("recording started").count();
        if n >= CALLS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {CALLS} calls started:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let wal = d
        .config
        .parent()
        .unwrap()
        .join("data")
        .join("catalog.sqlite-wal");
    // The poll: 40 × `recordings list` every 0.5 s (20 s).
    let rss_start = rss_kb(pid);
    let (mut rss_max, mut wal_max) = (rss_start, 0u64);
    for i in 0..40 {
        let t0 = Instant::now();
        let out = output_bounded(
            Command::new(&d.bin)
                .args(["recordings", "list", "--config"])
                .arg(&d.config),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("poll {i}: recordings list hung"));
        assert!(
            out.status.success(),
            "poll {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rss_max = rss_max.max(rss_kb(pid));
        wal_max = wal_max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        if let Some(rest) = Duration::from_millis(500).checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    // Generous: 30 calls of 20 s of two-stream G.711 are ~40 MB of PCM; a retained
    // per-call buffer or an unbounded queue shows well above this.
    assert!(
        rss_max.saturating_sub(rss_start) < 48 * 1024,
        "daemon RSS grew from {rss_start} kB to {rss_max} kB under the poll"
    );
    assert!(
        wal_max <= 64 * 1024 * 1024,
        "catalogue WAL reached {wal_max} bytes"
    );
    // SIGTERM with every recording open: all close within the daemon's limit.
    let t0 = Instant::now();
    d.stop();
    let took = t0.elapsed();
    let log = d.log_text();
    assert!(
        !log.contains("did not close within 10 s"),
        "recordings left open at shutdown ({took:?}):\n{log}"
    );
    assert!(
        !log.contains("catalogue writes not finished"),
        "catalogue writes unfinished at shutdown:\n{log}"
    );
    drop(lg);
    let list = d.recordings_json(&["list", "--json"]);
    let rows = list.as_array().expect("a JSON array");
    assert!(rows.len() >= CALLS, "{} recordings listed", rows.len());
    let open: Vec<_> = rows
        .iter()
        .filter(|r| r["state"].as_str() == Some("recording"))
        .collect();
    assert!(open.is_empty(), "still open after shutdown: {open:?}");
    eprintln!(
        "poll_load: RSS {rss_start} → max {rss_max} kB, WAL max {wal_max} B, shutdown {took:?}"
    );
}
