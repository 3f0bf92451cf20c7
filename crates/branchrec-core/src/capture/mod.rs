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
//!
//! # Time
//! Every point in time in these cores is a [`Mono`] on the *capture time axis*: the
//! frames' own timestamps, whose origin is the Unix epoch (pcap stores time since
//! 1970-01-01). [`capture_time`] turns a frame timestamp into it; timeouts and limits are
//! `Duration`s. The cores only compare and subtract these values; the shell, which
//! needs wall-clock times for the catalogue, derives them from the same axis in one
//! helper (`branchrec::app::capture`).

use std::time::Duration;

use crate::time::Mono;

/// A frame's capture timestamp (time since the Unix epoch, as in [`pcapfile::Frame::ts`])
/// on the capture time axis: a [`Mono`] whose origin is the Unix epoch.
pub const fn capture_time(since_epoch: Duration) -> Mono {
    Mono::from_duration(since_epoch)
}

pub mod decode;
pub mod engine;
pub mod frame;
pub mod pcapfile;
pub mod tcp;
pub mod tracker;
