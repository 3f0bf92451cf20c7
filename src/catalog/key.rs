//! Encryption at rest of the catalogue: SQLCipher under the box's *catalogue key*.
//!
//! The catalogue key is 32 random bytes made once per box, with the catalogue. On disk it
//! exists only wrapped by the key-encryption key (the KEK of [`crate::vault`]: sealed in
//! the TPM, or the software key file in development), in `<data_dir>/keys/
//! catalog.key.wrapped`: JSON `{"format":"branchrec-catalog-key-v1","wraps":[{"kek_id":…,
//! "wrapped":hex}]}`, each `wrapped` in the KEK's wrapped-key format (the one recording
//! data keys use, `docs/recording-format.md`). There is one wrap per KEK; a KEK rotation
//! adds the new KEK's wrap before it switches and drops the old one after.
//!
//! [`CatalogAccess`] is the only way to a [`Catalog`](super::Catalog): it holds the path and
//! the unwrapped key (or why there is none), and every opener — daemon, CLI, retention,
//! uplink, front panel — goes through it. A [`CatalogKey`] comes only from
//! [`CatalogAccess::unlock`] / [`CatalogAccess::unlock_or_create`], which unwrap it with
//! the KEK; it is handed to SQLite as `PRAGMA key = "x'…'"` (a raw key: no passphrase
//! derivation), the hex copy zeroised right after, and the key itself on drop.
//!
//! A catalogue written by a build before encryption (a plaintext SQLite file) is converted
//! once by the daemon at start-up, under the data-directory lock: [`encrypt_plaintext`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::OsRng;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Catalog, CatalogError};
use crate::vault::locked::LockedKey;
use crate::vault::{DataKey, KeyWrap, VaultError};

/// File name of the wrapped catalogue key in the keys directory.
pub const KEY_FILE: &str = "catalog.key.wrapped";
const KEY_FORMAT: &str = "branchrec-catalog-key-v1";
/// The first 16 bytes of every plaintext SQLite database. An SQLCipher file starts with
/// its random salt instead.
const PLAINTEXT_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The catalogue key (32 bytes), held in a locked, undumpable page of its own
/// ([`LockedKey`]) and zeroised on drop; `Debug` never prints it. Only this module makes
/// one, by unwrapping (or creating) it with the KEK. (SQLCipher keeps its own copy of the
/// key material inside each connection, outside this page.)
pub struct CatalogKey(LockedKey);

impl std::fmt::Debug for CatalogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogKey(..)")
    }
}

impl CatalogKey {
    fn from_data_key(dk: &DataKey) -> Self {
        CatalogKey(LockedKey::from_bytes(dk.as_bytes()))
    }

    /// A short-lived copy for [`KeyWrap::wrap`] (zeroised when the caller drops it).
    fn data_key(&self) -> DataKey {
        DataKey::from_bytes(*self.0.as_bytes())
    }

    /// Whether the key's page is `mlock`ed (false where `RLIMIT_MEMLOCK` refused it).
    pub fn is_locked(&self) -> bool {
        self.0.is_locked()
    }

    /// A fixed key for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(b: u8) -> Self {
        CatalogKey(LockedKey::from_bytes(&[b; 32]))
    }

    /// `PRAGMA key` as the first statement of a fresh connection; the SQL text holding the
    /// hex key is zeroised when it is dropped.
    pub(crate) fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut sql = Zeroizing::new(String::with_capacity(90));
        sql.push_str("PRAGMA key = \"x'");
        push_hex(&mut sql, self.0.as_bytes());
        sql.push_str("'\";");
        conn.execute_batch(&sql)
    }

    /// `x'…'`, the raw-key text `ATTACH … KEY` takes (zeroised on drop).
    fn literal(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(70));
        s.push_str("x'");
        push_hex(&mut s, self.0.as_bytes());
        s.push('\'');
        s
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Why the catalogue key could not be had. The catalogue stays closed: the daemon answers
/// every call with 503 and the reason, the CLI prints it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogKeyError {
    /// The KEK itself is unavailable (TPM refuses, keys not provisioned, …).
    #[error("catalogue key cannot be unwrapped: the key-encryption key is unavailable: {0}")]
    KekUnavailable(String),
    /// No wrapped key beside an encrypted catalogue: a new key would not open it.
    #[error(
        "catalogue key cannot be unwrapped: {file} is missing but the catalogue {db} exists \
         and is encrypted; restore the key file from this box's backup (a new key cannot \
         open it)"
    )]
    Missing {
        /// The wrapped-key file.
        file: PathBuf,
        /// The catalogue.
        db: PathBuf,
    },
    /// The wrapped-key file is unreadable or malformed.
    #[error("catalogue key cannot be unwrapped: {file}: {reason}")]
    BadFile {
        /// The wrapped-key file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No wrap under a KEK this box holds, or the KEK refused it.
    #[error("catalogue key cannot be unwrapped: {file}: {reason}")]
    Unwrap {
        /// The wrapped-key file.
        file: PathBuf,
        /// Which KEKs were tried and what they said.
        reason: String,
    },
    /// Creating or re-wrapping the key failed.
    #[error("catalogue key cannot be written: {file}: {source}")]
    Write {
        /// The wrapped-key file.
        file: PathBuf,
        /// The vault's error.
        #[source]
        source: VaultError,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    format: String,
    wraps: Vec<Wrap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wrap {
    kek_id: String,
    /// Hex of the KEK's wrapped-key bytes.
    wrapped: String,
}

/// The wrapped catalogue key's file in `keys_dir`.
pub fn key_file(keys_dir: &Path) -> PathBuf {
    keys_dir.join(KEY_FILE)
}

fn read_key_file(file: &Path) -> Result<Option<KeyFile>, CatalogKeyError> {
    let bad = |reason: String| CatalogKeyError::BadFile {
        file: file.to_path_buf(),
        reason,
    };
    let bytes = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
    {
        Ok(f) => {
            let mut b = Vec::new();
            // A wrapped key is ~200 bytes; 64 KiB bounds a planted file.
            f.take(64 * 1024)
                .read_to_end(&mut b)
                .map_err(|e| bad(e.to_string()))?;
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let kf: KeyFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if kf.format != KEY_FORMAT {
        return Err(bad(format!("unknown format {:?}", kf.format)));
    }
    Ok(Some(kf))
}

fn write_key_file(file: &Path, kf: &KeyFile) -> Result<(), CatalogKeyError> {
    let bytes = serde_json::to_vec_pretty(kf).map_err(|e| CatalogKeyError::Write {
        file: file.to_path_buf(),
        source: VaultError::Custody(e.to_string()),
    })?;
    crate::vault::custody::write_atomic(file, &bytes).map_err(|source| CatalogKeyError::Write {
        file: file.to_path_buf(),
        source,
    })
}

/// Unwrap the key with the first wrap `kek` can open.
fn unwrap_from(
    file: &Path,
    kf: &KeyFile,
    kek: &dyn KeyWrap,
) -> Result<CatalogKey, CatalogKeyError> {
    let mut tried = Vec::new();
    for w in &kf.wraps {
        let bytes = match hex::decode(&w.wrapped) {
            Ok(b) => b,
            Err(e) => {
                tried.push(format!("{}: not hex ({e})", w.kek_id));
                continue;
            }
        };
        match kek.unwrap(&w.kek_id, &bytes) {
            // `dk` (a stack copy) is zeroised when it drops here.
            Ok(dk) => return Ok(CatalogKey::from_data_key(&dk)),
            Err(e) => tried.push(format!("{}: {e}", w.kek_id)),
        }
    }
    Err(CatalogKeyError::Unwrap {
        file: file.to_path_buf(),
        reason: if tried.is_empty() {
            "it holds no wrapped key".into()
        } else {
            format!(
                "no wrap opens with this box's KEK {} ({})",
                kek.kek_id(),
                tried.join("; ")
            )
        },
    })
}

/// Wrap `key` under `kek` as a new file (refusing to replace one).
fn create_key_file(file: &Path, kek: &dyn KeyWrap) -> Result<CatalogKey, CatalogKeyError> {
    let key = CatalogKey::from_data_key(&DataKey::generate(&mut OsRng));
    let wrapped = kek
        .wrap(&key.data_key())
        .map_err(|source| CatalogKeyError::Write {
            file: file.to_path_buf(),
            source,
        })?;
    if file.exists() {
        return Err(CatalogKeyError::BadFile {
            file: file.to_path_buf(),
            reason: "appeared while creating it".into(),
        });
    }
    write_key_file(
        file,
        &KeyFile {
            format: KEY_FORMAT.into(),
            wraps: vec![Wrap {
                kek_id: kek.kek_id(),
                wrapped: hex::encode(wrapped),
            }],
        },
    )?;
    Ok(key)
}

/// What a catalogue file on disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// No file, or an empty one (SQLite creates it on first write).
    New,
    /// A plaintext SQLite database (a build before encryption, or a test's old layout).
    Plaintext,
    /// Anything else: an SQLCipher database (its first bytes are a random salt).
    Encrypted,
}

/// Look at the first 16 bytes of the catalogue.
pub fn file_kind(db: &Path) -> Result<FileKind, CatalogError> {
    let mut f = match File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileKind::New),
        Err(e) => return Err(io_err(db, e)),
    };
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(db, e)),
        }
    }
    Ok(match n {
        0 => FileKind::New,
        16 if &head == PLAINTEXT_MAGIC => FileKind::Plaintext,
        _ => FileKind::Encrypted,
    })
}

fn io_err(path: &Path, e: std::io::Error) -> CatalogError {
    CatalogError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// How to open this box's catalogue: its path and the unwrapped catalogue key, or why
/// there is none. Cheap to clone (the key is shared, never copied).
#[derive(Clone)]
pub struct CatalogAccess {
    path: PathBuf,
    key: Result<Arc<CatalogKey>, String>,
}

impl std::fmt::Debug for CatalogAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogAccess")
            .field("path", &self.path)
            .field(
                "key",
                &self.key.as_ref().map(|_| "..").map_err(|e| e.as_str()),
            )
            .finish()
    }
}

impl CatalogAccess {
    /// Whether the unwrapped key's page is `mlock`ed (false when locked out or refused).
    pub fn key_is_locked(&self) -> bool {
        self.key.as_ref().is_ok_and(|k| k.is_locked())
    }

    /// The catalogue at `db` under the key wrapped in `keys_dir`, unwrapped with `kek`.
    /// Never creates a key (the CLI and every tool).
    pub fn unlock(db: &Path, keys_dir: &Path, kek: &dyn KeyWrap) -> Result<Self, CatalogKeyError> {
        let file = key_file(keys_dir);
        let key = match read_key_file(&file)? {
            Some(kf) => unwrap_from(&file, &kf, kek)?,
            None => {
                return Err(match file_kind(db) {
                    Ok(FileKind::Encrypted) => CatalogKeyError::Missing {
                        file,
                        db: db.to_path_buf(),
                    },
                    _ => CatalogKeyError::Unwrap {
                        file,
                        reason: "no catalogue key yet: start the daemon once (it creates the \
                                 key and encrypts the catalogue)"
                            .into(),
                    },
                })
            }
        };
        Ok(Self::with_key(db, key))
    }

    /// [`unlock`](Self::unlock), or — at daemon start-up, under the data-directory lock —
    /// create the key when there is no key file and the catalogue is new or still
    /// plaintext. Never makes a key beside an encrypted catalogue. The flag says whether a
    /// key was created.
    pub fn unlock_or_create(
        db: &Path,
        keys_dir: &Path,
        kek: &dyn KeyWrap,
    ) -> Result<(Self, bool), CatalogKeyError> {
        let file = key_file(keys_dir);
        match read_key_file(&file)? {
            Some(kf) => Ok((Self::with_key(db, unwrap_from(&file, &kf, kek)?), false)),
            None => match file_kind(db) {
                Ok(FileKind::Encrypted) => Err(CatalogKeyError::Missing {
                    file,
                    db: db.to_path_buf(),
                }),
                Ok(FileKind::New | FileKind::Plaintext) => {
                    let key = create_key_file(&file, kek)?;
                    tracing::info!(kek = %kek.kek_id(), file = %file.display(), "created the catalogue key (wrapped by the KEK)");
                    Ok((Self::with_key(db, key), true))
                }
                Err(e) => Err(CatalogKeyError::BadFile {
                    file: db.to_path_buf(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// No key: every open fails with `reason` (the daemon while the KEK cannot be loaded).
    pub fn unavailable(db: &Path, reason: String) -> Self {
        CatalogAccess {
            path: db.to_path_buf(),
            key: Err(reason),
        }
    }

    fn with_key(db: &Path, key: CatalogKey) -> Self {
        CatalogAccess {
            path: db.to_path_buf(),
            key: Ok(Arc::new(key)),
        }
    }

    /// The catalogue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the key is there.
    pub fn is_unlocked(&self) -> bool {
        self.key.is_ok()
    }

    /// The key, or the reason there is none.
    pub fn key(&self) -> Result<&CatalogKey, CatalogError> {
        match &self.key {
            Ok(k) => Ok(k),
            Err(why) => Err(CatalogError::Locked(why.clone())),
        }
    }

    /// [`Catalog::open`]: read-write, creating and migrating.
    pub fn open(&self) -> Result<Catalog, CatalogError> {
        Catalog::open(&self.path, self.key()?)
    }

    /// [`Catalog::open_read_only`].
    pub fn open_read_only(&self) -> Result<Catalog, CatalogError> {
        Catalog::open_read_only(&self.path, self.key()?)
    }

    /// [`Catalog::open_existing`]: read-write, the file must exist.
    pub fn open_existing(&self) -> Result<Catalog, CatalogError> {
        Catalog::open_existing(&self.path, self.key()?)
    }

    /// A plain read-write rusqlite connection keyed with the catalogue key, without the
    /// catalogue's checks, settings and migrations: for repair tools and for tests that
    /// edit the file as someone holding the key would.
    pub fn raw_connection(&self) -> Result<Connection, CatalogError> {
        keyed_connection(&self.path, self.key()?, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// At daemon start-up, under the data-directory lock: finish an interrupted conversion
    /// and convert a plaintext catalogue (see [`encrypt_plaintext`]). Returns what was
    /// converted, for the audit log.
    pub fn encrypt_if_plaintext(&self) -> Result<Option<Converted>, CatalogError> {
        let key = self.key()?;
        remove_leftovers(&self.path)?;
        match file_kind(&self.path)? {
            FileKind::Plaintext => encrypt_plaintext(&self.path, key).map(Some),
            FileKind::New | FileKind::Encrypted => Ok(None),
        }
    }
}

/// Open `path` with `flags` and key it; checks that SQLCipher is linked and the key opens
/// the file (a wrong key is [`CatalogError::WrongKey`], never "file is not a database").
pub(crate) fn keyed_connection(
    path: &Path,
    key: &CatalogKey,
    flags: OpenFlags,
) -> Result<Connection, CatalogError> {
    // The file's header is looked at only when the key does not open it: opening and
    // closing a file descriptor of the database here would drop every POSIX lock this
    // process holds on it (fcntl locks are per process and inode), including those of the
    // daemon's open catalogue connection — another process closing its connection would
    // then believe it was the last, checkpoint, truncate the WAL and delete `-shm` under
    // the daemon's feet (seen: the daemon's writes stopped reaching the CLI).
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    key.apply(&conn)?;
    match check_keyed(&conn, path) {
        Ok(()) => Ok(conn),
        Err(CatalogError::WrongKey(_)) => {
            drop(conn);
            if file_kind(path)? == FileKind::Plaintext {
                Err(CatalogError::NotEncrypted(path.to_path_buf()))
            } else {
                Err(CatalogError::WrongKey(path.to_path_buf()))
            }
        }
        Err(e) => Err(e),
    }
}

/// SQLCipher is present (a plain SQLite ignores `PRAGMA key` and would write plaintext)
/// and the key opens the file.
fn check_keyed(conn: &Connection, path: &Path) -> Result<(), CatalogError> {
    let v: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .ok();
    if v.map_or(true, |v| v.is_empty()) {
        return Err(CatalogError::NoCipher);
    }
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            Err(CatalogError::WrongKey(path.to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`encrypt_plaintext`] converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Converted {
    /// Schema version of the converted file.
    pub schema_version: i64,
    /// Recordings in it.
    pub recordings: i64,
    /// Size of the plaintext file (bytes), before.
    pub plaintext_bytes: u64,
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The temporary encrypted copy of a conversion in progress.
fn encrypting_path(db: &Path) -> PathBuf {
    sibling(db, ".encrypting")
}

/// The old plaintext file, hard-linked here while the encrypted copy is renamed over it,
/// then overwritten and removed.
fn retired_path(db: &Path) -> PathBuf {
    sibling(db, ".plaintext")
}

/// Leftovers of a conversion a crash interrupted: the unfinished encrypted copy (the
/// plaintext file is still in place and is converted again) and a retired plaintext file
/// (the encrypted one is already in place).
fn remove_leftovers(db: &Path) -> Result<(), CatalogError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let p = sibling(&encrypting_path(db), suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                tracing::warn!(file = %p.display(), "removed an unfinished catalogue encryption")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    retire(db)
}

/// Remove `<db>.plaintext`: overwritten first when it is the old plaintext file, only
/// unlinked when it is still the same file as `db` (a crash between the hard link and the
/// rename: `db` is then the plaintext catalogue itself, converted again next, and
/// overwriting it would lose the catalogue).
fn retire(db: &Path) -> Result<(), CatalogError> {
    use std::os::unix::fs::MetadataExt;
    let retired = retired_path(db);
    let same = match (
        std::fs::symlink_metadata(db),
        std::fs::symlink_metadata(&retired),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        tracing::warn!(file = %retired.display(), "removed the link of an interrupted catalogue encryption");
        std::fs::remove_file(&retired).map_err(|e| io_err(&retired, e))?;
        return sync_dir(db);
    }
    shred(&retired)
}

/// Overwrite a file with zeros, make it durable, unlink it. A missing file is fine.
/// (On flash the FTL may keep old blocks: see docs/catalog-schema.md.)
fn shred(p: &Path) -> Result<(), CatalogError> {
    let mut f = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(p, e)),
    };
    let len = f.metadata().map_err(|e| io_err(p, e))?.len();
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    f.seek(SeekFrom::Start(0)).map_err(|e| io_err(p, e))?;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(|e| io_err(p, e))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| io_err(p, e))?;
    drop(f);
    std::fs::remove_file(p).map_err(|e| io_err(p, e))?;
    sync_dir(p)
}

fn sync_dir(p: &Path) -> Result<(), CatalogError> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, e))
}

/// Convert the plaintext catalogue at `db` to SQLCipher under `key`, once, crash-safe:
///
/// 1. fold the WAL into the plaintext file; `ATTACH '<db>.encrypting' KEY …` and
///    `sqlcipher_export` (every table, index and row; `user_version` copied by hand);
/// 2. check the copy opens with the key and has the same schema version and rows; fsync;
/// 3. hard-link the plaintext file to `<db>.plaintext`, rename the copy over `<db>`
///    (atomic), fsync the directory;
/// 4. overwrite `<db>.plaintext` and any `-wal`/`-shm` with zeros, fsync, unlink.
///
/// A crash before 3 leaves the plaintext file in place (the conversion runs again at the
/// next start); after 3, step 4 is finished at the next start ([`remove_leftovers`]).
/// The caller holds the data-directory lock: no other process has the file open.
pub fn encrypt_plaintext(db: &Path, key: &CatalogKey) -> Result<Converted, CatalogError> {
    let tmp = encrypting_path(db);
    let plaintext_bytes = std::fs::metadata(db).map_err(|e| io_err(db, e))?.len();
    let (schema_version, recordings) = {
        // CREATE: the attached copy inherits the flags and must be created.
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(super::BUSY_TIMEOUT)?;
        // Without PRAGMA key a SQLCipher connection reads and writes plaintext.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let recordings = count_recordings(&conn)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })?;
        // The key as the text "x'…'" (a raw key, as `PRAGMA key` takes it; a blob literal
        // would be taken as a passphrase), bound rather than spliced into the SQL.
        let literal = key.literal();
        conn.execute(
            "ATTACH DATABASE ?1 AS encrypted KEY ?2",
            [tmp.to_string_lossy().as_ref(), literal.as_str()],
        )?;
        drop(literal);
        conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
        conn.execute_batch(&format!("PRAGMA encrypted.user_version = {version}"))?;
        conn.execute_batch("DETACH DATABASE encrypted")?;
        // Closing the last connection of a WAL database checkpoints and removes -wal/-shm.
        conn.close().map_err(|(_, e)| CatalogError::Sqlite(e))?;
        (version, recordings)
    };
    {
        let conn = keyed_connection(&tmp, key, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let n = count_recordings(&conn)?;
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if v != schema_version || n != recordings || ok != "ok" {
            return Err(CatalogError::Invalid {
                field: "catalogue encryption",
                reason: format!(
                    "the encrypted copy differs (schema {v} vs {schema_version}, {n} vs \
                     {recordings} recordings, check {ok:?}); the plaintext catalogue is kept"
                ),
            });
        }
        conn.close().map_err(|(_, e)| CatalogError::Sqlite(e))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    let retired = retired_path(db);
    retire(db)?;
    std::fs::hard_link(db, &retired).map_err(|e| io_err(&retired, e))?;
    std::fs::rename(&tmp, db).map_err(|e| io_err(db, e))?;
    sync_dir(db)?;
    for p in [retired, sibling(db, "-wal"), sibling(db, "-shm")] {
        shred(&p)?;
    }
    Ok(Converted {
        schema_version,
        recordings,
        plaintext_bytes,
    })
}

fn count_recordings(conn: &Connection) -> Result<i64, CatalogError> {
    let has: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'recordings'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(0);
    }
    Ok(conn.query_row("SELECT count(*) FROM recordings", [], |r| r.get(0))?)
}

/// Rotation, before the switch: add a wrap of the catalogue key under `keys`' wrapping KEK
/// (the new one), unwrapping it with any KEK `keys` holds. Idempotent.
pub fn rewrap(keys_dir: &Path, keys: &dyn KeyWrap) -> Result<(), CatalogKeyError> {
    let file = key_file(keys_dir);
    let Some(mut kf) = read_key_file(&file)? else {
        // No catalogue key yet (a catalogue never opened by an encrypting daemon): the
        // daemon creates it under whatever KEK is active then.
        return Ok(());
    };
    let new = keys.kek_id();
    if kf.wraps.iter().any(|w| w.kek_id == new) {
        return Ok(());
    }
    let key = unwrap_from(&file, &kf, keys)?;
    let wrapped = keys
        .wrap(&key.data_key())
        .map_err(|source| CatalogKeyError::Write {
            file: file.clone(),
            source,
        })?;
    kf.wraps.insert(
        0,
        Wrap {
            kek_id: new,
            wrapped: hex::encode(wrapped),
        },
    );
    write_key_file(&file, &kf)
}

/// Rotation, after the switch: keep only the wrap under `kek_id` (if there is one).
pub fn retain_only(keys_dir: &Path, kek_id: &str) -> Result<(), CatalogKeyError> {
    let file = key_file(keys_dir);
    let Some(mut kf) = read_key_file(&file)? else {
        return Ok(());
    };
    if !kf.wraps.iter().any(|w| w.kek_id == kek_id) || kf.wraps.len() == 1 {
        return Ok(());
    }
    kf.wraps.retain(|w| w.kek_id == kek_id);
    write_key_file(&file, &kf)
}

/// The KEK ids the catalogue key is wrapped under (for `keys status`).
pub fn wrapped_under(keys_dir: &Path) -> Result<Option<Vec<String>>, CatalogKeyError> {
    Ok(read_key_file(&key_file(keys_dir))?
        .map(|kf| kf.wraps.into_iter().map(|w| w.kek_id).collect()))
}
