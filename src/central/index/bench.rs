//! `branchrec-central bench-index`: fills a scratch schema with N synthetic recordings
//! from many boxes and measures what matters at a bank's scale (docs/central.md, *Scale*).
//!
//! Each synthetic recording is a metadata document shaped like a box's (participants
//! with tel:/sip: AoRs and names, channels, DTMF and hold events, stats, metadata
//! versions with the raw SIPREC XML, archive record, eight published audit heads) and an
//! archive index; rows come from [`plan::rows_from_document`], the indexer's own parser.
//!
//! - The fill (all but the last `indexer_sample` recordings) goes through
//!   [`db::copy_recordings`]: one transaction per 5,000 around [`db::write_recordings`],
//!   the indexer's own row writer (a generator thread builds the rows meanwhile).
//! - The last `indexer_sample` recordings go through the **indexer**
//!   ([`ingest::Indexer::pass`], `workers` threads): real archive objects (an encrypted
//!   container of `container_ms` of audio, the document and the manifest sealed to a
//!   compliance key with HPKE, the manifest and eight audit heads signed with the box's
//!   Ed25519 key, 2,000 enrolled boxes) listed, grouped, fetched, opened, verified and
//!   written one page per transaction with the positions. The archive is an in-memory
//!   copy of the objects behind [`ingest::ArchiveSource`] (not measured: S3 round trips
//!   and transfer).
//!
//! Then ANALYZE, the searches, and the size of every table and index.

use std::time::Instant;

use base64::Engine as _;
use postgres::Client;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use super::ingest::{self, ArchiveSource};
use super::plan::{self, Trust};
use super::search::{self, Filter};
use super::{db, IndexConfig, IndexError};
use crate::central::{CentralError, PemKey};
use crate::lifecycle::audit::SignedHead;
use crate::uplink::s3::{ListPage, ListedObject};

/// Options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scratch database.
    pub database: String,
    /// Recordings.
    pub recordings: u64,
    /// Boxes.
    pub boxes: u32,
    /// The last this many through the indexer (sealed objects, verified).
    pub indexer_sample: u64,
    /// The indexer's `[index] workers`.
    pub workers: usize,
    /// Audio per synthetic container of the indexer sample, ms (8 kHz stereo s16le).
    pub container_ms: u32,
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
    /// The indexer (list, fetch from memory, open, verify, write), recordings/s.
    pub indexer_rate_per_s: Option<f64>,
    /// Recordings the indexer sample indexed.
    pub indexer_indexed: Option<usize>,
    /// Audit heads it stored.
    pub indexer_heads: Option<usize>,
    /// Mean container size of the sample, bytes.
    pub indexer_container_bytes: Option<u64>,
    /// Seconds spent sealing the sample's objects (not in the rate).
    pub indexer_seal_s: Option<f64>,
    /// Bulk fill through the indexer's row writer, recordings/s (generation and
    /// parsing included).
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
    /// Per table: heap, TOAST, indexes, bytes.
    pub parts: Vec<(String, i64, i64, i64)>,
    /// Index sizes, bytes.
    pub indexes: Vec<(String, i64)>,
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
    let raw = siprec_xml(&participants, &id, start);
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
            "content_type": "application/rs-metadata+xml", "data_mode": "complete", "bytes": raw.len()}],
        "metadata_raw": [{"seq": 1, "content_type": "application/rs-metadata+xml",
            "raw": base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())}],
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

/// The SIPREC metadata (RFC 7865) a recording client sends for these participants.
fn siprec_xml(participants: &[serde_json::Value], id: &str, start: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(start)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\n  <datamode>complete</datamode>\n  <group group_id=\"7+OTCyoxTmqmqyA/1weDAg==\">\n    <associate-time>{t}</associate-time>\n  </group>\n  <session session_id=\"hVpd7YQgRW2nD22h7q60JQ==\">\n    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>\n    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>\n    <start-time>{t}</start-time>\n  </session>\n"
    );
    for (n, p) in participants.iter().enumerate() {
        let aor = p["aor"].as_str().unwrap_or_default();
        let name = p["name"].as_str().unwrap_or_default();
        x.push_str(&format!(
            "  <participant participant_id=\"srfBElmCRp2QB23b7Mpk0w{n}==\">\n    <nameID aor=\"{aor}\">\n      <name xml:lang=\"en\">{name}</name>\n    </nameID>\n  </participant>\n  <participantsessionassoc participant_id=\"srfBElmCRp2QB23b7Mpk0w{n}==\" session_id=\"hVpd7YQgRW2nD22h7q60JQ==\">\n    <associate-time>{t}</associate-time>\n  </participantsessionassoc>\n  <stream stream_id=\"UAAMm5GRQKSCMVvLyl4rFw{n}==\" session_id=\"hVpd7YQgRW2nD22h7q60JQ==\">\n    <label>{}</label>\n  </stream>\n  <participantstreamassoc participant_id=\"srfBElmCRp2QB23b7Mpk0w{n}==\">\n    <send>UAAMm5GRQKSCMVvLyl4rFw{n}==</send>\n  </participantstreamassoc>\n",
            n + 1
        ));
    }
    x.push_str(&format!("  <!-- recording {id} -->\n</recording>\n"));
    x
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

/// A box's signing key (deterministic in its number) and its DER SubjectPublicKeyInfo.
struct BoxKey {
    sk: ed25519_dalek::SigningKey,
    der: Vec<u8>,
}

fn box_keys(boxes: u32) -> Result<Vec<BoxKey>, IndexError> {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use sha2::Digest as _;
    (0..boxes)
        .map(|b| {
            let seed: [u8; 32] = sha2::Sha256::digest(format!("branchrec-bench-box-{b}")).into();
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            let der = sk
                .verifying_key()
                .to_public_key_der()
                .map_err(|e| IndexError::Config(format!("box key: {e}")))?
                .as_bytes()
                .to_vec();
            Ok(BoxKey { sk, der })
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

fn bench_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Config(format!("bench: {e}"))
}

/// The archive objects of synthetic recording `k` as its box uploads them: container
/// (encrypted PCM), `.json` and `.manifest.json` (HPKE envelopes to the compliance key),
/// `.manifest.sig` (Ed25519), with real signed audit heads in the document.
fn sealed(
    k: u64,
    boxes: u32,
    keys: &[BoxKey],
    to: &crate::vault::compliance::ComplianceRecipient,
    container_ms: u32,
) -> Result<Objects, IndexError> {
    use crate::vault::KeyWrap as _;
    use ed25519_dalek::Signer as _;
    let (mut idx, mut doc) = synthetic(k, boxes);
    let bx = (k % u64::from(boxes)) as usize;
    let key = &keys[bx];
    let key_id = format!("ed1:{}", &sha_hex(&key.der)[..16]);
    let heads: Vec<SignedHead> = (0..8)
        .map(|h| {
            let seq = 1000 + (k / u64::from(boxes)) as i64 * 3 + h;
            let ordinal = seq - 900;
            let hash = sha_hex(format!("{}-{seq}", idx.box_id).as_bytes());
            let at = crate::time::UnixMs(T0 + seq * 60_000);
            let msg = crate::lifecycle::audit::head_message_v2(seq, &hash, at, ordinal, ordinal);
            SignedHead {
                seq,
                hash,
                at_ms: at,
                key_id: key_id.clone(),
                signature: hex::encode(key.sk.sign(&msg).to_bytes()),
                ordinal: Some(ordinal),
                counter: Some(ordinal),
            }
        })
        .collect();
    doc["audit"] = json!({ "heads": heads });
    doc["signer"]["public_key_der"] =
        json!(base64::engine::general_purpose::STANDARD.encode(&key.der));
    // The container: `container_ms` of 8 kHz stereo.
    let kek = crate::vault::KeyFileVault::from_key([7; 32]);
    let dk = crate::vault::DataKey::generate(&mut rand::rngs::OsRng);
    let params = crate::recording::HeaderParams {
        recording_id: idx.recording_id.clone(),
        created_unix_ms: idx.started_at_ms as u64,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 0,
        kek_id: kek.kek_id(),
        extra_json: String::new(),
    };
    let wrapped = kek.wrap(&dk).map_err(bench_err)?;
    let (mut w, mut container) =
        crate::recording::ContainerWriter::new(params, dk, wrapped, rand::random())
            .map_err(bench_err)?;
    let frames = 8 * container_ms as usize;
    let samples: Vec<i16> = (0..frames * 2)
        .map(|i| ((i * 37 + k as usize) % 4000) as i16)
        .collect();
    w.push_block(&crate::media::AudioBlock {
        start_frame: 0,
        samples,
    })
    .map_err(bench_err)?;
    while let Some(c) = w.poll_chunk() {
        container.extend_from_slice(&c);
    }
    container.extend_from_slice(&w.finish().bytes);
    let (content, content_bytes) =
        crate::recording::container::content_sha256(std::io::Cursor::new(&container))
            .map_err(bench_err)?;
    idx.container_bytes = container.len() as u64;
    idx.container_sha256 = sha_hex(&container);
    idx.content_sha256 = hex::encode(content);
    let manifest = json!({
        "format": "branchrec-manifest-v1",
        "recording_id": idx.recording_id,
        "signed_at_ms": idx.ended_at_ms,
        "signer": {"algorithm": "ed25519", "public_key_sha256": sha_hex(&key.der)},
        "container": {"content_sha256": idx.content_sha256, "content_bytes": content_bytes},
        "metadata": {"participants": doc["participants"], "metadata_versions": doc["metadata_versions"],
                     "events": doc["events"]},
    });
    let mut mbytes = serde_json::to_vec_pretty(&manifest).map_err(bench_err)?;
    mbytes.push(b'\n');
    let sig = key.sk.sign(&mbytes).to_bytes().to_vec();
    let dbytes = serde_json::to_vec(&doc).map_err(bench_err)?;
    let denv = to.seal(idx.clone(), &dbytes).map_err(bench_err)?;
    let menv = to
        .seal(
            crate::compliance::ArchiveIndex {
                kind: "manifest".into(),
                ..idx.clone()
            },
            &mbytes,
        )
        .map_err(bench_err)?;
    let ck = idx.container_key.clone();
    Ok(vec![
        (ck.clone(), container),
        (
            format!("{ck}.json"),
            serde_json::to_vec_pretty(&denv).map_err(bench_err)?,
        ),
        (
            format!("{ck}.manifest.json"),
            serde_json::to_vec_pretty(&menv).map_err(bench_err)?,
        ),
        (format!("{ck}.manifest.sig"), sig),
    ])
}

/// An in-memory copy of archive objects, listed and read as S3 would (ListObjectsV2
/// order, `start-after`, delimiter, page size).
pub struct MemArchive {
    objects: std::collections::BTreeMap<String, (Vec<u8>, String)>,
}

impl MemArchive {
    fn new(objs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        MemArchive {
            objects: objs
                .into_iter()
                .map(|(k, v)| {
                    let etag = format!("\"{}\"", &sha_hex(&v)[..32]);
                    (k, (v, etag))
                })
                .collect(),
        }
    }
}

impl ArchiveSource for MemArchive {
    fn prefix(&self) -> &str {
        ""
    }
    fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, CentralError> {
        use std::ops::Bound;
        let lo = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut page = ListPage {
            objects: Vec::new(),
            prefixes: Vec::new(),
            truncated: false,
        };
        let mut n = 0u32;
        for (k, (v, etag)) in self.objects.range((lo, Bound::Unbounded)) {
            if !k.starts_with(prefix) {
                break;
            }
            let common = delimiter.and_then(|d| {
                k[prefix.len()..]
                    .find(d)
                    .map(|i| k[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(cp) = &common {
                if page.prefixes.last() == Some(cp) {
                    continue;
                }
            }
            if n == max_keys {
                page.truncated = true;
                break;
            }
            n += 1;
            match common {
                Some(cp) => page.prefixes.push(cp),
                None => page.objects.push(ListedObject {
                    key: k.clone(),
                    size: v.len() as u64,
                    etag: etag.clone(),
                    last_modified: "2026-12-03T00:00:00.000Z".into(),
                }),
            }
        }
        Ok(page)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CentralError> {
        Ok(self.objects.get(key).map(|(v, _)| v.clone()))
    }
}

/// Archive objects: (key, bytes).
type Objects = Vec<(String, Vec<u8>)>;

/// What the indexer sample measured.
struct Sampled {
    rate: f64,
    indexed: usize,
    heads: usize,
    container_bytes: u64,
    seal_s: f64,
}

/// Recordings `from..to` sealed as their boxes upload them, then one indexer pass over
/// them with `workers` threads.
fn indexer_sample(
    c: &mut Client,
    o: &BenchOptions,
    keys: &[BoxKey],
    from: u64,
    to: u64,
) -> Result<Sampled, IndexError> {
    use p256::pkcs8::EncodePrivateKey as _;
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem_path = std::env::temp_dir().join(format!("branchrec-bench-{}.pem", std::process::id()));
    std::fs::write(
        &pem_path,
        sk.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map_err(bench_err)?
            .as_bytes(),
    )
    .map_err(bench_err)?;
    let ck = PemKey::load(&pem_path);
    let _ = std::fs::remove_file(&pem_path);
    let ck = ck?;
    let to_key = crate::vault::compliance::ComplianceRecipient {
        public_key: crate::hpke::PublicKey::from_p256(sk.public_key()),
        key_id: "ck-2026".into(),
    };
    let t = Instant::now();
    let ks: Vec<u64> = (from..to).collect();
    let chunks: Vec<&[u64]> = ks
        .chunks(ks.len().div_ceil(o.workers.max(1)).max(1))
        .collect();
    let objs: Vec<Result<Objects, IndexError>> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|ch| {
                let to_key = &to_key;
                s.spawn(move || -> Result<Objects, IndexError> {
                    let mut out = Vec::new();
                    for &k in ch.iter() {
                        out.extend(sealed(k, o.boxes, keys, to_key, o.container_ms)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(bench_err("sealing thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::new();
    for r in objs {
        all.extend(r?);
    }
    let containers: Vec<u64> = all
        .iter()
        .filter(|(k, _)| !k.contains('.'))
        .map(|(_, v)| v.len() as u64)
        .collect();
    let archive = MemArchive::new(all);
    let seal_s = t.elapsed().as_secs_f64();
    eprintln!(
        "indexer sample: {} recordings sealed in {seal_s:.1} s ({} objects)",
        to - from,
        archive.objects.len()
    );
    let cfg = IndexConfig {
        database: o.database.clone(),
        audit_key: std::path::PathBuf::new(),
        unknown_boxes: super::UnknownBoxes::Quarantine,
        key_layout: "{site}/{box}/{yyyy}/{mm}/{dd}/{id}".into(),
        open_days: 0,
        incomplete_grace_s: 3600,
        follow_interval_s: 30,
        list_page: 1000,
        workers: o.workers,
    };
    let t = Instant::now();
    let rep = ingest::Indexer {
        cfg: &cfg,
        archive: &archive,
        key: &ck,
        db: c,
    }
    .pass(false)?;
    let secs = t.elapsed().as_secs_f64();
    if rep.indexed as u64 != to - from || rep.quarantined > 0 || !rep.errors.is_empty() {
        return Err(bench_err(format!(
            "the indexer sample did not index everything: {}",
            serde_json::to_string(&rep).unwrap_or_default()
        )));
    }
    Ok(Sampled {
        rate: rep.indexed as f64 / secs,
        indexed: rep.indexed,
        heads: rep.heads_new,
        container_bytes: containers.iter().sum::<u64>() / containers.len().max(1) as u64,
        seal_s,
    })
}

/// Run the bench.
pub fn run(o: &BenchOptions) -> Result<BenchReport, IndexError> {
    let mut c = Client::connect(&o.database, postgres::NoTls)?;
    let mut sampled = None;
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
        // Every box enrolled with its key.
        let keys = box_keys(o.boxes)?;
        let ids: Vec<String> = (0..o.boxes).map(|b| format!("br-{b:04}")).collect();
        let sites: Vec<String> = (0..o.boxes).map(|b| format!("site-{:03}", b / 4)).collect();
        let ders: Vec<Vec<u8>> = keys.iter().map(|k| k.der.clone()).collect();
        let shas: Vec<String> = keys.iter().map(|k| sha_hex(&k.der)).collect();
        c.execute(
            "INSERT INTO boxes (box_id, site, trust, signing_key_der, signing_key_sha256,
                                first_seen_ms, enrolled_ms, enrolled_by)
             SELECT b, s, 'enrolled', d, h, $5, $5, 'bench'
             FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) AS t(b, s, d, h)",
            &[&ids, &sites, &ders, &shas, &now],
        )?;
        let sample = o.indexer_sample.min(o.recordings);
        let fill = o.recordings - sample;
        // The fill: a generator thread builds the rows of the next batch while this one
        // is written.
        let t = Instant::now();
        let boxes = o.boxes;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<plan::RecordingRows>>(2);
        let gen = std::thread::spawn(move || {
            let mut k = 0;
            while k < fill {
                let end = (k + 5000).min(fill);
                if tx.send((k..end).map(|i| rows(i, boxes)).collect()).is_err() {
                    break;
                }
                k = end;
            }
        });
        let mut k = 0u64;
        let mut last_report = Instant::now();
        for batch in rx {
            db::copy_recordings(&mut c, &batch, now)?;
            k += batch.len() as u64;
            if last_report.elapsed().as_secs() >= 30 {
                last_report = Instant::now();
                eprintln!(
                    "fill: {k} / {fill} ({:.0}/s)",
                    k as f64 / t.elapsed().as_secs_f64()
                );
            }
        }
        gen.join()
            .map_err(|_| bench_err("generator thread panicked"))?;
        if fill > 0 {
            copy_rate = Some(fill as f64 / t.elapsed().as_secs_f64());
            eprintln!("fill: {fill} at {:.0}/s", copy_rate.unwrap_or_default());
        }
        if sample > 0 {
            // Into the filled index, as a day's uploads arrive in a full one.
            let s = indexer_sample(&mut c, o, &keys, fill, o.recordings)?;
            eprintln!(
                "indexer: {} recordings at {:.0}/s ({} workers, containers {} bytes, {} audit heads)",
                s.indexed, s.rate, o.workers, s.container_bytes, s.heads
            );
            sampled = Some(s);
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
    let tables: Vec<(String, i64)> = c_query(
        &mut c,
        &o.schema,
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 2 DESC",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let parts: Vec<(String, i64, i64, i64)> = c_query(
        &mut c,
        &o.schema,
        "SELECT c.relname, pg_relation_size(c.oid),
                COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0::oid)), 0),
                pg_indexes_size(c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    let indexes: Vec<(String, i64)> = c_query(
        &mut c,
        &o.schema,
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'i' ORDER BY 2 DESC",
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let size: i64 = tables.iter().map(|t| t.1).sum();
    Ok(BenchReport {
        recordings: n,
        boxes: o.boxes,
        indexer_rate_per_s: sampled.as_ref().map(|s| s.rate),
        indexer_indexed: sampled.as_ref().map(|s| s.indexed),
        indexer_heads: sampled.as_ref().map(|s| s.heads),
        indexer_container_bytes: sampled.as_ref().map(|s| s.container_bytes),
        indexer_seal_s: sampled.as_ref().map(|s| s.seal_s),
        copy_rate_per_s: copy_rate,
        load_s,
        searches,
        size_bytes: size,
        gb_per_million: size as f64 / 1e9 / (n.max(1) as f64 / 1e6),
        tables,
        parts,
        indexes,
    })
}

fn c_query(c: &mut Client, schema: &str, sql: &str) -> Result<Vec<postgres::Row>, IndexError> {
    Ok(c.query(sql, &[&schema])?)
}
