//! Masks for what legitimately differs between two servers' JSON (IDs, terms, timestamps),
//! so that the rest can be compared byte for byte.

/// Replaces every number that follows `"key":` with `N`.
pub fn mask_json_number(s: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = i + pat.len();
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push('N');
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Replaces the string value that follows `"key":"` with `X`.
pub fn mask_json_string(s: &str, key: &str) -> String {
    let pat = format!("\"{key}\":\"");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = i + pat.len();
        out.push_str(&rest[..after]);
        out.push('X');
        let tail = &rest[after..];
        let end = tail.find('"').unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_the_named_field() {
        let s = r#"{"member_id":123,"revision":7,"raft_term":2,"ts":"2026-12-01"}"#;
        let s = mask_json_number(&mask_json_number(s, "member_id"), "raft_term");
        assert_eq!(
            mask_json_string(&s, "ts"),
            r#"{"member_id":N,"revision":7,"raft_term":N,"ts":"X"}"#
        );
    }
}
