//! Opus storage: a sans-IO packetizer (interleaved PCM in, 20 ms Opus packets out) and a
//! stream decoder (packets in, PCM out with the encoder delay removed), both over libopus
//! through the `opus` crate.
//!
//! Length bookkeeping (the same as Ogg Opus, RFC 7845 §4.2): the encoder delays its
//! output by `pre_skip` samples (its lookahead). The packetizer pads the end of the input
//! with silence until every input sample has come out of the encoder, and the decoder
//! drops the first `pre_skip` decoded samples and stops after exactly the number of
//! frames that went in — so a decoded recording is as long as the call, sample for
//! sample, and its channels stay aligned with the timeline.
//!
//! Packets are stored length-prefixed (`u16` big-endian length, then the packet) by the
//! container; [`frame_packets`] / [`parse_packets`] do that framing.

use thiserror::Error;

/// Frame duration of every stored packet, in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Largest packet the encoder may produce (libopus recommends 4000 bytes as a bound).
pub const MAX_PACKET: usize = 4000;

/// Errors of the Opus layer.
#[derive(Debug, Error)]
pub enum OpusError {
    /// libopus refused a call.
    #[error("libopus: {0}")]
    Codec(#[from] opus::Error),
    /// Parameters libopus cannot use.
    #[error("invalid Opus parameters: {0}")]
    Params(String),
    /// A stored packet list does not parse.
    #[error("malformed packet framing: {0}")]
    Framing(String),
}

/// Encoder settings (from `[storage.opus]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Total bitrate of the stream in bit/s (both channels together).
    pub bitrate_bps: u32,
    /// libopus complexity 0–10 (CPU versus quality).
    pub complexity: u8,
    /// Variable bitrate (`true`) or constant bitrate (`false`).
    pub vbr: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        OpusSettings {
            // 16 kbit/s per call leg: wideband speech at good quality, narrowband
            // (G.711) near-transparent; ~0.23 MB per call-minute.
            bitrate_bps: 32_000,
            // Measured (docs/storage-benchmark.md): 3 costs ~25 % less CPU than 5 and
            // half of 8–10, with no measurable difference on telephone speech.
            complexity: 3,
            // CBR costs 2.5× the CPU of VBR in libopus (SILK re-encodes to hit the rate).
            vbr: true,
        }
    }
}

impl OpusSettings {
    /// Check the ranges libopus accepts.
    pub fn validate(&self) -> Result<(), String> {
        if !(6_000..=256_000).contains(&self.bitrate_bps) {
            return Err(format!(
                "bitrate_bps {}: must be 6000–256000",
                self.bitrate_bps
            ));
        }
        if self.complexity > 10 {
            return Err(format!("complexity {}: must be 0–10", self.complexity));
        }
        Ok(())
    }
}

fn channels_of(n: u16) -> Result<opus::Channels, OpusError> {
    match n {
        1 => Ok(opus::Channels::Mono),
        2 => Ok(opus::Channels::Stereo),
        n => Err(OpusError::Params(format!(
            "{n} channels: Opus storage takes 1 or 2"
        ))),
    }
}

fn check_rate(rate: u32) -> Result<(), OpusError> {
    if matches!(rate, 8000 | 12000 | 16000 | 24000 | 48000) {
        Ok(())
    } else {
        Err(OpusError::Params(format!(
            "sample rate {rate}: Opus takes 8000, 12000, 16000, 24000 or 48000"
        )))
    }
}

/// Samples per channel in one packet at `rate`.
pub fn frame_size(rate: u32) -> usize {
    (rate * FRAME_MS / 1000) as usize
}

/// Sans-IO Opus encoder: push interleaved PCM of any length, take whole 20 ms packets.
pub struct OpusPacketizer {
    enc: opus::Encoder,
    rate: u32,
    channels: usize,
    frame: usize,
    pre_skip: u32,
    /// Interleaved samples not yet encoded (< one frame after each push).
    pending: Vec<i16>,
    /// Frames pushed so far (the timeline length).
    frames_in: u64,
    /// Packets produced so far.
    packets_out: u64,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusPacketizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusPacketizer")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("pre_skip", &self.pre_skip)
            .field("frames_in", &self.frames_in)
            .finish_non_exhaustive()
    }
}

impl OpusPacketizer {
    /// An encoder for `channels` (1–2) at `rate` Hz: application VOIP, 20 ms frames.
    pub fn new(rate: u32, channels: u16, s: &OpusSettings) -> Result<Self, OpusError> {
        check_rate(rate)?;
        s.validate().map_err(OpusError::Params)?;
        let mut enc = opus::Encoder::new(rate, channels_of(channels)?, opus::Application::Voip)?;
        enc.set_bitrate(opus::Bitrate::Bits(s.bitrate_bps as i32))?;
        enc.set_complexity(i32::from(s.complexity))?;
        enc.set_vbr(s.vbr)?;
        enc.set_signal(opus::Signal::Voice)?;
        enc.set_expert_frame_duration(opus::FrameSize::Ms20)?;
        // The two channels are two call legs, not a sound field: keep the decoder from
        // inverting phase between them (it would cancel in a mono downmix).
        enc.set_phase_inversion_disabled(true)?;
        let pre_skip = u32::try_from(enc.get_lookahead()?)
            .map_err(|_| OpusError::Params("negative lookahead".into()))?;
        Ok(OpusPacketizer {
            enc,
            rate,
            channels: usize::from(channels),
            frame: frame_size(rate),
            pre_skip,
            pending: Vec::new(),
            frames_in: 0,
            packets_out: 0,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Encoder delay in samples per channel at the recording rate (the Ogg pre-skip is
    /// this × 48000 / rate).
    pub fn pre_skip(&self) -> u32 {
        self.pre_skip
    }

    /// Samples per channel in one packet.
    pub fn frame_size(&self) -> usize {
        self.frame
    }

    /// Frames pushed so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Packets produced so far.
    pub fn packets_out(&self) -> u64 {
        self.packets_out
    }

    /// Frames buffered and not yet in a packet (less than one packet).
    pub fn pending_frames(&self) -> usize {
        self.pending.len() / self.channels
    }

    fn encode_one(&mut self, samples: &[i16], sink: &mut Vec<Vec<u8>>) -> Result<(), OpusError> {
        let n = self.enc.encode(samples, &mut self.out)?;
        sink.push(self.out.get(..n).unwrap_or_default().to_vec());
        self.packets_out += 1;
        Ok(())
    }

    /// Add interleaved samples (a trailing partial frame is ignored); every completed
    /// 20 ms packet is appended to `packets`.
    pub fn push(&mut self, samples: &[i16], packets: &mut Vec<Vec<u8>>) -> Result<(), OpusError> {
        let whole = samples.len() / self.channels * self.channels;
        let samples = samples.get(..whole).unwrap_or_default();
        self.frames_in += (whole / self.channels) as u64;
        let per = self.frame * self.channels;
        let mut rest = samples;
        if !self.pending.is_empty() {
            let need = (per - self.pending.len()).min(rest.len());
            let (a, b) = rest.split_at(need);
            self.pending.extend_from_slice(a);
            rest = b;
            if self.pending.len() == per {
                let p = std::mem::take(&mut self.pending);
                self.encode_one(&p, packets)?;
                self.pending = p;
                self.pending.clear();
            }
        }
        let mut it = rest.chunks_exact(per);
        for f in &mut it {
            self.encode_one(f, packets)?;
        }
        self.pending.extend_from_slice(it.remainder());
        Ok(())
    }

    /// End of input: pad with silence until every pushed frame (and the encoder's
    /// lookahead) is in a packet. After this, packets × frame_size ≥ frames_in + pre_skip.
    pub fn finish(&mut self, packets: &mut Vec<Vec<u8>>) -> Result<(), OpusError> {
        let needed = self.frames_in + u64::from(self.pre_skip);
        let per = self.frame * self.channels;
        while self.packets_out * (self.frame as u64) < needed {
            let mut p = std::mem::take(&mut self.pending);
            p.resize(per, 0);
            self.encode_one(&p, packets)?;
            p.clear();
            self.pending = p;
        }
        Ok(())
    }
}

/// Packets needed for `frames` frames of input with encoder delay `pre_skip`.
pub fn packets_for(frames: u64, pre_skip: u32, frame: usize) -> u64 {
    (frames + u64::from(pre_skip)).div_ceil(frame as u64)
}

/// Decodes a stored packet stream back to the timeline: drops the first `pre_skip`
/// samples per channel and never returns more than `total_frames` frames; if the packets
/// run out early (an interrupted recording) [`finish`](Self::finish) pads with silence.
pub struct OpusStreamDecoder {
    dec: opus::Decoder,
    channels: usize,
    skip_left: u64,
    /// Frames produced so far.
    produced: u64,
    /// Frames to produce in all.
    limit: u64,
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusStreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusStreamDecoder")
            .field("channels", &self.channels)
            .field("produced", &self.produced)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl OpusStreamDecoder {
    /// A decoder for a stream of `channels` at `rate` with encoder delay `pre_skip`,
    /// producing exactly `total_frames` frames.
    pub fn new(
        rate: u32,
        channels: u16,
        pre_skip: u32,
        total_frames: u64,
    ) -> Result<Self, OpusError> {
        check_rate(rate)?;
        let dec = opus::Decoder::new(rate, channels_of(channels)?)?;
        Ok(OpusStreamDecoder {
            dec,
            channels: usize::from(channels),
            skip_left: u64::from(pre_skip),
            produced: 0,
            limit: total_frames,
            // 120 ms at 48 kHz is the longest packet Opus allows.
            buf: vec![0; 5760 * usize::from(channels)],
        })
    }

    /// Frames still to produce.
    pub fn frames_left(&self) -> u64 {
        self.limit.saturating_sub(self.produced)
    }

    /// Change the total to produce (a reader learns it chunk by chunk: the frames of the
    /// chunks read so far).
    pub fn set_limit(&mut self, total_frames: u64) {
        self.limit = total_frames;
    }

    /// Decode one packet, appending the timeline samples it yields to `out`.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<(), OpusError> {
        let n = self.dec.decode(packet, &mut self.buf, false)?;
        let skip = self.skip_left.min(n as u64) as usize;
        self.skip_left -= skip as u64;
        let take = ((n - skip) as u64).min(self.frames_left()) as usize;
        self.produced += take as u64;
        let ch = self.channels;
        out.extend_from_slice(
            self.buf
                .get(skip * ch..(skip + take) * ch)
                .unwrap_or_default(),
        );
        Ok(())
    }

    /// Pad the output with silence up to the total (packets ended early: an interrupted
    /// recording loses at most its last `pre_skip` samples, which become silence).
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        let n = usize::try_from(self.frames_left()).unwrap_or(0) * self.channels;
        out.resize(out.len() + n, 0);
        self.produced = self.limit.max(self.produced);
    }
}

/// Append `packets` to `out`, each as `u16` big-endian length + bytes.
pub fn frame_packets(packets: &[Vec<u8>], out: &mut Vec<u8>) {
    for p in packets {
        // Packets come from the encoder with a MAX_PACKET (4000) byte buffer.
        let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p.get(..usize::from(len)).unwrap_or_default());
    }
}

/// Split length-prefixed packets; every byte must belong to a packet.
pub fn parse_packets(mut b: &[u8]) -> Result<Vec<&[u8]>, OpusError> {
    let mut v = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return Err(OpusError::Framing("length field cut short".into()));
        }
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if n == 0 || b.len() < 2 + n {
            return Err(OpusError::Framing(format!(
                "packet of {n} bytes does not fit"
            )));
        }
        v.push(&b[2..2 + n]);
        b = &b[2 + n..];
    }
    Ok(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two different speech-like signals (sums of harmonics with vibrato and a
    /// syllable envelope), one per channel, `secs` long at `rate`.
    pub(crate) fn two_voices(rate: u32, frames: usize) -> Vec<i16> {
        let mut v = Vec::with_capacity(frames * 2);
        for i in 0..frames {
            let t = i as f64 / f64::from(rate);
            let mut s = [0.0f64; 2];
            for (ch, (f0, syl)) in [(140.0, 3.1), (215.0, 4.3)].iter().enumerate() {
                let env = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * syl * t).sin()).powi(2);
                let f = f0 * (1.0 + 0.03 * (2.0 * std::f64::consts::PI * 5.0 * t).sin());
                let mut x = 0.0;
                for h in 1..=(1800.0 / f0) as i32 {
                    x += (2.0 * std::f64::consts::PI * f * f64::from(h) * t).sin() / f64::from(h);
                }
                s[ch] = 6000.0 * env * x;
            }
            v.push(s[0].clamp(-32000.0, 32000.0) as i16);
            v.push(s[1].clamp(-32000.0, 32000.0) as i16);
        }
        v
    }

    /// Normalised correlation of channel `a` of `x` with channel `b` of `y`, after
    /// shifting `y` by `lag` frames.
    pub(crate) fn corr(x: &[i16], a: usize, y: &[i16], b: usize, lag: isize) -> f64 {
        let n = (x.len() / 2).min(y.len() / 2) as isize;
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let j = i + lag;
            if j < 0 || j >= n {
                continue;
            }
            let p = f64::from(x[(i * 2) as usize + a]);
            let q = f64::from(y[(j * 2) as usize + b]);
            xy += p * q;
            xx += p * p;
            yy += q * q;
        }
        xy / (xx.sqrt() * yy.sqrt()).max(1.0)
    }

    fn round_trip(rate: u32, frames: usize, s: &OpusSettings) -> (Vec<i16>, Vec<i16>, u64) {
        let input = two_voices(rate, frames);
        let mut enc = OpusPacketizer::new(rate, 2, s).unwrap();
        let mut packets = Vec::new();
        // Odd block sizes: the packetizer must re-frame them.
        for block in input.chunks(2 * 77) {
            enc.push(block, &mut packets).unwrap();
        }
        enc.finish(&mut packets).unwrap();
        assert_eq!(
            packets.len() as u64,
            packets_for(frames as u64, enc.pre_skip(), enc.frame_size())
        );
        let bytes: usize = packets.iter().map(|p| p.len() + 2).sum();
        let mut dec = OpusStreamDecoder::new(rate, 2, enc.pre_skip(), frames as u64).unwrap();
        let mut out = Vec::new();
        for p in &packets {
            dec.decode(p, &mut out).unwrap();
        }
        dec.finish(&mut out);
        (input, out, bytes as u64)
    }

    #[test]
    fn round_trip_keeps_length_channels_and_alignment() {
        for rate in [8000, 16000] {
            let frames = rate as usize * 3 + 123;
            let (input, out, bytes) = round_trip(rate, frames, &OpusSettings::default());
            assert_eq!(out.len(), input.len(), "rate {rate}: exact length");
            for ch in 0..2 {
                let same = corr(&input, ch, &out, ch, 0);
                assert!(same > 0.6, "rate {rate} ch {ch}: correlation {same}");
                // The other channel, or a shift of one 20 ms frame, does not match.
                let cross = corr(&input, ch, &out, 1 - ch, 0);
                assert!(cross.abs() < 0.2, "rate {rate} ch {ch}: crosstalk {cross}");
                let shifted = corr(&input, ch, &out, ch, (rate / 50) as isize);
                assert!(
                    shifted < same - 0.3,
                    "rate {rate}: shift {shifted} vs {same}"
                );
            }
            // 32 kbit/s: about 4 kB per second of call, far below 32 kB/s of PCM.
            let per_s = bytes as f64 / (frames as f64 / f64::from(rate));
            assert!(per_s < 5000.0, "rate {rate}: {per_s} bytes/s");
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for frames in [0usize, 1, 159, 160, 161] {
            let (input, out, _) = round_trip(8000, frames, &OpusSettings::default());
            assert_eq!(out.len(), input.len(), "{frames} frames");
        }
    }

    #[test]
    fn interrupted_stream_is_padded_to_length() {
        let s = OpusSettings::default();
        let mut enc = OpusPacketizer::new(8000, 2, &s).unwrap();
        let mut packets = Vec::new();
        enc.push(&two_voices(8000, 1600), &mut packets).unwrap();
        // No finish: 10 packets (1600 frames), decoder asked for those 1600 frames.
        assert_eq!(packets.len(), 10);
        let mut dec = OpusStreamDecoder::new(8000, 2, enc.pre_skip(), 1600).unwrap();
        let mut out = Vec::new();
        for p in &packets {
            dec.decode(p, &mut out).unwrap();
        }
        assert_eq!(out.len(), (1600 - enc.pre_skip() as usize) * 2);
        dec.finish(&mut out);
        assert_eq!(out.len(), 3200);
    }

    #[test]
    fn framing_round_trip_and_errors() {
        let pk = vec![vec![1u8, 2, 3], vec![9u8; 300]];
        let mut b = Vec::new();
        frame_packets(&pk, &mut b);
        let back = parse_packets(&b).unwrap();
        assert_eq!(back, vec![&pk[0][..], &pk[1][..]]);
        assert!(parse_packets(&b[..b.len() - 1]).is_err());
        assert!(parse_packets(&[0]).is_err());
        assert!(parse_packets(&[0, 0]).is_err());
        assert!(parse_packets(&[]).unwrap().is_empty());
    }

    #[test]
    fn settings_validated() {
        assert!(OpusPacketizer::new(
            8000,
            2,
            &OpusSettings {
                bitrate_bps: 100,
                ..Default::default()
            }
        )
        .is_err());
        assert!(OpusPacketizer::new(11025, 2, &OpusSettings::default()).is_err());
        assert!(OpusPacketizer::new(8000, 3, &OpusSettings::default()).is_err());
    }
}
