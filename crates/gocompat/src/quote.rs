//! Go's string literals: `strconv.Quote` (what `%q` prints), `encoding/json`'s string encoding
//! (what `json.Marshal` prints), and zap's (what etcd's JSON log lines carry).

use std::fmt::Write as _;

/// `strconv.Quote` of a Go string holding these bytes, which is what `%q` prints: printable
/// characters as they are, `\n`-style escapes, `\xNN` for other ASCII controls and for bytes
/// that are not UTF-8, `\uNNNN` / `\UNNNNNNNN` for other characters.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            escape_rune(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// `strconv.Quote` of a string.
pub fn quote_str(s: &str) -> String {
    quote(s.as_bytes())
}

fn escape_rune(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        c if is_print(c) => out.push(c),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if c < ' ' || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
/// Everything else in the categories Go excludes is caught (controls, spaces, format
/// characters, private use, noncharacters) except code points Unicode has not assigned yet,
/// which would need Unicode's whole table.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f
        | 0xe000..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff);
    let noncharacter = u & 0xfffe == 0xfffe;
    !(c.is_control() || c.is_whitespace() || format_or_private || noncharacter)
}

/// How a JSON encoder treats `<`, `>`, `&`, U+2028 and U+2029.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Html {
    /// `encoding/json`'s default: `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`.
    Escape,
    /// zap's encoder: as they are.
    Keep,
}

/// `encoding/json`'s string literal (`json.Marshal` of a string): HTML-safe, so `<`, `>`, `&`,
/// U+2028 and U+2029 are `\uNNNN` escapes.
pub fn json_string(s: &str) -> String {
    json_literal(s, Html::Escape)
}

/// The string literal zap writes in etcd's JSON log lines: like `encoding/json`, but `<`,
/// `>`, `&`, U+2028 and U+2029 stay as they are.
pub fn zap_json_string(s: &str) -> String {
    json_literal(s, Html::Keep)
}

fn json_literal(s: &str, html: Html) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if html == Html::Escape => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from Go's `quotetests` (src/strconv/quote_test.go) and what `%q` prints.
    #[test]
    fn quotes_as_go() {
        let table: &[(&[u8], &str)] = &[
            (b"\x07\x08\x0c\r\n\t\x0b", r#""\a\b\f\r\n\t\v""#),
            (b"\\", r#""\\""#),
            (b"abc\xffdef", r#""abc\xffdef""#),
            ("\u{263a}".as_bytes(), "\"\u{263a}\""),
            ("\u{10ffff}".as_bytes(), r#""\U0010ffff""#),
            (b"\x04", r#""\x04""#),
            (
                "!\u{00a0}!\u{2000}!\u{3000}!".as_bytes(),
                r#""!\u00a0!\u2000!\u3000!""#,
            ),
            (b"\x7f", r#""\x7f""#),
            (b"a\"b\n\x01\xff", r#""a\"b\n\x01\xff""#),
            ("\u{80}".as_bytes(), r#""\u0080""#),
            ("soft\u{ad}hyphen".as_bytes(), r#""soft\u00adhyphen""#),
            ("zero\u{200b}width".as_bytes(), r#""zero\u200bwidth""#),
            ("bom\u{feff}".as_bytes(), r#""bom\ufeff""#),
            ("\u{e000}".as_bytes(), r#""\ue000""#),
            ("\u{ffff}".as_bytes(), r#""\uffff""#),
            ("héllo wörld ✓ 日本".as_bytes(), "\"héllo wörld ✓ 日本\""),
            (b"\xe2\x82", r#""\xe2\x82""#),
            (b"", r#""""#),
        ];
        for &(bytes, want) in table {
            assert_eq!(quote(bytes), want, "{bytes:?}");
        }
        assert_eq!(quote_str("a b"), r#""a b""#);
    }

    /// What `json.Marshal` prints for strings.
    #[test]
    fn json_as_go() {
        let table: &[(&str, &str)] = &[
            ("a<b>&c", r#""a\u003cb\u003e\u0026c""#),
            ("q\"\\", r#""q\"\\""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\x01\x08\x0c\x1f", r#""\u0001\u0008\u000c\u001f""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("\x7f é", "\"\x7f é\""),
        ];
        for &(s, want) in table {
            assert_eq!(json_string(s), want, "{s:?}");
        }
    }

    #[test]
    fn zap_keeps_html() {
        assert_eq!(
            zap_json_string("rpc error: code = <x> & \"y\"\n\u{2028}"),
            "\"rpc error: code = <x> & \\\"y\\\"\\n\u{2028}\""
        );
        assert_eq!(zap_json_string("\x01"), r#""\u0001""#);
    }
}
