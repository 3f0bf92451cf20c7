//! Issue #12, hostile disk.
//!
//! * A full disk during a call (finding 5): the data directory is an 8 MiB tmpfs, a filler
//!   file takes every free byte while the call streams, then is removed. Before the fix
//!   the call ended `damaged` (a torn chunk with later chunks appended after it) and
//!   export and verify refused all of it. Now the failed write is cut back to the last
//!   chunk boundary, the recording stalls (new calls get 503, the log says why), and once
//!   space returns it goes on on the same timeline: the export is bit-exact before and
//!   after the full interval, silence in between (marked by a `storage_gap` event), the
//!   state `complete`, verification OK.
//!
//! Needs root (mounting the tmpfs); CI runs as root.

#[path = "common/catalog.rs"]
mod catalog;
#[path = "common/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../src/bin/loadgen/g711.rs"]
mod g711;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use daemon::Install;
use siprec_client::{invite, invite_parties, Invite, TONE_ULAW};

const SOFTWARE: &str = "provider = \"software\"";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` mounted at `at`, unmounted (lazily) on drop, also on a panic.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs at {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// Fill the filesystem of `dir` with `dir/filler` until a write fails (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x5au8; 4096];
    // An 8 MiB tmpfs: at most 2048 blocks; the bound only guards against a filesystem
    // that never fills.
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            return p;
        }
    }
    panic!("{} never filled", dir.display());
}

#[test]
fn full_disk_during_a_call_keeps_everything_before_and_after() {
    assert!(
        is_root(),
        "this test needs root (mounting a tmpfs); CI runs as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    let _fs = Tmpfs::mount(&inst.data, "8m");
    let _d = inst.start();

    let Invite::Up(mut call) = invite(inst.sip, 1) else {
        panic!("call refused; log:\n{}", inst.log_text())
    };
    // 2 s recorded normally (4 flush intervals of 500 ms: chunks on disk).
    call.stream(2000);
    let filler = fill(&inst.data);
    // 2 s with the disk full: the next chunk write fails within one flush interval (the
    // stall begins by 1 s: 500 ms flush + 100 ms playout delay, ample on a loaded box).
    call.stream(1000);
    let log = inst.log_text();
    assert!(
        log.contains("writing recording failed"),
        "no write failure logged while the disk was full; log:\n{log}"
    );
    // Degraded visibly: a new call is refused while a recording cannot write (sent from
    // another thread so the call's RTP keeps flowing).
    let sip = inst.sip;
    let probe = std::thread::spawn(move || match invite(sip, 2) {
        Invite::Rejected(503, m) => assert!(m.contains("storage"), "{m}"),
        Invite::Rejected(s, m) => panic!("second call: {s}\n{m}"),
        Invite::Up(_) => panic!("a call was accepted while recording writes fail"),
    });
    call.stream(1000);
    probe.join().expect("503 probe");
    std::fs::remove_file(&filler).unwrap();
    // 3 s after space returned; the kept chunks are retried on the call's next tick.
    call.stream(3000);
    assert!(call.bye(), "BYE not answered; log:\n{}", inst.log_text());
    inst.wait_settled(1);

    let list: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    let id = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(rows[0]["state"], "complete", "{list}\n{}", inst.log_text());
    inst.cli_ok(&["recordings", "verify", &id]);
    let show: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "show", &id, "--json"])).unwrap();
    let events = show["events"].as_array().cloned().unwrap_or_default();
    let gap = events
        .iter()
        .find(|e| e["kind"] == "storage_gap")
        .unwrap_or_else(|| panic!("no storage_gap event: {show}"));
    let detail = &gap["detail"];
    let from = detail["from_ms"].as_u64().unwrap() as usize;
    let to = detail["to_ms"].as_u64().unwrap() as usize;
    // The stall began during the 2 s of full disk (after ≥ 1.5 s of audio were sealed:
    // chunks leave every 500 ms, the playout delay is 100 ms) and ended after the filler
    // was removed; the gap is at least the time the disk was full minus one flush
    // interval and the playout delay, at most that plus the retry (next tick) — 4 s
    // leaves a loaded machine two seconds of scheduling slack.
    assert!(from >= 1500, "gap from {from} ms");
    assert!((1000..=4000).contains(&(to - from)), "gap {from}..{to} ms");

    let wav = dir.path().join("call.wav");
    inst.cli_ok(&["recordings", "export", &id, "--out", wav.to_str().unwrap()]);
    let w = read_wav_mono(&wav, 0);
    let tone: Vec<i16> = TONE_ULAW.iter().map(|b| g711::ulaw_to_linear(*b)).collect();
    // The tone starts where the first packet landed; from there on the stream is the
    // 8-sample pattern on one phase, before and after the gap (same timeline).
    let start = (0..w.len().saturating_sub(160))
        .find(|&i| (0..160).all(|k| w[i + k] == tone[k % 8]))
        .expect("tone not found in the export");
    // Frames (8 per ms at 8 kHz) say exactly where the silence is.
    let gf = detail["from_frame"].as_u64().unwrap() as usize;
    let gt = detail["to_frame"].as_u64().unwrap() as usize;
    assert_eq!((gf / 8, gt / 8), (from, to));
    assert!(start < gf, "tone starts at {start}, gap at {gf}");
    for (i, s) in w.iter().enumerate().take(gf).skip(start) {
        assert_eq!(*s, tone[(i - start) % 8], "before the gap, sample {i}");
    }
    assert!(w[gf..gt].iter().all(|s| *s == 0), "the gap is silence");
    // 2 s of the 3 s streamed after the filler went (the retry and the BYE take the rest).
    let after = gt + 2 * 8000;
    assert!(w.len() >= after, "export too short: {} samples", w.len());
    for (i, s) in w.iter().enumerate().take(after).skip(gt) {
        assert_eq!(*s, tone[(i - start) % 8], "after the gap, sample {i}");
    }
}

/// One channel of a 16-bit PCM WAV.
fn read_wav_mono(path: &Path, ch: usize) -> Vec<i16> {
    let b = std::fs::read(path).unwrap();
    let mut pos = 12;
    let (mut channels, mut data) = (1usize, &b[0..0]);
    while pos + 8 <= b.len() {
        let size = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = pos + 8;
        let end = (body + size).min(b.len());
        match &b[pos..pos + 4] {
            b"fmt " => channels = usize::from(u16::from_le_bytes([b[body + 2], b[body + 3]])),
            b"data" => data = &b[body..end],
            _ => {}
        }
        pos = body + size + (size & 1);
    }
    data.chunks_exact(2)
        .skip(ch)
        .step_by(channels)
        .map(|s| i16::from_le_bytes([s[0], s[1]]))
        .collect()
}

/// The catalogue files.
const CATALOGUE_FILES: [&str; 3] = ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"];

/// Raw bytes of the catalogue and its `-wal` / `-shm` files containing `needle`.
fn catalogue_hits(data: &Path, needle: &str) -> Vec<String> {
    CATALOGUE_FILES
        .iter()
        .filter(|f| {
            std::fs::read(data.join(f))
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(|f| f.to_string())
        .collect()
}

/// Whether the decrypted page images of the catalogue (main file and every WAL frame,
/// free space included) hold `needle`: what the rows and their deleted remains are,
/// seen with the key.
fn in_pages(data: &Path, needle: &str) -> bool {
    catalog::pages::contains(&catalog::plaintext_pages(data), needle.as_bytes())
}

/// Finding 8, deletion: a deleted recording's Call-ID, AoRs and names leave the
/// catalogue's pages — main file, WAL and shared memory, seen decrypted — at once
/// (`secure_delete`, a truncating WAL checkpoint after the deletion), and its tombstone
/// keeps no Call-ID. Before: the rows survived in the WAL's page images and in free pages,
/// and the tombstone kept the Call-ID, so the page grep below found them.
#[test]
fn deleted_recording_leaves_no_personal_data_in_the_catalogue_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    // Manual deletion needs the archive unless the box is local-only.
    cfg.push_str("\n[retention]\nlocal_only = true\n");
    std::fs::write(&inst.config, cfg).unwrap();
    let _d = inst.start();
    let mut ids = Vec::new();
    for n in [4711, 4712] {
        let Invite::Up(mut call) = invite(inst.sip, n) else {
            panic!("call refused; log:\n{}", inst.log_text())
        };
        ids.push(call.call_id().to_string());
        call.stream(600);
        assert!(call.bye(), "BYE not answered");
    }
    inst.wait_settled(2);
    let list: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["recordings", "list", "--json"])).unwrap();
    let gone = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["call_id"] == ids[0].as_str())
        .unwrap_or_else(|| panic!("first call not listed: {list}"));
    let gone_id = gone["id"].as_str().unwrap().to_string();
    let personal = [
        ids[0].as_str(),
        "alice4711@example.com",
        "bob4711@example.com",
    ];
    for p in personal {
        // Encrypted at rest: never in the file bytes; in the decrypted pages until the
        // deletion (positive control: the page grep sees live data).
        let hits = catalogue_hits(&inst.data, p);
        assert!(hits.is_empty(), "{p} in plaintext in {hits:?}");
        assert!(
            in_pages(&inst.data, p),
            "{p} should be in the catalogue's pages before the deletion (positive control)"
        );
    }
    inst.cli_ok(&[
        "recordings",
        "delete",
        &gone_id,
        "--reason",
        "data-subject request",
    ]);
    for p in personal {
        let hits = catalogue_hits(&inst.data, p);
        assert!(hits.is_empty(), "{p} still in {hits:?} after the deletion");
        assert!(
            !in_pages(&inst.data, p),
            "{p} still in the catalogue's pages (free space or WAL) after the deletion"
        );
    }
    // The other recording is untouched (and the page grep does see live data).
    assert!(in_pages(&inst.data, "alice4712@example.com"));
    let t: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["retention", "tombstones", "--json"])).unwrap();
    let t = t.as_array().unwrap();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["recording_id"], gone_id.as_str());
    assert!(
        t[0].get("call_id").is_none(),
        "tombstone keeps no Call-ID: {t:?}"
    );
}

/// Every file under `dir` whose bytes contain `needle`, except the recording containers
/// (`.brec`, encrypted under their data keys) and the signed manifests beside them
/// (`.manifest.json`/`.sig`: the archive's documents, uploaded as `<key>.manifest.json`;
/// they stay plaintext until the central-archive issue #14 encrypts them to the
/// compliance key).
fn data_dir_hits(dir: &Path, needle: &str) -> Vec<PathBuf> {
    daemon::files_containing(dir, needle.as_bytes())
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            !(s.ends_with(".brec") || s.ends_with(".manifest.json") || s.ends_with(".manifest.sig"))
        })
        .collect()
}

/// Finding 8, live rows: a recorded SIPREC call whose metadata names distinctive numbers
/// and people leaves none of them — nor its Call-ID — in the raw bytes of the catalogue,
/// its WAL and shared memory, or any other file of the data directory (containers and
/// manifests aside, see [`data_dir_hits`]), while the daemon runs (fresh pages in the WAL)
/// and after it stopped; yet `recordings list --participant` finds the call by number and
/// by pattern, and the decrypted pages do hold every value (positive control). Before
/// (plaintext SQLite) the first grep found all of them in `catalog.sqlite-wal`.
#[test]
fn catalogue_at_rest_holds_no_numbers_or_names() {
    let dir = tempfile::tempdir().unwrap();
    let inst = Install::new(dir.path(), SOFTWARE);
    let d = inst.start();
    let (num1, num2) = ("+4930555017321", "+4989777046512");
    let (name1, name2) = ("Zebulon Quaxworth", "Philippa Vandersnoot");
    let aor1 = format!("sip:{num1}@pbx.branch.example");
    let aor2 = format!("tel:{num2}");
    let Invite::Up(mut call) = invite_parties(inst.sip, 9001, (&aor1, name1), (&aor2, name2))
    else {
        panic!("call refused; log:\n{}", inst.log_text())
    };
    let call_id = call.call_id().to_string();
    call.stream(1000);
    assert!(call.bye(), "BYE not answered; log:\n{}", inst.log_text());
    inst.wait_settled(1);
    let secrets = [
        num1,
        num2,
        name1,
        name2,
        call_id.as_str(),
        "pbx.branch.example",
    ];
    let check = |when: &str| {
        for s in secrets {
            let hits = data_dir_hits(&inst.data, s);
            assert!(hits.is_empty(), "{when}: {s:?} in plaintext in {hits:?}");
            assert!(
                in_pages(&inst.data, s),
                "{when}: {s:?} not in the decrypted pages (positive control)"
            );
        }
    };
    check("daemon running");
    for pattern in [num1, "+4930555*", aor1.as_str()] {
        let list: serde_json::Value = serde_json::from_str(&inst.cli_ok(&[
            "recordings",
            "list",
            "--participant",
            pattern,
            "--json",
        ]))
        .unwrap();
        let rows = list.as_array().unwrap();
        assert_eq!(rows.len(), 1, "--participant {pattern}: {list}");
        assert_eq!(rows[0]["call_id"], call_id.as_str());
        assert!(rows[0].to_string().contains(name1), "{list}");
    }
    let none: serde_json::Value = serde_json::from_str(&inst.cli_ok(&[
        "recordings",
        "list",
        "--participant",
        "+4930555017322",
        "--json",
    ]))
    .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    d.stop();
    check("daemon stopped");
    // The catalogue key is on disk only wrapped: its raw bytes are nowhere in the data dir.
    let key = catalog::raw_key(&inst.data);
    assert!(
        daemon::files_containing(&inst.data, &key).is_empty(),
        "raw catalogue key on disk"
    );
    assert!(daemon::files_containing(&inst.data, hex::encode(key).as_bytes()).is_empty());
}
