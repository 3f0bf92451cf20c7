//! Issue #18 step 2: SRTP from mirrored traffic.
//! - Generated captures whose mirrored SIP carries SDES keys (`a=crypto`): each direction
//!   is decrypted with the key its *sender* put in its own SDP (the offerer's line with
//!   the tag the answer chose; the answerer's line), AES_CM_128_HMAC_SHA1_80 and
//!   AEAD_AES_256_GCM, with the SIPREC path's authentication, replay check and counters.
//! - The shared Marseillaise capture (SRTP, no signalling) with its published key given
//!   on the command line (`--srtp-key`): the audio equals what an independent SRTP
//!   implementation (tests/capture_common/srtp_ref.py, Python `cryptography`) decrypts,
//!   decoded by ffmpeg — bit-exact.

mod capture_common;

use base64::Engine as _;
use capture_common::gen::*;
use capture_common::*;
use std::net::SocketAddr;
use std::path::Path;

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/pcap");
const MARSEILLAISE_KEY: &str = "aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz";

fn import(dir: &Path, args: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let cfg = config(dir, "");
    let mut a = vec!["import-pcap", "--json", "--config", cfg.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = run_ok(&a);
    (cfg, serde_json::from_str(&out).unwrap())
}

#[test]
fn marseillaise_decrypts_like_an_independent_srtp_implementation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pcap = format!("{PCAP_DIR}/srtp-marseillaise-aes128-sha1-80.pcap");
    let key = format!("10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:{MARSEILLAISE_KEY}");
    let (cfg, rep) = import(dir, &[&pcap, "--srtp-key", &key]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{rep}");
    let r = &list(&cfg)[0];
    assert_eq!(r["state"], "complete", "{r}");
    assert_eq!(r["codec"], "PCMA");
    assert_eq!(r["call_id"], "unsignalled:10.1.1.1:10000-10.2.2.2:10000");
    let id = r["id"].as_str().unwrap();
    let s = show(&cfg, id);
    assert!(s["participants"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "unsignalled"));
    let st = &s["stats"][0];
    assert_eq!(st["srtp_suite"], "AES_CM_128_HMAC_SHA1_80", "{st}");
    assert_eq!(st["srtp_ok"], 11888, "{st}");
    assert_eq!(st["srtp_auth_fail"], 0, "{st}");
    assert_eq!(st["lost"], 0, "{st}");

    // The reference: Python's AES-CTR + HMAC-SHA1 decrypts, ffmpeg decodes the A-law.
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/capture_common/srtp_ref.py"
        ))
        .args([pcap.as_str(), "10.1.1.1:10000", MARSEILLAISE_KEY])
        .output()
        .expect("python3 with cryptography (apt-get install python3-cryptography)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 11888 * 160);
    let reference = ffmpeg_decode(dir, "ref.alaw", "alaw", &out.stdout, Some(8000), 8000);
    let c0 = channel(&export(&cfg, dir, id), 0, 2);
    let at = find_exact(&c0, &reference[8000..8800]).expect("reference audio not found") - 8000;
    assert_eq!(
        &c0[at..at + reference.len()],
        &reference[..],
        "decrypted audio differs"
    );
    // Audible: not silence, not noise-level.
    let rms = (reference.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
        / reference.len() as f64)
        .sqrt();
    assert!(rms > 300.0, "rms {rms}");

    // A wrong key: every packet fails authentication; nothing is decoded as audio.
    let d2 = dir.join("wrong");
    std::fs::create_dir_all(&d2).unwrap();
    let bad = format!(
        "10.1.1.1:10000=AES_CM_128_HMAC_SHA1_80:inline:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 30])
    );
    let (cfg2, _) = import(&d2, &[&pcap, "--srtp-key", &bad]);
    let r2 = &list(&cfg2)[0];
    let s2 = show(&cfg2, r2["id"].as_str().unwrap());
    assert_eq!(
        s2["stats"][0]["srtp_auth_fail"], 11888,
        "{}",
        s2["stats"][0]
    );
    assert_eq!(s2["stats"][0]["srtp_ok"], 0);
    // As on the SIPREC path: the failures are counted, and no forged or undecryptable
    // packet is ever written as audio.
    let a2 = export(&cfg2, &d2, r2["id"].as_str().unwrap());
    assert!(
        a2.iter().all(|&v| v == 0),
        "undecryptable SRTP written as audio"
    );
}

struct SrtpCall {
    call_id: &'static str,
    /// The offer's a=crypto lines: (tag, suite, key bytes).
    offer: Vec<(u32, &'static str, Vec<u8>)>,
    /// The answer's line.
    answer: (u32, &'static str, Vec<u8>),
    net: u8,
}

fn line((tag, suite, key): &(u32, &str, Vec<u8>)) -> String {
    format!(
        "{tag} {suite} inline:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

fn sender(l: &(u32, &str, Vec<u8>)) -> branchrec::media::srtp::SrtpSender {
    let attr = branchrec::sdp::parse_crypto(&line(l)).unwrap();
    branchrec::media::srtp::SrtpSender::new(&attr.policy).unwrap()
}

const PACKETS: u32 = 60;
const TAMPERED: u32 = 21;
const REPLAYED: u32 = 30;

/// Writes the call; returns what each channel sent (µ-law payloads per packet index).
fn write_call(cap: &mut Pcap, c: &SrtpCall) -> [Vec<Vec<u8>>; 2] {
    let n = c.net;
    let d = Dialog::new(
        c.call_id,
        &format!("10.40.{n}.1:5060"),
        &format!("10.40.{n}.2:5060"),
    );
    let ma: SocketAddr = format!("10.40.{n}.1:40000").parse().unwrap();
    let mb: SocketAddr = format!("10.40.{n}.2:50000").parse().unwrap();
    let offer_lines: Vec<String> = c
        .offer
        .iter()
        .map(|l| format!("a=crypto:{}", line(l)))
        .collect();
    let mut oa: Vec<&str> = offer_lines.iter().map(String::as_str).collect();
    oa.push("a=sendrecv");
    let al = format!("a=crypto:{}", line(&c.answer));
    let t0 = MS(1_700_000_000_000 + u64::from(n) * 10_000);
    d.request(
        cap,
        t0,
        "INVITE",
        1,
        false,
        &sdp(&format!("10.40.{n}.1"), &[(40000, "RTP/SAVP", "0", &oa)]),
    );
    d.response(
        cap,
        t0 + MS(200),
        "200 OK",
        "1 INVITE",
        &sdp(
            &format!("10.40.{n}.2"),
            &[(50000, "RTP/SAVP", "0", &[al.as_str(), "a=sendrecv"])],
        ),
    );
    d.request(cap, t0 + MS(210), "ACK", 1, true, "");
    // The caller protects with its offered line of the answered tag, the callee with its own.
    let caller_line = c.offer.iter().find(|l| l.0 == c.answer.0).unwrap();
    let mut tx = [sender(caller_line), sender(&c.answer)];
    let mut sent = [Vec::new(), Vec::new()];
    for k in 0..PACKETS {
        for ch in 0..2usize {
            let (src, dst) = if ch == 0 { (ma, mb) } else { (mb, ma) };
            let pl = tone_ulaw(ch as u32 + u32::from(n), k * 160, 160);
            sent[ch].push(pl.clone());
            let mut buf = branchrec::capture::frame::rtp(
                0,
                (500 + k) as u16,
                k * 160,
                0x5000 + ch as u32,
                k == 0,
                &pl,
            );
            let len = buf.len();
            buf.resize(len + 32, 0);
            let len = tx[ch].protect_rtp(&mut buf, len, 0, 0).unwrap();
            buf.truncate(len);
            if k == TAMPERED {
                buf[20] ^= 0x01; // one payload bit: the tag no longer matches
            }
            let at = t0
                + MS(220 + u64::from(k) * 20)
                + std::time::Duration::from_micros(ch as u64 * 100);
            cap.udp(at, src, dst, &buf);
            if k == REPLAYED {
                cap.udp(at + MS(5), src, dst, &buf); // a replayed copy
            }
        }
    }
    d.request(
        cap,
        t0 + MS(220 + u64::from(PACKETS) * 20 + 40),
        "BYE",
        2,
        true,
        "",
    );
    sent
}

#[test]
fn sdes_keys_in_mirrored_sip_decrypt_each_direction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = |seed: u32, len: usize| noise_bytes(seed, len);
    let calls = [
        // The offer lists GCM first and AES-CM second; the answer picks tag 2 (AES-CM):
        // the caller must be decrypted with its tag-2 key, not its first line.
        SrtpCall {
            call_id: "srtp-aescm@test",
            offer: vec![
                (1, "AEAD_AES_256_GCM", key(1, 44)),
                (2, "AES_CM_128_HMAC_SHA1_80", key(2, 30)),
            ],
            answer: (2, "AES_CM_128_HMAC_SHA1_80", key(3, 30)),
            net: 1,
        },
        SrtpCall {
            call_id: "srtp-gcm@test",
            offer: vec![
                (5, "AES_CM_128_HMAC_SHA1_80", key(4, 30)),
                (7, "AEAD_AES_256_GCM", key(5, 44)),
            ],
            answer: (7, "AEAD_AES_256_GCM", key(6, 44)),
            net: 2,
        },
    ];
    let mut cap = Pcap::default();
    let sents: Vec<[Vec<Vec<u8>>; 2]> = calls.iter().map(|c| write_call(&mut cap, c)).collect();
    let pcap = dir.join("srtp.pcap");
    cap.write(&pcap);
    let (cfg, rep) = import(dir, &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 2, "{rep}");
    let recs = list(&cfg);
    for (c, sent) in calls.iter().zip(&sents) {
        let r = recs.iter().find(|r| r["call_id"] == c.call_id).unwrap();
        assert_eq!(r["state"], "complete", "{r}");
        let id = r["id"].as_str().unwrap();
        let s = show(&cfg, id);
        let samples = export(&cfg, dir, id);
        for ch in 0..2usize {
            let st = &s["stats"][ch];
            assert_eq!(st["srtp_suite"], c.answer.1, "{}: {st}", c.call_id);
            assert_eq!(st["srtp_ok"], PACKETS - 1, "{} ch{ch}: {st}", c.call_id);
            assert_eq!(st["srtp_auth_fail"], 1, "{} ch{ch}: {st}", c.call_id);
            assert_eq!(st["srtp_replay"], 1, "{} ch{ch}: {st}", c.call_id);
            assert_eq!(st["lost"], 1, "{} ch{ch}: {st}", c.call_id);
            let chan = channel(&samples, ch, 2);
            let dec = |p: &[u8]| -> Vec<i16> {
                p.iter()
                    .map(|&b| branchrec::media::ulaw_to_linear(b))
                    .collect()
            };
            let first = dec(&sent[ch][0]);
            let base = find_exact(&chan, &first)
                .unwrap_or_else(|| panic!("{} ch{ch}: audio not found", c.call_id));
            for (k, p) in sent[ch].iter().enumerate() {
                let got = &chan[base + k * 160..base + k * 160 + 160];
                if k as u32 == TAMPERED {
                    assert!(
                        got.iter().all(|&v| v == 0),
                        "{} ch{ch}: the forged packet is not silence",
                        c.call_id
                    );
                } else {
                    assert_eq!(got, dec(p).as_slice(), "{} ch{ch}: packet {k}", c.call_id);
                }
            }
        }
    }
}

#[test]
fn sip_over_tls_is_catalogued_as_encrypted_signalling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cap = Pcap::default();
    let phone: SocketAddr = "10.50.0.1:49152".parse().unwrap();
    let pbx: SocketAddr = "10.50.0.2:5061".parse().unwrap();
    let t0 = MS(1_700_000_000_000);
    cap.tcp(t0, phone, pbx, 1000, 0x02, b"");
    cap.tcp(t0 + MS(1), pbx, phone, 5000, 0x12, b"");
    // ClientHello, ServerHello, then application data both ways (the INVITE, its 200).
    let mut hello = vec![22, 3, 1, 0, 60, 1, 0, 0, 56, 3, 3];
    hello.extend(noise_bytes(1, 54));
    cap.tcp(t0 + MS(2), phone, pbx, 1001, 0x18, &hello);
    let mut sh = vec![22, 3, 3, 0, 40, 2, 0, 0, 36, 3, 3];
    sh.extend(noise_bytes(2, 34));
    cap.tcp(t0 + MS(3), pbx, phone, 5001, 0x18, &sh);
    let mut app = vec![23, 3, 3, 3, 0];
    app.extend(noise_bytes(3, 768));
    cap.tcp(
        t0 + MS(10),
        phone,
        pbx,
        1001 + hello.len() as u32,
        0x18,
        &app,
    );
    cap.tcp(t0 + MS(200), pbx, phone, 5001 + sh.len() as u32, 0x18, &app);
    // The call's RTP (its SDP was inside TLS): nothing binds it, nothing is recorded.
    let (ra, rb): (SocketAddr, SocketAddr) = (
        "10.50.0.1:40000".parse().unwrap(),
        "10.50.0.9:50000".parse().unwrap(),
    );
    for k in 0..50u32 {
        let pl = tone_ulaw(1, k * 160, 160);
        cap.udp(
            t0 + MS(300 + u64::from(k) * 20),
            ra,
            rb,
            &branchrec::capture::frame::rtp(0, k as u16, k * 160, 9, false, &pl),
        );
    }
    cap.tcp(
        t0 + MS(2000),
        phone,
        pbx,
        1001 + (hello.len() + app.len()) as u32,
        0x11,
        b"",
    );
    let pcap = dir.join("tls.pcap");
    cap.write(&pcap);
    let (cfg, rep) = import(dir, &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(rep["stats"]["tracker"]["calls_encrypted"], 1, "{rep}");
    assert_eq!(
        rep["stats"]["tcp"]["messages"], 0,
        "TLS bytes taken for SIP: {rep}"
    );
    let recs = list(&cfg);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let r = &recs[0];
    assert_eq!(r["codec"], "encrypted_signalling", "{r}");
    assert_eq!(r["state"], "codec_unsupported", "{r}");
    assert_eq!(r["call_id"], "tls:10.50.0.1:49152-10.50.0.2:5061");
    let s = show(&cfg, r["id"].as_str().unwrap());
    assert!(s["file_path"].is_null(), "no audio file: {s}");
    assert!(
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "encrypted_signalling"),
        "{s}"
    );
    let d = s["duration_ms"].as_u64().unwrap();
    assert!(
        (1900..=2100).contains(&d),
        "ends with the connection: {d} ms"
    );
}
