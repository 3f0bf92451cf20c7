//! Decode cost per codec: microseconds of CPU per 20 ms frame of one stream, for each
//! decoder alone and through the whole timeline path (RTP parse, reorder check, decode,
//! resample, ring write) at the recording rates the daemon uses.
//!
//! ```sh
//! cargo run --release --example codec_bench --features g729 [-- SECONDS]
//! ```
//! (without `--features g729` the G.729 rows are skipped). Inputs: the G.722 and G.729
//! payloads in tests/data/codec (real captures), Opus encoded here from a speech-like
//! signal with libopus (20 ms, 32 kbit/s, FEC on).

use std::time::{Duration, Instant};

use branchrec::media::codec::{new_decoder, DecoderKind, Resampler};
use branchrec::media::{CallTimeline, Codec, StreamConfig, TimelineConfig};

fn payloads(kind: DecoderKind) -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/codec/");
    match kind {
        DecoderKind::G722 => std::fs::read(format!("{dir}g722-wireshark.g722"))
            .expect("G.722 vector")
            .chunks(160)
            .map(<[u8]>::to_vec)
            .collect(),
        DecoderKind::G729 => std::fs::read(format!("{dir}g729a-wireshark.bit"))
            .expect("G.729 vector")
            .chunks(20)
            .map(<[u8]>::to_vec)
            .collect(),
        DecoderKind::Opus => {
            let mut e =
                opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
            e.set_bitrate(opus::Bitrate::Bits(32000)).unwrap();
            e.set_inband_fec(true).unwrap();
            e.set_packet_loss_perc(10).unwrap();
            (0..500)
                .map(|k| {
                    let f: Vec<i16> = (0..960)
                        .map(|i| {
                            let t = (k * 960 + i) as f64 / 48000.0;
                            ((0.5 + 0.5 * (6.0 * t).sin())
                                * (9000.0 * (2.0 * std::f64::consts::PI * 180.0 * t).sin()
                                    + 3000.0 * (2.0 * std::f64::consts::PI * 1270.0 * t).sin()))
                                as i16
                        })
                        .collect();
                    e.encode_vec(&f, 1500).unwrap()
                })
                .collect()
        }
        DecoderKind::Pcmu | DecoderKind::Pcma => (0..500)
            .map(|k| (0..160).map(|i| ((k * 7 + i * 13) % 256) as u8).collect())
            .collect(),
    }
}

/// CPU time this thread has run (Linux `/proc/thread-self/schedstat`, ns), so the
/// figures are CPU, not wall clock, on a busy machine.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A timer over this thread's CPU time.
struct Cpu(u64);

impl Cpu {
    fn start() -> Cpu {
        Cpu(cpu_ns())
    }
}

fn per_frame(t: Cpu, frames: u64) -> f64 {
    (cpu_ns().saturating_sub(t.0)) as f64 / 1e3 / frames as f64
}

/// Decoder alone (plus resampler to `rate` if its output differs).
fn bench_decoder(kind: DecoderKind, rate: u32, secs: f64) -> Option<f64> {
    let pls = payloads(kind);
    let mut d = new_decoder(kind, rate).ok()?;
    let mut r = (d.output_rate() != rate).then(|| Resampler::new(d.output_rate(), rate));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let cpu = Cpu::start();
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for p in &pls {
            a.clear();
            d.decode(p, &mut a).ok()?;
            if let Some(r) = r.as_mut() {
                b.clear();
                r.process(&a, &mut b);
            }
            frames += 1;
        }
    }
    Some(per_frame(cpu, frames))
}

/// Opus loss path: every packet treated as following a loss (FEC decode + normal decode).
fn bench_opus_fec(rate: u32, secs: f64) -> f64 {
    let pls = payloads(DecoderKind::Opus);
    let mut d = new_decoder(DecoderKind::Opus, rate).expect("opus");
    let mut a = Vec::new();
    let cpu = Cpu::start();
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for p in &pls {
            a.clear();
            let _ = d.conceal(rate as usize / 50, Some(p), &mut a);
            frames += 1;
        }
    }
    per_frame(cpu, frames)
}

/// Whole timeline path: one channel, packets in order, polled every 20 ms.
fn bench_timeline(
    codec: Codec,
    pt: u8,
    clock: u32,
    kind: DecoderKind,
    rate: u32,
    secs: f64,
) -> Option<f64> {
    if !kind.available() {
        return None;
    }
    let pls = payloads(kind);
    let step = if clock == 48000 { 960 } else { 160 };
    let mut t = CallTimeline::new(TimelineConfig {
        channels: 1,
        sample_rate: rate,
        playout_delay: Duration::from_millis(300),
    });
    t.set_stream_config(
        0,
        StreamConfig {
            payload_types: vec![(pt, codec, clock)],
        },
    );
    let mut out = Vec::new();
    let mut pkt = Vec::with_capacity(1600);
    let cpu = Cpu::start();
    let start = Instant::now();
    let mut k = 0u32;
    while start.elapsed().as_secs_f64() < secs {
        for p in &pls {
            pkt.clear();
            pkt.extend_from_slice(&[0x80, pt]);
            pkt.extend_from_slice(&(k as u16).to_be_bytes());
            pkt.extend_from_slice(&k.wrapping_mul(step).to_be_bytes());
            pkt.extend_from_slice(&7u32.to_be_bytes());
            pkt.extend_from_slice(p);
            let at = branchrec::time::Mono::from_millis(20 * u64::from(k));
            t.push_rtp(0, at, &pkt);
            t.poll_audio_into(at, &mut out);
            k += 1;
        }
    }
    Some(per_frame(cpu, u64::from(k)))
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let fmt = |v: Option<f64>| v.map_or("  (not built)".to_string(), |v| format!("{v:9.2}"));
    println!("µs of CPU (thread CPU time) per 20 ms frame, one stream ({secs} s wall per row)");
    println!("{:<40} {:>9}", "decoder (+ resampler)", "µs/frame");
    for (name, kind, rate) in [
        ("G.711 µ-law → 16 kHz", DecoderKind::Pcmu, 16000),
        ("G.722 → 16 kHz", DecoderKind::G722, 16000),
        ("G.722 → 8 kHz", DecoderKind::G722, 8000),
        ("Opus → 16 kHz", DecoderKind::Opus, 16000),
        ("Opus → 8 kHz", DecoderKind::Opus, 8000),
        ("G.729A → 8 kHz", DecoderKind::G729, 8000),
        ("G.729A → 16 kHz", DecoderKind::G729, 16000),
    ] {
        println!("{name:<40} {}", fmt(bench_decoder(kind, rate, secs)));
    }
    println!(
        "{:<40} {:9.2}",
        "Opus FEC rebuild of a lost frame, 16 kHz",
        bench_opus_fec(16000, secs)
    );
    println!(
        "{:<40} {:>9}",
        "timeline path (parse..ring write)", "µs/frame"
    );
    for (name, codec, pt, clock, kind, rate) in [
        (
            "G.711 µ-law, 8 kHz recording (table)",
            Codec::Audio(DecoderKind::Pcmu),
            0,
            8000,
            DecoderKind::Pcmu,
            8000,
        ),
        (
            "G.711 µ-law, 16 kHz recording",
            Codec::Audio(DecoderKind::Pcmu),
            0,
            8000,
            DecoderKind::Pcmu,
            16000,
        ),
        (
            "G.722, 16 kHz recording",
            Codec::Audio(DecoderKind::G722),
            9,
            8000,
            DecoderKind::G722,
            16000,
        ),
        (
            "Opus, 16 kHz recording",
            Codec::Audio(DecoderKind::Opus),
            111,
            48000,
            DecoderKind::Opus,
            16000,
        ),
        (
            "G.729, 8 kHz recording",
            Codec::Audio(DecoderKind::G729),
            18,
            8000,
            DecoderKind::G729,
            8000,
        ),
    ] {
        println!(
            "{name:<40} {}",
            fmt(bench_timeline(codec, pt, clock, kind, rate, secs))
        );
    }
}
