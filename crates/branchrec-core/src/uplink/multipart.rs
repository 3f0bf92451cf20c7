//! The resumable multipart upload of one file (sans-IO).
//!
//! create → parts (each with its own MD5 and SHA-256, the server's ETag checked against
//! the local MD5) → complete → verify the stored object (size, multipart ETag, composite
//! SHA-256 checksum, full-file SHA-256 in the object metadata) against what was computed
//! locally → done. The state (upload id and completed parts) is plain data persisted in
//! the catalogue after every step, so a restart resumes at the first missing part.
//!
//! Exactly once: the object only exists once CompleteMultipartUpload succeeds, which is
//! atomic on S3; a recording is only marked uploaded after [`UploadState::verify`] passes.

use base64::Engine as _;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One uploaded part, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// 1-based part number.
    pub number: u32,
    /// Bytes in the part.
    pub size: u64,
    /// MD5 of the part, hex (equals the ETag the server returned).
    pub md5_hex: String,
    /// SHA-256 of the part, base64 (what `x-amz-checksum-sha256` carries).
    pub sha256_b64: String,
}

impl PartRecord {
    /// Hash a part's bytes.
    pub fn of(number: u32, data: &[u8]) -> PartRecord {
        PartRecord {
            number,
            size: data.len() as u64,
            md5_hex: hex::encode(Md5::digest(data)),
            sha256_b64: b64(&Sha256::digest(data)),
        }
    }
}

/// Base64 (standard, padded).
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What the server says about the stored object (HEAD with checksum mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Content-Length.
    pub size: u64,
    /// ETag without quotes.
    pub etag: Option<String>,
    /// `x-amz-checksum-sha256` (composite `…-N` suffix stripped).
    pub checksum_sha256: Option<String>,
    /// `x-amz-meta-sha256`: the full-file SHA-256 we attached at creation.
    pub meta_sha256: Option<String>,
}

/// Errors of the state machine: all mean "do not mark uploaded".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    /// The server stored a part whose MD5 is not ours.
    #[error("part {number}: server ETag {got} does not match local MD5 {want}")]
    PartMismatch {
        /// Part number.
        number: u32,
        /// ETag returned.
        got: String,
        /// Local MD5.
        want: String,
    },
    /// The stored object does not match the local file.
    #[error("archived object does not match the local file: {0}")]
    ObjectMismatch(String),
    /// Persisted state is not usable.
    #[error("persisted upload state unreadable: {0}")]
    BadState(String),
}

/// Next thing the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// CreateMultipartUpload.
    Create,
    /// UploadPart `number` with the file bytes `[offset, offset + len)`.
    UploadPart {
        /// 1-based part number.
        number: u32,
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// CompleteMultipartUpload with these parts.
    Complete(Vec<PartRecord>),
    /// HEAD the object and pass the answer to [`UploadState::verify`].
    Verify,
    /// Verified: the object is complete and matches.
    Done,
}

/// The persisted and in-memory state of one file's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// File size.
    pub size: u64,
    /// Part size used for this upload (kept across restarts even if the config changes).
    pub part_size: u64,
    /// Upload id from CreateMultipartUpload.
    pub upload_id: Option<String>,
    /// Parts the server acknowledged, ascending.
    pub parts: Vec<PartRecord>,
    /// CompleteMultipartUpload succeeded (or may have: the upload vanished after all
    /// parts were sent) — verify next.
    pub completed: bool,
    /// Verification passed.
    pub verified: bool,
}

impl UploadState {
    /// A fresh upload of `size` bytes in parts of `part_size`.
    pub fn new(size: u64, part_size: u64) -> Self {
        UploadState {
            size,
            part_size: part_size.max(1),
            upload_id: None,
            parts: Vec::new(),
            completed: false,
            verified: false,
        }
    }

    /// Restore from the catalogue's `parts_json`.
    pub fn from_json(s: &str) -> Result<Self, MultipartError> {
        let st: UploadState =
            serde_json::from_str(s).map_err(|e| MultipartError::BadState(e.to_string()))?;
        if st.part_size == 0 {
            return Err(MultipartError::BadState("part size 0".into()));
        }
        Ok(st)
    }

    /// Serialise for the catalogue.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string(self).expect("UploadState serialises")
    }

    /// Number of parts (an empty file is one empty part).
    pub fn part_count(&self) -> u32 {
        (self.size.div_ceil(self.part_size)).max(1) as u32
    }

    /// Byte range of part `n` (1-based).
    pub fn part_range(&self, n: u32) -> (u64, u64) {
        let off = u64::from(n - 1) * self.part_size;
        (off, self.part_size.min(self.size.saturating_sub(off)))
    }

    /// Bytes acknowledged so far.
    pub fn bytes_done(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// What to do next.
    pub fn next_action(&self) -> Action {
        if self.verified {
            return Action::Done;
        }
        if self.completed {
            return Action::Verify;
        }
        if self.upload_id.is_none() {
            return Action::Create;
        }
        for n in 1..=self.part_count() {
            if !self.parts.iter().any(|p| p.number == n) {
                let (offset, len) = self.part_range(n);
                return Action::UploadPart {
                    number: n,
                    offset,
                    len,
                };
            }
        }
        Action::Complete(self.parts.clone())
    }

    /// CreateMultipartUpload answered.
    pub fn on_created(&mut self, upload_id: String) {
        self.upload_id = Some(upload_id);
        self.parts.clear();
        self.completed = false;
    }

    /// UploadPart answered with `server_etag` for the part hashed locally as `local`.
    pub fn on_part(&mut self, local: PartRecord, server_etag: &str) -> Result<(), MultipartError> {
        let got = server_etag.trim_matches('"').to_ascii_lowercase();
        if got != local.md5_hex {
            return Err(MultipartError::PartMismatch {
                number: local.number,
                got,
                want: local.md5_hex,
            });
        }
        self.parts.retain(|p| p.number != local.number);
        self.parts.push(local);
        self.parts.sort_by_key(|p| p.number);
        Ok(())
    }

    /// CompleteMultipartUpload succeeded.
    pub fn on_completed(&mut self) {
        self.completed = true;
    }

    /// The server no longer knows the upload id (expired, aborted, server lost state, or
    /// our earlier Complete did succeed before a crash). With every part sent, check the
    /// object first; otherwise start over.
    pub fn on_no_such_upload(&mut self) {
        if self.upload_id.is_some() && self.parts.len() as u32 == self.part_count() {
            self.completed = true;
        } else {
            self.restart();
        }
    }

    /// Forget the upload and start a new one.
    pub fn restart(&mut self) {
        self.upload_id = None;
        self.parts.clear();
        self.completed = false;
        self.verified = false;
    }

    /// Expected multipart ETag: MD5 of the concatenated part MD5s, `-N`.
    pub fn expected_etag(&self) -> String {
        let mut h = Md5::new();
        for p in &self.parts {
            // Persisted by us from a 16-byte digest; a bad value only fails verification.
            h.update(hex::decode(&p.md5_hex).unwrap_or_default());
        }
        format!("{}-{}", hex::encode(h.finalize()), self.parts.len())
    }

    /// Expected composite checksum: SHA-256 of the concatenated part SHA-256s (base64).
    pub fn expected_checksum(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.parts {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&p.sha256_b64)
                .unwrap_or_default();
            h.update(raw);
        }
        b64(&h.finalize())
    }

    /// Check the stored object against the local file (`file_sha256_hex`). On success the
    /// state is `verified`; on failure the upload is restarted and the error says why.
    pub fn verify(
        &mut self,
        obj: &ObjectInfo,
        file_sha256_hex: &str,
    ) -> Result<(), MultipartError> {
        let r = self.check(obj, file_sha256_hex);
        match r {
            Ok(()) => self.verified = true,
            Err(_) => self.restart(),
        }
        r
    }

    fn check(&self, obj: &ObjectInfo, file_sha256_hex: &str) -> Result<(), MultipartError> {
        let bad = |s: String| Err(MultipartError::ObjectMismatch(s));
        if self.parts.len() as u32 != self.part_count() {
            return bad(format!(
                "{} of {} parts recorded locally",
                self.parts.len(),
                self.part_count()
            ));
        }
        if obj.size != self.size {
            return bad(format!("size {} != local {}", obj.size, self.size));
        }
        let mut strong = false;
        if let Some(e) = &obj.etag {
            let e = e.trim_matches('"').to_ascii_lowercase();
            // Servers with SSE-KMS return non-MD5 ETags: only compare the multipart form.
            if e.contains('-') {
                let want = self.expected_etag();
                if e != want {
                    return bad(format!("ETag {e} != expected {want}"));
                }
                strong = true;
            }
        }
        if let Some(c) = &obj.checksum_sha256 {
            let c = c.split('-').next().unwrap_or(c);
            let want = self.expected_checksum();
            if c != want {
                return bad(format!("SHA-256 checksum {c} != expected {want}"));
            }
            strong = true;
        }
        if let Some(m) = &obj.meta_sha256 {
            if !m.eq_ignore_ascii_case(file_sha256_hex) {
                return bad(format!(
                    "object metadata sha256 {m} != local {file_sha256_hex}"
                ));
            }
        } else {
            return bad("object lacks the x-amz-meta-sha256 we attached: not our upload".into());
        }
        if !strong {
            return bad("server returned neither a multipart ETag nor a SHA-256 checksum".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_parts(st: &mut UploadState, data: &[u8]) {
        loop {
            match st.next_action() {
                Action::UploadPart {
                    number,
                    offset,
                    len,
                } => {
                    let p = PartRecord::of(number, &data[offset as usize..(offset + len) as usize]);
                    let etag = format!("\"{}\"", p.md5_hex);
                    st.on_part(p, &etag).unwrap();
                }
                _ => return,
            }
        }
    }

    fn info(st: &UploadState, sha: &str) -> ObjectInfo {
        ObjectInfo {
            size: st.size,
            etag: Some(format!("\"{}\"", st.expected_etag())),
            checksum_sha256: Some(format!("{}-{}", st.expected_checksum(), st.parts.len())),
            meta_sha256: Some(sha.into()),
        }
    }

    #[test]
    fn full_cycle_and_known_values() {
        // Same data as the moto probe: 5 MiB of 'x' then 100 'y' in 5 MiB parts.
        let mut data = vec![b'x'; 5 * 1024 * 1024];
        data.extend_from_slice(&[b'y'; 100]);
        let sha = hex::encode(Sha256::digest(&data));
        let mut st = UploadState::new(data.len() as u64, 5 * 1024 * 1024);
        assert_eq!(st.next_action(), Action::Create);
        st.on_created("u1".into());
        run_parts(&mut st, &data);
        assert_eq!(st.parts.len(), 2);
        assert!(matches!(st.next_action(), Action::Complete(p) if p.len() == 2));
        assert_eq!(st.expected_etag(), "b80965183800174acbfed42ed19781c2-2");
        assert_eq!(
            st.expected_checksum(),
            "HEYt2zE5iKutqZrbRBTcbaGaQaK7qNJy5JWD7LTBgT4="
        );
        st.on_completed();
        assert_eq!(st.next_action(), Action::Verify);
        let i = info(&st, &sha);
        st.verify(&i, &sha).unwrap();
        assert_eq!(st.next_action(), Action::Done);
    }

    #[test]
    fn resume_from_json_continues_at_the_first_missing_part() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut st = UploadState::new(1000, 300);
        assert_eq!(st.part_count(), 4);
        st.on_created("u".into());
        let p = PartRecord::of(1, &data[..300]);
        let e = p.md5_hex.clone();
        st.on_part(p, &e).unwrap();
        let back = UploadState::from_json(&st.to_json()).unwrap();
        assert_eq!(back, st);
        assert_eq!(
            back.next_action(),
            Action::UploadPart {
                number: 2,
                offset: 300,
                len: 300
            }
        );
        assert_eq!(back.part_range(4), (900, 100));
        assert!(UploadState::from_json("{").is_err());
    }

    #[test]
    fn mismatches_never_verify() {
        let data = vec![7u8; 1000];
        let sha = hex::encode(Sha256::digest(&data));
        let mut st = UploadState::new(1000, 400);
        st.on_created("u".into());
        // A wrong part ETag is refused.
        let p = PartRecord::of(1, &data[..400]);
        assert!(matches!(
            st.on_part(p, "\"00000000000000000000000000000000\""),
            Err(MultipartError::PartMismatch { .. })
        ));
        run_parts(&mut st, &data);
        st.on_completed();
        let good = info(&st, &sha);
        for (i, mut obj) in [
            good.clone(),
            good.clone(),
            good.clone(),
            good.clone(),
            good.clone(),
        ]
        .into_iter()
        .enumerate()
        {
            match i {
                0 => obj.size -= 1,
                1 => obj.etag = Some("\"abc-3\"".into()),
                2 => obj.checksum_sha256 = Some("AAAA".into()),
                3 => obj.meta_sha256 = None,
                _ => {
                    obj.etag = Some("\"notmultipart\"".into());
                    obj.checksum_sha256 = None;
                }
            }
            let mut s2 = st.clone();
            assert!(s2.verify(&obj, &sha).is_err(), "case {i} verified");
            // A failed verification restarts the upload: nothing looks complete.
            assert_eq!(s2.next_action(), Action::Create);
        }
        let mut s3 = st.clone();
        s3.verify(&good, &sha).unwrap();
    }

    #[test]
    fn lost_upload_checks_the_object_first_when_all_parts_were_sent() {
        let data = vec![1u8; 10];
        let mut st = UploadState::new(10, 4);
        st.on_created("u".into());
        let p = PartRecord::of(1, &data[..4]);
        let e = p.md5_hex.clone();
        st.on_part(p, &e).unwrap();
        st.on_no_such_upload();
        assert_eq!(st.next_action(), Action::Create);
        st.on_created("u2".into());
        run_parts(&mut st, &data);
        st.on_no_such_upload();
        assert_eq!(st.next_action(), Action::Verify);
        // Empty file: one empty part.
        let st = UploadState::new(0, 4);
        assert_eq!(st.part_count(), 1);
        assert_eq!(st.part_range(1), (0, 0));
    }
}
