//! What a cluster's metadata says, remembered by the cluster's name.
//!
//! Envoy serialises a cluster's whole `Metadata` on every
//! `xds.cluster_metadata` read, one of the dearest hostcalls a filter
//! makes per request or connection; the name (`xds.cluster_name`) is a
//! short string. A filter that derives a small answer from the metadata
//! (an opt-out, a protocol policy) keeps that answer here under the name,
//! and empties the map every refresh period, so a metadata change made by
//! xDS reaches its requests within one period. A period of 0 turns the map
//! off: every lookup misses and nothing is kept.

use std::collections::HashMap;

use crate::markers::{self, Marker};
use crate::properties::{get_property, get_property_string};
use crate::schema::{Json, ReadJson};
use crate::streams::set_tick_period_millis;
use crate::{ConfigError, HostResult};

/// The refresh period both filters default to: one second, well under the
/// seconds a mesh-wide xDS push takes to reach every sidecar, and one
/// metadata read per cluster per second costs nothing.
pub const DEFAULT_REFRESH_MS: u32 = 1000;
/// The longest period accepted: a minute. Beyond that a unit mistake
/// (seconds for milliseconds) would keep a cluster's old answer far too long.
pub const MAX_REFRESH_MS: u32 = 60_000;

/// Reads a `cluster_metadata_refresh_ms` configuration value (0..=[`MAX_REFRESH_MS`]).
pub fn read_refresh_ms(value: Json, field: &str) -> Result<u32, ConfigError> {
    let ms = value.into_integer(field, MAX_REFRESH_MS.into())?;
    Ok(u32::try_from(ms).unwrap_or(MAX_REFRESH_MS))
}

/// Clusters remembered at most; past it the map starts over (memory bound
/// against pathological churn: a mesh has as many names as clusters).
pub const MAX_CLUSTERS: usize = 512;

/// Answers by cluster name, until the next [`ByCluster::refresh`].
#[derive(Debug)]
pub struct ByCluster<V> {
    refresh_ms: u32,
    answers: HashMap<String, V>,
    /// When the map is next emptied ([`ByCluster::refresh_if_due`]).
    due_ms: Option<u64>,
}

impl<V: Clone> ByCluster<V> {
    /// Remembers for `refresh_ms` (0: never remembers).
    pub fn new(refresh_ms: u32) -> Self {
        ByCluster { refresh_ms, answers: HashMap::new(), due_ms: None }
    }

    pub fn refresh_ms(&self) -> u32 {
        self.refresh_ms
    }

    /// Whether lookups can hit (so whether the name is worth reading).
    pub fn enabled(&self) -> bool {
        self.refresh_ms > 0
    }

    pub fn get(&self, cluster: &str) -> Option<V> {
        self.answers.get(cluster).cloned()
    }

    pub fn insert(&mut self, cluster: String, answer: V) {
        if !self.enabled() {
            return;
        }
        if self.answers.len() >= MAX_CLUSTERS {
            self.answers.clear();
        }
        self.answers.insert(cluster, answer);
    }

    /// Forgets every answer: the next lookup of each cluster misses.
    pub fn refresh(&mut self) {
        self.answers.clear();
    }

    /// For a timer that may tick more often than the refresh period:
    /// empties the map on the first tick and then whenever `now_ms` has
    /// reached the end of the current period, so an answer is never older
    /// than one period plus one tick.
    pub fn refresh_if_due(&mut self, now_ms: u64) {
        if self.due_ms.is_some_and(|due| now_ms < due) {
            return;
        }
        self.refresh();
        self.due_ms = Some(now_ms.saturating_add(u64::from(self.refresh_ms)));
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// `answer` for the current stream's cluster, remembered by the cluster's
/// name in `clusters` (see the module docs). With remembering off, or no
/// readable name, `answer` runs and no name is read (or kept).
pub fn by_cluster<V: Clone>(clusters: &std::cell::RefCell<ByCluster<V>>, answer: impl FnOnce() -> V) -> V {
    let enabled = clusters.try_borrow().is_ok_and(|c| c.enabled());
    if !enabled {
        return answer();
    }
    let Ok(Some(name)) = get_property_string(&["xds", "cluster_name"]) else {
        return answer();
    };
    if let Some(known) = clusters.try_borrow().ok().and_then(|c| c.get(&name)) {
        return known;
    }
    // Not borrowed while `answer` makes its hostcalls.
    let value = answer();
    if let Ok(mut clusters) = clusters.try_borrow_mut() {
        clusters.insert(name, value.clone());
    }
    value
}

/// Reads the stream's cluster metadata (`xds.cluster_metadata`; `None`
/// when Envoy has none) and reports a marker written where `filter` does
/// not read it (see [`crate::markers`]): a warning naming the cluster and one
/// call of `count`, once per distinct metadata.
pub fn read_cluster_metadata(
    filter: &str,
    reports: &std::cell::RefCell<markers::Reports>,
    markers: &[Marker],
    count: impl Fn(),
) -> Option<Vec<u8>> {
    let metadata = get_property(&["xds", "cluster_metadata"]).unwrap_or_else(|e| {
        log::warn!("{filter}: cannot read xds.cluster_metadata: {e}");
        None
    })?;
    let misplaced = reports.try_borrow_mut().map(|mut r| r.first_time(&metadata, markers)).unwrap_or_default();
    if !misplaced.is_empty() {
        let cluster = get_property_string(&["xds", "cluster_name"]).ok().flatten().unwrap_or_default();
        for found in &misplaced {
            log::warn!("{filter}: cluster {cluster}: {found}");
        }
        count();
    }
    Some(metadata)
}

/// Starts the root timer that empties a [`ByCluster`] every
/// `refresh_ms` (the plugin calls [`ByCluster::refresh`] from
/// its tick); nothing to start for 0. A plugin whose timer Envoy refuses
/// should refuse its configuration: a remembered cluster would never be
/// read again.
pub fn start_cluster_refresh(refresh_ms: u32) -> HostResult<()> {
    if refresh_ms == 0 {
        return Ok(());
    }
    set_tick_period_millis(refresh_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_until_the_refresh() {
        let mut clusters = ByCluster::new(1000);
        assert!(clusters.enabled());
        clusters.insert("a".into(), Some(true));
        assert_eq!(clusters.get("a"), Some(Some(true)));
        assert_eq!(clusters.get("b"), None);
        clusters.refresh();
        assert!(clusters.is_empty());
        assert_eq!(clusters.get("a"), None);
    }

    #[test]
    fn a_zero_period_remembers_nothing() {
        let mut clusters = ByCluster::new(0);
        assert!(!clusters.enabled());
        clusters.insert("a".into(), ());
        assert!(clusters.is_empty());
        assert_eq!(clusters.get("a"), None);
    }

    #[test]
    fn refresh_if_due_empties_once_per_period() {
        let mut clusters = ByCluster::new(100);
        clusters.insert("a".into(), 1);
        clusters.refresh_if_due(1_000); // the first tick: empties and starts the period
        assert!(clusters.is_empty());
        clusters.insert("a".into(), 1);
        clusters.refresh_if_due(1_099);
        assert_eq!(clusters.len(), 1);
        clusters.refresh_if_due(1_100);
        assert!(clusters.is_empty());
        clusters.insert("a".into(), 2);
        clusters.refresh_if_due(1_150);
        assert_eq!(clusters.get("a"), Some(2));
        clusters.refresh_if_due(1_200);
        assert!(clusters.is_empty());
    }

    #[test]
    fn the_map_is_bounded() {
        let mut clusters = ByCluster::new(1000);
        for i in 0..(MAX_CLUSTERS * 3) {
            clusters.insert(format!("c{i}"), i);
            assert!(clusters.len() <= MAX_CLUSTERS);
        }
    }
}
