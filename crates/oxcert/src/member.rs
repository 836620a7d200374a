//! A member's start flags in etcd's names, read from a command line (`--cert-file x`,
//! `--cert-file=x`, `-cert-file x`) or from an env file (`ETCD_CERT_FILE=x`), and the
//! doctor's checks that need the whole member: URL schemes against the TLS files, SANs
//! against the advertise and listen URLs, client-cert-auth against a trusted CA, and the
//! member's own entry in `--initial-cluster`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::check::{hosts_of_urls, Doctor, RequiredHost, Role, TlsFiles};

/// etcd's boolean flags: these never take the next argument as their value.
const BOOL_FLAGS: &[&str] = &[
    "client-cert-auth",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "debug",
    "enable-v2",
    "enable-pprof",
    "enable-grpc-gateway",
    "force-new-cluster",
    "strict-reconfig-check",
    "pre-vote",
    "version",
    "help",
];

/// etcd's defaults for the URL flags a member leaves out.
const URL_DEFAULTS: &[(&str, &str)] = &[
    ("listen-client-urls", "http://localhost:2379"),
    ("advertise-client-urls", "http://localhost:2379"),
    ("listen-peer-urls", "http://localhost:2380"),
    ("initial-advertise-peer-urls", "http://localhost:2380"),
];

#[derive(Debug, Clone, Default)]
pub struct MemberFlags {
    values: BTreeMap<String, String>,
}

impl MemberFlags {
    /// From a start command line; a leading program name (`oxcd`, `etcd`) is skipped.
    pub fn parse_args(args: &[String]) -> Result<MemberFlags> {
        let mut values = BTreeMap::new();
        let mut rest = args.iter().skip_while(|a| !a.starts_with('-')).peekable();
        while let Some(arg) = rest.next() {
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                bail!("unexpected argument {arg:?} in the member's flags (etcd takes flags only)");
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None if BOOL_FLAGS.contains(&body) => (body.to_string(), "true".to_string()),
                None => match rest.next_if(|next| !next.starts_with('-')) {
                    Some(value) => (body.to_string(), value.clone()),
                    None => (body.to_string(), "true".to_string()),
                },
            };
            values.insert(name, unquote(&value));
        }
        Ok(MemberFlags { values })
    }

    /// From an env file: `ETCD_NAME=etcd1` lines (`export ` and quotes allowed, `#` comments).
    pub fn parse_env(text: &str) -> MemberFlags {
        let mut values = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let Some(name) = key.trim().strip_prefix("ETCD_") else {
                continue;
            };
            values.insert(
                name.to_ascii_lowercase().replace('_', "-"),
                unquote(value.trim()),
            );
        }
        MemberFlags { values }
    }

    /// `other`'s values win, as flags win over the environment in etcd.
    pub fn merge(&mut self, other: MemberFlags) {
        self.values.extend(other.values);
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v, "true" | "1" | "t" | "T" | "TRUE" | "True"))
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// The flag's value, or etcd's default with a note saying so.
    fn urls(&self, name: &str) -> (String, String) {
        match self.get(name) {
            Some(v) => (v.to_string(), format!("--{name}")),
            None => {
                let default = URL_DEFAULTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, d)| d);
                (default.to_string(), format!("--{name} (etcd's default)"))
            }
        }
    }
}

fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')));
    if quoted {
        value[1..value.len() - 1].to_string()
    } else {
        value.to_string()
    }
}

/// One side of a member's TLS: the client-facing listener or the peer listener.
struct Side {
    role: Role,
    prefix: &'static str,
    listen: &'static str,
    advertise: &'static str,
    auth: &'static str,
}

const CLIENT_SIDE: Side = Side {
    role: Role::Server,
    prefix: "",
    listen: "listen-client-urls",
    advertise: "advertise-client-urls",
    auth: "client-cert-auth",
};

const PEER_SIDE: Side = Side {
    role: Role::Peer,
    prefix: "peer-",
    listen: "listen-peer-urls",
    advertise: "initial-advertise-peer-urls",
    auth: "peer-client-cert-auth",
};

pub fn check_member(doctor: &mut Doctor, flags: &MemberFlags) {
    for side in [CLIENT_SIDE, PEER_SIDE] {
        check_side(doctor, flags, &side);
    }
    check_initial_cluster(doctor, flags);
}

fn check_side(doctor: &mut Doctor, flags: &MemberFlags, side: &Side) {
    let cert_flag = format!("{}cert-file", side.prefix);
    let key_flag = format!("{}key-file", side.prefix);
    let ca_flag = format!("{}trusted-ca-file", side.prefix);
    let mut hosts: Vec<RequiredHost> = Vec::new();
    let mut https = Vec::new();
    let mut http = Vec::new();
    for name in [side.advertise, side.listen] {
        let (urls, origin) = flags.urls(name);
        hosts.extend(hosts_of_urls(&origin, &urls));
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
            match scheme.as_str() {
                "https" | "unixs" => https.push(format!("{origin} {url}")),
                _ => http.push(format!("{origin} {url}")),
            }
        }
    }
    let has_files = flags.get(&cert_flag).is_some() || flags.get(&key_flag).is_some();
    let auto_tls = flags.is_true(&format!("{}auto-tls", side.prefix));
    if let Some(url) = https.first().filter(|_| !has_files && !auto_tls) {
        doctor.error(
            format!("--{cert_flag}"),
            format!("{url} uses https but --{cert_flag} and --{key_flag} are not set"),
            format!("pass --{cert_flag} and --{key_flag}, or use http:// URLs"),
        );
    }
    if let Some(url) = http.first().filter(|_| has_files) {
        doctor.warning(
            url.split(' ').next().unwrap_or(side.listen),
            format!("{url} uses http: --{cert_flag} is not used there and that traffic is not encrypted"),
            "use https:// URLs",
        );
    }
    if flags.is_true(side.auth) && flags.get(&ca_flag).is_none() {
        doctor.error(
            format!("--{}", side.auth),
            format!(
                "--{} is set but --{ca_flag} is not: there is no CA to check certificates with",
                side.auth
            ),
            format!("pass the CA that signed the certificates with --{ca_flag}"),
        );
    }
    doctor.check_files(&TlsFiles {
        role: side.role,
        cert: flags.path(&cert_flag),
        key: flags.path(&key_flag),
        ca: flags.path(&ca_flag),
        cert_flag: format!("--{cert_flag}"),
        key_flag: format!("--{key_flag}"),
        ca_flag: format!("--{ca_flag}"),
        hosts: if https.is_empty() { Vec::new() } else { hosts },
        used_as_client: (side.role == Role::Server && flags.is_true(side.auth)).then(|| {
            "with --client-cert-auth etcd's gRPC gateway connects to the member using it as a client certificate".to_string()
        }),
    });
}

fn check_initial_cluster(doctor: &mut Doctor, flags: &MemberFlags) {
    let Some(initial_cluster) = flags.get("initial-cluster") else {
        return;
    };
    let name = flags.get("name").unwrap_or("default");
    let mut own: Vec<&str> = Vec::new();
    let mut other_schemes = Vec::new();
    for entry in initial_cluster
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some((member, url)) = entry.split_once('=') else {
            doctor.error(
                "--initial-cluster",
                format!("entry {entry:?} is not NAME=URL"),
                "write --initial-cluster as name1=https://host1:2380,name2=https://host2:2380",
            );
            continue;
        };
        if member == name {
            own.push(url);
        }
        other_schemes.push((
            entry,
            url.split("://").next().unwrap_or("").to_ascii_lowercase(),
        ));
    }
    let (advertised, _) = flags.urls("initial-advertise-peer-urls");
    let mut advertised: Vec<&str> = advertised
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if own.is_empty() {
        doctor.error(
            "--initial-cluster",
            format!("has no entry for this member (--name {name})"),
            format!(
                "add {name}={} to --initial-cluster",
                advertised.join(&format!(",{name}="))
            ),
        );
    } else {
        own.sort_unstable();
        advertised.sort_unstable();
        if own != advertised {
            doctor.error(
                "--initial-cluster",
                format!("has {name}={} but --initial-advertise-peer-urls is {}: etcd refuses to start", own.join(","), advertised.join(",")),
                "make the member's --initial-cluster entry and --initial-advertise-peer-urls the same URLs",
            );
        }
    }
    if flags.get("peer-cert-file").is_some() {
        for (entry, scheme) in other_schemes.iter().filter(|(_, s)| s == "http") {
            doctor.error(
                "--initial-cluster",
                format!("entry {entry} uses {scheme}:// while peers serve TLS"),
                "use https:// for every member in --initial-cluster",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn etcd_flag_forms() {
        let flags = MemberFlags::parse_args(&strings(&[
            "oxcd",
            "--name",
            "etcd1",
            "--client-cert-auth",
            "--cert-file=/x/server.pem",
            "-peer-client-cert-auth=\"true\"",
            "--data-dir",
            "/var/lib/etcd",
        ]))
        .expect("parse");
        assert_eq!(flags.get("name"), Some("etcd1"));
        assert!(flags.is_true("client-cert-auth"));
        assert!(flags.is_true("peer-client-cert-auth"));
        assert_eq!(flags.get("cert-file"), Some("/x/server.pem"));
        assert_eq!(flags.get("data-dir"), Some("/var/lib/etcd"));
    }

    #[test]
    fn env_file() {
        let flags = MemberFlags::parse_env(
            "# etcd1\nETCD_NAME=etcd1\nexport ETCD_CERT_FILE='/x/server.pem'\nETCD_CLIENT_CERT_AUTH=true\nOTHER=1\n",
        );
        assert_eq!(flags.get("name"), Some("etcd1"));
        assert_eq!(flags.get("cert-file"), Some("/x/server.pem"));
        assert!(flags.is_true("client-cert-auth"));
        assert_eq!(flags.values.len(), 3);
    }
}
