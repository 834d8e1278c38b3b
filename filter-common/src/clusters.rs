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

use std::cell::RefCell;

use crate::bounded::BoundedMap;
use crate::schema::{Json, ReadJson};
use crate::ConfigError;

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
    answers: BoundedMap<String, V>,
    /// When the map is next emptied ([`ByCluster::refresh_if_due`]).
    due_ms: Option<u64>,
}

impl<V: Clone> ByCluster<V> {
    /// Remembers for `refresh_ms` (0: never remembers).
    pub fn new(refresh_ms: u32) -> Self {
        ByCluster { refresh_ms, answers: BoundedMap::new(MAX_CLUSTERS), due_ms: None }
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

impl<V: Clone> ByCluster<V> {
    /// `answer` for the cluster `name` reads, remembered by that name: the
    /// one path by which the glue remembers by cluster name. With
    /// remembering off, `name` is not called (the name read is saved); with
    /// no name, `answer` runs and nothing is kept. Neither closure runs with
    /// the map borrowed (both make hostcalls); `on` is what both use (the
    /// request's route, whose name read is shared with other rules).
    pub fn remembered<C: ?Sized>(
        clusters: &RefCell<Self>,
        on: &mut C,
        name: impl FnOnce(&mut C) -> Option<String>,
        answer: impl FnOnce(&mut C) -> V,
    ) -> V {
        let enabled = clusters.try_borrow().is_ok_and(|c| c.enabled());
        let Some(name) = (if enabled { name(on) } else { None }) else {
            return answer(on);
        };
        if let Some(known) = clusters.try_borrow().ok().and_then(|c| c.get(&name)) {
            return known;
        }
        let value = answer(on);
        if let Ok(mut clusters) = clusters.try_borrow_mut() {
            clusters.insert(name, value.clone());
        }
        value
    }
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

    /// What the closures of [`ByCluster::remembered`] were asked, in order.
    #[derive(Default)]
    struct Route {
        name: Option<String>,
        calls: Vec<&'static str>,
    }

    fn remembered(clusters: &RefCell<ByCluster<u32>>, route: &mut Route, answer: u32) -> u32 {
        ByCluster::remembered(
            clusters,
            route,
            |r| {
                r.calls.push("name");
                r.name.clone()
            },
            |r| {
                r.calls.push("answer");
                answer
            },
        )
    }

    #[test]
    fn remembered_reads_the_name_then_answers_once_per_name_and_period() {
        let clusters = RefCell::new(ByCluster::new(1000));
        let mut route = Route { name: Some("a".into()), ..Route::default() };
        assert_eq!(remembered(&clusters, &mut route, 1), 1);
        assert_eq!(remembered(&clusters, &mut route, 2), 1, "remembered: the answer is not asked again");
        assert_eq!(route.calls, ["name", "answer", "name"]);
        clusters.borrow_mut().refresh();
        assert_eq!(remembered(&clusters, &mut route, 3), 3, "asked again after the refresh");
        let mut nameless = Route::default();
        assert_eq!(remembered(&clusters, &mut nameless, 4), 4);
        assert_eq!(remembered(&clusters, &mut nameless, 5), 5, "no name: nothing kept");
        assert_eq!(clusters.borrow().len(), 1);
    }

    #[test]
    fn remembered_with_a_zero_period_never_reads_the_name() {
        let clusters = RefCell::new(ByCluster::new(0));
        let mut route = Route { name: Some("a".into()), ..Route::default() };
        assert_eq!(remembered(&clusters, &mut route, 1), 1);
        assert_eq!(remembered(&clusters, &mut route, 2), 2);
        assert_eq!(route.calls, ["answer", "answer"]);
    }

    #[test]
    fn remembered_answers_with_the_map_free() {
        let clusters = RefCell::new(ByCluster::new(1000));
        let value = ByCluster::remembered(
            &clusters,
            &mut (),
            |_| Some("a".into()),
            |_| {
                assert!(clusters.try_borrow_mut().is_ok(), "the map is not borrowed while answering");
                7
            },
        );
        assert_eq!((value, clusters.borrow().get("a")), (7, Some(7)));
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
