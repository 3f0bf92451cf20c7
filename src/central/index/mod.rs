//! The central index (issue #14): PostgreSQL state of everything the boxes archived, fed
//! by an indexer that follows the bucket, searched by `branchrec-central search`.
//!
//! - [`plan`] (sans-IO): classify listed keys, group a recording's objects, verify one
//!   archived recording (envelopes, whole-object hash, manifest signature against the
//!   enrolled box key, content hash) and turn its decrypted document into rows.
//!   Testable without PostgreSQL or S3.
//! - [`schema`]: numbered migrations, applied on start.
//! - [`db`]: the row-writing path (COPY of a batch of recordings, in the indexer's
//!   transaction with their positions; one per status document), box enrolment,
//!   quarantine, alarms, positions, and the bulk path of the bench (the same COPY).
//! - [`audit`]: the central audit log, hash-chained and signed with the central key.
//! - [`ingest`]: the indexer loop over S3 (`index --once|--follow`).
//! - [`search`]: filters to SQL, `search`, `show`, `fleet`.
//! - [`bench`]: `bench-index`, synthetic recordings from 2,000 boxes.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod db;
pub mod ingest;
pub mod plan;
pub mod schema;
pub mod search;

use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

/// Errors of the index.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IndexError {
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] postgres::Error),
    /// A migration failed or the schema is newer than this program.
    #[error("schema: {0}")]
    Schema(String),
    /// Configuration.
    #[error("index configuration: {0}")]
    Config(String),
    /// The central audit log could not be written or does not verify.
    #[error("central audit log: {0}")]
    Audit(String),
    /// The archive, the compliance key, …
    #[error(transparent)]
    Central(#[from] super::CentralError),
    /// A malformed search filter.
    #[error("search filter: {0}")]
    Filter(String),
    /// No such recording or box in the index.
    #[error("{0} not found in the index")]
    NotFound(String),
}

/// What to do with a box the index does not know (`[index] unknown_boxes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownBoxes {
    /// Trust on first use, flagged: the key that signs the box's first verified manifest
    /// is recorded (`trust = first_seen`), its recordings are indexed and flagged until
    /// an operator confirms with `central enrol`.
    #[default]
    FirstSeen,
    /// Quarantine everything from a box until `central enrol` registers it.
    Quarantine,
}

fn default_open_days() -> u32 {
    3
}
fn default_grace_s() -> u64 {
    3600
}
fn default_follow_s() -> u64 {
    30
}
fn default_page() -> u32 {
    1000
}
fn default_workers() -> usize {
    4
}
fn default_layout() -> String {
    "{site}/{box}/{yyyy}/{mm}/{dd}/{id}".into()
}

/// `[index]` of central.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// libpq connection string (`host=/run/postgresql dbname=branchrec user=central`).
    pub database: String,
    /// The central audit key: Ed25519 private key, PKCS#8 PEM (`central audit-keygen`).
    pub audit_key: PathBuf,
    /// Boxes not enrolled: `first_seen` (default) or `quarantine`.
    #[serde(default)]
    pub unknown_boxes: UnknownBoxes,
    /// The boxes' `key_layout` (must start with `{site}/{box}/`).
    #[serde(default = "default_layout")]
    pub key_layout: String,
    /// Days (UTC, by key date) behind the newest listed day that are re-listed on every
    /// pass: keys inside a day are random (UUIDs), so a late upload can land before
    /// the persisted StartAfter position. Older late uploads: `index --rescan`.
    #[serde(default = "default_open_days")]
    pub open_days: u32,
    /// A recording whose objects are still incomplete this long after the container's
    /// LastModified is quarantined (`incomplete`); before that it waits.
    #[serde(default = "default_grace_s")]
    pub incomplete_grace_s: u64,
    /// `--follow`: seconds between passes.
    #[serde(default = "default_follow_s")]
    pub follow_interval_s: u64,
    /// ListObjectsV2 page size; also the batch: a page's recordings commit in one
    /// transaction with the position.
    #[serde(default = "default_page")]
    pub list_page: u32,
    /// Threads fetching and verifying a page's recordings in parallel (GETs, HPKE opens,
    /// signature and hash checks); one writer.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl IndexConfig {
    /// Check the values.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.database.trim().is_empty() {
            return Err(IndexError::Config("[index] database is empty".into()));
        }
        if !self.key_layout.starts_with("{site}/{box}/") {
            return Err(IndexError::Config(format!(
                "[index] key_layout {:?} must start with {{site}}/{{box}}/ (the indexer follows one position per box prefix)",
                self.key_layout
            )));
        }
        if self.list_page == 0 || self.list_page > 1000 {
            return Err(IndexError::Config(
                "[index] list_page must be 1..=1000".into(),
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(IndexError::Config("[index] workers must be 1..=64".into()));
        }
        Ok(())
    }
}

/// Now, unix ms (the central host's clock).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
