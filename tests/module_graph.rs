//! Layers, kept by a test: no import cycle between the top-level modules of either crate,
//! and no `cli::` path outside `src/cli/` (the CLI parses and renders; the daemon and the
//! CLI share the service layer, and nothing imports the CLI).
//!
//! A module's dependencies are the `crate::<module>` paths in its non-test code (comments
//! and everything from a line `#[cfg(test)]` on are skipped; files named `tests.rs` or
//! `*_tests.rs` are test code). `super::` paths stay inside a module by construction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Non-test, non-comment source lines of every `.rs` file under `dir`, with the file's
/// top-level module name (`sip` for `sip/parse.rs`, `config` for `config.rs`); the crate
/// roots (`lib.rs`, `main.rs`) and `bin/` are skipped.
fn sources(dir: &Path) -> Vec<(String, PathBuf, Vec<(usize, String)>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading source dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let name = rel.file_name().unwrap().to_string_lossy().to_string();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .to_string();
            if !name.ends_with(".rs")
                || name == "tests.rs"
                || name.ends_with("_tests.rs")
                || rel == Path::new("lib.rs")
                || rel == Path::new("main.rs")
                || first == "bin"
            {
                continue;
            }
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&p).expect("reading source");
            let mut lines = vec![];
            for (i, l) in text.lines().enumerate() {
                let t = l.trim_start();
                if t.starts_with("#[cfg(test)]") {
                    break;
                }
                if t.starts_with("//") {
                    continue;
                }
                lines.push((i + 1, l.to_string()));
            }
            out.push((module, p, lines));
        }
    }
    out
}

/// `crate::<name>` references in a line.
fn crate_refs(line: &str) -> Vec<String> {
    refs_after(line, "crate::")
}

/// The first path segment after every `prefix` (`crate::`, `super::`) in `text`,
/// including each top-level item of a `prefix{…}` group.
fn refs_after(text: &str, prefix: &str) -> Vec<String> {
    let mut v = vec![];
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b::{X, Y}}` groups (possibly over several lines: callers pass a
        // whole file): the first name of every top-level item of the group.
        if name.is_empty() && after.starts_with('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            let mut cur = String::new();
            for c in after.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        if !cur.is_empty() {
                            v.push(std::mem::take(&mut cur));
                        }
                        item_start = true;
                    }
                    c if item_start && depth == 1 && (c.is_ascii_alphanumeric() || c == '_') => {
                        cur.push(c)
                    }
                    _ if item_start && !cur.is_empty() => {
                        v.push(std::mem::take(&mut cur));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !cur.is_empty() {
                v.push(cur);
            }
        } else if !name.is_empty() {
            v.push(name);
        }
        rest = &rest[i + prefix.len()..];
    }
    v
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph(dir: &Path) -> Graph {
    let mut g: Graph = BTreeMap::new();
    for (module, _, lines) in sources(dir) {
        let deps = g.entry(module.clone()).or_default();
        let code: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        {
            for r in crate_refs(&code) {
                if r != module {
                    deps.insert(r);
                }
            }
        }
    }
    // Only edges between modules of this crate (re-exported names resolve elsewhere).
    let names: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| names.contains(d));
    }
    g
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g[v].iter() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = vec![];
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        next: 0,
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn edges_within(g: &Graph, comp: &[String]) -> String {
    let mut s = String::new();
    for a in comp {
        for b in &g[a] {
            if comp.contains(b) {
                s.push_str(&format!("  {a} -> {b}\n"));
            }
        }
    }
    s
}

/// The file-level graph between sibling modules (`sip/message.rs` → `sip/parse.rs`), from
/// `super::<sibling>` and `crate::<top>::<sibling>` paths; `mod.rs` files (which declare and
/// re-export their children) are not nodes.
fn sibling_graph(dir: &Path) -> Graph {
    let mut g: Graph = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = vec![];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading source dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for p in files {
        let rel = p.strip_prefix(dir).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy().to_string();
        let parts: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if !name.ends_with(".rs")
            || name == "mod.rs"
            || name.contains("tests")
            || parts.len() < 2
            || parts[0] == "bin"
        {
            continue;
        }
        let parent = parts[..parts.len() - 1].join("/");
        let me = parts.join("/");
        let text = std::fs::read_to_string(&p).expect("reading source");
        let mut deps = BTreeSet::new();
        let mut code = String::new();
        for l in text.lines() {
            let t = l.trim_start();
            if t.starts_with("#[cfg(test)]") {
                break;
            }
            if !t.starts_with("//") {
                code.push_str(t);
                code.push('\n');
            }
        }
        for n in refs_after(&code, "super::") {
            deps.insert(format!("{parent}/{n}"));
        }
        let tops: BTreeSet<String> = refs_after(&code, "crate::").into_iter().collect();
        for top in tops {
            for n in refs_after(&code, &format!("crate::{top}::")) {
                deps.insert(format!("{top}/{n}"));
            }
        }
        deps.remove(&me);
        g.insert(me, deps);
    }
    let names: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| names.contains(d));
    }
    g
}

#[test]
fn the_cycle_check_can_fail() {
    let mut g: Graph = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
    assert_eq!(
        crate_refs("use crate::{sip::X, media}; let y = crate::vault::K;"),
        ["sip", "media", "vault"]
    );
    // A group over several lines, with a nested group (as rustfmt writes them).
    assert_eq!(
        crate_refs("use crate::{\n    catalog::{A, B},\n    vault,\n};\nuse crate::{a, b};"),
        ["catalog", "vault", "a", "b"]
    );
    // Two sibling files importing each other (one through `super::`, one through
    // `crate::`) are a cycle; a test module below `#[cfg(test)]` is not an edge.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("m")).unwrap();
    std::fs::write(d.path().join("m/mod.rs"), "pub mod x; pub mod y;\n").unwrap();
    std::fs::write(d.path().join("m/x.rs"), "use super::y::Y;\n").unwrap();
    std::fs::write(d.path().join("m/y.rs"), "use crate::m::{\n    x::X,\n};\n").unwrap();
    std::fs::write(d.path().join("m/z.rs"), "#[cfg(test)]\nuse super::x;\n").unwrap();
    let sg = sibling_graph(d.path());
    assert_eq!(cycles(&sg), vec![vec!["m/x".to_string(), "m/y".into()]]);
    assert!(sg["m/z"].is_empty());
}

#[test]
fn no_import_cycle_between_modules() {
    for dir in ["src", "crates/branchrec-core/src"] {
        let g = graph(&root().join(dir));
        assert!(g.len() > 5, "{dir}: found only {:?}", g.keys());
        let c = cycles(&g);
        assert!(
            c.is_empty(),
            "import cycles between the modules of {dir}:\n{}",
            c.iter()
                .map(|comp| edges_within(&g, comp))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn no_import_cycle_between_sibling_files() {
    for dir in ["src", "crates/branchrec-core/src"] {
        let g = sibling_graph(&root().join(dir));
        assert!(
            g.contains_key("sip/parse") || g.contains_key("app/sink"),
            "{dir}: {:?}",
            g.keys()
        );
        let c = cycles(&g);
        assert!(
            c.is_empty(),
            "import cycles between files of {dir}:\n{}",
            c.iter()
                .map(|comp| edges_within(&g, comp))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn nothing_outside_the_cli_imports_it() {
    let mut bad = vec![];
    for (module, path, lines) in sources(&root().join("src")) {
        if module == "cli" {
            continue;
        }
        let before = bad.len();
        for (n, l) in &lines {
            if crate_refs(l).iter().any(|r| r == "cli") || l.contains("branchrec::cli") {
                bad.push(format!("  {}:{n}: {}", path.display(), l.trim()));
            }
        }
        // A `use crate::{…, cli::…}` group over several lines names `cli` on a line of
        // its own, without `crate::`.
        let code: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        if bad.len() == before && crate_refs(&code).iter().any(|r| r == "cli") {
            bad.push(format!(
                "  {}: a `crate::{{…}}` group imports cli",
                path.display()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "`cli::` used outside src/cli/:\n{}",
        bad.join("\n")
    );
}
