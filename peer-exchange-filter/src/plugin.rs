//! The module's entry points: each plugin runs the form its root id
//! selects — the TCP form ([`crate::tcp_filter`]) or the HTTP form
//! ([`crate::http_filter`], root id [`peer_exchange::config::HTTP_ROOT_ID`]) — and
//! each stream is a connection or a request of that form.

use std::rc::Rc;

use wasm_host::plugin::{Action, Plugin, Stream};
use wasm_host::Span;

use peer_exchange::config::{Config, Transport};

use crate::http_filter::{HttpPeer, HttpShared};
use crate::stored::{declare_peer_properties, local_workload};
use crate::tcp_filter::{tcp_plugin, PeerStream, Shared};

// Our own entry points, not the SDK's: Envoy enters the VM only for these
// callbacks (see `wasm_host::plugin`). A connection is entered at creation,
// per data chunk and at deletion (Envoy deletes a connection's context right
// after its downstream close, so a close callback would be one more entry for
// nothing); a request of the header form at creation, request and response
// headers, its log phase (`istio_metrics` records there, as native does:
// the final headers, trailers and sizes are gone at deletion), and deletion.
// Envoy also enters the log callback of a connection, at its close.
#[cfg(target_arch = "wasm32")]
wasm_host::plugin_exports!(PeerPlugin;
    request_headers, response_headers, downstream_data, upstream_data, log, tick);

/// The name our log lines start with.
const FILTER: &str = "peer-exchange-filter";

/// What a configured plugin runs: the form its root id selects.
pub(crate) enum PeerPlugin {
    Tcp(Rc<Shared>),
    Http(Rc<HttpShared>),
}

impl Plugin for PeerPlugin {
    type Stream = PeerContext;

    fn configure(size: usize) -> Option<PeerPlugin> {
        let bytes = wasm_host::plugin::configuration(FILTER, &["declare_property"], size)?;
        let root_id = wasm_host::get_property_string(&["plugin_root_id"]).ok().flatten().unwrap_or_default();
        let transport = Transport::for_root_id(&root_id);
        let config = wasm_host::plugin::refuse(FILTER, Config::parse(&bytes, transport))?;
        let (workload, node_id, local) = local_workload(&config);
        let span = match transport {
            Transport::Tcp => Span::Connection,
            Transport::Http => Span::Request,
        };
        declare_peer_properties(&config, span);
        log::info!(
            "peer-exchange-filter: {} exchange, role {}, node id \"{}\", sending {}",
            match transport {
                Transport::Tcp => "TCP",
                Transport::Http => "HTTP",
            },
            config.role.name(),
            node_id,
            workload
        );
        match transport {
            Transport::Tcp => tcp_plugin(config, &workload, &node_id, local).map(PeerPlugin::Tcp),
            Transport::Http => {
                let shared = HttpShared::new(config, &workload, node_id, local);
                let refresh = shared.refresh_ms();
                if let Err(e) = wasm_host::start_cluster_refresh(refresh) {
                    log::error!(
                        "peer-exchange-filter: cannot start the {refresh} ms cluster refresh ({e}), refusing the configuration"
                    );
                    return None;
                }
                Some(PeerPlugin::Http(Rc::new(shared)))
            }
        }
    }

    fn stream(plugin: &Rc<PeerPlugin>, context_id: u32) -> PeerContext {
        match &**plugin {
            PeerPlugin::Tcp(shared) => PeerContext::Tcp(PeerStream::new(context_id, Rc::clone(shared))),
            PeerPlugin::Http(shared) => PeerContext::Http(crate::http_filter::stream(context_id, shared.clone())),
        }
    }

    fn on_tick(&self) {
        match self {
            PeerPlugin::Tcp(shared) => shared.on_tick(),
            PeerPlugin::Http(shared) => shared.refresh_clusters(),
        }
    }
}

/// A connection (TCP form) or a request (header form). Envoy only makes
/// the callbacks of the filter type the plugin was loaded as.
pub(crate) enum PeerContext {
    Tcp(PeerStream),
    Http(HttpPeer),
}

impl Stream for PeerContext {
    fn on_request_headers(&mut self) -> Action {
        match self {
            PeerContext::Http(request) => request.on_request_headers(),
            PeerContext::Tcp(_) => Action::Continue,
        }
    }

    fn on_response_headers(&mut self) -> Action {
        match self {
            PeerContext::Http(request) => request.on_response_headers(),
            PeerContext::Tcp(_) => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let PeerContext::Http(request) = self {
            request.on_log();
        }
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        match self {
            PeerContext::Tcp(connection) => connection.on_downstream_data(data_size, end_of_stream),
            PeerContext::Http(_) => Action::Continue,
        }
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        match self {
            PeerContext::Tcp(connection) => connection.on_upstream_data(data_size, end_of_stream),
            PeerContext::Http(_) => Action::Continue,
        }
    }

    fn on_delete(&mut self) {
        if let PeerContext::Tcp(connection) = self {
            connection.on_delete();
        }
    }
}
