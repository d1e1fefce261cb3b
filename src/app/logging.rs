//! Structured logging with `tracing`: human-readable lines by default, JSON lines with `LOG_FORMAT=json`, level from
//! `RUST_LOG` (default `info`). Colours only on a terminal, so captured logs stay parseable.
//!
//! Text lines escape every control character of every field and message (`\n`, `\r`, ESC, C1 controls, Unicode line
//! separators), so client-controlled text (a method name, a path, an error quoting either) can neither forge a log
//! line nor drive a terminal. JSON lines are escaped by JSON itself.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::env::json_logs(&crate::config::env::process);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_thread_names(true);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        let fields = tracing_subscriber::fmt::format::debug_fn(
            |w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
                let text = format!("{value:?}");
                if field.name() == "message" {
                    write!(w, "{}", Escaped(&text))
                } else {
                    write!(w, "{}={}", field.name(), Escaped(&text))
                }
            },
        )
        .delimited(" ");
        builder
            .fmt_fields(fields)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
}

/// Text with its control characters written as escapes, on one line.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_stay_on_one_line() {
        let forged = "eth_x\n2026-01-01T00:00:00Z  INFO lasso: \x1b[31mfake\r\u{85}\u{2028}";
        let out = Escaped(forged).to_string();
        assert!(!out.chars().any(|c| c.is_control()), "{out}");
        assert_eq!(
            out,
            "eth_x\\n2026-01-01T00:00:00Z  INFO lasso: \\u{1b}[31mfake\\r\\u{85}\\u{2028}"
        );
    }
}
