//! Issue #15 acceptance, end to end in headless Chromium (Debian `chromium`, driven by
//! Playwright from the npm registry: tests/web/console.spec.js). Real parts: PostgreSQL 15,
//! a SoftHSM2 token holding the compliance key, moto (TLS) as the archive, two box daemons
//! (sites london and paris) recording SIPREC G.711 calls with a known tone on both legs,
//! the central indexer, and `branchrec-central serve` over HTTPS.
//!
//! The browser signs in with password + TOTP, searches by participant, opens the call,
//! sees two waveform lanes, plays it (the audio element's time advances and Web Audio sees
//! non-silent samples on both channels), downloads the WAV (compared here bit for bit
//! with the box's own export), and checks the refusals (a supervisor and another site's
//! recording, page and API; an auditor cannot play; IT sees no recordings), the audit page
//! (the actions are listed and the chain verifies), the fleet page, and OWASP basics
//! (CSRF token required, cookie flags, CSP, login lockout). The access log is then
//! scanned for personal data. Screenshots go to target/web-artifacts/.

mod common;
#[path = "common/hsm.rs"]
mod hsm;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{expect_bursts, g711, output_bounded, read_wav, Daemon};
use hsm::{generate_compliance_key, Hsm, KEY_LABEL, PIN, TOKEN};
use s3::{s3check, Pki};
use serde_json::{json, Value};
use siprec_client::{invite_parties, Invite, TONE_ULAW};

const BUCKET: &str = "archive";
/// 20 ms packets per call (3 s: long enough to watch the player move).
const PACKETS: u32 = 150;
const PASSWORD: &str = "correct horse battery staple";

const ALICE: (&str, &str) = ("tel:+442079460001", "Alice Ashworth");
const BOB: (&str, &str) = ("sip:+441632960002@branch.example", "Bob Brennan");
const CAROL: (&str, &str) = ("tel:+33142000001", "Carol Carter");
const DAN: (&str, &str) = ("sip:+33142000002@paris.example", "Dan Dawson");
const HANA: (&str, &str) = ("tel:+441130000001", "Hana Hill");
const IAN: (&str, &str) = ("sip:+441130000002@leeds.example", "Ian Irwin");

fn central(hsm: &Hsm, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_branchrec-central"));
    c.args(args)
        .env("BRANCHREC_CENTRAL_CONFIG", cfg)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("BRANCHREC_PKCS11_PIN", PIN);
    for (k, v) in env {
        c.env(k, v);
    }
    output_bounded(&mut c, Duration::from_secs(180)).expect("branchrec-central hung")
}

fn central_ok(hsm: &Hsm, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = central(hsm, cfg, args, env);
    assert!(
        o.status.success(),
        "branchrec-central {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status_json(d: &Daemon) -> Value {
    let out = output_bounded(
        Command::new(&d.bin)
            .args(["status", "--json", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("status hung");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// One call with the tone on both legs, uploaded (when `upload`); returns the recording
/// id.
fn record_call(d: &Daemon, n: u32, a: (&str, &str), b: (&str, &str), upload: bool) -> String {
    let packets = if upload { PACKETS } else { 1000 };
    let srs = SocketAddr::from(([127, 0, 0, 1], d.sip_port));
    let mut call = match invite_parties(srs, n, a, b) {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
    };
    call.stream(u64::from(packets) * 20);
    std::thread::sleep(Duration::from_millis(200));
    assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    // A 3 s recording (~100 kB) uploads in about a second idle; 180 s bounds moto with
    // both cores busy. Polled every 500 ms.
    let deadline = Instant::now() + Duration::from_secs(180);
    while upload && Instant::now() < deadline + Duration::from_secs(1) {
        let s = status_json(d);
        if s["uploaded"].as_u64() == Some(1) && s["pending"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not uploaded: {s}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = d.recordings_json(&["list", "--json"]);
    list[0]["id"].as_str().unwrap().to_string()
}

/// The box's manifest-signing public key (custody state in `data`) as SPKI PEM.
fn box_key_pem(data: &Path) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let st: Value =
        serde_json::from_slice(&std::fs::read(data.join("keys/custody.json")).unwrap()).unwrap();
    let raw: [u8; 32] = hex::decode(st["signing_public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&raw)
        .unwrap()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap()
}

/// The console, stopped when dropped.
struct Console {
    child: Child,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `npm ci` of tests/web into a cache directory keyed by the lock file's hash
/// (`~/.cache/branchrec-web/<sha>`, reused by later runs and CI); returns its
/// node_modules.
fn node_modules() -> PathBuf {
    use sha2::Digest as _;
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let lock = std::fs::read(web.join("package-lock.json")).unwrap();
    let pkg = std::fs::read(web.join("package.json")).unwrap();
    let mut h = sha2::Sha256::new();
    h.update(&lock);
    h.update(&pkg);
    let tag = hex::encode(&h.finalize()[..8]);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or("/root".into());
    let dir = home.join(".cache/branchrec-web").join(tag);
    let nm = dir.join("node_modules");
    if nm.join("playwright/package.json").exists() {
        return nm;
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("package.json"), &pkg).unwrap();
    std::fs::write(dir.join("package-lock.json"), &lock).unwrap();
    // The npm registry; Playwright's own browser download is off (Debian's chromium).
    let out = output_bounded(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
        Duration::from_secs(600),
    )
    .expect("npm ci hung");
    assert!(
        out.status.success(),
        "npm ci: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    nm
}

#[test]
fn web_console_end_to_end_in_headless_chromium() {
    let t0 = Instant::now();
    let _g = common::serial();
    common::require_tool("chromium", "chromium");
    common::require_tool("node", "nodejs");
    common::require_tool("npm", "npm");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();

    // Node modules first (network to the npm registry only; cached).
    let nm = node_modules();

    let pg = common_pg::Pg::start(&dir.join("pg"));
    let hsm = Hsm::init(&dir.join("hsm"));
    let ck_pub = dir.join("compliance.pub.pem");
    std::fs::write(&ck_pub, generate_compliance_key(&hsm)).unwrap();

    // The archive: moto behind TLS.
    let s3::MotoArchive {
        moto,
        ca,
        toml: archive,
    } = s3::moto_archive(dir, BUCKET);

    // The central command key (legal holds from the console); the boxes trust its
    // public half and poll for commands every second.
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let cmd_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let cmd_priv = dir.join("command.key.pem");
    std::fs::write(
        &cmd_priv,
        cmd_key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let cmd_pub = dir.join("command.pub.pem");
    std::fs::write(
        &cmd_pub,
        cmd_key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();

    // Two boxes, one call each.
    let keys = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-2026\"",
        ck_pub.display()
    );
    let mut boxes = Vec::new();
    let mut paris_stopped = Instant::now();
    // box-bkl's uplink is capped at 32 kbit/s: its 20 s call (~640 kB) stays pending
    // for minutes, a backlog its status documents report.
    for (bx, site, a, b, rate) in [
        ("box-lon", "london", ALICE, BOB, "full"),
        ("box-par", "paris", CAROL, DAN, "full"),
        ("box-bkl", "leeds", HANA, IAN, "32kbit"),
    ] {
        let bdir = dir.join(bx);
        std::fs::create_dir_all(&bdir).unwrap();
        let d = Daemon::start_full(
            &bdir,
            "",
            &keys,
            &format!(
                "[uplink]\nenabled = true\nsite = \"{site}\"\nbox_id = \"{bx}\"\nrate = \"{rate}\"\npart_size_kb = 64\nobject_lock = false\nstatus_interval_s = 5\n{archive}\n[central]\ncommand_public_key = \"{}\"\npoll_interval_s = 1\n",
                cmd_pub.display()
            ),
        );
        let id = record_call(&d, boxes.len() as u32 + 1, a, b, rate == "full");
        if bx == "box-par" {
            // paris goes quiet (stale on the fleet page); the others keep pushing status.
            let mut d = d;
            d.stop();
            paris_stopped = Instant::now();
            boxes.push((bx, bdir, d, id));
            continue;
        }
        boxes.push((bx, bdir, d, id));
    }
    let london_id = boxes[0].3.clone();
    let paris_id = boxes[1].3.clone();
    // The box's own export of the london call: what the browser's download must equal.
    let box_wav = dir.join("box-export.wav");
    boxes[0]
        .2
        .recordings(&["export", &london_id, "--out", box_wav.to_str().unwrap()]);
    // And the box's own evidence bundle of it: the browser's bundle must hold the same
    // files (the README aside, byte for byte).
    let box_bundle = dir.join("box-evidence");
    boxes[0].2.recordings(&[
        "export",
        &london_id,
        "--evidence",
        box_bundle.to_str().unwrap(),
    ]);
    let w = read_wav(&box_wav);
    let one: Vec<i16> = TONE_ULAW.iter().map(|&b| g711::ulaw_to_linear(b)).collect();
    let burst: Vec<i16> = one
        .iter()
        .copied()
        .cycle()
        .take(PACKETS as usize * 160)
        .skip(1)
        .collect();
    assert_eq!((w.channels, w.rate), (2, 8000));
    for (c, ch) in w.data.iter().enumerate() {
        expect_bursts(&format!("box export channel {c}"), ch, &[&burst]);
    }

    // Central: config with the index and the console.
    let audit_key = dir.join("central-audit.key");
    let cfg = dir.join("central.toml");
    std::fs::write(&cfg, format!("[archive]\n{archive}")).unwrap();
    central_ok(
        &hsm,
        &cfg,
        &["audit-keygen", "--out", audit_key.to_str().unwrap()],
        &[],
    );
    let web_pki = Pki::new("console");
    let (wcert, wkey, _) = web_pki.server(false);
    std::fs::write(dir.join("web.crt"), &wcert).unwrap();
    std::fs::write(dir.join("web.key"), &wkey).unwrap();
    let port = common::free_port();
    let access_log = dir.join("access.log");
    // A real OpenID provider on loopback (npm oidc-provider, run with node).
    let oidc_port = common::free_port();
    let oidc_secret = dir.join("oidc-client-secret");
    std::fs::write(&oidc_secret, "console-secret-0123456789abcdef\n").unwrap();
    let mut idp = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/oidc-provider.mjs"))
        .env("NODE_PATH", &nm)
        .env("OIDC_PORT", oidc_port.to_string())
        .env(
            "OIDC_REDIRECT",
            format!("https://127.0.0.1:{port}/login/oidc/callback"),
        )
        .env("OIDC_CLIENT_SECRET", "console-secret-0123456789abcdef")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("oidc.log")).unwrap())
        .spawn()
        .unwrap();
    let idp_out = idp.stdout.take().unwrap();
    let idp = Console { child: idp };
    let (itx, irx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(idp_out).lines().map_while(Result::ok) {
            let _ = itx.send(l);
        }
    });
    let l = irx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "the OpenID provider did not start: {}",
                std::fs::read_to_string(dir.join("oidc.log")).unwrap_or_default()
            )
        });
    assert!(l.starts_with("oidc ready"), "{l}");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\n{archive}\n[index]\ndatabase = \"{}\"\naudit_key = \"{}\"\nopen_days = 0\nfollow_interval_s = 2\n\n[web]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\naccess_log = \"{}\"\nstale_after_s = 25\nbacklog_alarm = 0\nmax_failed_logins = 5\n\n[web.oidc]\nissuer = \"http://127.0.0.1:{oidc_port}\"\nclient_id = \"branchrec-console\"\nclient_secret_file = \"{}\"\nredirect_uri = \"https://127.0.0.1:{port}/login/oidc/callback\"\nallow_http_loopback = true\n",
            pg.conninfo,
            audit_key.display(),
            dir.join("web.crt").display(),
            dir.join("web.key").display(),
            access_log.display(),
            oidc_secret.display()
        ),
    )
    .unwrap();
    for (bx, bdir, _, _) in &boxes {
        let p = dir.join(format!("{bx}.pem"));
        std::fs::write(&p, box_key_pem(&bdir.join("data"))).unwrap();
        central_ok(
            &hsm,
            &cfg,
            &["enrol", bx, "--key", p.to_str().unwrap()],
            &[],
        );
    }
    let pk = [
        "--pkcs11-module",
        hsm::MODULE,
        "--token-label",
        TOKEN,
        "--key-label",
        KEY_LABEL,
    ];
    let mut index_args = vec!["index", "--once", "--json"];
    index_args.extend_from_slice(&pk);
    let out = central_ok(&hsm, &cfg, &index_args, &[]);
    let rep: Value = serde_json::from_str(
        out.lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}"),
    )
    .unwrap_or(Value::Null);
    assert_eq!(rep["indexed"], 2, "{out}");

    // Accounts: one per role, plus one to lock out.
    let mut users = serde_json::Map::new();
    for (name, role, sites) in [
        ("cora", "compliance", vec![]),
        ("cliff", "compliance", vec![]),
        ("sam", "supervisor", vec!["london"]),
        ("audrey", "auditor", vec![]),
        ("ivy", "it", vec![]),
        ("lockme", "compliance", vec![]),
    ] {
        let mut a = vec!["user", "add", name, "--role", role, "--json"];
        for s in &sites {
            a.extend_from_slice(&["--site", s]);
        }
        let out = central_ok(&hsm, &cfg, &a, &[("BRANCHREC_WEB_PASSWORD", PASSWORD)]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        users.insert(
            name.into(),
            json!({ "password": PASSWORD, "totp_secret": v["totp_secret"], "role": role }),
        );
    }
    // An SSO-only account bound to the provider's subject "olga".
    central_ok(
        &hsm,
        &cfg,
        &[
            "user",
            "add",
            "olga",
            "--role",
            "compliance",
            "--oidc-subject",
            "olga",
        ],
        &[],
    );
    // A short password is refused.
    let o = central(
        &hsm,
        &cfg,
        &["user", "add", "weak", "--role", "auditor"],
        &[("BRANCHREC_WEB_PASSWORD", "short")],
    );
    assert!(!o.status.success());

    // The indexer follows the archive (london pushes its status every 5 s) while the console
    // runs; paris must have been quiet longer than stale_after_s when the fleet is read.
    let mut follow_args = vec!["index", "--follow"];
    follow_args.extend_from_slice(&pk);
    let follower = Console {
        child: Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
            .args(&follow_args)
            .env("BRANCHREC_CENTRAL_CONFIG", &cfg)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .env("BRANCHREC_PKCS11_PIN", PIN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("follow.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    if let Some(rest) = Duration::from_secs(27).checked_sub(paris_stopped.elapsed()) {
        std::thread::sleep(rest);
    }

    // The console.
    let mut serve_args: Vec<&str> = vec!["serve", "--command-key", cmd_priv.to_str().unwrap()];
    serve_args.extend_from_slice(&pk);
    let mut child = Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
        .args(&serve_args)
        .env("BRANCHREC_CENTRAL_CONFIG", &cfg)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("BRANCHREC_PKCS11_PIN", PIN)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let console = Console { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "console did not start: {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            )
        });
    assert!(line.starts_with("listening on https://"), "{line}");

    // The Playwright spec. paris must be stale by the time the fleet page is read.
    let spec_cfg = dir.join("spec.json");
    std::fs::write(
        &spec_cfg,
        serde_json::to_vec_pretty(&json!({
            "base": format!("https://127.0.0.1:{port}"),
            "users": users,
            "london_id": london_id,
            "paris_id": paris_id,
            "participant": "+442079460001",
            "artifacts": artifacts,
            "stale_box": "box-par",
            "backlog_box": "box-bkl",
            "fresh_box": "box-lon",
            "oidc_port": oidc_port,
        }))
        .unwrap(),
    )
    .unwrap();
    let t_spec = Instant::now();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/console.spec.js");
    let out = output_bounded(
        Command::new("node")
            .arg(&spec)
            .env("NODE_PATH", &nm)
            .env("WEB_TEST_CONFIG", &spec_cfg)
            .env("PLAYWRIGHT_BROWSERS_PATH", "0"),
        Duration::from_secs(420),
    )
    .expect("the Playwright spec hung");
    let _ = std::fs::copy(&access_log, artifacts.join("access.log"));
    let _ = std::fs::copy(dir.join("serve.log"), artifacts.join("serve.log"));
    let _ = std::fs::copy(dir.join("follow.log"), artifacts.join("follow.log"));
    let _ = std::fs::copy(dir.join("oidc.log"), artifacts.join("oidc.log"));
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "Playwright spec failed:\n{log}\n--- console log ---\n{}\n--- box-bkl log (tail) ---\n{}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default(),
        boxes[2]
            .2
            .log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let spec_s = t_spec.elapsed().as_secs_f64();

    // The browser's download is the box's export, bit for bit.
    let got = std::fs::read(artifacts.join("download.wav")).expect("the spec saved the download");
    assert_eq!(
        got,
        std::fs::read(&box_wav).unwrap(),
        "downloaded WAV differs from the box's export"
    );
    // The evidence bundle: unpack, then docs/evidence.md's checks with openssl.
    let ev = dir.join("web-evidence");
    std::fs::create_dir_all(&ev).unwrap();
    let o = output_bounded(
        Command::new("tar")
            .arg("-xf")
            .arg(artifacts.join("evidence.tar"))
            .arg("-C")
            .arg(&ev),
        Duration::from_secs(60),
    )
    .expect("tar hung");
    assert!(
        o.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ev = ev.join(&london_id);
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&ev),
        names(&box_bundle),
        "bundle files differ from the box's"
    );
    for n in names(&box_bundle) {
        if n != "README.txt" {
            assert_eq!(
                std::fs::read(ev.join(&n)).unwrap(),
                std::fs::read(box_bundle.join(&n)).unwrap(),
                "{n} differs from the box's bundle"
            );
        }
    }
    let sh = |script: &str| {
        let o = output_bounded(
            Command::new("sh").arg("-c").arg(script).current_dir(&ev),
            Duration::from_secs(60),
        )
        .expect("openssl hung");
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let verified = sh("openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.sig");
    assert!(
        verified.contains("Signature Verified Successfully"),
        "{verified}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ev.join("manifest.json")).unwrap()).unwrap();
    let fp = sh("openssl pkey -pubin -in signing-key.pem -outform DER | sha256sum");
    assert!(
        fp.starts_with(manifest["signer"]["public_key_sha256"].as_str().unwrap()),
        "{fp} {manifest}"
    );
    let pcm = sh("tail -c +45 audio.wav | sha256sum");
    assert!(
        pcm.starts_with(manifest["audio"]["pcm_sha256"].as_str().unwrap()),
        "{pcm} {manifest}"
    );
    assert!(std::fs::read_to_string(ev.join("README.txt"))
        .unwrap()
        .contains("openssl pkeyutl -verify"));
    // The Ogg Opus download: a 2-channel Opus stream (one channel per party).
    let (codec, _, channels) = common::ffprobe(&artifacts.join("download.opus"));
    assert_eq!(
        (codec.as_str(), channels),
        ("opus", 2),
        "ffprobe of the Opus download"
    );
    // The case's hold went through Object Lock and was released by the second user:
    // every version of the london recording's objects has its legal hold OFF again, and
    // the box acknowledged the hold and the release commands.
    let versions = s3check(&moto, &ca, &["versions", BUCKET, "london/box-lon/"]);
    let vs: Vec<&Value> = versions
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["key"].as_str().unwrap().contains(&london_id) && v["delete_marker"] == false)
        .collect();
    assert!(vs.len() >= 4, "{versions}");
    assert!(vs.iter().all(|v| v["legal_hold"] == "OFF"), "{versions}");
    // Polled every 500 ms for 60 s (the box polls every second).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let objs = s3check(&moto, &ca, &["objects", BUCKET]);
        let acks = objs
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| {
                o["key"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("_acks/box-lon/")
            })
            .count();
        if acks >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "box-lon acknowledged {acks} command(s), want the hold and the release\n{}",
            boxes[0].2.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for shot in [
        "search.png",
        "recording.png",
        "fleet.png",
        "audit.png",
        "case.png",
    ] {
        let m = std::fs::metadata(artifacts.join(shot)).expect(shot);
        assert!(m.len() > 5000, "{shot} is {} bytes", m.len());
    }

    // Every action is in the central audit log with its reason, and the chain verifies.
    let audit = central_ok(&hsm, &cfg, &["audit", "--json"], &[]);
    let entries: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let has = |actor: &str, action: &str, needle: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e.to_string().contains(needle))
    };
    assert!(has("web:cora", "login", "password+totp"), "{audit}");
    assert!(has("web:cora", "search", "442079460001"), "{audit}");
    assert!(has("web:cora", "play", "case 15: listening"), "{audit}");
    assert!(has("web:cora", "download", "case 15: evidence"), "{audit}");
    assert!(
        entries.iter().any(|e| e["actor"] == "web:cora"
            && e["action"] == "download"
            && e.to_string().contains("case 15: opus for the regulator")
            && {
                // detail is JSON text inside the entry, or an object
                let t = e.to_string();
                t.contains(r#""format":"opus""#) || t.contains(r#"\"format\":\"opus\""#)
            }),
        "no audited Opus download: {audit}"
    );
    assert!(
        has("web:cora", "download", "case 15: evidence bundle"),
        "{audit}"
    );
    assert!(has("web:sam", "refused", &paris_id), "{audit}");
    assert!(has("web:audrey", "refused", &london_id), "{audit}");
    assert!(has("web:audrey", "audit_verify", "verify"), "{audit}");
    assert!(has("web:lockme", "login_refused", "locked"), "{audit}");
    assert!(has("web:olga", "login", "oidc"), "{audit}");
    assert!(has("web:cora", "hold", "legal_holds"), "{audit}");
    assert!(has("web:cora", "release_request", "case closed"), "{audit}");
    assert!(has("web:cora", "refused", "two-person"), "{audit}");
    assert!(has("web:cliff", "release_approve", "web:cora"), "{audit}");
    let v = central_ok(&hsm, &cfg, &["audit", "--verify"], &[]);
    assert!(v.contains("central audit log verifies"), "{v}");

    // The access log: one line per request, no personal data, no query strings.
    let al = std::fs::read_to_string(&access_log).unwrap();
    assert!(al.lines().count() > 30, "{al}");
    assert!(al.contains("/api/v1/recordings/"), "{al}");
    for pii in [
        "4420794", "+44", "Alice", "Ashworth", "Carol", "cora", "audrey", "lockme", "grant=", "?",
        PASSWORD,
    ] {
        assert!(!al.contains(pii), "access log contains {pii:?}:\n{al}");
    }
    // /metrics of the central service.
    let m = log
        .lines()
        .find(|l| l.starts_with("metrics:"))
        .unwrap_or_default()
        .to_string();
    assert!(m.contains("branchrec_central_web_logins_total"), "{m}");
    drop(console);
    drop(follower);
    drop(idp);
    for (_, _, mut d, _) in boxes {
        d.stop();
    }
    drop(moto);
    eprintln!(
        "web console test: spec {spec_s:.1} s, total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[allow(dead_code)]
#[path = "common/pg.rs"]
mod common_pg;
