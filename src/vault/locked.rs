//! Key bytes in locked memory: [`LockedKey`] keeps a 32-byte key in a page of its own
//! (an anonymous mapping), `mlock`ed so it is never written to swap, marked
//! `MADV_DONTDUMP` so it is left out of core dumps even where `PR_SET_DUMPABLE` is
//! undone, and zeroised before the page is unmapped.
//!
//! The crate forbids `unsafe`; `memmap2` gives the anonymous mapping, `mlock` and
//! `madvise` behind a safe API. A lock that fails (`RLIMIT_MEMLOCK` too low: the systemd
//! unit sets `LimitMEMLOCK`) is logged once as a warning and the key is still held,
//! zeroised on drop: locking is defence in depth, not a reason to stop recording.
//!
//! Used for the long-lived keys the daemon and the CLI hold: the KEK(s) (`KeyFileVault`),
//! the custody signing seed (`Ed25519Signer`, which builds the expanded signing key only
//! for the duration of one signature) and the audit MAC key (`audit_key`).

use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{Advice, MmapMut};
use zeroize::Zeroize;

/// Key length held by a [`LockedKey`].
pub const LOCKED_KEY_LEN: usize = 32;

static LOCK_WARNED: AtomicBool = AtomicBool::new(false);
static LOCK_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many key pages could not be locked in this process (the first failure is
/// logged as a warning).
pub fn lock_failures() -> u64 {
    LOCK_FAILURES.load(Ordering::Relaxed)
}

/// 32 key bytes in an `mlock`ed, `MADV_DONTDUMP` page, zeroised on drop.
pub struct LockedKey {
    store: Store,
    /// Whether `mlock` succeeded for this page.
    locked: bool,
    /// Whether `madvise(MADV_DONTDUMP)` succeeded for this page.
    dont_dump: bool,
}

enum Store {
    /// The normal case: a page of its own.
    Page(MmapMut),
    /// No mapping could be made (out of memory or address space): the heap, zeroised
    /// on drop all the same.
    Heap(Box<[u8; LOCKED_KEY_LEN]>),
}

impl std::fmt::Debug for LockedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedKey")
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

fn warn_once(what: &str, e: &std::io::Error) {
    LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
    if !LOCK_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %e,
            "cannot {what} key memory (RLIMIT_MEMLOCK too low? the systemd unit sets LimitMEMLOCK): keys may reach swap; continuing"
        );
    }
}

impl LockedKey {
    /// A zeroed key page (fill it with [`LockedKey::bytes_mut`]). A refused lock leaves an
    /// unlocked page (warned once); a refused mapping, a zeroised heap buffer.
    pub fn zeroed() -> Self {
        match MmapMut::map_anon(LOCKED_KEY_LEN) {
            Ok(map) => {
                // Out of core dumps: best effort (kernels before 3.4 do not know it).
                let dont_dump = map.advise(Advice::DontDump).is_ok();
                let locked = match map.lock() {
                    Ok(()) => true,
                    Err(e) => {
                        warn_once("mlock", &e);
                        false
                    }
                };
                LockedKey {
                    store: Store::Page(map),
                    locked,
                    dont_dump,
                }
            }
            Err(e) => {
                warn_once("map", &e);
                LockedKey {
                    store: Store::Heap(Box::new([0; LOCKED_KEY_LEN])),
                    locked: false,
                    dont_dump: false,
                }
            }
        }
    }

    /// A locked copy of `bytes`; the caller zeroises its own copy.
    pub fn from_bytes(bytes: &[u8; LOCKED_KEY_LEN]) -> Self {
        let mut k = Self::zeroed();
        k.bytes_mut().copy_from_slice(bytes);
        k
    }

    /// Whether the page is locked in memory.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    fn slice(&self) -> &[u8] {
        match &self.store {
            Store::Page(m) => &m[..],
            Store::Heap(b) => &b[..],
        }
    }

    fn slice_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Page(m) => &mut m[..],
            Store::Heap(b) => &mut b[..],
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; LOCKED_KEY_LEN] {
        // The mapping is LOCKED_KEY_LEN long (rounded up to a page by the kernel).
        self.slice()
            .get(..LOCKED_KEY_LEN)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&ZERO)
    }

    /// The key bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8; LOCKED_KEY_LEN] {
        let s = self.slice_mut();
        debug_assert_eq!(s.len(), LOCKED_KEY_LEN);
        let (head, _) = s.split_at_mut(LOCKED_KEY_LEN.min(s.len()));
        // Cannot fail: both stores are exactly LOCKED_KEY_LEN bytes (a `map_anon` of that
        // length, or a `Box<[u8; LOCKED_KEY_LEN]>`).
        head.try_into()
            .expect("key mapping of LOCKED_KEY_LEN bytes")
    }

    /// Whether the page is marked `MADV_DONTDUMP` (left out of core dumps).
    pub fn is_dont_dump(&self) -> bool {
        self.dont_dump
    }

    /// Where the key lives (tests: the page must be in the locked set).
    #[cfg(test)]
    fn addr(&self) -> usize {
        self.slice().as_ptr() as usize
    }
}

impl Clone for LockedKey {
    fn clone(&self) -> Self {
        Self::from_bytes(self.as_bytes())
    }
}

static ZERO: [u8; LOCKED_KEY_LEN] = [0; LOCKED_KEY_LEN];

impl Drop for LockedKey {
    fn drop(&mut self) {
        // Volatile writes, not optimised away; the page is munlocked and unmapped
        // when the mapping drops right after.
        self.slice_mut().zeroize();
    }
}

impl Zeroize for LockedKey {
    fn zeroize(&mut self) {
        self.slice_mut().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VmLck` of this process, kB (from /proc/self/status).
    fn vm_lck_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Whether the mapping at `addr` is locked, from /proc/self/smaps (`Locked:` of
    /// its region): per mapping, so tests running in parallel do not disturb it.
    fn region_locked_kb(addr: usize) -> Option<u64> {
        region_field_kb(addr, "Locked:")
    }

    /// A `kB` field of the smaps region holding `addr`.
    fn region_field_kb(addr: usize, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_region = false;
        for l in s.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        in_region = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if in_region {
                if let Some(v) = l.strip_prefix(field) {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn key_page_is_locked_and_not_dumped() {
        let before = vm_lck_kb();
        let k = LockedKey::from_bytes(&[0x5a; 32]);
        // The test runs as root here, or with the default RLIMIT_MEMLOCK (≥ 64 kB),
        // which holds one page: the lock must succeed.
        assert!(k.is_locked(), "mlock refused");
        assert!(k.is_dont_dump(), "madvise(MADV_DONTDUMP) refused");
        assert_eq!(k.as_bytes(), &[0x5a; 32]);
        // The page was just written, so a real kernel reports it resident. qemu-user
        // (the aarch64 unit tests in CI) synthesises smaps for the guest — Rss, Locked
        // and the lo/dd VmFlags all absent — while /proc/self/status is the host's and
        // its VmLck real: there the process-wide figure below is the check.
        let rss = region_field_kb(k.addr(), "Rss:").expect("mapping not in smaps");
        let smaps_real = rss > 0;
        if !smaps_real {
            eprintln!(
                "smaps synthesised (qemu-user?): Rss 0 kB for a written page; checking VmLck only"
            );
        }
        let region = region_locked_kb(k.addr()).expect("mapping not in smaps");
        assert!(
            !smaps_real || region >= 4,
            "mapping not locked: Locked: {region} kB"
        );
        // VmLck is process-wide (other tests lock pages too), so it must at least have
        // grown while this key is alive… unless another test dropped one meanwhile;
        // the per-mapping figure above is the exact check.
        let during = vm_lck_kb();
        assert!(
            during >= 4,
            "VmLck {during} kB with a locked key (before: {before})"
        );
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // VmFlags of the mapping carry `dd` (MADV_DONTDUMP) and `lo` (locked).
        let mut flags = None;
        let mut in_region = false;
        for l in smaps.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        in_region = (a..b).contains(&k.addr());
                        continue;
                    }
                }
            }
            if in_region {
                if let Some(v) = l.strip_prefix("VmFlags:") {
                    flags = Some(v.to_string());
                }
            }
        }
        let flags = flags.expect("no VmFlags");
        if smaps_real {
            assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
            assert!(flags.split_whitespace().any(|f| f == "lo"), "{flags}");
        }
        let addr = k.addr();
        drop(k);
        assert_eq!(region_locked_kb(addr), None, "page still mapped after drop");
    }

    #[test]
    fn zeroize_clears_the_bytes() {
        let mut k = LockedKey::from_bytes(&[7; 32]);
        k.zeroize();
        assert_eq!(k.as_bytes(), &[0; 32]);
        k.bytes_mut().copy_from_slice(&[9; 32]);
        assert_eq!(k.as_bytes(), &[9; 32]);
        assert!(format!("{k:?}").starts_with("LockedKey"));
        assert!(!format!("{k:?}").contains('9'));
    }
}
