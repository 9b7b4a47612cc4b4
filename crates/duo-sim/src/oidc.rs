//! Duo's Universal Prompt (OIDC) endpoints, when the simulator has a client id and secret:
//!
//! * `POST /oauth/v1/health_check` — `client_id` and a client assertion (form body).
//! * `GET /oauth/v1/authorize` — verifies the `request` JWT, then serves the hosted prompt
//!   (Approve / Deny forms posting to `/oauth/v1/prompt`), or redirects at once for users whose
//!   preauth would not ask for a factor (allow: allowed; deny, locked out, enroll: denied).
//! * `POST /oauth/v1/prompt` — the prompt's forms: redirects to `redirect_uri` with `duo_code`
//!   (or `code`) and `state`. Approve ends as the user's push behaviour says (approve and manual
//!   allow; deny, fraud, timeout deny).
//! * `POST /oauth/v1/token` — parameters in the query (as Duo's Python SDK sends them, with an
//!   empty body) or a form body; verifies the client assertion (iss, sub, aud, exp, a `jti` never
//!   seen before) and the code (once, within 60 s, same redirect URI), and answers an HS512
//!   `id_token`.
//!
//! Errors take Duo's shapes: the health check a FAIL envelope with `invalid_client`; the token
//! endpoint OAuth's `{"error", "error_description"}`; authorize the same, with HTTP 400.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::behaviour::{PreauthKind, PushKind};
use crate::http::{Request, Response};
use crate::state::State;
use crate::verify::form_decode;

/// How long a code may wait for its exchange.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a prompt page stays usable.
const SESSION_LIFETIME: Duration = Duration::from_secs(600);
/// The furthest ahead a client's JWT may expire (plus two seconds of rounding).
const MAX_JWT_LIFETIME: i64 = 300 + 2;
/// Entries kept at most in each table; the oldest go first beyond it.
const MAX_ENTRIES: usize = 10_000;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const INVALID_GRANT: &str = "The provided authorization grant or refresh token is invalid, \
                             expired, revoked, does not match the redirection URI.";

/// A prompt shown and not yet answered.
struct Session {
    username: String,
    redirect_uri: String,
    state: String,
    nonce: Option<String>,
    duo_code_attribute: bool,
    created: Instant,
}

/// An authorization code and what its token will say.
struct Grant {
    username: String,
    redirect_uri: String,
    nonce: Option<String>,
    result: (&'static str, &'static str, &'static str),
    factor: &'static str,
    txid: String,
    created: Instant,
    created_unix: i64,
    used: bool,
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<String, Session>,
    grants: HashMap<String, Grant>,
    /// Client-assertion jtis seen, with their exp: each may be used once.
    jtis: HashMap<String, i64>,
}

/// The Universal Prompt's state.
#[derive(Default)]
pub(crate) struct Store {
    tables: Mutex<Tables>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reset(&self) {
        *self.lock() = Tables::default();
    }
}

/// `len` random alphanumerics.
fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        if getrandom::getrandom(&mut buf).is_err() {
            // No OS randomness: mix the clock in; a simulator needs unique, not secret.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (t >> (i % 16 * 8)) as u8 ^ (i as u8);
            }
        }
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    out
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Check an HS512 JWT's signature; its claims.
fn verify_jwt(token: &str, secret: &str) -> Result<Value, String> {
    let mut v = Validation::new(Algorithm::HS512);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
        .map(|d| d.claims)
        .map_err(|e| format!("the JWT does not verify ({e})"))
}

fn num(claims: &Value, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

fn text<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// `exp` present, in the future and at most five minutes ahead.
fn check_exp(claims: &Value, now: i64) -> Result<(), String> {
    match num(claims, "exp") {
        None => Err("no exp claim".into()),
        Some(exp) if exp <= now => Err("the JWT has expired".into()),
        Some(exp) if exp > now + MAX_JWT_LIFETIME => {
            Err("the JWT expires more than five minutes ahead".into())
        }
        Some(_) => Ok(()),
    }
}

/// Parameters of a request: the query's, then the form body's (the body wins).
fn params(req: &Request) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = form_decode(&req.query).into_iter().collect();
    let form = req
        .header("content-type")
        .is_none_or(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && !req.body.is_empty() {
        out.extend(form_decode(&String::from_utf8_lossy(&req.body)));
    }
    out
}

/// Handle `/oauth/v1/…`; `None` for other paths.
pub(crate) fn handle(state: &State, req: &Request) -> Option<(Response, Option<String>, String)> {
    let endpoint = req.path.strip_prefix("/oauth/v1/")?;
    let s = &state.settings;
    let (Some(client_id), Some(secret)) = (s.client_id.as_deref(), s.client_secret.as_ref()) else {
        return Some((
            crate::api::fail(
                40400,
                "Resource not found",
                Some("no OIDC client configured"),
            ),
            None,
            "oidc off".into(),
        ));
    };
    let c = Ctx {
        state,
        client_id,
        secret: secret.expose(),
        host: req.header("host").unwrap_or("127.0.0.1").to_string(),
        now: state.now_unix(),
    };
    let expected = if endpoint == "authorize" {
        "GET"
    } else {
        "POST"
    };
    if !req.method.eq_ignore_ascii_case(expected) {
        return Some((
            oauth_error(405, "invalid_request", "method not allowed"),
            None,
            "wrong method".into(),
        ));
    }
    let p = params(req);
    Some(match endpoint {
        "health_check" => c.health_check(&p),
        "authorize" => c.authorize(&p),
        "prompt" => c.prompt(&p),
        "token" => c.token(&p),
        _ => (
            oauth_error(404, "invalid_request", "unknown endpoint"),
            None,
            "unknown path".into(),
        ),
    })
}

type Routed = (Response, Option<String>, String);

struct Ctx<'a> {
    state: &'a State,
    client_id: &'a str,
    secret: &'a str,
    host: String,
    now: i64,
}

impl Ctx<'_> {
    /// A client assertion for `endpoint`: signature, iss = sub = client id, aud, exp, and a
    /// jti never used before.
    fn check_assertion(&self, p: &HashMap<String, String>, endpoint: &str) -> Result<(), String> {
        if p.get("client_id").map(String::as_str) != Some(self.client_id) {
            return Err("unknown client_id".into());
        }
        let token = p
            .get("client_assertion")
            .ok_or("missing client_assertion")?;
        let claims = verify_jwt(token, self.secret)?;
        if text(&claims, "iss") != Some(self.client_id) {
            return Err("The `iss` claim must match the supplied client_id".into());
        }
        if text(&claims, "sub") != Some(self.client_id) {
            return Err("The `sub` claim must match the supplied client_id".into());
        }
        let aud = format!("https://{}/oauth/v1/{endpoint}", self.host);
        if text(&claims, "aud") != Some(aud.as_str()) {
            return Err(format!("The `aud` claim must be {aud}"));
        }
        check_exp(&claims, self.now)?;
        let jti = text(&claims, "jti").ok_or("no jti claim")?;
        if jti.is_empty() {
            return Err("no jti claim".into());
        }
        let mut t = self.state.oidc.lock();
        let now = self.now;
        t.jtis.retain(|_, exp| *exp > now - 60);
        if t.jtis.len() >= MAX_ENTRIES {
            return Err("too many assertions".into());
        }
        if t.jtis.contains_key(jti) {
            return Err("The `jti` claim was already used".into());
        }
        t.jtis
            .insert(jti.to_string(), num(&claims, "exp").unwrap_or(now));
        Ok(())
    }

    fn health_check(&self, p: &HashMap<String, String>) -> Routed {
        match self.check_assertion(p, "health_check") {
            Ok(()) => (
                Response::json(
                    200,
                    &json!({"stat": "OK", "response": {"timestamp": self.now}}),
                ),
                None,
                "health ok".into(),
            ),
            Err(why) => (
                Response::json(
                    400,
                    &json!({"stat": "FAIL", "code": 40002, "message": "invalid_client",
                            "message_detail": "The provided client_assertion was invalid.",
                            "timestamp": self.now}),
                ),
                None,
                why,
            ),
        }
    }

    /// The request JWT, checked as Duo does.
    fn check_request(&self, p: &HashMap<String, String>) -> Result<Session, String> {
        if p.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code".into());
        }
        if p.get("client_id").map(String::as_str) != Some(self.client_id) {
            return Err("unknown client_id".into());
        }
        let claims = verify_jwt(p.get("request").ok_or("missing request")?, self.secret)?;
        if text(&claims, "client_id") != Some(self.client_id) {
            return Err("the request's client_id does not match".into());
        }
        if text(&claims, "iss").is_some_and(|i| i != self.client_id) {
            return Err("the request's iss does not match the client_id".into());
        }
        let aud = format!("https://{}", self.host);
        if text(&claims, "aud").is_some_and(|a| a != aud) {
            return Err(format!("the request's aud must be {aud}"));
        }
        check_exp(&claims, self.now)?;
        if text(&claims, "response_type") != Some("code") {
            return Err("the request's response_type must be code".into());
        }
        if !text(&claims, "scope").is_some_and(|s| s.split(' ').any(|x| x == "openid")) {
            return Err("the request's scope must include openid".into());
        }
        let redirect_uri = text(&claims, "redirect_uri").unwrap_or_default();
        if !(redirect_uri.starts_with("https://") || redirect_uri.starts_with("http://"))
            || redirect_uri.contains('#')
        {
            return Err("the request's redirect_uri is not a URL".into());
        }
        let state = text(&claims, "state").unwrap_or_default();
        if !(16..=1024).contains(&state.len()) {
            return Err("the state must be 16 to 1024 characters".into());
        }
        let username = text(&claims, "duo_uname").unwrap_or_default();
        if username.is_empty() {
            return Err("missing duo_uname".into());
        }
        let nonce = p
            .get("nonce")
            .cloned()
            .or_else(|| text(&claims, "nonce").map(str::to_string))
            .filter(|n| !n.is_empty());
        let duo_code_attribute = claims
            .get("use_duo_code_attribute")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Session {
            username: username.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state: state.to_string(),
            nonce,
            duo_code_attribute,
            created: Instant::now(),
        })
    }

    fn authorize(&self, p: &HashMap<String, String>) -> Routed {
        let session = match self.check_request(p) {
            Ok(s) => s,
            Err(why) => return (oauth_error(400, "invalid_request", &why), None, why),
        };
        let user = session.username.clone();
        let b = self.state.behaviour(&user);
        let ended = match b.preauth {
            PreauthKind::Auth => None,
            PreauthKind::Allow => Some(("allow", "allow", "Bypass user")),
            PreauthKind::Deny => Some(("deny", "deny", "Your account is disabled")),
            PreauthKind::LockedOut => Some(("deny", "locked_out", "Your account is locked out")),
            PreauthKind::Enroll => Some(("deny", "deny", "Enroll an authentication device first")),
        };
        if let Some(result) = ended {
            let note = format!("authorize {} (no prompt)", result.1);
            return (self.redirect(session, result, "none"), Some(user), note);
        }
        let sid = random_id(32);
        let page = prompt_page(&sid, &user);
        let mut t = self.state.oidc.lock();
        t.sessions
            .retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        if t.sessions.len() >= MAX_ENTRIES {
            t.sessions.clear();
        }
        t.sessions.insert(sid, session);
        (
            Response::new(200, "text/html; charset=utf-8", page),
            Some(user),
            "prompt shown".into(),
        )
    }

    fn prompt(&self, p: &HashMap<String, String>) -> Routed {
        let sid = p.get("sid").map(String::as_str).unwrap_or_default();
        let session = self.state.oidc.lock().sessions.remove(sid);
        let Some(session) = session.filter(|s| s.created.elapsed() < SESSION_LIFETIME) else {
            let why = "no such prompt (answered already, or expired)";
            return (oauth_error(400, "invalid_request", why), None, why.into());
        };
        let user = session.username.clone();
        let push = self.state.behaviour(&user).push;
        let result = match (p.get("action").map(String::as_str), push) {
            (Some("approve"), PushKind::Approve | PushKind::Manual) => {
                ("allow", "allow", "Login Successful")
            }
            (Some("approve"), PushKind::Fraud) => {
                ("deny", "fraud", "Login request reported as fraudulent.")
            }
            (Some("approve"), PushKind::Timeout) => ("deny", "timeout", "Login timed out."),
            _ => ("deny", "deny", "Login request denied."),
        };
        let note = format!("prompt {}", result.1);
        (self.redirect(session, result, "duo_push"), Some(user), note)
    }

    /// Issue a code for `session`'s outcome and send the browser back.
    fn redirect(
        &self,
        session: Session,
        result: (&'static str, &'static str, &'static str),
        factor: &'static str,
    ) -> Response {
        let code = random_id(32);
        let sep = if session.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let name = if session.duo_code_attribute {
            "duo_code"
        } else {
            "code"
        };
        let location = format!(
            "{}{sep}{name}={}&state={}",
            session.redirect_uri,
            duo_auth::sign::encode(&code),
            duo_auth::sign::encode(&session.state)
        );
        let mut t = self.state.oidc.lock();
        t.grants
            .retain(|_, g| g.created.elapsed() < CODE_LIFETIME * 10);
        if t.grants.len() >= MAX_ENTRIES {
            t.grants.clear();
        }
        t.grants.insert(
            code,
            Grant {
                username: session.username,
                redirect_uri: session.redirect_uri,
                nonce: session.nonce,
                result,
                factor,
                txid: random_id(36),
                created: Instant::now(),
                created_unix: self.now,
                used: false,
            },
        );
        let body = format!(
            "<!doctype html><title>Redirecting</title><a href=\"{}\">Continue</a>",
            html_escape(&location)
        );
        Response::new(302, "text/html; charset=utf-8", body).with_header("Location", location)
    }

    fn token(&self, p: &HashMap<String, String>) -> Routed {
        let client_error = |why: String| {
            let desc = format!("Invalid Client assertion: {why}");
            (oauth_error(400, "invalid_client", &desc), None, why)
        };
        if p.get("grant_type").map(String::as_str) != Some("authorization_code") {
            let why = "grant_type must be authorization_code";
            return (
                oauth_error(400, "unsupported_grant_type", why),
                None,
                why.into(),
            );
        }
        if p.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return client_error("wrong client_assertion_type".into());
        }
        if let Err(why) = self.check_assertion(p, "token") {
            return client_error(why);
        }
        let code = p.get("code").map(String::as_str).unwrap_or_default();
        let redirect_uri = p
            .get("redirect_uri")
            .map(String::as_str)
            .unwrap_or_default();
        let mut t = self.state.oidc.lock();
        let grant = match t.grants.get_mut(code) {
            Some(g) if g.used => Err("code already used"),
            Some(g) if g.created.elapsed() > CODE_LIFETIME => Err("code expired"),
            Some(g) if g.redirect_uri != redirect_uri => Err("redirect_uri does not match"),
            Some(g) => {
                g.used = true;
                Ok(g)
            }
            None => Err("unknown code"),
        };
        let g = match grant {
            Ok(g) => g,
            Err(why) => {
                return (
                    oauth_error(400, "invalid_grant", INVALID_GRANT),
                    None,
                    why.into(),
                )
            }
        };
        let (result, status, status_msg) = g.result;
        let mut claims = json!({
            "iss": format!("https://{}/oauth/v1/token", self.host),
            "aud": self.client_id,
            "sub": g.username,
            "exp": self.now + 3600,
            "iat": self.now,
            "auth_time": g.created_unix,
            "preferred_username": g.username,
            "auth_result": {"result": result, "status": status, "status_msg": status_msg},
            "auth_context": {
                "result": if result == "allow" { "success" } else { "denied" },
                "reason": status,
                "factor": g.factor,
                "event_type": "authentication",
                "txid": g.txid,
                "timestamp": g.created_unix,
                "user": {"name": g.username},
                "application": {"key": self.client_id, "name": "duo-sim"},
            },
        });
        if let (Some(n), Some(obj)) = (&g.nonce, claims.as_object_mut()) {
            obj.insert("nonce".into(), Value::String(n.clone()));
        }
        let user = g.username.clone();
        drop(t);
        let key = EncodingKey::from_secret(self.secret.as_bytes());
        let id_token = match jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key) {
            Ok(t) => t,
            Err(e) => {
                return (
                    oauth_error(500, "server_error", &e.to_string()),
                    None,
                    e.to_string(),
                )
            }
        };
        let body = json!({
            "id_token": id_token,
            "access_token": random_id(40),
            "token_type": "Bearer",
            "expires_in": 3600,
        });
        (
            Response::json(200, &body),
            Some(user),
            format!("token {status}"),
        )
    }
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The hosted prompt. Stable hooks: `form.approve` and `form.deny`, each posting `sid` and
/// `action` to `/oauth/v1/prompt`; `#user` names the user.
fn prompt_page(sid: &str, user: &str) -> String {
    let (sid, user) = (html_escape(sid), html_escape(user));
    format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>duo-sim Universal Prompt</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f2f4f7; color: #1d2433; margin: 0; }}
main {{ max-width: 420px; margin: 40px auto; background: #fff; border-radius: 10px; padding: 24px;
  box-shadow: 0 1px 3px rgba(0,0,0,.15); }}
form {{ display: inline-block; margin-right: 10px; }}
button {{ font-size: 1.1em; padding: 12px 20px; border: 0; border-radius: 8px; color: #fff; }}
form.approve button {{ background: #2d7d3a; }} form.deny button {{ background: #b3261e; }}
</style></head>
<body><main>
<h1>Duo (simulated)</h1>
<p>Log in as <strong id="user">{user}</strong>?</p>
<form class="approve" method="post" action="/oauth/v1/prompt">
<input type="hidden" name="sid" value="{sid}"><input type="hidden" name="action" value="approve">
<button type="submit">Approve</button></form>
<form class="deny" method="post" action="/oauth/v1/prompt">
<input type="hidden" name="sid" value="{sid}"><input type="hidden" name="action" value="deny">
<button type="submit">Deny</button></form>
</main></body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_and_has_the_hooks() {
        let page = prompt_page("abc", "<script>x</script>");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains(r#"class="approve""#) && page.contains(r#"class="deny""#));
        assert!(page.contains(r#"name="sid" value="abc""#));
    }

    #[test]
    fn random_ids() {
        let a = random_id(32);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_id(32));
    }
}
