//! AES-256-GCM throughput of the recording container, as the recorder uses it: sealing
//! stereo 8 kHz chunks of one flush interval (0.5 s, 16 012-byte plaintext) and opening
//! them again. Prints MB/s and how many simultaneous calls one core could encrypt.
//!
//! ```sh
//! cargo run --release --example crypto_bench            # host
//! # aarch64: build with and without the ARMv8 crypto cfgs (see docs/benchmark.md):
//! RUSTFLAGS="--cfg aes_armv8 --cfg polyval_armv8" cargo build --release --example crypto_bench --target aarch64-unknown-linux-gnu
//! ```

use std::time::Instant;

use branchrec::media::AudioBlock;
use branchrec::recording::{read_all_audio, ContainerWriter, HeaderParams};
use branchrec::vault::{DataKey, KeyFileVault, KeyWrap};

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3600);
    let kek = KeyFileVault::from_key([1; 32]);
    let dk = DataKey::from_bytes([2; 32]);
    let p = HeaderParams {
        recording_id: "bench".into(),
        created_unix_ms: 0,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 4000,
        kek_id: kek.kek_id(),
        extra_json: String::new(),
    };
    let (mut w, mut file) =
        ContainerWriter::new(p, dk.clone(), kek.wrap(&dk).expect("wrap"), [0; 7]).expect("writer");
    let block: Vec<i16> = (0..320).map(|i| (i * 37 % 4000) as i16).collect();
    let blocks = seconds * 50;
    let t = Instant::now();
    for k in 0..blocks {
        w.push_block(&AudioBlock {
            start_frame: k * 160,
            samples: block.clone(),
        })
        .expect("push");
        while let Some(c) = w.poll_chunk() {
            file.extend_from_slice(&c);
        }
    }
    file.extend_from_slice(&w.finish().bytes);
    let seal = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (_, audio) = read_all_audio(&file[..], &kek).expect("read");
    let open = t.elapsed().as_secs_f64();
    assert_eq!(audio.len() as u64, blocks * 320);
    let mb = (seconds * 32_000) as f64 / 1e6;
    println!(
        "arch={} aes_armv8={} polyval_armv8={}",
        std::env::consts::ARCH,
        cfg!(aes_armv8),
        cfg!(polyval_armv8)
    );
    println!(
        "seal: {seconds} s of stereo audio ({mb:.1} MB) in {seal:.3} s = {:.1} MB/s = {:.0} calls/core",
        mb / seal,
        seconds as f64 / seal
    );
    println!("open: {:.1} MB/s", mb / open);
}
