//! Fuzz the audio decoders' payload handling (G.722, Opus, G.729 with the `g729`
//! feature of the fuzz crate) and the decoded timeline path (reordering, concealment,
//! codec switches, resampling): no input may panic, and the recording length stays exact.
#![no_main]

use std::time::Duration;

use branchrec::media::codec::{new_decoder, DecoderKind};
use branchrec::media::{CallTimeline, Codec, StreamConfig, TimelineConfig};
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // 1. One decoder fed the input as payloads (length-prefixed), with concealment.
    let kind = match sel % 4 {
        0 => DecoderKind::G722,
        1 => DecoderKind::Opus,
        2 => DecoderKind::G729,
        _ => DecoderKind::Pcma,
    };
    let rate = if sel & 0x10 != 0 { 16000 } else { 8000 };
    if let Ok(mut d) = new_decoder(kind, rate) {
        let mut out = Vec::new();
        let mut r = rest;
        while let [len, tail @ ..] = r {
            let n = usize::from(*len).min(tail.len());
            let (p, tail) = tail.split_at(n);
            let _ = d.payload_samples(p);
            if len & 1 == 1 {
                let _ = d.conceal(usize::from(*len) * 7, Some(p), &mut out);
            }
            let _ = d.decode(p, &mut out);
            out.clear();
            r = tail;
        }
    }
    // 2. The timeline with all codecs negotiated: datagrams with arrival steps.
    let mut t = CallTimeline::new(TimelineConfig {
        channels: 2,
        sample_rate: rate,
        playout_delay: Duration::from_millis(300),
    });
    let cfg = StreamConfig {
        payload_types: vec![
            (0, Codec::from_encoding_name("PCMU"), 8000),
            (9, Codec::from_encoding_name("G722"), 8000),
            (18, Codec::from_encoding_name("G729"), 8000),
            (111, Codec::from_encoding_name("opus"), 48000),
            (101, Codec::TelephoneEvent, 8000),
        ],
    };
    t.set_stream_config(0, cfg.clone());
    t.set_stream_config(1, cfg);
    let mut r = rest;
    let mut at = Mono::ZERO;
    let mut total = 0u64;
    while let [len, step, ch, tail @ ..] = r {
        let n = usize::from(*len).min(tail.len());
        let (pkt, tail) = tail.split_at(n);
        at += Duration::from_millis(u64::from(*step));
        t.push_rtp(usize::from(*ch % 2), at, pkt);
        if let Some(b) = t.poll_audio(at) {
            assert_eq!(b.start_frame, total);
            total += (b.samples.len() / 2) as u64;
        }
        r = tail;
    }
    let end = at + Duration::from_secs(1);
    if let Some(b) = t.finish(end) {
        total += (b.samples.len() / 2) as u64;
    }
    assert_eq!(total, end.as_millis() * u64::from(rate) / 1000);
});
