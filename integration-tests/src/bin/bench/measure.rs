//! What one run costs each Envoy: its processes' on-CPU time per operation.

use std::time::Instant;

/// Sum of the on-CPU time of every thread of a process, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One measured run: operations done, throughput, CPU per operation of each Envoy.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub rate: f64,
    pub client_us: f64,
    pub server_us: f64,
}

pub struct Envoys {
    pub client: u32,
    pub server: u32,
}

impl Envoys {
    /// Runs `load` (which returns the operations it completed) and measures.
    pub async fn measure<F: std::future::Future<Output = u64>>(&self, load: F) -> Run {
        let (c0, s0, t0) = (cpu_ns(self.client), cpu_ns(self.server), Instant::now());
        let ops = load.await.max(1);
        let elapsed = t0.elapsed().as_secs_f64();
        let (c1, s1) = (cpu_ns(self.client), cpu_ns(self.server));
        Run {
            rate: ops as f64 / elapsed,
            client_us: (c1 - c0) as f64 / 1e3 / ops as f64,
            server_us: (s1 - s0) as f64 / 1e3 / ops as f64,
        }
    }
}

/// `[lowest..highest]` of per-round values: how far one round can be from
/// the median on this machine, so a reader can tell a difference from noise.
pub fn range(v: &[f64]) -> String {
    let low = v.iter().copied().fold(f64::INFINITY, f64::min);
    let high = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("[{low:+.0}..{high:+.0}]")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Where a row's load goes: a listener of one deployment's client Envoy,
/// and that deployment's Envoys.
pub struct Target<'a> {
    pub addr: std::net::SocketAddr,
    pub envoys: &'a Envoys,
}

/// Runs `load` through every target once per round, the order rotating
/// from round to round so drift hits all of them alike (after one warm-up
/// run each: connection pools, VMs, caches). `[target][round]`.
pub async fn rounds(targets: &[Target<'_>], load: crate::load::Load, rounds: usize, secs: u64) -> Vec<Vec<Run>> {
    for target in targets {
        let _ = load.run(target.addr, secs).await;
    }
    let n = targets.len();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let target = &targets[i];
            runs[i].push(target.envoys.measure(load.run(target.addr, secs)).await);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    runs
}
