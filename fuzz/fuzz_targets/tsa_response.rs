#![no_main]
//! Issue #19: a TSA's reply (network input) through the RFC 3161 response parser, and
//! CDR CSV text through the reconciliation parser. Neither may panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = branchrec::assurance::tsa::parse_response(data, b"manifest", [1, 2, 3, 4, 5, 6, 7, 8]);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cdrs) = branchrec::assurance::cdr::parse_csv(text) {
            let _ = branchrec::assurance::cdr::reconcile(&cdrs, &[], 30_000);
        }
    }
});
