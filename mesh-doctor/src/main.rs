//! `mesh-doctor [--istio-filters-off] <config>...`: every finding, then a
//! summary; exits 1 if any is an error, 2 if a configuration cannot be read.

use std::process::ExitCode;

use mesh_doctor::{check, input, Options, Severity};

const USAGE: &str = "\
usage: mesh-doctor [--istio-filters-off] <config>...

Reads Envoy configurations and reports every mistake it can see in how the
exchange filters are deployed: what, where, why it matters, and the fix.

<config> is a bootstrap file (YAML or JSON), an admin /config_dump saved to
a file, `istioctl proxy-config all <pod> -o json` output, `-` for standard
input, or a live admin address (http://127.0.0.1:15000). Give the outbound
and the inbound Envoy together and the doctor checks which inbound chain
each TCP exchange cluster reaches.

  --istio-filters-off   the preflight before applying the client roles
                        (docs/deployment.md): Istio's own exchange and ALPN
                        filters, and istiod's istio-peer-exchange ALPN, are errors

Exit status: 0 no errors, 1 errors found, 2 a configuration could not be read.";

fn main() -> ExitCode {
    let mut options = Options::default();
    let mut sources = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--istio-filters-off" => options.istio_filters_off = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with("--") => {
                eprintln!("mesh-doctor: unknown option {flag}\n\n{USAGE}");
                return ExitCode::from(2);
            }
            source => sources.push(source.to_string()),
        }
    }
    if sources.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut proxies = Vec::new();
    for source in &sources {
        match input::load(source) {
            Ok(proxy) => proxies.push(proxy),
            Err(e) => {
                eprintln!("mesh-doctor: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let findings = check(&proxies, options);
    for finding in &findings {
        println!("{finding}\n");
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, notes) = (count(Severity::Error), count(Severity::Warning), count(Severity::Note));
    println!(
        "mesh-doctor: {} configuration(s): {errors} error(s), {warnings} warning(s), {notes} note(s)",
        proxies.len()
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
