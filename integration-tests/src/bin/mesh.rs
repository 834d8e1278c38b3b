//! Runs parts of the deployment outside the test process:
//!
//! ```text
//! mesh certs <dir>                  write a fresh CA and the workload certificates,
//!                                   unless a complete set is already there (kept)
//! mesh backends <cert-dir> [host]   run the backends on their fixed ports (docker compose)
//! mesh up <env-file>                start the whole local deployment, write the MESH_*
//!                                   variables that describe it, run until stdin closes
//! mesh check                        the end-to-end checks against the deployment the
//!                                   MESH_* variables describe (docker compose's test driver)
//! ```

use std::io::Read;
use std::path::Path;

use integration_tests::backends::{BackendPorts, Backends};
use integration_tests::checks;
use integration_tests::mesh::Mesh;
use integration_tests::pki::Pki;

fn usage() -> ! {
    eprintln!("usage: mesh certs <dir> | mesh backends <cert-dir> [host] | mesh up <env-file> | mesh check");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["certs", dir] => match Pki::generate_unless_present(Path::new(dir)) {
            (_, true) => println!("certificates already in {dir}: kept (running Envoys hold them)"),
            (_, false) => println!("certificates written to {dir}"),
        },
        ["check"] => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(checks::all(&integration_tests::mesh::target_from_env()));
            println!("all deployment checks passed");
        }
        ["backends", cert_dir, rest @ ..] => {
            let host = rest.first().copied().unwrap_or("0.0.0.0");
            let backends = Backends::start_on(&Pki::load(Path::new(cert_dir)), BackendPorts::fixed(host));
            println!(
                "backends: echo {} banner {} http {} plain-https {} plain-tls {} mesh-recorder {}",
                backends.echo,
                backends.banner,
                backends.http,
                backends.plain_https,
                backends.plain_tls,
                backends.mesh_recorder
            );
            loop {
                std::thread::park();
            }
        }
        ["up", env_file] => {
            let mesh = Mesh::start();
            let vars = format!(
                "MESH_TARGET=external\nMESH_CLIENT_ADMIN={}\nMESH_SERVER_ADMIN={}\nMESH_CERT_DIR={}\nMESH_LOG_DIR={}\n",
                mesh.client.addr,
                mesh.server.addr,
                mesh.target.pki.dir.display(),
                mesh.dir().display()
            );
            let tmp = format!("{env_file}.tmp");
            std::fs::write(&tmp, &vars).expect("write env file");
            std::fs::rename(&tmp, env_file).expect("write env file");
            println!("deployment up; variables in {env_file}; close stdin to stop\n{vars}");
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(mesh);
        }
        _ => usage(),
    }
}
