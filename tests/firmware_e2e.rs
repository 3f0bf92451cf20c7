//! Acceptance test of the firmware image (issue 7): boots target/image/disk.img (built by
//! image/build.sh, called here so the image holds the current code) with
//! `qemu-system-aarch64 -M virt` (TCG), a real swtpm as the TPM (`tpm-tis-device`) and the
//! image's gpio-sim chip as the board's LEDs and button; records a SIPREC call that SIPp
//! sends from the host through QEMU's user-mode network (port forwards on 127.0.0.1 only);
//! presses the legal-hold button by pulling the simulated line; checks over the serial
//! console (root autologin, marker-delimited commands) the recording, the hold, the audit
//! entry, the LEDs and that the service never restarted; then shuts the guest down, boots
//! it again with the same disk and TPM state and checks that the recording still exports
//! and verifies and the hold survived.
//!
//! Needs: qemu-system-arm (bookworm-backports), swtpm, sip-tester, and what image/build.sh
//! installs (scripts/test-all installs all of it). Set BRANCHREC_IMAGE_PREBUILT=1 to boot
//! the existing target/image without rebuilding it.

mod common;

use common::g711::Codec;
use common::{free_port, private_copy, require_tool, run_sipp, test_audio, write_raw};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RATE: usize = 8000;
/// The RTP ports of image/rootfs/etc/branchrec/config.d/50-qemu-virt.toml, forwarded 1:1.
const RTP_PORTS: std::ops::RangeInclusive<u16> = 40100..=40107;
/// Boot to the console prompt (the issue measured 17-40 s; TCG on a loaded CI box is slower).
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The gpio-sim chip the image creates (board/qemu_aarch64_virt/pins.toml: one bank, lines
/// led-rec, led-sync, led-fault, led-hold, btn-hold at offsets 0-4).
const SIM: &str = "/sys/devices/platform/gpio-sim.*/gpiochip*";
const BUTTON: u32 = 4;

/// The sysfs value of an LED's simulated line (1 = lit; the LEDs are active high).
fn led_path(name: &str) -> String {
    let off = match name {
        "rec" => 0,
        "sync" => 1,
        "fault" => 2,
        "hold" => 3,
        _ => unreachable!("no LED {name}"),
    };
    format!("{SIM}/sim_gpio{off}/value")
}

fn led(name: &str) -> String {
    format!("cat {}", led_path(name))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// image/build.sh's output directory (same rule as the script).
fn image_dir() -> PathBuf {
    if let Ok(d) = std::env::var("IMAGE_OUT") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    target.join("image")
}

/// Builds (or, with the rootfs cached, re-assembles) the image; bounded.
fn build_image() -> PathBuf {
    let out = image_dir();
    if std::env::var_os("BRANCHREC_IMAGE_PREBUILT").is_some() && out.join("disk.img").exists() {
        return out;
    }
    let log =
        std::env::temp_dir().join(format!("branchrec-image-build-{}.log", std::process::id()));
    let f = std::fs::File::create(&log).expect("build log");
    let mut child = Command::new(repo().join("image/build.sh"))
        .stdout(f.try_clone().expect("dup fd"))
        .stderr(f)
        .spawn()
        .expect("running image/build.sh");
    let st = common::wait_bounded(&mut child, Duration::from_secs(40 * 60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        st.is_some_and(|s| s.success()),
        "image/build.sh failed ({st:?}); log {}:\n{tail}",
        log.display()
    );
    out
}

/// The swtpm QEMU talks to (`-tpmdev emulator`), its state kept in `dir` across boots.
struct Tpm {
    child: Child,
    sock: PathBuf,
}

impl Tpm {
    fn start(dir: &Path) -> Tpm {
        std::fs::create_dir_all(dir.join("state")).expect("tpm dir");
        let sock = dir.join("swtpm.sock");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.join("state").display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--log")
            .arg(format!("file={}", dir.join("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting swtpm (install swtpm)");
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "swtpm did not create {sock:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Tpm { child, sock }
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A booted guest: qemu-system-aarch64 with the serial console on its stdin/stdout.
struct Guest {
    qemu: Child,
    stdin: ChildStdin,
    /// Everything the console printed (also appended to `log`).
    out: Arc<Mutex<Vec<u8>>>,
    seq: u32,
    _tpm: Tpm,
}

impl Guest {
    fn boot(img: &Path, disk: &Path, tpm_dir: &Path, sip_port: u16, log: &Path) -> Guest {
        let tpm = Tpm::start(tpm_dir);
        let mut fwd = format!(
            "hostfwd=udp:127.0.0.1:{sip_port}-:5060,hostfwd=tcp:127.0.0.1:{sip_port}-:5060"
        );
        for p in RTP_PORTS {
            fwd.push_str(&format!(",hostfwd=udp:127.0.0.1:{p}-:{p}"));
        }
        let cmdline = std::fs::read_to_string(img.join("cmdline")).expect("image cmdline");
        let mut qemu = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "max", "-smp", "2", "-m", "1024"])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(img.join("vmlinuz"))
            .arg("-initrd")
            .arg(img.join("initrd.img"))
            .args(["-append", cmdline.trim()])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,format=raw,id=disk0",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0"])
            .args(["-netdev", &format!("user,id=net0,{fwd}")])
            .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", tpm.sock.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-tis-device,tpmdev=tpm0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "starting qemu-system-aarch64 (install qemu-system-arm from bookworm-backports)",
            );
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("console log");
        for mut src in [
            Box::new(qemu.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(qemu.stderr.take().expect("piped stderr")),
        ] {
            let out = out.clone();
            let mut logf = logf.try_clone().expect("dup log");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = src.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = logf.write_all(&buf[..n]);
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
        let _ = writeln!(logf, "\n===== boot ({})", disk.display());
        let stdin = qemu.stdin.take().expect("piped stdin");
        let mut g = Guest {
            qemu,
            stdin,
            out,
            seq: 0,
            _tpm: tpm,
        };
        let t = Instant::now();
        g.wait_for("root@branchrec-box", BOOT_LIMIT, 0);
        eprintln!(
            "guest: console login after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // Quiet kernel console, no echo: command output is all that comes back.
        g.write(
            "stty -echo; dmesg -n 1; export BRANCHREC_CONFIG=/etc/branchrec/config.toml PS1='# ' TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= PAGER=cat\n",
        );
        g.sh("true", Duration::from_secs(30));
        g
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap_or_else(|e| e.into_inner()))
            .replace('\r', "")
    }

    /// The last lines of the console, for failure messages.
    fn tail(&self) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    fn write(&mut self, s: &str) {
        self.stdin
            .write_all(s.as_bytes())
            .expect("writing to the console");
        self.stdin.flush().expect("flushing the console");
    }

    /// Waits until `needle` appears after byte `from` of the console output; returns the
    /// offset just past it.
    fn wait_for(&mut self, needle: &str, limit: Duration, from: usize) -> usize {
        let t = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|s| s.find(needle)) {
                return from + i + needle.len();
            }
            if let Ok(Some(st)) = self.qemu.try_wait() {
                panic!(
                    "qemu exited ({st}) waiting for {needle:?}\n--- console\n{}",
                    self.tail()
                );
            }
            assert!(
                t.elapsed() < limit,
                "no {needle:?} on the console within {limit:?}\n--- console\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a shell command in the guest; returns (exit status, output).
    fn sh(&mut self, cmd: &str, limit: Duration) -> (i32, String) {
        self.seq += 1;
        let n = self.seq;
        let from = self.text().len();
        // The typed text never contains the markers literally (printf assembles them).
        self.write(&format!(
            "printf '@@%s%d@@\\n' B {n}; {{ {cmd} ; }} 2>&1; printf '@@%s%d:%d@@\\n' E {n} $?\n"
        ));
        let b = self.wait_for(&format!("@@B{n}@@\n"), limit, from);
        let e_marker = format!("@@E{n}:");
        let e = self.wait_for(&e_marker, limit, b);
        let text = self.text();
        let body = text[b..e - e_marker.len()].to_string();
        let rest = &text[e..];
        let code = rest
            .split("@@")
            .next()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(-1);
        (code, body)
    }

    /// Runs a command that must succeed; returns its output.
    fn ok(&mut self, cmd: &str, limit: Duration) -> String {
        let (code, out) = self.sh(cmd, limit);
        assert_eq!(
            code,
            0,
            "`{cmd}` failed in the guest:\n{out}\n--- console\n{}",
            self.tail()
        );
        out
    }

    fn json(&mut self, cmd: &str) -> Value {
        let out = self.ok(cmd, Duration::from_secs(60));
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("`{cmd}` printed no JSON ({e}):\n{out}"))
    }

    /// Polls `cmd` until its trimmed output equals `want`; bounded.
    fn wait_output(&mut self, cmd: &str, want: &str, limit: Duration) {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < limit {
            last = self.sh(cmd, Duration::from_secs(30)).1.trim().to_string();
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "`{cmd}` printed {last:?}, not {want:?}, within {limit:?}\n--- console\n{}",
            self.tail()
        );
    }

    /// Clean shutdown (the daemon closes its recordings); waits for QEMU to exit.
    fn poweroff(mut self) {
        self.write("systemctl poweroff\n");
        let st = common::wait_bounded(&mut self.qemu, Duration::from_secs(120));
        assert!(
            st.is_some(),
            "guest did not power off\n--- console\n{}",
            self.tail()
        );
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// Waits for the service to be active (Type=notify: READY=1 sent) and checks the platform.
fn wait_service(g: &mut Guest) {
    let t = Instant::now();
    g.wait_output(
        "systemctl is-active branchrec",
        "active",
        Duration::from_secs(240),
    );
    eprintln!(
        "guest: branchrec active after {:.1} s more",
        t.elapsed().as_secs_f64()
    );
}

/// The button's hold exists and covers the recording; the audit chain verifies; the service
/// never restarted (`when`: for the messages).
fn check_hold_and_service(g: &mut Guest, id: &str, when: &str) {
    let holds = g.json("branchrec hold list --json");
    assert!(
        holds
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h["operator"] == "button")),
        "{when}: no hold by the button: {holds}"
    );
    let held = g.json("branchrec recordings list --held --json");
    assert!(
        held.as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == id)),
        "{when}: the recording is not held: {held}"
    );
    g.ok("branchrec audit verify", Duration::from_secs(60));
    let n = g.ok(
        "systemctl show -p NRestarts --value branchrec",
        Duration::from_secs(10),
    );
    assert_eq!(n.trim(), "0", "{when}: the service restarted");
}

#[test]
fn firmware_image_boots_records_holds_and_survives_reboot() {
    let _g = common::serial();
    require_tool("sipp", "sip-tester");
    for (bin, pkg) in [
        (
            "qemu-system-aarch64",
            "qemu-system-arm (from bookworm-backports)",
        ),
        ("swtpm", "swtpm"),
    ] {
        assert!(
            Command::new(bin).arg("--version").output().is_ok(),
            "`{bin}` not found: install {pkg} (scripts/test-all does)"
        );
    }
    for p in RTP_PORTS {
        assert!(
            UdpSocket::bind(("127.0.0.1", p)).is_ok(),
            "127.0.0.1:{p}/udp is taken: the image forwards RTP ports {RTP_PORTS:?} one to one"
        );
    }
    let t_all = Instant::now();
    let img = build_image();
    eprintln!("image ready after {:.1} s", t_all.elapsed().as_secs_f64());

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let disk = dir.join("disk.img");
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(img.join("disk.img"))
        .arg(&disk)
        .status()
        .expect("cp");
    assert!(st.success(), "copying the disk image");
    let console = dir.join("console.log");
    let sip_port = free_port();

    // ---- first boot
    let t = Instant::now();
    let mut g = Guest::boot(&img, &disk, &dir.join("tpm"), sip_port, &console);
    wait_service(&mut g);
    eprintln!("boot to READY: {:.1} s", t.elapsed().as_secs_f64());
    let mods = g.ok("lsmod", Duration::from_secs(30));
    assert!(
        mods.contains("tpm_tis") && mods.contains("gpio_sim"),
        "modules not loaded:\n{mods}"
    );
    g.ok("test -c /dev/tpmrm0", Duration::from_secs(10));
    let keys = g.ok("branchrec keys status", Duration::from_secs(60));
    assert!(
        keys.to_lowercase().contains("tpm"),
        "key custody is not the TPM:\n{keys}"
    );
    let mounts = g.ok(
        "findmnt -n -o SOURCE,FSTYPE /var/lib/branchrec",
        Duration::from_secs(10),
    );
    assert!(
        mounts.contains("ext4"),
        "data partition not mounted: {mounts}"
    );
    assert_eq!(
        g.ok(&led("rec"), Duration::from_secs(10)).trim(),
        "0",
        "REC lit before any call"
    );

    // ---- a SIPREC call from the host, with RTP (4 s and 3 s of PCMU)
    let a = test_audio(71, 4 * RATE, Codec::Pcmu);
    let b = test_audio(72, 3 * RATE, Codec::Pcmu);
    write_raw(&dir.join("a.raw"), &a);
    write_raw(&dir.join("b.raw"), &b);
    let loadgen = private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "rtp");
    let sipp_dir = dir.to_path_buf();
    let sipp = std::thread::spawn(move || {
        let keys = [
            ("loadgen", loadgen.display().to_string()),
            ("audio_a", sipp_dir.join("a.raw").display().to_string()),
            ("audio_b", sipp_dir.join("b.raw").display().to_string()),
            ("media_ms", "6000".to_string()),
        ];
        run_sipp(
            "oracle_acme_basic.xml",
            sip_port,
            &keys,
            &sipp_dir,
            Duration::from_secs(90),
        )
    });
    // REC lights while the call is being recorded (read back from the simulated line).
    g.wait_output(&led("rec"), "1", Duration::from_secs(60));
    let run = sipp.join().expect("sipp thread");
    assert_eq!(
        run.code,
        Some(0),
        "SIPp call into the guest failed\n{}\n--- console\n{}",
        run.diagnostics,
        g.tail()
    );
    g.wait_output(&led("rec"), "0", Duration::from_secs(30));

    let t = Instant::now();
    let rec = loop {
        let list = g.json("branchrec recordings list --json");
        let arr = list.as_array().cloned().unwrap_or_default();
        assert_eq!(arr.len(), 1, "expected one recording in the guest: {list}");
        if arr[0]["state"] == "complete" || t.elapsed() > Duration::from_secs(30) {
            break arr[0].clone();
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(rec["state"], "complete", "recording: {rec}");
    let id = rec["id"].as_str().expect("recording id").to_string();
    let detail = g.json(&format!("branchrec recordings show {id} --json"));
    for (ch, sent) in [(0, 4 * RATE / 160), (1, 3 * RATE / 160)] {
        let s = common::channel_stats(&detail, ch);
        assert_eq!(
            s["received"], sent,
            "channel {ch} received in the guest: {s}"
        );
        assert_eq!(s["lost"], 0, "channel {ch}: {s}");
    }

    // ---- the legal-hold button: pulled low (pressed) for 3 s > long_press_ms (2 s)
    g.ok(
        &format!("P=$(echo {SIM}/sim_gpio{BUTTON}/pull); echo pull-down > $P; sleep 3; echo pull-up > $P"),
        Duration::from_secs(60),
    );
    // HOLD flashes (4 Hz) while the hold is stored, then is steady for hold_led_s (60 s).
    g.wait_output(&led("hold"), "1", Duration::from_secs(20));
    let samples = g.ok(
        &format!(
            "for i in 1 2 3 4 5 6 7 8; do cat {}; sleep 0.25; done",
            led_path("hold")
        ),
        Duration::from_secs(30),
    );
    assert!(
        samples.split_whitespace().all(|v| v == "1"),
        "HOLD is not steady once the hold is durable: {samples:?}"
    );
    assert_eq!(
        g.ok(&led("fault"), Duration::from_secs(10)).trim(),
        "0",
        "FAULT lit with a good TPM"
    );
    assert_eq!(
        g.ok(&led("rec"), Duration::from_secs(10)).trim(),
        "0",
        "REC lit with no call"
    );
    let holds = g.json("branchrec hold list --json");
    let button: Vec<&Value> = holds
        .as_array()
        .map(|a| a.iter().filter(|h| h["operator"] == "button").collect())
        .unwrap_or_default();
    assert_eq!(button.len(), 1, "one hold by the button: {holds}");
    assert_eq!(
        button[0]["recordings"], 1,
        "the button's hold covers the call: {holds}"
    );
    let audit = g.json("branchrec audit show --json");
    assert!(
        audit.as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["action"] == "hold.add" && e.to_string().contains("button"))),
        "no hold.add audit entry by the button: {audit}"
    );
    check_hold_and_service(&mut g, &id, "after the button");

    // ---- clean shutdown, boot again with the same disk and TPM state
    g.poweroff();
    let t = Instant::now();
    let mut g = Guest::boot(&img, &disk, &dir.join("tpm"), sip_port, &console);
    wait_service(&mut g);
    eprintln!("reboot to READY: {:.1} s", t.elapsed().as_secs_f64());
    let list = g.json("branchrec recordings list --json");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "after reboot: {list}"
    );
    assert_eq!(list[0]["id"], id.as_str(), "after reboot: {list}");
    g.ok(
        &format!("branchrec recordings verify {id}"),
        Duration::from_secs(60),
    );
    g.ok(
        &format!("branchrec recordings export {id} --out /tmp/r.wav && test -s /tmp/r.wav"),
        Duration::from_secs(60),
    );
    check_hold_and_service(&mut g, &id, "after the reboot");
    g.poweroff();
    eprintln!("total: {:.1} s", t_all.elapsed().as_secs_f64());
}
