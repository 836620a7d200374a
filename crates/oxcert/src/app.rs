//! The `oxcert` command line: cfssl's commands under their own names (Go-style flags,
//! passed through untouched), plus `cluster` and `check`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::check::{Doctor, RequiredHost, Role, TlsFiles};
use crate::cluster::{self, ClusterPlan, MemberSpec, NewCluster};
use crate::config::{format_expiry, parse_expiry};
use crate::inspect::{url_host, CertInfo};
use crate::keys::KeySpec;
use crate::member::{check_member, MemberFlags};
use crate::output::read_file;
use crate::Failure;

#[derive(Parser, Debug)]
#[command(
    name = "oxcert",
    version,
    about = "cfssl-compatible certificates, a cluster's PKI in one command, and a TLS doctor",
    after_help = "Linked or copied as `cfssl` or `cfssljson`, oxcert behaves as that tool."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// cfssl gencert: a new key and certificate (-initca, or -ca -ca-key -config -profile -hostname)
    #[command(disable_help_flag = true)]
    Gencert(Passthrough),
    /// cfssl genkey: a new key and CSR
    #[command(disable_help_flag = true)]
    Genkey(Passthrough),
    /// cfssl print-defaults csr|config: starting files
    #[command(disable_help_flag = true)]
    PrintDefaults(Passthrough),
    /// cfssljson: cfssl JSON on stdin becomes NAME.pem, NAME-key.pem (0600) and NAME.csr (-bare NAME)
    #[command(disable_help_flag = true)]
    Json(Passthrough),
    /// Any cfssl command line, as `cfssl` would run it
    #[command(disable_help_flag = true)]
    Cfssl(Passthrough),
    /// A cluster's whole PKI and the commands that start each member
    Cluster(ClusterArgs),
    /// Check certificates, keys and a member's TLS flags; one line per problem, with the fix
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// Members as NAME=ADDRESS (DNS names allowed), or NAME=HOST:CLIENT_PORT:PEER_PORT
    #[arg(long, value_delimiter = ',', required_unless_present = "add")]
    members: Vec<String>,
    /// Add members to the PKI already in --out (NAME=ADDRESS,…)
    #[arg(long, value_delimiter = ',', conflicts_with = "members")]
    add: Vec<String>,
    /// Directory for the certificates, keys and start files
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing CA and keys (every certificate made with the old CA stops working)
    #[arg(long)]
    force: bool,
    /// Client port for members that do not name one
    #[arg(long, default_value_t = 2379)]
    client_port: u16,
    /// Peer port for members that do not name one
    #[arg(long, default_value_t = 2380)]
    peer_port: u16,
    /// Key algorithm and size: ecdsa-256, ecdsa-384, rsa-2048, rsa-3072, rsa-4096
    #[arg(long, default_value = "ecdsa-256")]
    key: String,
    /// Lifetime of the server, peer and client certificates (Go duration)
    #[arg(long, default_value = "43800h")]
    expiry: String,
    /// Lifetime of the CA (Go duration)
    #[arg(long, default_value = "87600h")]
    ca_expiry: String,
    /// Common name of the CA
    #[arg(long, default_value = "oxcd-ca")]
    ca_cn: String,
    /// Common name of the client certificate (the user name when auth is on)
    #[arg(long, default_value = "client")]
    client_cn: String,
    /// --initial-cluster-token for the members
    #[arg(long, default_value = "oxcd-cluster-1")]
    token: String,
    /// The server binary the start commands run
    #[arg(long, default_value = "oxcd")]
    binary: String,
    /// Where the members will find the files (default: --out, absolute)
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Parent directory of each member's --data-dir (default: etcd's NAME.etcd)
    #[arg(long)]
    data_dir: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Server,
    Peer,
    Client,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Certificate to check (PEM; intermediates may follow it)
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The certificate's private key
    #[arg(long)]
    key: Option<PathBuf>,
    /// The CA that the other side trusts
    #[arg(long)]
    ca: Option<PathBuf>,
    /// What the certificate is for (default: guessed from its extended key usages)
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Addresses or URLs clients use to reach it (comma-separated)
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// A member's env file (ETCD_* variables), as `oxcert cluster` writes
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Judge validity at this time (RFC 3339) instead of now
    #[arg(long)]
    at: Option<String>,
    /// Exit 1 on warnings too
    #[arg(long)]
    strict: bool,
    /// A member's start flags, after --: oxcert check -- --name etcd1 --cert-file …
    #[arg(last = true, allow_hyphen_values = true)]
    member_flags: Vec<String>,
}

pub fn main(args: &[String]) -> Result<(), Failure> {
    let argv = std::iter::once("oxcert".to_string()).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Err(Failure::Exit(if e.use_stderr() { 2 } else { 0 }));
        }
    };
    match cli.command {
        Command::Gencert(p) => crate::cfssl::main(&with_command("gencert", p.args)),
        Command::Genkey(p) => crate::cfssl::main(&with_command("genkey", p.args)),
        Command::PrintDefaults(p) => crate::cfssl::main(&with_command("print-defaults", p.args)),
        Command::Cfssl(p) => crate::cfssl::main(&p.args),
        Command::Json(p) => crate::cfssljson::main(&p.args),
        Command::Cluster(args) => {
            print!("{}", run_cluster(args)?);
            Ok(())
        }
        Command::Check(args) => run_check(args),
    }
}

fn with_command(command: &str, args: Vec<String>) -> Vec<String> {
    std::iter::once(command.to_string()).chain(args).collect()
}

fn run_cluster(args: ClusterArgs) -> Result<String> {
    let parse_members = |specs: &[String]| -> Result<Vec<MemberSpec>> {
        specs
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| MemberSpec::parse(s, args.client_port, args.peer_port))
            .collect()
    };
    if !args.add.is_empty() {
        return cluster::add(&args.out, &parse_members(&args.add)?, args.force);
    }
    let (algo, size) = args.key.split_once('-').ok_or_else(|| {
        anyhow!(
            "--key {:?} is not ALGO-SIZE (e.g. ecdsa-256, rsa-2048)",
            args.key
        )
    })?;
    let size = size.parse().map_err(|_| {
        anyhow!(
            "--key {:?} is not ALGO-SIZE (e.g. ecdsa-256, rsa-2048)",
            args.key
        )
    })?;
    let key = KeySpec::from_request(algo, Some(size)).context("--key")?;
    let expiry = parse_expiry(&args.expiry).context("--expiry")?;
    let ca_expiry = parse_expiry(&args.ca_expiry).context("--ca-expiry")?;
    let cert_dir = match args.cert_dir {
        Some(dir) => dir,
        None => std::path::absolute(&args.out)
            .with_context(|| format!("cannot resolve {}", args.out.display()))?,
    };
    cluster::create(&NewCluster {
        out: args.out.clone(),
        force: args.force,
        key,
        expiry,
        ca_expiry,
        ca_cn: args.ca_cn,
        plan: ClusterPlan {
            token: args.token,
            binary: args.binary,
            cert_dir,
            data_dir: args.data_dir,
            key: key.name(),
            expiry: format_expiry(expiry),
            client_cn: args.client_cn,
            members: parse_members(&args.members)?,
        },
    })
}

fn run_check(args: CheckArgs) -> Result<(), Failure> {
    let now = match &args.at {
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    anyhow!("--at {text:?} is not an RFC 3339 time like 2030-01-02T15:04:05Z: {e}")
                })?
        }
        None => time::OffsetDateTime::now_utc(),
    };
    let mut doctor = Doctor::new(now);
    let mut member = MemberFlags::default();
    if let Some(path) = &args.env_file {
        member = MemberFlags::parse_env(&read_file(path, "env file")?);
        if member.is_empty() {
            return Err(anyhow!("{} has no ETCD_* variables", path.display()).into());
        }
    }
    if !args.member_flags.is_empty() {
        member.merge(MemberFlags::parse_args(&args.member_flags)?);
    }
    if args.cert.is_none() && args.key.is_none() && member.is_empty() {
        return Err(anyhow!(
            "nothing to check: pass --cert/--key/--ca, --env-file FILE, or a member's flags after -- (oxcert check -- --name etcd1 --cert-file …)"
        )
        .into());
    }
    if args.cert.is_some() || args.key.is_some() {
        let files = files_to_check(&args)?;
        doctor.check_files(&files);
    }
    if !member.is_empty() {
        check_member(&mut doctor, &member);
    }
    for finding in &doctor.findings {
        println!("{finding}");
    }
    let checked = if doctor.checked.is_empty() {
        "flags".to_string()
    } else {
        doctor.checked.join(", ")
    };
    let (errors, warnings) = (doctor.errors(), doctor.warnings());
    if errors == 0 && warnings == 0 {
        println!("ok: no problems found ({checked})");
        return Ok(());
    }
    println!("{errors} error(s), {warnings} warning(s) ({checked})");
    if errors > 0 || (args.strict && warnings > 0) {
        return Err(Failure::Exit(1));
    }
    Ok(())
}

fn files_to_check(args: &CheckArgs) -> Result<TlsFiles> {
    let role = match (args.role, &args.cert) {
        (Some(RoleArg::Server), _) => Role::Server,
        (Some(RoleArg::Peer), _) => Role::Peer,
        (Some(RoleArg::Client), _) => Role::Client,
        (None, Some(cert)) => guess_role(cert),
        (None, None) => Role::Server,
    };
    let mut hosts = Vec::new();
    for entry in args
        .hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        let host = match url_host(entry) {
            Some((_, host)) => host,
            None if entry.contains("://") => bail!("--hosts entry {entry:?} is not a URL"),
            None => entry.to_string(),
        };
        hosts.push(RequiredHost {
            host,
            origin: format!("--hosts {entry}"),
        });
    }
    Ok(TlsFiles {
        role,
        cert: args.cert.clone(),
        key: args.key.clone(),
        ca: args.ca.clone(),
        cert_flag: "--cert".to_string(),
        key_flag: "--key".to_string(),
        ca_flag: "--ca".to_string(),
        hosts,
        used_as_client: None,
    })
}

/// Both usages: a peer certificate; client auth only: a client one; else a server one.
fn guess_role(cert: &std::path::Path) -> Role {
    let Ok(certs) = CertInfo::load_all(cert) else {
        return Role::Server;
    };
    match certs[0].extended_key_usage {
        Some(eku) if eku.server_auth && eku.client_auth => Role::Peer,
        Some(eku) if eku.client_auth && !eku.server_auth => Role::Client,
        _ => Role::Server,
    }
}
