//! Issue #18 step 1: mirror mode decodes every codec the SIPREC path has, through the
//! same decoders and timeline. The shared third-party captures (G.722, Opus, G.729A) are
//! imported and their exported audio compared with ffmpeg decoding the same RTP payloads
//! (read from the pcap by an independent reader, `capture_common::gen::rtp_from_pcap`):
//! bit-exact for G.722, an SNR threshold for Opus and G.729 (other implementations).
//! A generated capture checks a codec change by re-INVITE (G.722 → PCMU on one 16 kHz
//! timeline), RFC 4733 telephone-event, and the sample rate chosen per call (a PCMA call
//! in the same capture stays 8 kHz, bit-exact). Needs ffmpeg.

mod capture_common;

use capture_common::gen::*;
use capture_common::*;
use std::path::Path;

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/pcap");

fn import(dir: &Path, files: &[&str], extra: &str) -> (std::path::PathBuf, serde_json::Value) {
    let cfg = config(dir, extra);
    let mut args = vec!["import-pcap", "--json", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(files);
    let out = run_ok(&args);
    (cfg, serde_json::from_str(&out).unwrap())
}

/// Import one shared capture with one call; (recording row, its two channels).
fn import_one(dir: &Path, file: &str) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let (cfg, rep) = import(dir, &[&format!("{PCAP_DIR}/{file}")], "");
    assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{rep}");
    let recs = list(&cfg);
    assert_eq!(recs.len(), 1);
    let r = recs[0].clone();
    assert_eq!(r["state"], "complete", "{file}: {r}");
    let s = export(&cfg, dir, r["id"].as_str().unwrap());
    (
        show(&cfg, r["id"].as_str().unwrap()),
        channel(&s, 0, 2),
        channel(&s, 1, 2),
    )
}

#[test]
fn shared_g722_capture_is_bit_exact_with_ffmpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let file = "wireshark-sample-sip-rtp-g722.pcap";
    let (r, c0, c1) = import_one(tmp.path(), file);
    assert_eq!(r["codec"], "G722");
    assert_eq!(r["sample_rate"], 16000);
    let rtp = rtp_from_pcap(&Path::new(PCAP_DIR).join(file));
    let raw: Vec<u8> = rtp
        .iter()
        .filter(|p| p.pt == 9)
        .flat_map(|p| p.payload.clone())
        .collect();
    assert_eq!(raw.len(), 425 * 160);
    let reference = ffmpeg_decode(tmp.path(), "ref.g722", "g722", &raw, None, 16000);
    assert_eq!(reference.len(), 425 * 320);
    // One-way RTP from the callee (10.0.2.15): channel 1; channel 0 silent.
    assert!(c0.iter().all(|&v| v == 0), "caller sent nothing");
    let at = find_exact(&c1, &reference[1000..1640]).expect("ffmpeg's decode not found bit-exact")
        - 1000;
    assert_eq!(
        &c1[at..at + reference.len()],
        &reference[..],
        "G.722 differs from ffmpeg"
    );
    assert!(c1[at + reference.len()..].iter().all(|&v| v == 0));
    assert!(c1[..at].iter().all(|&v| v == 0));
    // Complete: the recording holds every packet, from the 200 OK to the BYE.
    assert_eq!(r["stats"][1]["received"], 425);
    assert_eq!(r["stats"][1]["lost"], 0);
}

#[test]
fn shared_opus_capture_matches_ffmpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let file = "wireshark-sample-sip-rtp-opus.pcap";
    let (r, c0, c1) = import_one(tmp.path(), file);
    assert_eq!(r["codec"], "OPUS");
    assert_eq!(r["sample_rate"], 16000);
    assert!(c0.iter().all(|&v| v == 0));
    let rtp: Vec<PcapRtp> = rtp_from_pcap(&Path::new(PCAP_DIR).join(file))
        .into_iter()
        .filter(|p| p.pt == 99)
        .collect();
    assert_eq!(rtp.len(), 425);
    let pkts: Vec<(Vec<u8>, u64)> = rtp
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let next = rtp
                .get(i + 1)
                .map_or(960, |n| u64::from(n.ts.wrapping_sub(p.ts)));
            (p.payload.clone(), next)
        })
        .collect();
    let ogg = ogg_opus(&pkts, 1);
    let reference = ffmpeg_decode(tmp.path(), "ref.opus", "ogg", &ogg, None, 16000);
    assert!(reference.len() > 16000 * 8, "{}", reference.len());
    let around = first_nonzero(&c1).saturating_sub(first_nonzero(&reference));
    let (o, snr) = best_snr(&c1, &reference[..reference.len() - 320], around, 960);
    eprintln!("opus: {snr:.1} dB vs ffmpeg at offset {o} (first-nonzero guess {around})");
    assert!(snr > 20.0, "Opus vs ffmpeg: {snr:.1} dB");
    assert_eq!(r["stats"][1]["received"], 425);

    // The same capture with every 25th RTP packet removed: the gaps are filled by Opus
    // in-band FEC (from the next packet) or PLC, through the SIPREC path's timeline.
    let lossy = tmp.path().join("lossy.pcap");
    {
        use branchrec::capture::pcapfile::{PcapReader, PcapWriter};
        let mut rd =
            PcapReader::new(std::fs::File::open(Path::new(PCAP_DIR).join(file)).unwrap()).unwrap();
        let mut w = PcapWriter::new(std::fs::File::create(&lossy).unwrap(), 1).unwrap();
        let mut n = 0;
        while let Some(f) = rd.next_frame().unwrap() {
            let is_rtp = f.data.len() > 54 && f.data[42] == 0x80 && f.data[43] & 0x7f == 99;
            if is_rtp {
                n += 1;
                if n % 25 == 10 {
                    continue;
                }
            }
            w.write(f.ts, &f.data).unwrap();
        }
    }
    let d2 = tmp.path().join("lossy");
    std::fs::create_dir_all(&d2).unwrap();
    let (cfg2, _) = import(&d2, &[lossy.to_str().unwrap()], "");
    let recs = list(&cfg2);
    let s2 = show(&cfg2, recs[0]["id"].as_str().unwrap());
    let st = &s2["stats"][1];
    assert_eq!(s2["state"], "complete");
    assert_eq!(st["lost"], 17, "{st}");
    let fec = st["fec_recovered"].as_u64().unwrap();
    let plc = st["concealed_ms"].as_u64().unwrap();
    eprintln!("opus with loss: fec_recovered {fec}, concealed_ms {plc}");
    assert!(
        fec + plc > 0,
        "lost Opus packets neither FEC-recovered nor concealed: {st}"
    );
}

#[cfg(feature = "g729")]
#[test]
fn shared_g729_capture_matches_ffmpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let file = "wireshark-sample-sip-rtp-g729a.pcap";
    let (r, c0, c1) = import_one(tmp.path(), file);
    assert_eq!(r["codec"], "G729");
    assert_eq!(r["sample_rate"], 8000);
    assert!(c0.iter().all(|&v| v == 0));
    let raw: Vec<u8> = rtp_from_pcap(&Path::new(PCAP_DIR).join(file))
        .iter()
        .filter(|p| p.pt == 18)
        .flat_map(|p| p.payload.clone())
        .collect();
    let reference = ffmpeg_decode(tmp.path(), "ref.g729", "g729", &raw, None, 8000);
    assert!(reference.len() > 8000 * 8, "{}", reference.len());
    let around = first_nonzero(&c1).saturating_sub(first_nonzero(&reference));
    let (o, snr) = best_snr(&c1, &reference, around, 160);
    eprintln!("g729: {snr:.1} dB vs ffmpeg at offset {o}");
    // bcg729 and libavcodec are independent G.729 decoders: close, not identical.
    assert!(snr > 15.0, "G.729 vs ffmpeg: {snr:.1} dB");
}

fn ulaw(b: &[u8]) -> Vec<i16> {
    b.iter()
        .map(|&x| branchrec::media::ulaw_to_linear(x))
        .collect()
}

/// RFC 4733 event payload.
fn dtmf(event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut v = vec![event, if end { 0x80 | 10 } else { 10 }];
    v.extend(duration.to_be_bytes());
    v
}

#[test]
fn codec_change_by_reinvite_dtmf_and_rate_per_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cap = Pcap::default();
    // Call A: G.722 with telephone-event, re-INVITE to PCMU after 50 packets.
    let a = Dialog::new("gen-g722-switch@test", "10.30.0.1:5060", "10.30.0.2:5060");
    let (ma, mb): (std::net::SocketAddr, std::net::SocketAddr) = (
        "10.30.0.1:40000".parse().unwrap(),
        "10.30.0.2:50000".parse().unwrap(),
    );
    let t0 = MS(1_700_000_000_000);
    let offer = sdp(
        "10.30.0.1",
        &[(
            40000,
            "RTP/AVP",
            "9 0 101",
            &[
                "a=rtpmap:9 G722/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendrecv",
            ],
        )],
    );
    let answer = sdp(
        "10.30.0.2",
        &[(
            50000,
            "RTP/AVP",
            "9 101",
            &[
                "a=rtpmap:9 G722/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendrecv",
            ],
        )],
    );
    a.request(&mut cap, t0, "INVITE", 1, false, &offer);
    a.response(&mut cap, t0 + MS(300), "200 OK", "1 INVITE", &answer);
    a.request(&mut cap, t0 + MS(310), "ACK", 1, true, "");
    let re_offer = sdp(
        "10.30.0.1",
        &[(
            40000,
            "RTP/AVP",
            "0 101",
            &["a=rtpmap:101 telephone-event/8000", "a=sendrecv"],
        )],
    );
    let re_answer = sdp(
        "10.30.0.2",
        &[(
            50000,
            "RTP/AVP",
            "0 101",
            &["a=rtpmap:101 telephone-event/8000", "a=sendrecv"],
        )],
    );
    let t_re = t0 + MS(320 + 50 * 20);
    a.request(&mut cap, t_re - MS(15), "INVITE", 2, true, &re_offer);
    a.response(&mut cap, t_re - MS(10), "200 OK", "2 INVITE", &re_answer);
    a.request(&mut cap, t_re - MS(5), "ACK", 2, true, "");
    let mut sent_g722 = [Vec::new(), Vec::new()];
    let mut sent_pcmu = [Vec::new(), Vec::new()];
    for k in 0..100u32 {
        for ch in 0..2usize {
            let (src, dst) = if ch == 0 { (ma, mb) } else { (mb, ma) };
            let ts = 1000 + k * 160;
            let seq = (10 + k) as u16;
            let at = t0
                + MS(320 + u64::from(k) * 20)
                + std::time::Duration::from_micros(ch as u64 * 200);
            let ssrc = 0xa000 + ch as u32;
            // The caller presses 5 during packets 20..26 (no voice meanwhile).
            if ch == 0 && (20..26).contains(&k) {
                let ev = dtmf(5, k == 25, ((k - 19) * 160) as u16);
                cap.udp(
                    at,
                    src,
                    dst,
                    &branchrec::capture::frame::rtp(101, seq, 1000 + 20 * 160, ssrc, k == 20, &ev),
                );
                continue;
            }
            let (pt, pl) = if k < 50 {
                (9, noise_bytes(ch as u32 * 1000 + k, 160))
            } else {
                (0, tone_ulaw(ch as u32, k * 160, 160))
            };
            if k < 50 {
                sent_g722[ch].push((k, pl.clone()));
            } else {
                sent_pcmu[ch].push((k, pl.clone()));
            }
            cap.udp(
                at,
                src,
                dst,
                &branchrec::capture::frame::rtp(pt, seq, ts, ssrc, k == 0, &pl),
            );
        }
    }
    let t_end = t0 + MS(320 + 100 * 20 + 50);
    a.request(&mut cap, t_end, "BYE", 3, true, "");
    a.response(&mut cap, t_end + MS(5), "200 OK", "3 BYE", "");
    // Call B, at the same time: PCMA only → an 8 kHz recording.
    let b = Dialog::new("gen-pcma@test", "10.31.0.1:5060", "10.31.0.2:5060");
    let (mc, md): (std::net::SocketAddr, std::net::SocketAddr) = (
        "10.31.0.1:40000".parse().unwrap(),
        "10.31.0.2:50000".parse().unwrap(),
    );
    b.request(
        &mut cap,
        t0,
        "INVITE",
        1,
        false,
        &sdp("10.31.0.1", &[(40000, "RTP/AVP", "8", &["a=sendrecv"])]),
    );
    b.response(
        &mut cap,
        t0 + MS(300),
        "200 OK",
        "1 INVITE",
        &sdp("10.31.0.2", &[(50000, "RTP/AVP", "8", &["a=sendrecv"])]),
    );
    let mut sent_b = Vec::new();
    for k in 0..50u32 {
        let pl = g711_bytes(7000 + k, 160);
        sent_b.extend(pl.iter().map(|&x| branchrec::media::alaw_to_linear(x)));
        cap.udp(
            t0 + MS(320 + u64::from(k) * 20),
            mc,
            md,
            &branchrec::capture::frame::rtp(8, k as u16, k * 160, 0xb0, k == 0, &pl),
        );
    }
    b.request(&mut cap, t0 + MS(320 + 50 * 20 + 20), "BYE", 2, true, "");
    let pcap = dir.join("gen.pcap");
    cap.write(&pcap);

    let (cfg, rep) = import(
        dir,
        &[pcap.to_str().unwrap()],
        "[privacy]\ndtmf_digits = true\n",
    );
    assert_eq!(rep["calls"].as_array().unwrap().len(), 2, "{rep}");
    let recs = list(&cfg);
    let find = |cid: &str| recs.iter().find(|r| r["call_id"] == cid).unwrap().clone();
    let ra = find("gen-g722-switch@test");
    let rb = find("gen-pcma@test");
    assert_eq!(ra["state"], "complete", "{ra}");
    assert_eq!(rb["state"], "complete", "{rb}");
    let sa = show(&cfg, ra["id"].as_str().unwrap());
    let sb = show(&cfg, rb["id"].as_str().unwrap());
    assert_eq!(sa["sample_rate"], 16000);
    assert_eq!(sb["sample_rate"], 8000);
    assert!(
        sa["codec"].as_str().unwrap().contains("G722")
            && sa["codec"].as_str().unwrap().contains("PCMU"),
        "{}",
        sa["codec"]
    );
    // The caller's DTMF digit.
    let digits: Vec<&serde_json::Value> = sa["dtmf"].as_array().unwrap().iter().collect();
    assert!(
        digits
            .iter()
            .any(|d| d["digit"] == "5" && d["channel"] == 0),
        "dtmf: {:?}",
        sa["dtmf"]
    );
    // Call B: the A-law samples exactly.
    let eb = export(&cfg, dir, rb["id"].as_str().unwrap());
    let cb = channel(&eb, 0, 2);
    let at = find_exact(&cb, &sent_b[..320]).expect("PCMA audio");
    assert_eq!(&cb[at..at + sent_b.len()], &sent_b[..]);

    let ea = export(&cfg, dir, ra["id"].as_str().unwrap());
    #[allow(clippy::needless_range_loop)]
    for ch in 0..2usize {
        let c = channel(&ea, ch, 2);
        // The G.722 part: ffmpeg's decode of each continuous run of payloads, bit-exact,
        // at 2 samples per RTP timestamp unit.
        let runs: Vec<&[(u32, Vec<u8>)]> = if ch == 0 {
            vec![&sent_g722[0][..20], &sent_g722[0][20..]]
        } else {
            vec![&sent_g722[1][..]]
        };
        let mut base: Option<i64> = None;
        for (i, run) in runs.iter().enumerate() {
            let raw: Vec<u8> = run.iter().flat_map(|p| p.1.clone()).collect();
            let reference =
                ffmpeg_decode(dir, &format!("g{ch}{i}.g722"), "g722", &raw, None, 16000);
            let k0 = i64::from(run[0].0);
            let pos = match base {
                None => {
                    let at = find_exact(&c, &reference[640..1280])
                        .unwrap_or_else(|| panic!("ch{ch}: G.722 not found"))
                        as i64
                        - 640;
                    base = Some(at - k0 * 320);
                    at
                }
                Some(b) => b + k0 * 320,
            } as usize;
            if i == 0 {
                assert_eq!(
                    &c[pos..pos + reference.len()],
                    &reference[..],
                    "ch{ch} run {i}"
                );
            } else {
                // After the DTMF the decoder state carries on from the first run: only the
                // tail (once ADPCM adaptation has converged) must match; take SNR.
                let (_, snr) = best_snr(&c, &reference[640..], pos + 640, 0);
                assert!(snr > 20.0, "ch{ch} G.722 after DTMF: {snr:.1} dB");
            }
        }
        // The PCMU part after the re-INVITE, upsampled to the call's 16 kHz.
        let b = base.unwrap();
        let pcm8: Vec<i16> = sent_pcmu[ch].iter().flat_map(|p| ulaw(&p.1)).collect();
        let bytes: Vec<u8> = pcm8.iter().flat_map(|v| v.to_le_bytes()).collect();
        let up = ffmpeg_decode(
            dir,
            &format!("u{ch}.raw"),
            "s16le",
            &bytes,
            Some(8000),
            16000,
        );
        let pos = (b + 50 * 320) as usize;
        let (o, snr) = best_snr(&c, &up[200..up.len() - 200], pos + 200, 16);
        eprintln!(
            "ch{ch} PCMU part: {snr:.1} dB at {o} (expected {})",
            pos + 200
        );
        assert!(
            snr > 25.0,
            "ch{ch} PCMU part vs ffmpeg-resampled: {snr:.1} dB"
        );
    }
    let st = &sa["stats"][0];
    assert!(st["codec_changes"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["lost"], 0, "{st}");
}

#[test]
fn rtp_without_sdp_is_detected_when_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let file = format!("{PCAP_DIR}/miarec-metaswitch-10a_g722.pcap");
    // Off by default: RTP that no SDP announced is not a call.
    let d0 = tmp.path().join("off");
    std::fs::create_dir_all(&d0).unwrap();
    let (cfg0, rep0) = import(&d0, &[&file], "");
    assert_eq!(rep0["calls"].as_array().unwrap().len(), 0, "{rep0}");
    assert!(list(&cfg0).is_empty());
    // With detection on (`--unsignalled`, or [capture] unsignalled_rtp): one G.722 flow,
    // recorded from its 8th packet on, no participants, pairable by its 5-tuple.
    let d = tmp.path().join("on");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, rep) = import(&d, &[&file, "--unsignalled"], "");
    assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(rep["stats"]["tracker"]["calls_unsignalled"], 1);
    let r = &list(&cfg)[0];
    assert_eq!(r["state"], "complete", "{r}");
    assert_eq!(r["codec"], "G722");
    assert_eq!(
        r["call_id"],
        "unsignalled:192.91.191.186:16506-192.168.1.40:22000"
    );
    let s = show(&cfg, r["id"].as_str().unwrap());
    assert_eq!(s["sample_rate"], 16000);
    assert!(s["participants"].as_array().unwrap().is_empty());
    assert_eq!(
        s["channels"][0]["label"],
        "192.91.191.186:16506 -> 192.168.1.40:22000"
    );
    assert!(s["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "unsignalled"));
    let skipped = 7; // packets seen before the flow qualified (UNSIGNALLED_PACKETS - 1)
    assert_eq!(
        s["stats"][0]["received"],
        969 - skipped,
        "{}",
        s["stats"][0]
    );
    // Bit-exact with ffmpeg from the first recorded packet on.
    let raw: Vec<u8> = rtp_from_pcap(Path::new(&file))
        .iter()
        .filter(|p| p.pt == 9)
        .skip(skipped)
        .flat_map(|p| p.payload.clone())
        .collect();
    let reference = ffmpeg_decode(tmp.path(), "ref.g722", "g722", &raw, None, 16000);
    let c0 = channel(&export(&cfg, &d, r["id"].as_str().unwrap()), 0, 2);
    let at = find_exact(&c0, &reference[..640]).expect("ffmpeg's decode not found bit-exact");
    assert_eq!(&c0[at..at + reference.len()], &reference[..]);
}
