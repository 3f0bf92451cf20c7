#![no_main]
//! Arbitrary frames (first byte picks the link type) through the whole capture engine.
use branchrec::time::Mono;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

struct Null;
impl branchrec::capture::engine::Sink for Null {
    fn on_event(&mut self, _: branchrec::capture::tracker::TrackerEvent) {}
    fn on_rtp(&mut self, _: u64, _: usize, _: Mono, _: SocketAddr, _: &[u8]) {}
    fn on_foreign_rtp(&mut self, _: u64, _: usize, _: Mono, _: SocketAddr) {}
    fn on_tick(&mut self, _: Mono) {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&lt, rest)) = data.split_first() else {
        return;
    };
    let linktype = [0u32, 1, 12, 101, 113, 228, 229, 276][usize::from(lt % 8)];
    let mut e = branchrec::capture::engine::Engine::new(Default::default());
    // The same bytes twice and split in two: exercises fragment and TCP state too.
    e.push_frame(Mono::from_secs(1), linktype, rest, &mut Null);
    e.push_frame(Mono::from_secs(2), linktype, rest, &mut Null);
    let mid = rest.len() / 2;
    e.push_frame(Mono::from_secs(3), linktype, &rest[..mid], &mut Null);
    e.finish(Mono::from_secs(4), "end", &mut Null);
});
