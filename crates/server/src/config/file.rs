//! etcd's YAML configuration file (`--config-file`, the keys of `etcd.conf.yml.sample`): each
//! top-level key is the flag of the same name, `client-transport-security` and
//! `peer-transport-security` hold the TLS keys of each side. Values are turned into the text
//! the flag would take, then go through the same checks as flags.
//!
//! As in etcd (whose file is JSON-decoded into `embed.Config`), durations are integers of
//! nanoseconds; oxcd also takes Go duration strings (`5s`) there. Lists (`log-outputs`,
//! `cipher-suites`, `allowed-cn`) may be YAML lists or comma-separated strings. Keys etcd
//! does not know are ignored by etcd; here each gets a warning.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::flags::{self, Flag, Kind};
use super::{check_kind, ConfigError};

/// The flags a configuration file sets, with their values as flag text, and one warning per
/// key that means nothing.
pub(super) struct FileFlags {
    pub set: BTreeMap<&'static str, String>,
    pub warnings: Vec<String>,
}

/// Reads and converts the file at `path`.
pub(super) fn load(path: &Path) -> Result<FileFlags, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read --config-file {}: {e}", path.display())))?;
    parse(&text).map_err(|e| ConfigError(format!("--config-file {}: {}", path.display(), e.0)))
}

/// Converts the text of a configuration file.
pub(super) fn parse(text: &str) -> Result<FileFlags, ConfigError> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError(format!("not valid YAML: {e}")))?;
    let mut out = FileFlags {
        set: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let map = match doc {
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        _ => return Err(ConfigError("expected a mapping of keys to values".into())),
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(ConfigError(format!("key {k:?} is not a string")));
        };
        match key {
            "client-transport-security" => security(&mut out, key, "", &v)?,
            "peer-transport-security" => security(&mut out, key, "peer-", &v)?,
            _ => set_key(&mut out, key, key, &v)?,
        }
    }
    Ok(out)
}

/// A key of a transport security section, and the flag it stands for (`prefix` is `peer-`
/// for the peer side). None: no flag on that side.
fn security_flag(prefix: &str, key: &str) -> Option<String> {
    let peer = !prefix.is_empty();
    Some(match (key, peer) {
        ("cert-file" | "key-file" | "trusted-ca-file" | "auto-tls", _) => format!("{prefix}{key}"),
        ("client-cert-auth", _) => format!("{prefix}client-cert-auth"),
        ("crl-file", _) => format!("{}crl-file", if peer { "peer-" } else { "client-" }),
        ("client-cert-file" | "client-key-file", _) => format!("{prefix}{key}"),
        ("allowed-hostname", false) => "client-cert-allowed-hostname".into(),
        ("allowed-hostname", true) => "peer-cert-allowed-hostname".into(),
        ("allowed-cn", true) => "peer-cert-allowed-cn".into(),
        ("skip-client-san-verification", true) => "peer-skip-client-san-verification".into(),
        _ => return None,
    })
}

fn security(
    out: &mut FileFlags,
    section: &str,
    prefix: &str,
    v: &Value,
) -> Result<(), ConfigError> {
    let map = match v {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        _ => return Err(ConfigError(format!("{section}: expected a mapping"))),
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(ConfigError(format!("{section}: key {k:?} is not a string")));
        };
        let shown = format!("{section}.{key}");
        match security_flag(prefix, key) {
            Some(flag) => set_key(out, &shown, &flag, v)?,
            None => out.warnings.push(format!(
                "--config-file: {shown} is not a key oxcd (or etcd) uses on this side; ignored"
            )),
        }
    }
    Ok(())
}

/// Sets the flag `flag` from the value of the file's key `shown`.
fn set_key(out: &mut FileFlags, shown: &str, flag: &str, v: &Value) -> Result<(), ConfigError> {
    if matches!(flag, "config-file" | "version") {
        return Ok(());
    }
    let Some(f) = flags::find(flag) else {
        out.warnings.push(format!(
            "--config-file: unknown key {shown:?} ignored (etcd ignores it too)"
        ));
        return Ok(());
    };
    let Some(text) = value_text(f, v).map_err(|why| ConfigError(format!("{shown}: {why}")))? else {
        return Ok(());
    };
    check_kind(f, &text).map_err(|e| ConfigError(format!("{shown}: {}", e.0)))?;
    out.set.insert(f.name, text);
    Ok(())
}

/// The flag text for a YAML value; None for an empty value (the default stays).
fn value_text(f: &Flag, v: &Value) -> Result<Option<String>, String> {
    let text = match (f.kind, v) {
        (_, Value::Null) => return Ok(None),
        (Kind::Bool, Value::Bool(b)) => b.to_string(),
        (Kind::Bool, Value::String(s)) => s.clone(),
        (Kind::Bool, other) => {
            return Err(format!("expected true or false, found {}", shape(other)))
        }
        (Kind::Uint | Kind::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        (Kind::Uint | Kind::Int, other) => {
            return Err(format!("expected an integer, found {}", shape(other)))
        }
        // etcd decodes durations as integers of nanoseconds.
        (Kind::Duration, Value::Number(n)) => match n.as_u64() {
            Some(ns) => format!("{ns}ns"),
            None => {
                return Err(format!(
                    "expected nanoseconds or a duration such as 5s, found {n}"
                ))
            }
        },
        (Kind::Duration, Value::String(s)) => s.clone(),
        (Kind::Duration, other) => {
            return Err(format!(
                "expected nanoseconds or a duration such as 5s, found {}",
                shape(other)
            ))
        }
        (Kind::Str, Value::String(s)) => s.clone(),
        (Kind::Str, Value::Number(n)) => n.to_string(),
        (Kind::Str, Value::Bool(b)) => b.to_string(),
        (Kind::Str, Value::Sequence(items)) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.clone()),
                    Value::Number(n) => parts.push(n.to_string()),
                    other => {
                        return Err(format!(
                            "expected a list of strings, found {}",
                            shape(other)
                        ))
                    }
                }
            }
            parts.join(",")
        }
        (Kind::Str, other) => return Err(format!("expected a string, found {}", shape(other))),
    };
    Ok(Some(text))
}

fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
