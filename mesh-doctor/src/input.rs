//! Where a configuration comes from: a file (YAML or JSON), standard input
//! (`-`), or a live Envoy's admin address (`http://host:port`, whose
//! `/config_dump?include_eds` is fetched).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::model::Proxy;

/// Reads one configuration.
pub fn load(source: &str) -> Result<Proxy, String> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("standard input: {e}"))?;
        text
    } else if let Some(address) = source.strip_prefix("http://") {
        fetch_config_dump(address.trim_end_matches('/'))?
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))?
    };
    parse(source, &text)
}

/// A configuration's text (YAML, of which JSON is a subset).
pub fn parse(source: &str, text: &str) -> Result<Proxy, String> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("{source}: not YAML or JSON: {e}"))?;
    let value = serde_json::to_value(yaml).map_err(|e| format!("{source}: {e}"))?;
    Proxy::from_value(source, &value).map_err(|e| format!("{source}: {e}"))
}

/// GET `/config_dump?include_eds` from an admin address (HTTP/1.1, no TLS:
/// Envoy's admin endpoint).
fn fetch_config_dump(address: &str) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("http://{address}: {e}");
    let mut stream = TcpStream::connect(address).map_err(|e| fail(&e))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| fail(&e))?;
    write!(stream, "GET /config_dump?include_eds HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(&e))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| fail(&e))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| fail(&"not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(fail(&format!("/config_dump answered {status}")));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return dechunk(body).ok_or_else(|| fail(&"malformed chunked body"));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}
