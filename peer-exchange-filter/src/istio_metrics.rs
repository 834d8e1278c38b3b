//! The proxy-wasm layer of Istio's standard metrics ([`peer_exchange::istio_stats`]):
//! per VM, the label sets defined so far and what each cluster says about
//! its service; per request or connection, the reads at its end and the
//! recording. Used by both forms when `istio_metrics` is configured.

use std::cell::RefCell;

use filter_common::clusters::ByCluster;
use filter_common::ReadOnce;
use wasm_host::{HeaderPairs, PerVm};

use peer_exchange::config::{Config, Role};
use peer_exchange::istio_stats::{
    grpc_message_counts, label_set, ClusterService, HttpSeries, LabelInputs, Metric, Series, SeriesTable, TcpSeries,
    Traffic, WorkloadLabels,
};

/// How long a cluster's service is remembered by the cluster's name
/// (the client's metadata refresh; the server's own, as it reads nothing else).
const SERVICE_REFRESH_MS: u32 = filter_common::clusters::DEFAULT_REFRESH_MS;

/// A label set's ids, whichever form defined it (one table type per VM:
/// a second monomorphised map would cost module size for nothing).
#[derive(Clone, Copy)]
enum Defined {
    Http(HttpSeries),
    Tcp(TcpSeries),
}

thread_local! {
    /// The label sets this VM has defined (see [`SeriesTable`]: shared by
    /// every plugin configuration the VM has had). A set's labels include
    /// its protocol, so HTTP and TCP sets never share a key.
    static TABLE: PerVm<SeriesTable<Defined>> = PerVm::new(SeriesTable::default());
}

fn defined_series(labels: &str, max: u32, define: impl FnOnce(&str) -> Option<Defined>) -> Series<Defined> {
    TABLE.with(|table| table.with(|t| t.series(labels, max, define))).unwrap_or(Series::Overflow)
}

/// Defines one metric of a label set in Envoy; `None` (logged) if refused.
fn define_metric(labels: &str, metric: Metric) -> Option<u32> {
    match wasm_host::define_metric(metric.histogram, &format!("{labels}{}", metric.name)) {
        Ok(id) => Some(id),
        Err(e) => {
            log::warn!("peer-exchange-filter: cannot define {} ({e}); not recorded", metric.name);
            None
        }
    }
}

/// A VM's metrics state for one plugin configuration.
pub(crate) struct IstioMetrics {
    role: Role,
    local: WorkloadLabels,
    /// `max_label_sets`.
    max: u32,
    services: RefCell<ByCluster<ClusterService>>,
}

/// What a request or connection knows of its peer by its end.
pub(crate) struct PeerSeen {
    /// The stored peer's labels (`None`: not found).
    pub labels: Option<std::rc::Rc<WorkloadLabels>>,
    /// The peer certificate's URI SAN, if already read (read as `None`: no certificate or no URI SAN).
    pub principal: ReadOnce<Option<String>>,
}

impl IstioMetrics {
    pub(crate) fn new(config: &Config, local: WorkloadLabels) -> Option<IstioMetrics> {
        let max = config.istio_metrics?.max_label_sets;
        let refresh = match config.cluster_metadata_refresh_ms {
            0 => SERVICE_REFRESH_MS,
            ms => ms,
        };
        Some(IstioMetrics { role: config.role, local, max, services: RefCell::new(ByCluster::new(refresh)) })
    }

    /// The period the root's timer must empty [`Self::refresh`] with.
    pub(crate) fn refresh_ms(&self) -> u32 {
        self.services.try_borrow().map(|s| s.refresh_ms()).unwrap_or(SERVICE_REFRESH_MS)
    }

    pub(crate) fn refresh(&self, now_ms: Option<u64>) {
        if let Ok(mut services) = self.services.try_borrow_mut() {
            match now_ms {
                Some(now) => services.refresh_if_due(now),
                None => services.refresh(),
            }
        }
    }

    /// The stream's cluster service, remembered by the cluster's name.
    fn cluster_service(&self) -> ClusterService {
        ByCluster::remembered(
            &self.services,
            &mut None::<String>,
            |name| {
                *name = wasm_host::get_property_string(&["xds", "cluster_name"]).ok().flatten();
                name.clone()
            },
            |name| {
                let name = match name.take() {
                    Some(name) => name,
                    None => wasm_host::get_property_string(&["xds", "cluster_name"]).ok().flatten().unwrap_or_default(),
                };
                let metadata = wasm_host::get_property(&["xds", "cluster_metadata"]).ok().flatten().unwrap_or_default();
                ClusterService::read(&name, &metadata)
            },
        )
    }

    /// The label set of a request or connection with this peer and traffic.
    fn labels(&self, peer: &PeerSeen, host: &str, traffic: &Traffic) -> String {
        let side = match self.role {
            Role::Server => "connection",
            Role::Client => "upstream",
        };
        let peer_principal = match peer.principal.get() {
            Some(san) => san.clone().unwrap_or_default(),
            None => {
                wasm_host::get_property_string(&[side, "uri_san_peer_certificate"]).ok().flatten().unwrap_or_default()
            }
        };
        let local_principal =
            wasm_host::get_property_string(&[side, "uri_san_local_certificate"]).ok().flatten().unwrap_or_default();
        let service = self.cluster_service().with_host(host);
        label_set(&LabelInputs {
            role: self.role,
            local: &self.local,
            peer: peer.labels.as_deref(),
            peer_principal: &peer_principal,
            local_principal: &local_principal,
            service: &service,
            traffic,
        })
    }

    /// A request's series, defined the first time (under the cap).
    fn http_series(&self, peer: &PeerSeen, host: &str, traffic: &Traffic) -> Series<HttpSeries> {
        let labels = self.labels(peer, host, traffic);
        let grpc = traffic.protocol == "grpc";
        let define = |labels: &str| HttpSeries::define(grpc, |metric| define_metric(labels, metric)).map(Defined::Http);
        match defined_series(&labels, self.max, define) {
            Series::Ids(Defined::Http(series)) => Series::Ids(series),
            _ => Series::Overflow,
        }
    }

    /// A connection's series, defined the first time (under the cap).
    fn tcp_series(&self, peer: &PeerSeen, traffic: &Traffic) -> Series<TcpSeries> {
        let labels = self.labels(peer, "", traffic);
        let define = |labels: &str| TcpSeries::define(|metric| define_metric(labels, metric)).map(Defined::Tcp);
        match defined_series(&labels, self.max, define) {
            Series::Ids(Defined::Tcp(series)) => Series::Ids(series),
            _ => Series::Overflow,
        }
    }

    /// Records a finished request (in its log phase, when Envoy has its
    /// code, flags, duration, final headers and trailers). False: over the
    /// cap, not recorded. The request's and the response's sizes recorded.
    pub(crate) fn record_request(&self, peer: &PeerSeen, request: &RequestSeen) -> Option<(u64, u64)> {
        let property = wasm_host::get_property_u64;
        let traffic = Traffic {
            protocol: if request.grpc { "grpc" } else { "http" },
            // The `:status` we read saves a property read; Envoy's code otherwise.
            response_code: Some(request.status.or_else(|| property(&["response", "code"])).unwrap_or(0)),
            // Envoy's `response.grpc_status` is native's figure: the
            // trailers' status, else a Trailers-Only answer's headers', else
            // the HTTP code mapped (`Grpc::Common::getGrpcStatus`, which
            // native's `istio_stats` calls with the same maps).
            grpc_status: if request.grpc { property(&["response", "grpc_status"]) } else { None },
            response_flags: property(&["response", "flags"]).unwrap_or(0),
        };
        let Series::Ids(series) = self.http_series(peer, &request.host, &traffic) else {
            return None;
        };
        wasm_host::add_to_metric(series.requests, 1);
        if let Some(ns) = property(&["request", "duration"]) {
            wasm_host::record_metric(series.duration, ns / 1_000_000);
        }
        // Envoy's sizes of the stream: the body bytes received or sent plus
        // the final header maps' byte size (and the response trailers').
        // Native records its downstream wire-bytes meter, which Envoy
        // exposes to no wasm property (docs/observability.md).
        let size = |path: [&str; 2]| property(&path).unwrap_or(0);
        let sizes = (size(["request", "total_size"]), size(["response", "total_size"]));
        wasm_host::record_metric(series.request_bytes, sizes.0);
        wasm_host::record_metric(series.response_bytes, sizes.1);
        if let Some(messages) = series.messages {
            // Envoy's `grpc_stats` filter (emit_filter_state, as istiod
            // configures it), when it is in the chain; native reads the same.
            let counts = wasm_host::get_property(&["filter_state", "envoy.filters.http.grpc_stats"]).ok().flatten();
            if let Some((sent, received)) = counts.as_deref().and_then(grpc_message_counts) {
                wasm_host::add_to_metric(messages.request, sent);
                wasm_host::add_to_metric(messages.response, received);
            }
        }
        Some(sizes)
    }

    /// A connection's series, opened once its peer is known (or at its end):
    /// counts it opened. `None`: over the cap.
    pub(crate) fn open_connection(&self, peer: &PeerSeen) -> Option<TcpSeries> {
        let traffic = Traffic {
            protocol: "tcp",
            response_code: None,
            grpc_status: None,
            response_flags: wasm_host::get_property_u64(&["response", "flags"]).unwrap_or(0),
        };
        match self.tcp_series(peer, &traffic) {
            Series::Ids(series) => {
                wasm_host::add_to_metric(series.opened, 1);
                Some(series)
            }
            Series::Overflow => None,
        }
    }

    /// The bytes Envoy has counted on the connection that is the effective
    /// context, reported up to now (`reported`, updated): on a connection,
    /// Envoy's request/response sizes are the bytes received from and sent
    /// to the downstream, exchange prefixes included; native counts what
    /// `tcp_proxy` passes (its downstream wire-bytes meter), so the
    /// prefixes on the downstream connection are taken off. Two property
    /// reads; the counters move by the difference only.
    pub(crate) fn report_bytes(&self, series: TcpSeries, reported: &mut Reported) {
        let TcpSeries { sent, received, .. } = series;
        let property = wasm_host::get_property_u64;
        let app = |total: Option<u64>, prefix: u64| total.map(|total| total.saturating_sub(prefix));
        let now_sent = app(property(&["response", "total_size"]), reported.prefixes.sent).unwrap_or(reported.sent);
        let now_received =
            app(property(&["request", "total_size"]), reported.prefixes.received).unwrap_or(reported.received);
        if now_sent > reported.sent {
            wasm_host::add_to_metric(sent, now_sent - reported.sent);
            reported.sent = now_sent;
        }
        if now_received > reported.received {
            wasm_host::add_to_metric(received, now_received - reported.received);
            reported.received = now_received;
        }
    }

    /// A connection's end: the bytes not yet reported, and closed.
    pub(crate) fn close_connection(&self, series: TcpSeries, reported: &mut Reported) {
        self.report_bytes(series, reported);
        wasm_host::add_to_metric(series.closed, 1);
    }
}

/// What an open connection's counters already hold.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reported {
    pub sent: u64,
    pub received: u64,
    pub prefixes: Prefixes,
}

/// The exchange's prefixes Envoy counted on a connection's downstream side
/// (the server's: the client's, stripped, and ours, sent): not the app's bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prefixes {
    pub sent: u64,
    pub received: u64,
}

/// What the request form collects on the way for its metrics.
#[derive(Default)]
pub(crate) struct RequestSeen {
    /// `:authority` (native's `Host` fallback for the service).
    pub host: String,
    /// `content-type: application/grpc...`.
    pub grpc: bool,
    /// The response's `:status`, as read.
    pub status: Option<u64>,
}

impl RequestSeen {
    /// From the request's headers, as read.
    pub(crate) fn request(pairs: &HeaderPairs) -> RequestSeen {
        let mut seen = RequestSeen::default();
        for (name, value) in pairs.iter() {
            match name {
                b":authority" => seen.host = String::from_utf8(value.to_vec()).unwrap_or_default(),
                b"content-type" => seen.grpc = value.starts_with(b"application/grpc"),
                _ => {}
            }
        }
        seen
    }
}

impl RequestSeen {
    /// Adds what the response's headers show.
    pub(crate) fn response(&mut self, pairs: &HeaderPairs) {
        self.status = pairs
            .iter()
            .find(|(n, _)| *n == b":status")
            .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok());
    }
}
