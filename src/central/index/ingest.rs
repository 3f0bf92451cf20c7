//! The indexer: follows the archive bucket and writes the index.
//!
//! One pass: (1) every status document under `<prefix>_status/` whose ETag is new is
//! stored (box status history) with the audit heads it publishes; (2) the box prefixes
//! `<prefix><site>/<box>/` are discovered with delimiter listings; (3) for each, the keys
//! after its persisted StartAfter position are listed (ListObjectsV2, `start-after`),
//! grouped into recordings ([`plan::group`]), and every recording of a page not already
//! indexed with the same objects' ETags is fetched and verified by a bounded pool of
//! `[index] workers` threads; the page's rows (COPY), quarantine entries, alarms, audit
//! heads and the position commit in one transaction. The position moves past the
//! recordings that are settled (indexed or quarantined), never past one still uploading,
//! and never into the last `open_days` days (UUID keys inside a day are not in upload
//! order: those days are listed again on every pass). Everything is idempotent: a
//! restart re-lists from the committed position and skips what it finds indexed.

use postgres::Client;
use serde::Serialize;

use super::plan::{self, Group, Outcome, Readiness};
use super::{db, IndexConfig, IndexError};
use crate::central::{ArchiveReader, ArchivedRecording, CentralError, ComplianceKey};
use crate::lifecycle::audit::SignedHead;
use crate::uplink::s3::{ListPage, ListedObject};

/// What the indexer reads the archive through: ListObjectsV2 pages and GETs. The
/// archive's S3 bucket ([`ArchiveReader`]); the bench reads an in-memory copy of sealed
/// objects through the same indexer.
pub trait ArchiveSource: Sync {
    /// The archive's key prefix.
    fn prefix(&self) -> &str;
    /// One ListObjectsV2 page.
    fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, CentralError>;
    /// GET one object (`None`: no such object).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CentralError>;
    /// The four objects of the recording at `key`.
    fn fetch(&self, key: &str) -> Result<ArchivedRecording, CentralError> {
        let container = self
            .get(key)?
            .ok_or_else(|| CentralError::NotFound(key.into()))?;
        let document = self
            .get(&format!("{key}.json"))?
            .ok_or_else(|| CentralError::Archive(format!("{key}.json is missing")))?;
        Ok(ArchivedRecording {
            key: key.to_string(),
            container,
            document,
            manifest: self.get(&format!("{key}.manifest.json"))?,
            manifest_sig: self.get(&format!("{key}.manifest.sig"))?,
        })
    }
}

impl ArchiveSource for ArchiveReader {
    fn prefix(&self) -> &str {
        ArchiveReader::prefix(self)
    }
    fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, CentralError> {
        ArchiveReader::list_page(self, prefix, start_after, delimiter, max_keys)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CentralError> {
        ArchiveReader::get(self, key)
    }
    fn fetch(&self, key: &str) -> Result<ArchivedRecording, CentralError> {
        ArchiveReader::fetch(self, key)
    }
}

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
    pub archive: &'a dyn ArchiveSource,
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
        let positions = if rescan {
            Default::default()
        } else {
            db::positions(self.db)?
        };
        let mut work = Pending::default();
        for (site, bx) in boxes {
            let bp = format!("{}{site}/{bx}/", self.archive.prefix());
            let start = positions.get(&bp).cloned().unwrap_or_default();
            work.boxes.push(BoxAt {
                at: Position {
                    window: (self.cfg.open_days > 0).then(|| day_before(self.cfg.open_days - 1)),
                    pos: start.clone(),
                    advance: true,
                    box_prefix: bp,
                },
                written: start,
                site,
                bx,
            });
            self.box_pass(&mut work, &mut rep)?;
        }
        self.flush(&mut work, &mut rep)?;
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

    /// Handle one recording (a hold notice's: outside the batched box passes); `Ok(true)` when settled (indexed or quarantined, now or
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

    /// List the last box of `work` from its position, page by page, into `work`
    /// (written whenever it holds a batch).
    fn box_pass(&mut self, work: &mut Pending, rep: &mut PassReport) -> Result<(), IndexError> {
        let i = work.boxes.len() - 1;
        let bp = work.boxes[i].at.box_prefix.clone();
        let mut cursor = work.boxes[i].at.pos.clone();
        let mut carry: Vec<ListedObject> = Vec::new();
        let batch = (self.cfg.list_page as usize / 4).max(1);
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
            work.recordings += groups.len();
            work.pages.push((i, groups));
            if work.recordings >= batch {
                self.flush(work, rep)?;
            }
            if !page.truncated {
                break;
            }
        }
        Ok(())
    }

    /// Write what `work` holds, across boxes (so that a pass over many boxes with a few
    /// new recordings each still writes big batches): the recordings not yet indexed
    /// with these ETags are fetched and verified by up to `[index] workers` threads, then
    /// everything settled (rows, quarantine entries, alarms, audit heads) and the new
    /// positions of the box prefixes are written in **one transaction**: a crash leaves
    /// the batch either wholly indexed with its positions, or not at all (listed again
    /// from the old ones).
    fn flush(&mut self, work: &mut Pending, rep: &mut PassReport) -> Result<(), IndexError> {
        let pages = std::mem::take(&mut work.pages);
        work.recordings = 0;
        let keys: Vec<String> = pages
            .iter()
            .flat_map(|(_, gs)| gs.iter().map(|g| g.key.clone()))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let known = db::known(self.db, &keys)?;
        let now = super::now_ms();
        let grace = (self.cfg.incomplete_grace_s * 1000) as i64;
        // What each recording needs, in listing order.
        let mut steps: Vec<Vec<Step>> = Vec::with_capacity(pages.len());
        let mut todo: Vec<(usize, &Group, String)> = Vec::new();
        for (i, groups) in &pages {
            let mut st = Vec::with_capacity(groups.len());
            for g in groups {
                let etag = g.objects_etag();
                st.push(
                    if known.indexed.get(&g.key) == Some(&etag)
                        || known.quarantined.get(&g.key) == Some(&etag)
                    {
                        Step::Known
                    } else {
                        match plan::readiness(g, now, grace) {
                            Readiness::Wait => Step::Wait,
                            Readiness::Incomplete(m) => Step::Incomplete(m, etag),
                            Readiness::Ready => {
                                todo.push((*i, g, etag.clone()));
                                Step::Check(known.indexed.contains_key(&g.key), etag)
                            }
                        }
                    },
                );
            }
            steps.push(st);
        }
        // The boxes' rows (trusted keys), once.
        let mut ids: Vec<String> = pages
            .iter()
            .map(|(i, _)| work.boxes[*i].bx.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let rows_of = db::get_boxes(self.db, &ids)?;
        let known_box = |bx: &str| rows_of.get(bx).and_then(|b| b.known());
        let (archive, key, policy) = (self.archive, self.key, self.cfg.unknown_boxes);
        let boxes = &work.boxes;
        let checked = par_map(&todo, self.cfg.workers, |(i, g, etag)| {
            let b = &boxes[*i];
            archive.fetch(&g.key).map(|rec| {
                plan::verify_recording(
                    &rec,
                    key,
                    &b.bx,
                    &b.site,
                    known_box(&b.bx).as_ref(),
                    policy,
                    etag.clone(),
                )
            })
        });
        let mut checked = checked.into_iter();
        let mut tx = self.db.transaction()?;
        for bx in &ids {
            if !rows_of.get(bx).is_some_and(|b| b.site.is_some()) {
                let site = pages
                    .iter()
                    .map(|(i, _)| &work.boxes[*i])
                    .find(|b| b.bx == *bx)
                    .map(|b| b.site.as_str());
                db::ensure_box(&mut tx, bx, site, now)?;
            }
        }
        // Per box, the key its recordings verified with (recorded first seen in this
        // batch, or trusted before).
        let mut der: std::collections::HashMap<String, Option<Vec<u8>>> = ids
            .iter()
            .map(|b| (b.clone(), known_box(b).map(|k| k.der)))
            .collect();
        let mut rows: Vec<plan::RecordingRows> = Vec::new();
        for ((i, groups), st) in pages.iter().zip(steps) {
            let b = &mut work.boxes[*i];
            for (g, step) in groups.iter().zip(st) {
                let (site, bx) = (b.site.as_str(), b.bx.as_str());
                let settled = match step {
                    Step::Known => {
                        rep.known += 1;
                        true
                    }
                    Step::Wait => {
                        rep.waiting += 1;
                        false
                    }
                    Step::Incomplete(m, etag) => {
                        let qd = plan::Quarantined {
                            reason: plan::Reason::Incomplete,
                            message: format!("{}: {m}", g.key),
                            seen_key: None,
                        };
                        db::ensure_box(&mut tx, bx, Some(site), now)?;
                        db::quarantine(&mut tx, &g.key, bx, &qd, &etag, now)?;
                        rep.quarantined += 1;
                        true
                    }
                    Step::Check(was_indexed, etag) => match checked.next() {
                        // Cannot happen: one result per recording to check, in order.
                        None => false,
                        Some(Err(e)) => {
                            tracing::warn!(key = %g.key, error = %e, "fetch failed; retried next pass");
                            rep.errors.push(format!("{}: {e}", g.key));
                            false
                        }
                        Some(Ok(Outcome::Index {
                            rows: r,
                            first_seen_key,
                        })) => {
                            let cur = der.entry(bx.to_string()).or_default();
                            let trusted = match (first_seen_key, cur.as_ref()) {
                                (None, _) => true,
                                // Verified with the key this batch recorded as first seen.
                                (Some(d), Some(c)) => d == *c,
                                (Some(d), None) => {
                                    // false: another process recorded a key meanwhile.
                                    let ok = db::record_first_seen(&mut tx, bx, site, &d, now)?;
                                    if ok {
                                        *cur = Some(d);
                                    }
                                    ok
                                }
                            };
                            if trusted {
                                if was_indexed {
                                    rep.reverified += 1;
                                } else {
                                    rep.indexed += 1;
                                }
                                rows.push(*r);
                            }
                            // Not trusted: verified again next pass, with the recorded key.
                            trusted
                        }
                        Some(Ok(Outcome::Quarantine(qd))) if qd.reason == plan::Reason::Key => {
                            // The key cannot open it (HSM unavailable, another compliance
                            // key id): alarmed, not quarantined, tried again next pass.
                            db::raise_alarm(&mut tx, bx, qd.reason.as_str(), &qd.message, now)?;
                            rep.errors.push(qd.message);
                            false
                        }
                        Some(Ok(Outcome::Quarantine(qd))) => {
                            db::quarantine(&mut tx, &g.key, bx, &qd, &etag, now)?;
                            rep.quarantined += 1;
                            true
                        }
                    },
                };
                b.at.settle(g, settled);
            }
        }
        db::write_recordings(&mut tx, &rows, now)?;
        // The audit heads the documents publish (consecutive documents of a box repeat
        // most of them): each distinct one checked once, by the workers, with its box's
        // key.
        let mut heads: Vec<(&str, &SignedHead)> = rows
            .iter()
            .flat_map(|r| r.heads.iter().map(|h| (r.recording.box_id.as_str(), h)))
            .collect();
        fn hk<'a>(x: &(&'a str, &'a SignedHead)) -> (&'a str, i64, &'a str, &'a str) {
            (x.0, x.1.seq, &x.1.hash, &x.1.signature)
        }
        heads.sort_by(|a, b| hk(a).cmp(&hk(b)));
        heads.dedup_by(|a, b| hk(a) == hk(b));
        if !heads.is_empty() {
            let der = &der;
            let oks = par_map(&heads, self.cfg.workers, |(bx, h)| {
                der.get(*bx)
                    .and_then(|d| d.as_deref())
                    .is_some_and(|d| plan::head_verifies(d, h))
            });
            let checked: Vec<(&str, &SignedHead, bool)> = heads
                .iter()
                .zip(oks)
                .map(|((b, h), ok)| (*b, *h, ok))
                .collect();
            rep.heads_new += db::store_checked_heads(&mut tx, &checked, true, "archive", now)?;
        }
        for b in work.boxes.iter_mut() {
            if b.at.pos != b.written {
                db::set_position(&mut tx, &b.at.box_prefix, &b.bx, &b.at.pos, now)?;
            }
        }
        tx.commit()?;
        for b in work.boxes.iter_mut() {
            b.written = b.at.pos.clone();
        }
        Ok(())
    }
}

/// Listed pages not yet written, and where each box of the pass stands.
#[derive(Default)]
struct Pending {
    /// Boxes of the pass so far.
    boxes: Vec<BoxAt>,
    /// (index into `boxes`, a page's recordings), in listing order.
    pages: Vec<(usize, Vec<Group>)>,
    /// Recordings in `pages`.
    recordings: usize,
}

/// One box of a pass.
struct BoxAt {
    site: String,
    bx: String,
    at: Position,
    /// The position committed.
    written: String,
}

/// Where a box prefix's listing is settled up to.
struct Position {
    box_prefix: String,
    /// First day (`yyyymmdd`) listed again on every pass.
    window: Option<u32>,
    /// The StartAfter to persist.
    pos: String,
    /// Still moving: every recording so far is settled and outside the window.
    advance: bool,
}

impl Position {
    fn settle(&mut self, g: &Group, settled: bool) {
        let in_window = match (self.window, plan::key_day(&self.box_prefix, &g.key)) {
            (Some(w), Some(d)) => d >= w,
            _ => false,
        };
        if !settled || in_window {
            self.advance = false;
        }
        if self.advance {
            self.pos = g.last_key().to_string();
        }
    }
}

/// What a listed recording needs.
enum Step {
    /// Indexed or quarantined with these ETags.
    Known,
    /// Still uploading.
    Wait,
    /// Missing objects past the grace period (what, objects' ETags).
    Incomplete(String, String),
    /// Fetch and verify (whether an earlier version is indexed, objects' ETags).
    Check(bool, String),
}

/// `f` over `items` on up to `workers` threads (a bounded pool: each takes the next
/// item), results in order.
fn par_map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let n = workers.clamp(1, items.len().max(1));
    if n == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}
