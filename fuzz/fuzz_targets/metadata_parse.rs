//! Fuzz the SIPREC body splitter, the classifier, the RFC 7865 metadata parser, merging
//! and the channel map.
//!
//! Input layout: first line = Content-Type header value, rest = body. The whole input is
//! also fed to the metadata parser directly (including `<participant>`s nested in
//! `<session>`), to the root-element sniffer that finds metadata behind a garbled
//! Content-Type and to the `metadata_unusable` verdict. Properties: nothing panics; a
//! document the verdict calls usable parses.
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

    let usable = metadata::unusable_reason(data).is_none();
    let sniffed = metadata::looks_like_metadata(data);
    let parsed = metadata::parse(data);
    if usable {
        assert!(parsed.is_ok(), "a usable document parses");
    }
    // A body the sniffer takes for metadata also goes through the splitter (no panic).
    if sniffed {
        let _ = siprec::split_body("multipart/mixed;boundary=b", data);
    }
    if let Ok(md) = parsed {
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
