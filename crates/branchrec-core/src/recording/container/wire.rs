//! The container's wire primitives, shared by the header and the key slots: format
//! constants and the length-prefixed field encoding (see docs/recording-format.md).

use super::ContainerError;

/// File magic.
pub const MAGIC: &[u8; 6] = b"BRREC\0";
/// The container format version written for PCM (s16le) recordings.
pub const FORMAT_VERSION: u16 = 2;
/// The container format version written for Opus recordings (adds the codec-parameter
/// field to the header and packet chunks). Readers accept versions 2 and 3.
pub const FORMAT_VERSION_OPUS: u16 = 3;
/// Number of key slots the box's own KEKs use (slots 0 and 1; a key rotation alternates
/// between them). Every container has them.
pub const KEY_SLOT_COUNT: usize = 2;
/// Index of the compliance key slot (the data key wrapped to the central compliance
/// key, `crate::compliance`); present when `key_slot_count` is 3.
pub const COMPLIANCE_SLOT: usize = 2;
/// Most key slots a container may have (the box's two and the compliance slot).
pub const MAX_KEY_SLOT_COUNT: usize = 3;
/// Size of one key slot in bytes.
pub const KEY_SLOT_LEN: usize = 512;
/// Magic at the start of a used key slot.
pub const KEY_SLOT_MAGIC: &[u8; 4] = b"BRKS";
/// Length of the random per-recording nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Chunk plaintext header: start frame (u64) + frame count (u32).
pub const CHUNK_PLAIN_HEADER_LEN: usize = 12;
/// Largest accepted header body.
pub const MAX_HEADER_BODY: u32 = 1 << 20;
/// Largest accepted chunk audio payload (`chunk_target_frames × channels × 2`).
pub const MAX_CHUNK_AUDIO_BYTES: u64 = 16 << 20;

pub(super) fn put_str16(out: &mut Vec<u8>, s: &str, what: &str) -> Result<(), ContainerError> {
    put_bytes16(out, s.as_bytes(), what)
}

pub(super) fn put_bytes16(out: &mut Vec<u8>, b: &[u8], what: &str) -> Result<(), ContainerError> {
    let len = u16::try_from(b.len())
        .map_err(|_| ContainerError::InvalidParams(format!("{what} longer than 65535 bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        if self.b.len() < n {
            return Err(ContainerError::HeaderMalformed(
                "field runs past the header".into(),
            ));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    pub(super) fn arr<const N: usize>(&mut self) -> Result<[u8; N], ContainerError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(super) fn u16(&mut self) -> Result<u16, ContainerError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, ContainerError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, ContainerError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    pub(super) fn string(&mut self, n: usize, what: &str) -> Result<String, ContainerError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| ContainerError::HeaderMalformed(format!("{what} is not UTF-8")))
    }
}

/// The key-slot count a header body declares, read without parsing the rest of the body
/// (the shredder and the content hash need only the slot area's size). `None` if the
/// body is too short or declares a layout readers refuse.
pub fn slot_count_of_body(body: &[u8]) -> Option<usize> {
    let n = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    // recording_id, created (8), rate (4), channels (2), format (1), target (4)
    let at = 2 + n + 19;
    let count = usize::from(*body.get(at)?);
    let len = usize::from(u16::from_be_bytes([*body.get(at + 1)?, *body.get(at + 2)?]));
    ((count == KEY_SLOT_COUNT || count == MAX_KEY_SLOT_COUNT) && len == KEY_SLOT_LEN)
        .then_some(count)
}
