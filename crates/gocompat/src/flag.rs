//! Command lines in the syntax of Go's `flag` package, which etcd and cfssl use, with its
//! error strings.
//!
//! Accepted: `-name` and `--name` (booleans only), `-name=value` and `--name=value` (any
//! flag; the only way to give a boolean a value), `-name value` and `--name value`
//! (non-booleans; the value may start with `-`). `--` ends the flags; `-` alone is an
//! argument (stdin). A flag given twice keeps its last value. `-h`, `-help` and `--help` ask
//! for help unless a flag has that name.

use crate::quote::quote_str;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-name` alone means true; `-name=false` is the only way to say false.
    Bool,
    /// Takes `=value` or the next argument.
    Value,
}

/// One flag: its name (without dashes), kind, default and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as text (`false` for booleans unless set with [`Flag::default`]).
    pub default: &'static str,
    pub usage: &'static str,
}

impl Flag {
    /// A boolean flag, false unless given.
    pub const fn boolean(name: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Bool,
            default: "false",
            usage,
        }
    }

    /// A flag that takes a value, empty unless given.
    pub const fn value(name: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Value,
            default: "",
            usage,
        }
    }

    /// The same flag with another default.
    pub const fn default(self, default: &'static str) -> Flag {
        Flag { default, ..self }
    }
}

/// Why a command line did not parse: Go's messages, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {} for -{name}: parse error", quote_str(.value))]
    BadBool { name: String, value: String },
    /// `---name`, `-=x`: the whole argument.
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// `-h`, `-help` or `--help` with no flag of that name: the caller prints its usage.
    #[error("flag: help requested")]
    Help,
}

/// The flags given, in order, and the arguments that are not flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Each flag given, with its value (`true` or `false` for booleans).
    pub values: Vec<(&'static str, String)>,
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

    /// Whether a boolean flag was given as true.
    pub fn is_set(&self, name: &str) -> bool {
        self.value(name) == Some("true")
    }
}

/// Parses as Go's `FlagSet.Parse` does: flags end at the first argument that is not one
/// (or after `--`); that argument and all after it are [`Parsed::args`].
pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, FlagError> {
    parse_with(flags, args, Positionals::EndFlags)
}

/// Like [`parse`], but flags may also follow arguments (`cfssl gencert csr.json -initca`), as
/// a reader expects; only `--` ends the flags.
pub fn parse_interleaved(flags: &[Flag], args: &[String]) -> Result<Parsed, FlagError> {
    parse_with(flags, args, Positionals::Interleaved)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Positionals {
    EndFlags,
    Interleaved,
}

fn parse_with(flags: &[Flag], args: &[String], mode: Positionals) -> Result<Parsed, FlagError> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            parsed.args.extend(rest.cloned());
            break;
        }
        let Some(body) = arg.strip_prefix('-').filter(|b| !b.is_empty()) else {
            parsed.args.push(arg.clone());
            if mode == Positionals::EndFlags {
                parsed.args.extend(rest.cloned());
                break;
            }
            continue;
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        if body.is_empty() || body.starts_with(['-', '=']) {
            return Err(FlagError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            if name == "h" || name == "help" {
                return Err(FlagError::Help);
            }
            return Err(FlagError::Unknown(name.to_string()));
        };
        let value = match (flag.kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match parse_bool(v) {
                Some(b) => b.to_string(),
                None => {
                    return Err(FlagError::BadBool {
                        name: name.to_string(),
                        value: v.to_string(),
                    })
                }
            },
            (Kind::Value, Some(v)) => v.to_string(),
            (Kind::Value, None) => rest
                .next()
                .cloned()
                .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
        };
        parsed.values.push((flag.name, value));
    }
    Ok(parsed)
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The flag list as Go 1.4's `PrintDefaults` wrote it, and cfssl still prints it:
/// `  -name=default: usage`, string defaults quoted.
pub fn print_defaults(flags: &[Flag]) -> String {
    let mut out = String::new();
    for flag in flags {
        let default = match flag.kind {
            Kind::Bool => flag.default.to_string(),
            Kind::Value => quote_str(flag.default),
        };
        out.push_str(&format!("  -{}={}: {}\n", flag.name, default, flag.usage));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag::boolean("initca", "make a CA"),
        Flag::value("config", "path to the config"),
        Flag::value("ca", "").default("ca.pem"),
        Flag::boolean("bare", ""),
    ];

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn go(args: &[&str]) -> Result<Parsed, FlagError> {
        parse(FLAGS, &strings(args))
    }

    /// Arguments, the flag values they give, the arguments left.
    type Form<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

    /// The accepted forms, and what each one yields.
    #[test]
    fn forms() {
        let table: &[Form<'_>] = &[
            (&["-initca"], &[("initca", "true")], &[]),
            (&["--initca"], &[("initca", "true")], &[]),
            (&["-initca=false"], &[("initca", "false")], &[]),
            (&["--initca=T"], &[("initca", "true")], &[]),
            (&["--initca=0"], &[("initca", "false")], &[]),
            (&["-config=c.json"], &[("config", "c.json")], &[]),
            (&["--config", "c.json"], &[("config", "c.json")], &[]),
            (&["-config", "-x"], &[("config", "-x")], &[]),
            (&["-config="], &[("config", "")], &[]),
            (&["-config=a=b"], &[("config", "a=b")], &[]),
            // A boolean does not take the next argument: it is the first non-flag.
            (&["-initca", "false"], &[("initca", "true")], &["false"]),
            (&["--", "-initca"], &[], &["-initca"]),
            (&["-", "-initca"], &[], &["-", "-initca"]),
            (&["csr.json", "-bare"], &[], &["csr.json", "-bare"]),
            (&["-ca=a", "-ca", "b"], &[("ca", "a"), ("ca", "b")], &[]),
        ];
        for &(args, values, positionals) in table {
            let p = go(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let got: Vec<(&str, &str)> = p.values.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(got, values, "{args:?}");
            assert_eq!(p.args, positionals, "{args:?}");
        }
    }

    /// Go's errors, word for word.
    #[test]
    fn errors() {
        let table: &[(&[&str], &str)] = &[
            (&["-x"], "flag provided but not defined: -x"),
            (&["--nope=1"], "flag provided but not defined: -nope"),
            (&["-config"], "flag needs an argument: -config"),
            (
                &["--initca=yes"],
                r#"invalid boolean value "yes" for -initca: parse error"#,
            ),
            (
                &["-initca="],
                r#"invalid boolean value "" for -initca: parse error"#,
            ),
            (&["---config=x"], "bad flag syntax: ---config=x"),
            (&["-=x"], "bad flag syntax: -=x"),
            (&["--=x"], "bad flag syntax: --=x"),
            (&["-h"], "flag: help requested"),
            (&["--help"], "flag: help requested"),
        ];
        for &(args, want) in table {
            let err = go(args).expect_err(args[0]);
            assert_eq!(err.to_string(), want, "{args:?}");
        }
        assert_eq!(go(&["-help"]), Err(FlagError::Help));
    }

    #[test]
    fn interleaved_flags_follow_arguments() {
        let p = parse_interleaved(FLAGS, &strings(&["csr.json", "-initca", "-", "--bare"]))
            .expect("parse");
        assert!(p.is_set("initca") && p.is_set("bare"));
        assert_eq!(p.args, ["csr.json", "-"]);
        let p = parse_interleaved(FLAGS, &strings(&["a", "--", "-bare"])).expect("parse");
        assert!(!p.is_set("bare"));
        assert_eq!(p.args, ["a", "-bare"]);
        assert_eq!(
            parse_interleaved(FLAGS, &strings(&["a", "-nope"])),
            Err(FlagError::Unknown("nope".into()))
        );
    }

    #[test]
    fn last_value_wins() {
        let p = go(&["-ca=a", "--ca", "b", "-config="]).expect("parse");
        assert_eq!(p.value("ca"), Some("b"));
        assert_eq!(p.non_empty("config"), None);
        assert_eq!(p.value("bare"), None);
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_as_cfssl_prints_them() {
        assert_eq!(
            print_defaults(FLAGS),
            "  -initca=false: make a CA\n  -config=\"\": path to the config\n  -ca=\"ca.pem\": \n  -bare=false: \n"
        );
    }
}
