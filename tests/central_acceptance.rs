//! Issue #14, first acceptance bullet, end to end on real parts: three boxes (daemons with
//! their own data directories; box-c keeps its keys in a real swtpm) record SIPREC G.711
//! calls with known audio and upload to a three-node Garage cluster (behind nginx TLS);
//! the central indexer (real PostgreSQL 15) indexes them; then box-c's data directory and
//! its TPM state are destroyed. From the archive alone: `central export` of each of
//! box-c's recordings is bit-exact with the audio sent, `central export --evidence` writes
//! a bundle that the openssl commands of docs/evidence.md verify (and that fails them when
//! altered), and `central search --participant` finds exactly the right recordings across
//! the three boxes. The archive documents carry the box's real tags, hold flag and
//! direction (`search --tag/--held/--direction`).

#[path = "common/central.rs"]
mod central_common;
mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/garage.rs"]
mod garage;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/siprec_client.rs"]
mod siprec_client;
#[path = "common/swtpm.rs"]
mod swtpm;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use central_common::{
    box_key_pem, central, central_ok_with_stderr as central_ok, compliance_keypair, evidence_script,
};
use common::{expect_bursts, g711, output_bounded, read_wav};
use daemon::Install;
use garage::Garage;
use s3::Pki;
use serde_json::Value;
use siprec_client::{invite_parties, Invite, TONE_ULAW};
use swtpm::Swtpm;

const BUCKET: &str = "archive";
/// 20 ms packets per call (1 s).
const PACKETS: u32 = 50;

type Party = (&'static str, &'static str);
/// (box id, `[keys]` body and the sections after it, calls).
type BoxSpec = (&'static str, String, Vec<(Party, Party)>);
const ALICE: Party = ("tel:+442079460001", "Alice Ashworth");
const CAROL: Party = ("tel:+442079460099", "Carol Carter");
const IVAN: Party = ("tel:+442079460077", "Ivan Ivanov");

fn sh(script: &str, dir: &Path) -> Output {
    output_bounded(
        Command::new("sh").arg("-c").arg(script).current_dir(dir),
        Duration::from_secs(60),
    )
    .expect("sh hung")
}

fn search(cfg: &str, extra: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["search", "--json", "--config", cfg];
    a.extend_from_slice(extra);
    let out = central(&a);
    assert!(
        out.status.success(),
        "search {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["recording_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn three_boxes_one_destroyed_archive_alone_exports_bit_exact_evidence_and_search() {
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // PostgreSQL runs as nobody under root: it must reach its directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pg = pg::Pg::start(&dir.join("pg"));

    // The compliance key pair (PEM; PKCS#11 is tests/central_archive.rs).
    let (ck_priv, ck_pub) = compliance_keypair(dir);
    let ck_priv = ck_priv.to_str().unwrap().to_string();

    // The archive: the Garage cluster behind nginx TLS.
    let pki = Pki::new("archive");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (cert, key, _) = pki.server(false);
    let g = Garage::start(&dir.join("garage"), BUCKET, &cert, &key);
    let creds = dir.join("creds");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage::KEY_ID,
            garage::SECRET
        ),
    )
    .unwrap();
    let archive = format!(
        "endpoint = \"https://127.0.0.1:{}\"\nbucket = \"{BUCKET}\"\ncredentials_file = \"{}\"\nca_file = \"{}\"\n",
        g.port,
        creds.display(),
        ca.display()
    );

    // box-c's TPM and its escrow key.
    let o = sh(
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out recovery.key 2>/dev/null && openssl pkey -in recovery.key -pubout -out recovery.pub.pem",
        dir,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tpm_state = dir.join("box-c-tpm");
    let tpm = Swtpm::start(&tpm_state);
    let compliance = format!(
        "compliance_public_key = \"{}\"\ncompliance_key_id = \"ck-2026\"",
        ck_pub.display()
    );
    let uplink = |bx: &str, site: &str| {
        format!(
            "\n[uplink]\nenabled = true\nsite = \"{site}\"\nbox_id = \"{bx}\"\npart_size_kb = 64\nstatus_interval_s = 5\n{archive}"
        )
    };
    // box-a tags Alice's calls and knows Carol's number as its own (her calls go out).
    let rules_a = "\n[policy]\ninternal = [\"+442079460099\"]\n\n[[rules]]\nname = \"vip\"\nparticipant = [\"+442079460001\"]\ntags = [\"vip\"]\n";
    let boxes: [BoxSpec; 3] = [
        (
            "box-a",
            format!(
                "provider = \"software\"\n{compliance}\n{}{rules_a}",
                uplink("box-a", "london")
            ),
            vec![
                (ALICE, ("sip:+441632960002@branch.example", "Bob Brennan")),
                (CAROL, ("sip:+441632960003@branch.example", "Dan Dawson")),
            ],
        ),
        (
            "box-b",
            format!(
                "provider = \"software\"\n{compliance}\n{}",
                uplink("box-b", "london")
            ),
            vec![
                (ALICE, ("sip:+33142000001@paris.example", "Eve Evans")),
                (
                    ("tel:+442079461234", "Frank Fischer"),
                    ("sip:+33142000002@paris.example", "Gina Gauthier"),
                ),
            ],
        ),
        (
            "box-c",
            format!(
                "provider = \"tpm\"\ntcti = \"{}\"\nhandle = 0x81010020\npcrs = \"sha256:0,2,4,7\"\nrecovery_public_key = \"{}\"\n{compliance}\n{}",
                tpm.tcti(),
                dir.join("recovery.pub.pem").display(),
                uplink("box-c", "paris")
            ),
            vec![
                (ALICE, ("sip:+33142000003@paris.example", "Hugo Hamel")),
                (IVAN, ("sip:+33142000004@paris.example", "Judy Jansen")),
            ],
        ),
    ];

    // Each box records its calls (known tone on both legs) and uploads them.
    let mut n = 0u32;
    let mut rec_ids: Vec<Vec<String>> = Vec::new();
    let mut box_keys = Vec::new();
    let mut insts = Vec::new();
    for (bx, keys, calls) in &boxes {
        let bdir = dir.join(bx);
        std::fs::create_dir_all(&bdir).unwrap();
        let inst = Install::new(&bdir, keys);
        let dm = inst.start();
        if *bx == "box-b" {
            // A legal hold on Eve's calls, placed before the call: the archived document
            // says held.
            inst.cli_ok(&[
                "hold",
                "add",
                "--participant",
                "+33142000001",
                "--reason",
                "case 14",
            ]);
        }
        for (a, b) in calls {
            n += 1;
            let mut call = match invite_parties(inst.sip, n, *a, *b) {
                Invite::Up(c) => c,
                Invite::Rejected(code, m) => {
                    panic!("{bx}: INVITE refused {code}: {m}\n{}", inst.log_text())
                }
            };
            call.stream(u64::from(PACKETS) * 20);
            // Let the last packet's audio pass the playout window before the BYE.
            std::thread::sleep(Duration::from_millis(200));
            assert!(call.bye(), "{bx}: BYE not answered\n{}", inst.log_text());
        }
        // Uploaded (a few ~20 kB objects; 180 s bounds a loaded machine; polled 500 ms).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let s: Value =
                serde_json::from_str(&inst.cli_ok(&["status", "--json"])).unwrap_or(Value::Null);
            if s["uploaded"].as_u64() == Some(calls.len() as u64) && s["pending"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{bx} not uploaded: {s}\n{}",
                inst.log_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let list: Value =
            serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
        let mut v: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["start"].as_str().unwrap().to_string(),
                    r["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        assert_eq!(v.len(), calls.len(), "{bx}: {list}");
        rec_ids.push(v.into_iter().map(|x| x.1).collect());
        box_keys.push(box_key_pem(&inst.data));
        dm.stop();
        insts.push(inst);
    }
    assert!(insts[2]
        .log_text()
        .contains("provisioned a new key-encryption key sealed in the TPM"));
    let (a1, a2) = (rec_ids[0][0].clone(), rec_ids[0][1].clone());
    let (b1, b2) = (rec_ids[1][0].clone(), rec_ids[1][1].clone());
    let (c1, c2) = (rec_ids[2][0].clone(), rec_ids[2][1].clone());

    // Central: config with the index, audit key; box-a and box-c enrolled with the keys
    // recorded at installation, box-b trusted on first use.
    let audit_key = dir.join("central-audit.key");
    central_ok(&["audit-keygen", "--out", audit_key.to_str().unwrap()]);
    let cfg = dir.join("central.toml");
    std::fs::write(
        &cfg,
        format!(
            "[archive]\n{archive}\n[index]\ndatabase = \"{}\"\naudit_key = \"{}\"\nunknown_boxes = \"first_seen\"\nopen_days = 0\n",
            pg.conninfo,
            audit_key.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    for (i, bx) in [(0, "box-a"), (2, "box-c")] {
        let p = dir.join(format!("{bx}.pem"));
        std::fs::write(&p, &box_keys[i]).unwrap();
        central_ok(&["enrol", bx, "--config", &cfg, "--key", p.to_str().unwrap()]);
    }

    // box-c is destroyed: its data directory (catalogue, recordings, manifests, sealed
    // key blobs) and its TPM (process and state).
    std::fs::remove_dir_all(&insts[2].data).unwrap();
    tpm.stop();
    std::fs::remove_dir_all(&tpm_state).unwrap();
    assert!(!insts[2].data.exists() && !tpm_state.exists());

    // The indexer indexes the six recordings from the archive.
    let out = central_ok(&[
        "index",
        "--once",
        "--json",
        "--config",
        &cfg,
        "--key-pem",
        &ck_priv,
    ]);
    let rep: Value = serde_json::from_str(
        out.lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}"),
    )
    .unwrap();
    assert_eq!(rep["indexed"], 6, "{rep}");
    assert_eq!(rep["quarantined"], 0, "{rep}");

    // Search across the three boxes: exactly the right recordings.
    assert_eq!(
        search(&cfg, &["--participant", "+442079460001"]),
        BTreeSet::from([a1.clone(), b1.clone(), c1.clone()])
    );
    assert_eq!(
        search(&cfg, &["--participant", "+442079460077"]),
        BTreeSet::from([c2.clone()])
    );
    assert_eq!(
        search(&cfg, &["--participant", "+4420794600*"]),
        BTreeSet::from([a1.clone(), a2.clone(), b1.clone(), c1.clone(), c2.clone()])
    );
    assert_eq!(
        search(&cfg, &["--participant", "+33142000003"]),
        BTreeSet::from([c1.clone()])
    );
    assert!(search(&cfg, &["--participant", "+449999999999"]).is_empty());
    // The boxes' own life-cycle facts reached the index through the archive documents.
    assert_eq!(
        search(&cfg, &["--tag", "vip"]),
        BTreeSet::from([a1.clone()])
    );
    assert_eq!(search(&cfg, &["--held"]), BTreeSet::from([b1.clone()]));
    assert_eq!(
        search(&cfg, &["--direction", "outbound"]),
        BTreeSet::from([a2.clone()])
    );
    let _ = b2;

    // The destroyed box's recordings, from the archive alone.
    let one: Vec<i16> = TONE_ULAW.iter().map(|&b| g711::ulaw_to_linear(b)).collect();
    // The tone's first sample (0xff) decodes to 0, read as silence: the burst starts at
    // the second sample.
    let burst: Vec<i16> = one
        .iter()
        .copied()
        .cycle()
        .take(PACKETS as usize * 160)
        .skip(1)
        .collect();
    let script = evidence_script();
    for id in [&c1, &c2] {
        let wav = dir.join(format!("{id}.wav"));
        central_ok(&[
            "export",
            id,
            "--out",
            wav.to_str().unwrap(),
            "--archive",
            &cfg,
            "--key-pem",
            &ck_priv,
        ]);
        let w = read_wav(&wav);
        assert_eq!((w.channels, w.rate), (2, 8000), "{id}");
        for (c, ch) in w.data.iter().enumerate() {
            expect_bursts(&format!("{id} channel {c}"), ch, &[&burst]);
        }
        // The evidence bundle, with the enrolled key from the index.
        let ev = dir.join(format!("evidence-{id}"));
        let log = central_ok(&[
            "export",
            id,
            "--evidence",
            ev.to_str().unwrap(),
            "--archive",
            &cfg,
            "--key-pem",
            &ck_priv,
        ]);
        assert!(!log.contains("taken from the archived document"), "{log}");
        for f in [
            "audio.wav",
            "manifest.json",
            "manifest.sig",
            "signing-key.pem",
            "metadata.json",
            "metadata-1.xml",
            "README.txt",
        ] {
            assert!(ev.join(f).exists(), "{f} missing in the bundle of {id}");
        }
        assert_eq!(
            std::fs::read_to_string(ev.join("signing-key.pem")).unwrap(),
            box_keys[2]
        );
        // The bundle's audio is the exported WAV, bit for bit.
        assert_eq!(
            std::fs::read(ev.join("audio.wav")).unwrap(),
            std::fs::read(&wav).unwrap()
        );
        let o = sh(&script, &ev);
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success()
                && text.contains("Signature Verified Successfully")
                && text.contains("evidence bundle verified"),
            "{id}: {text}"
        );
        // The same check fails on an altered copy: one audio sample, one manifest byte.
        for (file, at) in [("audio.wav", 1000usize), ("manifest.json", 40)] {
            let bad = dir.join(format!("evidence-{id}-bad-{file}"));
            std::fs::create_dir_all(&bad).unwrap();
            for e in std::fs::read_dir(&ev).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, bad.join(p.file_name().unwrap())).unwrap();
            }
            let mut b = std::fs::read(bad.join(file)).unwrap();
            b[at] ^= 0x01;
            std::fs::write(bad.join(file), b).unwrap();
            let o = sh(&script, &bad);
            assert!(
                !o.status.success()
                    && !String::from_utf8_lossy(&o.stdout).contains("evidence bundle verified"),
                "altered {file} verified"
            );
        }
    }

    // Every export is in the central audit log, which verifies.
    let audit = central_ok(&["audit", "--json", "--config", &cfg]);
    let exports: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["action"] == "export")
        .collect();
    assert_eq!(exports.len(), 4, "{audit}");
    assert_eq!(
        exports
            .iter()
            .filter(|e| e.to_string().contains("evidence"))
            .count(),
        2,
        "{audit}"
    );
    let v = central_ok(&["audit", "--verify", "--config", &cfg]);
    assert!(v.contains("central audit log verifies"), "{v}");

    // Without the index and without --box-key: the key the document names, with a loud
    // warning in the bundle's README (and still the same layout and checks).
    let cfg2 = dir.join("central-noindex.toml");
    std::fs::write(&cfg2, format!("[archive]\n{archive}")).unwrap();
    let ev = dir.join("evidence-unenrolled");
    let log = central_ok(&[
        "export",
        &c1,
        "--evidence",
        ev.to_str().unwrap(),
        "--archive",
        cfg2.to_str().unwrap(),
        "--key-pem",
        &ck_priv,
    ]);
    assert!(log.contains("WARNING"), "{log}");
    let readme = std::fs::read_to_string(ev.join("README.txt")).unwrap();
    assert!(
        readme.starts_with("WARNING: the manifest-signing key in signing-key.pem was taken from the archived document itself"),
        "{readme}"
    );
    assert!(sh(&script, &ev).status.success());
    // With --box-key naming another key: refused, nothing written.
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let wrong = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let wrong_path = dir.join("wrong.pem");
    std::fs::write(&wrong_path, wrong).unwrap();
    let ev = dir.join("evidence-wrong-key");
    let out = central(&[
        "export",
        &c1,
        "--evidence",
        ev.to_str().unwrap(),
        "--archive",
        cfg2.to_str().unwrap(),
        "--key-pem",
        &ck_priv,
        "--box-key",
        wrong_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ev.exists() || std::fs::read_dir(&ev).unwrap().next().is_none());
    drop(g);
}
