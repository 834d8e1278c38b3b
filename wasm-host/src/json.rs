//! A small JSON reader for plugin configuration and metadata, both read at
//! configure time (or once per distinct cluster metadata).
//!
//! It replaces serde_json, which brought ~30 KB of code into each module
//! and, through its number handling, Rust's float formatting (~16 KB) — a
//! fifth of a module, for a few dozen fields read once (issue #9's size
//! target). It reads RFC 8259 JSON (UTF-8, nesting bounded by
//! [`MAX_DEPTH`] so that hostile input cannot exhaust the VM's stack) into
//! [`Json`], and [`Fields`] reads an object the way a strict schema does:
//! every field taken by name, anything left over is an unknown field.
//!
//! Numbers are kept as `f64` computed from their digits; exact for every
//! integer up to 2^53, which is all a configuration asks for. Nothing here
//! formats a float: errors say what was expected, not echo the number.
//!
//! It also writes one thing: a `google.protobuf.Struct` as JSON text
//! ([`struct_text`]), for access logs.

use proto::prost_types::value::Kind;
use proto::prost_types::Struct;

use crate::ConfigError;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// A JSON value. Objects keep their fields in input order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Parses one JSON text (surrounding whitespace allowed).
pub fn parse(bytes: &[u8]) -> Result<Json, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::invalid_json(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != text.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

/// Mantissa digits beyond this are counted in the exponent only.
const MANTISSA_LIMIT: u64 = 1_000_000_000_000_000_000;
/// Exponents are clamped here: far past where an `f64` is 0 or infinite.
const EXPONENT_LIMIT: i32 = 10_000;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn error(&self, what: &str) -> ConfigError {
        ConfigError::invalid_json(format!("{what} at byte {}", self.pos))
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn value(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') if depth >= MAX_DEPTH => Err(self.error("nested too deeply")),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, ConfigError> {
        if self.text.get(self.pos..).is_some_and(|rest| rest.starts_with(word)) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            if self.eat(b']') {
                return Ok(Json::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.error("expected `,` or `]`"));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.pos += 1; // '{'
        let mut fields = Vec::new();
        self.skip_whitespace();
        if self.eat(b'}') {
            return Ok(Json::Object(fields));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a field name"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if !self.eat(b':') {
                return Err(self.error("expected `:`"));
            }
            fields.push((key, self.value(depth + 1)?));
            self.skip_whitespace();
            if self.eat(b'}') {
                return Ok(Json::Object(fields));
            }
            if !self.eat(b',') {
                return Err(self.error("expected `,` or `}`"));
            }
        }
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        self.pos += 1; // '"'
        let mut out = String::new();
        loop {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            // The run ends at an ASCII byte or the end, so it is a whole str.
            out.push_str(self.text.get(start..self.pos).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The character of the escape after a `\`.
    fn escape(&mut self) -> Result<char, ConfigError> {
        let byte = self.peek();
        self.pos += 1;
        Ok(match byte {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(),
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        })
    }

    /// `\uXXXX`, or a surrogate pair of two.
    fn unicode_escape(&mut self) -> Result<char, ConfigError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !(self.eat(b'\\') && self.eat(b'u')) {
                    return Err(self.error("unpaired surrogate"));
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("unpaired surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("unpaired surrogate")),
            _ => first,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        let value = u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(value)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Json, ConfigError> {
        let negative = self.eat(b'-');
        let mut mantissa: u64 = 0;
        let mut exponent: i32 = 0;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(digit) = self.digit() {
                    if mantissa < MANTISSA_LIMIT {
                        mantissa = mantissa * 10 + digit;
                    } else {
                        exponent = exponent.saturating_add(1);
                    }
                }
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            while let Some(digit) = self.digit() {
                if mantissa < MANTISSA_LIMIT {
                    mantissa = mantissa * 10 + digit;
                    exponent = exponent.saturating_sub(1);
                }
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            let negative_exponent = self.eat(b'-');
            if !negative_exponent {
                self.eat(b'+');
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            let mut written: i32 = 0;
            while let Some(digit) = self.digit() {
                written = (written * 10 + digit as i32).min(EXPONENT_LIMIT);
            }
            exponent =
                if negative_exponent { exponent.saturating_sub(written) } else { exponent.saturating_add(written) };
        }
        // Powers of ten up to 10^22 are exact doubles, so a mantissa below
        // 2^53 scaled by one of them is correctly rounded: `65536.0` and
        // `6.5536e4` are exactly 65536. Beyond, within an ulp or two, which
        // no configuration field needs.
        let mut value = mantissa as f64;
        if mantissa != 0 {
            if (-22..0).contains(&exponent) {
                value /= 10f64.powi(-exponent);
            } else if exponent != 0 {
                value *= 10f64.powi(exponent);
            }
        }
        if value.is_infinite() {
            return Err(self.error("number out of range"));
        }
        Ok(Json::Number(if negative { -value } else { value }))
    }

    fn digit(&mut self) -> Option<u64> {
        let digit = self.peek().filter(u8::is_ascii_digit)?;
        self.pos += 1;
        Some(u64::from(digit - b'0'))
    }
}

impl Json {
    /// What this value is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }

    fn mismatch(&self, field: &str, expected: &str) -> ConfigError {
        ConfigError::new(field, format!("must be {expected}, not {}", self.kind()))
    }

    pub fn into_string(self, field: &str) -> Result<String, ConfigError> {
        match self {
            Json::String(s) => Ok(s),
            other => Err(other.mismatch(field, "a string")),
        }
    }

    pub fn into_bool(self, field: &str) -> Result<bool, ConfigError> {
        match self {
            Json::Bool(b) => Ok(b),
            other => Err(other.mismatch(field, "true or false")),
        }
    }

    /// A whole number from 0 to `max`.
    pub fn into_integer(self, field: &str, max: u64) -> Result<u64, ConfigError> {
        match self {
            // `max as f64` may round up (u64::MAX); the `as u64` then saturates.
            Json::Number(n) if n >= 0.0 && n.fract() == 0.0 && n <= max as f64 => Ok((n as u64).min(max)),
            _ => Err(ConfigError::new(field, format!("must be a whole number from 0 to {max}"))),
        }
    }

    pub fn into_array(self, field: &str) -> Result<Vec<Json>, ConfigError> {
        match self {
            Json::Array(items) => Ok(items),
            other => Err(other.mismatch(field, "a list")),
        }
    }

    /// A list of strings; a wrong element is named by its index.
    pub fn into_strings(self, field: &str) -> Result<Vec<String>, ConfigError> {
        let items = self.into_array(field)?;
        items.into_iter().enumerate().map(|(i, item)| item.into_string(&format!("{field}[{i}]"))).collect()
    }

    /// An object, to be read field by field. `field` names it in errors
    /// (empty for the whole input).
    pub fn into_fields(self, field: &str) -> Result<Fields, ConfigError> {
        let Json::Object(entries) = self else {
            return Err(self.mismatch(field, "an object"));
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            if entries.iter().take(i).any(|(earlier, _)| earlier == key) {
                return Err(ConfigError::new(field, format!("duplicate field `{key}`")));
            }
        }
        Ok(Fields { path: field.to_string(), entries, known: Vec::new() })
    }
}

/// An object read as a strict schema: each field is taken by name, and
/// [`Fields::finish`] refuses whatever nobody took.
#[derive(Debug)]
pub struct Fields {
    path: String,
    entries: Vec<(String, Json)>,
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
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        let (_, value) = self.entries.remove(index);
        (value != Json::Null).then_some(value)
    }

    /// Takes a field that must be there.
    pub fn require(&mut self, key: &'static str) -> Result<Json, ConfigError> {
        self.take(key).ok_or_else(|| ConfigError::new(self.path(key), "is required"))
    }

    /// Fails on the first field no [`Fields::take`] asked for.
    pub fn finish(self) -> Result<(), ConfigError> {
        let Some((key, _)) = self.entries.first() else {
            return Ok(());
        };
        let expected = self.known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        Err(ConfigError::new(&self.path, format!("unknown field `{key}`, expected one of {expected}")))
    }

    /// The fields nobody has taken, in input order (for objects that are
    /// maps rather than schemas).
    pub fn into_entries(self) -> Vec<(String, Json)> {
        self.entries
    }
}

/// A `google.protobuf.Struct` as one line of JSON text, the object
/// protobuf's JSON mapping gives for it (keys in the Struct's order).
///
/// For access logs: Envoy prints a string property as it is
/// (`%FILTER_STATE(key:PLAIN)%`), while printing a stored Struct means
/// converting it to JSON with protobuf reflection on every log line.
/// Strings are escaped as RFC 8259 requires (`"`, `\`, control
/// characters); other characters are written as they are (a Struct's
/// strings are UTF-8). A number is written when it is an integer of at
/// most 2^53 in magnitude, and as `null` otherwise: nothing here formats a
/// float (see the module docs), and no stored peer holds a number. Nesting
/// past [`MAX_DEPTH`] is written as `null`.
pub fn struct_text(value: &Struct) -> String {
    let mut out = String::new();
    write_struct(&mut out, value, 0);
    out
}

fn write_struct(out: &mut String, value: &Struct, depth: usize) {
    out.push('{');
    for (i, (key, field)) in value.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, field.kind.as_ref(), depth + 1);
    }
    out.push('}');
}

fn write_value(out: &mut String, kind: Option<&Kind>, depth: usize) {
    match kind {
        _ if depth >= MAX_DEPTH => out.push_str("null"),
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::NumberValue(n)) => write_number(out, *n),
        Some(Kind::StringValue(s)) => write_string(out, s),
        Some(Kind::StructValue(s)) => write_struct(out, s, depth),
        Some(Kind::ListValue(list)) => {
            out.push('[');
            for (i, item) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item.kind.as_ref(), depth + 1);
            }
            out.push(']');
        }
    }
}

/// Integers up to 2^53 exactly; anything else (fractions, NaN, infinities,
/// larger magnitudes) as `null`.
fn write_number(out: &mut String, n: f64) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // In range by the check above, so the cast is exact.
        out.push_str(&(n as i64).to_string());
    } else {
        out.push_str("null");
    }
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX.get(b >> 4).copied().unwrap_or(b'0')));
                out.push(char::from(HEX.get(b & 0xf).copied().unwrap_or(b'0')));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Json {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        parse(text.as_bytes()).map(|v| format!("parsed as {v:?}")).unwrap_or_else(|e| e.to_string())
    }

    fn obj(fields: &[(&str, Json)]) -> Json {
        Json::Object(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn reads_every_kind_of_value() {
        assert_eq!(ok(" null "), Json::Null);
        assert_eq!(ok("true"), Json::Bool(true));
        assert_eq!(ok("false"), Json::Bool(false));
        assert_eq!(ok(r#""a\"b\\c\/d\b\f\n\r\t""#), Json::String("a\"b\\c/d\u{8}\u{c}\n\r\t".into()));
        assert_eq!(ok(r#""\u00e9\uD83D\uDE00 é😀""#), Json::String("é😀 é😀".into()));
        assert_eq!(ok("[]"), Json::Array(vec![]));
        assert_eq!(ok("{}"), Json::Object(vec![]));
        assert_eq!(
            ok(r#" { "b" : [1, "x", null] , "a" : {"c": false} } "#),
            obj(&[
                ("b", Json::Array(vec![Json::Number(1.0), Json::String("x".into()), Json::Null])),
                ("a", obj(&[("c", Json::Bool(false))])),
            ])
        );
    }

    #[test]
    fn numbers() {
        let cases: &[(&str, f64)] = &[
            ("0", 0.0),
            ("-0", -0.0),
            ("7", 7.0),
            ("65536", 65536.0),
            ("4294967295", 4294967295.0),
            ("9007199254740992", 9007199254740992.0),
            ("2.0", 2.0),
            ("2.5", 2.5),
            ("-1", -1.0),
            ("1e3", 1000.0),
            ("1E+2", 100.0),
            ("25e-1", 2.5),
            ("0e400", 0.0),
            ("123456789012345678901234567890", 1.2345678901234568e29),
        ];
        for (text, expected) in cases {
            let Json::Number(n) = ok(text) else { panic!("{text}") };
            assert!(n == *expected || (n - expected).abs() <= expected.abs() * 1e-15, "{text}: {n} vs {expected}");
        }
        assert_eq!(err("[1e400]"), "invalid JSON: number out of range at byte 6");
        for bad in ["01", "-", "1.", ".5", "1e", "1e+", "+1", "0x10", "1.e3", "--1", "-1e309"] {
            assert!(err(bad).starts_with("invalid JSON"), "{bad}: {}", err(bad));
        }
    }

    #[test]
    fn malformed_input_names_the_byte() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "invalid JSON: unexpected end of input at byte 0"),
            (b"{", "invalid JSON: expected a field name at byte 1"),
            (b"{\"a\" 1}", "invalid JSON: expected `:` at byte 5"),
            (b"{\"a\":1,}", "invalid JSON: expected a field name at byte 7"),
            (b"[1 2]", "invalid JSON: expected `,` or `]` at byte 3"),
            (b"[1,]", "invalid JSON: expected a value at byte 3"),
            (b"{} x", "invalid JSON: trailing characters at byte 3"),
            (b"\"abc", "invalid JSON: unterminated string at byte 4"),
            (b"\"a\nb\"", "invalid JSON: control character in a string at byte 2"),
            (b"\"\\x\"", "invalid JSON: invalid escape at byte 2"),
            (b"\"\\u12\"", "invalid JSON: invalid \\u escape at byte 3"),
            (b"\"\\u+123\"", "invalid JSON: invalid \\u escape at byte 3"),
            (b"\"\\uD800\"", "invalid JSON: unpaired surrogate at byte 7"),
            (b"\"\\uDC00\"", "invalid JSON: unpaired surrogate at byte 7"),
            (b"nul", "invalid JSON: expected a value at byte 0"),
            (b"\"\xff\"", "invalid JSON: not UTF-8 at byte 1"),
            (b"'a'", "invalid JSON: expected a value at byte 0"),
        ];
        for (input, expected) in cases {
            let got = parse(input).map(|v| format!("{v:?}")).unwrap_or_else(|e| e.to_string());
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(deep_ok.as_bytes()).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(err(&too_deep).contains("nested too deeply"));
        // Far deeper than any stack would take, refused without recursing.
        assert!(err(&"{\"a\":".repeat(100_000)).contains("nested too deeply"));
    }

    #[test]
    fn typed_reads_name_the_field() {
        assert_eq!(ok("\"x\"").into_string("f").unwrap(), "x");
        assert_eq!(ok("1").into_string("f").unwrap_err().to_string(), "f: must be a string, not a number");
        assert!(ok("true").into_bool("f").unwrap());
        assert_eq!(ok("65536").into_integer("f", u32::MAX.into()).unwrap(), 65536);
        assert_eq!(ok("1e2").into_integer("f", 100).unwrap(), 100);
        for (text, expected) in [
            ("65536.0", 65_536),
            ("6.5536e4", 65_536),
            ("655360e-1", 65_536),
            ("4294967295.000", 4_294_967_295),
            ("42949672.95e2", 4_294_967_295),
        ] {
            assert_eq!(ok(text).into_integer("f", u32::MAX.into()).ok(), Some(expected), "{text}");
        }
        assert_eq!(ok("18446744073709551615").into_integer("f", u64::MAX).unwrap(), u64::MAX);
        for bad in ["-1", "1.5", "4294967296", "\"1\"", "null"] {
            assert_eq!(
                ok(bad).into_integer("f", u32::MAX.into()).unwrap_err().to_string(),
                "f: must be a whole number from 0 to 4294967295",
                "{bad}"
            );
        }
        assert_eq!(ok(r#"["a","b"]"#).into_strings("l").unwrap(), ["a", "b"]);
        assert_eq!(ok(r#"["a",2]"#).into_strings("l").unwrap_err().to_string(), "l[1]: must be a string, not a number");
        assert_eq!(ok("{}").into_strings("l").unwrap_err().to_string(), "l: must be a list, not an object");
    }

    #[test]
    fn fields_are_a_strict_schema() {
        let mut fields = ok(r#"{"a":1,"b":null,"c":"x"}"#).into_fields("outer[0]").unwrap();
        assert_eq!(fields.take("a"), Some(Json::Number(1.0)));
        assert_eq!(fields.take("b"), None, "null reads as absent");
        assert_eq!(fields.require("d").unwrap_err().to_string(), "outer[0].d: is required");
        assert_eq!(
            fields.finish().unwrap_err().to_string(),
            "outer[0]: unknown field `c`, expected one of `a`, `b`, `d`"
        );
        let mut root = ok(r#"{"a":1}"#).into_fields("").unwrap();
        assert_eq!(root.path("a"), "a");
        assert!(root.take("a").is_some());
        assert!(root.finish().is_ok());
        assert_eq!(ok(r#"{"a":1,"a":2}"#).into_fields("m").unwrap_err().to_string(), "m: duplicate field `a`");
        assert_eq!(ok("[]").into_fields("m").unwrap_err().to_string(), "m: must be an object, not a list");
        let map = ok(r#"{"z":"1","y":"2"}"#).into_fields("m").unwrap().into_entries();
        assert_eq!(map, [("z".to_string(), Json::String("1".into())), ("y".to_string(), Json::String("2".into()))]);
    }

    fn value(kind: Kind) -> proto::prost_types::Value {
        proto::prost_types::Value { kind: Some(kind) }
    }

    fn st(fields: Vec<(&str, Kind)>) -> Struct {
        Struct { fields: fields.into_iter().map(|(k, v)| (k.to_string(), value(v))).collect() }
    }

    /// What our reader makes of a Struct (the reference for round trips).
    fn as_json(s: &Struct) -> Json {
        fn of(kind: Option<&Kind>) -> Json {
            match kind {
                None | Some(Kind::NullValue(_)) => Json::Null,
                Some(Kind::BoolValue(b)) => Json::Bool(*b),
                Some(Kind::NumberValue(n)) => Json::Number(*n),
                Some(Kind::StringValue(s)) => Json::String(s.clone()),
                Some(Kind::StructValue(s)) => as_json(s),
                Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(|v| of(v.kind.as_ref())).collect()),
            }
        }
        Json::Object(s.fields.iter().map(|(k, v)| (k.clone(), of(v.kind.as_ref()))).collect())
    }

    #[test]
    fn a_struct_is_written_as_one_line_of_json() {
        let labels = st(vec![("app", Kind::StringValue("server".into()))]);
        let list = proto::prost_types::ListValue {
            values: vec![value(Kind::BoolValue(false)), value(Kind::NullValue(0)), value(Kind::NumberValue(7.0))],
        };
        let peer = st(vec![
            ("namespace", Kind::StringValue("server-ns".into())),
            ("verified", Kind::BoolValue(true)),
            ("labels", Kind::StructValue(labels)),
            ("list", Kind::ListValue(list)),
            ("empty", Kind::StructValue(Struct::default())),
        ]);
        let text = struct_text(&peer);
        assert_eq!(
            text,
            r#"{"empty":{},"labels":{"app":"server"},"list":[false,null,7],"namespace":"server-ns","verified":true}"#
        );
        assert_eq!(ok(&text), as_json(&peer));
        assert_eq!(struct_text(&Struct::default()), "{}");
    }

    #[test]
    fn strings_are_escaped_so_any_of_them_reads_back() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        for s in ["", "plain", "q\"uote", "back\\slash", "é😀 /", &all_controls, "\u{7f}\u{2028}"] {
            let peer = st(vec![(s, Kind::StringValue(s.to_string()))]);
            let text = struct_text(&peer);
            assert!(!text.bytes().any(|b| b < 0x20), "raw control character in {text:?}");
            assert_eq!(ok(&text), as_json(&peer), "{s:?}");
        }
        assert_eq!(struct_text(&st(vec![("k", Kind::StringValue("\u{1}\n".into()))])), r#"{"k":"\u0001\n"}"#);
    }

    #[test]
    fn only_exact_integers_are_written_as_numbers() {
        let text = |n: f64| struct_text(&st(vec![("n", Kind::NumberValue(n))]));
        assert_eq!(text(0.0), r#"{"n":0}"#);
        assert_eq!(text(-3.0), r#"{"n":-3}"#);
        assert_eq!(text(9_007_199_254_740_992.0), r#"{"n":9007199254740992}"#);
        for n in [0.5, -1.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 18_014_398_509_481_984.0] {
            assert_eq!(text(n), r#"{"n":null}"#, "{n}");
        }
    }

    #[test]
    fn nesting_past_the_limit_is_written_as_null() {
        let mut deep = st(vec![("leaf", Kind::BoolValue(true))]);
        for _ in 0..MAX_DEPTH + 5 {
            deep = st(vec![("d", Kind::StructValue(deep))]);
        }
        let text = struct_text(&deep);
        assert!(text.contains("null") && !text.contains("leaf"), "{text}");
        assert!(parse(text.as_bytes()).is_ok(), "still one valid JSON text within the reader's limit");
    }

    proptest::proptest! {
        #[test]
        fn any_struct_of_strings_reads_back(
            fields in proptest::collection::btree_map(".{0,12}", ".{0,24}", 0..8),
            flag in proptest::bool::ANY,
        ) {
            let mut peer = Struct {
                fields: fields.iter().map(|(k, v)| (k.clone(), value(Kind::StringValue(v.clone())))).collect(),
            };
            peer.fields.insert("nested".into(), value(Kind::StructValue(Struct { fields: peer.fields.clone() })));
            peer.fields.insert("flag".into(), value(Kind::BoolValue(flag)));
            let text = struct_text(&peer);
            proptest::prop_assert_eq!(parse(text.as_bytes()).ok(), Some(as_json(&peer)));
        }
    }
}
