//! A minimal SIPREC recording client (SRC) for integration tests: one INVITE over UDP
//! with SDP + RFC 7865 metadata, ACK, RTP (PCMU, a known test signal) on both streams,
//! BYE. Every wait is bounded.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The G.711 µ-law payload of the test signal: a repeating 8-sample pattern (a 1 kHz
/// tone at 8 kHz), the same on every packet, so a scan can look for it on disk.
pub const TONE_ULAW: [u8; 8] = [0xff, 0x9a, 0x8f, 0x9a, 0xff, 0x1a, 0x0f, 0x1a];

/// An established call.
pub struct Call {
    sock: UdpSocket,
    srs: SocketAddr,
    call_id: String,
    tag: String,
    to_tag: String,
    rtp: Vec<(UdpSocket, SocketAddr)>,
    seq: u16,
    ts: u32,
    /// When the first RTP packet was sent.
    pub first_rtp: Option<Instant>,
    /// Packets sent per stream.
    pub packets: u32,
    /// Last CSeq number of our requests in the dialog.
    cseq: u32,
}

pub fn recv_until(
    sock: &UdpSocket,
    want: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Option<String> {
    let t = Instant::now();
    let mut buf = vec![0u8; 65536];
    while t.elapsed() < timeout {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if want(&m) {
                return Some(m);
            }
        }
    }
    None
}

/// Status code of a response (0 for a request).
pub fn status(m: &str) -> u16 {
    m.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Outcome of an INVITE.
pub enum Invite {
    /// 200 OK: call up.
    Up(Call),
    /// Final error response (status, whole message).
    Rejected(u16, String),
}

/// The two-stream SDP offer (PCMU, labels 1 and 2) of [`invite`].
pub const SDP_TWO_STREAMS: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n\
               m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n";

/// [`SDP_TWO_STREAMS`] with RFC 4733 telephone-event (PT 101) offered on both streams.
pub const SDP_TWO_STREAMS_DTMF: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n\
               m=audio 40002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\na=sendonly\r\n";

/// The SIPREC INVITE of call `n` from `me` to `srs` (SDP `sdp` + RFC 7865 metadata), as
/// [`invite`] sends it: Call-ID `call-{n}-{pid}@test`, From-tag `src{n}`.
pub fn invite_text(srs: SocketAddr, me: SocketAddr, n: u32, sdp: &str) -> String {
    invite_text_via(srs, me, n, sdp, "")
}

/// [`invite_text`] with `via_params` appended to the INVITE's Via (e.g.
/// `;received=10.20.0.5;rport=5099`, which a client may write whatever its address).
pub fn invite_text_via(
    srs: SocketAddr,
    me: SocketAddr,
    n: u32,
    sdp: &str,
    via_params: &str,
) -> String {
    let alice = format!("sip:alice{n}@example.com");
    let bob = format!("sip:bob{n}@example.com");
    invite_text_parties(
        srs,
        me,
        n,
        sdp,
        via_params,
        (&alice, "Alice"),
        (&bob, "Bob"),
    )
}

/// [`invite_text_via`] with the two participants' `(aor, name)` given.
pub fn invite_text_parties(
    srs: SocketAddr,
    me: SocketAddr,
    n: u32,
    sdp: &str,
    via_params: &str,
    a: (&str, &str),
    b: (&str, &str),
) -> String {
    let call_id = format!("call-{n}-{}@test", std::process::id());
    let tag = format!("src{n}");
    let meta = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
<datamode>complete</datamode>\r\n\
<session session_id=\"c2Vzc2lvbi1{n:04}\"><sipSessionID>{call_id}</sipSessionID></session>\r\n\
<participant participant_id=\"cDE{n:04}\"><nameID aor=\"{a_aor}\"><name>{a_name}</name></nameID></participant>\r\n\
<participant participant_id=\"cDI{n:04}\"><nameID aor=\"{b_aor}\"><name>{b_name}</name></nameID></participant>\r\n\
<stream stream_id=\"czE{n:04}\" session_id=\"c2Vzc2lvbi1{n:04}\"><label>1</label></stream>\r\n\
<stream stream_id=\"czI{n:04}\" session_id=\"c2Vzc2lvbi1{n:04}\"><label>2</label></stream>\r\n\
<participantstreamassoc participant_id=\"cDE{n:04}\"><send>czE{n:04}</send><recv>czI{n:04}</recv></participantstreamassoc>\r\n\
<participantstreamassoc participant_id=\"cDI{n:04}\"><send>czI{n:04}</send><recv>czE{n:04}</recv></participantstreamassoc>\r\n\
</recording>\r\n",
        a_aor = a.0,
        a_name = a.1,
        b_aor = b.0,
        b_name = b.1,
    );
    let body = format!(
        "--BOUNDARY\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--BOUNDARY\r\n\
         Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{meta}\r\n--BOUNDARY--\r\n"
    );
    format!(
        "INVITE sip:srs@{srs} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{n}-inv{via_params}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag={tag}\r\nTo: <sip:srs@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:src@{me}>;+sip.src\r\n\
         Require: siprec\r\nContent-Type: multipart/mixed;boundary=BOUNDARY\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Send a SIPREC INVITE to `srs` and wait for the final response.
pub fn invite(srs: SocketAddr, n: u32) -> Invite {
    invite_with(srs, n, "")
}

/// [`invite`] with `via_params` appended to the INVITE's Via (see [`invite_text_via`]).
pub fn invite_with(srs: SocketAddr, n: u32, via_params: &str) -> Invite {
    invite_msg(srs, n, |me| {
        invite_text_via(srs, me, n, SDP_TWO_STREAMS, via_params)
    })
}

/// [`invite`] with the two participants' `(aor, name)` given.
pub fn invite_parties(srs: SocketAddr, n: u32, a: (&str, &str), b: (&str, &str)) -> Invite {
    invite_msg(srs, n, |me| {
        invite_text_parties(srs, me, n, SDP_TWO_STREAMS, "", a, b)
    })
}

/// [`invite_parties`] with the SDP offer `sdp` (e.g. [`SDP_TWO_STREAMS_DTMF`]).
pub fn invite_parties_sdp(
    srs: SocketAddr,
    n: u32,
    sdp: &str,
    a: (&str, &str),
    b: (&str, &str),
) -> Invite {
    invite_msg(srs, n, |me| invite_text_parties(srs, me, n, sdp, "", a, b))
}

/// Send the INVITE `make(local address)` (Call-ID and tag of call `n`), ACK the answer.
fn invite_msg(srs: SocketAddr, n: u32, make: impl FnOnce(SocketAddr) -> String) -> Invite {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let call_id = format!("call-{n}-{}@test", std::process::id());
    let tag = format!("src{n}");
    let msg = make(me);
    sock.send_to(msg.as_bytes(), srs).unwrap();
    // Loopback UDP, so one INVITE (no retransmission) reaches a ready daemon; answering
    // it (port allocation, catalogue insert) takes milliseconds idle. 30 s bounds a
    // machine whose cores are both busy, and is far from any SIP timer under test.
    let Some(resp) = recv_until(&sock, |m| status(m) >= 200, Duration::from_secs(30)) else {
        return Invite::Rejected(0, "no final response within 30 s".into());
    };
    let code = status(&resp);
    let to_tag = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let ack = format!(
        "ACK sip:srs@{srs} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{n}-ack\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag={tag}\r\nTo: <sip:srs@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(ack.as_bytes(), srs).unwrap();
    if code != 200 {
        return Invite::Rejected(code, resp);
    }
    let ports: Vec<u16> = resp
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(ports.len(), 2, "answer: {resp}");
    let rtp = ports
        .iter()
        .map(|p| {
            (
                UdpSocket::bind("127.0.0.1:0").unwrap(),
                SocketAddr::from(([127, 0, 0, 1], *p)),
            )
        })
        .collect();
    Invite::Up(Call {
        sock,
        srs,
        call_id,
        tag,
        to_tag,
        rtp,
        seq: 1000,
        ts: 0,
        first_rtp: None,
        packets: 0,
        cseq: 1,
    })
}

impl Call {
    /// The SIP Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Send one 20 ms PCMU packet on each stream.
    pub fn send_packet(&mut self) {
        self.send_packet_with(|_, _| TONE_ULAW[..].repeat(20));
    }

    /// Send one 20 ms PCMU packet on each stream with `payload(stream, packet)` (160
    /// µ-law bytes) as its audio.
    pub fn send_packet_with(&mut self, payload: impl Fn(usize, u32) -> Vec<u8>) {
        for (i, (s, to)) in self.rtp.iter().enumerate() {
            let mut p = vec![0x80, 0x00];
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&self.ts.to_be_bytes());
            p.extend_from_slice(&(0x1000_0000u32 + i as u32).to_be_bytes());
            p.extend_from_slice(&payload(i, self.packets));
            let _ = s.send_to(&p, to);
        }
        self.first_rtp.get_or_insert_with(Instant::now);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.packets += 1;
    }

    /// Send the RFC 4733 event `event` (0-9 digits, 10 `*`, 11 `#`) on stream `stream`
    /// (PT 101, as [`SDP_TWO_STREAMS_DTMF`] offers) for `ms` in real time, one packet per
    /// 20 ms (marker on the first, the end packet sent three times), while the other
    /// streams go on with audio; then the stream resumes audio on the advanced timestamp.
    pub fn send_dtmf(&mut self, stream: usize, event: u8, ms: u64) {
        let start = Instant::now();
        let ev_ts = self.ts;
        let n = (ms / 20).max(1);
        for k in 0..n + 2 {
            let due = start + Duration::from_millis(20 * k);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            let end = k + 1 >= n;
            let dur = (160 * (k.min(n - 1) + 1)) as u16;
            for (i, (s, to)) in self.rtp.iter().enumerate() {
                let mut p = Vec::with_capacity(172);
                if i == stream {
                    p.push(0x80);
                    p.push(if k == 0 { 0x80 | 101 } else { 101 });
                    p.extend_from_slice(&self.seq.to_be_bytes());
                    p.extend_from_slice(&ev_ts.to_be_bytes());
                    p.extend_from_slice(&(0x1000_0000u32 + i as u32).to_be_bytes());
                    p.push(event);
                    p.push(if end { 0x80 | 10 } else { 10 }); // E bit, volume -10 dBm0
                    p.extend_from_slice(&dur.to_be_bytes());
                } else if k < n {
                    p.extend_from_slice(&[0x80, 0x00]);
                    p.extend_from_slice(&self.seq.to_be_bytes());
                    p.extend_from_slice(&self.ts.to_be_bytes());
                    p.extend_from_slice(&(0x1000_0000u32 + i as u32).to_be_bytes());
                    for _ in 0..20 {
                        p.extend_from_slice(&TONE_ULAW);
                    }
                } else {
                    continue;
                }
                let _ = s.send_to(&p, to);
            }
            self.seq = self.seq.wrapping_add(1);
            if k < n {
                self.ts = self.ts.wrapping_add(160);
            }
        }
    }

    /// Where the daemon receives each stream's RTP (from its answer), stream order.
    pub fn rtp_targets(&self) -> Vec<SocketAddr> {
        self.rtp.iter().map(|(_, to)| *to).collect()
    }

    /// Sequence number, timestamp and SSRC of stream `i`'s next packet.
    pub fn next_rtp(&self, i: usize) -> (u16, u32, u32) {
        (self.seq, self.ts, 0x1000_0000u32 + i as u32)
    }

    /// The SRS address.
    pub fn srs(&self) -> SocketAddr {
        self.srs
    }

    /// An in-dialog request of this call as `via` would send it (any address may write
    /// it: the test's attacker sends the same bytes from elsewhere). `cseq` = `None`
    /// takes our next CSeq (the real SRC's own requests).
    pub fn request(
        &mut self,
        method: &str,
        via: SocketAddr,
        cseq: Option<u32>,
        content_type: &str,
        body: &str,
    ) -> String {
        let cseq = cseq.unwrap_or_else(|| {
            self.cseq += 1;
            self.cseq
        });
        let ct = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {content_type}\r\n")
        };
        format!(
            "{method} sip:srs@{} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{method}-{cseq}-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag={}\r\nTo: <sip:srs@127.0.0.1>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@{via}>;+sip.src\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.srs,
            via.port(),
            self.tag,
            self.to_tag,
            self.call_id,
            body.len()
        )
    }

    /// Send `msg` from the call's own SIP socket and wait (bounded) for the final response
    /// to `method`; returns it.
    pub fn send_request(&self, msg: &str, method: &str) -> Option<String> {
        self.sock.send_to(msg.as_bytes(), self.srs).unwrap();
        // A refusal or 200 takes milliseconds idle; 15 s bounds a loaded machine.
        recv_until(
            &self.sock,
            |m| status(m) >= 200 && m.contains(&format!(" {method}\r\n")),
            Duration::from_secs(15),
        )
    }

    /// The call's own SIP socket address.
    pub fn sip_local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Send `ms` of audio in real time, each packet's audio from `payload(stream, n)`.
    pub fn stream_with(&mut self, ms: u64, payload: impl Fn(usize, u32) -> Vec<u8>) {
        let start = Instant::now();
        let n = ms / 20;
        for k in 0..n {
            let due = start + Duration::from_millis(20 * k);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            self.send_packet_with(&payload);
        }
    }

    /// Send `ms` of audio in real time.
    pub fn stream(&mut self, ms: u64) {
        let start = Instant::now();
        let n = ms / 20;
        for k in 0..n {
            let due = start + Duration::from_millis(20 * k);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            self.send_packet();
        }
    }

    /// Send BYE and wait for its 200 (bounded).
    pub fn bye(mut self) -> bool {
        let me = self.sock.local_addr().unwrap();
        self.cseq += 1;
        let msg = format!(
            "BYE sip:srs@{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bye-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@127.0.0.1>;tag={}\r\nTo: <sip:srs@127.0.0.1>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
            self.srs, self.seq, self.tag, self.to_tag, self.call_id, self.cseq
        );
        self.sock.send_to(msg.as_bytes(), self.srs).unwrap();
        // The 200 follows closing the recording (drain, seal, fsync): well under a second
        // idle; 15 s bounds a loaded machine.
        recv_until(
            &self.sock,
            |m| m.contains("BYE") && status(m) == 200,
            Duration::from_secs(15),
        )
        .is_some()
    }
}

/// One whole call of `ms` of audio to `srs` (INVITE, RTP on both streams, BYE); panics
/// with `log()` (the daemon's log) when the call is rejected or the BYE not answered.
pub fn record_call(srs: SocketAddr, n: u32, ms: u64, log: impl Fn() -> String) {
    match invite(srs, n) {
        Invite::Up(mut c) => {
            c.stream(ms);
            assert!(c.bye(), "BYE not answered\nlog:\n{}", log());
        }
        Invite::Rejected(code, m) => panic!("call {n} rejected {code}: {m}\nlog:\n{}", log()),
    }
}
