//! RTP (RFC 3550) fixed-header parsing and RTP/RTCP demultiplexing (RFC 5761).
//!
//! [`parse`] is zero-copy: the returned [`RtpPacket`] borrows its payload from the
//! input buffer. It never panics on any input.

use thiserror::Error;

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The marker bit (M).
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The 32-bit RTP timestamp (in the payload type's clock).
    pub timestamp: u32,
    /// The synchronisation source.
    pub ssrc: u32,
    /// The payload, after CSRCs and header extension, without padding.
    pub payload: &'a [u8],
}

/// Why a datagram is not a valid RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("packet too short for the RTP fixed header ({0} bytes)")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("CSRC list ({0} entries) runs past the end of the packet")]
    CsrcOverrun(u8),
    /// The header extension runs past the end of the packet.
    #[error("header extension runs past the end of the packet")]
    ExtensionOverrun,
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding count {0}")]
    BadPadding(u8),
}

/// Size of the RTP fixed header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Parse an RTP packet: version 2, CSRC list, header extension (RFC 3550 §5.3.1,
/// including RFC 8285 one/two-byte forms, which share the same outer framing) and
/// padding are handled; the payload is what remains.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let (b0, b1, rest) = match buf {
        [b0, b1, rest @ ..] if buf.len() >= FIXED_HEADER_LEN => (*b0, *b1, rest),
        _ => return Err(RtpError::TooShort(buf.len())),
    };
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = b0 & 0x20 != 0;
    let extension = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0f;
    let sequence = u16::from_be_bytes([rest[0], rest[1]]);
    let timestamp = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
    let ssrc = u32::from_be_bytes([rest[6], rest[7], rest[8], rest[9]]);
    // `rest[..10]` above is in bounds: buf.len() >= 12 was checked in the match guard.

    let mut offset = FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    if offset > buf.len() {
        return Err(RtpError::CsrcOverrun(csrc_count));
    }
    if extension {
        let ext_hdr = buf
            .get(offset..offset + 4)
            .ok_or(RtpError::ExtensionOverrun)?;
        let words = usize::from(u16::from_be_bytes([ext_hdr[2], ext_hdr[3]]));
        offset += 4 + 4 * words;
        if offset > buf.len() {
            return Err(RtpError::ExtensionOverrun);
        }
    }
    let mut end = buf.len();
    if padding {
        // The last byte counts the padding octets, itself included.
        let count = buf.last().copied().unwrap_or(0);
        let count_usize = usize::from(count);
        if count == 0 || count_usize > end - offset {
            return Err(RtpError::BadPadding(count));
        }
        end -= count_usize;
    }
    let payload = buf.get(offset..end).ok_or(RtpError::ExtensionOverrun)?;
    Ok(RtpPacket {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        sequence,
        timestamp,
        ssrc,
        payload,
    })
}

/// RTP/RTCP demultiplexing on one port (RFC 5761 §4): a version-2 packet whose second
/// byte is in 192..=223 is RTCP. Those values are RTP payload types 64..=95 with the
/// marker bit set; in particular the RTCP packet types SR/RR/SDES/BYE/APP (200..=204)
/// collide with payload types 72..=76, which is why those must never be negotiated for
/// RTP. Returns false for anything that is not version 2.
pub fn is_rtcp(buf: &[u8]) -> bool {
    match buf {
        [b0, b1, ..] => b0 >> 6 == 2 && (192..=223).contains(b1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn build(
        marker: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        csrcs: &[u32],
        ext: Option<&[u8]>,
        payload: &[u8],
        pad: u8,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        let mut b0 = 0x80 | (csrcs.len() as u8);
        if ext.is_some() {
            b0 |= 0x10;
        }
        if pad > 0 {
            b0 |= 0x20;
        }
        v.push(b0);
        v.push(if marker { 0x80 } else { 0 } | pt);
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        for c in csrcs {
            v.extend_from_slice(&c.to_be_bytes());
        }
        if let Some(e) = ext {
            assert_eq!(e.len() % 4, 0);
            v.extend_from_slice(&[0xbe, 0xde]);
            v.extend_from_slice(&((e.len() / 4) as u16).to_be_bytes());
            v.extend_from_slice(e);
        }
        v.extend_from_slice(payload);
        if pad > 0 {
            v.extend(std::iter::repeat(0).take(pad as usize - 1));
            v.push(pad);
        }
        v
    }

    #[test]
    fn parses_plain_packet() {
        let b = build(
            true,
            8,
            65535,
            0xdead_beef,
            0x1234_5678,
            &[],
            None,
            &[1, 2, 3],
            0,
        );
        let p = parse(&b).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 65535);
        assert_eq!(p.timestamp, 0xdead_beef);
        assert_eq!(p.ssrc, 0x1234_5678);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn parses_csrc_extension_padding() {
        let b = build(
            false,
            0,
            7,
            160,
            9,
            &[1, 2, 3],
            Some(&[0x10, 0xaa, 0, 0, 5, 6, 7, 8]),
            &[9; 160],
            4,
        );
        let p = parse(&b).unwrap();
        assert!(!p.marker);
        assert_eq!(p.payload.len(), 160);
        assert!(p.payload.iter().all(|&x| x == 9));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut b = build(false, 0, 1, 1, 1, &[], None, &[1], 0);
        b[0] = 0x40;
        assert_eq!(parse(&b), Err(RtpError::BadVersion(1)));
        // CSRC count 15 with no CSRCs present.
        let mut b = build(false, 0, 1, 1, 1, &[], None, &[1, 2, 3, 4], 0);
        b[0] |= 0x0f;
        assert_eq!(parse(&b), Err(RtpError::CsrcOverrun(15)));
        // Extension bit with no room for the extension header.
        let mut b = build(false, 0, 1, 1, 1, &[], None, &[], 0);
        b[0] |= 0x10;
        assert_eq!(parse(&b), Err(RtpError::ExtensionOverrun));
        // Extension length claiming more words than present.
        let mut b = build(false, 0, 1, 1, 1, &[], Some(&[0, 0, 0, 0]), &[], 0);
        b[15] = 9;
        assert_eq!(parse(&b), Err(RtpError::ExtensionOverrun));
        // Padding count 0 and larger than the payload.
        let mut b = build(false, 0, 1, 1, 1, &[], None, &[1, 2, 0], 0);
        b[0] |= 0x20;
        assert_eq!(parse(&b), Err(RtpError::BadPadding(0)));
        let n = b.len();
        b[n - 1] = 4;
        assert_eq!(parse(&b), Err(RtpError::BadPadding(4)));
        // Padding exactly covering the payload is fine (empty payload).
        b[n - 1] = 3;
        assert_eq!(parse(&b).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn no_panic_on_any_short_prefix() {
        let b = build(
            true,
            101,
            1,
            2,
            3,
            &[4, 5],
            Some(&[1, 2, 3, 4]),
            &[1; 20],
            3,
        );
        for n in 0..=b.len() {
            let _ = parse(&b[..n]);
            let _ = is_rtcp(&b[..n]);
        }
        assert!(parse(&b).is_ok());
    }

    #[test]
    fn rtcp_demux() {
        // RTCP SR (200), RR (201), BYE (203), RTPFB (205).
        for pt in [200u8, 201, 202, 203, 204, 205, 206] {
            assert!(is_rtcp(&[0x81, pt, 0, 6]));
        }
        // RTP PT 0/8/101, even with the marker bit.
        for b1 in [0u8, 8, 101, 0x80, 0x88, 0x80 | 101] {
            assert!(!is_rtcp(&[0x80, b1, 0, 1]));
        }
        // Not version 2.
        assert!(!is_rtcp(&[0x41, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80]));
    }
}
