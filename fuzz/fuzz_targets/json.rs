//! wasm-host's JSON reader against serde_json as the reference. Oracles:
//! both accept the same texts — except nesting deeper than our bound and
//! numbers at the edge of the f64 range, which we may refuse — and read
//! them to the same values (serde_json keeps the last of a repeated key;
//! we keep all, and `Fields` refuses them, so compare with the last).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wasm_host::json::{self, Json, MAX_DEPTH};

fn close(a: f64, b: f64) -> bool {
    let diff = (a - b).abs();
    diff <= 1e-12 * a.abs().max(b.abs()) || diff < 1e-300
}

fn same(ours: &Json, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Bool(b)) => a == b,
        (Json::Number(a), Value::Number(b)) => b.as_f64().is_some_and(|b| close(*a, b)),
        (Json::String(a), Value::String(b)) => a == b,
        (Json::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (Json::Object(a), Value::Object(b)) => {
            let last = |key: &String| a.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
            let keys: std::collections::BTreeSet<&String> = a.iter().map(|(k, _)| k).collect();
            keys.len() == b.len() && keys.iter().all(|k| last(k).zip(b.get(*k)).is_some_and(|(x, y)| same(x, y)))
        }
        _ => false,
    }
}

/// Containers nested in one another, as our bound counts them.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_huge_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|n| n.abs() > 1e300),
        Value::Array(items) => items.iter().any(has_huge_number),
        Value::Object(fields) => fields.values().any(has_huge_number),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    match (json::parse(data), serde_json::from_slice::<Value>(data)) {
        (Ok(ours), Ok(theirs)) => assert!(same(&ours, &theirs), "{ours:?} vs {theirs:?}"),
        (Err(e), Ok(theirs)) => {
            assert!(depth(&theirs) > MAX_DEPTH || has_huge_number(&theirs), "we refuse ({e}) what serde_json reads");
        }
        (Ok(ours), Err(e)) => panic!("we read {ours:?} where serde_json refuses: {e}"),
        (Err(_), Err(_)) => {}
    }
});
