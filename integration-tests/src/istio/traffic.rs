//! A server sidecar, a client sidecar and a gateway of istiod's shape for
//! one [`State`], and every kind of traffic through every path to the
//! server: what the apps exchange must arrive exactly, and no exchange
//! header or prefix may reach an app.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::plugins::Plugin;
use super::rollout::State;
use super::sidecar::{self, chain, ClientSide, Proxy, GATEWAY_PORTS, HEADLESS_PORTS, PASSTHROUGH_PORTS};
use crate::backends::Backends;
use crate::clients::{assert_same_bytes, banner_exchange, h2c_get, http1_get, HttpResponse};
use crate::envoy::{Envoy, Launch};
use crate::pki::Pki;
use crate::{grpc, pseudo_random_bytes, BANNER, LOG_WAIT};

/// Where the app's connection starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The client sidecar's listener for the service port (a ClusterIP service).
    Sidecar,
    /// The client sidecar, to a headless service (ORIGINAL_DST cluster).
    Headless,
    /// The client sidecar, to an address no service owns (`PassthroughCluster`).
    Passthrough,
    /// A client without a sidecar, straight to the pod (PERMISSIVE).
    Plaintext,
    /// The ingress gateway.
    Gateway,
}

/// What the apps speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Traffic {
    Http1,
    H2c,
    /// Unary gRPC over h2c.
    Grpc,
    /// Client-first TCP: 50 KB echoed.
    Echo,
    /// Server-first TCP: the banner, then a line echoed.
    Banner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Case {
    pub from: Origin,
    pub port: u16,
    pub traffic: Traffic,
}

impl Case {
    /// The request path (HTTP and gRPC): unique per state and case, so the
    /// server's log line of each request is found by it.
    pub fn path(&self, state: &str) -> String {
        let traffic = format!("{:?}", self.traffic).to_lowercase();
        let from = format!("{:?}", self.from).to_lowercase();
        match self.traffic {
            Traffic::Grpc => format!("/mesh.{state}.{from}.p{}/Echo", self.port),
            _ => format!("/{state}/{from}/{}/{traffic}", self.port),
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(self.traffic, Traffic::Http1 | Traffic::H2c | Traffic::Grpc)
    }
}

/// Every path and kind of traffic the tests send, by where it starts.
pub fn cases() -> Vec<Case> {
    use Origin::*;
    use Traffic::*;
    let by_port = |port: u16| -> &'static [Traffic] {
        match sidecar::port(port).app {
            sidecar::App::Http if port == 9090 => &[Grpc, H2c],
            sidecar::App::Http if port == 8000 => &[Http1, H2c, Grpc],
            sidecar::App::Http => &[Http1, H2c],
            sidecar::App::Echo => &[Echo],
            sidecar::App::Banner => &[Banner],
        }
    };
    let mut cases = Vec::new();
    let mut add = |from: Origin, ports: &[u16], only: Option<&[Traffic]>| {
        for &port in ports {
            for &traffic in only.unwrap_or(by_port(port)) {
                if by_port(port).contains(&traffic) {
                    cases.push(Case { from, port, traffic });
                }
            }
        }
    };
    let all: Vec<u16> = sidecar::PORTS.iter().map(|p| p.number).collect();
    add(Sidecar, &all, None);
    add(Headless, &HEADLESS_PORTS, None);
    // Plaintext to a PERMISSIVE port: the TLS inspector waits for the
    // client's first bytes (istiod sets no listener filter timeout), so a
    // server-first app cannot be reached without mTLS — in Istio itself.
    // Through the passthrough cluster: HTTP/1.1 as bytes.
    add(Passthrough, &PASSTHROUGH_PORTS, Some(&[Http1, Echo]));
    add(Plaintext, &all, Some(&[Http1, H2c, Grpc, Echo]));
    add(Gateway, &GATEWAY_PORTS, None);
    cases
}

/// The three proxies of one state and the apps behind the server.
pub struct Mesh {
    pub state: State,
    pub server_pod: Ipv4Addr,
    pub server: Envoy,
    pub client: Envoy,
    pub gateway: Envoy,
    pub inbound_log: PathBuf,
    pub outbound_log: PathBuf,
    pub gateway_log: PathBuf,
    _apps: Backends,
    _dir: tempfile::TempDir,
}

/// Starts Envoy on `config` without waiting for it (from this thread: an
/// Envoy dies with the thread that started it).
fn spawn(name: &str, config: &serde_json::Value, dir: &Path) -> Envoy {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(config).expect("JSON")).expect("write config");
    let vars = BTreeMap::new();
    let template = path.display().to_string();
    let launch = Launch { name, template: &template, vars: &vars, dir, wasm_log_level: "debug" };
    Envoy::spawn(&launch).unwrap_or_else(|e| panic!("{e}"))
}

impl Mesh {
    /// Starts the apps and the three proxies of `state` (they start concurrently).
    pub fn start(state: State, pki: &Pki) -> Mesh {
        let plugins: Vec<Plugin> = state.plugins();
        let dir = tempfile::Builder::new().prefix(&format!("istio-{}-", state.name)).tempdir().expect("temp dir");
        let apps = Backends::start(pki);
        let server_pod = sidecar::pod_address();
        let proxy = Proxy { plugins: &plugins, istiod: state.istiod };
        let logs = ["inbound", "outbound", "gateway"].map(|n| dir.path().join(format!("{n}-access.log")));
        let configs = [
            ("server-sidecar", sidecar::inbound(proxy, pki, server_pod, &apps, &logs[0])),
            ("client-sidecar", sidecar::outbound(proxy, ClientSide::Sidecar, pki, server_pod, &logs[1])),
            ("gateway", sidecar::outbound(proxy, ClientSide::Gateway, pki, server_pod, &logs[2])),
        ];
        let [server, client, gateway] =
            configs.map(|(name, config)| spawn(name, &config, dir.path())).map(|mut envoy| {
                envoy.wait_ready().unwrap_or_else(|e| panic!("{e}"));
                envoy
            });
        let [inbound_log, outbound_log, gateway_log] = logs;
        Mesh {
            state,
            server_pod,
            server,
            client,
            gateway,
            inbound_log,
            outbound_log,
            gateway_log,
            _apps: apps,
            _dir: dir,
        }
    }

    /// Where the app connects for `case`.
    pub fn address(&self, case: &Case) -> SocketAddr {
        let local =
            |envoy: &Envoy, listener: String| SocketAddr::from(([127, 0, 0, 1], envoy.listener_port(&listener)));
        match case.from {
            Origin::Sidecar => local(&self.client, format!("0.0.0.0_{}", case.port)),
            Origin::Headless => local(&self.client, format!("headless_{}", case.port)),
            Origin::Passthrough => local(&self.client, format!("passthrough_{}", case.port)),
            Origin::Gateway => local(&self.gateway, format!("gateway_{}", case.port)),
            Origin::Plaintext => SocketAddr::from((self.server_pod, case.port)),
        }
    }

    /// Runs every case concurrently; the error of each that failed.
    pub async fn run(&self, cases: &[Case]) -> BTreeMap<Case, Result<(), String>> {
        let tasks: Vec<_> = cases
            .iter()
            .map(|case| {
                let (case, addr, path) = (*case, self.address(case), case.path(self.state.name));
                (case, tokio::spawn(async move { one(case, addr, &path).await }))
            })
            .collect();
        let mut out = BTreeMap::new();
        for (case, task) in tasks {
            let result = match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(panic_text(e.into_panic())),
                Err(e) => Err(e.to_string()),
            };
            out.insert(case, result);
        }
        out
    }

    /// The inbound access-log lines of `cases`' HTTP requests, by case, once
    /// all are written (a request the HTTP chains never saw has none).
    pub fn inbound_http_lines(&self, cases: &[Case]) -> BTreeMap<Case, serde_json::Value> {
        let wanted: Vec<&Case> = cases.iter().filter(|c| c.is_http()).collect();
        let deadline = std::time::Instant::now() + LOG_WAIT;
        loop {
            let lines = read_log(&self.inbound_log);
            let found: BTreeMap<Case, serde_json::Value> = wanted
                .iter()
                .filter_map(|case| {
                    let path = case.path(self.state.name);
                    lines.iter().find(|l| l["path"] == path.as_str()).map(|l| (**case, l.clone()))
                })
                .collect();
            if found.len() == wanted.len() || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

pub fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits until `path` has `count` lines (or [`LOG_WAIT`] passed).
pub fn wait_log(path: &Path, count: usize) -> Vec<serde_json::Value> {
    wait_log_where(path, count, |_| true)
}

/// Waits until `path` has `count` lines that `keep` keeps (or [`LOG_WAIT`]
/// passed): a connection's line is written at its close, after the test's
/// client saw its last byte.
pub fn wait_log_where(path: &Path, count: usize, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let lines: Vec<serde_json::Value> = read_log(path).into_iter().filter(|l| keep(l)).collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn exchange_headers<'a>(names: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    names.filter(|n| n.starts_with("x-envoy-peer-metadata")).collect()
}

fn check_http(response: &HttpResponse, path: &str) -> Result<(), String> {
    if response.status != 200 {
        return Err(format!("status {}: {}", response.status, response.body));
    }
    let leaked = exchange_headers(response.headers.keys());
    if !leaked.is_empty() {
        return Err(format!("exchange headers reached the client app: {leaked:?}"));
    }
    let seen = response.json();
    if seen["path"] != path {
        return Err(format!("the app saw path {} for {path}", seen["path"]));
    }
    let at_app: Vec<String> = seen["headers"].as_object().into_iter().flat_map(|h| h.keys().cloned()).collect();
    let leaked = exchange_headers(at_app.iter());
    if !leaked.is_empty() {
        return Err(format!("exchange headers reached the server app: {leaked:?}"));
    }
    Ok(())
}

/// One case, as the app sees it.
async fn one(case: Case, addr: SocketAddr, path: &str) -> Result<(), String> {
    match case.traffic {
        Traffic::Http1 => check_http(&http1_get(addr, "1.1", path).await, path),
        Traffic::H2c => check_http(&h2c_get(addr, path).await, path),
        Traffic::Grpc => {
            let message = pseudo_random_bytes(300, u64::from(case.port));
            let response = grpc::call(addr, path, &message, &[]).await;
            if response.status != 200 || response.grpc_status() != Some("0") {
                return Err(format!("gRPC: {response:?}"));
            }
            if response.body != grpc::frame(&message) {
                return Err(format!("gRPC: the echoed message differs: {} bytes", response.body.len()));
            }
            let leaked = exchange_headers(response.headers.keys().chain(response.trailers.keys()));
            if !leaked.is_empty() {
                return Err(format!("exchange headers reached the client app: {leaked:?}"));
            }
            Ok(())
        }
        Traffic::Echo => {
            let payload = pseudo_random_bytes(50_000, u64::from(case.port) + case.from as u64);
            let echoed = echo_then_close(addr, &payload).await;
            assert_same_bytes(&echoed, &payload, "TCP echo");
            Ok(())
        }
        Traffic::Banner => {
            let (banner, echo) = banner_exchange(addr, b"QUIT\r\n").await;
            if banner != BANNER {
                return Err(format!("the app read {:?} instead of the banner", String::from_utf8_lossy(&banner)));
            }
            if echo != b"QUIT\r\n" {
                return Err(format!("echo after the banner: {:?}", String::from_utf8_lossy(&echo)));
            }
            Ok(())
        }
    }
}

/// Sends `payload`, reads its echo, then closes: a client that half-closes
/// while the inbound's listener filters still inspect its first bytes is
/// closed by Envoy (`downstream_listener_filter_remote_close`), with or
/// without our filters, so the app here waits for its answer first.
async fn echo_then_close(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut reader, mut writer) = stream.into_split();
    let data = payload.to_vec();
    let write = tokio::spawn(async move {
        writer.write_all(&data).await.expect("write");
        writer
    });
    let mut received = vec![0u8; payload.len()];
    tokio::time::timeout(crate::clients::STEP_TIMEOUT, reader.read_exact(&mut received))
        .await
        .expect("echo timed out")
        .expect("read");
    let mut writer = write.await.expect("writer");
    writer.shutdown().await.expect("close");
    received
}

/// The chain kinds that handle HTTP as HTTP on the server.
pub fn is_http_chain(line: &serde_json::Value) -> bool {
    line["chain"] == chain::MTLS_HTTP || line["chain"] == chain::PLAINTEXT_HTTP
}
