//! filter-common's configuration reader (`schema::parse`: serde_json, refusing
//! repeated keys and nesting past `MAX_DEPTH`) against plain serde_json as
//! the reference. Oracles: a text serde_json refuses, we refuse; a text
//! both read, both read to the same value; a text only serde_json reads is
//! one we refuse for the two documented reasons only — nesting past our
//! bound (checked on serde_json's value) or a repeated key (which serde_json
//! drops silently).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use filter_common::schema::{self, MAX_DEPTH};

/// Containers nested in one another, as our bound counts them.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    match (schema::parse(data), serde_json::from_slice::<Value>(data)) {
        (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs),
        (Err(e), Ok(theirs)) => {
            let e = e.to_string();
            let deep = e.contains("nested deeper than") && depth(&theirs) > MAX_DEPTH;
            assert!(deep || e.contains("duplicate field `"), "we refuse ({e}) what serde_json reads");
        }
        (Ok(ours), Err(e)) => panic!("we read {ours:?} where serde_json refuses: {e}"),
        (Err(_), Err(_)) => {}
    }
});
