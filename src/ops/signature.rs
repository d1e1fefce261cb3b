//! Signed inter-node requests. A node calling a peer sends
//! `Authorization: Lasso-HMAC t=<unix seconds>,n=<nonce>,s=<hex HMAC-SHA256>`, the HMAC keyed with
//! `LASSO_CLUSTER_SECRET` over `METHOD \n PATH \n t \n n`. The receiver accepts it when the signature matches
//! (compared in constant time), `t` is within `CLUSTER_SIGNATURE_VALIDITY_SECS` of its own clock, and it has not
//! seen the same signature before (remembered for the validity window, `CLUSTER_SEEN_SIGNATURES` at most): a
//! request seen on the wire can neither be replayed later nor sent twice, and the secret itself never travels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::defaults::{CLUSTER_SEEN_SIGNATURES, CLUSTER_SIGNATURE_VALIDITY_SECS};

/// The `Authorization` scheme of signed inter-node requests.
pub const SCHEME: &str = "Lasso-HMAC";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], method: &str, path: &str, unix_secs: u64, nonce: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(nonce.as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Seconds since the Unix epoch on this node's clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 16 random bytes from the kernel, hex (a nonce, or a key that lives as long as the process).
pub fn random_hex() -> String {
    nonce()
}

/// A fresh random nonce (16 bytes, hex).
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is valid for its length; getrandom writes at most that many bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No kernel randomness: the time in nanoseconds still never repeats on this node.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = t.to_le_bytes();
    }
    hex(&bytes)
}

/// The header value signing `method path` at `unix_secs` with `nonce`.
pub fn sign(secret: &[u8], method: &str, path: &str, unix_secs: u64, nonce: &str) -> String {
    let sig = mac(secret, method, path, unix_secs, nonce)
        .finalize()
        .into_bytes();
    format!("{SCHEME} t={unix_secs},n={nonce},s={}", hex(&sig))
}

/// The header value for a request sent now.
pub fn authorization(secret: &[u8], method: &str, path: &str) -> String {
    sign(secret, method, path, now_unix(), &nonce())
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `Lasso-HMAC` header, or one that does not parse.
    Missing,
    /// The signature does not match this node's secret.
    BadSignature,
    /// The timestamp is outside the validity window.
    Expired,
    /// The same signed request was seen before.
    Replayed,
}

impl Refused {
    pub fn describe(self) -> &'static str {
        match self {
            Refused::Missing => "missing or malformed Lasso-HMAC signature",
            Refused::BadSignature => "wrong signature",
            Refused::Expired => "signature outside its validity window",
            Refused::Replayed => "signature already used",
        }
    }
}

fn seen() -> &'static Mutex<HashMap<Vec<u8>, u64>> {
    static SEEN: OnceLock<Mutex<HashMap<Vec<u8>, u64>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Checks the `Authorization` value of a `method path` request against `secret` at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    method: &str,
    path: &str,
    authorization: Option<&str>,
    now: u64,
) -> Result<(), Refused> {
    let fields = authorization
        .map(str::trim)
        .and_then(|v| v.strip_prefix(SCHEME))
        .and_then(|v| v.strip_prefix(' '))
        .ok_or(Refused::Missing)?;
    let (mut t, mut n, mut s) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("n", v)) if !v.is_empty() && v.len() <= 64 => n = Some(v),
            Some(("s", v)) => s = unhex(v),
            _ => return Err(Refused::Missing),
        }
    }
    let (Some(t), Some(n), Some(s)) = (t, n, s) else {
        return Err(Refused::Missing);
    };
    mac(secret, method, path, t, n)
        .verify_slice(&s)
        .map_err(|_| Refused::BadSignature)?;
    if t.abs_diff(now) > CLUSTER_SIGNATURE_VALIDITY_SECS {
        return Err(Refused::Expired);
    }
    let mut seen = seen().lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() >= CLUSTER_SEEN_SIGNATURES {
        seen.retain(|_, at| at.abs_diff(now) <= CLUSTER_SIGNATURE_VALIDITY_SECS);
        if seen.len() >= CLUSTER_SEEN_SIGNATURES {
            // Only signed requests get here, so this is the cluster's own traffic: forget the oldest.
            if let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
    }
    if seen.insert(s, t).is_some() {
        return Err(Refused::Replayed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/api/cluster/node";

    #[test]
    fn a_fresh_signature_passes_once() {
        let now = now_unix();
        let h = authorization(b"k", "GET", PATH);
        assert_eq!(verify(b"k", "GET", PATH, Some(&h), now), Ok(()));
        assert_eq!(
            verify(b"k", "GET", PATH, Some(&h), now),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn wrong_key_method_path_time_or_shape_are_refused() {
        let now = 1_000_000;
        let h = sign(b"k", "GET", PATH, now, "abc");
        assert_eq!(
            verify(b"other", "GET", PATH, Some(&h), now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(b"k", "POST", PATH, Some(&h), now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(b"k", "GET", "/api/x", Some(&h), now),
            Err(Refused::BadSignature)
        );
        let old = sign(b"k", "GET", PATH, now - 31, "abd");
        assert_eq!(
            verify(b"k", "GET", PATH, Some(&old), now),
            Err(Refused::Expired)
        );
        let future = sign(b"k", "GET", PATH, now + 31, "abe");
        assert_eq!(
            verify(b"k", "GET", PATH, Some(&future), now),
            Err(Refused::Expired)
        );
        let edge = sign(b"k", "GET", PATH, now - 30, "abf");
        assert_eq!(verify(b"k", "GET", PATH, Some(&edge), now), Ok(()));
        // Another nonce is another signature; a changed timestamp breaks it.
        let forged = h.replace(&format!("t={now}"), &format!("t={}", now + 1));
        assert_eq!(
            verify(b"k", "GET", PATH, Some(&forged), now),
            Err(Refused::BadSignature)
        );
        for bad in [
            "",
            "Bearer k",
            "Lasso-HMAC",
            "Lasso-HMAC t=1",
            "Lasso-HMAC t=1,n=a,s=zz",
        ] {
            assert_eq!(
                verify(b"k", "GET", PATH, Some(bad), now),
                Err(Refused::Missing),
                "{bad}"
            );
        }
        assert_eq!(verify(b"k", "GET", PATH, None, now), Err(Refused::Missing));
    }
}
