//! Splitting a SIPREC request body (RFC 7866 §9: `multipart/mixed` with an
//! `application/sdp` part and an `application/rs-metadata+xml` part) and deciding whether
//! an INVITE is a SIPREC recording-session request at all.
//!
//! The splitter follows RFC 2046 but is tolerant of what SRCs and documentation examples
//! actually send: quoted or unquoted boundaries, a boundary that is missing from the
//! Content-Type or does not match the body (auto-detected from the first `--` line),
//! parts in any order, more than two parts, preamble/epilogue, a missing close delimiter,
//! LF-only line endings, trailing whitespace after delimiters, part headers without a
//! blank line after them, and — as a last resort — bodies with no delimiter lines at all
//! (parts recovered from their `Content-Type:` lines).

/// A metadata body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPart {
    /// The part's Content-Type value as written (empty if the part had none).
    pub content_type: String,
    /// The XML bytes.
    pub bytes: Vec<u8>,
}

/// The parts of a SIPREC body we care about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiprecBody {
    /// The SDP offer (first `application/sdp` part), lossily decoded as UTF-8.
    pub sdp: Option<String>,
    /// The first recording metadata part (`application/rs-metadata+xml`,
    /// `application/rs-metadata`, or any non-SDP part with
    /// `Content-Disposition: recording-session`).
    pub metadata: Option<MetadataPart>,
    /// Every other part: (Content-Type as written, or `text/plain` per RFC 2046 when
    /// absent; bytes).
    pub other: Vec<(String, Vec<u8>)>,
}

/// Why a body could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is empty or whitespace only.
    #[error("empty body")]
    Empty,
    /// A Content-Type we do not handle (and could not sniff).
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
    /// multipart body without a usable boundary: none declared and none detectable.
    #[error("multipart body without boundary")]
    MissingBoundary,
    /// multipart body in which no part could be found.
    #[error("multipart body contains no parts")]
    NoParts,
}

/// Split a request body given the raw Content-Type header value (empty if absent).
///
/// `body` is whatever the transport delivered: if the SIP Content-Length was off by a few
/// bytes the caller passes what it has and the splitter copes (missing close delimiter,
/// truncated last part).
pub fn split_body(content_type: &str, body: &[u8]) -> Result<SiprecBody, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let (mt, params) = parse_content_type(content_type);
    match mt.as_str() {
        "application/sdp" => Ok(SiprecBody {
            sdp: Some(String::from_utf8_lossy(body).into_owned()),
            ..Default::default()
        }),
        m if is_metadata_type(m) => Ok(SiprecBody {
            metadata: Some(MetadataPart {
                content_type: content_type.trim().to_string(),
                bytes: body.to_vec(),
            }),
            ..Default::default()
        }),
        m if m.starts_with("multipart/") => {
            let boundary = params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.clone())
                .filter(|b| !b.is_empty());
            split_multipart(boundary.as_deref(), body)
        }
        "" => {
            // No Content-Type: sniff.
            let t = trim_ascii(body);
            if t.starts_with(b"--") {
                split_multipart(None, body)
            } else if t.starts_with(b"v=") {
                split_body("application/sdp", body)
            } else if t.starts_with(b"<") {
                split_body("application/rs-metadata+xml", body)
            } else {
                Err(BodyError::UnsupportedContentType(String::new()))
            }
        }
        _ => Err(BodyError::UnsupportedContentType(
            content_type.trim().to_string(),
        )),
    }
}

fn is_metadata_type(mt: &str) -> bool {
    mt == "application/rs-metadata+xml" || mt == "application/rs-metadata"
}

/// Result of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A SIPREC recording-session request (initial or in-dialog).
    Siprec(SiprecBody),
    /// Not SIPREC (e.g. a plain call, Cisco network-based or built-in-bridge recording).
    NotSiprec {
        /// Human-readable reason, for logs.
        reason: String,
    },
    /// It claims to be SIPREC but the body cannot be split.
    Invalid(BodyError),
}

/// Decide whether a request is a SIPREC recording-session request (RFC 7866 §6.1).
///
/// * `require` / `supported`: option tags from the Require / Supported headers (elements
///   may also be whole comma-separated header values).
/// * `contact_has_src_feature`: the Contact carries the `+sip.src` feature tag (callers
///   should also accept the bare `;src` parameter that BroadWorks and AudioCodes send).
///
/// Rules: a body carrying a recording-metadata part is SIPREC. Without metadata the
/// request is SIPREC only if it is strongly indicated — `+sip.src` in Contact or `siprec`
/// in Require (an SDP-only re-INVITE from an SRC, e.g. pause/hold). `Supported: siprec`
/// alone is not enough (a UA merely supporting the extension), nor is a plain SDP body.
pub fn classify(
    content_type: &str,
    body: &[u8],
    require: &[&str],
    supported: &[&str],
    contact_has_src_feature: bool,
) -> Classification {
    let require_siprec = has_tag(require, "siprec");
    let supported_siprec = has_tag(supported, "siprec");
    let strong = require_siprec || contact_has_src_feature;

    if body.iter().all(u8::is_ascii_whitespace) {
        return if strong {
            Classification::Invalid(BodyError::Empty)
        } else {
            Classification::NotSiprec {
                reason: "no body and no SIPREC indication".into(),
            }
        };
    }
    let (mt, _) = parse_content_type(content_type);
    match split_body(content_type, body) {
        Err(e) => {
            if strong || is_metadata_type(&mt) {
                Classification::Invalid(e)
            } else {
                Classification::NotSiprec {
                    reason: format!("body not understood ({e}) and no SIPREC indication"),
                }
            }
        }
        Ok(b) if b.metadata.is_some() => Classification::Siprec(b),
        Ok(b) if strong => {
            if b.sdp.is_none() {
                Classification::Invalid(BodyError::UnsupportedContentType(
                    content_type.trim().to_string(),
                ))
            } else {
                Classification::Siprec(b)
            }
        }
        Ok(_) => Classification::NotSiprec {
            reason: if supported_siprec {
                "no rs-metadata part; only Supported: siprec (no Require: siprec or +sip.src)"
                    .into()
            } else {
                "no rs-metadata part and no +sip.src / Require: siprec".into()
            },
        },
    }
}

fn has_tag(list: &[&str], tag: &str) -> bool {
    list.iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// `type/subtype` lowercased, plus `(name, value)` parameters with quotes removed.
pub(crate) fn parse_content_type(ct: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = split_params(ct).into_iter();
    let mt = pieces
        .next()
        .map(|s| {
            s.split_ascii_whitespace()
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_string(), crate::sip::parse::unquote(v.trim())))
        })
        .collect();
    (mt, params)
}

/// Split on `;` outside double quotes.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut esc = false;
    for c in s.chars() {
        if in_q {
            cur.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_q = false;
            }
        } else if c == '"' {
            in_q = true;
            cur.push(c);
        } else if c == ';' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(start);
    b.get(start..end.max(start)).unwrap_or(&[])
}

/// One line of the body: `[start, end)` without the line break, `next` = start of the
/// following line.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    next: usize,
}

fn lines(body: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let rest = body.get(pos..).unwrap_or(&[]);
        let (end, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (pos + i, pos + i + 1),
            None => (body.len(), body.len()),
        };
        let end_no_cr = if end > pos && body.get(end - 1) == Some(&b'\r') {
            end - 1
        } else {
            end
        };
        out.push(Line {
            start: pos,
            end: end_no_cr,
            next,
        });
        pos = next;
    }
    out
}

fn line_bytes<'a>(body: &'a [u8], l: &Line) -> &'a [u8] {
    body.get(l.start..l.end).unwrap_or(&[])
}

/// A parsed body part.
struct Part {
    headers: Vec<(String, String)>,
    content: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_multipart(boundary: Option<&str>, body: &[u8]) -> Result<SiprecBody, BodyError> {
    let ls = lines(body);
    let mut parts = boundary
        .map(|b| split_on_boundary(body, &ls, b))
        .unwrap_or_default();
    let mut had_boundary = boundary.is_some();
    if parts.is_empty() {
        // Declared boundary missing or not found: use the first `--xxx` line.
        if let Some(b) = detect_boundary(body, &ls) {
            had_boundary = true;
            parts = split_on_boundary(body, &ls, &b);
        }
    }
    if parts.len() <= 1 {
        let recovered = split_on_content_headers(body, &ls);
        if recovered.len() > parts.len() {
            parts = recovered;
        }
    }
    if parts.is_empty() {
        return Err(if had_boundary {
            BodyError::NoParts
        } else {
            BodyError::MissingBoundary
        });
    }
    Ok(assemble(parts))
}

fn detect_boundary(body: &[u8], ls: &[Line]) -> Option<String> {
    ls.iter().find_map(|l| {
        let t = trim_ascii(line_bytes(body, l));
        let rest = t.strip_prefix(b"--")?;
        let rest = rest.strip_suffix(b"--").unwrap_or(rest);
        if rest.is_empty() {
            return None;
        }
        std::str::from_utf8(rest).ok().map(str::to_string)
    })
}

fn split_on_boundary(body: &[u8], ls: &[Line], boundary: &str) -> Vec<Part> {
    let open: Vec<u8> = [b"--".as_slice(), boundary.as_bytes()].concat();
    let close: Vec<u8> = [open.as_slice(), b"--"].concat();
    // (line index, is_close)
    let mut delims = Vec::new();
    for (i, l) in ls.iter().enumerate() {
        let t = trim_ascii(line_bytes(body, l));
        if t == open.as_slice() {
            delims.push((i, false));
        } else if t == close.as_slice() {
            delims.push((i, true));
        }
    }
    let mut parts = Vec::new();
    for (k, &(li, is_close)) in delims.iter().enumerate() {
        if is_close {
            break;
        }
        let Some(start_line) = ls.get(li) else { break };
        let start = start_line.next;
        let end = match delims.get(k + 1).and_then(|(nli, _)| ls.get(*nli)) {
            Some(next) => {
                // The line break before a delimiter belongs to the delimiter.
                let mut e = next.start;
                if e > start && body.get(e - 1) == Some(&b'\n') {
                    e -= 1;
                    if e > start && body.get(e - 1) == Some(&b'\r') {
                        e -= 1;
                    }
                }
                e
            }
            None => body.len(),
        };
        let raw = body.get(start..end.max(start)).unwrap_or(&[]);
        parts.push(parse_part(raw, false));
    }
    parts
}

/// Last resort for bodies without delimiter lines (documentation examples): every
/// `Content-Type:` line (with any directly preceding `Content-*:` lines) starts a part.
fn split_on_content_headers(body: &[u8], ls: &[Line]) -> Vec<Part> {
    let is_ct = |l: &Line| {
        let t = trim_start(line_bytes(body, l));
        t.get(..13)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-type:"))
    };
    let is_content_header = |l: &Line| {
        let t = trim_start(line_bytes(body, l));
        t.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-"))
            && header_name(t).is_some()
    };
    // A part starts at each maximal run of `Content-*:` lines containing a Content-Type.
    let mut starts = Vec::new();
    let mut i = 0;
    while i < ls.len() {
        let run_start = i;
        let mut has_ct = false;
        while let Some(l) = ls.get(i).filter(|l| is_content_header(l)) {
            has_ct |= is_ct(l);
            i += 1;
        }
        if has_ct {
            starts.push(run_start);
        }
        if i == run_start {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let start = ls.get(s).map(|l| l.start).unwrap_or(body.len());
        let end_line = starts.get(k + 1).copied();
        // Drop trailing blank and `--xxx` lines before the next part.
        let mut last = end_line.unwrap_or(ls.len());
        while last > s + 1 {
            let Some(l) = ls.get(last - 1) else { break };
            let t = trim_ascii(line_bytes(body, l));
            if t.is_empty() || t.starts_with(b"--") {
                last -= 1;
            } else {
                break;
            }
        }
        let end = ls
            .get(last.saturating_sub(1))
            .map(|l| l.next)
            .unwrap_or(body.len());
        let raw = body.get(start..end.max(start)).unwrap_or(&[]);
        parts.push(parse_part(raw, true));
    }
    parts
}

fn trim_start(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(b.len());
    b.get(s..).unwrap_or(&[])
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// If `line` looks like `Name: value`, return the name length (position of `:`).
fn header_name(line: &[u8]) -> Option<(usize, usize)> {
    let n = line.iter().take_while(|c| is_token_char(**c)).count();
    if n == 0 {
        return None;
    }
    let ws = line
        .get(n..)?
        .iter()
        .take_while(|c| **c == b' ' || **c == b'\t')
        .count();
    (line.get(n + ws) == Some(&b':')).then_some((n, n + ws))
}

/// Split a part into headers and content. Headers end at the first blank line, or at the
/// first line that is neither a header nor a folded continuation (some SRCs and many
/// documents omit the blank line). `indented`: strip leading whitespace from header lines
/// (no folding) — used for recovered parts.
fn parse_part(raw: &[u8], indented: bool) -> Part {
    let ls = lines(raw);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut content_start = raw.len();
    for l in &ls {
        let line = line_bytes(raw, l);
        if line.iter().all(|c| *c == b' ' || *c == b'\t') {
            content_start = l.next;
            break;
        }
        let is_cont = !indented && matches!(line.first(), Some(b' ' | b'\t'));
        if is_cont {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(trim_ascii(line)).as_ref());
                continue;
            }
        }
        let probe = if indented { trim_start(line) } else { line };
        match header_name(probe) {
            Some((n, colon)) => {
                let name = String::from_utf8_lossy(probe.get(..n).unwrap_or(&[])).into_owned();
                let value =
                    String::from_utf8_lossy(trim_ascii(probe.get(colon + 1..).unwrap_or(&[])))
                        .into_owned();
                headers.push((name, value));
            }
            None => {
                content_start = l.start;
                break;
            }
        }
    }
    Part {
        headers,
        content: raw.get(content_start..).unwrap_or(&[]).to_vec(),
    }
}

fn assemble(parts: Vec<Part>) -> SiprecBody {
    let mut out = SiprecBody::default();
    for p in parts {
        let ct_raw = p.header("content-type").map(|s| s.trim().to_string());
        let (mt, _) = parse_content_type(ct_raw.as_deref().unwrap_or(""));
        let disposition = p
            .header("content-disposition")
            .map(|d| {
                d.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let sniff = trim_ascii(&p.content);
        let is_sdp = mt == "application/sdp" || (ct_raw.is_none() && sniff.starts_with(b"v="));
        // A garbled Content-Type (`application/ +xml` in a real capture) does not hide a
        // metadata document: its root element says what it is.
        let is_meta = !is_sdp
            && (is_metadata_type(&mt)
                || disposition == "recording-session"
                || (ct_raw.is_none() && sniff.starts_with(b"<"))
                || crate::siprec::metadata::looks_like_metadata(sniff));
        if is_sdp && out.sdp.is_none() {
            out.sdp = Some(String::from_utf8_lossy(&p.content).into_owned());
        } else if is_meta && out.metadata.is_none() {
            out.metadata = Some(MetadataPart {
                content_type: ct_raw.unwrap_or_default(),
                bytes: p.content,
            });
        } else {
            out.other
                .push((ct_raw.unwrap_or_else(|| "text/plain".into()), p.content));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n";
    const XML: &str =
        "<?xml version=\"1.0\"?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'/>\r\n";

    fn two_part(b: &str, nl: &str, meta_first: bool, close: bool) -> Vec<u8> {
        let sdp_part = format!(
            "--{b}{nl}Content-Type: application/sdp{nl}{nl}{}",
            SDP.replace("\r\n", nl)
        );
        let meta_part = format!(
            "--{b}{nl}Content-Type: application/rs-metadata+xml{nl}Content-Disposition: recording-session{nl}{nl}{}",
            XML.replace("\r\n", nl)
        );
        let (a, c) = if meta_first {
            (meta_part, sdp_part)
        } else {
            (sdp_part, meta_part)
        };
        let mut s = format!("{a}{nl}{c}");
        if close {
            s.push_str(&format!("{nl}--{b}--{nl}"));
        }
        s.into_bytes()
    }

    #[test]
    fn a_garbled_content_type_does_not_hide_the_metadata() {
        // Issue #13 item 5: `application/ +xml` (a real capture), no Content-Disposition.
        let body = format!(
            "--b\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--b\r\nContent-Type: application/ +xml\r\n\r\n{XML}\r\n--b--\r\n"
        );
        let b = split_body("multipart/mixed;boundary=b", body.as_bytes()).unwrap();
        let m = b.metadata.expect("metadata part found by its root element");
        assert_eq!(m.content_type, "application/ +xml");
        assert!(b.other.is_empty());
    }

    #[test]
    fn crlf_and_lf_either_order_with_and_without_close() {
        for nl in ["\r\n", "\n"] {
            for meta_first in [false, true] {
                for close in [false, true] {
                    let body = two_part("xyz", nl, meta_first, close);
                    let b = split_body("multipart/mixed;boundary=xyz", &body).unwrap();
                    let sdp = b.sdp.unwrap();
                    assert!(sdp.starts_with("v=0"), "{sdp:?}");
                    assert!(sdp.contains("m=audio 1 RTP/AVP 0"));
                    let m = b.metadata.unwrap();
                    assert_eq!(m.content_type, "application/rs-metadata+xml");
                    assert!(m.bytes.starts_with(b"<?xml"));
                    assert!(
                        m.bytes.ends_with(b"/>")
                            || m.bytes.ends_with(b"/>\n")
                            || m.bytes.ends_with(b"/>\r\n")
                    );
                    assert!(!String::from_utf8_lossy(&m.bytes).contains("--xyz"));
                    assert!(b.other.is_empty());
                }
            }
        }
    }

    #[test]
    fn quoted_boundary_and_params() {
        let body = two_part("a b:c", "\r\n", false, true);
        let b = split_body("Multipart/Mixed; charset=x; Boundary=\"a b:c\"", &body).unwrap();
        assert!(b.sdp.is_some() && b.metadata.is_some());
    }

    #[test]
    fn last_part_delimiter_break_is_not_content() {
        let body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n";
        let b = split_body("multipart/mixed;boundary=b", body).unwrap();
        assert_eq!(b.sdp.as_deref(), Some("v=0"));
    }

    #[test]
    fn preamble_epilogue_and_third_part() {
        let body = b"This is a preamble\r\n--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b\r\nContent-Type: application/gtd\r\nContent-Disposition: signal;handling=optional\r\n\r\nIAM,\r\n--b\r\nContent-Type: application/rs-metadata\r\n\r\n<recording/>\r\n--b--\r\nepilogue --b\r\n";
        let b = split_body("multipart/mixed;boundary=b", body).unwrap();
        assert_eq!(b.sdp.as_deref(), Some("v=0\r\n"));
        assert_eq!(b.metadata.as_ref().unwrap().bytes, b"<recording/>");
        assert_eq!(
            b.metadata.as_ref().unwrap().content_type,
            "application/rs-metadata"
        );
        assert_eq!(
            b.other,
            vec![("application/gtd".to_string(), b"IAM,".to_vec())]
        );
    }

    #[test]
    fn boundary_mismatch_is_autodetected() {
        let body = two_part("real", "\n", false, true);
        let b = split_body("multipart/mixed;boundary=declared", &body).unwrap();
        assert!(b.sdp.is_some() && b.metadata.is_some());
        let b = split_body("multipart/mixed", &body).unwrap();
        assert!(b.sdp.is_some() && b.metadata.is_some());
    }

    #[test]
    fn part_headers_without_blank_line() {
        let body = b"--b\nContent-Type: application/sdp\nv=0\nm=audio 1 RTP/AVP 0\n--b\nContent-Type: application/rs-metadata\nContent-Disposition: recording-session\n<?xml version='1.0'?><recording/>\n--b--";
        let b = split_body("multipart/mixed;boundary=b", body).unwrap();
        assert_eq!(b.sdp.as_deref(), Some("v=0\nm=audio 1 RTP/AVP 0"));
        assert_eq!(
            b.metadata.unwrap().bytes,
            b"<?xml version='1.0'?><recording/>"
        );
    }

    #[test]
    fn disposition_recording_session_marks_metadata() {
        let body = b"--b\nContent-Type:application/ +xml\nContent-Disposition:recording-session\n\n<x/>\n--b\nContent-Type: application/sdp\n\nv=0\n--b--\n";
        let b = split_body("multipart/mixed;boundary=b", body).unwrap();
        let m = b.metadata.unwrap();
        assert_eq!(m.content_type, "application/ +xml");
        assert_eq!(m.bytes, b"<x/>");
    }

    #[test]
    fn no_delimiters_recovered_from_content_type_lines() {
        let body = b"   Content-Type: application/SDP\n   m=audio 1 RTP/AVP 0\n   ...\n\nContent-Type: application/rs-metadata\nContent-Disposition: recording-session\n\n  <?xml version='1.0'?><recording/>\n";
        let b = split_body("multipart/mixed;boundary={{boundary}}", body).unwrap();
        assert!(b.sdp.unwrap().contains("m=audio 1"));
        let m = b.metadata.unwrap();
        assert_eq!(m.content_type, "application/rs-metadata");
        assert!(trim_ascii(&m.bytes).starts_with(b"<?xml"));
    }

    #[test]
    fn single_content_types_and_errors() {
        let b = split_body("application/sdp", SDP.as_bytes()).unwrap();
        assert_eq!(b.sdp.as_deref(), Some(SDP));
        assert!(b.metadata.is_none());
        let b = split_body("application/rs-metadata+xml", XML.as_bytes()).unwrap();
        assert!(b.sdp.is_none() && b.metadata.is_some());
        assert_eq!(
            split_body("application/sdp", b"  \r\n"),
            Err(BodyError::Empty)
        );
        assert!(matches!(
            split_body("text/html", b"<html/>"),
            Err(BodyError::UnsupportedContentType(_))
        ));
        assert_eq!(
            split_body("multipart/mixed", b"no parts here"),
            Err(BodyError::MissingBoundary)
        );
        assert_eq!(
            split_body("multipart/mixed;boundary=x", b"no parts here"),
            Err(BodyError::NoParts)
        );
        // Sniffing without a Content-Type.
        assert!(split_body("", SDP.as_bytes()).unwrap().sdp.is_some());
    }

    #[test]
    fn classification_rules() {
        let mp = two_part("b", "\r\n", false, true);
        let ct = "multipart/mixed;boundary=b";
        assert!(matches!(
            classify(ct, &mp, &["siprec"], &[], true),
            Classification::Siprec(_)
        ));
        // Metadata alone is enough.
        assert!(matches!(
            classify(ct, &mp, &[], &[], false),
            Classification::Siprec(_)
        ));
        // SDP-only from an SRC (pause re-INVITE) is SIPREC.
        assert!(matches!(
            classify("application/sdp", SDP.as_bytes(), &[], &[], true),
            Classification::Siprec(SiprecBody { metadata: None, .. })
        ));
        assert!(matches!(
            classify(
                "application/sdp",
                SDP.as_bytes(),
                &["100rel, siprec"],
                &[],
                false
            ),
            Classification::Siprec(_)
        ));
        // Plain SDP without indication, or with only Supported: siprec, is not.
        assert!(matches!(
            classify(
                "application/sdp",
                SDP.as_bytes(),
                &[],
                &["timer", "siprec"],
                false
            ),
            Classification::NotSiprec { .. }
        ));
        assert!(matches!(
            classify("", b"", &[], &[], false),
            Classification::NotSiprec { .. }
        ));
        // Claims SIPREC, body unusable.
        assert_eq!(
            classify("", b"", &["siprec"], &[], false),
            Classification::Invalid(BodyError::Empty)
        );
        assert!(matches!(
            classify("multipart/mixed", b"junk", &["siprec"], &[], true),
            Classification::Invalid(BodyError::MissingBoundary)
        ));
    }
}
