//! oxcert's tests, in one binary: the real `oxcert` binary (as cfssl and cfssljson, as
//! `oxcert cluster`, as the TLS doctor) in temp dirs, judged against openssl, the real cfssl
//! 1.2, etcd 3.4 and oxcd, through oxcd-testkit (every command bounded in time, every server
//! killed when its test ends). One module per subject; the helpers here run oxcert.

mod cfssl_compat;
mod check;
mod cluster;
mod etcd_interop;
mod oxcd_interop;

use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use oxcd_testkit::pki::tutorial::{sh, CA_CSR, TLDR as TUTORIAL_TLDR};
pub use oxcd_testkit::pki::CA_CONFIG;
pub use oxcd_testkit::{require, run, Output};

pub fn oxcert() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxcert"))
}

pub fn ox(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(oxcert()).args(args).current_dir(dir), b"")
}

pub fn ox_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    run(
        Command::new(oxcert()).args(args).current_dir(dir),
        stdin.as_bytes(),
    )
}

/// `bin/cfssl` and `bin/cfssljson` linking to oxcert inside `dir`; returns the bin dir.
pub fn compat_links(dir: &Path) -> PathBuf {
    links(&dir.join("bin"), &oxcert(), &oxcert())
}

/// `realbin/cfssl` and `realbin/cfssljson` linking to the real cfssl 1.2 inside `dir`;
/// returns the bin dir.
pub fn real_cfssl_links(dir: &Path) -> PathBuf {
    links(
        &dir.join("realbin"),
        &require("cfssl"),
        &require("cfssljson"),
    )
}

fn links(bin: &Path, cfssl: &Path, cfssljson: &Path) -> PathBuf {
    std::fs::create_dir_all(bin).expect("mkdir bin");
    symlink(cfssl, bin.join("cfssl")).expect("symlink");
    symlink(cfssljson, bin.join("cfssljson")).expect("symlink");
    bin.to_path_buf()
}

/// Runs the tutorial's certificate commands in `dir` through oxcert's cfssl/cfssljson links;
/// `extra_host` (the address a test's server listens on) is added to every certificate.
pub fn tutorial_pki(dir: &Path, extra_host: Option<&str>) {
    let bin = compat_links(dir);
    let version = sh(dir, &bin, "cfssl version").ok();
    assert!(
        version.stdout.contains("oxcert"),
        "cfssl on PATH is not oxcert: {}",
        version.stdout
    );
    oxcd_testkit::pki::tutorial::make(dir, &bin, extra_host);
}

pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    run(
        Command::new(require("openssl")).args(args).current_dir(dir),
        b"",
    )
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
