//! A scenario's rows and the table printed for them: per row the median
//! throughput, its ratio to the first row (no filter), each Envoy's CPU µs
//! per operation, and for rows after the floor their Δ over it with the
//! range of that Δ over the rounds.

use crate::measure::{median, range, Run};

/// Which of the benchmark's deployments a row runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// As shipped (`identity_check: enforce`).
    Shipped,
    /// The same with `identity_check: off` (the identity scenarios).
    Unchecked,
    /// The same with Istio's standard metrics on (`istio_metrics`).
    Metrics,
}

/// One row: a label, the client listener its load goes to, and whether it
/// is the floor the rows after it are compared with.
#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub listener: &'static str,
    pub deployment: Deployment,
    pub floor: bool,
}

impl Row {
    pub fn new(label: impl Into<String>, listener: &'static str) -> Row {
        Row { label: label.into(), listener, deployment: Deployment::Shipped, floor: false }
    }

    /// The row the following rows' Δ is taken over.
    pub fn floor(self) -> Row {
        Row { floor: true, ..self }
    }

    pub fn on(self, deployment: Deployment) -> Row {
        Row { deployment, ..self }
    }
}

pub struct Scenario {
    pub title: String,
    pub unit: &'static str,
    /// The first row is the reference of the ratio column.
    pub rows: Vec<Row>,
    /// (what, target) lines printed under the table.
    pub targets: Vec<(String, String)>,
}

impl Scenario {
    /// Prints the table for `runs[row][round]`.
    pub fn print(&self, runs: &[Vec<Run>]) {
        let rounds = runs.first().map_or(0, Vec::len);
        println!("\n{} ({} rounds, median)", self.title, rounds);
        println!(
            "  {:<44} {:>10} {:>7} {:>13} {:>13} {:>22}  Δ's range over the rounds",
            "variant", self.unit, "ratio", "client µs/op", "server µs/op", "client/server Δ floor"
        );
        let floor = self.rows.iter().position(|r| r.floor);
        let per_round = |f: &dyn Fn(usize) -> f64| median((0..rounds).map(f).collect());
        for (i, row) in self.rows.iter().enumerate() {
            let (own, first) = (&runs[i], &runs[0]);
            let rate = per_round(&|r| own[r].rate);
            let ratio = per_round(&|r| own[r].rate / first[r].rate);
            let client = per_round(&|r| own[r].client_us);
            let server = per_round(&|r| own[r].server_us);
            let (delta, spread) = match floor {
                Some(f) if i > f => {
                    let base = &runs[f];
                    let client: Vec<f64> = (0..rounds).map(|r| own[r].client_us - base[r].client_us).collect();
                    let server: Vec<f64> = (0..rounds).map(|r| own[r].server_us - base[r].server_us).collect();
                    (
                        format!("{:+.1} / {:+.1}", median(client.clone()), median(server.clone())),
                        format!("{} / {}", range(&client), range(&server)),
                    )
                }
                _ => (String::new(), String::new()),
            };
            let label = &row.label;
            println!("  {label:<44} {rate:>10.1} {ratio:>7.3} {client:>13.1} {server:>13.1} {delta:>22}  {spread}");
        }
        for (what, target) in &self.targets {
            println!("  target: {what}: {target}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_shipped_and_not_the_floor_unless_said() {
        let row = Row::new("alpn-filter", "outbound_http");
        assert_eq!((row.deployment, row.floor), (Deployment::Shipped, false));
        let floor = Row::new("off", "l").on(Deployment::Unchecked).floor();
        assert_eq!((floor.deployment, floor.floor), (Deployment::Unchecked, true));
    }
}
