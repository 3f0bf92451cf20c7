//! Issue #16 item 1, "silent gaps the counters do not show": the real daemon records a
//! call whose sender pauses 1.5 s without a timestamp jump (its RTP timestamps go on as if
//! no time had passed). The timeline re-anchors and inserts silence; that gap must be
//! counted per channel (`media_gaps`, `media_gap_ms`), evented (`media_gap`, with cause
//! and length), shown by `recordings show`, exported on `/metrics` — and the silent run
//! in the exported WAV must be the reported length within one packet (20 ms).

mod common;
#[path = "common/siprec_client.rs"]
mod siprec_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{assert_stats_schema, free_port, read_wav, serial, the_recording, Daemon};
use siprec_client::{invite, Invite};

/// Silent runs (samples == 0) of at least `min` samples strictly inside the audio (after
/// the first and before the last non-zero sample): (start, len).
fn inner_silent_runs(x: &[i16], min: usize) -> Vec<(usize, usize)> {
    let first = x.iter().position(|&s| s != 0).unwrap_or(x.len());
    let last = x.iter().rposition(|&s| s != 0).unwrap_or(0);
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &s) in x.iter().enumerate().take(last + 1).skip(first) {
        match (s == 0, start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                if i - st >= min {
                    runs.push((st, i - st));
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn get_metrics(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

#[test]
fn a_sender_pause_without_timestamp_jump_is_a_counted_evented_gap_matching_the_wav() {
    let _g = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mport = free_port();
    let mut d = Daemon::start_with(
        tmp.path(),
        &format!("[uplink]\nenabled = false\nmetrics_listen = \"127.0.0.1:{mport}\"\n"),
    );
    let srs = SocketAddr::from(([127, 0, 0, 1], d.sip_port));
    let mut c = match invite(srs, 1) {
        Invite::Up(c) => c,
        Invite::Rejected(code, r) => panic!("{code}\n{r}\n{}", d.log_text()),
    };
    c.stream(1000);
    // The sender stops for 1.5 s; its next packet continues seq and timestamp (+160).
    std::thread::sleep(Duration::from_millis(1500));
    let resumed = Instant::now();
    c.stream(1000);
    // How far the 51st packet's arrival is behind where its timestamp puts it.
    let first = c.first_rtp.expect("RTP sent");
    let pause_ms = resumed.duration_since(first).as_millis() as i64 - 1000;
    assert!(c.bye(), "BYE not answered\n{}", d.log_text());
    let r = the_recording(&d);
    assert_eq!(r["state"], "complete", "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    let show = d.recordings_json(&["show", &id, "--json"]);
    let stats = assert_stats_schema(&show, 2);
    let events = show["events"].as_array().expect("events").clone();
    let wav = tmp.path().join("gap.wav");
    d.recordings(&["export", &id, "--out", wav.to_str().expect("utf-8")]);
    let w = read_wav(&wav);
    assert_eq!((w.channels, w.rate), (2, 8000));
    let mut total_ms = 0;
    for (ch, st) in stats.iter().enumerate() {
        assert_eq!((st.lost, st.late), (0, 0), "channel {ch}: {st:?}");
        assert_eq!(st.media_gaps, 1, "channel {ch}: {st:?}\n{show}");
        let gap = st.media_gap_ms as i64;
        total_ms += st.media_gap_ms;
        assert!(
            (gap - pause_ms).abs() <= 40,
            "channel {ch}: gap {gap} ms for a {pause_ms} ms pause"
        );
        let ev: Vec<_> = events
            .iter()
            .filter(|e| e["kind"] == "media_gap" && e["channel"] == ch as u64)
            .collect();
        assert_eq!(ev.len(), 1, "channel {ch}: {events:?}");
        assert_eq!(ev[0]["detail"]["cause"], "reanchor", "{}", ev[0]);
        assert_eq!(ev[0]["detail"]["gap_ms"].as_i64(), Some(gap), "{}", ev[0]);
        assert_eq!(ev[0]["at_ms"], ev[0]["detail"]["from_ms"], "{}", ev[0]);
        // The WAV: one silent run inside the audio (the tone has single zero samples,
        // never 80 in a row), the reported length within one packet.
        let runs = inner_silent_runs(&w.data[ch], 80);
        assert_eq!(runs.len(), 1, "channel {ch}: silent runs {runs:?}");
        let (start, len) = runs[0];
        let run_ms = (len * 1000 / 8000) as i64;
        assert!(
            (run_ms - gap).abs() <= 20,
            "channel {ch}: {run_ms} ms of silence in the WAV, {gap} ms reported"
        );
        eprintln!("channel {ch}: pause {pause_ms} ms, gap {gap} ms reported, {run_ms} ms silent in the WAV");
        let from_ms = ev[0]["detail"]["from_ms"].as_i64().unwrap();
        assert!(
            ((start * 1000 / 8000) as i64 - from_ms).abs() <= 20,
            "channel {ch}: silence at {} ms, event at {from_ms} ms",
            start / 8
        );
    }
    // /metrics (from the status document, refreshed every few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let t = get_metrics(mport).unwrap_or_default();
        if metric(&t, "branchrec_media_gaps_total") == Some(2.0) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        metric(&text, "branchrec_media_gaps_total"),
        Some(2.0),
        "{text}"
    );
    let secs = metric(&text, "branchrec_media_gap_seconds_total").expect("gap seconds");
    assert!(
        (secs * 1000.0 - total_ms as f64).abs() < 1.0,
        "{secs} s on /metrics, {total_ms} ms in the stats"
    );
    assert!(d.log_text().contains("audio gap"), "no WARN for the gap");
    d.stop();
}
