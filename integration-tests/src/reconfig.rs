//! Reconfiguration under traffic: a client and a server Envoy whose
//! listeners (both) and clusters (client) come from files
//! (`path_config_source`), rewritten again and again while HTTP/1.1, h2c
//! and TCP traffic runs through both forms of the exchange — and, in the
//! same Envoys under the same updates, through listeners and clusters
//! without our filters (the baseline: what Envoy's own draining costs).
//!
//! Each update is a new generation: every listener and cluster is replaced
//! (a generation in their metadata), every plugin configuration changes (the
//! workload metadata each side sends carries the generation as a label) and
//! the mesh clusters' metadata changes (alpn-filter's lists start with the
//! generation's token, which picks the server's chain of that generation).
//! After each update a probe checks that the new generation is in effect on
//! both sides: the TCP form's and the HTTP form's stored peers carry it, and
//! an HTTP request reaches the server's chain of that generation through
//! the list alpn-filter took from the new cluster's metadata. The templates
//! are in `envoy-configs/reconfig/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::Backends;
use crate::envoy::{render, Envoy, Launch};
use crate::paths;
use crate::pki::Pki;

/// How old listeners drain: long enough for a request in flight, short
/// enough that drained listeners do not pile up over hundreds of updates.
const DRAIN_TIME_S: &str = "2";
/// Any step of the traffic slower than this is an error.
const STEP: Duration = Duration::from_secs(5);
/// How long a probe waits for a generation to be in effect.
const EFFECT_WAIT: Duration = Duration::from_secs(10);

/// What went through one kind of traffic.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

impl Tally {
    fn count(&self, ok: bool) {
        if ok { &self.ok } else { &self.errors }.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64) {
        (self.ok.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }
}

/// The traffic kinds, ours and the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Http1,
    H2c,
    Tcp,
}

/// The figures of a run.
#[derive(Debug)]
pub struct Report {
    pub updates: u64,
    /// The slowest update: files written until both Envoys counted it
    /// accepted (LDS, and the client's CDS, `update_success`), as polled.
    pub slowest_accepted: Duration,
    /// The slowest update by the Envoys' own clocks: files written until
    /// the later of their `update_time` stamps.
    pub slowest_applied: Duration,
    /// The slowest update: files written until the new generation was seen
    /// in effect through traffic (our filters only: it needs their stored
    /// peers; without them this is the acceptance).
    pub slowest_update: Duration,
    /// Per kind: (ours ok, ours errors, baseline ok, baseline errors).
    pub traffic: BTreeMap<Kind, (u64, u64, u64, u64)>,
    /// Each Envoy's RSS (KiB) after the first update and at the end.
    pub client_rss_kib: (u64, u64),
    pub server_rss_kib: (u64, u64),
    /// Every 25 updates: (update, client RSS KiB, server RSS KiB, client
    /// and server `server.memory_allocated` KiB).
    pub samples: Vec<(u64, u64, u64, u64, u64)>,
    /// Log lines that say a VM failed, a plugin did not load, or a filter panicked.
    pub vm_failures: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "updates applied: {} (slowest until both Envoys accepted it: {:?} by their own update_time stamps, \
             {:?} as polled; until in effect through traffic: {:?})",
            self.updates, self.slowest_applied, self.slowest_accepted, self.slowest_update
        )?;
        for (kind, (ok, errors, base_ok, base_errors)) in &self.traffic {
            writeln!(f, "{kind:?}: ours {ok} ok / {errors} errors; no filter {base_ok} ok / {base_errors} errors")?;
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        writeln!(
            f,
            "RSS client {:.1} -> {:.1} MiB, server {:.1} -> {:.1} MiB",
            mib(self.client_rss_kib.0),
            mib(self.client_rss_kib.1),
            mib(self.server_rss_kib.0),
            mib(self.server_rss_kib.1)
        )?;
        for (n, client, server, client_heap, server_heap) in &self.samples {
            writeln!(
                f,
                "  after update {n:>4}: RSS client {:.1} MiB, server {:.1} MiB; allocated client {:.1} MiB, server {:.1} MiB",
                mib(*client),
                mib(*server),
                mib(*client_heap),
                mib(*server_heap)
            )?;
        }
        write!(f, "VM failures: {}", self.vm_failures.len())
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn template(name: &str) -> String {
    let path = paths::envoy_configs().join("reconfig").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes a file the way Envoy's file watch expects: a rename into the
/// watched directory.
fn replace(dir: &Path, name: &str, text: &str) {
    let staged = dir.join(format!(".{name}.next"));
    std::fs::write(&staged, text).expect("write xDS file");
    std::fs::rename(&staged, dir.join(name)).expect("rename xDS file");
}

/// What the updates configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filters {
    /// Only the baseline listeners, chains and clusters (the same updates
    /// with no plugin at all, to tell Envoy's own memory from ours).
    None,
    /// Our filters, as the tests configure them.
    Ours,
    /// Our filters with `istio_metrics` on in every exchange configuration.
    OursWithMetrics,
}

/// The two Envoys, their backends and their xDS files.
pub struct Deployment {
    pub client: Envoy,
    pub server: Envoy,
    vars: BTreeMap<String, String>,
    client_xds: PathBuf,
    server_xds: PathBuf,
    log_dir: PathBuf,
    pub generation: u64,
    filters: Filters,
    _backends: Backends,
    _dir: tempfile::TempDir,
}

impl Deployment {
    pub fn start(filters: Filters) -> Deployment {
        let dir = tempfile::Builder::new().prefix("reconfig-").tempdir().expect("temp dir");
        let pki = Pki::generate(&dir.path().join("certs"));
        let backends = Backends::start(&pki);
        let (client_xds, server_xds) = (dir.path().join("client-xds"), dir.path().join("server-xds"));
        for d in [&client_xds, &server_xds] {
            std::fs::create_dir_all(d).expect("xDS dir");
        }
        let names =
            ["INBOUND_PORT", "HTTP_PORT", "HTTP_BASELINE_PORT", "TCP_PORT", "TCP_PROBE_PORT", "TCP_BASELINE_PORT"];
        let ports = names.iter().zip(crate::ports::reserve(names.len())).map(|(n, p)| (n.to_string(), p.to_string()));
        let mut vars: BTreeMap<String, String> = [
            ("CERT_DIR".to_string(), pki.dir.display().to_string()),
            ("LOG_DIR".to_string(), dir.path().display().to_string()),
            ("PEER_EXCHANGE_WASM".to_string(), paths::peer_exchange_filter_wasm().display().to_string()),
            ("ALPN_WASM".to_string(), paths::alpn_filter_wasm().display().to_string()),
            ("ECHO_PORT".to_string(), backends.echo.port().to_string()),
            ("HTTP_BACKEND_PORT".to_string(), backends.http.port().to_string()),
        ]
        .into_iter()
        .chain(ports)
        .collect();
        let mut deployment_files = |generation: u64| {
            files(&mut vars, generation, &client_xds, &server_xds, filters);
        };
        deployment_files(1);
        let launch = |name: &'static str, file: &str, xds: &Path| {
            let mut v = vars.clone();
            v.insert("XDS_DIR".into(), xds.display().to_string());
            let bootstrap = dir.path().join(format!("{name}-bootstrap.yaml"));
            std::fs::write(&bootstrap, render(&template(file), &v).expect("render bootstrap")).expect("write");
            let bootstrap = bootstrap.display().to_string();
            let empty = BTreeMap::new();
            let launch = Launch { name, template: &bootstrap, vars: &empty, dir: dir.path(), wasm_log_level: "info" };
            Envoy::start_with_args(&launch, &["--drain-time-s", DRAIN_TIME_S]).unwrap_or_else(|e| panic!("{e}"))
        };
        let server = launch("server", "server.yaml", &server_xds);
        let client = launch("client", "client.yaml", &client_xds);
        let log_dir = dir.path().to_path_buf();
        Deployment {
            client,
            server,
            vars,
            client_xds,
            server_xds,
            log_dir,
            generation: 1,
            filters,
            _backends: backends,
            _dir: dir,
        }
    }

    pub fn addr(&self, port: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.vars[port].parse::<u16>().expect("port")))
    }

    /// Writes the next generation's files and waits until both Envoys have
    /// taken them (their LDS/CDS update counters); returns how long the
    /// slower one took by its own clock (the `update_time` stamps Envoy
    /// sets on success, against the files' writing: no polling in it).
    pub fn update(&mut self) -> Duration {
        self.generation += 1;
        let epoch_ms =
            || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let written = epoch_ms();
        files(&mut self.vars, self.generation, &self.client_xds, &self.server_xds, self.filters);
        // The first load counts as one update.
        let want = self.generation;
        for (envoy, counters) in [
            (&self.server, &["listener_manager.lds.update_success"][..]),
            (&self.client, &["listener_manager.lds.update_success", "cluster_manager.cds.update_success"][..]),
        ] {
            for counter in counters {
                let got = envoy.wait_counter(counter, want, EFFECT_WAIT);
                assert!(got >= want, "{}: {counter} {got} < {want}:\n{}", envoy.name, envoy.log_tail(40));
            }
        }
        let stamps = [
            (&self.server, "listener_manager.lds.update_time"),
            (&self.client, "listener_manager.lds.update_time"),
            (&self.client, "cluster_manager.cds.update_time"),
        ];
        let applied = stamps.iter().map(|(envoy, gauge)| envoy.counter(gauge)).max().unwrap_or(written);
        Duration::from_millis(applied.saturating_sub(written))
    }

    fn log_lines(&self, file: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log_dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Probes until the current generation is in effect everywhere (or
    /// fails): a TCP connection through the exchange whose both sides store
    /// the other's generation, and an HTTP request whose stored peer is of
    /// the generation and which reached the server's chain of the
    /// generation (by the list alpn-filter read from the cluster's metadata).
    pub async fn assert_in_effect(&self) {
        if self.filters == Filters::None {
            return; // nothing to probe through; update() saw both Envoys take it
        }
        let generation = self.generation.to_string();
        let label = |line: &serde_json::Value| -> Option<String> {
            let peer: serde_json::Value = serde_json::from_str(line["peer"].as_str()?).ok()?;
            peer["labels"]["generation"].as_str().map(str::to_string)
        };
        let current = |line: &serde_json::Value| {
            line["generation"] == generation.as_str() && label(line).as_deref() == Some(generation.as_str())
        };
        let deadline = Instant::now() + EFFECT_WAIT;
        loop {
            let _ = tcp_echo(self.addr("TCP_PROBE_PORT"), b"probe").await;
            let _ = http1_probe(self.addr("HTTP_PORT"), &format!("/probe/{generation}")).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            let tcp_client = self.log_lines("client-tcp.log").iter().any(current);
            let tcp_server = self.log_lines("server-tcp.log").iter().any(current);
            let http = self
                .log_lines("client-http.log")
                .iter()
                .any(|line| current(line) && line["server_generation"] == generation.as_str());
            if tcp_client && tcp_server && http {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "generation {generation} not in effect after {EFFECT_WAIT:?}: TCP client {tcp_client}, TCP server \
                 {tcp_server}, HTTP {http}\nclient:\n{}\nserver:\n{}",
                self.client.log_tail(30),
                self.server.log_tail(30)
            );
        }
    }

    /// Log lines of either Envoy that say a VM failed, a plugin failed to
    /// load, or a filter panicked.
    pub fn vm_failures(&self) -> Vec<String> {
        [&self.client, &self.server]
            .iter()
            .flat_map(|envoy| {
                envoy
                    .log()
                    .lines()
                    .filter(|l| {
                        l.contains("Wasm VM failed")
                            || l.contains("failed to load")
                            || l.contains("panicked")
                            || l.contains("Plugin configured to fail")
                    })
                    .map(|l| format!("{}: {l}", envoy.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Only the baseline's resources of a rendered xDS file: the listeners and
/// clusters named `*baseline*`, and the server listener's `baseline-*` chains.
fn baseline_only(rendered: &str) -> String {
    let mut file: serde_yaml::Value = serde_yaml::from_str(rendered).expect("rendered xDS is YAML");
    let baseline = |v: &serde_yaml::Value| serde_yaml::to_string(v).unwrap_or_default().contains("baseline");
    if let Some(resources) = file["resources"].as_sequence_mut() {
        resources.retain(|r| r["name"].as_str().is_some_and(|n| n.contains("baseline")) || r["name"] == "inbound");
        for resource in resources.iter_mut().filter(|r| r["name"] == "inbound") {
            if let Some(chains) = resource["filter_chains"].as_sequence_mut() {
                chains.retain(|c| baseline(&c["filter_chain_match"]));
            }
        }
    }
    serde_yaml::to_string(&file).expect("xDS as YAML")
}

/// Renders generation `generation` of the xDS files.
fn files(vars: &mut BTreeMap<String, String>, generation: u64, client_xds: &Path, server_xds: &Path, filters: Filters) {
    let keep = |rendered: String| if filters == Filters::None { baseline_only(&rendered) } else { rendered };
    let metrics = if filters == Filters::OursWithMetrics { r#","istio_metrics":{}"# } else { "" };
    let config = |role: &str| {
        format!(
            r#"{{"role":"{role}","peer_json":true,"additional_labels":["generation"],"metadata":{{"LABELS":{{"generation":"{generation}"}}}}{metrics}}}"#
        )
    };
    vars.insert("GENERATION".into(), generation.to_string());
    // The alpn-filter configuration changes too (how long it remembers).
    vars.insert("ALPN_CONFIG".into(), format!(r#"{{"cluster_metadata_refresh_ms":{}}}"#, 100 + generation % 2));
    for (side, xds) in [("server", server_xds), ("client", client_xds)] {
        vars.insert("TCP_CONFIG".into(), config(side));
        vars.insert("HTTP_CONFIG".into(), config(side));
        replace(xds, "lds.yaml", &keep(render(&template(&format!("{side}-lds.yaml")), vars).expect("render LDS")));
    }
    replace(client_xds, "cds.yaml", &keep(render(&template("client-cds.yaml"), vars).expect("render CDS")));
}

async fn step<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(STEP, f).await.map_err(|_| std::io::Error::other("timed out"))?
}

/// One TCP connection: `payload` echoed back exactly, then closed.
pub async fn tcp_echo(addr: SocketAddr, payload: &[u8]) -> bool {
    let run = async {
        let mut stream = step(TcpStream::connect(addr)).await?;
        step(stream.write_all(payload)).await?;
        let mut echoed = vec![0u8; payload.len()];
        step(stream.read_exact(&mut echoed)).await?;
        Ok::<bool, std::io::Error>(echoed == payload)
    };
    run.await.unwrap_or(false)
}

async fn http1_probe(addr: SocketAddr, path: &str) -> bool {
    let run = async {
        let stream = step(TcpStream::connect(addr)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header("host", "app.local")
            .header("x-probe", "1")
            .body(Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let response = step(async { sender.send_request(request).await.map_err(std::io::Error::other) }).await?;
        Ok::<bool, std::io::Error>(response.status() == 200)
    };
    run.await.unwrap_or(false)
}

/// Keeps HTTP/1.1 or h2c connections busy: up to `per_connection`
/// requests each, then a new connection; counts every request.
async fn http_traffic(addr: SocketAddr, h2: bool, per_connection: u32, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(stream)) = tokio::time::timeout(STEP, TcpStream::connect(addr)).await else {
            tally.count(false);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let io = TokioIo::new(stream);
        macro_rules! requests {
            ($sender:expr) => {{
                let mut sender = $sender;
                for _ in 0..per_connection {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let request =
                        hyper::Request::get("http://app.local/traffic").body(Empty::<Bytes>::new()).expect("request");
                    let ok = match tokio::time::timeout(STEP, sender.send_request(request)).await {
                        Ok(Ok(response)) => {
                            let status = response.status();
                            response.into_body().collect().await.is_ok() && status == 200
                        }
                        _ => false,
                    };
                    tally.count(ok);
                    if !ok {
                        break;
                    }
                }
            }};
        }
        if h2 {
            match hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await {
                Ok((sender, conn)) => {
                    tokio::spawn(conn);
                    requests!(sender);
                }
                Err(_) => tally.count(false),
            }
        } else {
            match hyper::client::conn::http1::handshake(io).await {
                Ok((sender, conn)) => {
                    tokio::spawn(conn);
                    requests!(sender);
                }
                Err(_) => tally.count(false),
            }
        }
    }
}

async fn tcp_traffic(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let payload = crate::pseudo_random_bytes(1024, addr.port().into());
    while !stop.load(Ordering::Relaxed) {
        tally.count(tcp_echo(addr, &payload).await);
    }
}

/// Runs `updates` updates (each checked in effect) under traffic with
/// `concurrency` tasks per kind and listener, `pause` between updates;
/// `Filters::None` runs the baseline alone.
pub async fn run(updates: u64, concurrency: usize, pause: Duration, progress: bool, filters: Filters) -> Report {
    let with_filters = filters != Filters::None;
    let mut deployment = Deployment::start(filters);
    deployment.assert_in_effect().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tallies: BTreeMap<(Kind, bool), Arc<Tally>> = BTreeMap::new();
    let mut tasks = Vec::new();
    for (kind, ours, port) in [
        (Kind::Http1, true, "HTTP_PORT"),
        (Kind::H2c, true, "HTTP_PORT"),
        (Kind::Tcp, true, "TCP_PORT"),
        (Kind::Http1, false, "HTTP_BASELINE_PORT"),
        (Kind::H2c, false, "HTTP_BASELINE_PORT"),
        (Kind::Tcp, false, "TCP_BASELINE_PORT"),
    ] {
        let tally = tallies.entry((kind, ours)).or_default().clone();
        if ours && !with_filters {
            continue;
        }
        let addr = deployment.addr(port);
        for _ in 0..concurrency {
            let (stop, tally) = (stop.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                match kind {
                    Kind::Http1 => http_traffic(addr, false, 10, stop, tally).await,
                    Kind::H2c => http_traffic(addr, true, 10, stop, tally).await,
                    Kind::Tcp => tcp_traffic(addr, stop, tally).await,
                }
            }));
        }
    }
    let mut rss_start = None;
    let mut slowest = Duration::ZERO;
    let mut slowest_accepted = Duration::ZERO;
    let mut slowest_applied = Duration::ZERO;
    let mut samples = Vec::new();
    let sample = |n: u64, d: &Deployment| {
        let allocated = |e: &Envoy| e.counter("server.memory_allocated") / 1024;
        let pid = |e: &Envoy| e.pid().unwrap_or(0);
        (n, rss_kib(pid(&d.client)), rss_kib(pid(&d.server)), allocated(&d.client), allocated(&d.server))
    };
    for n in 1..=updates {
        let started = Instant::now();
        slowest_applied = slowest_applied.max(deployment.update());
        slowest_accepted = slowest_accepted.max(started.elapsed());
        deployment.assert_in_effect().await;
        slowest = slowest.max(started.elapsed());
        if n == 1 {
            let (_, client, server, _, _) = sample(n, &deployment);
            rss_start = Some((client, server));
        }
        if n % 25 == 0 {
            samples.push(sample(n, &deployment));
        }
        if progress && (n % 25 == 0 || n == updates) {
            let (ok, errors) = tallies.values().fold((0, 0), |(o, e), t| (o + t.get().0, e + t.get().1));
            eprintln!("update {n}/{updates}: {ok} ok / {errors} errors so far");
        }
        tokio::time::sleep(pause).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    // Let the last drained listeners go before the last reading.
    tokio::time::sleep(Duration::from_secs(DRAIN_TIME_S.parse::<u64>().unwrap_or(2) + 1)).await;
    let (client_start, server_start) = rss_start.unwrap_or_default();
    let traffic = [Kind::Http1, Kind::H2c, Kind::Tcp]
        .into_iter()
        .map(|kind| {
            let (ok, errors) = tallies[&(kind, true)].get();
            let (base_ok, base_errors) = tallies[&(kind, false)].get();
            (kind, (ok, errors, base_ok, base_errors))
        })
        .collect();
    Report {
        updates,
        slowest_accepted,
        slowest_applied,
        slowest_update: slowest,
        traffic,
        client_rss_kib: (client_start, rss_kib(deployment.client.pid().unwrap_or(0))),
        server_rss_kib: (server_start, rss_kib(deployment.server.pid().unwrap_or(0))),
        samples: {
            // After the traffic, with the last drained listeners gone.
            samples.push(sample(updates, &deployment));
            samples
        },
        vm_failures: deployment.vm_failures(),
    }
}
