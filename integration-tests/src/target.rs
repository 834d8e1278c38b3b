//! The deployment a test talks to: one this harness starts (local), or one
//! already running elsewhere (external, e.g. `docker compose up`), described
//! by environment variables:
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
use crate::mesh::Mesh;
use crate::pki::{server_name, Pki};

pub struct Target {
    pub client: Admin,
    pub server: Admin,
    client_host: String,
    server_host: String,
    pki: Pki,
    log_dir: PathBuf,
    /// The deployment this target started, stopped on drop.
    _local: Option<Mesh>,
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
    /// `MESH_TARGET=external`: the deployment the variables describe; else a
    /// fresh local one.
    pub fn from_env() -> Target {
        match std::env::var("MESH_TARGET").as_deref() {
            Ok("external") => Self::external(
                &required("MESH_CLIENT_ADMIN"),
                &required("MESH_SERVER_ADMIN"),
                Path::new(&required("MESH_CERT_DIR")),
                Path::new(&required("MESH_LOG_DIR")),
            ),
            Ok("local") | Err(_) => Self::local(Mesh::start()),
            Ok(other) => panic!("MESH_TARGET must be 'external' or 'local', not {other:?}"),
        }
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
            _local: None,
        }
    }

    pub fn local(mesh: Mesh) -> Target {
        Target {
            client: mesh.client.admin.clone(),
            server: mesh.server.admin.clone(),
            client_host: "127.0.0.1".into(),
            server_host: "127.0.0.1".into(),
            pki: Pki::load(&mesh.pki.dir),
            log_dir: mesh.dir().to_path_buf(),
            _local: Some(mesh),
        }
    }

    pub fn client_listener(&self, listener: &str) -> SocketAddr {
        resolve(&format!("{}:{}", self.client_host, self.client.listener_port(listener)))
    }

    pub fn server_inbound(&self) -> SocketAddr {
        resolve(&format!("{}:{}", self.server_host, self.server.listener_port("inbound_mtls")))
    }

    /// A raw TLS connection to the server Envoy with the `raw-client` identity.
    pub async fn connect_inbound(&self, sni: &str, alpn: &[&str]) -> TlsStream<TcpStream> {
        let connector = TlsConnector::from(self.pki.client_config(Some("raw-client"), alpn));
        let tcp = TcpStream::connect(self.server_inbound()).await.expect("connect to the server Envoy");
        connector.connect(server_name(sni), tcp).await.expect("TLS handshake with the server Envoy")
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
            let text = std::fs::read_to_string(self.log_dir.join(log)).unwrap_or_default();
            let found = text.lines().filter_map(|l| serde_json::from_str(l).ok()).find(|v| pred(v));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
