//! Audio decoders behind one small trait, [`Decoder`]: G.711 (for wideband
//! recordings, where it has to be resampled), G.722, Opus and — with the `g729` cargo
//! feature — G.729/G.729A with Annex B. See `docs/codecs.md`.
//!
//! A decoder turns one RTP payload into PCM at its [`Decoder::output_rate`] and, when
//! packets were lost, produces concealment ([`Decoder::conceal`]): Opus in-band FEC or
//! packet-loss concealment, G.729 erasure concealment / Annex B comfort noise. Decoders
//! never panic on malformed payloads; they return [`CodecError`].

pub mod g711;
pub mod g722;
#[cfg(feature = "g729")]
pub mod g729;
pub mod opus;
pub mod resample;
pub mod table;

pub use resample::Resampler;
pub use table::{
    is_audio_encoding, is_captured, lookup, lookup_sdp, lookup_static_pt, CodecSpec, Role, CODECS,
    SUPPORTED_ENCODINGS,
};

/// Sample rate of narrowband recordings (G.711, G.729); the default.
pub const SAMPLE_RATE: u32 = 8000;
/// Sample rate of wideband recordings (a recorded stream negotiated G.722 or Opus).
pub const WIDEBAND_SAMPLE_RATE: u32 = 16000;

/// The recording's sample rate for the negotiated streams: 16 kHz if any recorded
/// stream accepted a wideband codec (G.722, Opus) that this build decodes, else 8 kHz.
/// Fixed at call set-up: a later re-INVITE that switches codec is resampled to it.
/// `formats` are the accepted (encoding name, RTP clock rate) pairs of the recorded
/// streams (from SDP: `sdp::PayloadFormat`'s `encoding` and `clock_rate`).
pub fn recording_rate<'a>(formats: impl IntoIterator<Item = (&'a str, u32)>) -> u32 {
    let wide = formats.into_iter().any(|(encoding, clock_rate)| {
        DecoderKind::from_sdp(encoding, clock_rate)
            .is_some_and(|k| k.is_wideband() && k.available())
    });
    if wide {
        WIDEBAND_SAMPLE_RATE
    } else {
        SAMPLE_RATE
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The payload does not have a valid structure for the codec.
    #[error("malformed {codec} payload: {why}")]
    Malformed {
        /// Codec name.
        codec: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The codec library refused the payload or failed.
    #[error("{codec} decoder: {why}")]
    Library {
        /// Codec name.
        codec: &'static str,
        /// Library message.
        why: String,
    },
    /// The codec is not built into this binary (e.g. G.729 without the `g729` feature).
    #[error("codec {0} not available in this build")]
    Unavailable(String),
}

/// The decodable codecs (one [`CODECS`] entry each: name, clock, wideband, feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecoderKind {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s.
    G722,
    /// Opus (RFC 7587).
    Opus,
    /// G.729 / G.729A, Annex B frames accepted.
    G729,
}

/// What [`Decoder::conceal`] produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Concealment {
    /// Samples reconstructed from redundancy in the next packet (Opus in-band FEC).
    pub fec_samples: usize,
    /// Samples synthesised by packet-loss concealment or comfort-noise generation.
    pub plc_samples: usize,
}

/// One stream's decoder (stateful: feed payloads in sequence order).
pub trait Decoder: Send + std::fmt::Debug {
    /// Which codec.
    fn kind(&self) -> DecoderKind;
    /// Sample rate of the PCM it produces.
    fn output_rate(&self) -> u32;
    /// Decode one RTP payload, appending its samples to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError>;
    /// `samples` samples (at the output rate) were lost just before `next` (the
    /// payload that follows the gap, if it is known). Append up to `samples`
    /// concealment samples to `out`; codecs without concealment append nothing (the
    /// gap stays silence).
    ///
    /// The default (G.711, G.722: no concealment in the codec) produces nothing.
    fn conceal(
        &mut self,
        _samples: usize,
        _next: Option<&[u8]>,
        _out: &mut Vec<i16>,
    ) -> Result<Concealment, CodecError> {
        Ok(Concealment::default())
    }
    /// Number of samples (at the output rate) a payload decodes to, if it is well
    /// formed; used to size concealment.
    fn payload_samples(&self, payload: &[u8]) -> Option<usize>;
    /// The sender is in discontinuous transmission after a comfort-noise (SID) frame:
    /// until its next packet the decoder's [`conceal`](Self::conceal) output is comfort
    /// noise, which the timeline generates as time passes.
    fn in_dtx(&self) -> bool {
        false
    }
}

/// A decoder for `kind` producing PCM at `rate` where the codec can (Opus decodes at
/// 8/12/16/24/48 kHz); the others have a fixed output rate (G.711/G.729 8 kHz,
/// G.722 16 kHz), which the caller resamples.
pub fn new_decoder(kind: DecoderKind, rate: u32) -> Result<Box<dyn Decoder>, CodecError> {
    Ok(match kind {
        DecoderKind::Pcmu => Box::new(g711::G711Decoder::new(false)),
        DecoderKind::Pcma => Box::new(g711::G711Decoder::new(true)),
        DecoderKind::G722 => Box::new(g722::G722Decoder::new()),
        DecoderKind::Opus => Box::new(opus::OpusDecoder::new(rate)?),
        #[cfg(feature = "g729")]
        DecoderKind::G729 => Box::new(g729::G729Decoder::new()?),
        #[cfg(not(feature = "g729"))]
        DecoderKind::G729 => return Err(CodecError::Unavailable("G729".into())),
    })
}
