//! The codec table: everything branchrec knows about an RTP payload format, in one place.
//!
//! **Adding a codec is one entry in [`CODECS`] plus its decoder** (a [`DecoderKind`]
//! variant, its module under `media/codec/` and its arm in
//! [`new_decoder`](super::new_decoder)). Everything else is derived from the table:
//!
//! - [`Codec::from_encoding_name`](crate::media::Codec::from_encoding_name) and
//!   [`DecoderKind::from_sdp`] (name and RTP clock of an `a=rtpmap`);
//! - the timeline's payload-type rules (which clock a payload type's timestamps count
//!   in, and whether this build decodes it);
//! - [`SUPPORTED_ENCODINGS`], the encodings our SDP answers keep (in table order);
//! - [`recording_rate`](super::recording_rate) (16 kHz if a wideband codec is accepted);
//! - "is this audio" ([`is_audio_encoding`]: not DTMF, not comfort noise) and what
//!   passive capture records ([`CodecSpec::captured`]);
//! - static payload types (`0` PCMU, `8` PCMA, …) used when a capture has no SDP.
//!
//! No entry needs `a=fmtp` defaults: the answer echoes the offer's `a=fmtp` of every
//! accepted format (G.729 `annexb=`, Opus `useinbandfec=`), and the decoders need none.

use super::DecoderKind;

/// What a payload format carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Voice, decoded by this decoder.
    Audio(DecoderKind),
    /// RFC 4733 telephone-event (DTMF); it uses the voice codec's RTP clock.
    TelephoneEvent,
    /// RFC 3389 comfort noise: not part of the call's audio, not recorded.
    ComfortNoise,
}

/// One codec (one row of [`CODECS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    /// SDP encoding names (`a=rtpmap`, compared case-insensitively). The first is the
    /// canonical one: what [`DecoderKind::name`] returns and what [`SUPPORTED_ENCODINGS`]
    /// lists.
    pub names: &'static [&'static str],
    /// What it carries.
    pub role: Role,
    /// The RTP clock rate the SDP must give (RFC 3551: G.722 counts 8000 although it
    /// samples at 16 kHz; RFC 7587: Opus is always 48000); `None`: any rate (DTMF follows
    /// the voice codec).
    pub clock_rate: Option<u32>,
    /// RFC 3551 static payload type, if it has one.
    pub static_pt: Option<u8>,
    /// 7 kHz (or wider) audio: a recording that accepts it is made at 16 kHz.
    pub wideband: bool,
    /// Whether this build decodes it (G.729 only with the `g729` cargo feature).
    pub available: bool,
    /// Offered formats with this encoding are kept in our SDP answers
    /// ([`SUPPORTED_ENCODINGS`], when also [`available`](Self::available)).
    pub answered: bool,
    /// Passive capture records calls that use it: every voice codec this build decodes,
    /// through the same decoders and timeline as SIPREC (issue #18).
    pub captured: bool,
}

/// Every payload format branchrec knows. See the module docs: adding a codec is one
/// entry here plus its decoder. The order is the order of [`SUPPORTED_ENCODINGS`].
pub const CODECS: &[CodecSpec] = &[
    CodecSpec {
        names: &["PCMU"],
        role: Role::Audio(DecoderKind::Pcmu),
        clock_rate: Some(8000),
        static_pt: Some(0),
        wideband: false,
        available: true,
        answered: true,
        captured: true,
    },
    CodecSpec {
        names: &["PCMA"],
        role: Role::Audio(DecoderKind::Pcma),
        clock_rate: Some(8000),
        static_pt: Some(8),
        wideband: false,
        available: true,
        answered: true,
        captured: true,
    },
    CodecSpec {
        names: &["G722"],
        role: Role::Audio(DecoderKind::G722),
        clock_rate: Some(8000),
        static_pt: Some(9),
        wideband: true,
        available: true,
        answered: true,
        captured: true,
    },
    CodecSpec {
        names: &["opus"],
        role: Role::Audio(DecoderKind::Opus),
        clock_rate: Some(48000),
        static_pt: None,
        wideband: true,
        available: true,
        answered: true,
        captured: true,
    },
    CodecSpec {
        // G.729A uses the same bitstream and decoder.
        names: &["G729", "G729A"],
        role: Role::Audio(DecoderKind::G729),
        clock_rate: Some(8000),
        static_pt: Some(18),
        wideband: false,
        available: cfg!(feature = "g729"),
        answered: true,
        captured: cfg!(feature = "g729"),
    },
    CodecSpec {
        names: &["telephone-event"],
        role: Role::TelephoneEvent,
        clock_rate: None,
        static_pt: None,
        wideband: false,
        available: true,
        answered: true,
        captured: false,
    },
    CodecSpec {
        names: &["CN"],
        role: Role::ComfortNoise,
        clock_rate: Some(8000),
        static_pt: Some(13),
        wideband: false,
        available: false,
        answered: false,
        captured: false,
    },
];

impl CodecSpec {
    /// The canonical SDP encoding name.
    pub fn name(&self) -> &'static str {
        self.names.first().copied().unwrap_or("")
    }

    /// Whether `encoding` (case-insensitive) is one of its names.
    pub fn has_name(&self, encoding: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(encoding))
    }

    /// Whether an SDP clock rate is valid for it.
    pub fn accepts_clock(&self, clock: u32) -> bool {
        match self.clock_rate {
            Some(c) => c == clock,
            None => clock > 0,
        }
    }

    /// Voice (not DTMF, not comfort noise).
    pub fn is_audio(&self) -> bool {
        matches!(self.role, Role::Audio(_))
    }

    /// The decoder, for voice codecs.
    pub fn decoder(&self) -> Option<DecoderKind> {
        match self.role {
            Role::Audio(k) => Some(k),
            _ => None,
        }
    }
}

/// The table entry for an SDP encoding name (case-insensitive), whatever its clock.
pub fn lookup(encoding: &str) -> Option<&'static CodecSpec> {
    CODECS.iter().find(|c| c.has_name(encoding))
}

/// The table entry for an `a=rtpmap` encoding name and clock rate, if the pair is valid.
pub fn lookup_sdp(encoding: &str, clock: u32) -> Option<&'static CodecSpec> {
    lookup(encoding).filter(|c| c.accepts_clock(clock))
}

/// The voice codec with this RFC 3551 static payload type, if we know one.
pub fn lookup_static_pt(pt: u8) -> Option<&'static CodecSpec> {
    CODECS
        .iter()
        .find(|c| c.is_audio() && c.static_pt == Some(pt))
}

/// Whether an encoding is the call's audio, i.e. neither telephone-event nor comfort
/// noise (encodings not in the table count as audio: a call using one is recorded as
/// unsupported, not ignored).
pub fn is_audio_encoding(encoding: &str) -> bool {
    lookup(encoding).map_or(true, CodecSpec::is_audio)
}

/// Whether passive capture records a format (a voice codec this build decodes, at the
/// RTP clock its SDP must give).
pub fn is_captured(encoding: &str, clock: u32) -> bool {
    lookup_sdp(encoding, clock).is_some_and(|c| c.captured)
}

const fn is_answered(c: &CodecSpec) -> bool {
    c.answered && c.available
}

const fn answered_count() -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < CODECS.len() {
        if is_answered(&CODECS[i]) {
            n += 1;
        }
        i += 1;
    }
    n
}

const ANSWERED: [&str; answered_count()] = {
    let mut out = [""; answered_count()];
    let mut i = 0;
    let mut n = 0;
    while i < CODECS.len() {
        if is_answered(&CODECS[i]) {
            out[n] = CODECS[i].names[0];
            n += 1;
        }
        i += 1;
    }
    out
};

/// Encodings we record and so keep in SDP answers, in table order: the canonical name of
/// every [`answered`](CodecSpec::answered) codec this build decodes (G.729 only with the
/// `g729` feature). See docs/codecs.md.
pub const SUPPORTED_ENCODINGS: &[&str] = &ANSWERED;

impl DecoderKind {
    /// Its entry in [`CODECS`] (every kind has exactly one; tested).
    pub fn spec(self) -> &'static CodecSpec {
        CODECS
            .iter()
            .find(|c| c.role == Role::Audio(self))
            .expect("every DecoderKind has a CODECS entry")
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        self.spec().name()
    }

    /// Whether the codec carries 7 kHz (or wider) audio and so asks for a 16 kHz
    /// recording.
    pub fn is_wideband(self) -> bool {
        self.spec().wideband
    }

    /// The decoder for an SDP `a=rtpmap` encoding name and clock rate, if the pair is
    /// one we decode (G.722 must use the RFC 3551 8000 Hz clock; Opus 48000).
    pub fn from_sdp(encoding: &str, clock: u32) -> Option<DecoderKind> {
        lookup_sdp(encoding, clock).and_then(CodecSpec::decoder)
    }

    /// Whether this binary can decode it.
    pub fn available(self) -> bool {
        self.spec().available
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every decoder kind; the exhaustive match makes a new variant fail to compile here
    /// until it is listed (and so checked for a table entry).
    fn all_kinds() -> Vec<DecoderKind> {
        let all = [
            DecoderKind::Pcmu,
            DecoderKind::Pcma,
            DecoderKind::G722,
            DecoderKind::Opus,
            DecoderKind::G729,
        ];
        for k in all {
            match k {
                DecoderKind::Pcmu
                | DecoderKind::Pcma
                | DecoderKind::G722
                | DecoderKind::Opus
                | DecoderKind::G729 => {}
            }
        }
        all.to_vec()
    }

    #[test]
    fn names_are_unique_and_nonempty() {
        let mut seen: Vec<String> = Vec::new();
        for c in CODECS {
            assert!(!c.names.is_empty(), "{c:?} has no name");
            for n in c.names {
                assert!(!n.is_empty() && !n.contains(char::is_whitespace), "{n:?}");
                let l = n.to_ascii_lowercase();
                assert!(!seen.contains(&l), "encoding name {n} listed twice");
                seen.push(l);
                assert_eq!(lookup(n).map(CodecSpec::name), Some(c.name()));
                assert_eq!(
                    lookup(&n.to_ascii_uppercase()).map(CodecSpec::name),
                    Some(c.name())
                );
            }
        }
        assert!(lookup("GSM").is_none());
    }

    #[test]
    fn clock_rates() {
        for c in CODECS {
            match c.role {
                // DTMF runs on the voice codec's clock (RFC 4733 §2.1).
                Role::TelephoneEvent => assert_eq!(c.clock_rate, None),
                _ => assert!(matches!(c.clock_rate, Some(r) if r >= 8000), "{c:?}"),
            }
            if let Some(r) = c.clock_rate {
                assert!(c.accepts_clock(r) && !c.accepts_clock(r + 1) && !c.accepts_clock(0));
            } else {
                assert!(c.accepts_clock(8000) && c.accepts_clock(48000) && !c.accepts_clock(0));
            }
        }
        // The RFC clocks (RFC 3551 G.722 quirk; RFC 7587 Opus).
        let clock = |k: DecoderKind| k.spec().clock_rate;
        assert_eq!(clock(DecoderKind::Pcmu), Some(8000));
        assert_eq!(clock(DecoderKind::Pcma), Some(8000));
        assert_eq!(clock(DecoderKind::G722), Some(8000));
        assert_eq!(clock(DecoderKind::Opus), Some(48000));
        assert_eq!(clock(DecoderKind::G729), Some(8000));
        assert_eq!(DecoderKind::from_sdp("G722", 16000), None);
        assert_eq!(DecoderKind::from_sdp("opus", 8000), None);
        assert_eq!(
            DecoderKind::from_sdp("OPUS", 48000),
            Some(DecoderKind::Opus)
        );
        assert_eq!(
            DecoderKind::from_sdp("g729a", 8000),
            Some(DecoderKind::G729)
        );
        assert_eq!(DecoderKind::from_sdp("telephone-event", 8000), None);
        assert_eq!(DecoderKind::from_sdp("CN", 8000), None);
    }

    #[test]
    fn every_decoder_kind_has_one_entry() {
        for k in all_kinds() {
            let n = CODECS.iter().filter(|c| c.role == Role::Audio(k)).count();
            assert_eq!(n, 1, "{k:?}");
            assert_eq!(k.spec().decoder(), Some(k));
            assert_eq!(
                DecoderKind::from_sdp(k.name(), k.spec().clock_rate.unwrap_or(0)),
                Some(k)
            );
            // A decoder that is built in constructs (or says it is not built in).
            match super::super::new_decoder(k, 16000) {
                Ok(d) => {
                    assert!(k.available(), "{k:?}");
                    assert_eq!(d.kind(), k);
                }
                Err(e) => {
                    assert!(!k.available(), "{k:?}: {e}");
                    assert!(matches!(e, super::super::CodecError::Unavailable(_)));
                }
            }
        }
        // Exactly one DTMF and one comfort-noise entry.
        assert_eq!(
            CODECS
                .iter()
                .filter(|c| c.role == Role::TelephoneEvent)
                .count(),
            1
        );
        assert_eq!(
            CODECS
                .iter()
                .filter(|c| c.role == Role::ComfortNoise)
                .count(),
            1
        );
        assert_eq!(DecoderKind::G729.available(), cfg!(feature = "g729"));
        assert!(CODECS.iter().filter(|c| c.wideband).all(|c| c.is_audio()));
        assert!(CODECS
            .iter()
            .filter(|c| c.captured)
            .all(|c| c.is_audio() && c.available));
    }

    #[test]
    fn static_payload_types() {
        let mut seen = Vec::new();
        for c in CODECS {
            let Some(pt) = c.static_pt else { continue };
            assert!(pt < 35, "{c:?}: static payload types are 0..=34");
            assert!(!seen.contains(&pt), "static payload type {pt} twice");
            seen.push(pt);
            // The SDP parser's RFC 3551 table agrees: tested in sdp::model.
        }
        assert_eq!(lookup_static_pt(0).map(CodecSpec::name), Some("PCMU"));
        assert_eq!(lookup_static_pt(18).map(CodecSpec::name), Some("G729"));
        // Comfort noise is not a voice codec.
        assert!(lookup_static_pt(13).is_none());
    }

    #[test]
    fn supported_encodings_in_table_order() {
        let want: Vec<&str> = CODECS
            .iter()
            .filter(|c| c.answered && c.available)
            .map(CodecSpec::name)
            .collect();
        assert_eq!(SUPPORTED_ENCODINGS, want.as_slice());
        if cfg!(feature = "g729") {
            assert_eq!(
                SUPPORTED_ENCODINGS,
                ["PCMU", "PCMA", "G722", "opus", "G729", "telephone-event"]
            );
        } else {
            assert_eq!(
                SUPPORTED_ENCODINGS,
                ["PCMU", "PCMA", "G722", "opus", "telephone-event"]
            );
        }
        // Everything we answer with, we can record: voice we decode, or DTMF.
        for n in SUPPORTED_ENCODINGS {
            let c = lookup(n).expect("listed");
            assert!(c.available && matches!(c.role, Role::Audio(_) | Role::TelephoneEvent));
        }
    }

    #[test]
    fn audio_and_capture_predicates() {
        assert!(is_audio_encoding("PCMU"));
        assert!(is_audio_encoding("opus"));
        assert!(is_audio_encoding("GSM"), "unknown encodings count as audio");
        assert!(!is_audio_encoding("Telephone-Event"));
        assert!(!is_audio_encoding("cn"));
        assert!(is_captured("pcmu", 8000));
        assert!(is_captured("PCMA", 8000));
        assert!(!is_captured("PCMU", 16000));
        assert!(is_captured("G722", 8000));
        assert!(is_captured("opus", 48000));
        assert!(!is_captured("opus", 8000));
        assert_eq!(is_captured("G729", 8000), cfg!(feature = "g729"));
        assert!(!is_captured("GSM", 8000));
        assert!(!is_captured("telephone-event", 8000));
    }
}
