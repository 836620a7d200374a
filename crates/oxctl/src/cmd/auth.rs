//! auth commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Subcommand, Debug)]
pub enum AuthCmd {
    Todo { args: Vec<String> },
}

pub async fn auth(_ctx: &Ctx, _a: AuthCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    Todo { args: Vec<String> },
}

pub async fn user(_ctx: &Ctx, _a: UserCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Subcommand, Debug)]
pub enum RoleCmd {
    Todo { args: Vec<String> },
}

pub async fn role(_ctx: &Ctx, _a: RoleCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
