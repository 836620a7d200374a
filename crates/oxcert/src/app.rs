//! The `oxcert` command line: cfssl's commands under their own names, plus `cluster` and `check`.

use crate::Failure;

pub fn main(args: &[String]) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("gencert") | Some("genkey") | Some("print-defaults") | Some("version") => {
            crate::cfssl::main(args)
        }
        Some("json") => crate::cfssljson::main(&args[1..]),
        _ => Err(Failure::Exit(2)),
    }
}
