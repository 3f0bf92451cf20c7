//! `branchrec-loadgen call`: one real SIPREC call with audio, for a newcomer's first
//! recording and for tests. INVITE (multipart SDP + RFC 7865 metadata, two sendonly
//! streams) → 200 → ACK → RTP on both streams for `--seconds` → BYE → 200.
//!
//! The audio is a tone per party (caller 440 Hz on label 1, callee 660 Hz on label 2), see
//! [`tone`]: audible when the export is played, and exactly reproducible by a test.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::g711::Codec;
use crate::rtp;
use crate::sip::{self, CallIds, Endpoint};

/// Options of one call.
pub struct CallOpts {
    /// The recorder's SIP address (UDP).
    pub target: SocketAddr,
    /// Local address for SIP and RTP.
    pub bind: std::net::IpAddr,
    /// Seconds of audio.
    pub seconds: f64,
    /// G.711 law.
    pub codec: Codec,
}

/// What happened.
pub struct CallReport {
    /// The call's SIP Call-ID (also what `branchrec recordings list` shows).
    pub call_id: String,
    /// RTP packets sent per stream.
    pub packets: Vec<u64>,
    /// Seconds of audio per stream.
    pub seconds: f64,
}

/// Frequency of the tone of stream `label` (1 = caller, 2 = callee).
pub fn tone_hz(label: usize) -> f64 {
    if label == 1 {
        440.0
    } else {
        660.0
    }
}

/// `n` samples of an 8 kHz tone at `hz`, amplitude 8000, with every magnitude at least 64
/// (so no sample is 0 and the start of the audio in a recording is its first non-zero
/// sample), before G.711.
pub fn tone(hz: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let v = (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()).round();
            let v = v as i16;
            if v.abs() < 64 {
                if v < 0 {
                    -64
                } else {
                    64
                }
            } else {
                v
            }
        })
        .collect()
}

/// Sends `msg` and waits for a final response to `cseq_method`, retransmitting on UDP per
/// RFC 3261 timer A (500 ms doubling) for at most 32 s (timer B). Provisional responses
/// stop retransmission but not the wait.
fn transact(sock: &UdpSocket, to: SocketAddr, msg: &str, cseq_method: &str) -> Result<Vec<u8>> {
    let start = Instant::now();
    let mut next_send = start;
    let mut interval = Duration::from_millis(500);
    let mut provisional = false;
    let mut buf = vec![0u8; 65_535];
    loop {
        let now = Instant::now();
        if now.duration_since(start) > Duration::from_secs(32) {
            bail!("no final response to {cseq_method} from {to} within 32 s (is the recorder running?)");
        }
        if !provisional && now >= next_send {
            sock.send_to(msg.as_bytes(), to)
                .with_context(|| format!("sending {cseq_method} to {to}"))?;
            next_send = now + interval;
            interval = (interval * 2).min(Duration::from_secs(4));
        }
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(e).context("receiving SIP"),
        };
        let Some(p) = sip::parse(&buf[..n]) else {
            continue;
        };
        if p.cseq_method != Some(cseq_method) {
            continue;
        }
        match p.status {
            Some(s) if s < 200 => provisional = true,
            Some(_) => return Ok(buf[..n].to_vec()),
            None => {}
        }
    }
}

/// Runs the call.
pub fn run(o: &CallOpts) -> Result<CallReport> {
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600]");
    }
    let sip_sock = UdpSocket::bind((o.bind, 0)).context("binding the SIP socket")?;
    let rtp_sock = UdpSocket::bind((o.bind, 0)).context("binding the RTP socket")?;
    let local = sip_sock.local_addr()?;
    let rtp_port = rtp_sock.local_addr()?.port();
    let ep = Endpoint {
        local,
        target: o.target,
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let ids = CallIds {
        call_id: format!(
            "first-call-{stamp:x}-{}@branchrec-loadgen",
            std::process::id()
        ),
        from_tag: format!("lg{:x}", stamp & 0xffff_ffff),
        index: 1,
    };
    let sdp = sip::sdp_offer(
        &o.bind.to_string(),
        [rtp_port, rtp_port],
        o.codec.payload_type(),
        o.codec.name(),
    );
    let body = sip::multipart(&sdp, &sip::metadata(&ids));
    let invite = sip::invite(&ep, &ids, &format!("z9hG4bK-{stamp:x}-i"), 1, &body);
    let resp = transact(&sip_sock, o.target, &invite, "INVITE")?;
    let p = sip::parse(&resp).ok_or_else(|| anyhow!("unparsable response to INVITE"))?;
    let status = p.status.unwrap_or(0);
    let to_tag = p.to_tag.unwrap_or("").to_string();
    let ruri = p
        .contact_uri
        .map(str::to_string)
        .unwrap_or_else(|| format!("sip:srs@{}", o.target));
    let ack = sip::in_dialog(
        "ACK",
        &ruri,
        &ep,
        &ids,
        &to_tag,
        &format!("z9hG4bK-{stamp:x}-a"),
        1,
    );
    sip_sock.send_to(ack.as_bytes(), o.target)?;
    if status != 200 {
        bail!("the recorder answered the INVITE with {status}, not 200");
    }
    let addr: std::net::IpAddr = p
        .sdp_addr
        .and_then(|a| a.parse().ok())
        .unwrap_or(o.target.ip());
    if p.audio_ports.len() < 2 || p.audio_ports[..2].contains(&0) {
        bail!(
            "the recorder's answer does not accept both streams: {:?}",
            p.audio_ports
        );
    }
    let n = (o.seconds * 8000.0).round() as usize;
    let mut streams = vec![];
    for label in 1..=2usize {
        let spec = rtp::StreamSpec {
            dest: SocketAddr::new(addr, p.audio_ports[label - 1]),
            samples: tone(tone_hz(label), n),
            codec: o.codec,
            ssrc: 0x5150_0000 + label as u32,
            seq: 1000,
            ts: 160_000,
            dtmf: String::new(),
        };
        streams.push((spec.dest, rtp::build_stream(&spec)?));
    }
    let sent = rtp::send_streams(
        &rtp_sock,
        &streams,
        Instant::now() + Duration::from_millis(20),
    )?;
    // The last packet was sent at the start of its 20 ms; a recording ends at the BYE (its
    // length is the call's), so hang up only once the last packet's audio has been played
    // out, as a real SRC does (one packet time plus margin).
    std::thread::sleep(Duration::from_millis(200));
    let bye = sip::in_dialog(
        "BYE",
        &ruri,
        &ep,
        &ids,
        &to_tag,
        &format!("z9hG4bK-{stamp:x}-b"),
        2,
    );
    let resp = transact(&sip_sock, o.target, &bye, "BYE")?;
    let bye_status = sip::parse(&resp).and_then(|p| p.status).unwrap_or(0);
    if bye_status != 200 {
        bail!("the recorder answered the BYE with {bye_status}, not 200");
    }
    Ok(CallReport {
        call_id: ids.call_id,
        packets: sent,
        seconds: n as f64 / 8000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_no_zero_and_the_right_period() {
        let t = tone(440.0, 8000);
        assert!(t.iter().all(|&s| s.abs() >= 64 && s.abs() <= 8000));
        // 440 sign changes per second, up to one at either edge.
        let changes = t.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((879..=881).contains(&changes), "{changes}");
    }
}
