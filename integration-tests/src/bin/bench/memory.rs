//! Memory per proxy: the examples as shipped, and the same two Envoys with
//! our filters taken out, with every wasm filter replaced by the empty one
//! in one shared VM, and with ours but no access logs and no Istio metrics —
//! each Envoy's RSS, `server.memory_allocated` and live V8 VMs after
//! warm-up and after load, at `--concurrency` 2 and 8. A mesh runs one
//! proxy per pod, so these are the bytes an operator pays per pod.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::envoy::Envoy;
use integration_tests::examples::{self, Examples};
use serde_yaml::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variants of the examples, in the order printed.
#[derive(Clone, Copy)]
enum Variant {
    NoWasm,
    EmptyOneVm,
    Shipped,
    ShippedQuiet,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::NoWasm => "no wasm filter",
            Variant::EmptyOneVm => "empty wasm filters, one VM",
            Variant::Shipped => "ours, as shipped",
            Variant::ShippedQuiet => "ours, no access logs or istio_metrics",
        }
    }

    /// The example's text for this variant.
    fn text(self, shipped: &str) -> String {
        if let Variant::Shipped = self {
            return shipped.to_string();
        }
        let mut config: Value = serde_yaml::from_str(shipped).expect("example YAML");
        edit(&mut config, self);
        serde_yaml::to_string(&config).expect("YAML")
    }
}

fn is_wasm_filter(filter: &Value) -> bool {
    filter["typed_config"]["@type"].as_str().is_some_and(|t| t.ends_with(".wasm.v3.Wasm"))
}

/// Walks the configuration, changing every filter list and access log.
fn edit(value: &mut Value, variant: Variant) {
    match value {
        Value::Mapping(map) => {
            if let Variant::ShippedQuiet = variant {
                map.remove("access_log");
            }
            for (key, child) in map.iter_mut() {
                let key = key.as_str().unwrap_or_default();
                if key == "filters" || key == "http_filters" {
                    if let Value::Sequence(filters) = child {
                        match variant {
                            Variant::NoWasm => filters.retain(|f| !is_wasm_filter(f)),
                            Variant::EmptyOneVm => filters.iter_mut().filter(|f| is_wasm_filter(f)).for_each(|f| {
                                let form = if key == "filters" { "network" } else { "http" };
                                let config = &mut f["typed_config"]["config"];
                                config["root_id"] = "empty".into();
                                config["vm_config"]["vm_id"] = "empty".into();
                                config["vm_config"]["code"]["local"]["filename"] = "dist/empty_filter.wasm".into();
                                config["configuration"]["value"] = form.into();
                            }),
                            Variant::ShippedQuiet => filters.iter_mut().filter(|f| is_wasm_filter(f)).for_each(|f| {
                                let value = &mut f["typed_config"]["config"]["configuration"]["value"];
                                if let Some(text) = value.as_str() {
                                    let mut json: serde_json::Value = serde_json::from_str(text).expect("plugin JSON");
                                    if let Some(object) = json.as_object_mut() {
                                        object.remove("istio_metrics");
                                    }
                                    *value = json.to_string().into();
                                }
                            }),
                            Variant::Shipped => {}
                        }
                    }
                }
                edit(child, variant);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|item| edit(item, variant)),
        _ => {}
    }
}

/// One Envoy's figures at one moment.
struct Sample {
    rss_mib: f64,
    allocated_mib: f64,
    vms: u64,
}

fn sample(envoy: &Envoy) -> Sample {
    let pid = envoy.pid().expect("Envoy pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    let stats = envoy.stats();
    Sample {
        rss_mib: rss_kib / 1024.0,
        allocated_mib: stats.get("server.memory_allocated").copied().unwrap_or(0) as f64 / 1_048_576.0,
        vms: stats.get("wasm.envoy.wasm.runtime.v8.active").copied().unwrap_or(0),
    }
}

/// Where an Envoy's resident bytes are, by mapping (`/proc/<pid>/smaps`):
/// executable anonymous mappings (V8's compiled code), other anonymous
/// memory (Envoy's and V8's heaps, the VMs' linear memories — Envoy's V8
/// maps them without guard regions, so they cannot be told apart by size —
/// and stacks), and files (the Envoy binary's pages, V8's code among them).
/// MiB each.
fn breakdown(envoy: &Envoy) -> [f64; 3] {
    let pid = envoy.pid().expect("Envoy pid");
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("/proc smaps");
    let mut kib = [0u64; 3];
    let mut current = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.split_once('-').is_some_and(|(a, _)| u64::from_str_radix(a, 16).is_ok()) {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            current = Some(if path.starts_with('/') {
                2
            } else if perms.contains('x') {
                0
            } else {
                1
            });
        } else if first == "Rss:" {
            if let (Some(i), Some(n)) = (current, fields.next().and_then(|n| n.parse::<u64>().ok())) {
                kib[i] += n;
            }
        }
    }
    kib.map(|k| k as f64 / 1024.0)
}

/// TCP connections through the outbound's TCP listener (the app behind the
/// inbound is HTTP: one request each, read to the close); those answered.
async fn tcp_connections(addr: SocketAddr, n: usize) -> usize {
    let request = integration_tests::clients::http1_request("1.1", "/memory", &[("connection", "close")]);
    let mut answered = 0;
    for _ in 0..n {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { continue };
        if stream.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        if matches!(read, Ok(Ok(_))) && response.starts_with(b"HTTP/1.1 200") {
            answered += 1;
        }
    }
    answered
}

pub async fn run(secs: u64) {
    modules_alone().await;
    let (inbound, outbound) = (examples::read("inbound.yaml"), examples::read("outbound.yaml"));
    println!(
        "\nMemory per proxy: the examples (outbound: both exchange forms, the HTTP form with alpn-filter's rule built in; inbound: both forms), \
         after warm-up -> after load (wrk, 8 connections, {secs} s, and 200 TCP connections); \
         RSS MiB / server.memory_allocated MiB / live V8 VMs"
    );
    println!("  {:<13} {:<40} {:<34} {:<34}", "--concurrency", "variant", "outbound", "inbound");
    for concurrency in ["2", "8"] {
        for variant in [Variant::NoWasm, Variant::EmptyOneVm, Variant::Shipped, Variant::ShippedQuiet] {
            let examples = Examples::start_changed_with(
                variant.text(&inbound),
                variant.text(&outbound),
                &["--concurrency", concurrency],
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            let before = [sample(&examples.outbound), sample(&examples.inbound)];
            let requests = crate::load::Load::Wrk(8).run(examples.http(), secs).await;
            let answered = tcp_connections(examples.tcp(), 200).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = [sample(&examples.outbound), sample(&examples.inbound)];
            let cell = |i: usize| {
                let (b, a): (&Sample, &Sample) = (&before[i], &after[i]);
                format!(
                    "{:.1}->{:.1} / {:.1}->{:.1} / {}",
                    b.rss_mib, a.rss_mib, b.allocated_mib, a.allocated_mib, a.vms
                )
            };
            println!(
                "  {:<13} {:<40} {:<34} {:<34} ({requests} requests, {answered}/200 TCP answered)",
                concurrency,
                variant.label(),
                cell(0),
                cell(1)
            );
            let parts = |envoy: &Envoy| {
                let [code, anon, files] = breakdown(envoy);
                format!("{code:.1} / {anon:.1} / {files:.1}")
            };
            println!(
                "  {:<13} {:<40} {:<34} {:<34}",
                "",
                "  RSS by mapping: code / anon / files",
                parts(&examples.outbound),
                parts(&examples.inbound)
            );
        }
    }
}

/// One HTTP listener whose only filter before the router is `module`'s
/// (`None`: no wasm filter), in one VM, answering from the route.
fn module_alone_config(module: Option<(&str, &str, &str)>) -> String {
    let filter = match module {
        None => String::new(),
        Some((file, root_id, configuration)) => format!(
            r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: {root_id}
                vm_config: {{ vm_id: alone, runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: {file} }} }} }}
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{configuration}' }}"#
        ),
    };
    format!(
        r#"node:
  id: "sidecar~10.0.0.1~frontend-6d9f7c-x2x4p.shop~shop.svc.cluster.local"
  metadata: {{ NAME: frontend-6d9f7c-x2x4p, NAMESPACE: shop, WORKLOAD_NAME: frontend }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: alone
          route_config: {{ virtual_hosts: [{{ name: alone, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200 }} }}] }}] }}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

/// A figure of tcmalloc's from the admin's `/memory`, MiB.
fn tcmalloc_mib(memory: &serde_json::Value, key: &str) -> f64 {
    memory[key].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1_048_576.0
}

/// Each module alone, in one VM (no traffic): what loading and compiling
/// a module costs a process, by module size, and where tcmalloc holds it.
async fn modules_alone() {
    use integration_tests::paths;
    let path = |p: std::path::PathBuf| p.display().to_string();
    let modules = [
        ("no wasm filter", None),
        ("empty_filter.wasm", Some((path(paths::empty_filter_wasm()), "empty", "http"))),
        ("alpn_filter.wasm", Some((path(paths::alpn_filter_wasm()), "alpn", "{}"))),
        (
            "peer_exchange_filter.wasm",
            Some((path(paths::peer_exchange_filter_wasm()), "peer_exchange_http", r#"{"role": "client"}"#)),
        ),
    ];
    println!(
        "\nEach module alone (one HTTP filter, one VM, --concurrency 2, 3 s after ready, no traffic): module KiB, \
         RSS MiB / server.memory_allocated MiB / live V8 VMs; tcmalloc (admin /memory) heap / free pages / thread caches MiB"
    );
    for (name, module) in modules {
        let dir = tempfile::Builder::new().prefix("bench-module-").tempdir().expect("temp dir");
        let config = dir.path().join("alone.yaml");
        let module_ref = module.as_ref().map(|(file, root_id, conf)| (file.as_str(), *root_id, *conf));
        std::fs::write(&config, module_alone_config(module_ref)).expect("write config");
        let template = config.display().to_string();
        let vars = std::collections::BTreeMap::new();
        let launch = integration_tests::envoy::Launch {
            name: "alone",
            template: &template,
            vars: &vars,
            dir: dir.path(),
            wasm_log_level: "warn",
        };
        let envoy = Envoy::start_with_args(&launch, &["--concurrency", "2"]).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = sample(&envoy);
        let memory: serde_json::Value =
            envoy.admin_get("/memory").ok().and_then(|(_, body)| serde_json::from_str(&body).ok()).unwrap_or_default();
        let kib = module
            .as_ref()
            .and_then(|(file, _, _)| std::fs::metadata(file).ok())
            .map_or(0.0, |m| m.len() as f64 / 1024.0);
        println!(
            "  {name:<27} {kib:>6.1} KiB  {:.1} / {:.1} / {}  tcmalloc {:.1} / {:.1} / {:.1}",
            s.rss_mib,
            s.allocated_mib,
            s.vms,
            tcmalloc_mib(&memory, "heap_size"),
            tcmalloc_mib(&memory, "pageheap_free"),
            tcmalloc_mib(&memory, "total_thread_cache"),
        );
    }
}
