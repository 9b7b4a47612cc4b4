//! `duo-sim`: a Duo Auth API v2 simulator for tests.
//!
//! It serves `ping`, `check`, `preauth`, `auth` and `auth_status` over HTTPS on a loopback
//! address, checks signatures as Duo does (v2 HMAC-SHA1, v2 HMAC-SHA512, v5) within a date
//! window, and answers each user from a scripted [`Behaviours`]. A second, plain-HTTP loopback
//! listener carries a control API and an HTML page that plays the user's phone.
//!
//! Modules:
//! * [`behaviour`] — the per-user script and the users-file format.
//! * [`verify`] — request authentication as a pure function of the request and "now".
//! * `http` — one-request-per-connection HTTP/1.1 reading and writing.
//! * `tls` — certificates (generated CA + leaf, or PEM files) and the rustls config.
//! * `state` — pushes, counters, the clock; push lifecycles played out from deadlines.
//! * `api` — the Duo endpoints. `control` — the control API and phone page.
//! * `server` — listeners and per-connection threads.
//!
//! In-process use:
//! ```no_run
//! let sim = duo_sim::start(duo_sim::SimConfig::new("DIXXXXXXXXXXXXXXXXXX", "s3cr3t")).unwrap();
//! let host = sim.host(); // "127.0.0.1:PORT", for the client's config
//! let ca = sim.ca_pem(); // the CA the client must trust
//! # let _ = (host, ca);
//! ```
#![forbid(unsafe_code)]

pub mod behaviour;
pub mod verify;

mod api;
mod control;
mod http;
mod oidc;
mod server;
mod state;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use api::DEVICE_ID;

/// PEM files for another loopback test server (a TLS Redis, say): the CA to trust, the server's
/// certificate chain (for `127.0.0.1`, `::1` and `localhost`) and its PKCS#8 key. Made the way
/// the simulator makes its own.
pub struct TestCertificates {
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

/// A fresh [`TestCertificates`].
pub fn test_certificates() -> std::io::Result<TestCertificates> {
    let id = tls::generate()?;
    let chain_pem = id
        .chain
        .iter()
        .map(|c| tls::pem("CERTIFICATE", c))
        .collect::<String>();
    let key_pem = tls::pem("PRIVATE KEY", id.key.secret_der());
    Ok(TestCertificates {
        ca_pem: id.ca_pem,
        chain_pem,
        key_pem,
    })
}
pub use behaviour::{Behaviours, PreauthKind, PushKind, RateLimit, UserBehaviour};
pub use state::{Counters, Push, PushState};
pub use verify::{verify_request, Rejection, RequestParts, Verified};

/// How to run a simulator.
#[derive(Clone)]
pub struct SimConfig {
    pub ikey: String,
    pub skey: String,
    /// The Duo API's address; must be loopback (port 0: any free port).
    pub listen: SocketAddr,
    /// The control API's address; must be loopback.
    pub control_listen: SocketAddr,
    pub behaviours: Behaviours,
    /// The largest distance accepted between a request's date and the simulator's clock.
    pub date_window: Duration,
    /// How long `auth_status` holds a call while nothing changes.
    pub long_poll: Duration,
    /// How long a `timeout`/`manual` push stays pending (unless the user sets its own).
    pub push_timeout: Duration,
    /// PEM certificate chain and key files; `None` generates a CA and a leaf.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Log each request (method, path, user, outcome; never keys or signatures) to stderr.
    pub log: bool,
    /// "Require Verified Duo Push" for every user (a user's `verified_push` does it for one).
    pub verified_push: bool,
    /// The Universal Prompt application's client id (20 characters) and secret (40): with
    /// both, the `/oauth/v1/` endpoints answer; without, they are 404.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("ikey", &self.ikey)
            .field("skey", &"<redacted>")
            .field("listen", &self.listen)
            .field("control_listen", &self.control_listen)
            .field("behaviours", &self.behaviours)
            .field("date_window", &self.date_window)
            .field("long_poll", &self.long_poll)
            .field("push_timeout", &self.push_timeout)
            .field("cert", &self.cert)
            .field("log", &self.log)
            .field("verified_push", &self.verified_push)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SimConfig {
    /// Both listeners on 127.0.0.1 with random ports, every user approving at once, a 300 s
    /// date window, 5 s long polls, 60 s push timeout, a generated certificate, no logging.
    pub fn new(ikey: impl Into<String>, skey: impl Into<String>) -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        SimConfig {
            ikey: ikey.into(),
            skey: skey.into(),
            listen: any,
            control_listen: any,
            behaviours: Behaviours::default(),
            date_window: Duration::from_secs(300),
            long_poll: Duration::from_secs(5),
            push_timeout: Duration::from_secs(60),
            cert: None,
            log: false,
            verified_push: false,
            client_id: None,
            client_secret: None,
        }
    }
}

/// A running simulator. Dropping it (or [`SimHandle::shutdown`]) stops both listeners.
pub struct SimHandle {
    state: Arc<state::State>,
    api_addr: SocketAddr,
    control_addr: SocketAddr,
    ca_pem: String,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("api_addr", &self.api_addr)
            .field("control_addr", &self.control_addr)
            .finish_non_exhaustive()
    }
}

fn loopback_only(addr: SocketAddr, what: &str) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} {addr} is not a loopback address: the simulator is for tests only"),
        ))
    }
}

/// Start a simulator; returns once both listeners accept connections.
pub fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    loopback_only(cfg.listen, "listen address")?;
    loopback_only(cfg.control_listen, "control address")?;
    cfg.behaviours
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    match (&cfg.client_id, &cfg.client_secret) {
        (None, None) => {}
        (Some(id), Some(secret)) => {
            if id.chars().count() != 20 {
                return Err(bad("the client id must be 20 characters".into()));
            }
            if secret.chars().count() != 40 {
                return Err(bad("the client secret must be 40 characters".into()));
            }
        }
        _ => return Err(bad("give both the client id and the client secret".into())),
    }
    let identity = match &cfg.cert {
        Some((cert, key)) => tls::load(cert, key)?,
        None => tls::generate()?,
    };
    let tls_config = tls::server_config(&identity)?;
    let api_listener = TcpListener::bind(cfg.listen)?;
    let control_listener = TcpListener::bind(cfg.control_listen)?;
    let api_addr = api_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    let state = Arc::new(state::State::new(
        state::Settings {
            ikey: cfg.ikey,
            skey: duo_auth::Secret::new(cfg.skey),
            date_window: cfg.date_window,
            long_poll: cfg.long_poll,
            push_timeout: cfg.push_timeout,
            log: cfg.log,
            verified_push: cfg.verified_push,
            client_id: cfg.client_id,
            client_secret: cfg.client_secret.map(duo_auth::Secret::new),
        },
        cfg.behaviours,
    ));
    let mut handle = SimHandle {
        state: state.clone(),
        api_addr,
        control_addr,
        ca_pem: identity.ca_pem,
        threads: Vec::new(),
    };
    // If the second spawn fails, dropping `handle` stops the first.
    handle.threads.push(server::spawn(
        api_listener,
        server::Role::Api,
        Some(tls_config),
        state.clone(),
    )?);
    handle.threads.push(server::spawn(
        control_listener,
        server::Role::Control,
        None,
        state,
    )?);
    Ok(handle)
}

impl SimHandle {
    /// The Duo API listener's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The control listener's address (`http://` + this is the phone page).
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// `127.0.0.1:PORT` (`[::1]:PORT` on IPv6): the API host a client puts in its config.
    pub fn host(&self) -> String {
        self.api_addr.to_string()
    }

    /// The PEM a client must trust (the generated CA, or the given certificate file).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    pub fn counters(&self) -> Counters {
        self.state.counters()
    }

    /// Every transaction since start or the last reset, oldest first.
    pub fn pushes(&self) -> Vec<Push> {
        self.state.pushes()
    }

    /// Wait up to `timeout` for a pending push; the newest one.
    pub fn wait_for_pending(&self, timeout: Duration) -> Option<Push> {
        self.state.wait_pending(timeout)
    }

    /// Approve a pending push (`"latest"`: the newest pending one). False if none was pending.
    /// A Verified Duo Push approved without its code is denied: use [`Self::approve_with_code`].
    pub fn approve(&self, txid: &str) -> bool {
        self.state.decide(txid, PushState::Allow).is_some()
    }

    /// Approve a pending push typing `code` (a Verified Duo Push's; ignored for others). A wrong
    /// code denies it. The state it ended in, or `None` if none was pending.
    pub fn approve_with_code(&self, txid: &str, code: &str) -> Option<PushState> {
        self.state
            .decide_code(txid, PushState::Allow, Some(code))
            .map(|(_, s)| s)
    }

    /// Deny a pending push (`"latest"`: the newest pending one). False if none was pending.
    pub fn deny(&self, txid: &str) -> bool {
        self.state.decide(txid, PushState::Deny).is_some()
    }

    /// Replace the behaviours; rate-limit tallies start again.
    pub fn set_behaviours(&self, b: Behaviours) {
        self.state.set_behaviours(b);
    }

    /// Forget pushes, counters and rate-limit tallies.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Run the simulator's clock `secs` ahead of the system clock (negative: behind), to test
    /// clock skew and the date window.
    pub fn set_clock_offset(&self, secs: i64) {
        self.state.set_clock_offset(secs);
    }

    /// Stop accepting connections and wake long polls. Calls in flight finish on their own.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        self.state.shutdown.store(true, Ordering::SeqCst);
        self.state.wake_all();
        let woke = [self.api_addr, self.control_addr].map(server::wake);
        for (thread, woke) in self.threads.drain(..).zip(woke) {
            // A listener we could not wake would block `join` forever: leave it detached.
            if woke {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<SimHandle>();
        shared::<SimConfig>();
    }

    #[test]
    fn refuses_non_loopback_addresses() {
        let mut cfg = SimConfig::new("I", "S");
        cfg.listen = "0.0.0.0:0".parse().unwrap();
        assert_eq!(
            start(cfg).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        let mut cfg = SimConfig::new("I", "S");
        cfg.behaviours.default.error = Some(302);
        assert!(start(cfg).is_err());
    }
}
