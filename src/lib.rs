//! branchrec: a branch-office call recorder.
//!
//! Data flows one way: packets → [`sip`] / [`siprec`] (events) → [`media`] (per-channel
//! audio on one timeline) → [`recording`] (encrypted chunks) → [`catalog`].
//! The protocol and format modules are sans-IO state machines: bytes and time in, events
//! and bytes out. [`app`] holds the thin tokio shells that drive them.
#![forbid(unsafe_code)]

pub mod app;
pub mod board;
pub mod capture;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod lifecycle;
pub mod media;
pub mod pii;
pub mod recording;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod uplink;
pub mod vault;
