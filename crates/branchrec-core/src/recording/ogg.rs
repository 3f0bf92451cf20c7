//! A streaming Ogg Opus writer (RFC 3533 pages, RFC 7845 encapsulation) and a page
//! reader that checks what the writer promises (used by tests and by anyone who wants
//! to inspect an export).
//!
//! The writer takes Opus packets one at a time and writes a page every second of audio
//! (or when 255 lacing values are used up), so an export never holds more than one
//! page in memory. Granule positions count 48 kHz samples including the pre-skip; the
//! final page (end-of-stream) carries the end-trimmed granule, so a player outputs
//! exactly the recorded length.

use std::io::{self, Write};

/// Build the CRC-32 table of Ogg (polynomial 0x04C11DB7, not reflected, initial 0).
const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

static CRC: [u32; 256] = crc_table();

/// The Ogg page checksum of `data` (with the checksum field zeroed).
pub fn ogg_crc(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |c, &b| {
        (c << 8) ^ CRC[usize::from(((c >> 24) as u8) ^ b)]
    })
}

/// Page flag: continued packet.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Page flag: beginning of stream.
pub const FLAG_BOS: u8 = 0x02;
/// Page flag: end of stream.
pub const FLAG_EOS: u8 = 0x04;

/// Audio packets per page (50 × 20 ms = 1 s).
const PACKETS_PER_PAGE: usize = 50;

/// Streaming Ogg Opus writer (channel mapping family 0: mono or stereo).
pub struct OggOpusWriter<W: Write> {
    w: W,
    serial: u32,
    seq: u32,
    /// Pre-skip in 48 kHz samples.
    pre_skip48: u64,
    /// 48 kHz samples per packet.
    packet48: u64,
    /// 48 kHz samples per input sample.
    scale: u64,
    packets_done: u64,
    page_lacing: Vec<u8>,
    page_data: Vec<u8>,
    page_packets: usize,
    bytes: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Write the OpusHead and OpusTags pages. `rate` is the input (recording) rate,
    /// `pre_skip` the encoder delay at that rate, `frame` the samples per packet at that
    /// rate; `vendor` and `comments` (`KEY=value`) go into OpusTags.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: W,
        serial: u32,
        rate: u32,
        channels: u8,
        pre_skip: u32,
        frame: usize,
        vendor: &str,
        comments: &[String],
    ) -> io::Result<Self> {
        if 48_000 % rate != 0 || !(1..=2).contains(&channels) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Ogg Opus: rate {rate} / {channels} channels not supported"),
            ));
        }
        let scale = u64::from(48_000 / rate);
        let pre_skip48 = u64::from(pre_skip) * scale;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&(u16::try_from(pre_skip48).unwrap_or(u16::MAX)).to_le_bytes());
        head.extend_from_slice(&rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
        for c in comments {
            tags.extend_from_slice(&(c.len() as u32).to_le_bytes());
            tags.extend_from_slice(c.as_bytes());
        }
        let mut me = OggOpusWriter {
            w,
            serial,
            seq: 0,
            pre_skip48,
            packet48: frame as u64 * scale,
            scale,
            packets_done: 0,
            page_lacing: Vec::new(),
            page_data: Vec::new(),
            page_packets: 0,
            bytes: 0,
        };
        me.write_packet_pages(&head, FLAG_BOS, 0)?;
        me.write_packet_pages(&tags, 0, 0)?;
        Ok(me)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Write one packet that may need several pages (the header packets), alone.
    fn write_packet_pages(&mut self, p: &[u8], flags: u8, granule: u64) -> io::Result<()> {
        let mut chunks = p.chunks(255 * 255).peekable();
        let mut first = true;
        while let Some(part) = chunks.next() {
            let last = chunks.peek().is_none();
            let mut lacing = vec![255u8; part.len() / 255];
            if last {
                lacing.push((part.len() % 255) as u8);
            }
            let f = flags | if first { 0 } else { FLAG_CONTINUED };
            let g = if last { granule } else { u64::MAX };
            self.write_page(f, g, &lacing, part)?;
            first = false;
        }
        Ok(())
    }

    fn write_page(
        &mut self,
        flags: u8,
        granule: u64,
        lacing: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let mut page = Vec::with_capacity(27 + lacing.len() + data.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.seq.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(lacing);
        page.extend_from_slice(data);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.w.write_all(&page)?;
        self.seq += 1;
        self.bytes += page.len() as u64;
        Ok(())
    }

    fn flush_page(&mut self, flags: u8, granule: u64) -> io::Result<()> {
        let lacing = std::mem::take(&mut self.page_lacing);
        let data = std::mem::take(&mut self.page_data);
        self.write_page(flags, granule, &lacing, &data)?;
        self.page_packets = 0;
        self.page_lacing = lacing;
        self.page_lacing.clear();
        self.page_data = data;
        self.page_data.clear();
        Ok(())
    }

    fn page_granule(&self) -> u64 {
        self.packets_done * self.packet48
    }

    /// Add one audio packet (at most 255 × 255 − 1 bytes; Opus packets are far smaller).
    pub fn push_packet(&mut self, p: &[u8]) -> io::Result<()> {
        let segs = p.len() / 255 + 1;
        if segs > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "packet too large",
            ));
        }
        if self.page_lacing.len() + segs > 255 {
            let g = self.page_granule();
            self.flush_page(0, g)?;
        }
        let full = self.page_lacing.len() + p.len() / 255;
        self.page_lacing.resize(full, 255);
        self.page_lacing.push((p.len() % 255) as u8);
        self.page_data.extend_from_slice(p);
        self.page_packets += 1;
        self.packets_done += 1;
        if self.page_packets >= PACKETS_PER_PAGE {
            let g = self.page_granule();
            self.flush_page(0, g)?;
        }
        Ok(())
    }

    /// End the stream: the last page gets the end-of-stream flag and the granule of
    /// exactly `total_frames` frames (at the input rate) after the pre-skip. If the
    /// last page was already written, an empty end-of-stream page follows it.
    pub fn finish(mut self, total_frames: u64) -> io::Result<W> {
        let end = self.pre_skip48 + total_frames * self.scale;
        let g = end.min(self.packets_done * self.packet48);
        self.flush_page(FLAG_EOS, g)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// One parsed Ogg page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Header flags.
    pub flags: u8,
    /// Granule position.
    pub granule: u64,
    /// Stream serial number.
    pub serial: u32,
    /// Page sequence number.
    pub seq: u32,
    /// Packets completed on this page (a packet continued from the previous page is
    /// joined to it).
    pub packets: Vec<Vec<u8>>,
}

/// Parse every page of an Ogg stream, checking capture patterns, versions and CRCs.
pub fn read_pages(mut b: &[u8]) -> Result<Vec<Page>, String> {
    let mut pages = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    while !b.is_empty() {
        if b.len() < 27 || &b[..4] != b"OggS" || b[4] != 0 {
            return Err(format!("page {}: bad capture pattern/header", pages.len()));
        }
        let nseg = usize::from(b[26]);
        if b.len() < 27 + nseg {
            return Err("truncated lacing".into());
        }
        let lacing = &b[27..27 + nseg];
        let data_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let total = 27 + nseg + data_len;
        if b.len() < total {
            return Err("truncated page".into());
        }
        let mut copy = b[..total].to_vec();
        copy[22..26].fill(0);
        let want = u32::from_le_bytes([b[22], b[23], b[24], b[25]]);
        if ogg_crc(&copy) != want {
            return Err(format!("page {}: CRC mismatch", pages.len()));
        }
        let flags = b[5];
        let mut granule = [0u8; 8];
        granule.copy_from_slice(&b[6..14]);
        let mut data = &b[27 + nseg..total];
        let mut packets = Vec::new();
        for &l in lacing {
            let (a, rest) = data.split_at(usize::from(l));
            partial.extend_from_slice(a);
            data = rest;
            if l < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pages.push(Page {
            flags,
            granule: u64::from_le_bytes(granule),
            serial: u32::from_le_bytes([b[14], b[15], b[16], b[17]]),
            seq: u32::from_le_bytes([b[18], b[19], b[20], b[21]]),
            packets,
        });
        b = &b[total..];
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_answer() {
        // A page whose checksum was computed by libogg: the empty-data EOS page below,
        // checked against a table-free bitwise CRC.
        let bitwise = |d: &[u8]| {
            let mut c = 0u32;
            for &b in d {
                c ^= u32::from(b) << 24;
                for _ in 0..8 {
                    c = if c & 0x8000_0000 != 0 {
                        (c << 1) ^ 0x04C1_1DB7
                    } else {
                        c << 1
                    };
                }
            }
            c
        };
        for d in [&b""[..], b"OggS", b"123456789", &[0xffu8; 300][..]] {
            assert_eq!(ogg_crc(d), bitwise(d));
        }
        // The CRC-32/MPEG-2-without-final-xor check value for "123456789" with init 0.
        assert_eq!(ogg_crc(b"123456789"), 0x89A1_897F);
    }

    fn write(packets: &[Vec<u8>], frames: u64, rate: u32) -> Vec<u8> {
        let frame = (rate / 50) as usize;
        let mut w = OggOpusWriter::new(
            Vec::new(),
            0x1234_5678,
            rate,
            2,
            52,
            frame,
            "branchrec",
            &["RECORDING_ID=x".to_string()],
        )
        .unwrap();
        for p in packets {
            w.push_packet(p).unwrap();
        }
        w.finish(frames).unwrap()
    }

    #[test]
    fn pages_headers_granules_and_checksums() {
        // 120 packets of varied sizes (one over 255 bytes), 8 kHz: 2.4 s of packets,
        // pre-skip 52 samples, 19000 frames of call.
        let packets: Vec<Vec<u8>> = (0..120)
            .map(|i| vec![i as u8; if i == 7 { 700 } else { 20 + i % 60 }])
            .collect();
        let frames = 19_000;
        let bytes = write(&packets, frames, 8000);
        let pages = read_pages(&bytes).unwrap();
        // OpusHead alone on a BOS page; OpusTags alone on the next.
        assert_eq!(pages[0].flags, FLAG_BOS);
        assert_eq!(pages[0].granule, 0);
        let head = &pages[0].packets[0];
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[8], 1);
        assert_eq!(head[9], 2);
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 52 * 6);
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), 8000);
        assert_eq!(head[18], 0);
        assert_eq!(&pages[1].packets[0][..8], b"OpusTags");
        assert_eq!(pages[1].packets.len(), 1);
        // Sequence numbers, one serial, packets preserved in order.
        let mut got = Vec::new();
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.seq, i as u32);
            assert_eq!(p.serial, 0x1234_5678);
            if i >= 2 {
                got.extend(p.packets.iter().cloned());
            }
        }
        assert_eq!(got, packets);
        // Granules: 960 per packet through the page's last packet; the last page is
        // EOS with the end-trimmed value pre_skip + frames × 6.
        let mut n = 0u64;
        for p in &pages[2..pages.len() - 1] {
            n += p.packets.len() as u64;
            assert_eq!(p.granule, n * 960);
            assert_eq!(p.flags, 0);
        }
        let last = pages.last().unwrap();
        assert_eq!(last.flags, FLAG_EOS);
        assert_eq!(last.granule, 52 * 6 + frames * 6);
        assert!(last.granule > pages[pages.len() - 2].granule);
        // Any flipped byte is caught by a checksum (or the structure).
        for pos in [5usize, 30, 200, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[pos] ^= 0x10;
            assert!(read_pages(&b).is_err(), "flip at {pos}");
        }
    }

    #[test]
    fn sixteen_khz_scale() {
        let packets = vec![vec![1u8; 30]; 3];
        let bytes = write(&packets, 700, 16000);
        let pages = read_pages(&bytes).unwrap();
        assert_eq!(pages.last().unwrap().granule, 52 * 3 + 700 * 3);
        assert!(OggOpusWriter::new(Vec::new(), 1, 44100, 2, 0, 882, "v", &[]).is_err());
    }
}
