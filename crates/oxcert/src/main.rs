//! The `oxcert` binary; also runs as `cfssl` or `cfssljson` when invoked through a link of that name.

fn main() -> std::process::ExitCode {
    oxcert::run(std::env::args_os().collect())
}
