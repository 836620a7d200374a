//! `oxcert cluster`: a whole cluster's PKI in one command. It writes a CA, one server
//! certificate for the client listeners (server and client auth: etcd's gRPC gateway
//! presents it as a client), one peer certificate per member, a client certificate, keys
//! 0600, and for each member the exact start command (`NAME.sh`) and env file (`NAME.env`).
//!
//! `cluster.json` records the members, so `--add` can extend the PKI later: it signs peer
//! certificates for the new members and re-signs `server.pem` for the same key with the
//! new addresses, so members already running keep working.
//!
//! Layout of the output directory:
//! `ca.pem ca-key.pem ca.csr ca-config.json server.pem server-key.pem server.csr
//! client.pem client-key.pem client.csr NAME.pem NAME-key.pem NAME.csr NAME.env NAME.sh
//! cluster.json`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::issue::{self, Authority, Issued};
use crate::keys::{KeySpec, PrivateKey};
use crate::log::Log;
use crate::output::{read_file, write_all, OutFile, KEY_MODE, PUBLIC_MODE};
use crate::request::{CaOptions, CertRequest, Name};

const RESERVED_NAMES: &[&str] = &["ca", "server", "client", "cluster"];
const MEMBER_NAME_BYTES_MAX: usize = 63;
const SCRIPT_MODE: u32 = 0o755;

/// One member: its name and the address other members and clients reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub name: String,
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl MemberSpec {
    /// `NAME=HOST`, `NAME=HOST:CLIENT_PORT:PEER_PORT`, `NAME=[V6]:CLIENT_PORT:PEER_PORT`.
    pub fn parse(spec: &str, client_port: u16, peer_port: u16) -> Result<MemberSpec> {
        let (name, address) = spec.split_once('=').ok_or_else(|| {
            anyhow!("member {spec:?} is not NAME=ADDRESS (e.g. etcd1=127.0.0.11)")
        })?;
        validate_name(name)?;
        let (host, ports) = split_address(address).ok_or_else(|| {
            anyhow!("member {spec:?}: address must be HOST or HOST:CLIENT_PORT:PEER_PORT")
        })?;
        validate_host(&host).with_context(|| format!("member {spec:?}"))?;
        let (client_port, peer_port) = match ports {
            None => (client_port, peer_port),
            Some((c, p)) => (
                c.parse()
                    .map_err(|_| anyhow!("member {spec:?}: bad client port {c:?}"))?,
                p.parse()
                    .map_err(|_| anyhow!("member {spec:?}: bad peer port {p:?}"))?,
            ),
        };
        Ok(MemberSpec {
            name: name.to_string(),
            host,
            client_port,
            peer_port,
        })
    }

    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    pub fn client_url(&self) -> String {
        format!("https://{}:{}", self.url_host(), self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("https://{}:{}", self.url_host(), self.peer_port)
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// etcd binds only to IPs (and localhost): a member named by DNS listens on all interfaces.
    fn listen_host(&self) -> String {
        match self.ip() {
            Some(_) => self.url_host(),
            None if self.host == "localhost" => self.host.clone(),
            None => "0.0.0.0".to_string(),
        }
    }

    /// Also listen on 127.0.0.1 for local clients, as the tutorial does, unless the member
    /// is on a loopback address itself (several members on one machine would collide).
    fn also_listens_on_loopback(&self) -> bool {
        !(self.host == "localhost" || self.ip().is_some_and(|ip| ip.is_loopback()))
    }
}

fn split_address(address: &str) -> Option<(String, Option<(&str, &str)>)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, ports) = rest.split_once(']')?;
        return match ports {
            "" => Some((host.to_string(), None)),
            p => {
                let (c, p) = p.strip_prefix(':')?.split_once(':')?;
                Some((host.to_string(), Some((c, p))))
            }
        };
    }
    if address.parse::<IpAddr>().is_ok() {
        return Some((address.to_string(), None));
    }
    match address.split(':').collect::<Vec<_>>().as_slice() {
        [host] => Some((host.to_string(), None)),
        [host, c, p] => Some((host.to_string(), Some((c, p)))),
        _ => None,
    }
}

fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MEMBER_NAME_BYTES_MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        bail!("member name {name:?} must be letters, digits, '-', '_' or '.' (it names files), starting with a letter or digit");
    }
    if RESERVED_NAMES.contains(&name) {
        bail!(
            "member name {name:?} is taken by the cluster's own files ({})",
            RESERVED_NAMES.join(", ")
        );
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let valid = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        bail!("{host:?} is neither an IP address nor a DNS name");
    }
    Ok(())
}

/// What `cluster.json` records, so `--add` can extend the cluster with the same choices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub token: String,
    pub binary: String,
    /// Where the commands say the files are (the output directory unless --cert-dir).
    pub cert_dir: PathBuf,
    /// Parent of each member's data dir; None: etcd's default `NAME.etcd`.
    pub data_dir: Option<String>,
    pub key: String,
    pub expiry: String,
    pub client_cn: String,
    pub members: Vec<MemberSpec>,
}

impl ClusterPlan {
    fn key_spec(&self) -> Result<KeySpec> {
        let (algo, size) = self
            .key
            .split_once('-')
            .ok_or_else(|| anyhow!("cluster.json: key {:?} is not ALGO-SIZE", self.key))?;
        let size = size
            .parse()
            .map_err(|_| anyhow!("cluster.json: key {:?} is not ALGO-SIZE", self.key))?;
        KeySpec::from_request(algo, Some(size))
    }

    fn file(&self, name: &str) -> String {
        self.cert_dir.join(name).display().to_string()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member's start flags in etcd's names, in the tutorial's order.
    pub fn member_flags(&self, member: &MemberSpec, state: &str) -> Vec<(&'static str, String)> {
        let mut listen_client = vec![format!(
            "https://{}:{}",
            member.listen_host(),
            member.client_port
        )];
        if member.also_listens_on_loopback() {
            listen_client.push(format!("https://127.0.0.1:{}", member.client_port));
        }
        let data_dir = match &self.data_dir {
            Some(root) => Path::new(root).join(&member.name).display().to_string(),
            None => format!("{}.etcd", member.name),
        };
        vec![
            ("name", member.name.clone()),
            ("initial-advertise-peer-urls", member.peer_url()),
            (
                "listen-peer-urls",
                format!("https://{}:{}", member.listen_host(), member.peer_port),
            ),
            ("listen-client-urls", listen_client.join(",")),
            ("advertise-client-urls", member.client_url()),
            ("initial-cluster-token", self.token.clone()),
            ("initial-cluster", self.initial_cluster()),
            ("initial-cluster-state", state.to_string()),
            ("cert-file", self.file("server.pem")),
            ("key-file", self.file("server-key.pem")),
            ("client-cert-auth", "true".to_string()),
            ("trusted-ca-file", self.file("ca.pem")),
            ("peer-cert-file", self.file(&format!("{}.pem", member.name))),
            (
                "peer-key-file",
                self.file(&format!("{}-key.pem", member.name)),
            ),
            ("peer-client-cert-auth", "true".to_string()),
            ("peer-trusted-ca-file", self.file("ca.pem")),
            ("data-dir", data_dir),
        ]
    }

    /// The shell command that starts the member, one flag per line.
    pub fn command(&self, member: &MemberSpec, state: &str) -> String {
        let mut out = shell_quote(&self.binary);
        for (flag, value) in self.member_flags(member, state) {
            // Go's flag package reads `--bool true` as a flag and a stray argument.
            let separator = if value == "true" { "=" } else { " " };
            out.push_str(&format!(
                " \\\n  --{flag}{separator}{}",
                shell_quote(&value)
            ));
        }
        out
    }

    pub fn env_file(&self, member: &MemberSpec, state: &str) -> String {
        let mut out = format!(
            "# {} of cluster {}: start it with `set -a; . ./{}.env; {}` or systemd's EnvironmentFile=\n",
            member.name, self.token, member.name, self.binary
        );
        for (flag, value) in self.member_flags(member, state) {
            let var = format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"));
            out.push_str(&format!("{var}={}\n", shell_quote(&value)));
        }
        out
    }

    fn ctl(&self) -> &'static str {
        if self.binary.ends_with("etcd") {
            "etcdctl"
        } else {
            "oxctl"
        }
    }

    /// etcdctl-style flags that reach the cluster with the client certificate.
    pub fn ctl_flags(&self) -> String {
        format!(
            "--endpoints={} --cacert={} --cert={} --key={}",
            self.members
                .iter()
                .map(MemberSpec::client_url)
                .collect::<Vec<_>>()
                .join(","),
            shell_quote(&self.file("ca.pem")),
            shell_quote(&self.file("client.pem")),
            shell_quote(&self.file("client-key.pem")),
        )
    }
}

pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=@+%".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// Options of a new cluster.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub out: PathBuf,
    pub force: bool,
    pub key: KeySpec,
    pub expiry: Duration,
    pub ca_expiry: Duration,
    pub ca_cn: String,
    pub plan: ClusterPlan,
}

/// The files `create` writes besides each member's own.
const CLUSTER_FILES: [&str; 11] = [
    "ca.pem",
    "ca-key.pem",
    "ca.csr",
    "ca-config.json",
    "server.pem",
    "server-key.pem",
    "server.csr",
    "client.pem",
    "client-key.pem",
    "client.csr",
    "cluster.json",
];

/// Writes a new cluster's PKI and start files; returns what to tell the user.
pub fn create(options: &NewCluster) -> Result<String> {
    let plan = &options.plan;
    check_unique(&plan.members)?;
    let out = &options.out;
    let mut names: Vec<String> = CLUSTER_FILES.iter().map(|n| n.to_string()).collect();
    for m in &plan.members {
        names.extend(member_file_names(&m.name));
    }
    if !options.force {
        refuse_existing(
            out,
            &names,
            "replace the whole PKI (every existing certificate stops being trusted)",
        )?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = cluster_files(options)?;
    write_all(&files)?;
    Ok(create_report(options))
}

/// Every file of a new cluster: the CA, the shared server and client certificates, each
/// member's certificates and start files, and the cluster description.
fn cluster_files(options: &NewCluster) -> Result<Vec<OutFile>> {
    let (plan, out) = (&options.plan, &options.out);
    let log = Log::new(3);
    let ca_request = request(
        &options.ca_cn,
        Vec::new(),
        options.key,
        Some(options.ca_expiry),
    );
    let ca_issued = issue::init_ca(&ca_request, None, &log)?;
    let ca_key_pem = ca_issued
        .key_pem
        .clone()
        .ok_or_else(|| anyhow!("the new CA has no key"))?;
    let ca = Authority::load(
        &ca_issued.cert_pem,
        "ca.pem",
        PrivateKey::from_pem(&ca_key_pem)?,
    )?;
    let config = signing_config(&plan.expiry);
    let profiles = Config::parse(&config, "ca-config.json")?;
    let mut files = issued_files(out, "ca", &ca_issued);
    files.push(OutFile::new(
        out.join("ca-config.json"),
        config,
        PUBLIC_MODE,
    ));
    let shared = [
        ("server", "server", server_hosts(&plan.members)),
        ("client", plan.client_cn.as_str(), Vec::new()),
    ];
    for (profile, cn, hosts) in shared {
        let issued = issue::sign(
            &request(cn, Vec::new(), options.key, None),
            &hosts,
            &ca,
            &profiles.profile(profile)?,
            None,
            &log,
        )?;
        files.extend(issued_files(out, profile, &issued));
    }
    for member in &plan.members {
        files.extend(member_files(out, plan, member, &ca, &profiles, "new")?);
    }
    files.push(OutFile::new(
        out.join("cluster.json"),
        plan_json(plan)?,
        PUBLIC_MODE,
    ));
    Ok(files)
}

/// What `create` tells the user: where the PKI went and how to start each member.
fn create_report(options: &NewCluster) -> String {
    let (plan, out) = (&options.plan, &options.out);
    let mut report = format!(
        "wrote the PKI ({} keys) for {} members to {}\n",
        options.key.name(),
        plan.members.len(),
        out.display()
    );
    for member in &plan.members {
        report.push_str(&format!(
            "\n# {} ({}; also in {}.sh and {}.env)\n{}\n",
            member.name,
            member.host,
            out.join(&member.name).display(),
            out.join(&member.name).display(),
            plan.command(member, "new")
        ));
    }
    report.push_str(&format!(
        "\n# talk to it\n{} {} endpoint health\n",
        plan.ctl(),
        plan.ctl_flags()
    ));
    report
}

/// Adds members to the cluster in `out`; returns what to tell the user.
pub fn add(out: &Path, new_members: &[MemberSpec], force: bool) -> Result<String> {
    let plan_path = out.join("cluster.json");
    let plan_text = read_file(&plan_path, "cluster description")
        .context("--add extends a directory made by oxcert cluster")?;
    let mut plan: ClusterPlan =
        serde_json::from_str(&plan_text).map_err(|e| anyhow!("{}: {e}", plan_path.display()))?;
    for member in new_members {
        if plan.members.iter().any(|m| m.name == member.name) {
            if !force {
                bail!(
                    "member {} is already in the cluster: pass --force to reissue its certificate",
                    member.name
                );
            }
            plan.members.retain(|m| m.name != member.name);
        }
        if !force {
            refuse_existing(out, &member_file_names(&member.name), "replace them")?;
        }
        plan.members.push(member.clone());
    }
    check_unique(&plan.members)?;
    let key = plan.key_spec()?;
    let ca_key_path = out.join("ca-key.pem");
    let ca_key = PrivateKey::from_pem(&read_file(&ca_key_path, "CA key")?)
        .with_context(|| format!("CA key {}", ca_key_path.display()))?;
    let ca_path = out.join("ca.pem");
    let ca = Authority::load(
        &read_file(&ca_path, "CA certificate")?,
        &ca_path.display().to_string(),
        ca_key,
    )?;
    let profiles = Config::parse(&signing_config(&plan.expiry), "ca-config.json")?;
    let server_key_path = out.join("server-key.pem");
    let server_key = PrivateKey::from_pem(&read_file(&server_key_path, "server key")?)
        .with_context(|| format!("server key {}", server_key_path.display()))?;
    let log = Log::new(3);
    let server = issue::sign(
        &request("server", Vec::new(), key, None),
        &server_hosts(&plan.members),
        &ca,
        &profiles.profile("server")?,
        Some(server_key),
        &log,
    )?;
    let mut files = vec![
        OutFile::new(out.join("server.pem"), server.cert_pem.clone(), PUBLIC_MODE),
        OutFile::new(out.join("server.csr"), server.csr_pem.clone(), PUBLIC_MODE),
    ];
    for member in new_members {
        files.extend(member_files(
            out, &plan, member, &ca, &profiles, "existing",
        )?);
    }
    files.push(OutFile::new(plan_path, plan_json(&plan)?, PUBLIC_MODE));
    write_all(&files)?;
    let mut report = format!(
        "added {} to the cluster in {}; server.pem re-signed (same key) to cover the new addresses\n",
        new_members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
        out.display()
    );
    for member in new_members {
        report.push_str(&format!(
            "\n# 1. register {name} with the running cluster\n{ctl} {flags} member add {name} --peer-urls={url}\n\n# 2. start {name} (also in {path}.sh and {path}.env)\n{command}\n",
            name = member.name,
            ctl = plan.ctl(),
            flags = plan.ctl_flags(),
            url = member.peer_url(),
            path = out.join(&member.name).display(),
            command = plan.command(member, "existing"),
        ));
    }
    Ok(report)
}

fn member_file_names(name: &str) -> Vec<String> {
    ["pem", "csr", "env", "sh"]
        .iter()
        .map(|ext| format!("{name}.{ext}"))
        .chain([format!("{name}-key.pem")])
        .collect()
}

fn refuse_existing(out: &Path, names: &[String], force_does: &str) -> Result<()> {
    let existing: Vec<String> = names
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let shown = existing
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = match existing.len() {
        n if n > 3 => format!(" and {} more", n - 3),
        _ => String::new(),
    };
    bail!(
        "refusing to overwrite {shown}{more}: pass --force to {force_does}, or --add NAME=ADDRESS to add members to the existing PKI"
    )
}

fn check_unique(members: &[MemberSpec]) -> Result<()> {
    if members.is_empty() {
        bail!("no members: pass --members NAME=ADDRESS,… (e.g. etcd1=127.0.0.11,etcd2=127.0.0.12,etcd3=127.0.0.13)");
    }
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            if a.name == b.name {
                bail!("member name {} is given twice", a.name);
            }
            let ports_a = [a.client_port, a.peer_port];
            if a.host == b.host
                && (ports_a.contains(&b.client_port) || ports_a.contains(&b.peer_port))
            {
                bail!("members {} and {} would listen on the same address {} and port: give them different addresses or ports (NAME=HOST:CLIENT_PORT:PEER_PORT)", a.name, b.name, a.host);
            }
        }
        if a.client_port == a.peer_port {
            bail!(
                "member {}: client and peer ports are both {}",
                a.name,
                a.client_port
            );
        }
    }
    Ok(())
}

fn request(cn: &str, hosts: Vec<String>, key: KeySpec, ca_expiry: Option<Duration>) -> CertRequest {
    CertRequest {
        common_name: cn.to_string(),
        names: vec![Name {
            organization: "oxcd".to_string(),
            ..Name::default()
        }],
        hosts,
        key,
        ca: CaOptions {
            path_len: None,
            expiry: ca_expiry,
        },
        warnings: Vec::new(),
    }
}

fn server_hosts(members: &[MemberSpec]) -> Vec<String> {
    let mut hosts: Vec<String> = members.iter().map(|m| m.host.clone()).collect();
    hosts.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    dedup(hosts)
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// A member's peer certificate (its own address, plus loopback: members on one machine
/// connect from 127.0.0.1, and etcd checks a peer's source IP against its certificate),
/// with its start script and env file.
fn member_files(
    out: &Path,
    plan: &ClusterPlan,
    member: &MemberSpec,
    ca: &Authority,
    profiles: &Config,
    state: &str,
) -> Result<Vec<OutFile>> {
    let hosts = dedup(vec![
        member.host.clone(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
    ]);
    let issued = issue::sign(
        &request(&member.name, Vec::new(), plan.key_spec()?, None),
        &hosts,
        ca,
        &profiles.profile("peer")?,
        None,
        &Log::new(3),
    )?;
    let mut files = issued_files(out, &member.name, &issued);
    files.push(OutFile::new(
        out.join(format!("{}.sh", member.name)),
        format!(
            "#!/bin/sh\n# start member {} of cluster {}\nexec {}\n",
            member.name,
            plan.token,
            plan.command(member, state)
        ),
        SCRIPT_MODE,
    ));
    files.push(OutFile::new(
        out.join(format!("{}.env", member.name)),
        plan.env_file(member, state),
        PUBLIC_MODE,
    ));
    Ok(files)
}

fn issued_files(out: &Path, name: &str, issued: &Issued) -> Vec<OutFile> {
    let mut files = vec![
        OutFile::new(
            out.join(format!("{name}.pem")),
            issued.cert_pem.clone(),
            PUBLIC_MODE,
        ),
        OutFile::new(
            out.join(format!("{name}.csr")),
            issued.csr_pem.clone(),
            PUBLIC_MODE,
        ),
    ];
    if let Some(key) = &issued.key_pem {
        files.push(OutFile::new(
            out.join(format!("{name}-key.pem")),
            key.clone(),
            KEY_MODE,
        ));
    }
    files
}

/// The profiles the cluster's certificates are signed with, as a cfssl `ca-config.json`,
/// so they can be reissued with cfssl (or oxcert gencert) by hand.
fn signing_config(expiry: &str) -> String {
    let usages = |extra: &[&str]| {
        let mut all = vec!["signing", "key encipherment"];
        all.extend_from_slice(extra);
        serde_json::json!({ "expiry": expiry, "usages": all })
    };
    let config = serde_json::json!({
        "signing": {
            "default": { "expiry": expiry },
            "profiles": {
                "server": usages(&["server auth", "client auth"]),
                "peer": usages(&["server auth", "client auth"]),
                "client": usages(&["client auth"]),
            }
        }
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&config).unwrap_or_default()
    )
}

fn plan_json(plan: &ClusterPlan) -> Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(plan)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_specs() {
        let m = MemberSpec::parse("etcd1=127.0.0.11", 2379, 2380).expect("parse");
        assert_eq!(m.client_url(), "https://127.0.0.11:2379");
        let m = MemberSpec::parse("etcd2=127.0.0.1:12379:12380", 2379, 2380).expect("parse");
        assert_eq!((m.client_port, m.peer_port), (12379, 12380));
        let m = MemberSpec::parse("e=[::1]:1:2", 2379, 2380).expect("parse");
        assert_eq!(m.peer_url(), "https://[::1]:2");
        let m = MemberSpec::parse("e=::1", 2379, 2380).expect("parse");
        assert_eq!(m.host, "::1");
        let m = MemberSpec::parse("e=node1.example.com", 2379, 2380).expect("parse");
        assert_eq!(m.listen_host(), "0.0.0.0");
        assert!(MemberSpec::parse("ca=127.0.0.1", 2379, 2380).is_err());
        assert!(MemberSpec::parse("../x=127.0.0.1", 2379, 2380).is_err());
        assert!(MemberSpec::parse("etcd1", 2379, 2380).is_err());
        assert!(MemberSpec::parse("etcd1=bad host", 2379, 2380).is_err());
        assert!(MemberSpec::parse("etcd1=h:1", 2379, 2380).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.pem"), "/a/b.pem");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
