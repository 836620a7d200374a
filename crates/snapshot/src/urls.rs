//! Peer and client URLs as etcd's flags take them (`http(s)://host:port`, comma-separated),
//! and `--initial-cluster` (`name=URL,...`). The server's flag parser and `snapshot restore`
//! both read them here, so a restored member's IDs are computed from the same URLs the
//! server will see when it starts with the same flags.

use std::net::{IpAddr, SocketAddr};

/// A flag value that does not parse; the text names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("--{flag}: {url:?} is not a valid URL: {why}")]
    BadUrl {
        flag: String,
        url: String,
        why: String,
    },
    #[error("--{flag} needs at least one URL")]
    NoUrls { flag: String },
    #[error("--initial-cluster: {part:?} is not name=URL")]
    NotNameUrl { part: String },
    #[error("--initial-cluster is empty")]
    EmptyCluster,
}

/// A URL as etcd takes it: `http(s)://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Url {
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The address to bind: an IP, or `localhost` (etcd allows it).
    pub fn bind_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = if self.host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.host
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .ok()?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme(), self.host, self.port)
    }
}

/// Parses a comma-separated URL list, naming the flag in errors.
pub fn parse_urls(flag: &str, v: &str) -> Result<Vec<Url>, FlagError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(parse_url(part).map_err(|why| FlagError::BadUrl {
            flag: flag.to_string(),
            url: part.to_string(),
            why,
        })?);
    }
    if out.is_empty() {
        return Err(FlagError::NoUrls {
            flag: flag.to_string(),
        });
    }
    Ok(out)
}

fn parse_url(s: &str) -> Result<Url, String> {
    let (scheme, rest) = s.split_once("://").ok_or("expected scheme://host:port")?;
    let tls = match scheme {
        "http" => false,
        "https" => true,
        other => return Err(format!("URL scheme must be http or https, not {other:?}")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') {
        return Err("a URL here carries no path".into());
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("expected host:port (the port is required)")?;
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("bad port {port:?}"))?;
    Ok(Url {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Parses `--initial-cluster`: member name -> peer URLs, in flag order (a name given twice
/// collects its URLs).
pub fn parse_initial_cluster(v: &str) -> Result<Vec<(String, Vec<Url>)>, FlagError> {
    let mut out: Vec<(String, Vec<Url>)> = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(FlagError::NotNameUrl {
                part: part.to_string(),
            });
        };
        let url = parse_url(url).map_err(|why| FlagError::BadUrl {
            flag: "initial-cluster".into(),
            url: url.to_string(),
            why,
        })?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url),
            None => out.push((name.to_string(), vec![url])),
        }
    }
    if out.is_empty() {
        return Err(FlagError::EmptyCluster);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print_as_etcd_writes_them() {
        let urls = parse_urls("peer-urls", "http://127.0.0.1:2380/, https://[::1]:2381");
        let text: Option<Vec<String>> = urls.ok().map(|u| u.iter().map(Url::to_string).collect());
        assert_eq!(
            text,
            Some(vec![
                "http://127.0.0.1:2380".into(),
                "https://[::1]:2381".into()
            ])
        );
        let e = parse_urls("peer-urls", "ftp://a:1")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--peer-urls: \"ftp://a:1\" is not a valid URL: URL scheme must be http or https, not \"ftp\"")
        );
        let e = parse_urls("peer-urls", " , ").err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("--peer-urls needs at least one URL"));
    }

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        let c = parse_initial_cluster("a=http://h:1,b=http://h:2,a=http://h:3");
        let names: Option<Vec<(String, usize)>> = c
            .ok()
            .map(|c| c.into_iter().map(|(n, u)| (n, u.len())).collect());
        assert_eq!(names, Some(vec![("a".into(), 2), ("b".into(), 1)]));
        let e = |v: &str| parse_initial_cluster(v).err().map(|e| e.to_string());
        assert_eq!(
            e("a"),
            Some("--initial-cluster: \"a\" is not name=URL".into())
        );
        assert_eq!(
            e("a=h:1"),
            Some(
                "--initial-cluster: \"h:1\" is not a valid URL: expected scheme://host:port".into()
            )
        );
        assert_eq!(e(""), Some("--initial-cluster is empty".into()));
    }
}
