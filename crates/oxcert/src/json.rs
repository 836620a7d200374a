//! Reading cfssl's JSON files the way Go's encoding/json does: field names match
//! case-insensitively, unknown fields are ignored (and reported), and a syntax error
//! says where it is.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

/// Parses `text`; `source` names it in errors ("ca-csr.json", "stdin").
pub fn parse(text: &str, source: &str) -> Result<Value> {
    if text.trim().is_empty() {
        bail!("{source} is empty: expected a JSON object");
    }
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        anyhow!(
            "{source}: malformed JSON at line {}, column {}: {message}",
            e.line(),
            e.column()
        )
    })
}

/// The object at `value`, or an error naming `path`.
pub fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| anyhow!("{path} must be a JSON object, found {}", kind(value)))
}

/// A field by name, exact match first, then case-insensitively as Go does. `null` is absent.
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

pub fn string(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<String>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("{path}.{name} must be a string, found {}", kind(other)),
    }
}

pub fn uint(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<u32>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| anyhow!("{path}.{name} must be a whole number, found {n}")),
        Some(other) => bail!("{path}.{name} must be a number, found {}", kind(other)),
    }
}

pub fn boolean(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<bool>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => bail!("{path}.{name} must be true or false, found {}", kind(other)),
    }
}

pub fn strings(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<Vec<String>>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => bail!("{path}.{name}[{i}] must be a string, found {}", kind(other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => bail!(
            "{path}.{name} must be a list of strings, found {}",
            kind(other)
        ),
    }
}

/// Field names in `obj` that are none of `known` (compared as Go compares them).
pub fn unknown_fields(obj: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    obj.keys()
        .filter(|k| !known.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .cloned()
        .collect()
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where() {
        let err = parse(
            "{\n  \"CN\": \"x\",\n  \"hosts\": [\"a\" \"b\"]\n}",
            "csr.json",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("csr.json: malformed JSON at line 3, column"),
            "{text}"
        );
        assert!(parse("  ", "stdin")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn case_insensitive() {
        let v = parse(r#"{"cn":"x","Hosts":null}"#, "t").expect("parse");
        let obj = object(&v, "csr").expect("object");
        assert_eq!(string(obj, "CN", "csr").expect("cn"), Some("x".into()));
        assert_eq!(strings(obj, "hosts", "csr").expect("hosts"), None);
        assert!(uint(obj, "CN", "csr").is_err());
    }
}
