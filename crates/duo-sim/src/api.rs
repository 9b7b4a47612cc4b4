//! The Duo Auth API v2 endpoints: `ping`, `check`, `preauth`, `auth`, `auth_status`. Each call
//! is counted, authenticated (all but `ping`), checked for its parameters, run through the
//! user's forced error and rate limit, then answered from the user's behaviour. Answers use
//! Duo's envelope: `{"stat":"OK","response":…}` or `{"stat":"FAIL","code":…,"message":…}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::behaviour::PreauthKind;
use crate::http::{Request, Response};
use crate::state::{Answer, Endpoint, Plan, Push, PushState, State};
use crate::verify::{self, RequestParts};

/// The one device every `auth` user has.
pub const DEVICE_ID: &str = "DPFZRS9FB0D46QFTM891";

/// A handled call: the response and one log line (never secrets).
pub(crate) struct Handled {
    pub response: Response,
    pub log: String,
}

fn ok(response: Value) -> Response {
    Response::json(200, &json!({"stat": "OK", "response": response}))
}

/// A FAIL envelope; the HTTP status is the code's first three digits.
pub(crate) fn fail(code: u32, message: &str, detail: Option<&str>) -> Response {
    let mut body = json!({"stat": "FAIL", "code": code, "message": message});
    if let (Some(d), Some(obj)) = (detail, body.as_object_mut()) {
        obj.insert("message_detail".into(), Value::String(d.to_string()));
    }
    let status = u16::try_from(code / 100).unwrap_or(500);
    Response::json(status, &body)
}

fn missing(param: &str) -> Response {
    fail(40001, "Missing required request parameters", Some(param))
}

fn invalid(param: &str) -> Response {
    fail(40002, "Invalid request parameters", Some(param))
}

/// Words for an HTTP status in a forced-error envelope.
fn status_words(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Resource not found",
        429 => "Too many requests",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Error",
    }
}

/// Handle one request to the Duo API listener.
pub(crate) fn handle(state: &State, req: &Request) -> Handled {
    let endpoint = match req.path.as_str() {
        "/auth/v2/ping" => Endpoint::Ping,
        "/auth/v2/check" => Endpoint::Check,
        "/auth/v2/preauth" => Endpoint::Preauth,
        "/auth/v2/auth" => Endpoint::Auth,
        "/auth/v2/auth_status" => Endpoint::AuthStatus,
        p if p.starts_with("/oauth/v1/") => Endpoint::Oidc,
        _ => Endpoint::Other,
    };
    state.count(endpoint);
    let (response, user, note) = match crate::oidc::handle(state, req) {
        Some(routed) => routed,
        None => route(state, req, endpoint),
    };
    state.count_status(response.status);
    let log = format!(
        "{} {} user={} -> {} {}",
        req.method,
        req.path,
        user.as_deref().unwrap_or("-"),
        response.status,
        note
    );
    Handled { response, log }
}

type Routed = (Response, Option<String>, String);

fn route(state: &State, req: &Request, endpoint: Endpoint) -> Routed {
    let expected = match endpoint {
        Endpoint::Ping | Endpoint::Check | Endpoint::AuthStatus => "GET",
        Endpoint::Preauth | Endpoint::Auth => "POST",
        Endpoint::Other | Endpoint::Oidc => {
            return (
                fail(40400, "Resource not found", None),
                None,
                "unknown path".into(),
            )
        }
    };
    if !req.method.eq_ignore_ascii_case(expected) {
        return (
            fail(40500, "Method not allowed", Some(&req.method)),
            None,
            "wrong method".into(),
        );
    }
    let now = state.now_unix();
    if endpoint == Endpoint::Ping {
        return (ok(json!({"time": now})), None, String::new());
    }

    let parts = RequestParts {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body: &req.body,
    };
    let s = &state.settings;
    let verified =
        match verify::verify_request(&parts, &s.ikey, s.skey.expose(), now, s.date_window) {
            Ok(v) => v,
            Err(r) => {
                let detail = r.detail();
                return (fail(r.code(), r.message(), Some(&detail)), None, detail);
            }
        };
    let params = match parts.params() {
        Ok(p) => Params(p),
        Err(r) => return (fail(r.code(), r.message(), None), None, r.detail()),
    };
    let sig = format!("{:?}", verified.version);
    let (response, user, note) = match endpoint {
        Endpoint::Check => (ok(json!({"time": now})), None, String::new()),
        Endpoint::Preauth => preauth(state, req, &params),
        Endpoint::Auth => auth(state, &params),
        _ => auth_status(state, &params),
    };
    (
        response,
        user,
        format!("{sig} {note}").trim_end().to_string(),
    )
}

/// Parameters by name (the last one wins, as Duo's server does with repeated keys).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The user's forced error or rate limit, if one applies to this call.
fn gate(state: &State, user: &str) -> Option<(Response, String)> {
    let b = state.behaviour(user);
    if let Some(rl) = b.rate_limit {
        if state.take_rate_limit(user, rl.times) {
            let resp = fail(42901, "Too many requests", None)
                .with_header("Retry-After", rl.retry_after.to_string());
            return Some((resp, "rate limited".into()));
        }
    }
    if let Some(status) = b.error {
        let resp = fail(u32::from(status) * 100, status_words(status), None);
        return Some((resp, "forced error".into()));
    }
    None
}

fn preauth(state: &State, req: &Request, params: &Params) -> Routed {
    let Some(user) = params.get("username") else {
        return (missing("username"), None, String::new());
    };
    let user = user.to_string();
    if let Some((resp, note)) = gate(state, &user) {
        return (resp, Some(user), note);
    }
    let b = state.behaviour(&user);
    let kind = b.preauth;
    let mut response = match kind {
        PreauthKind::Auth => json!({
            "result": "auth",
            "status_msg": "Account is active",
            "devices": [{
                "device": DEVICE_ID,
                "type": "phone",
                "number": "XXX-XXX-0100",
                "name": "",
                "display_name": "iOS (XXX-XXX-0100)",
                "capabilities": ["auto", "push", "sms", "phone", "mobile_otp"],
            }],
        }),
        PreauthKind::Allow => json!({"result": "allow", "status_msg": "Bypass user"}),
        PreauthKind::Deny => json!({"result": "deny", "status_msg": "Your account is disabled"}),
        PreauthKind::LockedOut => {
            json!({"result": "deny", "status_msg": "Your account is locked out"})
        }
        PreauthKind::Enroll => {
            let host = req.header("host").unwrap_or("127.0.0.1");
            json!({
                "result": "enroll",
                "status_msg": "Enroll an authentication device to proceed",
                "enroll_portal_url": format!("https://{host}/portal?code=duo-sim-enroll"),
            })
        }
    };
    let mut note = format!("{kind:?}").to_lowercase();
    // Verified Duo Push: only for a client that says it can show the code, and only when the
    // policy asks for it (otherwise Duo ignores the flag).
    let supports = params
        .get("client_supports_verified_push")
        .is_some_and(|v| v == "1");
    if supports && kind == PreauthKind::Auth && (b.verified_push || state.settings.verified_push) {
        let txid = state.open_verified(&user);
        if let Some(obj) = response.as_object_mut() {
            obj.insert("txid".into(), Value::String(txid));
        }
        note.push_str(" verified_push");
    }
    (ok(response), Some(user), note)
}

fn auth(state: &State, params: &Params) -> Routed {
    let Some(user) = params.get("username") else {
        return (missing("username"), None, String::new());
    };
    let user = user.to_string();
    let Some(factor) = params.get("factor") else {
        return (missing("factor"), Some(user), String::new());
    };
    let factor = factor.to_string();
    let is_push = matches!(factor.as_str(), "push" | "phone" | "auto");
    let device = match (factor.as_str(), params.get("device")) {
        (_, Some(d)) => d.to_string(),
        ("auto", None) | ("passcode", None) => "auto".to_string(),
        (_, None) if is_push => return (missing("device"), Some(user), String::new()),
        _ => return (invalid("factor"), Some(user), String::new()),
    };
    if !is_push && factor != "passcode" && factor != "sms" {
        return (invalid("factor"), Some(user), String::new());
    }
    if is_push && device != "auto" && device != DEVICE_ID {
        return (invalid("device"), Some(user), String::new());
    }
    let passcode = if factor == "passcode" {
        match params.get("passcode") {
            Some(p) => Some(p.to_string()),
            None => return (missing("passcode"), Some(user), String::new()),
        }
    } else {
        None
    };
    let asynchronous = params.get("async").is_some_and(|v| v != "0");
    if let Some((resp, note)) = gate(state, &user) {
        return (resp, Some(user), note);
    }
    // A Verified Duo Push continues preauth's transaction: the txid must be one preauth gave
    // this user, used once, for a push (`auto` pushes to this simulator's phone).
    let verified_txid = match params.get("txid") {
        None => None,
        Some(_) if !matches!(factor.as_str(), "push" | "auto") => {
            return (
                invalid("txid"),
                Some(user),
                "txid with a factor that is no push".into(),
            )
        }
        Some(t) if state.take_verified(t, &user) => Some(t.to_string()),
        Some(_) => {
            return (
                invalid("txid"),
                Some(user),
                "unknown verified push txid".into(),
            )
        }
    };
    // SMS: Duo texts a batch of passcodes and answers deny/sent at once; no transaction.
    if factor == "sms" {
        let response = json!({"result": "deny", "status": "sent",
                              "status_msg": "New SMS passcodes sent."});
        return (ok(response), Some(user), "sms sent".into());
    }

    let b = state.behaviour(&user);
    // Users who never reach a factor end at once, with the words preauth would have used.
    let plan = match (b.preauth, passcode) {
        (PreauthKind::Allow, _) => Plan::Done(PushState::Allow, "bypass", "Bypass user"),
        (PreauthKind::Deny, _) => Plan::Done(PushState::Deny, "deny", "Your account is disabled"),
        (PreauthKind::LockedOut, _) => {
            Plan::Done(PushState::Deny, "locked_out", "Your account is locked out")
        }
        (PreauthKind::Enroll, _) => Plan::Done(
            PushState::Deny,
            "deny",
            "Enroll an authentication device first",
        ),
        (PreauthKind::Auth, Some(code)) if b.passcodes.contains(&code) => {
            Plan::Done(PushState::Allow, "allow", "Success. Logging you in...")
        }
        (PreauthKind::Auth, Some(_)) => Plan::Done(
            PushState::Deny,
            "deny",
            "Incorrect passcode. Please try again.",
        ),
        (PreauthKind::Auth, None) => Plan::Push(b.clone()),
    };
    let pushinfo: BTreeMap<String, String> = params
        .get("pushinfo")
        .map(|p| verify::form_decode(p).into_iter().collect())
        .unwrap_or_default();
    let verification_code = match (&verified_txid, &plan) {
        (Some(_), Plan::Push(_)) => Some(state.new_code()),
        _ => None,
    };
    let push = Push {
        txid: verified_txid.unwrap_or_default(),
        username: user.clone(),
        factor: factor.clone(),
        device,
        pushinfo,
        ipaddr: params.get("ipaddr").map(str::to_string),
        push_type: params.get("type").map(str::to_string),
        display_username: params.get("display_username").map(str::to_string),
        state: PushState::Pending,
        created_ms: 0,
        verification_code,
    };
    let txid = state.start(push, plan);
    if asynchronous {
        let note = format!("{factor} txid={txid}");
        return (ok(json!({"txid": txid})), Some(user), note);
    }
    // Synchronous: hold the call until the transaction ends (it always does, by timeout).
    let until = Instant::now() + state.settings.push_timeout + Duration::from_secs(1);
    match state.wait_final(&txid, until) {
        Some(a) => {
            let note = format!("{factor} {}", a.status);
            (ok(answer_json(&a)), Some(user), note)
        }
        None => (invalid("txid"), Some(user), "reset during auth".into()),
    }
}

fn answer_json(a: &Answer) -> Value {
    json!({"result": a.state.result(), "status": a.status, "status_msg": a.status_msg})
}

fn auth_status(state: &State, params: &Params) -> Routed {
    let Some(txid) = params.get("txid") else {
        return (missing("txid"), None, String::new());
    };
    let Some(user) = state.user_of(txid) else {
        return (invalid("txid"), None, "unknown txid".into());
    };
    if let Some((resp, note)) = gate(state, &user) {
        return (resp, Some(user), note);
    }
    let until = Instant::now() + state.settings.long_poll;
    match state.wait_final(txid, until) {
        Some(a) => (ok(answer_json(&a)), Some(user), a.status.to_string()),
        None => (invalid("txid"), Some(user), "unknown txid".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_status_is_the_code_prefix() {
        let r = fail(42901, "Too many requests", None);
        assert_eq!(r.status, 429);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["stat"], "FAIL");
        assert_eq!(v["code"], 42901);
        assert!(v.get("message_detail").is_none());
        let r = fail(40103, "Invalid signature in request credentials", Some("x"));
        assert_eq!(r.status, 401);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["message_detail"], "x");
    }
}
