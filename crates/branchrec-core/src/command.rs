//! Commands to boxes (issue #14): signed command documents that headquarters writes under
//! `_commands/<box>/<seq>.json` and the box polls, and the signed acknowledgements the box
//! writes back under `_acks/<box>/<seq>.json`. Sans-IO: parsing, the canonical bytes that
//! are signed, and the sequence state machine ([`SequenceState::check`]). Signatures are
//! Ed25519 (the algorithm of the box's manifests); this crate does not do the curve
//! arithmetic: the caller passes a verifier (`ed25519-dalek` in the daemon and in
//! `branchrec-central`).
//!
//! Canonical bytes: the format name, then every field as `name=<decimal length>:<bytes>\n`
//! in a fixed order (lists as `name.count=` then each item). Length prefixes make the
//! encoding injective without escaping; the JSON around it may be reformatted freely.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Format name of a command document (also the first line of its canonical bytes).
pub const COMMAND_FORMAT: &str = "branchrec-command-1";
/// Format name of an acknowledgement.
pub const ACK_FORMAT: &str = "branchrec-ack-1";
/// Largest command or ack document accepted, bytes.
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Most recordings one hold command names.
pub const MAX_RECORDINGS: usize = 10_000;

/// Object key prefix of a box's commands: `<prefix>_commands/<box>/`.
pub fn commands_prefix(prefix: &str, box_id: &str) -> String {
    format!("{prefix}_commands/{box_id}/")
}

/// Object key prefix of a box's acknowledgements: `<prefix>_acks/<box>/`.
pub fn acks_prefix(prefix: &str, box_id: &str) -> String {
    format!("{prefix}_acks/{box_id}/")
}

/// The object name of sequence number `seq` (zero-padded to 10 digits so that listings
/// sort in order): `0000000042.json`.
pub fn seq_name(seq: u64) -> String {
    format!("{seq:010}.json")
}

/// The sequence number of an object key ending in `<digits>.json`, if it does.
pub fn seq_of_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let digits = name.strip_suffix(".json")?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a document is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// Not JSON of the expected shape.
    #[error("not a command document: {0}")]
    Json(String),
    /// Too large.
    #[error("document of {0} bytes exceeds {MAX_DOCUMENT}")]
    TooLarge(usize),
    /// Another format.
    #[error("format {0:?} is not {COMMAND_FORMAT:?}")]
    Format(String),
    /// A field out of range.
    #[error("field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signature is not 64 bytes of base64.
    #[error("signature is not 64 bytes of base64")]
    SignatureEncoding,
}

/// What a command asks the box to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Place a legal hold for `case` on these recordings and/or participant pattern.
    HoldAdd {
        /// Case id.
        case: String,
        /// Why.
        reason: String,
        /// Recording ids.
        #[serde(default)]
        recordings: Vec<String>,
        /// A participant number/AoR pattern (`*`, `?`), held by the box as such.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant: Option<String>,
    },
    /// Release the holds the box placed for `case`.
    HoldRelease {
        /// Case id.
        case: String,
        /// Why.
        reason: String,
    },
    /// Erase one recording (crypto-shred, tombstone); refused under hold.
    Erase {
        /// Recording id.
        recording: String,
        /// Why (request reference).
        reason: String,
    },
    /// Wrap new recordings to another compliance public key.
    RotateComplianceKey {
        /// The new key id.
        key_id: String,
        /// The new public key (PEM, P-256 SubjectPublicKeyInfo).
        public_key_pem: String,
    },
}

impl Action {
    /// Short name (`hold_add`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Action::HoldAdd { .. } => "hold_add",
            Action::HoldRelease { .. } => "hold_release",
            Action::Erase { .. } => "erase",
            Action::RotateComplianceKey { .. } => "rotate_compliance_key",
        }
    }
}

/// The signed part of a command document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// [`COMMAND_FORMAT`].
    pub format: String,
    /// The box this command is for.
    pub box_id: String,
    /// Sequence number, per box, from 1.
    pub seq: u64,
    /// When central issued it, Unix ms.
    pub issued_at_ms: i64,
    /// The central operator (login name at headquarters).
    pub operator: String,
    /// Id of the command key that signed it (`ed1:` + 16 hex of SHA-256 of the key).
    pub key_id: String,
    /// What to do.
    pub action: Action,
}

/// A command document as stored: the command and its Ed25519 signature (base64) over
/// [`Command::canonical_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    /// The command.
    #[serde(flatten)]
    pub command: Command,
    /// Ed25519 signature, base64.
    pub signature: String,
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn text(field: &'static str, v: &str, max: usize, allow_empty: bool) -> Result<(), CommandError> {
    if v.is_empty() && !allow_empty {
        return Err(CommandError::Field {
            field,
            reason: "empty".into(),
        });
    }
    if v.len() > max {
        return Err(CommandError::Field {
            field,
            reason: format!("longer than {max} bytes"),
        });
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CommandError::Field {
            field,
            reason: "control characters".into(),
        });
    }
    Ok(())
}

/// A box id, recording id or case id: 1–128 of `A-Za-z0-9._:-`.
fn ident(field: &'static str, v: &str) -> Result<(), CommandError> {
    if v.is_empty()
        || v.len() > 128
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(CommandError::Field {
            field,
            reason: format!("{v:?} is not 1-128 of A-Za-z0-9._:-"),
        });
    }
    Ok(())
}

impl Command {
    /// The bytes the signature covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(256);
        o.extend_from_slice(COMMAND_FORMAT.as_bytes());
        o.push(b'\n');
        field(&mut o, "format", &self.format);
        field(&mut o, "box_id", &self.box_id);
        field(&mut o, "seq", &self.seq.to_string());
        field(&mut o, "issued_at_ms", &self.issued_at_ms.to_string());
        field(&mut o, "operator", &self.operator);
        field(&mut o, "key_id", &self.key_id);
        field(&mut o, "action", self.action.name());
        match &self.action {
            Action::HoldAdd {
                case,
                reason,
                recordings,
                participant,
            } => {
                field(&mut o, "case", case);
                field(&mut o, "reason", reason);
                field(&mut o, "recordings.count", &recordings.len().to_string());
                for r in recordings {
                    field(&mut o, "recording", r);
                }
                match participant {
                    Some(p) => field(&mut o, "participant", p),
                    None => field(&mut o, "participant.none", ""),
                }
            }
            Action::HoldRelease { case, reason } => {
                field(&mut o, "case", case);
                field(&mut o, "reason", reason);
            }
            Action::Erase { recording, reason } => {
                field(&mut o, "recording", recording);
                field(&mut o, "reason", reason);
            }
            Action::RotateComplianceKey {
                key_id,
                public_key_pem,
            } => {
                field(&mut o, "compliance_key_id", key_id);
                field(&mut o, "public_key_pem", public_key_pem);
            }
        }
        o
    }

    /// Check every field's range (independent of the signature).
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.format != COMMAND_FORMAT {
            return Err(CommandError::Format(self.format.clone()));
        }
        ident("box_id", &self.box_id)?;
        if self.seq == 0 || self.seq > 9_999_999_999 {
            return Err(CommandError::Field {
                field: "seq",
                reason: "must be 1..=9999999999".into(),
            });
        }
        if self.issued_at_ms < 0 {
            return Err(CommandError::Field {
                field: "issued_at_ms",
                reason: "negative".into(),
            });
        }
        text("operator", &self.operator, 128, false)?;
        text("key_id", &self.key_id, 64, false)?;
        match &self.action {
            Action::HoldAdd {
                case,
                reason,
                recordings,
                participant,
            } => {
                ident("case", case)?;
                text("reason", reason, 1024, false)?;
                if recordings.len() > MAX_RECORDINGS {
                    return Err(CommandError::Field {
                        field: "recordings",
                        reason: format!("more than {MAX_RECORDINGS}"),
                    });
                }
                for r in recordings {
                    ident("recordings", r)?;
                }
                if let Some(p) = participant {
                    text("participant", p, 256, false)?;
                }
                if recordings.is_empty() && participant.is_none() {
                    return Err(CommandError::Field {
                        field: "recordings",
                        reason: "a hold names recordings or a participant".into(),
                    });
                }
            }
            Action::HoldRelease { case, reason } => {
                ident("case", case)?;
                text("reason", reason, 1024, false)?;
            }
            Action::Erase { recording, reason } => {
                ident("recording", recording)?;
                text("reason", reason, 1024, false)?;
            }
            Action::RotateComplianceKey {
                key_id,
                public_key_pem,
            } => {
                if key_id.is_empty()
                    || key_id.len() > 64
                    || !key_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(CommandError::Field {
                        field: "compliance_key_id",
                        reason: "must be 1-64 of A-Za-z0-9._-".into(),
                    });
                }
                text("public_key_pem", public_key_pem, 4096, false)?;
            }
        }
        Ok(())
    }
}

impl SignedCommand {
    /// Parse and range-check a document (the signature is not checked here).
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(CommandError::TooLarge(bytes.len()));
        }
        let d: SignedCommand =
            serde_json::from_slice(bytes).map_err(|e| CommandError::Json(e.to_string()))?;
        d.command.validate()?;
        d.signature_bytes()?;
        Ok(d)
    }

    /// The raw signature.
    pub fn signature_bytes(&self) -> Result<[u8; 64], CommandError> {
        use base64::Engine as _;
        let v = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| CommandError::SignatureEncoding)?;
        v.try_into().map_err(|_| CommandError::SignatureEncoding)
    }

    /// Sign `command` with `sign` (64-byte Ed25519 signature over the canonical bytes).
    pub fn sign(command: Command, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Self {
        use base64::Engine as _;
        let sig = sign(&command.canonical_bytes());
        SignedCommand {
            command,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        }
    }

    /// The document as stored (pretty JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Why the box refused a command document (counted per kind; audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// Not a well-formed command document.
    Malformed {
        /// Why.
        reason: String,
    },
    /// The signature does not verify with the configured command key (forged, or signed
    /// by another key).
    Signature {
        /// The key id the document names.
        key_id: String,
    },
    /// For another box.
    WrongBox {
        /// The box it names.
        named: String,
    },
    /// A sequence number already applied (a replayed document).
    Replay {
        /// Its seq.
        seq: u64,
        /// The last applied.
        last_applied: u64,
    },
    /// Ahead of the next expected sequence number (reordered or a gap): not executed
    /// before its predecessors.
    OutOfOrder {
        /// Its seq.
        seq: u64,
        /// The one expected.
        expected: u64,
    },
    /// The document's seq is not the one in its object name.
    NameMismatch {
        /// Seq in the object name.
        object_seq: u64,
        /// Seq in the document.
        seq: u64,
    },
}

impl Refusal {
    /// The counter it goes to.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Malformed { .. } => "malformed",
            Refusal::Signature { .. } => "signature",
            Refusal::WrongBox { .. } => "wrong_box",
            Refusal::Replay { .. } => "replay",
            Refusal::OutOfOrder { .. } => "out_of_order",
            Refusal::NameMismatch { .. } => "name_mismatch",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed { reason } => write!(f, "malformed: {reason}"),
            Refusal::Signature { key_id } => write!(
                f,
                "signature does not verify with the configured command key (document names {key_id:?})"
            ),
            Refusal::WrongBox { named } => write!(f, "for box {named:?}, not this one"),
            Refusal::Replay { seq, last_applied } => {
                write!(f, "replay: seq {seq} but {last_applied} already applied")
            }
            Refusal::OutOfOrder { seq, expected } => {
                write!(f, "out of order: seq {seq} while {expected} is expected next")
            }
            Refusal::NameMismatch { object_seq, seq } => {
                write!(f, "object is slot {object_seq} but the document says seq {seq}")
            }
        }
    }
}

/// The box's persistent position in its command sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    /// The last applied (executed or refused by the box's own rules, and acknowledged)
    /// sequence number; 0 before the first.
    pub last_applied: u64,
}

impl SequenceState {
    /// The next sequence number the box will execute.
    pub fn expected(&self) -> u64 {
        self.last_applied.saturating_add(1)
    }

    /// Check the document found at slot `object_seq` of this box's command prefix:
    /// well-formed, signed by the command key (`verify(message, signature)`), for
    /// `own_box`, and exactly the next sequence number. `Ok` is the command to execute;
    /// the caller then [`Self::advance`]s once it is acknowledged.
    pub fn check(
        &self,
        own_box: &str,
        object_seq: u64,
        bytes: &[u8],
        verify: impl FnOnce(&[u8], &[u8; 64]) -> bool,
    ) -> Result<Command, Refusal> {
        let doc = SignedCommand::parse(bytes).map_err(|e| Refusal::Malformed {
            reason: e.to_string(),
        })?;
        let sig = doc.signature_bytes().map_err(|e| Refusal::Malformed {
            reason: e.to_string(),
        })?;
        if !verify(&doc.command.canonical_bytes(), &sig) {
            return Err(Refusal::Signature {
                key_id: doc.command.key_id,
            });
        }
        let c = doc.command;
        if c.box_id != own_box {
            return Err(Refusal::WrongBox { named: c.box_id });
        }
        if c.seq <= self.last_applied {
            return Err(Refusal::Replay {
                seq: c.seq,
                last_applied: self.last_applied,
            });
        }
        if c.seq != object_seq {
            return Err(Refusal::NameMismatch {
                object_seq,
                seq: c.seq,
            });
        }
        if c.seq != self.expected() {
            return Err(Refusal::OutOfOrder {
                seq: c.seq,
                expected: self.expected(),
            });
        }
        Ok(c)
    }

    /// Record `seq` as applied. Only the expected one moves the state.
    pub fn advance(&mut self, seq: u64) -> bool {
        if seq == self.expected() {
            self.last_applied = seq;
            true
        } else {
            false
        }
    }
}

/// What the box did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckResult {
    /// Executed.
    Applied,
    /// Recorded as the first half of a two-person action; a second operator's command
    /// carries it out.
    Requested,
    /// Refused by the box's own rules (e.g. erase under hold), or it failed.
    Refused,
}

impl AckResult {
    /// As written in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckResult::Applied => "applied",
            AckResult::Requested => "requested",
            AckResult::Refused => "refused",
        }
    }
}

/// The signed part of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// [`ACK_FORMAT`].
    pub format: String,
    /// The box.
    pub box_id: String,
    /// The command's seq.
    pub seq: u64,
    /// SHA-256 (hex) of the command document's canonical bytes.
    pub command_sha256: String,
    /// The command's action name.
    pub action: String,
    /// Outcome.
    pub result: AckResult,
    /// Human-readable detail (hold ids, the refusal).
    pub detail: String,
    /// When the box acknowledged, Unix ms.
    pub acked_at_ms: i64,
    /// Id of the box's signing key (`ed1:…`).
    pub key_id: String,
}

impl Ack {
    /// The bytes the box's signature covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(256);
        o.extend_from_slice(ACK_FORMAT.as_bytes());
        o.push(b'\n');
        field(&mut o, "format", &self.format);
        field(&mut o, "box_id", &self.box_id);
        field(&mut o, "seq", &self.seq.to_string());
        field(&mut o, "command_sha256", &self.command_sha256);
        field(&mut o, "action", &self.action);
        field(&mut o, "result", self.result.as_str());
        field(&mut o, "detail", &self.detail);
        field(&mut o, "acked_at_ms", &self.acked_at_ms.to_string());
        field(&mut o, "key_id", &self.key_id);
        o
    }
}

/// An acknowledgement as stored, with the box's Ed25519 signature (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAck {
    /// The ack.
    #[serde(flatten)]
    pub ack: Ack,
    /// Ed25519 signature, base64.
    pub signature: String,
}

impl SignedAck {
    /// Parse (the signature is checked with [`Self::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(CommandError::TooLarge(bytes.len()));
        }
        let a: SignedAck =
            serde_json::from_slice(bytes).map_err(|e| CommandError::Json(e.to_string()))?;
        if a.ack.format != ACK_FORMAT {
            return Err(CommandError::Format(a.ack.format));
        }
        Ok(a)
    }

    /// Sign `ack`.
    pub fn sign(ack: Ack, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Self {
        use base64::Engine as _;
        let sig = sign(&ack.canonical_bytes());
        SignedAck {
            ack,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        }
    }

    /// Whether the signature verifies with `verify`.
    pub fn verify(&self, verify: impl FnOnce(&[u8], &[u8; 64]) -> bool) -> bool {
        use base64::Engine as _;
        let Ok(v) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(v) else {
            return false;
        };
        verify(&self.ack.canonical_bytes(), &sig)
    }

    /// The document as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// SHA-256 (hex) of a command's canonical bytes (what an ack names).
pub fn command_sha256(c: &Command) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(c.canonical_bytes()))
}

/// The box's command counters (status document, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandCounters {
    /// Last applied sequence number.
    pub last_applied: u64,
    /// Commands executed (any result).
    pub applied: u64,
    /// Of those, refused by the box's own rules (e.g. erase under hold).
    pub refused_by_box: u64,
    /// Documents refused, by [`Refusal::kind`].
    pub refused: std::collections::BTreeMap<String, u64>,
}

impl CommandCounters {
    /// Count a refused document.
    pub fn refuse(&mut self, r: &Refusal) {
        *self.refused.entry(r.kind().to_string()).or_default() += 1;
    }
    /// Total refused documents.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: u64, box_id: &str) -> Command {
        Command {
            format: COMMAND_FORMAT.into(),
            box_id: box_id.into(),
            seq,
            issued_at_ms: 1_700_000_000_000,
            operator: "alice".into(),
            key_id: "ed1:0011223344556677".into(),
            action: Action::HoldAdd {
                case: "CASE-1".into(),
                reason: "regulator".into(),
                recordings: vec!["r1".into()],
                participant: None,
            },
        }
    }

    /// A toy "signature": the first 64 bytes of the message repeated, keyed by one byte.
    fn toy(key: u8) -> impl Fn(&[u8]) -> [u8; 64] {
        move |m: &[u8]| {
            use sha2::Digest as _;
            let mut h = sha2::Sha512::new();
            h.update([key]);
            h.update(m);
            h.finalize().into()
        }
    }

    fn verifier(key: u8) -> impl Fn(&[u8], &[u8; 64]) -> bool {
        move |m: &[u8], s: &[u8; 64]| toy(key)(m) == *s
    }

    #[test]
    fn sequence_state_machine() {
        let mut st = SequenceState::default();
        let d1 = SignedCommand::sign(cmd(1, "b1"), toy(1)).to_bytes();
        assert_eq!(st.check("b1", 1, &d1, verifier(1)).unwrap().seq, 1);
        assert!(st.advance(1));
        // The same document again (in slot 1 or copied to slot 2): replay.
        assert!(matches!(
            st.check("b1", 2, &d1, verifier(1)),
            Err(Refusal::Replay { seq: 1, .. })
        ));
        // Another key.
        let f = SignedCommand::sign(cmd(2, "b1"), toy(9)).to_bytes();
        assert!(matches!(
            st.check("b1", 2, &f, verifier(1)),
            Err(Refusal::Signature { .. })
        ));
        // Another box.
        let w = SignedCommand::sign(cmd(2, "b2"), toy(1)).to_bytes();
        assert!(matches!(
            st.check("b1", 2, &w, verifier(1)),
            Err(Refusal::WrongBox { .. })
        ));
        // Ahead.
        let a = SignedCommand::sign(cmd(3, "b1"), toy(1)).to_bytes();
        assert!(matches!(
            st.check("b1", 3, &a, verifier(1)),
            Err(Refusal::OutOfOrder {
                seq: 3,
                expected: 2
            })
        ));
        // Seq 2 placed in slot 3.
        let d2 = SignedCommand::sign(cmd(2, "b1"), toy(1)).to_bytes();
        assert!(matches!(
            st.check("b1", 3, &d2, verifier(1)),
            Err(Refusal::NameMismatch { .. })
        ));
        assert!(!st.advance(3));
        assert_eq!(st.check("b1", 2, &d2, verifier(1)).unwrap().seq, 2);
        assert!(st.advance(2));
        assert_eq!(st.check("b1", 3, &a, verifier(1)).unwrap().seq, 3);
    }

    #[test]
    fn every_signed_field_is_covered() {
        let base = cmd(5, "b1");
        let sig = SignedCommand::sign(base.clone(), toy(1));
        let mut v: serde_json::Value = serde_json::from_slice(&sig.to_bytes()).unwrap();
        for (ptr, val) in [
            ("/box_id", serde_json::json!("b2")),
            ("/seq", serde_json::json!(6)),
            ("/issued_at_ms", serde_json::json!(1)),
            ("/operator", serde_json::json!("mallory")),
            ("/key_id", serde_json::json!("ed1:ffffffffffffffff")),
            ("/action/case", serde_json::json!("CASE-2")),
            ("/action/reason", serde_json::json!("x")),
            ("/action/recordings", serde_json::json!(["r2"])),
        ] {
            let orig = v.pointer(ptr).unwrap().clone();
            *v.pointer_mut(ptr).unwrap() = val;
            let bytes = serde_json::to_vec(&v).unwrap();
            let d = SignedCommand::parse(&bytes).unwrap();
            assert!(
                !verifier(1)(&d.command.canonical_bytes(), &d.signature_bytes().unwrap()),
                "{ptr} not covered"
            );
            *v.pointer_mut(ptr).unwrap() = orig;
        }
        // Reformatting the JSON does not matter.
        let compact = serde_json::to_vec(&v).unwrap();
        let st = SequenceState { last_applied: 4 };
        assert!(st.check("b1", 5, &compact, verifier(1)).is_ok());
    }

    #[test]
    fn malformed_documents_are_refused() {
        let st = SequenceState::default();
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"format":"x","box_id":"b","seq":1,"issued_at_ms":0,"operator":"o","key_id":"k","action":{"type":"erase","recording":"r","reason":"x"},"signature":""}"#,
        ] {
            assert!(matches!(
                st.check("b", 1, bad, |_, _| true),
                Err(Refusal::Malformed { .. })
            ));
        }
        // Unknown fields, path-like ids, empty holds.
        let mut c = cmd(1, "b1");
        c.action = Action::Erase {
            recording: "../x".into(),
            reason: "r".into(),
        };
        assert!(c.validate().is_err());
        c.action = Action::HoldAdd {
            case: "c".into(),
            reason: "r".into(),
            recordings: vec![],
            participant: None,
        };
        assert!(c.validate().is_err());
        assert_eq!(seq_of_key("p/_commands/b/0000000042.json"), Some(42));
        assert_eq!(seq_of_key("p/_commands/b/x.json"), None);
        assert_eq!(seq_name(42), "0000000042.json");
    }

    #[test]
    fn acks_sign_and_verify() {
        let a = Ack {
            format: ACK_FORMAT.into(),
            box_id: "b1".into(),
            seq: 3,
            command_sha256: command_sha256(&cmd(3, "b1")),
            action: "erase".into(),
            result: AckResult::Refused,
            detail: "under legal hold".into(),
            acked_at_ms: 5,
            key_id: "ed1:00".into(),
        };
        let s = SignedAck::sign(a, toy(2));
        let p = SignedAck::parse(&s.to_bytes()).unwrap();
        assert!(p.verify(verifier(2)));
        assert!(!p.verify(verifier(3)));
        let mut t = p.clone();
        t.ack.result = AckResult::Applied;
        assert!(!t.verify(verifier(2)));
    }
}
