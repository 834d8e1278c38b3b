//! Istio's W3C `baggage` form of a workload: what native's `baggage`
//! propagation writes and its `baggage` discovery reads (Istio's
//! `metadata_object.cc` baggage conversions, `convertBaggageToWorkloadMetadata`
//! and its inverse).
//!
//! Written: `k8s.<type>.name=<workload>` (deployment, pod, job or cronjob;
//! an unknown type is written as pod), `service.name` (the canonical name),
//! `app.name` (only if it differs), `service.version` (the canonical
//! revision), `app.version` (only if it differs), `k8s.namespace.name`,
//! `k8s.cluster.name`, `k8s.instance.name`, `cloud.region`,
//! `cloud.availability_zone`; comma-joined, no spaces, no percent-encoding,
//! empty values left out, no identity (baggage never carries one).
//!
//! Read as native reads it (split on `,`, then on `=`; no trimming, no
//! percent-decoding; unknown keys ignored; the last duplicate wins), with
//! two differences: the value is bounded (W3C's 8192 bytes), and baggage
//! that names no workload and namespace is no peer — native turns any
//! baggage header, even unrelated W3C baggage, into an all-empty peer that
//! counts as found.

use crate::workload::{Workload, WorkloadType};

pub const BAGGAGE_HEADER: &str = "baggage";
/// W3C Baggage's limit on a header value.
pub const MAX_BAGGAGE_BYTES: usize = 8192;

const TYPES: [(&str, WorkloadType); 4] = [
    ("deployment", WorkloadType::Deployment),
    ("pod", WorkloadType::Pod),
    ("job", WorkloadType::Job),
    ("cronjob", WorkloadType::CronJob),
];
const NAMESPACE: &str = "k8s.namespace.name";
const CLUSTER: &str = "k8s.cluster.name";
const INSTANCE: &str = "k8s.instance.name";
const SERVICE_NAME: &str = "service.name";
const SERVICE_VERSION: &str = "service.version";
const APP_NAME: &str = "app.name";
const APP_VERSION: &str = "app.version";
const REGION: &str = "cloud.region";
const ZONE: &str = "cloud.availability_zone";

/// Our workload as a `baggage` value (native's write).
pub fn encode(w: &Workload) -> String {
    let kind = w.workload_type.name().unwrap_or("pod");
    let workload_key = format!("k8s.{kind}.name");
    let differs = |a: &str, b: &str| if a != b { a.to_string() } else { String::new() };
    let entries = [
        (workload_key.as_str(), w.workload.clone()),
        (SERVICE_NAME, w.service.clone()),
        (APP_NAME, differs(&w.app, &w.service)),
        (SERVICE_VERSION, w.revision.clone()),
        (APP_VERSION, differs(&w.version, &w.revision)),
        (NAMESPACE, w.namespace.clone()),
        (CLUSTER, w.cluster.clone()),
        (INSTANCE, w.name.clone()),
        (REGION, w.region.clone()),
        (ZONE, w.zone.clone()),
    ];
    entries.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Why a `baggage` value gave no peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaggageError {
    /// Over [`MAX_BAGGAGE_BYTES`].
    TooLarge { len: usize },
    /// Not UTF-8.
    NotText,
    /// No `k8s.<type>.name` or no `k8s.namespace.name`: not an Istio peer's
    /// baggage (an app's own W3C baggage, say).
    NoWorkload,
}

impl std::fmt::Display for BaggageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaggageError::TooLarge { len } => write!(f, "{len} bytes, over {MAX_BAGGAGE_BYTES}"),
            BaggageError::NotText => f.write_str("not text"),
            BaggageError::NoWorkload => f.write_str("names no workload and namespace"),
        }
    }
}

/// A peer's workload from a `baggage` value (native's read, bounded, and
/// only when it names a workload and a namespace).
pub fn decode(value: &[u8]) -> Result<Workload, BaggageError> {
    if value.len() > MAX_BAGGAGE_BYTES {
        return Err(BaggageError::TooLarge { len: value.len() });
    }
    let text = std::str::from_utf8(value).map_err(|_| BaggageError::NotText)?;
    let mut w = Workload::default();
    let (mut service_name, mut app_name, mut service_version, mut app_version) = (None, None, None, None);
    for entry in text.split(',') {
        let mut pieces = entry.split('=');
        let (Some(key), Some(value)) = (pieces.next(), pieces.next()) else { continue };
        let value = value.to_string();
        match key {
            NAMESPACE => w.namespace = value,
            CLUSTER => w.cluster = value,
            INSTANCE => w.name = value,
            REGION => w.region = value,
            ZONE => w.zone = value,
            SERVICE_NAME => service_name = Some(value),
            APP_NAME => app_name = Some(value),
            SERVICE_VERSION => service_version = Some(value),
            APP_VERSION => app_version = Some(value),
            key => {
                let kind = key.strip_prefix("k8s.").and_then(|k| k.strip_suffix(".name"));
                if let Some((_, t)) = TYPES.iter().find(|(name, _)| Some(*name) == kind) {
                    w.workload = value;
                    w.workload_type = *t;
                }
            }
        }
    }
    // Each of the pair fills the other when it is alone.
    w.service = service_name.clone().or_else(|| app_name.clone()).unwrap_or_default();
    w.app = app_name.or(service_name).unwrap_or_default();
    w.revision = service_version.clone().or_else(|| app_version.clone()).unwrap_or_default();
    w.version = app_version.or(service_version).unwrap_or_default();
    if w.workload.is_empty() || w.namespace.is_empty() {
        return Err(BaggageError::NoWorkload);
    }
    Ok(w)
}

/// The `baggage` value to send: `existing` (the request's or response's own
/// baggage, if any) without the members we write, then ours — so an app's
/// own W3C baggage still reaches the other side (native replaces the whole
/// header). If that would exceed [`MAX_BAGGAGE_BYTES`], ours alone.
pub fn merged(existing: Option<&[u8]>, ours: &str) -> String {
    let Some(existing) = existing.and_then(|e| std::str::from_utf8(e).ok()) else {
        return ours.to_string();
    };
    let ours_keys: Vec<&str> = ours.split(',').filter_map(|e| e.split('=').next()).collect();
    let kept: Vec<&str> = existing
        .split(',')
        .filter(|member| {
            let key = member.split(['=', ';']).next().unwrap_or_default().trim();
            !key.is_empty() && !ours_keys.contains(&key) && !is_workload_key(key)
        })
        .collect();
    if kept.is_empty() {
        return ours.to_string();
    }
    let value = format!("{},{ours}", kept.join(","));
    if value.len() > MAX_BAGGAGE_BYTES {
        ours.to_string()
    } else {
        value
    }
}

/// `k8s.<type>.name` of any type: a workload key of ours, even when ours
/// is written under another type.
fn is_workload_key(key: &str) -> bool {
    let kind = key.strip_prefix("k8s.").and_then(|k| k.strip_suffix(".name"));
    TYPES.iter().any(|(name, _)| Some(*name) == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reviews() -> Workload {
        Workload {
            name: "reviews-v2-7d9f-abcde".into(),
            namespace: "bookinfo".into(),
            workload: "reviews-v2".into(),
            cluster: "Kubernetes".into(),
            identity: "spiffe://cluster.local/ns/bookinfo/sa/reviews".into(),
            workload_type: WorkloadType::Deployment,
            region: "us-east1".into(),
            zone: "us-east1-b".into(),
            service: "reviews".into(),
            revision: "v2".into(),
            app: "reviews".into(),
            version: "v2".into(),
            labels: Default::default(),
        }
    }

    #[test]
    fn written_as_native_writes_it() {
        assert_eq!(
            encode(&reviews()),
            "k8s.deployment.name=reviews-v2,service.name=reviews,service.version=v2,k8s.namespace.name=bookinfo,\
             k8s.cluster.name=Kubernetes,k8s.instance.name=reviews-v2-7d9f-abcde,cloud.region=us-east1,\
             cloud.availability_zone=us-east1-b"
        );
        // An app or version of its own is written beside the canonical ones;
        // an unknown type is written as a pod; empty values are left out.
        let w = Workload {
            app: "reviews-app".into(),
            version: "2.1".into(),
            workload_type: WorkloadType::Unknown,
            region: String::new(),
            zone: String::new(),
            ..reviews()
        };
        assert_eq!(
            encode(&w),
            "k8s.pod.name=reviews-v2,service.name=reviews,app.name=reviews-app,service.version=v2,app.version=2.1,\
             k8s.namespace.name=bookinfo,k8s.cluster.name=Kubernetes,k8s.instance.name=reviews-v2-7d9f-abcde"
        );
    }

    #[test]
    fn what_is_written_reads_back_without_the_identity() {
        let w = reviews();
        let read = decode(encode(&w).as_bytes()).unwrap();
        assert_eq!(read, Workload { identity: String::new(), ..w });
    }

    #[test]
    fn read_as_native_reads_it() {
        // One of a pair fills both; both: each its own; the last duplicate wins.
        let w = decode(b"k8s.job.name=batch,k8s.namespace.name=a,k8s.namespace.name=b,app.name=x").unwrap();
        assert_eq!((w.workload_type, w.namespace.as_str()), (WorkloadType::Job, "b"));
        assert_eq!((w.service.as_str(), w.app.as_str()), ("x", "x"));
        let w = decode(b"k8s.pod.name=p,k8s.namespace.name=n,service.name=s,app.name=a,app.version=2").unwrap();
        assert_eq!((w.service.as_str(), w.app.as_str(), w.revision.as_str(), w.version.as_str()), ("s", "a", "2", "2"));
        // No trimming, no percent-decoding, a third `=` piece dropped, unknown keys ignored.
        let w = decode(b"k8s.pod.name=p,k8s.namespace.name=n%20x=y, k8s.cluster.name=c,userid=42").unwrap();
        assert_eq!((w.namespace.as_str(), w.cluster.as_str()), ("n%20x", ""));
    }

    #[test]
    fn baggage_that_names_no_peer_is_none_unlike_native() {
        for value in [&b"userid=42,sessionid=abc"[..], b"", b"k8s.namespace.name=ns", b"k8s.pod.name=p", b"garbage"] {
            assert_eq!(decode(value), Err(BaggageError::NoWorkload), "{:?}", String::from_utf8_lossy(value));
        }
        assert_eq!(decode(&[0xff, 0xfe]), Err(BaggageError::NotText));
        let long = format!("k8s.pod.name=p,k8s.namespace.name=n,x={}", "y".repeat(MAX_BAGGAGE_BYTES));
        assert!(matches!(decode(long.as_bytes()), Err(BaggageError::TooLarge { .. })));
    }

    #[test]
    fn an_apps_own_baggage_is_kept_and_ours_replaced() {
        let ours = encode(&reviews());
        assert_eq!(merged(None, &ours), ours);
        let merged_value = merged(Some(b"userid=42;p=1,k8s.namespace.name=spoofed,k8s.pod.name=x"), &ours);
        assert_eq!(merged_value, format!("userid=42;p=1,{ours}"));
        assert_eq!(decode(merged_value.as_bytes()).unwrap().namespace, "bookinfo");
        let huge = format!("blob={}", "z".repeat(MAX_BAGGAGE_BYTES));
        assert_eq!(merged(Some(huge.as_bytes()), &ours), ours, "too long together: ours alone");
    }

    proptest! {
        #[test]
        fn any_value_is_read_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&value);
            let _ = merged(Some(&value), "k8s.pod.name=p");
        }
    }
}
