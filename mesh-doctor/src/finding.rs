//! What the doctor reports: one mistake, where it is, why it matters, the fix.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Traffic breaks, or the exchange cannot work: the doctor exits non-zero.
    Error,
    /// Something is lost (a peer, a label, a recovery) or fragile.
    Warning,
    /// Worth knowing; nothing is wrong in itself.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// Every finding's id (docs/troubleshooting.md lists each).
pub const IDS: [&str; 18] = [
    "istio-exchange-present",
    "istio-alpn-present",
    "istio-exchange-alpn",
    "plugin-not-loaded",
    "plugin-configuration",
    "alpn-list",
    "failure-policy-missing",
    "server-fails-open",
    "node-metadata-missing",
    "client-certificate-optional",
    "misplaced-marker",
    "mesh-cluster-without-tls",
    "cluster-not-marked-mesh",
    "tcp-cluster-alpn",
    "tcp-alpn-no-chain",
    "tcp-alpn-http-chain",
    "tcp-chain-without-server-role",
    "stats-tags-missing",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable name (troubleshooting.md lists each).
    pub id: &'static str,
    /// The configuration it was found in (file or address).
    pub source: String,
    /// Listener, chain, filter or cluster.
    pub location: String,
    pub what: String,
    pub why: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}[{}] {}: {}", self.severity, self.id, self.source, self.location)?;
        writeln!(f, "  what: {}", self.what)?;
        writeln!(f, "  why:  {}", self.why)?;
        write!(f, "  fix:  {}", self.fix)
    }
}
