//! WAV (RIFF, 16-bit PCM) export.

use std::io::{self, Seek, SeekFrom, Write};

const HEADER_LEN: u32 = 44;

fn header(sample_rate: u32, channels: u16, data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let block_align = channels.saturating_mul(2);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(HEADER_LEN - 8).saturating_add(data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

fn data_len_for(samples: u64) -> io::Result<u32> {
    samples
        .checked_mul(2)
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b <= u32::MAX - HEADER_LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "audio too long for a WAV file (4 GiB)",
            )
        })
}

fn write_samples(w: &mut impl Write, samples: &[i16]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(samples.len().min(8192) * 2);
    for part in samples.chunks(8192) {
        buf.clear();
        for s in part {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Write a complete 16-bit PCM WAV file with interleaved `samples`.
pub fn write_wav(
    w: &mut impl Write,
    sample_rate: u32,
    channels: u16,
    samples: &[i16],
) -> io::Result<()> {
    if channels == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero channels"));
    }
    let len = data_len_for(samples.len() as u64)?;
    w.write_all(&header(sample_rate, channels, len))?;
    write_samples(w, samples)
}

/// Streaming WAV writer: writes a header with zero sizes, appends samples, and patches
/// the RIFF and data sizes in [`finish`](Self::finish).
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    w: W,
    start: u64,
    sample_rate: u32,
    channels: u16,
    samples: u64,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Write a placeholder header at the current position.
    pub fn new(mut w: W, sample_rate: u32, channels: u16) -> io::Result<Self> {
        if channels == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero channels"));
        }
        let start = w.stream_position()?;
        w.write_all(&header(sample_rate, channels, 0))?;
        Ok(WavWriter {
            w,
            start,
            sample_rate,
            channels,
            samples: 0,
        })
    }

    /// Append interleaved samples.
    pub fn write(&mut self, samples: &[i16]) -> io::Result<()> {
        data_len_for(self.samples + samples.len() as u64)?;
        write_samples(&mut self.w, samples)?;
        self.samples += samples.len() as u64;
        Ok(())
    }

    /// Patch the sizes and return the inner writer (positioned at the end).
    pub fn finish(mut self) -> io::Result<W> {
        let len = data_len_for(self.samples)?;
        let end = self.w.stream_position()?;
        self.w.seek(SeekFrom::Start(self.start))?;
        self.w
            .write_all(&header(self.sample_rate, self.channels, len))?;
        self.w.seek(SeekFrom::Start(end))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent minimal RIFF parser: walks the chunks.
    fn parse(b: &[u8]) -> (u16, u16, u32, u32, u16, u16, Vec<i16>) {
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len() - 8
        );
        assert_eq!(&b[8..12], b"WAVE");
        let mut i = 12;
        let mut fmt = None;
        let mut data = None;
        while i + 8 <= b.len() {
            let id = &b[i..i + 4];
            let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
            let body = &b[i + 8..i + 8 + len];
            if id == b"fmt " {
                fmt = Some(body.to_vec());
            } else if id == b"data" {
                data = Some(
                    body.chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<_>>(),
                );
            }
            i += 8 + len + (len & 1);
        }
        assert_eq!(i, b.len());
        let f = fmt.unwrap();
        let u16at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        (
            u16at(0),
            u16at(2),
            u32at(4),
            u32at(8),
            u16at(12),
            u16at(14),
            data.unwrap(),
        )
    }

    #[test]
    fn wav_header_parses_back() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 - 16000) as i16).collect();
        let mut out = Vec::new();
        write_wav(&mut out, 8000, 2, &samples).unwrap();
        assert_eq!(out.len(), 44 + 2000);
        let (fmt, ch, rate, byte_rate, align, bits, data) = parse(&out);
        assert_eq!(
            (fmt, ch, rate, byte_rate, align, bits),
            (1, 2, 8000, 32000, 4, 16)
        );
        assert_eq!(data, samples);
    }

    #[test]
    fn streaming_writer_patches_sizes() {
        let samples: Vec<i16> = (0..20000).map(|i| (i % 3000) as i16 - 1500).collect();
        let mut w = WavWriter::new(std::io::Cursor::new(Vec::new()), 8000, 1).unwrap();
        for part in samples.chunks(777) {
            w.write(part).unwrap();
        }
        let out = w.finish().unwrap().into_inner();
        let mut direct = Vec::new();
        write_wav(&mut direct, 8000, 1, &samples).unwrap();
        assert_eq!(out, direct);
        let (_, ch, rate, _, _, _, data) = parse(&out);
        assert_eq!((ch, rate), (1, 8000));
        assert_eq!(data, samples);
    }
}
