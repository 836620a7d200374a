//! etcdctl's `txn` grammar: compares (`mod("k") > "0"`), then success ops, then failure ops
//! (`put k v`, `get k`, `del k`), each section ended by an empty line.

use oxcd_api::etcdserverpb::{compare, Compare};

/// Splits a line into words as etcdctl's `argify` does: double-quoted strings are unquoted
/// Go-style, single-quoted strings are taken literally, everything else splits on spaces.
pub fn argify(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, len) = if rest.starts_with('"') {
            let (word, len) = unquote_prefix(rest)?;
            (word, len)
        } else if let Some(inner) = rest.strip_prefix('\'') {
            match inner.find('\'') {
                Some(end) => (inner[..end].to_string(), end + 2),
                None => (inner.to_string(), rest.len()),
            }
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (rest[..end].to_string(), end)
        };
        args.push(word);
        rest = rest[len..].trim_start();
    }
    Ok(args)
}

/// Reads a Go double-quoted (or back-quoted) string at the start of `s`; returns it and the
/// number of bytes it took.
pub fn unquote_prefix(s: &str) -> Result<(String, usize), String> {
    if let Some(inner) = s.strip_prefix('`') {
        let end = inner.find('`').ok_or("unexpected EOF")?;
        return Ok((inner[..end].to_string(), end + 2));
    }
    let inner = s.strip_prefix('"').ok_or("expected quoted string")?;
    let mut out: Vec<u8> = Vec::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let text = String::from_utf8_lossy(&out).into_owned();
                return Ok((text, i + 2));
            }
            '\\' => {
                let (_, e) = chars.next().ok_or("unexpected EOF")?;
                match e {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'v' => out.push(11),
                    '\\' | '"' | '\'' => out.push(e as u8),
                    'x' => {
                        let h: String = (0..2).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        out.push(u8::from_str_radix(&h, 16).map_err(|_| "invalid syntax")?);
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let h: String = (0..n).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        let cp = u32::from_str_radix(&h, 16).map_err(|_| "invalid syntax")?;
                        let ch = char::from_u32(cp).ok_or("invalid syntax")?;
                        out.extend_from_slice(ch.to_string().as_bytes());
                    }
                    _ => return Err("invalid syntax".into()),
                }
            }
            c => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    Err("unexpected EOF".into())
}

/// Parses one compare line, with etcdctl's error messages.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let malformed = || format!("malformed comparison: {line}");
    let (target, rest) = line.split_once('(').ok_or_else(malformed)?;
    let (key, used) = unquote_prefix(rest).map_err(|_| malformed())?;
    let rest = rest[used..]
        .strip_prefix(')')
        .ok_or_else(malformed)?
        .trim_start();
    let op_end = rest.find(char::is_whitespace).ok_or_else(malformed)?;
    let (op, rest) = (&rest[..op_end], rest[op_end..].trim_start());
    let (val, _) = unquote_prefix(rest).map_err(|_| malformed())?;
    let result = match op {
        "=" | "==" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        _ => return Err(format!("malformed comparison: {line} (unknown op {op})")),
    };
    let invalid = || format!("invalid txn compare request: {line}");
    let num = || val.parse::<i64>().map_err(|_| invalid());
    use compare::{CompareTarget as T, TargetUnion as U};
    let (target, union) = match target {
        "ver" | "version" => (T::Version, U::Version(num()?)),
        "c" | "create" => (T::Create, U::CreateRevision(num()?)),
        "m" | "mod" => (T::Mod, U::ModRevision(num()?)),
        "val" | "value" => (T::Value, U::Value(val.clone().into_bytes())),
        "lease" => (T::Lease, U::Lease(num()?)),
        other => {
            return Err(format!(
                "malformed comparison: {line} (unknown target {other})"
            ))
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_txn_lines() {
        assert_eq!(
            argify(r#"put k "a b\n" 'c d'"#).unwrap(),
            vec!["put", "k", "a b\n", "c d"]
        );
        let c = parse_compare(r#"mod("k") > "0""#).unwrap();
        assert_eq!(c.key, b"k");
        assert_eq!(c.result, compare::CompareResult::Greater as i32);
        assert!(parse_compare("bad").is_err());
        assert!(parse_compare(r#"ver("k") = "x""#).is_err());
    }
}
