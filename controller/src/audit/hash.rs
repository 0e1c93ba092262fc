//! The chain hash and the canonical encoding it covers (specified in the module docs of
//! `audit`). Pure: no I/O.

use sha2::{Digest, Sha256};

/// The `prev_hash` of record 1: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0; 32];

/// `GENESIS` in lowercase hex, as stored.
pub const GENESIS_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every hashed field of a record but `prev_hash`, as stored (`body` is the canonical JSON text).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// Position in the chain.
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    /// The kind's stored name.
    pub kind: &'a str,
    /// Host, if any.
    pub host: Option<&'a str>,
    /// Incident, if any.
    pub incident: Option<&'a str>,
    /// Actor.
    pub actor: &'a str,
    /// Policy name, if any.
    pub policy: Option<&'a str>,
    /// Policy file digest, if any.
    pub policy_digest: Option<&'a str>,
    /// The body as canonical JSON text.
    pub body: &'a str,
}

/// `SHA-256(prev_hash || encode(fields))`.
pub fn chain_hash(prev_hash: &[u8; 32], fields: &Fields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(encode(fields));
    h.finalize().into()
}

/// The canonical encoding: each field in a fixed order, as `0x00` when absent or
/// `0x01 || u32 big-endian length || bytes` when present; integers are 8 bytes, big-endian
/// two's complement, text is UTF-8. The length prefix makes the encoding injective: no two
/// different records encode to the same bytes, whatever their text contains.
pub fn encode(f: &Fields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.body.len());
    put(&mut out, Some(&f.seq.to_be_bytes()));
    put(&mut out, Some(&f.at.to_be_bytes()));
    put(&mut out, Some(f.kind.as_bytes()));
    put(&mut out, f.host.map(str::as_bytes));
    put(&mut out, f.incident.map(str::as_bytes));
    put(&mut out, Some(f.actor.as_bytes()));
    put(&mut out, f.policy.map(str::as_bytes));
    put(&mut out, f.policy_digest.map(str::as_bytes));
    put(&mut out, Some(f.body.as_bytes()));
    out
}

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            // A field over 4 GiB cannot be stored anyway; saturate rather than wrap.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// The canonical JSON text of a value: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings and numbers written as serde_json writes them. Independent of whether serde_json keeps
/// insertion order (its `preserve_order` feature), so the hash does not depend on a feature flag
/// another crate in the build turns on.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // `Display` of a JSON value is its compact text; for a string, quoted and escaped.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Parses a stored 64-character lowercase hex hash.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(body: &str) -> Fields<'_> {
        Fields {
            seq: 1,
            at: 1_700_000_000_000,
            kind: "finding",
            host: Some("web-7"),
            incident: None,
            actor: "controller",
            policy: None,
            policy_digest: None,
            body,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": "x\n", "c": null}], "m": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"m":true,"z":[1,{"c":null,"y":"x\n"}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_reparses_to_the_same_text() {
        let v = json!({"f": 0.1, "big": 18446744073709551615u64, "neg": -3, "s": "é\"\\"});
        let text = canonical_json(&v);
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(canonical_json(&back), text);
    }

    #[test]
    fn absent_and_empty_fields_encode_differently() {
        let mut a = fields("null");
        let mut b = fields("null");
        a.incident = None;
        b.incident = Some("");
        assert_ne!(encode(&a), encode(&b));
        assert_ne!(chain_hash(&GENESIS, &a), chain_hash(&GENESIS, &b));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let mut a = fields("null");
        let mut b = fields("null");
        a.host = Some("web-7");
        a.actor = "controller";
        b.host = Some("web-7c");
        b.actor = "ontroller";
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn hash_depends_on_prev_hash_and_every_field() {
        let base = fields("{}");
        let h = chain_hash(&GENESIS, &base);
        assert_ne!(h, chain_hash(&[1; 32], &base));
        let variants = [
            Fields { seq: 2, ..base },
            Fields { at: 0, ..base },
            Fields {
                kind: "decision",
                ..base
            },
            Fields { host: None, ..base },
            Fields {
                incident: Some("f-1"),
                ..base
            },
            Fields {
                actor: "alice",
                ..base
            },
            Fields {
                policy: Some("php"),
                ..base
            },
            Fields {
                policy_digest: Some("ab"),
                ..base
            },
            Fields { body: "[]", ..base },
        ];
        for v in variants {
            assert_ne!(chain_hash(&GENESIS, &v), h, "{v:?}");
        }
    }

    #[test]
    fn parse_hex_accepts_only_64_lowercase_hex_digits() {
        assert_eq!(parse_hex(GENESIS_HEX), Some(GENESIS));
        assert_eq!(parse_hex(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_hex(&"AB".repeat(32)), None);
        assert_eq!(parse_hex("00"), None);
        assert_eq!(parse_hex(&"zz".repeat(32)), None);
    }
}
