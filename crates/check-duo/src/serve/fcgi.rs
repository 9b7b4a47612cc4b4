//! Apache through `mod_authnz_fcgi` (REFERENCE §8): a check-authn provider with
//! `RequireBasicAuth Off` and `UserExpr "%{reqenv:REMOTE_USER}"`. Each request arrives on a new
//! connection with the original request in its parameters and no body; the answer is CGI
//! headers: `Status: 200` + `Variable-REMOTE_USER` for a session, `Status: 302` + `Location` to
//! the portal for a browser without one.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use tokio::net::TcpListener;
use tokio_fastcgi::{RequestResult, Requests};

use super::authz::{self, Answer, Identity};
use super::target::{self, Target};
use super::App;

/// Longest a FastCGI connection may take (Apache's own I/O timeout is 30 s).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The user name Apache gets for a request a `bypass` rule lets through (an empty `UserExpr`
/// result is a 500 in Apache; better: leave such paths unprotected in Apache's config).
pub const BYPASS_USER: &str = "anonymous";

/// The original request from the FastCGI parameters.
pub fn target_of(param: &dyn Fn(&str) -> Option<String>) -> Result<Target, target::BadHeader> {
    let bad = |header: &'static str, why: &str| target::BadHeader {
        header,
        why: why.into(),
    };
    let https = match param("REQUEST_SCHEME").as_deref() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("REQUEST_SCHEME", "missing or not http/https")),
    };
    let authority = param("HTTP_HOST")
        .or_else(|| param("SERVER_NAME"))
        .ok_or_else(|| bad("HTTP_HOST", "missing"))?;
    let uri = param("REQUEST_URI").ok_or_else(|| bad("REQUEST_URI", "missing"))?;
    let method = param("REQUEST_METHOD").ok_or_else(|| bad("REQUEST_METHOD", "missing"))?;
    // The same checks as the HTTP endpoints', through their header parser.
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-forwarded-proto", if https { "https" } else { "http" }),
        ("x-forwarded-host", authority.as_str()),
        ("x-forwarded-uri", uri.as_str()),
        ("x-forwarded-method", method.as_str()),
    ] {
        let v = HeaderValue::from_str(v).map_err(|_| bad("HTTP_HOST", "not visible ASCII"))?;
        h.insert(k, v);
    }
    target::forwarded(&h)
}

/// The CGI reply for an answer.
pub fn reply(answer: &Answer, who: &Identity) -> String {
    match answer {
        Answer::Allow(user) => {
            let mut out = format!(
                "Status: 200\r\nVariable-REMOTE_USER: {}\r\nVariable-REMOTE_GROUPS: {}\r\n",
                user.as_deref().unwrap_or(BYPASS_USER),
                who.groups
            );
            for (var, value) in [("REMOTE_NAME", &who.name), ("REMOTE_EMAIL", &who.email)] {
                if let Some(v) = value {
                    out.push_str(&format!("Variable-{var}: {v}\r\n"));
                }
            }
            out.push_str("\r\n");
            out
        }
        Answer::SignIn { url, quiet: false } => {
            format!("Status: 302\r\nLocation: {url}\r\nContent-Type: text/plain\r\n\r\nsign in\n")
        }
        Answer::SignIn { quiet: true, .. } => {
            "Status: 401\r\nContent-Type: text/plain\r\n\r\nsign in\n".into()
        }
        Answer::Forbidden => "Status: 403\r\nContent-Type: text/plain\r\n\r\nforbidden\n".into(),
        Answer::Unavailable => {
            "Status: 503\r\nContent-Type: text/plain\r\n\r\nunavailable\n".into()
        }
    }
}

async fn decide(app: &'static App, param: &(dyn Fn(&str) -> Option<String> + Sync)) -> String {
    let peer = param("REMOTE_ADDR").unwrap_or_default();
    let t = match target_of(param) {
        Ok(t) => t,
        Err(e) => {
            return format!("Status: 400\r\nContent-Type: text/plain\r\n\r\n400 bad request: {e}\n")
        }
    };
    let mut h = HeaderMap::new();
    if let Some(c) = param("HTTP_COOKIE").and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("cookie", c);
    }
    let answer = authz::decide_ahead(app, &t, &h, peer.trim()).await;
    // A user name that cannot be a CGI header value is no name to grant under.
    if let Answer::Allow(Some(u)) = &answer {
        if u.contains(['\r', '\n']) {
            return reply(&Answer::Forbidden, &Identity::default());
        }
    }
    reply(&answer, &Identity::of(app, &answer))
}

/// Accept FastCGI connections until stopped.
pub async fn serve(
    app: &'static App,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        tokio::spawn(async move {
            let run = async move {
                let mut requests = Requests::from_split_socket(stream.into_split(), 1, 1);
                while let Ok(Some(request)) = requests.next().await {
                    let _ = request
                        .process(|r| async move {
                            let param = |name: &str| r.get_str_param(name).map(str::to_string);
                            let out = decide(app, &param).await;
                            let mut stdout = r.get_stdout();
                            // Headers and body in one write, as Apache reads them.
                            if stdout.write(out.as_bytes()).await.is_err() {
                                return RequestResult::Complete(1);
                            }
                            RequestResult::Complete(0)
                        })
                        .await;
                }
            };
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, run).await;
        });
    }
}
