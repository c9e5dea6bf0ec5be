//! Test certificates, made by the test itself (never checked-in keys): a CA for one test
//! cluster and node certificates it signs, each naming its node as Roster's `[cluster.tls]`
//! expects (a DNS subject alternative name equal to the node's name).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate authority for one test cluster.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA named `name`, with a new key.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("a self-signed CA") }
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for a node, naming each of `dns_names`, usable as TLS server and client:
    /// `(certificate PEM, private key PEM)`.
    pub fn issue(&self, dns_names: &[&str]) -> (String, String) {
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("node certificate params");
        params.distinguished_name.push(DnType::CommonName, dns_names.first().copied().unwrap_or("roster node"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("a node key");
        let cert = params.signed_by(&key, &self.issuer).expect("a node certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Write `ca.crt`, and `NAME.crt` and `NAME.key` for every name in `nodes`, into `dir`
    /// (created if needed). Returns `dir`.
    pub fn write_cluster(&self, dir: &Path, nodes: &[String]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        write(&dir.join("ca.crt"), &self.cert_pem());
        for name in nodes {
            let (cert, key) = self.issue(&[name]);
            write(&dir.join(format!("{name}.crt")), &cert);
            write(&dir.join(format!("{name}.key")), &key);
        }
        dir.to_path_buf()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
