//! `check-duo serve`: the long-running gate. One daemon answers the proxies' "may this request
//! pass?" from the session store ([`authz`], and [`fcgi`] for Apache's `mod_authnz_fcgi`), and
//! runs the sign-in on its own pages ([`portal`]): the password, then a push that starts at once
//! and a waiting page that follows it. The rules are the core's; this module is HTTP around them.
//!
//! The core is synchronous: a session lookup runs on the runtime's thread for the embedded store
//! ([`App::lookup`]: microseconds); with Redis the authorization endpoints read the session
//! ahead, batched, on reader threads ([`readahead`]); password checks and Duo calls run on the
//! blocking pool.

pub mod authz;
pub mod fcgi;
pub mod metrics;
pub mod pages;
pub mod portal;
pub mod readahead;
pub mod rules;
pub mod session;
pub mod settings;
pub mod target;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse as _;
use axum::routing::{any, get};
use axum::Router;
use check_duo_core::finish::{self, About};
use check_duo_core::keys::SessionKeys;
use check_duo_core::ports::{
    AuditSink, Clock, Directory, DirectoryCheck, DirectoryError, DuoApi, Store, Wait,
};
use check_duo_core::{Decision, Gate, Policy};
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use metrics::{Metrics, TimedDuo, TimedStore};
pub use settings::ServerConfig;

/// Connections to Redis, taken in turn (the embedded store has one, and needs no more: a read
/// is a few microseconds).
pub const REDIS_CONNECTIONS: usize = 4;

/// Threads reading sessions ahead for the authorization endpoints (Redis; see [`readahead`]):
/// two, so that one batch is being sent while the other is answered.
pub const READERS: usize = 2;

/// How long a stop waits for background work (pushes being followed) after the last request.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Longest form body read (sign-in, passcode, logout).
pub const MAX_BODY: usize = 16 * 1024;
/// Longest a request may take to be answered (a slow client included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory as the gate sees it in the daemon: every call (a network round trip, up to its
/// deadline when the directory is down) on a thread the runtime lets go of, since the gate may
/// ask it from an authorization request (a session's re-check) as well as from a sign-in.
struct OffRuntime<D>(D);

impl<D: Directory> Directory for OffRuntime<D> {
    fn verify(
        &self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<DirectoryCheck, DirectoryError> {
        tokio::task::block_in_place(|| self.0.verify(user, password, deadline))
    }
    fn lookup(&self, user: &str, deadline: Instant) -> Result<DirectoryCheck, DirectoryError> {
        tokio::task::block_in_place(|| self.0.lookup(user, deadline))
    }
}

/// Everything a request needs, built once.
pub struct App {
    pub cfg: Config,
    pub server: ServerConfig,
    pub metrics: &'static Metrics,
    pub store: TimedStore<'static>,
    pub duo: TimedDuo<'static>,
    pub clock: Box<dyn Clock>,
    pub wait: Box<dyn Wait>,
    pub flows: portal::Flows,
    /// Places for sign-ins in progress (see [`portal::MAX_SIGN_INS`]).
    pub sign_ins: tokio::sync::Semaphore,
    /// The store is the embedded one (see [`App::lookup`]).
    pub embedded: bool,
    /// The session reads of the authorization endpoints (see [`readahead`]).
    pub reads: std::sync::OnceLock<readahead::ReadAhead>,
    /// Duo's Universal Prompt (`duo.prompt: "universal"`), instead of Auth API pushes.
    pub universal: Option<duo_auth::UniversalClient>,
    /// The policy the gate decides with: `cfg.policy`, with the htpasswd file's users as they
    /// were last read.
    policy: RwLock<Arc<Policy>>,
    /// Users from LDAP (`ldap`), with its service connections and the groups it last gave.
    pub directory: Option<crate::ldap::LdapDirectory>,
}

impl App {
    /// The daemon's state from a config with a `server` section and its ports. Leaked: it
    /// lives as long as the process.
    pub fn build(
        mut cfg: Config,
        store: Box<dyn Store>,
        duo: Box<dyn DuoApi>,
        clock: Box<dyn Clock>,
        wait: Box<dyn Wait>,
    ) -> Result<&'static App, String> {
        let server = cfg.server.clone().ok_or_else(|| {
            format!(
                "config {}: key `server`: missing (check-duo serve needs at least server.portal_url)",
                cfg.path.display()
            )
        })?;
        // The session token is the proof; the user comes from the store.
        cfg.policy.session.bound_to_password = false;
        // The waiting page shows a Verified Push's code.
        cfg.policy.factor.verified_push = cfg.duo.verified_push;
        if let Some(keys) = server.secrets.as_deref().and_then(SessionKeys::rotating) {
            cfg.policy.keys = keys;
        }
        let cfg_policy = cfg.policy.clone();
        let embedded = matches!(cfg.cache, crate::config::CacheConfig::Embedded { .. });
        let universal = match &cfg.duo.universal {
            Some(u) => Some(
                duo_auth::UniversalClient::new(duo_auth::UniversalConfig {
                    client_id: u.client_id.clone(),
                    client_secret: u.client_secret.clone(),
                    host: cfg.duo.host.clone(),
                    extra_ca_pem: cfg.duo.ca_pem.clone(),
                    call_timeout: cfg.duo.call_timeout,
                })
                .map_err(|e| format!("config {}: key `duo.client_id`: {e}", cfg.path.display()))?,
            ),
            None => None,
        };
        let directory = cfg
            .ldap
            .clone()
            .map(|l| crate::ldap::LdapDirectory::new(l, true));
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        // Sessions found are used again for a moment, and every write here forgets them.
        let recent = (!server.session_cache.is_zero())
            .then(|| Arc::new(readahead::Recent::new(server.session_cache)));
        let app: &'static App = Box::leak(Box::new(App {
            cfg,
            server,
            metrics,
            store: TimedStore {
                inner: store,
                metrics,
                recent: recent.clone(),
            },
            duo: TimedDuo {
                inner: duo,
                metrics,
            },
            clock,
            wait,
            flows: portal::Flows::default(),
            sign_ins: tokio::sync::Semaphore::new(portal::MAX_SIGN_INS),
            embedded,
            reads: std::sync::OnceLock::new(),
            universal,
            policy: RwLock::new(Arc::new(cfg_policy)),
            directory,
        }));
        let readers = if embedded { 0 } else { READERS };
        let reads = readahead::ReadAhead::start(&app.store, readers, recent)
            .map_err(|e| format!("session store readers: {e}"))?;
        let _ = app.reads.set(reads);
        Ok(app)
    }

    /// The policy now (the htpasswd file's users are read again when it changes).
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Run `f` with a gate over the policy now.
    pub fn with_gate<T>(&self, f: impl FnOnce(Gate<'_>) -> T) -> T {
        self.with_gate_on(&self.store, f)
    }

    /// [`App::with_gate`] over another view of the store (see [`readahead::Prefetched`]).
    pub fn with_gate_on<T>(&self, store: &dyn Store, f: impl FnOnce(Gate<'_>) -> T) -> T {
        let policy = self.policy();
        let directory = self.directory.as_ref().map(|d| {
            OffRuntime(metrics::TimedDirectory {
                inner: d,
                metrics: self.metrics,
            })
        });
        f(Gate {
            policy: &policy,
            store,
            duo: &self.duo,
            clock: &*self.clock,
            wait: &*self.wait,
            directory: directory.as_ref().map(|d| d as &dyn Directory),
        })
    }

    /// Each user's groups: the config's and the directory's (as it said at the sign-in or the
    /// last re-check), sorted.
    pub fn groups(&self, user: &str) -> Vec<String> {
        let mut groups = self.cfg.groups.get(user).cloned().unwrap_or_default();
        if let Some(d) = &self.directory {
            if !self.cfg.policy.users.contains_key(user) {
                // Nothing known of the user yet (a session that outlived a restart): asked once,
                // on a thread the runtime lets go of.
                let found = d
                    .known_groups(user)
                    .unwrap_or_else(|| tokio::task::block_in_place(|| d.groups_of(user)));
                groups.extend(found);
                groups.sort();
                groups.dedup();
            }
        }
        groups
    }

    /// The audit record (where configured) and the log line of a decision; the decision as it
    /// stands after the audit.
    pub fn log(&self, about: &About<'_>, d: Decision, started: Instant) -> Decision {
        let sinks = self.cfg.audit.as_ref().map(crate::audit::Sinks);
        let audit = sinks
            .as_ref()
            .map(|s| (s as &dyn AuditSink, self.cfg.policy.audit_required));
        let d = finish::finish(d, audit, about, started.elapsed());
        let line = format!("{}\n", about.record(&d, started.elapsed()));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        d
    }

    /// Run a store lookup (and an HMAC) from the runtime: in place for the embedded store (a few
    /// microseconds of SQLite, cheaper than handing the thread over), on a thread the runtime
    /// lets go of for Redis (a round trip, or its timeout when Redis hangs).
    pub fn lookup<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.embedded {
            f()
        } else {
            tokio::task::block_in_place(f)
        }
    }

    /// The routes: the authorization endpoints at the root (the proxies call the daemon
    /// directly), the portal under the path of `portal_url`.
    pub fn router(&'static self) -> Router {
        let api = Router::new()
            .route("/api/health", get(health))
            .route("/metrics", get(metrics_page))
            .route("/api/authz/forward-auth", any(authz::forward_auth))
            .route("/api/authz/auth-request", any(authz::auth_request))
            .route(authz::EXT_AUTHZ, any(authz::ext_authz))
            .route(
                &format!("{}/{{*rest}}", authz::EXT_AUTHZ),
                any(authz::ext_authz),
            )
            .route("/api/verify", any(authz::verify));
        let portal = portal::routes();
        let base = self.server.portal.base.trim_end_matches('/');
        let app = if base.is_empty() {
            api.merge(portal)
        } else {
            api.nest(base, portal)
                .route(&format!("{base}/"), get(portal::sign_in_page))
        };
        app.layer(axum::middleware::from_fn(limit_headers))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            .with_state(self)
    }
}

/// Requests whose headers are larger than [`MAX_HEADERS_BYTES`] get a 431 (hyper's buffer limit
/// does not catch every one: a request read whole in its first read passes it).
async fn limit_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > MAX_HEADERS_BYTES {
        return (
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn health(
    axum::extract::State(app): axum::extract::State<&'static App>,
) -> (axum::http::StatusCode, &'static str) {
    let now = app.clock.unix();
    match app.lookup(|| app.store.count("health", now)) {
        Ok(_) => (axum::http::StatusCode::OK, "ok\n"),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable\n",
        ),
    }
}

async fn metrics_page(
    axum::extract::State(app): axum::extract::State<&'static App>,
) -> impl axum::response::IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Run the daemon until SIGTERM or SIGINT; an error says why it could not start.
pub fn run(cfg: Config) -> Result<(), String> {
    if cfg.server.is_none() {
        return Err(format!(
            "config {}: key `server`: missing (check-duo serve needs at least server.portal_url)",
            cfg.path.display()
        ));
    }
    let store = check_duo_store::open_pooled(&cfg.cache, REDIS_CONNECTIONS)
        .map_err(|e| format!("session store: {e}"))?;
    let duo_cfg: &'static crate::config::DuoConfig = Box::leak(Box::new(cfg.duo.clone()));
    let app = App::build(
        cfg,
        store,
        Box::new(crate::duo::LazyDuo::new(duo_cfg)),
        Box::new(crate::system::SystemClock),
        Box::new(crate::system::Sleep),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("check-duo")
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let served = rt.block_on(serve(app));
    // Pushes still being followed are let go (their locks expire with their deadline): a stop
    // waits for the requests in progress, not for phones.
    rt.shutdown_timeout(STOP_GRACE);
    served
}

async fn serve(app: &'static App) -> Result<(), String> {
    let listen = app.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("server.listen {listen}: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = app.server.fastcgi_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("server.fastcgi_listen {addr}: {e}"))?;
        tokio::spawn(fcgi::serve(app, l, stop_rx.clone()));
        eprintln!("check-duo: serve: FastCGI authorizer on {addr}");
    }
    tokio::spawn(portal::sweep(app, stop_rx.clone()));
    if let Some(path) = app.cfg.htpasswd.clone() {
        tokio::spawn(watch_htpasswd(app, path, stop_rx.clone()));
    }
    eprintln!(
        "check-duo: serve: listening on http://{listen}, portal {}",
        app.server.portal.url
    );
    tokio::spawn(async move {
        signal().await;
        eprintln!("check-duo: serve: stopping");
        let _ = stop_tx.send(true);
    });
    http(app, listener, stop_rx).await;
    Ok(())
}

/// Longest a client may take to send a request's headers (slow clients are cut off).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer, which bounds a request's headers (hyper's least).
const MAX_HEADERS_BYTES: usize = 32 * 1024;

/// Serve HTTP/1.1 until stopped, then let the requests in progress finish.
async fn http(
    app: &'static App,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let router = app.router();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conn = hyper::server::conn::http1::Builder::new();
    conn.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADERS_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                // Out of file descriptors and the like: wait a little, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let _ = stream.set_nodelay(true);
        let svc =
            router
                .clone()
                .map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    r.map(axum::body::Body::new)
                });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let c = conn.serve_connection(TokioIo::new(stream), svc);
        let c = graceful.watch(c);
        tokio::spawn(async move {
            let _ = c.await;
        });
    }
    // Requests in progress get their answer; then the process ends.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown()).await;
}

/// How often the htpasswd file is looked at (a `stat`).
pub const HTPASSWD_EVERY: Duration = Duration::from_secs(2);

/// Read the htpasswd file again whenever it changes. A file that cannot be read or has a bad
/// line takes its users away (logged), until it is fixed: a broken file never keeps, or
/// grants, a user it no longer holds properly.
async fn watch_htpasswd(
    app: &'static App,
    path: std::path::PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = crate::htpasswd::stamp(&path).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HTPASSWD_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = crate::htpasswd::stamp(&path).ok();
        if now == seen {
            continue;
        }
        seen = now;
        let users = match crate::config::with_htpasswd(&app.cfg.config_users, &path) {
            Ok(users) => {
                eprintln!(
                    "check-duo: serve: htpasswd {} read again: {} users",
                    path.display(),
                    users.len()
                );
                users
            }
            Err(e) => {
                eprintln!(
                    "check-duo: serve: htpasswd: {e}: its users cannot sign in until it is fixed"
                );
                app.cfg.config_users.clone()
            }
        };
        let mut policy = (*app.policy()).clone();
        policy.users = users;
        *app.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
