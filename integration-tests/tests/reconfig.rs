//! Reconfiguration under traffic (integration-tests/src/reconfig.rs): the
//! Envoys' listeners and clusters replaced many times through file-based
//! xDS while HTTP/1.1, h2c and TCP run through both forms of the exchange
//! and, for comparison, through the same paths without our filters. The
//! soak runs the long form (`./scripts/soak.sh reconfig`).

use std::time::Duration;

use integration_tests::reconfig::{self, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_clusters_replaced_under_traffic_lose_nothing_beyond_envoys_own_draining() {
    let report = reconfig::run(20, 2, Duration::from_millis(200), false, reconfig::Filters::OursWithMetrics).await;
    eprintln!("{report}");
    assert!(report.vm_failures.is_empty(), "{:#?}", report.vm_failures);
    for (kind, (ok, errors, base_ok, base_errors)) in &report.traffic {
        assert!(*ok > 0 && *base_ok > 0, "{kind:?}: traffic flowed: {report}");
        // Draining can cost a request or a connection either way; ours may
        // not lose more than the same paths without our filters, plus one
        // per update at most.
        assert!(*errors <= base_errors + report.updates, "{kind:?}: {errors} errors against {base_errors}: {report}");
        if *kind == Kind::Tcp {
            assert_eq!(*errors, 0, "no TCP connection through the exchange lost: {report}");
        }
    }
}
