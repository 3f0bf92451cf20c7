//! Finding recording files (`*.brec`) under a recordings directory, confining catalogue
//! paths to the data directory, and creating output files that cannot be redirected.

use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

/// Why a path from the catalogue was refused by [`confined`].
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Absolute, `..`, `.` or otherwise not a plain relative path.
    #[error("catalogue path {0:?} is not a plain relative path under the data directory")]
    NotRelative(String),
    /// A component is a symbolic link.
    #[error("catalogue path {0:?} passes through a symbolic link ({1})")]
    Symlink(String, PathBuf),
    /// The file system refused a check.
    #[error("checking catalogue path {0:?}: {1}")]
    Io(String, std::io::Error),
}

impl From<PathError> for std::io::Error {
    fn from(e: PathError) -> Self {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string())
    }
}

/// `data_dir/rel` for a path read from the catalogue, refused unless `rel` is a plain
/// relative path (only normal components: no `..`, no root, no `.`) and no component
/// below `data_dir` is a symbolic link (components that do not exist yet are fine). A
/// forged catalogue row therefore cannot make the shredder, verifier or uploader touch
/// a file outside the data directory.
pub fn confined(data_dir: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let p = Path::new(rel);
    if rel.is_empty()
        || rel.contains('\0')
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(PathError::NotRelative(rel.to_string()));
    }
    let mut cur = data_dir.to_path_buf();
    for c in p.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PathError::Symlink(rel.to_string(), cur))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(PathError::Io(rel.to_string(), e)),
        }
    }
    Ok(data_dir.join(p))
}

/// Create a new file for plaintext output (exports, evidence): `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, mode 0600. Fails if anything (a file, a planted symbolic link, dangling
/// or not) is already at `path`, so nothing is ever written through a link.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Publish a finished temporary file under its final name without replacing anything:
/// `link(tmp, out)` (fails if `out` exists, symbolic links included), then unlink `tmp`.
pub fn publish_no_replace(tmp: &Path, out: &Path) -> std::io::Result<()> {
    std::fs::hard_link(tmp, out)?;
    std::fs::remove_file(tmp)
}

/// Why a new output file could not be made or published (what the body writing it
/// fails with is the caller's error).
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    /// The output is already there.
    #[error("{0} exists: export never replaces a file")]
    Exists(PathBuf),
    /// The temporary file could not be created.
    #[error("creating {0} (refused if anything, a symbolic link included, is already there): {1}")]
    Create(PathBuf, std::io::Error),
    /// The finished file could not be linked into place.
    #[error("publishing {0}: {1}")]
    Publish(PathBuf, std::io::Error),
}

/// Write a new plaintext output file `out` (exports): refused if `out` exists; `body`
/// writes (and syncs) the new 0600 file `<out>.partial` ([`create_private`]), given its
/// path for messages; then it is linked into place without replacing anything
/// ([`publish_no_replace`]). On any failure the partial file is removed.
pub fn write_new_private<T, E: From<OutputFileError>>(
    out: &Path,
    body: impl FnOnce(&Path, std::fs::File) -> Result<T, E>,
) -> Result<T, E> {
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(OutputFileError::Exists(out.to_path_buf()).into());
    }
    let f = create_private(&tmp).map_err(|e| OutputFileError::Create(tmp.clone(), e))?;
    let res = body(&tmp, f).and_then(|t| {
        publish_no_replace(&tmp, out)
            .map(|()| t)
            .map_err(|e| OutputFileError::Publish(out.to_path_buf(), e).into())
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// How deep below the recordings directory files are looked for.
const MAX_DEPTH: u32 = 6;

/// Call `f` with every `.brec` file under `dir` (recursively, bounded depth, in directory
/// order) until it breaks. Symbolic links are not followed.
fn walk(dir: &Path, f: &mut dyn FnMut(PathBuf) -> ControlFlow<()>) -> ControlFlow<()> {
    fn go(d: &Path, depth: u32, f: &mut dyn FnMut(PathBuf) -> ControlFlow<()>) -> ControlFlow<()> {
        let Ok(rd) = std::fs::read_dir(d) else {
            return ControlFlow::Continue(());
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < MAX_DEPTH {
                go(&p, depth + 1, f)?;
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "brec") {
                f(p)?;
            }
        }
        ControlFlow::Continue(())
    }
    go(dir, 0, f)
}

/// Every `.brec` file under `dir` (recursively, bounded depth), sorted.
pub fn recording_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let _ = walk(dir, &mut |p| {
        out.push(p);
        ControlFlow::Continue(())
    });
    out.sort();
    out
}

/// Whether `dir` holds any recording file (stops at the first).
pub fn has_recordings(dir: &Path) -> bool {
    walk(dir, &mut |_| ControlFlow::Break(())).is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_refuses_escapes_and_links() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(data.join("recordings/2024")).unwrap();
        assert_eq!(
            confined(&data, "recordings/2024/a.brec").unwrap(),
            data.join("recordings/2024/a.brec")
        );
        for bad in ["../victim", "/etc/passwd", "recordings/../../x", "./a", ""] {
            assert!(
                matches!(confined(&data, bad), Err(PathError::NotRelative(_))),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink(d.path(), data.join("recordings/link")).unwrap();
        assert!(matches!(
            confined(&data, "recordings/link/a.brec"),
            Err(PathError::Symlink(..))
        ));
    }

    #[test]
    fn create_private_never_follows() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("out.partial");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_private(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let p = d.path().join("new");
        create_private(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(publish_no_replace(&p, &victim).is_err(), "no replace");
    }

    #[test]
    fn finds_nested_files_sorted() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_recordings(d.path()));
        std::fs::create_dir_all(d.path().join("2024/05")).unwrap();
        std::fs::write(d.path().join("2024/05/b.brec"), b"x").unwrap();
        std::fs::write(d.path().join("a.brec"), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        assert!(has_recordings(d.path()));
        assert_eq!(
            recording_files(d.path()),
            vec![d.path().join("2024/05/b.brec"), d.path().join("a.brec")]
        );
    }
}
