//! Helpers shared by the integration tests: a fast simulator, a `duo_auth` client for it, and
//! a raw HTTPS agent trusting its CA for hand-made requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duo_auth::sign::{self, Canonical, SigVersion};
use duo_auth::{Client, ClientConfig, Secret};
use duo_sim::{Behaviours, SimConfig, SimHandle};
use serde_json::Value;

pub const IKEY: &str = "DIWJ8X6AEYOR5OMC6TQ1";
pub const SKEY: &str = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep";

/// A simulator with short long polls and push timeouts.
pub fn sim(behaviours: Behaviours) -> SimHandle {
    let mut cfg = SimConfig::new(IKEY, SKEY);
    cfg.behaviours = behaviours;
    cfg.long_poll = Duration::from_millis(200);
    cfg.push_timeout = Duration::from_secs(2);
    duo_sim::start(cfg).unwrap()
}

/// The example users file.
pub fn example_behaviours() -> Behaviours {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/users.example.json");
    Behaviours::load(std::path::Path::new(path)).unwrap()
}

pub fn client(sim: &SimHandle, version: SigVersion) -> Client {
    client_with(sim, IKEY, SKEY, version)
}

pub fn client_with(sim: &SimHandle, ikey: &str, skey: &str, version: SigVersion) -> Client {
    Client::new(ClientConfig {
        ikey: ikey.into(),
        skey: Secret::new(skey),
        host: sim.host(),
        extra_ca_pem: Some(sim.ca_pem().into_bytes()),
        call_timeout: Duration::from_secs(10),
        sig_version: version,
    })
    .unwrap()
}

pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A ureq agent trusting only the simulator's CA.
pub fn agent(sim: &SimHandle) -> ureq::Agent {
    agent_builder(sim).build()
}

/// [`agent`]'s builder, for agents that differ in more (redirects).
pub fn agent_builder(sim: &SimHandle) -> ureq::AgentBuilder {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut sim.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout(Duration::from_secs(10))
}

/// A plain agent for the control listener.
pub fn plain_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// The `Authorization` header for a v2 request.
pub fn v2_auth(
    version: SigVersion,
    ikey: &str,
    skey: &str,
    date: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
) -> String {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = Canonical {
        date,
        method,
        host: "127.0.0.1",
        path,
        params: &params,
        ..Default::default()
    };
    sign::sign(version, ikey, skey, &req)
}

/// A raw answer: status, JSON body, `Retry-After`.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub json: Value,
    pub retry_after: Option<String>,
}

/// Send a request with exactly these headers and body.
pub fn send(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Raw {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = resp.status();
    let retry_after = resp.header("Retry-After").map(str::to_string);
    let text = resp.into_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Raw {
        status,
        json,
        retry_after,
    }
}
