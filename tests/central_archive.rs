//! Issue #14, first slice: an archived recording opens without its box. A SoftHSM2 token
//! (initialised here, in a temporary directory) holds the P-256 compliance key; a daemon
//! with its public key records a SIPREC call with known G.711 audio and uploads it to
//! moto; then the daemon is stopped and its data directory and key files are deleted,
//! and `branchrec-central export` (PKCS#11) restores the WAV bit for bit from the archive
//! alone. One flipped byte in the archived container is refused; the bucket holds no
//! number or name in plaintext. Also: what SoftHSM2 supports through PKCS#11, the
//! evidence for the scheme choice in docs/central.md.

#[path = "common/central.rs"]
mod central_common;
mod common;
#[path = "common/hsm.rs"]
mod hsm;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{expect_bursts, g711, output_bounded, read_wav, Daemon};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;
use hsm::{generate_compliance_key, Hsm, KEY_LABEL, MODULE, PIN, TOKEN};
use s3::s3check;
use serde_json::Value;
use siprec_client::{invite_parties, Invite, TONE_ULAW};

const BUCKET: &str = "archive";

// The call's personal data: none of it may appear in plaintext in the bucket.
const A_AOR: &str = "tel:+442079460001";
const A_NAME: &str = "Alice Ashworth";
const B_AOR: &str = "sip:+441632960002@branch.example";
const B_NAME: &str = "Bob Brennan";

#[test]
fn softhsm2_supports_p256_ecdh_but_not_x25519_nor_oaep_sha256() {
    // One PKCS#11 library per process, initialised once at a time with one SOFTHSM2_CONF.
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(dir.path());
    let (_ctx, s) = hsm.session();
    let slot = s.get_session_info().unwrap().slot_id();
    let mechs = _ctx.get_mechanism_list(slot).unwrap();
    assert!(mechs.contains(&MechanismType::ECDH1_DERIVE), "{mechs:?}");
    assert!(mechs.contains(&MechanismType::ECC_KEY_PAIR_GEN));
    assert!(mechs.contains(&MechanismType::RSA_PKCS_OAEP));
    // No X25519 key generation (CKM_EC_MONTGOMERY_KEY_PAIR_GEN = 0x1056).
    assert!(
        !mechs.iter().any(|m| u64::from(*m) == 0x1056),
        "SoftHSM now has X25519: {mechs:?}"
    );
    // RSA-OAEP: SHA-1 works, SHA-256 is refused (CKR_ARGUMENTS_BAD).
    let (pubh, privh) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::ModulusBits(3072.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Encrypt(true),
            ],
            &[Attribute::Token(false), Attribute::Decrypt(true)],
        )
        .unwrap();
    let oaep = |h: MechanismType, mgf: PkcsMgfType| {
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()))
    };
    let dk = [7u8; 32];
    let ct = s
        .encrypt(
            &oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            pubh,
            &dk,
        )
        .unwrap();
    let pt = s
        .decrypt(
            &oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            privh,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, dk);
    let e = s
        .encrypt(
            &oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            pubh,
            &dk,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ArgumentsBad, _)
        ),
        "{e:?}"
    );
    let e = s
        .decrypt(
            &oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            privh,
            &ct,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ArgumentsBad, _)
        ),
        "{e:?}"
    );
    // P-256 ECDH through C_DeriveKey gives the raw shared x coordinate, the same as in
    // software: what the HPKE decapsulation needs from the HSM.
    drop((s, _ctx));
    let pem = generate_compliance_key(&hsm);
    let key =
        branchrec::central::Pkcs11Key::open(Path::new(MODULE), TOKEN, KEY_LABEL, PIN).unwrap();
    use branchrec::central::ComplianceKey;
    let (esk, epk) = branchrec::hpke::derive_key_pair(&[1; 32]).unwrap();
    let pk = branchrec::vault::compliance::parse_public_key_pem(&pem).unwrap();
    assert_eq!(key.public_key(), &pk);
    let hsm_dh = key.dh(&epk.to_bytes()).unwrap();
    assert_eq!(&hsm_dh[..], &esk.dh(&pk)[..]);
}

fn srs(d: &Daemon) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], d.sip_port))
}

fn central(hsm: &Hsm, args: &[&str]) -> Output {
    output_bounded(
        Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
            .args(args)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .env("BRANCHREC_PKCS11_PIN", PIN),
        Duration::from_secs(120),
    )
    .expect("branchrec-central hung")
}

fn status_json(d: &Daemon) -> Value {
    let out = output_bounded(
        Command::new(&d.bin)
            .args(["status", "--json", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("status hung");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn archived_recording_exports_bit_exact_from_the_archive_alone_through_pkcs11() {
    let _g = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&dir.path().join("hsm"));
    let pem = generate_compliance_key(&hsm);
    let pem_path = dir.path().join("compliance.pub.pem");
    std::fs::write(&pem_path, &pem).unwrap();

    // The archive: moto behind TLS.
    let s3::MotoArchive {
        moto,
        ca,
        toml: archive,
    } = s3::moto_archive(dir.path(), BUCKET);

    // The box: software keys, the compliance public key, uplink to moto.
    let bdir = dir.path().join("box");
    std::fs::create_dir_all(&bdir).unwrap();
    let keys = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-2026\"",
        pem_path.display()
    );
    let mut d = Daemon::start_full(
        &bdir,
        "",
        &keys,
        &format!(
            "[uplink]\nenabled = true\nsite = \"london\"\nbox_id = \"box-7\"\npart_size_kb = 64\n{archive}"
        ),
    );
    const PACKETS: u32 = 100;
    let mut call = match invite_parties(srs(&d), 1, (A_AOR, A_NAME), (B_AOR, B_NAME)) {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
    };
    let call_id = call.call_id().to_string();
    call.stream(u64::from(PACKETS) * 20);
    // Let the last packet's audio pass the playout window before the BYE.
    std::thread::sleep(Duration::from_millis(100));
    assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    // One 2 s recording (~70 kB): an upload takes well under a second idle; 120 s bounds
    // moto (Python, TLS) with both cores busy. Polled every 500 ms.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status_json(&d);
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
    let id = list[0]["id"].as_str().unwrap().to_string();
    // keys status: the compliance key and how many recordings are wrapped to it.
    let ks = output_bounded(
        Command::new(&d.bin)
            .args(["keys", "status", "--config"])
            .arg(&d.config),
        Duration::from_secs(60),
    )
    .expect("keys status hung");
    let ks = String::from_utf8_lossy(&ks.stdout).to_string();
    assert!(ks.contains("compliance key     ck-2026"), "{ks}");
    assert!(ks.contains("compliance wraps   ck-2026: 1"), "{ks}");
    // The box's own export, for comparison below.
    let box_wav = dir.path().join("box.wav");
    d.recordings(&["export", &id, "--out", box_wav.to_str().unwrap()]);
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let data = bdir.join("data");
    let local = std::fs::read(data.join(detail["file_path"].as_str().unwrap())).unwrap();
    d.stop();

    // Nothing personal in any archived object, container included.
    let dump = dir.path().join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    let objs = s3check(&moto, &ca, &["dump", BUCKET, dump.to_str().unwrap()]);
    let objs: Vec<String> = objs
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let key = objs
        .iter()
        .find(|k| k.ends_with(&id))
        .expect("container object")
        .clone();
    assert!(objs.contains(&format!("{key}.json")), "{objs:?}");
    assert!(objs.contains(&format!("{key}.manifest.json")), "{objs:?}");
    for e in std::fs::read_dir(&dump).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        for n in [
            "442079460001",
            "441632960002",
            "Ashworth",
            "Brennan",
            &call_id,
        ] {
            assert!(
                !b.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} in plaintext in {}",
                p.display()
            );
        }
    }

    // The box is gone: its data directory (catalogue, recordings, manifests, key files).
    std::fs::remove_dir_all(&data).unwrap();
    assert!(!data.exists());
    let cfg = dir.path().join("central.toml");
    std::fs::write(&cfg, format!("[archive]\n{archive}")).unwrap();
    let p11 = [
        "--archive",
        cfg.to_str().unwrap(),
        "--pkcs11-module",
        MODULE,
        "--token-label",
        TOKEN,
        "--key-label",
        KEY_LABEL,
    ];

    // show: the decrypted document names the participants.
    let mut args = vec!["show", id.as_str()];
    args.extend_from_slice(&p11);
    let out = central(&hsm, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = shown.to_string();
    assert!(
        text.contains("442079460001") && text.contains(A_NAME),
        "{text}"
    );
    assert_eq!(shown["index"]["compliance_key_id"], "ck-2026");
    assert_eq!(shown["document"]["id"], id.as_str());

    // export through PKCS#11: bit-exact with what was sent, and with the box's own export.
    let out_wav = dir.path().join("central.wav");
    let mut args = vec!["export", id.as_str(), "--out", out_wav.to_str().unwrap()];
    args.extend_from_slice(&p11);
    let out = central(&hsm, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an enrolled one"));
    // Streamed from the archive: the timings of the stream are reported.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("first audio byte written"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&out_wav).unwrap(),
        std::fs::read(&box_wav).unwrap()
    );
    let w = read_wav(&out_wav);
    assert_eq!((w.channels, w.rate), (2, 8000));
    // The tone's first sample (0xff) decodes to 0, read as silence: the burst starts at
    // the second sample.
    let one: Vec<i16> = TONE_ULAW.iter().map(|&b| g711::ulaw_to_linear(b)).collect();
    let burst: Vec<i16> = one
        .iter()
        .copied()
        .cycle()
        .take(PACKETS as usize * 160)
        .skip(1)
        .collect();
    for (c, ch) in w.data.iter().enumerate() {
        expect_bursts(&format!("channel {c}"), ch, &[&burst]);
    }

    // With an enrolled box key that is not the box's: refused.
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let wrong = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let wrong_path = dir.path().join("wrong.pem");
    std::fs::write(&wrong_path, wrong).unwrap();
    let out2 = dir.path().join("wrong.wav");
    let mut args = vec!["export", id.as_str(), "--out", out2.to_str().unwrap()];
    args.extend_from_slice(&p11);
    args.extend_from_slice(&["--box-key", wrong_path.to_str().unwrap()]);
    let out = central(&hsm, &args);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out2.exists());

    // One flipped byte in the archived container (inside an audio chunk): refused.
    let mut bad = local.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    let badf = dir.path().join("bad.brec");
    std::fs::write(&badf, &bad).unwrap();
    s3check(&moto, &ca, &["put", BUCKET, &key, badf.to_str().unwrap()]);
    let out3 = dir.path().join("tampered.wav");
    let mut args = vec!["export", id.as_str(), "--out", out3.to_str().unwrap()];
    args.extend_from_slice(&p11);
    let out = central(&hsm, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tampered container exported");
    assert!(
        err.contains("REFUSED") && err.contains("container SHA-256"),
        "{err}"
    );
    assert!(!out3.exists() && !dir.path().join("tampered.wav.partial").exists());
    // The streamed container's spool file is anonymous (unlinked when opened).
    assert!(!dir.path().join("tampered.wav.spool").exists());
}

/// The verification script of docs/evidence.md on a bundle built here (the box's and
/// central's bundles run it in tests/central_acceptance.rs): it passes with the SIPREC
/// metadata documents, passes without them (a bundle exported centrally from an archive
/// document older than the raw metadata: the signed hashes are named instead) and fails
/// on an altered one.
#[test]
fn evidence_script_verifies_bundles_with_and_without_metadata_documents() {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::Signer as _;
    use sha2::{Digest, Sha256};
    let hex_sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let tmp = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let der = key.verifying_key().to_public_key_der().unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let pcm: Vec<u8> = (0..16_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&[0u8; 40]);
    wav.extend_from_slice(&pcm);
    let xml = b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'/>";
    let metadata = serde_json::json!({
        "call_id": "c-1",
        "metadata_versions": [{ "seq": 1, "sha256": hex_sha(xml) }],
    });
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "signer": { "algorithm": "ed25519", "public_key_sha256": hex_sha(der.as_bytes()) },
        "audio": { "encoding": "s16le", "pcm_sha256": hex_sha(&pcm) },
        "metadata": metadata,
    }))
    .unwrap();
    let bundle = |name: &str, with_xml: Option<&[u8]>| -> PathBuf {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("signing-key.pem"), &pem).unwrap();
        std::fs::write(d.join("audio.wav"), &wav).unwrap();
        std::fs::write(d.join("manifest.json"), &manifest).unwrap();
        std::fs::write(d.join("manifest.sig"), key.sign(&manifest).to_bytes()).unwrap();
        std::fs::write(d.join("metadata.json"), metadata.to_string()).unwrap();
        if let Some(x) = with_xml {
            std::fs::write(d.join("metadata-1.xml"), x).unwrap();
        }
        d
    };
    let script = central_common::evidence_script();
    let run = |d: &Path| -> (bool, String) {
        let o = output_bounded(
            Command::new("sh").arg("-c").arg(&script).current_dir(d),
            Duration::from_secs(60),
        )
        .expect("script hung");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, text) = run(&bundle("full", Some(xml)));
    assert!(ok && text.contains("evidence bundle verified"), "{text}");
    assert!(!text.contains("not in the bundle"), "{text}");
    let (ok, text) = run(&bundle("older", None));
    assert!(ok && text.contains("evidence bundle verified"), "{text}");
    // Cleanly: the loop over the glob does not feed the literal `metadata-*.xml` to
    // sha256sum and jq (that failed inside a command substitution, which `set -e`
    // ignores: the check then "passed" with errors).
    for e in ["No such file", "error", "metadata-*.xml"] {
        assert!(!text.contains(e), "{e}: {text}");
    }
    assert!(
        text.contains(&format!(
            "SIPREC metadata 1 not in the bundle (signed sha256 {})",
            hex_sha(xml)
        )),
        "{text}"
    );
    let (ok, text) = run(&bundle("altered", Some(b"<recording/>")));
    assert!(!ok && !text.contains("evidence bundle verified"), "{text}");
}

/// Bench, not a timed test (`cargo test --features g729 --test central_archive -- --ignored
/// bench_export --nocapture`; docs/central.md, *Scale*): a real 10-minute G.711 SIPREC call
/// (`BRANCHREC_BENCH_CALL_S`, default 600) recorded by a box and uploaded to moto, then
/// `branchrec-central export` of it from the archive alone: time to first byte of the
/// output (the `.partial` file has data), total time, and the exporter's peak RSS
/// (VmHWM, sampled every 2 ms), three runs.
#[test]
#[ignore]
fn bench_export_ten_minute_g711_from_the_archive() {
    let _g = common::serial();
    let secs: u64 = std::env::var("BRANCHREC_BENCH_CALL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let (ck_priv, ck_pub) = central_common::compliance_keypair(dir.path());
    let s3::MotoArchive {
        moto: _,
        ca: _,
        toml: archive,
    } = s3::moto_archive(dir.path(), BUCKET);
    let cfg = dir.path().join("central.toml");
    std::fs::write(&cfg, format!("[archive]\n{archive}")).unwrap();
    let bdir = dir.path().join("box");
    std::fs::create_dir_all(&bdir).unwrap();
    let keys = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-bench\"",
        ck_pub.display()
    );
    let mut d = Daemon::start_full(
        &bdir,
        "",
        &keys,
        &format!(
            "[uplink]\nenabled = true\nsite = \"london\"\nbox_id = \"box-bench\"\npart_size_kb = 5120\n{archive}"
        ),
    );
    let mut call = match invite_parties(srs(&d), 1, (A_AOR, A_NAME), (B_AOR, B_NAME)) {
        Invite::Up(c) => c,
        Invite::Rejected(code, m) => panic!("INVITE refused {code}: {m}\n{}", d.log_text()),
    };
    call.stream(secs * 1000);
    std::thread::sleep(Duration::from_millis(100));
    assert!(call.bye(), "BYE not answered\n{}", d.log_text());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = status_json(&d);
        if s["uploaded"].as_u64() == Some(1) && s["pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not uploaded: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = d.recordings_json(&["list", "--json"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let detail = d.recordings_json(&["show", &id, "--json"]);
    let bytes = std::fs::metadata(
        bdir.join("data")
            .join(detail["file_path"].as_str().unwrap()),
    )
    .unwrap()
    .len();
    d.stop();
    for run in 1..=3 {
        let out = dir.path().join(format!("export-{run}.wav"));
        let partial = dir.path().join(format!("export-{run}.wav.partial"));
        let t0 = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_branchrec-central"))
            .args(["export", &id, "--out"])
            .arg(&out)
            .arg("--archive")
            .arg(&cfg)
            .arg("--key-pem")
            .arg(&ck_priv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut ttfb = None;
        let mut hwm_kb = 0u64;
        let status = loop {
            if ttfb.is_none()
                && (std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0) || out.exists())
            {
                ttfb = Some(t0.elapsed());
            }
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(v) = st
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    hwm_kb = hwm_kb.max(v);
                }
            }
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "export hung");
            std::thread::sleep(Duration::from_millis(2));
        };
        let total = t0.elapsed();
        assert!(status.success(), "export failed");
        let wav = std::fs::metadata(&out).unwrap().len();
        println!(
            "BENCH export run {run}: {secs} s G.711 call, container {bytes} B, WAV {wav} B: time to first byte {} ms, total {} ms, peak RSS {} MiB",
            ttfb.unwrap_or(total).as_millis(),
            total.as_millis(),
            hwm_kb / 1024
        );
        std::fs::remove_file(&out).unwrap();
    }
}
