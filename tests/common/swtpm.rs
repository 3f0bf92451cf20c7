//! A real `swtpm` (TPM 2.0 simulator) in socket mode on 127.0.0.1, started per test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm; killed on drop.
pub struct Swtpm {
    child: Child,
    /// Command port (TCTI `swtpm:host=127.0.0.1,port=P`); control port is P+1.
    pub port: u16,
    /// State directory.
    pub state_dir: PathBuf,
}

/// A port pair free now (P, P+1), never handed out before by this process: the ports are
/// released here and bound later by swtpm, so two test threads must not both get them.
fn free_port_pair() -> u16 {
    static CLAIMED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = a.local_addr().unwrap().port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            let mut c = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
            if c.iter().any(|&q| q.abs_diff(p) <= 1) {
                continue;
            }
            c.push(p);
            return p;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

impl Swtpm {
    /// Start swtpm with its state in `state_dir` (created; reused if it exists, which
    /// keeps the TPM's persistent objects across a "reboot").
    pub fn start(state_dir: &Path) -> Swtpm {
        if Command::new("swtpm").arg("--version").output().is_err() {
            panic!("swtpm not found: install the Debian packages swtpm and swtpm-tools (scripts/test-all)");
        }
        std::fs::create_dir_all(state_dir).unwrap();
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--tpmstate", &format!("dir={}", state_dir.display())])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting swtpm");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            // Polled every 20 ms; swtpm listens within milliseconds idle, 30 s bounds a
            // loaded machine.
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "swtpm did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Swtpm {
            child,
            port,
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The TCTI string for branchrec's `[keys] tcti`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Extend a PCR with tpm2-tools (simulates a changed boot measurement).
    pub fn pcr_extend(&self, pcr: u8) {
        let out = Command::new("tpm2_pcrextend")
            .env("TPM2TOOLS_TCTI", self.tcti())
            .arg(format!(
                "{pcr}:sha256=0000000000000000000000000000000000000000000000000000000000000001"
            ))
            .output()
            .expect("tpm2_pcrextend not found: install tpm2-tools (scripts/test-all)");
        assert!(
            out.status.success(),
            "tpm2_pcrextend failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop (like a power-off; state stays in `state_dir`).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
