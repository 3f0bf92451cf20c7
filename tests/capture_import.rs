//! `branchrec import-pcap`: the shared third-party captures and generated captures with
//! known audio (VLAN/QinQ, IPv4 and IPv6 fragments, SIP over TCP split and reordered,
//! RTP reordering and loss, ERSPAN, an unsupported codec).

mod capture_common;

use capture_common::*;

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/pcap");

fn import(dir: &std::path::Path, files: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let cfg = config(dir, "");
    let mut args = vec!["import-pcap", "--json", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(files);
    let out = run_ok(&args);
    (cfg.clone(), serde_json::from_str(&out).unwrap())
}

fn by_call_id<'a>(recs: &'a [serde_json::Value], call_id: &str) -> &'a serde_json::Value {
    recs.iter()
        .find(|r| r["call_id"] == call_id)
        .unwrap_or_else(|| panic!("call {call_id} not recorded; have {recs:#?}"))
}

fn has_event(cfg: &std::path::Path, id: &str, kind: &str) -> bool {
    show(cfg, id)["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == kind)
}

#[test]
fn shared_captures_are_found_with_their_participants() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = |f: &str| format!("{PCAP_DIR}/{f}");
    // Complete SIP calls with one-way RTP: G.722, G.729 (feature `g729`) and Opus are
    // recorded (their audio is checked against ffmpeg in tests/capture_codecs.rs); GSM,
    // iLBC and LPC, which the box cannot decode, are catalogued as codec_unsupported with
    // the codec named, never dropped.
    for (file, codec, call_id) in [
        (
            "wireshark-sample-sip-rtp-g722.pcap",
            "G722",
            "1-2161@10.0.2.20",
        ),
        (
            "wireshark-sample-sip-rtp-g729a.pcap",
            "G729",
            "1-24411@10.0.2.20",
        ),
        (
            "wireshark-sample-sip-rtp-gsm.pcap",
            "GSM",
            "1-2176@10.0.2.20",
        ),
        (
            "wireshark-sample-sip-rtp-ilbc.pcap",
            "ILBC",
            "1-4269@10.0.2.20",
        ),
        (
            "wireshark-sample-sip-rtp-lpc.pcap",
            "LPC",
            "1-2168@10.0.2.20",
        ),
        (
            "wireshark-sample-sip-rtp-opus.pcap",
            "OPUS",
            "1-4237@10.0.2.20",
        ),
    ] {
        let d = tmp.path().join(codec);
        std::fs::create_dir_all(&d).unwrap();
        let (cfg, rep) = import(&d, &[&pcap(file)]);
        assert_eq!(rep["calls"].as_array().unwrap().len(), 1, "{file}: {rep}");
        let recs = list(&cfg);
        let r = by_call_id(&recs, call_id);
        let decoded =
            matches!(codec, "G722" | "OPUS") || (codec == "G729" && cfg!(feature = "g729"));
        let want = if decoded {
            "complete"
        } else {
            "codec_unsupported"
        };
        assert_eq!(r["state"], want, "{file}");
        assert_eq!(r["source"], "mirror");
        assert_eq!(r["codec"], codec, "{file}");
        assert_eq!(
            participant(r, "caller")["aor"],
            "sip:sipp@10.0.2.20:5060",
            "{file}"
        );
        assert!(
            participant(r, "caller")["name"]
                .as_str()
                .is_some_and(|n| n.contains('/')),
            "{file}"
        );
        assert_eq!(
            participant(r, "callee")["aor"],
            "sip:test@10.0.2.15:5060",
            "{file}"
        );
        assert_eq!(participant(r, "callee")["name"], "test", "{file}");
        assert!(r["duration_ms"].as_u64().unwrap() > 5000, "{file}: {r}");
    }

    // The messy capture: SIP over UDP and TCP, registrations, auth challenges and
    // cancelled calls. Its only G.711 (PCMA) audio belongs to a call that got early
    // media (183 + SDP) and then failed with 480: that call is recorded with its parties.
    let d = tmp.path().join("aaa");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, _) = import(&d, &[&pcap("wireshark-sample-aaa.pcap")]);
    let recs = list(&cfg);
    let r = by_call_id(&recs, "11894297-4432a9f8@192.168.1.2");
    assert_eq!(
        participant(r, "caller")["aor"],
        "sip:35104723@sip.cybercity.dk"
    );
    assert_eq!(participant(r, "caller")["name"], "arik");
    assert_eq!(
        participant(r, "callee")["aor"],
        "sip:35104724@sip.cybercity.dk"
    );
    assert!(r["codec"].as_str().unwrap().contains("PCMA"), "{r}");
    assert!(has_event(&cfg, r["id"].as_str().unwrap(), "not_answered"));
    // Cancelled and rejected attempts without early media are not recordings.
    assert_eq!(recs.len(), 1, "{recs:#?}");

    // IPv6 fragments in Linux cooked capture: the INVITE only exists reassembled.
    let d = tmp.path().join("v6");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, rep) = import(&d, &[&pcap("sngrep-ipv6-fragmented-sip-sll.pcap")]);
    assert!(
        rep["stats"]["decode"]["reassembled"].as_u64().unwrap() >= 2,
        "{rep}"
    );
    let recs = list(&cfg);
    let r = by_call_id(
        &recs,
        "71846-1647924829-397430@fd17:625c:f037:2:a00:27ff:feb9:1521",
    );
    assert_eq!(r["state"], "codec_unsupported");
    assert_eq!(r["codec"], "AMR-WB");

    // SIP over TCP, partly inside an IP-in-IP tunnel: INVITE, 200 and BYE but no RTP
    // captured: recorded (silence) and flagged `no_media`.
    let d = tmp.path().join("ipip");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, rep) = import(&d, &[&pcap("sngrep-ipip-tunnel-sip.pcap")]);
    assert!(
        rep["stats"]["decode"]["decapsulated"].as_u64().unwrap() >= 2,
        "{rep}"
    );
    let recs = list(&cfg);
    let r = by_call_id(&recs, "1RLuVzzBClYCf2");
    assert_eq!(
        participant(r, "caller")["aor"],
        "sip:1bdaa608131517540000@10.15.197.103"
    );
    assert_eq!(
        participant(r, "callee")["aor"],
        "sip:1bdaa608131517540000@10.15.193.31"
    );
    assert_eq!(r["codec"], "PCMU");
    assert!(has_event(&cfg, r["id"].as_str().unwrap(), "no_media"));

    // A real SIPREC session whose INVITEs lost their first fragments: picked up from the
    // 200 OK, G.722 recorded at 16 kHz, flagged as incomplete.
    let d = tmp.path().join("webex");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, _) = import(
        &d,
        &[&pcap("miarec-webex-kamailio-siprec_dual_channel_udp.pcap")],
    );
    let recs = list(&cfg);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["state"], "complete");
    assert_eq!(recs[0]["codec"], "G722");
    assert!(has_event(
        &cfg,
        recs[0]["id"].as_str().unwrap(),
        "signalling_incomplete"
    ));

    // RTP without any SIP (and SRTP) is not a call: nothing to bind it to.
    let d = tmp.path().join("rtponly");
    std::fs::create_dir_all(&d).unwrap();
    let (cfg, rep) = import(
        &d,
        &[
            &pcap("drachtio-sipp-g711a.pcap"),
            &pcap("miarec-metaswitch-09a_2833_dtmf.pcap"),
            &pcap("srtp-marseillaise-aes128-sha1-80.pcap"),
        ],
    );
    assert_eq!(rep["calls"].as_array().unwrap().len(), 0);
    assert!(rep["frames"].as_u64().unwrap() > 14_000);
    assert!(list(&cfg).is_empty());
}

#[test]
fn generated_calls_are_recorded_sample_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let scs = scenarios();
    let pcap = tmp.path().join("generated.pcap");
    let sents = write_capture(&pcap, &scs);
    let (cfg, rep) = import(tmp.path(), &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), scs.len(), "{rep:#}");
    assert!(rep["stats"]["decode"]["reassembled"].as_u64().unwrap() >= 2);
    assert!(rep["stats"]["tcp"]["messages"].as_u64().unwrap() >= 7);
    let recs = list(&cfg);
    for (sc, sent) in scs.iter().zip(&sents) {
        let r = by_call_id(&recs, &sc.call_id);
        assert_eq!(
            participant(r, "caller")["aor"],
            sc.caller.as_str(),
            "{}",
            sc.name
        );
        assert_eq!(
            participant(r, "caller")["name"],
            format!("Caller {}", sc.idx),
            "{}",
            sc.name
        );
        assert_eq!(
            participant(r, "callee")["aor"],
            sc.callee.as_str(),
            "{}",
            sc.name
        );
        let id = r["id"].as_str().unwrap();
        if sc.g729 {
            let want = if cfg!(feature = "g729") {
                "complete"
            } else {
                "codec_unsupported"
            };
            assert_eq!(r["state"], want, "{}", sc.name);
            assert_eq!(r["codec"], "G729");
            continue;
        }
        assert_eq!(r["state"], "complete", "{}: {r}", sc.name);
        assert_eq!(r["codec"], "PCMA", "{}", sc.name);
        let expect_ms = 520 + u64::from(sc.packets) * 20 + 100 - 500;
        let d = r["duration_ms"].as_u64().unwrap();
        assert!(
            d.abs_diff(expect_ms) <= 20,
            "{}: duration {d} ms, expected {expect_ms}",
            sc.name
        );
        let samples = export(&cfg, tmp.path(), id);
        for (ch, sent_ch) in sent.iter().enumerate() {
            let n = check_channel(&samples, ch, sent_ch, sc.name);
            let on_wire = sent_ch.packets.iter().filter(|p| p.2).count();
            assert_eq!(n, on_wire, "{}", sc.name);
        }
        let s = show(&cfg, id);
        // Issue #13 item 2: the mirror/import path writes the same one channel schema.
        let typed = branchrec::recording::ChannelStats::parse_all(&s["stats"])
            .unwrap_or_else(|e| panic!("{}: stats schema: {e}: {}", sc.name, s["stats"]));
        assert_eq!(
            typed.len(),
            sent.len(),
            "{}: one stats element per channel",
            sc.name
        );
        let stats = s["stats"]
            .as_array()
            .unwrap_or_else(|| panic!("no stats: {s}"));
        for (ch, st) in stats.iter().enumerate() {
            let lost = sent[ch].packets.iter().filter(|p| !p.2).count() as u64;
            assert_eq!(st["lost"].as_u64(), Some(lost), "{}: {st}", sc.name);
            assert_eq!(
                st["received"].as_u64(),
                Some(u64::from(sc.packets) - lost),
                "{}: {st}",
                sc.name
            );
            // The injector's 30 packets per direction: dropped and counted, never audio.
            let foreign = if sc.inject { 30 } else { 0 };
            assert_eq!(
                st["rtp_foreign_source"].as_u64(),
                Some(foreign),
                "{}: {st}",
                sc.name
            );
        }
        assert_eq!(
            s["src_addr"].as_str().unwrap().split(' ').next(),
            Some("file:generated.pcap")
        );
    }
    // Deterministic: importing the same file again yields the same audio.
    let d2 = tmp.path().join("again");
    std::fs::create_dir_all(&d2).unwrap();
    let (cfg2, _) = import(&d2, &[pcap.to_str().unwrap()]);
    let recs2 = list(&cfg2);
    for sc in scs.iter().filter(|s| !s.g729) {
        let a = export(
            &cfg,
            tmp.path(),
            by_call_id(&recs, &sc.call_id)["id"].as_str().unwrap(),
        );
        let b = export(
            &cfg2,
            &d2,
            by_call_id(&recs2, &sc.call_id)["id"].as_str().unwrap(),
        );
        assert_eq!(a, b, "{}: second import differs", sc.name);
    }
}

/// Issue #19: verdicts of mirrored calls. A dialog whose RTP never appears on the mirror
/// port is a recording with verdict `no_media` (and is counted in the day's report); a
/// call with audio both ways is `recorded`; G.729 (not decodable, catalogued without a
/// file) is `missed`.
#[test]
fn mirrored_dialog_without_rtp_is_no_media() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = Scenario::new("both-ways", 11);
    let mut silent = Scenario::new("no-rtp", 12);
    silent.packets = 0;
    let mut g729 = Scenario::new("g729-v", 13);
    g729.g729 = true;
    let scs = vec![ok, silent, g729];
    let pcap = tmp.path().join("verdicts.pcap");
    write_capture(&pcap, &scs);
    let (cfg, rep) = import(tmp.path(), &[pcap.to_str().unwrap()]);
    assert_eq!(rep["calls"].as_array().unwrap().len(), 3, "{rep:#}");
    let recs = list(&cfg);
    let v = |sc: &Scenario| by_call_id(&recs, &sc.call_id)["verdict"].clone();
    assert_eq!(v(&scs[0]), "recorded", "{recs:#?}");
    assert_eq!(v(&scs[1]), "no_media", "{recs:#?}");
    // G.729: catalogued without a file where this build cannot decode it (`missed`);
    // decoded (the mirror decodes it with the g729 feature) it gets a recording's verdict.
    let g = by_call_id(&recs, &scs[2].call_id);
    let g_verdict = if g["state"] == "codec_unsupported" {
        assert_eq!(g["verdict"], "missed", "{g}");
        "missed"
    } else {
        assert!(g["verdict"].is_string(), "{g}");
        g["verdict"].as_str().unwrap()
    }
    .to_string();
    let id = by_call_id(&recs, &scs[1].call_id)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = show(&cfg, &id);
    assert_eq!(
        s["assurance"]["reason"], "no decodable RTP arrived on any channel",
        "{s}"
    );
    // The day's report counts them by source.
    let day = by_call_id(&recs, &scs[0].call_id)["start"]
        .as_str()
        .unwrap()[..10]
        .to_string();
    let out = run_ok(&[
        "assurance",
        "report",
        "--day",
        &day,
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["totals"]["calls"], 3, "{r}");
    let n = |v: &str| r["totals"]["by_source"]["mirror"][v].as_u64().unwrap_or(0);
    assert_eq!(n("no_media"), 1 + u64::from(g_verdict == "no_media"), "{r}");
    assert_eq!(n("recorded"), 1 + u64::from(g_verdict == "recorded"), "{r}");
    assert!(n(&g_verdict) >= 1, "{r}");
}
