//! branchrec: a branch-office call recorder — the daemon, its CLI and its shells.
//!
//! The protocol, media, format and decision cores are the sans-IO crate
//! [`branchrec_core`] (re-exported here under their own names: [`sip`], [`sdp`],
//! [`siprec`], [`media`], [`capture`], [`lifecycle`], [`pii`], [`time`]); this crate adds what
//! touches the world: [`app`] (tokio shells: sockets, call tasks, the catalogue
//! thread), [`catalog`] (SQLite), [`vault`] (key files, the TPM), [`uplink`] (the S3
//! client and upload loop), [`board`] (GPIO), [`recording`] (files on disk),
//! [`clock`], [`config`], [`service`] (the operations the daemon and the CLI share:
//! holds, export, evidence, retention, key rotation, the archive's metadata document) and
//! [`cli`] (argument parsing and rendering only). See docs/architecture.md.
#![forbid(unsafe_code)]

pub use branchrec_core::{
    assurance, binding, capture, command, compliance, hpke, lifecycle, media, pii, sdp, sip,
    siprec, time,
};

pub mod app;
pub mod board;
pub mod catalog;
pub mod central;
pub mod cli;
pub mod clock;
pub mod config;
pub mod recording;
pub mod service;
pub mod uplink;
pub mod vault;
