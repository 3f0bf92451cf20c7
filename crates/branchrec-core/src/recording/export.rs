//! Streaming exports of a verified container: WAV (from PCM or decoded Opus) and Ogg
//! Opus (the stored packets as they are, or PCM encoded on the fly). Each holds one
//! chunk in memory, whatever the length of the call, and returns the hash of the stored
//! audio it read so the caller can compare it with the signed manifest (the file could
//! have been replaced between verification and export).

use std::io::{Read, Seek, Write};

use thiserror::Error;

use crate::keys::KeyWrap;
use crate::recording::container::{ContainerError, PcmStream, ScanState};
use crate::recording::ogg::OggOpusWriter;
use crate::recording::opus::{OpusError, OpusPacketizer, OpusSettings};
use crate::recording::wav::WavWriter;

/// Export output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// 16-bit PCM WAV.
    Wav,
    /// Ogg Opus (RFC 7845).
    Opus,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    /// `wav` or `opus` (the CLI's `--format`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "wav" => Ok(ExportFormat::Wav),
            "opus" => Ok(ExportFormat::Opus),
            other => Err(format!("unknown format {other:?} (wav or opus)")),
        }
    }
}

impl ExportFormat {
    /// From a file name: `.wav` → WAV, `.opus`/`.ogg` → Ogg Opus, else `None`.
    pub fn from_path(p: &std::path::Path) -> Option<Self> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("wav") => Some(ExportFormat::Wav),
            Some("opus" | "ogg") => Some(ExportFormat::Opus),
            _ => None,
        }
    }
}

/// Errors of an export.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The container failed (verification, I/O).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Writing the output failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// The Opus encoder failed.
    #[error(transparent)]
    Opus(#[from] OpusError),
}

/// What an export read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Frames (samples per channel) of audio in the output.
    pub frames: u64,
    /// SHA-256 of the stored audio that was read (see
    /// [`FinishedContainer::audio_sha256`](crate::recording::FinishedContainer)).
    pub audio_sha256: [u8; 32],
    /// Bytes written.
    pub bytes: u64,
    /// How the container ended (complete, or interrupted when allowed).
    pub state: ScanState,
}

/// Decode (if needed) and write a WAV.
pub fn to_wav<R: Read, W: Write + Seek>(
    r: R,
    vault: &dyn KeyWrap,
    allow_interrupted: bool,
    out: W,
) -> Result<(Exported, W), ExportError> {
    let mut st = PcmStream::open(r, vault, allow_interrupted)?;
    let h = st.header().clone();
    let mut w = WavWriter::new(out, h.sample_rate, h.channels)?;
    let mut buf = Vec::new();
    let mut frames = 0u64;
    while st.next_into(&mut buf)? {
        w.write(&buf)?;
        frames += (buf.len() / usize::from(h.channels.max(1))) as u64;
        buf.clear();
    }
    let audio_sha256 = st.reader().audio_sha256();
    let state = st.state().cloned().unwrap_or(ScanState::Complete);
    let out = w.finish()?;
    Ok((
        Exported {
            frames,
            audio_sha256,
            bytes: 44 + frames * u64::from(h.channels) * 2,
            state,
        },
        out,
    ))
}

/// Ogg Opus: an Opus recording's packets are copied (no re-encoding); a PCM recording is
/// encoded with `settings`. `serial` is the Ogg stream serial number; `comments` go into
/// OpusTags.
pub fn to_ogg_opus<R: Read, W: Write>(
    r: R,
    vault: &dyn KeyWrap,
    allow_interrupted: bool,
    settings: &OpusSettings,
    serial: u32,
    comments: &[String],
    out: W,
) -> Result<(Exported, W), ExportError> {
    let vendor = format!(
        "branchrec {} ({})",
        env!("CARGO_PKG_VERSION"),
        opus::version()
    );
    let mut st = PcmStream::open(r, vault, allow_interrupted)?;
    let h = st.header().clone();
    let channels = u8::try_from(h.channels).unwrap_or(u8::MAX);
    let Some(o) = h.opus else {
        // PCM storage: encode while reading.
        let mut enc = OpusPacketizer::new(h.sample_rate, h.channels, settings)?;
        let mut w = OggOpusWriter::new(
            out,
            serial,
            h.sample_rate,
            channels,
            enc.pre_skip(),
            enc.frame_size(),
            &vendor,
            comments,
        )?;
        let (mut buf, mut packets) = (Vec::new(), Vec::new());
        while st.next_into(&mut buf)? {
            enc.push(&buf, &mut packets)?;
            for p in packets.drain(..) {
                w.push_packet(&p)?;
            }
            buf.clear();
        }
        enc.finish(&mut packets)?;
        for p in packets.drain(..) {
            w.push_packet(&p)?;
        }
        let frames = enc.frames_in();
        let bytes = w.bytes_written();
        let out = w.finish(frames)?;
        return Ok((
            Exported {
                frames,
                audio_sha256: st.reader().audio_sha256(),
                bytes,
                state: st.state().cloned().unwrap_or(ScanState::Complete),
            },
            out,
        ));
    };
    let mut w = OggOpusWriter::new(
        out,
        serial,
        h.sample_rate,
        channels,
        u32::from(o.pre_skip),
        usize::from(o.frame_size),
        &vendor,
        comments,
    )?;
    let rd = st.reader_mut();
    let state = loop {
        match rd.next_chunk() {
            Ok(Some(c)) => {
                for p in &c.packets {
                    w.push_packet(p)?;
                }
                if c.last {
                    break ScanState::Complete;
                }
            }
            Ok(None) => break ScanState::Complete,
            Err(e) => break rd.end_of_prefix(e, allow_interrupted)?,
        }
    };
    // An interrupted stream lacks the packets that flush the encoder delay: it ends at
    // what is decodable.
    let frames = match state {
        ScanState::Complete => rd.frames(),
        _ => rd.frames().saturating_sub(u64::from(o.pre_skip)),
    };
    let audio_sha256 = rd.audio_sha256();
    let bytes = w.bytes_written();
    let out = w.finish(frames)?;
    Ok((
        Exported {
            frames,
            audio_sha256,
            bytes,
            state,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{test_kek::TestKek as KeyFileVault, DataKey};
    use crate::media::AudioBlock;
    use crate::recording::container::{ContainerReader, HeaderParams};
    use crate::recording::encode::ContainerWriter;
    use crate::recording::ogg::{read_pages, FLAG_EOS};

    fn container(v: &KeyFileVault, opus: Option<OpusSettings>, frames: usize) -> Vec<u8> {
        let dk = DataKey::from_bytes([5; 32]);
        let p = HeaderParams {
            recording_id: "x".into(),
            created_unix_ms: 0,
            sample_rate: 8000,
            channels: 2,
            chunk_target_frames: 4000,
            kek_id: v.kek_id(),
            extra_json: String::new(),
        };
        let (mut w, mut f) =
            ContainerWriter::with_format(p, opus, dk.clone(), v.wrap(&dk).unwrap(), [1; 7])
                .unwrap();
        let samples = crate::recording::opus::tests::two_voices(8000, frames);
        w.push_block(&AudioBlock {
            start_frame: 0,
            samples,
        })
        .unwrap();
        while let Some(c) = w.poll_chunk() {
            f.extend_from_slice(&c);
        }
        f.extend_from_slice(&w.finish().bytes);
        f
    }

    #[test]
    fn ogg_from_opus_storage_copies_packets_and_trims_to_length() {
        let v = KeyFileVault::from_key([1; 32]);
        let frames = 8000 * 3 + 77;
        let file = container(&v, Some(OpusSettings::default()), frames);
        let (e, out) = to_ogg_opus(
            &file[..],
            &v,
            false,
            &OpusSettings::default(),
            9,
            &[],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(e.frames, frames as u64);
        assert_eq!(e.state, ScanState::Complete);
        let pages = read_pages(&out).unwrap();
        let stored: Vec<Vec<u8>> = {
            let mut rd = ContainerReader::open(&file[..], &v).unwrap();
            let mut all = Vec::new();
            while let Some(c) = rd.next_chunk().unwrap() {
                all.extend(c.packets);
            }
            all
        };
        let copied: Vec<Vec<u8>> = pages[2..].iter().flat_map(|p| p.packets.clone()).collect();
        assert_eq!(copied, stored, "packets copied, not re-encoded");
        let head = &pages[0].packets[0];
        let pre_skip48 = u64::from(u16::from_le_bytes([head[10], head[11]]));
        let last = pages.last().unwrap();
        assert_eq!(last.flags, FLAG_EOS);
        assert_eq!(last.granule, pre_skip48 + frames as u64 * 6);
        // WAV of the same recording: exactly the frames.
        let (w, cur) = to_wav(&file[..], &v, false, std::io::Cursor::new(Vec::new())).unwrap();
        assert_eq!(w.frames, frames as u64);
        assert_eq!(cur.into_inner().len(), 44 + frames * 4);
        assert_eq!(w.audio_sha256, e.audio_sha256);
    }

    #[test]
    fn ogg_from_pcm_storage_is_encoded_and_interrupted_files_need_permission() {
        let v = KeyFileVault::from_key([1; 32]);
        let frames = 8000 * 2 + 5;
        let file = container(&v, None, frames);
        let (e, out) = to_ogg_opus(
            &file[..],
            &v,
            false,
            &OpusSettings::default(),
            9,
            &[],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(e.frames, frames as u64);
        let pages = read_pages(&out).unwrap();
        let head = &pages[0].packets[0];
        let pre_skip48 = u64::from(u16::from_le_bytes([head[10], head[11]]));
        assert_eq!(
            pages.last().unwrap().granule,
            pre_skip48 + frames as u64 * 6
        );
        // Drop the final chunk: refused unless interrupted recordings are allowed.
        let cut = &file[..file.len() - 40];
        assert!(to_wav(cut, &v, false, std::io::Cursor::new(Vec::new())).is_err());
        let (w, _) = to_wav(cut, &v, true, std::io::Cursor::new(Vec::new())).unwrap();
        assert!(matches!(w.state, ScanState::Interrupted { .. }));
        assert!(w.frames < frames as u64);
    }
}
