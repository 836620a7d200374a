//! maintenance commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Subcommand, Debug)]
pub enum AlarmCmd {
    Todo { args: Vec<String> },
}

pub async fn alarm(_ctx: &Ctx, _a: AlarmCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Args, Debug)]
pub struct DefragArgs {
    pub args: Vec<String>,
}

pub async fn defrag(_ctx: &Ctx, _a: DefragArgs) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    Todo { args: Vec<String> },
}

pub async fn snapshot(_ctx: &Ctx, _a: SnapshotCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Args, Debug)]
pub struct MoveLeaderArgs {
    pub args: Vec<String>,
}

pub async fn move_leader(_ctx: &Ctx, _a: MoveLeaderArgs) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
