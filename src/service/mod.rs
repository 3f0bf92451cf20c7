//! The service layer: the operations both the daemon and the CLI perform, in one place.
//!
//! - [`holds`]: place and release legal holds (`hold add|release`, the hold button).
//! - [`export`]: verify a recording and export its audio (WAV, Ogg Opus) or an evidence
//!   bundle.
//! - [`evidence`]: signed manifests, verification, evidence bundles.
//! - [`retention`]: crypto-shredding deletion, expiry/pressure sweeps, disk usage, the
//!   `retention status` document.
//! - [`archive`]: the recording's metadata document (`recordings show --json`, the
//!   archive's `<key>.json`).
//! - [`audit`]: signing the audit head, verifying the audit log, the two-person rule.
//! - [`identity`]: the operator's identity from the OS (uid, `SO_PEERCRED`).
//! - [`keys`]: KEK rotation across the recording files.
//! - [`catalog`]: the catalogue unlocked with the box's keys (for the CLI and tools).
//!
//! The CLI ([`crate::cli`]) only parses arguments and renders what these return; the
//! daemon ([`crate::app`], [`crate::uplink`]) calls them from its tasks. Nothing here
//! imports `cli` or `app`.

pub mod archive;
pub mod assurance;
pub mod audit;
pub mod catalog;
pub mod evidence;
pub mod export;
pub mod holds;
pub mod identity;
pub mod keys;
pub mod retention;
