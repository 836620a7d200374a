//! `oxcert check`, the doctor: looks at certificate files, or at a member's etcd-style start
//! flags, and reports each problem that would make a TLS handshake fail (or soon fail) as
//! one line with the fix. Errors are what would fail now; warnings are risks (a key
//! readable by others, a certificate expiring within 30 days).

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use oxcd_gocompat::timestamp::rfc3339;
use time::OffsetDateTime;

use crate::inspect::{is_unspecified, url_host, CertInfo};
use crate::keys::PrivateKey;
use crate::output::{describe, read_file};

/// How soon an expiry is worth a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// The longest chain of intermediates followed from a leaf to a trusted CA.
const CHAIN_DEPTH_MAX: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// What the finding is about: `--peer-cert-file etcd1.pem`.
    pub subject: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{severity}: {}: {}; fix: {}",
            self.subject, self.problem, self.fix
        )
    }
}

/// What a certificate is for, which decides the extended key usages it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves clients: needs server auth.
    Server,
    /// Talks to other members both ways: needs server auth and client auth.
    Peer,
    /// Authenticates to a server: needs client auth.
    Client,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Peer => "peer",
            Role::Client => "client",
        }
    }
}

/// A host the certificate must be valid for, and where that requirement comes from.
#[derive(Debug, Clone)]
pub struct RequiredHost {
    pub host: String,
    pub origin: String,
}

/// One certificate, its key and the CA the other side trusts, as named on a command line.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub role: Role,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// How the command line names each file: `--peer-cert-file`, `--cert`.
    pub cert_flag: String,
    pub key_flag: String,
    pub ca_flag: String,
    pub hosts: Vec<RequiredHost>,
    /// Set when etcd will also present this server certificate as a client: its gRPC
    /// gateway dials the member itself with `--cert-file` when `--client-cert-auth` is on.
    pub used_as_client: Option<String>,
}

/// Collects findings; `now` is the moment validity is judged at.
pub struct Doctor {
    pub now: OffsetDateTime,
    pub findings: Vec<Finding>,
    /// What was looked at, for the summary line.
    pub checked: Vec<String>,
}

impl Doctor {
    pub fn new(now: OffsetDateTime) -> Doctor {
        Doctor {
            now,
            findings: Vec::new(),
            checked: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Error, subject.into(), problem.into(), fix.into());
    }

    pub fn warning(
        &mut self,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            subject.into(),
            problem.into(),
            fix.into(),
        );
    }

    fn push(&mut self, severity: Severity, subject: String, problem: String, fix: String) {
        let finding = Finding {
            severity,
            subject,
            problem,
            fix,
        };
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }

    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }

    /// Checks one certificate with its key and CA: key match, validity, usages, chain, SANs,
    /// key file mode.
    pub fn check_files(&mut self, files: &TlsFiles) {
        let (cert_path, key_path) = match (&files.cert, &files.key) {
            (None, None) => return,
            (Some(_), None) => {
                self.error(
                    &files.cert_flag,
                    format!("{} is set but {} is not", files.cert_flag, files.key_flag),
                    format!("pass the certificate's private key with {}", files.key_flag),
                );
                (files.cert.as_deref(), None)
            }
            (None, Some(_)) => {
                self.error(
                    &files.key_flag,
                    format!("{} is set but {} is not", files.key_flag, files.cert_flag),
                    format!("pass the key's certificate with {}", files.cert_flag),
                );
                return;
            }
            (Some(c), Some(k)) => (Some(c.as_path()), Some(k.as_path())),
        };
        let Some(cert_path) = cert_path else { return };
        let subject = format!("{} {}", files.cert_flag, cert_path.display());
        self.checked.push(format!(
            "{} cert {}",
            files.role.name(),
            cert_path.display()
        ));
        let certs = match CertInfo::load_all(cert_path) {
            Ok(certs) => certs,
            Err(e) => {
                self.error(
                    &subject,
                    format!("{e:#}"),
                    "pass a readable PEM certificate file",
                );
                return;
            }
        };
        let leaf = &certs[0];
        if let Some(key_path) = key_path {
            self.check_key(files, leaf, key_path);
        }
        self.check_validity(&subject, leaf, "certificate");
        self.check_usages(&subject, leaf, files.role);
        if let Some(reason) = files
            .used_as_client
            .as_deref()
            .filter(|_| !leaf.allows_client_auth())
        {
            self.warning(
                &subject,
                format!("server certificate lacks client auth, but {reason}"),
                "reissue it with both \"server auth\" and \"client auth\" in its profile's usages",
            );
        }
        if let Some(ca_path) = &files.ca {
            self.check_chain(files, &subject, &certs, ca_path);
        }
        self.check_hosts(&subject, leaf, &files.hosts);
    }

    fn check_key(&mut self, files: &TlsFiles, leaf: &CertInfo, key_path: &Path) {
        let subject = format!("{} {}", files.key_flag, key_path.display());
        match std::fs::metadata(key_path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    let who = if mode & 0o007 != 0 {
                        "others"
                    } else {
                        "its group"
                    };
                    self.warning(
                        &subject,
                        format!("private key is readable by {who} (mode {mode:04o})"),
                        format!("chmod 600 {}", key_path.display()),
                    );
                }
            }
            Err(e) => {
                self.error(
                    &subject,
                    format!("cannot read private key: {}", describe(&e)),
                    format!("pass an existing key file with {}", files.key_flag),
                );
                return;
            }
        }
        let key =
            match read_file(key_path, "private key").and_then(|text| PrivateKey::from_pem(&text)) {
                Ok(key) => key,
                Err(e) => {
                    self.error(
                        &subject,
                        format!("{e:#}"),
                        "pass the PEM private key written with the certificate (NAME-key.pem)",
                    );
                    return;
                }
            };
        if key.public_key_raw() != leaf.public_key_raw.as_slice() {
            self.error(
                &subject,
                format!("private key does not match certificate {} (it belongs to another certificate)", files.cert.as_deref().unwrap_or(Path::new("")).display()),
                format!("pass the key made with this certificate ({} usually pairs NAME.pem with NAME-key.pem)", files.key_flag),
            );
        }
    }

    fn check_validity(&mut self, subject: &str, cert: &CertInfo, what: &str) {
        let now = self.now;
        if now < cert.not_before {
            let minutes = (cert.not_before - now).whole_minutes();
            self.error(
                subject,
                format!("{what} is not valid yet: valid from {} ({minutes} minutes from now)", rfc3339(cert.not_before)),
                "the clock here is behind the clock of the machine that issued it: sync clocks (NTP), or wait",
            );
        } else if now > cert.not_after {
            self.error(
                subject,
                format!("{what} expired on {}", rfc3339(cert.not_after)),
                "issue a new one (oxcert cluster --force, or cfssl gencert again)",
            );
        } else if cert.not_after - now < time::Duration::days(EXPIRY_WARNING_DAYS) {
            let days = (cert.not_after - now).whole_days();
            self.warning(
                subject,
                format!(
                    "{what} expires on {} (in {days} days)",
                    rfc3339(cert.not_after)
                ),
                "issue a new one before then",
            );
        }
    }

    fn check_usages(&mut self, subject: &str, cert: &CertInfo, role: Role) {
        let missing: Vec<&str> = [
            (
                role != Role::Client && !cert.allows_server_auth(),
                "server auth",
            ),
            (
                role != Role::Server && !cert.allows_client_auth(),
                "client auth",
            ),
        ]
        .into_iter()
        .filter_map(|(missing, usage)| missing.then_some(usage))
        .collect();
        if missing.is_empty() {
            return;
        }
        let why = match role {
            Role::Server => "clients reject a server certificate without server auth",
            Role::Peer => "members use the peer certificate both as server and as client, and reject it without both usages",
            Role::Client => "servers reject a client certificate without client auth",
        };
        let profile = match role {
            Role::Server => "[\"signing\", \"key encipherment\", \"server auth\"]",
            Role::Peer => "[\"signing\", \"key encipherment\", \"server auth\", \"client auth\"]",
            Role::Client => "[\"signing\", \"key encipherment\", \"client auth\"]",
        };
        self.error(
            subject,
            format!(
                "{} certificate lacks extended key usage {}: {why}",
                role.name(),
                missing.join(" and ")
            ),
            format!("reissue it with a profile whose usages are {profile}"),
        );
    }

    fn check_chain(&mut self, files: &TlsFiles, subject: &str, certs: &[CertInfo], ca_path: &Path) {
        let ca_subject = format!("{} {}", files.ca_flag, ca_path.display());
        let roots = match CertInfo::load_all(ca_path) {
            Ok(roots) => roots,
            Err(e) => {
                self.error(
                    &ca_subject,
                    format!("{e:#}"),
                    "pass the CA certificate (e.g. ca.pem) as a readable PEM file",
                );
                return;
            }
        };
        for root in &roots {
            self.check_validity(
                &ca_subject,
                root,
                &format!("CA certificate {}", root.subject),
            );
            if !root.is_ca {
                self.error(
                    &ca_subject,
                    format!("{} is not a CA certificate (basicConstraints CA:FALSE), so it cannot vouch for others", root.subject),
                    format!("pass the CA that signed the certificates (ca.pem), not a leaf certificate, to {}", files.ca_flag),
                );
            }
        }
        let mut current = &certs[0];
        for _ in 0..CHAIN_DEPTH_MAX {
            if roots.iter().any(|r| {
                r.der == current.der
                    || (r.subject_raw == current.issuer_raw && current.signed_by(r))
            }) {
                return;
            }
            let next = certs[1..]
                .iter()
                .find(|c| c.subject_raw == current.issuer_raw && current.signed_by(c));
            match next {
                Some(intermediate) => {
                    self.check_validity(
                        subject,
                        intermediate,
                        &format!("intermediate certificate {}", intermediate.subject),
                    );
                    current = intermediate;
                }
                None => break,
            }
        }
        let ca_names: Vec<&str> = roots.iter().map(|r| r.subject.as_str()).collect();
        let problem = if roots.iter().any(|r| r.subject_raw == current.issuer_raw) {
            format!(
                "certificate names issuer \"{}\", but its signature does not verify with the CA of that name in {}: a different CA with the same name (was the CA regenerated?)",
                current.issuer,
                ca_path.display()
            )
        } else if current.is_self_signed() {
            format!(
                "certificate is self-signed (\"{}\"), not signed by the CA in {}",
                current.subject,
                ca_path.display()
            )
        } else {
            format!(
                "certificate is signed by \"{}\", but {} holds only \"{}\": the other side will fail with \"unknown authority\" / \"bad certificate\"",
                current.issuer,
                ca_path.display(),
                ca_names.join("\", \"")
            )
        };
        self.error(
            subject,
            problem,
            format!(
                "reissue the certificate with the CA in {}, or pass the CA that signed it to {}",
                ca_path.display(),
                files.ca_flag
            ),
        );
    }

    fn check_hosts(&mut self, subject: &str, cert: &CertInfo, hosts: &[RequiredHost]) {
        let mut missing: Vec<&RequiredHost> = Vec::new();
        for required in hosts.iter().filter(|h| !is_unspecified(&h.host)) {
            if !cert.covers(&required.host) && !missing.iter().any(|m| m.host == required.host) {
                missing.push(required);
            }
        }
        let names = cert.names();
        let valid_for = if names.is_empty() {
            "certificate has no subject alternative names (Go ignores the CN)".to_string()
        } else {
            format!("certificate is valid for {}", names.join(", "))
        };
        for required in missing {
            let mut wanted = names.clone();
            wanted.push(required.host.clone());
            self.error(
                subject,
                format!(
                    "{valid_for}, not {} (from {})",
                    required.host, required.origin
                ),
                format!(
                    "reissue it with -hostname={} (or that address in the CSR's hosts)",
                    wanted.join(",")
                ),
            );
        }
    }
}

/// Hosts of a comma-separated URL list, tagged with the flag they came from.
pub fn hosts_of_urls(flag: &str, urls: &str) -> Vec<RequiredHost> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .filter_map(|url| {
            url_host(url).map(|(_, host)| RequiredHost {
                host,
                origin: format!("{flag} {url}"),
            })
        })
        .collect()
}
