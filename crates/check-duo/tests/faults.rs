//! Faults under load, through the pipe mode: a real Apache (the shipped `deploy/apache/` config:
//! mod_auth_form + mod_session_crypto + mod_authnz_external) runs the real `check-duo` binary for
//! every protected request, against `duo-sim` and a real store, while
//!
//! - `wrk` hammers the protected page with an approved session's cookie,
//! - a client loop sends cookies that have no approved session (a denied login's, and garbage),
//! - a few clients sign in cold, as browsers do (the form, then the redirects; duo-sim approves),
//! - a probe asks for the protected page with the approved cookie every 100 ms,
//!
//! and a fault is injected in the middle: Redis killed and started again
//! ([`redis_restart_under_load`]), or the embedded store's file system filled up
//! ([`full_disk_under_the_embedded_store`]). Each test asserts that nothing panics, that no
//! cookie without an approved session is ever granted, that the gate recovers without a restart
//! of Apache, and that Apache's memory does not grow, and prints the figures (run with
//! `--nocapture`). See docs/testing.md, "Faults under load".
//!
//! The tests hold a lock so that they never load the machine at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use duo_sim::{Behaviours, PushKind, PushState, SimConfig, SimHandle, UserBehaviour};
use serde_json::json;

use support::apache::{install_login_page, Apache, ApacheSpec, APACHE2, AUTHNZ_EXTERNAL_SO};
use support::faults::{
    apache_pid, apache_rss, fill_until_enospc, one_byte_fits, peak_rss, run_wrk, unix_now,
    DurableRedis, Http, RssSample, SignIn, Tmpfs, WrkRun, GNU_TIME, WRK,
};
use support::process::{chmod, running_as_root, wait_until};
use support::redis::REDIS_SERVER;
use support::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

const IKEY: &str = "DIFAULTSUNDERLOADXXX";
const SKEY: &str = "faultsSecretKeyForTheSimulatorOnly000000";
/// The approved session's user (wrk's cookie).
const USER: &str = "alice";
/// A user whose pushes are denied: her cookie decrypts and holds the right password, but has
/// no approved session.
const DENIED_USER: &str = "mallory";
/// Everybody's password (bcrypt, cost 4); `,`, `=` and `&` must survive the form.
const PASSWORD: &str = "load test, pass=word&1";
/// Marks the protected page.
const SECRET: &str = "check-duo-faults-protected-content";
/// Long enough for a debug build and a cold Chromium on a loaded 2-core machine.
const PAGE: Duration = Duration::from_secs(20);
/// Users for the cold sign-ins, each used once (so no push limit or cool-down gets in the way).
const SIGNIN_USERS: usize = 240;
/// How long recovery may take once the fault is gone (the approved session, a new sign-in).
const RECOVERY: Duration = Duration::from_secs(10);

/// One fault test at a time: they load the machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------------
// The world

enum Store {
    /// A redis-server with an fsynced append-only file, restartable on its port.
    Redis,
    /// The embedded store on a tmpfs of this size.
    EmbeddedOnTmpfs(&'static str),
}

/// Field order is drop order: Apache goes first, the tmpfs and the directory last.
struct World {
    apache: Apache,
    sim: SimHandle,
    redis: Option<DurableRedis>,
    tmpfs: Option<Tmpfs>,
    bin: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
}

fn signin_user(i: usize) -> String {
    format!("signin-{i:03}")
}

fn world(store: Store) -> World {
    let dir = tempfile::Builder::new()
        .prefix("check-duo-faults-")
        .tempdir()
        .unwrap();
    chmod(dir.path(), 0o755);

    let mut cfg = SimConfig::new(IKEY, SKEY);
    cfg.long_poll = Duration::from_secs(2);
    cfg.log = std::env::var_os("DUO_SIM_LOG").is_some();
    // Every user approves at once, except the denied one.
    cfg.behaviours = Behaviours {
        default: UserBehaviour::push(PushKind::Approve),
        ..Behaviours::default()
    }
    .with_user(DENIED_USER, UserBehaviour::push(PushKind::Deny));
    let sim = duo_sim::start(cfg).unwrap();
    let ca = dir.path().join("duo-ca.pem");
    fs::write(&ca, sim.ca_pem()).unwrap();
    chmod(&ca, 0o644);

    let bin = dir.path().join("check-duo");
    fs::copy(env!("CARGO_BIN_EXE_check-duo"), &bin).unwrap();
    chmod(&bin, 0o755);

    let (redis, tmpfs, cache) = match store {
        Store::Redis => {
            let r = DurableRedis::start(dir.path());
            let cache = json!({ "url": r.url(), "prefix": "check-duo-faults:", "timeout": 1 });
            (Some(r), None, cache)
        }
        Store::EmbeddedOnTmpfs(size) => {
            let t = Tmpfs::mount(&dir.path().join("store"), size).unwrap_or_else(|e| panic!("{e}"));
            let cache = json!({ "path": t.dir.join("sessions.db") });
            (None, Some(t), cache)
        }
    };

    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let mut users = serde_json::Map::new();
    for u in [USER.to_string(), DENIED_USER.to_string()]
        .into_iter()
        .chain((0..SIGNIN_USERS).map(signin_user))
    {
        users.insert(u, json!(hash));
    }
    let config = json!({
        "usernames": users,
        "duo": { "ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                 "failmode": "secure", "push_timeout": 10, "call_timeout": 5 },
        "cache": cache,
        "session": { "name": "formsession", "expiry": 3600 },
    });
    let config_file = dir.path().join("config.json");
    fs::write(&config_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    chmod(&config_file, 0o644);

    let docroot = dir.path().join("htdocs");
    install_login_page(&docroot);
    fs::create_dir_all(docroot.join("private")).unwrap();
    fs::write(
        docroot.join("private/index.html"),
        format!("<!doctype html><title>private</title><h1 id=\"secret\">{SECRET}</h1>"),
    )
    .unwrap();
    let authenticator = format!("{} -c {}", bin.display(), config_file.display());
    let passphrase = format!("faults session passphrase {}", std::process::id());
    let apache = Apache::start(
        &dir.path().join("apache"),
        &ApacheSpec {
            name: "apache-faults",
            authenticator: &authenticator,
            passphrase: &passphrase,
            docroot: &docroot,
            installed_conf: None,
        },
    );
    World {
        apache,
        sim,
        redis,
        tmpfs,
        bin,
        config: config_file,
        dir,
    }
}

impl World {
    fn http(&self) -> Http {
        Http::new(&self.apache.url(""), "formsession")
    }

    fn pid(&self) -> u32 {
        apache_pid(&self.apache.dir)
    }

    /// Sign in through headless Chromium, as apache_e2e.rs does; returns the session cookie.
    fn browser_sign_in(&self, user: &str) -> String {
        let b = Browser::start(self.dir.path());
        b.goto(&self.apache.url("/private/"));
        self.browser_wait(&b, "/login/");
        b.send_keys(
            &b.wait_for_element("input[name=httpd_username]", PAGE),
            user,
        );
        b.send_keys(
            &b.wait_for_element("input[name=httpd_password]", PAGE),
            PASSWORD,
        );
        b.click_to_leave(&b.wait_for_element("button[type=submit]", PAGE));
        self.browser_wait(&b, "/private/");
        let src = b.page_source();
        assert!(src.contains(SECRET), "not the protected page:\n{src}");
        b.cookie("formsession").expect("the session cookie")
        // The browser (chromedriver and Chromium) stops here, before any load.
    }

    fn browser_wait(&self, b: &Browser, path: &str) {
        if let Err(e) = b.wait_for_path(path, PAGE) {
            panic!("{e}\n--- error.log ---\n{}", self.apache.error_log());
        }
    }

    /// A denied login's cookie: the password step passes (so mod_session holds user and
    /// password), the push is denied. Checked to be refused.
    fn denied_cookie(&self) -> String {
        let http = self.http();
        let r = http
            .post_form(
                "/login/submit",
                &[
                    ("httpd_username", DENIED_USER),
                    ("httpd_password", PASSWORD),
                ],
            )
            .unwrap();
        let cookie = r
            .set_cookie
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| panic!("no cookie for {DENIED_USER}: {} {}", r.status, r.location));
        let r = http.get("/private/", &cookie).unwrap();
        assert_eq!(
            (r.status, r.location.ends_with("/login")),
            (302, true),
            "{DENIED_USER}'s push was not denied: {r:?}\n{}",
            self.apache.error_log()
        );
        cookie
    }

    /// check-duo's peak RSS for one cached-session request, run as Apache runs it (as
    /// `nobody` when the tests run as root and `as_apache_user`). None without GNU time.
    fn check_duo_peak_rss(&self, cookie: &str, as_apache_user: bool) -> Option<u64> {
        if !Path::new(GNU_TIME).exists() {
            eprintln!("({GNU_TIME} is missing: no peak RSS for check-duo)");
            return None;
        }
        let bin = self.bin.display().to_string();
        let config = self.config.display().to_string();
        let mut cmd: Vec<&str> = Vec::new();
        if as_apache_user && running_as_root() {
            cmd.extend([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
            ]);
        }
        cmd.extend([bin.as_str(), "-c", config.as_str()]);
        let env = [
            ("AUTHTYPE", "PASS".to_string()),
            ("IP", "127.0.0.1".to_string()),
            ("URI", "/private/".to_string()),
            ("HTTP_HOST", format!("127.0.0.1:{}", self.apache.port)),
            ("COOKIE", format!("formsession={cookie}")),
        ];
        let (granted, log, kib) = peak_rss(&cmd, &env, format!("{USER}\n{PASSWORD}\n").as_bytes());
        assert!(
            granted && log.contains("event=cache_hit"),
            "the measured request was not a cache hit: {log}"
        );
        Some(kib)
    }
}

// ------------------------------------------------------------------------------------------------
// The load

/// What happened to one cold sign-in.
#[derive(Debug, Clone)]
struct SignInRec {
    user: String,
    start: Instant,
    end: Instant,
    outcome: SignIn,
}

/// One answer of a client loop.
#[derive(Debug, Clone, Copy)]
struct Hit {
    at: Instant,
    kind: &'static str,
    /// 0: no answer (connection error).
    status: u16,
    set_cookie: bool,
}

/// What the load threads record, and what the fault sees while it runs.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    next_user: AtomicUsize,
    probe: Mutex<Vec<Hit>>,
    no_session: Mutex<Vec<Hit>>,
    signins: Mutex<Vec<SignInRec>>,
    rss: Mutex<Vec<RssSample>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The first time the probe saw a grant for a request made after `after`.
    fn probe_ok_after(&self, after: Instant) -> Option<Instant> {
        self.probe
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.at > after && h.status == 200)
            .map(|h| h.at)
    }

    /// Wait up to `timeout` for the probe's first grant after `after`.
    fn wait_probe_ok_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let mut at = None;
        wait_until(timeout, || {
            at = self.probe_ok_after(after);
            at.is_some()
        });
        at
    }

    /// Wait up to `timeout` for a cold sign-in started after `after` to be granted.
    fn wait_signin_ok_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let mut at = None;
        wait_until(timeout, || {
            at = self
                .signins
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.start > after && s.outcome.granted())
                .map(|s| s.end);
            at.is_some()
        });
        at
    }
}

/// Sets `stop` when dropped, so that the load threads end even when the fault panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct LoadSpec {
    wrk_duration: Duration,
    wrk_threads: u32,
    wrk_connections: u32,
    signin_threads: usize,
}

struct LoadResult {
    t0: Instant,
    t0_unix: f64,
    wrk: WrkRun,
    shared: Shared,
}

impl LoadResult {
    fn unix(&self, at: Instant) -> f64 {
        self.t0_unix + at.saturating_duration_since(self.t0).as_secs_f64()
    }
}

/// Bounded loops: none of them runs more often than this, whatever happens.
const MAX_ITERATIONS: usize = 20_000;

/// Run the load, call `fault` meanwhile (on this thread), and return what was seen once wrk has
/// ended and `fault` has returned.
fn run_load(
    w: &World,
    valid: &str,
    denied: &str,
    spec: &LoadSpec,
    fault: impl FnOnce(&Shared),
) -> LoadResult {
    let shared = Shared::default();
    let t0 = Instant::now();
    let t0_unix = unix_now();
    let parent = w.pid();
    let url = w.apache.url("/private/");
    let wrk = std::thread::scope(|s| {
        let stop_guard = StopOnDrop(&shared.stop);
        let sh = &shared;
        let wrk = s.spawn(|| {
            run_wrk(
                w.dir.path(),
                &url,
                &format!("formsession={valid}"),
                spec.wrk_duration,
                spec.wrk_threads,
                spec.wrk_connections,
            )
        });
        // The probe: the approved cookie every 100 ms.
        s.spawn(|| {
            let http = w.http();
            for _ in 0..MAX_ITERATIONS {
                if sh.stopped() {
                    break;
                }
                let r = http.get("/private/", valid);
                sh.probe.lock().unwrap().push(hit("probe", &r));
                sleep(Duration::from_millis(100));
            }
        });
        // Cookies without an approved session: a denied login's (check-duo runs for it) and
        // garbage (mod_session cannot decrypt it, so Apache alone sends it to /login).
        s.spawn(|| {
            let http = w.http();
            for _ in 0..MAX_ITERATIONS {
                if sh.stopped() {
                    break;
                }
                let r = http.get("/private/", denied);
                sh.no_session.lock().unwrap().push(hit("denied-login", &r));
            }
        });
        s.spawn(|| {
            let http = w.http();
            let garbage = "Z2FyYmFnZSBub3QgYSBzZXNzaW9u0123456789abcdefABCDEF";
            for _ in 0..MAX_ITERATIONS {
                if sh.stopped() {
                    break;
                }
                let r = http.get("/private/", garbage);
                sh.no_session.lock().unwrap().push(hit("garbage", &r));
                sleep(Duration::from_millis(20));
            }
        });
        // Cold sign-ins, a new user each.
        for _ in 0..spec.signin_threads {
            s.spawn(|| {
                let http = w.http();
                while !sh.stopped() {
                    let i = sh.next_user.fetch_add(1, Ordering::SeqCst);
                    if i >= SIGNIN_USERS {
                        break;
                    }
                    let user = signin_user(i);
                    let start = Instant::now();
                    let outcome = http.sign_in(&user, PASSWORD, SECRET);
                    let end = Instant::now();
                    sh.signins.lock().unwrap().push(SignInRec {
                        user,
                        start,
                        end,
                        outcome,
                    });
                    sleep(Duration::from_millis(400));
                }
            });
        }
        s.spawn(|| {
            for _ in 0..MAX_ITERATIONS {
                if sh.stopped() {
                    break;
                }
                sh.rss.lock().unwrap().push(apache_rss(parent));
                sleep(Duration::from_millis(250));
            }
        });

        fault(sh);
        let wrk = wrk.join().expect("the wrk thread");
        drop(stop_guard);
        wrk
    });
    LoadResult {
        t0,
        t0_unix,
        wrk,
        shared,
    }
}

fn hit(kind: &'static str, r: &Result<support::faults::Resp, String>) -> Hit {
    let (status, set_cookie) = match r {
        Ok(r) => (r.status, r.set_cookie.is_some()),
        Err(_) => (0, false),
    };
    Hit {
        at: Instant::now(),
        kind,
        status,
        set_cookie,
    }
}

// ------------------------------------------------------------------------------------------------
// What the log says

/// One check-duo line of the ErrorLog.
#[derive(Debug)]
struct Line {
    user: String,
    context: String,
    outcome: String,
    event: String,
    reason: String,
}

/// `key="…"` (Debug-quoted) or `key=word` in a check-duo line.
fn field(line: &str, key: &str) -> String {
    let Some(i) = line.find(&format!(" {key}=")) else {
        return String::new();
    };
    let rest = &line[i + key.len() + 2..];
    if let Some(q) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut esc = false;
        for c in q.chars() {
            match (esc, c) {
                (true, c) => {
                    out.push(c);
                    esc = false;
                }
                (false, '\\') => esc = true,
                (false, '"') => break,
                (false, c) => out.push(c),
            }
        }
        out
    } else {
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

fn check_duo_lines(log: &str) -> Vec<Line> {
    log.lines()
        .filter_map(|l| {
            l.find("check-duo: user=")
                .map(|i| &l[i + "check-duo:".len()..])
        })
        .map(|l| Line {
            user: field(l, "user"),
            context: field(l, "context"),
            outcome: field(l, "outcome"),
            event: field(l, "event"),
            reason: field(l, "reason"),
        })
        .collect()
}

/// The checks every fault test makes on the ErrorLog and the simulator: no panic, no crash, no
/// fail-open, and no grant of a protected request to a user without an approved push.
fn assert_log_and_grants(w: &World) -> (Vec<Line>, String) {
    let log = w.apache.error_log();
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "exit signal",
        "Segmentation fault",
    ] {
        assert!(
            !log.contains(bad),
            "`{bad}` in Apache's error log:\n{}",
            log.lines()
                .filter(|l| l.contains(bad))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let lines = check_duo_lines(&log);
    assert!(!lines.is_empty(), "no check-duo line in the log:\n{log}");
    let approved: BTreeSet<String> = w
        .sim
        .pushes()
        .into_iter()
        .filter(|p| p.state == PushState::Allow)
        .map(|p| p.username)
        .collect();
    assert!(
        !approved.contains(DENIED_USER),
        "duo-sim approved a push for {DENIED_USER}"
    );
    for l in &lines {
        assert_ne!(l.outcome, "GRANT-FAIL-OPEN", "{l:?}");
        if l.outcome == "grant" && l.context == "request" {
            assert!(
                approved.contains(&l.user),
                "a protected request of {} was granted, but Duo never approved {}: {l:?}",
                l.user,
                l.user
            );
        }
    }
    (lines, log)
}

/// Apache's own lines of the ErrorLog (not check-duo's), counted by module tag and message
/// code, e.g. `[session_crypto:error] AH01842`.
fn apache_lines(log: &str) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for l in log.lines().filter(|l| !l.contains("check-duo: user=")) {
        let tag = l
            .split("] [")
            .nth(1)
            .map(|t| t.trim_end_matches(']').to_string())
            .unwrap_or_else(|| "untagged".into());
        let code = l
            .split_whitespace()
            .find(|w| w.starts_with("AH") && w.ends_with(':'))
            .unwrap_or("")
            .trim_end_matches(':')
            .to_string();
        *m.entry(format!("[{tag}] {code}").trim().to_string())
            .or_default() += 1;
    }
    m.iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// check-duo's store errors, counted by context and reason.
fn store_error_reasons(lines: &[Line], out: &mut String) {
    let mut events: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.event == "store_error") {
        *events
            .entry((l.context.clone(), l.reason.clone()))
            .or_default() += 1;
    }
    for ((context, reason), n) in &events {
        let _ = writeln!(out, "    {n} x context={context} store_error: {reason}");
    }
}

/// The check-duo lines of these users (what a sign-in that ended oddly went through).
fn lines_of(lines: &[Line], users: &[String], out: &mut String) {
    for l in lines.iter().filter(|l| users.contains(&l.user)) {
        let _ = writeln!(
            out,
            "    {} context={} outcome={} event={} reason={:?}",
            l.user, l.context, l.outcome, l.event, l.reason
        );
    }
}

/// Statuses of the client loops' answers in [a, b), per kind.
fn statuses(hits: &[Hit], a: Instant, b: Instant) -> BTreeMap<&'static str, BTreeMap<u16, u64>> {
    let mut m: BTreeMap<&'static str, BTreeMap<u16, u64>> = BTreeMap::new();
    for h in hits.iter().filter(|h| h.at >= a && h.at < b) {
        *m.entry(h.kind).or_default().entry(h.status).or_default() += 1;
    }
    m
}

fn fmt_statuses(m: &BTreeMap<u16, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(s, n)| {
            format!(
                "{}x{n}",
                if *s == 0 {
                    "err".to_string()
                } else {
                    s.to_string()
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The memory figures, and the bound: after warm-up, the largest Apache child's RSS at the end
/// is within 2x of its first sample (and so is the total).
fn memory_report(r: &LoadResult, out: &mut String) {
    let rss = r.shared.rss.lock().unwrap();
    let warm = r.t0 + Duration::from_secs(2);
    let after: Vec<&RssSample> = rss.iter().filter(|s| s.at >= warm).collect();
    assert!(after.len() >= 10, "too few RSS samples: {}", after.len());
    let first = after[0];
    let last = after[after.len() - 1];
    let peak = after.iter().map(|s| s.total_kib()).max().unwrap_or(0);
    let max_children = after
        .iter()
        .map(|s| s.children_kib.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  apache RSS (KiB, {} samples after 2 s of warm-up): parent {} -> {}; largest child {} -> {}; \
         total {} -> {} (peak {}); children {} -> {} (max {})",
        after.len(),
        first.parent_kib,
        last.parent_kib,
        first.largest_child_kib(),
        last.largest_child_kib(),
        first.total_kib(),
        last.total_kib(),
        peak,
        first.children_kib.len(),
        last.children_kib.len(),
        max_children,
    );
    assert!(
        last.largest_child_kib() <= 2 * first.largest_child_kib(),
        "an Apache child grew from {} to {} KiB",
        first.largest_child_kib(),
        last.largest_child_kib()
    );
    assert!(
        last.total_kib() <= 2 * first.total_kib(),
        "Apache grew from {} to {} KiB",
        first.total_kib(),
        last.total_kib()
    );
}

/// Sign-ins that ended at the login page although Duo approved their push: the approval could
/// not be stored (fail closed; the user is asked again).
fn approved_but_denied(recs: &[SignInRec], sim: &SimHandle) -> Vec<String> {
    let approved: BTreeSet<String> = sim
        .pushes()
        .into_iter()
        .filter(|p| p.state == PushState::Allow)
        .map(|p| p.username)
        .collect();
    recs.iter()
        .filter(|s| !s.outcome.granted() && approved.contains(&s.user))
        .map(|s| s.user.clone())
        .collect()
}

fn signin_summary(recs: &[SignInRec], a: Instant, b: Instant) -> String {
    let inside: Vec<&SignInRec> = recs
        .iter()
        .filter(|s| s.start >= a && s.start < b)
        .collect();
    let ok = inside.iter().filter(|s| s.outcome.granted()).count();
    let mut denied: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = 0;
    for s in &inside {
        match &s.outcome {
            SignIn::Denied { step, .. } => {
                *denied.entry(format!("at the {step}")).or_default() += 1
            }
            SignIn::Error(_) => errors += 1,
            SignIn::Granted { .. } => {}
        }
    }
    let mean = if inside.is_empty() {
        0.0
    } else {
        inside
            .iter()
            .map(|s| (s.end - s.start).as_secs_f64())
            .sum::<f64>()
            / inside.len() as f64
    };
    format!(
        "{} started: {ok} granted, denied {denied:?}, {errors} errors (mean {:.0} ms)",
        inside.len(),
        mean * 1e3
    )
}

fn tools(test: &str, extra: &[(&str, &str)]) -> bool {
    let mut t = vec![
        ("apache2", APACHE2),
        ("mod_authnz_external", AUTHNZ_EXTERNAL_SO),
        ("wrk", WRK),
    ];
    t.extend_from_slice(extra);
    support::tools_present(test, &t)
}

// ------------------------------------------------------------------------------------------------
// The tests

/// Redis is killed (SIGKILL) in the middle of the load and started again 2 s later on the same
/// port with the same data: every request that needs it is denied meanwhile, none is granted
/// without a session, and the approved session works again without a new push once Redis is
/// back, without restarting Apache.
#[test]
fn redis_restart_under_load() {
    if !tools(
        "redis_restart_under_load",
        &[
            ("redis-server", REDIS_SERVER),
            ("chromium", CHROMIUM),
            ("chromedriver", CHROMEDRIVER),
        ],
    ) {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut w = world(Store::Redis);
    let pid = w.pid();

    // The approved session: signed in through a real browser.
    let valid = w.browser_sign_in(USER);
    let denied = w.denied_cookie();
    assert_eq!(w.http().get("/private/", &valid).unwrap().status, 200);
    let pushes_before = w.sim.counters().pushes_by_user.get(USER).copied();
    assert_eq!(pushes_before, Some(1));
    let peak_kib = w.check_duo_peak_rss(&valid, false);

    let mut redis = w.redis.take().expect("redis");
    let mut marks: BTreeMap<&str, Instant> = BTreeMap::new();
    let spec = LoadSpec {
        wrk_duration: Duration::from_secs(12),
        wrk_threads: 2,
        wrk_connections: 8,
        signin_threads: 3,
    };
    let r = run_load(&w, &valid, &denied, &spec, |sh| {
        // Wait for the load to be under way: the probe's first grant, then 3.5 s more.
        assert!(
            sh.wait_probe_ok_after(Instant::now() - Duration::from_secs(1), RECOVERY)
                .is_some(),
            "the approved session did not work under load"
        );
        sleep(Duration::from_millis(3500));
        marks.insert("kill", Instant::now());
        redis.kill();
        marks.insert("killed", Instant::now());
        // The outage itself (a fault lasts this long: no page is waited for here).
        sleep(Duration::from_secs(2));
        let took = redis.start_again();
        let back = Instant::now();
        marks.insert("redis back", back);
        eprintln!("redis-server listening again after {took:?}");
        let ok = sh.wait_probe_ok_after(back, RECOVERY);
        marks.insert(
            "session ok",
            ok.unwrap_or_else(|| {
                panic!("the approved session did not work within {RECOVERY:?} of Redis's restart")
            }),
        );
        let signin = sh.wait_signin_ok_after(back, RECOVERY);
        marks.insert(
            "sign-in ok",
            signin.unwrap_or_else(|| {
                panic!("no new sign-in succeeded within {RECOVERY:?} of Redis's restart")
            }),
        );
    });
    w.redis = Some(redis);
    assert!(w.apache.running(), "Apache died");
    assert_eq!(w.pid(), pid, "Apache was restarted");

    // After the load: the session still works, the denied cookie is still refused.
    assert_eq!(w.http().get("/private/", &valid).unwrap().status, 200);
    assert_eq!(w.http().get("/private/", &denied).unwrap().status, 302);

    let (lines, log) = assert_log_and_grants(&w);
    let sh = &r.shared;
    let no_session = sh.no_session.lock().unwrap();
    let probe = sh.probe.lock().unwrap();
    let signins = sh.signins.lock().unwrap();
    let end = Instant::now();
    for h in no_session.iter() {
        assert_ne!(
            h.status, 200,
            "a cookie without a session was granted: {h:?}"
        );
    }
    // The approved session needed no new push: denied while Redis was down, never re-asked.
    assert_eq!(
        w.sim.counters().pushes_by_user.get(USER).copied(),
        pushes_before,
        "the outage sent {USER} a new push"
    );

    let kill = marks["kill"];
    let back = marks["redis back"];
    let ok = marks["session ok"];
    let (ukill, uback, uok) = (r.unix(kill), r.unix(back), r.unix(ok));
    let (ustart, uend) = (r.wrk.started_unix, r.wrk.ended_unix);
    // Under load before the fault, and from 2 s after the recovery on, every wrk answer is 200.
    let early_denials = r.wrk.count_in(ustart, ukill - 1.0, Some(302));
    let late: Vec<u64> = r
        .wrk
        .seconds_not(200)
        .into_iter()
        .filter(|s| (*s as f64) >= uok + 2.0)
        .collect();

    // Sign-ins that ran entirely while Redis was down.
    let killed = marks["killed"];
    let while_down: Vec<&SignInRec> = signins
        .iter()
        .filter(|s| s.start >= killed && s.end <= back)
        .collect();
    let down_granted: Vec<&SignInRec> = while_down
        .iter()
        .copied()
        .filter(|s| s.outcome.granted())
        .collect();
    let store_errors = |user: &str| {
        lines
            .iter()
            .filter(|l| l.user == user && l.event == "store_error")
            .count()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFIGURES redis_restart_under_load (debug build, 2 cores)"
    );
    let _ = writeln!(
        out,
        "  wrk -t{} -c{} -d{}s, approved cookie: {} answers, {:.0} req/s overall; 200: {}, 302: {}, \
         other: {}; socket errors connect/read/write/timeout {:?}; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        spec.wrk_threads,
        spec.wrk_connections,
        spec.wrk_duration.as_secs(),
        r.wrk.requests,
        r.wrk.requests as f64 / r.wrk.duration_s.max(0.001),
        r.wrk.total(200),
        r.wrk.total(302),
        r.wrk.total_not(200) - r.wrk.total(302),
        r.wrk.errors,
        r.wrk.p50_ms,
        r.wrk.p99_ms,
        r.wrk.max_ms,
    );
    let _ = writeln!(
        out,
        "  req/s: before {:.0} ({:.1} s) | outage+recovery {:.0} ({:.1} s: Redis down {:.1} s, session back {:.2} s after Redis) | after {:.0} ({:.1} s)",
        r.wrk.rate(ustart, ukill),
        ukill - ustart,
        r.wrk.rate(ukill, uok),
        uok - ukill,
        uback - ukill,
        uok - uback,
        r.wrk.rate(uok, uend),
        uend - uok,
    );
    let _ = writeln!(
        out,
        "  approved cookie denied: wrk ~{:.0} during outage+recovery, {:.0} before the kill, {} after recovery+2s; \
         check-duo store_error lines for {USER}: {}; probe {} | {} | {} (before | outage | after); \
         probe answers that set a new cookie: {}",
        r.wrk.count_in(ukill, uok + 1.0, Some(302)),
        early_denials,
        late.len(),
        store_errors(USER),
        fmt_statuses(&statuses(&probe, r.t0, kill).remove("probe").unwrap_or_default()),
        fmt_statuses(&statuses(&probe, kill, ok).remove("probe").unwrap_or_default()),
        fmt_statuses(&statuses(&probe, ok, end).remove("probe").unwrap_or_default()),
        probe.iter().filter(|h| h.set_cookie).count(),
    );
    for (phase, a, b) in [
        ("before", r.t0, kill),
        ("outage", kill, ok),
        ("after", ok, end),
    ] {
        let m = statuses(&no_session, a, b);
        let _ = writeln!(
            out,
            "  no-session cookies, {phase}: denied-login {} | garbage {}",
            fmt_statuses(m.get("denied-login").unwrap_or(&BTreeMap::new())),
            fmt_statuses(m.get("garbage").unwrap_or(&BTreeMap::new())),
        );
    }
    let _ = writeln!(
        out,
        "  cold sign-ins (3 clients), by start: before {} | Redis down {} | back {}; entirely while down: {} ({} granted); \
         denied although Duo approved: {:?}",
        signin_summary(&signins, r.t0, kill),
        signin_summary(&signins, kill, back),
        signin_summary(&signins, back, end),
        while_down.len(),
        down_granted.len(),
        approved_but_denied(&signins, &w.sim),
    );
    lines_of(&lines, &approved_but_denied(&signins, &w.sim), &mut out);
    let _ = writeln!(
        out,
        "  check-duo lines: {} ({} store_error, {} grants); first sign-in granted {:.2} s after Redis was back",
        lines.len(),
        lines.iter().filter(|l| l.event == "store_error").count(),
        lines.iter().filter(|l| l.outcome == "grant").count(),
        (marks["sign-in ok"] - back).as_secs_f64(),
    );
    store_error_reasons(&lines, &mut out);
    let _ = writeln!(out, "  Apache's own error lines: {}", apache_lines(&log));
    if let Some(kib) = peak_kib {
        let _ = writeln!(
            out,
            "  check-duo peak RSS, one cached-session request on Redis: {kib} KiB"
        );
    }
    memory_report(&r, &mut out);
    let _ = writeln!(out, "  test took {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{out}");

    assert!(
        early_denials < 1.0,
        "the approved session was denied under load before the fault:\n{out}"
    );
    assert!(
        late.is_empty(),
        "the approved session was denied in seconds {late:?}, after it had recovered:\n{out}"
    );
    assert!(
        store_errors(USER) > 0,
        "no store error for {USER} while Redis was down:\n{out}"
    );
    assert!(
        !while_down.is_empty(),
        "no sign-in ran entirely while Redis was down:\n{out}"
    );
    assert!(
        down_granted.is_empty(),
        "sign-ins were granted while Redis was down: {down_granted:?}\n{out}"
    );
    let before_failed: Vec<&SignInRec> = signins
        .iter()
        .filter(|s| s.end < kill && !s.outcome.granted())
        .collect();
    assert!(
        before_failed.is_empty(),
        "cold sign-ins failed before the fault: {before_failed:?}\n{out}"
    );
}

/// The embedded store's file system fills up under load: the cached session keeps working or
/// fails closed, new sign-ins are denied with a store error that says so, nothing panics, and
/// once space is free again new sign-ins work without restarting Apache.
#[test]
fn full_disk_under_the_embedded_store() {
    if !tools("full_disk_under_the_embedded_store", &[]) {
        return;
    }
    if !running_as_root() {
        let msg = "full_disk_under_the_embedded_store: not root, so no tmpfs can be mounted";
        if std::env::var_os(support::REQUIRE_E2E).is_some() {
            panic!("{msg}, and {} is set: run it as root", support::REQUIRE_E2E);
        }
        eprintln!("\n## SKIPPED {msg}\n");
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut w = world(Store::EmbeddedOnTmpfs("512k"));
    let pid = w.pid();
    let store_dir = w.tmpfs.as_ref().unwrap().dir.clone();
    let http = w.http();

    let valid = match http.sign_in(USER, PASSWORD, SECRET) {
        SignIn::Granted { cookie } => cookie,
        other => panic!(
            "{USER} could not sign in: {other:?}\n{}",
            w.apache.error_log()
        ),
    };
    let denied = w.denied_cookie();
    let peak_kib = w.check_duo_peak_rss(&valid, true);
    let usage_start = w.tmpfs.as_ref().unwrap().usage_kib();

    let mut marks: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut filled = (PathBuf::new(), 0u64);
    let mut full_check = Ok(());
    let spec = LoadSpec {
        wrk_duration: Duration::from_secs(10),
        wrk_threads: 2,
        wrk_connections: 8,
        signin_threads: 3,
    };
    let r = run_load(&w, &valid, &denied, &spec, |sh| {
        assert!(
            sh.wait_probe_ok_after(Instant::now() - Duration::from_secs(1), RECOVERY)
                .is_some(),
            "the approved session did not work under load"
        );
        sleep(Duration::from_millis(2500));
        marks.insert("fill", Instant::now());
        filled = fill_until_enospc(&store_dir);
        full_check = one_byte_fits(&store_dir);
        marks.insert("full", Instant::now());
        // The disk stays full this long (the fault's duration; no page is waited for).
        sleep(Duration::from_millis(3500));
        marks.insert("free", Instant::now());
        fs::remove_file(&filled.0).unwrap();
        let free = Instant::now();
        let signin = sh.wait_signin_ok_after(free, RECOVERY);
        marks.insert(
            "sign-in ok",
            signin.unwrap_or_else(|| {
                panic!("no new sign-in succeeded within {RECOVERY:?} of freeing the disk")
            }),
        );
        assert!(
            sh.wait_probe_ok_after(free, RECOVERY).is_some(),
            "the approved session did not work after the disk was freed"
        );
    });
    assert!(
        full_check.is_err(),
        "the tmpfs still took a byte after filling it"
    );
    assert!(w.apache.running(), "Apache died");
    assert_eq!(w.pid(), pid, "Apache was restarted");
    assert_eq!(w.http().get("/private/", &valid).unwrap().status, 200);
    assert_eq!(w.http().get("/private/", &denied).unwrap().status, 302);

    let (lines, log) = assert_log_and_grants(&w);
    let sh = &r.shared;
    let no_session = sh.no_session.lock().unwrap();
    let probe = sh.probe.lock().unwrap();
    let signins = sh.signins.lock().unwrap();
    let end = Instant::now();
    for h in no_session.iter() {
        assert_ne!(
            h.status, 200,
            "a cookie without a session was granted: {h:?}"
        );
    }
    let (full, free) = (marks["full"], marks["free"]);
    let (ufull, ufree) = (r.unix(full), r.unix(free));
    let (ustart, uend) = (r.wrk.started_unix, r.wrk.ended_unix);
    // Sign-ins that ran entirely while the disk was full.
    let while_full: Vec<&SignInRec> = signins
        .iter()
        .filter(|s| s.start >= full && s.end <= free)
        .collect();
    let full_granted: Vec<&SignInRec> = while_full
        .iter()
        .copied()
        .filter(|s| s.outcome.granted())
        .collect();
    let disk_full_lines: Vec<&Line> = lines
        .iter()
        .filter(|l| l.event == "store_error" && l.reason.contains("full"))
        .collect();
    let fill = marks["fill"];
    let before_failed: Vec<&SignInRec> = signins
        .iter()
        .filter(|s| s.end < fill && !s.outcome.granted())
        .collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFIGURES full_disk_under_the_embedded_store (debug build, 2 cores, tmpfs 512k)"
    );
    let _ = writeln!(
        out,
        "  store file system before: {} KiB used of {}; filler wrote {} KiB until ENOSPC",
        usage_start.1,
        usage_start.0,
        filled.1 / 1024
    );
    let _ = writeln!(
        out,
        "  wrk -t{} -c{} -d{}s, approved cookie: {} answers, {:.0} req/s overall; 200: {}, 302: {}, other: {}; \
         socket errors {:?}; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        spec.wrk_threads,
        spec.wrk_connections,
        spec.wrk_duration.as_secs(),
        r.wrk.requests,
        r.wrk.requests as f64 / r.wrk.duration_s.max(0.001),
        r.wrk.total(200),
        r.wrk.total(302),
        r.wrk.total_not(200) - r.wrk.total(302),
        r.wrk.errors,
        r.wrk.p50_ms,
        r.wrk.p99_ms,
        r.wrk.max_ms,
    );
    let _ = writeln!(
        out,
        "  req/s: before {:.0} | disk full {:.0} ({:.1} s) | after {:.0}; approved cookie while full: wrk ~{:.0} x 200, ~{:.0} x 302; \
         probe {} | {} | {}",
        r.wrk.rate(ustart, ufull),
        r.wrk.rate(ufull, ufree),
        ufree - ufull,
        r.wrk.rate(ufree, uend),
        r.wrk.count_in(ufull, ufree, Some(200)),
        r.wrk.count_in(ufull, ufree, Some(302)),
        fmt_statuses(&statuses(&probe, r.t0, full).remove("probe").unwrap_or_default()),
        fmt_statuses(&statuses(&probe, full, free).remove("probe").unwrap_or_default()),
        fmt_statuses(&statuses(&probe, free, end).remove("probe").unwrap_or_default()),
    );
    for (phase, a, b) in [
        ("before", r.t0, full),
        ("full", full, free),
        ("after", free, end),
    ] {
        let m = statuses(&no_session, a, b);
        let _ = writeln!(
            out,
            "  no-session cookies, {phase}: denied-login {} | garbage {}",
            fmt_statuses(m.get("denied-login").unwrap_or(&BTreeMap::new())),
            fmt_statuses(m.get("garbage").unwrap_or(&BTreeMap::new())),
        );
    }
    let _ = writeln!(
        out,
        "  cold sign-ins (3 clients), by start: before {} | full {} | after {}; entirely while full: {} ({} granted); \
         first granted {:.2} s after the filler was removed; denied although Duo approved: {:?}",
        signin_summary(&signins, r.t0, full),
        signin_summary(&signins, full, free),
        signin_summary(&signins, free, end),
        while_full.len(),
        full_granted.len(),
        (marks["sign-in ok"] - free).as_secs_f64(),
        approved_but_denied(&signins, &w.sim),
    );
    lines_of(&lines, &approved_but_denied(&signins, &w.sim), &mut out);
    let _ = writeln!(
        out,
        "  check-duo lines: {} ({} store_error, {} saying \"full\")",
        lines.len(),
        lines.iter().filter(|l| l.event == "store_error").count(),
        disk_full_lines.len(),
    );
    store_error_reasons(&lines, &mut out);
    let _ = writeln!(out, "  Apache's own error lines: {}", apache_lines(&log));
    if let Some(kib) = peak_kib {
        let _ = writeln!(
            out,
            "  check-duo peak RSS, one cached-session request on the embedded store: {kib} KiB"
        );
    }
    memory_report(&r, &mut out);
    let _ = writeln!(out, "  test took {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{out}");

    assert!(
        !while_full.is_empty(),
        "no sign-in ran entirely while the disk was full:\n{out}"
    );
    assert!(
        full_granted.is_empty(),
        "sign-ins were granted while the disk was full: {full_granted:?}\n{out}"
    );
    assert!(
        before_failed.is_empty(),
        "cold sign-ins failed before the fault: {before_failed:?}\n{out}"
    );
    assert!(
        disk_full_lines.iter().any(|l| l.context == "login"),
        "no sign-in was denied with a store error saying the disk is full:\n{out}\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
}
