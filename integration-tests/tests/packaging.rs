//! Deployment artefacts: the docker-compose file (validated without a Docker
//! engine), the template renderer it uses, the Istio WasmPlugin manifests,
//! the OCI image in Istio's wasm image format, and the documented examples.

use peer_exchange::config::Transport;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::backends::Backends;
use integration_tests::envoy::{placeholders, render};
use integration_tests::mesh;
use integration_tests::paths::{self, workspace_root};
use integration_tests::pki::Pki;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    workspace_root().canonicalize().unwrap()
}

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH: run scripts/setup.sh --tests (installs it)"))
}

fn compose_config() -> serde_yaml::Value {
    let output = Command::new(tool("docker-compose"))
        .current_dir(root())
        .args(["--profile", "test", "-f", "docker-compose.yml", "config"])
        .output()
        .expect("run docker-compose");
    assert!(output.status.success(), "docker-compose config failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_yaml::from_slice(&output.stdout).expect("compose config is YAML")
}

fn environment(service: &serde_yaml::Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .expect("environment mapping")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().map(str::to_string).unwrap_or_else(|| serde_yaml::to_string(v).unwrap().trim().to_string()),
            )
        })
        .collect()
}

#[test]
fn compose_file_is_valid_and_everything_it_mounts_exists() {
    let config = compose_config();
    let services = config["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for expected in ["certs", "backends", "server-envoy", "client-envoy", "test-driver"] {
        assert!(names.contains(expected), "service {expected} missing: {names:?}");
    }
    let declared_volumes: BTreeSet<&str> =
        config["volumes"].as_mapping().map(|m| m.keys().filter_map(|k| k.as_str()).collect()).unwrap_or_default();
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap();
            if source.starts_with('/') {
                assert!(
                    Path::new(source).exists(),
                    "{name:?} mounts {source}, which does not exist (run scripts/build-wasm.sh)"
                );
            } else {
                assert!(declared_volumes.contains(source), "{name:?} uses undeclared volume {source}");
            }
        }
    }
    for envoy in ["server-envoy", "client-envoy"] {
        let service = &config["services"][envoy];
        assert_eq!(service["image"], "envoyproxy/envoy:v1.40.0", "the Envoy line the tests run");
        // The template the service renders, and the variables it provides.
        let template_in_container = service["command"][0].as_str().unwrap();
        let template = Path::new(template_in_container).file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(paths::envoy_configs().join(template)).unwrap();
        let needed: BTreeSet<String> = placeholders(&text).into_iter().collect();
        let provided: BTreeSet<String> = environment(service).into_iter().map(|(k, _)| k).collect();
        assert_eq!(needed, provided, "{envoy}: the environment must provide exactly the template's placeholders");
    }
}

/// Renders a template with envoy-configs/render.sh and the given variables.
fn render_sh(template: &str, vars: &[(String, String)], out: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(paths::envoy_configs().join("render.sh"))
        .arg(paths::envoy_configs().join(template))
        .arg(out)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run render.sh")
}

#[test]
fn compose_environment_renders_configs_that_envoy_accepts() {
    let config = compose_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("certs"));
    for (envoy, template) in [("server-envoy", "server.yaml"), ("client-envoy", "client.yaml")] {
        // The compose values, with the in-container paths pointed at local files.
        let vars: Vec<(String, String)> = environment(&config["services"][envoy])
            .into_iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "CERT_DIR" => pki.dir.display().to_string(),
                    "LOG_DIR" => dir.path().display().to_string(),
                    "ALPN_WASM" => paths::alpn_filter_wasm().display().to_string(),
                    "PEER_EXCHANGE_WASM" => paths::peer_exchange_filter_wasm().display().to_string(),
                    "TCP_SLOT_WASM" | "HTTP_SLOT_WASM" => paths::empty_filter_wasm().display().to_string(),
                    "HTTP_EXCHANGE_SLOT_WASM" => paths::peer_exchange_filter_wasm().display().to_string(),
                    _ => v,
                };
                (k, v)
            })
            .collect();
        if envoy == "client-envoy" {
            // The deployment declares the protocol-matrix clusters as the tests do.
            let alpn = vars.iter().find(|(k, _)| k == "ALPN_CONFIG").map(|(_, v)| v.as_str());
            assert_eq!(alpn, Some(mesh::ALPN_CONFIG));
        }
        let http_exchange = vars.iter().find(|(k, _)| k == "PEER_EXCHANGE_HTTP_CONFIG").map(|(_, v)| v.as_str());
        let expected = if envoy == "client-envoy" { mesh::HTTP_CLIENT_CONFIG } else { mesh::HTTP_SERVER_CONFIG };
        assert_eq!(http_exchange, Some(expected), "{envoy}: the tests' HTTP exchange configuration");
        // The templates' access logs print the peer's JSON text, which only
        // a plugin with `peer_json` stores.
        let tcp_exchange = vars.iter().find(|(k, _)| k == "PEER_EXCHANGE_CONFIG").map(|(_, v)| v.as_str());
        let tcp_exchange: serde_json::Value = serde_json::from_str(tcp_exchange.unwrap_or("null")).unwrap();
        assert_eq!(tcp_exchange["peer_json"], true, "{envoy}: PEER_EXCHANGE_CONFIG {tcp_exchange}");
        let quiet = vars.iter().find(|(k, _)| k == "PEER_EXCHANGE_QUIET_CONFIG").map(|(_, v)| v.as_str());
        let quiet: serde_json::Value = serde_json::from_str(quiet.unwrap_or("null")).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&mesh::without_peer_json(&tcp_exchange.to_string())).unwrap();
        assert_eq!(quiet, expected, "{envoy}: PEER_EXCHANGE_QUIET_CONFIG is PEER_EXCHANGE_CONFIG without peer_json");
        let out = dir.path().join(template);
        let rendered = render_sh(template, &vars, &out);
        assert!(rendered.status.success(), "render.sh: {}", String::from_utf8_lossy(&rendered.stderr));
        let validate = Command::new(paths::envoy_bin())
            .args(["--mode", "validate", "--disable-hot-restart", "-l", "error", "-c"])
            .arg(&out)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            validate.status.success(),
            "Envoy rejects the {envoy} config rendered from docker-compose:\n{}{}",
            String::from_utf8_lossy(&validate.stdout),
            String::from_utf8_lossy(&validate.stderr)
        );
    }
}

#[test]
fn render_script_matches_the_harness_renderer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("certs"));
    let backends = Backends::start(&pki);
    let options = mesh::MeshOptions::default();
    let server_vars = mesh::server_vars(dir.path(), &pki, &backends, &options);
    let client_vars = mesh::client_vars(dir.path(), &pki, &backends, "127.0.0.1:15006".parse().unwrap(), &options);
    for (template, vars) in [("server.yaml", server_vars), ("client.yaml", client_vars)] {
        let expected = render(&std::fs::read_to_string(paths::envoy_configs().join(template)).unwrap(), &vars).unwrap();
        let out = dir.path().join(format!("sh-{template}"));
        let pairs: Vec<(String, String)> = vars.into_iter().collect();
        let result = render_sh(template, &pairs, &out);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), expected, "{template}");
    }
    // A missing variable is an error that names it.
    let result = render_sh("server.yaml", &[], &dir.path().join("broken.yaml"));
    assert!(!result.status.success());
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("is not set"),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Reads a blob of an OCI layout and checks it against its descriptor.
fn blob(layout: &Path, descriptor: &serde_json::Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob exists");
    assert_eq!(sha256_digest(&bytes), digest, "blob content matches its digest");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64), "blob size matches its descriptor");
    bytes
}

#[test]
fn oci_image_layout_is_istio_wasm_format_and_holds_our_module() {
    let dir = tempfile::tempdir().unwrap();
    for (module, name) in
        [(paths::peer_exchange_filter_wasm(), "peer-exchange-filter"), (paths::alpn_filter_wasm(), "alpn-filter")]
    {
        let mut digests = Vec::new();
        for attempt in 0..2 {
            let layout = dir.path().join(format!("{name}-{attempt}"));
            let status = Command::new("python3")
                .arg(root().join("scripts/oci-image.py"))
                .arg(&module)
                .arg(&layout)
                .arg("0.1.0")
                .status()
                .expect("run scripts/oci-image.py");
            assert!(status.success());
            let oci_layout: serde_json::Value =
                serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
            assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
            assert_eq!(index["schemaVersion"], 2);
            let entry = &index["manifests"][0];
            assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
            assert_eq!(entry["mediaType"], "application/vnd.oci.image.manifest.v1+json");
            let manifest: serde_json::Value = serde_json::from_slice(&blob(&layout, entry)).unwrap();
            assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
            let config: serde_json::Value = serde_json::from_slice(&blob(&layout, &manifest["config"])).unwrap();
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 1, "Istio's compat format: exactly one layer");
            assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            let compressed = blob(&layout, &layers[0]);
            let mut tar_bytes = Vec::new();
            flate2::read::GzDecoder::new(compressed.as_slice()).read_to_end(&mut tar_bytes).unwrap();
            assert_eq!(
                config["rootfs"]["diff_ids"][0],
                sha256_digest(&tar_bytes),
                "diff_id = digest of the uncompressed layer"
            );
            let mut archive = tar::Archive::new(tar_bytes.as_slice());
            let mut files = Vec::new();
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                files.push((path, content));
            }
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].0, "plugin.wasm", "Istio looks for plugin.wasm");
            assert_eq!(files[0].1, std::fs::read(&module).unwrap(), "the layer holds our module, byte for byte");
            digests.push(entry["digest"].clone());
        }
        assert_eq!(digests[0], digests[1], "{name}: the same module gives the same image digest");
    }
    let dockerfile = std::fs::read_to_string(root().join("deploy/wasm.Dockerfile")).unwrap();
    assert!(dockerfile.contains("FROM scratch") && dockerfile.contains("./plugin.wasm"), "{dockerfile}");
}

#[test]
fn wasm_plugin_manifests_are_well_formed_and_their_configs_are_accepted() {
    let mut seen = Vec::new();
    for file in integration_tests::istio::MANIFESTS {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let plugin = serde_yaml::Value::deserialize(doc).unwrap();
            assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1", "{file}");
            assert_eq!(plugin["kind"], "WasmPlugin", "{file}");
            let spec = &plugin["spec"];
            assert!(spec["url"].as_str().unwrap().starts_with("oci://"), "{file}");
            let strategy =
                spec["failStrategy"].as_str().unwrap_or_else(|| panic!("{file}: failStrategy is chosen explicitly"));
            assert!(["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"].contains(&strategy));
            let config = serde_json::to_vec(&serde_json::to_value(&spec["pluginConfig"]).unwrap()).unwrap();
            let kind = spec["type"].as_str().unwrap();
            let mode = spec["match"][0]["mode"].as_str().unwrap_or("");
            let expected_role = if mode == "SERVER" { "server" } else { "client" };
            match (kind, spec["pluginName"].as_str()) {
                ("NETWORK", _) => {
                    assert_eq!(spec["phase"], "AUTHN", "{file}: first on its chain");
                    let parsed = peer_exchange::config::Config::parse(&config, Transport::Tcp)
                        .unwrap_or_else(|e| panic!("{file}: pluginConfig refused: {e}"));
                    assert_eq!(parsed.role.name(), expected_role, "{file}: role matches the traffic direction");
                }
                ("HTTP", Some(peer_exchange::config::HTTP_ROOT_ID)) => {
                    assert_eq!(spec["phase"], "AUTHN", "{file}: before Istio's HTTP filters");
                    let parsed = peer_exchange::config::Config::parse(&config, Transport::Http)
                        .unwrap_or_else(|e| panic!("{file}: pluginConfig refused: {e}"));
                    assert_eq!(parsed.role.name(), expected_role, "{file}: role matches the traffic direction");
                }
                ("HTTP", _) => {
                    let parsed = alpn_decision::config::AlpnConfig::parse(&config)
                        .unwrap_or_else(|e| panic!("{file}: pluginConfig refused: {e}"));
                    assert_eq!(parsed.warnings(), Vec::<String>::new(), "{file}: a configuration without warnings");
                }
                (other, _) => panic!("{file}: unexpected type {other}"),
            }
            seen.push(plugin["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        seen,
        [
            "peer-exchange-server",
            "peer-exchange-http-server",
            "peer-exchange-client",
            "peer-exchange-http-client",
            "alpn-override"
        ]
    );
}

#[test]
fn documented_configuration_examples_are_accepted_by_the_filters() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut checked = 0;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(tag) = line.strip_prefix("```json ") else { continue };
        let block: String = lines.by_ref().take_while(|l| !l.starts_with("```")).collect::<Vec<_>>().join("\n");
        match tag.trim() {
            "alpn-filter" => {
                alpn_decision::config::AlpnConfig::parse(block.as_bytes()).unwrap_or_else(|e| panic!("{e}:\n{block}"));
            }
            "peer-exchange-filter-http" => {
                peer_exchange::config::Config::parse(block.as_bytes(), Transport::Http)
                    .unwrap_or_else(|e| panic!("{e}:\n{block}"));
            }
            "peer-exchange-filter" => {
                peer_exchange::config::Config::parse(block.as_bytes(), peer_exchange::config::Transport::Tcp)
                    .unwrap_or_else(|e| panic!("{e}:\n{block}"));
            }
            other => panic!("unknown example tag {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 4, "docs/configuration.md has tagged examples ({checked} found)");
}

use serde::Deserialize;

/// Every counter the filters define is documented in observability.md, in
/// its filter's section (names from the filter crates, so a new counter
/// without a line fails here).
#[test]
fn observability_documents_every_counter() {
    use alpn_decision::decision::Counter as AlpnCounter;
    use peer_exchange::exchange::Counter as ExchangeCounter;
    use peer_exchange::http::HttpCounter;
    let doc = std::fs::read_to_string(root().join("docs/observability.md")).unwrap();
    let section = |heading: &str| -> String {
        let start = doc.find(heading).unwrap_or_else(|| panic!("observability.md has no {heading:?}"));
        let rest = &doc[start + heading.len()..];
        rest[..rest.find("\n#").unwrap_or(rest.len())].to_string()
    };
    let sections: [(&str, Vec<&str>); 3] = [
        ("### alpn-filter:", AlpnCounter::ALL.iter().map(|c| c.name()).collect()),
        ("### peer-exchange-filter: ", ExchangeCounter::ALL.iter().map(|c| c.name()).collect()),
        ("### peer-exchange-filter, HTTP form:", HttpCounter::ALL.iter().map(|c| c.name()).collect()),
    ];
    for (heading, names) in sections {
        let text = section(heading);
        let missing: Vec<&str> = names.into_iter().filter(|n| !text.contains(&format!("`{n}`"))).collect();
        assert!(missing.is_empty(), "observability.md {heading} does not document {missing:?}");
    }
}

/// Every warning the filters log for a deployment mistake, and every
/// `mesh-doctor` finding, is in troubleshooting.md, word for word.
#[test]
fn troubleshooting_quotes_every_warning_and_finding() {
    let doc = std::fs::read_to_string(root().join("docs/troubleshooting.md")).unwrap();
    for warning in peer_exchange::warnings::ALL {
        assert!(doc.contains(warning), "troubleshooting.md does not quote:\n{warning}");
    }
    for id in mesh_doctor::IDS {
        assert!(doc.contains(&format!("`{id}`")), "troubleshooting.md does not list the finding {id}");
    }
}
