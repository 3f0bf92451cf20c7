//! Decoder tests against reference decoders: ffmpeg (G.722, G.729) and libopus itself.

use std::path::PathBuf;
use std::process::Command;

use super::*;

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/codec"
    ))
    .join(name)
}

/// Run ffmpeg (must be installed: scripts/test-all installs it) and return s16le PCM.
fn ffmpeg_decode(args: &[&str]) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(args)
        .args(["-f", "s16le", "-"])
        .output()
        .expect("ffmpeg is required for the codec tests (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Signal-to-noise ratio of `got` against `want` in dB.
pub(crate) fn snr_db(want: &[i16], got: &[i16]) -> f64 {
    let n = want.len().min(got.len());
    let sig: f64 = want[..n].iter().map(|&v| f64::from(v).powi(2)).sum();
    let err: f64 = want[..n]
        .iter()
        .zip(&got[..n])
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    if err == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (sig / err).log10()
}

fn decode_all(d: &mut dyn Decoder, payloads: impl Iterator<Item = Vec<u8>>) -> Vec<i16> {
    let mut out = Vec::new();
    for p in payloads {
        d.decode(&p, &mut out).expect("decodes");
    }
    out
}

#[test]
fn g722_matches_ffmpeg_on_real_capture() {
    let bytes = std::fs::read(data("g722-wireshark.g722")).unwrap();
    let path = data("g722-wireshark.g722");
    let want = ffmpeg_decode(&["-f", "g722", "-i", path.to_str().unwrap()]);
    let mut d = g722::G722Decoder::new();
    let got = decode_all(&mut d, bytes.chunks(160).map(<[u8]>::to_vec));
    assert_eq!(got.len(), bytes.len() * 2);
    assert_eq!(want.len(), got.len());
    let first_diff = want.iter().zip(&got).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "G.722 differs from ffmpeg");
}

#[test]
fn g722_matches_ffmpeg_on_wideband_sweep() {
    // A 50 Hz → 7.5 kHz sweep plus noise, encoded by ffmpeg's G.722 encoder: exercises
    // both sub-bands over their whole range.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("sweep.g722");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-f", "lavfi", "-i"])
        .arg("aevalsrc=0.6*sin(2*PI*(50+7450*t/6)*t)+0.1*(random(0)-0.5):s=16000:d=3")
        .args(["-c:a", "g722", "-f", "g722"])
        .arg(&raw)
        .status()
        .expect("ffmpeg is required for the codec tests");
    assert!(st.success());
    let bytes = std::fs::read(&raw).unwrap();
    assert!(bytes.len() >= 23_000, "{} bytes", bytes.len());
    let want = ffmpeg_decode(&["-f", "g722", "-i", raw.to_str().unwrap()]);
    let mut d = g722::G722Decoder::new();
    let got = decode_all(&mut d, bytes.chunks(160).map(<[u8]>::to_vec));
    assert_eq!(want, got);
    // A decoder with a broken high band is caught by the same comparison.
    let mut bad = g722::G722Decoder::new();
    let mut broken = Vec::new();
    for &b in &bytes {
        broken.extend_from_slice(&bad.decode_byte(b & 0x3f));
    }
    assert_ne!(want, broken);
    assert!(snr_db(&want, &broken) < 20.0);
}

#[test]
fn g722_reset_state_vector() {
    // Known vector: all-zero code bytes from reset.
    let mut d = g722::G722Decoder::new();
    let mut out = Vec::new();
    d.decode(&[0u8; 4], &mut out).unwrap();
    assert_eq!(out.len(), 8);
    assert_eq!(d.payload_samples(&[0; 160]), Some(320));
}

fn opus_encoder(rate: u32, fec: bool) -> ::opus::Encoder {
    let mut e =
        ::opus::Encoder::new(rate, ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
    e.set_bitrate(::opus::Bitrate::Bits(24000)).unwrap();
    if fec {
        e.set_inband_fec(true).unwrap();
        e.set_packet_loss_perc(20).unwrap();
    }
    e
}

fn speechlike(rate: u32, secs: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let v = env
                * (0.5 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                    + 0.3 * (2.0 * std::f64::consts::PI * 660.0 * t).sin()
                    + 0.15 * (2.0 * std::f64::consts::PI * 1870.0 * t).sin());
            (v * 12000.0) as i16
        })
        .collect()
}

fn opus_packets(rate: u32, fec: bool, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut e = opus_encoder(rate, fec);
    pcm.chunks_exact(rate as usize / 50)
        .map(|f| e.encode_vec(f, 1500).unwrap())
        .collect()
}

#[test]
fn opus_is_bit_exact_with_libopus_at_both_rates() {
    for rate in [8000u32, 16000] {
        let pcm = speechlike(48000, 2.0);
        let pkts = opus_packets(48000, false, &pcm);
        let mut ours = new_decoder(DecoderKind::Opus, rate).unwrap();
        assert_eq!(ours.output_rate(), rate);
        let got = decode_all(ours.as_mut(), pkts.iter().cloned());
        let mut reference = ::opus::Decoder::new(rate, ::opus::Channels::Mono).unwrap();
        let mut want = Vec::new();
        let mut buf = vec![0i16; 5760];
        for p in &pkts {
            let n = reference.decode(p, &mut buf, false).unwrap();
            want.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), rate as usize * 2);
        assert_eq!(got, want);
    }
}

#[test]
fn opus_stereo_packets_decode_to_mono() {
    let mut e =
        ::opus::Encoder::new(48000, ::opus::Channels::Stereo, ::opus::Application::Voip).unwrap();
    let mono = speechlike(48000, 0.2);
    let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
    let mut d = new_decoder(DecoderKind::Opus, 16000).unwrap();
    let mut out = Vec::new();
    for f in stereo.chunks_exact(960 * 2) {
        let p = e.encode_vec(f, 1500).unwrap();
        d.decode(&p, &mut out).unwrap();
    }
    assert_eq!(out.len(), 16000 / 5);
    assert!(out.iter().any(|&s| s.abs() > 1000));
}

#[test]
fn opus_fec_recovers_a_lost_packet_better_than_plc() {
    let rate = 16000;
    let pcm = speechlike(rate, 2.0);
    let pkts = opus_packets(rate, true, &pcm);
    let lost = 50;
    let reference = {
        let mut d = new_decoder(DecoderKind::Opus, rate).unwrap();
        decode_all(d.as_mut(), pkts.iter().cloned())
    };
    let run = |use_fec: bool| {
        let mut d = new_decoder(DecoderKind::Opus, rate).unwrap();
        let mut out = Vec::new();
        let mut conc = Concealment::default();
        for (i, p) in pkts.iter().enumerate() {
            if i == lost {
                continue;
            }
            if i == lost + 1 {
                conc = d
                    .conceal(320, use_fec.then_some(p.as_slice()), &mut out)
                    .unwrap();
            }
            d.decode(p, &mut out).unwrap();
        }
        (out, conc)
    };
    let (fec, c_fec) = run(true);
    let (plc, c_plc) = run(false);
    assert_eq!((c_fec.fec_samples, c_fec.plc_samples), (320, 0));
    assert_eq!((c_plc.fec_samples, c_plc.plc_samples), (0, 320));
    assert_eq!(fec.len(), reference.len());
    let seg = lost * 320..(lost + 1) * 320;
    let snr_fec = snr_db(&reference[seg.clone()], &fec[seg.clone()]);
    let snr_plc = snr_db(&reference[seg.clone()], &plc[seg]);
    // LBRR is a low-rate re-encoding, so its waveform match is modest, but better than
    // extrapolation. The figures depend on libopus' build: Debian's amd64 library gives
    // FEC > 2 dB; its arm64 build (run under qemu-aarch64 in CI) FEC 1.3 dB vs PLC 0.4 dB.
    assert_ne!(fec[seg_range(lost)], plc[seg_range(lost)]);
    assert!(
        snr_fec > snr_plc + 0.6 && snr_fec > 1.0,
        "FEC {snr_fec:.1} dB vs PLC {snr_plc:.1} dB"
    );
}

fn seg_range(k: usize) -> std::ops::Range<usize> {
    k * 320..(k + 1) * 320
}

#[test]
fn opus_rejects_garbage_without_panicking() {
    let mut d = new_decoder(DecoderKind::Opus, 8000).unwrap();
    let mut out = Vec::new();
    assert!(d.decode(&[], &mut out).is_err());
    // Code 3 packet claiming 63 frames of 120 ms.
    assert!(d.decode(&[0xfb, 0x3f], &mut out).is_err());
    for b in 0..=255u8 {
        let _ = d.decode(&[b, 0xff, 0x00, b], &mut out);
    }
}

#[cfg(feature = "g729")]
#[test]
fn g729_close_to_ffmpeg_on_real_capture() {
    let bytes = std::fs::read(data("g729a-wireshark.bit")).unwrap();
    let path = data("g729a-wireshark.bit");
    let want = ffmpeg_decode(&["-f", "g729", "-i", path.to_str().unwrap()]);
    let mut d = new_decoder(DecoderKind::G729, 8000).unwrap();
    let got = decode_all(d.as_mut(), bytes.chunks(20).map(<[u8]>::to_vec));
    assert_eq!(got.len(), 850 * 80);
    assert_eq!(want.len(), got.len());
    // Two independent G.729 decoders (bcg729 vs libavcodec) agree closely but not
    // bit-exactly; a decoder fed wrong frames does not.
    let snr = snr_db(&want, &got);
    assert!(snr > 15.0, "SNR vs ffmpeg {snr:.1} dB");
    let mut d = new_decoder(DecoderKind::G729, 8000).unwrap();
    let shifted = decode_all(d.as_mut(), bytes[10..].chunks(20).map(<[u8]>::to_vec));
    assert!(snr_db(&want, &shifted) < 3.0);
}

#[cfg(feature = "g729")]
#[test]
fn g729_frame_layouts_sid_and_concealment() {
    let mut d = new_decoder(DecoderKind::G729, 8000).unwrap();
    let mut out = Vec::new();
    assert_eq!(d.payload_samples(&[0; 20]), Some(160));
    assert_eq!(d.payload_samples(&[0; 22]), Some(240));
    assert_eq!(d.payload_samples(&[0; 2]), Some(80));
    assert_eq!(d.payload_samples(&[0; 15]), None);
    assert!(d.decode(&[], &mut out).is_err());
    assert!(d.decode(&[0; 7], &mut out).is_err());
    let bytes = std::fs::read(data("g729a-wireshark.bit")).unwrap();
    d.decode(&bytes[..20], &mut out).unwrap();
    assert_eq!(out.len(), 160);
    // After speech: at most 120 ms of concealment.
    let c = d.conceal(8000, None, &mut out).unwrap();
    assert_eq!(c.plc_samples, 960);
    // A SID frame, then DTX: comfort noise fills the whole gap.
    out.clear();
    d.decode(&[0x5a, 0xa8], &mut out).unwrap();
    assert_eq!(out.len(), 80);
    let c = d.conceal(1600, None, &mut out).unwrap();
    assert_eq!(c.plc_samples, 1600);
    assert_eq!(out.len(), 1680);
}

#[cfg(not(feature = "g729"))]
#[test]
fn g729_unavailable_without_feature() {
    assert!(!DecoderKind::G729.available());
    assert!(matches!(
        new_decoder(DecoderKind::G729, 8000),
        Err(CodecError::Unavailable(_))
    ));
}
