//! mirror commands.

use crate::ctx::{CtlError, CtlResult, Ctx, EXIT_BAD_FEATURE};

#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    pub args: Vec<String>,
}

pub async fn run(_ctx: &Ctx, _a: MirrorArgs) -> CtlResult {
    Err(CtlError::new(EXIT_BAD_FEATURE, "not implemented yet"))
}
