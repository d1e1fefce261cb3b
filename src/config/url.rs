//! Parsing of provider URLs into the parts the upstream client needs (scheme, host, port, request target, basic
//! credentials). Only `http`, `https`, `ws` and `wss` are accepted.

use std::fmt;

/// A parsed provider URL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProviderUrl {
    pub tls: bool,
    pub websocket: bool,
    /// Host name or IP literal without brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub target: String,
    /// `user:password` from the URL, if any (sent as HTTP basic auth).
    pub userinfo: Option<String>,
}

impl fmt::Debug for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the target or userinfo: they commonly carry API keys.
        f.debug_struct("ProviderUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl ProviderUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must start with http://, https://, ws:// or wss://")?;
        let (tls, websocket, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, false, 80),
            "https" => (true, false, 443),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            other => return Err(format!("unsupported scheme '{other}'")),
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let target = target.split('#').next().unwrap_or("/").to_string();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or("unterminated IPv6 literal")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("invalid port '{p}'"))?,
                None if after.is_empty() => default_port,
                None => return Err("garbage after IPv6 literal".into()),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("invalid port '{p}'"))?,
                ),
                None => (hostport.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        if host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err("invalid host".into());
        }
        Ok(ProviderUrl {
            tls,
            websocket,
            host,
            port,
            target,
            userinfo,
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_table() {
        let rows: &[(&str, bool, &str, u16, &str)] = &[
            ("http://127.0.0.1:8545", false, "127.0.0.1", 8545, "/"),
            (
                "https://eth.example.com/v2/KEY?x=1",
                true,
                "eth.example.com",
                443,
                "/v2/KEY?x=1",
            ),
            ("http://[::1]:9000/rpc", false, "::1", 9000, "/rpc"),
            ("wss://ws.example.com", true, "ws.example.com", 443, "/"),
            ("http://h?k=v", false, "h", 80, "/?k=v"),
        ];
        for (url, tls, host, port, target) in rows {
            let u = ProviderUrl::parse(url).unwrap();
            assert_eq!(
                (u.tls, u.host.as_str(), u.port, u.target.as_str()),
                (*tls, *host, *port, *target),
                "{url}"
            );
        }
        let u = ProviderUrl::parse("https://user:pw@h.example/").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("user:pw"));
        for bad in [
            "ftp://x",
            "localhost:8545",
            "http://",
            "http://h:notaport/",
            "http://[::1",
        ] {
            assert!(ProviderUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
