//! The one schema of a recording's per-channel statistics (`recordings.stats_json`, an
//! array of [`ChannelStats`], documented in `docs/catalog-schema.md`).
//!
//! Every stats-producing path — SIPREC calls, mirror capture and pcap import, SRTP and
//! plain RTP, every codec — ends in [`Recording::finish`](super::Recording::finish),
//! which builds exactly one [`ChannelStats`] per channel: the same keys every time (SRTP
//! counters are 0 and `srtp_suite` is `null` on plain RTP channels), nothing else in the
//! array.

use crate::media::{SrtpChannel, StreamStats};

/// Statistics of one recorded channel at the end of the recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelStats {
    /// Channel index (0-based, the order of the recording's channels).
    pub channel: u32,
    /// Valid RTP packets that reached the timeline (not duplicates; includes late and
    /// unsupported ones). Packets dropped while paused are not counted here.
    pub received: u64,
    /// Sequence numbers expected but never seen. Packets dropped on purpose while the
    /// recording was paused are *seen*: they are `dropped_while_paused`, never `lost`.
    pub lost: u64,
    /// Packets whose slots were already written, or stragglers of a previous SSRC.
    pub late: u64,
    /// Packets with a sequence number already received.
    pub duplicates: u64,
    /// Times the SSRC changed.
    pub ssrc_changes: u64,
    /// Packets whose payload type is not negotiated or not decodable.
    pub unsupported_payload: u64,
    /// Lost packets rebuilt from in-band FEC (Opus).
    pub fec_recovered: u64,
    /// Milliseconds synthesised by loss concealment / comfort noise.
    pub concealed_ms: u64,
    /// Payloads the codec rejected (stored as silence).
    pub decode_errors: u64,
    /// Times the stream switched codec.
    pub codec_changes: u64,
    /// RTP packets that arrived while the recording was paused (RFC 7866 pause, an
    /// initial `inactive` offer, `recordings pause`) and were dropped unstored.
    pub dropped_while_paused: u64,
    /// RTP/RTCP datagrams dropped before SRTP and the timeline because they came from a
    /// source the stream is not bound to (`media::source`: not the SDP address).
    pub rtp_foreign_source: u64,
    /// SRTP suite in use (SDP name); `null` for plain RTP.
    pub srtp_suite: Option<String>,
    /// SRTP packets authenticated and decrypted.
    pub srtp_ok: u64,
    /// SRTP packets failing authentication.
    pub srtp_auth_fail: u64,
    /// SRTP replays dropped.
    pub srtp_replay: u64,
    /// Packets dropped because their master key's lifetime was over.
    pub srtp_key_expired: u64,
    /// Packets whose MKI named no key.
    pub srtp_unknown_mki: u64,
    /// Malformed SRTP/SRTCP packets.
    pub srtp_malformed: u64,
    /// SRTCP packets authenticated.
    pub srtcp_ok: u64,
    /// SRTCP packets failing authentication.
    pub srtcp_auth_fail: u64,
    /// SRTCP replays dropped.
    pub srtcp_replay: u64,
    /// Packets the previous keys accepted during a re-key grace period.
    pub srtp_old_key_after_rekey: u64,
    /// Intervals the disk could not take the audio (write failures, full disk), stored
    /// as marked silence (`storage_gap` events). Recording-wide: the same on every channel.
    pub storage_gaps: u64,
    /// Their total length, ms. Recording-wide, like `storage_gaps`.
    pub storage_gap_ms: u64,
    /// Stretches of the channel without its sender's audio although its packets came
    /// (`media_gap` events: forward re-anchor, late, overflow, rewind, truncated); not
    /// loss.
    pub media_gaps: u64,
    /// Milliseconds of silence the recorder inserted in them (re-anchor, late,
    /// overflow): audio not from the sender, distinct from `concealed_ms`.
    pub media_gap_ms: u64,
    /// Milliseconds of received audio not stored and not marked by silence: replaced by
    /// later audio after a backward re-anchor (`rewind` gaps, at most) or placed past the
    /// recording's end (`truncated`).
    pub media_dropped_ms: u64,
}

impl ChannelStats {
    /// The statistics of `channel` from its timeline counters, its SRTP state and the
    /// packets the pause gate dropped.
    pub fn new(
        channel: usize,
        s: &StreamStats,
        srtp: Option<&SrtpChannel>,
        dropped_while_paused: u64,
    ) -> Self {
        let mut st = ChannelStats {
            channel: u32::try_from(channel).unwrap_or(u32::MAX),
            received: s.received,
            lost: s.lost,
            late: s.late,
            duplicates: s.duplicates,
            ssrc_changes: s.ssrc_changes,
            unsupported_payload: s.unsupported_payload,
            fec_recovered: s.fec_recovered,
            concealed_ms: s.concealed_ms,
            decode_errors: s.decode_errors,
            codec_changes: s.codec_changes,
            dropped_while_paused,
            media_gaps: s.gaps,
            media_gap_ms: s.gap_ms,
            media_dropped_ms: s.dropped_ms,
            ..ChannelStats::default()
        };
        if let Some(c) = srtp.filter(|c| c.suite().is_some()) {
            let x = c.stats();
            st.srtp_suite = c.suite().map(|s| s.sdp_name().to_string());
            st.srtp_ok = x.rtp_ok;
            st.srtp_auth_fail = x.rtp_auth_fail;
            st.srtp_replay = x.rtp_replay;
            st.srtp_key_expired = x.key_expired;
            st.srtp_unknown_mki = x.unknown_mki;
            st.srtp_malformed = x.malformed;
            st.srtcp_ok = x.rtcp_ok;
            st.srtcp_auth_fail = x.rtcp_auth_fail;
            st.srtcp_replay = x.rtcp_replay;
            st.srtp_old_key_after_rekey = c.rescued();
        }
        st
    }

    /// The JSON array stored in `recordings.stats_json`.
    pub fn to_json(all: &[ChannelStats]) -> serde_json::Value {
        serde_json::to_value(all).unwrap_or_default()
    }

    /// Parse a stored `stats_json` array strictly: every key of the schema present
    /// (`deny_unknown_fields` rejects extra ones) — what a consumer and the schema test
    /// rely on.
    pub fn parse_all(v: &serde_json::Value) -> Result<Vec<ChannelStats>, serde_json::Error> {
        use serde::de::Error;
        let keys = ChannelStats::keys();
        for (i, e) in v.as_array().into_iter().flatten().enumerate() {
            let o = e
                .as_object()
                .ok_or_else(|| Error::custom(format!("stats[{i}] is not an object")))?;
            if let Some(k) = keys.iter().find(|k| !o.contains_key(k.as_str())) {
                return Err(Error::custom(format!("stats[{i}] lacks `{k}`")));
            }
        }
        serde_json::from_value(v.clone())
    }

    /// The key names of the schema, in order (for docs and tests).
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(ChannelStats::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}
