//! Fuzz the SIPREC body splitter, the classifier, the RFC 7865 metadata parser, merging
//! and the channel map.
//!
//! Input layout: first line = Content-Type header value, rest = body. The whole input is
//! also fed to the metadata parser directly. Property: nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use branchrec::siprec::{self, metadata};

    let (ct, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let ct = String::from_utf8_lossy(ct);

    let _ = siprec::classify(&ct, body, &["siprec"], &[], data.len() % 2 == 0);
    let mut labels: Vec<Option<String>> = vec![Some("1".into()), None, Some("2".into())];
    if let Ok(split) = siprec::split_body(&ct, body) {
        if let Some(sdp) = &split.sdp {
            if let Ok(offer) = branchrec::sdp::parse(sdp) {
                labels = offer.labels();
            }
        }
        if let Some(m) = &split.metadata {
            if let Ok(md) = metadata::parse(&m.bytes) {
                let map = siprec::channel_map(&md, &labels);
                assert_eq!(map.len(), labels.len());
            }
        }
    }

    if let Ok(md) = metadata::parse(data) {
        let map = siprec::channel_map(&md, &labels);
        assert_eq!(map.len(), labels.len());
        let mut state = md.clone();
        state.merge(md.clone());
        let mut partial = md;
        partial.data_mode = Some(metadata::DataMode::Partial);
        state.merge(partial);
        let _ = siprec::channel_map(&state, &labels);
    }
});
