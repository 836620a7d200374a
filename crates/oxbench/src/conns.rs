//! Connections: `--conns` gRPC connections spread over the endpoints (or all to the leader
//! with `--target-leader`), shared round-robin by `--clients` clients.

use std::time::Duration;

use anyhow::{bail, Context as _};
use oxcd_api::etcdserverpb::StatusRequest;
use oxcd_client::{parse_endpoint, Client, ClientTlsFiles, Endpoint, TlsMode};

use crate::global::Global;

/// Opens the connections and logs in on each when `--user` is given.
pub async fn open(g: &Global) -> anyhow::Result<Vec<Client>> {
    let eps = g
        .endpoints
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| parse_endpoint(s.trim()).context("--endpoints"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if eps.is_empty() {
        bail!("--endpoints is empty: give at least one host:port");
    }
    let tls = tls_mode(g)?;
    let dial = g.dial_timeout.max(Duration::from_millis(100));
    let eps = if g.target_leader {
        vec![leader(&eps, &tls, dial).await?]
    } else {
        eps
    };
    let mut clients = Vec::with_capacity(g.conns);
    for i in 0..g.conns.max(1) {
        let ep = &eps[i % eps.len()];
        let channel = oxcd_client::connect(ep, &tls, dial)
            .await
            .with_context(|| format!("cannot connect to {}", ep.original))?;
        let mut client = Client::new(channel, ep.clone());
        if let Some(user) = &g.user {
            let (name, password) = user
                .split_once(':')
                .context("--user must be name:password")?;
            client
                .authenticate(name, password)
                .await
                .context("authenticate")?;
        }
        clients.push(client);
    }
    Ok(clients)
}

fn tls_mode(g: &Global) -> anyhow::Result<TlsMode> {
    if g.cacert.is_none() && g.cert.is_none() && g.key.is_none() {
        return Ok(TlsMode::Plain);
    }
    let files = ClientTlsFiles {
        cert_file: g.cert.clone().map(Into::into),
        key_file: g.key.clone().map(Into::into),
        trusted_ca_file: g.cacert.clone().map(Into::into),
        skip_verify: false,
    };
    Ok(TlsMode::Tls(oxcd_client::tls_config(&files)?))
}

/// The endpoint whose member is the leader.
async fn leader(eps: &[Endpoint], tls: &TlsMode, dial: Duration) -> anyhow::Result<Endpoint> {
    for ep in eps {
        let Ok(channel) = oxcd_client::connect(ep, tls, dial).await else {
            continue;
        };
        let client = Client::new(channel, ep.clone());
        let Ok(r) = client.maintenance().status(StatusRequest {}).await else {
            continue;
        };
        let r = r.into_inner();
        if r.header.map(|h| h.member_id) == Some(r.leader) {
            return Ok(ep.clone());
        }
    }
    bail!("no leader found among --endpoints")
}
