//! Known-answer tests: RFC 3711 Appendix B.2 (AES-CM) and B.3 (key derivation), the
//! libsrtp `srtp_validate` AES_CM_128_HMAC_SHA1_80 packet, RFC 7714 §16 (SRTP) and §17
//! (SRTCP) AES-GCM vectors, plus KDR, ROC wrap, replay, MKI and lifetime behaviour.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A session cipher built from *session* keys, as the RFC 7714 vectors give them.
fn gcm_session(suite: SrtpSuite, key: &[u8], salt: &[u8]) -> SessionCipher {
    let mut s = [0u8; 12];
    s.copy_from_slice(salt);
    match suite {
        SrtpSuite::AeadAes128Gcm => SessionCipher::Gcm128 {
            aead: Box::new(Aes128Gcm::new(key.into())),
            salt: s,
        },
        _ => SessionCipher::Gcm256 {
            aead: Box::new(Aes256Gcm::new(key.into())),
            salt: s,
        },
    }
}

const B3_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
const B3_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";

#[test]
fn rfc3711_b3_key_derivation() {
    let (k, s) = (unhex(B3_KEY), unhex(B3_SALT));
    let mut out = [0u8; 16];
    kdf(&k, &s, 0x00, 0, &mut out);
    assert_eq!(out[..], unhex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
    let mut salt = [0u8; 14];
    kdf(&k, &s, 0x02, 0, &mut salt);
    assert_eq!(salt[..], unhex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    let mut auth = [0u8; 94];
    kdf(&k, &s, 0x01, 0, &mut auth);
    assert_eq!(
        auth[..],
        unhex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        )[..]
    );
}

/// r != 0 (a key derivation rate): expected values computed independently with Python's
/// `cryptography` AES-CTR (IV = salt XOR (label || r48) || 0000).
#[test]
fn key_derivation_with_r() {
    let (k, s) = (unhex(B3_KEY), unhex(B3_SALT));
    let mut out = [0u8; 16];
    kdf(&k, &s, 0x00, 1, &mut out);
    assert_eq!(out[..], unhex("53870b4b8e2af0c6f0cc8b1544c34138")[..]);
    let mut auth = [0u8; 20];
    kdf(&k, &s, 0x01, 1, &mut auth);
    assert_eq!(
        auth[..],
        unhex("c70d7f14e755380e6ff4ed24f4f611aad19685ce")[..]
    );
    let mut salt = [0u8; 14];
    kdf(&k, &s, 0x02, 1, &mut salt);
    assert_eq!(salt[..], unhex("c6da1bbcdc3f429cd82f2593eb60")[..]);
    kdf(&k, &s, 0x00, 0x12_3456_789a, &mut out);
    assert_eq!(out[..], unhex("995fa34e17a35691807b98b21d158e68")[..]);
}

/// AEAD master salts are 12 bytes, zero-padded on the right (libsrtp, webrtc-srtp):
/// the AEAD_AES_128_GCM session salt for key 00..0f / salt 40..4b.
#[test]
fn aead_kdf_pads_the_salt_on_the_right() {
    let key: Vec<u8> = (0..16).collect();
    let salt: Vec<u8> = (0x40..0x4c).collect();
    let mut out = [0u8; 12];
    kdf(&key, &salt, 0x02, 0, &mut out);
    assert_eq!(out[..], unhex("1fcd5d561e66dc49ec1c3ccb")[..]);
}

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = unhex("2B7E151628AED2A6ABF7158809CF4F3C");
    let mut salt = [0u8; 14];
    salt.copy_from_slice(&unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
    let aes = Aes128::new(key[..].into());
    let mut data = vec![0u8; 0xff01 * 16];
    SessionCipher::cm_crypt(&aes, &salt, 0, 0, &mut data);
    assert_eq!(
        data[..48],
        unhex(
            "E03EAD0935C95E80E166B16DD92B4EB4
             D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )[..]
    );
    assert_eq!(
        data[0xfeff * 16..0xff00 * 16],
        unhex("EC8CDF7398607CB0F2D21675EA9EA1E4")[..]
    );
    assert_eq!(
        data[0xff00 * 16..0xff01 * 16],
        unhex("362B7C3C6773516318A077D7FC5073AE")[..]
    );
}

fn b3_policy(suite: SrtpSuite) -> SrtpPolicy {
    SrtpPolicy::simple(suite, unhex(B3_KEY), unhex(B3_SALT))
}

/// libsrtp `srtp_validate`: master key in, so KDF + AES-CM + HMAC-SHA1 together.
#[test]
fn aes_cm_hmac_sha1_80_packet() {
    let plain = unhex("800f1234decafbadcafebabeabababababababababababababababab");
    let wire =
        unhex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb");
    let mut rx = SrtpReceiver::new(&b3_policy(SrtpSuite::AesCm128HmacSha1_80)).unwrap();
    let mut buf = wire.clone();
    let n = rx.unprotect_rtp(&mut buf).unwrap();
    assert_eq!(buf[..n], plain[..]);
    // The same packet again is a replay.
    let mut buf = wire.clone();
    assert_eq!(rx.unprotect_rtp(&mut buf), Err(SrtpError::Replayed));
    // A flipped bit fails authentication.
    let mut rx = SrtpReceiver::new(&b3_policy(SrtpSuite::AesCm128HmacSha1_80)).unwrap();
    let mut buf = wire.clone();
    buf[14] ^= 0x40;
    assert_eq!(rx.unprotect_rtp(&mut buf), Err(SrtpError::AuthFailed));
    assert_eq!(rx.stats().rtp_auth_fail, 1);
    // And the sender reproduces the vector.
    let mut tx = SrtpSender::new(&b3_policy(SrtpSuite::AesCm128HmacSha1_80)).unwrap();
    let mut out = plain.clone();
    out.resize(plain.len() + 10, 0);
    let n = tx.protect_rtp(&mut out, plain.len(), 0, 0).unwrap();
    assert_eq!(out[..n], wire[..]);
}

const GCM_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const GCM_SALT: &str = "517569642070726f2071756f";
const GCM_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e697320646976\
                       69736120696e207061727465732074726573";
const GCM_RTCP: &str = "81c8000d4d6172734e5450314e5450325254502000\
                        00042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

fn open_rtp_vector(suite: SrtpSuite, key: &str, wire: &str) {
    let c = gcm_session(suite, &unhex(key), &unhex(GCM_SALT));
    let mut buf = unhex(wire);
    let len = buf.len();
    let n = c
        .open_rtp(&mut buf, 12, len, 16, 0x5501_a0b2, 0xf17b, false)
        .unwrap();
    assert_eq!(buf[..n], unhex(GCM_RTP)[..]);
    let mut bad = unhex(wire);
    bad[len - 1] ^= 1;
    assert_eq!(
        c.open_rtp(&mut bad, 12, len, 16, 0x5501_a0b2, 0xf17b, false),
        Err(SrtpError::AuthFailed)
    );
}

#[test]
fn rfc7714_16_aead_aes_128_gcm_rtp() {
    let wire = "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd5\
                0d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
    open_rtp_vector(SrtpSuite::AeadAes128Gcm, GCM_KEY_128, wire);
    // The seal direction gives the same bytes.
    let c = gcm_session(
        SrtpSuite::AeadAes128Gcm,
        &unhex(GCM_KEY_128),
        &unhex(GCM_SALT),
    );
    let mut buf = unhex(GCM_RTP);
    let nonce = rtp_nonce(c.gcm_salt(), 0x5501_a0b2, 0xf17b);
    assert_eq!(nonce[..], unhex("51753c6580c2726f20718414")[..]);
    let (aad, rest) = buf.split_at_mut(12);
    let tag = c.gcm_seal(&nonce, aad, rest);
    buf.extend_from_slice(&tag);
    assert_eq!(buf, unhex(wire));
}

#[test]
fn rfc7714_16_aead_aes_256_gcm_rtp() {
    let wire = "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab1801238\
                9a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13";
    open_rtp_vector(SrtpSuite::AeadAes256Gcm, GCM_KEY_256, wire);
}

fn open_rtcp_vector(suite: SrtpSuite, key: &str, wire: &str) {
    let c = gcm_session(suite, &unhex(key), &unhex(GCM_SALT));
    let mut buf = unhex(wire);
    let len = buf.len();
    let word = be32(&buf[len - 4..]);
    let n = c
        .open_rtcp(&mut buf, len - 4, len, 16, 0x4d61_7273, word)
        .unwrap();
    assert_eq!(buf[..n], unhex(GCM_RTCP)[..]);
    let mut bad = unhex(wire);
    bad[9] ^= 1;
    assert_eq!(
        c.open_rtcp(&mut bad, len - 4, len, 16, 0x4d61_7273, word),
        Err(SrtpError::AuthFailed)
    );
}

#[test]
fn rfc7714_17_srtcp_vectors() {
    // §17.1 AEAD_AES_128_GCM, encrypted (E = 1), index 0x5d4.
    open_rtcp_vector(
        SrtpSuite::AeadAes128Gcm,
        GCM_KEY_128,
        "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda\
         4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4",
    );
    // §17.2 AEAD_AES_256_GCM, encrypted.
    open_rtcp_vector(
        SrtpSuite::AeadAes256Gcm,
        GCM_KEY_256,
        "81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be\
         8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4",
    );
    // §17.3 AEAD_AES_128_GCM, authenticated only (E = 0).
    open_rtcp_vector(
        SrtpSuite::AeadAes128Gcm,
        GCM_KEY_128,
        "81c8000d4d6172734e5450314e5450325254502000\
         00042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef\
         841dd9683dd78ec92ae58790125f62b3000005d4",
    );
    // §17.4 AEAD_AES_256_GCM, authenticated only.
    open_rtcp_vector(
        SrtpSuite::AeadAes256Gcm,
        GCM_KEY_256,
        "81c8000d4d6172734e5450314e5450325254502000\
         00042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef\
         91db4afbfeee5a978fab4393ed2615fe000005d4",
    );
    // The nonce layout of §17.1.
    let nonce = rtcp_nonce(unhex(GCM_SALT)[..].try_into().unwrap(), 0x4d61_7273, 0x5d4);
    assert_eq!(nonce[..], unhex("517524055203726f207170bb")[..]);
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn policy(suite: SrtpSuite, fill: u8) -> SrtpPolicy {
    SrtpPolicy::simple(
        suite,
        vec![fill; suite.key_len()],
        vec![fill ^ 0x5a; suite.salt_len()],
    )
}

fn protect(tx: &mut SrtpSender, plain: &[u8], roc: u32, key: usize) -> Vec<u8> {
    let mut b = plain.to_vec();
    b.resize(plain.len() + 16 + 130, 0);
    let n = tx.protect_rtp(&mut b, plain.len(), roc, key).unwrap();
    b.truncate(n);
    b
}

#[test]
fn every_suite_round_trips_across_sequence_wrap_with_roc() {
    for suite in SrtpSuite::PREFERENCE {
        for kdr in [0u8, 4] {
            let mut p = policy(suite, 0x11);
            p.kdr = kdr;
            let mut tx = SrtpSender::new(&p).unwrap();
            let mut rx = SrtpReceiver::new(&p).unwrap();
            // 65530 → 5 crosses the wrap: ROC goes 0 → 1.
            let mut sent = 0;
            for i in 0..12u32 {
                let seq = 65530u16.wrapping_add(i as u16);
                let roc = if seq < 100 { 1 } else { 0 };
                let payload = [i as u8; 160];
                let plain = rtp(seq, 0xdead_beef, &payload);
                let mut wire = protect(&mut tx, &plain, roc, 0);
                assert_ne!(wire[12..172], payload[..], "{suite} encrypts");
                let n = rx.unprotect_rtp(&mut wire).unwrap_or_else(|e| {
                    panic!("{suite} kdr {kdr} seq {seq}: {e}");
                });
                assert_eq!(wire[..n], plain[..], "{suite} seq {seq}");
                sent += 1;
            }
            // A late packet from before the wrap (ROC 0) is still accepted once.
            let plain = rtp(65529, 0xdead_beef, &[9; 160]);
            let mut wire = protect(&mut tx, &plain, 0, 0);
            let again = wire.clone();
            let n = rx.unprotect_rtp(&mut wire).unwrap();
            assert_eq!(wire[..n], plain[..]);
            let mut again = again;
            assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
            assert_eq!(rx.stats().rtp_ok, sent + 1);
            assert_eq!(rx.stats().rtp_replay, 1);
        }
    }
}

#[test]
fn kdr_rederives_keys_every_2_pow_n_packets() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let mut with = policy(suite, 3);
    with.kdr = 4;
    let without = policy(suite, 3);
    let mut tx_with = SrtpSender::new(&with).unwrap();
    let mut tx_without = SrtpSender::new(&without).unwrap();
    // Index 15 is still r = 0 (same bytes as without KDR); 16 is r = 1 (different).
    for (seq, same) in [(15u16, true), (16, false)] {
        let plain = rtp(seq, 7, &[0; 32]);
        let a = protect(&mut tx_with, &plain, 0, 0);
        let b = protect(&mut tx_without, &plain, 0, 0);
        assert_eq!(a == b, same, "seq {seq}");
    }
    // A receiver without KDR cannot read r = 1 packets.
    let mut rx = SrtpReceiver::new(&without).unwrap();
    let mut w = protect(&mut tx_with, &rtp(40, 7, &[0; 32]), 0, 0);
    assert_eq!(rx.unprotect_rtp(&mut w), Err(SrtpError::AuthFailed));
}

#[test]
fn replay_window_and_too_old() {
    let p = policy(SrtpSuite::AeadAes128Gcm, 5);
    let mut tx = SrtpSender::new(&p).unwrap();
    let mut rx = SrtpReceiver::new(&p).unwrap();
    let first = protect(&mut tx, &rtp(1000, 1, &[1; 20]), 0, 0);
    let mut b = first.clone();
    rx.unprotect_rtp(&mut b).unwrap();
    let mut b = protect(&mut tx, &rtp(1200, 1, &[1; 20]), 0, 0);
    rx.unprotect_rtp(&mut b).unwrap();
    // 1000 is now 200 behind: outside the window.
    let mut b = first.clone();
    assert_eq!(rx.unprotect_rtp(&mut b), Err(SrtpError::Replayed));
    // 1150 is inside and new.
    let mut b = protect(&mut tx, &rtp(1150, 1, &[1; 20]), 0, 0);
    rx.unprotect_rtp(&mut b).unwrap();
    // Another SSRC has its own window.
    let mut b = protect(&mut tx, &rtp(1000, 2, &[1; 20]), 0, 0);
    rx.unprotect_rtp(&mut b).unwrap();
}

fn two_keys_with_mki(suite: SrtpSuite) -> SrtpPolicy {
    let mut p = policy(suite, 1);
    let mut k2 = p.keys[0].clone();
    k2.key = Secret::new(vec![2; suite.key_len()]);
    p.keys[0].mki = Some(1);
    k2.mki = Some(258);
    p.keys.push(k2);
    p.mki_len = 2;
    p
}

#[test]
fn mki_selects_the_key() {
    for suite in SrtpSuite::PREFERENCE {
        let p = two_keys_with_mki(suite);
        let mut tx = SrtpSender::new(&p).unwrap();
        let mut rx = SrtpReceiver::new(&p).unwrap();
        for (seq, key) in [(1u16, 0usize), (2, 1), (3, 0)] {
            let plain = rtp(seq, 9, &[seq as u8; 40]);
            let mut w = protect(&mut tx, &plain, 0, key);
            let mki_at = if suite.is_aead() {
                w.len() - 2
            } else {
                w.len() - suite.rtp_tag_len() - 2
            };
            let want: [u8; 2] = if key == 0 { [0, 1] } else { [1, 2] };
            assert_eq!(w[mki_at..mki_at + 2], want);
            let n = rx.unprotect_rtp(&mut w).unwrap();
            assert_eq!(w[..n], plain[..]);
        }
        // An MKI we were not given.
        let mut w = protect(&mut tx, &rtp(4, 9, &[0; 40]), 0, 0);
        let mki_at = if suite.is_aead() {
            w.len() - 2
        } else {
            w.len() - suite.rtp_tag_len() - 2
        };
        w[mki_at + 1] = 7;
        assert_eq!(rx.unprotect_rtp(&mut w), Err(SrtpError::UnknownMki));
        assert_eq!(rx.stats().unknown_mki, 1);
        // SRTCP with MKI too.
        let mut r = unhex(GCM_RTCP);
        let len = r.len();
        r.resize(len + 40, 0);
        let n = tx.protect_rtcp(&mut r, len, 3, true, 1).unwrap();
        r.truncate(n);
        let n = rx.unprotect_rtcp(&mut r).unwrap();
        assert_eq!(r[..n], unhex(GCM_RTCP)[..]);
    }
}

#[test]
fn lifetime_is_enforced_and_next_key_taken_without_mki() {
    let suite = SrtpSuite::AesCm128HmacSha1_32;
    let mut p = policy(suite, 1);
    p.keys[0].lifetime = Some(3);
    let mut one = p.clone();
    let mut rx_one = SrtpReceiver::new(&one).unwrap();
    let mut tx = SrtpSender::new(&p).unwrap();
    for seq in 0..5u16 {
        let mut w = protect(&mut tx, &rtp(seq, 1, &[0; 20]), 0, 0);
        let r = rx_one.unprotect_rtp(&mut w);
        if seq < 3 {
            r.unwrap();
        } else {
            assert_eq!(r, Err(SrtpError::KeyExpired));
        }
    }
    assert_eq!(rx_one.stats().key_expired, 2);
    // With a second key (no MKI) the receiver moves on to it after three packets.
    let mut k2 = p.keys[0].clone();
    k2.key = Secret::new(vec![9; 16]);
    k2.lifetime = None;
    one.keys.push(k2);
    let mut rx = SrtpReceiver::new(&one).unwrap();
    let mut tx = SrtpSender::new(&one).unwrap();
    for seq in 0..6u16 {
        let key = if seq < 3 { 0 } else { 1 };
        let mut w = protect(&mut tx, &rtp(seq, 1, &[0; 20]), 0, key);
        rx.unprotect_rtp(&mut w)
            .unwrap_or_else(|e| panic!("seq {seq}: {e}"));
    }
}

#[test]
fn srtcp_cm_round_trip_e_flag_and_replay() {
    for suite in SrtpSuite::PREFERENCE {
        let p = policy(suite, 8);
        let mut tx = SrtpSender::new(&p).unwrap();
        let mut rx = SrtpReceiver::new(&p).unwrap();
        for (index, encrypt) in [(1u32, true), (2, false), (0x7fff_fff0, true)] {
            let plain = unhex(GCM_RTCP);
            let mut b = plain.clone();
            b.resize(plain.len() + 40, 0);
            let n = tx
                .protect_rtcp(&mut b, plain.len(), index, encrypt, 0)
                .unwrap();
            b.truncate(n);
            assert_eq!(b[8..plain.len()] == plain[8..], !encrypt, "{suite}");
            let keep = b.clone();
            let n = rx.unprotect_rtcp(&mut b).unwrap();
            assert_eq!(b[..n], plain[..], "{suite} index {index}");
            let mut again = keep;
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        }
        assert_eq!(rx.stats().rtcp_ok, 3);
        assert_eq!(rx.stats().rtcp_replay, 3);
    }
}

#[test]
fn session_parameters_unencrypted_and_unauthenticated() {
    for suite in SrtpSuite::PREFERENCE {
        let mut p = policy(suite, 4);
        p.unencrypted_srtp = true;
        let mut tx = SrtpSender::new(&p).unwrap();
        let mut rx = SrtpReceiver::new(&p).unwrap();
        let plain = rtp(5, 1, &[0x42; 50]);
        let mut w = protect(&mut tx, &plain, 0, 0);
        assert_eq!(w[..plain.len()], plain[..], "payload in the clear");
        let keep = w.clone();
        let n = rx.unprotect_rtp(&mut w).unwrap();
        assert_eq!(w[..n], plain[..]);
        // Still authenticated.
        let mut bad = keep;
        bad[20] ^= 1;
        let mut rx = SrtpReceiver::new(&p).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
    }
    let mut p = policy(SrtpSuite::AesCm128HmacSha1_80, 4);
    p.unauthenticated_srtp = true;
    let mut tx = SrtpSender::new(&p).unwrap();
    let mut rx = SrtpReceiver::new(&p).unwrap();
    let plain = rtp(5, 1, &[0x42; 50]);
    let mut w = protect(&mut tx, &plain, 0, 0);
    assert_eq!(w.len(), plain.len(), "no tag");
    let n = rx.unprotect_rtp(&mut w).unwrap();
    assert_eq!(w[..n], plain[..]);
    let mut bad = policy(SrtpSuite::AeadAes128Gcm, 1);
    bad.unauthenticated_srtp = true;
    assert!(SrtpReceiver::new(&bad).is_err());
}

#[test]
fn wrong_key_fails_every_packet_and_garbage_never_panics() {
    for suite in SrtpSuite::PREFERENCE {
        let mut tx = SrtpSender::new(&policy(suite, 1)).unwrap();
        let mut rx = SrtpReceiver::new(&policy(suite, 2)).unwrap();
        for seq in 0..50u16 {
            let mut w = protect(&mut tx, &rtp(seq, 1, &[0; 160]), 0, 0);
            assert_eq!(rx.unprotect_rtp(&mut w), Err(SrtpError::AuthFailed));
        }
        assert_eq!(rx.stats().rtp_auth_fail, 50);
        assert_eq!(rx.stats().rtp_ok, 0);
        let mut x = 0x1234_5678u32;
        for len in 0..200usize {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if len > 0 {
                b[0] = 0x80 | (b[0] & 0x3f);
            }
            let _ = rx.unprotect_rtp(&mut b.clone());
            let _ = rx.unprotect_rtcp(&mut b);
        }
    }
}

#[test]
fn roc_estimation_follows_appendix_a() {
    assert_eq!(estimate_index(None, 5), 5);
    assert_eq!(estimate_index(Some(65535), 2), 0x1_0002);
    assert_eq!(estimate_index(Some(0x1_0002), 65534), 0xfffe);
    assert_eq!(estimate_index(Some(0x1_0002), 3), 0x1_0003);
    assert_eq!(estimate_index(Some(40000), 100), 0x1_0064);
    assert_eq!(estimate_index(Some(100), 40000), 40000);
    // At ROC 0 there is no earlier cycle: a far sequence number is taken as ahead.
    assert_eq!(estimate_index(Some(100), 60000), 60000);
}

#[test]
fn secrets_are_redacted_in_debug() {
    let p = policy(SrtpSuite::AeadAes256Gcm, 0xab);
    let s = format!("{p:?}");
    assert!(!s.contains("171"), "{s}");
    assert!(s.contains("redacted"));
    let rx = SrtpReceiver::new(&p).unwrap();
    assert!(!format!("{rx:?}").contains("171"));
}
