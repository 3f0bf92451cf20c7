//! Row types and closed vocabularies of the catalogue.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::CatalogError;

/// Generates a closed string vocabulary stored as TEXT (with a CHECK constraint in SQL).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The text stored in the database and printed by the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CatalogError;
            fn from_str(s: &str) -> Result<Self, CatalogError> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(CatalogError::Invalid {
                        field: $field,
                        reason: format!("unknown value {s:?}"),
                    }),
                }
            }
        }
    };
}

vocabulary! {
    /// How the call reached the recorder.
    Source, "source" {
        /// The SBC/PBX sent a SIPREC session (RFC 7866).
        Siprec => "siprec",
        /// Passive recording of mirrored (port-mirror / SPAN) traffic.
        Mirror => "mirror",
    }
}

vocabulary! {
    /// Lifecycle state of a recording.
    RecordingState, "state" {
        /// Audio is being written; `ended_at` is null.
        Recording => "recording",
        /// The session ended normally and the file was closed and hashed.
        Complete => "complete",
        /// The recorder stopped (crash, power loss, shutdown) before the session ended;
        /// the file holds everything up to the last durable chunk.
        Interrupted => "interrupted",
        /// The file failed verification (bad chunk, truncated beyond recovery).
        Damaged => "damaged",
        /// The negotiated codec cannot be recorded; no (or no usable) audio file.
        CodecUnsupported => "codec_unsupported",
    }
}

vocabulary! {
    /// How a channel was bound to a participant.
    MappingSource, "mapping_source" {
        /// From SIPREC metadata (`participantstreamassoc` / `send`).
        Metadata => "metadata",
        /// Fallback: the order of the SDP m-lines (first m-line = channel 0).
        MlineOrder => "mline_order",
    }
}

vocabulary! {
    /// `<dataMode>` of a SIPREC metadata document (RFC 7865 §6.1).
    DataMode, "data_mode" {
        /// The document is a complete snapshot.
        Complete => "complete",
        /// The document only carries changes against the previous one.
        Partial => "partial",
    }
}

/// A recording row as created when the call starts (state `recording`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecording {
    /// Recording id (a UUID string); primary key.
    pub id: String,
    /// How the call reached the recorder.
    pub source: Source,
    /// SIP Call-ID of the recording session (SIPREC) or of the observed call (mirror).
    pub call_id: String,
    /// SIPREC session id from the metadata, if already known.
    pub session_id: Option<String>,
    /// Address of the peer (SRC or observed signalling), e.g. `192.0.2.10:5060`.
    pub src_addr: String,
    /// Start of the recording, unix milliseconds.
    pub started_at_ms: i64,
    /// Codec(s) as negotiated so far, e.g. `PCMU`, `PCMA`, `PCMU+PCMA`.
    pub codec: String,
    /// Sample rate of the stored audio in Hz.
    pub sample_rate: u32,
    /// Number of audio channels in the file.
    pub channels: u16,
    /// Audio file, relative to the data directory; `None` when no file is written.
    pub file_path: Option<String>,
    /// Id of the key-encryption key that wraps the file key; `None` when no file is written.
    pub kek_id: Option<String>,
    /// How the audio is stored: `wav` (PCM) or `opus`.
    pub storage_format: String,
}

/// How a recording ended; written once by [`Catalog::finish_recording`](super::Catalog::finish_recording).
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// End of the recording, unix milliseconds.
    pub ended_at_ms: i64,
    /// Length of the recorded audio timeline in milliseconds.
    pub duration_ms: u64,
    /// Final state; anything but [`RecordingState::Recording`].
    pub state: RecordingState,
    /// SHA-256 of the stored (encrypted) container without its key slots (see
    /// `recording::content_sha256`), 64 lowercase hex digits.
    pub file_sha256: Option<String>,
    /// Size of the stored file in bytes.
    pub file_bytes: Option<u64>,
    /// Final codec description; `None` keeps the value given at insert.
    pub codec: Option<String>,
    /// Per-stream packet statistics (free-form JSON object).
    pub stats_json: Option<serde_json::Value>,
}

/// One participant of a recorded call (from SIPREC metadata or the observed SIP dialog).
/// Participants are a history: one that a later metadata snapshot no longer lists is
/// kept, with the time it left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParticipantRow {
    /// Participant id (`participant_id`/`id` attribute, or a synthetic id for mirror calls).
    pub participant_id: String,
    /// Display name, if any.
    pub name: Option<String>,
    /// Address of record (SIP/tel URI or number), if any.
    pub aor: Option<String>,
    /// Further display names after `name` (several `<nameID>`/`<name>`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_names: Vec<String>,
    /// Further addresses of record after `aor` (several `<nameID aor=>`/`<aor>`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_aors: Vec<String>,
    /// When the participant joined the call, unix ms (`<associate-time>`, else the
    /// arrival of the first metadata version listing it); `None` = unknown.
    pub joined_at_ms: Option<i64>,
    /// When the participant left, unix ms (`<disassociate-time>`, else the arrival of the
    /// first snapshot no longer listing it); `None` = on the call until its end.
    pub left_at_ms: Option<i64>,
    /// The channel the participant was (last) heard on, if the channel map named it.
    pub channel: Option<u32>,
}

/// One audio channel of the file and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    /// Channel index in the audio file (0-based).
    pub channel: u32,
    /// Index of the SDP m-line that feeds it, if known.
    pub mline: Option<u32>,
    /// SDP `a=label` of that m-line, if any.
    pub label: Option<String>,
    /// SIPREC stream id, if any.
    pub stream_id: Option<String>,
    /// The participant whose voice this channel carries, if known.
    pub participant_id: Option<String>,
    /// How the mapping was decided.
    pub mapping_source: MappingSource,
}

/// A SIPREC metadata document as received (to be stored verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataVersion {
    /// When it was received, unix milliseconds.
    pub received_at_ms: i64,
    /// `INVITE`, `re-INVITE`, `UPDATE`, ...
    pub sip_method: String,
    /// Content-Type of the body part, e.g. `application/rs-metadata+xml`.
    pub content_type: String,
    /// `<dataMode>` if the document states one.
    pub data_mode: Option<DataMode>,
    /// The body part, byte for byte.
    pub raw: Vec<u8>,
}

/// A stored metadata document with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMetadataVersion {
    /// 1 for the first document of a recording, then 2, 3, ...
    pub seq: u32,
    /// The document and how it arrived.
    pub version: MetadataVersion,
}

/// Something that happened during the call, placed on the recording timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Offset from the start of the recording in milliseconds.
    pub at_ms: u64,
    /// `dtmf`, `hold`, `resume`, ...
    pub kind: String,
    /// The channel it concerns, if any.
    pub channel: Option<u32>,
    /// Kind-specific details (e.g. `{"digit":"5","duration_ms":120}`).
    pub detail_json: Option<serde_json::Value>,
}

/// Filter for [`Catalog::list`](super::Catalog::list). Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// At most this many rows; `None` for all.
    pub limit: Option<u32>,
    /// Only recordings in this state.
    pub state: Option<RecordingState>,
    /// Only recordings started at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only recordings started before this time (unix ms).
    pub until_ms: Option<i64>,
    /// Only recordings with a participant whose AoR or number matches this pattern
    /// (`*`, `?`; see `lifecycle::pattern`).
    pub participant: Option<String>,
    /// Only recordings with this tag.
    pub tag: Option<String>,
    /// Only recordings of this SIP Call-ID or SIPREC session id.
    pub call: Option<String>,
    /// Only held (`Some(true)`) or not held (`Some(false)`) recordings.
    pub held: Option<bool>,
    /// Only recordings with this assurance verdict.
    pub verdict: Option<String>,
    /// "Now" for holds by time window on running recordings (unix ms; 0 = system clock).
    pub now_ms: i64,
}

/// Life-cycle fields of a `recordings list` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LifecycleSummary {
    /// Rule that matched, `null` for the defaults.
    pub rule: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Retention class.
    pub retention_class: Option<String>,
    /// Expiry (RFC 3339), `null` while recording or when kept forever.
    pub expires: Option<String>,
    /// When the central archive confirmed it (RFC 3339), `null` if not yet.
    pub archived: Option<String>,
    /// Whether an active legal hold covers it.
    pub held: bool,
}

/// A participant as shown in `recordings list` / `show`: everyone who was on the call,
/// with when they joined and left (when known) and the channel they were heard on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParticipantSummary {
    /// Participant id.
    pub participant_id: String,
    /// Display name, if any.
    pub name: Option<String>,
    /// Address of record, if any.
    pub aor: Option<String>,
    /// When the participant joined (RFC 3339), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<String>,
    /// When the participant left (RFC 3339); absent = on the call until its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_at: Option<String>,
    /// The channel the participant was (last) heard on, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
}

/// A channel as shown in `recordings list`, with its participant resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    /// Channel index in the audio file.
    pub channel: u32,
    /// The participant it carries, if known.
    pub participant_id: Option<String>,
    /// That participant's display name, if known.
    pub name: Option<String>,
    /// That participant's address of record, if known.
    pub aor: Option<String>,
    /// SDP label of the m-line, if any.
    pub label: Option<String>,
    /// How the mapping was decided.
    pub mapping_source: MappingSource,
}

/// One entry of `branchrec recordings list --json`, exactly as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingSummary {
    /// Recording id.
    pub id: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// SIPREC session id, if known.
    pub session_id: Option<String>,
    /// How the call reached the recorder.
    pub source: Source,
    /// Start, RFC 3339 UTC with milliseconds (`2024-05-01T09:30:00.000Z`).
    pub start: String,
    /// End, RFC 3339 UTC; `null` while recording.
    pub end: Option<String>,
    /// Recorded duration in milliseconds; `null` while recording.
    pub duration_ms: Option<u64>,
    /// Participants, ordered by participant id.
    pub participants: Vec<ParticipantSummary>,
    /// Channels, ordered by channel index.
    pub channels: Vec<ChannelSummary>,
    /// Codec description.
    pub codec: String,
    /// How the audio is stored: `wav` (PCM) or `opus`.
    pub storage_format: String,
    /// Lifecycle state.
    pub state: RecordingState,
    /// Assurance verdict (`recorded`, `one_way`, …); `null` while recording and for
    /// recordings closed before schema 11.
    pub verdict: Option<String>,
    /// Rule, tags, retention and hold state.
    #[serde(flatten)]
    pub lifecycle: LifecycleSummary,
}

/// Every column of a `recordings` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRow {
    /// Recording id.
    pub id: String,
    /// How the call reached the recorder.
    pub source: Source,
    /// SIP Call-ID.
    pub call_id: String,
    /// SIPREC session id, if known.
    pub session_id: Option<String>,
    /// Peer address.
    pub src_addr: String,
    /// Start, unix ms.
    pub started_at_ms: i64,
    /// End, unix ms; `None` while recording.
    pub ended_at_ms: Option<i64>,
    /// Recorded duration; `None` while recording.
    pub duration_ms: Option<u64>,
    /// Codec description.
    pub codec: String,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Number of audio channels.
    pub channels: u16,
    /// Lifecycle state.
    pub state: RecordingState,
    /// Audio file relative to the data directory.
    pub file_path: Option<String>,
    /// SHA-256 of the stored file (hex).
    pub file_sha256: Option<String>,
    /// Size of the stored file.
    pub file_bytes: Option<u64>,
    /// Key-encryption key id.
    pub kek_id: Option<String>,
    /// How the audio is stored: `wav` (PCM) or `opus`.
    pub storage_format: String,
    /// Per-stream packet statistics.
    pub stats_json: Option<serde_json::Value>,
    /// When the row was inserted, unix ms.
    pub created_at_ms: i64,
    /// Assurance verdict; `None` while recording (docs/assurance.md).
    pub verdict: Option<String>,
    /// Why, the per-channel quality and the clock state (docs/catalog-schema.md).
    pub assurance_json: Option<serde_json::Value>,
}

/// Everything the catalogue knows about one recording (for `recordings show`/export).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingDetail {
    /// The `recordings` row.
    pub recording: RecordingRow,
    /// Participants, ordered by participant id.
    pub participants: Vec<ParticipantRow>,
    /// Channels, ordered by channel index.
    pub channels: Vec<ChannelRow>,
    /// Metadata documents, ordered by `seq`.
    pub metadata_versions: Vec<StoredMetadataVersion>,
    /// Events, ordered by `at_ms` then insertion order.
    pub events: Vec<EventRow>,
}
