//! The `bench` subcommand: N concurrent SIPREC calls over UDP against a running recorder,
//! each with two G.711 streams at real-time pace, while sampling the recorder's CPU time and
//! RSS from /proc. One thread, one absolute 20 ms tick loop: each tick drains SIP
//! responses, starts calls due by the ramp, retransmits, and sends every active call's two
//! packets from a fixed buffer (no allocation per packet).

use crate::g711::Codec;
use crate::rtp::{write_header, PTIME, RTP_HEADER_LEN, SAMPLES_PER_PACKET};
use crate::sip::{self, CallIds, Endpoint};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Recorder's SIP UDP address.
    pub target: SocketAddr,
    /// Number of calls.
    pub calls: u32,
    /// Media duration of each call.
    pub duration: Duration,
    /// Calls are started evenly over this time.
    pub ramp: Duration,
    /// Recorder PID for /proc sampling.
    pub daemon_pid: Option<u32>,
    /// Local address for SIP and RTP sockets.
    pub bind: IpAddr,
    /// Codec.
    pub codec: Codec,
    /// Number of RTP socket pairs to send from.
    pub socket_pairs: usize,
    /// Hard deadline for the whole run (calls are abandoned after it).
    pub deadline: Duration,
    /// Recorder config, to verify counters with `branchrec recordings`.
    pub config: Option<PathBuf>,
    /// The branchrec binary used for verification.
    pub branchrec: PathBuf,
    /// Verify at most this many calls (0 = all).
    pub verify_limit: usize,
    /// Wait after the last BYE before verifying.
    pub settle: Duration,
    /// Longest wait for the recorder to close all recordings before verifying.
    pub verify_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Inviting,
    Active,
    Byeing,
    Done,
    Failed,
}

struct Call {
    ids: CallIds,
    state: State,
    start_at: Duration,
    invite: String,
    ack: String,
    bye: String,
    next_retx: Instant,
    retx_interval: Duration,
    give_up_at: Instant,
    dest: [SocketAddr; 2],
    sock_pair: usize,
    ssrc: [u32; 2],
    seq0: [u16; 2],
    ts0: [u32; 2],
    first_tick: u64,
    packets_per_stream: u64,
    sent: [u64; 2],
    fail_code: u16,
    answered_at: Option<Instant>,
    bye_at: Option<Instant>,
    remote_bye: bool,
}

/// One /proc sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_us: u64,
    rss_kb: u64,
    packets: u64,
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime+stime of a process in µs, from /proc/PID/stat.
pub fn proc_cpu_us(pid: u32, tck: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / tck)
}

/// VmRSS of a process in kB, from /proc/PID/status.
pub fn proc_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn tone_table(codec: Codec, freq: f64, amp: f64) -> Vec<[u8; SAMPLES_PER_PACKET]> {
    // 1 s of tone, 50 packets; 8000/freq must divide 8000 for a seamless loop (integer Hz).
    (0..50)
        .map(|p| {
            let mut pkt = [0u8; SAMPLES_PER_PACKET];
            for (i, b) in pkt.iter_mut().enumerate() {
                let n = (p * SAMPLES_PER_PACKET + i) as f64;
                let s = (amp * (2.0 * std::f64::consts::PI * freq * n / 8000.0).sin()) as i16;
                *b = codec.encode(s);
            }
            pkt
        })
        .collect()
}

/// Runs the benchmark; returns the JSON report.
pub fn run(o: &BenchOpts) -> Result<Value> {
    if o.calls == 0 {
        bail!("--calls must be > 0");
    }
    let tck = clk_tck();
    let sip_sock = UdpSocket::bind((o.bind, 0)).context("binding SIP socket")?;
    sip_sock.set_nonblocking(true)?;
    let ep = Endpoint {
        local: sip_sock.local_addr()?,
        target: o.target,
    };
    let pairs = o.socket_pairs.max(1);
    let mut rtp_socks = Vec::with_capacity(pairs * 2);
    for _ in 0..pairs * 2 {
        rtp_socks.push(UdpSocket::bind((o.bind, 0)).context("binding RTP socket")?);
    }
    let tables = [
        tone_table(o.codec, 400.0, 6000.0),
        tone_table(o.codec, 1000.0, 4000.0),
    ];
    let packets_per_stream = (o.duration.as_millis() / PTIME.as_millis()).max(1) as u64;
    let run_id: u32 = rand::random();
    let bind_s = o.bind.to_string();
    let mut calls: Vec<Call> = (0..o.calls)
        .map(|i| {
            let ids = CallIds {
                call_id: format!("lg-{run_id:08x}-{i}@{bind_s}"),
                from_tag: format!("lgt{i}"),
                index: i,
            };
            let pair = i as usize % pairs;
            let ports = [
                rtp_socks[2 * pair].local_addr().map_or(0, |a| a.port()),
                rtp_socks[2 * pair + 1].local_addr().map_or(0, |a| a.port()),
            ];
            let body = sip::multipart(
                &sip::sdp_offer(&bind_s, ports, o.codec.payload_type(), o.codec.name()),
                &sip::metadata(&ids),
            );
            let invite = sip::invite(&ep, &ids, &format!("z9hG4bKlg{run_id:x}i{i}"), 1, &body);
            let start_at = if o.calls > 1 {
                o.ramp.mul_f64(f64::from(i) / f64::from(o.calls))
            } else {
                Duration::ZERO
            };
            let now = Instant::now();
            Call {
                ids,
                state: State::Pending,
                start_at,
                invite,
                ack: String::new(),
                bye: String::new(),
                next_retx: now,
                retx_interval: Duration::from_millis(500),
                give_up_at: now,
                dest: [ep.target; 2],
                sock_pair: pair,
                ssrc: [rand::random(), rand::random()],
                seq0: [rand::random(), rand::random()],
                ts0: [rand::random(), rand::random()],
                first_tick: 0,
                packets_per_stream,
                sent: [0; 2],
                fail_code: 0,
                answered_at: None,
                bye_at: None,
                remote_bye: false,
            }
        })
        .collect();
    let by_call_id: HashMap<String, usize> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| (c.ids.call_id.clone(), i))
        .collect();

    let sample = |at: Instant, packets: u64| -> Option<Sample> {
        let pid = o.daemon_pid?;
        Some(Sample {
            at,
            cpu_us: proc_cpu_us(pid, tck)?,
            rss_kb: proc_rss_kb(pid)?,
            packets,
        })
    };
    let t0 = Instant::now();
    let before = sample(t0, 0);
    let mut samples: Vec<Sample> = before.into_iter().collect();
    let deadline = t0 + o.deadline;
    let mut total_packets: u64 = 0;
    let mut rbuf = vec![0u8; 65536];
    let mut pkt = [0u8; RTP_HEADER_LEN + SAMPLES_PER_PACKET];
    let mut tick: u64 = 0;
    let mut max_lag = Duration::ZERO;
    let mut send_errors: u64 = 0;
    let mut sip_sent: u64 = 0;
    let mut deadline_hit = false;
    let mut first_bye: Option<Instant> = None;
    let mut all_answered_at: Option<Instant> = None;
    loop {
        let due = t0 + PTIME * (tick as u32);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            max_lag = max_lag.max(now - due);
        }
        let now = Instant::now();
        if now >= deadline {
            deadline_hit = true;
            break;
        }
        // 1. SIP input.
        for _ in 0..20_000 {
            let (n, from) = match sip_sock.recv_from(&mut rbuf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            let Some(msg) = rbuf.get(..n).and_then(sip::parse) else {
                continue;
            };
            let Some(&ci) = msg.call_id.and_then(|c| by_call_id.get(c)) else {
                if msg.method.is_some() && msg.method != Some("ACK") {
                    let _ = sip_sock.send_to(
                        sip::response_to(&msg, 481, "Call Does Not Exist").as_bytes(),
                        from,
                    );
                }
                continue;
            };
            let c = &mut calls[ci];
            if let Some(method) = msg.method {
                if method != "ACK" {
                    let _ = sip_sock.send_to(sip::response_to(&msg, 200, "OK").as_bytes(), from);
                    sip_sent += 1;
                }
                if method == "BYE" && matches!(c.state, State::Active | State::Byeing) {
                    c.remote_bye = true;
                    c.state = State::Done;
                }
                continue;
            }
            let code = msg.status.unwrap_or(0);
            match (msg.cseq_method, code) {
                (Some("INVITE"), 100..=199) if c.state == State::Inviting => {
                    // Provisional: stop retransmitting, keep waiting until Timer B.
                    c.next_retx = now + Duration::from_secs(3600);
                }
                (Some("INVITE"), 200..=299) => {
                    if c.state == State::Inviting {
                        let to_tag = msg.to_tag.unwrap_or("");
                        let ruri = msg
                            .contact_uri
                            .map_or_else(|| format!("sip:srs@{}", ep.target), str::to_string);
                        c.ack = sip::in_dialog(
                            "ACK",
                            &ruri,
                            &ep,
                            &c.ids,
                            to_tag,
                            &format!("z9hG4bKlg{run_id:x}a{}", c.ids.index),
                            1,
                        );
                        c.bye = sip::in_dialog(
                            "BYE",
                            &ruri,
                            &ep,
                            &c.ids,
                            to_tag,
                            &format!("z9hG4bKlg{run_id:x}b{}", c.ids.index),
                            2,
                        );
                        let ip: Option<IpAddr> = msg.sdp_addr.and_then(|a| a.parse().ok());
                        let _ = sip_sock.send_to(c.ack.as_bytes(), ep.target);
                        sip_sent += 1;
                        c.answered_at = Some(now);
                        match (ip, msg.audio_ports.first(), msg.audio_ports.get(1)) {
                            (Some(ip), Some(&p1), Some(&p2)) if p1 != 0 && p2 != 0 => {
                                c.dest = [SocketAddr::new(ip, p1), SocketAddr::new(ip, p2)];
                                c.state = State::Active;
                                c.first_tick = tick + 1;
                            }
                            _ => {
                                // Answered without two usable m-lines: hang up, count failed.
                                c.fail_code = 1;
                                c.state = State::Byeing;
                                c.retx_interval = Duration::from_millis(500);
                                c.next_retx = now + c.retx_interval;
                                c.give_up_at = now + Duration::from_secs(32);
                                let _ = sip_sock.send_to(c.bye.as_bytes(), ep.target);
                            }
                        }
                    } else if !c.ack.is_empty() {
                        // Retransmitted 200: ACK again.
                        let _ = sip_sock.send_to(c.ack.as_bytes(), ep.target);
                    }
                }
                (Some("INVITE"), 300..=699)
                    if c.state == State::Inviting || c.fail_code == code =>
                {
                    // ACK for a non-2xx final uses the INVITE's branch (RFC 3261 17.1.1.3);
                    // retransmitted finals are ACKed again.
                    let ack = sip::in_dialog(
                        "ACK",
                        &format!("sip:srs@{}", ep.target),
                        &ep,
                        &c.ids,
                        msg.to_tag.unwrap_or(""),
                        &format!("z9hG4bKlg{run_id:x}i{}", c.ids.index),
                        1,
                    );
                    let _ = sip_sock.send_to(ack.as_bytes(), ep.target);
                    c.fail_code = code;
                    c.state = State::Failed;
                }
                (Some("BYE"), 200..=699) if c.state == State::Byeing => {
                    c.state = if c.fail_code == 0 {
                        State::Done
                    } else {
                        State::Failed
                    };
                }
                _ => {}
            }
        }
        // 2. Start calls due by the ramp; retransmit.
        let elapsed = now - t0;
        for c in calls.iter_mut() {
            match c.state {
                State::Pending if c.start_at <= elapsed => {
                    let _ = sip_sock.send_to(c.invite.as_bytes(), ep.target);
                    sip_sent += 1;
                    c.state = State::Inviting;
                    c.next_retx = now + c.retx_interval;
                    c.give_up_at = now + Duration::from_secs(32);
                }
                State::Inviting | State::Byeing if now >= c.give_up_at => {
                    if c.state == State::Inviting {
                        c.fail_code = 408;
                    }
                    c.state = if c.state == State::Byeing && c.fail_code == 0 {
                        State::Done
                    } else {
                        State::Failed
                    };
                }
                State::Inviting | State::Byeing if now >= c.next_retx => {
                    let m = if c.state == State::Inviting {
                        &c.invite
                    } else {
                        &c.bye
                    };
                    let _ = sip_sock.send_to(m.as_bytes(), ep.target);
                    sip_sent += 1;
                    c.retx_interval = (c.retx_interval * 2).min(Duration::from_secs(4));
                    c.next_retx = now + c.retx_interval;
                }
                _ => {}
            }
        }
        // 3. Media: each active call's packet number (tick - first_tick) on both streams.
        for c in calls.iter_mut().filter(|c| c.state == State::Active) {
            if tick < c.first_tick {
                continue;
            }
            let k = tick - c.first_tick;
            if k >= c.packets_per_stream {
                let _ = sip_sock.send_to(c.bye.as_bytes(), ep.target);
                sip_sent += 1;
                c.state = State::Byeing;
                c.bye_at = Some(now);
                first_bye.get_or_insert(now);
                c.retx_interval = Duration::from_millis(500);
                c.next_retx = now + c.retx_interval;
                c.give_up_at = now + Duration::from_secs(32);
                continue;
            }
            for s in 0..2 {
                let seq = c.seq0[s].wrapping_add(k as u16);
                let ts = c.ts0[s].wrapping_add((k as u32).wrapping_mul(SAMPLES_PER_PACKET as u32));
                write_header(&mut pkt, o.codec.payload_type(), k == 0, seq, ts, c.ssrc[s]);
                let table = &tables[s];
                pkt[RTP_HEADER_LEN..].copy_from_slice(&table[(k as usize) % table.len()]);
                match rtp_socks[2 * c.sock_pair + s].send_to(&pkt, c.dest[s]) {
                    Ok(_) => {
                        c.sent[s] += 1;
                        total_packets += 1;
                    }
                    Err(_) => send_errors += 1,
                }
            }
        }
        if all_answered_at.is_none()
            && calls
                .iter()
                .all(|c| !matches!(c.state, State::Pending | State::Inviting))
        {
            all_answered_at = Some(now);
        }
        if tick % 50 == 0 {
            samples.extend(sample(now, total_packets));
        }
        if calls
            .iter()
            .all(|c| matches!(c.state, State::Done | State::Failed))
        {
            break;
        }
        tick += 1;
    }
    let t_end = Instant::now();
    std::thread::sleep(o.settle);
    let after = sample(Instant::now(), total_packets);

    // Steady window: from 1 s after all calls were answered (and the ramp ended) to the
    // first BYE. Falls back to the whole run if that window has fewer than two samples.
    let steady_from = all_answered_at
        .map(|a| a.max(t0 + o.ramp) + Duration::from_secs(1))
        .unwrap_or(t_end);
    let steady_to = first_bye.unwrap_or(t_end);
    let in_window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= steady_from && s.at <= steady_to)
        .collect();
    let (window_kind, win) = if in_window.len() >= 2 {
        (
            "steady",
            Some((*in_window[0], *in_window[in_window.len() - 1])),
        )
    } else if samples.len() >= 2 {
        ("whole-run", Some((samples[0], samples[samples.len() - 1])))
    } else {
        ("none", None)
    };
    let attempted = calls.iter().filter(|c| c.state != State::Pending).count();
    let answered = calls.iter().filter(|c| c.answered_at.is_some()).count();
    let mut failed_by_status: HashMap<String, u64> = HashMap::new();
    for c in calls
        .iter()
        .filter(|c| c.state == State::Failed || (c.state != State::Done && c.answered_at.is_none()))
    {
        let key = match c.fail_code {
            0 => format!("{:?}", c.state).to_lowercase(),
            1 => "bad-answer-sdp".into(),
            n => n.to_string(),
        };
        *failed_by_status.entry(key).or_default() += 1;
    }
    let remote_byes = calls.iter().filter(|c| c.remote_bye).count();
    let mut report = json!({
        "target": o.target.to_string(),
        "calls": o.calls,
        "duration_s": o.duration.as_secs_f64(),
        "ramp_s": o.ramp.as_secs_f64(),
        "codec": o.codec.name(),
        "calls_attempted": attempted,
        "calls_answered": answered,
        "calls_completed": calls.iter().filter(|c| c.state == State::Done).count(),
        "calls_failed_by_status": failed_by_status,
        "remote_byes": remote_byes,
        "deadline_hit": deadline_hit,
        "packets_sent": total_packets,
        "packet_send_errors": send_errors,
        "sip_messages_sent": sip_sent,
        "max_tick_lag_ms": max_lag.as_secs_f64() * 1000.0,
        "wall_s": (t_end - t0).as_secs_f64(),
    });
    if let (Some(b), Some((w0, w1))) = (before, win) {
        let cpu = w1.cpu_us.saturating_sub(w0.cpu_us) as f64;
        let pk = w1.packets.saturating_sub(w0.packets) as f64;
        let wall = (w1.at - w0.at).as_secs_f64();
        let peak_rss = samples.iter().map(|s| s.rss_kb).max().unwrap_or(b.rss_kb);
        report["daemon"] = json!({
            "pid": o.daemon_pid,
            "window": window_kind,
            "window_s": wall,
            "window_packets": pk,
            "cpu_us_per_packet": if pk > 0.0 { cpu / pk } else { f64::NAN },
            "cpu_percent_of_one_core": if wall > 0.0 { cpu / wall / 1e4 } else { f64::NAN },
            "cpu_s_total": after.map(|a| a.cpu_us.saturating_sub(b.cpu_us) as f64 / 1e6),
            "rss_kb_before": b.rss_kb,
            "rss_kb_peak": peak_rss,
            "rss_kb_after": after.map(|a| a.rss_kb),
            "rss_kb_per_call": if answered > 0 { (peak_rss.saturating_sub(b.rss_kb)) as f64 / answered as f64 } else { f64::NAN },
        });
    } else if o.daemon_pid.is_some() {
        report["daemon"] = json!({"error": "could not read /proc for the daemon pid"});
    }
    if let Some(cfg) = &o.config {
        report["verify"] = verify(o, cfg, &calls, &tables)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}"), "all_ok": false}));
    }
    Ok(report)
}

fn branchrec_json(o: &BenchOpts, cfg: &PathBuf, args: &[&str]) -> Result<Value> {
    let out = std::process::Command::new(&o.branchrec)
        .args(["recordings"])
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .with_context(|| format!("running {}", o.branchrec.display()))?;
    if !out.status.success() {
        bail!(
            "branchrec recordings {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing branchrec JSON output")
}

/// Per-channel stats object from a `show` detail: accepts an array (indexed by a "channel"
/// field or by position) or an object keyed by channel number.
fn channel_stats(stats: &Value, ch: usize) -> Option<&Value> {
    match stats {
        Value::Array(a) => a
            .iter()
            .find(|s| s.get("channel").and_then(Value::as_u64) == Some(ch as u64))
            .or_else(|| a.get(ch)),
        Value::Object(m) => m.get(&ch.to_string()),
        _ => None,
    }
}

/// The channels of a 16-bit PCM WAV (de-interleaved).
fn read_wav_channels(b: &[u8]) -> Result<Vec<Vec<i16>>> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        bail!("not a RIFF/WAVE file");
    }
    let u16le = |i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32le = |i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let (mut pos, mut channels, mut data) = (12usize, None, None);
    while let (Some(id), Some(size)) = (b.get(pos..pos + 4), u32le(pos + 4)) {
        let body = pos + 8;
        let end = body.saturating_add(size as usize).min(b.len());
        match id {
            b"fmt " => {
                if u16le(body + 14) != Some(16) {
                    bail!("WAV is not 16-bit PCM");
                }
                channels = u16le(body + 2);
            }
            b"data" => data = b.get(body..end),
            _ => {}
        }
        pos = body.saturating_add(size as usize + (size as usize & 1));
    }
    let ch = usize::from(channels.ok_or_else(|| anyhow!("no fmt chunk"))?.max(1));
    let raw = data.ok_or_else(|| anyhow!("no data chunk"))?;
    let mut out = vec![Vec::with_capacity(raw.len() / 2 / ch); ch];
    for (i, x) in raw.chunks_exact(2).enumerate() {
        out[i % ch].push(i16::from_le_bytes([x[0], x[1]]));
    }
    Ok(out)
}

/// How a recorded channel compares with what was sent, sample by sample.
#[derive(Debug, Default, PartialEq, Eq)]
struct AudioCheck {
    /// Samples that differ from the sent audio.
    mismatched: u64,
    /// Of those, samples that are silence where audio was sent (gaps).
    silent: u64,
    /// Longest run of such silence, samples.
    longest_silence: u64,
    /// First differing sample, relative to the stream's start.
    first_mismatch: Option<u64>,
}

/// Compare `got` (one exported channel) with `want` (the decoded samples sent, in order):
/// the stream is located by its first non-zero sample, then must follow bit-exact, with
/// neither silence inserted nor samples missing.
fn check_channel(got: &[i16], want: &[i16]) -> AudioCheck {
    let mut c = AudioCheck::default();
    let (Some(q), Some(p)) = (
        want.iter().position(|&s| s != 0),
        got.iter().position(|&s| s != 0),
    ) else {
        c.mismatched = want.len() as u64;
        c.silent = c.mismatched;
        c.longest_silence = c.mismatched;
        c.first_mismatch = Some(0);
        return c;
    };
    let start = p as i64 - q as i64;
    let mut run = 0u64;
    for (i, &w) in want.iter().enumerate() {
        let g = usize::try_from(start + i as i64)
            .ok()
            .and_then(|j| got.get(j))
            .copied();
        if g == Some(w) {
            // A zero crossing of the tone inside a silent run does not end it.
            if w != 0 {
                run = 0;
            }
            continue;
        }
        c.mismatched += 1;
        c.first_mismatch.get_or_insert(i as u64);
        if g.unwrap_or(0) == 0 && w != 0 {
            c.silent += 1;
            run += 1;
            c.longest_silence = c.longest_silence.max(run);
        } else {
            run = 0;
        }
    }
    c
}

/// Export recording `id` and compare each channel with what call `c` sent.
fn check_audio(
    o: &BenchOpts,
    cfg: &PathBuf,
    id: &str,
    c: &Call,
    tables: &[Vec<[u8; SAMPLES_PER_PACKET]>; 2],
) -> Result<Vec<AudioCheck>> {
    let path =
        std::env::temp_dir().join(format!("branchrec-loadgen-{}-{id}.wav", std::process::id()));
    let out = std::process::Command::new(&o.branchrec)
        .args(["recordings", "export", id, "--out"])
        .arg(&path)
        .arg("--config")
        .arg(cfg)
        .output()
        .with_context(|| format!("running {}", o.branchrec.display()))?;
    let bytes = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!(
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let chans = read_wav_channels(&bytes.context("reading the export")?)?;
    let mut res = Vec::new();
    for (s, table) in tables.iter().enumerate() {
        let n = usize::try_from(c.sent[s]).unwrap_or(0);
        let want: Vec<i16> = (0..n)
            .flat_map(|k| table[k % table.len()].iter().map(|&b| o.codec.decode(b)))
            .collect();
        let got = chans.get(s).map_or(&[][..], Vec::as_slice);
        res.push(check_channel(got, &want));
    }
    Ok(res)
}

fn verify(
    o: &BenchOpts,
    cfg: &PathBuf,
    calls: &[Call],
    tables: &[Vec<[u8; SAMPLES_PER_PACKET]>; 2],
) -> Result<Value> {
    // Wait (bounded by --verify-wait-s) until no recording of ours is still "recording":
    // counters are final only once the recorder has closed the recording.
    let ours: std::collections::HashSet<&str> = calls
        .iter()
        .filter(|c| c.answered_at.is_some())
        .map(|c| c.ids.call_id.as_str())
        .collect();
    let wait_until = Instant::now() + o.verify_wait;
    let waited = Instant::now();
    let list = loop {
        let list = branchrec_json(o, cfg, &["list", "--json"])?;
        let arr = list
            .as_array()
            .ok_or_else(|| anyhow!("list is not a JSON array"))?;
        let open = arr
            .iter()
            .filter(|r| {
                r.get("call_id")
                    .and_then(Value::as_str)
                    .is_some_and(|c| ours.contains(c))
                    && r.get("state").and_then(Value::as_str) == Some("recording")
            })
            .count();
        if open == 0 || Instant::now() >= wait_until {
            break list;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let waited_s = waited.elapsed().as_secs_f64();
    let list = list
        .as_array()
        .ok_or_else(|| anyhow!("list is not a JSON array"))?;
    let by_call: HashMap<&str, &Value> = list
        .iter()
        .filter_map(|r| Some((r.get("call_id")?.as_str()?, r)))
        .collect();
    let vdeadline = Instant::now() + Duration::from_secs(300);
    let (mut checked, mut ok, mut missing) = (0u64, 0u64, 0u64);
    let (mut audio_checked, mut audio_exact, mut gap_ms_total) = (0u64, 0u64, 0u64);
    let mut problems: Vec<String> = Vec::new();
    let mut states: HashMap<String, u64> = HashMap::new();
    for c in calls.iter().filter(|c| c.answered_at.is_some()) {
        if o.verify_limit > 0 && checked as usize >= o.verify_limit || Instant::now() > vdeadline {
            break;
        }
        checked += 1;
        let Some(rec) = by_call.get(c.ids.call_id.as_str()) else {
            missing += 1;
            continue;
        };
        let state = rec
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        *states.entry(state).or_default() += 1;
        let id = match rec.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => {
                problems.push(format!("{}: no id", c.ids.call_id));
                continue;
            }
        };
        let detail = match branchrec_json(o, cfg, &["show", &id, "--json"]) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{id}: {e:#}"));
                continue;
            }
        };
        let stats = detail.get("stats").unwrap_or(&Value::Null);
        let mut good = true;
        for (ch, &sent) in c.sent.iter().enumerate() {
            let st = channel_stats(stats, ch);
            let get = |k: &str| st.and_then(|s| s.get(k)).and_then(Value::as_u64);
            let (rcv, lost, late) = (get("received"), get("lost"), get("late"));
            let (gaps, gap_ms) = (get("media_gaps"), get("media_gap_ms"));
            gap_ms_total += gap_ms.unwrap_or(0);
            if rcv != Some(sent)
                || lost != Some(0)
                || late != Some(0)
                || gaps.is_some_and(|g| g > 0)
            {
                good = false;
                if problems.len() < 20 {
                    problems.push(format!(
                        "{id} ch{ch}: sent {sent}, received {rcv:?}, lost {lost:?}, late {late:?}, media gaps {gaps:?} ({gap_ms:?} ms)"
                    ));
                }
            }
        }
        // The exported audio, sample by sample: counters alone missed re-anchor gaps.
        match check_audio(o, cfg, &id, c, tables) {
            Ok(chs) => {
                audio_checked += 1;
                let mut exact = true;
                for (ch, a) in chs.iter().enumerate() {
                    if a.mismatched > 0 {
                        exact = false;
                        if problems.len() < 20 {
                            problems.push(format!(
                                "{id} ch{ch}: audio differs from what was sent in {} samples \
                                 (first at {:?}), {} ms silent, longest silence {} ms",
                                a.mismatched,
                                a.first_mismatch,
                                a.silent / 8,
                                a.longest_silence / 8
                            ));
                        }
                    }
                }
                if exact {
                    audio_exact += 1;
                } else {
                    good = false;
                }
            }
            Err(e) => {
                good = false;
                problems.push(format!("{id}: audio not checked: {e:#}"));
            }
        }
        if rec.get("state").and_then(Value::as_str) != Some("complete") {
            good = false;
            if problems.len() < 20 {
                problems.push(format!("{id}: state {:?}, not complete", rec.get("state")));
            }
        }
        if good {
            ok += 1;
        }
    }
    Ok(json!({
        "checked": checked,
        "zero_loss": ok,
        "audio_checked": audio_checked,
        "audio_exact": audio_exact,
        "media_gap_ms": gap_ms_total,
        "missing_recordings": missing,
        "waited_for_close_s": waited_s,
        "states": states,
        "problems": problems,
        "all_ok": checked > 0 && ok == checked,
    }))
}

/// Human-readable summary of a report.
pub fn summary(r: &Value) -> String {
    let g = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    let mut s = format!(
        "calls: {} requested, {} attempted, {} answered, {} completed, failed {}\n\
         packets sent: {} (send errors {}), max tick lag {:.1} ms, wall {:.1} s{}\n",
        g("calls"),
        g("calls_attempted"),
        g("calls_answered"),
        g("calls_completed"),
        g("calls_failed_by_status"),
        g("packets_sent"),
        g("packet_send_errors"),
        g("max_tick_lag_ms").as_f64().unwrap_or(0.0),
        g("wall_s").as_f64().unwrap_or(0.0),
        if g("deadline_hit") == Value::Bool(true) {
            " — DEADLINE HIT"
        } else {
            ""
        },
    );
    if let Some(d) = r.get("daemon") {
        let f = |k: &str| d.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        if d.get("error").is_some() {
            s += &format!("daemon: {}\n", d["error"]);
        } else {
            s += &format!(
                "daemon ({} window {:.1} s): {:.2} µs CPU/packet, {:.1} % of one core; \
                 RSS {} kB → peak {} kB ({:.1} kB/call)\n",
                d["window"].as_str().unwrap_or("?"),
                f("window_s"),
                f("cpu_us_per_packet"),
                f("cpu_percent_of_one_core"),
                d["rss_kb_before"],
                d["rss_kb_peak"],
                f("rss_kb_per_call"),
            );
        }
    }
    if let Some(v) = r.get("verify") {
        s += &format!("verify: {v}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        let pid = std::process::id();
        let cpu = proc_cpu_us(pid, clk_tck());
        assert!(cpu.is_some());
        let rss = proc_rss_kb(pid).unwrap();
        assert!(rss > 100, "rss {rss}");
        assert!(proc_cpu_us(u32::MAX, 100).is_none());
    }

    #[test]
    fn audio_check_finds_inserted_silence_and_missing_samples() {
        let tables = [tone_table(Codec::Pcmu, 400.0, 6000.0)];
        let want: Vec<i16> = (0..100)
            .flat_map(|k| tables[0][k % 50].iter().map(|&b| Codec::Pcmu.decode(b)))
            .collect();
        // Exact, after 1234 samples of leading silence.
        let mut got = vec![0i16; 1234];
        got.extend_from_slice(&want);
        got.extend_from_slice(&[0; 50]);
        assert_eq!(check_channel(&got, &want), AudioCheck::default());
        // 20 packets' worth of silence inserted at packet 40 (a re-anchor gap).
        let mut gap = vec![0i16; 1234];
        gap.extend_from_slice(&want[..6400]);
        gap.extend_from_slice(&[0; 3200]);
        gap.extend_from_slice(&want[6400..]);
        let c = check_channel(&gap, &want);
        assert!(matches!(c.first_mismatch, Some(6400..=6402)), "{c:?}");
        // (the tone has zero crossings; 90 % of the inserted samples differ)
        assert!(c.longest_silence >= 2800 && c.silent >= 2800, "{c:?}");
        // One packet missing (its samples skipped, the rest shifted).
        let mut skip = want[..1600].to_vec();
        skip.extend_from_slice(&want[1760..]);
        assert!(check_channel(&skip, &want).mismatched > 0);
        assert_eq!(check_channel(&[0; 100], &want).silent, want.len() as u64);
    }

    #[test]
    fn channel_stats_shapes() {
        let a = json!([{"channel": 1, "received": 5}, {"channel": 0, "received": 7}]);
        assert_eq!(channel_stats(&a, 0).unwrap()["received"], 7);
        let o = json!({"0": {"received": 3}, "1": {"received": 4}});
        assert_eq!(channel_stats(&o, 1).unwrap()["received"], 4);
        let p = json!([{"received": 1}, {"received": 2}]);
        assert_eq!(channel_stats(&p, 1).unwrap()["received"], 2);
    }
}
