//! A real S3 cluster for the tests: three Garage nodes on loopback (replication factor 3,
//! consistent mode: a write needs two of three nodes) behind nginx terminating TLS with
//! the test CA and spreading requests over the nodes (a killed node's requests go to the
//! next one). Garage speaks plain HTTP; the box only uploads over TLS, hence nginx.
//!
//! The `garage` binary comes from `cargo install garage` (scripts/test-all caches it under
//! ~/.cache/branchrec-garage and puts it first on PATH; `BRANCHREC_GARAGE` overrides).
//! Used as `#[path = "common/garage.rs"] mod garage;` beside `mod common;` and
//! `#[path = "common/s3.rs"] mod s3;`.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, output_bounded};
use crate::s3::S3Target;

/// The access key every test cluster imports (Garage key ids are `GK` + 24 hex digits,
/// secrets 64 hex digits).
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RPC_SECRET: &str = "5f3c1a9e0b7d2c4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";

fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BRANCHREC_GARAGE") {
        return PathBuf::from(p);
    }
    let ok = Command::new("garage")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`garage` not found: these tests need a Garage S3 cluster. Install it with \
         `cargo install garage --version 2.5.0 --locked` (scripts/test-all does, cached \
         under ~/.cache/branchrec-garage) or set BRANCHREC_GARAGE"
    );
    PathBuf::from("garage")
}

fn require_nginx() {
    let ok = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`nginx` not found: install the `nginx` package (CI does)"
    );
}

fn wait_tcp(port: u16, what: &str, child: &mut Child, log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what} exited ({st}) before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within {limit:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One Garage node: its config, ports and process.
pub struct Node {
    pub config: PathBuf,
    pub rpc_port: u16,
    pub s3_port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// `<hex id>@127.0.0.1:<rpc port>`
    pub id: String,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting garage");
        wait_tcp(
            self.rpc_port,
            "garage",
            &mut child,
            &self.log,
            Duration::from_secs(60),
        );
        wait_tcp(
            self.s3_port,
            "garage",
            &mut child,
            &self.log,
            Duration::from_secs(60),
        );
        self.child = Some(child);
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A three-node Garage cluster with one bucket and one key, behind an nginx TLS front.
pub struct Garage {
    pub nodes: Vec<Node>,
    pub bucket: String,
    nginx: Option<Child>,
    nginx_conf: PathBuf,
    nginx_log: PathBuf,
    /// The TLS front's port (what the box and the checker use).
    pub port: u16,
}

impl Garage {
    /// Start the cluster in `dir`, its layout applied (every node in zone dc1, 1 GB),
    /// `bucket` created and [`KEY_ID`] allowed to read, write and own it; nginx serves TLS
    /// with `cert_pem`/`key_pem` in front of all three nodes.
    pub fn start(dir: &Path, bucket: &str, cert_pem: &str, key_pem: &str) -> Garage {
        let bin = garage_bin();
        require_nginx();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let nd = dir.join(format!("garage{i}"));
            std::fs::create_dir_all(nd.join("meta")).unwrap();
            std::fs::create_dir_all(nd.join("data")).unwrap();
            let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
            let config = nd.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\nconsistency_mode = \"consistent\"\n\
                     metadata_fsync = true\ndata_fsync = true\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{RPC_SECRET}\"\n\
                     [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                    meta = nd.join("meta").display(),
                    data = nd.join("data").display(),
                ),
            )
            .unwrap();
            // Garage refuses a config with secrets readable by others.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
            let mut n = Node {
                config,
                rpc_port,
                s3_port,
                log: nd.join("garage.log"),
                child: None,
                id: String::new(),
            };
            n.spawn();
            let out = garage(&bin, &n.config, &["node", "id", "-q"]);
            n.id = out.trim().to_string();
            assert!(n.id.contains('@'), "garage node id: {out}");
            nodes.push(n);
        }
        let c0 = nodes[0].config.clone();
        for n in &nodes[1..] {
            garage(&bin, &c0, &["node", "connect", &n.id]);
        }
        for n in &nodes {
            let short = n.id.split('@').next().unwrap();
            garage(
                &bin,
                &c0,
                &["layout", "assign", "-z", "dc1", "-c", "1G", &short[..16]],
            );
        }
        garage(&bin, &c0, &["layout", "apply", "--version", "1"]);
        // The layout reaches every node by gossip: bucket creation needs a quorum.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(&bin)
                .arg("-c")
                .arg(&c0)
                .args(["bucket", "create", bucket])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "garage bucket create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        garage(
            &bin,
            &c0,
            &[
                "key",
                "import",
                "--yes",
                "-n",
                "branchrec-test",
                KEY_ID,
                SECRET,
            ],
        );
        garage(
            &bin,
            &c0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", KEY_ID,
            ],
        );
        let cert = dir.join("garage-front.crt");
        let key = dir.join("garage-front.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let port = free_port();
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir_all(nginx_dir.join("tmp")).unwrap();
        let upstreams: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "    server 127.0.0.1:{} max_fails=1 fail_timeout=3s;\n",
                    n.s3_port
                )
            })
            .collect();
        let nginx_conf = nginx_dir.join("nginx.conf");
        let t = nginx_dir.join("tmp");
        std::fs::write(
            &nginx_conf,
            format!(
                "daemon off;\nworker_processes 1;\nuser root;\npid {pid};\n\
                 error_log {dir}/error.log warn;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {dir}/access.log;\n\
                 client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
                 fastcgi_temp_path {t}/fcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
                 upstream garage {{\n{upstreams}  }}\n\
                 server {{\n    listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 client_max_body_size 0;\n    proxy_request_buffering off;\n    proxy_buffering off;\n\
                 location / {{\n      proxy_pass http://garage;\n      proxy_http_version 1.1;\n\
                 proxy_set_header Host $http_host;\n      proxy_set_header Connection \"\";\n\
                 proxy_connect_timeout 1s;\n      proxy_next_upstream error timeout http_502 http_503;\n\
                 }}\n  }}\n}}\n",
                pid = nginx_dir.join("nginx.pid").display(),
                dir = nginx_dir.display(),
                t = t.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let mut g = Garage {
            nodes,
            bucket: bucket.to_string(),
            nginx: None,
            nginx_conf,
            nginx_log: nginx_dir.join("nginx.out"),
            port,
        };
        g.spawn_nginx();
        g
    }

    fn spawn_nginx(&mut self) {
        let log = std::fs::File::create(&self.nginx_log).unwrap();
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&self.nginx_conf)
            // A non-root developer run: `user` is ignored with a warning.
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting nginx");
        wait_tcp(
            self.port,
            "nginx",
            &mut child,
            &self.nginx_log,
            Duration::from_secs(30),
        );
        self.nginx = Some(child);
    }

    /// SIGKILL node `i` (its data stays on disk).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again on its data.
    pub fn restart_node(&mut self, i: usize) {
        assert!(!self.nodes[i].running());
        self.nodes[i].spawn();
    }

    /// Wait until node `from` sees every node connected (`garage status` lists no failed
    /// node), at most `limit`.
    pub fn wait_healthy(&self, from: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = output_bounded(
                Command::new(garage_bin())
                    .arg("-c")
                    .arg(&self.nodes[from].config)
                    .arg("status"),
                Duration::from_secs(30),
            );
            let text = out
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_else(|| "garage status hung".into());
            if text.contains("HEALTHY NODES") && !text.to_ascii_uppercase().contains("FAILED") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy after {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `garage status` as node 0 sees it.
    pub fn status(&self) -> String {
        garage(&garage_bin(), &self.nodes[0].config, &["status"])
    }

    /// `garage` admin command against node `i`.
    pub fn admin(&self, i: usize, args: &[&str]) -> String {
        garage(&garage_bin(), &self.nodes[i].config, args)
    }
}

impl S3Target for Garage {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    fn credentials(&self) -> (String, String) {
        (KEY_ID.to_string(), SECRET.to_string())
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut c) = self.nginx.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// Run a garage admin command, bounded; panics with its output on failure.
fn garage(bin: &Path, config: &Path, args: &[&str]) -> String {
    let out = output_bounded(
        Command::new(bin).arg("-c").arg(config).args(args),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|| panic!("garage {args:?} hung"));
    assert!(
        out.status.success(),
        "garage {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
