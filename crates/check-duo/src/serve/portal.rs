//! The sign-in portal: the form (user, password, the factor), the push started at once, a
//! waiting page that follows it (a script polls; without JavaScript a `<noscript>` refresh does),
//! another push, a call or a passcode from there, and the way back to the target. Then logout.
//!
//! A sign-in in progress is a *flow*, kept in this daemon's memory under a random id in a
//! host-only cookie of the portal: it holds the user whose password was checked (never the
//! password), where to go afterwards, and the current attempt. Each attempt has its own new
//! session token; the token becomes the session cookie only once the store holds its approval.
//! The browser's portal requests must reach the same daemon; the sessions themselves are in the
//! store, so with Redis every daemon accepts them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use check_duo_core::factor::Requested;
use check_duo_core::finish::About;
use check_duo_core::{Decision, Effect, Event, Outcome, Request, Secret};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::pages::{self, esc, Page};
use super::rules::Policy;
use super::session::{self, CookieStyle};
use super::settings::Portal;
use super::App;

/// How long after the password a sign-in may still ask for another push, call or passcode.
pub const FLOW_TTL: Duration = Duration::from_secs(300);
/// Sign-ins in progress at once, at most (each is a few hundred bytes).
pub const MAX_FLOWS: usize = 10_000;
/// The longest redirect target kept for a sign-in.
pub const MAX_TARGET: usize = 4096;
/// The flow cookie's name without its prefix.
const FLOW: &str = "check-duo-flow";

/// Where an attempt stands.
#[derive(Clone, Debug)]
enum Status {
    /// A push or call is out (`code`: a Verified Push's, to type into Duo Mobile).
    Waiting {
        show: String,
        call: bool,
        code: Option<String>,
    },
    /// Approved: the token is a session now.
    Granted { token: String },
    /// On to Duo's Universal Prompt at this URL.
    Prompt { url: String },
    /// Not approved: what to tell the user.
    Failed {
        message: String,
        link: Option<String>,
    },
}

impl Status {
    fn word(&self) -> &'static str {
        match self {
            // The page shows a code once Duo gave one: a change the script reloads for.
            Status::Waiting { code: Some(_), .. } => "code",
            Status::Waiting { .. } => "waiting",
            Status::Granted { .. } => "granted",
            Status::Prompt { .. } => "prompt",
            Status::Failed { .. } => "failed",
        }
    }
}

struct Flow {
    user: String,
    /// When the password was checked.
    password_at: Instant,
    /// The validated target (`None`: no target, the portal says "signed in").
    rd: Option<String>,
    /// The cookie domain of the target.
    domain: Option<String>,
    /// The token of the current attempt.
    token: String,
    status: Status,
    /// The Universal Prompt this browser was sent to, until its answer comes back (once).
    prompt: Option<PromptSent>,
}

/// What the portal keeps of a browser sent to the Universal Prompt.
struct PromptSent {
    state: String,
    nonce: String,
    sent: Instant,
    sent_ms: i64,
}

/// How long the Universal Prompt may take (Duo's request JWT lives 300 s at most).
pub const PROMPT_TTL: Duration = Duration::from_secs(300);

/// The sign-ins in progress.
#[derive(Default)]
pub struct Flows {
    map: Mutex<HashMap<String, Flow>>,
}

impl Flows {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Flow) -> T) -> Option<T> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(id).map(f)
    }

    fn insert(&self, id: String, flow: Flow) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_FLOWS {
            return false;
        }
        map.insert(id, flow);
        true
    }

    fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    /// Forget flows older than any attempt of theirs can last: the last one starts at most
    /// [`FLOW_TTL`] after the password and ends by the push deadline (`push_timeout`).
    fn sweep(&self, push_timeout: Duration) {
        let keep = FLOW_TTL + push_timeout + Duration::from_secs(60);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, f| f.password_at.elapsed() < keep);
    }
}

/// Forget old flows every 30 s until stopped.
pub async fn sweep(app: &'static App, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {
                app.flows.sweep(app.policy().factor.push_timeout);
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

pub fn routes() -> Router<&'static App> {
    Router::new()
        .route("/", get(sign_in_page).post(sign_in))
        .route("/wait", get(wait_page).post(wait_action))
        .route("/api/flow", get(flow_state))
        .route("/logout", get(logout_page).post(logout))
        .route("/duo-callback", get(duo_callback))
}

fn portal(app: &App) -> &Portal {
    &app.server.portal
}

fn link(app: &App, page: &str) -> String {
    format!("{}{page}", portal(app).base)
}

/// The CSRF token of this browser, and the cookie to set when it is new.
fn csrf(app: &App, headers: &HeaderMap) -> Result<(String, Option<String>), String> {
    if let Some(t) = csrf_cookie(app, headers) {
        if t.expose().len() == 43 {
            return Ok((t.expose().to_string(), None));
        }
    }
    let t = session::new_token()?;
    let c = CookieStyle::new(portal(app), None).set_csrf(&t);
    Ok((t, Some(c)))
}

/// The browser's CSRF cookie (host-only on the portal).
fn csrf_cookie(app: &App, headers: &HeaderMap) -> Option<Secret> {
    session::cookie(
        headers,
        &CookieStyle::new(portal(app), None).name(session::CSRF),
    )
}

fn csrf_ok(app: &App, headers: &HeaderMap, sent: &str) -> bool {
    csrf_cookie(app, headers).is_some_and(|t| {
        !sent.is_empty() && bool::from(t.expose().as_bytes().ct_eq(sent.as_bytes()))
    })
}

fn flow_cookie_name(app: &App) -> String {
    CookieStyle::new(portal(app), None).name(FLOW)
}

fn flow_id(app: &App, headers: &HeaderMap) -> Option<String> {
    session::cookie(headers, &flow_cookie_name(app)).map(|s| s.expose().to_string())
}

fn flow_cookie(app: &App, id: &str) -> String {
    CookieStyle::new(portal(app), None).set(FLOW, id)
}

fn clear_flow_cookie(app: &App) -> String {
    CookieStyle::new(portal(app), None).clear(FLOW)
}

fn failure(_app: &App, why: &str) -> Response {
    Page::new("Sign-in unavailable", pages::error(why))
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .into_response()
}

/// A redirect target the gate may send a browser to: an absolute http(s) URL on one of the
/// configured cookie domains (with none configured: the portal's host, on any port, and its
/// subdomains); https unless the portal itself is plain HTTP on loopback. Anything else is an
/// open redirect.
pub fn valid_target(app: &App, rd: &str) -> Option<(String, Option<String>)> {
    if rd.len() > MAX_TARGET {
        return None;
    }
    let uri: Uri = rd.parse().ok()?;
    let https = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let auth = uri.authority()?;
    if auth.as_str().contains('@') || rd.contains(['\\', '\r', '\n']) {
        return None;
    }
    let (domain, p) = app.server.domain_for(auth.host())?;
    if !https && !p.insecure_loopback() {
        return None;
    }
    Some((uri.to_string(), domain.map(str::to_string)))
}

#[derive(Deserialize)]
pub struct SignInQuery {
    rd: Option<String>,
}

/// The sign-in form (or straight on, when the browser already has a session).
pub async fn sign_in_page(
    State(app): State<&'static App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<SignInQuery>,
    headers: HeaderMap,
) -> Response {
    let target = match q.rd.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(rd) => match valid_target(app, rd) {
            Some(t) => Some(t),
            None => return bad_target(),
        },
    };
    if let Some((rd, domain)) = &target {
        if signed_in(app, &headers, domain.as_deref(), &peer).is_some() {
            return continue_page(rd, Vec::new());
        }
    }
    let (token, set) = match csrf(app, &headers) {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    let mut page = form_page(app, &token, target.as_ref().map(|t| t.0.as_str()), "", None);
    if let Some(c) = set {
        page = page.cookie(c);
    }
    page.into_response()
}

fn bad_target() -> Response {
    Page::new(
        "Sign-in link refused",
        pages::error(
            "This sign-in link would send you to a site this gate does not protect. \
             Go back to the site you wanted and follow its link again.",
        ),
    )
    .status(StatusCode::BAD_REQUEST)
    .into_response()
}

/// The user of the browser's valid session for a cookie domain, if any.
fn signed_in(
    app: &'static App,
    headers: &HeaderMap,
    domain: Option<&str>,
    peer: &SocketAddr,
) -> Option<String> {
    let name = CookieStyle::new(portal(app), domain).name(session::NAME);
    let token = session::cookie(headers, &name)?;
    let req = Request {
        session: Some(token),
        ip: super::target::client(headers, Some(peer.ip()), &app.server.trusted_proxies),
        ..Request::default()
    };
    let d = app.lookup(|| app.with_gate(|g| g.authorize(&req)))?;
    d.granted().then(|| d.user.unwrap_or_default())
}

fn form_page(app: &App, csrf: &str, rd: Option<&str>, user: &str, error: Option<&str>) -> Page {
    let rd_field = rd.map_or(String::new(), |r| {
        format!(r#"<input type="hidden" name="rd" value="{}">"#, esc(r))
    });
    let error = error.map(pages::error).unwrap_or_default();
    let autofocus_user = if user.is_empty() { " autofocus" } else { "" };
    let autofocus_pw = if user.is_empty() { "" } else { " autofocus" };
    Page::new(
        "Sign in",
        format!(
            r#"{error}<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">{rd_field}
<label for="username">User name</label>
<input type="text" id="username" name="username" value="{user}" autocomplete="username" autocapitalize="none" required{autofocus_user}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required{autofocus_pw}>
<fieldset><legend>Then</legend>
<input type="radio" id="f-push" name="factor" value="push" checked><label for="f-push">Send a push</label>
<input type="radio" id="f-phone" name="factor" value="phone"><label for="f-phone">Call me</label>
<input type="radio" id="f-passcode" name="factor" value="passcode"><label for="f-passcode">Passcode</label>
</fieldset>
<label for="passcode">Passcode (optional)</label>
<input type="text" id="passcode" name="passcode" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*">
<p>After your password, a Duo push goes to your phone unless you enter a passcode.</p>
<button type="submit">Sign in</button>
</form>"#,
            action = esc(&link(app, "")),
            csrf = esc(csrf),
            user = esc(user),
        ),
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    factor: String,
    #[serde(default)]
    passcode: String,
    rd: Option<String>,
}

fn requested(factor: &str, passcode: &str) -> Result<Requested, &'static str> {
    let passcode = passcode.trim();
    if !passcode.is_empty() {
        return if (6..=10).contains(&passcode.len()) && passcode.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(Requested::Passcode(passcode.to_string()))
        } else {
            Err("A passcode is 6 to 10 digits.")
        };
    }
    match factor {
        "" | "push" => Ok(Requested::Push),
        "phone" => Ok(Requested::Phone),
        "passcode" => Err("Enter the passcode, or choose a push."),
        _ => Err("Choose a push, a call or a passcode."),
    }
}

fn suffix(r: &Requested) -> String {
    match r {
        Requested::Phone => "phone".into(),
        Requested::Passcode(p) => p.clone(),
        _ => "push".into(),
    }
}

/// The password form's POST: the password now, the second factor started at once.
pub async fn sign_in(
    State(app): State<&'static App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let started = Instant::now();
    let client = super::target::client(&headers, Some(peer.ip()), &app.server.trusted_proxies);
    if !csrf_ok(app, &headers, &f.csrf) {
        let d = Decision::deny(Event::BadInput, "sign-in form without its CSRF token");
        log_decision(app, &f.username, &client, "login", d, started);
        return Page::new(
            "Sign in",
            pages::error("This form has expired. Reload the page and sign in again."),
        )
        .status(StatusCode::FORBIDDEN)
        .into_response();
    }
    let target = match f.rd.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(rd) => match valid_target(app, rd) {
            Some(t) => Some(t),
            None => return bad_target(),
        },
    };
    let rd = target.as_ref().map(|t| t.0.as_str());
    let again = |msg: &str, status: StatusCode| {
        form_page(app, &f.csrf, rd, &f.username, Some(msg))
            .status(status)
            .into_response()
    };
    if f.username.is_empty() || f.username.len() > 256 || f.username.chars().any(char::is_control) {
        return again("Enter your user name.", StatusCode::BAD_REQUEST);
    }
    if f.password.is_empty() || f.password.len() > 1024 {
        return again("Enter your password.", StatusCode::BAD_REQUEST);
    }
    let req_factor = match requested(&f.factor, &f.passcode) {
        Ok(r) => r,
        Err(m) => return again(m, StatusCode::BAD_REQUEST),
    };
    if let Some(t) = rd.and_then(|r| r.parse::<Uri>().ok()) {
        let host = t
            .host()
            .unwrap_or("")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let path = super::target::canonical_path(t.path()).unwrap_or_default();
        if app.server.rules.policy(&host, &path, "GET") == Policy::Deny {
            return again("Access to that page is refused.", StatusCode::FORBIDDEN);
        }
    }
    let token = match session::new_token() {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    let req = Request {
        user: f.username.clone(),
        password: Some(Secret::new(format!(
            "{},{}",
            f.password,
            suffix(&req_factor)
        ))),
        session: Some(Secret::new(token.clone())),
        ip: client.clone(),
        host: headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string(),
        method: "POST".into(),
        uri: link(app, ""),
    };
    let flow = Flow {
        user: f.username.clone(),
        password_at: Instant::now(),
        rd: rd.map(str::to_string),
        domain: target.as_ref().and_then(|t| t.1.clone()),
        token,
        status: Status::Waiting {
            show: String::new(),
            call: false,
            code: None,
        },
        prompt: None,
    };
    let Ok(permit) = app.sign_ins.try_acquire() else {
        return failure(app, BUSY);
    };
    let id = match session::new_token() {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    // The attempt runs on its own: a client that goes away (or a request timeout) cannot leave
    // a push that nobody follows, or a flow that waits for ever.
    // The flow's place is taken first, so that no push goes out without one to follow it; its
    // id reaches the browser only with this answer.
    if !app.flows.insert(id.clone(), flow) {
        return failure(app, BUSY);
    }
    let (user, from, flow_id) = (f.username.clone(), client.clone(), id.clone());
    let attempt = tokio::spawn(async move {
        if app.universal.is_some() {
            // The password here, the second factor at Duo's prompt.
            let mut d = blocking(move || app.with_gate(|g| g.check_password(&req))).await;
            d.password_verified = d.granted();
            if !d.password_verified {
                app.flows.remove(&flow_id);
                return Err(log_decision(app, &user, &from, "login", d, started));
            }
            let sent = send_to_prompt(app, &flow_id, &user);
            log_decision(app, &user, &from, "login", d, started);
            drop(permit);
            return sent.map_err(|e| Decision::deny(Event::DuoError, e));
        }
        let d = blocking(move || app.with_gate(|g| g.authenticate(&req))).await;
        // A flow only for a password known to be right: whatever else went wrong before or
        // during its check (a ban, the store) leaves nothing to continue from.
        if !d.password_verified {
            app.flows.remove(&flow_id);
            return Err(log_decision(app, &user, &from, "login", d, started));
        }
        settle(app, &flow_id, d, &user, &from, started, permit);
        Ok(())
    });
    match attempt.await {
        Ok(Ok(())) => {}
        Ok(Err(d)) => {
            let (msg, status) = match d.event {
                Event::PasswordFailure | Event::UnknownUser => (
                    "Wrong user name or password. No push was sent.".to_string(),
                    StatusCode::UNAUTHORIZED,
                ),
                Event::Banned => (locked_out(app), StatusCode::TOO_MANY_REQUESTS),
                _ => (
                    format!("{} No push was sent.", message(app, &d)),
                    StatusCode::SERVICE_UNAVAILABLE,
                ),
            };
            return again(&msg, status);
        }
        Err(_) => return failure(app, "The sign-in failed."),
    }
    let mut r = see_other(&link(app, "wait"));
    if let Ok(v) = flow_cookie(app, &id).parse() {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

fn locked_out(app: &App) -> String {
    let ban = app.policy().limits.ban.as_secs().div_ceil(60);
    format!(
        "Too many failed attempts: sign-in is locked for up to {ban} minute{}. No push was sent.",
        if ban == 1 { "" } else { "s" }
    )
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [("location", to.to_string())]).into_response()
}

/// A decision on the blocking pool (password hashes, Duo calls).
async fn blocking(f: impl FnOnce() -> Decision + Send + 'static) -> Decision {
    match tokio::task::spawn_blocking(f).await {
        Ok(d) => d,
        Err(_) => Decision::deny(Event::ConfigError, "the decision failed"),
    }
}

fn log_decision(
    app: &App,
    user: &str,
    client: &str,
    context: &str,
    d: Decision,
    started: Instant,
) -> Decision {
    app.metrics.decision(&d);
    let about = About {
        user,
        ip: client,
        host: "",
        uri: "",
        context,
    };
    app.log(&about, d, started)
}

/// Sign-ins (a password check, or a push being followed) at once, at most: each holds a thread
/// of the blocking pool for its password check or for the push's long poll.
pub const MAX_SIGN_INS: usize = 256;

const BUSY: &str = "Too many sign-ins are in progress. Try again in a minute.";

/// Record a decision on the flow `id`; a pending one is followed to its end in the background.
/// `permit` (a place among [`MAX_SIGN_INS`]) is held until the attempt ends.
fn settle(
    app: &'static App,
    id: &str,
    d: Decision,
    user: &str,
    client: &str,
    started: Instant,
    permit: tokio::sync::SemaphorePermit<'static>,
) {
    match &d.outcome {
        Outcome::Pending(p) => {
            let status = Status::Waiting {
                show: p.show.clone(),
                call: matches!(&p.wait, check_duo_core::PendingKind::Own(o) if o.call),
                code: p.code.clone(),
            };
            let token = app.flows.with(id, |f| {
                f.status = status;
                f.token.clone()
            });
            let Some(token) = token else { return };
            let d = log_decision(app, user, client, "login", d, started);
            app.metrics.pending.inc();
            let (id, user, client) = (id.to_string(), user.to_string(), client.to_string());
            tokio::task::spawn_blocking(move || {
                let req = Request {
                    user: user.clone(),
                    session: Some(Secret::new(token.clone())),
                    ip: client.clone(),
                    ..Request::default()
                };
                let mut d = d;
                while let Outcome::Pending(p) = &d.outcome {
                    let p = p.clone();
                    app.wait.wait(p.retry_after);
                    d = app.with_gate(|g| g.resume(&req, &p));
                    // A Verified Push's code, once Duo gives it: on the page.
                    if let Outcome::Pending(next) = &d.outcome {
                        if next.code.is_some() && next.code != p.code {
                            app.flows.with(&id, |f| {
                                if let (Status::Waiting { code, .. }, true) =
                                    (&mut f.status, f.token == token)
                                {
                                    *code = next.code.clone();
                                }
                            });
                        }
                    }
                }
                app.metrics.pending.dec();
                let d = log_decision(app, &user, &client, "login", d, started);
                finish_attempt(app, &id, &token, &d);
                drop(permit);
            });
        }
        _ => {
            let token = app.flows.with(id, |f| f.token.clone()).unwrap_or_default();
            let d = log_decision(app, user, client, "login", d, started);
            finish_attempt(app, id, &token, &d);
            drop(permit);
        }
    }
}

/// The end of one attempt: a grant that the store holds makes its token the session (even when
/// a later attempt has started meanwhile: the user approved, the user gets in); a failure is
/// shown only if it is the current attempt's.
fn finish_attempt(app: &App, id: &str, token: &str, d: &Decision) {
    let stored = d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::SetSession { .. }));
    app.flows.with(id, |f| {
        if d.granted() && stored {
            f.status = Status::Granted {
                token: token.to_string(),
            };
        } else if f.token == token && !matches!(f.status, Status::Granted { .. }) {
            f.status = Status::Failed {
                message: message(app, d),
                link: d.link.clone(),
            };
        }
    });
}

/// What the user is told about a decision that did not sign them in.
fn message(app: &App, d: &Decision) -> String {
    match d.event {
        _ if d.fail_open() => "Duo cannot be reached right now. The fail mode would let you in \
            without it, but the portal makes no session without the second factor: try again \
            later."
            .into(),
        _ if d.granted() => "Signed in, but the session could not be stored. Try again.".into(),
        Event::PushDenied => "The push was denied on your phone.".into(),
        Event::PushTimeout => "Nobody answered the push in time.".into(),
        Event::PasscodeDenied | Event::TotpDenied => "That passcode was not accepted.".into(),
        Event::NotEnrolled => "Your account is not enrolled in Duo.".into(),
        Event::PreauthDeny => "Duo does not allow this account to sign in.".into(),
        Event::DuoUnreachable | Event::DuoError => {
            "Duo cannot be reached right now, so sign-in is not possible (the gate fails closed). Try again later.".into()
        }
        Event::Cooldown | Event::PushLimit => {
            "Too many pushes for now: wait a little before asking for another one.".into()
        }
        Event::Banned => locked_out(app),
        Event::StoreError => "The session store is unavailable. Try again later.".into(),
        Event::DirectoryUnreachable => {
            "The user directory cannot be reached right now, so your password cannot be checked (the gate fails closed). Try again later.".into()
        }
        Event::TotpRequired => "This account signs in with a passcode from its authenticator app.".into(),
        Event::Logout => "You signed out while the push was out.".into(),
        _ => "Sign-in failed.".into(),
    }
}

/// The waiting page: where the push went, or how the attempt ended, and what to do next.
pub async fn wait_page(State(app): State<&'static App>, headers: HeaderMap) -> Response {
    let Some(id) = flow_id(app, &headers) else {
        return see_other(&link(app, ""));
    };
    let Some((status, rd, domain)) = app
        .flows
        .with(&id, |f| (f.status.clone(), f.rd.clone(), f.domain.clone()))
    else {
        return see_other(&link(app, ""));
    };
    let (csrf, set) = match csrf(app, &headers) {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    let mut page = match &status {
        Status::Granted { token } => {
            app.flows.remove(&id);
            let style = CookieStyle::new(portal(app), domain.as_deref());
            let cookies = vec![style.set_session(token), clear_flow_cookie(app)];
            return match rd {
                Some(rd) => continue_page(&rd, cookies),
                None => {
                    let mut p = Page::new("Signed in", pages::status("You are signed in."));
                    p.cookies = cookies;
                    p.into_response()
                }
            };
        }
        Status::Waiting { show, call, code } => {
            let what = if *call {
                "Answer the call and follow its instructions."
            } else if code.is_some() {
                "Enter this code in Duo Mobile, then approve:"
            } else {
                "Approve it in Duo Mobile."
            };
            let code_html = code.as_deref().map_or(String::new(), |c| {
                format!(
                    r#"<p class="code" id="verification-code" aria-label="Verification code {}">{}</p>"#,
                    esc(&c.chars().map(String::from).collect::<Vec<_>>().join(" ")),
                    esc(c)
                )
            });
            let mut p = Page::new(
                "Check your phone",
                format!(
                    "{}{code_html}<p>This page moves on by itself once you have answered.</p>{}",
                    pages::status(&format!("{show}. {what}")),
                    actions(app, &csrf, true)
                ),
            );
            p.poll = Some((status.word().into(), link(app, "api/flow")));
            p.refresh = Some((2, None));
            p.refresh_noscript = true;
            p
        }
        Status::Prompt { url } => {
            // On by a refresh (not a redirect from the form's POST, which the form-action policy
            // would hold to the portal's own origin).
            let mut p = Page::new(
                "Continue to Duo",
                format!(
                    "{}<p><a href=\"{}\">Continue to Duo</a></p>",
                    pages::status("Your password is right. Duo asks for the second factor next."),
                    esc(url)
                ),
            );
            p.refresh = Some((0, Some(url.clone())));
            p
        }
        Status::Failed { message, link: l } => {
            let enroll = l.as_deref().map_or(String::new(), |u| {
                format!(r#"<p><a href="{}">Enroll in Duo</a></p>"#, esc(u))
            });
            let mut p = Page::new(
                "Not signed in",
                format!(
                    "{}{enroll}{}",
                    pages::error(message),
                    actions(app, &csrf, false)
                ),
            );
            p.poll = Some(("failed".into(), link(app, "api/flow")));
            p
        }
    };
    if let Some(c) = set {
        page = page.cookie(c);
    }
    page.into_response()
}

fn actions(app: &App, csrf: &str, waiting: bool) -> String {
    if app.universal.is_some() {
        // Duo's prompt offers the factors; here, only a new sign-in.
        return format!(r#"<p><a href="{}">Start over</a></p>"#, esc(&link(app, "")));
    }
    let action = esc(&link(app, "wait"));
    let csrf = esc(csrf);
    let again = if waiting {
        "Send another push"
    } else {
        "Send a push"
    };
    format!(
        r#"<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<label for="passcode">Passcode</label>
<input type="text" id="passcode" name="passcode" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*">
<button type="submit" name="action" value="passcode">Use this passcode</button>
</form>
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" class="secondary" name="action" value="push">{again}</button>
<button type="submit" class="secondary" name="action" value="phone">Call me</button>
</form>
<p><a href="{start}">Start over</a></p>"#,
        start = esc(&link(app, "")),
    )
}

#[derive(Deserialize)]
pub struct WaitForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    passcode: String,
}

/// Another push, a call or a passcode, for the user whose password this flow checked.
pub async fn wait_action(
    State(app): State<&'static App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<WaitForm>,
) -> Response {
    let started = Instant::now();
    let client = super::target::client(&headers, Some(peer.ip()), &app.server.trusted_proxies);
    let Some(id) = flow_id(app, &headers) else {
        return see_other(&link(app, ""));
    };
    if !csrf_ok(app, &headers, &f.csrf) {
        return Page::new(
            "Not signed in",
            pages::error("This form has expired. Reload the page."),
        )
        .status(StatusCode::FORBIDDEN)
        .into_response();
    }
    if app.universal.is_some() {
        // Duo's prompt offers the factors: nothing to start from here.
        return see_other(&link(app, ""));
    }
    let requested = match f.action.as_str() {
        "push" => Ok(Requested::Push),
        "phone" => Ok(Requested::Phone),
        _ => requested("passcode", &f.passcode),
    };
    let token = match session::new_token() {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    let fail = |message: &str| {
        app.flows.with(&id, |fl| {
            if !matches!(fl.status, Status::Granted { .. }) {
                fl.status = Status::Failed {
                    message: message.to_string(),
                    link: None,
                }
            }
        });
        see_other(&link(app, "wait"))
    };
    let requested = match requested {
        Ok(r) => r,
        Err(m) => return fail(m),
    };
    // The new attempt, if the flow is fresh enough and is not waiting for a phone already.
    let user = app.flows.with(&id, |fl| {
        if fl.password_at.elapsed() > FLOW_TTL {
            return Err("It has been too long since your password: start over.");
        }
        let reaches_phone = !matches!(requested, Requested::Passcode(_));
        if reaches_phone && matches!(fl.status, Status::Waiting { .. }) {
            return Err("A push or call is already out: answer it, or enter a passcode.");
        }
        if matches!(fl.status, Status::Granted { .. }) {
            return Ok(None);
        }
        fl.token = token.clone();
        fl.status = Status::Waiting {
            show: "Asking Duo".into(),
            call: false,
            code: None,
        };
        Ok(Some(fl.user.clone()))
    });
    let user = match user {
        None => return see_other(&link(app, "")),
        Some(Err(m)) => {
            // Keep a waiting status as it is: only say why nothing new was started.
            let waiting = app
                .flows
                .with(&id, |fl| matches!(fl.status, Status::Waiting { .. }))
                .unwrap_or(false);
            if waiting {
                return Page::new(
                    "Check your phone",
                    format!(
                        "{}<p><a href=\"{}\">Back</a></p>",
                        pages::error(m),
                        esc(&link(app, "wait"))
                    ),
                )
                .status(StatusCode::CONFLICT)
                .into_response();
            }
            return fail(m);
        }
        Some(Ok(None)) => return see_other(&link(app, "wait")),
        Some(Ok(Some(u))) => u,
    };
    let req = Request {
        user: user.clone(),
        session: Some(Secret::new(token)),
        ip: client.clone(),
        method: "POST".into(),
        uri: link(app, "wait"),
        ..Request::default()
    };
    let Ok(permit) = app.sign_ins.try_acquire() else {
        return fail(BUSY);
    };
    let attempt = tokio::spawn(async move {
        let d = blocking(move || app.with_gate(|g| g.second_factor_only(&req, requested))).await;
        settle(app, &id, d, &user, &client, started, permit);
    });
    let _ = attempt.await;
    see_other(&link(app, "wait"))
}

/// The flow's state for the waiting page's script.
pub async fn flow_state(State(app): State<&'static App>, headers: HeaderMap) -> Response {
    let word = flow_id(app, &headers)
        .and_then(|id| app.flows.with(&id, |f| f.status.word()))
        .unwrap_or("none");
    (
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        format!("{{\"state\":\"{word}\"}}"),
    )
        .into_response()
}

/// "Signed in": on to the target by a refresh (not a redirect, which the form-action policy
/// would check against the portal's origin).
fn continue_page(rd: &str, cookies: Vec<String>) -> Response {
    let mut p = Page::new(
        "Signed in",
        format!(
            "{}<p><a href=\"{}\">Continue</a></p>",
            pages::status("You are signed in."),
            esc(rd)
        ),
    );
    p.refresh = Some((0, Some(rd.to_string())));
    p.cookies = cookies;
    p.into_response()
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

fn session_cookies(app: &App, headers: &HeaderMap) -> Vec<(Option<String>, Secret)> {
    let mut domains: Vec<Option<String>> = vec![None];
    domains.extend(app.server.domains.iter().map(|d| Some(d.domain.clone())));
    domains
        .into_iter()
        .filter_map(|d| {
            let name = CookieStyle::new(portal(app), d.as_deref()).name(session::NAME);
            session::cookie(headers, &name).map(|t| (d, t))
        })
        .collect()
}

/// GET: a confirmation with a button (a link or an image must not log anybody out).
pub async fn logout_page(State(app): State<&'static App>, headers: HeaderMap) -> Response {
    if session_cookies(app, &headers).is_empty() {
        return Page::new(
            "Signed out",
            format!(
                "{}<p><a href=\"{}\">Sign in</a></p>",
                pages::status("You are not signed in."),
                esc(&link(app, ""))
            ),
        )
        .into_response();
    }
    let (csrf, set) = match csrf(app, &headers) {
        Ok(t) => t,
        Err(e) => return failure(app, &e),
    };
    let mut p = Page::new(
        "Sign out",
        format!(
            r#"<form method="post" action="{}"><input type="hidden" name="csrf" value="{}">
<p>End your session on every site behind this gate?</p>
<button type="submit" autofocus>Sign out</button></form>"#,
            esc(&link(app, "logout")),
            esc(&csrf)
        ),
    );
    if let Some(c) = set {
        p = p.cookie(c);
    }
    p.into_response()
}

/// POST: end the session on the server and clear the cookie.
pub async fn logout(
    State(app): State<&'static App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let started = Instant::now();
    if !csrf_ok(app, &headers, &f.csrf) {
        return Page::new(
            "Sign out",
            pages::error("This form has expired. Reload the page."),
        )
        .status(StatusCode::FORBIDDEN)
        .into_response();
    }
    let client = super::target::client(&headers, Some(peer.ip()), &app.server.trusted_proxies);
    let mut cookies = Vec::new();
    let mut failed = false;
    for (domain, token) in session_cookies(app, &headers) {
        let req = Request {
            session: Some(token),
            ip: client.clone(),
            ..Request::default()
        };
        let d = app.lookup(|| app.with_gate(|g| g.logout(&req)));
        failed |= d.event == Event::StoreError;
        log_decision(app, "", &client, "logout", d, started);
        cookies.push(CookieStyle::new(portal(app), domain.as_deref()).clear_session());
    }
    if let Some(id) = flow_id(app, &headers) {
        app.flows.remove(&id);
        cookies.push(clear_flow_cookie(app));
    }
    let msg = if failed {
        pages::error("The session store could not be reached: your session may still be valid on other devices until it expires.")
    } else {
        pages::status("You are signed out.")
    };
    let mut p = Page::new(
        "Signed out",
        format!(
            "{msg}<p><a href=\"{}\">Sign in again</a></p>",
            esc(&link(app, ""))
        ),
    );
    p.cookies = cookies;
    p.into_response()
}

/// The URL Duo sends the browser back to.
fn callback_url(app: &App) -> String {
    format!("{}duo-callback", portal(app).url)
}

/// Send flow `id` (whose password was just checked) to the Universal Prompt: a new state and
/// nonce, kept in the flow.
fn send_to_prompt(app: &App, id: &str, user: &str) -> Result<(), String> {
    let Some(client) = &app.universal else {
        return Err("no Universal Prompt configured".into());
    };
    let state = duo_auth::UniversalClient::generate_state().map_err(|e| e.to_string())?;
    let nonce = duo_auth::UniversalClient::generate_state().map_err(|e| e.to_string())?;
    let url = client
        .authorization_url(user, &state, &callback_url(app), Some(&nonce))
        .map_err(|e| e.to_string())?;
    app.flows.with(id, |f| {
        f.prompt = Some(PromptSent {
            state,
            nonce,
            sent: Instant::now(),
            sent_ms: app.clock.unix_ms(),
        });
        f.status = Status::Prompt { url };
    });
    Ok(())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    duo_code: String,
    #[serde(default)]
    state: String,
}

/// Duo's Universal Prompt sends the browser back here: accepted only with the `state` this
/// browser's flow was sent with, once, within [`PROMPT_TTL`]; then the code is exchanged and the
/// `id_token` validated, and an approval becomes the session as a push's does.
pub async fn duo_callback(
    State(app): State<&'static App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let client_ip = super::target::client(&headers, Some(peer.ip()), &app.server.trusted_proxies);
    let refuse = |why: &str, message: &str| {
        let d = Decision::deny(Event::PromptDenied, why.to_string());
        log_decision(app, "", &client_ip, "login", d, started);
        Page::new(
            "Not signed in",
            format!(
                "{}<p><a href=\"{}\">Start over</a></p>",
                pages::error(message),
                esc(&link(app, ""))
            ),
        )
        .status(StatusCode::BAD_REQUEST)
        .into_response()
    };
    let Some(id) = flow_id(app, &headers) else {
        return refuse(
            "Universal Prompt answer without a sign-in in this browser",
            "This answer from Duo is for a sign-in this browser did not start.",
        );
    };
    // The state must be the flow's; it is taken, so a second use finds nothing.
    let taken = app.flows.with(&id, |f| {
        let matches = f.prompt.as_ref().is_some_and(|p| {
            !q.state.is_empty() && bool::from(p.state.as_bytes().ct_eq(q.state.as_bytes()))
        });
        if !matches {
            return Err("state");
        }
        let p = f.prompt.take().ok_or("state")?;
        if p.sent.elapsed() > PROMPT_TTL {
            return Err("expired");
        }
        Ok((f.user.clone(), f.token.clone(), p))
    });
    let (user, token, sent) = match taken {
        Some(Ok(t)) => t,
        Some(Err("expired")) => {
            return refuse(
                "Universal Prompt answer after its lifetime",
                "The sign-in at Duo took too long. Start over.",
            )
        }
        _ => {
            return refuse(
                "Universal Prompt answer with a state this browser was not sent with, or again",
                "This answer from Duo is not for the sign-in this browser started, or was used already.",
            )
        }
    };
    let Ok(permit) = app.sign_ins.try_acquire() else {
        return failure(app, BUSY);
    };
    let (code, from, fid) = (q.duo_code.clone(), client_ip.clone(), id.clone());
    let callback = callback_url(app);
    let attempt = tokio::spawn(async move {
        let d = blocking(move || {
            let Some(client) = &app.universal else {
                return Decision::deny(Event::ConfigError, "no Universal Prompt configured");
            };
            let deadline = std::time::Instant::now() + app.cfg.duo.call_timeout;
            let answer = match client.exchange(&code, &user, &callback, Some(&sent.nonce), deadline)
            {
                Ok(t) if t.allowed() => Decision::grant(
                    Event::PromptApproved,
                    format!("Universal Prompt approved ({})", t.auth_result.status),
                ),
                Ok(t) => Decision::deny(
                    Event::PromptDenied,
                    format!(
                        "Universal Prompt denied ({}: {})",
                        t.auth_result.status, t.auth_result.status_msg
                    ),
                ),
                Err(e) if e.is_unreachable() => {
                    Decision::deny(Event::DuoUnreachable, format!("Duo token exchange: {e}"))
                }
                Err(e) => Decision::deny(Event::PromptDenied, format!("Duo token exchange: {e}")),
            };
            let req = Request {
                user: user.clone(),
                session: Some(Secret::new(token.clone())),
                ip: from.clone(),
                ..Request::default()
            };
            let d = app.with_gate(|g| g.second_factor_done(&req, answer, sent.sent_ms));
            let d = log_decision(app, &user, &from, "login", d, started);
            finish_attempt(app, &fid, &token, &d);
            d
        })
        .await;
        drop(permit);
        d
    });
    let _ = attempt.await;
    see_other(&link(app, "wait"))
}
