//! `branchrec-central`, the headquarters side of the archive (issue #14): it opens what
//! the boxes uploaded with the archive alone — no box, no box key. This first slice:
//! [`archive`] (find and fetch a recording's objects from the S3-compatible archive and
//! open its envelopes), [`key`] (the compliance private key behind [`ComplianceKey`]:
//! PEM file or PKCS#11 token) and [`export`] (verify container, manifest and signature,
//! then write the WAV) and [`index`] (the PostgreSQL index: indexer, enrolment, search,
//! fleet, the central audit log). To come: commands to boxes, holds and erasure
//! (docs/central.md).
//!
//! Nothing in the daemon imports this module; `src/bin/central.rs` parses arguments and
//! calls it.

pub mod archive;
pub mod command;
pub mod command_cli;
pub mod command_db;
pub mod command_key;
pub mod export;
pub mod hold;
pub mod index;
pub mod key;
pub mod web;

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

pub use archive::{ArchiveReader, ArchivedRecording, OpenedDocument};
pub use export::{export_evidence, export_wav, CentralEvidence, CentralExport, TrustedSigner};
pub use key::{ComplianceKey, ComplianceUnwrap, PemKey, Pkcs11Key};

/// Errors of the central tools. `Display` names what failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CentralError {
    /// The configuration file is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The archive could not be read.
    #[error("archive: {0}")]
    Archive(String),
    /// No such recording in the archive.
    #[error("recording {0} not found in the archive")]
    NotFound(String),
    /// The compliance key could not be used.
    #[error("compliance key: {0}")]
    Key(String),
    /// An archive object does not verify: altered, truncated, swapped or forged.
    #[error("REFUSED, archive object does not verify: {0}")]
    Tampered(String),
    /// The manifest signature does not verify, or comes from another key than trusted.
    #[error("REFUSED, manifest signature: {0}")]
    Signature(String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(String),
    /// The PostgreSQL index (commands, holds).
    #[error("index: {0}")]
    Index(String),
    /// Refused by a rule (erasure under hold).
    #[error("REFUSED: {0}")]
    Refused(String),
}

impl From<crate::recording::files::OutputFileError> for CentralError {
    fn from(e: crate::recording::files::OutputFileError) -> Self {
        CentralError::Output(e.to_string())
    }
}

/// `central.toml`: where the archive is. `[archive]` takes the keys of the box's
/// `[uplink]` (endpoint, region, bucket, path_style, prefix, credentials_file, ca_file,
/// pin_sha256, allow_insecure_http, …); central only reads with them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// The S3-compatible archive.
    pub archive: crate::uplink::config::UplinkConfig,
    /// The PostgreSQL index (`index`, `search`, `fleet`, `enrol`, `audit`; `show` from
    /// the index). Absent: only `export` and `show` from the archive.
    #[serde(default)]
    pub index: Option<index::IndexConfig>,
    /// The web console (`serve`, docs/web-console.md).
    #[serde(default)]
    pub web: Option<web::WebConfig>,
}

impl CentralConfig {
    /// Load and check the file.
    pub fn load(path: &Path) -> Result<Self, CentralError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CentralError::Config(format!("reading {}: {e}", path.display())))?;
        let c: CentralConfig = toml::from_str(&text)
            .map_err(|e| CentralError::Config(format!("{}: {e}", path.display())))?;
        if c.archive.endpoint.is_empty() || c.archive.bucket.is_empty() {
            return Err(CentralError::Config(format!(
                "{}: [archive] endpoint and bucket must be set",
                path.display()
            )));
        }
        Ok(c)
    }
}
