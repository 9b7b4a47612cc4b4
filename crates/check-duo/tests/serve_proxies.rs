//! `check-duo serve` (the real binary) behind real proxies configured from the SHIPPED
//! `deploy/` files (only ports and paths substituted): nginx `auth_request` and Apache
//! `mod_authnz_fcgi` driven by a real headless Chromium, Caddy `forward_auth` by an HTTP client,
//! two daemons sharing sessions through a real Redis, and the requests Traefik and Envoy send,
//! built from `deploy/traefik/` and `deploy/envoy/` (neither is packaged in Debian). duo-sim runs
//! in process. Every server runs unprivileged on free loopback ports in the test's temp dir.
//!
//! The app and the portal are both on 127.0.0.1 (different ports): the portal's host-only
//! cookie then goes to both, as it would to one host behind one proxy in production.
//! A missing tool skips the test loudly, or fails it when `CHECK_DUO_REQUIRE_E2E` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duo_sim::{Behaviours, Counters, PushKind, PushState, SimConfig, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::apache::{Apache, APACHE2};
use support::apache_fcgi::AUTHNZ_FCGI_SO;
use support::caddy::{self, CADDY};
use support::echo::Echo;
use support::haproxy::{self, HAPROXY};
use support::nginx::{self, NGINX};
use support::process::{chmod, wait_until, Server};
use support::redis::{Redis, REDIS_SERVER};
use support::serve::{http, sign_in_over_http, Serve};
use support::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

const IKEY: &str = "DIPROXIESE2EXXXXXXXX";
const SKEY: &str = "proxiesE2eSecretKeyForTheSimulator000000";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse, battery=staple&1";
/// Marks the protected page: seen only once access was granted.
const SECRET: &str = "check-duo-serve-protected-content";
/// Long enough for a debug build, a cold Chromium and a loaded 2-core machine.
const PAGE: Duration = Duration::from_secs(30);
const IMAGES: usize = 20;

const BROWSER_TOOLS: &[(&str, &str)] = &[("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)];

/// The simulator: alice's pushes answered as `push` says; a short push timeout.
fn sim(push: PushKind, dir: &Path) -> (SimHandle, PathBuf) {
    let mut cfg = SimConfig::new(IKEY, SKEY);
    cfg.long_poll = Duration::from_millis(500);
    cfg.push_timeout = Duration::from_secs(3);
    cfg.log = std::env::var_os("DUO_SIM_LOG").is_some();
    cfg.behaviours = Behaviours::default().with_user(USER, UserBehaviour::push(push));
    let sim = duo_sim::start(cfg).expect("start duo-sim");
    let ca = dir.join("duo-ca.pem");
    fs::write(&ca, sim.ca_pem()).unwrap();
    (sim, ca)
}

/// alice's password hash (cost 4: a debug build), one for the whole binary: daemons sharing a
/// store must hold the same hash, not only the same password, since a session is tied to the
/// credential it was granted under (a new hash ends it).
fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(PASSWORD, 4).unwrap())
        .clone()
}

/// A seed config for the daemon (its `server` section is filled in by [`Serve::start`]).
/// No push cooldown: the tests send pushes back to back on purpose.
fn config(sim: &SimHandle, ca: &Path, cache: Value) -> Value {
    json!({
        "usernames": { USER: password_hash() },
        "groups": { "staff": [USER], "admins": [USER] },
        "profiles": { USER: { "name": "Alice Liddell", "email": "alice@example.org" } },
        "duo": { "ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                 "failmode": "secure", "push_timeout": 3, "call_timeout": 5 },
        "cache": cache,
        "session": { "expiry": 3600 },
        "limits": { "push_cooldown": 0 },
    })
}

fn temp() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("check-duo-proxies-")
        .tempdir()
        .unwrap();
    chmod(d.path(), 0o755);
    d
}

/// A world with one daemon (its sessions in `sessions.db`) and no proxy yet: the temp dir, the
/// simulator (answering by hand), the daemon; with `fastcgi`, its FastCGI authorizer too.
fn one_daemon(fastcgi: bool) -> (tempfile::TempDir, SimHandle, Serve) {
    let dir = temp();
    let (sim, ca) = sim(PushKind::Manual, dir.path());
    let d = Serve::start(
        &dir.path().join("serve"),
        config(&sim, &ca, json!({ "path": dir.path().join("sessions.db") })),
        fastcgi,
    );
    (dir, sim, d)
}

/// The application's pages: a protected page, one with 20 images (protected too), a CGI that
/// shows what it received (run by Apache only).
fn write_site(docroot: &Path) {
    let private = docroot.join("private");
    fs::create_dir_all(private.join("img")).unwrap();
    fs::write(
        private.join("index.html"),
        format!("<!doctype html><title>private</title><h1 id=\"secret\">{SECRET}</h1>"),
    )
    .unwrap();
    let mut page = String::from("<!doctype html><title>assets</title>\n");
    support::write_images(&private, IMAGES, &mut page);
    let _ = writeln!(page, "<h1 id=\"secret\">{SECRET}</h1>");
    fs::write(private.join("assets.html"), page).unwrap();
    let cgi = private.join("env.cgi");
    fs::write(
        &cgi,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         printf 'remote-user-var=[%s]\\n' \"$REMOTE_USER\"\n\
         printf 'remote-user-header=[%s]\\n' \"$HTTP_REMOTE_USER\"\n\
         printf 'identity=[%s|%s|%s]\\n' \"$HTTP_REMOTE_GROUPS\" \"$HTTP_REMOTE_NAME\" \"$HTTP_REMOTE_EMAIL\"\n\
         printf 'cookie=[%s]\\n' \"$HTTP_COOKIE\"\n",
    )
    .unwrap();
    chmod(&cgi, 0o755);
}

/// The only thing that changes between two counters: the Duo calls made in between.
fn duo_calls(c: &Counters) -> (u64, u64, u64) {
    (c.preauth, c.auth, c.auth_status)
}

/// One world: the simulator, the daemons, the proxies, the browser. Field order is drop order.
struct World {
    browser: Option<Browser>,
    nginx: Vec<Server>,
    daemons: Vec<Serve>,
    _redis: Option<Redis>,
    sim: SimHandle,
    _docroot: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    /// `daemons` daemons, each behind its own nginx; with more than one they share a Redis.
    fn nginx(push: PushKind, daemons: usize, browser: Option<bool>) -> World {
        let dir = temp();
        let (sim, ca) = sim(push, dir.path());
        let docroot = dir.path().join("htdocs");
        write_site(&docroot);
        let redis = (daemons > 1).then(|| Redis::start(dir.path()));
        let mut ds = Vec::new();
        let mut ns = Vec::new();
        for i in 0..daemons {
            let cache = match &redis {
                Some(r) => json!({ "url": r.url(), "prefix": "check-duo-proxies:" }),
                None => json!({ "path": dir.path().join(format!("sessions-{i}.db")) }),
            };
            let d = Serve::start(
                &dir.path().join(format!("serve-{i}")),
                config(&sim, &ca, cache),
                false,
            );
            ns.push(nginx::start(
                &dir.path().join(format!("nginx-{i}")),
                &docroot,
                d.port,
            ));
            ds.push(d);
        }
        let browser = browser.map(|js| {
            if js {
                Browser::start(dir.path())
            } else {
                Browser::start_without_javascript(dir.path())
            }
        });
        World {
            browser,
            nginx: ns,
            daemons: ds,
            _redis: redis,
            sim,
            _docroot: docroot,
            _dir: dir,
        }
    }

    fn b(&self) -> &Browser {
        self.browser.as_ref().expect("a browser")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (i, d) in self.daemons.iter().enumerate() {
            let _ = write!(s, "\n--- serve-{i}.log ---\n{}", d.log());
        }
        for (i, n) in self.nginx.iter().enumerate() {
            let _ = write!(s, "\n--- nginx-{i} log ---\n{}", n.log());
        }
        s
    }

    /// Stop the daemons with SIGTERM, asserting clean exits.
    fn stop(mut self) {
        self.browser.take();
        self.nginx.clear();
        for d in self.daemons.drain(..) {
            d.stop();
        }
    }
}

/// One daemon behind nginx, and Chromium with `javascript` or without; `None` (the test
/// skipped) when a tool is missing.
fn nginx_with_browser(test: &str, javascript: bool) -> Option<World> {
    browser_and(test, &[("nginx", NGINX)])
        .then(|| World::nginx(PushKind::Manual, 1, Some(javascript)))
}

/// Chromium, chromedriver and `tools` are there (see [`support::tools_present`]).
fn browser_and(test: &str, tools: &[(&str, &str)]) -> bool {
    support::tools_present(test, &[BROWSER_TOOLS, tools].concat())
}

/// Without a session, a GET of `url` with `headers` is sent to the sign-in on `d`'s portal,
/// back to `url` afterwards: the Location.
fn sent_to_the_portal(
    url: &str,
    headers: &[(&str, &str)],
    d: &Serve,
    logs: &dyn Fn() -> String,
) -> String {
    let r = http("GET", url, headers, None);
    assert_eq!(r.status, 302, "{}{}", r.body, logs());
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with(&d.portal()), "{location}");
    assert!(
        location.contains("rd=http%3A%2F%2F127.0.0.1%3A"),
        "{location}"
    );
    location
}

/// Go to the protected `url` and wait for the sign-in form of the daemon on `port`.
fn goto_sign_in(b: &Browser, url: &str, port: u16, logs: &dyn Fn() -> String) {
    b.goto(url);
    wait_for_sign_in_form(b, port, logs);
}

/// From the protected `url` to the sign-in form of the daemon on `port`, alice's password, and
/// the waiting page of the push that was sent.
fn sign_in_until_push(b: &Browser, url: &str, port: u16, logs: &dyn Fn() -> String) {
    goto_sign_in(b, url, port, logs);
    push_sent(b, logs);
}

/// Submit alice's password on the sign-in form; wait for the waiting page of the push.
fn push_sent(b: &Browser, logs: &dyn Fn() -> String) {
    submit_password(b, PASSWORD);
    wait_for_text(b, "Push sent to", logs);
}

/// Log out on `d`'s portal (the confirmation, then the button): signed out; the protected
/// `url` then asks for a sign-in again, on the daemon on `port`.
fn log_out(b: &Browser, d: &Serve, url: &str, port: u16, logs: &dyn Fn() -> String) {
    b.goto(&d.url("/logout"));
    let button = b.wait_for_element("button[type=submit]", PAGE);
    b.click_to_leave(&button);
    wait_for_text(b, "You are signed out.", logs);
    goto_sign_in(b, url, port, logs);
}

/// Wait until the browser is on the portal's sign-in form (served by the daemon on `port`).
fn wait_for_sign_in_form(b: &Browser, port: u16, logs: &dyn Fn() -> String) {
    let ok = wait_until(PAGE, || {
        b.current_url()
            .starts_with(&format!("http://127.0.0.1:{port}/"))
            && b.find("input[name=username]").is_some()
    });
    assert!(
        ok,
        "not on the sign-in form of :{port}: at {}\n{}{}",
        b.current_url(),
        b.page_source(),
        logs()
    );
}

/// Type alice's password on the sign-in form and submit it; wait for the waiting page and
/// check that it names the device.
fn submit_password(b: &Browser, password: &str) {
    let name = b.wait_for_element("input[name=username]", PAGE);
    b.send_keys(&name, USER);
    let pw = b.wait_for_element("input[name=password]", PAGE);
    b.send_keys(&pw, password);
    let submit = b.wait_for_element("button[type=submit]", PAGE);
    b.click_to_leave(&submit);
}

fn wait_for_text(b: &Browser, text: &str, logs: &dyn Fn() -> String) {
    let ok = wait_until(PAGE, || {
        b.try_execute("return document.body ? document.body.innerText : '';", &[])
            .ok()
            .and_then(|v| v.as_str().map(|s| s.contains(text)))
            .unwrap_or(false)
    });
    assert!(
        ok,
        "`{text}` never shown; at {}:\n{}{}",
        b.current_url(),
        b.page_source(),
        logs()
    );
}

/// Wait until the browser shows the protected page `url` exactly.
fn wait_for_protected(b: &Browser, url: &str, logs: &dyn Fn() -> String) {
    let ok = wait_until(PAGE, || {
        b.current_url() == url && b.find("#secret").is_some()
    });
    assert!(
        ok,
        "not on the protected page {url}; at {}:\n{}{}",
        b.current_url(),
        b.page_source(),
        logs()
    );
}

/// Answer the pending push on duo-sim's phone page in another tab, as a user would.
fn approve_on_phone_page(b: &Browser, sim: &SimHandle) {
    let push = sim.wait_for_pending(PAGE).expect("a push was sent");
    assert_eq!(push.username, USER);
    let main = b.open_tab();
    b.goto(&format!("http://{}/", sim.control_addr()));
    let approve = b.wait_for_element(
        &format!("li.push[data-txid=\"{}\"] button.approve", push.txid),
        PAGE,
    );
    b.click(&approve);
    let answered = wait_until(PAGE, || {
        sim.pushes()
            .iter()
            .any(|p| p.txid == push.txid && p.state == PushState::Allow)
    });
    assert!(
        answered,
        "the phone page did not approve: {:?}",
        sim.pushes()
    );
    b.close_tab(&main);
}

/// a. nginx + Chromium: protected URL → sign-in → waiting page naming the device → approve on
/// the phone page → the protected page; 20 protected images with no Duo call; logout → the
/// protected URL asks for a sign-in again.
#[test]
fn nginx_browser_sign_in_assets_and_logout() {
    let Some(w) = nginx_with_browser("nginx_browser_sign_in", true) else {
        return;
    };
    let started = Instant::now();
    let logs = || w.logs();
    let (b, n, d) = (w.b(), &w.nginx[0], &w.daemons[0]);
    let protected = n.url("/private/");

    goto_sign_in(b, &protected, d.port, &logs);
    // The form carries the target.
    assert!(b.current_url().contains("rd="), "{}", b.current_url());
    assert_eq!(
        w.sim.counters().duo_calls(),
        0,
        "no Duo call before the password"
    );
    push_sent(b, &logs);
    wait_for_text(b, "iOS", &logs);
    wait_for_text(b, "Approve it in Duo Mobile.", &logs);
    approve_on_phone_page(b, &w.sim);
    wait_for_protected(b, &protected, &logs);
    assert!(b.cookie("check-duo").is_some(), "the session cookie is set");

    // 20 protected images, each checked by nginx with the daemon: no Duo call.
    let before = w.sim.counters();
    let assets = n.url("/private/assets.html");
    b.goto(&assets);
    wait_for_protected(b, &assets, &logs);
    let loaded = wait_until(PAGE, || {
        b.execute(
            "return [...document.querySelectorAll('img.asset')]
                 .filter(i => i.complete && i.naturalWidth > 0).length;",
            &[],
        ) == json!(IMAGES)
    });
    assert!(loaded, "not every image loaded:\n{}", b.page_source());
    let widths = b.execute(
        "return [...document.querySelectorAll('img.asset')].map(i => i.naturalWidth);",
        &[],
    );
    assert_eq!(widths, json!((10..10 + IMAGES).collect::<Vec<_>>()));
    assert_eq!(
        duo_calls(&w.sim.counters()),
        duo_calls(&before),
        "no Duo call for the assets"
    );
    assert_eq!(w.sim.pushes().len(), 1);
    let access = fs::read_to_string(n.dir.join("logs/access.log")).unwrap();
    assert!(
        access.matches("GET /private/img/").count() >= IMAGES,
        "every image went through nginx:\n{access}"
    );

    // Logout: a confirmation, then signed out; the protected URL asks for a sign-in again.
    log_out(b, d, &protected, d.port, &logs);
    assert_eq!(w.sim.pushes().len(), 1, "a logout sends no push");
    eprintln!(
        "nginx_browser_sign_in_assets_and_logout: {:?}",
        started.elapsed()
    );
    w.stop();
}

/// a. A denied push and a timed-out one show their messages on the waiting page.
#[test]
fn nginx_browser_denied_and_timed_out_pushes() {
    let Some(w) = nginx_with_browser("nginx_browser_denied", true) else {
        return;
    };
    let logs = || w.logs();
    let (b, n, d) = (w.b(), &w.nginx[0], &w.daemons[0]);

    // A wrong password: no push.
    goto_sign_in(b, &n.url("/private/"), d.port, &logs);
    submit_password(b, "not the password");
    wait_for_text(b, "Wrong user name or password. No push was sent.", &logs);
    assert!(w.sim.pushes().is_empty());

    // Denied on the phone.
    sign_in_until_push(b, &n.url("/private/"), d.port, &logs);
    let push = w.sim.wait_for_pending(PAGE).expect("a push");
    assert!(w.sim.deny(&push.txid));
    wait_for_text(b, "The push was denied on your phone.", &logs);
    assert!(b.cookie("check-duo").is_none());

    // Nobody answers: the push times out (3 s).
    sign_in_until_push(b, &n.url("/private/"), d.port, &logs);
    wait_for_text(b, "Nobody answered the push in time.", &logs);
    assert!(b.cookie("check-duo").is_none());
    // Still not signed in.
    let r = http("GET", &n.url("/private/"), &[("Accept", "text/html")], None);
    assert_eq!(r.status, 302);
    w.stop();
}

/// a. The same sign-in with JavaScript disabled: the waiting page's <noscript> refresh follows
/// the push.
#[test]
fn nginx_browser_sign_in_without_javascript() {
    let Some(w) = nginx_with_browser("nginx_browser_nojs", false) else {
        return;
    };
    let logs = || w.logs();
    let (b, n, d) = (w.b(), &w.nginx[0], &w.daemons[0]);
    let protected = n.url("/private/");
    goto_sign_in(b, &protected, d.port, &logs);
    // Scripts really are off: a page's own script does not run.
    b.goto("data:text/html,<title>off</title><script>document.title='on'</script>");
    let title = || {
        b.try_execute("return document.title;", &[])
            .unwrap_or_default()
    };
    assert!(wait_until(PAGE, || title() == "off"), "{:?}", title());
    assert_ne!(title(), "on", "JavaScript is enabled");
    sign_in_until_push(b, &protected, d.port, &logs);
    let push = w.sim.wait_for_pending(PAGE).expect("a push");
    // The page got there without script: it is the /wait page, refreshed by <noscript>.
    assert!(b.current_url().ends_with("/wait"), "{}", b.current_url());
    assert!(w.sim.approve(&push.txid));
    wait_for_protected(b, &protected, &logs);
    w.stop();
}

/// e. Two daemons, each behind its own nginx, sharing one Redis: signed in through the first,
/// the second serves the protected page with no second push.
#[test]
fn two_daemons_share_sessions_through_redis() {
    let tools = [("nginx", NGINX), ("redis-server", REDIS_SERVER)];
    if !browser_and("two_daemons_share_sessions", &tools) {
        return;
    }
    let w = World::nginx(PushKind::Manual, 2, Some(true));
    let logs = || w.logs();
    let b = w.b();
    let first = w.nginx[0].url("/private/");
    sign_in_until_push(b, &first, w.daemons[0].port, &logs);
    let push = w.sim.wait_for_pending(PAGE).expect("a push");
    assert!(w.sim.approve(&push.txid));
    wait_for_protected(b, &first, &logs);
    let before = w.sim.counters();

    let second = w.nginx[1].url("/private/assets.html");
    b.goto(&second);
    wait_for_protected(b, &second, &logs);
    assert_eq!(duo_calls(&w.sim.counters()), duo_calls(&before));
    assert_eq!(w.sim.pushes().len(), 1, "one push for both");
    // Logging out on the second ends the session on the first too (one store).
    log_out(b, &w.daemons[1], &first, w.daemons[0].port, &logs);
    w.stop();
}

/// f. The nginx snippets strip the gate's cookie before the application, keep the others, and
/// replace client-sent Remote-User, -Groups, -Name and -Email with the gate's.
#[test]
fn nginx_strips_the_gate_cookie_and_client_identity_headers() {
    if !support::tools_present("nginx_strips", &[("nginx", NGINX)]) {
        return;
    }
    let w = World::nginx(PushKind::Manual, 1, None);
    let (n, d) = (&w.nginx[0], &w.daemons[0]);
    let echo = n.url("/private/echo");

    // Not signed in, whatever Remote-User says: a 302 to the portal, nothing reaches the app.
    let location = sent_to_the_portal(
        &echo,
        &[("Accept", "text/html"), ("Remote-User", USER)],
        d,
        &|| w.logs(),
    );
    // An API client gets the same 302 (nginx turns the gate's 401 into it).
    let r = http("GET", &echo, &[], None);
    assert_eq!(r.status, 302);

    let jar = sign_in_over_http(&location, USER, PASSWORD, &w.sim);
    let token = jar.session().unwrap().to_string();
    for (sent, seen) in [
        (format!("check-duo={token}"), String::new()),
        (
            format!("a=1; check-duo={token}; b=2"),
            "a=1; b=2".to_string(),
        ),
        (format!("check-duo={token}; b=2"), "b=2".to_string()),
        (format!("a=1; check-duo={token}"), "a=1;".to_string()),
        (
            format!("check-duo-csrf=x; check-duo={token}; xcheck-duo=y"),
            "check-duo-csrf=x; xcheck-duo=y".to_string(),
        ),
    ] {
        let r = http(
            "GET",
            &echo,
            &[
                ("Cookie", &sent),
                ("Remote-User", "mallory"),
                ("Remote-Groups", "root"),
                ("Remote-Name", "Mallory"),
                ("Remote-Email", "mallory@example.org"),
            ],
            None,
        );
        assert_eq!(r.status, 200, "{sent}: {}", r.body);
        assert_eq!(
            r.body,
            format!(
                "cookie=[{seen}] remote-user=[{USER}] groups=[admins,staff] \
                 name=[Alice Liddell] email=[alice@example.org]\n"
            ),
            "cookie sent: {sent}"
        );
        assert!(!r.body.contains(&token));
    }
    w.stop();
}

/// b. Apache with mod_authnz_fcgi asking the daemon's FastCGI authorizer: no session → 302 to
/// the portal; a sign-in in Chromium → the protected page; REMOTE_USER reaches the app, the
/// gate's cookie and a client's Remote-User do not.
#[test]
fn apache_fastcgi_authorizer() {
    let tools = [("apache2", APACHE2), ("mod_authnz_fcgi", AUTHNZ_FCGI_SO)];
    if !browser_and("apache_fastcgi_authorizer", &tools) {
        return;
    }
    let (dir, sim, d) = one_daemon(true);
    let docroot = dir.path().join("htdocs");
    write_site(&docroot);
    let apache = Apache::start_fcgi(&dir.path().join("apache"), &docroot, d.fcgi_port.unwrap());
    let logs = || {
        format!(
            "\n--- serve.log ---\n{}\n--- apache ---\n{}",
            d.log(),
            apache.error_log()
        )
    };

    // No session: Apache passes the daemon's 302 on.
    sent_to_the_portal(
        &apache.url("/private/"),
        &[("Accept", "text/html")],
        &d,
        &logs,
    );

    let b = Browser::start(dir.path());
    let protected = apache.url("/private/");
    sign_in_until_push(&b, &protected, d.port, &logs);
    approve_on_phone_page(&b, &sim);
    wait_for_protected(&b, &protected, &logs);

    let before = sim.counters();
    let env = apache.url("/private/env.cgi");
    b.goto(&env);
    wait_for_text(&b, "remote-user-var=[alice]", &logs);
    let text = b.execute("return document.body.innerText;", &[]);
    let text = text.as_str().unwrap();
    assert!(text.contains("remote-user-header=[alice]"), "{text}");
    assert!(
        !text.contains("check-duo="),
        "the app saw the gate's cookie: {text}"
    );
    assert_eq!(duo_calls(&sim.counters()), duo_calls(&before));

    // A client's Remote-User never reaches the app; other cookies do.
    let token = b.cookie("check-duo").expect("session cookie");
    let r = http(
        "GET",
        &env,
        &[
            ("Cookie", &format!("a=1; check-duo={token}; b=2")),
            ("Remote-User", "mallory"),
            ("Remote-Groups", "root"),
            ("Remote-Name", "Mallory"),
            ("Remote-Email", "mallory@example.org"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}{}", r.body, logs());
    assert!(r.body.contains("remote-user-var=[alice]"), "{}", r.body);
    assert!(
        r.body
            .contains("identity=[admins,staff|Alice Liddell|alice@example.org]"),
        "{}",
        r.body
    );
    assert!(r.body.contains("remote-user-header=[alice]"), "{}", r.body);
    assert!(r.body.contains("cookie=[a=1; b=2]"), "{}", r.body);
    let r = http("GET", &env, &[("Remote-User", "mallory")], None);
    assert_eq!(r.status, 302, "no session, whatever Remote-User says");
    // Apache logged the user the daemon named.
    let ok = wait_until(Duration::from_secs(5), || {
        apache.access_log().contains("alice \"GET /private/env.cgi")
    });
    assert!(ok, "{}", apache.access_log());
    drop(b);
    drop(apache);
    d.stop();
}

/// c. Caddy forward_auth: 302 to the portal without a session; with one (signed in over HTTP),
/// 200 with Remote-User copied, the client's Remote-User and the gate's cookie not passed on.
#[test]
fn caddy_forward_auth() {
    let Some((token, r)) = echo_behind(
        "caddy_forward_auth",
        ("caddy", CADDY),
        caddy::start,
        &[("Accept", "text/html")],
    ) else {
        return;
    };
    assert!(!r.body.contains(&token), "{}", r.body);
}

/// The proxy `start` gives (Caddy, HAProxy: `tool`) in front of an [`Echo`] app, asking the
/// daemon: 302 to the portal without a session, 401 for an API client; signed in over HTTP, the
/// app sees the user (and groups, name, address) the gate named and the client's other cookies,
/// neither the gate's cookie nor the client's Remote-* headers. `headers` go with the first signed-in request: the session
/// token and the app's reply to that request; `None` (the test skipped) without the tool.
fn echo_behind(
    test: &str,
    tool: (&str, &str),
    start: fn(&Path, u16, u16) -> Server,
    headers: &[(&str, &str)],
) -> Option<(String, support::serve::Reply)> {
    if !support::tools_present(test, &[tool]) {
        return None;
    }
    let (dir, sim, d) = one_daemon(false);
    let app = Echo::start();
    let proxy = start(&dir.path().join(tool.0), d.port, app.port);
    let logs = || {
        format!(
            "\n--- serve.log ---\n{}\n--- {} ---\n{}",
            d.log(),
            tool.0,
            proxy.log()
        )
    };
    let url = proxy.url("/private/x?a=1");

    let location = sent_to_the_portal(
        &url,
        &[("Accept", "text/html"), ("Remote-User", USER)],
        &d,
        &logs,
    );
    // An API client: 401, nothing from the app.
    let r = http("GET", &url, &[("Accept", "application/json")], None);
    assert_eq!(r.status, 401, "{}", r.body);

    let jar = sign_in_over_http(&location, USER, PASSWORD, &sim);
    let token = jar.session().unwrap().to_string();
    let cookies = format!("a=1; check-duo={token}; b=2");
    let mut sent = vec![
        ("Cookie", cookies.as_str()),
        ("Remote-User", "mallory"),
        ("Remote-Groups", "mallory"),
        ("Remote-Name", "mallory"),
        ("Remote-Email", "mallory@example.org"),
    ];
    sent.extend_from_slice(headers);
    let r = http("GET", &url, &sent, None);
    assert_eq!(r.status, 200, "{}{}", r.body, logs());
    assert!(r.body.starts_with("GET /private/x?a=1 "), "{}", r.body);
    for seen in [
        "remote-user: alice",
        "remote-groups: admins,staff",
        "remote-name: Alice Liddell",
        "remote-email: alice@example.org",
    ] {
        assert!(
            r.body.contains(&format!("\n{seen}\n")),
            "{seen}: {}",
            r.body
        );
    }
    assert!(!r.body.contains("mallory"), "{}", r.body);
    assert!(r.body.contains("\ncookie: a=1; b=2\n"), "{}", r.body);
    let only = http(
        "GET",
        &url,
        &[("Cookie", &format!("check-duo={token}"))],
        None,
    );
    assert_eq!(only.status, 200);
    assert!(!only.body.contains("check-duo="), "{}", only.body);
    drop(proxy);
    d.stop();
    Some((token, r))
}

/// The value after `key:` on the first line holding it in a shipped YAML file.
fn yaml_value(text: &str, key: &str) -> String {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no `{key}:` in the file"))
        .trim()
        .trim_matches('"')
        .to_string()
}

/// The items of the list under `key:` (`- "x"` or `- exact: x` lines).
fn yaml_list(text: &str, key: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}:"));
    lines.next().unwrap_or_else(|| panic!("no `{key}:` list"));
    lines
        .map(str::trim)
        .take_while(|l| l.starts_with('-') || l.starts_with("patterns:"))
        .filter_map(|l| l.strip_prefix('-'))
        .map(|l| {
            let l = l.trim();
            l.strip_prefix("exact:")
                .unwrap_or(l)
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .collect()
}

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");

/// d. What Traefik (deploy/traefik/check-duo.yml) and Envoy (deploy/envoy/envoy.yaml) send,
/// built from the shipped files, to the real daemon.
#[test]
fn traefik_and_envoy_requests() {
    let (_dir, sim, d) = one_daemon(false);
    let app = "127.0.0.1:8443";

    // Traefik: a GET to `address` with the client's headers and X-Forwarded-*.
    let traefik = fs::read_to_string(format!("{DEPLOY}/traefik/check-duo.yml")).unwrap();
    let address = yaml_value(&traefik, "address");
    assert_eq!(address, "http://127.0.0.1:9091/api/authz/forward-auth");
    let address = address.replace(":9091/", &format!(":{}/", d.port));
    assert_eq!(yaml_value(&traefik, "trustForwardHeader"), "false");
    let copied = yaml_list(&traefik, "authResponseHeaders");
    assert_eq!(
        copied,
        [
            "Remote-User",
            "Remote-Groups",
            "Remote-Name",
            "Remote-Email"
        ]
    );
    let traefik_ask = |cookie: &str, accept: &str, method: &str| {
        http(
            "GET",
            &address,
            &[
                ("Accept", accept),
                ("Cookie", cookie),
                ("User-Agent", "Mozilla/5.0"),
                ("X-Forwarded-Method", method),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", app),
                ("X-Forwarded-Uri", "/private/page?x=1"),
                ("X-Forwarded-For", "192.0.2.7"),
            ],
            None,
        )
    };
    let r = traefik_ask("", "text/html,application/xhtml+xml", "GET");
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location").unwrap().to_string();
    // Absolute: Traefik would resolve a relative one against the daemon's address.
    assert!(location.starts_with(&d.portal()), "{location}");
    assert!(
        location.contains("rd=http%3A%2F%2F127.0.0.1%3A8443%2Fprivate%2Fpage%3Fx%3D1"),
        "{location}"
    );
    assert_eq!(traefik_ask("", "text/html", "POST").status, 303);
    assert_eq!(traefik_ask("", "application/json", "GET").status, 401);

    let jar = sign_in_over_http(&location, USER, PASSWORD, &sim);
    let cookie = format!("check-duo={}", jar.session().unwrap());
    let r = traefik_ask(&cookie, "text/html", "GET");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header(&copied[0]), Some(USER));
    // The session is bound to nothing Traefik changes: another method passes too.
    assert_eq!(
        traefik_ask(&cookie, "application/json", "DELETE").status,
        200
    );

    // Envoy: the original method, path_prefix + the original path, Host, and only the headers
    // allowed_headers lists (cookie among them).
    let envoy = fs::read_to_string(format!("{DEPLOY}/envoy/envoy.yaml")).unwrap();
    assert_eq!(yaml_value(&envoy, "uri"), "http://127.0.0.1:9091");
    let prefix = yaml_value(&envoy, "path_prefix");
    assert_eq!(prefix, "/api/authz/ext-authz");
    let allowed = yaml_list(&envoy, "allowed_headers");
    assert!(allowed.contains(&"cookie".to_string()), "{allowed:?}");
    let upstream = yaml_list(&envoy, "allowed_upstream_headers");
    assert!(
        upstream.contains(&"remote-user".to_string()),
        "{upstream:?}"
    );
    let timeout = yaml_value(&envoy, "timeout");
    let envoy_ask = |method: &str, cookie: &str, accept: &str| {
        let client = [
            ("cookie", cookie),
            ("accept", accept),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "192.0.2.7"),
            // Not allowed: Envoy leaves them out.
            ("user-agent", "Mozilla/5.0"),
            ("remote-user", "mallory"),
        ];
        let mut headers: Vec<(&str, &str)> = client
            .iter()
            .filter(|(k, _)| allowed.iter().any(|a| a == k))
            .copied()
            .collect();
        headers.push(("Host", "127.0.0.1:10000"));
        let t = Instant::now();
        let r = http(
            method,
            &format!("http://127.0.0.1:{}{prefix}/private/page?x=1", d.port),
            &headers,
            None,
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "within Envoy's timeout {timeout}"
        );
        r
    };
    // https target behind a plain-HTTP loopback portal: accepted (loopback dev portal).
    let r = envoy_ask("GET", "", "text/html");
    assert_eq!(r.status, 302, "{}", r.body);
    let loc = r.header("location").unwrap();
    assert!(
        loc.contains("rd=https%3A%2F%2F127.0.0.1%3A10000%2Fprivate%2Fpage%3Fx%3D1"),
        "{loc}"
    );
    assert_eq!(envoy_ask("GET", "", "application/json").status, 401);
    let r = envoy_ask("GET", &cookie, "application/json");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("remote-user"), Some(USER));
    assert_eq!(envoy_ask("POST", &cookie, "text/html").status, 200);
    d.stop();
}

/// HAProxy with the shipped check-duo.lua (HAProxy's own Lua HTTP client): 302 to the portal
/// without a session; with one, 200 with Remote-User set, the client's Remote-User and the
/// gate's cookie not passed on.
#[test]
fn haproxy_lua_check() {
    echo_behind(
        "haproxy_lua_check",
        ("haproxy", HAPROXY),
        haproxy::start,
        &[],
    );
}
