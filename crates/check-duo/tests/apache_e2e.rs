//! End to end, through a real browser: headless Chromium → a real Apache configured from the
//! shipped `deploy/apache/` files → the real `check-duo` binary (run by mod_authnz_external) →
//! `duo-sim` (in-process) and a real session store (embedded SQLite, or a real redis-server);
//! the users in the config, in an htpasswd file, or in a real slapd (`ldap`).
//!
//! Each test builds its own world in its own temp dir on random loopback ports; everything stops
//! when the test ends. Without apache2/chromium the tests skip loudly, unless
//! `CHECK_DUO_REQUIRE_E2E` is set (CI), where a missing tool fails them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use duo_sim::{
    Behaviours, Counters, PreauthKind, PushKind, PushState, SimConfig, SimHandle, UserBehaviour,
};
use serde_json::json;

use support::apache::{install_login_page, Apache, ApacheSpec, APACHE2, AUTHNZ_EXTERNAL_SO};
use support::process::chmod;
use support::redis::{Redis, REDIS_SERVER};
use support::slapd::{self, Slapd};
use support::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

const IKEY: &str = "DIE2EAPACHEXXXXXXXXX";
const SKEY: &str = "e2eSecretKeyForTheSimulatorOnly000000000";
const USER: &str = "alice";
/// Spaces, `=`, `&` and `,` must reach the program unchanged through the form and the session.
const PASSWORD: &str = "correct horse, battery=staple&1";
/// Marks the protected page: seen only once access was granted.
const SECRET: &str = "check-duo-e2e-protected-content";
/// Long enough for a debug build, a cold Chromium and a loaded 2-core machine.
const PAGE: Duration = Duration::from_secs(20);
/// Apache's own tool (apache2-utils).
const HTPASSWD: &str = "/usr/bin/htpasswd";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Embedded,
    Redis,
}

/// What a test needs.
struct Options {
    /// How the simulator answers alice's pushes.
    push: PushKind,
    /// `session.expiry` in seconds.
    expiry: u64,
    store: Store,
    /// Apache instances sharing the session passphrase and the store.
    apaches: usize,
    /// Store alice's password as a bcrypt hash (`usernames`) or in the seed's plaintext form.
    hashed: bool,
    /// The config's `limits` section, if any.
    limits: Option<serde_json::Value>,
    /// alice comes from an htpasswd file written by Apache's `htpasswd -B` (the config has
    /// `htpasswd` and no `usernames`), instead of the config.
    htpasswd: bool,
    /// alice comes from a real slapd (the config has `ldap`, StartTLS with the server's CA, and
    /// no `usernames`), with the test tree's password (`pw-alice`), instead of the config.
    ldap: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            push: PushKind::Approve,
            expiry: 14_400,
            store: Store::Embedded,
            apaches: 1,
            hashed: true,
            limits: None,
            htpasswd: false,
            ldap: false,
        }
    }
}

/// One test's world. Field order is drop order: the browser and Apache go before the simulator
/// and the directory.
struct World {
    browser: Browser,
    apaches: Vec<Apache>,
    _redis: Option<Redis>,
    slapd: Option<Slapd>,
    sim: SimHandle,
    _dir: tempfile::TempDir,
}

/// `None` (after a loud message) when the tools are missing and CI did not ask for them.
fn world(test: &str, opts: Options) -> Option<World> {
    let mut tools = vec![
        ("apache2", APACHE2),
        ("mod_authnz_external", AUTHNZ_EXTERNAL_SO),
        ("chromium", CHROMIUM),
        ("chromedriver", CHROMEDRIVER),
    ];
    if opts.store == Store::Redis {
        tools.push(("redis-server", REDIS_SERVER));
    }
    if opts.htpasswd {
        tools.push(("htpasswd (apache2-utils)", HTPASSWD));
    }
    if !support::tools_present(test, &tools) || (opts.ldap && !slapd::available(test)) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("check-duo-e2e-")
        .tempdir()
        .unwrap();
    // Everything below is read by the program, which runs as Apache's user (nobody, as root).
    chmod(dir.path(), 0o755);

    let mut cfg = SimConfig::new(IKEY, SKEY);
    // auth_status long-polls: hold each call for less than the program's `call_timeout` (5 s).
    cfg.long_poll = Duration::from_secs(2);
    cfg.log = std::env::var_os("DUO_SIM_LOG").is_some();
    // Unknown users look like a real tenant: not enrolled.
    cfg.behaviours = Behaviours {
        default: UserBehaviour::preauth(PreauthKind::Enroll),
        ..Behaviours::default()
    }
    .with_user(USER, UserBehaviour::push(opts.push));
    let sim = duo_sim::start(cfg).unwrap();
    let ca = dir.path().join("duo-ca.pem");
    fs::write(&ca, sim.ca_pem()).unwrap();
    chmod(&ca, 0o644);

    // A copy of the binary: the build tree may sit where Apache's user cannot reach it.
    let bin = dir.path().join("check-duo");
    fs::copy(env!("CARGO_BIN_EXE_check-duo"), &bin).unwrap();
    chmod(&bin, 0o755);

    let redis = (opts.store == Store::Redis).then(|| Redis::start(dir.path()));
    let slapd = opts.ldap.then(|| {
        let ldap = Slapd::start(&dir.path().join("slapd"));
        // Its CA and the service password are read by the program, as Apache's user.
        chmod(&ldap.dir, 0o755);
        chmod(&ldap.ca_file, 0o644);
        chmod(&ldap.service_password_file, 0o644);
        ldap
    });
    let cache = match &redis {
        Some(r) => json!({ "url": r.url(), "prefix": "check-duo-e2e:" }),
        None => {
            let store = dir.path().join("store");
            fs::create_dir(&store).unwrap();
            // SQLite creates its journal next to the database: the directory must be writable.
            chmod(&store, 0o777);
            json!({ "path": store.join("sessions.db") })
        }
    };
    let duo = json!({
        "ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
        "failmode": "secure", "push_timeout": 10, "call_timeout": 5,
    });
    let session = json!({ "name": "formsession", "expiry": opts.expiry });
    let config = if let Some(ldap) = &slapd {
        json!({ "ldap": ldap.section(), "duo": duo, "cache": cache, "session": session })
    } else if opts.htpasswd {
        let file = dir.path().join("users.htpasswd");
        write_htpasswd(&file, USER, PASSWORD);
        chmod(&file, 0o644);
        json!({ "htpasswd": file, "duo": duo, "cache": cache, "session": session })
    } else if opts.hashed {
        // Cost 4: a debug build checks it on every request, assets included.
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        json!({ "usernames": { USER: hash }, "duo": duo, "cache": cache, "session": session })
    } else {
        json!({ "username": USER, "password": PASSWORD, "duo": duo, "cache": cache,
                "session": session })
    };
    let mut config = config;
    if let Some(limits) = &opts.limits {
        config["limits"] = limits.clone();
    }
    let config_file = dir.path().join("config.json");
    fs::write(&config_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    chmod(&config_file, 0o644);

    let docroot = dir.path().join("htdocs");
    write_site(&docroot);
    let authenticator = format!("{} -c {}", bin.display(), config_file.display());
    let passphrase = format!("e2e session passphrase {}", std::process::id());
    let apaches = (0..opts.apaches)
        .map(|i| {
            let name = format!("apache-{i}");
            Apache::start(
                &dir.path().join(&name),
                &ApacheSpec {
                    name: &name,
                    authenticator: &authenticator,
                    passphrase: &passphrase,
                    docroot: &docroot,
                    installed_conf: None,
                },
            )
        })
        .collect();
    let browser = Browser::start(dir.path());
    Some(World {
        browser,
        apaches,
        _redis: redis,
        slapd,
        sim,
        _dir: dir,
    })
}

/// `htpasswd -c -i -B FILE user` with the password on stdin: the file as Apache's tool writes it
/// (bcrypt at the lowest cost: a debug build checks it on every cold request).
fn write_htpasswd(file: &Path, user: &str, password: &str) {
    let mut cmd = std::process::Command::new(HTPASSWD);
    cmd.args(["-c", "-i", "-B", "-C", "4"]).arg(file).arg(user);
    support::process::run_with_input(cmd, password.as_bytes());
    let text = fs::read_to_string(file).unwrap();
    assert!(text.starts_with(&format!("{user}:$2y$04$")), "{text}");
}

/// The site: the shipped login page, a protected page, and a protected page with 20 assets.
fn write_site(docroot: &Path) {
    install_login_page(docroot);
    let private = docroot.join("private");
    for sub in ["img", "css", "js", "api"] {
        fs::create_dir_all(private.join(sub)).unwrap();
    }
    fs::write(
        docroot.join("index.html"),
        "<!doctype html><title>public</title><p>public page</p>",
    )
    .unwrap();
    fs::write(
        private.join("index.html"),
        format!(
            "<!doctype html><title>private</title><h1 id=\"secret\">{SECRET}</h1>\
             <a href=\"/logout\">Log out</a>"
        ),
    )
    .unwrap();
    // 8 images, 6 style sheets, 6 scripts: each leaves a trace the test can check.
    let mut page = String::from("<!doctype html><title>assets</title>\n");
    for i in 0..6 {
        let _ = writeln!(page, "<link rel=\"stylesheet\" href=\"css/{i}.css\">");
        fs::write(
            private.join(format!("css/{i}.css")),
            format!("#box{i} {{ width: {}px; height: 5px; }}\n", 20 + i),
        )
        .unwrap();
        let _ = writeln!(page, "<script src=\"js/{i}.js\"></script>");
        fs::write(
            private.join(format!("js/{i}.js")),
            format!("window.scripts = (window.scripts || []).concat([{i}]);\n"),
        )
        .unwrap();
        let _ = writeln!(page, "<div id=\"box{i}\"></div>");
    }
    support::write_images(&private, 8, &mut page);
    let _ = writeln!(page, "<h1 id=\"secret\">{SECRET}</h1>");
    // What a page's background poll fetches.
    fs::write(private.join("api/poll.json"), "{\"new_messages\": 0}\n").unwrap();
    fs::write(private.join("assets.html"), page).unwrap();
}

impl World {
    fn apache(&self, i: usize) -> &Apache {
        &self.apaches[i]
    }

    fn counters(&self) -> Counters {
        self.sim.counters()
    }

    fn pushes(&self) -> Vec<duo_sim::Push> {
        self.sim.pushes()
    }

    /// Visit a protected page without a session: Apache sends the browser to the login form.
    /// Fill it in and submit; returns at once (the push, if any, is then under way).
    fn login(&self, apache: usize, user: &str, password: &str) {
        let b = &self.browser;
        b.goto(&self.apache(apache).url("/private/"));
        self.wait_for_path("/login/");
        let name = b.wait_for_element("input[name=httpd_username]", PAGE);
        b.send_keys(&name, user);
        let pw = b.wait_for_element("input[name=httpd_password]", PAGE);
        b.send_keys(&pw, password);
        let submit = b.wait_for_element("button[type=submit]", PAGE);
        b.click_to_leave(&submit);
    }

    /// Sign alice in on the first Apache with `password`: the form, her push approved in
    /// duo-sim, the protected page, one Duo auth call. On no push, fail with the Apache logs
    /// (and slapd's, for a directory user).
    fn sign_in_with_push(&self, password: &str) {
        self.login(0, USER, password);
        let push = self.sim.wait_for_pending(PAGE).unwrap_or_else(|| {
            let slapd = self.slapd.as_ref().map(Slapd::log).unwrap_or_default();
            panic!("no push was sent\n{}\n{slapd}", self.error_logs())
        });
        assert_eq!(push.username, USER);
        assert!(self.sim.approve(&push.txid));
        self.wait_for_protected("/private/");
        assert_eq!(self.counters().auth, 1);
    }

    /// Wait until the browser has loaded `path`; on timeout, fail with the Apache logs.
    fn wait_for_path(&self, path: &str) {
        if let Err(e) = self.browser.wait_for_path(path, PAGE) {
            panic!("{e}\n{}", self.error_logs());
        }
    }

    /// Wait until the browser shows the protected page at `path`.
    fn wait_for_protected(&self, path: &str) {
        self.wait_for_path(path);
        let src = self.browser.page_source();
        assert!(
            src.contains(SECRET),
            "{path} is not the protected page:\n{src}"
        );
    }

    /// Wait until the browser is back on the login page.
    fn wait_for_login_page(&self) {
        self.wait_for_path("/login/");
        let src = self.browser.page_source();
        assert!(src.contains("httpd_password"), "not the login page:\n{src}");
        assert!(!src.contains(SECRET));
    }

    /// A plain HTTP GET (no redirects followed) with `cookie`: (status, Location).
    fn raw_get(&self, apache: usize, path: &str, cookie: &str) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(30))
            .build();
        let r = match agent
            .get(&self.apache(apache).url(path))
            .set("Cookie", &format!("formsession={cookie}"))
            .call()
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        };
        (
            r.status(),
            r.header("Location").unwrap_or_default().to_string(),
        )
    }

    fn error_logs(&self) -> String {
        self.apaches
            .iter()
            .enumerate()
            .map(|(i, a)| format!("--- apache-{i} error.log ---\n{}", a.error_log()))
            .collect()
    }
}

/// The only thing that changes between two counters: the Duo calls made in between.
fn duo_calls(c: &Counters) -> (u64, u64, u64) {
    (c.preauth, c.auth, c.auth_status)
}

#[test]
fn anonymous_visit_is_sent_to_the_login_page() {
    let Some(w) = world("anonymous_visit", Options::default()) else {
        return;
    };
    w.browser.goto(&w.apache(0).url("/private/"));
    w.wait_for_login_page();
    // The shipped form: the field names mod_auth_form reads, posting to the handler.
    let src = w.browser.page_source();
    assert!(src.contains("action=\"/login/submit\""), "{src}");
    assert!(src.contains("name=\"httpd_username\""), "{src}");
    assert!(src.contains("Duo Push"), "{src}");
    // No session: Apache did not even run the program, so Duo heard nothing.
    assert_eq!(w.counters().duo_calls(), 0, "{:?}", w.counters());
    // The same for a plain client, and for an asset.
    let (status, location) = w.raw_get(0, "/private/assets.html", "");
    assert_eq!(status, 302);
    assert!(location.ends_with("/login"), "{location}");
}

#[test]
fn wrong_password_goes_back_to_login_without_a_push() {
    let Some(w) = world("wrong_password", Options::default()) else {
        return;
    };
    for (user, password) in [
        (USER, "not the password"),
        (USER, "correct horse, battery=staple&"),
        ("mallory", PASSWORD),
    ] {
        w.login(0, user, password);
        w.wait_for_login_page();
    }
    let c = w.counters();
    assert_eq!(
        (c.preauth, c.auth),
        (0, 0),
        "a wrong password must not reach Duo: {c:?}"
    );
    assert!(w.pushes().is_empty());
    let log = w.error_logs();
    assert!(
        !log.contains(PASSWORD),
        "the password leaked into the log:\n{log}"
    );
}

#[test]
fn approved_push_opens_the_protected_page() {
    let Some(w) = world(
        "approved_push",
        Options {
            push: PushKind::Manual,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    let push = w
        .sim
        .wait_for_pending(PAGE)
        .unwrap_or_else(|| panic!("no push was sent\n{}", w.error_logs()));
    assert_eq!(push.username, USER);
    // The request for /private is held until the push is answered. (Asking the browser for the
    // page source now would block until then: chromedriver waits for the pending navigation.)
    assert_eq!(push.state, PushState::Pending);

    // Answer it as the user would: on the simulator's phone page, in another tab.
    let main = w.browser.open_tab();
    w.browser.goto(&format!("http://{}/", w.sim.control_addr()));
    let approve = w.browser.wait_for_element(
        &format!("li.push[data-txid=\"{}\"] button.approve", push.txid),
        PAGE,
    );
    w.browser.click(&approve);
    // The page posts the answer with fetch(): keep the tab open until the simulator has it.
    let answered = support::process::wait_until(PAGE, || {
        w.pushes()
            .iter()
            .any(|p| p.txid == push.txid && p.state == PushState::Allow)
    });
    assert!(answered, "the phone page did not approve: {:?}", w.pushes());
    w.browser.close_tab(&main);

    w.wait_for_protected("/private/");
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 1, "exactly one push: {pushes:?}");
    assert_eq!(pushes[0].state, PushState::Allow);
    assert_eq!(w.counters().auth, 1);
    assert_eq!(w.counters().pushes_by_user.get(USER), Some(&1));
}

#[test]
fn page_with_twenty_assets_loads_completely_after_one_push() {
    let Some(w) = world("twenty_assets", Options::default()) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 1);

    // Every asset is protected too: Apache runs the program for each of the 20 requests.
    w.browser.goto(&w.apache(0).url("/private/assets.html"));
    w.wait_for_protected("/private/assets.html");
    let loaded = w.browser.execute(
        "const imgs = [...document.querySelectorAll('img.asset')];
         const boxes = [...Array(6).keys()].map(i =>
             document.getElementById('box' + i).getBoundingClientRect().width);
         return {
             images: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
             widths: imgs.map(i => i.naturalWidth),
             boxes: boxes,
             scripts: (window.scripts || []).length,
         };",
        &[],
    );
    assert_eq!(loaded["images"], 8, "images: {loaded}");
    assert_eq!(
        loaded["widths"],
        json!([10, 11, 12, 13, 14, 15, 16, 17]),
        "{loaded}"
    );
    assert_eq!(
        loaded["boxes"],
        json!([20, 21, 22, 23, 24, 25]),
        "css: {loaded}"
    );
    assert_eq!(loaded["scripts"], 6, "scripts: {loaded}");
    // All served from the cached approval.
    assert_eq!(w.counters().auth, 1, "{:?}", w.counters());
    assert_eq!(w.pushes().len(), 1);
}

#[test]
fn the_next_visit_needs_no_duo_call() {
    let Some(w) = world(
        "next_visit",
        Options {
            hashed: false,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_protected("/private/");
    let before = w.counters();
    assert_eq!(before.auth, 1);
    let cookie = w.browser.cookie("formsession").expect("session cookie");

    for _ in 0..3 {
        w.browser.goto(&w.apache(0).url("/private/"));
        w.wait_for_protected("/private/");
    }
    // Apache (>= 2.4.41, no SessionMaxAge) keeps the cookie: the cache key stays the same.
    assert_eq!(w.browser.cookie("formsession").as_deref(), Some(&*cookie));
    assert_eq!(duo_calls(&w.counters()), duo_calls(&before));
    let (status, _) = w.raw_get(0, "/private/", &cookie);
    assert_eq!(status, 200);
    assert_eq!(duo_calls(&w.counters()), duo_calls(&before));
}

#[test]
fn denied_push_gives_no_access() {
    let Some(w) = world(
        "denied_push",
        Options {
            push: PushKind::Deny,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_login_page();
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].state, PushState::Deny);

    // The cookie holds the right password, but a denied push caches nothing: presented again,
    // it is denied again (by a new denied push, or by check-duo's cool-down after a denial).
    let cookie = w.browser.cookie("formsession").expect("session cookie");
    let (status, location) = w.raw_get(0, "/private/", &cookie);
    assert_eq!(status, 302);
    assert!(location.ends_with("/login"), "{location}");
    assert!(
        w.pushes().iter().all(|p| p.state != PushState::Allow),
        "{:?}",
        w.pushes()
    );
    let log = w.error_logs();
    let denials = log
        .lines()
        .filter(|l| l.contains("uri=\"/private/\"") && l.contains("outcome=deny"))
        .count();
    assert!(
        denials >= 1,
        "check-duo logged no denial for /private/:\n{log}"
    );
}

#[test]
fn expired_session_needs_a_new_push() {
    let Some(w) = world(
        "expired_session",
        Options {
            // Long enough for the second visit below to be a cache hit on a slow machine.
            expiry: 3,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 1);
    w.browser.goto(&w.apache(0).url("/private/"));
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 1, "still cached: {:?}", w.counters());

    // A real TTL (the program's clock is the system clock): wait it out.
    std::thread::sleep(Duration::from_millis(3_500));
    w.browser.goto(&w.apache(0).url("/private/"));
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 2, "a new push: {:?}", w.counters());
    assert_eq!(w.pushes().len(), 2);
}

#[test]
fn logout_ends_at_the_login_page_and_the_old_cookie_stops_working() {
    let Some(w) = world("logout", Options::default()) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_protected("/private/");
    let cookie = w.browser.cookie("formsession").expect("session cookie");
    // Replayed before the logout, the cookie is as good as the browser's: no push.
    assert_eq!(w.raw_get(0, "/private/", &cookie).0, 200);
    assert_eq!(w.counters().auth, 1);

    w.browser.goto(&w.apache(0).url("/logout"));
    w.wait_for_login_page();
    assert_eq!(w.browser.cookie("formsession").unwrap_or_default(), "");
    // Back to /private: a fresh login is needed.
    w.browser.goto(&w.apache(0).url("/private/"));
    w.wait_for_login_page();

    // The old cookie still decrypts (mod_session keeps no server state), but its approval is
    // gone: check-duo asks Duo again, and the push is denied here.
    w.sim
        .set_behaviours(Behaviours::default().with_user(USER, UserBehaviour::push(PushKind::Deny)));
    let (status, location) = w.raw_get(0, "/private/", &cookie);
    assert_eq!(
        (status, location.ends_with("/login")),
        (302, true),
        "{location}\n{}",
        w.error_logs()
    );
    assert_eq!(
        w.counters().auth,
        2,
        "the old cookie needed a new push: {:?}",
        w.counters()
    );
    // Apache ran the program for /logout with CONTEXT=logout (see deploy/apache/check-duo.conf).
    let log = w.error_logs();
    assert!(
        log.lines()
            .any(|l| l.contains("uri=\"/logout\"") && l.contains("context=logout")),
        "no check-duo line for /logout with context=logout:\n{log}"
    );
}

#[test]
fn two_apaches_share_one_redis_session() {
    let Some(w) = world(
        "two_apaches",
        Options {
            push: PushKind::Manual,
            store: Store::Redis,
            apaches: 2,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.sign_in_with_push(PASSWORD);

    // Cookies ignore ports: the browser sends the same cookie to the second instance, which
    // decrypts it with the shared passphrase and finds the approval in the shared Redis.
    w.browser.goto(&w.apache(1).url("/private/"));
    w.wait_for_protected("/private/");
    w.browser.goto(&w.apache(1).url("/private/assets.html"));
    w.wait_for_protected("/private/assets.html");
    assert_eq!(w.counters().auth, 1, "no second push: {:?}", w.counters());
    assert_eq!(w.pushes().len(), 1);
}

#[test]
fn shipped_config_passes_apache_syntax_check() {
    if !support::tools_present("config_syntax", &[("apache2", APACHE2)]) {
        return;
    }
    // The config as shipped (with `secure`), only the paths moved: `apache2 -t` accepts it.
    let dir = tempfile::tempdir().unwrap();
    let passphrase = dir.path().join("passphrase");
    fs::write(&passphrase, "x").unwrap();
    let rendered =
        support::apache::render_check_duo_conf("/bin/false -c /dev/null", &passphrase, None);
    assert!(!rendered.contains(";secure;"));
    let original =
        fs::read_to_string(format!("{}/check-duo.conf", support::apache::DEPLOY_DIR)).unwrap();
    assert!(original.contains("path=/;httponly;secure;SameSite=Lax"));
    let conf = dir.path().join("check-duo.conf");
    fs::write(
        &conf,
        original.replace(
            "/etc/check-duo/session-passphrase",
            &passphrase.display().to_string(),
        ),
    )
    .unwrap();
    let mut main = String::new();
    let _ = writeln!(main, "ServerRoot {}", dir.path().display());
    let _ = writeln!(main, "Listen 127.0.0.1:1");
    let _ = writeln!(main, "ErrorLog {}/error.log", dir.path().display());
    for m in support::apache::MODULES {
        let _ = writeln!(
            main,
            "LoadModule {m}_module {}/mod_{m}.so",
            support::apache::MODULES_DIR
        );
    }
    let _ = writeln!(main, "Include {}", conf.display());
    let _ = writeln!(
        main,
        "Include {}/protected-location.conf",
        support::apache::DEPLOY_DIR
    );
    let main_conf = dir.path().join("httpd.conf");
    fs::write(&main_conf, main).unwrap();
    let out = std::process::Command::new(APACHE2)
        .arg("-t")
        .arg("-f")
        .arg(&main_conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apache2 -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The login page's passcode field: the code rides on the password to check-duo, which asks Duo
/// with `factor=passcode`, so no push is sent at all.
#[test]
fn passcode_typed_on_the_login_page_needs_no_push() {
    let Some(w) = world("passcode", Options::default()) else {
        return;
    };
    w.sim.set_behaviours(Behaviours::default().with_user(
        USER,
        UserBehaviour {
            passcodes: vec!["314159".into()],
            ..UserBehaviour::push(PushKind::Deny)
        },
    ));
    let b = &w.browser;
    b.goto(&w.apache(0).url("/private/"));
    w.wait_for_path("/login/");
    b.send_keys(
        &b.wait_for_element("input[name=httpd_username]", PAGE),
        USER,
    );
    b.send_keys(
        &b.wait_for_element("input[name=httpd_password]", PAGE),
        PASSWORD,
    );
    b.click(&b.wait_for_element("#other-factor summary", PAGE));
    b.send_keys(&b.wait_for_element("#passcode", PAGE), "314159");
    b.click_to_leave(&b.wait_for_element("button[type=submit]", PAGE));
    w.wait_for_protected("/private/");
    let c = w.counters();
    assert_eq!(c.auth, 1, "{c:?}");
    assert!(c.pushes_by_user.is_empty(), "no push for a passcode: {c:?}");
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].factor, "passcode");
    assert_eq!(pushes[0].state, PushState::Allow);
    // The next page comes from the cache.
    b.goto(&w.apache(0).url("/private/assets.html"));
    w.wait_for_protected("/private/assets.html");
    assert_eq!(w.counters().auth, 1);
}

/// A page that polls in the background while its user is away: after the session expires, the
/// polls are denied without a push (`limits.no_push_paths`); only a page navigation asks again.
#[test]
fn background_polls_after_expiry_never_push() {
    let Some(w) = world(
        "background_polls",
        Options {
            expiry: 3,
            limits: Some(json!({"no_push_paths": ["/private/api/*"]})),
            ..Options::default()
        },
    ) else {
        return;
    };
    w.login(0, USER, PASSWORD);
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 1);
    let poll = |b: &support::webdriver::Browser| {
        b.execute(
            "return fetch('/private/api/poll.json', {credentials: 'same-origin'})\
               .then(r => [r.status, new URL(r.url).pathname]);",
            &[],
        )
    };
    assert_eq!(poll(&w.browser), json!([200, "/private/api/poll.json"]));
    std::thread::sleep(Duration::from_millis(3500));
    // Expired: ten polls, each sent back to the login page, and Duo hears nothing.
    for _ in 0..10 {
        assert_eq!(poll(&w.browser), json!([200, "/login/"]));
    }
    assert_eq!(
        w.counters().auth,
        1,
        "a poll sent a push: {:?}",
        w.counters()
    );
    // A page navigation is what asks again.
    w.browser.goto(&w.apache(0).url("/private/"));
    w.wait_for_protected("/private/");
    assert_eq!(w.counters().auth, 2, "{:?}", w.counters());
}

/// A user of an htpasswd file written by Apache's `htpasswd -B` (the config has `htpasswd` and
/// no `usernames`): the form, the push approved in duo-sim, the protected page; then, signed
/// out, a wrong password goes back to the login page without a push.
#[test]
fn htpasswd_user_signs_in_through_the_form() {
    let Some(w) = world(
        "htpasswd_user",
        Options {
            push: PushKind::Manual,
            htpasswd: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    w.sign_in_with_push(PASSWORD);
    // The next page is the cache's.
    w.browser.goto(&w.apache(0).url("/private/assets.html"));
    w.wait_for_protected("/private/assets.html");
    assert_eq!(w.counters().auth, 1, "{:?}", w.counters());

    w.browser.goto(&w.apache(0).url("/logout"));
    w.wait_for_login_page();
    w.login(0, USER, "not the password");
    w.wait_for_login_page();
    let c = w.counters();
    assert_eq!(
        (c.preauth, c.auth),
        (1, 1),
        "a wrong password reached Duo: {c:?}"
    );
    assert_eq!(w.pushes().len(), 1);
    let log = w.error_logs();
    assert!(
        log.lines()
            .any(|l| l.contains("user=\"alice\"") && l.contains("wrong password")),
        "no denial for the wrong password:\n{log}"
    );
}

/// A user of a real slapd (the config has `ldap`, StartTLS with the server's CA, and no
/// `usernames`): the form with the directory's password, the push approved in duo-sim, the
/// protected page, its assets from the cache without asking the directory again; then, signed
/// out, a wrong password and a disabled account (in the tree, excluded by the user filter) go
/// back to the login page without a push.
#[test]
fn ldap_user_signs_in_through_the_form() {
    let Some(w) = world(
        "ldap_user",
        Options {
            push: PushKind::Manual,
            ldap: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let ldap = w.slapd.as_ref().unwrap();
    // slapd logs each bind as it receives it, so before it answers the program.
    let binds = |user: &str| {
        ldap.log()
            .matches(&format!(
                "BIND dn=\"uid={user},ou=people,{}\" method=128",
                slapd::SUFFIX
            ))
            .count()
    };
    w.sign_in_with_push("pw-alice");
    let signed_in = binds(USER);
    assert!(signed_in >= 1, "alice never bound:\n{}", ldap.log());
    // The next page and its 20 assets are the cache's: no push, no bind.
    w.browser.goto(&w.apache(0).url("/private/assets.html"));
    w.wait_for_protected("/private/assets.html");
    assert_eq!(w.counters().auth, 1, "{:?}", w.counters());
    assert_eq!(binds(USER), signed_in, "{}", ldap.log());

    w.browser.goto(&w.apache(0).url("/logout"));
    w.wait_for_login_page();
    w.login(0, USER, "pw-bob");
    w.wait_for_login_page();
    // dora's own password: the filter excludes her before any bind as her.
    w.login(0, "dora", "pw-dora");
    w.wait_for_login_page();
    let c = w.counters();
    assert_eq!(
        (c.preauth, c.auth),
        (1, 1),
        "a refused sign-in reached Duo: {c:?}"
    );
    assert_eq!(w.pushes().len(), 1);
    assert!(binds(USER) > signed_in, "{}", ldap.log());
    assert_eq!(binds("dora"), 0, "{}", ldap.log());
    let log = w.error_logs();
    for (user, event) in [("alice", "password_failure"), ("dora", "unknown_user")] {
        assert!(
            log.lines().any(|l| l.contains(&format!("user=\"{user}\""))
                && l.contains(&format!("event={event}"))),
            "no {event} for {user}:\n{log}"
        );
    }
}
