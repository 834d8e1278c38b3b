//! `mesh-doctor`, the binary users install, on the examples as shipped
//! (clean) and with each everyday mistake made in them (found, with its
//! fix, and the exit status a CI gate reads).

use integration_tests::paths::{run_mesh_doctor, workspace_root};

fn example(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("examples").join(name)).expect("read example")
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn with(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in the example");
    text.replacen(from, to, 1)
}

#[test]
fn the_examples_are_clean_and_each_everyday_mistake_is_named_with_its_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (outbound, inbound) = (example("outbound.yaml"), example("inbound.yaml"));
    let node_metadata = {
        let start = outbound.find("  metadata:\n    NAME: frontend").expect("outbound node metadata");
        let end = outbound[start..].find("# Istio's metric labels").expect("end of the node section") + start;
        outbound[start..end].to_string()
    };
    let cases: [(&str, String, i32, &str, &str); 5] = [
        ("as shipped", outbound.clone(), 0, "", "0 error(s), 0 warning(s), 0 note(s)"),
        (
            "no node metadata",
            with(&outbound, &node_metadata, ""),
            0,
            "warning[node-metadata-missing]",
            "add node.metadata NAME, NAMESPACE, WORKLOAD_NAME",
        ),
        (
            "no mesh marker on the clusters",
            outbound.replace("        istio.peer_exchange: { enabled: true }\n", ""),
            0,
            "warning[cluster-not-marked-mesh]",
            "filter_metadata: {istio.peer_exchange: {enabled: true}}",
        ),
        (
            "the TCP cluster offers only `istio`",
            with(&outbound, "alpn_protocols: [istio-peer-exchange, istio]", "alpn_protocols: [istio]"),
            1,
            "error[tcp-alpn-http-chain]",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "the TCP cluster offers no ALPN",
            with(&outbound, "          alpn_protocols: [istio-peer-exchange, istio]\n", ""),
            1,
            "error[tcp-alpn-no-chain]",
            "connection reset by peer",
        ),
    ];
    let inbound_path = dir.path().join("inbound.yaml");
    std::fs::write(&inbound_path, &inbound).expect("write inbound");
    for (i, (mistake, text, code, finding, fix)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("outbound-{i}.yaml"));
        std::fs::write(&path, text).expect("write outbound");
        let (got, report) = run_mesh_doctor(&[path.to_str().expect("path"), inbound_path.to_str().expect("path")]);
        assert_eq!(got, *code, "{mistake}:\n{report}");
        assert!(report.contains(finding), "{mistake}: no {finding}:\n{report}");
        assert!(report.contains(fix), "{mistake}: the fix is not named:\n{report}");
    }
    // The inbound's exchange chain without client certificates.
    let path = dir.path().join("inbound-optional.yaml");
    std::fs::write(&path, with(&inbound, "require_client_certificate: true\n          common_tls_context:\n            alpn_protocols: [istio-peer-exchange]", "require_client_certificate: false\n          common_tls_context:\n            alpn_protocols: [istio-peer-exchange]")).expect("write");
    let (code, report) = run_mesh_doctor(&[path.to_str().expect("path")]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("warning[client-certificate-optional]"), "{report}");
    // Unreadable input: exit 2, said why.
    let (code, report) = run_mesh_doctor(&["/nonexistent/envoy.yaml"]);
    assert_eq!((code, report.contains("/nonexistent/envoy.yaml")), (2, true), "{report}");
}
