//! Benchmark of `recordings list` filters on a large catalogue, plaintext against
//! encrypted (SQLCipher, issue 12).
//!
//! ```sh
//! cargo run --release --features g729 --example list_bench -- [ROWS]   # default 1,000,000
//! ```
//! Creates a temporary plaintext catalogue with the real schema (`Catalog::
//! open_unencrypted`, the layout of builds before encryption), fills it in one transaction
//! (ROWS recordings over one year, two participants each, 10 % tagged `support`, 1 %
//! `mifid`, three active holds), then converts a copy with the daemon's upgrade path
//! (`CatalogAccess::encrypt_if_plaintext`, under a catalogue key wrapped by a software
//! KEK) — the same rows in both files. Then times `Catalog::list` — exactly what
//! `branchrec recordings list` runs — for each filter on both, median of 5 runs, and the
//! cost of opening the catalogue (what every CLI command pays).

use std::time::Instant;

use branchrec::catalog::{Catalog, CatalogAccess, ListFilter};
use branchrec::lifecycle::holds::HoldTarget;
use rusqlite::params;

fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("catalog.sqlite");
    let mut cat = Catalog::open_unencrypted(&path)?;
    let t0 = Instant::now();
    let base: i64 = 1_704_067_200_000; // 2024-01-01
    let year_ms: i64 = 365 * 86_400_000;
    {
        let mut c = rusqlite::Connection::open(&path)?;
        c.execute_batch("PRAGMA synchronous = OFF; PRAGMA journal_mode = WAL;")?;
        let tx = c.transaction()?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO recordings (id, source, call_id, session_id, src_addr, started_at, ended_at,
                     duration_ms, codec, sample_rate, channels, state, file_path, file_sha256, file_bytes,
                     kek_id, stats_json, created_at, rule, retention_class, retention_ms, expires_at)
                 VALUES (?1, 'siprec', ?2, ?3, '192.0.2.1:5060', ?4, ?5, ?6, 'PCMU', 8000, 2, 'complete',
                     ?7, NULL, 1000, 'kf1:x', NULL, ?4, NULL, 'default', 7776000000, ?5 + 7776000000)",
            )?;
            let mut part = tx.prepare(
                "INSERT INTO participants (recording_id, participant_id, name, aor, number) VALUES (?1, ?2, NULL, ?3, ?4)",
            )?;
            let mut tag = tx.prepare("INSERT INTO tags (recording_id, tag) VALUES (?1, ?2)")?;
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for i in 0..rows {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = format!("{:08x}-0000-4000-8000-{:012x}", i, x & 0xFFFF_FFFF_FFFF);
                let start = base + (i as i64 * year_ms / rows as i64);
                let dur = 30_000 + (x % 600_000) as i64;
                let call = format!("call-{i}@sbc");
                ins.execute(params![
                    id,
                    call,
                    format!("s-{i}"),
                    start,
                    start + dur,
                    dur,
                    format!("recordings/{id}.brec")
                ])?;
                let ext = format!("{}", 1000 + x % 200);
                let ext_num = format!("+4930123{ext}");
                let remote = format!("+49{}", 100_000_000 + (x >> 8) % 899_999_999);
                part.execute(params![id, "a", format!("sip:{ext_num}@pbx"), ext_num])?;
                part.execute(params![id, "b", format!("sip:{remote}@pstn"), remote])?;
                if x % 10 == 0 {
                    tag.execute(params![id, "support"])?;
                }
                if x % 100 == 1 {
                    tag.execute(params![id, "mifid"])?;
                }
            }
        }
        tx.commit()?;
        c.execute_batch("ANALYZE;")?;
    }
    let fill = t0.elapsed();
    let now = base + year_ms;
    cat.add_hold(
        &HoldTarget::Participant("+4930123105*".into()),
        "case 1",
        "bench",
        now,
    )?;
    cat.add_hold(
        &HoldTarget::Window {
            from: branchrec::time::UnixMs(base + year_ms / 2),
            to: branchrec::time::UnixMs(base + year_ms / 2 + 1_800_000),
        },
        "case 2",
        "bench",
        now,
    )?;
    cat.add_hold(
        &HoldTarget::Call(format!("call-{}@sbc", rows / 3)),
        "case 3",
        "bench",
        now,
    )?;
    drop(cat);
    // The encrypted twin: a copy converted by the daemon's upgrade path.
    let enc = dir.path().join("encrypted.sqlite");
    std::fs::copy(&path, &enc)?;
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys)?;
    let kek = branchrec::vault::KeyFileVault::from_key(rand::random());
    let (access, _) = CatalogAccess::unlock_or_create(&enc, &keys, &kek)?;
    let t1 = Instant::now();
    access.encrypt_if_plaintext()?;
    let convert = t1.elapsed();
    println!(
        "catalogue: {rows} recordings, {} participants, filled in {:.1} s; plaintext file {} MiB, \
         encrypted {} MiB (converted in {:.1} s)",
        rows * 2,
        fill.as_secs_f64(),
        std::fs::metadata(&path)?.len() / (1024 * 1024),
        std::fs::metadata(&enc)?.len() / (1024 * 1024),
        convert.as_secs_f64()
    );
    let median = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times[2])
    };
    let open_plain = median(&mut || {
        Catalog::open_unencrypted_read_only(&path)?;
        Ok(())
    })?;
    let open_enc = median(&mut || {
        access.open_read_only()?;
        Ok(())
    })?;
    let plain = Catalog::open_unencrypted_read_only(&path)?;
    let encrypted = access.open_read_only()?;
    let day = 86_400_000;
    let f = |lf: ListFilter| ListFilter { now_ms: now, ..lf };
    let cases: Vec<(&str, ListFilter)> = vec![
        (
            "no filter, --limit 50",
            f(ListFilter {
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--since/--until one day",
            f(ListFilter {
                since_ms: Some(base + 100 * day),
                until_ms: Some(base + 101 * day),
                ..Default::default()
            }),
        ),
        (
            "--since 1h ago, --limit 50",
            f(ListFilter {
                since_ms: Some(now - 3_600_000),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--participant exact number (no match)",
            f(ListFilter {
                participant: Some("+491234567890".into()),
                ..Default::default()
            }),
        ),
        (
            "--participant exact number, --limit 50",
            f(ListFilter {
                participant: Some("+49301231150".into()),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--participant '+4930123105*' (~50,000 match)",
            f(ListFilter {
                participant: Some("+4930123105*".into()),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--participant 'sip:+49301231199@pbx' (aor)",
            f(ListFilter {
                participant: Some("sip:+49301231199@pbx".into()),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--tag mifid --limit 50",
            f(ListFilter {
                tag: Some("mifid".into()),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--tag mifid (all ~10,000)",
            f(ListFilter {
                tag: Some("mifid".into()),
                ..Default::default()
            }),
        ),
        (
            "--held --limit 50",
            f(ListFilter {
                held: Some(true),
                limit: Some(50),
                ..Default::default()
            }),
        ),
        (
            "--held (all)",
            f(ListFilter {
                held: Some(true),
                ..Default::default()
            }),
        ),
        (
            "--call call-…",
            f(ListFilter {
                call: Some(format!("call-{}@sbc", rows / 2)),
                ..Default::default()
            }),
        ),
        (
            "--state interrupted (none)",
            f(ListFilter {
                state: Some("interrupted".parse()?),
                ..Default::default()
            }),
        ),
        (
            "--tag support --since 30d --limit 50",
            f(ListFilter {
                tag: Some("support".into()),
                since_ms: Some(now - 30 * day),
                limit: Some(50),
                ..Default::default()
            }),
        ),
    ];
    println!(
        "{:<45} {:>8} {:>14} {:>14} {:>7}",
        "filter", "rows", "plaintext ms", "encrypted ms", "ratio"
    );
    println!(
        "{:<45} {:>8} {open_plain:>14.2} {open_enc:>14.2} {:>7.2}",
        "(open read-only, schema check)",
        "",
        open_enc / open_plain
    );
    for (name, lf) in cases {
        let mut n = 0;
        let p = median(&mut || {
            n = plain.list(&lf)?.len();
            Ok(())
        })?;
        let mut m = 0;
        let e = median(&mut || {
            m = encrypted.list(&lf)?.len();
            Ok(())
        })?;
        assert_eq!(n, m, "{name}: the two catalogues differ");
        println!("{name:<45} {n:>8} {p:>14.2} {e:>14.2} {:>7.2}", e / p);
    }
    Ok(())
}
