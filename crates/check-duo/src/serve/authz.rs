//! The authorization endpoints, compatible with Authelia's (REFERENCE §7), and the one decision
//! behind them and behind the FastCGI authorizer: the access rules, then the session (a store
//! lookup and an HMAC). Never Duo, never a wait.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use check_duo_core::finish::About;
use check_duo_core::ports::Store;
use check_duo_core::{Decision, Event, Request};

use super::readahead::Prefetched;
use super::rules::{Policy, Verdict, Who};
use super::session::{self, CookieStyle};
use super::target::{self, BadHeader, Target};
use super::App;

/// What the gate answers about one target, whatever the front-end.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Pass, as this user (`None`: a bypass rule, nobody signed in).
    Allow(Option<String>),
    /// Not signed in: the portal URL to send a browser to. `quiet`: a path of
    /// `limits.no_push_paths` (background polls), answered a bare 401 where the proxy allows it
    /// (nginx needs the `Location` of every 401 for its `error_page`).
    SignIn { url: String, quiet: bool },
    /// Refused (a deny rule, a target the gate does not protect).
    Forbidden,
    /// The session store could not tell: never a grant.
    Unavailable,
}

/// [`decide`], the session read first without holding a runtime thread (see [`super::readahead`];
/// the embedded store is read in place).
pub async fn decide_ahead(
    app: &'static App,
    t: &Target,
    headers: &HeaderMap,
    client: &str,
) -> Answer {
    let Some(reads) = app.reads.get() else {
        return app.lookup(|| decide(app, &app.store, t, headers, client));
    };
    let keys = session_ids(app, t, headers);
    let read = if keys.is_empty() {
        Ok(Vec::new())
    } else {
        reads.get(keys.clone(), app.clock.unix()).await
    };
    let store = Prefetched::new(keys, read, &app.store);
    decide(app, &store, t, headers, client)
}

/// The store keys the request's session cookie may be filed under (the current secret's first),
/// if it has one for the target's cookie domain.
fn session_ids(app: &App, t: &Target, headers: &HeaderMap) -> Vec<String> {
    let Some((domain, portal)) = app.server.domain_for(&t.host) else {
        return Vec::new();
    };
    let Some(token) = session::cookie(
        headers,
        &CookieStyle::new(portal, domain).name(session::NAME),
    ) else {
        return Vec::new();
    };
    let policy = app.policy();
    let keys = &policy.keys;
    std::iter::once(keys.session_id(token.expose()))
        .chain(keys.older_session_ids(token.expose()))
        .collect()
}

/// What a grant tells the application of its user besides the name: `Remote-Groups` (comma
/// separated), and `Remote-Name` and `Remote-Email` where `profiles` has them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub groups: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl Identity {
    /// What `answer` grants, if a user.
    pub fn of(app: &App, answer: &Answer) -> Identity {
        let Answer::Allow(Some(user)) = answer else {
            return Identity::default();
        };
        // The groups first: for a directory user nothing is known of yet, they ask.
        let groups = app.groups(user).join(",");
        let (name, email) = match app.cfg.profiles.get(user) {
            Some(p) => (p.name.clone(), p.email.clone()),
            None => match &app.directory {
                Some(d) if !app.cfg.policy.users.contains_key(user) => d.profile_of(user),
                _ => (None, None),
            },
        };
        Identity {
            groups,
            name,
            email,
        }
    }
}

/// Decide a target for a request with these headers (the cookie) from `client`, over `store`.
pub fn decide(
    app: &App,
    store: &dyn Store,
    t: &Target,
    headers: &HeaderMap,
    client: &str,
) -> Answer {
    let started = Instant::now();
    let (answer, d) = decide_inner(app, store, t, headers, client);
    app.metrics.decision(&d);
    // Cached sessions are counted, not logged: one line per protected request would drown the
    // log (the pipe mode logs them because each is a process of its own).
    if d.event != Event::CacheHit {
        let user = d.user.clone().unwrap_or_default();
        let about = About {
            user: &user,
            ip: client,
            host: &t.authority,
            uri: &t.uri,
            context: "authz",
        };
        app.log(&about, d, started);
    }
    answer
}

fn decide_inner(
    app: &App,
    store: &dyn Store,
    t: &Target,
    headers: &HeaderMap,
    client: &str,
) -> (Answer, Decision) {
    let server = &app.server;
    let Some((domain, portal)) = server.domain_for(&t.host) else {
        let d = Decision::deny(
            Event::BadInput,
            "host not within a cookie domain of this gate",
        );
        return (Answer::Forbidden, d);
    };
    if !t.https && !portal.insecure_loopback() {
        let d = Decision::deny(Event::BadInput, "plain-HTTP target behind an HTTPS portal");
        return (Answer::Forbidden, d);
    }
    let rules = &server.rules;
    let by_policy = |p: Policy| match p {
        // A bypass only for a path sent as the application will see it: `/public/../admin`
        // needs a session whatever `/public/*` says.
        Policy::Bypass if !t.is_canonical() => None,
        Policy::Bypass => Some((
            Answer::Allow(None),
            Decision::grant(Event::Bypass, "bypass rule"),
        )),
        Policy::Deny => Some((
            Answer::Forbidden,
            Decision::deny(Event::RuleDeny, "deny rule"),
        )),
        Policy::TwoFactor => None,
    };
    // Without rules for some users, the rules decide before the session is looked up.
    if !rules.has_subjects() {
        if let Some(done) = by_policy(rules.policy(&t.host, &t.canonical, &t.method)) {
            return done;
        }
        return session(app, store, t, headers, client, domain, portal);
    }
    let found = session(app, store, t, headers, client, domain, portal);
    let groups = match &found.0 {
        Answer::Allow(Some(user)) => app.groups(user),
        _ => Vec::new(),
    };
    let who = match &found.0 {
        Answer::Allow(Some(user)) => Some(Who {
            user,
            groups: &groups,
        }),
        _ => None,
    };
    match rules.verdict(&t.host, &t.canonical, &t.method, who) {
        Verdict::Policy(p) => by_policy(p).unwrap_or(found),
        Verdict::SignIn => found,
    }
}

/// The request's session: a grant, or how to sign in, or unavailable.
fn session(
    app: &App,
    store: &dyn Store,
    t: &Target,
    headers: &HeaderMap,
    client: &str,
    domain: Option<&str>,
    portal: &super::settings::Portal,
) -> (Answer, Decision) {
    let token = session::cookie(
        headers,
        &CookieStyle::new(portal, domain).name(session::NAME),
    );
    let sign_in = || Answer::SignIn {
        url: portal_redirect(&portal.url, t),
        quiet: check_duo_core::limits::no_push_path(&app.cfg.policy.limits, &t.uri),
    };
    let Some(token) = token else {
        let d = Decision::deny(Event::NoCookie, "no session cookie");
        return (sign_in(), d);
    };
    let req = Request {
        session: Some(token),
        ip: client.to_string(),
        host: t.authority.clone(),
        method: t.method.clone(),
        uri: t.uri.clone(),
        ..Request::default()
    };
    match app.with_gate_on(store, |g| g.authorize(&req)) {
        Some(d) if d.granted() => (Answer::Allow(d.user.clone()), d),
        Some(d) => (Answer::Unavailable, d),
        None => {
            let d = Decision::deny(Event::NoSession, "no valid session for this cookie");
            (sign_in(), d)
        }
    }
}

/// `PORTAL?rd=TARGET&rm=METHOD`.
pub fn portal_redirect(portal: &str, t: &Target) -> String {
    let q = serde_urlencoded::to_string([("rd", t.url()), ("rm", t.method.clone())])
        .unwrap_or_default();
    format!("{portal}?{q}")
}

/// How the endpoint family turns "not signed in" into a reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Traefik, Caddy, HAProxy, Envoy: a redirect for browsers, 401 for the rest.
    Redirect,
    /// nginx: a 401 carrying the absolute `Location` (nginx turns every 3xx into a 500).
    Unauthorized,
}

/// `method` is the request's own (HEAD gets no body); `original` the original request's, which
/// picks 302 or 303.
fn reply(
    answer: Answer,
    family: Family,
    method: &Method,
    original: &str,
    headers: &HeaderMap,
    who: &Identity,
) -> Response<Body> {
    let head = method == Method::HEAD;
    let (status, location, user, text) = match answer {
        Answer::Allow(user) => (StatusCode::OK, None, user, "ok"),
        Answer::SignIn { url, .. } if family == Family::Unauthorized => {
            (StatusCode::UNAUTHORIZED, Some(url), None, "sign in")
        }
        Answer::SignIn { url, quiet: false } if target::wants_html(headers) => {
            let get_like = ["GET", "HEAD", "OPTIONS"].contains(&original);
            let status = if get_like {
                StatusCode::FOUND
            } else {
                StatusCode::SEE_OTHER
            };
            (status, Some(url), None, "sign in")
        }
        Answer::SignIn { .. } => (StatusCode::UNAUTHORIZED, None, None, "sign in"),
        Answer::Forbidden => (StatusCode::FORBIDDEN, None, None, "forbidden"),
        Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None, None, "unavailable"),
    };
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store");
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        b = b.header("location", l);
    }
    if let Some(u) = user {
        match HeaderValue::from_str(&u) {
            Ok(v) => b = b.header("remote-user", v),
            // A name a header cannot carry is no name to grant under.
            Err(_) => return plain(StatusCode::FORBIDDEN, "forbidden", head),
        }
        if let Ok(v) = HeaderValue::from_str(&who.groups) {
            b = b.header("remote-groups", v);
        }
        for (header, value) in [("remote-name", &who.name), ("remote-email", &who.email)] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                b = b.header(header, v);
            }
        }
    }
    // No body where nobody reads it: a grant, and everything nginx asks (its subrequests keep
    // their upstream connection only for a reply without a body).
    let bodiless = head || status == StatusCode::OK || family == Family::Unauthorized;
    let body = if bodiless {
        Body::empty()
    } else {
        Body::from(text)
    };
    b.body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "error", head))
}

fn plain(status: StatusCode, text: &'static str, head: bool) -> Response<Body> {
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(text)
    });
    *r.status_mut() = status;
    r
}

fn bad_request(e: &BadHeader, head: bool) -> Response<Body> {
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(format!("400 bad request: {e}\n"))
    });
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

type Conn = ConnectInfo<SocketAddr>;

async fn answer(
    app: &'static App,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    family: Family,
    t: Result<Target, BadHeader>,
) -> Response<Body> {
    let head = method == Method::HEAD;
    if session::oversized(&headers) {
        return plain(
            StatusCode::from_u16(431).unwrap_or(StatusCode::BAD_REQUEST),
            "cookies too large",
            head,
        );
    }
    let t = match t {
        Ok(t) => t,
        Err(e) => {
            let d = Decision::deny(Event::BadInput, format!("bad request: {e}"));
            app.metrics.decision(&d);
            let about = About {
                user: "",
                ip: &peer.ip().to_string(),
                host: "",
                uri: "",
                context: "authz",
            };
            app.log(&about, d, Instant::now());
            return bad_request(&e, head);
        }
    };
    let client = target::client(&headers, Some(peer.ip()), &app.server.trusted_proxies);
    let a = decide_ahead(app, &t, &headers, &client).await;
    let who = Identity::of(app, &a);
    reply(a, family, &method, &t.method, &headers, &who)
}

pub async fn forward_auth(
    State(app): State<&'static App>,
    ConnectInfo(peer): Conn,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    let t = target::forwarded(&headers);
    answer(app, peer, method, headers, Family::Redirect, t).await
}

pub async fn auth_request(
    State(app): State<&'static App>,
    ConnectInfo(peer): Conn,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    let t = target::original(&headers);
    answer(app, peer, method, headers, Family::Unauthorized, t).await
}

/// Envoy's path prefix: what follows it is the original path and query.
pub const EXT_AUTHZ: &str = "/api/authz/ext-authz";

pub async fn ext_authz(
    State(app): State<&'static App>,
    ConnectInfo(peer): Conn,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let full = uri.path_and_query().map_or("", |p| p.as_str());
    let rest = full.strip_prefix(EXT_AUTHZ).unwrap_or("");
    let t = target::envoy(method.as_str(), rest, &headers);
    answer(app, peer, method, headers, Family::Redirect, t).await
}

pub async fn verify(
    State(app): State<&'static App>,
    ConnectInfo(peer): Conn,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    let t = target::either(&headers);
    answer(app, peer, method, headers, Family::Redirect, t).await
}
