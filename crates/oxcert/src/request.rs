//! cfssl's certificate request JSON (`ca-csr.json`): subject, hosts, key and CA options,
//! and how each becomes part of a certificate.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rcgen::{DistinguishedName, DnType, DnValue, SanType};
use serde_json::Value;

use crate::config::parse_expiry;
use crate::json;
use crate::keys::KeySpec;

/// One entry of the request's `names` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Name {
    pub country: String,
    pub state: String,
    pub locality: String,
    pub organization: String,
    pub organizational_unit: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaOptions {
    pub path_len: Option<u8>,
    pub expiry: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    pub common_name: String,
    pub names: Vec<Name>,
    /// As written, `""` entries included; see [`subject_alt_names`].
    pub hosts: Vec<String>,
    pub key: KeySpec,
    pub ca: CaOptions,
    /// Things cfssl would silently accept that a reader probably did not mean.
    pub warnings: Vec<String>,
}

const KNOWN_FIELDS: &[&str] = &["CN", "names", "hosts", "key", "ca", "serialnumber"];

impl CertRequest {
    pub fn parse(text: &str, source: &str) -> Result<CertRequest> {
        let value = json::parse(text, source)?;
        Self::from_value(&value).with_context(|| format!("{source}: invalid certificate request"))
    }

    pub fn from_value(value: &Value) -> Result<CertRequest> {
        let obj = json::object(value, "the request")?;
        let warnings = json::unknown_fields(obj, KNOWN_FIELDS)
            .into_iter()
            .map(|f| format!("ignoring unknown field {f:?} (known: CN, hosts, key, names, ca)"))
            .collect();
        let names = match json::field(obj, "names") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_name(item, &format!("names[{i}]")))
                .collect::<Result<_>>()?,
            Some(other) => bail!(
                "names must be a list of objects, found {}",
                json::kind(other)
            ),
        };
        Ok(CertRequest {
            common_name: json::string(obj, "CN", "request")?.unwrap_or_default(),
            names,
            hosts: json::strings(obj, "hosts", "request")?.unwrap_or_default(),
            key: parse_key(json::field(obj, "key"))?,
            ca: parse_ca(json::field(obj, "ca"))?,
            warnings,
        })
    }

    /// The subject in Go's order (C, ST, L, O, OU, CN); one value per attribute.
    pub fn distinguished_name(&self) -> Result<(DistinguishedName, Vec<String>)> {
        let mut dn = DistinguishedName::new();
        let mut warnings = Vec::new();
        type Field = (DnType, &'static str, fn(&Name) -> &str);
        let fields: [Field; 5] = [
            (DnType::CountryName, "C", |n| &n.country),
            (DnType::StateOrProvinceName, "ST", |n| &n.state),
            (DnType::LocalityName, "L", |n| &n.locality),
            (DnType::OrganizationName, "O", |n| &n.organization),
            (DnType::OrganizationalUnitName, "OU", |n| {
                &n.organizational_unit
            }),
        ];
        for (ty, label, get) in fields {
            let mut values = self.names.iter().map(get).filter(|v| !v.is_empty());
            if let Some(first) = values.next() {
                dn.push(ty, dn_value(first));
            }
            if values.next().is_some() {
                warnings.push(format!(
                    "names has more than one {label}; oxcert uses the first one only"
                ));
            }
        }
        if !self.common_name.is_empty() {
            dn.push(DnType::CommonName, dn_value(&self.common_name));
        }
        Ok((dn, warnings))
    }
}

/// Go writes PrintableString where the text allows it, UTF8String otherwise.
fn dn_value(text: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(text) {
        Ok(printable) => DnValue::PrintableString(printable),
        Err(_) => DnValue::Utf8String(text.to_string()),
    }
}

fn parse_name(value: &Value, path: &str) -> Result<Name> {
    let obj = json::object(value, path)?;
    let get = |field: &str| json::string(obj, field, path).map(Option::unwrap_or_default);
    Ok(Name {
        country: get("C")?,
        state: get("ST")?,
        locality: get("L")?,
        organization: get("O")?,
        organizational_unit: get("OU")?,
    })
}

fn parse_key(value: Option<&Value>) -> Result<KeySpec> {
    let Some(value) = value else {
        return Ok(KeySpec::DEFAULT);
    };
    let obj = json::object(value, "key")?;
    let algo = json::string(obj, "algo", "key")?.unwrap_or_default();
    let size = json::uint(obj, "size", "key")?;
    KeySpec::from_request(&algo, size).context("key")
}

fn parse_ca(value: Option<&Value>) -> Result<CaOptions> {
    let Some(value) = value else {
        return Ok(CaOptions::default());
    };
    let obj = json::object(value, "ca")?;
    let expiry = json::string(obj, "expiry", "ca")?
        .filter(|e| !e.is_empty())
        .map(|e| parse_expiry(&e).context("ca.expiry"))
        .transpose()?;
    let path_len = json::uint(obj, "pathlen", "ca")?
        .map(|n| u8::try_from(n).map_err(|_| anyhow!("ca.pathlen {n} is too large")))
        .transpose()?;
    let path_len_zero = json::boolean(obj, "pathlenzero", "ca")?.unwrap_or(false);
    Ok(CaOptions {
        // cfssl: pathlen 0 means "unlimited" unless pathlenzero says it really is zero.
        path_len: match path_len {
            Some(0) | None if path_len_zero => Some(0),
            Some(0) | None => None,
            Some(n) => Some(n),
        },
        expiry,
    })
}

/// `-hostname=a,b` as cfssl splits it; it replaces the request's hosts when given.
pub fn split_hostnames(list: &str) -> Vec<String> {
    list.split(',').map(|h| h.trim().to_string()).collect()
}

/// SANs from hosts: IPs become IP SANs, `user@domain` email SANs, `scheme://…` URI SANs,
/// anything else a DNS name. Empty entries (the tutorial's `"hosts":[""]`) are skipped.
pub fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>> {
    let mut sans: Vec<SanType> = Vec::new();
    for host in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        let san = if let Ok(ip) = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            SanType::IpAddress(ip)
        } else if host.contains("://") {
            SanType::URI(ia5(host)?)
        } else if host.contains('@') {
            SanType::Rfc822Name(ia5(host)?)
        } else {
            if host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
                bail!("host {host:?} is not an IP address or DNS name");
            }
            SanType::DnsName(ia5(host)?)
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn ia5(host: &str) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(host).map_err(|_| {
        anyhow!("host {host:?} is not ASCII; write internationalized names in punycode (xn--…)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_request() {
        let req = CertRequest::parse(
            r#"{"CN":"server ca","hosts":[""],"key":{"algo":"rsa","size":2048}}"#,
            "stdin",
        )
        .expect("parse");
        assert_eq!(req.common_name, "server ca");
        assert_eq!(req.key, KeySpec::Rsa(2048));
        assert!(subject_alt_names(&req.hosts).expect("sans").is_empty());
        assert!(req.warnings.is_empty());
    }

    #[test]
    fn defaults_and_ca() {
        let req = CertRequest::parse(
            r#"{"cn":"ca","names":[{"C":"US","O":"etcd"}],"ca":{"expiry":"87600h","pathlen":1},"host":["x"]}"#,
            "csr.json",
        )
        .expect("parse");
        assert_eq!(req.key, KeySpec::EcdsaP256);
        assert_eq!(req.ca.path_len, Some(1));
        assert_eq!(req.ca.expiry, Some(Duration::from_secs(87600 * 3600)));
        assert_eq!(req.warnings.len(), 1);
        let (dn, warnings) = req.distinguished_name().expect("dn");
        assert!(warnings.is_empty());
        assert_eq!(dn.iter().count(), 3);
    }

    #[test]
    fn sans() {
        let sans = subject_alt_names(&split_hostnames("127.0.0.1,etcd1,,::1,a@b.c,spiffe://x/y"))
            .expect("sans");
        assert_eq!(sans.len(), 5);
        assert!(matches!(sans[0], SanType::IpAddress(_)));
        assert!(matches!(sans[1], SanType::DnsName(_)));
        assert!(matches!(sans[3], SanType::Rfc822Name(_)));
        assert!(matches!(sans[4], SanType::URI(_)));
        assert!(subject_alt_names(&["bad host".to_string()]).is_err());
    }

    #[test]
    fn bad_requests() {
        let err = CertRequest::parse(r#"{"CN":"x","key":{"algo":"rsa","size":"2048"}}"#, "c.json")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("key.size must be a number"),
            "{err:#}"
        );
        let err = CertRequest::parse(r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#, "c.json")
            .unwrap_err();
        assert!(format!("{err:#}").contains("too weak"), "{err:#}");
    }
}
