//! Writing a set of files all or nothing: each goes to a temporary file beside its target
//! (created with its final mode, so a key is never readable by others, not even briefly),
//! is synced, and only when every one is written are they renamed into place. A failure
//! before the renames removes the temporaries and leaves the targets untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

pub const KEY_MODE: u32 = 0o600;
pub const PUBLIC_MODE: u32 = 0o644;

#[derive(Debug, Clone)]
pub struct OutFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl OutFile {
    pub fn new(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>, mode: u32) -> OutFile {
        OutFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        }
    }
}

pub fn write_all(files: &[OutFile]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    for file in files {
        match write_temporary(file) {
            Ok(tmp) => written.push((tmp, &file.path)),
            Err(e) => {
                remove_all(&written);
                return Err(e);
            }
        }
    }
    for (index, (tmp, target)) in written.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, target) {
            remove_all(&written[index..]);
            return Err(anyhow!("cannot write {}: {e}", target.display()));
        }
    }
    Ok(())
}

fn remove_all(written: &[(PathBuf, &Path)]) {
    for (tmp, _) in written {
        let _ = fs::remove_file(tmp);
    }
}

fn write_temporary(file: &OutFile) -> Result<PathBuf> {
    let name = file
        .path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", file.path.display()))?;
    let dir = match file.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&tmp)?;
        out.write_all(&file.contents)?;
        out.sync_all()
    })();
    result
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", file.path.display()))?;
    Ok(tmp)
}

/// Reads a file named on the command line, or stdin for `-`.
pub fn read_input(path: &str, what: &str) -> Result<(String, String)> {
    if path == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok((text, "stdin".to_string()));
    }
    Ok((read_file(Path::new(path), what)?, path.to_string()))
}

pub fn read_file(path: &Path, what: &str) -> Result<String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| anyhow!("cannot read {what} {}: {}", path.display(), describe(&e)))?;
    Ok(text)
}

/// io::Error without Rust's "(os error 2)" suffix.
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::InvalidData => {
            "it is not UTF-8 text (is it DER? convert it to PEM)".to_string()
        }
        _ => {
            let text = e.to_string();
            text.split(" (os error")
                .next()
                .unwrap_or(&text)
                .to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("a-key.pem");
        let files = [
            OutFile::new(&key, "secret", KEY_MODE),
            OutFile::new(dir.path().join("missing/b.pem"), "x", PUBLIC_MODE),
        ];
        assert!(write_all(&files).is_err());
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
        write_all(&files[..1]).expect("write");
        let mode = fs::metadata(&key).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
