//! The indexer: follows the archive bucket and writes the index.
//!
//! One pass: (1) every status document under `<prefix>_status/` whose ETag is new is
//! stored (box status history) with the audit heads it publishes; (2) the box prefixes
//! `<prefix><site>/<box>/` are discovered with delimiter listings; (3) for each, the keys
//! after its persisted StartAfter position are listed (ListObjectsV2, `start-after`),
//! grouped into recordings ([`plan::group`]), and every recording not already indexed
//! with the same objects' ETags is fetched, verified and written, or quarantined, in one
//! transaction. The position then moves past the recordings that are settled (indexed or
//! quarantined), never past one still uploading, and never into the last `open_days`
//! days (UUID keys inside a day are not in upload order: those days are listed again on
//! every pass). Everything is idempotent: a restart re-lists from the position and skips
//! what it finds indexed.

use postgres::Client;
use serde::Serialize;

use super::plan::{self, Group, Outcome, Readiness};
use super::{db, IndexConfig, IndexError};
use crate::central::{ArchiveReader, ComplianceKey};
use crate::uplink::s3::ListedObject;

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PassReport {
    /// Box prefixes followed.
    pub boxes: usize,
    /// Objects listed under them.
    pub listed: usize,
    /// Recordings indexed (new).
    pub indexed: usize,
    /// Recordings verified again because an object changed, and still good.
    pub reverified: usize,
    /// Recordings quarantined in this pass.
    pub quarantined: usize,
    /// Recordings found already indexed or quarantined (same ETags).
    pub known: usize,
    /// Recordings still uploading.
    pub waiting: usize,
    /// New status document versions.
    pub status_new: usize,
    /// New published audit heads.
    pub heads_new: usize,
    /// Archive errors (transient: retried next pass).
    pub errors: Vec<String>,
}

/// The indexer over one archive, compliance key and database.
pub struct Indexer<'a> {
    /// `[index]`.
    pub cfg: &'a IndexConfig,
    /// The archive.
    pub archive: &'a ArchiveReader,
    /// The compliance key.
    pub key: &'a dyn ComplianceKey,
    /// The index.
    pub db: &'a mut Client,
}

fn bump(prefix: &str) -> String {
    // The smallest string after every key under `prefix` (which ends in '/').
    let mut s = prefix.trim_end_matches('/').to_string();
    s.push('0'); // '/' + 1
    s
}

/// `yyyymmdd` of `days` days before today (UTC).
fn day_before(days: u32) -> u32 {
    let d = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(days));
    use chrono::Datelike as _;
    (d.year() as u32) * 10_000 + d.month() * 100 + d.day()
}

impl Indexer<'_> {
    /// Common prefixes directly under `prefix`.
    fn common_prefixes(&self, prefix: &str) -> Result<Vec<String>, IndexError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let p = self
                .archive
                .list_page(prefix, after.as_deref(), Some("/"), 1000)?;
            let last = p
                .prefixes
                .last()
                .map(|l| bump(l))
                .max(p.objects.last().map(|o| o.key.clone()));
            out.extend(p.prefixes);
            if !p.truncated || last.is_none() {
                break;
            }
            after = last;
        }
        Ok(out)
    }

    /// The `(site, box)` pairs in the archive.
    pub fn discover(&self) -> Result<Vec<(String, String)>, IndexError> {
        let prefix = self.archive.prefix().to_string();
        let mut out = Vec::new();
        for site_p in self.common_prefixes(&prefix)? {
            let site = site_p[prefix.len()..].trim_end_matches('/').to_string();
            if site.starts_with('_') || site.is_empty() {
                continue;
            }
            for box_p in self.common_prefixes(&site_p)? {
                let bx = box_p[site_p.len()..].trim_end_matches('/').to_string();
                if !bx.is_empty() {
                    out.push((site.clone(), bx));
                }
            }
        }
        Ok(out)
    }

    /// One pass over the archive (`rescan`: ignore the positions, list everything).
    pub fn pass(&mut self, rescan: bool) -> Result<PassReport, IndexError> {
        let mut rep = PassReport::default();
        self.statuses(&mut rep)?;
        self.hold_notices(&mut rep)?;
        let boxes = self.discover()?;
        rep.boxes = boxes.len();
        for (site, bx) in boxes {
            self.box_pass(&site, &bx, rescan, &mut rep)?;
        }
        Ok(rep)
    }

    /// The boxes' hold notices (`_holds/<box>/…`, one per archived document published
    /// again because its hold state changed on the box): each names a container key,
    /// whose recording is looked at again (its document's ETag changed: re-verified and
    /// rewritten with the new held state) even though it lies before the box prefix's
    /// position. Followed with a position per box (`_holds/<box>/`).
    fn hold_notices(&mut self, rep: &mut PassReport) -> Result<(), IndexError> {
        let hp = format!("{}_holds/", self.archive.prefix());
        for bp in self.common_prefixes(&hp)? {
            let bx = bp[hp.len()..].trim_end_matches('/').to_string();
            if bx.is_empty() {
                continue;
            }
            let start = db::position(self.db, &bp)?;
            let mut pos = start.clone();
            let mut after = start.clone();
            'pages: for _ in 0..100_000 {
                let page = self.archive.list_page(&bp, Some(&after), None, 1000)?;
                for o in &page.objects {
                    let body = match self.archive.get(&o.key) {
                        Ok(Some(b)) => b,
                        Ok(None) => continue,
                        Err(e) => {
                            rep.errors.push(format!("{}: {e}", o.key));
                            break 'pages;
                        }
                    };
                    let ck = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["container_key"].as_str().map(str::to_string));
                    let Some(ck) = ck.filter(|k| {
                        k.strip_prefix(self.archive.prefix())
                            .is_some_and(|r| r.split('/').nth(1) == Some(bx.as_str()))
                    }) else {
                        let now = super::now_ms();
                        db::raise_alarm(
                            self.db,
                            &bx,
                            "hold_notice",
                            &format!("{}: not a hold notice of box {bx}", o.key),
                            now,
                        )?;
                        pos = o.key.clone();
                        continue;
                    };
                    let site = ck[self.archive.prefix().len()..]
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let objs = self.archive.list_page(&ck, None, None, 16)?;
                    let groups = plan::group(&objs.objects);
                    let settled = match groups.iter().find(|g| g.key == ck) {
                        // Erased meanwhile: nothing to look at.
                        None => true,
                        Some(g) => {
                            let known = db::known(self.db, std::slice::from_ref(&g.key))?;
                            self.group(&site, &bx, g, &known, rep)?
                        }
                    };
                    if !settled {
                        break 'pages;
                    }
                    pos = o.key.clone();
                }
                if !page.truncated || page.objects.is_empty() {
                    break;
                }
                after = page
                    .objects
                    .last()
                    .map(|o| o.key.clone())
                    .unwrap_or_default();
            }
            if pos != start {
                db::set_position(self.db, &bp, &bx, &pos, super::now_ms())?;
            }
        }
        Ok(())
    }

    fn statuses(&mut self, rep: &mut PassReport) -> Result<(), IndexError> {
        let sp = format!("{}_status/", self.archive.prefix());
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let page = self.archive.list_page(&sp, after.as_deref(), None, 1000)?;
            for o in &page.objects {
                let Some(bx) = o.key[sp.len()..].strip_suffix(".json") else {
                    continue;
                };
                if bx.contains('/') || db::has_status(self.db, bx, &o.etag)? {
                    continue;
                }
                let now = super::now_ms();
                let body = match self.archive.get(&o.key) {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => {
                        rep.errors.push(format!("{}: {e}", o.key));
                        continue;
                    }
                };
                let mut tx = self.db.transaction()?;
                match plan::parse_status(bx, &body) {
                    Ok(s) => {
                        if db::store_status(&mut tx, &s, &o.etag, now)? {
                            rep.status_new += 1;
                        }
                        let der = db::get_box(&mut tx, bx)?.and_then(|b| b.der);
                        rep.heads_new +=
                            db::store_heads(&mut tx, bx, der.as_deref(), &s.heads, "status", now)?;
                    }
                    Err(m) => {
                        db::raise_alarm(
                            &mut tx,
                            bx,
                            "status_document",
                            &format!("{}: {m}", o.key),
                            now,
                        )?;
                    }
                }
                tx.commit()?;
            }
            if !page.truncated || page.objects.is_empty() {
                break;
            }
            after = page.objects.last().map(|o| o.key.clone());
        }
        Ok(())
    }

    fn box_pass(
        &mut self,
        site: &str,
        bx: &str,
        rescan: bool,
        rep: &mut PassReport,
    ) -> Result<(), IndexError> {
        let bp = format!("{}{site}/{bx}/", self.archive.prefix());
        let start = if rescan {
            String::new()
        } else {
            db::position(self.db, &bp)?
        };
        let window = (self.cfg.open_days > 0).then(|| day_before(self.cfg.open_days - 1));
        let mut cursor = start.clone();
        let mut pos = start.clone();
        let mut advance = true;
        let mut carry: Vec<ListedObject> = Vec::new();
        for _ in 0..1_000_000 {
            let page = self
                .archive
                .list_page(&bp, Some(&cursor), None, self.cfg.list_page)?;
            rep.listed += page.objects.len();
            if let Some(l) = page.objects.last() {
                cursor = l.key.clone();
            }
            carry.extend(page.objects);
            let mut groups = plan::group(&carry);
            carry.clear();
            if page.truncated {
                // The last recording may continue on the next page.
                if let Some(g) = groups.pop() {
                    carry.extend(
                        [g.container, g.document, g.manifest, g.signature]
                            .into_iter()
                            .flatten(),
                    );
                }
            }
            let keys: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
            let known = db::known(self.db, &keys)?;
            for g in &groups {
                let settled = self.group(site, bx, g, &known, rep)?;
                if !settled {
                    advance = false;
                }
                let in_window = match (window, plan::key_day(&bp, &g.key)) {
                    (Some(w), Some(d)) => d >= w,
                    _ => false,
                };
                if in_window {
                    advance = false;
                }
                if advance {
                    pos = g.last_key().to_string();
                }
            }
            if !page.truncated {
                break;
            }
        }
        if pos != start || rescan {
            db::set_position(self.db, &bp, bx, &pos, super::now_ms())?;
        }
        Ok(())
    }

    /// Handle one recording; `Ok(true)` when settled (indexed or quarantined, now or
    /// before), `Ok(false)` when it must be looked at again.
    fn group(
        &mut self,
        site: &str,
        bx: &str,
        g: &Group,
        known: &db::Known,
        rep: &mut PassReport,
    ) -> Result<bool, IndexError> {
        let etag = g.objects_etag();
        if known.indexed.get(&g.key) == Some(&etag) || known.quarantined.get(&g.key) == Some(&etag)
        {
            rep.known += 1;
            return Ok(true);
        }
        let was_indexed = known.indexed.contains_key(&g.key);
        let now = super::now_ms();
        match plan::readiness(g, now, (self.cfg.incomplete_grace_s * 1000) as i64) {
            Readiness::Wait => {
                rep.waiting += 1;
                return Ok(false);
            }
            Readiness::Incomplete(m) => {
                let qd = plan::Quarantined {
                    reason: plan::Reason::Incomplete,
                    message: format!("{}: {m}", g.key),
                    seen_key: None,
                };
                let mut tx = self.db.transaction()?;
                db::ensure_box(&mut tx, bx, Some(site), now)?;
                db::quarantine(&mut tx, &g.key, bx, &qd, &etag, now)?;
                tx.commit()?;
                rep.quarantined += 1;
                return Ok(true);
            }
            Readiness::Ready => {}
        }
        let rec = match self.archive.fetch(&g.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %g.key, error = %e, "fetch failed; retried next pass");
                rep.errors.push(format!("{}: {e}", g.key));
                return Ok(false);
            }
        };
        let boxrow = db::get_box(self.db, bx)?;
        let known_box = boxrow.as_ref().and_then(|b| b.known());
        let outcome = plan::verify_recording(
            &rec,
            self.key,
            bx,
            site,
            known_box.as_ref(),
            self.cfg.unknown_boxes,
            etag.clone(),
        );
        let mut tx = self.db.transaction()?;
        db::ensure_box(&mut tx, bx, Some(site), now)?;
        match outcome {
            Outcome::Index {
                rows,
                first_seen_key,
            } => {
                let mut der = known_box.map(|k| k.der);
                if let Some(d) = first_seen_key {
                    if !db::record_first_seen(&mut tx, bx, site, &d, now)? {
                        // Another process recorded a key meanwhile: verify next pass.
                        tx.rollback()?;
                        return Ok(false);
                    }
                    der = Some(d);
                }
                db::write_recording(&mut tx, &rows, now)?;
                rep.heads_new +=
                    db::store_heads(&mut tx, bx, der.as_deref(), &rows.heads, "archive", now)?;
                if was_indexed {
                    rep.reverified += 1;
                } else {
                    rep.indexed += 1;
                }
            }
            Outcome::Quarantine(qd) if qd.reason == plan::Reason::Key => {
                // The key cannot open it (HSM unavailable, another compliance key id):
                // alarmed, not quarantined, tried again next pass.
                db::raise_alarm(&mut tx, bx, qd.reason.as_str(), &qd.message, now)?;
                tx.commit()?;
                rep.errors.push(qd.message);
                return Ok(false);
            }
            Outcome::Quarantine(qd) => {
                db::quarantine(&mut tx, &g.key, bx, &qd, &etag, now)?;
                rep.quarantined += 1;
            }
        }
        tx.commit()?;
        Ok(true)
    }
}
