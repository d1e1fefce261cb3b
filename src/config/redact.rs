//! Redaction of secrets (API keys, credentials, values that came from `${VAR}` expansion) from anything a user can
//! read: status pages, error messages and logs.

/// Replaces every secret in `text` by `***`, then masks URL credentials and key-like path or query segments.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if secret.len() >= 4 {
            out = out.replace(secret.as_str(), "***");
        }
    }
    mask_url(&out)
}

/// Masks userinfo and key-looking segments (long runs of letters and digits) in a URL.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let mut masked = String::with_capacity(tail.len());
    let mut segment = String::new();
    for c in tail.chars() {
        if matches!(c, '/' | '?' | '&' | '=') {
            masked.push_str(&mask_segment(&segment));
            segment.clear();
            masked.push(c);
        } else {
            segment.push(c);
        }
    }
    masked.push_str(&mask_segment(&segment));
    format!("{scheme}://{authority}{masked}")
}

fn mask_segment(segment: &str) -> String {
    let keyish = segment.len() >= 16
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && segment.chars().any(|c| c.is_ascii_digit());
    if keyish {
        "***".to_string()
    } else {
        segment.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_known_secrets_and_key_like_segments() {
        let secrets = vec!["s3cr3t-value".to_string()];
        let rows = [
            (
                "https://h.example/v3/s3cr3t-value",
                "https://h.example/v3/***",
            ),
            ("https://u:p@h.example/rpc", "https://***@h.example/rpc"),
            (
                "https://h.example/v2/abcdEFGH12345678ijkl",
                "https://h.example/v2/***",
            ),
            (
                "https://h.example/rpc?apikey=0123456789abcdef0123",
                "https://h.example/rpc?apikey=***",
            ),
            (
                "https://ethereum-rpc.publicnode.com",
                "https://ethereum-rpc.publicnode.com",
            ),
            ("error from s3cr3t-value host", "error from *** host"),
        ];
        for (input, expected) in rows {
            assert_eq!(redact(input, &secrets), expected, "{input}");
        }
    }
}
