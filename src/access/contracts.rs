//! A key's contract allow-list (`access.keys[].contracts`): `eth_call` may only call, and `eth_sendRawTransaction`
//! may only send to, the listed addresses. The destination of a raw transaction is read from its RLP: legacy
//! transactions (an RLP list: nonce, gasPrice, gas, to, ...) and typed ones (EIP-2718: a type byte, then a list
//! whose `to` is the 5th item for type 1 and the 6th for types 2, 3 and 4). A transaction that creates a contract
//! (empty `to`), or that does not decode, is refused when the list is set.

pub use crate::config::schema::parse_address;

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One RLP item at the start of `data`: (payload, total length), and whether it is a list.
fn rlp_item(data: &[u8]) -> Option<(&[u8], usize, bool)> {
    let first = *data.first()?;
    let (offset, len, list) = match first {
        0x00..=0x7f => return Some((&data[..1], 1, false)),
        0x80..=0xb7 => (1, (first - 0x80) as usize, false),
        0xb8..=0xbf => {
            let n = (first - 0xb7) as usize;
            (1 + n, be_len(data.get(1..1 + n)?)?, false)
        }
        0xc0..=0xf7 => (1, (first - 0xc0) as usize, true),
        0xf8..=0xff => {
            let n = (first - 0xf7) as usize;
            (1 + n, be_len(data.get(1..1 + n)?)?, true)
        }
    };
    let end = offset.checked_add(len)?;
    Some((data.get(offset..end)?, end, list))
}

fn be_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
}

/// The `to` of a signed raw transaction: `Some(None)` for a contract creation, `None` when it does not decode.
pub fn raw_tx_to(raw: &[u8]) -> Option<Option<[u8; 20]>> {
    let (body, index) = match *raw.first()? {
        0xc0..=0xff => (raw, 3),
        0x01 => (raw.get(1..)?, 4),
        0x02..=0x04 => (raw.get(1..)?, 5),
        _ => return None,
    };
    let (mut items, _, list) = rlp_item(body)?;
    if !list {
        return None;
    }
    for _ in 0..index {
        let (_, used, _) = rlp_item(items)?;
        items = &items[used..];
    }
    let (to, _, list) = rlp_item(items)?;
    match (list, to.len()) {
        (false, 0) => Some(None),
        (false, 20) => Some(Some(to.try_into().ok()?)),
        _ => None,
    }
}

/// Whether `method` with raw JSON `params` stays within `allowed` (other methods are not restricted here).
pub fn permits(allowed: &[[u8; 20]], method: &str, params: &[u8]) -> bool {
    let to = match method {
        "eth_call" => sonic_rs::get(params, &sonic_rs::pointer![0, "to"])
            .ok()
            .and_then(|v| sonic_rs::JsonValueTrait::as_str(&v).and_then(parse_address)),
        "eth_sendRawTransaction" => sonic_rs::get(params, &sonic_rs::pointer![0])
            .ok()
            .and_then(|v| {
                let text = sonic_rs::JsonValueTrait::as_str(&v)?.to_string();
                decode_hex(text.strip_prefix("0x")?)
            })
            .and_then(|raw| raw_tx_to(&raw))
            .flatten(),
        _ => return true,
    };
    to.is_some_and(|to| allowed.contains(&to))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: &str = "3535353535353535353535353535353535353535";

    #[test]
    fn the_destination_of_legacy_and_typed_transactions() {
        // EIP-155's example transaction (legacy).
        let legacy = decode_hex("f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83").unwrap();
        let to = parse_address(&format!("0x{TO}")).unwrap();
        assert_eq!(raw_tx_to(&legacy), Some(Some(to)));
        // Typed: type byte, then [chainId, nonce, (gasPrice | tip, maxFee), gas, to, value, data, accessList, ...].
        let typed = |ty: u8, fields_before_to: usize| {
            let mut items = vec![0x01u8; fields_before_to];
            items.push(0x94);
            items.extend_from_slice(&to);
            items.extend_from_slice(&[0x80, 0x80, 0xc0]);
            let mut out = vec![ty, 0xc0 + items.len() as u8];
            out.extend_from_slice(&items);
            out
        };
        assert_eq!(raw_tx_to(&typed(0x01, 4)), Some(Some(to)));
        assert_eq!(raw_tx_to(&typed(0x02, 5)), Some(Some(to)));
        assert_eq!(raw_tx_to(&typed(0x03, 5)), Some(Some(to)));
        assert_eq!(
            raw_tx_to(&[0x02, 0xc6, 1, 1, 1, 1, 1, 0xc0]),
            None,
            "a list where `to` belongs"
        );
        // Contract creation: empty `to`.
        assert_eq!(raw_tx_to(&[0xc5, 0x01, 0x01, 0x01, 0x80, 0x80]), Some(None));
        assert_eq!(raw_tx_to(&[0x05, 0xc0]), None);
        assert_eq!(raw_tx_to(&[0xf8]), None, "truncated");
    }

    #[test]
    fn calls_and_sends_are_held_to_the_list() {
        let to = parse_address(&format!("0x{TO}")).unwrap();
        let allowed = [to];
        assert!(permits(
            &allowed,
            "eth_call",
            format!(r#"[{{"to":"0x{TO}","data":"0x"}},"latest"]"#).as_bytes()
        ));
        assert!(!permits(
            &allowed,
            "eth_call",
            br#"[{"to":"0x0000000000000000000000000000000000000001"},"latest"]"#
        ));
        assert!(!permits(
            &allowed,
            "eth_call",
            br#"[{"data":"0x"},"latest"]"#
        ));
        let legacy = "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
        assert!(permits(
            &allowed,
            "eth_sendRawTransaction",
            format!(r#"["{legacy}"]"#).as_bytes()
        ));
        assert!(!permits(
            &[[0u8; 20]],
            "eth_sendRawTransaction",
            format!(r#"["{legacy}"]"#).as_bytes()
        ));
        assert!(permits(&allowed, "eth_blockNumber", b"[]"));
    }
}
