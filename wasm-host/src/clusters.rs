//! What a cluster's metadata says, remembered by the cluster's name: the
//! hostcalls around [`filter_common::clusters::ByCluster`].
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

use filter_common::clusters::ByCluster;
use filter_common::istio::markers::{self, Marker};

use crate::properties::{get_property, get_property_string};
use crate::streams::set_tick_period_millis;
use crate::HostResult;

/// `answer` for the current stream's cluster, remembered by the cluster's
/// name (`xds.cluster_name`) in `clusters`: [`ByCluster::remembered`].
pub fn by_cluster<V: Clone>(clusters: &RefCell<ByCluster<V>>, answer: impl FnOnce() -> V) -> V {
    ByCluster::remembered(
        clusters,
        &mut (),
        |_| get_property_string(&["xds", "cluster_name"]).ok().flatten(),
        |_| answer(),
    )
}

/// Reads the stream's cluster metadata (`xds.cluster_metadata`; `None`
/// when Envoy has none) and reports a marker written where `filter` does
/// not read it (see [`filter_common::istio`]): a warning naming the cluster and one
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
