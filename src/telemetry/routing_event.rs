//! One routing decision as the event stream shows it ([`RoutingEvent`]) and its JSON, written by hand on the request
//! path exactly as `serde` would write it (the unit test compares both), with client text bounded
//! ([`MAX_CLIENT_TEXT`]).

use serde::Serialize;

/// One routing decision as subscribers see it. Client-supplied text (the method) is cut to
/// [`MAX_CLIENT_TEXT`] characters by [`RoutingEvent::client_text`].
#[derive(Serialize)]
pub struct RoutingEvent<'a> {
    pub ts_ms: u64,
    pub profile: &'a str,
    /// The id of the API key used (`null` without a key): keys are per tenant, so a profile's stream only ever
    /// shows the keys used on that profile.
    pub key_id: Option<&'a str>,
    pub chain: &'a str,
    pub method: &'a str,
    pub provider: Option<&'a str>,
    pub strategy: &'a str,
    pub latency_us: u64,
    pub upstream_us: u64,
    pub retries: u32,
    pub hedged: bool,
    pub ok: bool,
    pub status: u16,
    pub source_node: &'a str,
    pub source_region: Option<&'a str>,
    pub worker: usize,
}

/// Characters of client-supplied text (a method name) kept in an event.
pub const MAX_CLIENT_TEXT: usize = 128;

impl RoutingEvent<'_> {
    /// Appends this event as JSON (what `serde` would write, field for field, without its machinery: this runs on
    /// the request path).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"ts_ms\":");
        push_u64(out, self.ts_ms);
        out.push_str(",\"profile\":");
        push_str(out, self.profile);
        out.push_str(",\"key_id\":");
        push_opt_str(out, self.key_id);
        out.push_str(",\"chain\":");
        push_str(out, self.chain);
        out.push_str(",\"method\":");
        push_str(out, self.method);
        out.push_str(",\"provider\":");
        push_opt_str(out, self.provider);
        out.push_str(",\"strategy\":");
        push_str(out, self.strategy);
        out.push_str(",\"latency_us\":");
        push_u64(out, self.latency_us);
        out.push_str(",\"upstream_us\":");
        push_u64(out, self.upstream_us);
        out.push_str(",\"retries\":");
        push_u64(out, u64::from(self.retries));
        out.push_str(if self.hedged {
            ",\"hedged\":true"
        } else {
            ",\"hedged\":false"
        });
        out.push_str(if self.ok {
            ",\"ok\":true"
        } else {
            ",\"ok\":false"
        });
        out.push_str(",\"status\":");
        push_u64(out, u64::from(self.status));
        out.push_str(",\"source_node\":");
        push_str(out, self.source_node);
        out.push_str(",\"source_region\":");
        push_opt_str(out, self.source_region);
        out.push_str(",\"worker\":");
        push_u64(out, self.worker as u64);
        out.push('}');
    }

    /// `text` cut to [`MAX_CLIENT_TEXT`] characters (on a character boundary).
    pub fn client_text(text: &str) -> &str {
        match text.char_indices().nth(MAX_CLIENT_TEXT) {
            Some((cut, _)) => &text[..cut],
            None => text,
        }
    }
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

/// A JSON string: quotes, backslashes and control characters escaped as `serde_json` does.
fn push_str(out: &mut String, text: &str) {
    out.push('"');
    if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

fn push_opt_str(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => push_str(out, text),
        None => out.push_str("null"),
    }
}

/// A plain successful event of `profile` and `method` (tests change the fields they need).
#[cfg(test)]
pub(crate) fn sample<'a>(profile: &'a str, method: &'a str) -> RoutingEvent<'a> {
    RoutingEvent {
        ts_ms: 1,
        profile,
        key_id: None,
        chain: "c",
        method,
        provider: Some("p"),
        strategy: "fastest",
        latency_us: 1,
        upstream_us: 1,
        retries: 0,
        hedged: false,
        ok: true,
        status: 200,
        source_node: "n",
        source_region: None,
        worker: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(profile: &'a str, method: &'a str) -> RoutingEvent<'a> {
        sample(profile, method)
    }

    #[test]
    fn events_are_written_as_serde_writes_them() {
        let mut e = event("pro\"file", "eth_\\call\n\u{1}\u{7f}é\t\r\u{8}\u{c}\u{1f}");
        e.key_id = Some("k");
        e.provider = None;
        e.source_region = Some("iad");
        e.ts_ms = u64::MAX;
        e.latency_us = 0;
        e.upstream_us = 1234567890;
        e.retries = 3;
        e.hedged = true;
        e.ok = false;
        e.status = 502;
        e.worker = 17;
        for e in [e, event("p", "")] {
            let mut ours = String::new();
            e.write_json(&mut ours);
            assert_eq!(ours, sonic_rs::to_string(&e).unwrap());
            assert_eq!(ours, serde_json::to_string(&e).unwrap());
        }
    }
}
