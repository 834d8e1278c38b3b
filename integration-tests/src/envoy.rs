//! One Envoy child process, owned by the test: started from an
//! `envoy-configs/` template with values chosen at run time, checked for
//! readiness through its admin endpoint, and killed by PID on drop (its log
//! is printed when the drop happens during a panic).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths;

/// Fills `${NAME}` placeholders; every placeholder must have a value. The
/// one renderer is `envoy-configs/render.sh` (docker-compose's), run here on
/// the text with only the given variables (and `PATH`) in its environment.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let script = paths::envoy_configs().join("render.sh");
    let mut child = Command::new("sh")
        .arg(&script)
        .args(["/dev/stdin", "/dev/stdout"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let mut stdin = child.stdin.take().ok_or("render.sh: no stdin")?;
    let text = template.to_string();
    // Written from a thread: awk writes while it reads, and a template larger
    // than a pipe's buffer would otherwise block both sides.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child.wait_with_output().map_err(|e| format!("render.sh: {e}"))?;
    writer.join().map_err(|_| "render.sh: writer panicked".to_string())?.map_err(|e| format!("render.sh: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    String::from_utf8(output.stdout).map_err(|e| format!("render.sh: {e}"))
}

/// Placeholders used in a template.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &after[end + 1..];
    }
    names
}

/// An Envoy's admin endpoint: stats, listeners, readiness. Works for an
/// Envoy this harness started and for one it was pointed at.
#[derive(Clone, Debug)]
pub struct Admin {
    pub name: String,
    pub addr: SocketAddr,
}

/// An Envoy child process owned by the harness (derefs to its [`Admin`]).
pub struct Envoy {
    child: Option<Child>,
    pub admin: Admin,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

impl std::ops::Deref for Envoy {
    type Target = Admin;
    fn deref(&self) -> &Admin {
        &self.admin
    }
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start one Envoy.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// Names the rendered config, the log and the admin address file in `dir`.
    pub name: &'a str,
    /// A file in envoy-configs/, or an absolute path.
    pub template: &'a str,
    pub vars: &'a BTreeMap<String, String>,
    pub dir: &'a Path,
    /// Envoy's level for the `wasm` logger (the filters' own lines).
    pub wasm_log_level: &'a str,
}

impl Envoy {
    /// Starts Envoy and waits until it is ready. Fails (with the log) if
    /// Envoy exits or is not ready in time.
    pub fn start(launch: &Launch<'_>) -> Result<Envoy, String> {
        let mut envoy = Self::spawn(launch)?;
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// Starts Envoy in working directory `cwd` (relative paths in its
    /// config resolve against it) and waits until it is ready.
    pub fn start_in(launch: &Launch<'_>, cwd: &Path) -> Result<Envoy, String> {
        let mut envoy = Self::spawn_with(launch, Some(cwd), &[])?;
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// [`Envoy::start_in`] with more command-line arguments.
    pub fn start_in_with_args(launch: &Launch<'_>, cwd: &Path, args: &[&str]) -> Result<Envoy, String> {
        let mut envoy = Self::spawn_with(launch, Some(cwd), args)?;
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// Starts Envoy with more command-line arguments and waits until it is ready.
    pub fn start_with_args(launch: &Launch<'_>, args: &[&str]) -> Result<Envoy, String> {
        let mut envoy = Self::spawn_with(launch, None, args)?;
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// Starts Envoy without waiting for it to be ready.
    pub fn spawn(launch: &Launch<'_>) -> Result<Envoy, String> {
        Self::spawn_with(launch, None, &[])
    }

    fn spawn_with(launch: &Launch<'_>, cwd: Option<&Path>, args: &[&str]) -> Result<Envoy, String> {
        let Launch { name, template, vars, dir, wasm_log_level } = *launch;
        let template_path = paths::envoy_configs().join(template);
        let text = std::fs::read_to_string(&template_path)
            .map_err(|e| format!("cannot read {}: {e}", template_path.display()))?;
        let config = render(&text, vars)?;
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let log_path = dir.join(format!("{name}.log"));
        let admin_path = dir.join(format!("{name}.admin"));
        let _ = std::fs::remove_file(&admin_path);
        let log = std::fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let mut command = Command::new(paths::envoy_bin());
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--file-flush-interval-msec")
            .arg("50")
            .arg("-l")
            .arg("info")
            .arg("--component-log-level")
            .arg(format!("wasm:{wasm_log_level}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // Two workers, as the tests and the benchmark assume, unless asked.
        if !args.contains(&"--concurrency") {
            command.args(["--concurrency", "2"]);
        }
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill
        // Envoy if the test process dies without running destructors.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("cannot start Envoy: {e}"))?;
        let mut envoy = Envoy {
            child: Some(child),
            admin: Admin { name: name.to_string(), addr: "127.0.0.1:0".parse().expect("addr") },
            log_path,
            config_path,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path) {
                if let Ok(addr) = text.trim().parse() {
                    envoy.admin.addr = addr;
                    break;
                }
            }
            if let Some(status) = envoy.exit_status() {
                return Err(format!("Envoy {name} exited ({status}) while starting:\n{}", envoy.log_tail(60)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy {name} wrote no admin address in {READY_TIMEOUT:?}:\n{}",
                    envoy.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(envoy)
    }

    /// Waits until an Envoy from [`Envoy::spawn`] is ready (fails with its log).
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!("Envoy {} exited ({status}):\n{}", self.name, self.log_tail(60)));
            }
            if self.admin.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("Envoy {} not ready in {READY_TIMEOUT:?}:\n{}", self.name, self.log_tail(60)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn is_alive(&mut self) -> bool {
        self.exit_status().is_none() && self.admin.is_ready()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling our own child by its PID.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n----- Envoy {} log ({}) -----\n{}\n----- end of Envoy {} log -----",
                self.name,
                self.log_path.display(),
                self.log_tail(200),
                self.name
            );
        }
        self.stop();
    }
}

impl Admin {
    pub fn is_ready(&self) -> bool {
        matches!(self.admin_get("/ready"), Ok((200, body)) if body.trim() == "LIVE")
    }

    /// A plain HTTP/1.1 GET on the admin endpoint (which refuses HTTP/1.0).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed admin response")?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        Ok((status, if chunked { dechunk(body)? } else { body.to_string() }))
    }

    /// The port a named listener is bound to.
    pub fn listener_port(&self, listener: &str) -> u16 {
        let (_, body) = self.admin_get("/listeners?format=json").expect("admin /listeners");
        let json: serde_json::Value = serde_json::from_str(&body).expect("listeners JSON");
        json["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == listener)
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("Envoy {} has no listener {listener}: {body}", self.name))
    }

    /// All counters and gauges, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let (_, body) = self.admin_get("/stats").expect("admin /stats");
        body.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// One counter (0 when Envoy has not created it).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Waits until `counter` reaches at least `value`; returns its last value.
    pub fn wait_counter(&self, name: &str, value: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.counter(name);
            if current >= value || Instant::now() > deadline {
                return current;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(size_line.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("short chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk("5\r\nLIVE\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap(), "LIVE\nabc");
    }

    #[test]
    fn render_fills_every_placeholder_or_fails() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into_iter().collect();
        assert_eq!(render("x ${A} y ${A}\n", &vars).unwrap(), "x 1 y 1\n");
        assert!(render("${B}", &vars).unwrap_err().contains("B is not set"));
        let large: String = (0..20_000).map(|i| format!("line {i} ${{A}}\n")).collect();
        assert_eq!(render(&large, &vars).unwrap(), large.replace("${A}", "1"));
        assert_eq!(placeholders("${A} ${B} ${A}"), vec!["A", "B"]);
    }
}
