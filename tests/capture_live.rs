//! Live capture: a network namespace with a veth pair; `tcpreplay` replays a generated
//! capture onto one end while `branchrec run` captures the other. The daemon must record
//! the same calls as `import-pcap` of the same file, with the same audio.
//!
//! Needs root (namespaces, raw sockets) and `tcpreplay` + `ip` (scripts/test-all installs
//! them). Without them the test fails and says why.

mod capture_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capture_common::*;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}

fn need_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
        || std::path::Path::new("/usr/sbin").join(name).is_file()
        || std::path::Path::new("/sbin").join(name).is_file();
    assert!(
        found,
        "`{name}` is not installed: run scripts/test-all (installs tcpreplay, iproute2)"
    );
}

#[test]
fn live_capture_records_what_import_records() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the live capture test needs root (network namespaces and packet sockets); CI runs it as root"
    );
    need_tool("ip");
    need_tool("tcpreplay");

    let tmp = tempfile::tempdir().unwrap();
    let mut scs = scenarios();
    for s in &mut scs {
        s.packets = 50; // 1 s of audio per call: the replay runs in real time
    }
    let pcap = tmp.path().join("live.pcap");
    let sents = write_capture(&pcap, &scs);

    let pid = std::process::id();
    let ns = Netns(format!("brcap{pid}"));
    let (va, vb) = (
        format!("bca{}", pid % 100_000),
        format!("bcb{}", pid % 100_000),
    );
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&[
        "ip", "-n", &ns.0, "link", "add", &va, "mtu", "9000", "type", "veth", "peer", "name", &vb,
        "mtu", "9000",
    ]);
    for l in [&va, &vb, &"lo".to_string()] {
        sh(&["ip", "-n", &ns.0, "link", "set", l, "up"]);
    }

    let live_dir = tmp.path().join("live");
    std::fs::create_dir_all(&live_dir).unwrap();
    let cfg = config(
        &live_dir,
        &format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:25060\"]\n[capture]\ninterfaces = [\"{vb}\"]\nstats_interval_s = 1\n"
        ),
    );
    let mut daemon = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            BIN,
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let stderr = daemon.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx.recv_timeout(Duration::from_millis(200));
        if let Ok(l) = line {
            let ready = l.contains("live capture started");
            log.push(l);
            if ready {
                break;
            }
        }
        if let Ok(Some(st)) = daemon.try_wait() {
            panic!(
                "daemon exited ({st}) before capture started:\n{}",
                log.join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "capture did not start in 20 s:\n{}",
            log.join("\n")
        );
    }
    // Let the reader thread get into its loop before the first frame.
    std::thread::sleep(Duration::from_millis(300));
    let replay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "tcpreplay",
            "-q",
            "-i",
            &va,
            pcap.to_str().unwrap(),
        ])
        .output()
        .expect("tcpreplay");
    assert!(
        replay.status.success(),
        "tcpreplay failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    sh(&["kill", "-TERM", &daemon.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("daemon did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(l) = rx.try_recv() {
        log.push(l);
    }
    assert!(
        status.success(),
        "daemon exit {status}:\n{}",
        log.join("\n")
    );

    // Kernel counters were read and nothing was dropped.
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(live_dir.join("data/capture-stats.json")).unwrap())
            .unwrap();
    let ifs = &stats["interfaces"][0];
    assert_eq!(ifs["interface"], vb.as_str());
    assert!(ifs["received"].as_u64().unwrap() > 500, "{stats}");
    assert_eq!(ifs["dropped"].as_u64(), Some(0), "{stats}");

    // The same file through import-pcap.
    let imp_dir = tmp.path().join("import");
    std::fs::create_dir_all(&imp_dir).unwrap();
    let icfg = config(&imp_dir, "");
    run_ok(&[
        "import-pcap",
        "--config",
        icfg.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]);

    let live = list(&cfg);
    let imported = list(&icfg);
    assert_eq!(
        live.len(),
        scs.len(),
        "live recorded {live:#?}\nlog:\n{}",
        log.join("\n")
    );
    assert_eq!(imported.len(), scs.len());
    for (sc, sent) in scs.iter().zip(&sents) {
        let l = live
            .iter()
            .find(|r| r["call_id"] == sc.call_id.as_str())
            .unwrap_or_else(|| panic!("{} not recorded live", sc.name));
        let i = imported
            .iter()
            .find(|r| r["call_id"] == sc.call_id.as_str())
            .unwrap();
        for k in ["state", "codec", "participants", "channels", "source"] {
            assert_eq!(
                l[k], i[k],
                "{}: {k} differs between live and import",
                sc.name
            );
        }
        let detail = show(&cfg, l["id"].as_str().unwrap());
        assert!(
            detail["src_addr"]
                .as_str()
                .unwrap()
                .starts_with(&format!("if:{vb} ")),
            "{detail}"
        );
        let d = (l["duration_ms"].as_i64().unwrap() - i["duration_ms"].as_i64().unwrap()).abs();
        // Start and end are packet times; tcpreplay's pacing on a loaded CI box can stretch
        // a call by a few tens of ms (each call is ~1.6 s long).
        assert!(d < 400, "{}: durations differ by {d} ms", sc.name);
        if sc.g729 {
            continue;
        }
        let samples = export(&cfg, &live_dir, l["id"].as_str().unwrap());
        for (ch, sent_ch) in sent.iter().enumerate() {
            let n = check_channel(&samples, ch, sent_ch, sc.name);
            assert_eq!(
                n,
                sent_ch.packets.iter().filter(|p| p.2).count(),
                "{}",
                sc.name
            );
        }
    }
}
