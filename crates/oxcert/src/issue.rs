//! Issuing certificates as cfssl 1.2 does: a fresh key and CSR per request, random
//! 20-byte serials, validity starting at the current minute less five (cfssl's backdate
//! against clock skew), SHA-1 subject key identifiers, the CA's key identifier as
//! authority key identifier, and `CA:FALSE` on leaves.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::config::Profile;
use crate::keys::PrivateKey;
use crate::log::Log;
use crate::pem;
use crate::request::{subject_alt_names, CertRequest};

/// cfssl's CA lifetime when the request has no `ca.expiry`: five years.
pub const CA_DEFAULT_EXPIRY: Duration = Duration::from_secs(43800 * 3600);

/// cfssl backdates every certificate by five minutes to tolerate clock skew.
const BACKDATE_SECS: i64 = 5 * 60;

/// What `cfssl gencert` prints: the certificate, its CSR, and the key when one was made.
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub csr_pem: String,
    pub key_pem: Option<String>,
}

impl Issued {
    /// cfssl's JSON: `{"cert":…,"csr":…,"key":…}` with keys sorted, one line.
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        map.insert("cert".into(), self.cert_pem.clone().into());
        map.insert("csr".into(), self.csr_pem.clone().into());
        if let Some(key) = &self.key_pem {
            map.insert("key".into(), key.clone().into());
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// A CA certificate with the key that signs for it.
pub struct Authority {
    cert_der: Vec<u8>,
    key: PrivateKey,
    subject_raw: Vec<u8>,
    not_after: OffsetDateTime,
}

impl Authority {
    /// Loads `-ca` and `-ca-key`; `cert_source`/`key_source` name them in errors.
    pub fn load(cert_pem: &str, cert_source: &str, key: PrivateKey) -> Result<Authority> {
        let certs = pem::certificates(cert_pem).with_context(|| cert_source.to_string())?;
        let cert_der = certs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{cert_source} contains no CERTIFICATE block"))?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| anyhow!("{cert_source} is not a valid certificate: {e}"))?;
        if !cert.is_ca() {
            bail!("{cert_source} is not a CA certificate (basicConstraints CA:FALSE): pass the CA's certificate, e.g. ca.pem, to -ca");
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!("the CA key does not match {cert_source}: it belongs to another certificate; pass the key made with this CA");
        }
        Ok(Authority {
            subject_raw: cert.subject().as_raw().to_vec(),
            not_after: cert.validity().not_after.to_datetime(),
            cert_der: cert_der.to_vec(),
            key,
        })
    }

    pub fn cert_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.cert_der)
    }
}

/// A new key and CSR for `req`, with subject and SANs worked out once.
struct Prepared {
    key: PrivateKey,
    key_generated: bool,
    params: CertificateParams,
    csr_pem: String,
}

fn prepare(
    req: &CertRequest,
    hosts: &[String],
    is_ca: IsCa,
    existing: Option<PrivateKey>,
    log: &Log,
) -> Result<Prepared> {
    log.info("generate received request");
    log.info("received CSR");
    let (dn, warnings): (DistinguishedName, Vec<String>) = req.distinguished_name()?;
    for warning in warnings {
        log.warning(&warning);
    }
    let sans: Vec<SanType> = subject_alt_names(hosts)?;
    let (key, key_generated) = match existing {
        Some(key) => (key, false),
        None => {
            log.info(&format!("generating key: {}", req.key.name()));
            (PrivateKey::generate(req.key)?, true)
        }
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = match is_ca {
        IsCa::Ca(c) => IsCa::Ca(c),
        // The CSR of a leaf carries no basic constraints, as cfssl's does not.
        IsCa::ExplicitNoCa | IsCa::NoCa => IsCa::NoCa,
    };
    let csr_pem = params
        .serialize_request(&key.key_pair)
        .and_then(|csr| csr.pem())
        .map_err(|e| anyhow!("encoding CSR: {e}"))?;
    log.info("encoded CSR");
    Ok(Prepared {
        key,
        key_generated,
        params,
        csr_pem,
    })
}

/// `cfssl genkey`: a new key and its CSR, PEM-encoded.
pub fn key_and_csr(req: &CertRequest, hosts: &[String], log: &Log) -> Result<(String, String)> {
    let prepared = prepare(req, hosts, IsCa::NoCa, None, log)?;
    Ok((prepared.key.pem().to_string(), prepared.csr_pem))
}

/// `cfssl gencert -initca`: a self-signed CA. With `existing`, re-signs for that key.
pub fn init_ca(req: &CertRequest, existing: Option<PrivateKey>, log: &Log) -> Result<Issued> {
    let constraints = match req.ca.path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    };
    let prepared = prepare(req, &req.hosts, IsCa::Ca(constraints), existing, log)?;
    let mut params = prepared.params.clone();
    let serial = set_common(
        &mut params,
        &prepared.key,
        req.ca.expiry.unwrap_or(CA_DEFAULT_EXPIRY),
    )?;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&prepared.key.key_pair)
        .map_err(|e| anyhow!("signing CA certificate: {e}"))?;
    log.info(&format!("signed certificate with serial number {serial}"));
    Ok(Issued {
        cert_pem: cert.pem(),
        csr_pem: prepared.csr_pem,
        key_pem: prepared
            .key_generated
            .then(|| prepared.key.pem().to_string()),
    })
}

/// `cfssl gencert -ca -ca-key -config -profile`: a certificate signed by `ca`, for a new
/// key, or for `existing` (re-signing keeps the key, so running members keep working).
pub fn sign(
    req: &CertRequest,
    hosts: &[String],
    ca: &Authority,
    profile: &Profile,
    existing: Option<PrivateKey>,
    log: &Log,
) -> Result<Issued> {
    let is_ca = profile.ca.map_or(IsCa::ExplicitNoCa, IsCa::Ca);
    let prepared = prepare(req, hosts, is_ca, existing, log)?;
    let mut params = prepared.params.clone();
    params.is_ca = is_ca;
    let serial = set_common(&mut params, &prepared.key, profile.expiry)?;
    params.key_usages = profile.key_usages.clone();
    params.extended_key_usages = profile.extended_key_usages.clone();
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(ca.cert_der.as_slice()),
        &ca.key.key_pair,
    )
    .map_err(|e| {
        anyhow!(
            "reading the CA certificate's subject (oxcert needs one value per name attribute): {e}"
        )
    })?;
    let cert = params
        .signed_by(&prepared.key.key_pair, &issuer)
        .map_err(|e| anyhow!("signing certificate: {e}"))?;
    // Go chains by comparing issuer and subject bytes: never hand out a cert that cannot chain.
    let (_, parsed) = X509Certificate::from_der(cert.der())
        .map_err(|e| anyhow!("re-reading the new certificate: {e}"))?;
    if parsed.issuer().as_raw() != ca.subject_raw.as_slice() {
        bail!("the CA's subject name could not be reproduced byte for byte; certificates signed by it would not chain");
    }
    log.info(&format!("signed certificate with serial number {serial}"));
    if params.subject_alt_names.is_empty() {
        log.warning(LACKS_HOSTS);
    }
    if params.not_after > ca.not_after {
        log.warning(&format!(
            "the certificate is valid until {} but its CA expires on {}; it stops working then",
            params.not_after.date(),
            ca.not_after.date()
        ));
    }
    Ok(Issued {
        cert_pem: cert.pem(),
        csr_pem: prepared.csr_pem,
        key_pem: Some(prepared.key.pem().to_string()),
    })
}

const LACKS_HOSTS: &str = "This certificate lacks a \"hosts\" field. This makes it unsuitable for\nwebsites. For more information see the Baseline Requirements for the Issuance and Management\nof Publicly-Trusted Certificates, v.1.1.6, from the CA/Browser Forum (https://cabforum.org);\nspecifically, section 10.2.3 (\"Information Requirements\").";

/// Serial, validity and subject key identifier; returns the serial in decimal, as cfssl logs it.
fn set_common(
    params: &mut CertificateParams,
    key: &PrivateKey,
    expiry: Duration,
) -> Result<String> {
    let mut serial = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    // Positive, and exactly 20 bytes long in DER (RFC 5280's limit).
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let (not_before, not_after) = validity(expiry)?;
    params.not_before = not_before;
    params.not_after = not_after;
    let ski = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        key.public_key_raw(),
    );
    params.key_identifier_method = KeyIdMethod::PreSpecified(ski.as_ref().to_vec());
    Ok(decimal(&serial))
}

fn validity(expiry: Duration) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if expiry.is_zero() {
        bail!("expiry must be longer than zero");
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let rounded = (now + 30).div_euclid(60) * 60;
    let not_before = OffsetDateTime::from_unix_timestamp(rounded - BACKDATE_SECS)?;
    let not_after = time::Duration::try_from(expiry)
        .ok()
        .and_then(|d| not_before.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| anyhow!("expiry {expiry:?} reaches past the year 9999"))?;
    Ok((not_before, not_after))
}

/// A big-endian unsigned integer in decimal.
fn decimal(bytes: &[u8]) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let current = (remainder << 8) | u32::from(*byte);
            *byte = (current / 10) as u8;
            remainder = current % 10;
        }
        digits.push(b'0' + remainder as u8);
    }
    if digits.is_empty() {
        return "0".to_string();
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_serials() {
        assert_eq!(decimal(&[0]), "0");
        assert_eq!(decimal(&[1, 0]), "256");
        assert_eq!(decimal(&[0xff; 8]), u64::MAX.to_string());
    }

    #[test]
    fn backdated_validity() {
        let (not_before, not_after) = validity(Duration::from_secs(3600)).expect("validity");
        assert_eq!(not_before.second(), 0);
        assert_eq!(not_after - not_before, time::Duration::hours(1));
        assert!(not_before < OffsetDateTime::now_utc());
        assert!(validity(Duration::from_secs(10_000 * 365 * 86400)).is_err());
    }
}
