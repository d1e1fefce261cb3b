//! The WebSocket opening handshake (RFC 6455 section 4): validating a client's upgrade request and answering 101,
//! and building and checking the proxy's own upgrade requests to providers.

use base64::Engine;
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// What a valid upgrade request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub key: String,
}

/// Validates the headers of a client's upgrade request (`Connection: upgrade`, `Upgrade: websocket`, version 13,
/// a 16-byte base64 key). Errors are the reason to send back with 400.
pub fn validate_request(head: &[u8]) -> Result<Upgrade, String> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head)
        .map_err(|e| format!("malformed request: {e}"))?;
    if req.method != Some("GET") {
        return Err("WebSocket upgrades use GET".into());
    }
    let get = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") {
        return Err("missing `Upgrade: websocket`".into());
    }
    if !has_token("connection", "upgrade") {
        return Err("missing `Connection: Upgrade`".into());
    }
    if get("sec-websocket-version") != Some("13") {
        return Err("unsupported Sec-WebSocket-Version (13 is required)".into());
    }
    let key = get("sec-websocket-key").ok_or("missing Sec-WebSocket-Key")?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(Upgrade {
            key: key.to_string(),
        }),
        _ => Err("invalid Sec-WebSocket-Key".into()),
    }
}

/// The 101 response accepting `upgrade`.
pub fn accept_response(upgrade: &Upgrade) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&upgrade.key)
    )
    .into_bytes()
}

/// A fresh random client key (16 bytes, base64).
pub fn client_key(seed: u64) -> String {
    let mut bytes = [0u8; 16];
    let mut x = seed | 1;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The upgrade request the proxy sends to a provider.
pub fn client_request(
    host_header: &str,
    target: &str,
    key: &str,
    extra_headers: &[(String, String)],
) -> Vec<u8> {
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: lasso/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in extra_headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Checks a provider's answer to our upgrade: `Ok(Some(head_len))` when complete and valid, `Ok(None)` for more bytes.
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed upgrade response: {e}")),
    };
    if resp.code != Some(101) {
        return Err(format!(
            "provider refused the upgrade with HTTP {}",
            resp.code.unwrap_or(0)
        ));
    }
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim);
    if accept != Some(accept_key(key).as_str()) {
        return Err("provider sent a wrong Sec-WebSocket-Accept".into());
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn validates_upgrade_requests_table() {
        let ok = "GET /ws/rpc/eth HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(validate_request(ok.as_bytes()).is_ok());
        for (bad, why) in [
            (ok.replace("GET", "POST"), "GET"),
            (ok.replace("Upgrade: websocket\r\n", ""), "Upgrade"),
            (
                ok.replace("keep-alive, Upgrade", "keep-alive"),
                "Connection",
            ),
            (ok.replace("Version: 13", "Version: 8"), "Version"),
            (ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "Key"),
        ] {
            let err = validate_request(bad.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn client_side_checks_the_accept_key() {
        let key = client_key(7);
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        assert_eq!(
            check_response(good.as_bytes(), &key).unwrap(),
            Some(good.len())
        );
        assert!(check_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", &key).is_err());
        assert!(check_response(good.replace(&accept_key(&key), "AAAA").as_bytes(), &key).is_err());
    }
}
