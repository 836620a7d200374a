//! Endpoint strings as etcdctl takes them: `host:port`, `http://host:port`, `https://host:port`.

use crate::ClientError;

/// How an endpoint asks to be dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No scheme given: TLS only when TLS flags were given (etcdctl's rule).
    Unspecified,
    Http,
    Https,
}

/// One parsed endpoint. `original` is the text the user gave, which etcdctl prints back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub original: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `host:port`, bracketing IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses an endpoint; a missing port defaults to 2379.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, ClientError> {
    let err = |reason: &str| ClientError::Endpoint {
        endpoint: text.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if text.contains("://") {
        return Err(err("scheme must be http or https"));
    } else {
        (Scheme::Unspecified, text)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(err("missing host"));
    }
    let (host, port) = split_host_port(rest).ok_or_else(|| err("bad port"))?;
    Ok(Endpoint {
        original: text.to_string(),
        scheme,
        host,
        port,
    })
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 2379,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => Some((s.to_string(), 2379)),
        None => Some((s.to_string(), 2379)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_forms() {
        let e = parse_endpoint("127.0.0.1:2379").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Unspecified, "127.0.0.1", 2379)
        );
        let e = parse_endpoint("https://127.0.0.11:2379").unwrap();
        assert_eq!((e.scheme, e.port), (Scheme::Https, 2379));
        let e = parse_endpoint("http://localhost").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 2379));
        let e = parse_endpoint("[::1]:23").unwrap();
        assert_eq!((e.authority().as_str()), "[::1]:23");
        assert!(parse_endpoint("unix://x").is_err());
        assert!(parse_endpoint("h:notaport").is_err());
    }
}
