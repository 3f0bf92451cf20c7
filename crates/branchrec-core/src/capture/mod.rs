//! Passive recording from mirrored traffic and capture files.
//!
//! Layers, all sans-IO:
//! - [`pcapfile`]: pcap / pcapng reader (and a small writer for tests and benchmarks);
//! - [`decode`]: link and network layers, tunnels and IP fragment reassembly, down to a
//!   UDP datagram or TCP segment;
//! - [`tcp`]: TCP stream reassembly for SIP over TCP;
//! - [`tracker`]: SIP dialogs → calls, SDP → RTP flows bound to a call and a channel;
//! - [`engine`]: the three above glued into one per-packet step, emitting what to record.
//!
//! The shells that read interfaces and files and write recordings are in
//! [`crate::app::capture`].

pub mod frame;
pub mod decode;
pub mod engine;
pub mod pcapfile;
pub mod tcp;
pub mod tracker;
