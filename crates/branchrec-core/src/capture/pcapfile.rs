//! A small reader for capture files: classic pcap (both byte orders, micro- and
//! nanosecond timestamps) and pcapng (section header, interface description, enhanced,
//! simple and obsolete packet blocks; per-interface link type and timestamp resolution).
//!
//! Sans-IO in spirit: it reads from any [`Read`], never seeks, and bounds every length it
//! reads from the file.

use std::io::Read;
use std::time::Duration;

/// Biggest block / record we accept (a jumbo frame plus headers is far below this).
const MAX_RECORD: usize = 256 * 1024;

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// I/O error from the underlying reader.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// Not a pcap or pcapng file.
    #[error("not a pcap or pcapng file (magic {0:08x})")]
    BadMagic(u32),
    /// A length field is out of bounds.
    #[error("corrupt capture file: {0}")]
    Corrupt(&'static str),
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture timestamp since the Unix epoch.
    pub ts: Duration,
    /// Link type (DLT/LINKTYPE number) of the interface it was captured on.
    pub linktype: u32,
    /// The captured bytes (possibly truncated to the snap length).
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second.
    units: u64,
}

enum Format {
    Pcap {
        big: bool,
        nanos: bool,
        linktype: u32,
    },
    PcapNg {
        big: bool,
        ifaces: Vec<Iface>,
    },
}

/// Reads frames from a pcap or pcapng stream.
pub struct PcapReader<R> {
    r: R,
    fmt: Format,
}

fn u16_at(b: &[u8], off: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn u32_at(b: &[u8], off: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// Read exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the first byte.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, PcapError> {
    let mut got = 0;
    while got < buf.len() {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        let n = r.read(rest)?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(PcapError::Corrupt("truncated record"));
        }
        got += n;
    }
    Ok(true)
}

impl<R: Read> PcapReader<R> {
    /// Read the file header and detect the format.
    pub fn new(mut r: R) -> Result<Self, PcapError> {
        let mut m = [0u8; 4];
        if !read_full(&mut r, &mut m)? {
            return Err(PcapError::Corrupt("empty file"));
        }
        let magic = u32::from_le_bytes(m);
        match magic {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let big = magic == 0xd4c3_b2a1 || magic == 0x4d3c_b2a1;
                let nanos = magic == 0xa1b2_3c4d || magic == 0x4d3c_b2a1;
                let mut rest = [0u8; 20];
                if !read_full(&mut r, &mut rest)? {
                    return Err(PcapError::Corrupt("truncated file header"));
                }
                let linktype = u32_at(&rest, 16, big).unwrap_or(1) & 0x0fff_ffff;
                Ok(PcapReader {
                    r,
                    fmt: Format::Pcap {
                        big,
                        nanos,
                        linktype,
                    },
                })
            }
            0x0a0d_0d0a => {
                let mut me = PcapReader {
                    r,
                    fmt: Format::PcapNg {
                        big: false,
                        ifaces: Vec::new(),
                    },
                };
                me.read_shb_rest()?;
                Ok(me)
            }
            other => Err(PcapError::BadMagic(other)),
        }
    }

    /// After the SHB block type: length, byte-order magic, rest of the block.
    fn read_shb_rest(&mut self) -> Result<(), PcapError> {
        let mut hdr = [0u8; 8];
        if !read_full(&mut self.r, &mut hdr)? {
            return Err(PcapError::Corrupt("truncated section header"));
        }
        let bom_le = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let big = match bom_le {
            0x1a2b_3c4d => false,
            0x4d3c_2b1a => true,
            _ => return Err(PcapError::Corrupt("bad pcapng byte-order magic")),
        };
        let len = u32_at(&hdr, 0, big).unwrap_or(0) as usize;
        if !(28..=MAX_RECORD).contains(&len) || len % 4 != 0 {
            return Err(PcapError::Corrupt("bad section header length"));
        }
        let mut rest = vec![0u8; len - 12];
        if !read_full(&mut self.r, &mut rest)? {
            return Err(PcapError::Corrupt("truncated section header"));
        }
        self.fmt = Format::PcapNg {
            big,
            ifaces: Vec::new(),
        };
        Ok(())
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, PcapError> {
        match &self.fmt {
            Format::Pcap {
                big,
                nanos,
                linktype,
            } => {
                let (big, nanos, linktype) = (*big, *nanos, *linktype);
                let mut h = [0u8; 16];
                if !read_full(&mut self.r, &mut h)? {
                    return Ok(None);
                }
                let sec = u64::from(u32_at(&h, 0, big).unwrap_or(0));
                let frac = u64::from(u32_at(&h, 4, big).unwrap_or(0));
                let incl = u32_at(&h, 8, big).unwrap_or(0) as usize;
                if incl > MAX_RECORD {
                    return Err(PcapError::Corrupt("record longer than 256 KiB"));
                }
                let mut data = vec![0u8; incl];
                if !read_full(&mut self.r, &mut data)? && incl > 0 {
                    return Err(PcapError::Corrupt("truncated record"));
                }
                let ts = if nanos {
                    Duration::new(sec, (frac % 1_000_000_000) as u32)
                } else {
                    Duration::new(sec, ((frac % 1_000_000) * 1000) as u32)
                };
                Ok(Some(Frame { ts, linktype, data }))
            }
            Format::PcapNg { .. } => self.next_ng(),
        }
    }

    fn next_ng(&mut self) -> Result<Option<Frame>, PcapError> {
        loop {
            let mut h = [0u8; 8];
            if !read_full(&mut self.r, &mut h)? {
                return Ok(None);
            }
            let Format::PcapNg { big, .. } = &self.fmt else {
                return Ok(None);
            };
            let big = *big;
            let btype = u32_at(&h, 0, big).unwrap_or(0);
            if btype == 0x0a0d_0d0a {
                // A new section: its own byte order and interfaces. The length field
                // must be read with the new byte order, so reread from the magic.
                let mut rest = [0u8; 4];
                if !read_full(&mut self.r, &mut rest)? {
                    return Err(PcapError::Corrupt("truncated section header"));
                }
                let big = match u32::from_le_bytes(rest) {
                    0x1a2b_3c4d => false,
                    0x4d3c_2b1a => true,
                    _ => return Err(PcapError::Corrupt("bad pcapng byte-order magic")),
                };
                let len = u32_at(&h, 4, big).unwrap_or(0) as usize;
                if !(28..=MAX_RECORD).contains(&len) {
                    return Err(PcapError::Corrupt("bad section header length"));
                }
                let mut body = vec![0u8; len - 12];
                if !read_full(&mut self.r, &mut body)? {
                    return Err(PcapError::Corrupt("truncated section header"));
                }
                self.fmt = Format::PcapNg {
                    big,
                    ifaces: Vec::new(),
                };
                continue;
            }
            let len = u32_at(&h, 4, big).unwrap_or(0) as usize;
            if !(12..=MAX_RECORD).contains(&len) {
                return Err(PcapError::Corrupt("bad block length"));
            }
            let mut body = vec![0u8; len - 8];
            if !read_full(&mut self.r, &mut body)? {
                return Err(PcapError::Corrupt("truncated block"));
            }
            let Format::PcapNg { ifaces, .. } = &mut self.fmt else {
                return Ok(None);
            };
            match btype {
                // Interface Description Block.
                1 => {
                    let linktype = u32::from(u16_at(&body, 0, big).unwrap_or(1));
                    let mut units = 1_000_000u64;
                    // Options start at 8; look for if_tsresol (9).
                    let mut off = 8;
                    let opts_end = body.len().saturating_sub(4);
                    while off + 4 <= opts_end {
                        let code = u16_at(&body, off, big).unwrap_or(0);
                        let olen = usize::from(u16_at(&body, off + 2, big).unwrap_or(0));
                        if code == 0 {
                            break;
                        }
                        if code == 9 && olen >= 1 {
                            if let Some(&v) = body.get(off + 4) {
                                let exp = u32::from(v & 0x7f);
                                units = if v & 0x80 != 0 {
                                    2u64.checked_pow(exp).unwrap_or(1_000_000)
                                } else {
                                    10u64.checked_pow(exp).unwrap_or(1_000_000)
                                };
                            }
                        }
                        off += 4 + olen.div_ceil(4) * 4;
                    }
                    ifaces.push(Iface {
                        linktype,
                        units: units.max(1),
                    });
                }
                // Enhanced Packet Block / obsolete Packet Block.
                6 | 2 => {
                    let ifid = if btype == 6 {
                        u32_at(&body, 0, big).unwrap_or(0) as usize
                    } else {
                        usize::from(u16_at(&body, 0, big).unwrap_or(0))
                    };
                    let hi = u64::from(u32_at(&body, 4, big).unwrap_or(0));
                    let lo = u64::from(u32_at(&body, 8, big).unwrap_or(0));
                    let caplen = u32_at(&body, 12, big).unwrap_or(0) as usize;
                    let data = body
                        .get(20..20usize.saturating_add(caplen))
                        .ok_or(PcapError::Corrupt("packet longer than its block"))?
                        .to_vec();
                    let iface = ifaces.get(ifid).copied().unwrap_or(Iface {
                        linktype: 1,
                        units: 1_000_000,
                    });
                    let t = (hi << 32) | lo;
                    let secs = t / iface.units;
                    let rem = t % iface.units;
                    let nanos = (u128::from(rem) * 1_000_000_000 / u128::from(iface.units)) as u32;
                    return Ok(Some(Frame {
                        ts: Duration::new(secs, nanos),
                        linktype: iface.linktype,
                        data,
                    }));
                }
                // Simple Packet Block: no timestamp.
                3 => {
                    let orig = u32_at(&body, 0, big).unwrap_or(0) as usize;
                    let avail = body.len().saturating_sub(8);
                    let data = body
                        .get(4..4 + orig.min(avail))
                        .unwrap_or_default()
                        .to_vec();
                    let linktype = ifaces.first().map_or(1, |i| i.linktype);
                    return Ok(Some(Frame {
                        ts: Duration::ZERO,
                        linktype,
                        data,
                    }));
                }
                _ => {}
            }
        }
    }
}

/// Writes classic little-endian microsecond pcap (used by tests and the benchmark).
pub struct PcapWriter<W> {
    w: W,
}

impl<W: std::io::Write> PcapWriter<W> {
    /// Write the file header.
    pub fn new(mut w: W, linktype: u32) -> std::io::Result<Self> {
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&262_144u32.to_le_bytes())?;
        w.write_all(&linktype.to_le_bytes())?;
        Ok(PcapWriter { w })
    }

    /// Append one frame.
    pub fn write(&mut self, ts: Duration, data: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.w.write_all(&(ts.as_secs() as u32).to_le_bytes())?;
        self.w.write_all(&ts.subsec_micros().to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(data)
    }

    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_roundtrip() {
        let mut w = PcapWriter::new(Vec::new(), 1).unwrap();
        w.write(Duration::new(5, 123_000), b"abc").unwrap();
        w.write(Duration::new(6, 0), b"").unwrap();
        let bytes = w.into_inner();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(f.ts, Duration::new(5, 123_000));
        assert_eq!(f.data, b"abc");
        assert_eq!(r.next_frame().unwrap().unwrap().data, b"");
        assert!(r.next_frame().unwrap().is_none());
    }

    fn block(t: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut v = t.to_le_bytes().to_vec();
        v.extend(len.to_le_bytes());
        v.extend(body);
        v.extend(len.to_le_bytes());
        v
    }

    #[test]
    fn pcapng_with_nanosecond_interface() {
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend((-1i64).to_le_bytes());
        let mut idb = 113u16.to_le_bytes().to_vec();
        idb.extend([0, 0]);
        idb.extend(0u32.to_le_bytes());
        idb.extend(9u16.to_le_bytes());
        idb.extend(1u16.to_le_bytes());
        idb.extend([9, 0, 0, 0]);
        idb.extend([0, 0, 0, 0]);
        let t: u64 = 7_000_000_123;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend(((t >> 32) as u32).to_le_bytes());
        epb.extend((t as u32).to_le_bytes());
        epb.extend(3u32.to_le_bytes());
        epb.extend(3u32.to_le_bytes());
        epb.extend(b"xyz\0");
        let mut file = block(0x0a0d_0d0a, &shb);
        file.extend(block(1, &idb));
        file.extend(block(6, &epb));
        let mut r = PcapReader::new(&file[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(f.linktype, 113);
        assert_eq!(f.ts, Duration::new(7, 123));
        assert_eq!(f.data, b"xyz");
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PcapReader::new(&b"nonsense"[..]).is_err());
        let mut w = PcapWriter::new(Vec::new(), 1).unwrap();
        w.write(Duration::ZERO, &[1; 100]).unwrap();
        let mut bytes = w.into_inner();
        bytes.truncate(bytes.len() - 10);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(r.next_frame().is_err());
    }
}
