//! systemd integration: `sd_notify(3)` readiness, status, stopping and watchdog pings.
//!
//! The protocol is a few text lines in a datagram to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); no libsystemd.
//! [`Notifier`] is the thin IO part; [`status_line`] and [`Watchdog`] are plain logic.
//!
//! Liveness: the SIP loop sends `WATCHDOG=1` from its own `select!`, so a wedged loop stops
//! pinging. Before each ping it checks that the catalogue thread answered the probe
//! (a queued barrier) sent at the previous ping: a stuck catalogue writer (a hung disk)
//! stops the pings too, and systemd restarts the daemon.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends notifications to the service manager, if there is one.
pub struct Notifier {
    sock: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (systemd.exec(5)). Without
    /// `NOTIFY_SOCKET` every call is a no-op.
    pub fn from_env() -> Notifier {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let b = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec();
            let target = match b.first() {
                Some(b'@') => Target::Abstract(b.get(1..).unwrap_or_default().to_vec()),
                Some(b'/') => Target::Path(std::path::PathBuf::from(v)),
                _ => {
                    tracing::warn!("NOTIFY_SOCKET is neither a path nor @abstract: ignored");
                    return None;
                }
            };
            match UnixDatagram::unbound() {
                Ok(s) => Some((s, target)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the notification socket");
                    None
                }
            }
        });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier { sock, watchdog }
    }

    /// A notifier that sends nothing (offline tools, tests).
    pub fn disabled() -> Notifier {
        Notifier {
            sock: None,
            watchdog: None,
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// How often to send `WATCHDOG=1` (half the manager's timeout), if it wants pings.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.sock.as_ref().and(self.watchdog)
    }

    /// Send `state` (newline-separated `KEY=value` lines). Failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((s, target)) = &self.sock else {
            return;
        };
        let res = match target {
            Target::Path(p) => s.send_to(state.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| s.send_to_addr(state.as_bytes(), &a))
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn ping(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// A status value must stay on one line (a newline would start another assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Ping interval from `WATCHDOG_USEC`/`WATCHDOG_PID`: half the timeout, `None` when the
/// manager wants no pings or wants them from another process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(10)))
}

/// What the status line is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Calls being recorded now.
    pub calls: usize,
    /// Recordings waiting for upload (`None`: uplink off or not reported yet).
    pub uploads_pending: Option<u64>,
    /// Why the keys are unavailable.
    pub keys_error: Option<String>,
    /// New calls refused because the data disk is full of protected recordings.
    pub storage_refusing: bool,
}

/// The `STATUS=` text `systemctl status` shows: what the box is doing, or first and in
/// capitals why it cannot record.
pub fn status_line(s: &Snapshot) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &s.keys_error {
        parts.push(format!("CANNOT RECORD: recording keys unavailable ({e})"));
    }
    if s.storage_refusing {
        parts.push("CANNOT RECORD: data disk full of protected recordings".to_string());
    }
    parts.push(format!(
        "recording {} call{}",
        s.calls,
        if s.calls == 1 { "" } else { "s" }
    ));
    if let Some(p) = s.uploads_pending {
        parts.push(format!(
            "{p} upload{} pending",
            if p == 1 { "" } else { "s" }
        ));
    }
    parts.join(", ")
}

/// State of the liveness probe sent to the catalogue thread at the previous tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// None sent yet.
    None,
    /// Answered.
    Answered,
    /// Still queued or being processed.
    Pending,
    /// The catalogue thread is gone.
    Gone,
}

/// What to do at a watchdog tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickAction {
    /// Send `WATCHDOG=1`.
    pub ping: bool,
    /// Send a new probe (the previous one is answered or there was none).
    pub new_probe: bool,
}

/// Decides each tick whether the daemon is alive enough to ping.
#[derive(Debug, Default)]
pub struct Watchdog {
    missed: u32,
}

impl Watchdog {
    /// One tick of the SIP loop's watchdog timer, given the previous probe's state. The
    /// loop itself is evidently turning (it runs this); the catalogue thread must have
    /// answered the last probe. A probe still pending skips the ping: two skipped pings
    /// exceed the manager's timeout and systemd restarts the daemon.
    pub fn tick(&mut self, probe: Probe) -> TickAction {
        match probe {
            Probe::None | Probe::Answered => {
                self.missed = 0;
                TickAction {
                    ping: true,
                    new_probe: true,
                }
            }
            Probe::Pending => {
                self.missed += 1;
                if self.missed == 1 {
                    tracing::warn!("catalogue thread has not answered for a watchdog period");
                } else {
                    tracing::error!(
                        periods = self.missed,
                        "catalogue thread stuck: not pinging the watchdog"
                    );
                }
                TickAction {
                    ping: false,
                    new_probe: false,
                }
            }
            Probe::Gone => {
                tracing::error!("catalogue thread is gone: not pinging the watchdog");
                TickAction {
                    ping: false,
                    new_probe: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_pid_only() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
    }

    #[test]
    fn status_lines() {
        let mut s = Snapshot::default();
        assert_eq!(status_line(&s), "recording 0 calls");
        s.calls = 3;
        s.uploads_pending = Some(12);
        assert_eq!(status_line(&s), "recording 3 calls, 12 uploads pending");
        s.calls = 1;
        s.uploads_pending = Some(1);
        assert_eq!(status_line(&s), "recording 1 call, 1 upload pending");
        s.keys_error = Some("TPM: PCR policy check failed".into());
        s.storage_refusing = true;
        assert_eq!(
            status_line(&s),
            "CANNOT RECORD: recording keys unavailable (TPM: PCR policy check failed), \
             CANNOT RECORD: data disk full of protected recordings, recording 1 call, 1 upload pending"
        );
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }

    #[test]
    fn watchdog_pings_only_while_the_catalogue_answers() {
        let mut w = Watchdog::default();
        let go = TickAction {
            ping: true,
            new_probe: true,
        };
        let hold = TickAction {
            ping: false,
            new_probe: false,
        };
        assert_eq!(w.tick(Probe::None), go);
        assert_eq!(w.tick(Probe::Answered), go);
        assert_eq!(w.tick(Probe::Pending), hold);
        assert_eq!(w.tick(Probe::Pending), hold);
        // It caught up (a slow fsync): pinging again.
        assert_eq!(w.tick(Probe::Answered), go);
        assert_eq!(w.tick(Probe::Gone), hold);
        assert_eq!(w.tick(Probe::Gone), hold);
    }

    #[test]
    fn notifies_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&p).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier {
            sock: Some((UnixDatagram::unbound().unwrap(), Target::Path(p))),
            watchdog: Some(Duration::from_secs(1)),
        };
        n.ready("recording 0 calls\nx");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=recording 0 calls x");
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(1)));
        assert_eq!(Notifier::disabled().watchdog_every(), None);
    }
}
