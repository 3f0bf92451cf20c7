//! `branchrec bench-storage`: bytes per call-minute and CPU per call for each codec →
//! storage-format pair, on real encoded input.
//!
//! The RTP stream with the most packets in `--pcap` (a real capture, e.g. the G.711
//! calls in `../shared/testdata/pcap/`) is looped into a two-channel call of
//! `--seconds` (channel 1 starts half-way through the stream, so the legs differ),
//! re-stamped with continuous sequence numbers and timestamps. Each pair runs that call
//! `--calls` times through the recorder's own path — RTP → jitter buffer/decoder
//! ([`CallTimeline`]) → [`ContainerWriter`] (PCM, or the Opus encoder at each
//! `--complexity`) → AES-GCM chunks — on one thread, and reports
//! * bytes of container per minute of call,
//! * thread CPU time (from `/proc/thread-self/schedstat`, nanoseconds) per second of
//!   call, and the calls one core sustains in real time (1 s ÷ CPU per second),
//! * for Opus, the correlation of the decoded audio with the PCM path (quality check).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use branchrec_core::time::Mono;

use crate::media::{CallTimeline, Codec, StreamConfig, TimelineConfig};
use crate::recording::opus::OpusSettings;
use crate::recording::{ContainerWriter, HeaderParams};
use crate::vault::{DataKey, KeyFileVault, KeyWrap};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct BenchStorageArgs {
    /// Capture with the RTP stream to use (the stream with the most packets).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Codec of that stream as `NAME/RATE` (e.g. `PCMU/8000`); default from the static
    /// payload type.
    #[arg(long)]
    pub codec: Option<String>,
    /// Sample rate of the recording timeline.
    #[arg(long, default_value_t = 8000)]
    pub rate: u32,
    /// Seconds of call per run.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Calls per pair.
    #[arg(long, default_value_t = 3)]
    pub calls: u32,
    /// Opus complexities to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u8, 2, 5, 8, 10])]
    pub complexity: Vec<u8>,
    /// Opus bitrate (total, bit/s).
    #[arg(long, default_value_t = 32_000)]
    pub bitrate: u32,
    /// Opus constant bitrate instead of VBR.
    #[arg(long)]
    pub cbr: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// CPU time this thread has run, from the scheduler's accounting.
fn thread_cpu() -> anyhow::Result<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .context("parsing schedstat")?;
    Ok(Duration::from_nanos(ns))
}

/// RTP payload type → codec name and clock rate of the static assignments (voice codecs
/// of the codec table).
fn static_pt(pt: u8) -> Option<(&'static str, u32)> {
    let c = crate::media::codec::lookup_static_pt(pt)?;
    Some((c.name(), c.clock_rate?))
}

/// The packets (whole RTP datagrams) of the largest RTP stream in the capture.
fn load_stream(path: &std::path::Path) -> anyhow::Result<(u8, Vec<Vec<u8>>)> {
    use crate::capture::decode::{Decoder, DecoderConfig, Transport};
    use crate::capture::pcapfile::PcapReader;
    let f = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut rd = PcapReader::new(f)?;
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut streams: std::collections::HashMap<(u32, u8), Vec<Vec<u8>>> = Default::default();
    while let Some(fr) = rd.next_frame()? {
        let Some(seg) = dec.decode(crate::capture::capture_time(fr.ts), fr.linktype, &fr.data)
        else {
            continue;
        };
        let p = &seg.payload;
        // UDP, RTP version 2, not RTCP (200–204), not comfort noise (PT 13).
        if seg.transport != Transport::Udp
            || p.len() < 13
            || p[0] >> 6 != 2
            || (200..=204).contains(&p[1])
            || p[1] & 0x7f == 13
        {
            continue;
        }
        let pt = p[1] & 0x7f;
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        streams.entry((ssrc, pt)).or_default().push(p.to_vec());
    }
    let Some(((_, pt), pkts)) = streams.into_iter().max_by_key(|(_, v)| v.len()) else {
        bail!("no RTP stream in {}", path.display());
    };
    Ok((pt, pkts))
}

/// Re-stamp a packet for position `k` of a looped stream.
fn restamp(p: &[u8], k: u32, ts_step: u32, ssrc: u32) -> Vec<u8> {
    let mut v = p.to_vec();
    let csrc = usize::from(v[0] & 0x0f) * 4;
    if v.len() < 12 + csrc {
        return v;
    }
    v[1] &= 0x7f;
    v[2..4].copy_from_slice(&((k & 0xffff) as u16).to_be_bytes());
    v[4..8].copy_from_slice(&k.wrapping_mul(ts_step).to_be_bytes());
    v[8..12].copy_from_slice(&ssrc.to_be_bytes());
    v
}

struct RunResult {
    bytes: u64,
    cpu: Duration,
    audio: Vec<i16>,
}

/// One call through timeline → container; returns file size, thread CPU, and (for the
/// quality check) the decoded audio of the first call.
#[allow(clippy::too_many_arguments)]
fn run_call(
    pkts: &[Vec<u8>],
    cfg: &StreamConfig,
    rate: u32,
    seconds: u32,
    ts_step: u32,
    ptime_us: u64,
    opus: Option<OpusSettings>,
    keep_audio: bool,
) -> anyhow::Result<RunResult> {
    let vault = KeyFileVault::from_key([7; 32]);
    let dk = DataKey::from_bytes([9; 32]);
    let wrapped = vault.wrap(&dk)?;
    let cpu0 = thread_cpu()?;
    let params = HeaderParams {
        recording_id: "bench".into(),
        created_unix_ms: 0,
        sample_rate: rate,
        channels: 2,
        chunk_target_frames: rate / 2,
        kek_id: vault.kek_id(),
        extra_json: String::new(),
    };
    let (mut w, mut file) = ContainerWriter::with_format(params, opus, dk, wrapped, [1; 7])?;
    let mut tl = CallTimeline::new(TimelineConfig {
        channels: 2,
        sample_rate: rate,
        playout_delay: Duration::from_millis(100),
    });
    tl.set_stream_config(0, cfg.clone());
    tl.set_stream_config(1, cfg.clone());
    let n = (u64::from(seconds) * 1_000_000 / ptime_us) as u32;
    let half = pkts.len() / 2;
    let mut samples = Vec::new();
    let mut bytes = file.len() as u64;
    for k in 0..n {
        let at = Mono::from_duration(Duration::from_micros(u64::from(k) * ptime_us));
        for ch in 0..2usize {
            let src = &pkts[(k as usize + ch * half) % pkts.len()];
            tl.push_rtp(ch, at, &restamp(src, k, ts_step, 0x1000 + ch as u32));
        }
        while let Some(start) = tl.poll_audio_into(at, &mut samples) {
            w.push_block(&crate::media::AudioBlock {
                start_frame: start,
                samples: std::mem::take(&mut samples),
            })?;
        }
        while let Some(c) = w.poll_chunk() {
            bytes += c.len() as u64;
            if keep_audio {
                file.extend_from_slice(&c);
            }
        }
    }
    if let Some(b) = tl.finish(Mono::from_duration(Duration::from_micros(
        u64::from(n) * ptime_us,
    ))) {
        w.push_block(&b)?;
    }
    if let Some(c) = w.flush() {
        bytes += c.len() as u64;
        if keep_audio {
            file.extend_from_slice(&c);
        }
    }
    let fin = w.finish();
    bytes += fin.bytes.len() as u64;
    let cpu = thread_cpu()?.saturating_sub(cpu0);
    let audio = if keep_audio {
        file.extend_from_slice(&fin.bytes);
        crate::recording::read_all_audio(&file[..], &vault)?.1
    } else {
        Vec::new()
    };
    Ok(RunResult { bytes, cpu, audio })
}

/// Mean over channels of the normalised correlation of `a` with `b` (interleaved stereo).
fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let mut total = 0.0;
    for ch in 0..2 {
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (x, y) in a
            .iter()
            .skip(ch)
            .step_by(2)
            .zip(b.iter().skip(ch).step_by(2))
        {
            let (x, y) = (f64::from(*x), f64::from(*y));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        total += xy / (xx.sqrt() * yy.sqrt()).max(1.0);
    }
    total / 2.0
}

/// Run the benchmark.
pub fn main(a: BenchStorageArgs) -> anyhow::Result<()> {
    let (pt, pkts) = load_stream(&a.pcap)?;
    let (name, clock) = match &a.codec {
        Some(c) => {
            let (n, r) = c.split_once('/').unwrap_or((c.as_str(), "8000"));
            (
                n.to_string(),
                r.parse::<u32>().context("--codec NAME/RATE")?,
            )
        }
        None => static_pt(pt)
            .map(|(n, r)| (n.to_string(), r))
            .with_context(|| format!("payload type {pt}: give --codec NAME/RATE"))?,
    };
    let codec = Codec::from_encoding_name(&name);
    if matches!(codec, Codec::Unsupported(_)) {
        bail!("codec {name} is not decoded by this build");
    }
    let cfg = StreamConfig {
        payload_types: vec![(pt, codec, clock)],
    };
    // Samples per packet on the RTP clock, from the stream itself.
    let ts_step = pkts
        .windows(2)
        .filter_map(|w| {
            let t = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let d = t(&w[1]).wrapping_sub(t(&w[0]));
            (d > 0 && d < 10_000).then_some(d)
        })
        .min()
        .unwrap_or(clock / 50);
    let ptime_us = u64::from(ts_step) * 1_000_000 / u64::from(clock.max(1));
    if !(5_000..=120_000).contains(&ptime_us) {
        bail!("the stream has {ts_step} samples per packet: not 5–120 ms");
    }
    eprintln!(
        "input: {} packets of {name}/{clock} (PT {pt}) from {}, {} µs per packet, looped into {} s two-channel calls, {} calls per pair, {} Hz timeline; libopus {}",
        pkts.len(),
        a.pcap.display(),
        ptime_us,
        a.seconds,
        a.calls,
        a.rate,
        opus::version()
    );
    let mut pairs: Vec<(String, Option<OpusSettings>)> = vec![("wav".into(), None)];
    for &c in &a.complexity {
        pairs.push((
            format!(
                "opus c{c} {}k {}",
                a.bitrate / 1000,
                if a.cbr { "cbr" } else { "vbr" }
            ),
            Some(OpusSettings {
                bitrate_bps: a.bitrate,
                complexity: c,
                vbr: !a.cbr,
            }),
        ));
    }
    if !a.json {
        println!(
            "{:<10} {:<22} {:>14} {:>16} {:>14} {:>12}",
            "codec", "format", "bytes/call-min", "µs CPU/s of call", "calls/core", "corr vs wav"
        );
    }
    let mut reference: Option<Vec<i16>> = None;
    for (label, opus) in pairs {
        if let Some(s) = &opus {
            s.validate().map_err(anyhow::Error::msg)?;
        }
        let mut cpu = Duration::ZERO;
        let mut bytes = 0u64;
        let mut quality = None;
        for i in 0..a.calls.max(1) {
            let r = run_call(
                &pkts,
                &cfg,
                a.rate,
                a.seconds,
                ts_step,
                ptime_us,
                opus,
                i == 0,
            )?;
            cpu += r.cpu;
            bytes += r.bytes;
            if i == 0 {
                match &reference {
                    None => {
                        let loud = r.audio.iter().filter(|s| s.unsigned_abs() > 64).count();
                        if loud < r.audio.len() / 100 {
                            bail!(
                                "the {} Hz timeline decoded {name}/{clock} to silence: this build \
                                 does not decode that codec at that rate",
                                a.rate
                            );
                        }
                        reference = Some(r.audio)
                    }
                    Some(pcm) => quality = Some(correlation(pcm, &r.audio)),
                }
            }
        }
        let calls = f64::from(a.calls.max(1));
        let call_s = f64::from(a.seconds);
        let per_min = bytes as f64 / calls / (call_s / 60.0);
        let us_per_s = cpu.as_secs_f64() * 1e6 / calls / call_s;
        let per_core = 1e6 / us_per_s.max(1e-9);
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "codec": name, "format": label, "bytes_per_call_minute": per_min.round(),
                    "cpu_us_per_call_second": (us_per_s * 10.0).round() / 10.0,
                    "calls_per_core": per_core.round(),
                    "correlation_vs_wav": quality,
                })
            );
        } else {
            println!(
                "{:<10} {:<22} {:>14.0} {:>16.1} {:>14.0} {:>12}",
                name,
                label,
                per_min,
                us_per_s,
                per_core,
                quality.map_or_else(|| "-".to_string(), |q| format!("{q:.3}"))
            );
        }
    }
    Ok(())
}
