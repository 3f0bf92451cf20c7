//! RFC 4733 telephone-event (DTMF) decoding.
//!
//! A DTMF digit is carried as a series of RTP packets that all carry the RTP timestamp
//! of the event's start, with a growing duration, and ends with (usually three)
//! redundant packets with the E bit set. [`DtmfDecoder`] turns that series into one
//! [`DtmfEvent`] per digit, de-duplicating the redundant end packets, merging
//! long-duration segments (RFC 4733 §2.5.1.3) and still reporting an event whose end
//! packets were all lost (when the next event starts, or on [`DtmfDecoder::flush`]).

use thiserror::Error;

use crate::time::Mono;

/// One DTMF digit on the call timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// '0'..='9', '*', '#', 'A'..='D'.
    pub digit: char,
    /// Start of the event on the call timeline (origin: the call start), in whole
    /// milliseconds.
    pub start: Mono,
    /// Duration of the event in milliseconds.
    pub duration_ms: u32,
    /// Volume in -dBm0 (0..=63; larger is quieter).
    pub volume: u8,
}

/// One telephone-event payload block (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0..=15 are the DTMF digits).
    pub event: u8,
    /// The E (end) bit.
    pub end: bool,
    /// Volume in -dBm0.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

/// Why a telephone-event payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DtmfError {
    /// Shorter than the 4-byte event block.
    #[error("telephone-event payload too short ({0} bytes)")]
    TooShort(usize),
}

/// Parse the first event block of a telephone-event payload.
pub fn parse_event(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
    match payload {
        [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
            event: *event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([*d0, *d1]),
        }),
        _ => Err(DtmfError::TooShort(payload.len())),
    }
}

/// Map an RFC 4733 event code to its DTMF digit (None for non-DTMF events).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    /// RTP timestamp of the current segment.
    seg_ts: u32,
    /// Longest duration seen for the current segment (RTP units).
    seg_duration: u32,
    /// Duration of earlier, completed segments of the same event (RTP units).
    prior_duration: u64,
    event: u8,
    volume: u8,
    start: Mono,
    clock: u32,
}

/// Per-stream telephone-event state machine.
#[derive(Debug, Default, Clone)]
pub struct DtmfDecoder {
    current: Option<Current>,
    /// RTP timestamp of the last completed event: its redundant end packets are ignored.
    last_done_ts: Option<u32>,
}

impl DtmfDecoder {
    /// A decoder with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one telephone-event packet. `rtp_ts` is the packet's RTP timestamp,
    /// `start` where that timestamp lies on the call timeline, `clock` the payload
    /// type's clock rate. Completed events are appended to `out`.
    pub fn push(
        &mut self,
        rtp_ts: u32,
        payload: &[u8],
        start: Mono,
        clock: u32,
        out: &mut Vec<DtmfEvent>,
    ) -> Result<(), DtmfError> {
        let ev = parse_event(payload)?;
        if event_to_digit(ev.event).is_none() {
            return Ok(());
        }
        if self.last_done_ts == Some(rtp_ts) {
            // Redundant end packet (or a late packet) of an event already reported.
            return Ok(());
        }
        let clock = clock.max(1);
        match &mut self.current {
            Some(cur) if cur.seg_ts == rtp_ts => {
                cur.seg_duration = cur.seg_duration.max(u32::from(ev.duration));
                cur.volume = ev.volume;
            }
            Some(cur)
                if cur.event == ev.event
                    && rtp_ts == cur.seg_ts.wrapping_add(cur.seg_duration)
                    && cur.seg_duration >= 0xffff - u32::from(u16::MAX / 8) =>
            {
                // Long-duration event continued in a new segment (RFC 4733 §2.5.1.3).
                cur.prior_duration += u64::from(cur.seg_duration);
                cur.seg_ts = rtp_ts;
                cur.seg_duration = u32::from(ev.duration);
                cur.volume = ev.volume;
            }
            _ => {
                // A different event starts: report the previous one even though its end
                // packets never arrived.
                self.flush(out);
                self.current = Some(Current {
                    seg_ts: rtp_ts,
                    seg_duration: u32::from(ev.duration),
                    prior_duration: 0,
                    event: ev.event,
                    volume: ev.volume,
                    start,
                    clock,
                });
            }
        }
        if ev.end {
            if let Some(cur) = self.current.take() {
                self.last_done_ts = Some(cur.seg_ts);
                out.extend(Self::finish_event(&cur));
            }
        }
        Ok(())
    }

    /// Report the event in progress, if any (its end packets were lost or the stream ended).
    pub fn flush(&mut self, out: &mut Vec<DtmfEvent>) {
        if let Some(cur) = self.current.take() {
            self.last_done_ts = Some(cur.seg_ts);
            out.extend(Self::finish_event(&cur));
        }
    }

    /// Forget all state (new SSRC).
    pub fn reset(&mut self, out: &mut Vec<DtmfEvent>) {
        self.flush(out);
        self.last_done_ts = None;
    }

    fn finish_event(cur: &Current) -> Option<DtmfEvent> {
        let units = cur.prior_duration + u64::from(cur.seg_duration);
        let ms = units * 1000 / u64::from(cur.clock);
        Some(DtmfEvent {
            digit: event_to_digit(cur.event)?,
            start: cur.start,
            duration_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            volume: cur.volume,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pl(event: u8, end: bool, vol: u8, dur: u16) -> [u8; 4] {
        let d = dur.to_be_bytes();
        [event, if end { 0x80 } else { 0 } | vol, d[0], d[1]]
    }

    #[test]
    fn digits() {
        let s: String = (0..16).filter_map(event_to_digit).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn one_event_with_redundant_ends() {
        let mut d = DtmfDecoder::new();
        let mut out = Vec::new();
        for dur in [160u16, 320, 480, 640] {
            d.push(
                1000,
                &pl(5, false, 10, dur),
                Mono::from_millis(250),
                8000,
                &mut out,
            )
            .unwrap();
        }
        assert!(out.is_empty());
        for _ in 0..3 {
            d.push(
                1000,
                &pl(5, true, 10, 800),
                Mono::from_millis(250),
                8000,
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(
            out,
            vec![DtmfEvent {
                digit: '5',
                start: Mono::from_millis(250),
                duration_ms: 100,
                volume: 10
            }]
        );
        // A second digit with the same code but a new timestamp is a new event.
        d.push(
            5000,
            &pl(5, true, 7, 400),
            Mono::from_millis(700),
            8000,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].start, Mono::from_millis(700));
        assert_eq!(out[1].duration_ms, 50);
    }

    #[test]
    fn lost_end_reported_on_next_event_and_flush() {
        let mut d = DtmfDecoder::new();
        let mut out = Vec::new();
        d.push(100, &pl(1, false, 10, 320), Mono::ZERO, 8000, &mut out)
            .unwrap();
        d.push(
            4000,
            &pl(11, false, 10, 160),
            Mono::from_millis(490),
            8000,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].digit, '1');
        assert_eq!(out[0].duration_ms, 40);
        d.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].digit, '#');
        // Late non-end packet of the flushed event is ignored.
        d.push(
            4000,
            &pl(11, false, 10, 160),
            Mono::from_millis(490),
            8000,
            &mut out,
        )
        .unwrap();
        d.flush(&mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn short_payload_is_error() {
        let mut d = DtmfDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            d.push(1, &[1, 2, 3], Mono::ZERO, 8000, &mut out),
            Err(DtmfError::TooShort(3))
        );
    }

    #[test]
    fn long_event_segments_merge() {
        let mut d = DtmfDecoder::new();
        let mut out = Vec::new();
        d.push(0, &pl(9, false, 5, 0xffff), Mono::ZERO, 8000, &mut out)
            .unwrap();
        d.push(0xffff, &pl(9, true, 5, 8000), Mono::ZERO, 8000, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].duration_ms, ((0xffff + 8000) * 1000 / 8000) as u32);
    }
}
