//! Finding recording files (`*.brec`) under a recordings directory.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

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
