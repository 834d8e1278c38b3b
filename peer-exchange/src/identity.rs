//! Verified peers: a peer's metadata is a claim; its mTLS certificate is
//! authenticated by the handshake. This module decides what the claim is
//! worth against the certificate and what is stored for it.
//!
//! The authenticated identity is the peer certificate's URI SAN as Envoy
//! exposes it (`connection.uri_san_peer_certificate` on the server,
//! `upstream.uri_san_peer_certificate` on the client: the certificate's
//! first URI SAN). Istio's form is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! A claim is **consistent** ([`Verification::Verified`]) when
//! - its `IDENTITY`, if it has one, equals the certificate's URI SAN (which
//!   also checks the claimed trust domain and service account), and
//! - its `NAMESPACE` equals the `ns` segment of that SAN, which must
//!   therefore be Istio's SPIFFE form.
//!
//! Nothing else in a claim (workload name, labels, cluster, locality) is
//! checkable against a certificate: a verified peer's namespace and
//! identity are facts, the rest is still what the peer says. Which trust
//! domains and service accounts are acceptable at all is decided before us,
//! by the TLS validation context (`match_typed_subject_alt_names`) and RBAC.
//!
//! What is stored ([`IdentityCheck`], plugin configuration `identity_check`):
//!
//! | | enforce (default) | annotate | off |
//! |---|---|---|---|
//! | consistent | claim, `verified: true` | claim, `verified: true` | claim |
//! | inconsistent | the certificate's facts only, `source: certificate`, `verified: true` | claim, `verified: false`, `unverified_reason` | claim |
//! | no certificate | nothing (peer not found) | claim, `verified: false`, `unverified_reason: no_certificate` | claim |
//!
//! A verified claim also gets the certificate's `identity` (if it claimed
//! none) and `service_account`. With `off` the stored peer is exactly
//! native's (no `verified` field), and no certificate is read.

use std::collections::BTreeMap;
use std::fmt;

use filter_common::istio::peer;
use proto::prost_types::{value::Kind, Struct, Value};

/// Stored-peer fields: whether the peer's identity and namespace are backed
/// by its certificate, why not, and the certificate's service account.
pub use filter_common::istio::peer::{
    SERVICE_ACCOUNT as SERVICE_ACCOUNT_FIELD, UNVERIFIED_REASON as UNVERIFIED_REASON_FIELD, VERIFIED as VERIFIED_FIELD,
};

/// What a claim that disagrees with its certificate is worth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityCheck {
    /// Store only what the certificate proves.
    #[default]
    Enforce,
    /// Store the claim, marked unverified.
    Annotate,
    /// Native's behaviour: the claim is stored as is, unchecked.
    Off,
}

impl IdentityCheck {
    /// The configuration names, in order.
    pub const NAMES: &'static str = "enforce, annotate, off";

    /// By its configuration name (`enforce`, `annotate`, `off`).
    pub fn from_name(name: &str) -> Option<IdentityCheck> {
        match name {
            "enforce" => Some(IdentityCheck::Enforce),
            "annotate" => Some(IdentityCheck::Annotate),
            "off" => Some(IdentityCheck::Off),
            _ => None,
        }
    }
}

/// An Istio SPIFFE identity, borrowed from the URI SAN it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

impl<'a> SpiffeId<'a> {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, every
    /// segment non-empty; anything else (another path, a query, a
    /// fragment) is not Istio's form.
    pub fn parse(uri: &'a str) -> Option<SpiffeId<'a>> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut segments = rest.split('/');
        let (trust_domain, ns, namespace, sa, service_account) =
            (segments.next()?, segments.next()?, segments.next()?, segments.next()?, segments.next()?);
        let plain = |s: &str| !s.is_empty() && !s.contains(['?', '#']);
        if segments.next().is_some()
            || ns != "ns"
            || sa != "sa"
            || ![trust_domain, namespace, service_account].into_iter().all(plain)
        {
            return None;
        }
        Some(SpiffeId { trust_domain, namespace, service_account })
    }
}

/// Why a claim is not consistent with the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The claimed `IDENTITY` is not the certificate's URI SAN.
    Identity,
    /// The claimed `NAMESPACE` is not the certificate's `ns` segment.
    Namespace,
    /// The certificate's URI SAN is not Istio's SPIFFE form, so the
    /// namespace cannot be checked.
    NotSpiffe,
}

/// A claim against the peer's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Mismatch(Mismatch),
    /// No certificate (or one without a URI SAN): nothing to check against.
    NoCertificate,
}

impl Verification {
    /// The `unverified_reason` value; `None` when verified.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verification::Verified => None,
            Verification::Mismatch(Mismatch::Identity) => Some("identity_mismatch"),
            Verification::Mismatch(Mismatch::Namespace) => Some("namespace_mismatch"),
            Verification::Mismatch(Mismatch::NotSpiffe) => Some("not_spiffe"),
            Verification::NoCertificate => Some("no_certificate"),
        }
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason().unwrap_or("verified"))
    }
}

/// Checks a claimed identity and namespace against the certificate's URI
/// SAN (`None` or empty: no certificate).
pub fn verify(claimed_identity: &str, claimed_namespace: &str, uri_san: Option<&str>) -> Verification {
    let Some(san) = uri_san.filter(|s| !s.is_empty()) else {
        return Verification::NoCertificate;
    };
    if !claimed_identity.is_empty() && claimed_identity != san {
        return Verification::Mismatch(Mismatch::Identity);
    }
    match SpiffeId::parse(san) {
        None => Verification::Mismatch(Mismatch::NotSpiffe),
        Some(id) if id.namespace != claimed_namespace => Verification::Mismatch(Mismatch::Namespace),
        Some(_) => Verification::Verified,
    }
}

/// What is stored for a claim (the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Belief {
    /// The claim as native stores it (`off`: nothing was checked).
    Unchecked,
    /// The claim, with `verified` saying what the check found.
    Claim(Verification),
    /// Only what the certificate proves (`enforce`, the claim disagreed).
    Certificate(Mismatch),
    /// Nothing, the peer is not found (`enforce`, no certificate).
    Nothing,
}

impl Belief {
    /// What the check found; `None` when nothing was checked.
    pub fn verification(self) -> Option<Verification> {
        match self {
            Belief::Unchecked => None,
            Belief::Claim(v) => Some(v),
            Belief::Certificate(m) => Some(Verification::Mismatch(m)),
            Belief::Nothing => Some(Verification::NoCertificate),
        }
    }
}

/// Checks a claim (unless `off`) and decides what is stored for it.
pub fn judge(mode: IdentityCheck, claimed_identity: &str, claimed_namespace: &str, uri_san: Option<&str>) -> Belief {
    if mode == IdentityCheck::Off {
        return Belief::Unchecked;
    }
    match (mode, verify(claimed_identity, claimed_namespace, uri_san)) {
        (IdentityCheck::Enforce, Verification::Mismatch(m)) => Belief::Certificate(m),
        (IdentityCheck::Enforce, Verification::NoCertificate) => Belief::Nothing,
        (_, v) => Belief::Claim(v),
    }
}

/// Adds the verification fields to a stored claim: `verified`, and either
/// the certificate's `identity` (if none was claimed) and `service_account`,
/// or `unverified_reason`.
pub fn annotate(stored: &mut Struct, verification: Verification, uri_san: Option<&str>) {
    let fields = &mut stored.fields;
    fields.insert(VERIFIED_FIELD.to_string(), bool_value(verification == Verification::Verified));
    match verification.reason() {
        Some(reason) => {
            fields.insert(UNVERIFIED_REASON_FIELD.to_string(), string_value(reason));
        }
        None => {
            if let Some(san) = uri_san {
                fields.entry(peer::IDENTITY.to_string()).or_insert_with(|| string_value(san));
                if let Some(id) = SpiffeId::parse(san) {
                    fields.insert(SERVICE_ACCOUNT_FIELD.to_string(), string_value(id.service_account));
                }
            }
        }
    }
}

/// Marks a peer that no certificate can vouch for (the client's
/// endpoint-metadata fallback): `verified: false`, `unverified_reason: not_checked`.
pub fn mark_not_checked(stored: &mut Struct) {
    stored.fields.insert(VERIFIED_FIELD.to_string(), bool_value(false));
    stored.fields.insert(UNVERIFIED_REASON_FIELD.to_string(), string_value("not_checked"));
}

/// The stored peer when only the certificate is believed: its `identity`,
/// and from Istio's form its `namespace` and `service_account`;
/// `source: certificate`, `verified: true`.
pub fn certificate_peer(uri_san: &str) -> Struct {
    let mut fields = BTreeMap::new();
    fields.insert(peer::IDENTITY.to_string(), string_value(uri_san));
    if let Some(id) = SpiffeId::parse(uri_san) {
        fields.insert(peer::NAMESPACE.to_string(), string_value(id.namespace));
        fields.insert(SERVICE_ACCOUNT_FIELD.to_string(), string_value(id.service_account));
    }
    fields.insert(peer::SOURCE.to_string(), string_value("certificate"));
    fields.insert(VERIFIED_FIELD.to_string(), bool_value(true));
    Struct { fields }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}

fn bool_value(b: bool) -> Value {
    Value { kind: Some(Kind::BoolValue(b)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAN: &str = "spiffe://cluster.local/ns/client-ns/sa/client";

    #[test]
    fn istio_spiffe_form_parses_and_nothing_else_does() {
        assert_eq!(
            SpiffeId::parse(SAN),
            Some(SpiffeId { trust_domain: "cluster.local", namespace: "client-ns", service_account: "client" })
        );
        for bad in [
            "",
            "spiffe://",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a#x/sa/b",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_claim_is_consistent_only_with_its_own_certificate() {
        assert_eq!(verify(SAN, "client-ns", Some(SAN)), Verification::Verified);
        assert_eq!(verify("", "client-ns", Some(SAN)), Verification::Verified, "no IDENTITY claimed");
        let other = "spiffe://cluster.local/ns/payments/sa/payments-api";
        assert_eq!(verify(other, "payments", Some(SAN)), Verification::Mismatch(Mismatch::Identity));
        assert_eq!(verify(SAN, "payments", Some(SAN)), Verification::Mismatch(Mismatch::Namespace));
        assert_eq!(verify("", "", Some(SAN)), Verification::Mismatch(Mismatch::Namespace), "a namespace is required");
        let other_domain = "spiffe://evil.example/ns/client-ns/sa/client";
        assert_eq!(verify(other_domain, "client-ns", Some(SAN)), Verification::Mismatch(Mismatch::Identity));
        assert_eq!(verify("", "x", Some("spiffe://td/workload")), Verification::Mismatch(Mismatch::NotSpiffe));
        assert_eq!(verify(SAN, "client-ns", None), Verification::NoCertificate);
        assert_eq!(verify(SAN, "client-ns", Some("")), Verification::NoCertificate);
    }

    #[test]
    fn what_is_believed_follows_the_mode() {
        use IdentityCheck::*;
        let liar = ("spiffe://cluster.local/ns/payments/sa/api", "payments");
        let honest = (SAN, "client-ns");
        for (identity, namespace) in [liar, honest] {
            for san in [Some(SAN), None] {
                assert_eq!(judge(Off, identity, namespace, san), Belief::Unchecked);
                let v = verify(identity, namespace, san);
                assert_eq!(judge(Annotate, identity, namespace, san), Belief::Claim(v));
                assert_eq!(judge(Enforce, identity, namespace, san).verification(), Some(v));
            }
        }
        assert_eq!(judge(Enforce, honest.0, honest.1, Some(SAN)), Belief::Claim(Verification::Verified));
        assert_eq!(judge(Enforce, liar.0, liar.1, Some(SAN)), Belief::Certificate(Mismatch::Identity));
        assert_eq!(judge(Enforce, honest.0, honest.1, None), Belief::Nothing);
        assert_eq!(Belief::Unchecked.verification(), None);
    }

    proptest::proptest! {
        #[test]
        fn any_claim_and_certificate_is_decided_without_panic(
            identity in "\\PC{0,40}",
            namespace in "[a-z-]{0,12}",
            san in proptest::option::of("(spiffe://[a-z.]{0,10}/(ns|sa)/[a-z-]{0,8}/(sa|ns)/[a-z-]{0,8})|\\PC{0,30}"),
        ) {
            let v = verify(&identity, &namespace, san.as_deref());
            if v == Verification::Verified {
                let id = san.as_deref().and_then(SpiffeId::parse);
                proptest::prop_assert_eq!(id.map(|id| id.namespace), Some(namespace.as_str()));
                proptest::prop_assert!(identity.is_empty() || Some(identity.as_str()) == san.as_deref());
            }
            for mode in [IdentityCheck::Enforce, IdentityCheck::Annotate, IdentityCheck::Off] {
                let belief = judge(mode, &identity, &namespace, san.as_deref());
                if mode == IdentityCheck::Enforce {
                    // Under enforce, a stored claim is always a verified one.
                    proptest::prop_assert!(!matches!(belief, Belief::Claim(v) if v != Verification::Verified));
                }
            }
        }
    }

    fn get<'a>(s: &'a Struct, key: &str) -> Option<&'a Kind> {
        s.fields.get(key).and_then(|v| v.kind.as_ref())
    }

    #[test]
    fn stored_fields_say_whether_and_why() {
        let mut verified = Struct::default();
        annotate(&mut verified, Verification::Verified, Some(SAN));
        assert_eq!(get(&verified, VERIFIED_FIELD), Some(&Kind::BoolValue(true)));
        assert_eq!(get(&verified, "identity"), Some(&Kind::StringValue(SAN.into())));
        assert_eq!(get(&verified, SERVICE_ACCOUNT_FIELD), Some(&Kind::StringValue("client".into())));
        assert_eq!(get(&verified, UNVERIFIED_REASON_FIELD), None);

        let mut claimed = Struct { fields: [("identity".to_string(), string_value("claimed"))].into() };
        annotate(&mut claimed, Verification::Mismatch(Mismatch::Identity), Some(SAN));
        assert_eq!(get(&claimed, VERIFIED_FIELD), Some(&Kind::BoolValue(false)));
        assert_eq!(get(&claimed, UNVERIFIED_REASON_FIELD), Some(&Kind::StringValue("identity_mismatch".into())));
        assert_eq!(get(&claimed, "identity"), Some(&Kind::StringValue("claimed".into())), "the claim is kept");
        assert_eq!(get(&claimed, SERVICE_ACCOUNT_FIELD), None);

        let cert = certificate_peer(SAN);
        let keys: Vec<_> = cert.fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["identity", "namespace", "service_account", "source", "verified"]);
        assert_eq!(get(&cert, "namespace"), Some(&Kind::StringValue("client-ns".into())));
        let keys: Vec<_> = certificate_peer("spiffe://td/x").fields.into_keys().collect();
        assert_eq!(keys, ["identity", "source", "verified"]);

        let mut endpoint = Struct::default();
        mark_not_checked(&mut endpoint);
        assert_eq!(get(&endpoint, UNVERIFIED_REASON_FIELD), Some(&Kind::StringValue("not_checked".into())));
    }
}
