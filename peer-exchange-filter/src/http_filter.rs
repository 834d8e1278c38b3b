//! The proxy-wasm layer of the header form: one [`HttpPeer`] per request,
//! carrying out [`crate::http`]'s decisions with hostcalls.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_host::clusters::ByCluster;
use wasm_host::markers::{Marker, Reports};
use wasm_host::plugin::Action;
use wasm_host::{Counters, HeaderMap, HeaderPairs};

use crate::config::{Config, Role};
use crate::filter::{mark_peer_not_found, store_peer};
use crate::headers::{encode_metadata_header, PeerHeaders, ID_HEADER, METADATA_HEADER};
use crate::http::{receive, ClientVerdict, ClientVerdicts, HttpCounter, Received};
use crate::peers::{with_decoder, PeerDecoder};
use crate::workload::Workload;

/// The header form's per-VM state.
pub(crate) struct HttpShared {
    config: Config,
    /// Our `x-envoy-peer-metadata` value, built once.
    metadata_value: String,
    node_id: String,
    counters: Counters,
    peers: RefCell<PeerDecoder>,
    verdicts: RefCell<ClientVerdicts>,
    /// Client: each route cluster's verdict, by cluster name.
    clusters: RefCell<ByCluster<ClientVerdict>>,
    /// Client: cluster metadata already checked for misplaced markers.
    reports: RefCell<Reports>,
}

/// The cluster metadata markers the client reads.
const MARKERS: [Marker; 3] = [Marker::PeerExchange, Marker::DisableMx, Marker::External];

impl HttpShared {
    pub(crate) fn new(config: Config, workload: &Workload, node_id: String) -> HttpShared {
        let counters = Counters::define(&config.stat_prefix(), HttpCounter::ALL.iter().map(|c| c.name()));
        HttpShared {
            metadata_value: encode_metadata_header(&workload.to_wire()),
            node_id,
            counters,
            peers: RefCell::new(PeerDecoder::for_config(&config)),
            verdicts: RefCell::new(ClientVerdicts::new(config.istio_service_clusters)),
            clusters: RefCell::new(ByCluster::new(config.cluster_metadata_refresh_ms)),
            reports: RefCell::default(),
            config,
        }
    }

    /// The timer: every cluster's metadata is read again on its next request.
    pub(crate) fn refresh_clusters(&self) {
        if let Ok(mut clusters) = self.clusters.try_borrow_mut() {
            clusters.refresh();
        }
    }

    /// The route cluster's verdict: remembered by its name, or from its metadata.
    fn client_verdict(&self) -> ClientVerdict {
        wasm_host::by_cluster(&self.clusters, || {
            self.count(HttpCounter::ClusterMetadataRead);
            let metadata = wasm_host::read_cluster_metadata("peer-exchange-filter", &self.reports, &MARKERS, || {
                self.count(HttpCounter::MisplacedMetadata)
            })
            .unwrap_or_default();
            match self.verdicts.try_borrow_mut() {
                Ok(mut verdicts) => verdicts.verdict(&metadata),
                Err(_) => ClientVerdict::NotMarkedAsMesh,
            }
        })
    }

    fn count(&self, counter: HttpCounter) {
        self.counters.inc(counter.index());
    }
}

pub(crate) fn stream(context_id: u32, shared: Rc<HttpShared>) -> HttpPeer {
    HttpPeer { context_id, shared, send_ours: false }
}

/// One request of the header form.
pub(crate) struct HttpPeer {
    context_id: u32,
    shared: Rc<HttpShared>,
    /// Client: we sent our headers, so the response is read. Server: the
    /// request came from a mesh peer, so the response gets ours.
    send_ours: bool,
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
        match (self.shared.config.role, self.send_ours) {
            (Role::Client, true) => {
                self.receive(HeaderMap::ResponseHeaders, &["upstream", "uri_san_peer_certificate"]);
            }
            // A request we did not send ours with: its upstream is not a mesh
            // peer, and nothing it says about itself is read; whatever
            // exchange headers it answers with still never reach the app
            // (native removes them from every response too).
            (Role::Client, false) => {
                self.remove_untrusted(HeaderMap::ResponseHeaders, "the upstream");
                mark_peer_not_found(Role::Client);
            }
            // Ours replace any the app set.
            (Role::Server, true) => {
                self.add_ours(HeaderMap::ResponseHeaders);
            }
            // A client that gets none of ours gets none the app set either.
            (Role::Server, false) => self.remove_untrusted(HeaderMap::ResponseHeaders, "the app"),
        }
        Action::Continue
    }

    fn client_request(&mut self) {
        // Exchange headers the app set are never passed on as ours.
        self.remove_untrusted(HeaderMap::RequestHeaders, "the app");
        let verdict = self.shared.client_verdict();
        match verdict.counter() {
            None => self.send_ours = self.add_ours(HeaderMap::RequestHeaders),
            Some(counter) => {
                self.shared.count(counter);
                log::debug!(
                    "peer-exchange-filter: request {}: upstream not sent our metadata: {verdict}",
                    self.context_id
                );
            }
        }
    }

    fn server_request(&mut self) {
        let received = self.receive(HeaderMap::RequestHeaders, &["connection", "uri_san_peer_certificate"]);
        // A mesh peer that sent its metadata gets ours; a plain client,
        // or one whose headers were not believed, never does.
        self.send_ours = !matches!(received, None | Some(Received::Absent | Received::Untrusted));
    }

    /// Removes, unread, exchange headers that `sender` is not entitled to
    /// send (counted `untrusted_header_removed`).
    fn remove_untrusted(&self, map: HeaderMap, sender: &str) {
        let Some(pairs) = self.read_headers(map) else {
            return;
        };
        let found = PeerHeaders::find(pairs.iter());
        if found.any() {
            self.remove(map, &found);
            self.shared.count(HttpCounter::UntrustedHeaderRemoved);
            log::debug!("peer-exchange-filter: request {}: removed exchange headers {sender} set", self.context_id);
        }
    }

    /// Reads, believes or not, and removes the peer's headers; stores the
    /// outcome. `None` when the headers could not be read at all.
    fn receive(&self, map: HeaderMap, certificate: &[&str]) -> Option<Received> {
        let shared = &self.shared;
        let role = shared.config.role;
        let Some(pairs) = self.read_headers(map) else {
            mark_peer_not_found(role);
            return None;
        };
        let found = PeerHeaders::find(pairs.iter());
        self.remove(map, &found);
        let read_certificate = || wasm_host::get_property_string(certificate).ok().flatten();
        let (config, max) = (&shared.config, shared.config.max_peer_metadata_bytes as usize);
        let received = with_decoder(&shared.peers, config, |peers| {
            receive(&found, read_certificate, &config.peer_identity_prefix, peers, max)
        });
        received.counters().for_each(|counter| shared.count(counter));
        match &received {
            Received::Found(peer) => store_peer(config, peer, "request", self.context_id),
            other => {
                log::debug!("peer-exchange-filter: request {}: peer not found: {other}", self.context_id);
                mark_peer_not_found(role);
            }
        }
        Some(received)
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
}
