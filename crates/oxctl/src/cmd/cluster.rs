//! cluster commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Subcommand, Debug)]
pub enum MemberCmd {
    Todo { args: Vec<String> },
}

pub async fn member(_ctx: &Ctx, _a: MemberCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Subcommand, Debug)]
pub enum EndpointCmd {
    Todo { args: Vec<String> },
}

pub async fn endpoint(_ctx: &Ctx, _a: EndpointCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
