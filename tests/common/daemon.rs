//! Start/stop the branchrec daemon and run its CLI, for integration tests.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A test installation: config file and data directory.
pub struct Install {
    /// The config file.
    pub config: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// SIP UDP address.
    pub sip: SocketAddr,
    /// Daemon log.
    pub log: PathBuf,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Install {
    /// Write a config into `dir` with the given `[keys]` section body.
    pub fn new(dir: &Path, keys: &str) -> Install {
        let port = free_udp_port();
        // An RTP range unlikely to collide with parallel tests.
        let base = 20000 + (std::process::id() % 400) as u16 * 100 + (port % 50);
        let data = dir.join("data");
        let config = dir.join("branchrec.toml");
        Install::write(&config, &data, port, base, keys);
        Install {
            config,
            data,
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("daemon.log"),
        }
    }

    fn write(config: &Path, data: &Path, port: u16, base: u16, keys: &str) {
        std::fs::write(
            config,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:{port}\"]\n\n[media]\nrtp_ports = \"{base}-{}\"\nplayout_delay_ms = 100\n\n\
                 [storage]\ndata_dir = \"{}\"\nflush_interval_ms = 500\nmin_free_mb = 1\n\n[keys]\n{keys}\n\n[log]\nlevel = \"info\"\n",
                base + 99,
                data.display()
            ),
        )
        .unwrap();
    }

    /// Rewrite the `[keys]` section (same ports and data dir).
    pub fn set_keys(&self, keys: &str) {
        let s = std::fs::read_to_string(&self.config).unwrap();
        let (head, _) = s.split_once("[keys]\n").unwrap();
        std::fs::write(
            &self.config,
            format!("{head}[keys]\n{keys}\n\n[log]\nlevel = \"info\"\n"),
        )
        .unwrap();
    }

    /// Start the daemon and wait until it has loaded its keys (or failed to).
    pub fn start(&self) -> Daemon {
        let status = self.data.join("keys/daemon-status.json");
        let _ = std::fs::remove_file(&status);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_branchrec"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("TSS2_LOG", "all+none")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !status.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        // Catalogue recovery and socket binding follow the key load.
        std::thread::sleep(Duration::from_millis(400));
        Daemon { child: Some(child) }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `branchrec ARGS --config …`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_branchrec"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap();
        out
    }

    /// Run the CLI and require success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "branchrec {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Recording ids in the catalogue.
    pub fn recording_ids(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["recordings", "list", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A running daemon; SIGKILLed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Guard a daemon process the test started itself (e.g. with extra environment).
    pub fn from_child(child: Child) -> Daemon {
        Daemon { child: Some(child) }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then wait at most `limit` for the exit status (`None`: killed after it).
    pub fn terminate(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Graceful stop (SIGTERM), bounded wait.
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("daemon did not stop on SIGTERM within 10 s");
        }
    }

    /// SIGKILL (a crash).
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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

/// Search every file under `dir` for `needle`; returns the files that contain it.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}
