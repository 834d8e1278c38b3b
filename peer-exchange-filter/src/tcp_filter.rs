//! The proxy-wasm layer of the TCP form: builds our prefix once per VM,
//! runs one [`Exchange`] per connection, and carries out its steps with
//! hostcalls.

use std::cell::RefCell;
use std::rc::Rc;

use filter_common::clusters::ByCluster;
use filter_common::istio::{Marker, Reports};
use filter_common::ReadOnce;
use wasm_host::plugin::Action;
use wasm_host::{Counters, Direction};

use peer_exchange::codec::encode_frame;
use peer_exchange::config::{Config, Role};
use peer_exchange::deadlines::Deadlines;
use peer_exchange::exchange::{Counter, Event, Exchange, NotFound, OurPrefix, Outcome, Rejected, Sending, Step};
use peer_exchange::istio_stats::TcpSeries;
use peer_exchange::istio_stats::WorkloadLabels;
use peer_exchange::metadata::encode_payload;
use peer_exchange::participation::{
    cluster_marks, tcp_client_verdict, tcp_server_verdict, ClusterMarks, UpstreamFacts, Verdict,
};
use peer_exchange::peers::{with_decoder, PeerDecoder};
use peer_exchange::warnings::{self, Warned};
use peer_exchange::workload::{endpoint_workload, EndpointWorkload, Workload};

use crate::istio_metrics::{IstioMetrics, PeerSeen, Prefixes, Reported};
use crate::stored::{mark_peer_not_found, store_endpoint_peer, store_peer};

pub(crate) struct Shared {
    config: Config,
    /// Our whole prefix (header + payload), built once.
    prefix: Vec<u8>,
    counters: Counters<Counter>,
    deadlines: RefCell<Deadlines>,
    /// Payload bytes -> stored peer, shared by the VM's connections.
    peers: RefCell<PeerDecoder>,
    /// Client: what each cluster's metadata says, by cluster name.
    clusters: RefCell<ByCluster<ClusterMarks>>,
    /// Client: the clusters a misconfiguration warning was logged for.
    warned: RefCell<Warned>,
    /// Client: cluster metadata already checked for misplaced markers.
    reports: RefCell<Reports>,
    /// With `istio_metrics`: Istio's standard metrics.
    metrics: Option<IstioMetrics>,
    /// With `istio_metrics.tcp_reporting_ms`: the open connections whose
    /// bytes the timer reports, and when it last did.
    open: RefCell<OpenConnections>,
}

/// Open connections with a series, reported every `period_ms` while open
/// (native reports each `tcp_reporting_duration`): a database pool or a
/// tunnel that lives for hours shows its traffic as it flows.
#[derive(Default)]
pub(crate) struct OpenConnections {
    period_ms: u64,
    last_ms: u64,
    /// (context id, series, reported): a few per worker, scanned linearly.
    connections: Vec<(u32, TcpSeries, Reported)>,
}

impl Shared {
    /// What the connection's cluster says, remembered by its name.
    fn cluster_marks(&self) -> ClusterMarks {
        wasm_host::by_cluster(&self.clusters, || {
            self.counters.inc(Counter::ClusterMetadataRead);
            let metadata = wasm_host::read_cluster_metadata(
                "peer-exchange-filter",
                &self.reports,
                &[Marker::PeerExchange, Marker::DisableMx],
                || self.counters.inc(Counter::MisplacedMetadata),
            );
            cluster_marks(&metadata.unwrap_or_default())
        })
    }

    /// Counts a misconfiguration of the connection's cluster, and logs its
    /// warning (`template`, filled with the cluster and `values`) the first
    /// time this VM sees it for that cluster.
    fn misconfigured(&self, counter: Counter, template: &str, values: &[(&str, &str)]) {
        self.counters.inc(counter);
        let cluster = wasm_host::get_property_string(&["xds", "cluster_name"]).ok().flatten().unwrap_or_default();
        if let Ok(mut warned) = self.warned.try_borrow_mut() {
            if warned.first_time(counter.index(), &cluster) {
                let mut all = vec![("<cluster>", cluster.as_str())];
                all.extend_from_slice(values);
                log::warn!("{}", warnings::fill(template, &all));
            }
        }
    }

    /// The only place the TCP exchange increments counters: what the event names.
    fn count(&self, event: &Event) {
        for counter in event.counters() {
            self.counters.inc(counter);
        }
    }

    /// Counts an event and, for the end of the incoming half, records the
    /// outcome in filter state and logs it, for the connection that is the
    /// effective context. `Some`: the incoming half ended, with the stored
    /// peer's labels if a peer was stored.
    fn handle(&self, context_id: u32, event: Event, prefix_sent: bool) -> Option<Option<Rc<WorkloadLabels>>> {
        self.count(&event);
        match event {
            Event::Ended(outcome) => Some(self.record(context_id, outcome, prefix_sent)),
            _ => None,
        }
    }

    fn record(&self, context_id: u32, outcome: Outcome, prefix_sent: bool) -> Option<Rc<WorkloadLabels>> {
        let role = self.config.role;
        match outcome {
            Outcome::PeerFound(peer) => {
                store_peer(&self.config, &peer, "connection", context_id);
                peer.stored.is_some().then(|| Rc::clone(&peer.labels))
            }
            Outcome::NotFound(reason) => {
                log::debug!("peer-exchange-filter: connection {}: peer not found: {reason}", context_id);
                if role == Role::Client && reason == NotFound::HttpResponse && prefix_sent {
                    self.misconfigured(Counter::UpstreamAnsweredHttp, warnings::UPSTREAM_ANSWERED_HTTP, &[]);
                }
                if role == Role::Client {
                    if let Some(labels) = self.endpoint_fallback(context_id) {
                        return Some(Rc::new(labels));
                    }
                }
                mark_peer_not_found(role);
                None
            }
            Outcome::Rejected(reason) => {
                mark_peer_not_found(role);
                // Debug, not info: a peer sending junk must not be able to
                // flood the log; the counters always say what happened.
                log::debug!("peer-exchange-filter: connection {}: closing: {reason}", context_id);
                None
            }
        }
    }

    /// Client side without an exchanged peer: Istio's endpoint metadata
    /// `istio.workload`, as native's stats fall back to it. The stored
    /// peer's labels, if stored.
    fn endpoint_fallback(&self, context_id: u32) -> Option<WorkloadLabels> {
        let metadata = wasm_host::get_property(&["xds", "upstream_host_metadata"]).ok().flatten().unwrap_or_default();
        match endpoint_workload(&metadata) {
            EndpointWorkload::Found(workload) => {
                self.count(&Event::PeerFromEndpointMetadata);
                let labels = store_endpoint_peer(&self.config, &workload);
                log::debug!(
                    "peer-exchange-filter: connection {context_id}: peer from endpoint metadata ({}/{})",
                    workload.namespace,
                    workload.workload
                );
                Some(labels)
            }
            EndpointWorkload::Invalid(reason) => {
                self.count(&Event::EndpointMetadataInvalid);
                log::debug!("peer-exchange-filter: connection {context_id}: endpoint metadata ignored: {reason}");
                None
            }
            EndpointWorkload::Absent => None,
        }
    }
}

/// The TCP exchange's per-VM state: our prefix, built once.
pub(crate) fn tcp_plugin(
    config: Config,
    workload: &Workload,
    node_id: &str,
    local: WorkloadLabels,
) -> Option<Rc<Shared>> {
    let Some(prefix) = encode_frame(&encode_payload(&workload.to_wire(), node_id)) else {
        log::error!("peer-exchange-filter: local metadata too large to send");
        return None;
    };
    // One timer for both: a tick of a tenth of the exchange timeout
    // (10..100 ms) keeps the close within ~10% of the configured time, and
    // empties the remembered clusters once their period has passed.
    let metrics = IstioMetrics::new(&config, local);
    let refresh = match (&metrics, config.cluster_metadata_refresh_ms) {
        (Some(metrics), 0) => metrics.refresh_ms(),
        (_, ms) => ms,
    };
    // With `istio_metrics`: how often open connections report their bytes.
    let reporting = match (&metrics, config.istio_metrics) {
        (Some(_), Some(m)) => m.tcp_reporting_ms,
        _ => 0,
    };
    let tick = match config.exchange_timeout_ms {
        0 => [refresh, reporting].into_iter().filter(|t| *t > 0).min().unwrap_or(0),
        timeout => (timeout / 10).clamp(10, 100) as u32,
    };
    if tick > 0 {
        if let Err(e) = wasm_host::set_tick_period_millis(tick) {
            if refresh > 0 {
                // Without the tick a remembered cluster would never be read again.
                log::error!("peer-exchange-filter: cannot start the timer ({e}), refusing the configuration");
                return None;
            }
            log::warn!(
                "peer-exchange-filter: cannot start the exchange timer ({e}); stalled prefixes will not time out"
            );
        }
    }
    let counters = Counters::define(&config.stat_prefix());
    let peers = RefCell::new(PeerDecoder::for_config(&config));
    let clusters = RefCell::new(ByCluster::new(config.cluster_metadata_refresh_ms));
    let deadlines = RefCell::new(Deadlines::default());
    let reports = RefCell::default();
    let warned = RefCell::default();
    if let Some(missing) = peer_exchange::warnings::workload_gaps(workload) {
        counters.inc(Counter::NodeMetadataMissing);
        log::warn!("{missing}");
    }
    let open = RefCell::new(OpenConnections { period_ms: u64::from(reporting), ..OpenConnections::default() });
    Some(Rc::new(Shared { config, prefix, counters, deadlines, peers, clusters, warned, reports, metrics, open }))
}

/// The client role's upstream, read from Envoy's properties on demand.
/// The certificate's URI SAN, once read, is kept for the identity check.
struct HostUpstream<'a> {
    shared: &'a Shared,
    uri_san: ReadOnce<Option<String>>,
}

impl UpstreamFacts for HostUpstream<'_> {
    fn tls_version(&mut self) -> Option<String> {
        wasm_host::get_property_string(&["upstream", "tls_version"]).ok().flatten()
    }
    fn peer_uri_san(&mut self) -> Option<String> {
        self.uri_san.get_or_read(|| read_peer_uri_san(Role::Client)).clone()
    }
    fn cluster_marks(&mut self) -> ClusterMarks {
        self.shared.cluster_marks()
    }
    fn host_metadata(&mut self) -> Vec<u8> {
        wasm_host::get_property(&["xds", "upstream_host_metadata"]).ok().flatten().unwrap_or_default()
    }
    fn connected(&mut self) -> bool {
        has_upstream_connection()
    }
}

/// Whether the connection has an upstream connection of its own (tcp_proxy
/// has connected it by the first byte either way; an HTTP connection
/// manager's upstreams are not the connection's).
fn has_upstream_connection() -> bool {
    matches!(wasm_host::get_property(&["upstream", "address"]), Ok(Some(address)) if !address.is_empty())
}

/// The peer certificate's URI SAN (`None`: no certificate, or none with a URI SAN).
fn read_peer_uri_san(role: Role) -> Option<String> {
    let side = match role {
        Role::Server => "connection",
        Role::Client => "upstream",
    };
    wasm_host::get_property_string(&[side, "uri_san_peer_certificate"]).ok().flatten()
}

/// One connection of the TCP form.
pub(crate) struct PeerStream {
    context_id: u32,
    shared: Rc<Shared>,
    exchange: Exchange,
    /// The peer certificate's URI SAN once read.
    peer_uri_san: ReadOnce<Option<String>>,
    /// The exchange's prefixes on the downstream side (`istio_metrics` leaves them out).
    prefixes: Prefixes,
    /// With `istio_metrics`: the connection's series once opened
    /// (`None`: over the cap, or none for this connection).
    series: ReadOnce<Option<TcpSeries>>,
}

impl Shared {
    /// The root's timer: forgets what clusters said once their period has
    /// passed, and closes connections whose peer prefix stalled past the
    /// exchange timeout.
    pub(crate) fn on_tick(&self) {
        let Ok(now) = wasm_host::now_millis() else { return };
        if let Ok(mut clusters) = self.clusters.try_borrow_mut() {
            clusters.refresh_if_due(now);
        }
        if let Some(metrics) = &self.metrics {
            metrics.refresh(Some(now));
            self.report_open(metrics, now);
        }
        // Release the borrow before any hostcall: closing a connection can
        // call back into the VM for that connection.
        let expired = match self.deadlines.try_borrow_mut() {
            Ok(mut deadlines) => deadlines.take_expired(now),
            Err(_) => return,
        };
        for context_id in expired {
            if wasm_host::set_effective_context(context_id).is_err() {
                continue; // the connection is already gone
            }
            self.handle(context_id, Event::Ended(Outcome::Rejected(Rejected::Timeout)), false);
            if let Err(e) = wasm_host::close(Direction::Downstream) {
                log::warn!("peer-exchange-filter: connection {context_id}: cannot close: {e}");
            }
        }
    }
}

impl Shared {
    /// Our prefix went to the downstream of an open connection: not the app's bytes.
    fn prefix_sent_on(&self, context_id: u32, bytes: u64) {
        if let Ok(mut open) = self.open.try_borrow_mut() {
            if let Some((_, _, reported)) = open.connections.iter_mut().find(|(id, _, _)| *id == context_id) {
                reported.prefixes.sent = bytes;
            }
        }
    }

    /// Every `tcp_reporting_ms`, each open connection's new bytes.
    fn report_open(&self, metrics: &IstioMetrics, now: u64) {
        let Ok(mut open) = self.open.try_borrow_mut() else { return };
        if open.period_ms == 0 || now < open.last_ms.saturating_add(open.period_ms) {
            return;
        }
        open.last_ms = now;
        for (context_id, series, reported) in open.connections.iter_mut() {
            if wasm_host::set_effective_context(*context_id).is_ok() {
                metrics.report_bytes(*series, reported);
            }
        }
    }
}

impl PeerStream {
    pub(crate) fn new(context_id: u32, shared: Rc<Shared>) -> PeerStream {
        let sending = match shared.config.role {
            Role::Client => Sending::WithFirstBytes,
            Role::Server => Sending::InAnswer,
        };
        let exchange = Exchange::new(shared.config.max_peer_metadata_bytes, sending);
        PeerStream {
            context_id,
            shared,
            exchange,
            peer_uri_san: ReadOnce::new(),
            prefixes: Prefixes::default(),
            series: ReadOnce::new(),
        }
    }

    /// Handles an event of this connection; the end of the incoming half
    /// opens the connection's metrics with the peer it stored.
    fn handle(&mut self, event: Event) {
        if let Some(peer) = self.shared.handle(self.context_id, event, self.exchange.prefix_sent()) {
            self.open_metrics(peer);
        }
    }

    fn open_metrics(&mut self, peer: Option<Rc<WorkloadLabels>>) {
        let Some(metrics) = &self.shared.metrics else { return };
        if self.series.get().is_some() {
            return;
        }
        let seen = PeerSeen { labels: peer, principal: self.peer_uri_san.clone() };
        let series = metrics.open_connection(&seen);
        match series {
            None => self.shared.counters.inc(Counter::IstioMetricsOverflow),
            Some(ids) => {
                if let Ok(mut open) = self.shared.open.try_borrow_mut() {
                    if open.period_ms > 0 {
                        let reported = Reported { prefixes: self.prefixes, ..Reported::default() };
                        open.connections.push((self.context_id, ids, reported));
                    }
                }
            }
        }
        self.series = ReadOnce::from(series);
    }

    /// The connection is gone: no deadline left, and with `istio_metrics`
    /// its bytes and its close are recorded (opened first if its peer was
    /// never settled).
    pub(crate) fn on_delete(&mut self) {
        self.disarm();
        if self.shared.config.role == Role::Client && !self.exchange.participation_decided() {
            self.closed_before_data();
        }
        if self.shared.metrics.is_none() {
            return;
        }
        self.open_metrics(None);
        let reported = self.shared.open.try_borrow_mut().ok().and_then(|mut open| {
            let at = open.connections.iter().position(|(id, _, _)| *id == self.context_id)?;
            Some(open.connections.swap_remove(at).2)
        });
        if let (Some(metrics), Some(ids)) = (&self.shared.metrics, self.series.get().copied().flatten()) {
            let mut reported = reported.unwrap_or_default();
            reported.prefixes = self.prefixes;
            metrics.close_connection(ids, &mut reported);
        }
    }

    pub(crate) fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.decide_participation();
        match self.shared.config.role {
            Role::Server => self.incoming(Direction::Downstream, data_size, end_of_stream),
            Role::Client => self.outgoing(Direction::Downstream),
        }
    }

    pub(crate) fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.decide_participation();
        match self.shared.config.role {
            Role::Server => self.outgoing(Direction::Upstream),
            Role::Client => self.incoming(Direction::Upstream, data_size, end_of_stream),
        }
    }

    /// A client connection that ends before a byte flowed either way:
    /// `tcp_proxy` reads nothing until its upstream is connected, so the
    /// upstream connection failed. For a mesh-marked cluster, a failed TLS
    /// handshake means its Envoy has no chain for the ALPN the cluster offers.
    fn closed_before_data(&self) {
        let reason = wasm_host::get_property_string(&["upstream", "transport_failure_reason"]).ok().flatten();
        log::debug!(
            "peer-exchange-filter: connection {}: closed before any data, upstream failure {reason:?}",
            self.context_id
        );
        let Some(reason) = reason.filter(|r| r.contains("TLS") || r.contains("SSL") || r.contains("ssl")) else {
            return;
        };
        let marks = self.shared.cluster_marks();
        let marked = marks.enabled == Some(true)
            || (marks.enabled.is_none()
                && peer_exchange::participation::endpoint_is_istio_mtls(
                    &wasm_host::get_property(&["xds", "upstream_host_metadata"]).ok().flatten().unwrap_or_default(),
                ));
        if marked {
            self.shared.misconfigured(
                Counter::UpstreamHandshakeFailed,
                warnings::UPSTREAM_HANDSHAKE_FAILED,
                &[("<reason>", &reason)],
            );
        }
    }

    fn decide_participation(&mut self) {
        if self.exchange.participation_decided() {
            return;
        }
        let verdict = match self.shared.config.role {
            Role::Server => {
                let tls = wasm_host::get_property_string(&["connection", "tls_version"]).ok().flatten();
                tcp_server_verdict(tls.as_deref(), has_upstream_connection)
            }
            Role::Client => {
                let mut upstream = HostUpstream { shared: &self.shared, uri_san: ReadOnce::new() };
                let verdict = tcp_client_verdict(&mut upstream, &self.shared.config.peer_identity_prefix);
                self.peer_uri_san = upstream.uri_san;
                verdict
            }
        };
        if verdict != Verdict::Participate {
            log::debug!("peer-exchange-filter: connection {}: does not take part: {verdict}", self.context_id);
        }
        if verdict == Verdict::NotMarkedAsMesh {
            // The certificate check passed: the upstream has a mesh identity.
            let san = self.peer_uri_san.get().cloned().flatten().unwrap_or_default();
            self.shared.misconfigured(
                Counter::MeshUpstreamNotMarked,
                warnings::MESH_UPSTREAM_NOT_MARKED,
                &[("<identity>", &san)],
            );
        }
        if verdict == Verdict::NoUpstream {
            // An HTTP connection manager follows: its requests are reported
            // by the HTTP form (native's istio_stats network filter is not
            // put in front of one either), so no TCP series for it.
            self.series = ReadOnce::from(None);
        }
        let event = match verdict {
            Verdict::NoUpstream => self.exchange.stay_out(),
            verdict => self.exchange.set_participation(verdict.participates()),
        };
        if let Some(event) = event {
            self.handle(event);
        }
    }

    fn outgoing(&mut self, direction: Direction) -> Action {
        match self.exchange.on_outgoing_data() {
            OurPrefix::Send => match wasm_host::set_buffer(direction, 0, 0, &self.shared.prefix) {
                Ok(()) => {
                    self.shared.count(&Event::PrefixSent);
                    // The server's prefix goes to its downstream (the client's, upstream).
                    if self.shared.config.role == Role::Server && self.shared.metrics.is_some() {
                        self.prefixes.sent = self.shared.prefix.len() as u64;
                        self.shared.prefix_sent_on(self.context_id, self.prefixes.sent);
                    }
                }
                Err(e) => {
                    log::warn!("peer-exchange-filter: connection {}: cannot prepend metadata: {e}", self.context_id)
                }
            },
            OurPrefix::Withheld => {
                log::debug!(
                    "peer-exchange-filter: connection {}: the app wrote before the client's prefix arrived \
                     (a server-first protocol): no prefix of ours on this connection",
                    self.context_id
                );
                self.shared.count(&Event::PrefixWithheld);
            }
            OurPrefix::Skip => {}
        }
        Action::Continue
    }

    fn incoming(&mut self, direction: Direction, data_size: usize, end_of_stream: bool) -> Action {
        if self.exchange.incoming_done() {
            return Action::Continue;
        }
        let mut now = || wasm_host::now_millis().unwrap_or(0);
        let mut read = |start: usize, len: usize| wasm_host::get_buffer(direction, start, len).ok();
        let (shared, exchange, peer_uri_san) = (&self.shared, &mut self.exchange, &mut self.peer_uri_san);
        let role = shared.config.role;
        let (step, outcome) = with_decoder(&shared.peers, &shared.config, |peers| {
            // The certificate is read (once) only when a payload is there to
            // check; a property read does not re-enter the VM.
            let mut decode = |payload: &[u8]| {
                let uri_san = if peers.needs_certificate() {
                    peer_uri_san.get_or_read(|| read_peer_uri_san(role)).as_deref()
                } else {
                    None
                };
                peers.decode(payload, uri_san)
            };
            exchange.on_incoming_data(data_size, end_of_stream, &mut now, &mut read, &mut decode)
        });
        // The client's prefix came from the server's downstream (the server's, from upstream).
        if let (Step::Strip(n), Role::Server) = (&step, role) {
            self.prefixes.received = *n as u64;
        }
        if let Some(outcome) = outcome {
            self.handle(Event::Ended(outcome));
        }
        match step {
            Step::Hold => {
                self.arm_deadline();
                return Action::Pause;
            }
            Step::Continue => {}
            Step::Strip(n) => {
                if let Err(e) = wasm_host::set_buffer(direction, 0, n, &[]) {
                    // The prefix cannot be removed: better closed than corrupt.
                    log::warn!(
                        "peer-exchange-filter: connection {}: cannot strip the peer prefix ({e}), closing",
                        self.context_id
                    );
                    self.shared.count(&Event::StripFailed);
                    self.close();
                    return Action::Pause;
                }
            }
            Step::Close => {
                self.close();
                return Action::Pause;
            }
        }
        if self.exchange.incoming_done() {
            self.disarm();
        }
        Action::Continue
    }

    fn arm_deadline(&self) {
        let timeout = self.shared.config.exchange_timeout_ms;
        if let (Some(since), true) = (self.exchange.holding_since(), timeout > 0) {
            if let Ok(mut deadlines) = self.shared.deadlines.try_borrow_mut() {
                deadlines.arm(self.context_id, since.saturating_add(timeout));
            }
        }
    }

    pub(crate) fn disarm(&self) {
        if let Ok(mut deadlines) = self.shared.deadlines.try_borrow_mut() {
            deadlines.disarm(self.context_id);
        }
    }

    fn close(&self) {
        self.disarm();
        if let Err(e) = wasm_host::close(Direction::Downstream) {
            log::warn!("peer-exchange-filter: connection {}: cannot close: {e}", self.context_id);
        }
    }
}
