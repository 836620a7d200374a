//! check commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Subcommand, Debug)]
pub enum CheckCmd {
    Todo { args: Vec<String> },
}

pub async fn run(_ctx: &Ctx, _a: CheckCmd) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
