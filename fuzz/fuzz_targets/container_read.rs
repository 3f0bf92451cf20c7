//! Fuzz the recording container reader: arbitrary bytes must never panic, and with a
//! fixed KEK the reader must only ever return audio from chunks that authenticate.
#![no_main]

use branchrec::keys::test_kek::TestKek;
use branchrec::recording::container::{read_all_audio, read_header, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vault = TestKek::from_key([0x42; 32]);
    let _ = read_header(&mut &data[..]);
    let _ = scan(data, &vault);
    let _ = read_all_audio(data, &vault);
});
