//! Fuzz the recording container reader: arbitrary bytes must never panic, and with a
//! fixed KEK the reader must only ever return audio from chunks that authenticate.
#![no_main]

use branchrec::recording::{read_all_audio, read_header, scan};
use branchrec::vault::KeyFileVault;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vault = KeyFileVault::from_key([0x42; 32]);
    let _ = read_header(&mut &data[..]);
    let _ = scan(data, &vault);
    let _ = read_all_audio(data, &vault);
});
