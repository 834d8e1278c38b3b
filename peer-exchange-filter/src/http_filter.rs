//! The proxy-wasm layer of the HTTP form: one [`HttpPeer`] per request,
//! carrying out [`peer_exchange::http`]'s decisions with hostcalls, for the
//! configured discovery and propagation methods.

use std::cell::RefCell;
use std::rc::Rc;

use alpn_decision::decision::{Counter as AlpnCounter, Decider, RequestFacts};
use filter_common::clusters::ByCluster;
use filter_common::istio::{Marker, Reports};
use filter_common::ReadOnce;
use wasm_host::plugin::Action;
use wasm_host::{Counters, HeaderMap, HeaderPairs};

use peer_exchange::baggage::{self, BAGGAGE_HEADER};
use peer_exchange::config::{Config, Method, Role};
use peer_exchange::headers::{encode_metadata_header, PeerHeaders, ID_HEADER, METADATA_HEADER};
use peer_exchange::http::{is_mesh_identity, receive, receive_baggage, BaggageReceived, ClientVerdict, ClientVerdicts};
use peer_exchange::http::{HttpCounter, Received};
use peer_exchange::istio_stats::WorkloadLabels;
use peer_exchange::peers::{with_decoder, PeerDecoder, StoredPeer};
use peer_exchange::workload::{endpoint_workload, EndpointWorkload, Workload};

use crate::istio_metrics::{IstioMetrics, PeerSeen, RequestSeen};
use crate::stored::{mark_peer_not_found, store_endpoint_peer, store_peer};

/// The header form's per-VM state.
pub(crate) struct HttpShared {
    config: Config,
    /// Our `x-envoy-peer-metadata` value, built once.
    metadata_value: String,
    /// Our `baggage` members, built once (native's: no additional labels).
    baggage_value: String,
    node_id: String,
    counters: Counters<HttpCounter>,
    peers: RefCell<PeerDecoder>,
    verdicts: RefCell<ClientVerdicts>,
    /// Client: each route cluster's verdict, by cluster name.
    clusters: RefCell<ByCluster<ClientVerdict>>,
    /// Client: cluster metadata already checked for misplaced markers.
    reports: RefCell<Reports>,
    /// Client: unmarked clusters whose upstream certificate was checked once.
    checked: RefCell<peer_exchange::warnings::Warned>,
    /// Client with `alpn`: alpn-filter's rule, run here, and its counters.
    alpn: Option<(RefCell<Decider>, Counters<AlpnCounter>)>,
    /// With `istio_metrics`: Istio's standard metrics.
    metrics: Option<IstioMetrics>,
}

/// The cluster metadata markers the client reads (with `alpn`, alpn-filter's too).
const MARKERS: [Marker; 3] = [Marker::PeerExchange, Marker::DisableMx, Marker::External];
const MARKERS_WITH_ALPN: [Marker; 5] =
    [Marker::PeerExchange, Marker::DisableMx, Marker::External, Marker::AlpnOverride, Marker::Alpn];

/// The route's cluster, each fact read from Envoy at most once per request
/// and only when a rule asks: the exchange's verdict and the ALPN rule share
/// the reads.
struct RouteCluster<'a> {
    shared: &'a HttpShared,
    name: ReadOnce<Option<String>>,
    metadata: ReadOnce<Option<Vec<u8>>>,
}

impl RouteCluster<'_> {
    fn name(&mut self) -> Option<String> {
        self.name.get_or_read(|| wasm_host::get_property_string(&["xds", "cluster_name"]).ok().flatten()).clone()
    }

    fn metadata(&mut self) -> Option<Vec<u8>> {
        let shared = self.shared;
        let markers: &[Marker] = if shared.alpn.is_some() { &MARKERS_WITH_ALPN } else { &MARKERS };
        self.metadata
            .get_or_read(|| {
                wasm_host::read_cluster_metadata("peer-exchange-filter", &shared.reports, markers, || {
                    shared.count(HttpCounter::MisplacedMetadata)
                })
            })
            .clone()
    }
}

/// The ALPN rule's questions, answered from the same reads.
impl RequestFacts for RouteCluster<'_> {
    fn cluster_metadata(&mut self) -> Option<Vec<u8>> {
        if let Some((_, counters)) = &self.shared.alpn {
            counters.inc(AlpnCounter::ClusterMetadataRead);
        }
        self.metadata()
    }
    fn cluster_name(&mut self) -> Option<String> {
        self.name()
    }
    fn request_protocol(&mut self) -> Option<String> {
        wasm_host::get_property_string(&["request", "protocol"]).ok().flatten()
    }
}

impl HttpShared {
    pub(crate) fn new(config: Config, workload: &Workload, node_id: String, local: WorkloadLabels) -> HttpShared {
        let counters = Counters::define(&config.stat_prefix());
        if let Some(missing) = peer_exchange::warnings::workload_gaps(workload) {
            counters.inc(HttpCounter::NodeMetadataMissing);
            log::warn!("{missing}");
        }
        HttpShared {
            metadata_value: encode_metadata_header(&workload.to_wire()),
            baggage_value: baggage::encode(workload),
            node_id,
            counters,
            peers: RefCell::new(PeerDecoder::for_config(&config)),
            verdicts: RefCell::new(ClientVerdicts::new(config.istio_service_clusters)),
            clusters: RefCell::new(ByCluster::new(config.cluster_metadata_refresh_ms)),
            reports: RefCell::default(),
            checked: RefCell::default(),
            alpn: config
                .alpn
                .clone()
                .map(|alpn| (RefCell::new(Decider::new(alpn)), alpn_decision::apply::define_counters())),
            metrics: IstioMetrics::new(&config, local),
            config,
        }
    }

    /// The period of the timer that empties what is remembered by cluster
    /// name (0: nothing is).
    pub(crate) fn refresh_ms(&self) -> u32 {
        match (&self.metrics, self.config.cluster_metadata_refresh_ms) {
            (Some(metrics), 0) => metrics.refresh_ms(),
            (_, ms) => ms,
        }
    }

    /// The timer: every cluster's metadata is read again on its next request.
    pub(crate) fn refresh_clusters(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.refresh(None);
        }
        if let Ok(mut clusters) = self.clusters.try_borrow_mut() {
            clusters.refresh();
        }
        if let Some(Ok(mut decider)) = self.alpn.as_ref().map(|(decider, _)| decider.try_borrow_mut()) {
            decider.refresh();
        }
    }

    /// The route cluster's verdict: remembered by its name, or from its metadata.
    fn client_verdict(&self, route: &mut RouteCluster<'_>) -> ClientVerdict {
        ByCluster::remembered(&self.clusters, route, RouteCluster::name, |route| {
            self.count(HttpCounter::ClusterMetadataRead);
            let metadata = route.metadata().unwrap_or_default();
            match self.verdicts.try_borrow_mut() {
                Ok(mut verdicts) => verdicts.verdict(&metadata),
                Err(_) => ClientVerdict::NotMarkedAsMesh,
            }
        })
    }

    /// alpn-filter's rule for this request, when configured (`alpn`).
    fn apply_alpn(&self, route: &mut RouteCluster<'_>) {
        let Some((decider, counters)) = &self.alpn else { return };
        let Ok(mut decider) = decider.try_borrow_mut() else { return };
        let decision = decider.decide(route);
        let record = decider.records();
        drop(decider);
        alpn_decision::apply::apply(&decision, counters, record, || route.name().unwrap_or_else(|| "-".into()));
    }

    fn count(&self, counter: HttpCounter) {
        self.counters.inc(counter);
    }

    fn uses(&self, method: Method) -> bool {
        self.config.propagation.contains(&method)
    }
}

pub(crate) fn stream(context_id: u32, shared: Rc<HttpShared>) -> HttpPeer {
    HttpPeer {
        context_id,
        shared,
        mesh_peer: false,
        sent_headers: false,
        unmarked_cluster: None,
        seen: None,
        peer: None,
        principal: ReadOnce::new(),
    }
}

/// One request of the header form.
pub(crate) struct HttpPeer {
    context_id: u32,
    shared: Rc<HttpShared>,
    /// Client: the route's cluster is a mesh upstream (ours went out).
    /// Server: the request came over a connection with a mesh identity.
    mesh_peer: bool,
    /// Client: our exchange headers went out. Server: the request carried
    /// the peer's metadata header, so the response gets ours.
    sent_headers: bool,
    /// Client: the route's cluster is not marked as a mesh upstream and its
    /// certificate has not been looked at yet (once per cluster).
    unmarked_cluster: Option<String>,
    /// With `istio_metrics`: what the request showed on the way.
    seen: Option<RequestSeen>,
    /// The stored peer's labels (`None`: not found).
    peer: Option<Rc<WorkloadLabels>>,
    /// The peer certificate's URI SAN, if a method read it.
    principal: ReadOnce<Option<String>>,
}

/// The peer certificate's URI SAN, read at most once per request, and only
/// if a method asks.
struct Certificate {
    path: [&'static str; 2],
    uri_san: ReadOnce<Option<String>>,
}

impl Certificate {
    fn new(role: Role) -> Certificate {
        let side = match role {
            Role::Server => "connection",
            Role::Client => "upstream",
        };
        Certificate { path: [side, "uri_san_peer_certificate"], uri_san: ReadOnce::new() }
    }

    fn get(&mut self) -> Option<String> {
        let path = self.path;
        self.uri_san.get_or_read(|| wasm_host::get_property_string(&path).ok().flatten()).clone()
    }
}

/// A header's first value (native reads only the first), by lowercase name.
fn first_value<'a>(pairs: &'a HeaderPairs, name: &str) -> Option<&'a [u8]> {
    pairs.iter().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
}

impl HttpPeer {
    pub(crate) fn on_request_headers(&mut self) -> Action {
        match self.shared.config.role {
            Role::Client => self.client_request(),
            Role::Server => self.server_request(),
        }
        Action::Continue
    }

    pub(crate) fn on_response_headers(&mut self) -> Action {
        match self.shared.config.role {
            Role::Client => self.client_response(),
            Role::Server => self.server_response(),
        }
        Action::Continue
    }

    fn client_request(&mut self) {
        let pairs = self.read_headers(HeaderMap::RequestHeaders);
        self.see_request(pairs.as_ref());
        // Exchange headers the app set are never passed on as ours.
        if let Some(pairs) = &pairs {
            self.remove_untrusted(HeaderMap::RequestHeaders, pairs, "the app");
        }
        let shared = Rc::clone(&self.shared);
        let mut route = RouteCluster { shared: &shared, name: ReadOnce::new(), metadata: ReadOnce::new() };
        shared.apply_alpn(&mut route);
        let verdict = shared.client_verdict(&mut route);
        if verdict == ClientVerdict::NotMarkedAsMesh {
            let name = route.name().unwrap_or_default();
            let first = shared
                .checked
                .try_borrow_mut()
                .is_ok_and(|mut c| c.first_time(HttpCounter::MeshUpstreamNotMarked.index(), &name));
            if first {
                self.unmarked_cluster = Some(name);
            }
        }
        if let Some(counter) = verdict.counter() {
            self.shared.count(counter);
            log::debug!("peer-exchange-filter: request {}: upstream not sent our metadata: {verdict}", self.context_id);
            return;
        }
        self.mesh_peer = true;
        if self.shared.uses(Method::IstioHeaders) {
            self.sent_headers = self.add_ours(HeaderMap::RequestHeaders);
        }
        if self.shared.uses(Method::Baggage) {
            let existing = pairs.as_ref().and_then(|p| first_value(p, BAGGAGE_HEADER));
            self.add_baggage(HeaderMap::RequestHeaders, existing);
        }
    }

    fn client_response(&mut self) {
        let shared = Rc::clone(&self.shared);
        let map = HeaderMap::ResponseHeaders;
        let pairs = self.read_headers(map);
        self.see_response(pairs.as_ref());
        let found = pairs.as_ref().map(|p| PeerHeaders::find(p.iter())).unwrap_or_default();
        // Believed only from the mesh upstream ours went to; never passed on.
        if !self.sent_headers && found.any() {
            self.shared.count(HttpCounter::UntrustedHeaderRemoved);
            log::debug!("peer-exchange-filter: request {}: removed exchange headers the upstream set", self.context_id);
        }
        self.remove(map, &found);
        let mut certificate = Certificate::new(Role::Client);
        if let Some(cluster) = self.unmarked_cluster.take() {
            let prefix = &shared.config.peer_identity_prefix;
            if let Some(san) = certificate.get().filter(|san| !prefix.is_empty() && san.starts_with(prefix.as_str())) {
                shared.count(HttpCounter::MeshUpstreamNotMarked);
                log::warn!(
                    "{}",
                    peer_exchange::warnings::fill(
                        peer_exchange::warnings::MESH_UPSTREAM_NOT_MARKED,
                        &[("<cluster>", &cluster), ("<identity>", &san)]
                    )
                );
            }
        }
        let stored = shared.config.discovery.iter().any(|method| match method {
            Method::IstioHeaders if self.sent_headers && pairs.is_some() => {
                self.receive_headers(&found, &mut certificate)
            }
            Method::EndpointMetadata => self.endpoint_metadata(),
            _ => false,
        });
        self.principal = certificate.uri_san;
        if !stored {
            log::debug!("peer-exchange-filter: request {}: upstream peer not found", self.context_id);
            mark_peer_not_found(Role::Client);
        }
    }

    fn server_request(&mut self) {
        let shared = Rc::clone(&self.shared);
        let map = HeaderMap::RequestHeaders;
        let pairs = self.read_headers(map);
        self.see_request(pairs.as_ref());
        let Some(pairs) = pairs else {
            mark_peer_not_found(Role::Server);
            return;
        };
        let found = PeerHeaders::find(pairs.iter());
        // Removed whatever the methods: never for the app.
        self.remove(map, &found);
        let mut certificate = Certificate::new(Role::Server);
        let mut stored = false;
        for method in &shared.config.discovery {
            stored = match method {
                Method::IstioHeaders => self.receive_headers(&found, &mut certificate),
                Method::Baggage => self.receive_baggage(first_value(&pairs, BAGGAGE_HEADER), &mut certificate),
                Method::EndpointMetadata => false,
            };
            if stored {
                break;
            }
        }
        if !stored {
            mark_peer_not_found(Role::Server);
        }
        // Ours go back only to a mesh peer: our headers to one that sent its
        // metadata header, our baggage to any.
        let config = &shared.config;
        let answers =
            self.shared.uses(Method::Baggage) || (found.metadata.is_some() && self.shared.uses(Method::IstioHeaders));
        if answers {
            self.mesh_peer = is_mesh_identity(certificate.get().as_deref(), &config.peer_identity_prefix);
            self.sent_headers = self.mesh_peer && found.metadata.is_some();
        }
        self.principal = certificate.uri_san;
    }

    fn server_response(&mut self) {
        let map = HeaderMap::ResponseHeaders;
        let pairs = self.read_headers(map);
        self.see_response(pairs.as_ref());
        if self.sent_headers && self.shared.uses(Method::IstioHeaders) {
            // Ours replace any the app set.
            self.add_ours(map);
        } else if let Some(pairs) = &pairs {
            // A client that gets none of ours gets none the app set either.
            self.remove_untrusted(map, pairs, "the app");
        }
        if self.mesh_peer && self.shared.uses(Method::Baggage) {
            let existing = pairs.as_ref().and_then(|p| first_value(p, BAGGAGE_HEADER));
            self.add_baggage(map, existing);
        }
    }

    /// The `istio_headers` discovery: reads and believes (or not) the
    /// peer's exchange headers; true if a peer was stored.
    fn receive_headers(&mut self, found: &PeerHeaders<'_>, certificate: &mut Certificate) -> bool {
        let shared = &self.shared;
        let (config, max) = (&shared.config, shared.config.max_peer_metadata_bytes as usize);
        let received = with_decoder(&shared.peers, config, |peers| {
            receive(found, || certificate.get(), &config.peer_identity_prefix, peers, max)
        });
        received.counters().for_each(|counter| shared.count(counter));
        match received {
            Received::Found(peer) => self.store(&peer),
            other => {
                log::debug!("peer-exchange-filter: request {}: no peer from headers: {other}", self.context_id);
                false
            }
        }
    }

    /// The `baggage` discovery (server); true if a peer was stored.
    fn receive_baggage(&mut self, value: Option<&[u8]>, certificate: &mut Certificate) -> bool {
        let shared = &self.shared;
        let config = &shared.config;
        let received = with_decoder(&shared.peers, config, |peers| {
            receive_baggage(value, || certificate.get(), &config.peer_identity_prefix, peers)
        });
        received.counters().for_each(|counter| shared.count(counter));
        match received {
            BaggageReceived::Found(peer) => self.store(&peer),
            other => {
                log::debug!("peer-exchange-filter: request {}: no peer from baggage: {other}", self.context_id);
                false
            }
        }
    }

    /// The `endpoint_metadata` discovery (client): the upstream host's
    /// `istio.workload`; true if a peer was stored.
    fn endpoint_metadata(&mut self) -> bool {
        let metadata = wasm_host::get_property(&["xds", "upstream_host_metadata"]).ok().flatten().unwrap_or_default();
        match endpoint_workload(&metadata) {
            EndpointWorkload::Found(workload) => {
                self.shared.count(HttpCounter::PeerFromEndpointMetadata);
                self.peer = Some(Rc::new(store_endpoint_peer(&self.shared.config, &workload)));
                true
            }
            EndpointWorkload::Invalid(reason) => {
                self.shared.count(HttpCounter::EndpointMetadataInvalid);
                log::debug!("peer-exchange-filter: request {}: endpoint metadata ignored: {reason}", self.context_id);
                false
            }
            EndpointWorkload::Absent => false,
        }
    }

    /// Stores a believed peer; false if nothing could be stored for it
    /// (`enforce` without a certificate).
    fn store(&mut self, peer: &StoredPeer) -> bool {
        store_peer(&self.shared.config, peer, "request", self.context_id);
        if peer.stored.is_some() {
            self.peer = Some(Rc::clone(&peer.labels));
        }
        peer.stored.is_some()
    }

    fn see_request(&mut self, pairs: Option<&HeaderPairs>) {
        if self.shared.metrics.is_some() {
            self.seen = Some(pairs.map(RequestSeen::request).unwrap_or_default());
        }
    }

    fn see_response(&mut self, pairs: Option<&HeaderPairs>) {
        if let (Some(seen), Some(pairs)) = (&mut self.seen, pairs) {
            seen.response(pairs);
        }
    }

    /// The request's log phase: with `istio_metrics`, it is recorded, as
    /// native records it (Envoy's final headers, trailers and sizes are
    /// readable here, not at the deletion).
    pub(crate) fn on_log(&mut self) {
        let Some(metrics) = &self.shared.metrics else { return };
        let seen = self.seen.take().unwrap_or_default();
        let peer = PeerSeen { labels: self.peer.take(), principal: std::mem::take(&mut self.principal) };
        match metrics.record_request(&peer, &seen) {
            Some((request, response)) => log::debug!(
                "peer-exchange-filter: request {}: in Istio's metrics, {request} request bytes, {response} response bytes",
                self.context_id
            ),
            None => self.shared.count(HttpCounter::IstioMetricsOverflow),
        }
    }

    /// All headers of a map (one hostcall); `None`, counted, if Envoy refuses.
    fn read_headers(&self, map: HeaderMap) -> Option<HeaderPairs> {
        match wasm_host::get_headers(map) {
            Ok(pairs) => Some(pairs),
            Err(e) => {
                self.shared.count(HttpCounter::HeaderError);
                log::warn!("peer-exchange-filter: request {}: cannot read headers: {e}", self.context_id);
                None
            }
        }
    }

    /// Removes, unread, exchange headers that `sender` is not entitled to
    /// send (counted `untrusted_header_removed`).
    fn remove_untrusted(&self, map: HeaderMap, pairs: &HeaderPairs, sender: &str) {
        let found = PeerHeaders::find(pairs.iter());
        if found.any() {
            self.remove(map, &found);
            self.shared.count(HttpCounter::UntrustedHeaderRemoved);
            log::debug!("peer-exchange-filter: request {}: removed exchange headers {sender} set", self.context_id);
        }
    }

    /// Removes the exchange headers that are present.
    fn remove(&self, map: HeaderMap, found: &PeerHeaders<'_>) {
        for (name, present) in [(METADATA_HEADER, found.metadata.is_some()), (ID_HEADER, found.id.is_some())] {
            if present {
                if let Err(e) = wasm_host::remove_header(map, name) {
                    self.shared.count(HttpCounter::HeaderError);
                    log::warn!("peer-exchange-filter: request {}: cannot remove {name}: {e}", self.context_id);
                }
            }
        }
    }

    /// Adds our headers; true if Envoy took them.
    fn add_ours(&self, map: HeaderMap) -> bool {
        let shared = &self.shared;
        let mut added = wasm_host::replace_header(map, METADATA_HEADER, shared.metadata_value.as_bytes());
        if added.is_ok() && !shared.node_id.is_empty() {
            added = wasm_host::replace_header(map, ID_HEADER, shared.node_id.as_bytes());
        }
        match added {
            Ok(()) => {
                shared.count(HttpCounter::MetadataAdded);
                true
            }
            Err(e) => {
                shared.count(HttpCounter::HeaderError);
                log::warn!("peer-exchange-filter: request {}: cannot add our metadata: {e}", self.context_id);
                false
            }
        }
    }

    /// Writes our workload into `baggage`, keeping the app's own members.
    fn add_baggage(&self, map: HeaderMap, existing: Option<&[u8]>) {
        let shared = &self.shared;
        let value = baggage::merged(existing, &shared.baggage_value);
        match wasm_host::replace_header(map, BAGGAGE_HEADER, value.as_bytes()) {
            Ok(()) => shared.count(HttpCounter::BaggageAdded),
            Err(e) => {
                shared.count(HttpCounter::HeaderError);
                log::warn!("peer-exchange-filter: request {}: cannot set baggage: {e}", self.context_id);
            }
        }
    }
}
