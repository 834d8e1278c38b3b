//! Wire messages shared by the filters.
//!
//! - [`wasm`]: arguments of Envoy's wasm foreign functions (`declare_property`,
//!   `set_envoy_filter_state`).
//! - [`core`]: the parts of `envoy.config.core.v3.Metadata` and `BuildVersion`
//!   the filters read.
//! - `google.protobuf.Any`/`Struct`/`Value` come from [`prost_types`].

pub use prost;
pub use prost_types;

/// Envoy's wasm foreign-function arguments (`envoy.source.extensions.common.wasm`).
pub mod wasm {
    include!(concat!(env!("OUT_DIR"), "/envoy.source.extensions.common.wasm.rs"));
}

/// `envoy.config.core.v3` (only `Metadata` and `BuildVersion`).
pub mod core {
    include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
}

/// Type URL of `google.protobuf.Struct` inside an `Any`.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// Serialized `Metadata` as Envoy hands it over (`xds.cluster_metadata`,
/// `xds.upstream_host_metadata`), with `(namespace, key, value)` entries:
/// what tests of every layer feed to the code that reads it.
pub fn metadata_bytes(entries: &[(&str, &str, prost_types::value::Kind)]) -> Vec<u8> {
    use prost::Message;
    let mut metadata = core::Metadata::default();
    for (namespace, key, value) in entries {
        let fields = &mut metadata.filter_metadata.entry(namespace.to_string()).or_default().fields;
        fields.insert(key.to_string(), prost_types::Value { kind: Some(value.clone()) });
    }
    metadata.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn set_envoy_filter_state_arguments_use_envoys_field_numbers() {
        let args = wasm::SetEnvoyFilterStateArguments {
            path: "p".into(),
            value: "v".into(),
            span: wasm::LifeSpan::DownstreamRequest as i32,
        };
        // field 1 "p", field 2 "v", field 3 varint 1
        assert_eq!(args.encode_to_vec(), vec![0x0a, 1, b'p', 0x12, 1, b'v', 0x18, 1]);
    }

    #[test]
    fn declare_property_arguments_use_envoys_field_numbers() {
        let args = wasm::DeclarePropertyArguments {
            name: "n".into(),
            readonly: true,
            r#type: wasm::WasmType::Protobuf as i32,
            schema: b"s".to_vec(),
            span: wasm::LifeSpan::DownstreamConnection as i32,
        };
        assert_eq!(args.encode_to_vec(), vec![0x0a, 1, b'n', 0x10, 1, 0x18, 3, 0x22, 1, b's', 0x28, 2]);
    }

    #[test]
    fn metadata_decodes_filter_metadata_and_skips_unknown_fields() {
        // filter_metadata {"istio": {"alpn_override": "false"}} followed by a
        // typed_filter_metadata entry (field 2) that this subset does not declare.
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "alpn_override".to_string(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("false".into())) },
        );
        let md = core::Metadata {
            filter_metadata: [("istio".to_string(), prost_types::Struct { fields })].into_iter().collect(),
        };
        let mut bytes = md.encode_to_vec();
        bytes.extend_from_slice(&[0x12, 0x02, 0x0a, 0x00]);
        let decoded = core::Metadata::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, md);
    }
}
