//! Writer/reader round trips and tamper detection over the whole container.

use sha2::{Digest, Sha256};

use super::*;
use crate::keys::test_kek::TestKek as KeyFileVault;
use crate::keys::{DataKey, KeyWrap, VaultError};
use crate::media::AudioBlock;
use crate::recording::encode::ContainerWriter;
use crate::recording::opus::OpusSettings;

struct Rec {
    file: Vec<u8>,
    /// Byte offsets of each chunk (its length prefix) in `file`.
    chunk_offsets: Vec<usize>,
    audio: Vec<i16>,
    fin: FinishedContainer,
}

fn params(vault: &KeyFileVault, id: &str) -> HeaderParams {
    HeaderParams {
        recording_id: id.into(),
        created_unix_ms: 1_700_000_000_123,
        sample_rate: 8000,
        channels: 2,
        chunk_target_frames: 0,
        kek_id: vault.kek_id(),
        extra_json: r#"{"call":"x"}"#.into(),
    }
}

fn chunk_offsets(file: &[u8], header_len: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = header_len;
    while i + 4 <= file.len() {
        v.push(i);
        let len = u32::from_be_bytes(file[i..i + 4].try_into().unwrap()) as usize;
        i += 4 + len;
    }
    assert_eq!(i, file.len());
    v
}

/// A 3.7 s stereo recording written in 20 ms blocks with a flush after 1.5 s.
fn record(vault: &KeyFileVault, id: &str, seed: i32) -> Rec {
    let dk = DataKey::from_bytes([seed as u8; 32]);
    let wrapped = vault.wrap(&dk).unwrap();
    let (mut w, mut file) =
        ContainerWriter::new(params(vault, id), dk, wrapped, [seed as u8; 7]).unwrap();
    let header_len = w.header().chunks_offset().unwrap() as usize;
    let mut audio = Vec::new();
    let mut frame = 0u64;
    for k in 0..185 {
        let samples: Vec<i16> = (0..320)
            .map(|i| ((k * 320 + i) * seed % 65521 - 32000) as i16)
            .collect();
        audio.extend_from_slice(&samples);
        w.push_block(&AudioBlock {
            start_frame: frame,
            samples,
        })
        .unwrap();
        frame += 160;
        while let Some(c) = w.poll_chunk() {
            file.extend_from_slice(&c);
        }
        if k == 75 {
            file.extend_from_slice(&w.flush().unwrap());
        }
    }
    let fin = w.finish();
    file.extend_from_slice(&fin.bytes);
    Rec {
        chunk_offsets: chunk_offsets(&file, header_len),
        file,
        audio,
        fin,
    }
}

fn vault() -> KeyFileVault {
    KeyFileVault::from_key([42; 32])
}

#[test]
fn round_trip() {
    let v = vault();
    let r = record(&v, "8d7e0c1e-5a55-4a53-9d0c-3c8f1d2a7b10", 7);
    let (h, audio) = read_all_audio(&r.file[..], &v).unwrap();
    assert_eq!(audio, r.audio);
    assert_eq!(h.recording_id, "8d7e0c1e-5a55-4a53-9d0c-3c8f1d2a7b10");
    assert_eq!(
        (h.sample_rate, h.channels, h.chunk_target_frames),
        (8000, 2, 8000)
    );
    assert_eq!(h.created_unix_ms, 1_700_000_000_123);
    assert_eq!(h.extra_json, r#"{"call":"x"}"#);
    // Running hash and size cover the whole file.
    assert_eq!(r.fin.total_bytes, r.file.len() as u64);
    let (sum, n) = content_sha256(&r.file[..]).unwrap();
    assert_eq!(r.fin.sha256, sum);
    assert_eq!(
        n,
        r.file.len() as u64 - (KEY_SLOT_LEN * KEY_SLOT_COUNT) as u64
    );
    assert_eq!(r.fin.frames, 185 * 160);
    let pcm: Vec<u8> = r.audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    assert_eq!(r.fin.audio_sha256, <[u8; 32]>::from(Sha256::digest(&pcm)));
    // Chunk 0, 1 full chunk, flushed remainder of 1.52 s, 2 full chunks, final.
    assert_eq!(r.chunk_offsets.len() as u32, r.fin.chunks);
    assert_eq!(r.fin.chunks, 6);
    let rep = scan(&r.file[..], &v).unwrap();
    assert_eq!(rep.state, ScanState::Complete);
    assert_eq!(rep.frames, 185 * 160);
    // Every chunk starts where the previous ended.
    let mut rd = ContainerReader::open(&r.file[..], &v).unwrap();
    let mut next = 0;
    while let Some(c) = rd.next_chunk().unwrap() {
        assert_eq!(c.start_frame, next);
        assert!(c.frames <= 8000);
        next += u64::from(c.frames);
    }
}

#[test]
fn empty_recording_round_trips() {
    let v = vault();
    let dk = DataKey::from_bytes([1; 32]);
    let (w, mut file) =
        ContainerWriter::new(params(&v, "e"), dk.clone(), v.wrap(&dk).unwrap(), [0; 7]).unwrap();
    file.extend_from_slice(&w.finish().bytes);
    let (_, audio) = read_all_audio(&file[..], &v).unwrap();
    assert!(audio.is_empty());
}

fn damaged_at(file: &[u8], v: &KeyFileVault) -> u32 {
    match scan(file, v).unwrap().state {
        ScanState::Damaged { at_chunk, .. } => at_chunk,
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn header_edits_detected() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let hlen = r.chunk_offsets[0] - KEY_SLOT_LEN * KEY_SLOT_COUNT;
    for i in 0..hlen {
        let mut f = r.file.clone();
        f[i] ^= 0x04;
        let scanned = scan(&f[..], &v);
        let ok = match &scanned {
            Err(_) => true,
            Ok(rep) => matches!(rep.state, ScanState::Damaged { at_chunk: 0, .. }),
        };
        assert!(ok, "header byte {i} flip not detected: {scanned:?}");
        assert!(read_all_audio(&f[..], &v).is_err());
    }
}

#[test]
fn chunk_and_tag_flips_detected() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    for (n, &off) in r.chunk_offsets.iter().enumerate() {
        let len = u32::from_be_bytes(r.file[off..off + 4].try_into().unwrap()) as usize;
        // First ciphertext byte, a middle byte, last tag byte.
        for pos in [off + 4, off + 4 + len / 2, off + 3 + len] {
            let mut f = r.file.clone();
            f[pos] ^= 0x80;
            assert_eq!(damaged_at(&f, &v), n as u32, "chunk {n} byte {pos}");
            match read_all_audio(&f[..], &v) {
                Err(ContainerError::ChunkAuth { chunk }) => assert_eq!(chunk, n as u32),
                other => panic!("expected ChunkAuth, got {other:?}"),
            }
        }
        // Length prefix edits: a different length desynchronises the chunk.
        let mut f = r.file.clone();
        f[off + 3] ^= 0x01;
        assert!(!matches!(
            scan(&f[..], &v).unwrap().state,
            ScanState::Complete
        ));
    }
}

#[test]
fn truncation_detected() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let last = *r.chunk_offsets.last().unwrap();
    // Drop the final chunk: interrupted at a chunk boundary.
    let rep = scan(&r.file[..last], &v).unwrap();
    assert_eq!(
        rep.state,
        ScanState::Interrupted {
            valid_chunks: 5,
            frames: r.fin.frames - rep_last_frames(&r),
            torn_tail: false
        }
    );
    assert!(matches!(
        read_all_audio(&r.file[..last], &v),
        Err(ContainerError::MissingFinalChunk {
            valid_chunks: 5,
            ..
        })
    ));
    // The valid prefix is still recoverable, and equals the start of the audio.
    let (_, prefix, st) = read_valid_prefix(&r.file[..last], &v).unwrap();
    assert!(matches!(st, ScanState::Interrupted { .. }));
    assert_eq!(prefix[..], r.audio[..prefix.len()]);
    // Truncate mid-chunk (also inside the length prefix).
    for cut in [
        r.chunk_offsets[2] + 100,
        r.chunk_offsets[2] + 2,
        r.file.len() - 1,
    ] {
        let rep = scan(&r.file[..cut], &v).unwrap();
        assert!(
            matches!(
                rep.state,
                ScanState::Interrupted {
                    torn_tail: true,
                    ..
                }
            ),
            "cut {cut}: {rep:?}"
        );
        assert!(matches!(
            read_all_audio(&r.file[..cut], &v),
            Err(ContainerError::ChunkTruncated { .. })
        ));
    }
    // Truncated header.
    assert!(matches!(
        scan(&r.file[..20], &v),
        Err(ContainerError::HeaderTruncated)
    ));
    assert!(matches!(
        scan(&b"RIFF...."[..], &v),
        Err(ContainerError::BadMagic)
    ));
    // Trailing garbage after the final chunk.
    let mut f = r.file.clone();
    f.push(0);
    assert!(matches!(
        scan(&f[..], &v).unwrap().state,
        ScanState::Damaged { .. }
    ));
}

fn rep_last_frames(r: &Rec) -> u64 {
    let mut rd = ContainerReader::open(&r.file[..], &vault()).unwrap();
    let mut last = 0;
    while let Some(c) = rd.next_chunk().unwrap() {
        last = u64::from(c.frames);
    }
    last
}

fn splice(file: &[u8], offs: &[usize], order: &[usize]) -> Vec<u8> {
    let mut out = file[..offs[0]].to_vec();
    let bounds = |i: usize| (offs[i], offs.get(i + 1).copied().unwrap_or(file.len()));
    for &i in order {
        let (a, b) = bounds(i);
        out.extend_from_slice(&file[a..b]);
    }
    out
}

#[test]
fn reorder_and_drop_detected() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let f = splice(&r.file, &r.chunk_offsets, &[0, 2, 1, 3, 4, 5]);
    assert_eq!(damaged_at(&f, &v), 1);
    let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 3, 4, 5]);
    assert_eq!(damaged_at(&f, &v), 2);
    let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 1, 2, 3, 4, 5]);
    assert_eq!(damaged_at(&f, &v), 2);
    // Final chunk moved before the end.
    let f = splice(&r.file, &r.chunk_offsets, &[0, 1, 5, 2]);
    assert_eq!(damaged_at(&f, &v), 2);
}

#[test]
fn splice_between_recordings_detected() {
    let v = vault();
    let a = record(&v, "rec-a", 3);
    // Same key and nonce prefix, different header (recording id): header hash differs.
    let b = record(&v, "rec-b", 3);
    // Different key/prefix altogether.
    let c = record(&v, "rec-c", 5);
    for other in [&b, &c] {
        let mut f = a.file[..a.chunk_offsets[2]].to_vec();
        f.extend_from_slice(&other.file[other.chunk_offsets[2]..other.chunk_offsets[3]]);
        f.extend_from_slice(&a.file[a.chunk_offsets[3]..]);
        assert_eq!(damaged_at(&f, &v), 2);
    }
    // B's header with A's chunks.
    let mut f = b.file[..b.chunk_offsets[0]].to_vec();
    f.extend_from_slice(&a.file[a.chunk_offsets[0]..]);
    assert_eq!(damaged_at(&f, &v), 0);
}

#[test]
fn key_slot_damage_and_second_slot() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let (h, hh) = read_header(&mut &r.file[..]).unwrap();
    let s0 = h.slot_offset(0).unwrap() as usize;
    let s1 = h.slot_offset(1).unwrap() as usize;
    assert_eq!(h.key_slots[1], None);
    let slot = h.key_slots[0].clone().unwrap();
    assert_eq!(slot.generation, 1);
    assert_eq!(slot.kek_id, v.kek_id());
    // A flip anywhere in the used slot empties it: no key, no audio.
    for i in [0, 5, 40, 200, KEY_SLOT_LEN - 1] {
        let mut f = r.file.clone();
        f[s0 + i] ^= 1;
        assert!(matches!(
            read_all_audio(&f[..], &v),
            Err(ContainerError::NoKeySlot)
        ));
    }
    // A second slot under another KEK, higher generation: a vault holding only the
    // new KEK reads the file; the content hash does not change.
    let v2 = KeyFileVault::from_key([7; 32]);
    let dk = unwrap_data_key(&h, &v).unwrap();
    let new = KeySlot {
        generation: 2,
        kek_id: v2.kek_id(),
        wrapped_key: v2.wrap(&dk).unwrap(),
    };
    let mut f = r.file.clone();
    f[s1..s1 + KEY_SLOT_LEN].copy_from_slice(&new.encode(&hh).unwrap());
    assert_eq!(read_all_audio(&f[..], &v2).unwrap().1, r.audio);
    assert_eq!(read_all_audio(&f[..], &v).unwrap().1, r.audio);
    assert_eq!(
        content_sha256(&f[..]).unwrap(),
        content_sha256(&r.file[..]).unwrap()
    );
    // A slot from another recording (other header hash) reads as empty.
    let other = record(&v, "rec-b", 3);
    let (oh, _) = read_header(&mut &other.file[..]).unwrap();
    let os0 = oh.slot_offset(0).unwrap() as usize;
    let mut f = r.file.clone();
    f[s0..s0 + KEY_SLOT_LEN].copy_from_slice(&other.file[os0..os0 + KEY_SLOT_LEN]);
    assert!(matches!(
        read_all_audio(&f[..], &v),
        Err(ContainerError::NoKeySlot)
    ));
}

#[test]
fn wrong_kek_refused() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let other = KeyFileVault::from_key([43; 32]);
    assert!(matches!(
        scan(&r.file[..], &other),
        Err(ContainerError::Key(VaultError::UnknownKek(_)))
    ));
    assert!(matches!(
        read_all_audio(&r.file[..], &other),
        Err(ContainerError::Key(_))
    ));
}

#[test]
fn writer_block_continuity() {
    let v = vault();
    let dk = DataKey::from_bytes([1; 32]);
    let (mut w, mut file) =
        ContainerWriter::new(params(&v, "g"), dk.clone(), v.wrap(&dk).unwrap(), [0; 7]).unwrap();
    w.push_block(&AudioBlock {
        start_frame: 0,
        samples: vec![5; 20],
    })
    .unwrap();
    // Gap of 5 frames → silence; overlap refused.
    w.push_block(&AudioBlock {
        start_frame: 15,
        samples: vec![6; 4],
    })
    .unwrap();
    assert!(matches!(
        w.push_block(&AudioBlock {
            start_frame: 16,
            samples: vec![7; 2]
        }),
        Err(ContainerError::BlockDiscontinuity {
            expected: 17,
            got: 16
        })
    ));
    file.extend_from_slice(&w.flush().unwrap());
    assert!(w.flush().is_none());
    file.extend_from_slice(&w.finish().bytes);
    let (_, audio) = read_all_audio(&file[..], &v).unwrap();
    let mut exp = vec![5i16; 20];
    exp.extend_from_slice(&[0; 10]);
    exp.extend_from_slice(&[6; 4]);
    assert_eq!(audio, exp);
}

#[test]
fn invalid_params_refused() {
    let v = vault();
    let mut p = params(&v, "x");
    p.channels = 0;
    let dk = DataKey::from_bytes([1; 32]);
    assert!(ContainerWriter::new(p, dk.clone(), vec![], [0; 7]).is_err());
    let mut p = params(&v, "x");
    p.recording_id = "x".repeat(70000);
    assert!(ContainerWriter::new(p, dk, vec![], [0; 7]).is_err());
}

#[test]
fn random_mutations_never_pass_or_panic() {
    let v = vault();
    let r = record(&v, "rec-a", 3);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..60 {
        let mut f = r.file.clone();
        let pos = (next() % f.len() as u64) as usize;
        let bit = 1u8 << (next() % 8);
        f[pos] ^= bit;
        if next() % 4 == 0 {
            let cut = (next() % f.len() as u64) as usize;
            f.truncate(cut);
        }
        // A flip in the unused key slot changes nothing that matters; anything
        // accepted must be exactly the recorded audio.
        if let Ok((_, audio)) = read_all_audio(&f[..], &v) {
            assert_eq!(audio, r.audio, "mutation at {pos} gave wrong audio");
            let slot1 = r.chunk_offsets[0] - KEY_SLOT_LEN..r.chunk_offsets[0];
            assert!(slot1.contains(&pos), "mutation at {pos} accepted");
        }
        let _ = scan(&f[..], &v);
    }
}

fn record_opus(
    v: &KeyFileVault,
    rate: u32,
    frames: usize,
    cut_before_finish: bool,
) -> (Vec<u8>, Vec<i16>, Option<FinishedContainer>) {
    let dk = DataKey::from_bytes([9; 32]);
    let mut p = params(v, "opus-rec");
    p.sample_rate = rate;
    p.chunk_target_frames = rate / 2;
    let (mut w, mut file) = ContainerWriter::with_format(
        p,
        Some(OpusSettings::default()),
        dk.clone(),
        v.wrap(&dk).unwrap(),
        [3; 7],
    )
    .unwrap();
    let audio = crate::recording::opus::tests::two_voices(rate, frames);
    let mut frame = 0u64;
    // Timeline blocks of 20 ms with one 70 ms gap (silence) in the middle.
    let step = (rate / 50) as usize;
    let mut k = 0;
    while (frame as usize) < frames {
        let n = step.min(frames - frame as usize);
        let samples = audio[frame as usize * 2..(frame as usize + n) * 2].to_vec();
        if k == 40 {
            // A gap: the writer fills it with silence.
            frame += n as u64;
            k += 1;
            continue;
        }
        w.push_block(&AudioBlock {
            start_frame: frame,
            samples,
        })
        .unwrap();
        frame += n as u64;
        k += 1;
        while let Some(c) = w.poll_chunk() {
            file.extend_from_slice(&c);
        }
        if k % 13 == 0 {
            if let Some(c) = w.flush() {
                file.extend_from_slice(&c);
            }
        }
    }
    let mut expected = audio.clone();
    for x in &mut expected[40 * step * 2..41 * step * 2] {
        *x = 0;
    }
    if cut_before_finish {
        return (file, expected, None);
    }
    let fin = w.finish();
    file.extend_from_slice(&fin.bytes);
    (file, expected, Some(fin))
}

#[test]
fn opus_round_trip_exact_length_and_hashes() {
    let v = vault();
    for rate in [8000, 16000] {
        let frames = rate as usize * 4 + 37;
        let (file, expected, fin) = record_opus(&v, rate, frames, false);
        let fin = fin.unwrap();
        let (h, audio) = read_all_audio(&file[..], &v).unwrap();
        assert_eq!(h.format_version, FORMAT_VERSION_OPUS);
        assert_eq!(h.sample_format, SampleFormat::Opus);
        let o = h.opus.unwrap();
        assert_eq!(usize::from(o.frame_size), (rate / 50) as usize);
        assert!(o.pre_skip > 0);
        assert_eq!(audio.len(), expected.len(), "exact length at {rate} Hz");
        for ch in 0..2 {
            let c = crate::recording::opus::tests::corr(&expected, ch, &audio, ch, 0);
            assert!(c > 0.6, "rate {rate} ch {ch}: {c}");
        }
        assert_eq!(fin.frames, frames as u64);
        let rep = scan(&file[..], &v).unwrap();
        assert_eq!(rep.state, ScanState::Complete);
        assert_eq!(rep.frames, frames as u64);
        assert_eq!(content_sha256(&file[..]).unwrap().0, fin.sha256);
        // The reader's audio hash is the writer's (the length-prefixed packets).
        let mut rd = ContainerReader::open(&file[..], &v).unwrap();
        let mut stream = Vec::new();
        while let Some(c) = rd.next_chunk().unwrap() {
            crate::recording::opus::frame_packets(&c.packets, &mut stream);
            assert!(c.samples.is_empty());
        }
        assert_eq!(rd.audio_sha256(), fin.audio_sha256);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&stream)), fin.audio_sha256);
        // Compact: under 5 kB per second of call at the default 32 kbit/s.
        assert!((file.len() as f64) < 5000.0 * frames as f64 / f64::from(rate) + 4000.0);
    }
}

#[test]
fn opus_interrupted_prefix_reads_and_tamper_detected() {
    let v = vault();
    let (file, expected, _) = record_opus(&v, 8000, 8000 * 3, true);
    let rep = scan(&file[..], &v).unwrap();
    let ScanState::Interrupted { frames, .. } = rep.state else {
        panic!("{rep:?}")
    };
    assert!(frames >= 8000 * 2, "flushed frames {frames}");
    let (_, audio, st) = read_valid_prefix(&file[..], &v).unwrap();
    assert!(matches!(st, ScanState::Interrupted { .. }));
    assert_eq!(audio.len() as u64, frames * 2);
    let c = crate::recording::opus::tests::corr(&expected[..audio.len()], 0, &audio, 0, 0);
    assert!(c > 0.6, "{c}");
    // A torn chunk at the end is still a readable prefix.
    let (_, audio2, st) = read_valid_prefix(&file[..file.len() - 7], &v).unwrap();
    assert!(matches!(
        st,
        ScanState::Interrupted {
            torn_tail: true,
            ..
        }
    ));
    assert!(audio2.len() <= audio.len());
    // Flipping a byte anywhere in the chunks is detected.
    let h = read_header(&mut &file[..]).unwrap().0;
    let c0 = h.chunks_offset().unwrap() as usize;
    for pos in [c0 + 10, c0 + 200, file.len() / 2, file.len() - 3] {
        let mut f = file.clone();
        f[pos] ^= 0x20;
        assert!(
            matches!(scan(&f[..], &v).unwrap().state, ScanState::Damaged { .. }),
            "{pos}"
        );
    }
}

#[test]
fn version_2_pcm_files_unchanged() {
    // PCM recordings are still written as version 2, byte-compatible with the
    // readers of before Opus; version 3 headers parse the codec parameters.
    let v = vault();
    let r = record(&v, "rec-a", 3);
    assert_eq!(u16::from_be_bytes([r.file[6], r.file[7]]), FORMAT_VERSION);
    let (h, _) = read_header(&mut &r.file[..]).unwrap();
    assert_eq!((h.sample_format, h.opus), (SampleFormat::S16Le, None));
    let mut f = r.file.clone();
    f[7] = 4;
    assert!(matches!(
        scan(&f[..], &v),
        Err(ContainerError::UnsupportedVersion(4))
    ));
}

#[test]
fn pcm_file_bytes_unchanged() {
    // The SHA-256 of a whole deterministic PCM recording, as written before the writer
    // was split into the encoder stage and the chunk writer: the byte format is fixed.
    let r = record(&vault(), "rec-a", 3);
    let sum: [u8; 32] = Sha256::digest(&r.file).into();
    let hex: String = sum.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(
        hex,
        "c159f28dc199768621d08112b8df4b94ec855206686f2402b7cc0e394e6ca967"
    );
}

#[test]
fn chunk_writer_seals_encoded_payload() {
    // The chunk writer fed directly gives the same bytes as the encoder stage in front
    // of it (PCM: the samples as they are, gaps as silence).
    let v = vault();
    let dk = DataKey::from_bytes([2; 32]);
    let wrapped = v.wrap(&dk).unwrap();
    let (mut a, mut fa) =
        ContainerWriter::new(params(&v, "cw"), dk.clone(), wrapped.clone(), [6; 7]).unwrap();
    let (mut b, mut fb) =
        ChunkWriter::new(params(&v, "cw"), None, dk.clone(), wrapped.clone(), [6; 7]).unwrap();
    assert_eq!(fa, fb);
    let block: Vec<i16> = (0..3200).map(|i| (i * 13 % 5000) as i16).collect();
    a.push_block(&AudioBlock {
        start_frame: 0,
        samples: block.clone(),
    })
    .unwrap();
    a.push_block(&AudioBlock {
        start_frame: 1700,
        samples: block.clone(),
    })
    .unwrap();
    b.push_pcm(&block).unwrap();
    b.push_pcm_silence(100).unwrap();
    b.push_pcm(&block).unwrap();
    assert_eq!((a.frames(), b.frames()), (3300, 3300));
    fa.extend_from_slice(&a.flush().unwrap());
    fb.extend_from_slice(&b.flush().unwrap());
    fa.extend_from_slice(&a.finish().bytes);
    fb.extend_from_slice(&b.finish().bytes);
    assert_eq!(fa, fb);
    // Payload of the wrong kind is refused.
    let (mut pcm, _) =
        ChunkWriter::new(params(&v, "p"), None, dk.clone(), wrapped.clone(), [6; 7]).unwrap();
    assert!(matches!(
        pcm.push_packets(&mut vec![vec![1, 2, 3]], 160),
        Err(ContainerError::InvalidParams(_))
    ));
    let opus = OpusParams {
        pre_skip: 52,
        frame_size: 160,
        bitrate_bps: 32_000,
        complexity: 3,
        vbr: true,
    };
    let (mut op, _) = ChunkWriter::new(params(&v, "o"), Some(opus), dk, wrapped, [6; 7]).unwrap();
    assert_eq!(op.header().format_version, FORMAT_VERSION_OPUS);
    assert!(matches!(
        op.push_pcm(&block),
        Err(ContainerError::InvalidParams(_))
    ));
}
