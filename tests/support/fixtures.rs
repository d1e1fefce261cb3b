//! The ethereum/execution-apis `.io` conformance fixtures.

use std::fs;
use std::path::{Path, PathBuf};

/// One `.io` file: `// comment` lines, then `>> request` / `<< response` pairs.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Path relative to the fixtures' `tests` directory, e.g. `eth_chainId/get-chain-id.io`.
    pub name: String,
    pub comments: Vec<String>,
    /// (request text, response text) exactly as written in the file.
    pub pairs: Vec<(String, String)>,
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/execution-apis/tests")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "io") {
            out.push(p);
        }
    }
}

pub fn parse_fixture(name: &str, text: &str) -> Fixture {
    let mut comments = Vec::new();
    let mut pairs = Vec::new();
    let mut pending: Option<String> = None;
    for (no, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if let Some(c) = line.strip_prefix("//") {
            comments.push(c.trim().to_string());
        } else if let Some(req) = line.strip_prefix(">>") {
            assert!(
                pending.is_none(),
                "{name}:{}: two requests without a response",
                no + 1
            );
            pending = Some(req.trim().to_string());
        } else if let Some(resp) = line.strip_prefix("<<") {
            let req = pending
                .take()
                .unwrap_or_else(|| panic!("{name}:{}: response without a request", no + 1));
            pairs.push((req, resp.trim().to_string()));
        } else if !line.trim().is_empty() {
            panic!("{name}:{}: unexpected line {line:?}", no + 1);
        }
    }
    assert!(pending.is_none(), "{name}: request without a response");
    Fixture {
        name: name.to_string(),
        comments,
        pairs,
    }
}

/// All fixtures, sorted by name.
pub fn load_fixtures() -> Vec<Fixture> {
    let root = fixtures_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .iter()
        .map(|p| {
            let name = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
            let text =
                fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            parse_fixture(&name, &text)
        })
        .collect()
}
