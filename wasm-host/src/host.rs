//! What the filters need from Envoy beyond the proxy-wasm ABI (which Envoy
//! itself checks when it loads a module), checked once when a plugin
//! configuration loads: an Envoy that cannot run a filter refuses its
//! configuration with a message saying what is missing and which Envoys are
//! supported, instead of failing requests later.

use proto::core::BuildVersion;
use proto::prost::Message;

use crate::properties::{call_foreign_function, get_property};
use crate::HostError;

/// The Envoys the filters are tested on (the test command runs the whole
/// end-to-end suite on each).
pub const SUPPORTED: &str = "stock Envoy 1.36 to 1.40 with the V8 wasm runtime";
/// Oldest and newest tested (major, minor).
const TESTED: ((u32, u32), (u32, u32)) = ((1, 36), (1, 40));

/// Envoy's version, as its node reports it (`xds.node.user_agent_build_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvoyVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for EnvoyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl EnvoyVersion {
    /// From the serialized `BuildVersion`; `None` if it says nothing.
    pub fn decode(build_version: &[u8]) -> Option<EnvoyVersion> {
        let version = BuildVersion::decode(build_version).ok()?.version?;
        let v = EnvoyVersion { major: version.major_number, minor: version.minor_number, patch: version.patch };
        (v != EnvoyVersion { major: 0, minor: 0, patch: 0 }).then_some(v)
    }

    pub fn tested(self) -> bool {
        (TESTED.0..=TESTED.1).contains(&(self.major, self.minor))
    }
}

/// What a load-time check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything needed is there; the version, when Envoy tells it.
    Ready(Option<EnvoyVersion>),
    /// These foreign functions are missing.
    Missing { version: Option<EnvoyVersion>, foreign_functions: Vec<&'static str> },
}

impl Verdict {
    /// The line a filter logs: an error for `Missing`, a warning for an
    /// untested version, else information.
    pub fn message(&self) -> String {
        let on = |version: &Option<EnvoyVersion>| match version {
            Some(v) => format!("Envoy {v}"),
            None => "this Envoy (version unknown)".to_string(),
        };
        match self {
            Verdict::Ready(Some(v)) if v.tested() => format!("running on Envoy {v} (supported: {SUPPORTED})"),
            Verdict::Ready(version) => {
                format!("running on {}, which is not tested (supported: {SUPPORTED})", on(version))
            }
            Verdict::Missing { version, foreign_functions } => format!(
                "{} lacks the foreign function{} {} this filter needs; supported: {SUPPORTED}",
                on(version),
                if foreign_functions.len() == 1 { "" } else { "s" },
                foreign_functions.join(", ")
            ),
        }
    }

    /// Whether the filter should log the message as a warning.
    pub fn is_warning(&self) -> bool {
        matches!(self, Verdict::Ready(version) if !version.is_some_and(EnvoyVersion::tested))
    }
}

/// Whether a foreign function's answer to arguments that cannot parse shows
/// it exists: Envoy answers an unknown name with NotFound, and a known one
/// with BadArgument before it does anything.
pub fn foreign_function_exists(answer: Result<Option<Vec<u8>>, HostError>) -> bool {
    !matches!(answer, Err(HostError::NOT_FOUND))
}

/// Checks the running Envoy for `foreign_functions`.
pub fn check(foreign_functions: &[&'static str]) -> Verdict {
    let version = get_property(&["xds", "node", "user_agent_build_version"])
        .ok()
        .flatten()
        .and_then(|bytes| EnvoyVersion::decode(&bytes));
    // Not a protobuf message: every foreign function that parses its
    // arguments refuses it without acting.
    const UNPARSABLE: &[u8] = &[0xff];
    let missing: Vec<&'static str> = foreign_functions
        .iter()
        .copied()
        .filter(|name| !foreign_function_exists(call_foreign_function(name, UNPARSABLE)))
        .collect();
    if missing.is_empty() {
        Verdict::Ready(version)
    } else {
        Verdict::Missing { version, foreign_functions: missing }
    }
}

/// [`check`], logged under `filter`'s name: false (an error logged) if the
/// filter cannot run here and must refuse its configuration.
pub fn check_logged(filter: &str, foreign_functions: &[&'static str]) -> bool {
    let verdict = check(foreign_functions);
    match &verdict {
        Verdict::Missing { .. } => log::error!("{filter}: {}, refusing the configuration", verdict.message()),
        _ if verdict.is_warning() => log::warn!("{filter}: {}", verdict.message()),
        _ => log::info!("{filter}: {}", verdict.message()),
    }
    !matches!(verdict, Verdict::Missing { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::core::SemanticVersion;

    fn build_version(major: u32, minor: u32, patch: u32) -> Vec<u8> {
        BuildVersion { version: Some(SemanticVersion { major_number: major, minor_number: minor, patch }) }
            .encode_to_vec()
    }

    #[test]
    fn versions_are_read_from_the_build_version_and_judged_by_the_tested_range() {
        let v = EnvoyVersion::decode(&build_version(1, 40, 0)).unwrap();
        assert_eq!(v.to_string(), "1.40.0");
        assert!(v.tested());
        for (minor, tested) in [(35, false), (36, true), (38, true), (41, false)] {
            assert_eq!(EnvoyVersion::decode(&build_version(1, minor, 2)).unwrap().tested(), tested, "1.{minor}");
        }
        assert_eq!(EnvoyVersion::decode(&[]), None, "no version");
        assert_eq!(EnvoyVersion::decode(&[0xff, 0xff]), None, "not a BuildVersion");
    }

    #[test]
    fn messages_say_what_is_missing_and_what_is_supported() {
        let v = EnvoyVersion::decode(&build_version(1, 38, 3));
        assert_eq!(
            Verdict::Ready(v).message(),
            "running on Envoy 1.38.3 (supported: stock Envoy 1.36 to 1.40 with the V8 wasm runtime)"
        );
        assert!(!Verdict::Ready(v).is_warning());
        let old = EnvoyVersion::decode(&build_version(1, 30, 0));
        assert!(Verdict::Ready(old).message().contains("Envoy 1.30.0, which is not tested"));
        assert!(Verdict::Ready(old).is_warning() && Verdict::Ready(None).is_warning());
        let missing = Verdict::Missing { version: v, foreign_functions: vec!["set_envoy_filter_state"] };
        assert_eq!(
            missing.message(),
            "Envoy 1.38.3 lacks the foreign function set_envoy_filter_state this filter needs; \
             supported: stock Envoy 1.36 to 1.40 with the V8 wasm runtime"
        );
    }

    #[test]
    fn only_not_found_means_a_foreign_function_is_missing() {
        assert!(!foreign_function_exists(Err(HostError::NOT_FOUND)));
        assert!(foreign_function_exists(Err(HostError(2))), "BadArgument: it exists and refused the bytes");
        assert!(foreign_function_exists(Ok(None)));
    }
}
