//! Private keys as cfssl writes them: generation, PEM in cfssl's forms (PKCS#1
//! `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`), and loading any of those or PKCS#8 for signing.
//!
//! Signing goes through rcgen's `ring` backend, which takes keys as PKCS#8 only and cannot
//! generate RSA keys: RSA keys come from the `rsa` crate and every key is handed to ring
//! as PKCS#8. ring has no P-521, so ECDSA P-521 is refused with a clear message.

use anyhow::{anyhow, bail, Context as _, Result};
use rcgen::{KeyPair, SignatureAlgorithm};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use yasna::models::ObjectIdentifier;
use yasna::Tag;

use crate::pem;

const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];
const OID_P521: &[u64] = &[1, 3, 132, 0, 35];

pub const RSA_SIZES: &[u32] = &[2048, 3072, 4096];

const P521_UNSUPPORTED: &str = "ecdsa 521 (P-521) keys are not supported: oxcert signs with ring, \
     which has no P-521; use ecdsa 256 or 384, or rsa 2048/3072/4096";

/// The key algorithms and sizes oxcert makes, named as cfssl's CSR `key` object names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(u32),
    EcdsaP256,
    EcdsaP384,
}

impl KeySpec {
    /// cfssl's default key when a CSR has no `key` object.
    pub const DEFAULT: KeySpec = KeySpec::EcdsaP256;

    /// From a CSR's `key.algo` and `key.size`; a missing size takes the algorithm's default.
    pub fn from_request(algo: &str, size: Option<u32>) -> Result<KeySpec> {
        let supported = "supported: rsa 2048, 3072, 4096; ecdsa 256, 384";
        match (algo.to_ascii_lowercase().as_str(), size) {
            ("rsa", None) => Ok(KeySpec::Rsa(2048)),
            ("rsa", Some(bits)) if RSA_SIZES.contains(&bits) => Ok(KeySpec::Rsa(bits)),
            ("rsa", Some(bits)) if bits < 2048 => {
                bail!("unsupported key size: rsa {bits} is too weak ({supported})")
            }
            ("rsa", Some(bits)) => bail!("unsupported key size: rsa {bits} ({supported})"),
            ("ecdsa", None | Some(256)) => Ok(KeySpec::EcdsaP256),
            ("ecdsa", Some(384)) => Ok(KeySpec::EcdsaP384),
            ("ecdsa", Some(521)) => bail!("{P521_UNSUPPORTED}"),
            ("ecdsa", Some(bits)) => bail!("unsupported key size: ecdsa {bits} ({supported})"),
            ("", _) => bail!("key.algo is empty: use \"rsa\" or \"ecdsa\""),
            (other, _) => bail!("unsupported key algorithm {other:?}: use \"rsa\" or \"ecdsa\""),
        }
    }

    /// `rsa-2048`, `ecdsa-256`: the form cfssl logs ("generating key: rsa-2048").
    pub fn name(self) -> String {
        match self {
            KeySpec::Rsa(bits) => format!("rsa-{bits}"),
            KeySpec::EcdsaP256 => "ecdsa-256".to_string(),
            KeySpec::EcdsaP384 => "ecdsa-384".to_string(),
        }
    }

    /// The signature algorithm cfssl (Go's crypto/x509) pairs with this key when it signs.
    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeySpec::Rsa(bits) if bits >= 4096 => &rcgen::PKCS_RSA_SHA512,
            KeySpec::Rsa(bits) if bits >= 3072 => &rcgen::PKCS_RSA_SHA384,
            KeySpec::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
            KeySpec::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeySpec::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// A private key ready to sign, with its PEM text in cfssl's form.
pub struct PrivateKey {
    pub spec: KeySpec,
    pub key_pair: KeyPair,
    pem: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    pub fn generate(spec: KeySpec) -> Result<PrivateKey> {
        match spec {
            KeySpec::Rsa(bits) => {
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits as usize)
                    .with_context(|| format!("generating an rsa {bits} key"))?;
                Self::from_rsa(&key)
            }
            KeySpec::EcdsaP256 | KeySpec::EcdsaP384 => {
                let key_pair = KeyPair::generate_for(spec.signature_algorithm())
                    .with_context(|| format!("generating an {} key", spec.name()))?;
                let sec1 = pkcs8_ec_to_sec1(key_pair.serialized_der())?;
                Ok(PrivateKey {
                    spec,
                    key_pair,
                    pem: pem::encode("EC PRIVATE KEY", &sec1),
                })
            }
        }
    }

    /// Loads a key from PEM: PKCS#1 RSA, SEC1 EC, or PKCS#8 (the first key block in the text).
    pub fn from_pem(text: &str) -> Result<PrivateKey> {
        let mut key = match pem::private_key(text)? {
            PrivateKeyDer::Pkcs1(der) => Self::from_rsa(
                &rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                    .map_err(|e| anyhow!("invalid RSA PRIVATE KEY: {e}"))?,
            )?,
            PrivateKeyDer::Sec1(der) => Self::from_sec1(der.secret_sec1_der())?,
            PrivateKeyDer::Pkcs8(der) => Self::from_pkcs8(der.secret_pkcs8_der())?,
            _ => bail!(
                "unsupported key type; expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY"
            ),
        };
        key.pem = text.to_string();
        Ok(key)
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The subjectPublicKey bits (RSAPublicKey DER or the EC point), as in a certificate.
    pub fn public_key_raw(&self) -> &[u8] {
        self.key_pair.public_key_raw()
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<PrivateKey> {
        let bits = u32::try_from(key.n().bits()).unwrap_or(u32::MAX);
        if bits < 2048 {
            bail!("rsa {bits} keys are too weak to sign with; use rsa 2048 or larger");
        }
        let spec = KeySpec::Rsa(bits);
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| anyhow!("encoding rsa key as PKCS#8: {e}"))?;
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|e| anyhow!("encoding rsa key as PKCS#1: {e}"))?;
        Ok(PrivateKey {
            spec,
            key_pair: key_pair_from_pkcs8(pkcs8.as_bytes(), spec)?,
            pem: pem::encode("RSA PRIVATE KEY", pkcs1.as_bytes()),
        })
    }

    fn from_sec1(der: &[u8]) -> Result<PrivateKey> {
        let sec1 = Sec1Key::parse(der)?;
        let curve = sec1
            .curve
            .clone()
            .ok_or_else(|| anyhow!("EC PRIVATE KEY names no curve"))?;
        let spec = spec_for_curve(&curve)?;
        let pkcs8 = sec1.to_pkcs8(&curve)?;
        Ok(PrivateKey {
            spec,
            key_pair: key_pair_from_pkcs8(&pkcs8, spec)?,
            pem: String::new(),
        })
    }

    fn from_pkcs8(der: &[u8]) -> Result<PrivateKey> {
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Self::from_rsa(&key);
        }
        let (curve, _) =
            pkcs8_ec_parts(der).map_err(|e| anyhow!("invalid PRIVATE KEY (PKCS#8): {e}"))?;
        let spec = spec_for_curve(&curve)?;
        Ok(PrivateKey {
            spec,
            key_pair: key_pair_from_pkcs8(der, spec)?,
            pem: String::new(),
        })
    }
}

fn key_pair_from_pkcs8(der: &[u8], spec: KeySpec) -> Result<KeyPair> {
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.to_vec()),
        spec.signature_algorithm(),
    )
    .map_err(|e| anyhow!("loading {} key for signing: {e}", spec.name()))
}

fn spec_for_curve(curve: &ObjectIdentifier) -> Result<KeySpec> {
    let components = curve.components().as_slice();
    if components == OID_P256 {
        Ok(KeySpec::EcdsaP256)
    } else if components == OID_P384 {
        Ok(KeySpec::EcdsaP384)
    } else if components == OID_P521 {
        bail!("{P521_UNSUPPORTED}")
    } else {
        bail!("unsupported elliptic curve {curve}; use P-256 or P-384")
    }
}

/// RFC 5915 ECPrivateKey: the SEC1 structure inside `EC PRIVATE KEY`.
struct Sec1Key {
    private_key: Vec<u8>,
    curve: Option<ObjectIdentifier>,
    public_key: Option<Vec<u8>>,
}

impl Sec1Key {
    fn parse(der: &[u8]) -> Result<Sec1Key> {
        yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                r.next().read_u8()?;
                let private_key = r.next().read_bytes()?;
                let curve =
                    r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
                let public_key = r.read_optional(|r| {
                    r.read_tagged(Tag::context(1), |r| r.read_bitvec_bytes().map(|(b, _)| b))
                })?;
                Ok(Sec1Key {
                    private_key,
                    curve,
                    public_key,
                })
            })
        })
        .map_err(|e| anyhow!("invalid EC PRIVATE KEY (SEC1): {e}"))
    }

    /// SEC1 with the curve named and the public key present, as Go's MarshalECPrivateKey writes.
    fn to_der(&self, curve: &ObjectIdentifier, public_key: &[u8]) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u8(1);
                w.next().write_bytes(&self.private_key);
                w.next()
                    .write_tagged(Tag::context(0), |w| w.write_oid(curve));
                w.next().write_tagged(Tag::context(1), |w| {
                    w.write_bitvec_bytes(public_key, public_key.len() * 8)
                });
            })
        })
    }

    /// PKCS#8 as ring reads it: the curve in the AlgorithmIdentifier, the public key inside.
    fn to_pkcs8(&self, curve: &ObjectIdentifier) -> Result<Vec<u8>> {
        let public_key = self.public_key.as_deref().ok_or_else(|| {
            anyhow!("EC PRIVATE KEY has no public key part; rewrite it with openssl ec -in KEY -out KEY")
        })?;
        let inner = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u8(1);
                w.next().write_bytes(&self.private_key);
                w.next().write_tagged(Tag::context(1), |w| {
                    w.write_bitvec_bytes(public_key, public_key.len() * 8)
                });
            })
        });
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u8(0);
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(OID_EC_PUBLIC_KEY));
                    w.next().write_oid(curve);
                });
                w.next().write_bytes(&inner);
            })
        }))
    }
}

/// An EC key's PKCS#8 `PrivateKeyInfo`: the curve's OID and the SEC1 key inside.
fn pkcs8_ec_parts(der: &[u8]) -> Result<(ObjectIdentifier, Vec<u8>), yasna::ASN1Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let curve = r.next().read_sequence(|r| {
                r.next().read_oid()?;
                r.next().read_oid()
            })?;
            let inner = r.next().read_bytes()?;
            r.read_optional(|r| r.read_der())?;
            r.read_optional(|r| r.read_der())?;
            Ok((curve, inner))
        })
    })
}

/// ring's generated PKCS#8 EC key, rewritten as the SEC1 `EC PRIVATE KEY` cfssl writes.
fn pkcs8_ec_to_sec1(pkcs8: &[u8]) -> Result<Vec<u8>> {
    let (curve, inner) =
        pkcs8_ec_parts(pkcs8).map_err(|e| anyhow!("reading generated PKCS#8 key: {e}"))?;
    let sec1 = Sec1Key::parse(&inner)?;
    let public_key = sec1
        .public_key
        .clone()
        .ok_or_else(|| anyhow!("generated EC key has no public key"))?;
    Ok(sec1.to_der(&curve, &public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_requests() {
        assert_eq!(
            KeySpec::from_request("rsa", Some(2048)).ok(),
            Some(KeySpec::Rsa(2048))
        );
        assert_eq!(
            KeySpec::from_request("ECDSA", None).ok(),
            Some(KeySpec::EcdsaP256)
        );
        assert!(KeySpec::from_request("rsa", Some(1024)).is_err());
        assert!(KeySpec::from_request("rsa", Some(2000)).is_err());
        let p521 = KeySpec::from_request("ecdsa", Some(521)).unwrap_err();
        assert!(p521.to_string().contains("P-521"), "{p521}");
        assert!(KeySpec::from_request("dsa", None).is_err());
    }

    #[test]
    fn ec_keys_round_trip_through_sec1() {
        for spec in [KeySpec::EcdsaP256, KeySpec::EcdsaP384] {
            let key = PrivateKey::generate(spec).expect("generate");
            assert!(key.pem().starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
            let loaded = PrivateKey::from_pem(key.pem()).expect("load");
            assert_eq!(loaded.spec, spec);
            assert_eq!(loaded.public_key_raw(), key.public_key_raw());
            let pkcs8 = pem::encode("PRIVATE KEY", key.key_pair.serialized_der());
            let loaded = PrivateKey::from_pem(&pkcs8).expect("load pkcs8");
            assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        }
    }
}
