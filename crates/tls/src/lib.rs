//! TLS for oxcd: loads certificates and keys as cfssl writes them (PKCS#1, SEC1, PKCS#8 PEM)
//! into rustls configurations, and turns handshake failures into plain words.
//!
//! Server configurations re-read their files when they change (`reload`): a replaced
//! certificate, key, CA bundle or CRL takes effect at the next handshake, and a half-written
//! or mismatched pair keeps the previous material (logged once). `policy` holds etcd's
//! cipher-suite and version options; `auto` generates `--auto-tls` certificates; `identity`
//! checks allowed CNs and host names.
//!
//! Architecture invariant: this crate knows nothing about etcd, raft or storage. It is used by
//! the server (client and peer listeners, peer dialing) and by the client library.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub use tokio_rustls::{TlsAcceptor, TlsConnector};

pub mod auto;
mod identity;
mod policy;
mod reload;

pub use identity::{cert_common_name, cert_covers_hostname};
pub use policy::{cipher_suite, CipherError, TlsPolicy, TlsVersion};
pub use reload::{CertResolver, ReloadingClientVerifier, ReloadingServerVerifier};

/// Errors from loading TLS material. Each names the file and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot read trusted CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("cannot read certificate revocation list {path}: {reason}")]
    Crl { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not go together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The crypto provider used everywhere (ring: builds fast and is what the field trusts).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file (a chain is allowed).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// Reads a private key: `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY` (SEC1) or `PRIVATE KEY` (PKCS#8).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |reason: String| TlsError::Key {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            err("no PEM private key block (RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)".into())
        }
        other => err(other.to_string()),
    })
}

/// Reads the CA certificates a side trusts.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certs(path).map_err(|e| match e {
        TlsError::Cert { path, reason } => TlsError::Ca { path, reason },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What a listening side presents and whom it lets in.
#[derive(Debug, Clone, Default)]
pub struct ServerTlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (as etcd does, a trusted
    /// CA file alone already demands client certificates).
    pub trusted_ca_file: Option<PathBuf>,
    /// Certificates this list revokes are refused (`--client-crl-file`, `--peer-crl-file`).
    pub crl_file: Option<PathBuf>,
    /// A client certificate's CN must be one of these (empty: any).
    pub allowed_cns: Vec<String>,
    /// A client certificate must be valid for one of these host names (empty: any).
    pub allowed_hostnames: Vec<String>,
    /// Cipher suites and versions.
    pub policy: TlsPolicy,
}

/// Builds a server configuration with ALPN for HTTP/2 (gRPC) and HTTP/1.1 (curl, v2 keys).
/// The certificate, CA bundle and CRL are re-read when their files change (see `reload`);
/// they are loaded once here so that a bad file is reported at once.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = files.policy.provider();
    let resolver = Arc::new(CertResolver::new(
        &files.cert_file,
        &files.key_file,
        provider.clone(),
    )?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&files.policy.versions())
        .map_err(|e| TlsError::Cert {
            path: files.cert_file.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.trusted_ca_file {
        Some(ca) => builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier::new(
            ca,
            files.crl_file.as_deref(),
            files.allowed_cns.clone(),
            files.allowed_hostnames.clone(),
            provider,
        )?)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a dialing side presents and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Accept any server certificate (etcdctl's `--insecure-skip-tls-verify`).
    pub skip_verify: bool,
}

/// Builds a client configuration (ALPN h2, for gRPC and the peer transport).
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Ca {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
    let builder = if files.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let roots = match &files.trusted_ca_file {
            Some(ca) => load_roots(ca)?,
            None => RootCertStore::empty(),
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(cert)?;
            let k = load_key(key)?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| TlsError::Mismatch {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server name to verify for a host taken from a URL: an IP SAN for addresses, DNS otherwise.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).ok()
}

/// Checks that a peer's certificate covers the address it connected from, as etcd does for
/// peers: a certificate handed to one member must not let another address in.
pub fn cert_covers_ip(cert: &CertificateDer<'_>, ip: IpAddr) -> Result<(), String> {
    let end = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(ip.into());
    end.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("certificate is not valid for {ip}"))
}

/// Explains, in plain words, why a TLS handshake failed. This is what people stuck on
/// "bad certificate" need to read.
pub fn explain(err: &std::io::Error) -> String {
    match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(e) => explain_rustls(e),
        None => match err.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the other side closed the connection during the handshake (it probably rejected our certificate, or speaks plain TCP)".into()
            }
            _ => err.to_string(),
        },
    }
}

/// Plain words for a rustls error.
pub fn explain_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => {
            "the client presented no certificate, but this endpoint requires one signed by its trusted CA (--trusted-ca-file / --client-cert-auth); pass --cert and --key".into()
        }
        E::InvalidCertificate(c) => explain_cert(c),
        E::AlertReceived(a) => format!(
            "the other side refused our certificate (alert: {a:?}); check that it trusts our CA and that our certificate has the right usage"
        ),
        E::InappropriateMessage { .. } | E::InvalidMessage(_) => {
            "the other side does not speak TLS here (plain http to an https port?)".into()
        }
        E::NoApplicationProtocol => "no common application protocol (ALPN)".into(),
        other => other.to_string(),
    }
}

fn explain_cert(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => {
            "the certificate is signed by an unknown authority (not the CA in the trusted CA file)".into()
        }
        C::BadSignature => "the certificate's signature does not verify against the trusted CA".into(),
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet (check the clocks of both machines)".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the certificate has the wrong key usage (a client needs 'client auth', a server 'server auth', a peer both)".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the certificate's addresses (SANs) do not cover the address being used".into()
        }
        C::Revoked => "the certificate has been revoked".into(),
        other => format!("bad certificate: {other:?}"),
    }
}

/// Verifier for `--insecure-skip-tls-verify`: accepts any server certificate but still checks
/// handshake signatures.
struct NoVerify(Arc<CryptoProvider>);

impl fmt::Debug for NoVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerify")
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a member presents and trusts when it dials a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerDialFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    /// `--peer-auto-tls`: peers present self-signed certificates nobody can verify.
    pub skip_verify: bool,
    pub policy: TlsPolicy,
}

/// The configuration a member dials its peers with (ALPN h2): its certificate and the CA
/// bundle are re-read when they change, as on the listening side.
pub fn peer_dial_config(files: &PeerDialFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = files.policy.provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&files.policy.versions())
        .map_err(|e| TlsError::Cert {
            path: files.cert_file.clone(),
            reason: e.to_string(),
        })?;
    let resolver = Arc::new(CertResolver::new(
        &files.cert_file,
        &files.key_file,
        provider.clone(),
    )?);
    let builder = match (&files.trusted_ca_file, files.skip_verify) {
        (Some(ca), false) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier::new(
                ca, provider,
            )?)),
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
        // No CA: nothing verifies, as before (the handshake says "unknown authority").
        (None, false) => builder.with_root_certificates(RootCertStore::empty()),
    };
    let mut config = builder.with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
