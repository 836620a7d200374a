//! oxcert: cfssl/cfssljson-compatible certificates, a whole cluster's PKI in one command
//! (`oxcert cluster`), and a doctor for TLS setups (`oxcert check`).
//!
//! The binary answers to three names: as `cfssl` or `cfssljson` (a link) it behaves as
//! that tool, so cfssl tutorials run unchanged; as `oxcert` it adds its own commands.

pub mod app;
pub mod cfssl;
pub mod cfssljson;
pub mod check;
pub mod cluster;
pub mod config;
pub mod inspect;
pub mod issue;
pub mod json;
pub mod keys;
pub mod log;
pub mod member;
pub mod output;
pub mod pem;
pub mod request;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// How a command ends when it does not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Print the error (with its context chain) and exit 1.
    Error(anyhow::Error),
    /// Already reported: exit with this status (0 after help, 2 for usage, 1 for findings).
    Exit(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Error(e)
    }
}

/// Runs the program for `argv` (argv[0] included) and returns its exit status.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    let argv0 = argv.first().cloned().unwrap_or_default();
    let program = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "oxcert".to_string());
    let args: Result<Vec<String>, OsString> = argv
        .into_iter()
        .skip(1)
        .map(OsString::into_string)
        .collect();
    let args = match args {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("{program}: argument {bad:?} is not valid UTF-8");
            return ExitCode::from(2);
        }
    };
    let result = match program.as_str() {
        "cfssl" => cfssl::main(&args),
        "cfssljson" => cfssljson::main(&args),
        _ => app::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Error(e)) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
