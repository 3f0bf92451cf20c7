//! What the SIPREC call task and the passive capture share about a negotiated stream.

use crate::media::{Codec, StreamConfig};
use crate::sdp::PayloadFormat;

/// The stream configuration for the payload formats an SDP negotiated: each payload
/// type with its codec and clock rate, in the SDP's order.
pub(crate) fn stream_config(formats: &[PayloadFormat]) -> StreamConfig {
    StreamConfig {
        payload_types: formats
            .iter()
            .map(|f| (f.pt, Codec::from_encoding_name(&f.encoding), f.clock_rate))
            .collect(),
    }
}
