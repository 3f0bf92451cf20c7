//! The timeline's decoded path: wideband codecs, resampling, codec switches with RTP
//! clock changes, reordering in front of stateful decoders, Opus FEC.

use std::time::Duration;

use super::codec::{g722::G722Decoder, new_decoder, Decoder, DecoderKind, Resampler};
use super::{CallTimeline, Codec, StreamConfig, TimelineConfig};

const MS: Duration = Duration::from_millis(1);

use super::timeline::tests::{mono, rtp};

fn tl(rate: u32) -> CallTimeline {
    let mut t = CallTimeline::new(TimelineConfig {
        channels: 1,
        sample_rate: rate,
        playout_delay: Duration::from_millis(300),
    });
    t.set_stream_config(
        0,
        StreamConfig {
            payload_types: vec![
                (0, Codec::Audio(DecoderKind::Pcmu), 8000),
                (9, Codec::Audio(DecoderKind::G722), 8000),
                (111, Codec::Audio(DecoderKind::Opus), 48000),
                (101, Codec::TelephoneEvent, 8000),
            ],
        },
    );
    t
}

/// Deliver `(arrival, datagram)` in arrival order polling every 20 ms; return the mono
/// recording up to `end`.
fn run(t: &mut CallTimeline, mut pkts: Vec<(Duration, Vec<u8>)>, end: Duration) -> Vec<i16> {
    pkts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    let mut now = Duration::ZERO;
    let mut it = pkts.into_iter().peekable();
    while now < end {
        while let Some((at, p)) = it.next_if(|p| p.0 <= now) {
            t.push_rtp(0, mono(at), &p);
        }
        if let Some(b) = t.poll_audio(mono(now)) {
            assert_eq!(b.start_frame as usize, out.len());
            out.extend_from_slice(&b.samples);
        }
        now += 20 * MS;
    }
    for (at, p) in it {
        t.push_rtp(0, mono(at), &p);
    }
    if let Some(b) = t.finish(mono(end)) {
        out.extend_from_slice(&b.samples);
    }
    out
}

/// G.722 code bytes of a wideband test signal (encoded by an ADPCM-agnostic rule: any
/// byte sequence is a valid G.722 stream; a varying pattern exercises both bands).
fn g722_payload(k: u32) -> Vec<u8> {
    (0..160u32)
        .map(|i| ((k * 37 + i * 11) % 251) as u8)
        .collect()
}

fn tone(rate: u32, hz: f64, n: usize, amp: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

#[test]
fn g722_in_a_16k_timeline_is_the_decoder_output_on_the_8k_clock() {
    let mut t = tl(16000);
    let pkts: Vec<_> = (0..50u32)
        .map(|k| {
            (
                100 * MS + 20 * MS * k,
                rtp(9, k as u16, 7000 + 160 * k, 5, &g722_payload(k)),
            )
        })
        .collect();
    let out = run(&mut t, pkts, 1500 * MS);
    assert_eq!(out.len(), 24000);
    let mut d = G722Decoder::new();
    let mut want = Vec::new();
    for k in 0..50 {
        d.decode(&g722_payload(k), &mut want).unwrap();
    }
    // Anchored at its arrival (100 ms = frame 1600); 8000 Hz ticks → 16 kHz frames.
    assert_eq!(&out[1600..1600 + 16000], &want[..]);
    assert!(out[..1600].iter().chain(&out[17600..]).all(|&s| s == 0));
    assert_eq!(t.stats(0).received, 50);
}

#[test]
fn g722_reordered_packets_are_decoded_in_sequence() {
    let in_order: Vec<_> = (0..50u32)
        .map(|k| (20 * MS * k, rtp(9, k as u16, 160 * k, 5, &g722_payload(k))))
        .collect();
    let mut reordered = in_order.clone();
    // Packet 11 arrives 40 ms late (after 12 and 13), packet 30 after 31.
    reordered[11].0 += 45 * MS;
    reordered[30].0 += 25 * MS;
    let a = run(&mut tl(16000), in_order, 1200 * MS);
    let mut t = tl(16000);
    let b = run(&mut t, reordered, 1200 * MS);
    assert_eq!(a, b);
    assert_eq!((t.stats(0).late, t.stats(0).lost), (0, 0));
}

#[test]
fn g722_loss_is_silence_and_later_straggler_is_late() {
    let mut pkts: Vec<_> = (0..50u32)
        .map(|k| (20 * MS * k, rtp(9, k as u16, 160 * k, 5, &g722_payload(k))))
        .collect();
    pkts[20].0 += 200 * MS; // arrives after its gap was given up on
    let mut t = tl(16000);
    let out = run(&mut t, pkts, 1200 * MS);
    assert!(out[20 * 320..21 * 320].iter().all(|&s| s == 0));
    assert!(out[21 * 320..22 * 320].iter().any(|&s| s != 0));
    assert_eq!(t.stats(0).late, 1);
}

#[test]
fn g711_into_16k_is_resampled_and_aligned() {
    let pcm = tone(8000, 1000.0, 8000, 8000.0);
    let ulaw: Vec<u8> = pcm.iter().map(|&s| super::linear_to_ulaw(s)).collect();
    let pkts: Vec<_> = (0..50u32)
        .map(|k| {
            let pl = &ulaw[160 * k as usize..160 * (k as usize + 1)];
            (20 * MS * k, rtp(0, k as u16, 160 * k, 5, pl))
        })
        .collect();
    let out = run(&mut tl(16000), pkts, 1300 * MS);
    // Same as decoding + resampling by hand, with the filter delay removed.
    let decoded: Vec<i16> = ulaw.iter().map(|&b| super::ulaw_to_linear(b)).collect();
    let mut r = Resampler::new(8000, 16000);
    let mut want = Vec::new();
    r.process(&decoded, &mut want);
    let d = r.delay();
    assert_eq!(&out[..16000 - d], &want[d..]);
    // And it is the 1 kHz tone at 16 kHz.
    let ideal = tone(16000, 1000.0, 16000, 8000.0);
    let err: f64 = (500..15000)
        .map(|i| (f64::from(out[i]) - f64::from(ideal[i])).powi(2))
        .sum::<f64>()
        / 14500.0;
    assert!(err.sqrt() < 150.0, "rms error {}", err.sqrt());
}

#[test]
fn opus_ticks_are_48k_and_loss_uses_fec() {
    let rate = 16000;
    let mut enc =
        ::opus::Encoder::new(48000, ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(20).unwrap();
    let pcm = tone(48000, 440.0, 48000, 9000.0);
    let payloads: Vec<Vec<u8>> = pcm
        .chunks_exact(960)
        .map(|f| enc.encode_vec(f, 1500).unwrap())
        .collect();
    let mk = |drop: bool| {
        payloads
            .iter()
            .enumerate()
            .filter(|(k, _)| !(drop && *k == 20))
            .map(|(k, p)| (20 * MS * k as u32, rtp(111, k as u16, 960 * k as u32, 6, p)))
            .collect::<Vec<_>>()
    };
    let full = run(&mut tl(rate), mk(false), 1300 * MS);
    let mut t = tl(rate);
    let lossy = run(&mut t, mk(true), 1300 * MS);
    // Reference: libopus at 16 kHz on the same packets.
    let mut d = new_decoder(DecoderKind::Opus, rate).unwrap();
    let mut want = Vec::new();
    for p in &payloads {
        d.decode(p, &mut want).unwrap();
    }
    assert_eq!(&full[..16000], &want[..]);
    let s = t.stats(0);
    assert_eq!((s.lost, s.fec_recovered, s.late), (1, 1, 0));
    // The lost 20 ms is not silence, and everything after it is back in sync.
    assert!(lossy[20 * 320..21 * 320].iter().any(|&v| v.abs() > 500));
    let snr = super::codec::tests::snr_db(&full[22 * 320..16000], &lossy[22 * 320..16000]);
    assert!(snr > 10.0, "after the loss: {snr:.1} dB");
}

#[test]
fn codec_switch_g711_g722_opus_keeps_one_timeline() {
    // Same SSRC, unrelated timestamps per codec, 1 s each; the SRC switches codec by
    // re-INVITE (all three negotiated).
    let mut t = tl(16000);
    let mut pkts = Vec::new();
    let ulaw: Vec<u8> = tone(8000, 500.0, 8000, 6000.0)
        .iter()
        .map(|&s| super::linear_to_ulaw(s))
        .collect();
    for k in 0..50u32 {
        let pl = &ulaw[160 * k as usize..160 * (k as usize + 1)];
        pkts.push((20 * MS * k, rtp(0, k as u16, 1000 + 160 * k, 5, pl)));
    }
    for k in 0..50u32 {
        pkts.push((
            1000 * MS + 20 * MS * k,
            rtp(9, 50 + k as u16, 90_000 + 160 * k, 5, &g722_payload(k)),
        ));
    }
    let mut enc =
        ::opus::Encoder::new(48000, ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
    let opcm = tone(48000, 700.0, 48000, 9000.0);
    let opus: Vec<Vec<u8>> = opcm
        .chunks_exact(960)
        .map(|f| enc.encode_vec(f, 1500).unwrap())
        .collect();
    for (k, p) in opus.iter().enumerate() {
        let k = k as u32;
        pkts.push((
            2000 * MS + 20 * MS * k,
            rtp(111, 100 + k as u16, 3_000_000 + 960 * k, 5, p),
        ));
    }
    let out = run(&mut t, pkts, 3400 * MS);
    assert_eq!(out.len(), 3400 * 16);
    let s = t.stats(0);
    assert_eq!(
        (s.codec_changes, s.lost, s.late, s.decode_errors),
        (2, 0, 0, 0)
    );
    // G.722 continues exactly where G.711 ended (frame 16000), sample-exact.
    let mut d = G722Decoder::new();
    let mut g = Vec::new();
    for k in 0..50 {
        d.decode(&g722_payload(k), &mut g).unwrap();
    }
    assert_eq!(&out[16000..32000], &g[..]);
    // Opus continues at 32000 and is the reference decoder's output.
    let mut od = new_decoder(DecoderKind::Opus, 16000).unwrap();
    let mut o = Vec::new();
    for p in &opus {
        od.decode(p, &mut o).unwrap();
    }
    assert_eq!(&out[32000..48000], &o[..]);
    // No hole at either switch: the G.711 part runs right up to 16000.
    assert!(out[15900..16000].iter().any(|&v| v != 0));
    assert!(out[48000..].iter().all(|&v| v == 0));
}

#[test]
fn opus_in_an_8k_recording_and_g722_downsampled() {
    let mut t = tl(8000);
    let pkts: Vec<_> = (0..50u32)
        .map(|k| (20 * MS * k, rtp(9, k as u16, 160 * k, 5, &g722_payload(k))))
        .collect();
    let out = run(&mut t, pkts, 1200 * MS);
    assert_eq!(out.len(), 9600);
    let mut d = G722Decoder::new();
    let mut wide = Vec::new();
    for k in 0..50 {
        d.decode(&g722_payload(k), &mut wide).unwrap();
    }
    let mut r = Resampler::new(16000, 8000);
    let mut want = Vec::new();
    r.process(&wide, &mut want);
    let dl = r.delay();
    assert_eq!(&out[..8000 - dl], &want[dl..]);
}

#[cfg(not(feature = "g729"))]
#[test]
fn g729_without_the_feature_is_unsupported() {
    let mut t = tl(8000);
    t.set_stream_config(
        0,
        StreamConfig {
            payload_types: vec![(18, Codec::Audio(DecoderKind::G729), 8000)],
        },
    );
    assert_eq!(
        t.push_rtp(0, mono(MS), &rtp(18, 1, 0, 5, &[0; 20])),
        super::PushOutcome::Unsupported
    );
}

/// An 8 kHz timeline negotiating only G.729, and the real G.729A frames.
#[cfg(feature = "g729")]
fn g729_timeline() -> (CallTimeline, Vec<u8>) {
    let bits = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/codec/g729a-wireshark.bit"
    ))
    .unwrap();
    let mut t = tl(8000);
    t.set_stream_config(
        0,
        StreamConfig {
            payload_types: vec![(18, Codec::Audio(DecoderKind::G729), 8000)],
        },
    );
    (t, bits)
}

#[cfg(feature = "g729")]
#[test]
fn g729_multi_frame_packets_and_sid() {
    let (mut t, bits) = g729_timeline();
    // 40 ms packets (4 frames) for 1 s, then one SID, then 200 ms of DTX, then speech.
    let mut pkts = Vec::new();
    for k in 0..25u32 {
        let pl = &bits[40 * k as usize..40 * (k as usize + 1)];
        pkts.push((40 * MS * k, rtp(18, k as u16, 320 * k, 5, pl)));
    }
    pkts.push((1000 * MS, rtp(18, 25, 8000, 5, &[0x5a, 0xa8])));
    pkts.push((
        1210 * MS,
        rtp(18, 26, 8000 + 80 + 1600, 5, &bits[1000..1020]),
    ));
    let out = run(&mut t, pkts, 1600 * MS);
    let mut d = new_decoder(DecoderKind::G729, 8000).unwrap();
    let mut want = Vec::new();
    d.decode(&bits[..1000], &mut want).unwrap();
    assert_eq!(&out[..8000], &want[..]);
    let s = t.stats(0);
    assert_eq!((s.decode_errors, s.lost), (0, 0));
    // SID + DTX: comfort noise (not digital silence) fills 1000..1210 ms.
    assert!(s.concealed_ms >= 190, "{}", s.concealed_ms);
    assert!(out[8100..9600].iter().any(|&v| v != 0));
}

#[cfg(feature = "g729")]
#[test]
fn g729_long_dtx_is_comfort_noise_throughout() {
    let (mut t, bits) = g729_timeline();
    let mut pkts = Vec::new();
    for k in 0..25u32 {
        let pl = &bits[20 * k as usize..20 * (k as usize + 1)];
        pkts.push((20 * MS * k, rtp(18, k as u16, 160 * k, 5, pl)));
    }
    // SID at 500 ms, then 3 s of DTX (no packets), then speech again.
    pkts.push((500 * MS, rtp(18, 25, 4000, 5, &[0x5a, 0xa8])));
    pkts.push((3500 * MS, rtp(18, 26, 28000, 5, &bits[500..520])));
    let out = run(&mut t, pkts, 4000 * MS);
    // Every 100 ms of the DTX period holds comfort noise, none is digital silence.
    for w in (4100..28000).step_by(800) {
        assert!(
            out[w..w + 800].iter().any(|&v| v != 0),
            "digital silence at sample {w}"
        );
    }
    let s = t.stats(0);
    assert!(s.concealed_ms >= 2900, "{s:?}");
    assert_eq!((s.late, s.decode_errors), (0, 0), "{s:?}");
    // Speech resumes where it was sent (3.5 s = sample 28000).
    assert!(out[28000..28160].iter().any(|&v| v.abs() > 50));
}

#[test]
fn codec_switch_with_gaps_and_unrelated_timestamps() {
    // As the SIPp switch test: 150 ms pauses between codecs, sequence numbers continue,
    // timestamps restart per codec at unrelated values.
    let mut t = tl(16000);
    let mut pkts = Vec::new();
    for k in 0..50u32 {
        pkts.push((
            20 * MS * k,
            rtp(0, 1000 + k as u16, 8000 + 160 * k, 5, &[0x55; 160]),
        ));
    }
    for k in 0..50u32 {
        pkts.push((
            1150 * MS + 20 * MS * k,
            rtp(9, 1050 + k as u16, 8350 + 160 * k, 5, &g722_payload(k)),
        ));
    }
    let mut enc =
        ::opus::Encoder::new(48000, ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
    let opcm = tone(48000, 700.0, 48000, 9000.0);
    for (k, f) in opcm.chunks_exact(960).enumerate() {
        let k = k as u32;
        let p = enc.encode_vec(f, 1500).unwrap();
        pkts.push((
            2300 * MS + 20 * MS * k,
            rtp(111, 1100 + k as u16, 8700 + 960 * k, 5, &p),
        ));
    }
    let out = run(&mut t, pkts, 3600 * MS);
    let s = t.stats(0);
    assert_eq!(
        (s.codec_changes, s.lost, s.late, s.decode_errors),
        (2, 0, 0, 0),
        "{s:?}"
    );
    // The sender paused 150 ms between codecs: each codec starts at its arrival.
    let mut d = G722Decoder::new();
    let mut g = Vec::new();
    for k in 0..50 {
        d.decode(&g722_payload(k), &mut g).unwrap();
    }
    assert!(
        out[18400..34400] == g[..],
        "G.722 not at its arrival (frame 18400)"
    );
}
