//! The `cfssl` command line: `gencert`, `genkey`, `print-defaults` and `version`, with
//! cfssl 1.2's flags, JSON output on stdout and log lines on stderr.

use anyhow::{anyhow, bail, Context as _, Result};
use oxcd_gocompat::flag::{self, Flag, FlagError, Parsed};

use crate::config::{Config, DEFAULT_CONFIG_JSON, DEFAULT_CSR_JSON};
use crate::issue::{self, Authority};
use crate::keys::PrivateKey;
use crate::log::Log;
use crate::output::{read_file, read_input};
use crate::request::{split_hostnames, CertRequest};
use crate::Failure;

const GENCERT_FLAGS: &[Flag] = &[
    Flag::boolean("initca", "initialise new CA"),
    Flag::value("remote", "remote CFSSL server (not supported by oxcert)"),
    Flag::value("ca", "CA used to sign the new certificate"),
    Flag::value("ca-key", "CA private key"),
    Flag::value("config", "path to configuration file"),
    Flag::value(
        "hostname",
        "Hostname for the cert, could be a comma-separated hostname list",
    ),
    Flag::value("profile", "signing profile to use"),
    Flag::value(
        "label",
        "key label to use in remote CFSSL server (not supported by oxcert)",
    ),
    Flag::value("loglevel", "Log level (0 = DEBUG, 5 = FATAL)"),
];

const GENCERT_USAGE: &str = "\tcfssl gencert -- generate a new key and signed certificate

Usage of gencert:
    Generate a new key and cert from CSR:
        cfssl gencert -initca CSRJSON
        cfssl gencert -ca cert -ca-key key [-config config] [-profile profile] [-hostname hostname] CSRJSON

    Re-generate a CA cert with the CA key and CSR:
        cfssl gencert -initca -ca-key key CSRJSON

Arguments:
        CSRJSON:    JSON file containing the request, use '-' for reading JSON from stdin

Flags:
";

const GENKEY_USAGE: &str = "\tcfssl genkey -- generate a new key and CSR

Usage of genkey:
        cfssl genkey CSRJSON
        cfssl genkey -initca CSRJSON

Arguments:
        CSRJSON:    JSON file containing the request, use '-' for reading JSON from stdin

Flags:
";

const COMMANDS: &str = "Available commands:\n\tgencert\n\tgenkey\n\tprint-defaults\n\tversion\n";

/// Runs `cfssl ARGS…`; `prog` is the name to show in messages.
pub fn main(args: &[String]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("No command is given.\nUsage:\n{COMMANDS}");
        return Err(Failure::Exit(2));
    };
    match command.as_str() {
        "gencert" => gencert(rest),
        "genkey" => genkey(rest),
        "print-defaults" => print_defaults(rest),
        "version" => {
            print!("{}", version());
            Ok(())
        }
        "-h" | "-help" | "--help" | "help" => {
            print!("Usage:\n{COMMANDS}");
            Ok(())
        }
        other => Err(Failure::Error(anyhow!(
            "cfssl command {other:?} is not supported by oxcert (supported: gencert, genkey, print-defaults, version)"
        ))),
    }
}

pub fn version() -> String {
    format!(
        "Version: 1.2.0\nRevision: oxcert {}\nRuntime: rust\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses flags (which may also follow the arguments), printing usage for `-h` or a bad flag
/// the way Go's flag package does.
pub fn parse_flags(flags: &[Flag], usage: &str, args: &[String]) -> Result<Parsed, Failure> {
    match flag::parse_interleaved(flags, args) {
        Ok(parsed) => Ok(parsed),
        Err(FlagError::Help) => {
            print!("{usage}{}", flag::print_defaults(flags));
            Err(Failure::Exit(0))
        }
        Err(e) => {
            eprint!("{e}\n{usage}{}", flag::print_defaults(flags));
            Err(Failure::Exit(2))
        }
    }
}

fn log_for(parsed: &Parsed) -> Result<Log> {
    let level = match parsed.non_empty("loglevel") {
        None => Log::INFO,
        Some(text) => text
            .parse::<u8>()
            .map_err(|_| anyhow!("-loglevel must be a number from 0 to 5, not {text:?}"))?,
    };
    Ok(Log::new(level))
}

/// The one CSRJSON argument, read and parsed, with `-hostname` applied.
fn request(parsed: &Parsed, command: &str) -> Result<(CertRequest, Vec<String>)> {
    let [path] = parsed.args.as_slice() else {
        bail!(
            "{command} takes exactly one CSRJSON argument (a file, or - for stdin), got {}",
            parsed.args.len()
        );
    };
    let (text, source) = read_input(path, "CSR file")?;
    let request = CertRequest::parse(&text, &source)?;
    let hosts = match parsed.non_empty("hostname") {
        Some(list) => split_hostnames(list),
        None => request.hosts.clone(),
    };
    Ok((request, hosts))
}

fn gencert(args: &[String]) -> Result<(), Failure> {
    let parsed = parse_flags(GENCERT_FLAGS, GENCERT_USAGE, args)?;
    gencert_parsed(&parsed).map_err(Failure::Error)
}

fn gencert_parsed(parsed: &Parsed) -> Result<()> {
    if parsed.non_empty("remote").is_some() || parsed.non_empty("label").is_some() {
        bail!("remote signing (-remote, -label) is not supported by oxcert; sign locally with -ca and -ca-key");
    }
    let log = log_for(parsed)?;
    let (mut request, hosts) = request(parsed, "gencert")?;
    for warning in &request.warnings {
        log.warning(warning);
    }
    let issued = if parsed.is_set("initca") {
        let key = match parsed.non_empty("ca-key") {
            Some(path) => Some(load_key(path)?),
            None => {
                log.info("generating a new CA key and certificate from CSR");
                None
            }
        };
        request.hosts = hosts;
        issue::init_ca(&request, key, &log)?
    } else {
        let ca_path = parsed.non_empty("ca").ok_or_else(|| {
            anyhow!("-ca is required to sign a certificate (the CA certificate, e.g. ca.pem); pass -initca to make a new CA instead")
        })?;
        let key_path = parsed.non_empty("ca-key").ok_or_else(|| {
            anyhow!("-ca-key is required with -ca (the CA's private key, e.g. ca-key.pem)")
        })?;
        let config = match parsed.non_empty("config") {
            Some(path) => Config::parse(&read_file(path.as_ref(), "config file")?, path)?,
            None => Config::builtin(),
        };
        // Everything that can be wrong with the inputs is checked before a key is made.
        let profile = config.profile(parsed.value("profile").unwrap_or(""))?;
        let ca_text = read_file(ca_path.as_ref(), "CA certificate")?;
        let ca = Authority::load(&ca_text, ca_path, load_key(key_path)?)?;
        issue::sign(&request, &hosts, &ca, &profile, None, &log)?
    };
    println!("{}", issued.to_json());
    Ok(())
}

fn load_key(path: &str) -> Result<PrivateKey> {
    let text = read_file(path.as_ref(), "CA key")?;
    PrivateKey::from_pem(&text).with_context(|| format!("CA key {path}"))
}

fn genkey(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[
        Flag::boolean("initca", "initialise new CA"),
        Flag::value("config", "path to configuration file (unused)"),
        Flag::value("loglevel", "Log level (0 = DEBUG, 5 = FATAL)"),
    ];
    let parsed = parse_flags(FLAGS, GENKEY_USAGE, args)?;
    if parsed.is_set("initca") {
        return gencert_parsed(&parsed).map_err(Failure::Error);
    }
    (|| -> Result<()> {
        let log = log_for(&parsed)?;
        let (request, hosts) = request(&parsed, "genkey")?;
        let (key_pem, csr_pem) = issue::key_and_csr(&request, &hosts, &log)?;
        let mut map = serde_json::Map::new();
        map.insert("csr".into(), csr_pem.into());
        map.insert("key".into(), key_pem.into());
        println!("{}", serde_json::Value::Object(map));
        Ok(())
    })()
    .map_err(Failure::Error)
}

fn print_defaults(args: &[String]) -> Result<(), Failure> {
    let list = "Default configurations are available for:\n\tconfig\n\tcsr\n";
    match args.first().map(String::as_str) {
        Some("csr") => print!("{DEFAULT_CSR_JSON}"),
        Some("config") => print!("{DEFAULT_CONFIG_JSON}"),
        Some("list") => print!("{list}"),
        Some(other) => {
            eprint!("unknown default {other:?}\n{list}");
            return Err(Failure::Exit(2));
        }
        None => {
            eprint!("print-defaults needs one of: config, csr\n{list}");
            return Err(Failure::Exit(2));
        }
    }
    Ok(())
}
