#![no_main]
//! Arbitrary bytes as a pcap / pcapng file.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = branchrec::capture::pcapfile::PcapReader::new(data) {
        for _ in 0..10_000 {
            match r.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});
