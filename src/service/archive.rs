//! The recording's metadata document: what `recordings show --json` prints and what the
//! uplink stores beside the container in the archive (`<key>.json`). One shape for both.

use serde_json::Value;

use crate::catalog::{Catalog, ListFilter, RecordingDetail};

/// The `recordings show --json` document: the list entry plus stats, DTMF, events and the
/// metadata versions received (without their raw bytes).
pub fn recording_document(d: &RecordingDetail) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(d.summary()?)?;
    let r = &d.recording;
    let dtmf: Vec<Value> = d
        .events
        .iter()
        .filter(|e| e.kind == "dtmf")
        .map(|e| {
            let det = e.detail_json.clone().unwrap_or_default();
            serde_json::json!({
                "channel": e.channel,
                "digit": det.get("digit"),
                "start_ms": e.at_ms,
                "duration_ms": det.get("duration_ms"),
            })
        })
        .collect();
    let versions: Vec<Value> = d
        .metadata_versions
        .iter()
        .map(|m| {
            serde_json::json!({
                "seq": m.seq,
                "received_at": chrono::DateTime::from_timestamp_millis(m.version.received_at_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "sip_method": m.version.sip_method,
                "content_type": m.version.content_type,
                "data_mode": m.version.data_mode.map(|x| x.as_str()),
                "bytes": m.version.raw.len(),
            })
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("src_addr".into(), r.src_addr.clone().into());
        o.insert("sample_rate".into(), r.sample_rate.into());
        o.insert("file_path".into(), r.file_path.clone().into());
        o.insert("file_sha256".into(), r.file_sha256.clone().into());
        o.insert("file_bytes".into(), r.file_bytes.into());
        o.insert("kek_id".into(), r.kek_id.clone().into());
        o.insert("stats".into(), r.stats_json.clone().unwrap_or_default());
        o.insert("dtmf".into(), dtmf.into());
        o.insert("events".into(), event_entries(d).into());
        o.insert("metadata_versions".into(), versions.into());
    }
    Ok(v)
}

/// The recording's events as the documents list them (also in the signed manifest).
pub fn event_entries(d: &RecordingDetail) -> Vec<Value> {
    d.events
        .iter()
        .map(|e| serde_json::json!({"at_ms": e.at_ms, "kind": e.kind, "channel": e.channel, "detail": e.detail_json}))
        .collect()
}

/// [`recording_document`] with the life-cycle state (rule, tags, expiry, hold flag) of
/// the list entry and the holds covering the recording at `now_ms`.
pub fn show_document(cat: &Catalog, d: &RecordingDetail, now_ms: i64) -> anyhow::Result<Value> {
    let id = &d.recording.id;
    let mut v = recording_document(d)?;
    let lc = list_lifecycle(cat, d, now_ms)?;
    if let (Some(o), Some(lc)) = (v.as_object_mut(), lc) {
        if let Ok(Value::Object(m)) = serde_json::to_value(&lc) {
            o.extend(m);
        }
        o.insert("holds".into(), cat.holds_covering(id, now_ms)?.into());
    }
    if let Some(o) = v.as_object_mut() {
        // Issue #19: the verdict, why, per-channel quality and the clock facts.
        o.insert("verdict".into(), d.recording.verdict.clone().into());
        o.insert(
            "assurance".into(),
            d.recording.assurance_json.clone().unwrap_or(Value::Null),
        );
    }
    Ok(v)
}

/// The life-cycle fields of `d`'s `recordings list` entry at `now_ms`.
fn list_lifecycle(
    cat: &Catalog,
    d: &RecordingDetail,
    now_ms: i64,
) -> anyhow::Result<Option<crate::catalog::LifecycleSummary>> {
    Ok(cat
        .list(&ListFilter {
            call: Some(d.recording.call_id.clone()),
            now_ms,
            ..ListFilter::default()
        })?
        .into_iter()
        .find(|r| r.id == d.recording.id)
        .map(|r| r.lifecycle))
}

/// The life-cycle facts the archive document carries for the central index (`central
/// search --tag/--held/--direction`): the list entry's rule, tags, retention, expiry,
/// archive time and hold flag, the holds covering it at `now_ms`, and the derived call
/// direction. Without them every archived document had the defaults (no tags, not held,
/// no direction).
pub fn lifecycle_fields(
    cat: &Catalog,
    d: &RecordingDetail,
    now_ms: i64,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let id = &d.recording.id;
    let mut out = serde_json::Map::new();
    if let Some(lc) = list_lifecycle(cat, d, now_ms)? {
        if let Value::Object(m) = serde_json::to_value(&lc)? {
            out.extend(m);
        }
    }
    let covering = cat.holds_covering(id, now_ms)?;
    // Which of them the box's own operators placed (`held_locally`: the central index
    // shows these as the box's holds) and which central cases hold it (`hold_cases`:
    // placed by a central command, reason `central case C: …`, operator `central:…`).
    let mut held_locally = false;
    let mut cases: Vec<String> = Vec::new();
    if !covering.is_empty() {
        for h in cat.holds(false, now_ms)? {
            if !covering.contains(&h.id) {
                continue;
            }
            let case = h.operator.starts_with("central:").then(|| {
                h.reason
                    .strip_prefix("central case ")
                    .and_then(|r| r.split_once(": "))
                    .map(|(c, _)| c.to_string())
            });
            match case {
                Some(Some(c)) => {
                    if !cases.contains(&c) {
                        cases.push(c);
                    }
                }
                _ => held_locally = true,
            }
        }
    }
    out.insert("holds".into(), covering.into());
    out.insert("held_locally".into(), held_locally.into());
    out.insert("hold_cases".into(), cases.into());
    out.insert("direction".into(), cat.direction(id)?.into());
    Ok(out)
}

/// The SIPREC metadata documents exactly as received (`seq`, `content_type`, base64
/// `raw`): the archive document carries them so an evidence bundle made from the archive
/// alone has the `metadata-N.xml` files the signed manifest hashes.
pub fn metadata_raw(d: &RecordingDetail) -> Value {
    use base64::Engine as _;
    d.metadata_versions
        .iter()
        .map(|m| {
            serde_json::json!({
                "seq": m.seq,
                "content_type": m.version.content_type,
                "raw": base64::engine::general_purpose::STANDARD.encode(&m.version.raw),
            })
        })
        .collect::<Vec<_>>()
        .into()
}

/// Where and how a recording's container was archived.
#[derive(Debug, Clone)]
pub struct ArchivedObject<'a> {
    /// Object key of the container.
    pub key: &'a str,
    /// This box.
    pub box_id: &'a str,
    /// Its site.
    pub site: &'a str,
    /// Container size.
    pub bytes: u64,
    /// SHA-256 (hex) of the whole container file.
    pub sha256: &'a str,
    /// The multipart ETag the archive must report.
    pub etag: String,
    /// The composite SHA-256 checksum the archive must report.
    pub checksum_sha256: String,
    /// When uploaded (RFC 3339).
    pub uploaded_at: String,
}

/// The archive's metadata document (`<key>.json`): [`recording_document`] plus the
/// participants as stored and where the container was archived.
pub fn archive_document(d: &RecordingDetail, obj: &ArchivedObject<'_>) -> anyhow::Result<Value> {
    let mut meta = recording_document(d)?;
    if let Some(o) = meta.as_object_mut() {
        o.insert("metadata_raw".into(), metadata_raw(d));
        o.insert(
            "participants".into(),
            serde_json::to_value(&d.participants).unwrap_or_default(),
        );
        o.insert(
            "archive".into(),
            serde_json::json!({
                "key": obj.key,
                "box_id": obj.box_id,
                "site": obj.site,
                "bytes": obj.bytes,
                "sha256": obj.sha256,
                "etag": obj.etag,
                "checksum_sha256": obj.checksum_sha256,
                "uploaded_at": obj.uploaded_at,
            }),
        );
    }
    Ok(meta)
}

/// The plaintext index of `d`'s archive envelopes (`kind`: `document` or `manifest`):
/// box, site, recording id, times, sizes and hashes only. `compliance_key_id` is filled
/// in by the recipient that seals.
pub fn archive_index(
    d: &RecordingDetail,
    obj: &ArchivedObject<'_>,
    kind: &str,
) -> crate::compliance::ArchiveIndex {
    let r = &d.recording;
    crate::compliance::ArchiveIndex {
        kind: kind.into(),
        box_id: obj.box_id.into(),
        site: obj.site.into(),
        recording_id: r.id.clone(),
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        duration_ms: r.duration_ms.and_then(|v| i64::try_from(v).ok()),
        container_key: obj.key.into(),
        container_bytes: obj.bytes,
        container_sha256: obj.sha256.into(),
        content_sha256: r.file_sha256.clone().unwrap_or_default(),
        compliance_key_id: String::new(),
    }
}

/// What the archive stores for `plaintext` (a metadata document or a manifest): an
/// envelope encrypted to the compliance key when one is configured
/// (`docs/central.md`), else the plaintext itself (boxes without a central key).
pub fn archive_object(
    recipient: Option<&crate::vault::compliance::ComplianceRecipient>,
    index: crate::compliance::ArchiveIndex,
    plaintext: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    match recipient {
        None => Ok(plaintext),
        Some(r) => {
            let env = r.seal(index, &plaintext)?;
            Ok(serde_json::to_vec_pretty(&env)?)
        }
    }
}
