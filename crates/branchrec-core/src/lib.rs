//! branchrec's sans-IO cores, in the manner of quinn-proto and str0m: "fully
//! deterministic", no networking, files, clock or OS randomness. Every state machine
//! takes bytes, time (`now` parameters) and seeds as inputs and returns events and
//! bytes; the daemon crate (`branchrec`) drives them from sockets, files and the clock.
//!
//! Data flows one way: packets → [`sip`] / [`siprec`] / [`capture`] (events) → [`media`]
//! (per-channel audio on one timeline) → [`recording`] (encrypted chunks, as bytes).
//! Decisions live here too: [`lifecycle`] (rules, retention, holds, audit chain),
//! [`board`] (LEDs and button), [`uplink`] (what to upload next, multipart state,
//! signing). [`keys`] holds the key types the format needs; the providers are the
//! daemon's. The boundary is kept by the compiler: this crate's Cargo.toml has no IO
//! crate, and `rand`/`chrono` are built without their OS parts. Time comes in as
//! [`time::Mono`] (monotonic) or [`time::UnixMs`] (wall clock); see [`time`].
#![forbid(unsafe_code)]

pub mod assurance;
pub mod binding;
pub mod board;
pub mod capture;
pub mod command;
pub mod compliance;
pub mod console;
pub mod hpke;
pub mod keys;
pub mod lifecycle;
pub mod media;
pub mod pii;
pub mod recording;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod time;
pub mod uplink;
