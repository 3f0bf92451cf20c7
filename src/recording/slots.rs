//! In-place changes to a recording file's key slots: re-wrapping the data key under a
//! new KEK (key rotation) and destroying it (crypto-shredding). The audio chunks are
//! never rewritten; the slots sit outside the authenticated header (see
//! `docs/recording-format.md`, section 4).
//!
//! Crash safety of a re-wrap: the new wrap goes into the slot that does *not* hold the
//! key in use, with a higher generation, followed by `fdatasync`. A torn slot write
//! fails the slot checksum and reads as empty, so at every instant at least the old
//! slot unwraps.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::container::{
    read_header, slot_count_of_body, ContainerError, ContainerReader, Header, KeySlot,
    KEY_SLOT_COUNT, KEY_SLOT_LEN, MAGIC, MAX_HEADER_BODY, MAX_KEY_SLOT_COUNT,
};
use branchrec_core::keys::KeyWrap;

/// What [`rewrap_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewrapOutcome {
    /// The newest usable slot is already wrapped under the vault's current KEK.
    AlreadyCurrent,
    /// A new slot was written.
    Rewrapped {
        /// Index of the slot written.
        slot: usize,
        /// Its generation.
        generation: u32,
    },
}

fn open_rw(path: &Path) -> Result<File, ContainerError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?)
}

fn header_of(f: &File) -> Result<([u8; 32], Header), ContainerError> {
    let mut r = BufReader::new(f.try_clone()?);
    r.seek(SeekFrom::Start(0))?;
    let (h, hh) = read_header(&mut r)?;
    Ok((hh, h))
}

/// The index of the slot a reader would use with `vault` (highest generation that
/// unwraps), with its slot.
fn active_slot(h: &Header, vault: &dyn KeyWrap) -> Result<(usize, KeySlot), ContainerError> {
    let mut best: Option<(usize, &KeySlot)> = None;
    let mut last_err = None;
    // Only the box's slots: the compliance slot is not the box's to rotate or clear.
    for (i, s) in h.key_slots.iter().enumerate().take(KEY_SLOT_COUNT) {
        let Some(s) = s else { continue };
        match vault.unwrap(&s.kek_id, &s.wrapped_key) {
            Ok(_) => {
                if best.map_or(true, |(_, b)| s.generation > b.generation) {
                    best = Some((i, s));
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    match best {
        Some((i, s)) => Ok((i, s.clone())),
        None => Err(last_err.map_or(ContainerError::NoKeySlot, ContainerError::Key)),
    }
}

/// Re-wrap a recording's data key under `vault`'s current KEK (`vault.kek_id()`),
/// writing it into the other key slot. `vault` must also hold the KEK the file is
/// wrapped under now. The unwrapped key is proven right (chunk 0 authenticates) before
/// anything is written. Idempotent: a file already under the current KEK is left alone.
pub fn rewrap_file(path: &Path, vault: &dyn KeyWrap) -> Result<RewrapOutcome, ContainerError> {
    let f = open_rw(path)?;
    let (hh, h) = header_of(&f)?;
    let (idx, slot) = active_slot(&h, vault)?;
    let current = vault.kek_id();
    if slot.kek_id == current {
        return Ok(RewrapOutcome::AlreadyCurrent);
    }
    // Prove the key: chunk 0 must authenticate under it.
    let mut fc = f.try_clone()?;
    fc.seek(SeekFrom::Start(0))?;
    let mut rd = ContainerReader::open(BufReader::new(fc), vault)?;
    match rd.next_chunk() {
        Ok(Some(_)) => {}
        Ok(None) => return Err(ContainerError::ChunkAuth { chunk: 0 }),
        Err(e) => return Err(e),
    }
    let dk = super::container::unwrap_data_key(&h, vault)?;
    let generation = h
        .key_slots
        .iter()
        .flatten()
        .map(|s| s.generation)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| ContainerError::HeaderMalformed("key slot generation overflow".into()))?;
    let target = (idx + 1) % KEY_SLOT_COUNT;
    let new = KeySlot {
        generation,
        kek_id: current,
        wrapped_key: vault.wrap(&dk)?,
    };
    let bytes = new.encode(&hh)?;
    f.write_all_at(&bytes, h.slot_offset(target)?)?;
    f.sync_data()?;
    Ok(RewrapOutcome::Rewrapped {
        slot: target,
        generation,
    })
}

/// After a rotation: empty every slot not wrapped under `keep_kek_id`, provided a slot
/// under `keep_kek_id` unwraps with `vault` (so the file never loses its last usable
/// key). Returns how many slots were cleared.
pub fn clear_other_slots(
    path: &Path,
    vault: &dyn KeyWrap,
    keep_kek_id: &str,
) -> Result<usize, ContainerError> {
    let f = open_rw(path)?;
    let (_, h) = header_of(&f)?;
    let keep_ok = h
        .key_slots
        .iter()
        .flatten()
        .any(|s| s.kek_id == keep_kek_id && vault.unwrap(&s.kek_id, &s.wrapped_key).is_ok());
    if !keep_ok {
        return Err(ContainerError::NoKeySlot);
    }
    let mut cleared = 0;
    for (i, s) in h.key_slots.iter().enumerate().take(KEY_SLOT_COUNT) {
        if matches!(s, Some(s) if s.kek_id != keep_kek_id) {
            f.write_all_at(&[0u8; KEY_SLOT_LEN], h.slot_offset(i)?)?;
            cleared += 1;
        }
    }
    if cleared > 0 {
        f.sync_data()?;
    }
    Ok(cleared)
}

/// Crypto-shred a recording: overwrite its whole key-slot area with zeros and
/// `fdatasync`, so no KEK (TPM, rotated, or escrowed) can recover its data key and the
/// ciphertext — this file or any copy of its chunks — is unreadable. Works even when the
/// header no longer parses (as long as the fixed 12-byte prefix is intact). Call this
/// before unlinking the file.
///
/// Limits: a copy of the whole file taken *before* shredding still holds the wrapped
/// key; flash wear levelling may keep old blocks physically (rotating the KEK
/// afterwards makes such remnants useless too).
pub fn shred_file(path: &Path) -> Result<(), ContainerError> {
    let f = open_rw(path)?;
    let mut fixed = [0u8; 12];
    (&f).read_exact(&mut fixed).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ContainerError::HeaderTruncated
        } else {
            ContainerError::Io(e)
        }
    })?;
    if &fixed[..6] != MAGIC {
        return Err(ContainerError::BadMagic);
    }
    let body_len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if body_len > MAX_HEADER_BODY {
        return Err(ContainerError::HeaderMalformed("header too large".into()));
    }
    let off = 12 + u64::from(body_len);
    // Every slot, the compliance slot included (the archive copy keeps its own). A body
    // that does not say how many: the most there can be.
    let mut body = vec![0u8; body_len as usize];
    let count = match (&f).read_exact(&mut body) {
        Ok(()) => slot_count_of_body(&body).unwrap_or(MAX_KEY_SLOT_COUNT),
        Err(_) => MAX_KEY_SLOT_COUNT,
    };
    let len = f.metadata()?.len();
    let end = (off + (KEY_SLOT_LEN * count) as u64).min(len);
    if end > off {
        // Bounded by KEY_SLOT_LEN × MAX_KEY_SLOT_COUNT bytes.
        let zeros = vec![0u8; (end - off) as usize];
        f.write_all_at(&zeros, off)?;
    }
    f.sync_data()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AudioBlock;
    use crate::recording::container::{read_all_audio, HeaderParams};
    use crate::recording::ContainerWriter;
    use crate::vault::{DataKey, KeyFileVault, KeyWrap, VaultError};

    /// A vault holding several KEKs, the first being current (as during a rotation).
    struct Multi(Vec<KeyFileVault>);
    impl KeyWrap for Multi {
        fn kek_id(&self) -> String {
            self.0[0].kek_id()
        }
        fn wrap(&self, dk: &DataKey) -> Result<Vec<u8>, VaultError> {
            self.0[0].wrap(dk)
        }
        fn unwrap(&self, kek_id: &str, w: &[u8]) -> Result<DataKey, VaultError> {
            for v in &self.0 {
                if v.kek_id() == kek_id {
                    return v.unwrap(kek_id, w);
                }
            }
            Err(VaultError::UnknownKek(kek_id.into()))
        }
    }

    fn write_rec(path: &Path, v: &KeyFileVault) -> Vec<i16> {
        let dk = DataKey::generate(&mut rand::rngs::OsRng);
        let p = HeaderParams {
            recording_id: "r1".into(),
            created_unix_ms: 1,
            sample_rate: 8000,
            channels: 2,
            chunk_target_frames: 0,
            kek_id: v.kek_id(),
            extra_json: String::new(),
        };
        let (mut w, mut file) =
            ContainerWriter::new(p, dk.clone(), v.wrap(&dk).unwrap(), [1; 7]).unwrap();
        let samples: Vec<i16> = (0..20000).map(|i| (i % 3000) as i16).collect();
        w.push_block(&AudioBlock {
            start_frame: 0,
            samples: samples.clone(),
        })
        .unwrap();
        while let Some(c) = w.poll_chunk() {
            file.extend_from_slice(&c);
        }
        file.extend_from_slice(&w.finish().bytes);
        std::fs::write(path, file).unwrap();
        samples
    }

    #[test]
    fn rotate_twice_then_shred() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.brec");
        let k1 = KeyFileVault::from_key([1; 32]);
        let audio = write_rec(&p, &k1);
        let sum0 = super::super::container::content_sha256(File::open(&p).unwrap()).unwrap();
        let k2 = KeyFileVault::from_key([2; 32]);
        let k3 = KeyFileVault::from_key([3; 32]);
        // Rotation 1 → 2: slot 1, generation 2; idempotent.
        let m = Multi(vec![
            KeyFileVault::from_key([2; 32]),
            KeyFileVault::from_key([1; 32]),
        ]);
        assert_eq!(
            rewrap_file(&p, &m).unwrap(),
            RewrapOutcome::Rewrapped {
                slot: 1,
                generation: 2
            }
        );
        assert_eq!(rewrap_file(&p, &m).unwrap(), RewrapOutcome::AlreadyCurrent);
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &k2).unwrap().1,
            audio
        );
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &k1).unwrap().1,
            audio
        );
        assert_eq!(clear_other_slots(&p, &k2, &k2.kek_id()).unwrap(), 1);
        assert!(read_all_audio(File::open(&p).unwrap(), &k1).is_err());
        // Rotation 2 → 3 goes back into slot 0.
        let m = Multi(vec![
            KeyFileVault::from_key([3; 32]),
            KeyFileVault::from_key([2; 32]),
        ]);
        assert_eq!(
            rewrap_file(&p, &m).unwrap(),
            RewrapOutcome::Rewrapped {
                slot: 0,
                generation: 3
            }
        );
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &k3).unwrap().1,
            audio
        );
        // Content hash unchanged by rotations.
        assert_eq!(
            super::super::container::content_sha256(File::open(&p).unwrap()).unwrap(),
            sum0
        );
        // A vault without the file's KEK cannot rotate it (and writes nothing).
        let before = std::fs::read(&p).unwrap();
        let stranger = Multi(vec![KeyFileVault::from_key([9; 32])]);
        assert!(rewrap_file(&p, &stranger).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), before);
        // Shred: no KEK reads it any more.
        shred_file(&p).unwrap();
        for v in [&k1, &k2, &k3] {
            assert!(matches!(
                read_all_audio(File::open(&p).unwrap(), v),
                Err(ContainerError::NoKeySlot)
            ));
        }
    }

    /// The compliance private key as a [`KeyWrap`] (what `central::ComplianceUnwrap` does
    /// with an HSM).
    struct Compliance(branchrec_core::hpke::SecretKey);
    impl KeyWrap for Compliance {
        fn kek_id(&self) -> String {
            "hpke1:".into()
        }
        fn wrap(&self, _: &DataKey) -> Result<Vec<u8>, VaultError> {
            Err(VaultError::WrapFailed)
        }
        fn unwrap(&self, kek_id: &str, w: &[u8]) -> Result<DataKey, VaultError> {
            use branchrec_core::compliance as c;
            let enc = c::wrapped_enc(w).map_err(|_| VaultError::Malformed("slot"))?;
            let enc = branchrec_core::hpke::PublicKey::from_sec1(enc)
                .map_err(|_| VaultError::Malformed("enc"))?;
            c::unwrap_data_key(kek_id, w, &self.0.dh(&enc), &self.0.public_key())
                .map_err(|_| VaultError::UnwrapFailed)
        }
    }

    #[test]
    fn rotation_keeps_the_compliance_slot_and_shred_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.brec");
        let k1 = KeyFileVault::from_key([1; 32]);
        let (sk, pk) = branchrec_core::hpke::derive_key_pair(&[4; 32]).unwrap();
        let ck = Compliance(sk);
        let dk = DataKey::generate(&mut rand::rngs::OsRng);
        let params = HeaderParams {
            recording_id: "c1".into(),
            created_unix_ms: 1,
            sample_rate: 8000,
            channels: 2,
            chunk_target_frames: 0,
            kek_id: k1.kek_id(),
            extra_json: String::new(),
        };
        let cw = branchrec_core::compliance::wrap_data_key(&pk, "ck-1", &dk, &[2; 32]).unwrap();
        let (mut w, mut file) = ContainerWriter::with_slots(
            params,
            None,
            dk.clone(),
            k1.wrap(&dk).unwrap(),
            Some(("hpke1:ck-1".into(), cw)),
            [1; 7],
        )
        .unwrap();
        let audio: Vec<i16> = (0..20000).map(|i| (i % 2999) as i16).collect();
        w.push_block(&AudioBlock {
            start_frame: 0,
            samples: audio.clone(),
        })
        .unwrap();
        while let Some(c) = w.poll_chunk() {
            file.extend_from_slice(&c);
        }
        let fin = w.finish();
        file.extend_from_slice(&fin.bytes);
        assert_eq!(fin.total_bytes, file.len() as u64);
        assert_eq!(fin.slot_bytes, 3 * KEY_SLOT_LEN as u64);
        std::fs::write(&p, &file).unwrap();
        let (sum, _) = super::super::container::content_sha256(File::open(&p).unwrap()).unwrap();
        assert_eq!(sum, fin.sha256);
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &ck).unwrap().1,
            audio
        );
        // A box rotation writes slot 1 and clears slot 0, never slot 2.
        let k2 = KeyFileVault::from_key([2; 32]);
        let m = Multi(vec![
            KeyFileVault::from_key([2; 32]),
            KeyFileVault::from_key([1; 32]),
        ]);
        assert_eq!(
            rewrap_file(&p, &m).unwrap(),
            RewrapOutcome::Rewrapped {
                slot: 1,
                generation: 2
            }
        );
        assert_eq!(clear_other_slots(&p, &k2, &k2.kek_id()).unwrap(), 1);
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &k2).unwrap().1,
            audio
        );
        assert_eq!(
            read_all_audio(File::open(&p).unwrap(), &ck).unwrap().1,
            audio
        );
        assert!(read_all_audio(File::open(&p).unwrap(), &k1).is_err());
        // Shredding destroys the compliance slot on the box too.
        shred_file(&p).unwrap();
        assert!(read_all_audio(File::open(&p).unwrap(), &ck).is_err());
        assert!(read_all_audio(File::open(&p).unwrap(), &k2).is_err());
    }

    #[test]
    fn torn_rewrap_keeps_old_slot() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.brec");
        let k1 = KeyFileVault::from_key([1; 32]);
        let audio = write_rec(&p, &k1);
        let m = Multi(vec![
            KeyFileVault::from_key([2; 32]),
            KeyFileVault::from_key([1; 32]),
        ]);
        let clean = std::fs::read(&p).unwrap();
        rewrap_file(&p, &m).unwrap();
        let done = std::fs::read(&p).unwrap();
        let (h, _) = read_header(&mut &clean[..]).unwrap();
        let s1 = h.slot_offset(1).unwrap() as usize;
        // Every prefix of the slot write (a torn write) leaves a readable file.
        for cut in [1, 10, 100, 300, KEY_SLOT_LEN - 1] {
            let mut f = clean.clone();
            f[s1..s1 + cut].copy_from_slice(&done[s1..s1 + cut]);
            std::fs::write(&p, &f).unwrap();
            assert_eq!(
                read_all_audio(File::open(&p).unwrap(), &m).unwrap().1,
                audio
            );
            // And a retry completes the rotation.
            assert!(matches!(
                rewrap_file(&p, &m).unwrap(),
                RewrapOutcome::Rewrapped { slot: 1, .. }
            ));
            let k2 = KeyFileVault::from_key([2; 32]);
            assert_eq!(
                read_all_audio(File::open(&p).unwrap(), &k2).unwrap().1,
                audio
            );
        }
    }
}
