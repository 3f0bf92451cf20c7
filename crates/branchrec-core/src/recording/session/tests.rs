//! The per-call recording core in simulated time: packets in, chunks and events out.

use super::*;
use crate::keys::test_kek::TestKek;
use crate::keys::KeyWrap;
use crate::media::srtp::{SrtpSender, SrtpSuite};
use crate::media::timeline::tests::{mono, rtp};
use crate::media::{ulaw_to_linear, Codec};
use crate::recording::container::{read_all_audio, scan, ScanState};

const MS: Duration = Duration::from_millis(1);

fn kek() -> TestKek {
    TestKek::from_key([5; 32])
}

fn config(channels: usize) -> RecordingConfig {
    RecordingConfig {
        recording_id: "rec-session".into(),
        created: UnixMs(1_700_000_000_000),
        sample_rate: 8000,
        channels,
        opus: None,
        playout_delay: 200 * MS,
        flush_every: 1000 * MS,
        pause_when_all_held: true,
        unsupported_if_no_audio: false,
        dtmf_digits: true,
        source_policy: SourcePolicy::Strict,
        foreign_alarm_packets: 25,
    }
}

/// The SRC's address in every test SDP, and where its packets come from.
fn src() -> SocketAddr {
    "10.0.0.1:4000".parse().unwrap()
}

fn keys(k: &TestKek) -> RecordingKeys {
    let dk = DataKey::from_bytes([9; 32]);
    RecordingKeys {
        wrapped_key: k.wrap(&dk).unwrap(),
        data_key: dk,
        kek_id: k.kek_id(),
        compliance: None,
        nonce_prefix: [4; 7],
    }
}

fn media(hold: bool, detail: &str) -> ChannelMedia {
    ChannelMedia {
        config: StreamConfig::default(),
        codecs: vec!["PCMU".into()],
        hold,
        srtp: None,
        detail: serde_json::json!({ "direction": detail }),
        remote: Some(src()),
    }
}

/// 160 µ-law bytes of packet `k` on channel `ch` (never silence).
fn payload(k: u32, ch: usize) -> Vec<u8> {
    (0..160u32)
        .map(|i| 0x81 + ((k * 7 + i + ch as u32 * 31) % 0x70) as u8)
        .collect()
}

/// What the shell would do with the outputs.
#[derive(Default)]
struct Shell {
    file: Vec<u8>,
    chunks: usize,
    events: Vec<Event>,
    finished: Option<Finished>,
}

impl Shell {
    fn drain(&mut self, r: &mut Recording) {
        while let Some(o) = r.poll_output() {
            assert!(self.finished.is_none(), "output after Finished");
            match o {
                Output::Chunk(b) => {
                    self.file.extend_from_slice(&b);
                    self.chunks += 1;
                }
                Output::Event(e) => self.events.push(e),
                Output::Finished(f) => self.finished = Some(*f),
            }
        }
    }
}

/// A call of `secs` seconds: every 20 ms one PCMU packet per channel (unless `skip` says
/// so), `handle_timeout` every 20 ms; `at` runs actions at given packet indices.
fn run_call(
    r: &mut Recording,
    shell: &mut Shell,
    packets: u32,
    mut at: impl FnMut(u32, Duration, &mut Recording),
) {
    for k in 0..packets {
        let now = 20 * MS * k;
        at(k, now, r);
        for ch in 0..r.channels() {
            let p = rtp(0, k as u16, k * 160, 0x100 + ch as u32, &payload(k, ch));
            r.handle_rtp(mono(now), ch, src(), &p);
        }
        r.handle_timeout(mono(now));
        shell.drain(r);
    }
}

fn start(cfg: RecordingConfig) -> (Recording, Shell, TestKek) {
    let k = kek();
    let (mut r, header) = Recording::new(cfg, keys(&k)).unwrap();
    let mut shell = Shell {
        file: header,
        ..Shell::default()
    };
    let n = r.channels();
    r.set_media(
        None,
        (0..n).map(|_| Some(media(false, "sendonly"))).collect(),
    );
    shell.drain(&mut r);
    assert!(shell.events.is_empty(), "no events for the initial media");
    (r, shell, k)
}

#[test]
fn packets_in_chunks_out_and_the_file_reads_back() {
    let started = std::time::Instant::now();
    let (mut r, mut shell, k) = start(config(2));
    // 10 s of call.
    run_call(&mut r, &mut shell, 500, |_, _, _| {});
    // Chunks leave as the playout delay passes (one per second of audio).
    assert!(
        shell.chunks >= 9,
        "chunks during the call: {}",
        shell.chunks
    );
    r.finish(mono(10_000 * MS));
    shell.drain(&mut r);
    r.finish(mono(10_000 * MS));
    assert!(r.poll_output().is_none(), "finish twice does nothing");
    let fin = shell.finished.take().expect("Finished");
    assert_eq!(fin.duration_ms, 10_000);
    assert_eq!(fin.codec, "PCMU");
    assert_eq!(fin.outcome(Stored::All), Outcome::Complete);
    assert_eq!(fin.outcome(Stored::Prefix), Outcome::Interrupted);
    assert_eq!(fin.outcome(Stored::Unknown), Outcome::Damaged);
    assert_eq!(fin.container.total_bytes, shell.file.len() as u64);
    assert!(fin.container.bytes.is_empty());
    let stats = &fin.stats;
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].received, 500);
    assert_eq!(stats[1].lost, 0);
    // The file is a complete container holding exactly the call.
    assert_eq!(
        scan(&shell.file[..], &k).unwrap().state,
        ScanState::Complete
    );
    let (h, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    assert_eq!((h.sample_rate, h.channels), (8000, 2));
    assert_eq!(audio.len(), 10 * 8000 * 2);
    // Packet k lands at frame 160 k on its channel.
    for k in [0u32, 1, 250, 499] {
        for ch in 0..2 {
            let p = payload(k, ch);
            let got: Vec<i16> = (0..160)
                .map(|i| audio[(k as usize * 160 + i) * 2 + ch])
                .collect();
            let exp: Vec<i16> = p.iter().map(|&b| ulaw_to_linear(b)).collect();
            assert_eq!(got, exp, "packet {k} channel {ch}");
        }
    }
    assert!(shell.events.is_empty());
    // Simulated time: 10 s of call in well under 10 s.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn same_inputs_same_bytes() {
    let mut files = Vec::new();
    for _ in 0..2 {
        let (mut r, mut shell, _) = start(config(2));
        run_call(&mut r, &mut shell, 120, |_, _, _| {});
        r.finish(mono(2400 * MS));
        shell.drain(&mut r);
        files.push(shell.file);
    }
    assert_eq!(files[0], files[1]);
}

#[test]
fn paused_packets_are_dropped_and_the_interval_is_events() {
    let (mut r, mut shell, k) = start(config(2));
    // Pause from 1 s to 2 s (control), then again from 3 s to the end of the call.
    run_call(&mut r, &mut shell, 200, |k, now, r| match k {
        50 => r.pause(mono(now), "control:alice"),
        // Another control actor's resume withdraws every control pause.
        100 => r.resume(mono(now), "control:bob"),
        150 => r.pause(mono(now), "siprec"),
        _ => {}
    });
    assert!(r.is_paused());
    r.finish(mono(4000 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.take().unwrap();
    let kinds: Vec<(u64, EventKind, serde_json::Value)> = shell
        .events
        .iter()
        .map(|e| (e.at_ms, e.kind, e.detail["source"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1000, EventKind::Pause, "control:alice".into()),
            (2000, EventKind::Resume, "control:bob".into()),
            (3000, EventKind::Pause, "siprec".into()),
            (4000, EventKind::Resume, "end of call".into()),
        ]
    );
    let stats = &fin.stats;
    // One entry per channel, nothing else; per channel 50 + 50 packets never reached the
    // timeline, and the seq gap of the first pause is not loss.
    assert_eq!(stats.len(), 2);
    for (ch, st) in stats.iter().enumerate() {
        assert_eq!(st.channel, ch as u32);
        assert_eq!(st.dropped_while_paused, 100, "{st:?}");
        assert_eq!(st.received, 100, "{st:?}");
        assert_eq!(st.lost, 0, "paused drops counted as lost: {st:?}");
    }
    let (_, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    assert_eq!(audio.len(), 4 * 8000 * 2);
    let frames = |a: usize, b: usize| &audio[a * 8000 * 2..b * 8000 * 2];
    // Paused time is silence (the timeline conceals at most a packet after a gap).
    assert!(frames(1, 2)[480..].iter().all(|&s| s == 0));
    assert!(frames(3, 4)[480..].iter().all(|&s| s == 0));
    assert!(frames(0, 1).iter().any(|&s| s != 0));
    assert!(frames(2, 3).iter().any(|&s| s != 0));
}

#[test]
fn holds_become_events_and_all_held_pauses() {
    let (mut r, mut shell, _) = start(config(2));
    run_call(&mut r, &mut shell, 100, |k, now, r| match k {
        // One stream inactive: a hold event, no pause.
        20 => r.set_media(
            Some(mono(now)),
            vec![
                Some(media(true, "inactive")),
                Some(media(false, "sendonly")),
            ],
        ),
        // The other m-line is gone too: every channel held → paused by SIPREC.
        40 => r.set_media(Some(mono(now)), vec![Some(media(true, "inactive")), None]),
        // Both back.
        60 => r.set_media(
            Some(mono(now)),
            vec![
                Some(media(false, "sendonly")),
                Some(media(false, "sendonly")),
            ],
        ),
        _ => {}
    });
    r.finish(mono(2000 * MS));
    shell.drain(&mut r);
    let ev: Vec<(u64, EventKind, Option<u32>)> = shell
        .events
        .iter()
        .map(|e| (e.at_ms, e.kind, e.channel))
        .collect();
    assert_eq!(
        ev,
        vec![
            (400, EventKind::Hold, Some(0)),
            (800, EventKind::Hold, Some(1)),
            (800, EventKind::Pause, None),
            (1200, EventKind::Resume, Some(0)),
            (1200, EventKind::Resume, Some(1)),
            (1200, EventKind::Resume, None),
        ]
    );
    assert_eq!(
        shell.events[0].detail,
        serde_json::json!({ "direction": "inactive" })
    );
    assert_eq!(
        shell.events[1].detail,
        serde_json::json!({ "direction": null })
    );
    assert_eq!(
        shell.events[2].detail,
        serde_json::json!({ "source": "siprec" })
    );
    let fin = shell.finished.unwrap();
    assert_eq!(fin.stats.len(), 2);
    // 20 packets per channel between 800 and 1200 ms; none of them is `lost`.
    for st in &fin.stats {
        assert_eq!((st.dropped_while_paused, st.lost), (20, 0), "{st:?}");
    }
}

#[test]
fn capture_holds_do_not_pause() {
    let mut cfg = config(2);
    cfg.pause_when_all_held = false;
    let (mut r, mut shell, _) = start(cfg);
    run_call(&mut r, &mut shell, 50, |k, now, r| {
        if k == 10 {
            r.set_media(
                Some(mono(now)),
                vec![Some(media(true, "x")), Some(media(true, "y"))],
            );
        }
    });
    assert!(!r.is_paused());
    r.finish(mono(1000 * MS));
    shell.drain(&mut r);
    assert_eq!(shell.events.len(), 2);
    assert!(shell.events.iter().all(|e| e.kind == EventKind::Hold));
}

#[test]
fn dtmf_digits_are_events_at_finish() {
    for keep in [true, false] {
        dtmf_event(keep);
    }
}

/// With `dtmf_digits` off (the daemon's default) the event keeps its timing, the digit
/// is masked.
fn dtmf_event(keep: bool) {
    let mut c = config(1);
    c.dtmf_digits = keep;
    let (mut r, mut shell, _) = start(c);
    let mut cfg = StreamConfig::default();
    cfg.payload_types.push((101, Codec::TelephoneEvent, 8000));
    let mut m = media(false, "sendonly");
    m.config = cfg;
    r.set_media(None, vec![Some(m)]);
    run_call(&mut r, &mut shell, 60, |k, now, r| {
        // Digit '5' from 400 ms: 6 updates then the end.
        if (20..27).contains(&k) {
            let i = k - 19;
            let dur = (160 * i) as u16;
            let pl = [
                5u8,
                if i == 7 { 0x80 | 10 } else { 10 },
                (dur >> 8) as u8,
                dur as u8,
            ];
            r.handle_rtp(
                mono(now),
                0,
                src(),
                &rtp(101, 1000 + k as u16, 3200, 0x100, &pl),
            );
        }
    });
    r.finish(mono(1200 * MS));
    shell.drain(&mut r);
    let d: Vec<&Event> = shell
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Dtmf)
        .collect();
    assert_eq!(d.len(), 1, "{:?}", shell.events);
    assert_eq!(d[0].channel, Some(0));
    assert_eq!(d[0].at_ms, 400);
    assert_eq!(d[0].detail["digit"], if keep { "5" } else { "masked" });
    assert_eq!(d[0].detail["duration_ms"], 140);
}

#[test]
fn no_decodable_audio_is_codec_unsupported_when_asked() {
    for ask in [false, true] {
        let mut cfg = config(1);
        cfg.unsupported_if_no_audio = ask;
        let (mut r, mut shell, _) = start(cfg);
        // Payload type 18 is not negotiated.
        for k in 0..50u32 {
            let now = 20 * MS * k;
            r.handle_rtp(
                mono(now),
                0,
                src(),
                &rtp(18, k as u16, k * 160, 1, &[0; 20]),
            );
            r.handle_timeout(mono(now));
        }
        r.finish(mono(1000 * MS));
        shell.drain(&mut r);
        let fin = shell.finished.unwrap();
        let want = if ask {
            Outcome::CodecUnsupported
        } else {
            Outcome::Complete
        };
        assert_eq!(fin.outcome(Stored::All), want);
        assert_eq!(fin.outcome(Stored::Unknown), Outcome::Damaged);
    }
}

#[test]
fn srtp_is_decrypted_and_failures_never_stored() {
    let pol = SrtpPolicy::simple(SrtpSuite::AesCm128HmacSha1_80, vec![3; 16], vec![4; 14]);
    let mut tx = SrtpSender::new(&pol).unwrap();
    let (mut r, mut shell, k) = start(config(1));
    let mut m = media(false, "sendonly");
    m.srtp = Some(pol.clone());
    r.set_media(None, vec![Some(m)]);
    for n in 0..50u32 {
        let now = 20 * MS * n;
        let mut p = rtp(0, n as u16, n * 160, 0x100, &payload(n, 0));
        let len = p.len();
        p.resize(len + 10, 0);
        tx.protect_rtp(&mut p, len, 0, 0).unwrap();
        if n == 10 {
            // A forged packet: fails authentication, counted, never stored.
            let mut bad = p.clone();
            bad[20] ^= 1;
            assert_eq!(
                r.handle_rtp(mono(now), 0, src(), &bad),
                RtpDisposition::SrtpRejected
            );
        }
        assert_eq!(
            r.handle_rtp(mono(now), 0, src(), &p),
            RtpDisposition::Timeline(PushOutcome::Placed)
        );
        r.handle_timeout(mono(now));
    }
    r.finish(mono(1000 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.unwrap();
    let st = &fin.stats[0];
    assert_eq!(st.srtp_suite.as_deref(), Some("AES_CM_128_HMAC_SHA1_80"));
    assert_eq!(st.srtp_ok, 50);
    assert_eq!(st.srtp_auth_fail, 1);
    assert_eq!(st.received, 50);
    let (_, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    let exp: Vec<i16> = payload(3, 0).iter().map(|&b| ulaw_to_linear(b)).collect();
    assert_eq!(&audio[480..640], &exp[..]);
}

#[test]
fn opus_storage_through_the_same_object() {
    let mut cfg = config(2);
    cfg.opus = Some(OpusSettings::default());
    let (mut r, mut shell, k) = start(cfg);
    run_call(&mut r, &mut shell, 150, |_, _, _| {});
    r.finish(mono(3000 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.unwrap();
    assert_eq!(fin.container.frames, 3 * 8000);
    let (h, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    assert!(h.opus.is_some());
    assert_eq!(audio.len(), 3 * 8000 * 2);
}

/// The attacks of issue #12 finding 1 against the core: an injector on another host with
/// a new SSRC, and one with the real SSRC and sequence numbers ahead, during a clean call.
/// The recording must be byte-identical to the call without the injector.
#[test]
fn injected_rtp_from_a_foreign_source_never_reaches_the_recording() {
    let clean = {
        let (mut r, mut shell, _) = start(config(2));
        run_call(&mut r, &mut shell, 250, |_, _, _| {});
        r.finish(mono(5000 * MS));
        shell.drain(&mut r);
        shell.file
    };
    let attacker: SocketAddr = "10.0.0.66:4000".parse().unwrap();
    let (mut r, mut shell, k) = start(config(2));
    let mut verdicts = Vec::new();
    run_call(&mut r, &mut shell, 250, |n, now, r| {
        if (50..150).contains(&n) {
            // New SSRC on channel 0, the real SSRC 100 packets ahead on channel 1.
            let fresh = rtp(0, 7000 + n as u16, 90_000 + n * 160, 0xdead, &[0x11; 160]);
            let ahead = rtp(0, n as u16 + 100, (n + 100) * 160, 0x101, &[0x22; 160]);
            verdicts.push(r.handle_rtp(mono(now), 0, attacker, &fresh));
            verdicts.push(r.handle_rtp(mono(now), 1, attacker, &ahead));
        }
    });
    r.finish(mono(5000 * MS));
    shell.drain(&mut r);
    assert!(verdicts.iter().all(|v| !v.from_bound_source()));
    // The packet that reached the threshold (25) raised the alarm, once per channel.
    let alarms = verdicts
        .iter()
        .filter(|v| matches!(v, RtpDisposition::Foreign { alarm: true }))
        .count();
    assert_eq!(alarms, 2);
    let ev: Vec<&Event> = shell
        .events
        .iter()
        .filter(|e| e.kind == EventKind::ForeignSource)
        .collect();
    assert_eq!(ev.len(), 2, "{:?}", shell.events);
    assert_eq!(ev[0].detail["source"], "10.0.0.66:4000");
    assert_eq!(ev[0].detail["announced"], "10.0.0.1");
    let fin = shell.finished.take().unwrap();
    for ch in 0..2 {
        let st = &fin.stats[ch];
        assert_eq!(st.rtp_foreign_source, 100, "channel {ch}: {st:?}");
        assert_eq!(st.ssrc_changes, 0);
        assert_eq!(st.duplicates, 0);
        assert_eq!(st.late, 0);
        assert_eq!(st.received, 250);
    }
    // The audio is exactly the clean call's (the stats JSON is not in the file).
    let (_, a) = read_all_audio(&shell.file[..], &k).unwrap();
    let (_, b) = read_all_audio(&clean[..], &k).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_reinvite_moving_the_stream_rebinds_it() {
    let (mut r, mut shell, k) = start(config(1));
    let moved: SocketAddr = "10.0.0.9:5000".parse().unwrap();
    let mut got = Vec::new();
    for n in 0..100u32 {
        let now = 20 * MS * n;
        if n == 50 {
            let mut m = media(false, "sendonly");
            m.remote = Some(moved);
            r.set_media(Some(mono(now)), vec![Some(m)]);
        }
        let from = if n < 50 { src() } else { moved };
        let p = rtp(0, n as u16, n * 160, 0x100, &payload(n, 0));
        got.push(r.handle_rtp(mono(now), 0, from, &p));
        // The old source after the move is foreign.
        if n >= 50 {
            let stale = rtp(0, n as u16, n * 160, 0x100, &[0x33; 160]);
            assert!(!r
                .handle_rtp(mono(now), 0, src(), &stale)
                .from_bound_source());
        }
        r.handle_timeout(mono(now));
        shell.drain(&mut r);
    }
    assert!(got.iter().all(RtpDisposition::from_bound_source));
    r.finish(mono(2000 * MS));
    shell.drain(&mut r);
    let (_, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    for n in [0u32, 49, 50, 99] {
        let exp: Vec<i16> = payload(n, 0).iter().map(|&b| ulaw_to_linear(b)).collect();
        assert_eq!(
            &audio[n as usize * 160..(n as usize + 1) * 160],
            &exp[..],
            "packet {n}"
        );
    }
    let st = &shell.finished.unwrap().stats[0];
    assert_eq!(st.rtp_foreign_source, 50);
}

#[test]
fn an_initial_all_inactive_offer_stores_nothing_until_a_stream_is_active() {
    let (mut r, mut shell, k) = start(config(2));
    // The call starts with every stream inactive (RFC 7866: the SRC starts paused).
    r.set_media(
        None,
        vec![Some(media(true, "inactive")), Some(media(true, "inactive"))],
    );
    assert!(r.is_paused(), "initial inactive offer must pause");
    run_call(&mut r, &mut shell, 100, |k, now, r| {
        if k == 50 {
            r.set_media(
                Some(mono(now)),
                vec![
                    Some(media(false, "sendonly")),
                    Some(media(false, "sendonly")),
                ],
            );
        }
    });
    r.finish(mono(2000 * MS));
    shell.drain(&mut r);
    let ev: Vec<(u64, EventKind, Option<u32>)> = shell
        .events
        .iter()
        .map(|e| (e.at_ms, e.kind, e.channel))
        .collect();
    assert_eq!(
        ev,
        vec![
            (0, EventKind::Pause, None),
            (1000, EventKind::Resume, Some(0)),
            (1000, EventKind::Resume, Some(1)),
            (1000, EventKind::Resume, None),
        ]
    );
    let fin = shell.finished.take().unwrap();
    for st in &fin.stats {
        assert_eq!(
            (st.dropped_while_paused, st.received, st.lost),
            (50, 50, 0),
            "{st:?}"
        );
    }
    let (_, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    assert_eq!(audio.len(), 2 * 8000 * 2);
    // The first second (paused from the start) is exact silence; the second has audio.
    assert!(audio[..8000 * 2].iter().all(|&s| s == 0));
    assert!(audio[8000 * 2..].iter().any(|&s| s != 0));
}

#[test]
fn the_stats_schema_is_one_typed_object_per_channel() {
    let (mut r, mut shell, _) = start(config(2));
    run_call(&mut r, &mut shell, 60, |k, now, r| {
        if k == 20 {
            r.pause(mono(now), "control:x");
        }
    });
    r.finish(mono(1200 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.take().unwrap();
    let json = crate::recording::ChannelStats::to_json(&fin.stats);
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let keys = crate::recording::ChannelStats::keys();
    for e in arr {
        let got: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert_eq!(got.len(), keys.len(), "{e}");
        assert!(keys.iter().all(|k| e.get(k).is_some()), "{e}");
        assert!(e["srtp_suite"].is_null());
    }
    assert_eq!(
        crate::recording::ChannelStats::parse_all(&json).unwrap(),
        fin.stats
    );
    // The old shape (an extra element without `channel`) is refused by the schema.
    let mut old = arr.clone();
    old.push(serde_json::json!({ "dropped_while_paused": 40 }));
    assert!(crate::recording::ChannelStats::parse_all(&serde_json::Value::Array(old)).is_err());
}

/// A storage stall: the shell reports a failed write at 3 s and the end of the stall at
/// 6 s. The file (what the shell wrote, the failed chunk retried byte for byte) reads
/// back complete, on one timeline: the audio before and after is exactly what was sent,
/// the stalled interval is silence, and a `storage_gap` event marks it.
#[test]
fn storage_stall_becomes_a_marked_silent_gap_on_one_timeline() {
    let (mut r, mut shell, k) = start(config(1));
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for kpk in 0..500u32 {
        let now = 20 * MS * kpk;
        if kpk == 150 {
            r.storage_failed(mono(now));
            assert!(r.is_storage_stalled());
        }
        if kpk == 300 {
            // The shell writes what it kept, then tells the core.
            for b in kept.drain(..) {
                shell.file.extend_from_slice(&b);
            }
            r.storage_resumed(mono(now));
        }
        let p = rtp(0, kpk as u16, kpk * 160, 0x100, &payload(kpk, 0));
        r.handle_rtp(mono(now), 0, src(), &p);
        r.handle_timeout(mono(now));
        while let Some(o) = r.poll_output() {
            match o {
                Output::Chunk(b) if r.is_storage_stalled() => kept.push(b),
                Output::Chunk(b) => shell.file.extend_from_slice(&b),
                Output::Event(e) => shell.events.push(e),
                Output::Finished(f) => shell.finished = Some(*f),
            }
        }
        if (150..300).contains(&kpk) {
            assert!(kept.is_empty(), "nothing sealed while stalled");
        }
    }
    r.finish(mono(10_000 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.take().unwrap();
    assert_eq!(fin.container.total_bytes, shell.file.len() as u64);
    assert_eq!(
        scan(&shell.file[..], &k).unwrap().state,
        ScanState::Complete
    );
    let (_, audio) = read_all_audio(&shell.file[..], &k).unwrap();
    assert_eq!(audio.len(), 80_000, "one timeline: 10 s at 8 kHz");
    let gap = shell
        .events
        .iter()
        .find(|e| e.kind == EventKind::StorageGap)
        .expect("storage_gap event");
    let (from, to) = (
        gap.detail["from_ms"].as_u64().unwrap() as usize,
        gap.detail["to_ms"].as_u64().unwrap() as usize,
    );
    assert!(shell
        .events
        .iter()
        .any(|e| e.kind == EventKind::StorageStalled));
    // The stall starts where sealed audio ended (before 3 s minus the playout delay is
    // stored) and ends at the audio released by 6 s.
    assert!(
        (1000..=3000).contains(&from) && (5000..=6000).contains(&to),
        "{from}..{to}"
    );
    assert!(
        audio[from * 8..to * 8].iter().all(|s| *s == 0),
        "the gap is silence"
    );
    let expect = |kpk: usize| -> Vec<i16> {
        payload(kpk as u32, 0)
            .iter()
            .map(|b| ulaw_to_linear(*b))
            .collect()
    };
    for kpk in (0..from / 20).chain(to.div_ceil(20)..500) {
        assert_eq!(
            audio[kpk * 160..kpk * 160 + 160],
            expect(kpk)[..],
            "packet {kpk}"
        );
    }
    assert_eq!(fin.stats.last().unwrap().storage_gaps, 1);
    assert!(fin
        .stats
        .iter()
        .all(|c| c.storage_gaps == 1 && c.storage_gap_ms > 0));
}

/// Issue #12 finding 3: an unconfirmed session (200 not ACKed) without audio writes
/// nothing; confirmed later, its file is what it would have been all along; audio before
/// the ACK starts writing at once.
#[test]
fn unconfirmed_session_without_audio_writes_nothing() {
    let (mut r, mut shell, _) = start(config(2));
    r.await_confirmation();
    let header = shell.file.len();
    for k in 0..250u32 {
        r.handle_timeout(mono(20 * MS * k));
        shell.drain(&mut r);
    }
    assert_eq!(
        shell.file.len(),
        header,
        "5 s unconfirmed without audio wrote bytes"
    );
    assert_eq!(shell.chunks, 0);
    // Confirmed: the silence since the start follows, the same bytes as a recording
    // written all along.
    r.confirm();
    for k in 250..300u32 {
        r.handle_timeout(mono(20 * MS * k));
        shell.drain(&mut r);
    }
    r.finish(mono(6000 * MS));
    shell.drain(&mut r);
    let (mut r2, mut shell2, _) = start(config(2));
    for k in 0..300u32 {
        r2.handle_timeout(mono(20 * MS * k));
        shell2.drain(&mut r2);
    }
    r2.finish(mono(6000 * MS));
    shell2.drain(&mut r2);
    let audio = |f: &[u8]| read_all_audio(f, &kek()).unwrap().1;
    assert_eq!(audio(&shell.file), audio(&shell2.file));
    // Audio before the ACK: written as usual.
    let (mut r3, mut shell3, _) = start(config(2));
    r3.await_confirmation();
    run_call(&mut r3, &mut shell3, 150, |_, _, _| {});
    assert!(shell3.chunks >= 2, "audio before the ACK was held back");
}

/// Issue #19: the verdict and quality come from what was stored. Channel 1 sends
/// digital silence (µ-law 0xFF), then low-level comfort noise: one-way both times; both
/// talking: recorded; with every 10th packet of channel 0 lost (10 %), channel 0's loss
/// and R-factor show it; no packets at all: no media.
#[test]
fn verdict_and_quality_from_the_stored_audio() {
    use crate::assurance::Verdict;
    let call = |ch1: &dyn Fn(u32) -> Option<Vec<u8>>, ch0_lose: u32| {
        let (mut r, mut shell, _k) = start(config(2));
        for k in 0..500u32 {
            let now = 20 * MS * k;
            if ch0_lose == 0 || k % ch0_lose != 5 {
                let p = rtp(0, k as u16, k * 160, 0x100, &payload(k, 0));
                r.handle_rtp(mono(now), 0, src(), &p);
            }
            if let Some(b) = ch1(k) {
                let p = rtp(0, k as u16, k * 160, 0x101, &b);
                r.handle_rtp(mono(now), 1, src(), &p);
            }
            r.handle_timeout(mono(now));
            shell.drain(&mut r);
        }
        r.finish(mono(10_000 * MS));
        shell.drain(&mut r);
        shell.finished.take().expect("finished")
    };
    let talk = |k: u32| Some(payload(k, 1));
    let fin = call(&talk, 0);
    let j = fin.judgement(Outcome::Complete);
    assert_eq!(j.verdict, Verdict::Recorded, "{j:?}");
    assert!(
        fin.quality
            .iter()
            .all(|q| q.voice_ratio > 0.9 && q.rms_dbfs > -30.0),
        "{:?}",
        fin.quality
    );
    assert!(fin.quality[0].r_factor > 90.0 && fin.quality[0].loss_pct == 0.0);
    assert_eq!(
        fin.judgement(Outcome::Interrupted).verdict,
        Verdict::Partial
    );

    let silence = |_k: u32| Some(vec![0xFFu8; 160]);
    let fin = call(&silence, 0);
    let j = fin.judgement(Outcome::Complete);
    assert_eq!(
        (j.verdict, j.silent_channels.clone()),
        (Verdict::OneWay, vec![1]),
        "{j:?}"
    );
    assert_eq!(fin.quality[1].rms_dbfs, -100.0);

    // Comfort noise: µ-law codes near zero (0xF8..0xFE decode to ±8..±56, ≈ −60 dBFS).
    let noise = |k: u32| {
        Some(
            (0..160u32)
                .map(|i| [0xF8u8, 0x78, 0xFB, 0x7B, 0xFE, 0x7E][((k + i) % 6) as usize])
                .collect(),
        )
    };
    let fin = call(&noise, 0);
    let j = fin.judgement(Outcome::Complete);
    assert_eq!(j.verdict, Verdict::OneWay, "{j:?} {:?}", fin.quality[1]);
    assert!(
        fin.quality[1].rms_dbfs > -80.0 && fin.quality[1].rms_dbfs < -45.0,
        "{:?}",
        fin.quality[1]
    );

    let fin = call(&talk, 10);
    let q0 = &fin.quality[0];
    assert!((q0.loss_pct - 10.0).abs() < 0.1, "{q0:?}");
    // G.711+PLC, 10 % random: Ie,eff = 950/35.1 = 27.07; delay 60 ms → Id 1.44: R 64.7.
    assert!((q0.r_factor - 64.69).abs() < 0.5, "{q0:?}");
    assert!(fin.quality[1].r_factor > 90.0);

    let (mut r, mut shell, _k) = start(config(2));
    r.handle_timeout(mono(5000 * MS));
    r.finish(mono(5000 * MS));
    shell.drain(&mut r);
    let fin = shell.finished.take().unwrap();
    assert_eq!(fin.judgement(Outcome::Complete).verdict, Verdict::NoMedia);
}
