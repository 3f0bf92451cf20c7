//! End-to-end codec tests through the daemon: SIPp plays the SIPREC client
//! (tests/sipp/codec_call.xml, codec_switch.xml), branchrec-loadgen sends G.722 (encoded
//! by ffmpeg), Opus (encoded with libopus, some packets dropped) and G.729 (frames from
//! the shared capture), and the exported WAV is checked against reference decoders:
//! ffmpeg for G.722 (bit-exact) and G.729 (SNR, different implementation), libopus for
//! Opus (bit-exact without loss, SNR with loss). Needs sipp, ffmpeg/ffprobe; missing tools
//! make the tests FAIL.

mod common;

use common::g711::Codec;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn loadgen(dir: &Path) -> String {
    private_copy(env!("CARGO_BIN_EXE_branchrec-loadgen"), dir, "rtp")
        .display()
        .to_string()
}

fn start(dir: &Path) -> Daemon {
    require_tool("sipp", "sip-tester");
    require_tool("ffmpeg", "ffmpeg");
    require_tool("ffprobe", "ffmpeg");
    Daemon::start(dir)
}

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn s16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A speech-like test signal at `rate` (voiced harmonics with a syllable envelope, plus
/// noise), `secs` long, rendered by ffmpeg; different per `seed`.
fn signal(dir: &Path, name: &str, rate: u32, secs: f64, seed: u32) -> std::path::PathBuf {
    let f0 = 110 + 37 * seed;
    let expr = format!(
        "(0.35+0.3*sin(2*PI*{e}*t))*(0.5*sin(2*PI*{f0}*t)+0.25*sin(2*PI*{f1}*t)+0.12*sin(2*PI*{f2}*t)+0.05*sin(2*PI*{f3}*t))+0.02*(random({seed})-0.5)",
        e = 3 + seed,
        f1 = 3 * f0,
        f2 = 7 * f0 + 13,
        f3 = 29 * f0,
    );
    let path = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("aevalsrc={expr}:s={rate}:d={secs}"),
        "-f",
        "s16le",
        "-ac",
        "1",
        path.to_str().expect("utf-8"),
    ]);
    path
}

fn id_of(rec: &Value) -> String {
    rec["id"].as_str().expect("id").to_string()
}

/// Export and check with ffprobe; returns the channels.
fn export(d: &Daemon, id: &str, dir: &Path, rate: u32) -> Vec<Vec<i16>> {
    let wav = dir.join("export.wav");
    d.recordings(&["export", id, "--out", wav.to_str().expect("utf-8")]);
    let (codec, r, ch) = ffprobe(&wav);
    assert_eq!((codec.as_str(), r, ch), ("pcm_s16le", rate, 2), "ffprobe");
    let w = read_wav(&wav);
    assert_eq!((w.channels, w.rate), (2, rate));
    w.data
}

fn first_nonzero(x: &[i16]) -> usize {
    x.iter().position(|&s| s != 0).unwrap_or(x.len())
}

/// `reference` (leading zeros trimmed) appears bit-exact in `channel` at or after
/// `from`; returns the position of `reference[0]`.
fn find_exact(name: &str, channel: &[i16], reference: &[i16], from: usize) -> usize {
    let r0 = first_nonzero(reference);
    let want = &reference[r0..];
    let c0 = from + first_nonzero(&channel[from..]);
    assert!(
        c0 + want.len() <= channel.len(),
        "{name}: audio at {c0} runs past the end ({} samples)",
        channel.len()
    );
    if let Some(i) = (0..want.len()).find(|&i| channel[c0 + i] != want[i]) {
        panic!(
            "{name}: not bit-exact at reference sample {} (recorded {:?} vs reference {:?})",
            r0 + i,
            &channel[c0 + i..(c0 + i + 6).min(channel.len())],
            &want[i..(i + 6).min(want.len())]
        );
    }
    c0 - r0
}

/// Offset within `around - search ..= around + search + late` where all of `reference`
/// appears bit-exact.
fn exact_near(
    name: &str,
    channel: &[i16],
    reference: &[i16],
    around: usize,
    search: usize,
    late: usize,
) -> usize {
    (around.saturating_sub(search)..=around + search + late)
        .find(|&o| channel.get(o..o + reference.len()) == Some(reference))
        .unwrap_or_else(|| {
            let (o, snr) = best_snr(channel, reference, around, search);
            panic!("{name}: not found bit-exact near {around} (best: {snr:.1} dB at {o})")
        })
}

fn snr_db(want: &[i16], got: &[i16]) -> f64 {
    let n = want.len().min(got.len());
    let sig: f64 = want[..n].iter().map(|&v| f64::from(v).powi(2)).sum();
    let err: f64 = (0..n)
        .map(|i| (f64::from(want[i]) - f64::from(got[i])).powi(2))
        .sum();
    if err == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (sig / err).log10()
}

/// Best SNR of `reference` placed at `around ± search` in `channel`; (offset, dB).
fn best_snr(channel: &[i16], reference: &[i16], around: usize, search: usize) -> (usize, f64) {
    (around.saturating_sub(search)..=around + search)
        .filter(|&o| o + reference.len() <= channel.len())
        .map(|o| (o, snr_db(reference, &channel[o..o + reference.len()])))
        .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
}

/// Encode a raw 16 kHz file to raw G.722 with ffmpeg (the reference encoder) and decode
/// it back with ffmpeg (the reference decoder): (G.722 file, reference PCM).
fn g722_encode(dir: &Path, pcm: &Path, name: &str) -> (std::path::PathBuf, Vec<i16>) {
    let g = dir.join(name);
    let (pcm, gs) = (pcm.to_str().expect("utf-8"), g.to_str().expect("utf-8"));
    ffmpeg(&[
        "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", pcm, "-c:a", "g722", "-f", "g722", gs,
    ]);
    let reference = s16(&ffmpeg(&["-f", "g722", "-i", gs, "-f", "s16le", "-"]));
    (g, reference)
}

/// Opus packets exactly as branchrec-loadgen makes them (src/bin/loadgen/codecs.rs:
/// 48 kHz mono VoIP, 32 kbit/s, in-band FEC, 10 % expected loss, 20 ms frames).
fn opus_packets(pcm48: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32000)).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(10).unwrap();
    pcm48
        .chunks(960)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(960, 0);
            enc.encode_vec(&f, 1500).unwrap()
        })
        .collect()
}

/// libopus at 16 kHz over all packets: the reference for a loss-free stream.
fn opus_reference(pkts: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = opus::Decoder::new(16000, opus::Channels::Mono).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0i16; 1920];
    for p in pkts {
        let n = dec.decode(p, &mut buf, false).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

struct Call {
    rec: Value,
    detail: Value,
    chans: Vec<Vec<i16>>,
    call_ms: i64,
}

/// One codec_call.xml call: keys, then the recording, its detail and the export.
fn codec_call(dir: &Path, d: &Daemon, keys: &[(&str, String)], rate: u32) -> Call {
    let mut all = vec![("loadgen", loadgen(dir))];
    all.extend(keys.iter().cloned());
    let run = run_call_ok("codec_call.xml", &d, &all, dir);
    let rec = the_recording(d);
    assert_eq!(rec["state"], "complete", "{rec}");
    let id = id_of(&rec);
    let detail = d.recordings_json(&["show", &id, "--json"]);
    // Issue #13 item 2: every codec path writes the one channel stats schema.
    assert_stats_schema(&detail, 2);
    let chans = export(d, &id, dir, rate);
    let call_ms = (run.marks["T_BYE"] - run.marks["T_ACK"]) as i64;
    let len_ms = (chans[0].len() as u64 * 1000 / u64::from(rate)) as i64;
    assert_call_length("export length vs the call", len_ms, &run, 100);
    Call {
        rec,
        detail,
        chans,
        call_ms,
    }
}

fn no_loss(detail: &Value, ch: usize, received: u64) {
    let s = channel_stats(detail, ch);
    assert_eq!(s["received"], received, "channel {ch}: {s}");
    for k in ["lost", "late", "decode_errors", "unsupported_payload"] {
        assert_eq!(s[k], 0, "channel {ch} {k}: {s}");
    }
}

#[test]
fn g722_call_is_recorded_at_16k_bit_exact_with_ffmpeg() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let d = start(dir);
    let mut refs = Vec::new();
    for (n, seed) in [("a", 1u32), ("b", 2)] {
        let pcm = signal(dir, &format!("{n}.s16"), 16000, 2.0, seed);
        let (_, reference) = g722_encode(dir, &pcm, &format!("{n}.g722"));
        refs.push(reference);
    }
    let keys = [
        ("pts", "9 101".to_string()),
        ("rtpmap1", "9 G722/8000".to_string()),
        ("rtpmap2", "101 telephone-event/8000".to_string()),
        ("fmtp1", "101 0-16".to_string()),
        ("codec", "g722".to_string()),
        ("drop", String::new()),
        ("audio_a", dir.join("a.g722").display().to_string()),
        ("audio_b", dir.join("b.g722").display().to_string()),
        // media_ms: the 2 s of audio plus a margin before SIPp's BYE. SIPp execs the loadgen
        // without waiting for it, so the loadgen's start-up eats into that margin: 1.6 s
        // (was 0.6 s) keeps a loaded machine from cutting the tail.
        ("media_ms", "3600".to_string()),
    ];
    let c = codec_call(dir, &d, &keys, 16000);
    assert!(
        c.rec["codec"].as_str().unwrap_or("").contains("G722"),
        "{}",
        c.rec
    );
    no_loss(&c.detail, 0, 100);
    no_loss(&c.detail, 1, 100);
    let oa = find_exact("channel 0", &c.chans[0], &refs[0], 0);
    let ob = find_exact("channel 1", &c.chans[1], &refs[1], 0);
    assert!(oa.abs_diff(ob) <= 320, "channels misaligned: {oa} vs {ob}");
    assert!(c.call_ms > 2000);
}

#[test]
fn opus_call_with_loss_uses_fec_and_matches_libopus() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let d = start(dir);
    let a = signal(dir, "a.s16", 48000, 2.0, 3);
    let b = signal(dir, "b.s16", 48000, 2.0, 4);
    let pa = opus_packets(&s16(&std::fs::read(&a).unwrap()));
    let pb = opus_packets(&s16(&std::fs::read(&b).unwrap()));
    let drops = [10usize, 25, 40, 70];
    let keys = [
        ("pts", "111 101".to_string()),
        ("rtpmap1", "111 opus/48000/2".to_string()),
        ("rtpmap2", "101 telephone-event/48000".to_string()),
        ("fmtp1", "111 useinbandfec=1; minptime=20".to_string()),
        ("codec", "opus".to_string()),
        ("drop", "10,25,40,70".to_string()),
        ("audio_a", a.display().to_string()),
        ("audio_b", b.display().to_string()),
        // media_ms: the 2 s of audio plus a margin before SIPp's BYE. SIPp execs the loadgen
        // without waiting for it, so the loadgen's start-up eats into that margin: 1.6 s
        // (was 0.6 s) keeps a loaded machine from cutting the tail.
        ("media_ms", "3600".to_string()),
    ];
    let c = codec_call(dir, &d, &keys, 16000);
    assert!(
        c.rec["codec"]
            .as_str()
            .unwrap_or("")
            .eq_ignore_ascii_case("opus"),
        "{}",
        c.rec
    );
    // Channel 1: no loss, the same library: bit-exact.
    no_loss(&c.detail, 1, 100);
    let rb = opus_reference(&pb);
    let ob = find_exact("channel 1", &c.chans[1], &rb, 0);
    // Channel 0: four packets lost, each rebuilt from the next packet's FEC data.
    let s = channel_stats(&c.detail, 0);
    assert_eq!(s["received"], 96, "{s}");
    assert_eq!(s["lost"], 4, "{s}");
    assert_eq!(s["fec_recovered"], 4, "{s}");
    assert_eq!(s["late"], 0, "{s}");
    let ra = opus_reference(&pa);
    let (oa, snr) = best_snr(&c.chans[0], &ra, ob, 320);
    assert!(oa.abs_diff(ob) <= 320, "channels misaligned: {oa} vs {ob}");
    assert!(
        snr > 12.0,
        "channel 0 vs loss-free libopus decode: {snr:.1} dB"
    );
    for k in drops {
        let lost = &c.chans[0][oa + 320 * k..oa + 320 * (k + 1)];
        let want = &ra[320 * k..320 * (k + 1)];
        let e_got: f64 = lost.iter().map(|&v| f64::from(v).powi(2)).sum();
        let e_want: f64 = want.iter().map(|&v| f64::from(v).powi(2)).sum();
        assert!(
            e_got > 0.1 * e_want,
            "packet {k}: concealed audio has {e_got:.0} energy vs {e_want:.0}"
        );
    }
}

#[cfg(feature = "g729")]
#[test]
fn g729_call_from_capture_frames_matches_ffmpeg() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let d = start(dir);
    let bits = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/codec/g729a-wireshark.bit"
    ))
    .expect("g729 frames");
    let mut refs = Vec::new();
    for (n, range) in [("a", 0..2000), ("b", 3000..5000)] {
        let p = dir.join(format!("{n}.g729"));
        std::fs::write(&p, &bits[range]).unwrap();
        refs.push(s16(&ffmpeg(&[
            "-f",
            "g729",
            "-i",
            p.to_str().unwrap(),
            "-f",
            "s16le",
            "-",
        ])));
    }
    let keys = [
        ("pts", "18 101".to_string()),
        ("rtpmap1", "18 G729/8000".to_string()),
        ("rtpmap2", "101 telephone-event/8000".to_string()),
        ("fmtp1", "18 annexb=no".to_string()),
        ("codec", "g729".to_string()),
        ("drop", String::new()),
        ("audio_a", dir.join("a.g729").display().to_string()),
        ("audio_b", dir.join("b.g729").display().to_string()),
        // media_ms: the 2 s of audio plus a margin before SIPp's BYE. SIPp execs the loadgen
        // without waiting for it, so the loadgen's start-up eats into that margin: 1.6 s
        // (was 0.6 s) keeps a loaded machine from cutting the tail.
        ("media_ms", "3600".to_string()),
    ];
    let c = codec_call(dir, &d, &keys, 8000);
    assert!(
        c.rec["codec"].as_str().unwrap_or("").contains("G729"),
        "{}",
        c.rec
    );
    for (ch, (chan, reference)) in c.chans.iter().zip(&refs).enumerate() {
        no_loss(&c.detail, ch, 100);
        let start = first_nonzero(chan);
        let (_, snr) = best_snr(chan, reference, start, 160);
        // bcg729 and libavcodec are independent G.729 decoders: close, not identical.
        assert!(
            snr > 15.0,
            "channel {ch} vs ffmpeg's G.729 decoder: {snr:.1} dB"
        );
    }
}

#[test]
fn codec_switch_by_reinvite_keeps_one_timeline() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let d = start(dir);
    // Speech-like (band-limited) audio, already on G.711 levels.
    let p = signal(dir, "p.s16", 8000, 1.0, 7);
    let pcmu: Vec<i16> = s16(&std::fs::read(&p).unwrap())
        .iter()
        .map(|&v| Codec::Pcmu.roundtrip(v))
        .collect();
    write_raw(&dir.join("p.raw"), &pcmu);
    let g = signal(dir, "g.s16", 16000, 1.0, 5);
    let (g722, g_ref) = g722_encode(dir, &g, "g.g722");
    let o = signal(dir, "o.s16", 48000, 1.0, 6);
    let o_ref = opus_reference(&opus_packets(&s16(&std::fs::read(&o).unwrap())));
    let keys = [
        ("loadgen", loadgen(dir)),
        ("audio_pcmu", dir.join("p.raw").display().to_string()),
        ("audio_g722", g722.display().to_string()),
        ("audio_opus", o.display().to_string()),
        ("phase_ms", "1150".to_string()),
    ];
    let run = run_call_ok("codec_switch.xml", &d, &keys, dir);
    let rec = the_recording(&d);
    // The offer listed G.722 and Opus: a 16 kHz recording from the start (the export
    // below is checked to be 16 kHz).
    let id = id_of(&rec);
    let detail = d.recordings_json(&["show", &id, "--json"]);
    assert_stats_schema(&detail, 2);
    let chans = export(&d, &id, dir, 16000);
    let mut g_at = Vec::new();
    #[allow(clippy::needless_range_loop)] // `ch` is also the stats' channel number
    for ch in 0..2 {
        let s = channel_stats(&detail, ch);
        assert_eq!(s["received"], 150, "channel {ch}: {s}");
        assert_eq!(s["codec_changes"], 2, "channel {ch}: {s}");
        for k in ["lost", "late", "decode_errors", "unsupported_payload"] {
            assert_eq!(s[k], 0, "channel {ch} {k}: {s}\n{}", d.log_text());
        }
        let c = &chans[ch];
        // G.711 first, resampled to 16 kHz; it starts at the first non-zero sample.
        let p0 = first_nonzero(c);
        // G.722 is bit-exact and continues exactly where the 1 s of G.711 ended.
        // Each phase starts [phase_ms] = 1150 ms (+ the re-INVITE round trip and the
        // sender's start-up) after the previous one: G.722 and Opus are bit-exact and each
        // starts at its arrival, 1150–1400 ms after the previous codec's start idle. Each
        // phase is a new loadgen process that SIPp execs without waiting for it, and
        // audio is placed at its arrival, so on a loaded machine a phase can start up to
        // LATE (500 ms) later still: arrival timing, not content (the audio is still found
        // bit-exact, and the pauses below still hold exact silence). Seen: Opus not within
        // 1400 ms of G.722's start with both cores busy.
        const LATE: usize = 8_000;
        let g0 = exact_near(
            &format!("channel {ch} G.722"),
            c,
            &g_ref,
            p0 + 20_400,
            2_000,
            LATE,
        );
        let o0 = exact_near(
            &format!("channel {ch} Opus"),
            c,
            &o_ref,
            g0 + 20_400,
            2_000,
            LATE,
        );
        eprintln!("channel {ch}: G.711 at {p0}, G.722 at {g0}, Opus at {o0}");
        for (what, gap) in [("G.711→G.722", g0 - p0), ("G.722→Opus", o0 - g0)] {
            assert!(
                (18_400..=22_400 + LATE).contains(&gap),
                "channel {ch}: {what} start-to-start {gap} samples"
            );
        }
        // Between the codecs: exactly the pause, as silence.
        assert!(
            c[p0 + 16_000 + 48..g0].iter().all(|&v| v == 0),
            "channel {ch}: pause 1"
        );
        assert!(
            c[g0 + 16_000..o0].iter().all(|&v| v == 0),
            "channel {ch}: pause 2"
        );
        // The G.711 part is the sent audio, upsampled (ffmpeg's resampler as reference).
        let raw = dir.join("p.raw");
        let up = s16(&ffmpeg(&[
            "-f",
            "s16le",
            "-ar",
            "8000",
            "-ac",
            "1",
            "-i",
            raw.to_str().unwrap(),
            "-ar",
            "16000",
            "-f",
            "s16le",
            "-",
        ]));
        let (_, snr) = best_snr(c, &up[200..15_800], p0 + 200, 8);
        assert!(
            snr > 25.0,
            "channel {ch} G.711 part vs ffmpeg-resampled: {snr:.1} dB"
        );
        assert!(
            c[o0 + o_ref.len()..].iter().all(|&v| v == 0),
            "channel {ch}: silence after"
        );
        g_at.push(g0);
    }
    // After a pause each codec is placed at its first packet's arrival, so the two
    // channels agree to within arrival jitter (a debug daemon on a busy CI box: 40 ms).
    assert!(
        g_at[0].abs_diff(g_at[1]) <= 640,
        "channels misaligned: {g_at:?}"
    );
    let len_ms = (chans[0].len() / 16) as i64;
    assert_call_length("export length vs the call", len_ms, &run, 100);
}
