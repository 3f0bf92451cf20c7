//! Non-G.711 streams for `rtp --stream`: G.722 and G.729 from pre-encoded payload files
//! (ffmpeg `-c:a g722 -f g722`, or G.729 frames taken from a capture), Opus encoded here
//! with libopus from a raw 48 kHz file. Packetised per RFC 3551 / RFC 7587 with their
//! own clocks: G.722 and G.729 tick at 8000 Hz (160 per 20 ms; G.722's audio is 16 kHz),
//! Opus at 48000 Hz (960 per 20 ms).

use crate::rtp::{write_header, ScheduledPacket, RTP_HEADER_LEN};
use anyhow::{bail, Context, Result};

/// A codec of the `rtp` subcommand beyond G.711.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coded {
    /// G.722, PT 9: file = raw G.722 code bytes; 160 bytes per packet.
    G722,
    /// G.729, PT 18: file = 10-byte frames; two frames per packet.
    G729,
    /// Opus with the given dynamic PT: file = raw s16le mono 48 kHz; 20 ms frames at
    /// 32 kbit/s with in-band FEC on.
    Opus(u8),
}

impl Coded {
    /// `g722`, `g729`, `opus` or `opus/PT`.
    pub fn parse(s: &str) -> Option<Coded> {
        match s.to_ascii_lowercase().as_str() {
            "g722" => Some(Coded::G722),
            "g729" => Some(Coded::G729),
            "opus" => Some(Coded::Opus(111)),
            o => o
                .strip_prefix("opus/")
                .and_then(|pt| pt.parse().ok())
                .filter(|pt| (96..128).contains(pt))
                .map(Coded::Opus),
        }
    }
}

/// Payloads of 20 ms packets and the RTP timestamp step between them.
pub fn payloads(codec: Coded, file: &[u8]) -> Result<(u8, u32, Vec<Vec<u8>>)> {
    Ok(match codec {
        Coded::G722 => (9, 160, file.chunks(160).map(<[u8]>::to_vec).collect()),
        Coded::G729 => {
            if file.len() % 10 != 0 {
                bail!("G.729 file is not a whole number of 10-byte frames");
            }
            (18, 160, file.chunks(20).map(<[u8]>::to_vec).collect())
        }
        Coded::Opus(pt) => {
            if file.len() % 2 != 0 {
                bail!("Opus input must be raw s16le mono 48 kHz");
            }
            let pcm: Vec<i16> = file
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)
                .context("opus encoder")?;
            enc.set_bitrate(opus::Bitrate::Bits(32000))?;
            enc.set_inband_fec(true)?;
            enc.set_packet_loss_perc(10)?;
            let mut out = Vec::new();
            for chunk in pcm.chunks(960) {
                let mut frame = chunk.to_vec();
                frame.resize(960, 0);
                out.push(enc.encode_vec(&frame, 1500)?);
            }
            (pt, 960, out)
        }
    })
}

/// Scheduled packets of a coded stream (slot k = packet k), skipping packet indices in
/// `drop` (simulated loss: sequence numbers and timestamps still advance).
pub fn build(
    codec: Coded,
    file: &[u8],
    ssrc: u32,
    seq: u16,
    ts: u32,
    drop: &[u32],
) -> Result<Vec<ScheduledPacket>> {
    let (pt, step, pls) = payloads(codec, file)?;
    let mut out = Vec::with_capacity(pls.len());
    for (k, pl) in pls.iter().enumerate() {
        let k = k as u32;
        if drop.contains(&k) {
            continue;
        }
        let mut bytes = vec![0u8; RTP_HEADER_LEN + pl.len()];
        write_header(
            &mut bytes,
            pt,
            k == 0,
            seq.wrapping_add(k as u16),
            ts.wrapping_add(step.wrapping_mul(k)),
            ssrc,
        );
        bytes[RTP_HEADER_LEN..].copy_from_slice(pl);
        out.push(ScheduledPacket { slot: k, bytes });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_payload_types() {
        let g722 = build(Coded::G722, &[7u8; 480], 1, 10, 100, &[]).unwrap();
        assert_eq!(g722.len(), 3);
        assert_eq!(g722[2].bytes[1], 9);
        assert_eq!(&g722[2].bytes[4..8], &(100u32 + 320).to_be_bytes());
        let g729 = build(Coded::G729, &[1u8; 60], 1, 10, 0, &[1]).unwrap();
        assert_eq!(g729.len(), 2);
        assert_eq!((g729[1].slot, g729[1].bytes.len()), (2, 32));
        assert_eq!(&g729[1].bytes[2..4], &12u16.to_be_bytes());
        let pcm = vec![0u8; 2 * 960 * 5];
        let op = build(Coded::Opus(100), &pcm, 1, 0, 0, &[]).unwrap();
        assert_eq!(op.len(), 5);
        assert_eq!(op[4].bytes[1], 100);
        assert_eq!(&op[4].bytes[4..8], &(4u32 * 960).to_be_bytes());
        assert!(Coded::parse("opus/200").is_none());
        assert_eq!(Coded::parse("OPUS/101"), Some(Coded::Opus(101)));
    }
}
