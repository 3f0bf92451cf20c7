//! Decrypt the page images of an SQLCipher 4 catalogue (main file and WAL frames) with its
//! raw key, for tests that look at what the *pages* hold — deleted rows left in free space
//! or in old WAL frames included — rather than at the encrypted bytes (which never hold
//! plaintext). SQLCipher 4 defaults: 4096-byte pages, AES-256-CBC over each page but its
//! 80-byte reserve (16-byte IV, then the 64-byte HMAC-SHA512), page 1 starting after the
//! 16-byte salt; a raw key (`PRAGMA key = "x'…'"`) is the AES key itself.
//! Shared by `src/catalog/tests.rs` and the integration tests.
#![allow(dead_code)]

use aes::cipher::{BlockDecrypt, KeyInit};
use std::path::Path;

/// SQLCipher's default page size.
pub const PAGE: usize = 4096;
const RESERVE: usize = 80;
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// The plaintext of one encrypted page (page 1's first 16 bytes, the salt, stay zero).
pub fn decrypt_page(key: &[u8; 32], pgno: u32, page: &[u8]) -> Vec<u8> {
    let aes = aes::Aes256::new(key.into());
    let start = if pgno == 1 { 16 } else { 0 };
    let end = PAGE - RESERVE;
    let mut prev = [0u8; 16];
    prev.copy_from_slice(&page[end..end + 16]);
    let mut out = vec![0u8; PAGE];
    for (i, chunk) in page[start..end].chunks_exact(16).enumerate() {
        let mut b = aes::Block::clone_from_slice(chunk);
        aes.decrypt_block(&mut b);
        for k in 0..16 {
            out[start + i * 16 + k] = b[k] ^ prev[k];
        }
        prev.copy_from_slice(chunk);
    }
    out
}

/// Every page image of `db` and of the frames of `db-wal`, decrypted and concatenated.
pub fn plaintext_images(key: &[u8; 32], db: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(b) = std::fs::read(db) {
        for (i, page) in b.chunks_exact(PAGE).enumerate() {
            out.extend(decrypt_page(key, i as u32 + 1, page));
        }
    }
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    if let Ok(b) = std::fs::read(&wal) {
        if b.len() > WAL_HEADER {
            for frame in b[WAL_HEADER..].chunks_exact(FRAME_HEADER + PAGE) {
                let pgno = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                out.extend(decrypt_page(key, pgno, &frame[FRAME_HEADER..]));
            }
        }
    }
    out
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
