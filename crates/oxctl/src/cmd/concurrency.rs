//! concurrency commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    pub args: Vec<String>,
}

pub async fn lock(_ctx: &Ctx, _a: LockArgs) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}

#[derive(clap::Args, Debug)]
pub struct ElectArgs {
    pub args: Vec<String>,
}

pub async fn elect(_ctx: &Ctx, _a: ElectArgs) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
