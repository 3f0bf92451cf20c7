//! Issue #12, finding 8 (encrypted catalogue), end to end: someone holding the box's disk
//! reads every byte of the data directory. The daemon records real SIPREC calls whose
//! metadata names distinctive phone numbers and people (one name non-ASCII), DTMF digits
//! are keyed during a call, some recordings are deleted; then the raw bytes of
//! `catalog.sqlite`, `-wal`, `-shm` and of every other file of the data directory outside
//! the encrypted store (tombstones live in the catalogue; the key files, the daemon status
//! document, the lock file, …) are scanned for every number, name, AoR and Call-ID of the
//! test in UTF-8/ASCII, UTF-16LE and UTF-16BE: none is found, with the daemon running and
//! after it stopped.
//!
//! The same scan can fail: run over a plaintext catalogue the test makes from the same rows
//! (`sqlcipher_export` to an unkeyed file: the layout of the builds before encryption) it
//! finds every live call's number, name and Call-ID; and the decrypted page images hold the
//! live values (so the scanned bytes are the catalogue's), but not the deleted calls'
//! (secure_delete + WAL checkpoint) nor any DTMF digit (masked by default).

#[path = "common/catalog.rs"]
mod catalog;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::path::{Path, PathBuf};

use daemon::Install;
use siprec_client::{invite_parties_sdp, Invite, SDP_TWO_STREAMS_DTMF};

const SOFTWARE: &str = "provider = \"software\"";

/// The forms a string can take in a file: its UTF-8 bytes (ASCII for most of ours),
/// UTF-16LE and UTF-16BE.
fn forms(s: &str) -> [(&'static str, Vec<u8>); 3] {
    let u16s: Vec<u16> = s.encode_utf16().collect();
    [
        ("utf-8", s.as_bytes().to_vec()),
        (
            "utf-16le",
            u16s.iter().flat_map(|c| c.to_le_bytes()).collect(),
        ),
        (
            "utf-16be",
            u16s.iter().flat_map(|c| c.to_be_bytes()).collect(),
        ),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, except the encrypted store: the recording containers
/// (`.brec`, each under its own data key) and the signed manifests beside them (the
/// archive's documents, still plaintext until the central-archive issue #14 encrypts
/// them to the compliance key; `docs/catalog-schema.md`, "What someone holding the SSD
/// sees").
fn scanned_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let s = p.to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if !(s.ends_with(".brec")
                || s.ends_with(".manifest.json")
                || s.ends_with(".manifest.sig"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `(secret, form, file)` for every secret found in any form in any of `files`.
fn scan(files: &[PathBuf], secrets: &[String]) -> Vec<(String, &'static str, PathBuf)> {
    let mut hits = Vec::new();
    for f in files {
        let Ok(b) = std::fs::read(f) else { continue };
        for s in secrets {
            for (form, n) in forms(s) {
                if contains(&b, &n) {
                    hits.push((s.clone(), form, f.clone()));
                }
            }
        }
    }
    hits
}

struct Party {
    number: &'static str,
    name: &'static str,
    aor: String,
}

fn party(number: &'static str, name: &'static str, sip: bool) -> Party {
    let aor = if sip {
        format!("sip:{number}@pbx.hostile-catalog.example")
    } else {
        format!("tel:{number}")
    };
    Party { number, name, aor }
}

/// See the module comment.
#[test]
fn catalogue_and_data_dir_hold_no_numbers_names_or_call_ids() {
    // The scanner itself sees every form it claims to (a file with one form of each).
    let probe = tempfile::tempdir().unwrap();
    for (i, (form, b)) in forms("Zoë Ølstrup").into_iter().enumerate() {
        let p = probe.path().join(format!("f{i}"));
        std::fs::write(&p, [b"xx".as_slice(), &b, b"yy"].concat()).unwrap();
        let hits = scan(&[p], &["Zoë Ølstrup".to_string()]);
        assert!(
            hits.iter().any(|h| h.1 == form),
            "{form} not seen: {hits:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    // Operator deletion without an archive needs a local-only box.
    cfg.push_str("\n[retention]\nlocal_only = true\n");
    std::fs::write(&inst.config, cfg).unwrap();
    let d = inst.start();

    // Three calls, two parties each; the first keeps DTMF, the other two are deleted.
    let calls = [
        (
            party("+4930555017321", "Zebulon Quaxworth", true),
            party("+4989777046512", "Zoë Ølstrup-Ñúñez", false),
        ),
        (
            party("+4940333091877", "Philippa Vandersnoot", true),
            party("+4969222064419", "Ignatius Plumtree", true),
        ),
        (
            party("+4922111058263", "Marguerite Fennimore", false),
            party("+4971144039952", "Barnabas Whitlock", true),
        ),
    ];
    let pin = [7u8, 3, 9, 1];
    let mut call_ids = Vec::new();
    for (k, (a, b)) in calls.iter().enumerate() {
        let Invite::Up(mut call) = invite_parties_sdp(
            inst.sip,
            7100 + k as u32,
            SDP_TWO_STREAMS_DTMF,
            (&a.aor, a.name),
            (&b.aor, b.name),
        ) else {
            panic!("call {k} refused; log:\n{}", inst.log_text())
        };
        call_ids.push(call.call_id().to_string());
        call.stream(400);
        if k == 0 {
            for &digit in &pin {
                call.send_dtmf(0, digit, 100);
                call.stream(100);
            }
        }
        call.stream(300);
        assert!(
            call.bye(),
            "BYE {k} not answered; log:\n{}",
            inst.log_text()
        );
    }
    inst.wait_settled(3);

    let list: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
    let id_of = |call_id: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["call_id"] == call_id)
            .unwrap_or_else(|| panic!("{call_id} not listed: {list}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kept = id_of(&call_ids[0]);

    // DTMF: kept as events with their timing, the digits masked (no [privacy] setting).
    let show: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "show", &kept, "--json"])).unwrap();
    let dtmf = show["dtmf"].as_array().expect("dtmf array");
    assert_eq!(dtmf.len(), pin.len(), "one event per key press: {dtmf:?}");
    for e in dtmf {
        assert_eq!(e["digit"], "masked", "{e}");
        assert!(e["start_ms"].as_i64().is_some(), "{e}");
        let dur = e["duration_ms"].as_i64().expect("duration_ms");
        assert!((60..=160).contains(&dur), "{e}");
    }

    // Delete the second and third calls.
    for cid in &call_ids[1..] {
        let id = id_of(cid);
        inst.cli_ok(&[
            "recordings",
            "delete",
            &id,
            "--reason",
            "data-subject request",
        ]);
    }
    let left: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    // Still searchable under encryption, by number and by pattern.
    for pattern in [calls[0].0.number, "+4930555*", calls[0].1.aor.as_str()] {
        let l: serde_json::Value = serde_json::from_str(&inst.cli_ok(&[
            "recordings",
            "list",
            "--participant",
            pattern,
            "--json",
        ]))
        .unwrap();
        assert_eq!(
            l.as_array().unwrap().len(),
            1,
            "--participant {pattern}: {l}"
        );
    }
    let tomb: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["retention", "tombstones", "--json"])).unwrap();
    assert_eq!(tomb.as_array().unwrap().len(), 2, "{tomb}");

    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for (k, (a, b)) in calls.iter().enumerate() {
        let v = if k == 0 { &mut live } else { &mut deleted };
        v.push(call_ids[k].clone());
        for p in [a, b] {
            v.push(p.number.to_string());
            v.push(p.name.to_string());
            v.push(p.aor.clone());
        }
    }
    let all: Vec<String> = live.iter().chain(&deleted).cloned().collect();
    // The tombstones, as the CLI prints them, hold none of it either.
    let hits: Vec<&String> = all
        .iter()
        .filter(|s| tomb.to_string().contains(s.as_str()))
        .collect();
    assert!(hits.is_empty(), "tombstones keep {hits:?}: {tomb}");

    let check = |when: &str| {
        let files = scanned_files(&inst.data);
        for sfx in ["", "-wal", "-shm"] {
            let p = inst.data.join(format!("catalog.sqlite{sfx}"));
            assert!(
                sfx != "" || files.contains(&p),
                "{when}: {} not scanned",
                p.display()
            );
        }
        eprintln!("{when}: scanned {files:#?}");
        let hits = scan(&files, &all);
        assert!(
            hits.is_empty(),
            "{when}: personal data in plaintext: {hits:#?}\n(files scanned: {files:#?})"
        );
        // What the scan looked at is the catalogue: its decrypted pages hold the live
        // call (positive control) but no longer the deleted calls, free pages and WAL
        // frames included, and no DTMF digit.
        let pages = catalog::plaintext_pages(&inst.data);
        for s in &live {
            assert!(
                catalog::pages::contains(&pages, s.as_bytes()),
                "{when}: live {s:?} not in the decrypted pages"
            );
        }
        for s in &deleted {
            assert!(
                !catalog::pages::contains(&pages, s.as_bytes()),
                "{when}: deleted {s:?} survives in the catalogue's pages"
            );
        }
        assert!(catalog::pages::contains(&pages, br#""digit":"masked""#));
        for digit in pin {
            let stored = format!("\"digit\":\"{digit}\"");
            assert!(
                !catalog::pages::contains(&pages, stored.as_bytes()),
                "{when}: DTMF digit {digit} stored"
            );
        }
    };
    check("daemon running");
    // The scan can fail: a plaintext catalogue of the same rows (the layout before
    // encryption) is full of them.
    let plain = dir.path().join("plaintext-copy.sqlite");
    {
        // The keyed connection opens without CREATE: make the (empty) file first.
        std::fs::File::create(&plain).unwrap();
        let c = catalog::connection(&inst.data);
        c.execute(
            "ATTACH DATABASE ?1 AS plain KEY ''",
            [plain.to_str().unwrap()],
        )
        .unwrap();
        c.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))
            .unwrap();
        c.execute_batch("DETACH DATABASE plain").unwrap();
    }
    let found = scan(std::slice::from_ref(&plain), &live);
    for s in &live {
        assert!(
            found.iter().any(|h| &h.0 == s),
            "negative control: {s:?} not found in a plaintext catalogue: {found:?}"
        );
    }
    std::fs::remove_file(&plain).unwrap();

    d.stop();
    check("daemon stopped");
}
