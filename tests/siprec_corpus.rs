//! Runs the SDP / SIPREC body / metadata layer over every message in
//! ../shared/testdata/siprec/ (third-party SIPREC INVITEs, re-INVITEs and UPDATEs from many
//! vendors; see its INDEX.md) and spot-checks concrete values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use branchrec::sdp::{self, build_answer, is_hold, AnswerParams, Direction, SessionDescription};
use branchrec::siprec::metadata::{self, RecordingMetadata};
use branchrec::siprec::{
    channel_map, classify, BodyError, Classification, DataMode, MappingSource, MetadataError,
    Namespace, SiprecBody,
};

const END_HEADER: &str = "# ---- END HEADER (original bytes follow verbatim) ----";
const SUPPORTED: &[&str] = &["PCMU", "PCMA", "telephone-event"];

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/siprec"
    ))
}

/// file name → "full" | "body-only", from INDEX.md.
fn index() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("INDEX.md")).expect("INDEX.md");
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cols.get(1)?;
            let kind = cols.get(2)?;
            (name.ends_with(".txt")).then(|| (name.to_string(), kind.to_string()))
        })
        .collect()
}

/// The original bytes of a fixture (header stripped).
fn load(name: &str) -> Vec<u8> {
    let raw = std::fs::read(dir().join(name)).expect("fixture");
    let pos = raw
        .windows(END_HEADER.len())
        .position(|w| w == END_HEADER.as_bytes())
        .expect("END HEADER line");
    let after = pos + END_HEADER.len();
    let nl = raw[after..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| after + i + 1)
        .unwrap_or(raw.len());
    let mut body = raw[nl..].to_vec();
    if name.starts_with("opensips-2.4-pastebin-log") {
        body = strip_log_prefixes(&body);
    }
    body
}

/// The pastebin log has `  12. drachtio_1 | ` before every line and a log line first.
fn strip_log_prefixes(b: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(b);
    let mut out = String::new();
    let mut started = false;
    for line in text.lines() {
        let l = match line.find("drachtio_1 |") {
            Some(i) => {
                let rest = &line[i + "drachtio_1 |".len()..];
                rest.strip_prefix(' ').unwrap_or(rest)
            }
            None => line,
        };
        if !started && !l.contains(" SIP/2.0") {
            continue;
        }
        started = true;
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Minimal SIP message split for the test (the real SIP parser lives elsewhere):
/// request line, headers (folding and leading indentation tolerated), body = everything
/// after the first blank line (or from a `--boundary` line when the blank line is missing).
struct Msg {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn is_header_line(l: &str) -> Option<(&str, &str)> {
    let (name, value) = l.split_once(':')?;
    let name = name.trim_end();
    (!name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!%'*+-._`~".contains(&c)))
    .then_some((name, value.trim()))
}

fn split_sip(raw: &[u8]) -> Msg {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    let mut first = true;
    let mut body_start = raw.len();
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(raw.len());
        let line = String::from_utf8_lossy(&raw[pos..end]);
        let t = line.trim();
        if first {
            first = false;
        } else if t.is_empty() {
            body_start = end;
            break;
        } else if t.starts_with("--") {
            body_start = pos;
            break;
        } else if let Some((n, v)) = is_header_line(t) {
            headers.push((n.to_string(), v.to_string()));
        } else if let Some(last) = headers.last_mut() {
            last.1.push(' ');
            last.1.push_str(t);
        }
        pos = end;
    }
    Msg {
        headers,
        body: raw[body_start.min(raw.len())..].to_vec(),
    }
}

impl Msg {
    fn all(&self, names: &[&str]) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn content_type(&self) -> String {
        self.all(&["content-type", "c"])
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
    /// `+sip.src` feature tag, or the bare `;src` parameter BroadWorks/AudioCodes send.
    fn contact_src(&self) -> bool {
        self.all(&["contact", "m"]).iter().any(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("+sip.src")
                || c.split(|ch: char| ch == ';' || ch == '>' || ch.is_whitespace())
                    .any(|p| p == "src")
        })
    }
}

/// What the corpus test feeds to `classify`: (content type, body, require, supported, src).
struct Input {
    content_type: String,
    body: Vec<u8>,
    require: Vec<String>,
    supported: Vec<String>,
    src: bool,
}

fn input(name: &str, kind: &str) -> Input {
    let raw = load(name);
    if kind == "full" {
        let m = split_sip(&raw);
        Input {
            content_type: m.content_type(),
            require: m.all(&["require"]).iter().map(|s| s.to_string()).collect(),
            supported: m
                .all(&["supported", "k"])
                .iter()
                .map(|s| s.to_string())
                .collect(),
            src: m.contact_src(),
            body: m.body,
        }
    } else {
        // Body-only fixtures lost their Content-Type header: plain SDP and bare metadata
        // are named as such in their NOTE lines; the rest are multipart bodies whose
        // boundary the splitter must find by itself.
        let ct = match name {
            "negative-non-siprec-sdp-only.txt" => "application/sdp",
            "oracle-doc-2-extensiondata-TRUNCATED.txt" => "application/rs-metadata+xml",
            _ => "multipart/mixed",
        };
        Input {
            content_type: ct.into(),
            body: raw,
            require: vec![],
            supported: vec![],
            src: false,
        }
    }
}

fn run_classify(i: &Input) -> Classification {
    let req: Vec<&str> = i.require.iter().map(String::as_str).collect();
    let sup: Vec<&str> = i.supported.iter().map(String::as_str).collect();
    classify(&i.content_type, &i.body, &req, &sup, i.src)
}

fn siprec_body(name: &str) -> SiprecBody {
    let idx = index();
    let kind = idx.get(name).expect("in INDEX.md");
    match run_classify(&input(name, kind)) {
        Classification::Siprec(b) => b,
        other => panic!("{name}: expected SIPREC, got {other:?}"),
    }
}

fn meta_of(name: &str) -> RecordingMetadata {
    let b = siprec_body(name);
    metadata::parse(&b.metadata.expect("metadata part").bytes).expect("metadata parses")
}

fn sdp_of(name: &str) -> SessionDescription {
    sdp::parse(&siprec_body(name).sdp.expect("sdp part")).expect("sdp parses")
}

fn answer_params(n: usize, version: u64) -> AnswerParams<'static> {
    AnswerParams {
        local_addr: "192.0.2.200".parse().unwrap(),
        ports: (0..n).map(|i| Some(40000 + 2 * i as u16)).collect(),
        session_id: 7,
        session_version: version,
        username: "branchrec".into(),
        supported: SUPPORTED,
    }
}

fn not_siprec(name: &str) -> bool {
    name.starts_with("negative-") || name.contains("-nonsiprec-")
}

/// Documentation examples whose metadata is known to be broken.
const MALFORMED_METADATA: &[(&str, &str)] = &[
    ("amazon-chime-doc-1-initial.txt", "xml"), // <naSRCme>…</name>
    ("broadworks-1.txt", "noelements"),        // markup stripped by the paste
];
/// In-dialog re-INVITEs that carry only SDP (pause/hold).
const SDP_ONLY: &[&str] = &[
    "broadworks-miarec-pause-2.txt",
    "broadworks-miarec-pause-3.txt",
    "webex-calling-miarec-conf-2.txt",
    "webex-calling-miarec-conf-10.txt",
    "webex-calling-miarec-conf-11.txt",
    "webex-calling-miarec-conf-12.txt",
    "opensips-2.4-pastebin-log-TRUNCATED.txt", // excerpt ends inside the SDP part
];
/// UPDATEs (and one doc excerpt) carrying only metadata.
const METADATA_ONLY: &[&str] = &[
    "avaya-sbce-miarec-2.txt",
    "broadworks-miarec-3way-3.txt",
    "broadworks-miarec-3way-5.txt",
    "webex-calling-miarec-conf-4.txt",
    "webex-calling-miarec-conf-5.txt",
    "webex-calling-miarec-conf-6.txt",
    "webex-calling-miarec-conf-7.txt",
    "webex-calling-miarec-conf-8.txt",
    "webex-calling-miarec-conf-9.txt",
    "oracle-doc-2-extensiondata-TRUNCATED.txt",
];

#[test]
fn every_corpus_file_is_handled() {
    let idx = index();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    on_disk.sort();
    assert!(on_disk.len() >= 58, "corpus shrank: {}", on_disk.len());
    let (mut siprec, mut rejected, mut meta_ok) = (0, 0, 0);
    for name in &on_disk {
        let kind = idx
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from INDEX.md"));
        let inp = input(name, kind);
        let truncated = name.contains("TRUNCATED");
        let c = run_classify(&inp);
        if not_siprec(name) {
            assert!(
                matches!(c, Classification::NotSiprec { .. }),
                "{name}: must not be SIPREC, got {c:?}"
            );
            rejected += 1;
            continue;
        }
        let body = match c {
            Classification::Siprec(b) => b,
            Classification::Invalid(e) if truncated => {
                // A clean, typed error is acceptable for a partial message.
                let _: BodyError = e;
                continue;
            }
            other => panic!("{name}: expected SIPREC, got {other:?}"),
        };
        siprec += 1;

        // SDP: present unless metadata-only; parses; an answer can be built.
        if METADATA_ONLY.contains(&name.as_str()) {
            assert!(body.sdp.is_none(), "{name}: unexpected SDP");
        } else {
            let text = body
                .sdp
                .as_deref()
                .unwrap_or_else(|| panic!("{name}: no SDP part"));
            let offer = sdp::parse(text).unwrap_or_else(|e| panic!("{name}: SDP {e}"));
            assert!(!offer.media.is_empty(), "{name}: no m-lines");
            let ans = build_answer(
                &offer,
                &answer_params(offer.media.len(), 1),
                &mut rand::rngs::OsRng,
            )
            .unwrap_or_else(|e| panic!("{name}: answer {e}"));
            assert_eq!(ans.sdp.media.len(), offer.media.len(), "{name}");
            for (i, (om, am)) in offer.media.iter().zip(&ans.sdp.media).enumerate() {
                assert_eq!(om.label(), am.label(), "{name}: label of m-line {i}");
                assert_eq!(om.media, am.media, "{name}: media type of m-line {i}");
                let st = &ans.streams[i];
                let offered_g711 = om.codecs().iter().any(|c| {
                    c.encoding.eq_ignore_ascii_case("PCMU")
                        || c.encoding.eq_ignore_ascii_case("PCMA")
                });
                if om.media == "audio" && om.port != 0 && offered_g711 {
                    assert!(st.port.is_some(), "{name}: m-line {i} rejected: {st:?}");
                    assert!(matches!(
                        st.direction,
                        Direction::RecvOnly | Direction::Inactive
                    ));
                    assert!(am.direction_attr().is_some());
                } else {
                    assert_eq!(am.port, 0, "{name}: m-line {i} should be rejected");
                }
            }
            // What we send parses back identically.
            assert_eq!(sdp::parse(&ans.sdp.to_string()).unwrap(), ans.sdp, "{name}");
        }

        // Metadata.
        let expected_bad = MALFORMED_METADATA.iter().find(|(n, _)| n == name);
        match (&body.metadata, SDP_ONLY.contains(&name.as_str())) {
            (None, true) => {}
            (Some(_), true) => panic!("{name}: unexpected metadata"),
            (None, false) => panic!("{name}: no metadata part"),
            (Some(m), false) => match metadata::parse(&m.bytes) {
                Ok(md) => {
                    assert!(expected_bad.is_none(), "{name}: broken metadata accepted");
                    assert!(!truncated, "{name}: truncated metadata parsed?");
                    assert!(
                        !md.participants.is_empty()
                            || !md.streams.is_empty()
                            || !md.participant_stream_assocs.is_empty(),
                        "{name}: empty model"
                    );
                    for p in &md.participants {
                        assert!(!p.id.is_empty(), "{name}: participant without id");
                    }
                    if let Some(sdp_text) = &body.sdp {
                        let offer = sdp::parse(sdp_text).unwrap();
                        let map = channel_map(&md, &offer.labels());
                        assert_eq!(map.len(), offer.media.len());
                        for a in &map {
                            if let Some(pid) = &a.participant_id {
                                assert!(md.participant(pid).is_some(), "{name}: {a:?}");
                            }
                        }
                    }
                    meta_ok += 1;
                }
                Err(e) => {
                    match expected_bad.map(|(_, k)| *k) {
                        Some("xml") => assert!(matches!(e, MetadataError::Xml(_)), "{name}: {e}"),
                        Some(_) => assert_eq!(e, MetadataError::NoElements, "{name}"),
                        None => assert!(truncated, "{name}: metadata rejected: {e}"),
                    }
                    // Errors render to a useful message.
                    assert!(!e.to_string().is_empty());
                }
            },
        }
    }
    assert_eq!(rejected, 4, "negative + nonsiprec files");
    assert!(siprec >= 50, "{siprec}");
    assert!(meta_ok >= 40, "{meta_ok}");
}

#[test]
fn non_siprec_reasons() {
    let idx = index();
    for name in [
        "negative-non-siprec-sdp-only.txt",
        "cisco-cube-nbr-nonsiprec-miarec-1.txt",
        "cisco-ucm-bib-nonsiprec-miarec-1.txt",
        "cisco-ucm-bib-nonsiprec-miarec-2.txt",
    ] {
        let inp = input(name, &idx[name]);
        assert!(!inp.src, "{name}: no +sip.src");
        match run_classify(&inp) {
            Classification::NotSiprec { reason } => assert!(!reason.is_empty()),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The UCM built-in-bridge INVITE has no body at all (delayed offer).
    assert!(input("cisco-ucm-bib-nonsiprec-miarec-1.txt", "full")
        .body
        .iter()
        .all(|b| b.is_ascii_whitespace()));
}

#[test]
fn cisco_cube_three_parts_and_channel_map() {
    let b = siprec_body("cisco-cube-1.txt");
    assert_eq!(b.other.len(), 1);
    assert_eq!(b.other[0].0, "application/gtd");
    assert!(String::from_utf8_lossy(&b.other[0].1).starts_with("IAM,"));
    let md = meta_of("cisco-cube-1.txt");
    assert_eq!(md.namespace, Namespace::Rfc7865);
    assert_eq!(
        md.sessions[0].sip_session_ids,
        vec!["e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b"]
    );
    let offer = sdp_of("cisco-cube-1.txt");
    let map = channel_map(&md, &offer.labels());
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:7301@35.162.237.204")
    );
    assert_eq!(
        map[0].participant_id.as_deref(),
        Some("kQNhKFdEEeeJ99D/VsPGWA==")
    );
    assert_eq!(
        map[0].stream_id.as_deref(),
        Some("kQOH5VdEEeeJ/ND/VsPGWA==")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("sip:7300@35.162.237.204")
    );
    assert_eq!(map[1].participant_name.as_deref(), Some("7300"));
    assert!(map.iter().all(|a| a.source == MappingSource::Metadata));
}

#[test]
fn cisco_cube_inactive_offer() {
    let offer = sdp_of("cisco-cube-2-inactive.txt");
    let ans = build_answer(&offer, &answer_params(2, 1), &mut rand::rngs::OsRng).unwrap();
    for (m, s) in offer.media.iter().zip(&ans.streams) {
        assert!(is_hold(m, &offer));
        assert_eq!(s.direction, Direction::Inactive);
        // PCMU + telephone-event kept; CN (19) dropped.
        assert_eq!(
            s.formats.iter().map(|f| f.pt).collect::<Vec<_>>(),
            vec![0, 101]
        );
        assert_eq!(s.formats[1].fmtp.as_deref(), Some("0-16"));
    }
    // Empty participantstreamassoc elements → m-line order fallback.
    let md = meta_of("cisco-cube-2-inactive.txt");
    let map = channel_map(&md, &offer.labels());
    assert!(map
        .iter()
        .all(|a| a.source == MappingSource::MlineOrderFallback));
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:0733165805@192.168.40.34")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("sip:+972546136443@192.168.10.140")
    );
    assert_eq!(
        map[0].stream_id.as_deref(),
        Some("GbZGg8aXEeuxy61dFIaIyA==")
    );
}

#[test]
fn oracle_acme_old_draft_send_inside_participant() {
    let md = meta_of("oracle-acme-1.txt");
    assert_eq!(md.namespace, Namespace::OldDraft);
    assert_eq!(md.participants[0].send, vec!["Q4O8SGLQSilXHUGQX2zd8Q=="]);
    let offer = sdp_of("oracle-acme-1.txt");
    assert_eq!(
        offer.labels(),
        vec![Some("16777227".to_string()), Some("16777228".to_string())]
    );
    let map = channel_map(&md, &offer.labels());
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:9000@192.168.50.102")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("sip:1002@192.168.50.10")
    );
    assert_eq!(map[1].participant_name.as_deref(), Some("1002"));
    assert!(map.iter().all(|a| a.source == MappingSource::Metadata));

    // The SIPp variant has a stray second SDP pasted inside the first part: only the first
    // description counts, and the one described stream maps by metadata.
    let offer = sdp_of("oracle-acme-miarec-1.txt");
    assert_eq!(offer.media.len(), 1);
    assert_eq!(offer.media[0].label(), Some("16777227"));
    let md = meta_of("oracle-acme-miarec-1.txt");
    let map = channel_map(&md, &offer.labels());
    assert_eq!(
        map[0].participant_name.as_deref(),
        Some("SEQUENTIAL,PRINTF=99")
    );
    assert_eq!(map[0].source, MappingSource::Metadata);
}

#[test]
fn audiocodes_legacy_format() {
    let md = meta_of("audiocodes-mediant-ve-1.txt");
    assert_eq!(md.namespace, Namespace::OldDraft);
    assert_eq!(md.data_mode, Some(DataMode::Complete));
    assert_eq!(md.participants[0].id, "+18888888888");
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("00000000-0000-00b6-d16f-0000000004e4")
    );
    let offer = sdp_of("audiocodes-mediant-ve-1.txt");
    let map = channel_map(&md, &offer.labels());
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("+18888888888@fakeip.com")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("+17777777777@fakeip.com")
    );
    let ans = build_answer(&offer, &answer_params(2, 1), &mut rand::rngs::OsRng).unwrap();
    let text = ans.sdp.to_string();
    assert!(text.contains("a=fmtp:101 0-15,16\r\n"), "{text}");
    assert!(text.contains("a=ptime:20\r\n"));
    assert_eq!(ans.streams[0].remote, Some("8.8.8.8:7232".parse().unwrap()));

    // Manual excerpt: headers run straight into the body; metadata part truncated.
    let b = siprec_body("audiocodes-manual-1-TRUNCATED.txt");
    let offer = sdp::parse(b.sdp.as_deref().unwrap()).unwrap();
    assert_eq!(
        offer.labels(),
        vec![Some("1".to_string()), Some("2".to_string())]
    );
    assert!(matches!(
        metadata::parse(&b.metadata.unwrap().bytes),
        Err(MetadataError::Xml(_))
    ));
}

#[test]
fn ribbon_sonus_prefixed_namespace_and_bad_content_length() {
    let md = meta_of("ribbon-sonus-1.txt");
    assert_eq!(md.namespace, Namespace::OldDraft);
    assert_eq!(
        md.participants[1].names,
        Vec::<String>::new(),
        "whitespace-only name dropped"
    );
    let offer = sdp_of("ribbon-sonus-1.txt");
    let map = channel_map(&md, &offer.labels());
    // Stream label 1 is sent by the second participant.
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("2249888012@172.16.195.72")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("2249888500@172.16.198.55")
    );
    assert_eq!(map[1].participant_name.as_deref(), Some("Extension 8500"));
    for f in ["ribbon-sonus-full-1.txt", "ribbon-sonus-full-2.txt"] {
        let md = meta_of(f);
        let offer = sdp_of(f);
        let map = channel_map(&md, &offer.labels());
        assert_eq!(
            map[0].participant_aor.as_deref(),
            Some("2245096042@172.16.195.72"),
            "{f}"
        );
        assert_eq!(
            map[1].participant_name.as_deref(),
            Some("5083084809"),
            "{f}"
        );
    }
}

#[test]
fn broadworks_webex_metadata_first() {
    let b = siprec_body("webex-calling-miarec-1.txt");
    assert_eq!(
        b.metadata.as_ref().unwrap().content_type,
        "application/rs-metadata+xml"
    );
    let md = meta_of("webex-calling-miarec-1.txt");
    assert_eq!(md.namespace, Namespace::BroadWorks);
    assert_eq!(
        md.recording_id.as_deref(),
        Some("urn:uuid:03dd5b5d-6217-425a-ab0d-d04261388c36")
    );
    let offer = sdp_of("webex-calling-miarec-1.txt");
    let map = channel_map(&md, &offer.labels());
    assert_eq!(map.len(), 1);
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:kculs9klre@44936045.int10.bcld.webex.com")
    );
    assert_eq!(map[0].source, MappingSource::Metadata);
    let ans = build_answer(&offer, &answer_params(1, 1), &mut rand::rngs::OsRng).unwrap();
    // opus, G722 and the 48 kHz telephone-event are not answered.
    assert_eq!(ans.sdp.media[0].formats, vec!["101", "0", "8"]);
}

#[test]
fn connectel_no_associations_falls_back_to_order() {
    let md = meta_of("connectel-1.txt");
    assert_eq!(md.participants[0].names, vec!["test_user;lang=en-US;id=22"]);
    let offer = sdp_of("connectel-1.txt");
    assert!(offer.connection.is_none() && offer.media[0].connection.is_none());
    let map = channel_map(&md, &offer.labels());
    assert_eq!(
        map[0].stream_id.as_deref(),
        Some("EkG6jSRhQqCupqs53tna1w==")
    );
    assert_eq!(
        map[0].participant_id.as_deref(),
        Some("WEWTz80cS1Cqdyepmu3STQ==")
    );
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("sip:0760516936@sip-cust1.connectel.io")
    );
    assert!(map
        .iter()
        .all(|a| a.source == MappingSource::MlineOrderFallback));
    // No c= anywhere: no remote address to send to; still answered.
    let ans = build_answer(&offer, &answer_params(2, 1), &mut rand::rngs::OsRng).unwrap();
    assert!(ans
        .streams
        .iter()
        .all(|s| s.remote.is_none() && s.port.is_some()));
}

#[test]
fn avaya_and_procomm_quirks() {
    let md = meta_of("avaya-sbce-miarec-1.txt");
    assert_eq!(md.data_mode, Some(DataMode::Complete), "camelCase dataMode");
    assert!(md
        .streams
        .iter()
        .any(|s| s.id.is_empty() && s.label.as_deref() == Some("20")));
    let map = channel_map(&md, &sdp_of("avaya-sbce-miarec-1.txt").labels());
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:13035381001@10.64.110.65")
    );
    assert_eq!(map[0].source, MappingSource::Metadata);

    // avaya-sbce-1: second m-line has PT 8 without rtpmap — still PCMA.
    let offer = sdp_of("avaya-sbce-1.txt");
    assert_eq!(offer.media[1].codecs()[0].encoding, "PCMA");
    let map = channel_map(&meta_of("avaya-sbce-1.txt"), &offer.labels());
    assert_eq!(
        map[1].participant_aor.as_deref(),
        Some("sip:33187164021@sip.webhelpgroupe.lan")
    );

    let offer = sdp_of("procomm-sems-1.txt");
    assert_eq!(offer.media[0].direction(&offer), Direction::SendOnly);
    let map = channel_map(&meta_of("procomm-sems-1.txt"), &offer.labels());
    assert_eq!(map[0].label.as_deref(), Some("a_leg"));
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:016190200@87.252.209.116")
    );
    assert_eq!(
        map[1].participant_name.as_deref(),
        Some("Speechpath-Main-Line 016190619")
    );
    assert!(map.iter().all(|a| a.source == MappingSource::Metadata));

    let map = channel_map(
        &meta_of("intrado-viper-1.txt"),
        &sdp_of("intrado-viper-1.txt").labels(),
    );
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("4058327108@10.105.190.136:5060")
    );
    assert_eq!(map[0].participant_name, None);
}

#[test]
fn amazon_chime_partial_updates_merge() {
    // Initial document: the doc's malformed tag is rejected cleanly…
    let b1 = siprec_body("amazon-chime-doc-1-initial.txt");
    let xml1 = b1.metadata.as_ref().unwrap().bytes.clone();
    assert!(matches!(metadata::parse(&xml1), Err(MetadataError::Xml(_))));
    // …and with that one documented defect repaired, it parses.
    let fixed = String::from_utf8(xml1)
        .unwrap()
        .replace("<naSRCme", "<name");
    let mut state = metadata::parse(fixed.as_bytes()).unwrap();
    assert_eq!(state.participants.len(), 2);
    assert_eq!(state.participants[0].names, vec!["Alice"]);
    assert_eq!(
        state.sessions[0].group_ref.as_deref(),
        Some("7+OTCyoxTmqmqyA/1weDAg==")
    );

    // SDP has '...' elisions and no v=/o=/c=; the four labelled m-lines still parse.
    let offer = sdp::parse(b1.sdp.as_deref().unwrap()).unwrap();
    assert_eq!(offer.media.len(), 4);
    let labels = offer.labels();
    let ans = build_answer(&offer, &answer_params(4, 1), &mut rand::rngs::OsRng).unwrap();
    assert_eq!(
        ans.sdp.media.iter().map(|m| m.port).collect::<Vec<_>>(),
        vec![40000, 0, 40004, 0],
        "video rejected"
    );
    let alice = "srfBElmCRp2QB23b7Mpk0w==";
    let bob = "zSfPoSvdSDCmU3A3TRDxAw==";
    let who = |m: &RecordingMetadata| {
        channel_map(m, &labels)
            .into_iter()
            .map(|a| (a.participant_id, a.source))
            .collect::<Vec<_>>()
    };
    let initial = who(&state);
    assert_eq!(
        initial,
        vec![
            (Some(alice.into()), MappingSource::Metadata),
            (Some(alice.into()), MappingSource::Metadata),
            (Some(bob.into()), MappingSource::Metadata),
            (Some(bob.into()), MappingSource::Metadata),
        ]
    );

    // Hold: Alice stops sending.
    let upd2 = meta_of("amazon-chime-doc-2-hold-partial.txt");
    assert_eq!(upd2.data_mode, Some(DataMode::Partial));
    state.merge(upd2);
    assert_eq!(state.participants.len(), 2);
    assert_eq!(state.streams.len(), 4);
    assert!(state.sends(alice).is_empty());
    assert_eq!(state.sends(bob).len(), 2);
    let held = who(&state);
    assert_eq!(held[2], (Some(bob.into()), MappingSource::Metadata));
    assert_eq!(held[0].1, MappingSource::MlineOrderFallback);
    assert_eq!(held[0].0.as_deref(), Some(alice));

    // Resume (leading whitespace before <?xml): back to the full mapping.
    let upd3 = meta_of("amazon-chime-doc-3-resume-partial.txt");
    state.merge(upd3);
    assert_eq!(state.sends(alice).len(), 2);
    assert_eq!(who(&state), initial);
}

#[test]
fn broadworks_pause_resume() {
    let mut state = meta_of("broadworks-miarec-pause-1.txt");
    assert_eq!(state.namespace, Namespace::BroadWorks);
    assert_eq!(state.participants[0].aors, vec!["sip:8638254725"]);
    let before = state.clone();
    let offer1 = sdp_of("broadworks-miarec-pause-1.txt");
    assert!(!is_hold(&offer1.media[0], &offer1));
    let map = channel_map(&state, &offer1.labels());
    assert_eq!(map[0].participant_aor.as_deref(), Some("sip:8638254725"));

    // Pause: SDP-only re-INVITE with c=0.0.0.0; no metadata, so state is unchanged.
    let b2 = siprec_body("broadworks-miarec-pause-2.txt");
    assert!(b2.metadata.is_none());
    let offer2 = sdp::parse(b2.sdp.as_deref().unwrap()).unwrap();
    assert!(is_hold(&offer2.media[0], &offer2));
    let ans2 = build_answer(&offer2, &answer_params(1, 2), &mut rand::rngs::OsRng).unwrap();
    assert_eq!(ans2.sdp.origin.session_version, "2");
    assert_eq!(ans2.streams[0].remote, None);
    assert_eq!(ans2.sdp.media[0].label(), Some("1"));
    // Issue #13 item 8: BroadWorks pauses with `c=0.0.0.0` and no direction attribute
    // (sendrecv by default). Answered `inactive` and on hold, so the recording pauses
    // (RFC 7866 §6.1.3 path); before, it was answered recvonly and kept recording.
    assert_eq!(ans2.streams[0].direction, Direction::Inactive);
    assert!(branchrec::siprec::srs::stream_on_hold(&ans2.streams[0]));
    assert_eq!(state, before);

    // Resume.
    let offer3 = sdp_of("broadworks-miarec-pause-3.txt");
    assert!(!is_hold(&offer3.media[0], &offer3));
    let ans3 = build_answer(&offer3, &answer_params(1, 3), &mut rand::rngs::OsRng).unwrap();
    assert_eq!(
        ans3.streams[0].remote,
        Some("192.0.2.20:16000".parse().unwrap())
    );
    assert_eq!(ans3.streams[0].direction, Direction::RecvOnly);
    assert!(!branchrec::siprec::srs::stream_on_hold(&ans3.streams[0]));

    // 3-way call: a complete snapshot in an UPDATE replaces the state (3 participants).
    state = meta_of("broadworks-miarec-3way-1.txt");
    assert_eq!(state.participants.len(), 2);
    state.merge(meta_of("broadworks-miarec-3way-3.txt"));
    assert_eq!(state.participants.len(), 3);
    assert_eq!(
        state.participants[2].aors,
        vec!["86074075017701@cloudcalling-e.onestreamnetworks.com"]
    );
    // Mixed stream sent by everyone: the first sender is reported.
    let map = channel_map(&state, &[Some("1".into())]);
    assert_eq!(
        map[0].participant_aor.as_deref(),
        Some("sip:86074075017412@cloudcalling-e.onestreamnetworks.com")
    );
}

#[test]
fn metaswitch_hold_sequence() {
    let names = [
        "metaswitch-miarec-hold-1.txt",
        "metaswitch-miarec-hold-2.txt",
        "metaswitch-miarec-hold-3.txt",
        "metaswitch-miarec-hold-4.txt",
    ];
    let holds: Vec<bool> = names
        .iter()
        .map(|n| {
            let o = sdp_of(n);
            is_hold(&o.media[0], &o)
        })
        .collect();
    assert!(!holds[0] && !holds[1]);
    assert!(holds[2], "hold-3 has c=0.0.0.0");
    let md = meta_of(names[0]);
    assert_eq!(md.recording_id.as_deref(), Some("+zzFKOKREeanqeyezQV3BA=="));
    let offer = sdp_of(names[0]);
    // 18 0 8 without rtpmap: G.729 dropped, PCMU/PCMA accepted; no direction → recvonly.
    let ans = build_answer(&offer, &answer_params(1, 1), &mut rand::rngs::OsRng).unwrap();
    assert_eq!(ans.sdp.media[0].formats, vec!["0", "8"]);
    assert_eq!(ans.streams[0].direction, Direction::RecvOnly);
    let map = channel_map(&md, &offer.labels());
    assert_eq!(map[0].participant_aor.as_deref(), Some("7602922411"));
    // Issue #13 item 8: Metaswitch's hold (c=0.0.0.0, no direction) is answered inactive
    // and is a hold of the recorded stream (the recording pauses when all are held).
    let o3 = sdp_of(names[2]);
    let a3 = build_answer(&o3, &answer_params(1, 3), &mut rand::rngs::OsRng).unwrap();
    assert_eq!(a3.streams[0].direction, Direction::Inactive);
    assert!(branchrec::siprec::srs::stream_on_hold(&a3.streams[0]));
}

#[test]
fn truncated_documents_fail_cleanly() {
    let b = siprec_body("oracle-doc-1-old-draft-TRUNCATED.txt");
    // No real boundaries in the doc snippet: recovered from the Content-Type lines.
    let offer = sdp::parse(b.sdp.as_deref().unwrap()).unwrap();
    assert_eq!(offer.labels(), vec![Some("1".to_string())]);
    assert!(matches!(
        metadata::parse(&b.metadata.unwrap().bytes),
        Err(MetadataError::Xml(_))
    ));
    let b = siprec_body("oracle-doc-2-extensiondata-TRUNCATED.txt");
    assert!(matches!(
        metadata::parse(&b.metadata.unwrap().bytes),
        Err(MetadataError::Xml(_))
    ));
    let b = siprec_body("opensips-2.4-pastebin-log-TRUNCATED.txt");
    let offer = sdp::parse(b.sdp.as_deref().unwrap()).unwrap();
    assert_eq!(offer.media[0].formats, vec!["0", "8", "101"]);
    assert_eq!(offer.connection.as_ref().unwrap().address, "172.18.0.4");
}

/// Poor man's fuzzing over the real corpus: every prefix (step 7 bytes) and a few byte
/// flips of every fixture go through the whole pipeline without panicking, and our SDP
/// serialiser stays idempotent on whatever parses.
#[test]
fn truncations_and_flips_never_panic() {
    let idx = index();
    let mut runs = 0;
    for (name, kind) in &idx {
        let inp = input(name, kind);
        let body = inp.body.clone();
        let mut variants: Vec<Vec<u8>> = (0..body.len())
            .step_by(7)
            .map(|n| body[..n].to_vec())
            .collect();
        for (i, flip) in [
            (3usize, b'<'),
            (11, b'-'),
            (29, b'\n'),
            (57, b'"'),
            (101, b'>'),
        ] {
            let mut v = body.clone();
            if let Some(b) = v.get_mut(i * body.len() / 128) {
                *b = flip;
            }
            variants.push(v);
        }
        for v in variants {
            runs += 1;
            let _ = classify(&inp.content_type, &v, &["siprec"], &[], true);
            if let Ok(b) = branchrec::siprec::split_body(&inp.content_type, &v) {
                if let Some(s) = &b.sdp {
                    if let Ok(sd) = sdp::parse(s) {
                        let out = sd.to_string();
                        let again = sdp::parse(&out).expect("own output parses");
                        assert_eq!(again.to_string(), out, "{name}");
                        let _ = build_answer(
                            &sd,
                            &answer_params(sd.media.len(), 1),
                            &mut rand::rngs::OsRng,
                        )
                        .unwrap();
                    }
                }
                if let Some(m) = &b.metadata {
                    if let Ok(md) = metadata::parse(&m.bytes) {
                        let mut st = md.clone();
                        st.merge(md);
                        let _ = channel_map(&st, &[Some("1".into()), None]);
                    }
                }
            }
            let _ = metadata::parse(&v);
        }
    }
    assert!(runs > 5000, "{runs}");
}
