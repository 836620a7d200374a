//! The `oxcert` binary; also runs as `cfssl` or `cfssljson` when invoked through a link of that name.

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`oxcert … | head`) would panic;
    // the default action ends the process quietly, as it does for cfssl.
    // SAFETY: called before any thread starts; SIG_DFL is a valid handler for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    oxcert::run(std::env::args_os().collect())
}
