//! RFC 9180 Appendix A.3.1 (the published vector of this KEM and KDF, with AES-128-GCM)
//! and a cross-check of the AES-256-GCM suite against the `hpke` crate, both directions.

use super::*;
use hpke::{Deserializable, Kem as _, Serializable};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

// RFC 9180, A.3.1: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
const IKM_E: &str = "4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e";
const PK_EM: &str = "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4";
const SK_EM: &str = "4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb";
const IKM_R: &str = "668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550";
const PK_RM: &str = "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0";
const SK_RM: &str = "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2";
const SHARED: &str = "c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8";
const KEY: &str = "868c066ef58aae6dc589b6cfdd18f97e";
const BASE_NONCE: &str = "4e0bc5018beba4bf004cca59";
const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
const AAD0: &str = "436f756e742d30";
const CT0: &str =
    "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434";

#[test]
fn rfc9180_a31_derive_key_pair() {
    let (sk_e, pk_e) = derive_key_pair(&h(IKM_E)).unwrap();
    assert_eq!(hex::encode(&sk_e.to_bytes()[..]), SK_EM);
    assert_eq!(hex::encode(pk_e.to_bytes()), PK_EM);
    let (sk_r, pk_r) = derive_key_pair(&h(IKM_R)).unwrap();
    assert_eq!(hex::encode(&sk_r.to_bytes()[..]), SK_RM);
    assert_eq!(hex::encode(pk_r.to_bytes()), PK_RM);
}

#[test]
fn rfc9180_a31_encap_schedule_seal_open() {
    let pk_r = PublicKey::from_sec1(&h(PK_RM)).unwrap();
    let sk_e = SecretKey::from_bytes(&h(SK_EM)).unwrap();
    let enc: [u8; ENC_LEN] = h(PK_EM).try_into().unwrap();
    let ss = shared_secret_from_dh(&sk_e.dh(&pk_r), &enc, &pk_r);
    assert_eq!(hex::encode(&ss[..]), SHARED);
    let (key, nonce) = key_schedule(Aead::Aes128Gcm, &ss, &h(INFO));
    assert_eq!(hex::encode(&key[..]), KEY);
    assert_eq!(hex::encode(nonce), BASE_NONCE);

    let ikm: [u8; 32] = h(IKM_E).try_into().unwrap();
    let (enc2, ct) = seal(Aead::Aes128Gcm, &pk_r, &h(INFO), &h(AAD0), &h(PT), &ikm).unwrap();
    assert_eq!(hex::encode(enc2), PK_EM);
    assert_eq!(hex::encode(&ct), CT0);

    let sk_r = SecretKey::from_bytes(&h(SK_RM)).unwrap();
    let pt = open(Aead::Aes128Gcm, &sk_r, &enc2, &h(INFO), &h(AAD0), &ct).unwrap();
    assert_eq!(hex::encode(&pt[..]), PT);
    // The HSM path: the raw DH computed elsewhere.
    let dh = sk_r.dh(&PublicKey::from_sec1(&enc2).unwrap());
    let pt = open_with_dh(Aead::Aes128Gcm, &dh, &enc2, &pk_r, &h(INFO), &h(AAD0), &ct).unwrap();
    assert_eq!(hex::encode(&pt[..]), PT);
}

#[test]
fn open_refuses_altered_inputs() {
    let (sk_r, pk_r) = derive_key_pair(&[9u8; 32]).unwrap();
    let (enc, ct) = seal(
        Aead::Aes256Gcm,
        &pk_r,
        b"info",
        b"aad",
        b"secret",
        &[1u8; 32],
    )
    .unwrap();
    assert!(open(Aead::Aes256Gcm, &sk_r, &enc, b"info", b"aad", &ct).is_ok());
    assert_eq!(
        open(Aead::Aes256Gcm, &sk_r, &enc, b"inf0", b"aad", &ct).unwrap_err(),
        HpkeError::OpenFailed
    );
    assert_eq!(
        open(Aead::Aes256Gcm, &sk_r, &enc, b"info", b"aaD", &ct).unwrap_err(),
        HpkeError::OpenFailed
    );
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert!(open(Aead::Aes256Gcm, &sk_r, &enc, b"info", b"aad", &bad).is_err());
    let mut e = enc;
    e[10] ^= 1;
    assert!(open(Aead::Aes256Gcm, &sk_r, &e, b"info", b"aad", &ct).is_err());
    let (other, _) = derive_key_pair(&[8u8; 32]).unwrap();
    assert!(open(Aead::Aes256Gcm, &other, &enc, b"info", b"aad", &ct).is_err());
    assert_eq!(
        open(Aead::Aes256Gcm, &sk_r, &enc[..64], b"info", b"aad", &ct).unwrap_err(),
        HpkeError::BadPublicKey
    );
}

type Kem = hpke::kem::DhP256HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Gcm256 = hpke::aead::AesGcm256;

#[test]
fn aes256_interoperates_with_the_hpke_crate() {
    let mut rng = rand::rngs::OsRng;
    for i in 0..8u8 {
        let info = format!("branchrec test {i}").into_bytes();
        let aad = vec![i; usize::from(i) * 3];
        let pt = vec![0xA5 ^ i; 32 + usize::from(i)];
        // theirs seals, ours opens
        let (their_sk, their_pk) = Kem::gen_keypair(&mut rng);
        let (encapped, ct) = hpke::single_shot_seal::<Gcm256, Kdf, Kem, _>(
            &hpke::OpModeS::Base,
            &their_pk,
            &info,
            &pt,
            &aad,
            &mut rng,
        )
        .unwrap();
        let our_sk = SecretKey::from_bytes(&their_sk.to_bytes()).unwrap();
        assert_eq!(our_sk.public_key().to_bytes()[..], their_pk.to_bytes()[..]);
        let got = open(
            Aead::Aes256Gcm,
            &our_sk,
            &encapped.to_bytes(),
            &info,
            &aad,
            &ct,
        )
        .unwrap();
        assert_eq!(&got[..], &pt[..]);
        // ours seals, theirs opens
        let mut ikm = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rng, &mut ikm);
        let pk = PublicKey::from_sec1(&their_pk.to_bytes()).unwrap();
        let (enc, ct) = seal(Aead::Aes256Gcm, &pk, &info, &aad, &pt, &ikm).unwrap();
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
        let got = hpke::single_shot_open::<Gcm256, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &their_sk,
            &enc,
            &info,
            &ct,
            &aad,
        )
        .unwrap();
        assert_eq!(got, pt);
    }
    // DeriveKeyPair agrees too.
    let (sk, pk) = Kem::derive_keypair(&[42u8; 32]);
    let (osk, opk) = derive_key_pair(&[42u8; 32]).unwrap();
    assert_eq!(&osk.to_bytes()[..], &sk.to_bytes()[..]);
    assert_eq!(&opk.to_bytes()[..], &pk.to_bytes()[..]);
}
