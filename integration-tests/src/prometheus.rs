//! A real Prometheus server (Debian's binary, fetched by
//! `scripts/setup.sh --tests` into `.tools/prometheus`) scraping Envoys'
//! `/stats/prometheus`, and its query API: what a user's monitoring does
//! with Istio's standard metrics. A child process killed by PID on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::http1_get;

/// `$PROMETHEUS_BIN`, else where `scripts/setup.sh --tests` puts it.
pub fn prometheus_bin() -> PathBuf {
    crate::paths::program(
        "PROMETHEUS_BIN",
        ".tools/prometheus/usr/bin/prometheus",
        "run scripts/setup.sh --tests (fetches Debian's prometheus binary)",
    )
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping each admin address's `/stats/prometheus`
    /// every second; returns once it is ready.
    pub async fn start(targets: &[SocketAddr], dir: &Path) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs: [{{ targets: [{}] }}]\n",
            targets.join(", ")
        );
        Self::start_with(&config, dir).await
    }

    /// Starts Prometheus on a configuration of the user's (its text);
    /// returns once it is ready.
    pub async fn start_with(config_text: &str, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text).expect("write prometheus.yml");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], crate::ports::reserve_one()));
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && http1_get(addr, "1.0", "/-/ready").await.status == 200
            {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "Prometheus not ready in 30 s:\n{}", prometheus.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query (`/api/v1/query`): the `data.result` array.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let response = http1_get(self.addr, "1.0", &format!("/api/v1/query?query={encoded}")).await;
        let body = response.json();
        assert_eq!(body["status"], "success", "query {promql}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
