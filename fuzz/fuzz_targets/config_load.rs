//! Config loading from YAML text: never panics, with `${VAR}` resolving to a fixed value; loading valid text twice
//! gives the same outcome (no hidden state).
#![no_main]

use std::path::Path;

use lasso::config::load::load_str;
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    (name == "FUZZ_KEY").then(|| "secret".to_string())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that does not exist: profile files named by the text are never found on disk.
    let file = Path::new("/nonexistent-lasso-fuzz/lasso.yml");
    let first = load_str(text, file, &env).is_ok();
    let second = load_str(text, file, &env).is_ok();
    assert_eq!(first, second);
});
