//! The layout holds: no file of `src/` imports, directly or through others, a file that imports it back, and
//! `lib.rs` exposes the planes, not a flat list of modules.
//!
//! Every `crate::a::b::...` path (also inside `use crate::a::{b, c::d}` groups), every `super::...` path and every
//! `use child::...` in a folder's `mod.rs` is resolved to the file of its longest module prefix; test modules
//! (`#[cfg(test)]` to the end of the file) and comments are not read. A cycle fails the test with its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The planes `lib.rs` declares, lowest first.
const PLANES: [&str; 15] = [
    "error",
    "evm",
    "wire",
    "config",
    "access",
    "telemetry",
    "upstream",
    "routing",
    "cache",
    "shard",
    "rpc",
    "subscriptions",
    "ops",
    "edge",
    "app",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/a/b.rs` -> `[a, b]`, `src/a/mod.rs` -> `[a]`, `src/lib.rs` -> `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(cut) => &text[..cut],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads `a::b::c` from `s` (idents joined by `::`); returns the parts and the rest of `s`.
fn read_path(s: &str) -> (Vec<String>, &str) {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        parts.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with(|c: char| is_ident(c)) => rest = r,
            _ => break,
        }
    }
    (parts, rest)
}

/// Every path that follows `prefix` in `code` (with `{a, b::c}` groups expanded one level).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find(prefix) {
        let start = at + i;
        at = start + prefix.len();
        if start > 0 && code[..start].ends_with(is_ident) {
            continue;
        }
        let (base, rest) = read_path(&code[at..]);
        if let Some(group) = rest
            .strip_prefix("::{")
            .or_else(|| base.is_empty().then(|| rest.strip_prefix('{')).flatten())
        {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let (tail, _) = read_path(item.trim());
                let mut full = base.clone();
                full.extend(tail.into_iter().filter(|t| t != "self"));
                out.push(full);
            }
        } else {
            out.push(base);
        }
    }
    out
}

#[test]
fn no_file_of_src_is_in_an_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let by_module: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "main.rs"))
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let resolve = |path: &[String]| -> Option<PathBuf> {
        (1..=path.len())
            .rev()
            .find_map(|k| by_module.get(&path[..k]).cloned())
    };
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, file) in &by_module {
        if module.is_empty() {
            continue; // lib.rs declares the planes
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut targets = Vec::new();
        for p in paths_after(&code, "crate::") {
            targets.push(p);
        }
        let parent = &module[..module.len() - 1];
        let is_mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
        for p in paths_after(&code, "super::") {
            // `super` of a folder's mod.rs is the folder above; of a.rs, the folder it sits in.
            let base = if is_mod_rs {
                &module[..module.len().saturating_sub(1)]
            } else {
                parent
            };
            targets.push(base.iter().cloned().chain(p).collect());
        }
        if is_mod_rs {
            for p in paths_after(&code, "use ")
                .into_iter()
                .chain(paths_after(&code, "pub use "))
            {
                if p.first()
                    .is_some_and(|c| c != "crate" && c != "super" && c != "std")
                {
                    targets.push(module.iter().cloned().chain(p).collect());
                }
            }
        }
        for t in targets {
            if let Some(to) = resolve(&t).filter(|to| to != file && !module_of(&src, to).is_empty())
            {
                edges.entry(file.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        f: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        stack: &mut Vec<PathBuf>,
        cycles: &mut Vec<Vec<PathBuf>>,
    ) {
        marks.insert(f.clone(), Mark::Open);
        stack.push(f.clone());
        for to in edges.get(f).into_iter().flatten() {
            match marks.get(to) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|s| s == to).unwrap();
                    cycles.push(stack[from..].to_vec());
                }
                Some(Mark::Done) => {}
                None => visit(to, edges, marks, stack, cycles),
            }
        }
        stack.pop();
        marks.insert(f.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for f in edges.keys() {
        if !marks.contains_key(f) {
            visit(f, &edges, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| {
            c.iter()
                .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    assert!(
        shown.is_empty(),
        "import cycles between files of src/:\n{}",
        shown.join("\n")
    );
    assert!(
        edges.len() > 20,
        "the import reader found almost no imports; it is broken"
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // The reader itself: a group import and a super path are read as imports.
    let code = "use crate::a::{b, c::D};\nuse super::e::F;\n";
    assert_eq!(
        paths_after(code, "crate::"),
        vec![vec!["a", "b"], vec!["a", "c", "D"]]
    );
    assert_eq!(paths_after(code, "super::"), vec![vec!["e", "F"]]);
}

#[test]
fn lib_rs_exposes_the_planes() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("pub(crate) mod "))
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert_eq!(
        declared, PLANES,
        "lib.rs declares exactly the planes, lowest first"
    );
}
