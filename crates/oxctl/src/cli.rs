//! Command line: etcdctl's command tree over the global flags (`ctx::Global`), cobra's
//! reactions to bad command lines, and dispatch. Each command's arguments, and the checks
//! etcdctl does on them with its messages, live with the command under `cmd/`.

use std::ffi::OsString;
use std::io::Write as _;

use clap::{Parser, Subcommand};
use oxcd_gocompat::timestamp;
use time::OffsetDateTime;

use crate::cmd;
use crate::ctx::{Ctx, Global};
use crate::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};

#[derive(Parser, Debug)]
#[command(
    name = "etcdctl",
    about = "A simple command line client for etcd3.",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Gets the key or a range of keys
    Get(cmd::kv::GetArgs),
    /// Puts the given key into the store
    Put(cmd::kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(cmd::kv::DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(cmd::kv::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(cmd::kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(cmd::watch::WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(cmd::lease::LeaseCmd),
    /// Membership related commands
    #[command(subcommand)]
    Member(cmd::cluster::MemberCmd),
    /// Endpoint related commands
    #[command(subcommand)]
    Endpoint(cmd::cluster::EndpointCmd),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(cmd::maintenance::AlarmCmd),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(cmd::maintenance::DefragArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(cmd::maintenance::SnapshotCmd),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader(cmd::maintenance::MoveLeaderArgs),
    /// Acquires a named lock
    Lock(cmd::concurrency::LockArgs),
    /// Observes and participates in leader election
    Elect(cmd::concurrency::ElectArgs),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(cmd::auth::AuthCmd),
    /// User related commands
    #[command(subcommand)]
    User(cmd::auth::UserCmd),
    /// Role related commands
    #[command(subcommand)]
    Role(cmd::auth::RoleCmd),
    /// Prints the version of etcdctl
    Version,
    /// commands for checking properties of the etcd cluster
    #[command(subcommand)]
    Check(cmd::check::CheckCmd),
    /// Makes a mirror at the destination etcd cluster
    MakeMirror(cmd::mirror::MirrorArgs),
    /// Moves an etcd cluster's data into an empty oxcd cluster, keeping every revision (oxcd's own)
    #[command(subcommand)]
    Migrate(cmd::migrate::MigrateCmd),
}

/// Parses, runs and reports; returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let first_word = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| !a.starts_with('-'));
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return clap_error(e, first_word.as_deref()),
    };
    if let Some(code) = env_conflict(&matches) {
        return code;
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e, None),
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::io::stdout().flush();
            if !e.msg.is_empty() {
                eprintln!("Error: {}", e.msg);
            }
            e.code
        }
    }
}

/// etcdctl refuses a global flag given both on the command line and in its `ETCDCTL_*`
/// variable, with capnslog's fatal line.
fn env_conflict(matches: &clap::ArgMatches) -> Option<i32> {
    let sub = matches.subcommand().map(|(_, m)| m);
    for arg in Cli::command_for_env().get_arguments() {
        let (Some(env), id) = (arg.get_env(), arg.get_id().as_str()) else {
            continue;
        };
        let on_command_line = |m: &clap::ArgMatches| {
            m.try_get_raw(id).is_ok()
                && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        let given = on_command_line(matches)
            || sub.is_some_and(|m| {
                on_command_line(m) || m.subcommand().is_some_and(|(_, m)| on_command_line(m))
            });
        if given && std::env::var_os(env).is_some() {
            eprintln!(
                "{} C | pkg/flags: conflicting environment variable {:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                timestamp::capnslog(OffsetDateTime::now_utc()),
                env.to_string_lossy()
            );
            return Some(EXIT_ERROR);
        }
    }
    None
}

impl Cli {
    fn command_for_env() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }
}

/// etcdctl's (cobra's) reactions to bad command lines. `first_word` is the first argument
/// that is not a flag: an unknown word there is an unknown command, deeper it shows help.
fn clap_error(e: clap::Error, first_word: Option<&str>) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::UnknownArgument => {
            let arg = e
                .get(clap::error::ContextKind::InvalidArg)
                .map(|v| v.to_string())
                .unwrap_or_default();
            // cobra reports it, prints the usage (not reproduced here), then etcdctl again.
            let line = format!(
                "Error: unknown flag: {}",
                arg.split('=').next().unwrap_or_default()
            );
            eprint!("{line}\n\n{line}\n");
            EXIT_ERROR
        }
        ErrorKind::InvalidSubcommand => {
            let sub = e
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(|v| v.to_string())
                .unwrap_or_default();
            if first_word != Some(sub.as_str()) {
                println!("{}", e.render().to_string().trim_end());
                return 0;
            }
            let line = format!("Error: unknown command {sub:?} for \"etcdctl\"");
            eprint!("{line}\nRun 'etcdctl --help' for usage.\n{line}\n");
            EXIT_ERROR
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = Cli::command_for_env().print_help();
            0
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("Error: {}", first.trim_start_matches("error: "));
            EXIT_BAD_ARGS
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CtlError> {
    if let Command::Version = cli.command {
        print!("etcdctl version: 3.4.23\nAPI version: 3.4\n");
        return Ok(());
    }
    let mut ctx = Ctx::from_flags(&cli.global)?;
    match cli.command {
        Command::Get(a) => cmd::kv::get(&mut ctx, a).await,
        Command::Put(a) => cmd::kv::put(&ctx, a).await,
        Command::Del(a) => cmd::kv::del(&ctx, a).await,
        Command::Txn(a) => cmd::kv::txn(&ctx, a).await,
        Command::Compaction(a) => cmd::kv::compaction(&ctx, a).await,
        Command::Watch(a) => cmd::watch::run(&ctx, a).await,
        Command::Lease(c) => cmd::lease::run(&ctx, c).await,
        Command::Member(c) => cmd::cluster::member(&ctx, c).await,
        Command::Endpoint(c) => cmd::cluster::endpoint(&ctx, c).await,
        Command::Alarm(c) => cmd::maintenance::alarm(&ctx, c).await,
        Command::Defrag(a) => cmd::maintenance::defrag(&ctx, a).await,
        Command::Snapshot(c) => cmd::maintenance::snapshot(&ctx, c).await,
        Command::MoveLeader(a) => cmd::maintenance::move_leader(&ctx, a).await,
        Command::Lock(a) => cmd::concurrency::lock(&ctx, a).await,
        Command::Elect(a) => cmd::concurrency::elect(&ctx, a).await,
        Command::Auth(c) => cmd::auth::auth(&ctx, c).await,
        Command::User(c) => cmd::auth::user(&ctx, c).await,
        Command::Role(c) => cmd::auth::role(&ctx, c).await,
        Command::Check(c) => cmd::check::run(&ctx, c).await,
        Command::MakeMirror(a) => cmd::mirror::run(&ctx, a).await,
        Command::Migrate(c) => cmd::migrate::run(&cli.global, c).await,
        Command::Version => Ok(()),
    }
}
