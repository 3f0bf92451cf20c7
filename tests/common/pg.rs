//! A real PostgreSQL 15 for a test: `initdb` and `pg_ctl` from Debian's postgresql-15
//! (/usr/lib/postgresql/15/bin) in a directory of the test, Unix socket only (no TCP),
//! superuser `central`, trust authentication. PostgreSQL refuses to run as root (CI runs
//! as root): then the cluster belongs to `nobody` and every command runs through
//! `runuser -u nobody`. Stopped (immediate) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Pg {
    data: PathBuf,
    as_nobody: bool,
    /// libpq connection string.
    pub conninfo: String,
}

fn cmd(as_nobody: bool, prog: &str) -> Command {
    let p = format!("{BIN}/{prog}");
    if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(p);
        c
    } else {
        Command::new(p)
    }
}

impl Pg {
    /// Initialise and start a cluster in `dir` (created; every ancestor must be
    /// searchable by `nobody` when running as root).
    pub fn start(dir: &Path) -> Pg {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "{BIN}/initdb missing: install the Debian package postgresql-15 (scripts/test-all does)"
        );
        let as_nobody = rustix::process::getuid().is_root();
        std::fs::create_dir_all(dir).unwrap();
        if as_nobody {
            std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
        }
        let data = dir.join("data");
        let out = crate::common::output_bounded(
            cmd(as_nobody, "initdb").arg("-D").arg(&data).args([
                "-U",
                "central",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            Duration::from_secs(120),
        )
        .expect("initdb hung");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-k {} -c listen_addresses= -c fsync=off -c shared_buffers=64MB",
            dir.display()
        );
        let out = crate::common::output_bounded(
            cmd(as_nobody, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &opts, "-l"])
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "60", "start"]),
            Duration::from_secs(90),
        )
        .expect("pg_ctl start hung");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
        let conninfo = format!("host={} user=central dbname=postgres", dir.display());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&conninfo, postgres::NoTls) {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "PostgreSQL not reachable: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Pg {
            data,
            as_nobody,
            conninfo,
        }
    }

    /// A client.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo, postgres::NoTls).expect("connect")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = crate::common::output_bounded(
            cmd(self.as_nobody, "pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]),
            Duration::from_secs(45),
        );
    }
}
