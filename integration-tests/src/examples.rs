//! The examples (`examples/inbound.yaml`, `examples/outbound.yaml`) run as
//! a user runs them, from the repository root with `examples/make-certs.sh`'s
//! certificates: only the ports (so tests can run side by side) and the
//! certificate directory (so nothing is written into the checkout) are
//! substituted, each checked to occur where the examples say. A test may
//! change the text first, to make a user's mistake in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::backends::Backends;
use crate::envoy::{Envoy, Launch};
use crate::paths::workspace_root;
use crate::pki::Pki;

const CERTS: &str = "examples/certs/";

/// `text` with each `(from, to, times)` replaced, failing unless `from`
/// occurs exactly `times` times (so the test follows the examples).
pub fn substituted(text: &str, replacements: &[(&str, String, usize)]) -> String {
    let mut out = text.to_string();
    for (from, to, times) in replacements {
        let found = out.matches(from).count();
        assert_eq!(found, *times, "{from:?} occurs {found} times in the example, expected {times}");
        out = out.replace(from, to);
    }
    out
}

/// An example file's text as shipped.
pub fn read(file: &str) -> String {
    std::fs::read_to_string(workspace_root().join("examples").join(file)).expect("read example")
}

/// `text` with `from` replaced by `to`; `from` must occur exactly once.
pub fn with(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in the example");
    text.replacen(from, to, 1)
}

fn start(name: &str, text: &str, dir: &Path, args: &[&str]) -> (Envoy, PathBuf) {
    let config = dir.join(format!("{name}.example.yaml"));
    std::fs::write(&config, text).expect("write config");
    let vars = BTreeMap::new();
    let template = config.display().to_string();
    let launch = Launch { name, template: &template, vars: &vars, dir, wasm_log_level: "info" };
    (Envoy::start_in_with_args(&launch, &workspace_root(), args).unwrap_or_else(|e| panic!("{e}")), config)
}

/// The two example Envoys and the app behind the inbound one.
pub struct Examples {
    pub inbound: Envoy,
    pub outbound: Envoy,
    /// The configurations as run (ports and certificate paths substituted).
    pub inbound_config: PathBuf,
    pub outbound_config: PathBuf,
    pub app: Backends,
    pub dir: tempfile::TempDir,
}

impl Examples {
    /// The examples as shipped.
    pub fn start() -> Examples {
        Self::start_changed(read("inbound.yaml"), read("outbound.yaml"))
    }

    /// The examples after a change to their text.
    pub fn start_changed(inbound: String, outbound: String) -> Examples {
        Self::start_changed_with(inbound, outbound, &[])
    }

    /// [`Examples::start_changed`] with more Envoy arguments for both
    /// (`--concurrency 8`).
    pub fn start_changed_with(inbound: String, outbound: String, args: &[&str]) -> Examples {
        let root = workspace_root();
        let dir = tempfile::Builder::new().prefix("examples-").tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
        let made = std::process::Command::new(root.join("examples/make-certs.sh"))
            .arg(&certs)
            .output()
            .expect("run make-certs.sh");
        assert!(made.status.success(), "make-certs.sh failed: {}", String::from_utf8_lossy(&made.stderr));
        let certs = format!("{}/", certs.display());
        // The local app behind the inbound Envoy (it answers with what it saw).
        let app = Backends::start(&Pki::generate(&dir.path().join("app-pki")));
        let inbound_text = substituted(
            &inbound,
            &[
                ("port_value: 15100", "port_value: 0".into(), 1),
                ("port_value: 15006", "port_value: 0".into(), 1),
                ("port_value: 8080", format!("port_value: {}", app.http.port()), 1),
                (CERTS, certs.clone(), 6),
            ],
        );
        let (inbound, inbound_config) = start("inbound", &inbound_text, dir.path(), args);
        let inbound_port = inbound.listener_port("inbound");
        let outbound_text = substituted(
            &outbound,
            &[
                ("port_value: 15000", "port_value: 0".into(), 1),
                ("port_value: 15001", "port_value: 0".into(), 1),
                ("port_value: 15002", "port_value: 0".into(), 1),
                ("port_value: 15006", format!("port_value: {inbound_port}"), 2),
                (CERTS, certs.clone(), 6),
            ],
        );
        let (outbound, outbound_config) = start("outbound", &outbound_text, dir.path(), args);
        Examples { inbound, outbound, inbound_config, outbound_config, app, dir }
    }

    /// The outbound's HTTP listener (the app's HTTP goes there).
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.outbound.listener_port("outbound_http")))
    }

    /// The outbound's TCP listener.
    pub fn tcp(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.outbound.listener_port("outbound_tcp")))
    }
}
