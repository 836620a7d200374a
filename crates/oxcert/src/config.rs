//! cfssl's signing configuration (`ca-config.json`): the default profile, the named
//! profiles, their expiry and usages, and cfssl's defaults for what is left out.
//!
//! cfssl 1.2 refuses a profile without `expiry` ("empty expiry string") or without usages
//! ("no key usage available"), and silently falls back to the default profile for an
//! unknown `-profile`. oxcert fills missing fields from `signing.default`, then from
//! cfssl's built-in default (8760h; signing, key encipherment, server auth, client auth),
//! and refuses an unknown profile, naming the known ones.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde_json::Value;

use crate::json;

/// cfssl's built-in signing profile (`config.DefaultConfig()`).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(8760 * 3600);
pub const DEFAULT_USAGES: &[&str] = &["signing", "key encipherment", "server auth", "client auth"];

/// An expiry as cfssl reads it: a Go duration (`43800h`, `1h30m`), never negative.
pub fn parse_expiry(text: &str) -> Result<Duration> {
    oxcd_gocompat::duration::parse(text)
        .map_err(|e| anyhow!("{e} (units: h, m, s, ms, us, ns; no days or years: 1 year is 8760h)"))
}

/// An expiry as cfssl configs write it: whole hours (`8760h`), else minutes, else seconds.
pub fn format_expiry(expiry: Duration) -> String {
    let secs = expiry.as_secs();
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// What a profile says about the certificates it signs, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub expiry: Duration,
    pub usages: Vec<String>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// `ca_constraint.is_ca`: the profile signs intermediate CAs.
    pub ca: Option<BasicConstraints>,
}

#[derive(Debug, Clone, Default)]
struct RawProfile {
    expiry: Option<Duration>,
    usages: Option<Vec<String>>,
    ca: Option<BasicConstraints>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    source: Option<String>,
    default: RawProfile,
    profiles: BTreeMap<String, RawProfile>,
}

impl Config {
    /// The configuration in effect without `-config`.
    pub fn builtin() -> Config {
        Config::default()
    }

    pub fn parse(text: &str, source: &str) -> Result<Config> {
        let value = json::parse(text, source)?;
        Self::from_value(&value, source)
            .with_context(|| format!("{source}: invalid signing configuration"))
    }

    fn from_value(value: &Value, source: &str) -> Result<Config> {
        let obj = json::object(value, "the configuration")?;
        let signing = json::field(obj, "signing").ok_or_else(|| {
            anyhow!("it has no \"signing\" object (see oxcert print-defaults config)")
        })?;
        let signing = json::object(signing, "signing")?;
        let default = match json::field(signing, "default") {
            Some(v) => parse_profile(v, "signing.default")?,
            None => RawProfile::default(),
        };
        let mut profiles = BTreeMap::new();
        if let Some(v) = json::field(signing, "profiles") {
            for (name, profile) in json::object(v, "signing.profiles")? {
                let path = format!("signing.profiles.{name}");
                profiles.insert(name.clone(), parse_profile(profile, &path)?);
            }
        }
        Ok(Config {
            source: Some(source.to_string()),
            default,
            profiles,
        })
    }

    pub fn profile_names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    /// The named profile (`""` is the default one), with defaults filled in.
    pub fn profile(&self, name: &str) -> Result<Profile> {
        let raw = if name.is_empty() {
            &self.default
        } else {
            self.lookup(name)?
        };
        let expiry = raw.expiry.or(self.default.expiry).unwrap_or(DEFAULT_EXPIRY);
        let usages = raw
            .usages
            .clone()
            .or_else(|| self.default.usages.clone())
            .unwrap_or_else(|| DEFAULT_USAGES.iter().map(|u| u.to_string()).collect());
        let (key_usages, extended_key_usages) = parse_usages(&usages)?;
        Ok(Profile {
            expiry,
            usages,
            key_usages,
            extended_key_usages,
            ca: raw.ca,
        })
    }

    fn lookup(&self, name: &str) -> Result<&RawProfile> {
        if let Some(profile) = self.profiles.get(name) {
            return Ok(profile);
        }
        let Some(source) = &self.source else {
            bail!("unknown profile {name:?}: no signing profiles are defined without -config (see oxcert print-defaults config)");
        };
        let known = self.profile_names();
        if known.is_empty() {
            bail!("unknown profile {name:?}: {source} defines no profiles under signing.profiles");
        }
        bail!(
            "unknown profile {name:?} in {source} (known profiles: {})",
            known.join(", ")
        )
    }
}

fn parse_profile(value: &Value, path: &str) -> Result<RawProfile> {
    let obj = json::object(value, path)?;
    let expiry = json::string(obj, "expiry", path)?
        .map(|e| parse_expiry(&e).with_context(|| format!("{path}.expiry")))
        .transpose()?;
    let usages = json::strings(obj, "usages", path)?;
    if let Some(usages) = &usages {
        parse_usages(usages).with_context(|| format!("{path}.usages"))?;
    }
    let ca = match json::field(obj, "ca_constraint") {
        None => None,
        Some(v) => {
            let path = format!("{path}.ca_constraint");
            let ca = json::object(v, &path)?;
            let is_ca = json::boolean(ca, "is_ca", &path)?.unwrap_or(false);
            let max = json::uint(ca, "max_path_len", &path)?.unwrap_or(0);
            let max_zero = json::boolean(ca, "max_path_len_zero", &path)?.unwrap_or(false);
            match (is_ca, max, max_zero) {
                (false, _, _) => None,
                (true, 0, false) => Some(BasicConstraints::Unconstrained),
                (true, n, _) => Some(BasicConstraints::Constrained(
                    u8::try_from(n).map_err(|_| anyhow!("{path}.max_path_len {n} is too large"))?,
                )),
            }
        }
    };
    Ok(RawProfile { expiry, usages, ca })
}

/// cfssl's usage names, split into key usages and extended key usages.
pub fn parse_usages(
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>)> {
    let mut key_usages = Vec::new();
    let mut extended = Vec::new();
    for usage in usages {
        match usage_by_name(&usage.to_ascii_lowercase()) {
            Some(Usage::Key(ku)) if !key_usages.contains(&ku) => key_usages.push(ku),
            Some(Usage::Extended(eku)) if !extended.contains(&eku) => extended.push(eku),
            Some(_) => {}
            None => bail!(
                "unknown usage {usage:?} (known: {})",
                USAGE_NAMES.join(", ")
            ),
        }
    }
    Ok((key_usages, extended))
}

enum Usage {
    Key(KeyUsagePurpose),
    Extended(ExtendedKeyUsagePurpose),
}

const USAGE_NAMES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn usage_by_name(name: &str) -> Option<Usage> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Some(match name {
        "signing" | "digital signature" => Usage::Key(K::DigitalSignature),
        "content commitment" => Usage::Key(K::ContentCommitment),
        "key encipherment" => Usage::Key(K::KeyEncipherment),
        "key agreement" => Usage::Key(K::KeyAgreement),
        "data encipherment" => Usage::Key(K::DataEncipherment),
        "cert sign" => Usage::Key(K::KeyCertSign),
        "crl sign" => Usage::Key(K::CrlSign),
        "encipher only" => Usage::Key(K::EncipherOnly),
        "decipher only" => Usage::Key(K::DecipherOnly),
        "any" => Usage::Extended(E::Any),
        "server auth" => Usage::Extended(E::ServerAuth),
        "client auth" => Usage::Extended(E::ClientAuth),
        "code signing" => Usage::Extended(E::CodeSigning),
        "email protection" | "s/mime" => Usage::Extended(E::EmailProtection),
        "ipsec end system" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "timestamping" => Usage::Extended(E::TimeStamping),
        "ocsp signing" => Usage::Extended(E::OcspSigning),
        "microsoft sgc" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => Usage::Extended(E::Other(vec![2, 16, 840, 1, 113730, 4, 1])),
        _ => return None,
    })
}

/// `cfssl print-defaults csr`, byte for byte.
pub const DEFAULT_CSR_JSON: &str = "{\n    \"CN\": \"example.net\",\n    \"hosts\": [\n        \"example.net\",\n        \"www.example.net\"\n    ],\n    \"key\": {\n        \"algo\": \"ecdsa\",\n        \"size\": 256\n    },\n    \"names\": [\n        {\n            \"C\": \"US\",\n            \"ST\": \"CA\",\n            \"L\": \"San Francisco\"\n        }\n    ]\n}\n\n";

/// `cfssl print-defaults config`, byte for byte.
pub const DEFAULT_CONFIG_JSON: &str = "{\n    \"signing\": {\n        \"default\": {\n            \"expiry\": \"168h\"\n        },\n        \"profiles\": {\n            \"www\": {\n                \"expiry\": \"8760h\",\n                \"usages\": [\n                    \"signing\",\n                    \"key encipherment\",\n                    \"server auth\"\n                ]\n            },\n            \"client\": {\n                \"expiry\": \"8760h\",\n                \"usages\": [\n                    \"signing\",\n                    \"key encipherment\",\n                    \"client auth\"\n                ]\n            }\n        }\n    }\n}\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    const TUTORIAL: &str = r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{
        "server":{"expiry":"43800h","usages":["signing","key encipherment","server auth"]},
        "peer":{"usages":["signing","key encipherment","server auth","client auth"]}}}}"#;

    #[test]
    fn profiles_and_defaults() {
        let config = Config::parse(TUTORIAL, "ca-config.json").expect("parse");
        let server = config.profile("server").expect("server");
        assert_eq!(
            server.extended_key_usages,
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        );
        assert_eq!(server.key_usages.len(), 2);
        let peer = config.profile("peer").expect("peer");
        assert_eq!(peer.expiry, Duration::from_secs(43800 * 3600));
        assert_eq!(peer.extended_key_usages.len(), 2);
        let default = config.profile("").expect("default");
        assert_eq!(default.usages.len(), 4);
        let err = config.profile("client").unwrap_err().to_string();
        assert!(err.contains("known profiles: peer, server"), "{err}");
        assert_eq!(
            Config::builtin().profile("").expect("builtin").expiry,
            DEFAULT_EXPIRY
        );
    }

    #[test]
    fn bad_configs() {
        let err =
            Config::parse(r#"{"signing":{"default":{"expiry":"1y"}}}"#, "c.json").unwrap_err();
        assert!(format!("{err:#}").contains("unknown unit"), "{err:#}");
        let err = Config::parse(
            r#"{"signing":{"default":{"usages":["server auht"]}}}"#,
            "c.json",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown usage \"server auht\""),
            "{err:#}"
        );
        assert!(Config::parse(DEFAULT_CONFIG_JSON, "defaults").is_ok());
    }

    #[test]
    fn expiries() {
        assert_eq!(
            parse_expiry("1h30m").expect("go form"),
            Duration::from_secs(5400)
        );
        for bad in ["-1h", "10", "1y", "100000000h"] {
            let err = parse_expiry(bad).expect_err(bad).to_string();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains("8760h"),
                "{err}"
            );
        }
        assert_eq!(format_expiry(Duration::from_secs(8760 * 3600)), "8760h");
        assert_eq!(format_expiry(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format_expiry(Duration::from_secs(90)), "90s");
    }
}
