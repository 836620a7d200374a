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

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with CN `cn` for `hosts`.
    fn cert(cn: &str, hosts: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn allowed_cn_and_hostname() {
        let c = cert("m1", &["m1.example", "127.0.0.1"]);
        assert_eq!(cert_common_name(&c).as_deref(), Some("m1"));
        assert!(cert_covers_hostname(&c, "m1.example"));
        assert!(cert_covers_hostname(&c, "127.0.0.1"));
        assert!(!cert_covers_hostname(&c, "m2.example"));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_allowed(&c, &[], &[]).is_ok());
        assert!(check_allowed(&c, &s(&["m1", "m2"]), &[]).is_ok());
        let e = check_allowed(&c, &s(&["m2"]), &[]).unwrap_err();
        assert!(e.contains("\"m1\"") && e.contains("not allowed"), "{e}");
        assert!(check_allowed(&c, &[], &s(&["m1.example"])).is_ok());
        assert!(check_allowed(&c, &[], &s(&["other.example"])).is_err());
        // Both lists: both must hold.
        assert!(check_allowed(&c, &s(&["m1"]), &s(&["other.example"])).is_err());
    }
}
