//! The exchange's wire format, written from the protocol description
//! (magic, big-endian length, protobuf `Any(Struct)`), not from the filter's
//! code, so the tests can check the filter against it.

/// The type URL Istio writes in the payload's `Any`.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// Istio's magic number.
pub const MAGIC: [u8; 4] = [0x3D, 0x23, 0x04, 0x67];

/// A value in a hand-built `google.protobuf.Struct`.
pub enum V<'a> {
    Str(&'a str),
    Struct(Vec<(&'a str, V<'a>)>),
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn length_delimited(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `google.protobuf.Value` { string_value = 3 | struct_value = 5 }.
fn value(v: &V<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        V::Str(s) => length_delimited(3, s.as_bytes(), &mut out),
        V::Struct(fields) => length_delimited(5, &strukt(fields), &mut out),
    }
    out
}

/// `google.protobuf.Struct` { map<string, Value> fields = 1 }, entries in key
/// order (protobuf's deterministic serialization); each entry is
/// { key = 1, value = 2 }.
pub fn strukt(fields: &[(&str, V<'_>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, V<'_>)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (key, v) in sorted {
        let mut entry = Vec::new();
        length_delimited(1, key.as_bytes(), &mut entry);
        length_delimited(2, &value(v), &mut entry);
        length_delimited(1, &entry, &mut out);
    }
    out
}

/// The whole prefix: magic, data_size (u32 BE), `Any { type_url = 1, value = 2 }`
/// of a Struct with `x-envoy-peer-metadata` and `x-envoy-peer-metadata-id`.
pub fn prefix(metadata: Vec<(&str, V<'_>)>, node_id: &str) -> Vec<u8> {
    let payload_struct =
        strukt(&[("x-envoy-peer-metadata", V::Struct(metadata)), ("x-envoy-peer-metadata-id", V::Str(node_id))]);
    frame(STRUCT_TYPE_URL, &payload_struct)
}

/// magic, data_size, `Any { type_url, value }` around any serialized message.
pub fn frame(type_url: &str, value: &[u8]) -> Vec<u8> {
    let mut any = Vec::new();
    length_delimited(1, type_url.as_bytes(), &mut any);
    length_delimited(2, value, &mut any);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(any.len() as u32).to_be_bytes());
    out.extend_from_slice(&any);
    out
}

/// Splits a received stream into (peer metadata as JSON, node id, rest) if it
/// starts with a complete prefix.
pub fn split_prefix(bytes: &[u8]) -> Option<(serde_json::Value, String, &[u8])> {
    use proto::prost::Message;
    use proto::prost_types::{value::Kind, Any, Struct};
    if bytes.len() < 8 || bytes[..4] != MAGIC {
        return None;
    }
    let size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let payload = bytes.get(8..8 + size)?;
    let any = Any::decode(payload).ok()?;
    if any.type_url != STRUCT_TYPE_URL {
        return None;
    }
    let s = Struct::decode(any.value.as_slice()).ok()?;
    let metadata = match s.fields.get("x-envoy-peer-metadata").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(m)) => struct_json(m),
        _ => serde_json::Value::Null,
    };
    let id = match s.fields.get("x-envoy-peer-metadata-id").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(id)) => id.clone(),
        _ => String::new(),
    };
    Some((metadata, id, &bytes[8 + size..]))
}

fn struct_json(s: &proto::prost_types::Struct) -> serde_json::Value {
    use proto::prost_types::value::Kind;
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| {
                let v = match &v.kind {
                    Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
                    Some(Kind::StructValue(s)) => struct_json(s),
                    _ => serde_json::Value::Null,
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_struct_matches_known_bytes() {
        // {"a": "b"}: field 1 (entry) len 8 { key "a", value { string "b" } }
        assert_eq!(strukt(&[("a", V::Str("b"))]), vec![0x0a, 0x08, 0x0a, 0x01, b'a', 0x12, 0x03, 0x1a, 0x01, b'b']);
    }

    #[test]
    fn prefix_round_trips_through_split() {
        let p = prefix(vec![("NAME", V::Str("n")), ("LABELS", V::Struct(vec![("app", V::Str("x"))]))], "id-1");
        let mut stream = p.clone();
        stream.extend_from_slice(b"tail");
        let (md, id, rest) = split_prefix(&stream).unwrap();
        assert_eq!(id, "id-1");
        assert_eq!(md["LABELS"]["app"], "x");
        assert_eq!(rest, b"tail");
    }
}
