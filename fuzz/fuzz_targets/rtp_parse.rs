//! Fuzz the RTP parser and the per-packet timeline path: no input may panic, and a
//! parsed payload must lie inside the datagram.
#![no_main]

use std::time::Duration;

use branchrec::media::{is_rtcp, parse_rtp, CallTimeline, Codec, StreamConfig, TimelineConfig};
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    if let Ok(p) = parse_rtp(data) {
        assert!(p.payload.len() + 12 <= data.len());
    }
    // Treat the input as a sequence of length-prefixed datagrams with arrival offsets.
    let mut t = CallTimeline::new(TimelineConfig {
        channels: 2,
        sample_rate: 8000,
        playout_delay: Duration::from_millis(300),
    });
    let mut cfg = StreamConfig::default();
    cfg.payload_types.push((101, Codec::TelephoneEvent, 8000));
    t.set_stream_config(0, cfg.clone());
    t.set_stream_config(1, cfg);
    let mut rest = data;
    let mut at = Mono::ZERO;
    let mut total = 0u64;
    while let [len, step, ch, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (pkt, tail) = tail.split_at(n);
        at += Duration::from_millis(u64::from(*step));
        t.push_rtp(usize::from(*ch % 3), at, pkt);
        if let Some(b) = t.poll_audio(at) {
            assert_eq!(b.start_frame, total);
            total += (b.samples.len() / 2) as u64;
        }
        rest = tail;
    }
    let end = at + Duration::from_secs(1);
    if let Some(b) = t.finish(end) {
        total += (b.samples.len() / 2) as u64;
    }
    assert_eq!(total, end.as_millis() * 8);
    let _ = t.take_dtmf();
});
