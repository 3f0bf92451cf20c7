//! RFC 3161 time-stamp protocol, sans-IO (docs/assurance.md): build the
//! `TimeStampReq` for a manifest's SHA-256, and parse the `TimeStampResp`: status,
//! the token, and from its `TSTInfo` the message imprint (which must be ours), the
//! nonce (which must be ours) and `genTime`. The signature over the token is checked by
//! whoever verifies the evidence (`openssl ts -verify`, docs/evidence.md); the shell
//! fetches and stores.

use sha2::{Digest, Sha256};

/// DER of the SHA-256 OID 2.16.840.1.101.3.4.2.1.
const SHA256_OID: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

/// A time-stamp problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TsaError {
    /// Not the DER structure RFC 3161 defines.
    #[error("malformed time-stamp response: {0}")]
    Malformed(&'static str),
    /// The TSA refused (status 2..5), with its text if any.
    #[error("the TSA refused the request (status {status}): {text}")]
    Refused {
        /// PKIStatus.
        status: u8,
        /// statusString.
        text: String,
    },
    /// The token stamps another hash.
    #[error("the token stamps another message imprint")]
    WrongImprint,
    /// The token carries another nonce.
    #[error("the token's nonce is not the request's")]
    WrongNonce,
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(body);
    out
}

fn der_uint(v: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = v.iter().copied().skip_while(|x| *x == 0).collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

/// The DER `TimeStampReq` for `data` (hashed with SHA-256), with `nonce` (8 random bytes
/// from the shell) and `certReq` true (the token carries the TSA certificate).
pub fn request(data: &[u8], nonce: [u8; 8]) -> Vec<u8> {
    let digest = Sha256::digest(data);
    let alg = tlv(0x30, &[&SHA256_OID[..], &[0x05, 0x00]].concat());
    let imprint = tlv(0x30, &[alg, tlv(0x04, &digest)].concat());
    let body = [
        der_uint(&[1]),
        imprint,
        der_uint(&nonce),
        vec![0x01, 0x01, 0xff],
    ]
    .concat();
    tlv(0x30, &body)
}

/// A DER element: tag, content, and the whole encoding.
struct El<'a> {
    tag: u8,
    body: &'a [u8],
    raw: &'a [u8],
}

fn read(b: &[u8]) -> Result<(El<'_>, &[u8]), TsaError> {
    let m = TsaError::Malformed;
    let tag = *b.first().ok_or(m("truncated"))?;
    let l0 = *b.get(1).ok_or(m("truncated"))?;
    let (len, hdr) = if l0 < 0x80 {
        (usize::from(l0), 2)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return Err(m("length"));
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i).ok_or(m("truncated"))?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len).ok_or(m("length"))?;
    let body = b.get(hdr..end).ok_or(m("truncated"))?;
    Ok((
        El {
            tag,
            body,
            raw: &b[..end],
        },
        &b[end..],
    ))
}

fn children(b: &[u8]) -> Result<Vec<El<'_>>, TsaError> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let (e, r) = read(rest)?;
        out.push(e);
        rest = r;
        if out.len() > 64 {
            return Err(TsaError::Malformed("too many elements"));
        }
    }
    Ok(out)
}

fn strip_int(b: &[u8]) -> &[u8] {
    let mut b = b;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    b
}

/// What a granted response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The whole DER `TimeStampResp` (what is stored as `<manifest>.tsr`).
    pub response: Vec<u8>,
    /// The `TimeStampToken` (CMS ContentInfo).
    pub token: Vec<u8>,
    /// `genTime` as the TSA wrote it (GeneralizedTime text, e.g. `20261203171500Z`).
    pub gen_time: String,
    /// The token's serial number, hex.
    pub serial_hex: String,
}

/// Parse and check a `TimeStampResp` against the request's `data` and `nonce`.
pub fn parse_response(der: &[u8], data: &[u8], nonce: [u8; 8]) -> Result<Token, TsaError> {
    let m = TsaError::Malformed;
    let (outer, _) = read(der)?;
    if outer.tag != 0x30 {
        return Err(m("not a SEQUENCE"));
    }
    let parts = children(outer.body)?;
    let status_info = parts.first().ok_or(m("no status"))?;
    let si = children(status_info.body)?;
    let status_el = si
        .first()
        .filter(|e| e.tag == 0x02)
        .ok_or(m("no PKIStatus"))?;
    let status = *strip_int(status_el.body)
        .last()
        .ok_or(m("empty PKIStatus"))?;
    if status > 1 {
        let text = si
            .get(1)
            .and_then(|e| children(e.body).ok())
            .and_then(|c| {
                c.first()
                    .map(|s| String::from_utf8_lossy(s.body).into_owned())
            })
            .unwrap_or_default();
        return Err(TsaError::Refused { status, text });
    }
    let token_el = parts.get(1).ok_or(m("granted without a token"))?;
    // ContentInfo { contentType, [0] EXPLICIT SignedData }
    let ci = children(token_el.body)?;
    let sd_wrap = ci
        .get(1)
        .filter(|e| e.tag == 0xa0)
        .ok_or(m("no signed data"))?;
    let (sd, _) = read(sd_wrap.body)?;
    let sdc = children(sd.body)?;
    // SignedData { version, digestAlgorithms, encapContentInfo, ... }
    let eci = sdc
        .get(2)
        .filter(|e| e.tag == 0x30)
        .ok_or(m("no encapsulated content"))?;
    let ecic = children(eci.body)?;
    let econtent = ecic
        .get(1)
        .filter(|e| e.tag == 0xa0)
        .ok_or(m("no eContent"))?;
    let (octets, _) = read(econtent.body)?;
    if octets.tag != 0x04 {
        return Err(m("eContent is not an OCTET STRING"));
    }
    let (tst, _) = read(octets.body)?;
    let f = children(tst.body)?;
    // TSTInfo { version, policy, messageImprint, serialNumber, genTime, accuracy?, ordering?, nonce?, ... }
    let imprint = f
        .get(2)
        .filter(|e| e.tag == 0x30)
        .ok_or(m("no message imprint"))?;
    let ic = children(imprint.body)?;
    let hashed = ic
        .get(1)
        .filter(|e| e.tag == 0x04)
        .ok_or(m("no hashed message"))?;
    let alg = ic.first().ok_or(m("no hash algorithm"))?;
    let alg_oid = children(alg.body)?
        .into_iter()
        .next()
        .map(|e| e.raw.to_vec())
        .unwrap_or_default();
    if alg_oid != SHA256_OID || hashed.body != Sha256::digest(data).as_slice() {
        return Err(TsaError::WrongImprint);
    }
    let serial = f.get(3).filter(|e| e.tag == 0x02).ok_or(m("no serial"))?;
    let gen = f.get(4).filter(|e| e.tag == 0x18).ok_or(m("no genTime"))?;
    let nonce_el = f
        .iter()
        .skip(5)
        .find(|e| e.tag == 0x02)
        .ok_or(TsaError::WrongNonce)?;
    if strip_int(nonce_el.body) != strip_int(&nonce) {
        return Err(TsaError::WrongNonce);
    }
    Ok(Token {
        response: outer.raw.to_vec(),
        token: token_el.raw.to_vec(),
        gen_time: String::from_utf8_lossy(gen.body).into_owned(),
        serial_hex: hex::encode(serial.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_the_rfc3161_structure() {
        let r = request(b"manifest", [0x80, 0, 0, 0, 0, 0, 0, 1]);
        let (outer, rest) = read(&r).unwrap();
        assert!(rest.is_empty());
        let c = children(outer.body).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].raw, [0x02, 0x01, 0x01]);
        let imprint = children(c[1].body).unwrap();
        assert_eq!(children(imprint[0].body).unwrap()[0].raw, SHA256_OID);
        assert_eq!(imprint[1].body, Sha256::digest(b"manifest").as_slice());
        // A nonce with the top bit set gets a leading zero (positive INTEGER).
        assert_eq!(c[2].body, [0, 0x80, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(c[3].raw, [0x01, 0x01, 0xff]);
    }

    /// A hand-built granted response (no real signature: this checks the parsing; the
    /// integration test verifies a real TSA's token with `openssl ts -verify`).
    fn response(data: &[u8], nonce: &[u8], status: u8) -> Vec<u8> {
        let alg = tlv(0x30, &[&SHA256_OID[..], &[0x05, 0x00]].concat());
        let imprint = tlv(0x30, &[alg, tlv(0x04, &Sha256::digest(data))].concat());
        let tst = tlv(
            0x30,
            &[
                der_uint(&[1]),
                tlv(0x06, &[0x2a, 0x03]),
                imprint,
                der_uint(&[0x12, 0x34]),
                tlv(0x18, b"20261203171500Z"),
                der_uint(nonce),
            ]
            .concat(),
        );
        let eci = tlv(
            0x30,
            &[tlv(0x06, &[0x2a, 0x04]), tlv(0xa0, &tlv(0x04, &tst))].concat(),
        );
        let sd = tlv(0x30, &[der_uint(&[3]), tlv(0x31, &[]), eci].concat());
        let ci = tlv(0x30, &[tlv(0x06, &[0x2a, 0x05]), tlv(0xa0, &sd)].concat());
        let st = tlv(0x30, &der_uint(&[status]));
        tlv(
            0x30,
            &[st, if status <= 1 { ci } else { Vec::new() }].concat(),
        )
    }

    #[test]
    fn parse_checks_imprint_and_nonce() {
        let n = [1, 2, 3, 4, 5, 6, 7, 8];
        let t = parse_response(&response(b"m", &n, 0), b"m", n).unwrap();
        assert_eq!(
            (t.gen_time.as_str(), t.serial_hex.as_str()),
            ("20261203171500Z", "1234")
        );
        assert_eq!(
            parse_response(&response(b"m", &n, 0), b"other", n),
            Err(TsaError::WrongImprint)
        );
        assert_eq!(
            parse_response(&response(b"m", &[9], 0), b"m", n),
            Err(TsaError::WrongNonce)
        );
        assert!(matches!(
            parse_response(&response(b"m", &n, 2), b"m", n),
            Err(TsaError::Refused { status: 2, .. })
        ));
        let mut bad = response(b"m", &n, 0);
        bad.truncate(bad.len() - 3);
        assert!(matches!(
            parse_response(&bad, b"m", n),
            Err(TsaError::Malformed(_))
        ));
    }
}
