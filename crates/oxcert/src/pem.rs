//! PEM text as cfssl and openssl write it: `-----BEGIN LABEL-----`, base64 in 64-column
//! lines, `-----END LABEL-----`, LF line endings.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
    /// RFC 1421 headers such as `Proc-Type: 4,ENCRYPTED` (legacy openssl encryption).
    pub encrypted: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    #[error("no PEM block found (expected a line like -----BEGIN CERTIFICATE-----)")]
    Empty,
    #[error("PEM block {label} starting on line {line} has no -----END {label}----- line")]
    Unterminated { label: String, line: usize },
    #[error("PEM block {label} starting on line {line} is not valid base64")]
    BadBase64 { label: String, line: usize },
}

pub fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every PEM block in `text`, in order. Text between blocks is ignored, as openssl does.
pub fn parse(text: &str) -> Result<Vec<Block>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut encrypted = false;
        let mut terminated = false;
        for (_, line) in lines.by_ref() {
            let line = line.trim();
            if line == end {
                terminated = true;
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                encrypted |= name == "Proc-Type" && value.contains("ENCRYPTED");
                continue;
            }
            body.push_str(line);
        }
        let line_number = index + 1;
        if !terminated {
            return Err(PemError::Unterminated {
                label: label.to_string(),
                line: line_number,
            });
        }
        let der = STANDARD.decode(body).map_err(|_| PemError::BadBase64 {
            label: label.to_string(),
            line: line_number,
        })?;
        blocks.push(Block {
            label: label.to_string(),
            der,
            encrypted,
        });
    }
    if blocks.is_empty() {
        return Err(PemError::Empty);
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..=255).collect();
        let text = encode("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let blocks = parse(&format!("junk\n{text}{text}")).expect("parse");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].der, der);
        assert_eq!(blocks[1].label, "CERTIFICATE");
    }

    #[test]
    fn errors() {
        assert_eq!(parse("hello"), Err(PemError::Empty));
        assert!(matches!(
            parse("-----BEGIN X-----\nAAAA\n"),
            Err(PemError::Unterminated { .. })
        ));
        assert!(matches!(
            parse("-----BEGIN X-----\n!!\n-----END X-----\n"),
            Err(PemError::BadBase64 { .. })
        ));
    }
}
