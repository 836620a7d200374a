//! Command lines in the forms of Go's `flag` package, as cfssl and cfssljson read them.
//!
//! Accepted: `-name` and `--name` (booleans), `-name=value` and `--name=value` (any flag),
//! `-name value` (non-booleans). `--` ends the flags and `-` alone is an argument (stdin).
//! One deliberate difference from Go: flags may also follow positional arguments, so
//! `cfssl gencert csr.json -initca` works as a reader would expect.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub usage: &'static str,
}

pub const fn bool_flag(name: &'static str, usage: &'static str) -> Flag {
    Flag {
        name,
        kind: Kind::Bool,
        usage,
    }
}

pub const fn value_flag(name: &'static str, usage: &'static str) -> Flag {
    Flag {
        name,
        kind: Kind::Value,
        usage,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{name}: use true or false")]
    BadBool { name: String, value: String },
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// `-h`, `-help` or `--help`: the caller prints its usage and exits 0.
    #[error("help requested")]
    Help,
}

#[derive(Debug, Default)]
pub struct Parsed {
    values: Vec<(&'static str, String)>,
    pub args: Vec<String>,
}

impl Parsed {
    /// The last value given for a flag (Go keeps the last one too).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value, or None.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.value(name).filter(|v| !v.is_empty())
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.value(name) == Some("true")
    }
}

pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, FlagError> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.args.extend(rest.cloned());
            break;
        }
        let Some(body) = arg.strip_prefix('-').filter(|b| !b.is_empty()) else {
            parsed.args.push(arg.clone());
            continue;
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadSyntax(arg.clone()));
        }
        let (name, inline_value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            if name == "h" || name == "help" {
                return Err(FlagError::Help);
            }
            return Err(FlagError::Unknown(name.to_string()));
        };
        let value = match (flag.kind, inline_value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => parse_bool(name, &v)?.to_string(),
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => rest
                .next()
                .cloned()
                .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
        };
        parsed.values.push((flag.name, value));
    }
    Ok(parsed)
}

/// Go's strconv.ParseBool.
fn parse_bool(name: &str, value: &str) -> Result<bool, FlagError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(FlagError::BadBool {
            name: name.to_string(),
            value: value.to_string(),
        }),
    }
}

/// The flag list in Go's `-name=default: usage` style, as cfssl prints it.
pub fn usage(flags: &[Flag]) -> String {
    let mut out = String::new();
    for flag in flags {
        let default = match flag.kind {
            Kind::Bool => "false",
            Kind::Value => "\"\"",
        };
        let _ = writeln!(out, "  -{}={}: {}", flag.name, default, flag.usage);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        bool_flag("initca", ""),
        value_flag("config", ""),
        value_flag("ca", ""),
        bool_flag("bare", ""),
    ];

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_forms() {
        let p = parse(
            FLAGS,
            &strings(&[
                "--initca=true",
                "-config",
                "c.json",
                "--ca=x.pem",
                "-",
                "--bare",
            ]),
        )
        .expect("parse");
        assert!(p.is_set("initca"));
        assert!(p.is_set("bare"));
        assert_eq!(p.value("config"), Some("c.json"));
        assert_eq!(p.value("ca"), Some("x.pem"));
        assert_eq!(p.args, vec!["-"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(FLAGS, &strings(&["-nope"])).unwrap_err(),
            FlagError::Unknown("nope".into())
        );
        assert_eq!(
            parse(FLAGS, &strings(&["-config"])).unwrap_err(),
            FlagError::MissingValue("config".into())
        );
        assert!(matches!(
            parse(FLAGS, &strings(&["-initca=yes"])),
            Err(FlagError::BadBool { .. })
        ));
        assert_eq!(
            parse(FLAGS, &strings(&["--help"])).unwrap_err(),
            FlagError::Help
        );
        let p = parse(FLAGS, &strings(&["-initca=false", "--", "-bare"])).expect("parse");
        assert!(!p.is_set("initca"));
        assert_eq!(p.args, vec!["-bare"]);
    }
}
