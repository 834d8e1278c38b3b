//! The servers behind the Envoys, each on 127.0.0.1 with a port chosen at run
//! time, all on one runtime owned by [`Backends`] (stopped on drop).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::pki::Pki;
use crate::BANNER;

/// What a recording server received, one entry per connection (in accept order).
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);

impl Recorded {
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.0.lock().expect("recorder lock").clone()
    }
}

pub struct Backends {
    runtime: Option<tokio::runtime::Runtime>,
    /// Echoes everything; half-closes after the client does.
    pub echo: SocketAddr,
    /// Server-first: writes [`BANNER`] on accept, then echoes.
    pub banner: SocketAddr,
    /// HTTP/1.x and h2c; answers with JSON describing the request.
    pub http: SocketAddr,
    /// Non-mesh HTTPS that only speaks h2 (like many gRPC servers): rustls
    /// refuses a ClientHello whose ALPN list lacks h2 with
    /// `no_application_protocol` — what Istio users hit without the opt-out.
    pub plain_https: SocketAddr,
    /// Non-mesh TLS (DNS-only certificate, no ALPN) that echoes and records.
    pub plain_tls: SocketAddr,
    pub plain_tls_received: Recorded,
    /// Mesh-like TLS peer (SPIFFE certificate, ALPN istio-peer-exchange) that
    /// echoes and records: what a client-side Envoy really puts on the wire.
    pub mesh_recorder: SocketAddr,
    pub mesh_recorder_received: Recorded,
}

/// Where the backends listen. Port 0 = chosen by the system.
#[derive(Clone, Debug)]
pub struct BackendPorts {
    pub host: String,
    pub echo: u16,
    pub banner: u16,
    pub http: u16,
    pub plain_https: u16,
    pub plain_tls: u16,
    pub mesh_recorder: u16,
}

impl BackendPorts {
    /// 127.0.0.1 with ports chosen at run time (the local harness).
    pub fn ephemeral() -> Self {
        BackendPorts {
            host: "127.0.0.1".into(),
            echo: 0,
            banner: 0,
            http: 0,
            plain_https: 0,
            plain_tls: 0,
            mesh_recorder: 0,
        }
    }

    /// Fixed ports (docker-compose): 9000 echo, 9001 banner, 9002 http,
    /// 9443 plain https, 9444 plain tls, 9445 mesh recorder.
    pub fn fixed(host: &str) -> Self {
        BackendPorts {
            host: host.into(),
            echo: 9000,
            banner: 9001,
            http: 9002,
            plain_https: 9443,
            plain_tls: 9444,
            mesh_recorder: 9445,
        }
    }
}

impl Backends {
    pub fn start(pki: &Pki) -> Backends {
        Self::start_on(pki, BackendPorts::ephemeral())
    }

    pub fn start_on(pki: &Pki, ports: BackendPorts) -> Backends {
        let plain_https_tls = TlsAcceptor::from(pki.server_config("plain", &["h2"]));
        let plain_tls = TlsAcceptor::from(pki.server_config("plain", &[]));
        let recorder_tls = TlsAcceptor::from(pki.server_config("recorder", &["istio-peer-exchange"]));
        let plain_tls_received = Recorded::default();
        let mesh_recorder_received = Recorded::default();
        let (plain_rec, mesh_rec) = (plain_tls_received.clone(), mesh_recorder_received.clone());
        // The runtime is built and the listeners bound on a thread of its
        // own, so this works from sync code and from inside async tests alike.
        let (runtime, (echo, banner, http, plain_https, plain_tls, mesh_recorder)) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("backends")
                .build()
                .expect("backend runtime");
            let addrs = runtime.block_on(async {
                let at = |port: u16| format!("{}:{port}", ports.host);
                (
                    serve(&at(ports.echo), |s| echo(s, None)).await,
                    serve(&at(ports.banner), |s| echo(s, Some(BANNER))).await,
                    serve(&at(ports.http), |s| http(s, None)).await,
                    serve_tls(&at(ports.plain_https), plain_https_tls, http).await,
                    serve_recording(&at(ports.plain_tls), plain_tls, plain_rec).await,
                    serve_recording(&at(ports.mesh_recorder), recorder_tls, mesh_rec).await,
                )
            });
            (runtime, addrs)
        })
        .join()
        .expect("backend start");
        Backends {
            runtime: Some(runtime),
            echo,
            banner,
            http,
            plain_https,
            plain_tls,
            plain_tls_received,
            mesh_recorder,
            mesh_recorder_received,
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve<F, Fut>(at: &str, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(at).await.unwrap_or_else(|e| panic!("bind backend {at}: {e}"));
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(handler(stream));
        }
    });
    addr
}

async fn serve_tls<F, Fut>(at: &str, acceptor: TlsAcceptor, handler: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>, Option<String>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    serve(at, move |stream| {
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        async move {
            // A refused handshake (e.g. no common ALPN) just ends the connection.
            if let Ok(tls) = acceptor.accept(stream).await {
                let alpn = tls.get_ref().1.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned());
                handler(tls, alpn).await;
            }
        }
    })
    .await
}

async fn serve_recording(at: &str, acceptor: TlsAcceptor, recorded: Recorded) -> SocketAddr {
    serve_tls(at, acceptor, move |mut tls, _alpn| {
        let recorded = recorded.clone();
        async move {
            let index = {
                let mut all = recorded.0.lock().expect("recorder lock");
                all.push(Vec::new());
                all.len() - 1
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(conn) = recorded.0.lock().expect("recorder lock").get_mut(index) {
                            conn.extend_from_slice(&buf[..n]);
                        }
                        if tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tls.shutdown().await;
        }
    })
    .await
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, greeting: Option<&'static [u8]>) {
    if let Some(greeting) = greeting {
        if stream.write_all(greeting).await.is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

async fn http<S>(stream: S, alpn: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let alpn = alpn.clone();
        async move {
            if crate::grpc::is_grpc(req.headers()) {
                return Ok::<_, Infallible>(crate::grpc::answer(req).await);
            }
            // Read the whole request before answering, as an app does: an
            // answer sent first would end the stream with its body unsent.
            let (parts, body) = req.into_parts();
            let _ = http_body_util::BodyExt::collect(body).await;
            Ok::<_, Infallible>(describe(&parts, alpn.as_deref()))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

pub fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// A path containing this makes the HTTP backend answer with exchange
/// headers of its own, as an Istio proxy (or any app that sets them) would:
/// [`ANSWERED_PEER_METADATA`] and [`ANSWERED_PEER_ID`].
pub const ANSWERS_AS_A_PEER: &str = "/answers-as-a-peer";
/// The `x-envoy-peer-metadata-id` such an answer carries.
pub const ANSWERED_PEER_ID: &str = "sidecar~10.9.0.8~answering-app-0.answering-ns~answering-ns.svc.cluster.local";

/// The `x-envoy-peer-metadata` such an answer carries: a valid Istio value
/// (standard base64 of a workload Struct), so only its sender is wrong.
pub fn answered_peer_metadata() -> String {
    use crate::wire::{strukt, V};
    use base64::Engine;
    let workload = strukt(&[
        ("NAME", V::Str("answering-app-0")),
        ("NAMESPACE", V::Str("answering-ns")),
        ("CLUSTER_ID", V::Str("Kubernetes")),
        ("LABELS", V::Struct(vec![("app", V::Str("answering-app"))])),
    ]);
    base64::engine::general_purpose::STANDARD.encode(workload)
}

/// The backend's answer: which protocol reached it, and with which headers.
fn describe(req: &hyper::http::request::Parts, alpn: Option<&str>) -> Response<crate::grpc::Reply> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    let body = serde_json::json!({
        "protocol": version_name(req.version),
        "path": req.uri.path(),
        "tls_alpn": alpn,
        "headers": headers,
    });
    let mut response = Response::builder().header("content-type", "application/json");
    if req.uri.path().contains(ANSWERS_AS_A_PEER) {
        response = response
            .header("x-envoy-peer-metadata", answered_peer_metadata())
            .header("x-envoy-peer-metadata-id", ANSWERED_PEER_ID);
    }
    response.body(crate::grpc::Reply::data(Bytes::from(body.to_string()))).expect("response")
}
