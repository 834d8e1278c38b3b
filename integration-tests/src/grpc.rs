//! Unary gRPC over h2c, written from the gRPC wire spec (length-prefixed
//! messages, `grpc-status` in trailers, or in the headers of a
//! Trailers-Only response): the HTTP backend's answer and the app's call.
//! The message bytes are opaque here; the backend echoes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::clients::STEP_TIMEOUT;

/// A path containing `/grpc-status/<n>` makes the backend answer
/// Trailers-Only with `grpc-status: <n>` (what gRPC servers send for errors).
pub const STATUS_PATH: &str = "/grpc-status/";

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}

/// `message` framed as one uncompressed gRPC message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A response body: data, then trailers (or neither).
pub struct Reply {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Reply {
    /// A plain body, no trailers.
    pub fn data(data: Bytes) -> Reply {
        Reply { data: Some(data), trailers: None }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        // Exact without trailers, so HTTP/1.1 answers carry a Content-Length.
        match (&self.data, &self.trailers) {
            (Some(data), None) => hyper::body::SizeHint::with_exact(data.len() as u64),
            (None, None) => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// The backend's answer to a unary call: the request's message echoed,
/// `grpc-status: 0` in trailers; or Trailers-Only for a status path.
pub async fn answer(req: Request<Incoming>) -> Response<Reply> {
    let path = req.uri().path().to_string();
    let builder = Response::builder().header("content-type", "application/grpc");
    if let Some(code) = path.split(STATUS_PATH).nth(1) {
        let code: String = code.chars().take_while(char::is_ascii_digit).collect();
        return builder
            .header("grpc-status", code)
            .header("grpc-message", "from the test backend")
            .body(Reply { data: None, trailers: None })
            .expect("response");
    }
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("header value"));
    builder.body(Reply { data: Some(body), trailers: Some(trailers) }).expect("response")
}

/// What the app got back.
#[derive(Debug)]
pub struct GrpcResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub trailers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl GrpcResponse {
    /// `grpc-status` from the trailers, else from the headers (Trailers-Only).
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers.get("grpc-status").or_else(|| self.headers.get("grpc-status")).map(String::as_str)
    }
}

fn to_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// One unary call over h2c: `message` to `path`, with `headers`.
pub async fn call(addr: SocketAddr, path: &str, message: &[u8], headers: &[(&str, &str)]) -> GrpcResponse {
    call_with(addr, path, &[message], headers).await
}

/// One call over h2c carrying `messages` (the backend echoes the body: as
/// many messages come back).
pub async fn call_with(addr: SocketAddr, path: &str, messages: &[&[u8]], headers: &[(&str, &str)]) -> GrpcResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://app.local{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
    let req = req.body(http_body_util::Full::new(Bytes::from(body))).expect("request");
    let response =
        tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req)).await.expect("gRPC call timed out").expect("send");
    let status = response.status().as_u16();
    let headers = to_map(response.headers());
    let collected = tokio::time::timeout(STEP_TIMEOUT, response.into_body().collect())
        .await
        .expect("gRPC body timed out")
        .expect("body");
    let trailers = collected.trailers().map(to_map).unwrap_or_default();
    GrpcResponse { status, headers, trailers, body: collected.to_bytes().to_vec() }
}
