//! Fuzz the SRTP/SRTCP receive path and the `a=crypto` parser: no input may panic, a
//! decrypted length never exceeds the datagram, and packets protected by the send side
//! with fuzzer-chosen headers, payloads and sequence numbers always come back intact
//! (unless they are replays), interleaved with arbitrary garbage.
#![no_main]

use branchrec::media::srtp::{
    MasterKey, Secret, SrtpError, SrtpPolicy, SrtpReceiver, SrtpSender, SrtpSuite,
};
use branchrec::sdp::parse_crypto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if let Ok(s) = std::str::from_utf8(rest) {
        let _ = parse_crypto(s);
    }
    let suite = SrtpSuite::PREFERENCE[usize::from(sel & 3)];
    let mut policy = SrtpPolicy::simple(
        suite,
        vec![sel; suite.key_len()],
        vec![sel ^ 0xa5; suite.salt_len()],
    );
    if sel & 4 != 0 {
        policy.mki_len = 2;
        policy.keys[0].mki = Some(1);
        policy.keys.push(MasterKey {
            key: Secret::new(vec![!sel; suite.key_len()]),
            salt: Secret::new(vec![sel; suite.salt_len()]),
            mki: Some(2),
            lifetime: Some(40),
        });
    }
    if sel & 8 != 0 {
        policy.kdr = sel >> 5;
    }
    policy.unencrypted_srtp = sel & 16 != 0;
    let (Ok(mut rx), Ok(mut tx)) = (SrtpReceiver::new(&policy), SrtpSender::new(&policy)) else {
        return;
    };
    let mut buf = [0u8; 600];
    let mut rest = rest;
    while let [len, kind, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len()).min(400);
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        match kind % 3 {
            0 => {
                // Garbage as SRTP and as SRTCP.
                let b = &mut buf[..n];
                b.copy_from_slice(chunk);
                if let Ok(l) = rx.unprotect_rtp(b) {
                    assert!(l <= n);
                }
                b.copy_from_slice(chunk);
                if let Ok(l) = rx.unprotect_rtcp(b) {
                    assert!(l <= n);
                }
            }
            1 if n >= 12 => {
                // A valid RTP packet (header fields from the input) protected, then received.
                let mut plain = chunk.to_vec();
                plain[0] = 0x80 | (plain[0] & 0x20); // V=2, no CSRC/extension
                plain[1] &= 0x7f;
                if plain[1] >= 64 && plain[1] < 96 {
                    plain[1] = 8; // keep clear of the RTCP type range
                }
                let key = usize::from(kind >> 7) % policy.keys.len();
                buf[..n].copy_from_slice(&plain);
                let Ok(out) = tx.protect_rtp(&mut buf, n, 0, key) else {
                    continue;
                };
                match rx.unprotect_rtp(&mut buf[..out]) {
                    Ok(l) => assert_eq!(&buf[..l], &plain[..]),
                    Err(SrtpError::Replayed | SrtpError::KeyExpired) => {}
                    // The ROC guess may legitimately differ from 0 after a far jump.
                    Err(SrtpError::AuthFailed) => {}
                    Err(e) => panic!("protected packet refused: {e}"),
                }
            }
            2 if n >= 8 => {
                let mut plain = chunk.to_vec();
                plain[0] = 0x80;
                plain[1] = 200 + (plain[1] % 5);
                buf[..n].copy_from_slice(&plain);
                let index = u32::from(*kind) << 8 | u32::from(*len);
                let Ok(out) = tx.protect_rtcp(&mut buf, n, index, kind & 1 == 0, 0) else {
                    continue;
                };
                match rx.unprotect_rtcp(&mut buf[..out]) {
                    Ok(l) => assert_eq!(&buf[..l], &plain[..]),
                    Err(SrtpError::Replayed | SrtpError::KeyExpired) => {}
                    Err(e) => panic!("protected RTCP refused: {e}"),
                }
            }
            _ => {}
        }
    }
});
