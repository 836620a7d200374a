//! Certificates for tests, laid out as the tutorial and `oxcert cluster` lay them out: a CA,
//! one server certificate for the client URLs of every member (server auth only), one peer
//! certificate per member (server and client auth), and a client certificate. Made with the
//! real `cfssl`/`cfssljson` ([`Pki::cfssl`]) or with `oxcert cluster` ([`Pki::oxcert`]).
//! [`tutorial`] holds the tutorial's own commands.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{require, run, Output};

/// The key of every certificate of a PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgo {
    Rsa2048,
    EcdsaP256,
}

impl KeyAlgo {
    fn json(self) -> &'static str {
        match self {
            KeyAlgo::Rsa2048 => r#"{"algo":"rsa","size":2048}"#,
            KeyAlgo::EcdsaP256 => r#"{"algo":"ecdsa","size":256}"#,
        }
    }
}

/// The profiles of [`CA_CONFIG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Server auth only.
    Server,
    /// Client auth only.
    Client,
    /// Server and client auth.
    Peer,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::Peer => "peer",
        }
    }
}

/// A certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a client presents: the CA it trusts, its certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A member of a PKI: its name (the peer certificate's file name) and address.
pub type MemberHost<'a> = (&'a str, Ipv4Addr);

/// A CA and the certificates it signed.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// For every member's client URLs: all their addresses, 127.0.0.1 and localhost.
    pub server: CertPair,
    /// One per member, in member order: its address, 127.0.0.1 and localhost.
    pub peers: Vec<CertPair>,
    pub client: CertPair,
    algo: KeyAlgo,
}

/// The signing profiles (as the tutorial's `ca-config.json`).
pub const CA_CONFIG: &str = r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{
  "server":{"expiry":"43800h","usages":["signing","key encipherment","server auth"]},
  "client":{"expiry":"43800h","usages":["signing","key encipherment","client auth"]},
  "peer":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}}}"#;

impl Pki {
    /// Makes a PKI in `dir` with the real cfssl/cfssljson; every key uses `algo`. Its CA is
    /// named as every tutorial CA ("etcd root ca"): two such CAs differ in their keys only.
    pub fn cfssl(dir: &Path, algo: KeyAlgo, members: &[MemberHost]) -> Pki {
        Pki::cfssl_with_ca(dir, algo, "etcd root ca", members)
    }

    /// [`Pki::cfssl`] with a CA named `ca_name`.
    pub fn cfssl_with_ca(dir: &Path, algo: KeyAlgo, ca_name: &str, members: &[MemberHost]) -> Pki {
        require("cfssl");
        require("cfssljson");
        std::fs::create_dir_all(dir).expect("create the PKI dir");
        write(&dir.join("ca-config.json"), CA_CONFIG);
        let key = algo.json();
        let csr = format!(r#"{{"CN":"{ca_name}","key":{key},"names":[{{"C":"US","O":"etcd"}}]}}"#);
        write(&dir.join("ca-csr.json"), &csr);
        cfssl_json(dir, &["gencert", "-initca", "ca-csr.json"], "", "ca");
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: pair(dir, "server"),
            peers: Vec::new(),
            client: pair(dir, "client"),
            algo,
        };
        let loopback = ["127.0.0.1".to_string(), "localhost".to_string()];
        let mut server_hosts: Vec<String> = members.iter().map(|m| m.1.to_string()).collect();
        server_hosts.extend(loopback.iter().cloned());
        pki.server = pki.issue("server", Profile::Server, &server_hosts);
        for (name, ip) in members {
            let mut hosts = vec![ip.to_string()];
            hosts.extend(loopback.iter().cloned());
            let peer = pki.issue(name, Profile::Peer, &hosts);
            pki.peers.push(peer);
        }
        pki.client = pki.issue("client", Profile::Client, &["127.0.0.1".to_string()]);
        pki
    }

    /// Signs a certificate `NAME.pem` (and `NAME-key.pem`) for `hosts` with this CA (cfssl).
    pub fn issue(&self, name: &str, profile: Profile, hosts: &[String]) -> CertPair {
        let csr = format!(
            r#"{{"CN":"{name}","hosts":[""],"key":{}}}"#,
            self.algo.json()
        );
        cfssl_json(
            &self.dir,
            &[
                "gencert",
                "-ca=ca.pem",
                "-ca-key=ca-key.pem",
                "-config=ca-config.json",
                &format!("-profile={}", profile.name()),
                &format!("-hostname={}", hosts.join(",")),
                "-",
            ],
            &csr,
            name,
        );
        pair(&self.dir, name)
    }

    /// `oxcert cluster --members NAME=IP:2379:2380,... --out OUT EXTRA...` run in `cwd`: the
    /// PKI it wrote in `cwd/OUT` (ECDSA P-256, oxcert's default) and what it printed (each
    /// member's start command).
    pub fn oxcert(
        oxcert: &Path,
        cwd: &Path,
        out: &str,
        members: &[MemberHost],
        extra: &[&str],
    ) -> (Pki, Output) {
        let spec: Vec<String> = members
            .iter()
            .map(|(name, ip)| format!("{name}={ip}:2379:2380"))
            .collect();
        let printed = run(
            Command::new(oxcert)
                .args(["cluster", "--members", &spec.join(","), "--out", out])
                .args(extra)
                .current_dir(cwd),
            b"",
        )
        .ok();
        let dir = cwd.join(out);
        let pki = Pki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: pair(&dir, "server"),
            peers: members.iter().map(|(name, _)| pair(&dir, name)).collect(),
            client: pair(&dir, "client"),
            algo: KeyAlgo::EcdsaP256,
            dir,
        };
        (pki, printed)
    }

    /// The CA and the client certificate, for etcdctl's `--cacert/--cert/--key`.
    pub fn client_certs(&self) -> ClientCerts {
        ClientCerts {
            ca: self.ca.clone(),
            cert: self.client.cert.clone(),
            key: self.client.key.clone(),
        }
    }
}

fn pair(dir: &Path, name: &str) -> CertPair {
    CertPair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `cfssl ARGS | cfssljson -bare NAME`, in `dir`.
fn cfssl_json(dir: &Path, args: &[&str], stdin: &str, bare: &str) {
    let gen = run(
        Command::new("cfssl").args(args).current_dir(dir),
        stdin.as_bytes(),
    );
    assert_eq!(gen.code, 0, "cfssl {args:?} failed: {}", gen.stderr);
    let split = run(
        Command::new("cfssljson")
            .args(["-bare", bare])
            .current_dir(dir),
        gen.stdout.as_bytes(),
    );
    assert_eq!(
        split.code, 0,
        "cfssljson -bare {bare} failed: {}",
        split.stderr
    );
}

/// The tutorial's certificate commands (its TL;DR), run as written by whichever `cfssl` and
/// `cfssljson` a directory holds (the real ones, or links to oxcert).
pub mod tutorial {
    use std::path::Path;
    use std::process::Command;

    use crate::process::{run, Output};

    /// The tutorial leaves ca-csr.json to the reader: this is the usual one.
    pub const CA_CSR: &str = r#"{"CN":"etcd-root-ca","key":{"algo":"rsa","size":2048},"names":[{"C":"US","ST":"CA","L":"San Francisco","O":"etcd","OU":"ops"}],"ca":{"expiry":"87600h"}}"#;

    /// The TL;DR commands, verbatim (hosts changed to loopback where a test later connects;
    /// the tutorial's 192.168.1.x only ever appear inside certificates).
    pub const TLDR: &str = r#"
cfssl gencert --initca=true ca-csr.json | cfssljson --bare etcd-root-ca
echo '{"CN":"server ca","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config ca-config.json -profile=server -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare server
echo '{"CN":"etcd1","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd1
echo '{"CN":"etcd2","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd2
echo '{"CN":"etcd3","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd3
echo '{"CN":"client","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=client -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1" - | cfssljson -bare client
"#;

    /// [`TLDR`], with `extra_host` (the address a test's server listens on) added after
    /// 127.0.0.1 to every certificate's hosts.
    pub fn tldr(extra_host: Option<&str>) -> String {
        match extra_host {
            Some(h) => TLDR.replace("127.0.0.1", &format!("127.0.0.1,{h}")),
            None => TLDR.to_string(),
        }
    }

    /// Writes ca-csr.json and ca-config.json into `dir` and runs [`tldr`] there with `bin`
    /// (holding `cfssl` and `cfssljson`) first on PATH.
    pub fn make(dir: &Path, bin: &Path, extra_host: Option<&str>) {
        std::fs::write(dir.join("ca-csr.json"), CA_CSR).expect("write ca-csr.json");
        std::fs::write(dir.join("ca-config.json"), super::CA_CONFIG).expect("write ca-config.json");
        sh(dir, bin, &tldr(extra_host)).ok();
    }

    /// Runs a shell script (`sh -e`) in `dir` with `bin` first on PATH.
    pub fn sh(dir: &Path, bin: &Path, script: &str) -> Output {
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run(
            Command::new("sh")
                .arg("-ec")
                .arg(script)
                .env("PATH", path)
                .current_dir(dir),
            b"",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::tutorial::{tldr, TLDR};

    #[test]
    fn tldr_adds_the_host_to_every_certificate() {
        assert_eq!(tldr(None), TLDR);
        let with = tldr(Some("127.77.0.9"));
        assert_eq!(with.matches("127.0.0.1,127.77.0.9").count(), 5, "{with}");
        assert_eq!(with.replace("127.0.0.1,127.77.0.9", "127.0.0.1"), TLDR);
    }
}
