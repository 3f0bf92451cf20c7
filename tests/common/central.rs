//! Shared by the central tests (tests/central_index.rs, tests/central_acceptance.rs): the
//! compliance key pair as PEM files, a box's manifest-signing key as an installer records
//! it, the published evidence check, and running `branchrec-central`. Used as `#[path = "common/central.rs"] mod
//! central_common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// `branchrec-central ARGS`, bounded (180 s).
pub fn central(args: &[&str]) -> Output {
    crate::common::output_bounded(
        Command::new(env!("CARGO_BIN_EXE_branchrec-central")).args(args),
        Duration::from_secs(180),
    )
    .expect("branchrec-central hung")
}

/// [`central`], which must succeed: its stdout.
pub fn central_ok(args: &[&str]) -> String {
    let out = central(args);
    assert!(
        out.status.success(),
        "branchrec-central {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`central_ok`] with stderr (warnings) appended to stdout.
pub fn central_ok_with_stderr(args: &[&str]) -> String {
    let out = central(args);
    assert!(
        out.status.success(),
        "branchrec-central {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A fresh P-256 compliance key pair in `dir`: (`compliance.key` PKCS#8 PEM private,
/// `compliance.pub.pem` SPKI PEM public).
pub fn compliance_keypair(dir: &Path) -> (PathBuf, PathBuf) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private = dir.join("compliance.key");
    std::fs::write(
        &private,
        sk.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let public = dir.join("compliance.pub.pem");
    std::fs::write(
        &public,
        sk.public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    (private, public)
}

/// The box's manifest/audit signing public key (custody state in `data`) as SPKI PEM.
pub fn box_key_pem(data: &Path) -> String {
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

/// The check published in docs/evidence.md (its `sh` block), exactly.
pub fn evidence_script() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/evidence.md")).unwrap();
    doc.split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .to_string()
}
