//! What the doctor needs to know about a certificate, read once with x509-parser:
//! names, validity, usages, and whether another certificate signed it. Host matching
//! follows Go's crypto/x509 (what etcd does): IPs match IP SANs only, DNS names match
//! DNS SANs case-insensitively with a one-label leftmost wildcard, and the CN is ignored.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::output::read_file;
use crate::pem;

#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub subject: String,
    pub subject_raw: Vec<u8>,
    pub issuer: String,
    pub issuer_raw: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// None when the certificate has no extended key usage extension (any use allowed).
    pub extended_key_usage: Option<Eku>,
    pub public_key_raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Eku {
    pub any: bool,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<CertInfo> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| anyhow!("not a valid certificate: {e}"))?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let extended_key_usage = match cert.extended_key_usage() {
            Ok(Some(eku)) => Some(Eku {
                any: eku.value.any,
                server_auth: eku.value.server_auth,
                client_auth: eku.value.client_auth,
            }),
            _ => None,
        };
        Ok(CertInfo {
            der: der.to_vec(),
            subject: cert.subject().to_string(),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().to_string(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            is_ca: cert.is_ca(),
            dns_names,
            ip_addresses,
            extended_key_usage,
            public_key_raw: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// Every CERTIFICATE in a PEM file, in order.
    pub fn load_all(path: &Path) -> Result<Vec<CertInfo>> {
        let text = read_file(path, "certificate file")?;
        let certs: Vec<CertInfo> = pem::certificates(&text)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .iter()
            .map(|der| CertInfo::parse(der))
            .collect::<Result<_>>()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("{} contains no CERTIFICATE block", path.display());
        }
        Ok(certs)
    }

    pub fn allows_server_auth(&self) -> bool {
        self.extended_key_usage
            .is_none_or(|e| e.any || e.server_auth)
    }

    pub fn allows_client_auth(&self) -> bool {
        self.extended_key_usage
            .is_none_or(|e| e.any || e.client_auth)
    }

    pub fn is_self_signed(&self) -> bool {
        self.subject_raw == self.issuer_raw && self.signed_by(self)
    }

    /// Whether `issuer`'s key made this certificate's signature.
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, ca))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Go's VerifyHostname: does this certificate cover `host` (an IP or DNS name)?
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names
            .iter()
            .any(|pattern| dns_matches(&pattern.to_ascii_lowercase(), &host))
    }

    /// The names a client may use, as Go lists them in "valid for X, not Y".
    pub fn names(&self) -> Vec<String> {
        self.ip_addresses
            .iter()
            .map(IpAddr::to_string)
            .chain(self.dns_names.iter().cloned())
            .collect()
    }
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix);
    }
    pattern == host
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// An IP or name that means "every interface": a listener there is not a name a client uses.
pub fn is_unspecified(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// The host of `scheme://host:port/path`, brackets removed from IPv6.
pub fn url_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some((scheme.to_ascii_lowercase(), host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_wildcards() {
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(dns_matches("etcd1", "etcd1"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            url_host("https://127.0.0.1:2379"),
            Some(("https".into(), "127.0.0.1".into()))
        );
        assert_eq!(
            url_host("https://[::1]:2379"),
            Some(("https".into(), "::1".into()))
        );
        assert_eq!(
            url_host("http://etcd1"),
            Some(("http".into(), "etcd1".into()))
        );
        assert_eq!(url_host("etcd1:2379"), None);
        assert!(is_unspecified("0.0.0.0"));
        assert!(is_unspecified("[::]"));
        assert!(!is_unspecified("127.0.0.1"));
    }
}
