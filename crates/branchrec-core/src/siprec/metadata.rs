//! RFC 7865 recording metadata: parsing (with the older draft and BroadWorks dialects),
//! partial-update merging, and the m-line → participant channel map.
//!
//! Dialects handled (all seen in real SRC traffic):
//! * RFC 7865 (`urn:ietf:params:xml:ns:recording:1`): `participant_id=`/`session_id=`/
//!   `stream_id=` attributes, `<participantstreamassoc>` with `<send>`/`<recv>`.
//! * Old draft (`urn:ietf:params:xml:ns:recording`, Acme/Oracle, AudioCodes, Metaswitch,
//!   Sonus with a `tns:` prefix): `id=`/`session=` attributes, `<send>`/`<recv>` inside
//!   `<participant>`, `<aor>`/`<name>` directly under `<participant>`, `<start-time>`.
//! * BroadWorks (`urn:ietf:params:xml:ns:siprec`, root `<recording_metadata>`):
//!   `<recording id>`, `<session group=>`, `<send><id>…</id></send>`.
//! * `dataMode` vs `datamode`, any namespace prefix, unknown/extension elements ignored.
//!
//! Times are kept as the text the SRC sent (RFC 3339 in theory; often without a zone).

use std::collections::HashSet;

/// Largest metadata document we accept.
pub const MAX_METADATA_BYTES: usize = 1 << 20;
/// Largest number of XML nodes we accept (defence against hostile documents).
const MAX_NODES: u32 = 200_000;

/// Which metadata schema the document declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// `urn:ietf:params:xml:ns:recording:1` (RFC 7865).
    Rfc7865,
    /// `urn:ietf:params:xml:ns:recording` (pre-RFC drafts).
    OldDraft,
    /// `urn:ietf:params:xml:ns:siprec` (BroadWorks / Webex Calling).
    BroadWorks,
    /// Anything else (empty string when the root has no namespace).
    Other(String),
}

impl Namespace {
    fn from_uri(uri: Option<&str>) -> Namespace {
        match uri.map(str::trim) {
            Some("urn:ietf:params:xml:ns:recording:1") => Namespace::Rfc7865,
            Some("urn:ietf:params:xml:ns:recording") => Namespace::OldDraft,
            Some("urn:ietf:params:xml:ns:siprec") => Namespace::BroadWorks,
            Some(o) => Namespace::Other(o.to_string()),
            None => Namespace::Other(String::new()),
        }
    }
}

/// RFC 7865 `<dataMode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// A complete snapshot: replaces everything known.
    Complete,
    /// A partial update: only the elements present change.
    Partial,
}

/// `<group>`: a set of related communication sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// `group_id=` / `id=`.
    pub id: String,
    /// `<associate-time>`.
    pub associate_time: Option<String>,
    /// `<disassociate-time>`.
    pub disassociate_time: Option<String>,
}

/// `<session>`: a communication session (CS) being recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    /// `session_id=` / `id=`.
    pub id: String,
    /// `<group-ref>` text or (BroadWorks) `group=` attribute.
    pub group_ref: Option<String>,
    /// `<sipSessionID>` values (RFC 7989 Session-ID, whitespace removed).
    pub sip_session_ids: Vec<String>,
    /// `<start-time>`.
    pub start_time: Option<String>,
    /// `<stop-time>`.
    pub stop_time: Option<String>,
    /// `<associate-time>` (old drafts put it on the session).
    pub associate_time: Option<String>,
}

/// `<participant>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Participant {
    /// `participant_id=` / `id=`.
    pub id: String,
    /// Display names (`<nameID><name>` or `<name>`), trimmed, empty ones dropped.
    pub names: Vec<String>,
    /// Addresses of record (`<nameID aor=>` or `<aor>`), as written (may lack `sip:`).
    pub aors: Vec<String>,
    /// Stream ids this participant sends, given inside `<participant>` (old drafts).
    pub send: Vec<String>,
    /// Stream ids this participant receives, given inside `<participant>`.
    pub recv: Vec<String>,
    /// `<associate-time>` / `<start-time>`.
    pub associate_time: Option<String>,
    /// `<disassociate-time>` / `<stop-time>`.
    pub disassociate_time: Option<String>,
}

/// `<stream>`: one media stream, tied to an SDP m-line by its label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// `stream_id=` / `id=` (may be empty in the wild).
    pub id: String,
    /// `session_id=` / `session=`.
    pub session_ref: Option<String>,
    /// `<label>`: matches an SDP `a=label`.
    pub label: Option<String>,
    /// `<mode>` (`separate` / `mixed`), old drafts and BroadWorks.
    pub mode: Option<String>,
}

/// `<sessionrecordingassoc>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecordingAssoc {
    /// `session_id=`.
    pub session_id: String,
    /// `<associate-time>`.
    pub associate_time: Option<String>,
    /// `<disassociate-time>`.
    pub disassociate_time: Option<String>,
}

/// `<participantsessionassoc>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParticipantSessionAssoc {
    /// `participant_id=`.
    pub participant_id: String,
    /// `session_id=`.
    pub session_id: String,
    /// `<associate-time>`.
    pub associate_time: Option<String>,
    /// `<disassociate-time>`: the participant left the session.
    pub disassociate_time: Option<String>,
}

/// `<participantstreamassoc>`: which streams a participant sends and receives. In a
/// partial update it carries the participant's complete current sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParticipantStreamAssoc {
    /// `participant_id=`.
    pub participant_id: String,
    /// `<send>` stream ids.
    pub send: Vec<String>,
    /// `<recv>` stream ids.
    pub recv: Vec<String>,
    /// `<associate-time>`.
    pub associate_time: Option<String>,
    /// `<disassociate-time>`.
    pub disassociate_time: Option<String>,
}

/// A parsed metadata document (or the merged state of several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMetadata {
    /// Declared namespace of the root element.
    pub namespace: Namespace,
    /// `<dataMode>`; `None` when absent (treated as complete by [`RecordingMetadata::merge`]).
    pub data_mode: Option<DataMode>,
    /// Recording id (`<recording id=>` on the root, or BroadWorks `<recording id>` child).
    pub recording_id: Option<String>,
    /// `<group>` elements.
    pub groups: Vec<Group>,
    /// `<session>` elements.
    pub sessions: Vec<Session>,
    /// `<participant>` elements, in document order.
    pub participants: Vec<Participant>,
    /// `<stream>` elements, in document order.
    pub streams: Vec<StreamInfo>,
    /// `<sessionrecordingassoc>` elements.
    pub session_recording_assocs: Vec<SessionRecordingAssoc>,
    /// `<participantsessionassoc>` elements.
    pub participant_session_assocs: Vec<ParticipantSessionAssoc>,
    /// `<participantstreamassoc>` elements.
    pub participant_stream_assocs: Vec<ParticipantStreamAssoc>,
}

/// Why a metadata document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Nothing but whitespace.
    #[error("empty metadata")]
    Empty,
    /// Larger than [`MAX_METADATA_BYTES`].
    #[error("metadata too large ({0} bytes)")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("metadata is not UTF-8")]
    Encoding,
    /// Not well-formed XML (includes truncated documents and DTDs, which we refuse).
    #[error("malformed metadata XML: {0}")]
    Xml(String),
    /// Well-formed, but the root is not `<recording>` / `<recording_metadata>`.
    #[error("unexpected metadata root element <{0}>")]
    UnexpectedRoot(String),
    /// The root holds text but no elements (markup stripped, e.g. by a copy/paste).
    #[error("metadata root has text but no elements (markup lost)")]
    NoElements,
}

/// Why a metadata document gives the recorder nothing it can use, if so (issue #13 item
/// 5): it does not parse, or it is not a partial update and holds neither participants
/// nor streams (e.g. `<participant>`s in an element we do not know). The shell keeps the
/// raw part anyway and raises the `metadata_unusable` warning for the call.
pub fn unusable_reason(raw: &[u8]) -> Option<String> {
    match parse(raw) {
        Err(e) => Some(e.to_string()),
        Ok(m)
            if m.data_mode != Some(DataMode::Partial)
                && m.participants.is_empty()
                && m.streams.is_empty() =>
        {
            Some("no participants or streams in the document".into())
        }
        Ok(_) => None,
    }
}

/// Whether a body part looks like a recording metadata document whatever its
/// Content-Type says (real captures have garbled ones, e.g. `application/ +xml`): its
/// first element is `<recording>` (any namespace prefix) or `<recording_metadata>`.
pub fn looks_like_metadata(bytes: &[u8]) -> bool {
    let head = bytes.get(..bytes.len().min(4096)).unwrap_or(bytes);
    let mut rest = head;
    while let Some(i) = rest.iter().position(|&c| c == b'<') {
        rest = rest.get(i + 1..).unwrap_or(&[]);
        match rest.first() {
            Some(b'?') | Some(b'!') => continue,
            Some(_) => {
                let end = rest
                    .iter()
                    .position(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
                    .unwrap_or(rest.len());
                let name = rest.get(..end).unwrap_or(&[]);
                let local = match name.iter().rposition(|&c| c == b':') {
                    Some(k) => name.get(k + 1..).unwrap_or(&[]),
                    None => name,
                };
                return local.eq_ignore_ascii_case(b"recording")
                    || local.eq_ignore_ascii_case(b"recording_metadata");
            }
            None => return false,
        }
    }
    false
}

/// Parse a metadata document.
pub fn parse(xml: &[u8]) -> Result<RecordingMetadata, MetadataError> {
    if xml.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge(xml.len()));
    }
    let text = std::str::from_utf8(xml).map_err(|_| MetadataError::Encoding)?;
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(MetadataError::Empty);
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| MetadataError::Xml(e.to_string()))?;
    let root = doc.root_element();
    let root_name = root.tag_name().name();
    if !root_name.eq_ignore_ascii_case("recording")
        && !root_name.eq_ignore_ascii_case("recording_metadata")
    {
        return Err(MetadataError::UnexpectedRoot(root_name.to_string()));
    }
    let has_elements = root.children().any(|c| c.is_element());
    let has_text = root
        .children()
        .any(|c| c.is_text() && c.text().is_some_and(|t| !t.trim().is_empty()));
    if !has_elements && has_text {
        return Err(MetadataError::NoElements);
    }

    let mut md = RecordingMetadata {
        namespace: Namespace::from_uri(root.tag_name().namespace()),
        data_mode: None,
        recording_id: attr(root, &["id"]),
        groups: Vec::new(),
        sessions: Vec::new(),
        participants: Vec::new(),
        streams: Vec::new(),
        session_recording_assocs: Vec::new(),
        participant_session_assocs: Vec::new(),
        participant_stream_assocs: Vec::new(),
    };

    for n in root.children().filter(|c| c.is_element()) {
        parse_element(&mut md, n, true);
    }
    Ok(md)
}

/// One element of the document. `top`: a child of the root; a `<session>` there may nest
/// `<participant>`, `<stream>` and association elements (non-RFC SRCs put the
/// participants inside the session): those are taken as if they were top-level (one level
/// deep only).
fn parse_element(md: &mut RecordingMetadata, n: roxmltree::Node<'_, '_>, top: bool) {
    let name = n.tag_name().name().to_ascii_lowercase();
    {
        match name.as_str() {
            "datamode" => {
                md.data_mode = match text_of(n).to_ascii_lowercase().as_str() {
                    "complete" => Some(DataMode::Complete),
                    "partial" => Some(DataMode::Partial),
                    _ => None,
                }
            }
            "recording" if md.recording_id.is_none() => {
                md.recording_id = attr(n, &["id", "recording_id"]);
            }
            "group" => md.groups.push(Group {
                id: attr(n, &["group_id", "id"]).unwrap_or_default(),
                associate_time: child_text(n, &["associate-time"]),
                disassociate_time: child_text(n, &["disassociate-time"]),
            }),
            "session" if top => {
                md.sessions.push(parse_session(n));
                for c in n.children().filter(|c| c.is_element()) {
                    if matches!(
                        c.tag_name().name().to_ascii_lowercase().as_str(),
                        "participant"
                            | "stream"
                            | "participantsessionassoc"
                            | "participantstreamassoc"
                    ) {
                        parse_element(md, c, false);
                    }
                }
            }
            "participant" => md.participants.push(parse_participant(n)),
            "stream" => md.streams.push(StreamInfo {
                id: attr(n, &["stream_id", "id"]).unwrap_or_default(),
                session_ref: attr(n, &["session_id", "session"]),
                label: child_text(n, &["label"]),
                mode: child_text(n, &["mode"]),
            }),
            "sessionrecordingassoc" => md.session_recording_assocs.push(SessionRecordingAssoc {
                session_id: attr(n, &["session_id", "session"]).unwrap_or_default(),
                associate_time: child_text(n, &["associate-time"]),
                disassociate_time: child_text(n, &["disassociate-time"]),
            }),
            "participantsessionassoc" => {
                md.participant_session_assocs.push(ParticipantSessionAssoc {
                    participant_id: attr(n, &["participant_id", "participant"]).unwrap_or_default(),
                    session_id: attr(n, &["session_id", "session"]).unwrap_or_default(),
                    associate_time: child_text(n, &["associate-time"]),
                    disassociate_time: child_text(n, &["disassociate-time"]),
                })
            }
            "participantstreamassoc" => {
                let (send, recv) = send_recv(n);
                md.participant_stream_assocs.push(ParticipantStreamAssoc {
                    participant_id: attr(n, &["participant_id", "participant"]).unwrap_or_default(),
                    send,
                    recv,
                    associate_time: child_text(n, &["associate-time"]),
                    disassociate_time: child_text(n, &["disassociate-time"]),
                })
            }
            _ => {} // extensiondata and vendor elements
        }
    }
}

fn parse_session(n: roxmltree::Node<'_, '_>) -> Session {
    Session {
        id: attr(n, &["session_id", "id"]).unwrap_or_default(),
        group_ref: child_text(n, &["group-ref"]).or_else(|| attr(n, &["group"])),
        sip_session_ids: children(n, "sipsessionid")
            .map(|c| text_of(c).split_whitespace().collect::<String>())
            .filter(|s| !s.is_empty())
            .collect(),
        start_time: child_text(n, &["start-time"]),
        stop_time: child_text(n, &["stop-time"]),
        associate_time: child_text(n, &["associate-time"]),
    }
}

fn parse_participant(n: roxmltree::Node<'_, '_>) -> Participant {
    let mut p = Participant {
        id: attr(n, &["participant_id", "id"]).unwrap_or_default(),
        associate_time: child_text(n, &["associate-time", "start-time"]),
        disassociate_time: child_text(n, &["disassociate-time", "stop-time"]),
        ..Default::default()
    };
    for c in n.children().filter(|c| c.is_element()) {
        match c.tag_name().name().to_ascii_lowercase().as_str() {
            "nameid" => {
                if let Some(a) = attr(c, &["aor"]) {
                    p.aors.push(a);
                }
                for nm in children(c, "name") {
                    push_nonempty(&mut p.names, text_of(nm));
                }
            }
            "aor" => push_nonempty(&mut p.aors, text_of(c)),
            "name" => push_nonempty(&mut p.names, text_of(c)),
            _ => {}
        }
    }
    let (send, recv) = send_recv(n);
    p.send = send;
    p.recv = recv;
    p
}

fn push_nonempty(v: &mut Vec<String>, s: String) {
    if !s.is_empty() {
        v.push(s);
    }
}

/// `<send>`/`<recv>` children: text, or BroadWorks-style nested `<id>` elements.
fn send_recv(n: roxmltree::Node<'_, '_>) -> (Vec<String>, Vec<String>) {
    let ids = |name: &str| {
        let mut out = Vec::new();
        for c in children(n, name) {
            let nested: Vec<_> = children(c, "id").collect();
            if nested.is_empty() {
                push_nonempty(&mut out, text_of(c));
            } else {
                for i in nested {
                    push_nonempty(&mut out, text_of(i));
                }
            }
        }
        out
    };
    (ids("send"), ids("recv"))
}

fn children<'a, 'input: 'a>(
    n: roxmltree::Node<'a, 'input>,
    lower_name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name().eq_ignore_ascii_case(lower_name))
}

/// All text inside `n`, trimmed.
fn text_of(n: roxmltree::Node<'_, '_>) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn child_text(n: roxmltree::Node<'_, '_>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        children(n, name)
            .next()
            .map(text_of)
            .filter(|s| !s.is_empty())
    })
}

/// First present attribute among `names` (local names, any namespace), trimmed.
fn attr(n: roxmltree::Node<'_, '_>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        n.attributes()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .map(|a| a.value().trim().to_string())
    })
}

fn merge_opt(dst: &mut Option<String>, src: Option<String>) {
    if src.is_some() {
        *dst = src;
    }
}

fn merge_vec(dst: &mut Vec<String>, src: Vec<String>) {
    if !src.is_empty() {
        *dst = src;
    }
}

fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool, merge: impl Fn(&mut T, T)) {
    match list.iter_mut().find(|x| same(x, &item)) {
        Some(existing) => merge(existing, item),
        None => list.push(item),
    }
}

fn labels_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(x), Ok(y)) if x == y)
}

impl RecordingMetadata {
    /// Apply a later metadata document (from a re-INVITE or UPDATE).
    ///
    /// A complete snapshot (or a document without `<dataMode>`) replaces everything. A
    /// partial update (RFC 7865 §6.1) adds elements with new ids and updates those with
    /// known ids: groups, sessions, participants and streams are merged field by field
    /// (fields absent from the update keep their value); stream associations and
    /// session associations are replaced per participant (they carry the current sets,
    /// so a stream missing from `<send>` is no longer sent), which is also how
    /// `<disassociate-time>` is applied.
    pub fn merge(&mut self, update: RecordingMetadata) {
        if update.data_mode != Some(DataMode::Partial) {
            *self = update;
            return;
        }
        merge_opt(&mut self.recording_id, update.recording_id);
        for g in update.groups {
            upsert(
                &mut self.groups,
                g,
                |a, b| a.id == b.id,
                |a, b| {
                    merge_opt(&mut a.associate_time, b.associate_time);
                    merge_opt(&mut a.disassociate_time, b.disassociate_time);
                },
            );
        }
        for s in update.sessions {
            upsert(
                &mut self.sessions,
                s,
                |a, b| a.id == b.id,
                |a, b| {
                    merge_opt(&mut a.group_ref, b.group_ref);
                    merge_vec(&mut a.sip_session_ids, b.sip_session_ids);
                    merge_opt(&mut a.start_time, b.start_time);
                    merge_opt(&mut a.stop_time, b.stop_time);
                    merge_opt(&mut a.associate_time, b.associate_time);
                },
            );
        }
        for p in update.participants {
            upsert(
                &mut self.participants,
                p,
                |a, b| a.id == b.id,
                |a, b| {
                    merge_vec(&mut a.names, b.names);
                    merge_vec(&mut a.aors, b.aors);
                    merge_vec(&mut a.send, b.send);
                    merge_vec(&mut a.recv, b.recv);
                    merge_opt(&mut a.associate_time, b.associate_time);
                    merge_opt(&mut a.disassociate_time, b.disassociate_time);
                },
            );
        }
        for s in update.streams {
            upsert(
                &mut self.streams,
                s,
                |a, b| a.id == b.id,
                |a, b| {
                    merge_opt(&mut a.session_ref, b.session_ref);
                    merge_opt(&mut a.label, b.label);
                    merge_opt(&mut a.mode, b.mode);
                },
            );
        }
        for a in update.session_recording_assocs {
            upsert(
                &mut self.session_recording_assocs,
                a,
                |x, y| x.session_id == y.session_id,
                |x, y| *x = y,
            );
        }
        for a in update.participant_session_assocs {
            upsert(
                &mut self.participant_session_assocs,
                a,
                |x, y| x.participant_id == y.participant_id && x.session_id == y.session_id,
                |x, y| {
                    let keep_assoc = x.associate_time.clone();
                    *x = y;
                    if x.associate_time.is_none() {
                        x.associate_time = keep_assoc;
                    }
                },
            );
        }
        for a in update.participant_stream_assocs {
            upsert(
                &mut self.participant_stream_assocs,
                a,
                |x, y| x.participant_id == y.participant_id,
                |x, y| *x = y,
            );
        }
    }

    /// The participant with this id.
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The stream whose `<label>` matches an SDP `a=label` (numeric labels compare as
    /// numbers, so `01` matches `1`).
    pub fn stream_by_label(&self, label: &str) -> Option<&StreamInfo> {
        self.streams
            .iter()
            .find(|s| s.label.as_deref().is_some_and(|l| labels_match(l, label)))
    }

    /// Whether the participant is still in the call: no `<disassociate-time>` on it, and
    /// not every one of its session associations disassociated.
    pub fn is_active(&self, p: &Participant) -> bool {
        if p.disassociate_time.is_some() {
            return false;
        }
        let mut assocs = self
            .participant_session_assocs
            .iter()
            .filter(|a| a.participant_id == p.id)
            .peekable();
        if assocs.peek().is_none() {
            return true;
        }
        assocs.any(|a| a.disassociate_time.is_none())
    }

    /// Stream ids the participant sends (from `<participant>` and `<participantstreamassoc>`).
    pub fn sends(&self, participant_id: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let inner = self
            .participant(participant_id)
            .map(|p| p.send.as_slice())
            .unwrap_or(&[]);
        let assoc = self
            .participant_stream_assocs
            .iter()
            .filter(|a| a.participant_id == participant_id && a.disassociate_time.is_none())
            .flat_map(|a| a.send.iter());
        for s in inner.iter().chain(assoc) {
            if !s.is_empty() && !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }

    /// Participants that send the stream, in document order, active ones first.
    pub fn senders_of(&self, stream_id: &str) -> Vec<&Participant> {
        if stream_id.is_empty() {
            return Vec::new();
        }
        let mut all: Vec<&Participant> = self
            .participants
            .iter()
            .filter(|p| self.sends(&p.id).contains(&stream_id))
            .collect();
        all.sort_by_key(|p| !self.is_active(p)); // stable: keeps document order
        all
    }
}

/// How a channel got its participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingSource {
    /// m-line label → `<stream>` → the participant that sends it.
    Metadata,
    /// Metadata did not say (no label match, no stream association): the m-line was paired
    /// with the next unassigned participant in document order. Best effort — log it.
    /// `participant_id` is `None` if there were no participants left.
    MlineOrderFallback,
}

/// Which participant is heard on one offered m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAssignment {
    /// m-line index in the offer.
    pub mline: usize,
    /// The m-line's `a=label`.
    pub label: Option<String>,
    /// The `<stream>` id whose label matched.
    pub stream_id: Option<String>,
    /// The participant heard on this m-line.
    pub participant_id: Option<String>,
    /// Their first display name.
    pub participant_name: Option<String>,
    /// Their first address of record.
    pub participant_aor: Option<String>,
    /// How this was decided.
    pub source: MappingSource,
}

/// Map offered m-lines (their `a=label`s, in order) to participants.
///
/// label → `<stream>` with that label → the participant that sends that stream (if
/// several send a mixed stream, the first active one in document order). m-lines the
/// metadata cannot resolve are paired, in order, with the participants not already
/// assigned (m-line order ↔ participant order) and marked
/// [`MappingSource::MlineOrderFallback`].
pub fn channel_map(meta: &RecordingMetadata, labels: &[Option<String>]) -> Vec<ChannelAssignment> {
    let mut out: Vec<ChannelAssignment> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let stream = label.as_deref().and_then(|l| meta.stream_by_label(l));
            let stream_id = stream.map(|s| s.id.clone()).filter(|s| !s.is_empty());
            let sender = stream_id
                .as_deref()
                .and_then(|sid| meta.senders_of(sid).into_iter().next());
            ChannelAssignment {
                mline: i,
                label: label.clone(),
                stream_id,
                participant_id: sender.map(|p| p.id.clone()),
                participant_name: sender.and_then(|p| p.names.first().cloned()),
                participant_aor: sender.and_then(|p| p.aors.first().cloned()),
                source: if sender.is_some() {
                    MappingSource::Metadata
                } else {
                    MappingSource::MlineOrderFallback
                },
            }
        })
        .collect();

    let assigned: HashSet<String> = out
        .iter()
        .filter_map(|a| a.participant_id.clone())
        .collect();
    let mut remaining = meta
        .participants
        .iter()
        .filter(|p| meta.is_active(p) && !assigned.contains(&p.id));
    for a in out
        .iter_mut()
        .filter(|a| a.source == MappingSource::MlineOrderFallback)
    {
        if let Some(p) = remaining.next() {
            a.participant_id = Some(p.id.clone());
            a.participant_name = p.names.first().cloned();
            a.participant_aor = p.aors.first().cloned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <group group_id="G1"><associate-time>2010-12-16T23:41:07Z</associate-time></group>
  <session session_id="S1">
    <sipSessionID>ab30317f;
          remote=47755a9d</sipSessionID>
    <group-ref>G1
    </group-ref>
  </session>
  <participant participant_id="P+A==">
    <nameID aor="sip:alice@atlanta.com"><name xml:lang="it">Alice</name></nameID>
  </participant>
  <participant participant_id="P/B==">
    <nameID aor="sip:bob@biloxy.com"><name>Bob</name></nameID>
  </participant>
  <stream stream_id="A1" session_id="S1"><label>96</label></stream>
  <stream stream_id="B1" session_id="S1"><label>98</label></stream>
  <participantsessionassoc participant_id="P+A==" session_id="S1"/>
  <participantstreamassoc participant_id="P+A=="><send>A1</send><recv>B1</recv></participantstreamassoc>
  <participantstreamassoc participant_id="P/B=="><send>B1</send><recv>A1</recv></participantstreamassoc>
</recording>"#;

    #[test]
    fn parses_rfc7865_document() {
        let m = parse(RFC.as_bytes()).unwrap();
        assert_eq!(m.namespace, Namespace::Rfc7865);
        assert_eq!(m.data_mode, Some(DataMode::Complete));
        assert_eq!(m.groups[0].id, "G1");
        assert_eq!(m.sessions[0].group_ref.as_deref(), Some("G1"));
        assert_eq!(
            m.sessions[0].sip_session_ids,
            vec!["ab30317f;remote=47755a9d"]
        );
        assert_eq!(m.participants.len(), 2);
        assert_eq!(m.participants[0].id, "P+A==");
        assert_eq!(m.participants[0].aors, vec!["sip:alice@atlanta.com"]);
        assert_eq!(m.participants[0].names, vec!["Alice"]);
        assert_eq!(m.streams[1].label.as_deref(), Some("98"));
        assert_eq!(m.participant_stream_assocs[1].send, vec!["B1"]);
        assert_eq!(m.sends("P+A=="), vec!["A1"]);
    }

    #[test]
    fn channel_map_by_metadata() {
        let m = parse(RFC.as_bytes()).unwrap();
        let map = channel_map(&m, &[Some("98".into()), Some("96".into())]);
        assert_eq!(
            map[0].participant_aor.as_deref(),
            Some("sip:bob@biloxy.com")
        );
        assert_eq!(map[0].stream_id.as_deref(), Some("B1"));
        assert_eq!(map[0].source, MappingSource::Metadata);
        assert_eq!(map[1].participant_name.as_deref(), Some("Alice"));
        assert_eq!(map[1].source, MappingSource::Metadata);
    }

    #[test]
    fn channel_map_fallback_when_labels_do_not_match() {
        let m = parse(RFC.as_bytes()).unwrap();
        let map = channel_map(&m, &[Some("x".into()), None, Some("y".into())]);
        assert!(map
            .iter()
            .all(|a| a.source == MappingSource::MlineOrderFallback));
        assert_eq!(map[0].participant_id.as_deref(), Some("P+A=="));
        assert_eq!(map[1].participant_id.as_deref(), Some("P/B=="));
        assert_eq!(map[2].participant_id, None);
        assert_eq!(map[0].stream_id, None);
    }

    #[test]
    fn old_draft_and_broadworks_dialects() {
        let old = r#"<tns:recording xmlns:tns='urn:ietf:params:xml:ns:recording' id="R1">
          <tns:dataMode>partial</tns:dataMode>
          <tns:participant id="p1" session="s"><tns:aor>sip:a@x</tns:aor><tns:name>a </tns:name>
             <tns:send>st1</tns:send><tns:start-time>t0</tns:start-time></tns:participant>
          <tns:stream id="st1" session="s"><tns:label>01</tns:label></tns:stream>
        </tns:recording>"#;
        let m = parse(old.as_bytes()).unwrap();
        assert_eq!(m.namespace, Namespace::OldDraft);
        assert_eq!(m.data_mode, Some(DataMode::Partial));
        assert_eq!(m.recording_id.as_deref(), Some("R1"));
        assert_eq!(m.participants[0].names, vec!["a"]);
        assert_eq!(m.participants[0].associate_time.as_deref(), Some("t0"));
        assert_eq!(m.streams[0].session_ref.as_deref(), Some("s"));
        let map = channel_map(&m, &[Some("1".into())]);
        assert_eq!(map[0].participant_id.as_deref(), Some("p1"));
        assert_eq!(map[0].source, MappingSource::Metadata);

        let bw = r#"<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
          <recording id="urn:uuid:r"/><session id="s" group="g"/>
          <participant id="p"><aor>sip:b@y</aor><send><id>urn:uuid:st</id></send></participant>
          <stream id="urn:uuid:st"><label>1</label><mode>mixed</mode></stream>
        </recording_metadata>"#;
        let m = parse(bw.as_bytes()).unwrap();
        assert_eq!(m.namespace, Namespace::BroadWorks);
        assert_eq!(m.recording_id.as_deref(), Some("urn:uuid:r"));
        assert_eq!(m.sessions[0].group_ref.as_deref(), Some("g"));
        assert_eq!(m.participants[0].send, vec!["urn:uuid:st"]);
        assert_eq!(m.streams[0].mode.as_deref(), Some("mixed"));
    }

    #[test]
    fn participants_nested_in_the_session_are_accepted() {
        let m = parse(
            br#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>
              <session session_id="s1"><sipSessionID>x</sipSessionID>
                <participant participant_id="pa"><nameID aor="sip:alice@x"><name>Alice</name></nameID>
                  <send>st1</send></participant>
                <participant participant_id="pb"><nameID aor="sip:bob@x"/></participant>
                <stream stream_id="st1" session_id="s1"><label>1</label></stream>
              </session></recording>"#,
        )
        .unwrap();
        assert_eq!(m.sessions.len(), 1);
        let aors: Vec<&str> = m.participants.iter().map(|p| p.aors[0].as_str()).collect();
        assert_eq!(aors, ["sip:alice@x", "sip:bob@x"]);
        assert_eq!(m.streams.len(), 1);
        assert_eq!(m.senders_of("st1")[0].id, "pa");
        assert_eq!(
            unusable_reason(
                b"<recording><session session_id='s'><participant id='p'/></session></recording>"
            ),
            None
        );
    }

    #[test]
    fn documents_that_yield_nothing_are_unusable() {
        assert!(unusable_reason(
            b"<recording><datamode>complete</datamode><session session_id='s'/></recording>"
        )
        .is_some());
        assert!(unusable_reason(b"not xml").is_some());
        // A partial update may legitimately name nobody.
        assert_eq!(
            unusable_reason(b"<recording><datamode>partial</datamode></recording>"),
            None
        );
        assert!(looks_like_metadata(
            b"<?xml version='1.0'?>\r\n<!-- c --><recording xmlns='x'>"
        ));
        assert!(looks_like_metadata(b"<rs:recording xmlns:rs='x'/>"));
        assert!(!looks_like_metadata(
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"
        ));
        assert!(!looks_like_metadata(b"v=0\r\n"));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(parse(b"  \n"), Err(MetadataError::Empty));
        assert!(matches!(
            parse(b"<recording><a></b></recording>"),
            Err(MetadataError::Xml(_))
        ));
        assert!(matches!(
            parse(b"<recording><participant id='x'>"),
            Err(MetadataError::Xml(_))
        ));
        assert_eq!(
            parse(b"<html/>"),
            Err(MetadataError::UnexpectedRoot("html".into()))
        );
        assert_eq!(
            parse(b"<recording_metadata xmlns='urn:ietf:params:xml:ns:siprec'>completeSRC</recording_metadata>"),
            Err(MetadataError::NoElements)
        );
        assert_eq!(parse(&[0xff, 0xfe, 0x00]), Err(MetadataError::Encoding));
        assert!(matches!(
            parse(b"<!DOCTYPE r [<!ENTITY a 'aaaa'>]><recording>&a;</recording>"),
            Err(MetadataError::Xml(_))
        ));
        let big = vec![b' '; MAX_METADATA_BYTES + 1];
        assert_eq!(
            parse(&big),
            Err(MetadataError::TooLarge(MAX_METADATA_BYTES + 1))
        );
    }

    #[test]
    fn leading_whitespace_and_bom_are_tolerated() {
        let m = parse("\u{feff}   \n  <?xml version='1.0'?><recording/>".as_bytes()).unwrap();
        assert_eq!(m.namespace, Namespace::Other(String::new()));
        assert!(m.participants.is_empty());
    }

    #[test]
    fn merge_partial_and_complete() {
        let mut m = parse(RFC.as_bytes()).unwrap();
        let upd = parse(br#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
          <datamode>partial</datamode>
          <participant participant_id="P3"><nameID aor="sip:carol@c"/></participant>
          <stream stream_id="C1" session_id="S1"><label>100</label></stream>
          <participantsessionassoc participant_id="P/B==" session_id="S1"><disassociate-time>t9</disassociate-time></participantsessionassoc>
          <participantstreamassoc participant_id="P+A=="><recv>B1</recv></participantstreamassoc>
          <participantstreamassoc participant_id="P3"><send>C1</send></participantstreamassoc>
        </recording>"#).unwrap();
        m.merge(upd);
        assert_eq!(
            m.data_mode,
            Some(DataMode::Complete),
            "state keeps its mode"
        );
        assert_eq!(m.participants.len(), 3);
        assert_eq!(m.streams.len(), 3);
        assert!(m.sends("P+A==").is_empty(), "Alice's send set was replaced");
        assert_eq!(m.sends("P3"), vec!["C1"]);
        let bob = m.participant("P/B==").unwrap().clone();
        assert!(!m.is_active(&bob));
        let alice = m.participant("P+A==").unwrap().clone();
        assert!(m.is_active(&alice));
        // Alice's stream now has no sender → fallback pairs it with the next unassigned
        // active participant (Alice; Bob has left, Carol is mapped by metadata).
        let map = channel_map(&m, &[Some("96".into()), Some("100".into())]);
        assert_eq!(map[0].source, MappingSource::MlineOrderFallback);
        assert_eq!(map[0].participant_id.as_deref(), Some("P+A=="));
        assert_eq!(map[1].participant_aor.as_deref(), Some("sip:carol@c"));
        assert_eq!(map[1].source, MappingSource::Metadata);

        // A complete snapshot replaces everything.
        m.merge(parse(b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode><participant participant_id='Z'/></recording>").unwrap());
        assert_eq!(m.participants.len(), 1);
        assert!(m.streams.is_empty());
    }

    #[test]
    fn mixed_stream_prefers_active_sender() {
        let m = parse(
            br#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
          <participant participant_id="a"><disassociate-time>t</disassociate-time></participant>
          <participant participant_id="b"/>
          <stream stream_id="s"><label>1</label></stream>
          <participantstreamassoc participant_id="a"><send>s</send></participantstreamassoc>
          <participantstreamassoc participant_id="b"><send>s</send></participantstreamassoc>
        </recording>"#,
        )
        .unwrap();
        let map = channel_map(&m, &[Some("1".into())]);
        assert_eq!(map[0].participant_id.as_deref(), Some("b"));
    }

    #[test]
    fn every_name_id_of_a_participant_is_kept_first_is_primary() {
        let m = parse(
            br#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
          <participant participant_id="P1">
            <nameID aor="sip:alice@atlanta.com"><name>Alice</name></nameID>
            <nameID aor="tel:+15551234"><name>Alice Smith</name></nameID>
            <aor>sip:a@pbx</aor>
          </participant>
          <stream stream_id="S1" session_id="s"><label>1</label></stream>
          <participantstreamassoc participant_id="P1"><send>S1</send></participantstreamassoc>
        </recording>"#,
        )
        .unwrap();
        let p = &m.participants[0];
        assert_eq!(
            p.aors,
            ["sip:alice@atlanta.com", "tel:+15551234", "sip:a@pbx"]
        );
        assert_eq!(p.names, ["Alice", "Alice Smith"]);
        let map = channel_map(&m, &[Some("1".into())]);
        assert_eq!(
            map[0].participant_aor.as_deref(),
            Some("sip:alice@atlanta.com")
        );
        assert_eq!(map[0].participant_name.as_deref(), Some("Alice"));
    }
}
