//! Cache and multiplexing keys: the chain, the method and the parameters in canonical form, so that calls that mean
//! the same share one key whatever their id, whitespace, object key order or hex letter case. Ids are never part of
//! a key.

use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait};

/// The key of `method` with parsed `params` on global chain `chain`: `chain (4 bytes LE) | method | 0 | params`.
pub fn key(chain: u32, method: &str, params: Option<&sonic_rs::Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&chain.to_le_bytes());
    out.extend_from_slice(method.as_bytes());
    out.push(0);
    if let Some(p) = params {
        canonical(p, &mut out);
    }
    out
}

/// Writes `v` as compact JSON with object keys sorted and `0x` strings lower-cased (hex data and quantities are
/// case-insensitive in Ethereum JSON-RPC).
pub fn canonical(v: &sonic_rs::Value, out: &mut Vec<u8>) {
    match v.get_type() {
        JsonType::Null => out.extend_from_slice(b"null"),
        JsonType::Boolean => out.extend_from_slice(if v.as_bool() == Some(true) {
            b"true"
        } else {
            b"false"
        }),
        JsonType::Number => {
            out.extend_from_slice(sonic_rs::to_string(v).unwrap_or_default().as_bytes())
        }
        JsonType::String => {
            let s = v.as_str().unwrap_or("");
            if s.starts_with("0x") || s.starts_with("0X") {
                out.push(b'"');
                out.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
                out.push(b'"');
            } else {
                out.extend_from_slice(sonic_rs::to_string(s).unwrap_or_default().as_bytes());
            }
        }
        JsonType::Array => {
            out.push(b'[');
            for (i, item) in v.as_array().into_iter().flat_map(|a| a.iter()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        JsonType::Object => {
            let mut fields: Vec<(&str, &sonic_rs::Value)> =
                v.as_object().into_iter().flat_map(|o| o.iter()).collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(sonic_rs::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(chain: u32, method: &str, params: &str) -> Vec<u8> {
        let v: sonic_rs::Value = sonic_rs::from_str(params).unwrap();
        key(chain, method, Some(&v))
    }

    #[test]
    fn same_meaning_same_key() {
        let a = k(1, "eth_call", r#"[{"to":"0xAB","data":"0x01"}, "0x10"]"#);
        let b = k(1, "eth_call", r#"[ {"data":"0x01","to":"0xab"},"0x10" ]"#);
        assert_eq!(a, b);
        assert_ne!(
            a,
            k(2, "eth_call", r#"[{"to":"0xab","data":"0x01"},"0x10"]"#)
        );
        assert_ne!(
            a,
            k(1, "eth_call", r#"[{"to":"0xab","data":"0x02"},"0x10"]"#)
        );
        assert_ne!(
            k(1, "eth_getBlockByNumber", r#"["0x1",false]"#),
            k(1, "eth_getBlockByNumber", r#"["0x1",true]"#)
        );
        assert_ne!(
            k(1, "eth_getBlockByNumber", r#"["0x1"]"#),
            k(1, "eth_getBlockByHash", r#"["0x1"]"#)
        );
    }
}
