//! Deployment checks: the same end-to-end checks against a deployment this
//! test starts, or against an existing one (`MESH_TARGET=external`, e.g. the
//! docker-compose deployment; see integration-tests/src/target.rs).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::checks;
use integration_tests::target::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_passes_the_end_to_end_checks() {
    let target = integration_tests::mesh::target_from_env();
    checks::all(&target).await;
}

/// The external-target path for real: a deployment started by another
/// process (`mesh up`), found only through the MESH_* variables it publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_target_mode_drives_a_deployment_started_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("deployment.env");
    let mut up = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("up")
        .arg(&env_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start `mesh up`");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !env_file.exists() {
        assert!(up.try_wait().unwrap().is_none(), "`mesh up` exited early");
        assert!(Instant::now() < deadline, "`mesh up` did not publish its variables");
        std::thread::sleep(Duration::from_millis(100));
    }
    let vars: std::collections::BTreeMap<String, String> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let target = Target::external(
        &vars["MESH_CLIENT_ADMIN"],
        &vars["MESH_SERVER_ADMIN"],
        std::path::Path::new(&vars["MESH_CERT_DIR"]),
        std::path::Path::new(&vars["MESH_LOG_DIR"]),
    );
    checks::all(&target).await;
    drop(target);
    // Closing its stdin stops the deployment (it cleans up after itself).
    let mut stdin = up.stdin.take().unwrap();
    let _ = stdin.flush();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("`mesh up` did not stop when its stdin closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
