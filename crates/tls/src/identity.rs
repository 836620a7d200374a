//! Who a certificate names: its subject's common name (etcd's `--peer-cert-allowed-cn`, and
//! the user of a client that authenticates with its certificate) and the host names its SANs
//! cover (`--peer-cert-allowed-hostname`, `--client-cert-allowed-hostname`).

use rustls_pki_types::{CertificateDer, ServerName};

/// The subject's common name, if the certificate has one.
pub fn cert_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

/// True when the certificate's SANs cover `host` (a DNS name or an IP), as Go's
/// `x509.Certificate.VerifyHostname`.
pub fn cert_covers_hostname(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(end) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Some(name) = crate::server_name(host) else {
        return false;
    };
    let name: ServerName<'_> = name;
    end.verify_is_valid_for_subject_name(&name).is_ok()
}

/// etcd's allowed-CN and allowed-hostname rules for a verified client certificate: with a
/// CN list, the CN must be in it; with a host name list, the certificate must cover one.
pub(crate) fn check_allowed(
    cert: &CertificateDer<'_>,
    allowed_cns: &[String],
    allowed_hostnames: &[String],
) -> Result<(), String> {
    if !allowed_cns.is_empty() {
        let cn = cert_common_name(cert).unwrap_or_default();
        if !allowed_cns.contains(&cn) {
            return Err(format!(
                "client certificate CN {cn:?} is not allowed (allowed: {})",
                allowed_cns.join(",")
            ));
        }
    }
    if !allowed_hostnames.is_empty()
        && !allowed_hostnames
            .iter()
            .any(|h| cert_covers_hostname(cert, h))
    {
        return Err(format!(
            "client certificate is not valid for any allowed host name ({})",
            allowed_hostnames.join(",")
        ));
    }
    Ok(())
}
