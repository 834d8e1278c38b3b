//! How a test reaches a deployment — the only way: one this harness starts
//! (`Mesh` carries its `Target`), or one already running elsewhere
//! (external, e.g. `docker compose up`), described by environment variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `MESH_TARGET=external` | use an existing deployment instead of starting one |
//! | `MESH_CLIENT_ADMIN` | client Envoy admin endpoint, `host:port` (its listeners are reached on that host) |
//! | `MESH_SERVER_ADMIN` | server Envoy admin endpoint, `host:port` |
//! | `MESH_CERT_DIR` | the deployment's certificates (`ca.crt`, `raw-client.crt/.key`, ...) |
//! | `MESH_LOG_DIR` | the directory the Envoys write their access logs to |

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::envoy::Admin;
use crate::pki::{server_name, Pki};

/// A deployment's addresses, certificates and logs.
#[derive(Clone)]
pub struct Target {
    pub client: Admin,
    pub server: Admin,
    client_host: String,
    server_host: String,
    pub pki: Pki,
    log_dir: PathBuf,
    /// A deployment this target keeps running (the one
    /// [`crate::mesh::target_from_env`] started), stopped on its last drop.
    _started: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

fn required(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("MESH_TARGET=external needs {var} (see integration-tests/src/target.rs)"))
}

fn resolve(host_port: &str) -> SocketAddr {
    host_port
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("cannot resolve {host_port}: {e}"))
        .find(SocketAddr::is_ipv4)
        .unwrap_or_else(|| panic!("{host_port} has no IPv4 address"))
}

fn host_of(host_port: &str) -> String {
    host_port.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| host_port.to_string())
}

impl Target {
    /// The deployment `MESH_TARGET=external` describes, from the `MESH_*`
    /// variables (see the module docs).
    pub fn from_variables() -> Target {
        Self::external(
            &required("MESH_CLIENT_ADMIN"),
            &required("MESH_SERVER_ADMIN"),
            Path::new(&required("MESH_CERT_DIR")),
            Path::new(&required("MESH_LOG_DIR")),
        )
    }

    pub fn external(client_admin: &str, server_admin: &str, cert_dir: &Path, log_dir: &Path) -> Target {
        let client = Admin { name: "client".into(), addr: resolve(client_admin) };
        let server = Admin { name: "server".into(), addr: resolve(server_admin) };
        for admin in [&client, &server] {
            assert!(admin.is_ready(), "the {} Envoy at {} is not ready", admin.name, admin.addr);
        }
        Target {
            client,
            server,
            client_host: host_of(client_admin),
            server_host: host_of(server_admin),
            pki: Pki::load(cert_dir),
            log_dir: log_dir.to_path_buf(),
            _started: None,
        }
    }

    /// This target, keeping `deployment` running as long as it lives.
    pub(crate) fn keeping(self, deployment: std::sync::Arc<dyn std::any::Any + Send + Sync>) -> Target {
        Target { _started: Some(deployment), ..self }
    }

    /// The target of Envoys this harness started on loopback.
    pub(crate) fn loopback(client: Admin, server: Admin, pki: Pki, log_dir: &Path) -> Target {
        Target {
            client,
            server,
            client_host: "127.0.0.1".into(),
            server_host: "127.0.0.1".into(),
            pki,
            log_dir: log_dir.to_path_buf(),
            _started: None,
        }
    }

    /// Address of one of the client Envoy's listeners (the local app's view).
    pub fn client_listener(&self, listener: &str) -> SocketAddr {
        resolve(&format!("{}:{}", self.client_host, self.client.listener_port(listener)))
    }

    /// Address of the server Envoy's mTLS listener.
    pub fn server_inbound(&self) -> SocketAddr {
        resolve(&format!("{}:{}", self.server_host, self.server.listener_port("inbound_mtls")))
    }

    /// A raw TLS connection to the server Envoy, as a mesh client with the
    /// `raw-client` identity would open it.
    pub async fn connect_inbound(&self, sni: &str, alpn: &[&str]) -> TlsStream<TcpStream> {
        self.connect_inbound_as(Some("raw-client"), sni, alpn).await
    }

    /// [`Target::connect_inbound`] with another certificate of the PKI
    /// (`plain`: valid for the server, but no mesh identity; `None`: none).
    pub async fn connect_inbound_as(
        &self,
        certificate: Option<&str>,
        sni: &str,
        alpn: &[&str],
    ) -> TlsStream<TcpStream> {
        let connector = TlsConnector::from(self.pki.client_config(certificate, alpn));
        let tcp = TcpStream::connect(self.server_inbound()).await.expect("connect to the server Envoy");
        tcp.set_nodelay(true).expect("nodelay");
        connector.connect(server_name(sni), tcp).await.expect("TLS handshake with the server Envoy")
    }

    pub fn access_log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(name)
    }

    /// The JSON lines of an access log written so far: complete lines only
    /// (Envoy's log flusher may be in the middle of one; every line it
    /// finishes ends with a newline).
    pub fn access_log(&self, name: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.access_log_path(name)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits until an access log has at least `count` lines (Envoy writes a
    /// TCP connection's line when it closes).
    pub fn wait_access_log(&self, name: &str, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.access_log(name);
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an access-log line matching `pred`.
    pub fn find_log_line(
        &self,
        log: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.access_log(log).into_iter().find(|v| pred(v));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
