//! Key custody against a real swtpm: provision, reload, PCR change refused, rotation
//! with re-wrap of recording files, recovery on a fresh TPM from escrow.

#[path = "common/swtpm.rs"]
mod swtpm;

use std::path::{Path, PathBuf};

use branchrec::media::AudioBlock;
use branchrec::recording::{read_all_audio, ContainerWriter, HeaderParams};
use branchrec::vault::custody::{self, CustodyConfig, Provider};
use branchrec::vault::{DataKey, KeyWrap, Signer, VaultError};
use swtpm::Swtpm;

fn cfg(tpm: &Swtpm, keys: &Path, recovery: Option<PathBuf>) -> CustodyConfig {
    CustodyConfig {
        provider: Provider::Tpm,
        tcti: tpm.tcti(),
        handle: 0x8101_0020,
        pcrs: "sha256:0,2,4,7".parse().unwrap(),
        recovery_public_key: recovery,
        keys_dir: keys.to_path_buf(),
        kek_file: keys.join("install.key"),
    }
}

fn write_recording(path: &Path, wrap: &dyn KeyWrap, seed: i16) -> Vec<i16> {
    let dk = DataKey::generate(&mut rand::rngs::OsRng);
    let p = HeaderParams {
        recording_id: format!("rec-{seed}"),
        created_unix_ms: 1,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 0,
        kek_id: wrap.kek_id(),
        extra_json: String::new(),
    };
    let (mut w, mut file) =
        ContainerWriter::new(p, dk.clone(), wrap.wrap(&dk).unwrap(), [seed as u8; 7]).unwrap();
    let samples: Vec<i16> = (0..24000).map(|i| (i as i16).wrapping_mul(seed)).collect();
    w.push_block(&AudioBlock {
        start_frame: 0,
        samples: samples.clone(),
    })
    .unwrap();
    while let Some(c) = w.poll_chunk() {
        file.extend_from_slice(&c);
    }
    file.extend_from_slice(&w.finish().bytes);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, file).unwrap();
    samples
}

fn openssl_rsa_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("recovery.key");
    let pubk = dir.join("recovery.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(ok.success());
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pubk)
        .status()
        .unwrap();
    assert!(ok.success());
    (key, pubk)
}

#[test]
fn provision_reload_pcr_rotate_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (rkey, rpub) = openssl_rsa_key(dir.path());
    let keys = dir.path().join("data/keys");
    let recs = dir.path().join("data/recordings");
    let tpm = Swtpm::start(&dir.path().join("tpm1"));
    let c = cfg(&tpm, &keys, Some(rpub.clone()));

    // Provision on first start.
    let k = custody::open(&c, &recs).unwrap();
    let kek1 = k.wrap.kek_id();
    assert!(kek1.starts_with("tpm1:"), "{kek1}");
    let escrow1 = c.escrow_path(&kek1);
    assert!(escrow1.exists());
    let sig = k.signer.sign(b"m").unwrap();
    let pubder = k.signer.public_key_der();
    let files: Vec<PathBuf> = (1..=3).map(|i| recs.join(format!("r{i}.brec"))).collect();
    let audio: Vec<Vec<i16>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| write_recording(f, &k.wrap, i as i16 + 2))
        .collect();
    drop(k);

    // Reload (a "restart"): same KEK, same signer; no new key made.
    let k = custody::open(&c, &recs).unwrap();
    assert_eq!(k.wrap.kek_id(), kek1);
    branchrec::vault::verify_ed25519(&pubder, b"m", &sig).unwrap();
    assert_eq!(k.signer.public_key_der(), pubder);
    for (f, a) in files.iter().zip(&audio) {
        assert_eq!(
            &read_all_audio(std::fs::File::open(f).unwrap(), &k.wrap)
                .unwrap()
                .1,
            a
        );
    }
    drop(k);

    // Rotate: every file re-wrapped, still readable; old handle evicted.
    let rep = branchrec::service::keys::rotate(&c, &files).unwrap();
    assert_eq!(rep.rewrapped, 3, "{rep:?}");
    assert!(rep.failed.is_empty());
    assert_ne!(rep.new_kek_id, kek1);
    let k = custody::open(&c, &recs).unwrap();
    assert_eq!(k.wrap.kek_id(), rep.new_kek_id);
    assert_eq!(
        k.signer.public_key_der(),
        pubder,
        "signing key survives rotation"
    );
    for (f, a) in files.iter().zip(&audio) {
        assert_eq!(
            &read_all_audio(std::fs::File::open(f).unwrap(), &k.wrap)
                .unwrap()
                .1,
            a
        );
    }
    drop(k);
    let escrow2 = c.escrow_path(&rep.new_kek_id);
    assert!(escrow2.exists());

    // A changed boot measurement: refused with a clear error, and no new key is made.
    tpm.pcr_extend(7);
    let e = custody::open(&c, &recs).unwrap_err();
    assert!(matches!(e, VaultError::KeyUnavailable(_)), "{e}");
    assert!(e.to_string().contains("boot measurements changed"), "{e}");
    let state = std::fs::read_to_string(c.state_path()).unwrap();
    assert!(state.contains(&rep.new_kek_id));
    // Planned change (firmware update): re-seal the same KEK under the new PCR values
    // from the escrow; the locked object at the handle is replaced.
    let pem = std::fs::read_to_string(&rkey).unwrap();
    let esc2: branchrec::vault::escrow::EscrowFile =
        serde_json::from_slice(&std::fs::read(&escrow2).unwrap()).unwrap();
    custody::recover(&c, &esc2, &pem).unwrap();
    let k = custody::open(&c, &recs).unwrap();
    assert_eq!(k.wrap.kek_id(), rep.new_kek_id);
    assert_eq!(
        read_all_audio(std::fs::File::open(&files[0]).unwrap(), &k.wrap)
            .unwrap()
            .1,
        audio[0]
    );
    drop(k);
    tpm.stop();

    // A dead box: a fresh TPM. Start-up refuses (nothing at the handle)…
    let tpm2 = Swtpm::start(&dir.path().join("tpm2"));
    let c2 = cfg(&tpm2, &keys, Some(rpub));
    let e = custody::open(&c2, &recs).unwrap_err();
    assert!(e.to_string().contains("cleared or replaced"), "{e}");
    // …and `keys recover` from the escrow restores every recording.
    let esc: branchrec::vault::escrow::EscrowFile =
        serde_json::from_slice(&std::fs::read(&escrow2).unwrap()).unwrap();
    let pem = std::fs::read_to_string(&rkey).unwrap();
    custody::recover(&c2, &esc, &pem).unwrap();
    let k = custody::open(&c2, &recs).unwrap();
    assert_eq!(k.wrap.kek_id(), rep.new_kek_id);
    for (f, a) in files.iter().zip(&audio) {
        assert_eq!(
            &read_all_audio(std::fs::File::open(f).unwrap(), &k.wrap)
                .unwrap()
                .1,
            a
        );
    }
    // The old (pre-rotation) escrow does not open anything any more.
    let old: branchrec::vault::escrow::EscrowFile =
        serde_json::from_slice(&std::fs::read(&escrow1).unwrap()).unwrap();
    assert!(custody::recover(&c2, &old, &pem).is_err());
}

#[test]
fn lost_state_file_never_orphans_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let recs = dir.path().join("recordings");
    let tpm = Swtpm::start(&dir.path().join("tpm"));
    let c = cfg(&tpm, &keys, None);
    let k = custody::open(&c, &recs).unwrap();
    write_recording(&recs.join("2026/01/01/a.brec"), &k.wrap, 3);
    drop(k);
    std::fs::remove_file(c.state_path()).unwrap();
    let e = custody::open(&c, &recs).unwrap_err();
    assert!(e.to_string().contains("refusing to provision"), "{e}");
}
