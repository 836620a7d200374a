//! The TLS flags of both sides (client listeners, peer listeners and dialing): files, CRLs,
//! allowed CNs and host names, cipher suites, versions, auto TLS. Files are loaded once here
//! so that a bad one stops the start with a line naming its flag.

use std::path::PathBuf;

use super::{err, AutoTls, ConfigError, RawFlags, Url};

/// The TLS part of a [`super::Config`].
pub(super) struct Tls {
    pub client: Option<oxcd_tls::ServerTlsFiles>,
    pub peer: Option<oxcd_tls::ServerTlsFiles>,
    pub peer_client_cert: Option<(PathBuf, PathBuf)>,
    pub auto: AutoTls,
}

/// The flag names of one side.
struct Side {
    urls: &'static str,
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
    auth: &'static str,
    crl: &'static str,
    auto: &'static str,
    allowed_cn: Option<&'static str>,
    allowed_hostname: &'static str,
    /// Where auto TLS writes this side's certificate, under the data dir (as etcd).
    fixtures: &'static str,
}

const CLIENT: Side = Side {
    urls: "listen-client-urls",
    cert: "cert-file",
    key: "key-file",
    ca: "trusted-ca-file",
    auth: "client-cert-auth",
    crl: "client-crl-file",
    auto: "auto-tls",
    allowed_cn: None,
    allowed_hostname: "client-cert-allowed-hostname",
    fixtures: "fixtures/client",
};

const PEER: Side = Side {
    urls: "listen-peer-urls",
    cert: "peer-cert-file",
    key: "peer-key-file",
    ca: "peer-trusted-ca-file",
    auth: "peer-client-cert-auth",
    crl: "peer-crl-file",
    auto: "peer-auto-tls",
    allowed_cn: Some("peer-cert-allowed-cn"),
    allowed_hostname: "peer-cert-allowed-hostname",
    fixtures: "fixtures/peer",
};

impl RawFlags {
    pub(super) fn tls(
        &self,
        client_urls: &[Url],
        peer_urls: &[Url],
        warnings: &mut Vec<String>,
    ) -> Result<Tls, ConfigError> {
        let policy = self.tls_policy(warnings)?;
        let validity = self.uint("self-signed-cert-validity")?;
        let auto = AutoTls {
            client: self.bool("auto-tls")?,
            peer: self.bool("peer-auto-tls")?,
            validity_years: u32::try_from(validity.max(1)).unwrap_or(u32::MAX),
        };
        let client = self.side(&CLIENT, client_urls, &policy, warnings)?;
        let peer = self.side(&PEER, peer_urls, &policy, warnings)?;
        let peer_client_cert = match (
            self.path("peer-client-cert-file"),
            self.path("peer-client-key-file"),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return err(
                    "--peer-client-cert-file and --peer-client-key-file must be given together",
                )
            }
        };
        Ok(Tls {
            client,
            peer,
            peer_client_cert,
            auto,
        })
    }

    /// `--cipher-suites`, `--tls-min-version`, `--tls-max-version`.
    fn tls_policy(&self, warnings: &mut Vec<String>) -> Result<oxcd_tls::TlsPolicy, ConfigError> {
        let version = |flag: &str, empty: oxcd_tls::TlsVersion| {
            let v = self.str(flag);
            if v.is_empty() {
                return Ok(empty);
            }
            oxcd_tls::TlsVersion::parse(&v).ok_or_else(|| {
                ConfigError(format!(
                    "invalid value {v:?} for --{flag}: use TLS1.2 or TLS1.3 (oxcd does not speak TLS 1.0 or 1.1)"
                ))
            })
        };
        let min = version("tls-min-version", oxcd_tls::TlsVersion::Tls12)?;
        let max = version("tls-max-version", oxcd_tls::TlsVersion::Tls13)?;
        if min > max {
            return err(format!(
                "--tls-min-version={} is greater than --tls-max-version={}",
                min.name(),
                max.name()
            ));
        }
        let names = self.list("cipher-suites");
        if !names.is_empty() && min == oxcd_tls::TlsVersion::Tls13 {
            return err("--cipher-suites cannot be configured when only TLS1.3 is enabled (TLS 1.3 suites are fixed)");
        }
        let mut cipher_suites = Vec::new();
        for name in &names {
            match oxcd_tls::cipher_suite(name) {
                Ok(s) => cipher_suites.push(s),
                Err(oxcd_tls::CipherError::Unknown) => {
                    return err(format!("--cipher-suites: unexpected TLS cipher suite {name:?}"))
                }
                Err(oxcd_tls::CipherError::Unsupported) => warnings.push(format!(
                    "--cipher-suites: {name} is not offered by oxcd's TLS library (rustls offers only AEAD suites with forward secrecy); it is left out"
                )),
            }
        }
        if !names.is_empty() && cipher_suites.is_empty() {
            return err(format!(
                "--cipher-suites: none of {} is offered by oxcd's TLS library; use ECDHE suites with AES-GCM or ChaCha20-Poly1305",
                names.join(",")
            ));
        }
        Ok(oxcd_tls::TlsPolicy {
            cipher_suites,
            min_version: min,
            max_version: max,
        })
    }

    /// TLS files for one listener group; checks they exist and load.
    fn side(
        &self,
        side: &Side,
        urls: &[Url],
        policy: &oxcd_tls::TlsPolicy,
        warnings: &mut Vec<String>,
    ) -> Result<Option<oxcd_tls::ServerTlsFiles>, ConfigError> {
        let https = urls.iter().any(|u| u.tls);
        let trusted = self.path(side.ca);
        let client_auth = self.bool(side.auth)?;
        let auto = self.bool(side.auto)?;
        if client_auth && trusted.is_none() && !auto {
            return err(format!(
                "--{} is required when --{} is set",
                side.ca, side.auth
            ));
        }
        if !https {
            return Ok(None);
        }
        let (cert_file, key_file) = match (self.path(side.cert), self.path(side.key)) {
            (Some(c), Some(k)) => (c, k),
            (None, None) if auto => {
                if client_auth || trusted.is_some() {
                    warnings.push(format!(
                        "--{}: self-signed certificates cannot prove a client's identity; --{} and --{} are ignored",
                        side.auto, side.auth, side.ca
                    ));
                }
                let dir = self
                    .path("data-dir")
                    .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.str("name"))))
                    .join(side.fixtures);
                return Ok(Some(oxcd_tls::ServerTlsFiles {
                    cert_file: dir.join("cert.pem"),
                    key_file: dir.join("key.pem"),
                    policy: policy.clone(),
                    ..Default::default()
                }));
            }
            _ => {
                return err(format!(
                    "--{} has an https URL but --{} and --{} are not both set (or use --{})",
                    side.urls, side.cert, side.key, side.auto
                ))
            }
        };
        let files = oxcd_tls::ServerTlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: trusted,
            crl_file: self.path(side.crl),
            allowed_cns: side.allowed_cn.map(|f| self.list(f)).unwrap_or_default(),
            allowed_hostnames: self.list(side.allowed_hostname),
            policy: policy.clone(),
        };
        oxcd_tls::server_config(&files).map_err(|e| {
            // Name the one flag whose file is at fault.
            let flag = match &e {
                oxcd_tls::TlsError::Cert { .. } => format!("--{}", side.cert),
                oxcd_tls::TlsError::Key { .. } => format!("--{}", side.key),
                oxcd_tls::TlsError::Ca { .. } => format!("--{}", side.ca),
                oxcd_tls::TlsError::Crl { .. } => format!("--{}", side.crl),
                oxcd_tls::TlsError::Mismatch { .. } => format!("--{}/--{}", side.cert, side.key),
            };
            ConfigError(format!("{flag}: {e}"))
        })?;
        Ok(Some(files))
    }
}
