//! PEM text as cfssl and openssl write it: `-----BEGIN LABEL-----`, base64 in 64-column
//! lines, `-----END LABEL-----`, LF line endings. Reading is rustls-pki-types' `PemObject`
//! (text between blocks is ignored, as openssl does); this module adds the writer and
//! error lines that say what is wrong with the file.

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every CERTIFICATE block in `text`, in order (other blocks are skipped).
pub fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map_err(explain))
        .collect()
}

/// The first private key in `text`: PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
/// PKCS#8 (`PRIVATE KEY`).
pub fn private_key(text: &str) -> Result<PrivateKeyDer<'static>> {
    // Encrypted keys are refused before parsing: their headers are not base64.
    let legacy_encrypted =
        |line: &str| line.starts_with("Proc-Type:") && line.contains("ENCRYPTED");
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.lines().any(legacy_encrypted)
    {
        bail!("the private key is encrypted; etcd and oxcert need it unencrypted (openssl pkey -in KEY -out KEY.plain)");
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "no private key in it (found {}); expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY",
            labels(text)
        ),
        other => explain(other),
    })
}

/// The labels of the blocks rustls-pki-types knows, for an error line.
fn labels(text: &str) -> String {
    let found: Vec<&str> = <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .filter_map(|section| section.ok())
        .map(|(kind, _)| match kind {
            SectionKind::Certificate => "CERTIFICATE",
            SectionKind::Csr => "CERTIFICATE REQUEST",
            SectionKind::PublicKey => "PUBLIC KEY",
            SectionKind::Crl => "X509 CRL",
            _ => "another block",
        })
        .collect();
    if found.is_empty() {
        return "no PEM block".to_string();
    }
    found.join(", ")
}

/// rustls-pki-types' errors print the offending bytes as a list of numbers: say it in words.
fn explain(e: pem::Error) -> anyhow::Error {
    match e {
        // The marker is the block's label.
        pem::Error::MissingSectionEnd { end_marker } => anyhow!(
            "PEM block has no -----END {}----- line",
            String::from_utf8_lossy(&end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => anyhow!(
            "bad PEM line {:?}: expected -----BEGIN LABEL-----",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(_) => anyhow!("a PEM block is not valid base64"),
        other => anyhow!("bad PEM: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..=255).collect();
        let text = encode("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let certs = certificates(&format!("junk\n{text}{text}")).expect("parse");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), der.as_slice());
        let key = private_key(&format!("{text}{}", encode("EC PRIVATE KEY", &der))).expect("key");
        assert!(matches!(key, PrivateKeyDer::Sec1(_)));
    }

    #[test]
    fn errors() {
        assert!(certificates("hello").expect("no blocks").is_empty());
        let err = certificates("-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PEM block has no -----END CERTIFICATE----- line"
        );
        let err = certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert_eq!(err.to_string(), "a PEM block is not valid base64");
        let cert = encode("CERTIFICATE", b"x");
        let err = private_key(&cert).unwrap_err().to_string();
        assert!(
            err.starts_with("no private key in it (found CERTIFICATE)"),
            "{err}"
        );
        let err = private_key("nothing").unwrap_err().to_string();
        assert!(err.contains("found no PEM block"), "{err}");
        for encrypted in [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ] {
            let err = private_key(encrypted).unwrap_err().to_string();
            assert!(err.contains("encrypted"), "{err}");
        }
    }
}
