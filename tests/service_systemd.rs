//! The daemon as a systemd service, driven the way systemd drives it.
//!
//! * `notify_protocol_and_clean_stop`: `NOTIFY_SOCKET` is a unix datagram socket this test
//!   owns, `WATCHDOG_USEC` is set. `READY=1` arrives only once the SIP port is bound and
//!   answers OPTIONS, the catalogue and keys are in place; `WATCHDOG=1` keeps coming;
//!   `STATUS=` follows a call; SIGTERM during a call gives `STOPPING=1`, a clean exit, and
//!   the call in progress ends `complete`, verifiable (signed manifest) and playable.
//! * `journald_fields`: the daemon's `/run/systemd/journal/socket` is this test's socket
//!   (a private mount namespace made with `unshare`); with `[log] target = "auto"` and
//!   `JOURNAL_STREAM` naming its stderr it logs there in the journal's native protocol,
//!   each line of a call carrying `RECORDING_ID` and `CALL_ID`, no participant URI.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Daemon, Install};
use siprec_client::{invite, Invite};

const SOFTWARE: &str = "provider = \"software\"";

/// Messages received on a notification (or journal) socket, with their arrival time.
struct Listener {
    sock: UnixDatagram,
    got: Vec<(Instant, Vec<u8>)>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Listener {
            sock,
            got: Vec::new(),
        }
    }

    /// Receive until a message satisfies `want` (returned) or `limit` passes.
    fn until(&mut self, limit: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let t = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while t.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = buf[..n].to_vec();
                self.got.push((Instant::now(), m.clone()));
                if want(&m) {
                    return Some(m);
                }
            }
        }
        None
    }

    fn texts(&self) -> Vec<String> {
        self.got
            .iter()
            .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
            .collect()
    }
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

/// Send a SIP OPTIONS over UDP; true when a 200 comes back within `limit`.
fn options_answered(sip: SocketAddr, n: u32, limit: Duration) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:srs@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-probe-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:srs@{sip}>\r\n\
         Call-ID: probe-{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), sip).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        if let Ok(k) = s.recv(&mut buf) {
            if buf[..k].starts_with(b"SIP/2.0 200") {
                return true;
            }
        }
    }
    false
}

fn list(inst: &Install) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn notify_protocol_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    let mut nt = Listener::bind(&dir.path().join("notify.sock"));
    let log = std::fs::File::create(&inst.log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_branchrec"))
        .args(["run", "--config"])
        .arg(&inst.config)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let dm = Daemon::from_child(child);

    // READY=1, and at that moment everything it promises is true.
    // Start-up is well under a second idle; 60 s bounds a loaded machine.
    let ready = nt.until(Duration::from_secs(60), |m| {
        m.split(|b| *b == b'\n').any(|l| l == b"READY=1")
    });
    let ready = ready.unwrap_or_else(|| {
        panic!(
            "no READY=1 within 60 s; got {:?}; log:\n{}",
            nt.texts(),
            inst.log_text()
        )
    });
    let port_taken = UdpSocket::bind(inst.sip).is_err();
    assert!(port_taken, "READY=1 before the SIP port was bound");
    assert!(inst.data.join("catalog.sqlite").exists());
    let keys: serde_json::Value = serde_json::from_slice(
        &std::fs::read(inst.data.join("keys/daemon-status.json")).expect("key status written"),
    )
    .unwrap();
    assert_eq!(keys["ok"], true, "{keys}");
    assert!(
        // The port is bound (checked above), so the answer comes; 15 s for a loaded box.
        options_answered(inst.sip, 1, Duration::from_secs(15)),
        "SIP port does not answer OPTIONS after READY=1"
    );
    assert_eq!(text(&ready), "READY=1\nSTATUS=recording 0 calls");
    let before: Vec<String> = nt.texts();
    assert!(
        before[..before.len() - 1]
            .iter()
            .any(|m| m.starts_with("STATUS=starting")),
        "a start-up STATUS before READY: {before:?}"
    );
    assert!(
        !before.iter().any(|m| m.contains("WATCHDOG=1")),
        "watchdog pings before READY: {before:?}"
    );

    // Pings every WATCHDOG_USEC/2 = 500 ms.
    let t0 = Instant::now();
    let n0 = nt.got.len();
    nt.until(Duration::from_millis(2600), |_| false);
    let pings = nt.got[n0..]
        .iter()
        .filter(|(_, m)| m == b"WATCHDOG=1")
        .count();
    // One ping per 500 ms over the window actually listened (2.6 s, longer if this thread
    // was descheduled), ± 2 for the window's edges and the daemon's timer phase: 3..=7 for
    // the nominal 2.6 s, as before.
    let window_ms = t0.elapsed().as_millis() as usize;
    let (lo, hi) = ((window_ms / 500).saturating_sub(2), window_ms / 500 + 2);
    assert!(
        (lo..=hi).contains(&pings),
        "{pings} WATCHDOG=1 in {window_ms} ms (want one per 500 ms: {lo}..={hi})"
    );

    // A call: STATUS follows it, pings go on.
    let Invite::Up(mut call) = invite(inst.sip, 1) else {
        panic!("call refused; log:\n{}", inst.log_text())
    };
    let call_id = call.call_id().to_string();
    call.stream(1000);
    let n1 = nt.got.len();
    // STATUS is re-sent at each 500 ms ping when it changed; 15 s bounds a loaded box.
    let st = nt.until(Duration::from_secs(15), |m| m == b"STATUS=recording 1 call");
    assert!(st.is_some(), "no STATUS for the call: {:?}", nt.texts());
    call.stream(1000);
    nt.until(Duration::from_millis(600), |_| false);
    assert!(
        nt.got[n1..].iter().any(|(_, m)| m == b"WATCHDOG=1"),
        "no pings during the call"
    );

    // SIGTERM with the call in progress (no BYE).
    let pid = dm.pid();
    let n2 = nt.got.len();
    // STOPPING=1 is sent on SIGTERM, before closing; the exit follows the close (fsync,
    // signing): both sub-second idle, 30 s bounds a loaded machine.
    let stopper = std::thread::spawn(move || dm.terminate(Duration::from_secs(30)));
    let stopping = nt.until(Duration::from_secs(30), |m| m.starts_with(b"STOPPING=1"));
    let status = stopper.join().unwrap();
    let stopping = stopping.unwrap_or_else(|| panic!("no STOPPING=1: {:?}", &nt.texts()[n2..]));
    assert_eq!(
        text(&stopping),
        "STOPPING=1\nSTATUS=stopping: closing 1 recording"
    );
    let status = status.unwrap_or_else(|| {
        panic!(
            "daemon {pid} did not exit within 30 s of SIGTERM:\n{}",
            inst.log_text()
        )
    });
    assert!(status.success(), "exit {status}:\n{}", inst.log_text());
    let log = inst.log_text();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");

    // The call in progress is complete, signed and playable.
    let rows = list(&inst);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["call_id"], call_id.as_str(), "{r}");
    assert_eq!(r["state"], "complete", "{r}");
    let id = r["id"].as_str().unwrap();
    let show: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "show", id, "--json"])).unwrap();
    let file = inst.data.join(show["file_path"].as_str().unwrap());
    let f = file.display().to_string();
    assert!(
        Path::new(&format!("{f}.manifest.json")).exists(),
        "no manifest"
    );
    assert!(
        Path::new(&format!("{f}.manifest.sig")).exists(),
        "no signature"
    );
    assert!(
        !Path::new(&format!("{f}.manifest.pending")).exists(),
        "manifest still pending"
    );
    let v = inst.cli_ok(&["recordings", "verify", id]);
    assert!(v.contains("OK") || v.contains("ok"), "verify: {v}");
    let wav = dir.path().join("call.wav");
    inst.cli_ok(&["recordings", "export", id, "--out", wav.to_str().unwrap()]);
    let b = std::fs::read(&wav).unwrap();
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "two channels");
    // 2 s sent per channel; at 8 kHz × 2 channels × 2 bytes, at least 1.8 s must be there,
    // and the tone (not silence) on both channels.
    let data = &b[44..];
    assert!(
        data.len() >= 8000 * 4 * 18 / 10,
        "{} bytes of audio",
        data.len()
    );
    for ch in 0..2 {
        let loud = data
            .chunks_exact(4)
            .filter(|s| i16::from_le_bytes([s[2 * ch], s[2 * ch + 1]]).unsigned_abs() > 1000)
            .count();
        assert!(loud > 8000, "channel {ch}: only {loud} loud samples");
    }
}

/// Fields of one journal native-protocol datagram (`KEY=value\n`, or `KEY\n` + 64-bit LE
/// length + value + `\n`).
fn journal_fields(m: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < m.len() {
        let Some(end) = m[i..].iter().position(|b| *b == b'\n' || *b == b'=') else {
            break;
        };
        let name = text(&m[i..i + end]);
        i += end;
        if m[i] == b'=' {
            let v_end = m[i + 1..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(m.len() - i - 1);
            out.push((name, text(&m[i + 1..i + 1 + v_end])));
            i += 1 + v_end + 1;
        } else {
            let len = u64::from_le_bytes(m[i + 1..i + 9].try_into().unwrap()) as usize;
            out.push((name, text(&m[i + 9..i + 9 + len])));
            i += 9 + len + 1;
        }
    }
    out
}

fn field<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn journald_fields() {
    assert!(
        rustix_is_root(),
        "this test needs root (a private mount namespace for /run/systemd/journal); CI runs as root"
    );
    let ok = Command::new("unshare")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "`unshare` not found: install util-linux");
    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    // [log] is the last section Install writes.
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg.push_str("target = \"auto\"\n");
    std::fs::write(&inst.config, cfg).unwrap();
    let sock = dir.path().join("journal.sock");
    let mut j = Listener::bind(&sock);
    let log = std::fs::File::create(&inst.log).unwrap();
    let meta = std::os::unix::fs::MetadataExt::dev(&log.metadata().unwrap());
    let ino = std::os::unix::fs::MetadataExt::ino(&log.metadata().unwrap());
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(
            "mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; \
             touch /run/systemd/journal/socket; mount --bind \"$SOCK\" /run/systemd/journal/socket; \
             exec \"$BIN\" run --config \"$CFG\"",
        )
        .env("SOCK", &sock)
        .env("BIN", env!("CARGO_BIN_EXE_branchrec"))
        .env("CFG", &inst.config)
        .env("JOURNAL_STREAM", format!("{meta}:{ino}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let dm = Daemon::from_child(child);
    let msg_is = |m: &[u8], s: &str| {
        journal_fields(m)
            .iter()
            .any(|(k, v)| k == "MESSAGE" && v.contains(s))
    };
    // Start-up: well under a second idle; 60 s bounds a loaded machine.
    let ready = j.until(Duration::from_secs(60), |m| msg_is(m, "branchrec ready"));
    assert!(
        ready.is_some(),
        "no journal entry `branchrec ready`; got {:?}; stderr:\n{}",
        j.texts(),
        inst.log_text()
    );
    let f = journal_fields(&ready.unwrap());
    assert_eq!(field(&f, "SYSLOG_IDENTIFIER"), Some("branchrec"), "{f:?}");
    // tracing-journald's mapping: INFO is NOTICE (5), WARN 4, ERROR 3, DEBUG 6.
    assert_eq!(field(&f, "PRIORITY"), Some("5"), "{f:?}");
    assert!(field(&f, "CODE_FILE").is_some(), "{f:?}");

    let Invite::Up(mut call) = invite(inst.sip, 7) else {
        panic!("call refused; stderr:\n{}", inst.log_text())
    };
    let call_id = call.call_id().to_string();
    call.stream(500);
    assert!(call.bye(), "BYE not answered");
    // The close follows the BYE by milliseconds idle; 30 s bounds a loaded machine.
    let closed = j.until(Duration::from_secs(30), |m| msg_is(m, "recording closed"));
    let closed = closed.unwrap_or_else(|| panic!("no `recording closed`: {:?}", j.texts()));
    let f = journal_fields(&closed);
    assert_eq!(field(&f, "CALL_ID"), Some(call_id.as_str()), "{f:?}");
    let rec_id = field(&f, "RECORDING_ID").expect("RECORDING_ID").to_string();
    assert_eq!(field(&f, "SPAN_NAME"), Some("call"), "{f:?}");
    let started = j
        .got
        .iter()
        .map(|(_, m)| journal_fields(m))
        .find(|f| field(f, "MESSAGE") == Some("recording started"))
        .expect("`recording started` in the journal");
    assert_eq!(field(&started, "RECORDING_ID"), Some(rec_id.as_str()));
    assert_eq!(field(&started, "CALL_ID"), Some(call_id.as_str()));

    let status = dm.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    j.until(Duration::from_millis(300), |_| false);
    // The participants' URIs never reach the journal; nothing went to stderr.
    for t in j.texts() {
        assert!(
            !t.contains("alice7@") && !t.contains("bob7@"),
            "participant URI in the journal: {t}"
        );
    }
    let stderr = inst.log_text();
    assert!(
        !stderr.contains("branchrec ready"),
        "logged to stderr too:\n{stderr}"
    );
    assert_eq!(list(&inst)[0]["id"], rec_id.as_str());
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}
