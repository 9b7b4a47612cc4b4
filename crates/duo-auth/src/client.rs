//! The transport: a blocking HTTPS client for the Auth API. Every call takes a deadline; nothing
//! is read from the environment (no proxy, no CA path): the trust anchors are Mozilla's roots
//! compiled in, plus an optional extra CA given explicitly.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::secret::Secret;
use crate::sign::{self, Canonical, SigVersion};
use crate::types::{
    AuthRequest, AuthResult, AuthStart, AuthStatus, AuthStatusRaw, Envelope, Factor, Ping, Preauth,
    PreauthAnswer, PreauthOptions, PreauthRaw,
};

/// How to reach one Duo application.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub ikey: String,
    pub skey: Secret,
    /// `api-XXXXXXXX.duosecurity.com`, optionally with `:port`.
    pub host: String,
    /// PEM certificates trusted besides the compiled-in roots (a private CA, the simulator).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The longest any single call may take (a deadline shorter than this wins).
    pub call_timeout: Duration,
    pub sig_version: SigVersion,
}

/// A Duo Auth API client.
pub struct Client {
    agent: ureq::Agent,
    cfg: ClientConfig,
    /// Seconds to add to the local clock (Duo's time minus ours), learnt from `ping`.
    clock_offset: i64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.cfg.host)
            .field("ikey", &self.cfg.ikey)
            .finish_non_exhaustive()
    }
}

/// The rustls configuration: compiled-in roots plus the extra CA, nothing from the environment.
pub(crate) fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| Error::Config(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("CA file: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Config("CA file holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Name lookup with a deadline: the system resolver has none of its own that a caller controls,
/// so it runs on a helper thread that is abandoned when the time is up.
fn resolve(netloc: &str, timeout: Duration) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = netloc.to_string();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(Iterator::collect));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "looking up {netloc} took longer than {} s",
                timeout.as_secs()
            ),
        ))
    })
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The agent every client uses: our TLS roots, resolution with a deadline, no redirects.
pub(crate) fn build_agent(
    extra_ca_pem: Option<&[u8]>,
    call_timeout: Duration,
) -> Result<ureq::Agent, Error> {
    let tls = tls_config(extra_ca_pem)?;
    Ok(ureq::AgentBuilder::new()
        .resolver(move |netloc: &str| resolve(netloc, call_timeout))
        .tls_config(tls)
        .timeout_connect(call_timeout)
        .timeout(call_timeout)
        .redirects(0)
        .user_agent(concat!("duo-auth-rs/", env!("CARGO_PKG_VERSION")))
        .build())
}

/// A transport failure, named for the decision it drives.
pub(crate) fn transport_error(t: &ureq::Transport, deadline: Instant) -> Error {
    if let Some(tls) = tls_failure(t) {
        Error::Tls(tls)
    } else if Instant::now() >= deadline || is_timeout(t) {
        Error::Timeout
    } else {
        Error::Transport(t.to_string())
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        let agent = build_agent(cfg.extra_ca_pem.as_deref(), cfg.call_timeout)?;
        Ok(Client {
            agent,
            cfg,
            clock_offset: 0,
        })
    }

    /// Correct the signing clock by `offset` seconds (Duo's time minus ours, from [`Self::ping`]).
    pub fn set_clock_offset(&mut self, offset: i64) {
        self.clock_offset = offset;
    }

    /// `GET /auth/v2/ping` (unsigned): Duo's time.
    pub fn ping(&self, deadline: Instant) -> Result<Ping, Error> {
        let v = self.call("GET", "/auth/v2/ping", &[], deadline)?;
        serde_json::from_value(v).map_err(|e| Error::Malformed(format!("ping: {e}")))
    }

    /// `GET /auth/v2/check`: proves the ikey and skey.
    pub fn check(&self, deadline: Instant) -> Result<(), Error> {
        self.call("GET", "/auth/v2/check", &[], deadline)
            .map(|_| ())
    }

    /// `POST /auth/v2/preauth`.
    pub fn preauth(
        &self,
        username: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<Preauth, Error> {
        self.preauth_with(username, ipaddr, &PreauthOptions::default(), deadline)
            .map(|a| a.preauth)
    }

    /// `POST /auth/v2/preauth` with options (Verified Duo Push, hostname, trusted device), and
    /// the `txid` Duo returns for a Verified Duo Push.
    pub fn preauth_with(
        &self,
        username: &str,
        ipaddr: Option<&str>,
        opts: &PreauthOptions,
        deadline: Instant,
    ) -> Result<PreauthAnswer, Error> {
        let mut params = vec![("username".to_string(), username.to_string())];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr".to_string(), ip.to_string()));
        }
        if opts.client_supports_verified_push {
            params.push(("client_supports_verified_push".into(), "1".into()));
        }
        if let Some(h) = &opts.hostname {
            params.push(("hostname".into(), h.clone()));
        }
        if let Some(t) = &opts.trusted_device_token {
            params.push(("trusted_device_token".into(), t.clone()));
        }
        let v = self.call("POST", "/auth/v2/preauth", &params, deadline)?;
        parse_preauth_answer(v)
    }

    /// `POST /auth/v2/auth`.
    pub fn auth(&self, req: &AuthRequest, deadline: Instant) -> Result<AuthStart, Error> {
        self.auth_with_txid(req, None, deadline)
    }

    /// `POST /auth/v2/auth` continuing a Verified Duo Push: `preauth_txid` is the `txid`
    /// preauth returned ([`PreauthAnswer::txid`]), sent as Duo's `txid` parameter. While the
    /// push waits, [`AuthStatus::verification_code`] gives the code to show the user.
    pub fn auth_with_txid(
        &self,
        req: &AuthRequest,
        preauth_txid: Option<&str>,
        deadline: Instant,
    ) -> Result<AuthStart, Error> {
        let mut params = vec![("username".to_string(), req.username.clone())];
        if let Some(txid) = preauth_txid {
            params.push(("txid".into(), txid.to_string()));
        }
        match &req.factor {
            Factor::Push { device, pushinfo } => {
                params.push(("factor".into(), "push".into()));
                params.push(("device".into(), device.clone()));
                if !pushinfo.is_empty() {
                    params.push(("pushinfo".into(), pushinfo.clone()));
                }
            }
            Factor::Passcode(code) => {
                params.push(("factor".into(), "passcode".into()));
                params.push(("passcode".into(), code.clone()));
            }
            Factor::Phone { device } => {
                params.push(("factor".into(), "phone".into()));
                params.push(("device".into(), device.clone()));
            }
            Factor::Auto { device } => {
                params.push(("factor".into(), "auto".into()));
                params.push(("device".into(), device.clone()));
            }
            Factor::Sms { device } => {
                params.push(("factor".into(), "sms".into()));
                params.push(("device".into(), device.clone()));
            }
        }
        if let Some(ip) = &req.ipaddr {
            params.push(("ipaddr".into(), ip.clone()));
        }
        if req.asynchronous {
            params.push(("async".into(), "1".into()));
        }
        let v = self.call("POST", "/auth/v2/auth", &params, deadline)?;
        if req.asynchronous {
            let txid = v
                .get("txid")
                .and_then(|t| t.as_str())
                .ok_or_else(|| Error::Malformed("auth: no txid".into()))?;
            Ok(AuthStart::Txid(txid.to_string()))
        } else {
            Ok(AuthStart::Done(parse_status(v)?))
        }
    }

    /// `GET /auth/v2/auth_status`. Duo long-polls (it answers when the status changes), so this
    /// call may take until `deadline`, not just the per-call timeout.
    pub fn auth_status(&self, txid: &str, deadline: Instant) -> Result<AuthStatus, Error> {
        let params = vec![("txid".to_string(), txid.to_string())];
        let v = self.call_until("GET", "/auth/v2/auth_status", &params, deadline, true)?;
        parse_status(v)
    }

    /// One signed call within the per-call timeout.
    fn call(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
        deadline: Instant,
    ) -> Result<serde_json::Value, Error> {
        self.call_until(method, path, params, deadline, false)
    }

    /// One signed call; `params` go in the query (GET) or the body (POST). A long poll may last
    /// until the deadline; any other call at most `call_timeout`.
    fn call_until(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
        deadline: Instant,
        long_poll: bool,
    ) -> Result<serde_json::Value, Error> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout);
        }
        let timeout = if long_poll {
            remaining
        } else {
            remaining.min(self.cfg.call_timeout)
        };
        let date = sign::rfc2822_date(now_unix() + self.clock_offset);
        let version = self.cfg.sig_version;
        let query = sign::canon_params(params);

        // v5 POST: parameters become a JSON body with sorted keys and the params line is empty.
        let (body, content_type, signed_params): (Vec<u8>, &str, &[(String, String)]) =
            match (version, method) {
                (SigVersion::V5, "POST") => {
                    let map: serde_json::Map<String, serde_json::Value> = params
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                    let body = serde_json::to_vec(&map)
                        .map_err(|e| Error::Malformed(format!("request body: {e}")))?;
                    (body, "application/json", &[])
                }
                (_, "POST") => (
                    query.clone().into_bytes(),
                    "application/x-www-form-urlencoded",
                    params,
                ),
                _ => (Vec::new(), "", params),
            };
        let canonical = Canonical {
            date: &date,
            method,
            host: &self.cfg.host,
            path,
            params: signed_params,
            body: &body,
            x_duo_headers: &[],
        };
        let auth = sign::sign(version, &self.cfg.ikey, self.cfg.skey.expose(), &canonical);

        let url = if method == "GET" && !query.is_empty() {
            format!("https://{}{}?{}", self.cfg.host, path, query)
        } else {
            format!("https://{}{}", self.cfg.host, path)
        };
        let req = self
            .agent
            .request(method, &url)
            .timeout(timeout)
            .set("Date", &date)
            .set("Authorization", &auth);
        let result = if method == "POST" {
            req.set("Content-Type", content_type).send_bytes(&body)
        } else {
            req.call()
        };
        match result {
            Ok(resp) => read_envelope(resp.status(), resp),
            Err(ureq::Error::Status(status, resp)) => {
                let retry_after = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if status == 429 {
                    return Err(Error::RateLimited { retry_after });
                }
                match read_envelope(status, resp) {
                    Ok(_) => Err(status_error(status, 0, String::new())),
                    Err(e) => Err(e),
                }
            }
            Err(ureq::Error::Transport(t)) => Err(transport_error(&t, deadline)),
        }
    }
}

/// The rustls error behind a failed handshake, if that is what failed (ureq wraps it in an
/// `io::Error`, whose `source` skips the wrapped error: look inside with `get_ref`).
fn tls_failure(t: &ureq::Transport) -> Option<String> {
    use std::error::Error as _;
    let mut src = t.source();
    while let Some(e) = src {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(r) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r.to_string());
        }
        src = e.source();
    }
    None
}

fn is_timeout(t: &ureq::Transport) -> bool {
    use std::error::Error as _;
    let mut src = t.source();
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// The answers are small; anything larger than this is not Duo.
const MAX_BODY: u64 = 1 << 20;

fn read_envelope(status: u16, resp: ureq::Response) -> Result<serde_json::Value, Error> {
    let text = read_text(resp)?;
    parse_answer(status, &text)
}

/// An answer's body, at most [`MAX_BODY`] bytes.
pub(crate) fn read_text(resp: ureq::Response) -> Result<String, Error> {
    use std::io::Read as _;
    let mut text = String::new();
    resp.into_reader()
        .take(MAX_BODY)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::Timeout
            } else {
                Error::Transport(format!("reading the answer: {e}"))
            }
        })?;
    Ok(text)
}

/// Read Duo's envelope from an answer's status and body: the `response` on success, else the
/// error its status and `code` name. Pure, and total over any input.
pub fn parse_answer(status: u16, text: &str) -> Result<serde_json::Value, Error> {
    let env: Envelope = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) if status < 400 => return Err(Error::Malformed(format!("HTTP {status}: {e}"))),
        Err(_) => return Err(status_error(status, u32::from(status) * 100, String::new())),
    };
    if env.stat == "OK" && status < 400 {
        return env
            .response
            .ok_or_else(|| Error::Malformed("stat OK without response".into()));
    }
    let code = env.code.unwrap_or(u32::from(status) * 100);
    let mut message = env.message.unwrap_or_default();
    if let Some(detail) = env.message_detail {
        message = format!("{message}: {detail}");
    }
    // The HTTP status is the first three digits of `code`; trust the code if the status is 200.
    let status = if status < 400 {
        u16::try_from(code / 100).unwrap_or(500)
    } else {
        status
    };
    Err(status_error(status, code, message))
}

pub(crate) fn status_error(status: u16, code: u32, message: String) -> Error {
    match status {
        401 => Error::Unauthorized { code, message },
        429 => Error::RateLimited { retry_after: None },
        500..=599 => Error::Server { status },
        _ => Error::Rejected {
            status,
            code,
            message,
        },
    }
}

/// Read a `preauth` response.
pub fn parse_preauth(v: serde_json::Value) -> Result<Preauth, Error> {
    parse_preauth_answer(v).map(|a| a.preauth)
}

/// Read a `preauth` response with its Verified Duo Push `txid` (kept for `auth` only).
pub fn parse_preauth_answer(v: serde_json::Value) -> Result<PreauthAnswer, Error> {
    let raw: PreauthRaw =
        serde_json::from_value(v).map_err(|e| Error::Malformed(format!("preauth: {e}")))?;
    let txid = raw.txid.filter(|t| !t.is_empty() && raw.result == "auth");
    let preauth = match raw.result.as_str() {
        "auth" => Preauth::Auth {
            devices: raw.devices,
        },
        "allow" => Preauth::Allow {
            status_msg: raw.status_msg,
        },
        "deny" => Preauth::Deny {
            status_msg: raw.status_msg,
        },
        "enroll" => Preauth::Enroll {
            status_msg: raw.status_msg,
            enroll_portal_url: raw.enroll_portal_url,
        },
        other => return Err(Error::Malformed(format!("preauth result {other:?}"))),
    };
    Ok(PreauthAnswer { preauth, txid })
}

/// Read an `auth` (sync) or `auth_status` response.
pub fn parse_status(v: serde_json::Value) -> Result<AuthStatus, Error> {
    let raw: AuthStatusRaw =
        serde_json::from_value(v).map_err(|e| Error::Malformed(format!("auth result: {e}")))?;
    let result = match raw.result.as_str() {
        "allow" => AuthResult::Allow,
        "deny" => AuthResult::Deny,
        "waiting" => AuthResult::Waiting,
        other => return Err(Error::Malformed(format!("auth result {other:?}"))),
    };
    Ok(AuthStatus {
        result,
        status: raw.status,
        status_msg: raw.status_msg,
    })
}
