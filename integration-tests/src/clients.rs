//! What the local app does in the tests and the demo: plain TCP echo,
//! HTTP/1.0, HTTP/1.1 and h2c requests through the client Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for any single network step in the tests.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `payload` through `addr` while reading concurrently, half-closes,
/// and returns everything read until the other side closes.
pub async fn echo_through(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut reader, mut writer) = stream.into_split();
    let data = payload.to_vec();
    let write = tokio::spawn(async move {
        writer.write_all(&data).await.expect("write");
        writer.shutdown().await.expect("half-close");
    });
    let mut received = Vec::with_capacity(payload.len());
    tokio::time::timeout(STEP_TIMEOUT, reader.read_to_end(&mut received)).await.expect("echo timed out").expect("read");
    write.await.expect("writer");
    received
}

/// Panics with the first differing offset rather than dumping megabytes.
pub fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    if got != expected {
        let first = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
        panic!("{what}: got {} bytes, expected {}; first difference at offset {first}", got.len(), expected.len());
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub version: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.0 or HTTP/1.1 request (`version` is "1.0" or "1.1") on a new
/// connection that closes after the response.
pub async fn http1_get(addr: SocketAddr, version: &str, path: &str) -> HttpResponse {
    http1_get_with(addr, version, path, &[]).await
}

/// [`http1_get`] with extra request headers.
pub async fn http1_get_with(addr: SocketAddr, version: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(http1_request(version, path, headers).as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut raw)).await.expect("response timed out").expect("read");
    parse_http1(&String::from_utf8_lossy(&raw))
}

/// The text of a GET that asks the server to close after answering.
pub fn http1_request(version: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = if version == "1.0" {
        format!("GET {path} HTTP/1.0\r\nHost: app.local\r\n")
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n")
    };
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Parses a complete HTTP/1 response with a Content-Length or close-delimited body.
pub fn parse_http1(raw: &str) -> HttpResponse {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {raw:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse { status, version, headers, body: body.to_string() }
}

/// A server-first exchange as an app sees it: reads the banner before
/// writing anything, then sends `reply` and reads its echo. Returns (banner, echo).
pub async fn banner_exchange(addr: SocketAddr, reply: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut app = TcpStream::connect(addr).await.expect("connect");
    let mut banner = vec![0u8; crate::BANNER.len()];
    tokio::time::timeout(STEP_TIMEOUT, app.read_exact(&mut banner)).await.expect("banner timed out").expect("read");
    app.write_all(reply).await.expect("write");
    let mut echo = vec![0u8; reply.len()];
    tokio::time::timeout(STEP_TIMEOUT, app.read_exact(&mut echo)).await.expect("echo timed out").expect("read");
    (banner, echo)
}

/// Several HTTP/1.1 requests on one keep-alive connection.
pub async fn http11_keepalive(addr: SocketAddr, paths: &[String]) -> Vec<HttpResponse> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for path in paths {
        // The previous response must be fully read before the next request.
        sender.ready().await.expect("connection ready");
        let req = hyper::Request::get(path.as_str())
            .header("host", "app.local")
            .body(Empty::<Bytes>::new())
            .expect("request");
        out.push(
            collect(
                tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req)).await.expect("timeout").expect("send"),
            )
            .await,
        );
    }
    out
}

/// One h2c (HTTP/2 with prior knowledge) request.
pub async fn h2c_get(addr: SocketAddr, path: &str) -> HttpResponse {
    h2c_get_with(addr, path, &[]).await
}

/// [`h2c_get`] with extra request headers.
pub async fn h2c_get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::get(format!("http://app.local{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::<Bytes>::new()).expect("request");
    collect(tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req)).await.expect("timeout").expect("send")).await
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> HttpResponse {
    let status = response.status().as_u16();
    let version = crate::backends::version_name(response.version()).to_string();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    HttpResponse { status, version, headers, body: String::from_utf8_lossy(&body).into_owned() }
}
