//! Key slots: the data key wrapped under a KEK, outside the authenticated header.

use sha2::{Digest, Sha256};

use super::wire::{put_bytes16, put_str16, Cursor, KEY_SLOT_LEN, KEY_SLOT_MAGIC};
use super::ContainerError;

/// Checksum at the end of a key slot.
const KEY_SLOT_SUM_LEN: usize = 32;

/// One key slot: the data key wrapped under one KEK. A recording has
/// [`KEY_SLOT_COUNT`] slots of [`KEY_SLOT_LEN`] bytes right after its header, outside
/// the authenticated header, so a key rotation can rewrite a slot without touching the
/// audio. A slot protects itself with a checksum bound to the header hash (a torn or
/// transplanted slot reads as empty); the wrapped key is authenticated by its KEK, and
/// the unwrapped key is proven right by chunk 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Higher generation wins when several slots unwrap.
    pub generation: u32,
    /// The KEK that wrapped the data key.
    pub kek_id: String,
    /// The wrapped data key.
    pub wrapped_key: Vec<u8>,
}

impl KeySlot {
    /// Encode the slot for the recording whose header hash is `header_hash`.
    pub fn encode(&self, header_hash: &[u8; 32]) -> Result<[u8; KEY_SLOT_LEN], ContainerError> {
        let mut v = Vec::with_capacity(KEY_SLOT_LEN);
        v.extend_from_slice(KEY_SLOT_MAGIC);
        v.extend_from_slice(&self.generation.to_be_bytes());
        put_str16(&mut v, &self.kek_id, "kek_id")?;
        put_bytes16(&mut v, &self.wrapped_key, "wrapped_key")?;
        if v.len() > KEY_SLOT_LEN - KEY_SLOT_SUM_LEN {
            return Err(ContainerError::InvalidParams(
                "kek_id and wrapped key do not fit in a key slot".into(),
            ));
        }
        let mut out = [0u8; KEY_SLOT_LEN];
        out[..v.len()].copy_from_slice(&v);
        let sum = slot_sum(header_hash, &out[..KEY_SLOT_LEN - KEY_SLOT_SUM_LEN]);
        out[KEY_SLOT_LEN - KEY_SLOT_SUM_LEN..].copy_from_slice(&sum);
        Ok(out)
    }

    /// Decode a slot; `None` if it is empty, shredded, torn or belongs to another header.
    pub fn decode(bytes: &[u8], header_hash: &[u8; 32]) -> Option<KeySlot> {
        if bytes.len() != KEY_SLOT_LEN {
            return None;
        }
        let (body, sum) = bytes.split_at(KEY_SLOT_LEN - KEY_SLOT_SUM_LEN);
        if slot_sum(header_hash, body) != sum {
            return None;
        }
        let mut c = Cursor { b: body };
        if c.take(4).ok()? != KEY_SLOT_MAGIC {
            return None;
        }
        let generation = c.u32().ok()?;
        let n = usize::from(c.u16().ok()?);
        let kek_id = c.string(n, "kek_id").ok()?;
        let n = usize::from(c.u16().ok()?);
        let wrapped_key = c.take(n).ok()?.to_vec();
        Some(KeySlot {
            generation,
            kek_id,
            wrapped_key,
        })
    }
}

fn slot_sum(header_hash: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"branchrec-keyslot-v1");
    h.update(header_hash);
    h.update(body);
    h.finalize().into()
}
