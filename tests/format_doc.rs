//! The independent Python reader printed in docs/recording-format.md reads what the
//! writer produces (format version 2, key slots), including a file re-wrapped by a key
//! rotation. Needs python3 with `cryptography` (Debian: python3-cryptography).

use std::process::Command;

use branchrec::media::AudioBlock;
use branchrec::recording::{rewrap_file, ContainerWriter, HeaderParams};
use branchrec::vault::{DataKey, KekSet, KeyFileVault, KeyWrap};

/// The Python code block of docs/recording-format.md.
fn python_reader() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/recording-format.md"
    ))
    .unwrap();
    doc.split("```python\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn documented_python_reader_reads_the_container() {
    let code = python_reader();
    let dir = tempfile::tempdir().unwrap();
    let kek = KeyFileVault::from_key([7; 32]);
    let dk = DataKey::generate(&mut rand::rngs::OsRng);
    let p = HeaderParams {
        recording_id: "doc-test".into(),
        created_unix_ms: 1,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 4000,
        kek_id: kek.kek_id(),
        extra_json: String::new(),
    };
    let (mut w, mut file) =
        ContainerWriter::new(p, dk.clone(), kek.wrap(&dk).unwrap(), [3; 7]).unwrap();
    let samples: Vec<i16> = (0..30000).map(|i| (i * 7 % 20000) as i16).collect();
    w.push_block(&AudioBlock {
        start_frame: 0,
        samples: samples.clone(),
    })
    .unwrap();
    while let Some(c) = w.poll_chunk() {
        file.extend_from_slice(&c);
    }
    file.extend_from_slice(&w.finish().bytes);
    let path = dir.path().join("a.brec");
    std::fs::write(&path, &file).unwrap();
    let expect: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(dir.path().join("expect.pcm"), &expect).unwrap();
    let run = |kek_bytes: [u8; 32]| {
        let script = format!(
            "{code}\nimport sys\ndata=open(sys.argv[1],'rb').read()\nrid,rate,ch,s=read_brrec(data, bytes.fromhex('{}'))\nassert rid=='doc-test' and rate==8000 and ch==2\nassert s==open(sys.argv[2],'rb').read(), 'audio differs'\nprint('ok')\n",
            hex::encode(kek_bytes)
        );
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .arg(dir.path().join("expect.pcm"))
            .output()
            .expect("python3 not found (Debian: python3, python3-cryptography)");
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
            "python reader failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run([7; 32]);
    // After a rotation the newest slot is under the new KEK.
    let set = KekSet::new(vec![
        KeyFileVault::from_key([9; 32]),
        KeyFileVault::from_key([7; 32]),
    ])
    .unwrap();
    rewrap_file(&path, &set).unwrap();
    run([9; 32]);
}

/// The same reader on an Opus recording (version 3) returns the stored packet stream,
/// whose SHA-256 is the writer's audio hash (the manifest's `opus_packets_sha256`).
#[test]
fn documented_python_reader_reads_an_opus_container() {
    let code = python_reader();
    let dir = tempfile::tempdir().unwrap();
    let kek = KeyFileVault::from_key([7; 32]);
    let dk = DataKey::generate(&mut rand::rngs::OsRng);
    let p = HeaderParams {
        recording_id: "doc-opus".into(),
        created_unix_ms: 1,
        sample_rate: 16000,
        channels: 2,
        chunk_target_frames: 8000,
        kek_id: kek.kek_id(),
        extra_json: String::new(),
    };
    let (mut w, mut file) = ContainerWriter::with_format(
        p,
        Some(branchrec::recording::opus::OpusSettings::default()),
        dk.clone(),
        kek.wrap(&dk).unwrap(),
        [3; 7],
    )
    .unwrap();
    let samples: Vec<i16> = (0..64000)
        .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
        .collect();
    w.push_block(&AudioBlock {
        start_frame: 0,
        samples,
    })
    .unwrap();
    while let Some(c) = w.poll_chunk() {
        file.extend_from_slice(&c);
    }
    let fin = w.finish();
    file.extend_from_slice(&fin.bytes);
    let path = dir.path().join("o.brec");
    std::fs::write(&path, &file).unwrap();
    assert_eq!(u16::from_be_bytes([file[6], file[7]]), 3);
    let script = format!(
        "{code}\nimport sys, hashlib\ndata=open(sys.argv[1],'rb').read()\nrid,rate,ch,s=read_brrec(data, bytes.fromhex('{}'))\nassert rid=='doc-opus' and rate==16000 and ch==2\nprint(hashlib.sha256(s).hexdigest())\n",
        hex::encode([7u8; 32])
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 not found (Debian: python3, python3-cryptography)");
    assert!(
        o.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        hex::encode(fin.audio_sha256)
    );
}

/// The same reader opens a container with a compliance slot (three key slots) both ways:
/// with the box's KEK, and with the compliance private key through its own HPKE code
/// (RFC 9180 written out in Python with `cryptography`, independent of ours).
#[test]
fn documented_python_reader_opens_the_compliance_slot() {
    let code = python_reader();
    let dir = tempfile::tempdir().unwrap();
    let kek = KeyFileVault::from_key([7; 32]);
    let (sk, pk) = branchrec::hpke::derive_key_pair(b"format_doc compliance").unwrap();
    let dk = DataKey::generate(&mut rand::rngs::OsRng);
    let p = HeaderParams {
        recording_id: "doc-ck".into(),
        created_unix_ms: 1,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 4000,
        kek_id: kek.kek_id(),
        extra_json: String::new(),
    };
    let wrapped_ck = branchrec::compliance::wrap_data_key(&pk, "ck-1", &dk, &[5; 32]).unwrap();
    let (mut w, mut file) = ContainerWriter::with_slots(
        p,
        None,
        dk.clone(),
        kek.wrap(&dk).unwrap(),
        Some(("hpke1:ck-1".into(), wrapped_ck)),
        [3; 7],
    )
    .unwrap();
    let samples: Vec<i16> = (0..30000).map(|i| (i * 11 % 20000) as i16).collect();
    w.push_block(&AudioBlock {
        start_frame: 0,
        samples: samples.clone(),
    })
    .unwrap();
    while let Some(c) = w.poll_chunk() {
        file.extend_from_slice(&c);
    }
    file.extend_from_slice(&w.finish().bytes);
    let path = dir.path().join("c.brec");
    std::fs::write(&path, &file).unwrap();
    let expect: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(dir.path().join("expect.pcm"), &expect).unwrap();
    for how in [
        format!("bytes.fromhex('{}')", hex::encode([7u8; 32])),
        format!("None, int('{}', 16)", hex::encode(&sk.to_bytes()[..])),
    ] {
        let script = format!(
            "{code}\nimport sys\ndata=open(sys.argv[1],'rb').read()\nrid,rate,ch,s=read_brrec(data, {how})\nassert rid=='doc-ck'\nassert s==open(sys.argv[2],'rb').read(), 'audio differs'\nprint('ok')\n"
        );
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .arg(dir.path().join("expect.pcm"))
            .output()
            .expect("python3");
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
            "python reader ({how}) failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
