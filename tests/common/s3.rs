//! An S3-compatible archive for the tests: `moto_server` behind TLS with a test CA
//! (generated with rcgen), and `s3check`, the boto3 checker (tests/uplink/s3check.py)
//! that reads the bucket independently of branchrec's own client. Used by
//! tests/uplink_s3.rs and tests/central_archive.rs (`#[path = "common/s3.rs"] mod s3;`
//! beside `mod common;`).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, require_tool, wait_bounded};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Certificates

pub struct Pki {
    pub ca_pem: String,
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_key: key,
            ca,
        }
    }

    /// Server certificate for 127.0.0.1: (cert PEM, key PEM, SPKI SHA-256 base64).
    pub fn server(&self, expired: bool) -> (String, String, String) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        use base64::Engine as _;
        let pin =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.public_key_der()));
        (cert.pem(), key.serialize_pem(), pin)
    }
}

// ---------------------------------------------------------------------------------------
// moto_server

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    cert: PathBuf,
    key: PathBuf,
    log: PathBuf,
}

impl Moto {
    pub fn start(dir: &Path, cert_pem: &str, key_pem: &str) -> Moto {
        require_tool("moto_server", "moto[server] (pip)");
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let mut m = Moto {
            child: None,
            port: free_port(),
            cert,
            key,
            log: dir.join("moto.log"),
        };
        m.spawn();
        m
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-c")
            .arg(&self.cert)
            .arg("-k")
            .arg(&self.key)
            // Small parts so short recordings span several (AWS needs 5 MiB).
            .env("S3_UPLOAD_PART_MIN_SIZE", "65536")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting moto_server");
        self.child = Some(child);
        // Polled every 100 ms. moto_server is Python importing boto/flask: a few seconds
        // idle, several times that with both cores busy; 60 s bounds that.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "moto_server exited ({st}) before listening on {}:\n{}",
                    self.port,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An S3 server the checker can reach: moto, or the Garage cluster's TLS front
/// (tests/common/garage.rs).
pub trait S3Target {
    /// `https://127.0.0.1:<port>`
    fn endpoint(&self) -> String;
    /// Access key id and secret.
    fn credentials(&self) -> (String, String) {
        ("testing".into(), "testing".into())
    }
}

impl S3Target for Moto {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// boto3 checker against the server directly (bypassing the proxy).
pub fn s3check(target: &dyn S3Target, ca: &Path, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/uplink/s3check.py");
    let (key_id, secret) = target.credentials();
    // Output through files: a listing can exceed a pipe's buffer.
    let out_f = tempfile::NamedTempFile::new().unwrap();
    let err_f = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("python3")
        .arg(script)
        .arg(target.endpoint())
        .arg(ca)
        .args(args)
        .env("S3CHECK_KEY_ID", key_id)
        .env("S3CHECK_SECRET", secret)
        .stdout(out_f.reopen().unwrap())
        .stderr(err_f.reopen().unwrap())
        .spawn()
        .expect("python3");
    let st = wait_bounded(&mut child, Duration::from_secs(120)).expect("s3check hung");
    let out = std::fs::read_to_string(out_f.path()).unwrap();
    let err = std::fs::read_to_string(err_f.path()).unwrap();
    assert!(st.success(), "s3check {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("s3check {args:?}: {e}: {out}"))
}

/// An archive bucket on moto behind TLS (its own CA), as the central tests use it.
pub struct MotoArchive {
    pub moto: Moto,
    /// The CA that signed moto's certificate.
    pub ca: PathBuf,
    /// The `[archive]` keys for central.toml / the box's `[uplink]`-style settings:
    /// endpoint, bucket, credentials_file, ca_file.
    pub toml: String,
}

/// Start moto behind TLS in `dir`, create `bucket` (Object Lock, hence versioning, as
/// `s3check mkbucket` does) and write the credentials file.
pub fn moto_archive(dir: &Path, bucket: &str) -> MotoArchive {
    let pki = Pki::new("archive");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (cert, key, _) = pki.server(false);
    let moto = Moto::start(dir, &cert, &key);
    s3check(&moto, &ca, &["mkbucket", bucket]);
    let creds = dir.join("creds");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let toml = format!(
        "endpoint = \"https://127.0.0.1:{}\"\nbucket = \"{bucket}\"\ncredentials_file = \"{}\"\nca_file = \"{}\"\n",
        moto.port,
        creds.display(),
        ca.display()
    );
    MotoArchive { moto, ca, toml }
}
