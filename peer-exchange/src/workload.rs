//! Istio's workload metadata object and its three views, the way native
//! normalises it (Envoy's `contrib/istio/filters/common/source/metadata_object.cc`,
//! formerly istio/proxy's `extensions/common/metadata_object.cc`):
//!
//! - **read** ([`Workload::read`]): a Struct (node metadata, or a peer's
//!   struct) becomes a workload: Istio's fields, `app`/`version` from the
//!   `app.kubernetes.io/*` labels first, the workload type from `OWNER`,
//!   region/zone falling back to the node locality (own metadata only), and
//!   only the labels named in `additional_labels`;
//! - **wire** ([`Workload::to_wire`]): the UPPERCASE Struct a proxy sends
//!   (never raw node metadata): `LABELS` always present, `OWNER` rebuilt;
//! - **stored** ([`Workload::to_peer_struct`]): the lowercase Struct native
//!   keeps in `downstream_peer`/`upstream_peer` filter state, plus our
//!   `source` field saying where the peer came from.
//!
//! Plus Istio's endpoint metadata `istio.workload` (`workload;namespace;
//! canonical-name;canonical-revision;cluster-id`), the client's fallback
//! when no exchange happens ([`endpoint_workload`]).

use std::collections::BTreeMap;

use filter_common::istio::peer;
use proto::core::Metadata;
use proto::prost::Message;
use proto::prost_types::{value::Kind, Struct, Value};

/// Istio's string fields in a wire Struct.
pub const WORKLOAD_FIELDS: [&str; 8] =
    ["NAME", "NAMESPACE", "WORKLOAD_NAME", "CLUSTER_ID", "IDENTITY", "OWNER", "REGION", "AVAILABILITY_ZONE"];
/// The wire Struct field holding the labels.
pub const LABELS_FIELD: &str = "LABELS";
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// Labels `read` looks at besides `additional_labels`, in precedence order
/// where two feed one value.
pub const SOURCE_LABELS: [&str; 6] = [
    CANONICAL_NAME_LABEL,
    CANONICAL_REVISION_LABEL,
    "app.kubernetes.io/name",
    "app",
    "app.kubernetes.io/version",
    "version",
];

/// Where a stored peer came from (the `source` field of the stored struct).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSource {
    /// The peer's own prefix (or headers).
    Exchange,
    /// Istio's W3C `baggage` (the HTTP form's baggage discovery).
    Baggage,
    /// Istio's `istio.workload` endpoint metadata: no exchange happened.
    EndpointMetadata,
}

impl PeerSource {
    pub fn name(self) -> &'static str {
        match self {
            PeerSource::Exchange => "exchange",
            PeerSource::EndpointMetadata => "endpoint_metadata",
            PeerSource::Baggage => "baggage",
        }
    }
}

/// The workload kinds native recognises in `OWNER`; anything else is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkloadType {
    #[default]
    Unknown,
    Pod,
    Deployment,
    Job,
    CronJob,
}

impl WorkloadType {
    fn from_kind(kind: &str) -> Self {
        match kind {
            "pod" => Self::Pod,
            "deployment" => Self::Deployment,
            "job" => Self::Job,
            "cronjob" => Self::CronJob,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Unknown => None,
            Self::Pod => Some("pod"),
            Self::Deployment => Some("deployment"),
            Self::Job => Some("job"),
            Self::CronJob => Some("cronjob"),
        }
    }

    /// Native's rule: cut `len(workload) + 2` bytes (`s/<workload>`) off the
    /// end of OWNER without checking them, then take what follows the last
    /// `/`. So `.../deployments/x` is a deployment and `.../statefulsets/x`
    /// (like any kind native does not list) is unknown.
    fn from_owner(owner: &str, workload_name: &str) -> Self {
        let Some(cut) = owner.len().checked_sub(workload_name.len() + 2) else {
            return Self::Unknown;
        };
        match owner.get(..cut) {
            Some(head) => Self::from_kind(head.rsplit('/').next().unwrap_or_default()),
            None => Self::Unknown,
        }
    }
}

/// The node locality, for own metadata only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
}

/// Native's workload metadata object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `NAME`: the pod (instance) name.
    pub name: String,
    pub namespace: String,
    /// `WORKLOAD_NAME`.
    pub workload: String,
    /// `CLUSTER_ID`.
    pub cluster: String,
    pub identity: String,
    pub workload_type: WorkloadType,
    pub region: String,
    pub zone: String,
    /// Canonical service name and revision.
    pub service: String,
    pub revision: String,
    pub app: String,
    pub version: String,
    /// Only the labels named in `additional_labels`.
    pub labels: BTreeMap<String, String>,
}

fn string_of(s: &Struct, key: &str) -> String {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v.clone(),
        _ => String::new(),
    }
}

/// For log lines: who this is, where, and what it is called.
impl Workload {
    /// What the exchange sends to identify this workload and is missing
    /// (Istio's node metadata names): NAMESPACE, WORKLOAD_NAME.
    pub fn missing_identity(&self) -> Vec<&'static str> {
        [("NAMESPACE", &self.namespace), ("WORKLOAD_NAME", &self.workload)]
            .into_iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| k)
            .collect()
    }
}

/// What the load line says is sent: the workload, then each field that is
/// set (fields left out are not sent).
impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &str, missing: &'static str| if v.is_empty() { missing.to_string() } else { v.to_string() };
        write!(f, "{}/{}", shown(&self.namespace, "(no namespace)"), shown(&self.workload, "(no workload name)"))?;
        let mut fields: Vec<String> = Vec::new();
        let pair = |a: &str, b: &str| [a, b].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
        for (name, value) in [
            ("instance", self.name.clone()),
            ("app", pair(&self.app, &self.version)),
            ("service", pair(&self.service, &self.revision)),
            ("cluster", self.cluster.clone()),
            ("identity", self.identity.clone()),
            ("region", self.region.clone()),
            ("zone", self.zone.clone()),
        ] {
            if !value.is_empty() {
                fields.push(format!("{name} {value}"));
            }
        }
        match self.labels.len() {
            0 => {}
            1 => fields.push("1 additional label".into()),
            n => fields.push(format!("{n} additional labels")),
        }
        if !fields.is_empty() {
            write!(f, " ({})", fields.join(", "))?;
        }
        Ok(())
    }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}

/// Inserts `key: value` unless the value is empty (Istio leaves those out).
fn put(fields: &mut BTreeMap<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        fields.insert(key.to_string(), string_value(value));
    }
}

impl Workload {
    /// Native's read of a Struct (`convertStructToWorkloadMetadata`). `locality` is given for our own
    /// metadata only: a peer's missing region is not filled from ours.
    pub fn read(s: &Struct, additional_labels: &[String], locality: Option<&Locality>) -> Workload {
        let no_labels = Struct::default();
        let labels = match s.fields.get(LABELS_FIELD).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(labels)) => labels,
            _ => &no_labels,
        };
        // The qualified label wins; the plain one counts when it is empty or
        // absent (native's result depends on map order then; ours does not).
        let first_of = |keys: [&str; 2]| keys.iter().map(|k| string_of(labels, k)).find(|v| !v.is_empty());
        let mut w = Workload {
            name: string_of(s, "NAME"),
            namespace: string_of(s, "NAMESPACE"),
            workload: string_of(s, "WORKLOAD_NAME"),
            cluster: string_of(s, "CLUSTER_ID"),
            identity: string_of(s, "IDENTITY"),
            workload_type: WorkloadType::Unknown,
            region: string_of(s, "REGION"),
            zone: string_of(s, "AVAILABILITY_ZONE"),
            service: string_of(labels, CANONICAL_NAME_LABEL),
            revision: string_of(labels, CANONICAL_REVISION_LABEL),
            app: first_of(["app.kubernetes.io/name", "app"]).unwrap_or_default(),
            version: first_of(["app.kubernetes.io/version", "version"]).unwrap_or_default(),
            labels: BTreeMap::new(),
        };
        w.workload_type = WorkloadType::from_owner(&string_of(s, "OWNER"), &w.workload);
        if let Some(locality) = locality {
            if w.region.is_empty() {
                w.region = locality.region.clone();
            }
            if w.zone.is_empty() {
                w.zone = locality.zone.clone();
            }
        }
        for name in additional_labels {
            let value = string_of(labels, name);
            if !value.is_empty() {
                w.labels.insert(name.clone(), value);
            }
        }
        w
    }

    /// Native's write (`convertWorkloadMetadataToStruct`): the UPPERCASE Struct sent on the wire.
    pub fn to_wire(&self) -> Struct {
        let mut fields = BTreeMap::new();
        put(&mut fields, "NAME", &self.name);
        put(&mut fields, "NAMESPACE", &self.namespace);
        put(&mut fields, "WORKLOAD_NAME", &self.workload);
        put(&mut fields, "CLUSTER_ID", &self.cluster);
        put(&mut fields, "IDENTITY", &self.identity);
        put(&mut fields, "REGION", &self.region);
        put(&mut fields, "AVAILABILITY_ZONE", &self.zone);
        if let Some(kind) = self.workload_type.name() {
            // Always apps/v1, whatever the real API group: native's rebuild.
            let owner = format!("kubernetes://apis/apps/v1/namespaces/{}/{kind}s/{}", self.namespace, self.workload);
            put(&mut fields, "OWNER", &owner);
        }
        let mut labels = BTreeMap::new();
        for (k, v) in &self.labels {
            put(&mut labels, k, v);
        }
        put(&mut labels, CANONICAL_NAME_LABEL, &self.service);
        put(&mut labels, CANONICAL_REVISION_LABEL, &self.revision);
        put(&mut labels, "app", &self.app);
        put(&mut labels, "version", &self.version);
        // Always present, even empty.
        fields.insert(LABELS_FIELD.to_string(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
        Struct { fields }
    }

    /// Native's stored peer (`WorkloadMetadataObject::serializeAsProto`), lowercase, plus `source`. Unlike native,
    /// `name` does not depend on `cluster` being set.
    pub fn to_peer_struct(&self, source: PeerSource) -> Struct {
        let mut fields = BTreeMap::new();
        if let Some(kind) = self.workload_type.name() {
            put(&mut fields, peer::TYPE, kind);
        }
        put(&mut fields, peer::WORKLOAD, &self.workload);
        put(&mut fields, peer::NAME, &self.name);
        put(&mut fields, peer::CLUSTER, &self.cluster);
        put(&mut fields, peer::NAMESPACE, &self.namespace);
        put(&mut fields, peer::SERVICE, &self.service);
        put(&mut fields, peer::REVISION, &self.revision);
        put(&mut fields, peer::APP, &self.app);
        put(&mut fields, peer::VERSION, &self.version);
        put(&mut fields, peer::IDENTITY, &self.identity);
        put(&mut fields, peer::REGION, &self.region);
        put(&mut fields, peer::ZONE, &self.zone);
        if !self.labels.is_empty() {
            let labels = self.labels.iter().map(|(k, v)| (k.clone(), string_value(v))).collect();
            fields.insert(peer::LABELS.to_string(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
        }
        put(&mut fields, peer::SOURCE, source.name());
        Struct { fields }
    }
}

/// Our own metadata as Envoy's node gives it (read once per VM), and the
/// plugin configuration's overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetadata {
    /// `xds.node.metadata.<FIELD>` for each of [`WORKLOAD_FIELDS`].
    pub fields: BTreeMap<String, String>,
    /// `xds.node.metadata.LABELS.<label>` for [`SOURCE_LABELS`] and the
    /// additional labels.
    pub labels: BTreeMap<String, String>,
    pub locality: Locality,
}

impl NodeMetadata {
    /// Overrides win over the node; then the whole goes through native's read.
    pub fn workload(
        &self,
        field_overrides: &BTreeMap<String, String>,
        label_overrides: &BTreeMap<String, String>,
        additional_labels: &[String],
    ) -> Workload {
        let strings = |base: &BTreeMap<String, String>, overrides: &BTreeMap<String, String>| {
            // Inserted one by one: `collect` into a BTreeMap sorts, and
            // that sort is 6 KB of the module.
            let mut merged = BTreeMap::new();
            for (k, v) in base.iter().chain(overrides) {
                merged.insert(k.clone(), string_value(v));
            }
            merged
        };
        let mut fields = strings(&self.fields, field_overrides);
        let labels = strings(&self.labels, label_overrides);
        fields.insert(LABELS_FIELD.to_string(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
        Workload::read(&Struct { fields }, additional_labels, Some(&self.locality))
    }
}

/// Istio's endpoint metadata namespace and key.
pub use filter_common::istio::{key::WORKLOAD as ENDPOINT_WORKLOAD_KEY, NAMESPACE as ENDPOINT_NAMESPACE};
/// Longer values are ignored: istiod's are a few hundred bytes at most.
pub const MAX_ENDPOINT_WORKLOAD_LEN: usize = 1024;

/// What the upstream host's metadata says about its workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointWorkload {
    Absent,
    Invalid(&'static str),
    Found(Box<Workload>),
}

/// Reads `filter_metadata.istio.workload` from `xds.upstream_host_metadata`.
pub fn endpoint_workload(host_metadata: &[u8]) -> EndpointWorkload {
    let Ok(metadata) = Metadata::decode(host_metadata) else {
        return EndpointWorkload::Absent;
    };
    let value = metadata
        .filter_metadata
        .get(ENDPOINT_NAMESPACE)
        .and_then(|s| s.fields.get(ENDPOINT_WORKLOAD_KEY))
        .and_then(|v| v.kind.as_ref());
    match value {
        None => EndpointWorkload::Absent,
        Some(Kind::StringValue(s)) => parse_endpoint_workload(s),
        Some(_) => EndpointWorkload::Invalid("not a string"),
    }
}

fn parse_endpoint_workload(value: &str) -> EndpointWorkload {
    if value.len() > MAX_ENDPOINT_WORKLOAD_LEN {
        return EndpointWorkload::Invalid("too long");
    }
    let mut parts = value.split(';');
    let mut next = || parts.next().map(str::to_string);
    match (next(), next(), next(), next(), next()) {
        (Some(workload), Some(namespace), Some(service), Some(revision), Some(cluster)) => {
            EndpointWorkload::Found(Box::new(Workload {
                workload,
                namespace,
                service,
                revision,
                cluster,
                ..Workload::default()
            }))
        }
        _ => EndpointWorkload::Invalid("fewer than 5 ';'-separated parts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(fields: &[(&str, &str)], labels: &[(&str, &str)]) -> Struct {
        let mut f: BTreeMap<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), string_value(v))).collect();
        if !labels.is_empty() {
            let l = labels.iter().map(|(k, v)| (k.to_string(), string_value(v))).collect();
            f.insert(LABELS_FIELD.into(), Value { kind: Some(Kind::StructValue(Struct { fields: l })) });
        }
        Struct { fields: f }
    }

    fn keys(s: &Struct) -> Vec<&str> {
        s.fields.keys().map(String::as_str).collect()
    }

    fn get<'a>(s: &'a Struct, key: &str) -> &'a str {
        match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(v)) => v,
            _ => "",
        }
    }

    fn labels_of(s: &Struct) -> Struct {
        match s.fields.get(LABELS_FIELD).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(l)) => l.clone(),
            other => panic!("LABELS missing: {other:?}"),
        }
    }

    #[test]
    fn labels_are_always_sent_even_empty() {
        let wire = Workload::read(&st(&[("NAME", "p")], &[]), &[], None).to_wire();
        assert_eq!(keys(&wire), ["LABELS", "NAME"]);
        assert!(labels_of(&wire).fields.is_empty());
    }

    #[test]
    fn qualified_app_and_version_labels_win_over_plain_ones() {
        let both = st(
            &[],
            &[("app.kubernetes.io/name", "x"), ("app", "y"), ("app.kubernetes.io/version", "2"), ("version", "1")],
        );
        let w = Workload::read(&both, &[], None);
        assert_eq!((w.app.as_str(), w.version.as_str()), ("x", "2"));
        let labels = labels_of(&w.to_wire());
        assert_eq!((get(&labels, "app"), get(&labels, "version")), ("x", "2"), "the normalised values are sent");
        assert!(!labels.fields.contains_key("app.kubernetes.io/name"));
        let plain = Workload::read(&st(&[], &[("app", "y"), ("version", "1")]), &[], None);
        assert_eq!((plain.app.as_str(), plain.version.as_str()), ("y", "1"));
        let empty_qualified = Workload::read(&st(&[], &[("app.kubernetes.io/name", ""), ("app", "y")]), &[], None);
        assert_eq!(empty_qualified.app, "y");
    }

    #[test]
    fn owner_is_rebuilt_for_known_types_and_dropped_otherwise() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("kubernetes://apis/apps/v1/namespaces/ns/deployments/web", "web", Some("deployment")),
            ("kubernetes://apis/batch/v1/namespaces/ns/jobs/etl", "etl", Some("job")),
            ("kubernetes://apis/batch/v1/namespaces/ns/cronjobs/nightly", "nightly", Some("cronjob")),
            ("kubernetes://apis/v1/namespaces/ns/pods/solo", "solo", Some("pod")),
            ("kubernetes://apis/apps/v1/namespaces/ns/statefulsets/db", "db", None),
            ("kubernetes://apis/apps/v1/namespaces/ns/daemonsets/agent", "agent", None),
            ("short", "a-much-longer-workload-name", None),
            ("", "web", None),
        ];
        for (owner, workload, expected) in cases {
            let w = Workload::read(
                &st(&[("OWNER", owner), ("WORKLOAD_NAME", workload), ("NAMESPACE", "ns")], &[]),
                &[],
                None,
            );
            assert_eq!(w.workload_type.name(), *expected, "{owner}");
            let wire = w.to_wire();
            match expected {
                Some(kind) => assert_eq!(
                    get(&wire, "OWNER"),
                    format!("kubernetes://apis/apps/v1/namespaces/ns/{kind}s/{workload}"),
                    "always apps/v1, as native"
                ),
                None => assert!(!wire.fields.contains_key("OWNER"), "{owner}"),
            }
        }
    }

    #[test]
    fn region_and_zone_fall_back_to_the_locality_for_our_own_metadata_only() {
        let locality = Locality { region: "r".into(), zone: "z".into() };
        let own = Workload::read(&st(&[("NAME", "p")], &[]), &[], Some(&locality));
        assert_eq!((own.region.as_str(), own.zone.as_str()), ("r", "z"));
        let set = Workload::read(&st(&[("REGION", "r2")], &[]), &[], Some(&locality));
        assert_eq!((set.region.as_str(), set.zone.as_str()), ("r2", "z"));
        let peer = Workload::read(&st(&[("NAME", "p")], &[]), &[], None);
        assert_eq!(peer.region, "");
    }

    #[test]
    fn only_additional_labels_are_kept_besides_the_standard_ones() {
        let s = st(&[], &[("team", "red"), ("pod-template-hash", "abc"), ("app", "a")]);
        let w = Workload::read(&s, &["team".into(), "missing".into()], None);
        assert_eq!(w.labels, BTreeMap::from([("team".to_string(), "red".to_string())]));
        let labels = labels_of(&w.to_wire());
        assert_eq!(keys(&labels), ["app", "team"]);
    }

    #[test]
    fn the_stored_peer_has_natives_lowercase_schema_and_a_source() {
        let s = st(
            &[
                ("NAME", "web-1"),
                ("NAMESPACE", "shop"),
                ("WORKLOAD_NAME", "web"),
                ("CLUSTER_ID", "east"),
                ("IDENTITY", "spiffe://td/ns/shop/sa/web"),
                ("OWNER", "kubernetes://apis/apps/v1/namespaces/shop/deployments/web"),
                ("REGION", "r"),
                ("AVAILABILITY_ZONE", "z"),
                ("PLATFORM_METADATA", "ignored"),
            ],
            &[
                (CANONICAL_NAME_LABEL, "web-svc"),
                (CANONICAL_REVISION_LABEL, "v3"),
                ("app", "web"),
                ("version", "3"),
                ("team", "t"),
            ],
        );
        let stored = Workload::read(&s, &["team".into()], None).to_peer_struct(PeerSource::Exchange);
        let expected = [
            ("app", "web"),
            ("availability_zone", "z"),
            ("cluster", "east"),
            ("identity", "spiffe://td/ns/shop/sa/web"),
            ("name", "web-1"),
            ("namespace", "shop"),
            ("region", "r"),
            ("revision", "v3"),
            ("service", "web-svc"),
            ("source", "exchange"),
            ("type", "deployment"),
            ("version", "3"),
            ("workload", "web"),
        ];
        for (k, v) in expected {
            assert_eq!(get(&stored, k), v, "{k}");
        }
        assert_eq!(stored.fields.len(), expected.len() + 1, "plus labels: {:?}", keys(&stored));
        match stored.fields.get("labels").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(l)) => assert_eq!(keys(l), ["team"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn name_is_stored_without_a_cluster_unlike_native() {
        let stored = Workload::read(&st(&[("NAME", "p"), ("NAMESPACE", "ns")], &[]), &[], None)
            .to_peer_struct(PeerSource::Exchange);
        assert_eq!(keys(&stored), ["name", "namespace", "source"]);
    }

    #[test]
    fn overrides_go_through_the_same_normalisation() {
        let node = NodeMetadata {
            fields: BTreeMap::from([("NAME".into(), "n".into()), ("WORKLOAD_NAME".into(), "w".into())]),
            labels: BTreeMap::from([("app".into(), "plain".into())]),
            locality: Locality { region: "r".into(), zone: "z".into() },
        };
        let w = node.workload(
            &BTreeMap::from([("OWNER".into(), "kubernetes://apis/apps/v1/namespaces/ns/jobs/w".into())]),
            &BTreeMap::from([("app.kubernetes.io/name".into(), "qualified".into()), ("team".into(), "x".into())]),
            &["team".into()],
        );
        assert_eq!(w.app, "qualified");
        assert_eq!(w.workload_type, WorkloadType::Job);
        assert_eq!(w.region, "r");
        assert_eq!(w.labels.get("team").map(String::as_str), Some("x"));
    }

    fn host_metadata(value: Value) -> Vec<u8> {
        let s = Struct { fields: BTreeMap::from([(ENDPOINT_WORKLOAD_KEY.to_string(), value)]) };
        Metadata { filter_metadata: [(ENDPOINT_NAMESPACE.to_string(), s)].into_iter().collect() }.encode_to_vec()
    }

    #[test]
    fn endpoint_metadata_gives_a_partial_workload() {
        let md = host_metadata(string_value("reviews-v2;bookinfo;reviews;v2;Kubernetes"));
        let EndpointWorkload::Found(w) = endpoint_workload(&md) else { panic!("not found") };
        let stored = w.to_peer_struct(PeerSource::EndpointMetadata);
        assert_eq!(keys(&stored), ["cluster", "namespace", "revision", "service", "source", "workload"]);
        assert_eq!(get(&stored, "source"), "endpoint_metadata");
        assert_eq!(get(&stored, "workload"), "reviews-v2");
        // A "latest" revision is sent as "" by istiod: left out.
        let md = host_metadata(string_value("w;ns;svc;;c;extra"));
        let EndpointWorkload::Found(w) = endpoint_workload(&md) else { panic!() };
        assert!(!w.to_peer_struct(PeerSource::EndpointMetadata).fields.contains_key("revision"));
    }

    #[test]
    fn malformed_endpoint_metadata_is_invalid_and_missing_is_absent() {
        assert_eq!(endpoint_workload(&[]), EndpointWorkload::Absent);
        assert_eq!(endpoint_workload(&[0xff, 0xff]), EndpointWorkload::Absent);
        assert!(matches!(endpoint_workload(&host_metadata(string_value("a;b;c;d"))), EndpointWorkload::Invalid(_)));
        let long = format!("{};ns;s;r;c", "w".repeat(MAX_ENDPOINT_WORKLOAD_LEN));
        assert!(matches!(endpoint_workload(&host_metadata(string_value(&long))), EndpointWorkload::Invalid(_)));
        let number = Value { kind: Some(Kind::NumberValue(1.0)) };
        assert!(matches!(endpoint_workload(&host_metadata(number)), EndpointWorkload::Invalid(_)));
    }

    proptest! {
        #[test]
        fn read_then_write_is_a_fixed_point(
            name in "[a-z0-9-]{0,8}", ns in "[a-z]{0,6}", wl in "[a-z]{0,6}",
            kind in "(deployment|job|cronjob|pod|statefulset|x)", app in "[a-z]{0,4}", qapp in "[a-z]{0,4}",
        ) {
            let owner = format!("kubernetes://apis/apps/v1/namespaces/{ns}/{kind}s/{wl}");
            let s = st(&[("NAME", &name), ("NAMESPACE", &ns), ("WORKLOAD_NAME", &wl), ("OWNER", &owner)],
                       &[("app", &app), ("app.kubernetes.io/name", &qapp)]);
            let once = Workload::read(&s, &[], None);
            let twice = Workload::read(&once.to_wire(), &[], None);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn any_endpoint_value_is_handled(value in ".{0,64}") {
            let _ = endpoint_workload(&host_metadata(string_value(&value)));
        }
    }
}
