//! The `cfssljson` command line: cfssl's JSON on stdin (or `-f FILE`) becomes
//! `NAME.pem`, `NAME-key.pem` (mode 0600) and `NAME.csr`, written all or nothing.

use anyhow::{anyhow, bail, Result};
use oxcd_gocompat::flag::{Flag, Parsed};
use serde_json::Value;

use crate::cfssl::parse_flags;
use crate::json;
use crate::output::{read_input, write_all, OutFile, KEY_MODE, PUBLIC_MODE};
use crate::Failure;

const FLAGS: &[Flag] = &[
    Flag::boolean(
        "bare",
        "the response from CFSSL is not wrapped in the API standard response",
    ),
    Flag::value("f", "JSON input (default \"-\")"),
    Flag::boolean("stdout", "output the response instead of saving to a file"),
];

const USAGE: &str = "Usage of cfssljson:\n  cfssljson [-f FILE] [-bare] [-stdout] NAME\n\n";

/// (field names cfssl may use, file suffix, mode)
const OUTPUTS: &[(&[&str], &str, u32)] = &[
    (&["cert", "certificate"], ".pem", PUBLIC_MODE),
    (&["key", "private_key"], "-key.pem", KEY_MODE),
    (&["csr", "certificate_request"], ".csr", PUBLIC_MODE),
];

pub fn main(args: &[String]) -> Result<(), Failure> {
    let parsed = parse_flags(FLAGS, USAGE, args)?;
    run(&parsed).map_err(Failure::Error)
}

fn run(parsed: &Parsed) -> Result<()> {
    let to_stdout = parsed.is_set("stdout");
    let basename = match parsed.args.as_slice() {
        [name] => Some(name.as_str()),
        [] if to_stdout => None,
        [] => bail!(
            "cfssljson needs a NAME for the files it writes (NAME.pem, NAME-key.pem, NAME.csr)"
        ),
        more => bail!(
            "cfssljson takes one NAME, got {}: {}",
            more.len(),
            more.join(" ")
        ),
    };
    let (text, source) = read_input(parsed.non_empty("f").unwrap_or("-"), "input file")?;
    if text.trim().is_empty() && source == "stdin" {
        bail!(
            "no JSON on stdin: the command before the pipe printed nothing (see its error above)"
        );
    }
    let value = json::parse(&text, &source)?;
    let response = unwrap_response(&value, parsed.is_set("bare"))?;
    let mut files = Vec::new();
    for (fields, suffix, mode) in OUTPUTS {
        let Some(found) = fields.iter().find_map(|f| json::field(response, f)) else {
            continue;
        };
        let Value::String(contents) = found else {
            bail!(
                "{source}: field {} must be a string, found {}",
                fields[0],
                json::kind(found)
            );
        };
        files.push((*suffix, contents.clone(), *mode));
    }
    if files.is_empty() {
        bail!("{source} has no cert, key or csr field: nothing to write");
    }
    match basename {
        None => {
            for (_, contents, _) in &files {
                print!("{contents}");
            }
            Ok(())
        }
        Some(name) => write_all(
            &files
                .into_iter()
                .map(|(suffix, contents, mode)| {
                    OutFile::new(format!("{name}{suffix}"), contents, mode)
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// The object holding the PEM fields: the input itself with `-bare`, else cfssl's API
/// response `{"success":…,"result":{…}}` (a bare object is accepted too).
fn unwrap_response(value: &Value, bare: bool) -> Result<&serde_json::Map<String, Value>> {
    let obj = json::object(value, "the input")?;
    if bare {
        return Ok(obj);
    }
    if json::field(obj, "success") == Some(&Value::Bool(false)) {
        let errors = json::field(obj, "errors")
            .map(Value::to_string)
            .unwrap_or_default();
        return Err(anyhow!("the cfssl response reports failure: {errors}"));
    }
    match json::field(obj, "result") {
        Some(result) => json::object(result, "result"),
        None => Ok(obj),
    }
}
