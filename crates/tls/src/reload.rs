//! Certificates, keys, CA bundles and CRLs re-read without a restart. Each handshake looks at
//! the files' size, modification time and inode (a `stat` each, no read); when they changed,
//! the material is loaded again and, if it is whole and consistent, used from this handshake
//! on. A half-written or mismatched file keeps the previous material, and the reason is
//! logged once per change. etcd reloads leaf certificates but not CAs (etcd issue 11555);
//! here a CA bundle or CRL swapped on disk is picked up the same way.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use crate::{load_certs, load_key, load_roots, TlsError};

/// What a file looked like: (size, mtime in ns, inode), or None when it cannot be read.
type Stamp = Vec<Option<(u64, i128, u64)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                (m.len(), mtime, m.ino())
            })
        })
        .collect()
}

/// Material loaded from files, and the stamp it was loaded at.
struct Loaded<T> {
    stamp: Stamp,
    value: T,
    /// The stamp of the last failed load, so that a bad file is logged once.
    failed: Option<Stamp>,
}

/// Returns the current material, reloading it first when the files changed.
fn current<T: Clone>(
    state: &Mutex<Loaded<T>>,
    paths: &[&Path],
    what: &str,
    load: impl FnOnce() -> Result<T, String>,
) -> T {
    let Ok(mut s) = state.lock() else {
        // A panic while reloading poisoned the lock: the previous material is all we have.
        return match state.lock() {
            Ok(s) => s.value.clone(),
            Err(p) => p.into_inner().value.clone(),
        };
    };
    let now = stamp(paths);
    if now != s.stamp && s.failed.as_ref() != Some(&now) {
        match load() {
            Ok(v) => {
                tracing::info!(files = %names(paths), "reloaded {what}");
                s.value = v;
                s.stamp = now;
                s.failed = None;
            }
            Err(why) => {
                tracing::warn!(
                    files = %names(paths),
                    "keeping the previous {what}: the files changed but cannot be used ({why}); will retry at the next handshake after they change again"
                );
                s.failed = Some(now);
            }
        }
    }
    s.value.clone()
}

fn names(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A certificate and key pair re-read when either file changes (server side and dialing side).
pub struct CertResolver {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded<Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertResolver({})", self.cert.display())
    }
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(cert)?;
    let k = load_key(key)?;
    CertifiedKey::from_der(certs, k, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })
}

impl CertResolver {
    /// Loads the pair now (an error names the file at fault).
    pub fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let st = stamp(&[cert, key]);
        let value = load_pair(cert, key, &provider)?;
        Ok(CertResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new(Loaded {
                stamp: st,
                value,
                failed: None,
            }),
        })
    }

    /// The pair to present now.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        current(
            &self.state,
            &[&self.cert, &self.key],
            "certificate and key",
            || load_pair(&self.cert, &self.key, &self.provider).map_err(|e| e.to_string()),
        )
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Crl {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.starts_with(b"-----") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if crls.is_empty() {
            return Err(err("no PEM X509 CRL block in the file".into()));
        }
        return Ok(crls);
    }
    // etcd reads the CRL file as DER.
    Ok(vec![CertificateRevocationListDer::from(bytes)])
}

/// Verifies client certificates against a CA bundle (and CRL) re-read when they change,
/// then applies the allowed CN and host name lists.
pub struct ReloadingClientVerifier {
    ca: PathBuf,
    crl: Option<PathBuf>,
    allowed_cns: Vec<String>,
    allowed_hostnames: Vec<String>,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded<Arc<dyn ClientCertVerifier>>>,
}

impl fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReloadingClientVerifier({})", self.ca.display())
    }
}

fn build_client_verifier(
    ca: &Path,
    crl: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = load_roots(ca)?;
    let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = crl {
        // As Go's check in etcd: the leaf's serial against the list; a CA the list does not
        // speak for is not an error.
        b = b
            .with_crls(load_crls(crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    b.build().map_err(|e| TlsError::Ca {
        path: ca.to_path_buf(),
        reason: e.to_string(),
    })
}

impl ReloadingClientVerifier {
    pub fn new(
        ca: &Path,
        crl: Option<&Path>,
        allowed_cns: Vec<String>,
        allowed_hostnames: Vec<String>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let st = stamp(&Self::paths_of(ca, crl));
        let value = build_client_verifier(ca, crl, &provider)?;
        Ok(ReloadingClientVerifier {
            ca: ca.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            allowed_cns,
            allowed_hostnames,
            provider,
            state: Mutex::new(Loaded {
                stamp: st,
                value,
                failed: None,
            }),
        })
    }

    fn paths_of<'a>(ca: &'a Path, crl: Option<&'a Path>) -> Vec<&'a Path> {
        std::iter::once(ca).chain(crl).collect()
    }

    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let paths = Self::paths_of(&self.ca, self.crl.as_deref());
        current(&self.state, &paths, "trusted CA and CRL", || {
            build_client_verifier(&self.ca, self.crl.as_deref(), &self.provider)
                .map_err(|e| e.to_string())
        })
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to follow the reloaded CA; clients send their certificate
        // without them (Go, OpenSSL and rustls clients do).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner()
            .verify_client_cert(end_entity, intermediates, now)?;
        crate::identity::check_allowed(end_entity, &self.allowed_cns, &self.allowed_hostnames)
            .map_err(|why| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(NotAllowed(why))),
                ))
            })?;
        Ok(verified)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate refused by the allowed CN or host name lists.
#[derive(Debug)]
pub struct NotAllowed(pub String);

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAllowed {}

/// Verifies a server's certificate (a peer this member dials) against a CA bundle re-read
/// when it changes.
pub struct ReloadingServerVerifier {
    ca: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded<Arc<WebPkiServerVerifier>>>,
}

impl fmt::Debug for ReloadingServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReloadingServerVerifier({})", self.ca.display())
    }
}

fn build_server_verifier(
    ca: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = load_roots(ca)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Ca {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })
}

impl ReloadingServerVerifier {
    pub fn new(ca: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let st = stamp(&[ca]);
        let value = build_server_verifier(ca, &provider)?;
        Ok(ReloadingServerVerifier {
            ca: ca.to_path_buf(),
            provider,
            state: Mutex::new(Loaded {
                stamp: st,
                value,
                failed: None,
            }),
        })
    }

    fn inner(&self) -> Arc<WebPkiServerVerifier> {
        current(&self.state, &[&self.ca], "trusted CA", || {
            build_server_verifier(&self.ca, &self.provider).map_err(|e| e.to_string())
        })
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
