//! Plugin configuration and cluster metadata as JSON, read with serde_json
//! and walked as a strict schema; and the stored peer written as JSON text.
//!
//! serde_json parses (RFC 8259, UTF-8, escapes, numbers) and writes. What
//! is ours is what a configuration needs beyond a well-formed text:
//! - [`parse`] refuses a repeated key (serde_json keeps the last one
//!   silently; a configuration that names a field twice is a mistake) and
//!   nesting deeper than [`MAX_DEPTH`] (serde_json's own bound is 128; a
//!   configuration never nests past a handful of levels);
//! - [`Fields`] reads an object field by field, so every refusal names the
//!   field's path (`alpn_override[0].upstream_protocol: ...`), fields are
//!   checked against each other, and a field nobody took is refused as
//!   unknown — what `#[serde(deny_unknown_fields)]` does, with the path in
//!   the message;
//! - [`ReadJson`] converts a value to the type a field wants, saying what
//!   was expected and what was found.

use std::fmt;

use proto::prost_types::value::Kind;
use proto::prost_types::Struct;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
pub use serde_json::Value as Json;

use crate::ConfigError;

/// Deepest nesting of arrays and objects accepted (and written).
pub const MAX_DEPTH: usize = 64;

/// 2^53: every integer up to it is exact in an `f64`.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Parses one JSON text (surrounding whitespace allowed).
pub fn parse(bytes: &[u8]) -> Result<Json, ConfigError> {
    let mut input = serde_json::Deserializer::from_slice(bytes);
    let value = Level(0).deserialize(&mut input).map_err(ConfigError::invalid_json)?;
    input.end().map_err(ConfigError::invalid_json)?;
    Ok(value)
}

/// A value at a nesting depth: serde_json's `Value`, but refusing repeated
/// keys and nesting past [`MAX_DEPTH`].
struct Level(usize);

impl<'de> DeserializeSeed<'de> for Level {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Level {
    fn inner<E: de::Error>(&self) -> Result<Level, E> {
        if self.0 >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(Level(self.0 + 1))
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
        // serde_json hands out finite numbers only.
        Ok(serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.inner()?)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let value = map.next_value_seed(self.inner()?)?;
            fields.insert(key, value);
        }
        Ok(Json::Object(fields))
    }
}

/// Typed reads of a configuration value; each error names the field.
pub trait ReadJson: Sized {
    /// What this value is, for error messages.
    fn kind(&self) -> &'static str;
    fn into_string(self, field: &str) -> Result<String, ConfigError>;
    fn into_bool(self, field: &str) -> Result<bool, ConfigError>;
    /// A whole number from 0 to `max` (`1e2` and `100.0` are 100).
    fn into_integer(self, field: &str, max: u64) -> Result<u64, ConfigError>;
    fn into_array(self, field: &str) -> Result<Vec<Json>, ConfigError>;
    /// A list of strings; a wrong element is named by its index.
    fn into_strings(self, field: &str) -> Result<Vec<String>, ConfigError>;
    /// An object, to be read field by field. `field` names it in errors
    /// (empty for the whole input).
    fn into_fields(self, field: &str) -> Result<Fields, ConfigError>;
}

fn mismatch(value: &Json, field: &str, expected: &str) -> ConfigError {
    ConfigError::new(field, format!("must be {expected}, not {}", value.kind()))
}

impl ReadJson for Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }

    fn into_string(self, field: &str) -> Result<String, ConfigError> {
        match self {
            Json::String(s) => Ok(s),
            other => Err(mismatch(&other, field, "a string")),
        }
    }

    fn into_bool(self, field: &str) -> Result<bool, ConfigError> {
        match self {
            Json::Bool(b) => Ok(b),
            other => Err(mismatch(&other, field, "true or false")),
        }
    }

    fn into_integer(self, field: &str, max: u64) -> Result<u64, ConfigError> {
        let whole = match &self {
            Json::Number(n) => n.as_u64().or_else(|| {
                // `max as f64` may round up (u64::MAX); the `as u64` then saturates.
                n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f <= max as f64).map(|f| f as u64)
            }),
            _ => None,
        };
        match whole {
            Some(n) if n <= max => Ok(n),
            _ => Err(ConfigError::new(field, format!("must be a whole number from 0 to {max}"))),
        }
    }

    fn into_array(self, field: &str) -> Result<Vec<Json>, ConfigError> {
        match self {
            Json::Array(items) => Ok(items),
            other => Err(mismatch(&other, field, "a list")),
        }
    }

    fn into_strings(self, field: &str) -> Result<Vec<String>, ConfigError> {
        let items = self.into_array(field)?;
        items.into_iter().enumerate().map(|(i, item)| item.into_string(&format!("{field}[{i}]"))).collect()
    }

    fn into_fields(self, field: &str) -> Result<Fields, ConfigError> {
        match self {
            Json::Object(entries) => Ok(Fields { path: field.to_string(), entries, known: Vec::new() }),
            other => Err(mismatch(&other, field, "an object")),
        }
    }
}

/// An object read as a strict schema: each field is taken by name, and
/// [`Fields::finish`] refuses whatever nobody took.
#[derive(Debug)]
pub struct Fields {
    path: String,
    entries: serde_json::Map<String, Json>,
    known: Vec<&'static str>,
}

impl Fields {
    /// A field's path for error messages: `alpn_override[0].upstream_protocol`.
    pub fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes a field; absent and `null` both read as `None`.
    pub fn take(&mut self, key: &'static str) -> Option<Json> {
        self.known.push(key);
        self.entries.remove(key).filter(|value| !value.is_null())
    }

    /// Takes a field that must be there.
    pub fn require(&mut self, key: &'static str) -> Result<Json, ConfigError> {
        self.take(key).ok_or_else(|| ConfigError::new(self.path(key), "is required"))
    }

    /// Fails on the first (by name) field no [`Fields::take`] asked for.
    pub fn finish(self) -> Result<(), ConfigError> {
        let Some(key) = self.entries.keys().next() else {
            return Ok(());
        };
        let expected = self.known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        Err(ConfigError::new(&self.path, format!("unknown field `{key}`, expected one of {expected}")))
    }

    /// The fields nobody has taken, by name (for objects that are maps
    /// rather than schemas).
    pub fn into_entries(self) -> Vec<(String, Json)> {
        self.entries.into_iter().collect()
    }
}

/// A `google.protobuf.Struct` (cluster metadata) as a JSON value, to be
/// read like a configuration. Nesting past [`MAX_DEPTH`] reads as `null`.
pub fn struct_json(value: &Struct) -> Json {
    object(value, 0)
}

/// A `google.protobuf.Struct` as one line of JSON text, the object
/// protobuf's JSON mapping gives for it.
///
/// For access logs: Envoy prints a string property as it is
/// (`%FILTER_STATE(key:PLAIN)%`), while printing a stored Struct means
/// converting it to JSON with protobuf reflection on every log line. A
/// number is written when it is an integer of at most 2^53 in magnitude
/// (exact in an `f64`), and as `null` otherwise: no stored peer holds a
/// number, and a log line should not carry a rounded one. Nesting past
/// [`MAX_DEPTH`] is written as `null`.
pub fn struct_text(value: &Struct) -> String {
    serde_json::to_string(&Text { kind: None, fields: Some(value), depth: 0 }).unwrap_or_default()
}

/// A Struct's value as [`struct_text`] writes it. Serialized directly
/// rather than through a [`Json`] value: nothing here writes a float, so
/// the float formatter stays out of the module.
struct Text<'a> {
    kind: Option<&'a Kind>,
    /// Set for the top-level Struct, whose fields are written directly.
    fields: Option<&'a Struct>,
    depth: usize,
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let write_struct = |out: S, value: &Struct| {
            let mut map = out.serialize_map(Some(value.fields.len()))?;
            for (key, field) in &value.fields {
                map.serialize_entry(key, &Text { kind: field.kind.as_ref(), fields: None, depth: self.depth + 1 })?;
            }
            map.end()
        };
        if let Some(value) = self.fields {
            return write_struct(out, value);
        }
        match self.kind {
            _ if self.depth >= MAX_DEPTH => out.serialize_unit(),
            None | Some(Kind::NullValue(_)) => out.serialize_unit(),
            Some(Kind::BoolValue(b)) => out.serialize_bool(*b),
            // In range by the check, so the cast is exact.
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() <= EXACT => out.serialize_i64(*n as i64),
            Some(Kind::NumberValue(_)) => out.serialize_unit(),
            Some(Kind::StringValue(s)) => out.serialize_str(s),
            Some(Kind::StructValue(s)) => write_struct(out, s),
            Some(Kind::ListValue(list)) => {
                let mut seq = out.serialize_seq(Some(list.values.len()))?;
                for item in &list.values {
                    seq.serialize_element(&Text { kind: item.kind.as_ref(), fields: None, depth: self.depth + 1 })?;
                }
                seq.end()
            }
        }
    }
}

/// An integer as JSON text writes it (`7`, not `7.0`), so that a value
/// read from metadata equals the same value parsed from text.
fn number(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // In range by the check, so the cast is exact.
        Json::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

fn object(value: &Struct, depth: usize) -> Json {
    Json::Object(value.fields.iter().map(|(k, v)| (k.clone(), of_kind(v.kind.as_ref(), depth + 1))).collect())
}

fn of_kind(kind: Option<&Kind>, depth: usize) -> Json {
    match kind {
        _ if depth >= MAX_DEPTH => Json::Null,
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::StructValue(s)) => object(s, depth),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.iter().map(|v| of_kind(v.kind.as_ref(), depth + 1)).collect())
        }
    }
}

#[cfg(test)]
mod tests;
