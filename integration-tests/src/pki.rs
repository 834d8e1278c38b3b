//! A throwaway PKI: one CA and the workload certificates of the deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// SPIFFE identities of the deployment's workloads.
pub const SERVER_IDENTITY: &str = "spiffe://cluster.local/ns/server-ns/sa/server";
pub const CLIENT_IDENTITY: &str = "spiffe://cluster.local/ns/client-ns/sa/client";
pub const RAW_CLIENT_IDENTITY: &str = "spiffe://cluster.local/ns/raw-ns/sa/raw-client";
pub const RECORDER_IDENTITY: &str = "spiffe://cluster.local/ns/recorder-ns/sa/recorder";
pub const GATEWAY_IDENTITY: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// DNS name of the non-mesh TLS servers (no SPIFFE identity).
pub const PLAIN_DNS_NAME: &str = "plain.example.local";

/// Certificates written as PEM files into `dir`: `ca.crt` and
/// `<name>.crt`/`<name>.key` for server, client, raw-client, recorder, plain, gateway.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

struct Leaf {
    name: &'static str,
    dns: &'static [&'static str],
    uri: Option<&'static str>,
}

const LEAVES: [Leaf; 6] = [
    Leaf {
        name: "server",
        dns: &[
            "echo.mesh.local",
            "banner.mesh.local",
            "baseline.mesh.local",
            "http.mesh.local",
            "optional-cert.mesh.local",
        ],
        uri: Some(SERVER_IDENTITY),
    },
    Leaf { name: "client", dns: &[], uri: Some(CLIENT_IDENTITY) },
    Leaf { name: "raw-client", dns: &[], uri: Some(RAW_CLIENT_IDENTITY) },
    Leaf { name: "recorder", dns: &["recorder.mesh.local"], uri: Some(RECORDER_IDENTITY) },
    Leaf { name: "plain", dns: &[PLAIN_DNS_NAME], uri: None },
    Leaf { name: "gateway", dns: &[], uri: Some(GATEWAY_IDENTITY) },
];

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create cert dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "mesh test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("write CA");
        let issuer = Issuer::new(ca_params, ca_key);
        for leaf in &LEAVES {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(leaf.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, leaf.name);
            if let Some(uri) = leaf.uri {
                params.subject_alt_names.push(SanType::URI(uri.try_into().expect("URI SAN")));
            }
            params.extended_key_usages =
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer).expect("sign leaf");
            std::fs::write(dir.join(format!("{}.crt", leaf.name)), cert.pem()).expect("write cert");
            std::fs::write(dir.join(format!("{}.key", leaf.name)), key.serialize_pem()).expect("write key");
        }
        Pki { dir: dir.to_path_buf() }
    }

    /// The certificates in `dir` if a complete set is there (`true`), else
    /// fresh ones. Running Envoys hold the certificates they started with,
    /// so a deployment's certificates are never replaced under them.
    pub fn generate_unless_present(dir: &Path) -> (Pki, bool) {
        let complete = Self::files().all(|file| dir.join(file).is_file());
        if complete {
            (Pki { dir: dir.to_path_buf() }, true)
        } else {
            (Self::generate(dir), false)
        }
    }

    /// Every file [`Pki::generate`] writes.
    fn files() -> impl Iterator<Item = String> {
        std::iter::once("ca.crt".to_string())
            .chain(LEAVES.iter().flat_map(|l| [format!("{}.crt", l.name), format!("{}.key", l.name)]))
    }

    /// Certificates an earlier [`Pki::generate`] wrote (e.g. for a deployment
    /// started elsewhere).
    pub fn load(dir: &Path) -> Pki {
        for file in Self::files() {
            assert!(dir.join(&file).is_file(), "{} is missing in {}", file, dir.display());
        }
        Pki { dir: dir.to_path_buf() }
    }

    fn chain_and_key(&self, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let cert = CertificateDer::from_pem_file(self.dir.join(format!("{name}.crt"))).expect("read certificate");
        let key = PrivateKeyDer::from_pem_file(self.dir.join(format!("{name}.key"))).expect("read key");
        (vec![cert], key)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.dir.join("ca.crt")).expect("read CA")).expect("add CA");
        roots
    }

    /// A rustls server with `name`'s certificate offering `alpn` (empty: no ALPN).
    pub fn server_config(&self, name: &str, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.chain_and_key(name);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// A rustls client with `name`'s certificate (`None`: no client
    /// certificate), trusting the CA, offering `alpn`. The server's
    /// certificate must carry the DNS name connected to.
    pub fn client_config(&self, name: Option<&str>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots());
        let mut config = match name {
            Some(name) => {
                let (chain, key) = self.chain_and_key(name);
                builder.with_client_auth_cert(chain, key).expect("client config")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("server name")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
