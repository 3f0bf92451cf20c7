//! `branchrec-central bench-index`: fills a scratch schema `bench` with N synthetic
//! recordings from many boxes and measures what matters at a bank's scale.
//!
//! Each synthetic recording is a metadata document shaped like a box's (participants
//! with tel:/sip: AoRs and names, channels, DTMF and hold events, stats, metadata
//! versions, archive record, eight published audit heads) and an archive index; rows
//! come from [`plan::rows_from_document`], the indexer's own parser. The first
//! `insert_sample` recordings are written one transaction each through
//! [`db::write_recording`] (the indexer's path: its rate is the per-recording ingest
//! rate); the rest through [`db::copy_recordings`] (COPY of the same rows), then ANALYZE.
//! Not measured here: S3 GETs, HPKE opening and the signature check (per recording:
//! one ECDH in the HSM, two AEAD opens, one Ed25519 verify).

use std::time::Instant;

use postgres::Client;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use super::plan::{self, Trust};
use super::search::{self, Filter};
use super::{db, IndexError};

/// Options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scratch database.
    pub database: String,
    /// Recordings.
    pub recordings: u64,
    /// Boxes.
    pub boxes: u32,
    /// Through the INSERT path.
    pub insert_sample: u64,
    /// Queries per kind.
    pub queries: u32,
    /// Only search.
    pub search_only: bool,
    /// Scratch schema.
    pub schema: String,
}

/// Latencies of one search kind, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What.
    pub kind: String,
    /// Queries run.
    pub queries: u32,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// Max.
    pub max_ms: f64,
    /// Mean hits per query.
    pub mean_hits: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Recordings in the index.
    pub recordings: i64,
    /// Boxes.
    pub boxes: u32,
    /// Per-recording transactions (the indexer's write path), recordings/s.
    pub insert_rate_per_s: Option<f64>,
    /// COPY bulk path, recordings/s (generation and parsing included).
    pub copy_rate_per_s: Option<f64>,
    /// Seconds of the whole load (both paths, ANALYZE included).
    pub load_s: Option<f64>,
    /// Searches.
    pub searches: Vec<Latency>,
    /// Total size of the schema's relations, bytes.
    pub size_bytes: i64,
    /// Size per million recordings, GB.
    pub gb_per_million: f64,
    /// Relation sizes (table with its indexes and TOAST), bytes.
    pub tables: Vec<(String, i64)>,
}

const FIRST: [&str; 12] = [
    "Alice", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Katia", "Léo",
];
const LAST: [&str; 12] = [
    "Ashworth", "Brennan", "Castillo", "Dubois", "Eriksen", "Fontaine", "Garnier", "Haddad",
    "Ivanova", "Jansen", "Keller", "Lambert",
];
/// Distinct customer numbers (a bank's customer base is large; numbers repeat).
const NUMBERS: u64 = 2_000_000;
/// Days the recordings spread over.
const DAYS: i64 = 365;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn customer(k: u64) -> String {
    format!("+4420{:08}", k % NUMBERS * 37 % 100_000_000)
}

fn uuid_of(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.gen();
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// One synthetic recording's index and document (deterministic in `k`).
pub fn synthetic(k: u64, boxes: u32) -> (crate::compliance::ArchiveIndex, serde_json::Value) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(k ^ 0x5eed_1d3a);
    let bx = (k % u64::from(boxes)) as u32;
    let box_id = format!("br-{bx:04}");
    let site = format!("site-{:03}", bx / 4);
    let id = uuid_of(&mut rng);
    let day = rng.gen_range(0..DAYS);
    let start = T0 + day * 86_400_000 + rng.gen_range(7 * 3_600_000..19 * 3_600_000);
    let dur: i64 = rng.gen_range(8_000..1_200_000);
    let cust = customer(rng.gen_range(0..NUMBERS));
    let agent_ext = format!("{:04}", 1000 + bx * 7 % 9000);
    let agent = format!("sip:{agent_ext}@{}.bank.example", site);
    let cname = format!(
        "{} {}",
        FIRST[rng.gen_range(0..FIRST.len())],
        LAST[rng.gen_range(0..LAST.len())]
    );
    let aname = format!(
        "{} {}",
        FIRST[rng.gen_range(0..FIRST.len())],
        LAST[rng.gen_range(0..LAST.len())]
    );
    let inbound = rng.gen_bool(0.6);
    let mut tags = Vec::new();
    if rng.gen_bool(0.05) {
        tags.push("vip");
    }
    if rng.gen_bool(0.02) {
        tags.push("complaint");
    }
    if rng.gen_bool(0.3) {
        tags.push("sales");
    }
    let held = rng.gen_bool(0.002);
    let key = format!(
        "{site}/{box_id}/2026/{:02}/{:02}/{id}",
        1 + day / 31 % 12,
        1 + day % 28
    );
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let mut participants = vec![
        json!({"participant_id": "p1", "name": cname, "aor": format!("tel:{cust}"),
               "joined_at_ms": start, "left_at_ms": null, "channel": 0}),
        json!({"participant_id": "p2", "name": aname, "aor": agent,
               "other_aors": [format!("tel:+3314{:06}{}", bx, &agent_ext[..2])],
               "joined_at_ms": start, "left_at_ms": null, "channel": 1}),
    ];
    if rng.gen_bool(0.1) {
        participants.push(json!({"participant_id": "p3", "name": null,
            "aor": format!("tel:{}", customer(rng.gen_range(0..NUMBERS))),
            "joined_at_ms": start + dur / 2, "left_at_ms": start + dur - 1000, "channel": null}));
    }
    let mut events = vec![];
    for d in 0..rng.gen_range(0..6) {
        events.push(
            json!({"at_ms": 1000 + d * 400, "kind": "dtmf", "channel": 0,
            "detail": {"digit": (b'0' + (d as u8 % 10)) as char, "duration_ms": 120}}),
        );
    }
    if rng.gen_bool(0.2) {
        events.push(json!({"at_ms": dur / 3, "kind": "hold", "channel": 1, "detail": null}));
        events.push(
            json!({"at_ms": dur / 3 + 20_000, "kind": "resume", "channel": 1, "detail": null}),
        );
    }
    let heads: Vec<serde_json::Value> = (0..8)
        .map(|h| {
            let seq = 1000 + (k / u64::from(boxes)) as i64 * 3 + h;
            json!({"seq": seq, "hash": format!("{:064x}", rng.gen::<u128>()), "at_ms": start - 3_600_000 + h * 60_000,
                   "key_id": format!("ed1:{:016x}", bx as u64 * 7919), "signature": format!("{:0128x}", rng.gen::<u128>()),
                   "ordinal": seq - 900, "counter": seq - 900})
        })
        .collect();
    let bytes = dur as u64 * 16 + 4096;
    let csha = format!("{:064x}", rng.gen::<u128>());
    let doc = json!({
        "id": id, "call_id": format!("{:032x}@10.{}.{}.1", rng.gen::<u128>(), bx / 256, bx % 256),
        "session_id": format!("{:032x}", rng.gen::<u128>()),
        "source": "siprec", "start": iso(start), "end": iso(start + dur), "duration_ms": dur,
        "participants": participants,
        "channels": [
            {"channel": 0, "participant_id": "p1", "label": "1", "mapping_source": "label"},
            {"channel": 1, "participant_id": "p2", "label": "2", "mapping_source": "label"}
        ],
        "codec": "PCMA/8000", "storage_format": "wav", "state": "finished",
        "rule": if inbound { "inbound-all" } else { "outbound-sales" }, "tags": tags,
        "retention_class": "standard", "held": held,
        "direction": if inbound { "inbound" } else { "outbound" },
        "src_addr": format!("10.{}.{}.1:5060", bx / 256, bx % 256), "sample_rate": 8000,
        "file_path": format!("recordings/2026/{id}.brec"), "file_sha256": csha, "file_bytes": bytes,
        "kek_id": "tpm1:0", "stats": {"streams": [
            {"packets": dur / 20, "lost": rng.gen_range(0..20), "jitter_ms": rng.gen_range(0..30)},
            {"packets": dur / 20, "lost": rng.gen_range(0..20), "jitter_ms": rng.gen_range(0..30)}]},
        "dtmf": [], "events": events,
        "metadata_versions": [{"seq": 1, "received_at": iso(start), "sip_method": "INVITE",
            "content_type": "application/rs-metadata+xml", "data_mode": "complete", "bytes": 1840}],
        "archive": {"key": key, "box_id": box_id, "site": site, "bytes": bytes, "sha256": csha,
            "etag": format!("\"{:032x}-1\"", rng.gen::<u128>()), "checksum_sha256": "", "uploaded_at": iso(start + dur + 60_000)},
        "audit": {"heads": heads},
        "signer": {"algorithm": "ed25519", "public_key_der": "MCowBQYDK2VwAyEA1Lq8V0l8Xo0aXo7Jm2C1p3s9o1d0n1cN3u2Qf4w5YhU="}
    });
    let idx = crate::compliance::ArchiveIndex {
        kind: "document".into(),
        box_id,
        site,
        recording_id: id,
        started_at_ms: start,
        ended_at_ms: Some(start + dur),
        duration_ms: Some(dur),
        container_key: key,
        container_bytes: bytes,
        container_sha256: format!("{:064x}", rng.gen::<u128>()),
        content_sha256: csha,
        compliance_key_id: "ck-2026".into(),
    };
    (idx, doc)
}

fn rows(k: u64, boxes: u32) -> plan::RecordingRows {
    let (idx, doc) = synthetic(k, boxes);
    let key = idx.container_key.clone();
    plan::rows_from_document(&idx, &doc, &key, Trust::Enrolled, format!("{k:x},a,b,c"))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Run the bench.
pub fn run(o: &BenchOptions) -> Result<BenchReport, IndexError> {
    let mut c = Client::connect(&o.database, postgres::NoTls)?;
    let mut insert_rate = None;
    let mut copy_rate = None;
    let mut load_s = None;
    if !o
        .schema
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch == '_' || ch.is_ascii_digit())
    {
        return Err(IndexError::Config(format!(
            "schema {:?}: [a-z0-9_] only",
            o.schema
        )));
    }
    if !o.search_only {
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0};",
            o.schema
        ))?;
    }
    c.batch_execute(&format!("SET search_path TO {}", o.schema))?;
    // As the indexer's session (cli::run): commits not waited for.
    c.batch_execute("SET synchronous_commit TO off")?;
    db::migrate(&mut c)?;
    let now = super::now_ms();
    if !o.search_only {
        let t_load = Instant::now();
        for b in 0..o.boxes {
            db::ensure_box(
                &mut c,
                &format!("br-{b:04}"),
                Some(&format!("site-{:03}", b / 4)),
                now,
            )?;
        }
        let sample = o.insert_sample.min(o.recordings);
        let t = Instant::now();
        for k in 0..sample {
            let r = rows(k, o.boxes);
            let mut tx = c.transaction()?;
            db::write_recording(&mut tx, &r, now)?;
            tx.commit()?;
        }
        if sample > 0 {
            insert_rate = Some(sample as f64 / t.elapsed().as_secs_f64());
            eprintln!(
                "INSERT path: {sample} recordings at {:.0}/s",
                insert_rate.unwrap_or_default()
            );
        }
        let t = Instant::now();
        let mut k = sample;
        let mut last_report = Instant::now();
        while k < o.recordings {
            let end = (k + 5000).min(o.recordings);
            let batch: Vec<_> = (k..end).map(|i| rows(i, o.boxes)).collect();
            db::copy_recordings(&mut c, &batch, now)?;
            k = end;
            if last_report.elapsed().as_secs() >= 30 {
                last_report = Instant::now();
                eprintln!(
                    "COPY path: {k} / {} ({:.0}/s)",
                    o.recordings,
                    (k - sample) as f64 / t.elapsed().as_secs_f64()
                );
            }
        }
        if o.recordings > sample {
            copy_rate = Some((o.recordings - sample) as f64 / t.elapsed().as_secs_f64());
        }
        c.batch_execute("ANALYZE")?;
        load_s = Some(t_load.elapsed().as_secs_f64());
    }
    let n: i64 = c.query_one("SELECT count(*) FROM recordings", &[])?.get(0);
    // Searches with random values drawn from what was loaded.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut searches = Vec::new();
    let kinds = [
        "participant exact",
        "participant prefix",
        "box + day",
        "held",
        "tag",
    ];
    for kind in kinds {
        let mut lat = Vec::new();
        let mut hits = 0usize;
        for _ in 0..o.queries {
            let k = rng.gen_range(0..n.max(1) as u64);
            let (idx, doc) = synthetic(k, o.boxes);
            let cust = doc["participants"][0]["aor"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("tel:")
                .to_string();
            let f = match kind {
                "participant exact" => Filter {
                    participant: vec![cust],
                    limit: 100,
                    ..Filter::default()
                },
                "participant prefix" => Filter {
                    participant: vec![format!("{}*", &cust[..cust.len() - 3])],
                    limit: 100,
                    ..Filter::default()
                },
                "box + day" => {
                    let day = (idx.started_at_ms - T0) / 86_400_000 * 86_400_000 + T0;
                    Filter {
                        box_id: Some(idx.box_id.clone()),
                        since_ms: Some(day),
                        until_ms: Some(day + 86_400_000),
                        limit: 100,
                        ..Filter::default()
                    }
                }
                "held" => Filter {
                    held: Some(true),
                    since_ms: Some(idx.started_at_ms - 30 * 86_400_000),
                    until_ms: Some(idx.started_at_ms),
                    limit: 100,
                    ..Filter::default()
                },
                _ => Filter {
                    tags: vec![["vip", "complaint", "sales"][rng.gen_range(0..3)].into()],
                    limit: 100,
                    ..Filter::default()
                },
            };
            let t = Instant::now();
            let h = search::search(&mut c, &f)?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            hits += h.len();
        }
        let mean = hits as f64 / f64::from(o.queries.max(1));
        searches.push(Latency {
            kind: kind.into(),
            queries: o.queries,
            p50_ms: pct(&mut lat, 0.50),
            p95_ms: pct(&mut lat, 0.95),
            max_ms: pct(&mut lat, 1.0),
            mean_hits: mean,
        });
        eprintln!("{kind}: {:?}", searches.last());
    }
    let tables: Vec<(String, i64)> = c
        .query(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 2 DESC",
            &[&o.schema],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let size: i64 = tables.iter().map(|t| t.1).sum();
    Ok(BenchReport {
        recordings: n,
        boxes: o.boxes,
        insert_rate_per_s: insert_rate,
        copy_rate_per_s: copy_rate,
        load_s,
        searches,
        size_bytes: size,
        gb_per_million: size as f64 / 1e9 / (n.max(1) as f64 / 1e6),
        tables,
    })
}
