//! Issue #19, "timestamp tokens": a real TSA (`openssl ts -reply`) behind a tiny HTTP
//! responder on 127.0.0.1. The daemon's manifests are queued while the TSA is down,
//! stamped once it answers, the token stored beside the manifest, put into the
//! evidence bundle, and `openssl ts -verify` accepts it (and refuses other data).

mod common;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, require_tool, serial, Daemon};
use siprec_client::{invite, Invite};

fn sh(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A TSA: CA, TSA certificate (extendedKeyUsage critical timeStamping), `ts` config.
fn make_tsa(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        "[tsa_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = critical, timeStamping\n",
    )
    .unwrap();
    sh(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test TSA CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    sh(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.csr",
            "-subj",
            "/CN=Test TSA",
        ],
    );
    sh(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tsa.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "tsa_ext",
        ],
    );
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    let d = dir.display();
    let cnf = dir.join("ts.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = {d}\nserial = {d}/serial\ncrypto_device = builtin\n\
             signer_cert = {d}/tsa.pem\nsigner_key = {d}/tsa.key\nsigner_digest = sha256\n\
             default_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\nordering = no\n\
             tsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"
        ),
    )
    .unwrap();
    cnf
}

/// Serve RFC 3161 over HTTP on `port` until `stop` (bounded: 100 requests, 5 min):
/// each POST body is a query handed to `openssl ts -reply`.
fn serve_tsa(port: u16, dir: PathBuf, cnf: PathBuf, stop: Arc<AtomicBool>, served: Arc<AtomicU32>) {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind TSA");
    l.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(300);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until && n < 100 {
        let Ok((s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len.min(64 * 1024)];
        if r.read_exact(&mut body).is_err() {
            continue;
        }
        let q = dir.join(format!("q{n}.tsq"));
        let a = dir.join(format!("r{n}.tsr"));
        std::fs::write(&q, &body).unwrap();
        let ok = Command::new("openssl")
            .args(["ts", "-reply", "-config"])
            .arg(&cnf)
            .arg("-queryfile")
            .arg(&q)
            .arg("-out")
            .arg(&a)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let mut s = s;
        if ok {
            let reply = std::fs::read(&a).unwrap();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
            let _ = s.write_all(&reply);
            served.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = write!(s, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    }
}

#[test]
fn manifests_get_rfc3161_tokens_that_openssl_verifies() {
    require_tool("openssl", "openssl");
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let tsa_dir = tmp.path().join("tsa");
    let cnf = make_tsa(&tsa_dir);
    let tsa_port = free_port();
    let d = Daemon::start_with(
        tmp.path(),
        &format!(
            "[uplink]\nenabled = false\n[time]\ntsa_url = \"http://127.0.0.1:{tsa_port}/tsr\"\n"
        ),
    );
    // The TSA is down: the manifest is signed and queued.
    match invite(SocketAddr::from(([127, 0, 0, 1], d.sip_port)), 1) {
        Invite::Up(mut c) => {
            c.stream(1000);
            assert!(c.bye());
        }
        Invite::Rejected(code, m) => panic!("{code} {m}"),
    }
    let rec = common::the_recording(&d);
    let id = rec["id"].as_str().unwrap().to_string();
    let show = d.recordings_json(&["show", &id, "--json"]);
    let brec = tmp
        .path()
        .join("data")
        .join(show["file_path"].as_str().unwrap());
    let manifest = PathBuf::from(format!("{}.manifest.json", brec.display()));
    let token = PathBuf::from(format!("{}.tsr", manifest.display()));
    let pending = PathBuf::from(format!("{}.tsr-pending", manifest.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !manifest.exists() {
        assert!(Instant::now() < deadline, "no manifest\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        pending.exists(),
        "queued while the TSA is down\n{}",
        d.log_text()
    );
    assert!(!token.exists());
    assert!(
        d.log_text().contains("time stamp not obtained: queued"),
        "{}",
        d.log_text()
    );

    // The TSA comes up: the token arrives (retry back-off 2 s, 4 s, …).
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU32::new(0));
    let th = {
        let (dir, cnf, stop, served) = (tsa_dir.clone(), cnf.clone(), stop.clone(), served.clone());
        std::thread::spawn(move || serve_tsa(tsa_port, dir, cnf, stop, served))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // The token is written before the marker goes (a crash in between stamps again).
    while !token.exists() || pending.exists() {
        assert!(Instant::now() < deadline, "no token\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served.load(Ordering::Relaxed), 1);
    stop.store(true, Ordering::Relaxed);
    th.join().unwrap();

    // The evidence bundle carries it, and openssl verifies it against the manifest.
    let bundle = tmp.path().join("bundle");
    d.recordings(&["export", &id, "--evidence", bundle.to_str().unwrap()]);
    assert!(
        bundle.join("manifest.tsr").exists(),
        "bundle: {:?}",
        std::fs::read_dir(&bundle).unwrap().collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read(bundle.join("manifest.tsr")).unwrap(),
        std::fs::read(&token).unwrap()
    );
    let readme = std::fs::read_to_string(bundle.join("README.txt")).unwrap();
    assert!(readme.contains("openssl ts -verify"), "{readme}");
    let verify = |data: &Path| {
        Command::new("openssl")
            .args(["ts", "-verify", "-data"])
            .arg(data)
            .arg("-in")
            .arg(bundle.join("manifest.tsr"))
            .arg("-CAfile")
            .arg(tsa_dir.join("ca.pem"))
            .arg("-untrusted")
            .arg(tsa_dir.join("tsa.pem"))
            .output()
            .unwrap()
    };
    let o = verify(&bundle.join("manifest.json"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("Verification: OK"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Not for other bytes.
    let other = tmp.path().join("other.json");
    let mut m = std::fs::read(bundle.join("manifest.json")).unwrap();
    m.push(b' ');
    std::fs::write(&other, m).unwrap();
    let o = verify(&other);
    assert!(!o.status.success(), "a token verified for changed data");
}
