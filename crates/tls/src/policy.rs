//! etcd's TLS policy flags: `--cipher-suites` (Go's suite names), `--tls-min-version` and
//! `--tls-max-version` (`TLS1.2`, `TLS1.3`). As in Go, the suite list restricts TLS 1.2
//! only; TLS 1.3's suites are fixed.

use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as cs;
use rustls::crypto::CryptoProvider;
use rustls::SupportedCipherSuite;

/// A TLS protocol version oxcd speaks (rustls has no 1.0 or 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// etcd's names (`TLS1.2`, `TLS1.3`).
    pub fn parse(v: &str) -> Option<TlsVersion> {
        match v {
            "TLS1.2" => Some(TlsVersion::Tls12),
            "TLS1.3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        }
    }
}

/// Cipher suites and versions shared by every listener and dialer of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPolicy {
    /// TLS 1.2 suites to offer, in order; empty: rustls's defaults.
    pub cipher_suites: Vec<SupportedCipherSuite>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            cipher_suites: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        }
    }
}

impl TlsPolicy {
    /// The crypto provider with this policy's suites (TLS 1.3 suites always kept).
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let tls13 = p
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_some())
                .copied();
            p.cipher_suites = self.cipher_suites.iter().copied().chain(tls13).collect();
        }
        Arc::new(p)
    }

    /// The protocol versions between min and max.
    pub fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.min_version <= TlsVersion::Tls12 && self.max_version >= TlsVersion::Tls12 {
            v.push(&rustls::version::TLS12);
        }
        if self.max_version >= TlsVersion::Tls13 {
            v.push(&rustls::version::TLS13);
        }
        v
    }
}

/// Why a `--cipher-suites` name was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    /// Not a suite Go knows.
    Unknown,
    /// A suite Go knows (CBC, RSA key exchange, 3DES, RC4) that rustls does not offer.
    Unsupported,
}

/// Go's names of the suites Go's `crypto/tls` knows that rustls does not offer.
const GO_ONLY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// A suite by Go's name (as `--cipher-suites` takes it).
pub fn cipher_suite(name: &str) -> Result<SupportedCipherSuite, CipherError> {
    Ok(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        n if GO_ONLY.contains(&n) => return Err(CipherError::Unsupported),
        _ => return Err(CipherError::Unknown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_between_min_and_max() {
        let p = |min, max| TlsPolicy {
            min_version: min,
            max_version: max,
            ..Default::default()
        };
        assert_eq!(p(TlsVersion::Tls12, TlsVersion::Tls13).versions().len(), 2);
        let only13 = p(TlsVersion::Tls13, TlsVersion::Tls13).versions();
        assert_eq!(only13, vec![&rustls::version::TLS13]);
        let only12 = p(TlsVersion::Tls12, TlsVersion::Tls12).versions();
        assert_eq!(only12, vec![&rustls::version::TLS12]);
    }

    #[test]
    fn suites_by_go_name() {
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").is_ok());
        assert_eq!(
            cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA").err(),
            Some(CipherError::Unsupported)
        );
        assert_eq!(cipher_suite("nope").err(), Some(CipherError::Unknown));
        let p = TlsPolicy {
            cipher_suites: vec![cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256],
            ..Default::default()
        };
        let provider = p.provider();
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .collect();
        assert_eq!(tls12.len(), 1);
        assert!(provider.cipher_suites.iter().any(|s| s.tls13().is_some()));
    }
}
