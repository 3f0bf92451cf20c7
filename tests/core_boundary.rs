//! The sans-IO boundary of `branchrec-core`, kept by a test rather than by discipline:
//!
//! 1. its dependency tree (normal and build dependencies, as `cargo tree` resolves them for
//!    the core alone) holds no IO crate — no async runtime, database, HTTP, GPIO, TPM or
//!    packet-capture library, and no OS randomness (`getrandom`);
//! 2. its non-test source never names the OS's clock, files, sockets, threads or entropy.
//!
//! `rand` and `chrono` are in the core without their OS parts (no `std`/`getrandom`, no
//! `clock`), so `OsRng`, `from_entropy` and `Utc::now` do not even compile there; the
//! source scan catches what the type system cannot (`std::fs`, `Instant::now`, …).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do IO (or read the OS clock/entropy) and so must never enter the core.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "rusqlite",
    "libsqlite3-sys",
    "reqwest",
    "hyper",
    "gpiocdev",
    "tss-esapi",
    "tss-esapi-sys",
    "pcap",
    "getrandom",
    "tracing-subscriber",
    "tracing-journald",
    "rustix",
    "nix",
];

/// Source patterns that mean IO, the wall/monotonic clock, threads or OS entropy.
const FORBIDDEN_SOURCE: &[&str] = &[
    "std::fs",
    // also after `use std::{fs, net, thread, process}`-style imports
    "fs::",
    "net::UdpSocket",
    "net::TcpStream",
    "net::TcpListener",
    "std::thread",
    "thread::",
    "std::process",
    "process::",
    "std::env::var",
    "File::open",
    "File::create",
    "OpenOptions",
    "Instant::now",
    "SystemTime::now",
    "Utc::now",
    "Local::now",
    "OsRng",
    "thread_rng",
    "from_entropy",
    "rand::random",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The package names in `cargo tree` output (`--prefix none --format {p}` lines such as
/// `tokio v1.40.0` or `bcg729 v0.1.0 (/path)`) that are forbidden.
fn forbidden_in_tree(tree: &str) -> Vec<String> {
    let mut bad: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| FORBIDDEN_CRATES.contains(name))
        .map(str::to_string)
        .collect();
    bad.sort();
    bad.dedup();
    bad
}

/// `(file, line number, pattern)` for every forbidden pattern in non-test code: a file
/// named `tests.rs` / `*_tests.rs` is test code, and so is everything from a line
/// `#[cfg(test)]` on (the house style keeps test modules at the bottom).
fn forbidden_in_source(dir: &Path) -> Vec<(PathBuf, usize, &'static str)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading the core's source") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("reading a source file");
            for (i, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("#[cfg(test)]") {
                    break;
                }
                if code.starts_with("//") {
                    continue;
                }
                for pat in FORBIDDEN_SOURCE {
                    if code.contains(pat) {
                        out.push((p.clone(), i + 1, *pat));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_checks_can_fail() {
    // What the checks say about an IO crate and an IO call, so a green run means
    // something: an edge to tokio or a clock read in core code would be reported.
    let tree = "branchrec-core v0.1.0 (/x)\nserde v1.0.0\ntokio v1.40.0\ngetrandom v0.2.15\n";
    assert_eq!(forbidden_in_tree(tree), ["getrandom", "tokio"]);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("a.rs"),
        "fn f() { let t = std::time::Instant::now(); }\n// std::fs in a comment\n\
         #[cfg(test)]\nmod tests { fn g() { std::fs::read(\"x\"); } }\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("tests.rs"),
        "fn g() { std::fs::read(\"x\"); }\n",
    )
    .unwrap();
    let found = forbidden_in_source(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1, found[0].2), (1, "Instant::now"));
    // A file read through a grouped import is caught too.
    std::fs::write(
        d.path().join("b.rs"),
        "use std::{fs, io};\nfn h() { let _ = fs::read(\"x\"); }\n",
    )
    .unwrap();
    let found = forbidden_in_source(d.path());
    assert!(
        found
            .iter()
            .any(|(p, l, pat)| p.ends_with("b.rs") && *l == 2 && *pat == "fs::"),
        "{found:?}"
    );
}

#[test]
fn core_dependency_tree_has_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for features in ["", "g729"] {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root())
            .args([
                "tree",
                "--offline",
                "-p",
                "branchrec-core",
                "-e",
                "normal,build",
            ])
            .args(["--prefix", "none", "--format", "{p}"]);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        let out = cmd.output().expect("running cargo tree");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("branchrec-core"),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("serde v"),
            "unexpected cargo tree output:\n{text}"
        );
        let bad = forbidden_in_tree(&text);
        assert!(
            bad.is_empty(),
            "IO crates in branchrec-core's dependency tree (features {features:?}): {bad:?}\n{text}"
        );
    }
}

#[test]
fn core_source_does_no_io() {
    let src = root().join("crates/branchrec-core/src");
    let found = forbidden_in_source(&src);
    assert!(
        found.is_empty(),
        "IO, clock or entropy in branchrec-core (move it to the daemon crate and pass the \
         value in):\n{}",
        found
            .iter()
            .map(|(p, l, pat)| format!("  {}:{l}: {pat}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
