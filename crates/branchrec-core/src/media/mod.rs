//! Per-packet media path: RTP parsing, G.711/G.722/Opus/G.729 decoding, resampling, RFC 4733 DTMF and the
//! per-call audio timeline that places every stream's samples on one clock.
//!
//! Everything here is sans-IO: the shell passes datagrams and time offsets in and
//! writes out the [`AudioBlock`]s it polls.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod rtp;
pub mod source;
pub mod srtp;
pub mod stream;
pub mod timeline;

#[cfg(test)]
mod codec_timeline_tests;
#[cfg(test)]
mod fixture_tests;

pub use dtmf::{DtmfDecoder, DtmfError, DtmfEvent};
pub use g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
pub use rtp::{is_rtcp, parse as parse_rtp, RtpError, RtpPacket};
pub use source::{SourceGate, SourcePolicy, SourceVerdict};
pub use srtp::{SrtpChannel, SrtpError, SrtpPolicy, SrtpReceiver, SrtpStats, SrtpSuite};
pub use stream::{Codec, StreamConfig, StreamStats};
pub use timeline::{AudioBlock, CallTimeline, GapCause, MediaGap, PushOutcome, TimelineConfig};
