use super::*;

fn ok(text: &str) -> Json {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(text: &str) -> String {
    parse(text.as_bytes()).map(|v| format!("parsed as {v:?}")).unwrap_or_else(|e| e.to_string())
}

#[test]
fn reads_what_serde_json_reads() {
    let text = r#" { "b" : [1, "x", null, 2.5, -3] , "a" : {"c": false}, "e": "\u00e9\uD83D\uDE00" } "#;
    assert_eq!(ok(text), serde_json::from_str::<Json>(text).unwrap());
    for bad in ["", "{", "{\"a\":1,}", "[1 2]", "{} x", "\"abc", "\"\\uD800\"", "nul", "[1e400]"] {
        assert!(err(bad).starts_with("invalid JSON: "), "{bad}: {}", err(bad));
    }
    assert!(err("\"\u{1}\"").starts_with("invalid JSON: "));
    assert!(parse(b"\"\xff\"").is_err(), "not UTF-8");
}

#[test]
fn repeated_keys_are_refused_at_any_depth() {
    assert_eq!(err(r#"{"a":1,"a":2}"#), "invalid JSON: duplicate field `a` at line 1 column 10");
    assert!(err(r#"{"x":[{"NAME":"a","NAME":"b"}]}"#).contains("duplicate field `NAME`"));
    assert!(parse(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok(), "the same key in different objects");
}

#[test]
fn nesting_is_bounded() {
    let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(deep_ok.as_bytes()).is_ok());
    let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(err(&too_deep).contains("nested deeper than 64 levels"), "{}", err(&too_deep));
    // Far deeper than any stack would take, refused without recursing further.
    assert!(err(&"{\"a\":".repeat(100_000)).contains("nested deeper than 64 levels"));
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
        ("-0", 0),
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
    assert_eq!(fields.take("a"), Some(Json::from(1)));
    assert_eq!(fields.take("b"), None, "null reads as absent");
    assert_eq!(fields.require("d").unwrap_err().to_string(), "outer[0].d: is required");
    assert_eq!(fields.finish().unwrap_err().to_string(), "outer[0]: unknown field `c`, expected one of `a`, `b`, `d`");
    let mut root = ok(r#"{"a":1}"#).into_fields("").unwrap();
    assert_eq!(root.path("a"), "a");
    assert!(root.take("a").is_some());
    assert!(root.finish().is_ok());
    assert_eq!(ok("[]").into_fields("m").unwrap_err().to_string(), "m: must be an object, not a list");
    let map = ok(r#"{"z":"1","y":"2"}"#).into_fields("m").unwrap().into_entries();
    assert_eq!(map, [("y".to_string(), Json::from("2")), ("z".to_string(), Json::from("1"))]);
}

fn value(kind: Kind) -> proto::prost_types::Value {
    proto::prost_types::Value { kind: Some(kind) }
}

fn st(fields: Vec<(&str, Kind)>) -> Struct {
    Struct { fields: fields.into_iter().map(|(k, v)| (k.to_string(), value(v))).collect() }
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
    assert_eq!(ok(&text), struct_json(&peer));
    assert_eq!(struct_text(&Struct::default()), "{}");
}

#[test]
fn strings_are_escaped_so_any_of_them_reads_back() {
    let all_controls: String = (0u8..0x20).map(char::from).collect();
    for s in ["", "plain", "q\"uote", "back\\slash", "é😀 /", &all_controls, "\u{7f}\u{2028}"] {
        let peer = st(vec![(s, Kind::StringValue(s.to_string()))]);
        let text = struct_text(&peer);
        assert!(!text.bytes().any(|b| b < 0x20), "raw control character in {text:?}");
        assert_eq!(ok(&text), struct_json(&peer), "{s:?}");
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
    assert_eq!(struct_json(&st(vec![("n", Kind::NumberValue(2.5))])), ok(r#"{"n":2.5}"#), "read as it is");
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
        proptest::prop_assert_eq!(parse(text.as_bytes()).ok(), Some(struct_json(&peer)));
    }
}
