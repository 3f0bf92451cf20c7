//! A SoftHSM2 token for a test (initialised in a temporary directory) and the P-256
//! compliance key generated inside it, as tests/central_archive.rs does. Used as
//! `#[path = "common/hsm.rs"] mod hsm;` beside `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::output_bounded;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const TOKEN: &str = "central-compliance";
pub const KEY_LABEL: &str = "compliance-2026";
pub const PIN: &str = "48151623";
pub const SO_PIN: &str = "11235813";

/// A SoftHSM2 token directory of its own (`SOFTHSM2_CONF` for every process using it).
pub struct Hsm {
    pub conf: PathBuf,
}

impl Hsm {
    pub fn init(dir: &Path) -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: install the Debian package softhsm2 (scripts/test-all does)"
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = output_bounded(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", TOKEN])
                .args(["--so-pin", SO_PIN, "--pin", PIN]),
            Duration::from_secs(60),
        )
        .expect("softhsm2-util hung");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Hsm { conf }
    }

    /// A logged-in read-write session on the token (this process reads SOFTHSM2_CONF
    /// once per library load; each test has its own token directory, so they run apart).
    pub fn session(&self) -> (Pkcs11, cryptoki::session::Session) {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
        let ctx = Pkcs11::new(MODULE).unwrap();
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
            .expect("token");
        let s = ctx.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
            .unwrap();
        (ctx, s)
    }
}

/// Generate the P-256 compliance key pair in the token (private half sensitive and not
/// extractable, derive only) and return its public key as PEM for the box.
pub fn generate_compliance_key(hsm: &Hsm) -> String {
    use p256::pkcs8::EncodePublicKey;
    let (_ctx, s) = hsm.session();
    // DER OID prime256v1
    let params = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let label = KEY_LABEL.as_bytes().to_vec();
    let (pubh, _privh) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(params),
                Attribute::Label(label.clone()),
                Attribute::Verify(false),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Derive(true),
                Attribute::Sign(false),
                Attribute::Label(label),
            ],
        )
        .unwrap();
    let point = match &s.get_attributes(pubh, &[AttributeType::EcPoint]).unwrap()[..] {
        [Attribute::EcPoint(p)] => p.clone(),
        other => panic!("EC point: {other:?}"),
    };
    // DER OCTET STRING around the uncompressed point.
    assert_eq!(&point[..2], &[0x04, 0x41]);
    let pk = p256::PublicKey::from_sec1_bytes(&point[2..]).unwrap();
    pk.to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap()
}
