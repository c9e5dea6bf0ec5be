//! Mutual TLS on node links (`[cluster.tls]`), with rustls: both sides present a certificate
//! signed by the cluster's CA, and a node's certificate names the node (a subject alternative
//! name of type DNS equal to its `[[cluster.nodes]] name`).
//!
//! Roster runs the TLS handshake itself, before its own link handshake, instead of using
//! `ractor_cluster`'s TLS mode: that mode never shows the peer's certificate, and Roster needs
//! it to know which node the session authenticates. The dialer asks for the server name of
//! the node it dials (rustls checks the certificate names it); the acceptor checks the name
//! the dialer claims against the dialer's certificate ([`certificate_names`]).

use super::handshake::HandshakeError;
use roster_core::{ClusterTlsConfig, NodeName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// This node's TLS identity and trust, ready for both directions.
pub(crate) struct LinkTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl LinkTls {
    /// Loads node `me`'s certificate, key and the CA named by `config`. The error says which
    /// file and what is wrong.
    pub fn load(config: &ClusterTlsConfig, me: &NodeName) -> Result<LinkTls, String> {
        let (cert_path, key_path, ca_path) = config.paths_for(me);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("[cluster.tls] cert = {cert_path:?}: {e}"))?;
        let Some(own) = chain.first() else {
            return Err(format!("[cluster.tls] cert = {cert_path:?} holds no certificate"));
        };
        if !certificate_names(own, me) {
            return Err(format!(
                "[cluster.tls] cert = {cert_path:?} does not name this node: it needs a subject alternative name of \
                 type DNS equal to \"{me}\""
            ));
        }
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("[cluster.tls] key = {key_path:?}: {e}"))?;
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&ca_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("[cluster.tls] ca = {ca_path:?}: {e}"))?;
        for ca in cas {
            roots.add(ca).map_err(|e| format!("[cluster.tls] ca = {ca_path:?}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("[cluster.tls] ca = {ca_path:?} holds no certificate"));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("[cluster.tls] ca = {ca_path:?}: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("[cluster.tls] cert = {cert_path:?} and key = {key_path:?}: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("[cluster.tls] cert = {cert_path:?} and key = {key_path:?}: {e}"))?;
        Ok(LinkTls { acceptor: TlsAcceptor::from(Arc::new(server)), connector: TlsConnector::from(Arc::new(client)) })
    }

    /// The acceptor's TLS handshake; returns the stream and the dialer's certificate.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, CertificateDer<'static>), HandshakeError> {
        let stream = self.acceptor.accept(tcp).await.map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| HandshakeError::Tls("the peer presented no certificate".into()))?;
        Ok((stream, cert))
    }

    /// The dialer's TLS handshake with `peer`, whose certificate must name it.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        peer: &NodeName,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeError> {
        let name = ServerName::try_from(peer.to_string())
            .map_err(|_| HandshakeError::Tls(format!("\"{peer}\" is not a DNS name")))?;
        self.connector.connect(name, tcp).await.map_err(|e| HandshakeError::Tls(e.to_string()))
    }
}

/// Whether `cert` names node `name` (a DNS subject alternative name equal to it).
pub(crate) fn certificate_names(cert: &CertificateDer<'_>, name: &NodeName) -> bool {
    let (Ok(parsed), Ok(server)) = (ParsedCertificate::try_from(cert), ServerName::try_from(name.as_str())) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    struct Files {
        dir: std::path::PathBuf,
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A CA and a certificate naming `names`, written as `{node}.crt`-style files for node `a`.
    fn files(tag: &str, names: &[&str]) -> (Files, ClusterTlsConfig) {
        let dir = std::env::temp_dir().join(format!("roster-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.join("a.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("a.key"), key.serialize_pem()).unwrap();
        let path = |f: &str| dir.join(f).display().to_string();
        let config = ClusterTlsConfig { cert: path("{node}.crt"), key: path("{node}.key"), ca: path("ca.crt") };
        (Files { dir }, config)
    }

    #[test]
    fn a_certificate_that_names_the_node_loads_and_names_only_it() {
        let (_files, config) = files("good", &["a"]);
        assert!(LinkTls::load(&config, &"a".into()).is_ok());
        let (cert, _, _) = config.paths_for(&"a".into());
        let der = CertificateDer::from_pem_file(cert).unwrap();
        assert!(certificate_names(&der, &"a".into()));
        assert!(!certificate_names(&der, &"b".into()));
    }

    #[test]
    fn a_node_refuses_to_start_with_a_certificate_for_another_name_or_missing_files() {
        let (_files, config) = files("misnamed", &["b"]);
        let err = LinkTls::load(&config, &"a".into()).err().expect("refused");
        assert!(err.contains("does not name this node") && err.contains("\"a\""), "{err}");
        let mut missing = config.clone();
        missing.ca = "/nonexistent/ca.crt".into();
        let (_f, good) = files("missing", &["a"]);
        missing.cert = good.cert.clone();
        missing.key = good.key.clone();
        let err = LinkTls::load(&missing, &"a".into()).err().expect("refused");
        assert!(err.contains("ca = \"/nonexistent/ca.crt\""), "{err}");
    }
}
