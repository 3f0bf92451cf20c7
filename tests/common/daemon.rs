//! Start/stop the branchrec daemon and run its CLI, for integration tests.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
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

/// Ports handed out by this module in this test process (see `claim` in common/mod.rs:
/// a port checked free here is bound later by the daemon, so two test threads must never
/// be given the same one).
fn claim(ports: std::ops::RangeInclusive<u16>) -> bool {
    static CLAIMED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut g = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let set = g.get_or_insert_with(Default::default);
    if ports.clone().any(|p| set.contains(&p)) {
        return false;
    }
    set.extend(ports);
    true
}

/// A SIP port and a 100-port RTP range, free now and never handed out before by this
/// process, in 30000..32700: below the kernel's ephemeral range (32768..) where the
/// clients' `bind(0)` sockets land, and apart from common/mod.rs's ranges (20000..30000,
/// 40000..60000), so tests using both modules cannot collide either. (Before: the SIP port
/// came from `bind(0)` and was released before the daemon bound it, and the RTP base was
/// derived from the pid, the same for every test of a binary.)
fn free_ports() -> (u16, u16) {
    for _ in 0..400 {
        let base = 30000 + (rand::random::<u16>() % 26) * 100;
        let sip = base + 99;
        let free = (base..=sip).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free && claim(base..=sip) {
            return (sip, base);
        }
    }
    panic!("no free port block in 30000..32700 after 400 tries");
}

impl Install {
    /// Write a config into `dir` with the given `[keys]` section body.
    pub fn new(dir: &Path, keys: &str) -> Install {
        // SIP on the last port of the block, RTP on the 99 before it (rtp_ports base..base+98).
        let (port, base) = free_ports();
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
                base + 98,
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

    /// Start the daemon and wait until it is ready for calls (or has exited).
    pub fn start(&self) -> Daemon {
        let status = self.data.join("keys/daemon-status.json");
        let _ = std::fs::remove_file(&status);
        // The log is appended to across restarts: count the ready lines before this start.
        let ready_before = self.log_text().matches("branchrec ready").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_branchrec"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("TSS2_LOG", "all+none")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Polled every 25 ms: first the key load (the status file), then the `branchrec
        // ready` line, logged once catalogue recovery is done and the SIP socket is bound.
        // (Before: a fixed 400 ms after the key load, which a loaded machine overran: the
        // first INVITE then went to an unbound port.) A daemon that exits (e.g. refusing
        // to start) ends the wait too; the test then sees what it expects of that. 60 s:
        // start-up is well under a second idle.
        let t = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            let ready = self.log_text().matches("branchrec ready").count() > ready_before;
            if (status.exists() && ready) || matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            assert!(
                t.elapsed() < limit,
                "daemon not ready after {limit:?} (status file: {}); log:\n{}",
                status.exists(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
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

    /// Waits until the catalogue holds at least `n` recordings, none still `recording`,
    /// and no signed manifest is pending (no `*.manifest.pending` marker left): closed,
    /// catalogued and signed. Polled every 100 ms, bounded at 60 s (closing takes well
    /// under a second idle; close, catalogue commit and signing run on daemon threads after
    /// the BYE is answered, so a fixed sleep can be overrun on a loaded machine).
    pub fn wait_settled(&self, n: usize) {
        let t = Instant::now();
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&self.cli_ok(&["recordings", "list", "--json"])).unwrap();
            let rows = v.as_array().cloned().unwrap_or_default();
            let pending = files_named(&self.data, ".manifest.pending");
            if rows.len() >= n
                && rows.iter().all(|r| r["state"] != "recording")
                && pending.is_empty()
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "recordings not settled after 60 s: {v}\npending manifests: {pending:?}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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

    /// The exit status if the process has already exited (`None`: still running).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
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
            // A clean stop closes, fsyncs and signs open recordings: sub-second idle; 30 s
            // is the bound for a loaded machine.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("daemon did not stop on SIGTERM within 30 s");
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

/// Files under `dir` whose name ends with `suffix`.
pub fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                hits.push(p);
            }
        }
    }
    hits
}
