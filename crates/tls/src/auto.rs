//! `--auto-tls` and `--peer-auto-tls`: a self-signed ECDSA P-256 certificate for the
//! listener's hosts, written once to `cert.pem` and `key.pem` in the given directory and
//! reused on later starts (as etcd's `transport.SelfCert`).

use std::path::Path;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a self-signed certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AutoTlsError {
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Makes `dir/cert.pem` and `dir/key.pem` for `hosts` (IPs or names) valid for
/// `validity_years`, unless both exist already. Returns true when it wrote them.
pub fn ensure_self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<bool, AutoTlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "etcd");
    params.subject_alt_names = hosts
        .iter()
        .map(
            |h| match h.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h.clone().try_into().map(SanType::DnsName),
            },
        )
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years.max(1)));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let write = |path: &Path, text: String| {
        write_private(path, text.as_bytes()).map_err(|source| AutoTlsError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| AutoTlsError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write(&key_path, key.serialize_pem())?;
    write(&cert_path, cert.pem())?;
    Ok(true)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("oxcd-autotls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        assert!(ensure_self_signed(&dir, &hosts, 2).unwrap());
        assert!(!ensure_self_signed(&dir, &hosts, 2).unwrap(), "reused");
        let files = crate::ServerTlsFiles {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            ..Default::default()
        };
        crate::server_config(&files).unwrap();
        let certs = crate::load_certs(&files.cert_file).unwrap();
        assert!(crate::cert_covers_hostname(&certs[0], "127.0.0.1"));
        assert!(crate::cert_covers_hostname(&certs[0], "localhost"));
        assert!(!crate::cert_covers_hostname(&certs[0], "10.0.0.1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
