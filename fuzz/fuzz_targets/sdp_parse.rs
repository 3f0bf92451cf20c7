//! Fuzz the tolerant SDP parser, the serialiser and the answer builder.
//!
//! Properties: never panics; our own output always parses, and serialising it again
//! gives the same text (the serialiser is idempotent); an answer can be built for any
//! parsed offer and keeps the m-line count.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = branchrec::sdp::parse(text) else {
        return;
    };
    let out = offer.to_string();
    let again = branchrec::sdp::parse(&out).expect("own SDP output must parse");
    assert_eq!(again.to_string(), out, "serialiser must be idempotent");

    for (i, m) in offer.media.iter().enumerate() {
        let _ = m.codecs();
        let _ = m.direction(&offer);
        let _ = m.remote_addr(&offer);
        let _ = branchrec::sdp::is_hold(m, &offer);
        let _ = (m.label(), m.ptime(), m.crypto(), m.rtcp_mux(), i);
    }
    let params = branchrec::sdp::AnswerParams {
        local_addr: std::net::IpAddr::from([192, 0, 2, 1]),
        ports: (0..offer.media.len())
            .map(|i| {
                if i % 3 == 2 {
                    None
                } else {
                    Some(20000 + i as u16)
                }
            })
            .collect(),
        session_id: 1,
        session_version: 1,
        username: "fuzz".into(),
        supported: &["PCMU", "PCMA", "telephone-event"],
    };
    let answer = branchrec::sdp::build_answer(
        &offer,
        &params,
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
    )
    .expect("ports match m-lines");
    assert_eq!(answer.sdp.media.len(), offer.media.len());
    assert_eq!(answer.streams.len(), offer.media.len());
    branchrec::sdp::parse(&answer.sdp.to_string()).expect("answer must parse");
});
