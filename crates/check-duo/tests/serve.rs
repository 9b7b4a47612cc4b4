//! `check-duo serve`, the real binary, over HTTP and FastCGI-free paths: the authorization
//! endpoints' contract (REFERENCE §7), the portal's sign-in with every outcome, logout, the
//! access rules, open redirects, hostile input, metrics and a clean stop on SIGTERM. Both
//! stores. The proxies and the browser are in `serve_proxies.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::{Duration, Instant};

use duo_sim::{Behaviours, PreauthKind, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::redis::Redis;
use support::serve::{Jar, Reply, Serve};
use support::world::{start_sim, Backend};

const IKEY: &str = "DIXYZV6YM8IFYVWBINCA";
const SKEY: &str = "yWHSMhWucAcp7qvuH3HWTaSaKABs8Gaddiv1NIRo";
const PASSWORD: &str = "pw-serve";
const APP: &str = "http://127.0.0.1:8080";

fn behaviours() -> Behaviours {
    Behaviours::default()
        .with_user("alice", UserBehaviour::push(PushKind::Manual))
        .with_user("bob", UserBehaviour::push(PushKind::Deny))
        .with_user("carol", UserBehaviour::push(PushKind::Timeout))
        .with_user("frank", UserBehaviour::preauth(PreauthKind::Enroll))
        .with_user(
            "kate",
            UserBehaviour {
                passcodes: vec!["123456".into()],
                ..Default::default()
            },
        )
}

/// A daemon with its own duo-sim (and Redis, for that backend) in its own temp dir; the daemon's
/// methods are [`Serve`]'s. Field order is drop order.
struct Daemon {
    serve: Serve,
    sim: SimHandle,
    _redis: Option<Redis>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(backend: Backend, tweak: impl FnOnce(&mut Value)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
        let (cache, redis) = backend.cache(dir.path(), "cd:");
        let users: serde_json::Map<String, Value> = ["alice", "bob", "carol", "frank", "kate"]
            .iter()
            .map(|u| (u.to_string(), json!(support::world::argon2_hash(PASSWORD))))
            .collect();
        let mut cfg = json!({
            "usernames": users,
            "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                    "push_timeout": 4, "call_timeout": 5},
            "cache": cache,
            "session": {"expiry": 3600},
            "limits": {"pair_failures": 3},
            "server": {}
        });
        tweak(&mut cfg);
        Daemon {
            serve: Serve::start(dir.path(), cfg, false),
            sim,
            _redis: redis,
            _dir: dir,
        }
    }

    /// GET the form (for `{APP}/private/`), POST the password: the reply of the POST.
    fn sign_in(&self, b: &mut Jar, user: &str, password: &str, extra: &[(&str, &str)]) -> Reply {
        let rd = format!("{APP}/private/");
        b.post_password(
            &self.url(&format!("/?rd={}", url_encode(&rd))),
            user,
            password,
            extra,
        )
    }

    /// Poll `b`'s sign-in until it leaves `waiting`; the waiting page then.
    fn settle(&self, b: &mut Jar) -> Reply {
        b.settle(&self.portal())
    }

    fn stop(self) {
        self.serve.stop();
    }
}

impl Deref for Daemon {
    type Target = Serve;
    fn deref(&self) -> &Serve {
        &self.serve
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Serve {
        &mut self.serve
    }
}

fn backends(test: &str) -> Vec<Backend> {
    [Backend::Embedded, Backend::Redis]
        .into_iter()
        .filter(|b| b.available(test))
        .collect()
}

/// The whole sign-in of alice: form, push, approval.
fn signed_in(d: &Daemon) -> Jar {
    let mut b = d.jar();
    let r = d.sign_in(&mut b, "alice", PASSWORD, &[("factor", "push")]);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/wait")),
        "{}",
        r.body
    );
    let waiting = b.get(&d.url("/wait"));
    assert!(waiting.body.contains("Push sent to"), "{}", waiting.body);
    assert!(
        waiting.body.contains(r#"http-equiv="refresh""#),
        "a refresh without JavaScript"
    );
    let push = d
        .sim
        .wait_for_pending(Duration::from_secs(10))
        .expect("a push");
    assert!(d.sim.approve(&push.txid));
    let done = d.settle(&mut b);
    assert!(done.body.contains("You are signed in"), "{}", done.body);
    assert!(
        done.body.contains(&format!("url={APP}/private/")),
        "back to the target: {}",
        done.body
    );
    assert!(b.session_cookie().is_some(), "the session cookie is set");
    b
}

#[test]
fn the_authz_endpoints_speak_authelias_contract() {
    for backend in backends("the_authz_endpoints_speak_authelias_contract") {
        let d = Daemon::start(backend, |_| {});
        let target = format!("{APP}/private/x?a=1");
        // nginx: a 401 with an absolute Location.
        let r = d.auth_request(&target, "");
        assert_eq!(r.status, 401);
        let loc = r.header("location").unwrap();
        assert!(
            loc.starts_with(&d.url("/?rd=http%3A%2F%2F127.0.0.1%3A8080%2Fprivate%2Fx%3Fa%3D1")),
            "{loc}"
        );
        assert!(loc.ends_with("&rm=GET"));
        // Traefik/Caddy: a redirect for a browser, 303 for a POST, 401 for XHR and APIs.
        let fwd = |method: &str, accept: &str, xhr: bool, verb: &str| {
            let mut h = vec![
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", "127.0.0.1:8080"),
                ("X-Forwarded-Uri", "/private/"),
                ("X-Forwarded-Method", method),
                ("Accept", accept),
            ];
            if xhr {
                h.push(("X-Requested-With", "XMLHttpRequest"));
            }
            d.send(verb, "/api/authz/forward-auth", &h, None)
        };
        assert_eq!(fwd("GET", "text/html", false, "GET").status, 302);
        assert_eq!(fwd("POST", "text/html", false, "GET").status, 303);
        assert_eq!(fwd("GET", "text/html", true, "GET").status, 401);
        assert_eq!(fwd("GET", "application/json", false, "GET").status, 401);
        // HAProxy asks with HEAD: no body.
        let head = fwd("GET", "text/html", false, "HEAD");
        assert_eq!((head.status, head.body.as_str()), (302, ""));
        // Envoy: the original path after the prefix, the host from Host.
        let r = d.send(
            "GET",
            "/api/authz/ext-authz/private/y?z=1",
            &[
                ("Host", "127.0.0.1:8080"),
                ("X-Forwarded-Proto", "http"),
                ("Accept", "text/html"),
            ],
            None,
        );
        assert_eq!(r.status, 302);
        assert!(r
            .header("location")
            .unwrap()
            .contains("rd=http%3A%2F%2F127.0.0.1%3A8080%2Fprivate%2Fy%3Fz%3D1"));

        // Signed in: 200 with Remote-User, on every endpoint, without a Duo call.
        let b = signed_in(&d);
        let cookie = b.session_cookie().unwrap();
        let calls = d.sim.counters();
        let r = d.auth_request(&target, &cookie);
        assert_eq!((r.status, r.header("remote-user")), (200, Some("alice")));
        let r = d.send(
            "GET",
            "/api/authz/forward-auth",
            &[
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", "127.0.0.1:8080"),
                ("X-Forwarded-Uri", "/private/"),
                ("X-Forwarded-Method", "GET"),
                ("Cookie", &cookie),
            ],
            None,
        );
        assert_eq!((r.status, r.header("remote-user")), (200, Some("alice")));
        let r = d.send(
            "POST",
            "/api/authz/ext-authz/private/",
            &[
                ("Host", "127.0.0.1:8080"),
                ("X-Forwarded-Proto", "http"),
                ("Cookie", &cookie),
            ],
            None,
        );
        assert_eq!((r.status, r.header("remote-user")), (200, Some("alice")));
        for _ in 0..20 {
            assert_eq!(
                d.auth_request(&format!("{APP}/private/asset.css"), &cookie)
                    .status,
                200
            );
        }
        assert_eq!(d.sim.counters(), calls, "no Duo call after the sign-in");
        // A forged or foreign cookie is nobody.
        assert_eq!(
            d.auth_request(&target, "check-duo=forged-token-value")
                .status,
            401
        );
    }
}

#[test]
fn missing_or_malformed_forwarded_headers_are_a_400_naming_the_header() {
    let d = Daemon::start(Backend::Embedded, |_| {});
    let good = [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "127.0.0.1:8080"),
        ("X-Forwarded-Uri", "/private/"),
        ("X-Forwarded-Method", "GET"),
    ];
    for (name, bad) in [
        ("X-Forwarded-Proto", "gopher"),
        ("X-Forwarded-Host", "a b"),
        ("X-Forwarded-Uri", "http://elsewhere/"),
        ("X-Forwarded-Method", "get"),
    ] {
        let with_bad: Vec<_> = good
            .iter()
            .map(|(k, v)| (*k, if *k == name { bad } else { v }))
            .collect();
        let r = d.send("GET", "/api/authz/forward-auth", &with_bad, None);
        assert_eq!(r.status, 400, "{name}: {bad}");
        assert!(r.body.contains(name), "{name}: {}", r.body);
        let without: Vec<_> = good.iter().copied().filter(|(k, _)| *k != name).collect();
        let r = d.send("GET", "/api/authz/forward-auth", &without, None);
        assert_eq!(r.status, 400);
        assert!(r.body.contains(&format!("{name}: missing")), "{}", r.body);
    }
    let r = d.send(
        "GET",
        "/api/authz/auth-request",
        &[("X-Original-URL", "/relative")],
        None,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("X-Original-URL"));
    // A host outside the portal's domain is not this gate's to let in.
    let r = d.auth_request("http://elsewhere.example:8080/", "");
    assert_eq!(r.status, 403);
    // Oversized cookies: refused, not read.
    let big = format!("check-duo={}", "x".repeat(20_000));
    let r = d.auth_request(&format!("{APP}/"), &big);
    assert_eq!(r.status, 431);
    assert!(d.log().contains("event=bad_input"), "every deny is logged");
}

#[test]
fn wrong_passwords_send_no_push_and_say_so() {
    for backend in backends("wrong_passwords_send_no_push_and_say_so") {
        let d = Daemon::start(backend, |_| {});
        let mut b = d.jar();
        let r = d.sign_in(&mut b, "alice", "WRONG-pw-9f3", &[]);
        assert_eq!(r.status, 401);
        assert!(
            r.body
                .contains("Wrong user name or password. No push was sent."),
            "{}",
            r.body
        );
        assert!(r.body.contains(r#"value="alice""#), "the user name is kept");
        assert!(!r.body.contains("WRONG-pw-9f3"), "the password is not");
        let r = d.sign_in(&mut b, "nobody", "WRONG-pw-9f3", &[]);
        assert_eq!(r.status, 401);
        assert_eq!(d.sim.counters().auth, 0, "no push");
        // pair_failures 3: the fourth is refused without a check, with when it ends.
        assert_eq!(d.sign_in(&mut b, "alice", "WRONG-pw-9f3", &[]).status, 401);
        assert_eq!(d.sign_in(&mut b, "alice", "WRONG-pw-9f3", &[]).status, 401);
        let r = d.sign_in(&mut b, "alice", "WRONG-pw-9f3", &[]);
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(r.body.contains("locked for up to"), "{}", r.body);
        assert!(!d.log().contains("WRONG-pw-9f3"), "no password in the log");
    }
}

#[test]
fn denied_timed_out_and_unenrolled_sign_ins_have_their_messages() {
    let d = Daemon::start(Backend::Embedded, |_| {});
    for (user, message) in [
        ("bob", "The push was denied on your phone."),
        ("carol", "Nobody answered the push in time."),
        ("frank", "Your account is not enrolled in Duo."),
    ] {
        let mut b = d.jar();
        let r = d.sign_in(&mut b, user, PASSWORD, &[]);
        assert_eq!(r.status, 303, "{user}: {}", r.body);
        let page = d.settle(&mut b);
        assert!(page.body.contains(message), "{user}: {}", page.body);
        assert!(
            page.body.contains("Send a push") && page.body.contains("Call me"),
            "{user}: what next"
        );
        assert!(b.session_cookie().is_none(), "{user}: no session");
    }
    // Duo's enrollment link is offered.
    let mut b = d.jar();
    d.sign_in(&mut b, "frank", PASSWORD, &[]);
    assert!(d.settle(&mut b).body.contains("Enroll in Duo"));
}

#[test]
fn a_passcode_signs_in_without_a_push_and_a_failed_push_can_be_followed_by_one() {
    let d = Daemon::start(Backend::Embedded, |cfg| {
        // No cool-down after bob's denied push, so that another may follow at once.
        cfg["limits"]["push_cooldown"] = json!(0);
    });
    let mut b = d.jar();
    let r = d.sign_in(
        &mut b,
        "kate",
        PASSWORD,
        &[("factor", "passcode"), ("passcode", "123456")],
    );
    assert_eq!(r.status, 303);
    let page = d.settle(&mut b);
    assert!(page.body.contains("You are signed in"), "{}", page.body);
    assert!(
        d.sim.pushes().iter().all(|p| p.factor == "passcode"),
        "no push: {:?}",
        d.sim.pushes()
    );
    let cookie = b.session_cookie().unwrap();
    assert_eq!(
        d.auth_request(&format!("{APP}/"), &cookie)
            .header("remote-user"),
        Some("kate")
    );

    // bob's push is denied; then a wrong passcode, then a push again (denied again).
    let mut b = d.jar();
    d.sign_in(&mut b, "bob", PASSWORD, &[]);
    assert!(d.settle(&mut b).body.contains("denied"));
    let csrf = b.csrf();
    let r = b.post(
        &d.url("/wait"),
        &[
            ("csrf", &csrf),
            ("action", "passcode"),
            ("passcode", "000000"),
        ],
    );
    assert_eq!(r.status, 303);
    assert!(d
        .settle(&mut b)
        .body
        .contains("That passcode was not accepted."));
    let r = b.post(&d.url("/wait"), &[("csrf", &csrf), ("action", "push")]);
    assert_eq!(r.status, 303);
    let page = d.settle(&mut b);
    assert!(page.body.contains("denied"), "{}", page.body);
    assert!(b.session_cookie().is_none());
    // Without the CSRF token nothing starts.
    let before = d.sim.counters();
    let r = b.post(&d.url("/wait"), &[("csrf", "forged"), ("action", "push")]);
    assert_eq!(r.status, 403);
    assert_eq!(d.sim.counters(), before);
}

#[test]
fn sign_in_needs_the_csrf_token_and_refuses_open_redirects() {
    let d = Daemon::start(Backend::Embedded, |_| {});
    let mut b = d.jar();
    b.get(&d.url("/"));
    let r = b.post(
        &d.url("/"),
        &[
            ("csrf", "forged"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 403);
    assert_eq!(d.sim.counters().preauth, 0);
    for rd in [
        "https://evil.example/",
        "http://127.0.0.1.evil.example/",
        "javascript:alert(1)",
        "http://user@127.0.0.1/",
        "//evil.example/",
    ] {
        let q: String = url_encode(rd);
        let r = b.get(&d.url(&format!("/?rd={q}")));
        assert_eq!(r.status, 400, "{rd}");
        let csrf = b.csrf();
        let r = b.post(
            &d.url("/"),
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
                ("rd", rd),
            ],
        );
        assert_eq!(r.status, 400, "{rd}");
    }
    // The portal's own host on another port is fine.
    assert_eq!(
        b.get(&d.url(&format!("/?rd={}", url_encode("http://127.0.0.1:9999/x"))))
            .status,
        200
    );
    assert_eq!(d.sim.counters().preauth, 0);
    // Strict CSP, no external asset.
    let r = b.get(&d.url("/"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(
        !r.body.contains("http://") && !r.body.contains("https://"),
        "no external asset"
    );
    assert!(
        r.body.contains(r#"<label for="username">"#)
            && r.body.contains(r#"<label for="password">"#)
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn logout_ends_the_session_on_the_server() {
    for backend in backends("logout_ends_the_session_on_the_server") {
        let d = Daemon::start(backend, |_| {});
        let mut b = signed_in(&d);
        let cookie = b.session_cookie().unwrap();
        let confirm = b.get(&d.url("/logout"));
        assert_eq!(confirm.status, 200);
        assert!(confirm.body.contains(r#"method="post""#), "GET only asks");
        assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 200);
        let csrf = b.csrf();
        let r = b.post(&d.url("/logout"), &[("csrf", &csrf)]);
        assert!(r.body.contains("You are signed out."), "{}", r.body);
        assert!(b.session_cookie().is_none(), "the cookie is cleared");
        assert_eq!(
            d.auth_request(&format!("{APP}/"), &cookie).status,
            401,
            "and the old one is dead"
        );
    }
}

/// A session found is used again for `server.session_cache_ms`: a revoke by another process
/// (here `check-duo sessions revoke`) counts within that time, and at once with 0.
#[test]
fn a_revoke_elsewhere_counts_within_the_session_cache() {
    let cases = backends("a_revoke_elsewhere_counts_within_the_session_cache")
        .into_iter()
        .flat_map(|b| [(b, 0), (b, 1000)]);
    for (backend, cache_ms) in cases {
        let d = Daemon::start(backend, |cfg| {
            cfg["server"]["session_cache_ms"] = json!(cache_ms);
        });
        let b = signed_in(&d);
        let cookie = b.session_cookie().unwrap();
        assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 200);
        let revoke = Command::new(env!("CARGO_BIN_EXE_check-duo"))
            .args(["sessions", "revoke", "--user", "alice", "-c"])
            .arg(&d.config)
            .output()
            .unwrap();
        assert!(revoke.status.success(), "{revoke:?}");
        let revoked = Instant::now();
        if cache_ms == 0 {
            assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 401);
        } else {
            let ended = support::process::wait_until(Duration::from_secs(10), || {
                d.auth_request(&format!("{APP}/"), &cookie).status == 401
            });
            assert!(ended, "still granted 10 s after the revoke");
            let took = revoked.elapsed();
            assert!(took < Duration::from_millis(3000), "ended after {took:?}");
        }
        d.stop();
    }
}

#[test]
fn access_rules_bypass_deny_and_no_push_paths() {
    let d = Daemon::start(Backend::Embedded, |cfg| {
        cfg["server"]["rules"] = json!([
            {"path": "/public/*", "methods": ["GET", "HEAD"], "policy": "bypass"},
            {"path": "/admin/*", "policy": "deny"}
        ]);
        cfg["limits"]["no_push_paths"] = json!(["/api/poll*"]);
    });
    let r = d.auth_request(&format!("{APP}/public/logo.png"), "");
    assert_eq!((r.status, r.header("remote-user")), (200, None));
    assert_eq!(d.auth_request(&format!("{APP}/admin/x"), "").status, 403);
    // A background poll: a bare 401 for forward-auth; nginx needs a Location on every 401.
    let r = d.send(
        "GET",
        "/api/authz/forward-auth",
        &[
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "127.0.0.1:8080"),
            ("X-Forwarded-Uri", "/api/poll?x"),
            ("X-Forwarded-Method", "GET"),
            ("Accept", "text/html"),
        ],
        None,
    );
    assert_eq!(
        (r.status, r.header("location")),
        (401, None),
        "no redirect for a poll"
    );
    let r = d.auth_request(&format!("{APP}/api/poll?x"), "");
    assert_eq!(r.status, 401);
    assert!(r.header("location").is_some());
    // Paths that walk around a rule: no bypass without a session, a 400 for the ambiguous.
    for path in [
        "/public/../secret",
        "/public/./../private/x",
        "/public;/../x",
    ] {
        let r = d.auth_request(&format!("{APP}{path}"), "");
        assert_eq!(r.status, 401, "{path}: not a bypass");
    }
    // A walk into a deny rule is denied, session or not.
    assert_eq!(
        d.auth_request(&format!("{APP}/public/./../admin/x"), "")
            .status,
        403
    );
    for path in [
        "/public/%2e%2e/secret",
        "/public/x/..%2f..%2fsecret",
        "/public%5c..%5cx",
        "//public/../x",
    ] {
        assert_eq!(
            d.auth_request(&format!("{APP}{path}"), "").status,
            400,
            "{path}"
        );
    }
    let b = signed_in(&d);
    let cookie = b.session_cookie().unwrap();
    assert_eq!(
        d.auth_request(&format!("{APP}/admin/x"), &cookie).status,
        403,
        "deny beats a session"
    );
    for path in [
        "/./admin/x",
        "/%61dmin/x",
        "/admin;x/y",
        "/Admin/x",
        "/x/../admin/y",
    ] {
        let r = d.auth_request(&format!("{APP}{path}"), &cookie);
        assert_eq!(r.status, 403, "{path}: the deny rule holds");
    }
    assert_eq!(
        d.auth_request(&format!("{APP}/api/poll"), &cookie).status,
        200
    );
}

#[test]
fn a_shorter_expiry_in_a_restarted_daemon_ends_old_sessions_and_rotated_secrets_keep_them() {
    let dir_cfg = |cfg: &mut Value| {
        cfg["server"]["secrets"] = json!(["first-secret-0123456789"]);
    };
    let mut d = Daemon::start(Backend::Embedded, dir_cfg);
    let b = signed_in(&d);
    let cookie = b.session_cookie().unwrap();
    // The secret rotated: new first, old second. The session holds.
    d.restart(|cfg| {
        cfg["server"]["secrets"] = json!(["second-secret-0123456789", "first-secret-0123456789"]);
    });
    assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 200);
    // The old secret dropped: the session was moved to the new key on use, so it still holds.
    d.restart(|cfg| cfg["server"]["secrets"] = json!(["second-secret-0123456789"]));
    assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 200);
    // An expiry shorter than the session's age ends it.
    std::thread::sleep(Duration::from_millis(1100));
    d.restart(|cfg| cfg["session"]["expiry"] = json!(1));
    assert_eq!(d.auth_request(&format!("{APP}/"), &cookie).status, 401);
}

#[test]
fn health_metrics_and_a_clean_stop() {
    let d = Daemon::start(Backend::Embedded, |_| {});
    let r = d.send("GET", "/api/health", &[], None);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    d.auth_request(&format!("{APP}/"), "");
    let _b = signed_in(&d);
    let m = d.send("GET", "/metrics", &[], None).body;
    for needle in [
        "check_duo_decisions_total{event=\"no_cookie\",outcome=\"deny\"}",
        "check_duo_decisions_total{event=\"push_approved\",outcome=\"grant\"}",
        "check_duo_duo_call_seconds_count{call=\"preauth\"} 1",
        "check_duo_duo_call_seconds_count{call=\"auth_status\"}",
        "check_duo_store_seconds_count{op=\"get\"}",
        "check_duo_pending_pushes 0",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
    // SIGTERM: a clean exit (by itself, successful, saying so), promptly.
    let started = Instant::now();
    d.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_config_without_a_server_section_or_portal_url_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (server, key) in [
        (None, "server"),
        (Some(json!({"listen": "127.0.0.1:1"})), "server.portal_url"),
    ] {
        let mut cfg = json!({"username": "a", "password": "b",
                             "duo": {"ikey": IKEY, "skey": SKEY, "host": "127.0.0.1:1"}});
        if let Some(s) = server {
            cfg["server"] = s;
        }
        let path = dir.path().join("c.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_check-duo"))
            .args(["serve", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains("c.json"),
            "{err}"
        );
    }
}

#[test]
fn slow_clients_and_oversized_bodies_are_cut_off() {
    use std::io::Write;
    let d = Daemon::start(Backend::Embedded, |_| {});
    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(25),
        "cut off after {took:?}"
    );
    // Meanwhile the daemon kept answering.
    assert_eq!(d.send("GET", "/api/health", &[], None).status, 200);
    // A form body over 16 KiB: refused, unread.
    let mut b = d.jar();
    b.get(&d.url("/"));
    let csrf = b.csrf();
    let big = "x".repeat(20_000);
    let r = b.post(
        &d.url("/"),
        &[("csrf", &csrf), ("username", "alice"), ("password", &big)],
    );
    assert_eq!(r.status, 413);
    // Headers over the buffer: a 431, not a crash.
    let huge = "y".repeat(40_000);
    let r = d.send("GET", "/api/health", &[("X-Padding", &huge)], None);
    assert_eq!(r.status, 431);
    // Also on a connection of its own (read whole in one go, past hyper's buffer check).
    let r = support::serve::http("GET", &d.url("/api/health"), &[("X-Padding", &huge)], None);
    assert_eq!(r.status, 431);
    assert!(d.sim.counters().preauth == 0);
}
