//! `check-duo serve` when the store fails under load: Redis killed and started again while wrk
//! asks the daemon about a signed-in session, and a Sentinel failover. A request is granted only
//! from a session the store holds; meanwhile the answer is a 503 (never a 200, never a way in
//! without the store), the daemon stays up, and the same cookie works again once Redis is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use duo_sim::{Behaviours, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::faults::{run_wrk_with, unix_now, DurableRedis, WRK};
use support::process::wait_until;
use support::redis::REDIS_SERVER;
use support::sentinel::{
    Sentinels, PASSWORD as REDIS_PASSWORD, REDIS_SENTINEL, USER as REDIS_USER,
};
use support::serve::{http, sign_in_over_http, Serve};
use support::world::start_sim;

const IKEY: &str = "DISERVEFAULTSXXXXXXX";
const SKEY: &str = "serveFaultsSecretKeyForTheSimulatorOnly1";
const PASSWORD: &str = "pw-faults";
const APP: &str = "127.0.0.1:8080";

fn config(sim: &SimHandle, ca: &std::path::Path, cache: Value) -> Value {
    json!({
        "username": "alice", "password": PASSWORD,
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                "push_timeout": 10, "call_timeout": 5},
        "cache": cache,
        "session": {"expiry": 3600},
        // Every request reads the store: a session kept for a moment (1 s by default) would
        // hide the faults these tests make (tests/serve.rs tests that bound).
        "server": {"session_cache_ms": 0}
    })
}

fn behaviours() -> Behaviours {
    Behaviours::default().with_user("alice", UserBehaviour::push(PushKind::Manual))
}

/// A temp dir, duo-sim, a Redis that can be killed and started again, and a daemon using it.
fn on_durable_redis() -> (tempfile::TempDir, SimHandle, DurableRedis, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
    let redis = DurableRedis::start(dir.path());
    let cache = json!({"url": redis.url(), "prefix": "cd:", "timeout": 1});
    let s = Serve::start(&dir.path().join("serve"), config(&sim, &ca, cache), false);
    (dir, sim, redis, s)
}

/// What Envoy sends for `/private/` with this cookie.
fn ask(s: &Serve, cookie: &str) -> u16 {
    http(
        "GET",
        &s.url("/api/authz/ext-authz/private/"),
        &[
            ("Host", APP),
            ("X-Forwarded-Proto", "http"),
            ("Cookie", cookie),
        ],
        None,
    )
    .status
}

fn sign_in(s: &Serve, sim: &SimHandle) -> String {
    let sign_in_url = s.sign_in_url(&format!("http://{APP}/private/"));
    let jar = sign_in_over_http(&sign_in_url, "alice", PASSWORD, sim);
    jar.session_cookie().unwrap()
}

#[test]
fn redis_killed_under_load_denies_then_serves_the_same_session_again() {
    if !support::tools_present(
        "serve redis fault",
        &[("redis-server", REDIS_SERVER), ("wrk", WRK)],
    ) {
        return;
    }
    let (dir, sim, mut redis, s) = on_durable_redis();
    let cookie = sign_in(&s, &sim);
    assert_eq!(ask(&s, &cookie), 200);
    let calls = sim.counters().duo_calls();

    // wrk asks about the session for 12 s; Redis is killed after 3 s and started again after 7.
    let load = load_on(&s, dir.path(), &cookie, Duration::from_secs(12));
    std::thread::sleep(Duration::from_secs(3));
    redis.kill();
    let killed = unix_now();
    assert!(
        wait_until(Duration::from_secs(5), || ask(&s, &cookie) == 503),
        "no 503 while Redis is down"
    );
    assert_eq!(http("GET", &s.url("/api/health"), &[], None).status, 503);
    std::thread::sleep(Duration::from_secs(3));
    redis.start_again();
    let restarted = unix_now();
    let run = load.join().unwrap();

    // Granted only from the store; refused (503) meanwhile; nothing else.
    for ((_, status), n) in &run.buckets {
        assert!(
            matches!(status, 200 | 503),
            "{n} answers {status}:\n{}",
            run.stdout
        );
    }
    // wrk counts by whole seconds: the seconds strictly between the kill and the restart.
    let during = run.count_in(killed.floor() + 1.0, restarted.floor(), Some(200));
    assert_eq!(during, 0.0, "granted while Redis was down:\n{}", run.stdout);
    assert!(
        run.total(503) > 0,
        "the load never met the outage:\n{}",
        run.stdout
    );
    assert!(
        run.count_in(restarted + 1.0, run.ended_unix, Some(200)) > 0.0,
        "no grant after Redis came back:\n{}",
        run.stdout
    );
    assert!(
        run.p99_ms < 2000.0,
        "every call kept its deadline: p99 {} ms",
        run.p99_ms
    );
    // The daemon outlived it: the same cookie, no Duo call, a healthy store.
    assert_eq!(ask(&s, &cookie), 200);
    assert_eq!(http("GET", &s.url("/api/health"), &[], None).status, 200);
    assert_eq!(sim.counters().duo_calls(), calls, "the outage asked Duo");
    assert!(
        s.log().contains("event=store_error"),
        "the denies are logged"
    );
    eprintln!(
        "serve under a Redis outage: {} answers, {} refused (503), p99 {:.1} ms",
        run.requests,
        run.total(503),
        run.p99_ms
    );
    s.stop();
}

#[test]
fn a_sentinel_failover_keeps_the_daemons_sessions() {
    if !support::tools_present(
        "serve sentinel failover",
        &[
            ("redis-server", REDIS_SERVER),
            ("redis-sentinel", REDIS_SENTINEL),
        ],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
    let mut set = Sentinels::start(dir.path(), 3);
    let cache = json!({
        "sentinels": set.addresses(), "master_name": Sentinels::NAME,
        "username": REDIS_USER, "password": REDIS_PASSWORD, "prefix": "cd:", "timeout": 1
    });
    let s = Serve::start(&dir.path().join("serve"), config(&sim, &ca, cache), false);
    let cookie = sign_in(&s, &sim);
    assert_eq!(ask(&s, &cookie), 200);
    // The replica has the session (replication is asynchronous: wait for it).
    let mut m = set.master.connect(true).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(acked, 1);
    drop(m);
    let calls = sim.counters().duo_calls();

    set.master.kill();
    let killed = Instant::now();
    let mut refused = 0;
    loop {
        let started = Instant::now();
        match ask(&s, &cookie) {
            200 => break,
            503 => refused += 1,
            other => panic!("{other} during the failover:\n{}", s.log()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a call past its deadline"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no grant 30 s after the master died"
        );
        // A cookie without a session is never let in meanwhile.
        assert_ne!(ask(&s, "check-duo=no-such-session"), 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "serve: the session was served again {:?} after the master died ({refused} refused meanwhile)",
        killed.elapsed()
    );
    assert!(refused > 0, "no request met the failover");
    assert_eq!(sim.counters().duo_calls(), calls, "the failover asked Duo");
    s.stop();
}

#[test]
fn a_store_failure_at_the_password_leaves_nothing_to_continue_from() {
    if !support::tools_present(
        "serve store failure at sign-in",
        &[("redis-server", REDIS_SERVER)],
    ) {
        return;
    }
    let (_dir, sim, mut redis, s) = on_durable_redis();
    let mut jar = support::serve::Jar::default();
    let form = jar.get(&s.portal());
    let csrf = support::serve::form_value(&form.body, "csrf").unwrap();
    redis.kill();
    // A wrong password while the store cannot count attempts: refused, no flow, no push.
    let r = jar.post(
        &s.portal(),
        &[
            ("csrf", &csrf),
            ("username", "alice"),
            ("password", "WRONG"),
            ("factor", "push"),
        ],
    );
    assert_ne!(r.status, 303, "{}", r.body);
    assert!(r.body.contains("No push was sent"), "{}", r.body);
    assert!(
        !jar.cookies.keys().any(|k| k.contains("flow")),
        "{:?}",
        jar.cookies
    );
    redis.start_again();
    // Nothing to ask another push for: back to the sign-in form, and Duo never asked.
    let r = jar.post(&s.url("/wait"), &[("csrf", &csrf), ("action", "push")]);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/")),
        "{}",
        r.body
    );
    assert_eq!(sim.counters().auth, 0);
    s.stop();
}

/// wrk at the ext-authz endpoint with `cookie`, as Envoy asks, for `secs`, on a thread.
fn load_on(
    s: &Serve,
    dir: &std::path::Path,
    cookie: &str,
    secs: Duration,
) -> std::thread::JoinHandle<support::faults::WrkRun> {
    let url = s.url("/api/authz/ext-authz/private/");
    let dir = dir.to_path_buf();
    let headers = [
        format!("Cookie: {cookie}"),
        format!("Host: {APP}"),
        "X-Forwarded-Proto: http".to_string(),
    ];
    std::thread::spawn(move || {
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        run_wrk_with(&dir, &url, &h, secs, 2, 8)
    })
}

/// One sign-in of `user` (whose pushes duo-sim approves by itself) over HTTP, to its end:
/// whether it was granted a session. Never panics on a refusal: under faults, refusals are
/// expected.
fn sign_in_auto(s: &Serve, user: &str) -> bool {
    let mut jar = support::serve::Jar::default();
    let form = jar.get(&s.portal());
    let Some(csrf) = support::serve::form_value(&form.body, "csrf") else {
        return false;
    };
    let r = jar.post(
        &s.portal(),
        &[
            ("csrf", &csrf),
            ("username", user),
            ("password", PASSWORD),
            ("factor", "push"),
        ],
    );
    if r.status != 303 {
        return false;
    }
    let mut done = false;
    wait_until(Duration::from_secs(15), || {
        let page = jar.get(&s.url("/wait"));
        done = !page.body.contains("Check your phone");
        done
    });
    jar.session().is_some()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sign_ins_and_load_through_a_full_disk_under_the_embedded_store() {
    use support::faults::{fill_until_enospc, Tmpfs};
    if !support::tools_present("serve full disk", &[("wrk", WRK)]) {
        return;
    }
    if !support::process::running_as_root() {
        let msg = "serve full disk: not root, so no tmpfs can be mounted";
        assert!(std::env::var_os(support::REQUIRE_E2E).is_none(), "{msg}");
        eprintln!("\n## SKIPPED {msg}\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = Behaviours::default()
        .with_user("alice", UserBehaviour::push(PushKind::Manual))
        .with_user(
            "bob",
            UserBehaviour {
                delay_ms: 100,
                ..UserBehaviour::push(PushKind::Approve)
            },
        );
    let (sim, ca) = start_sim(IKEY, SKEY, b, dir.path());
    let fs = Tmpfs::mount(&dir.path().join("store"), "512k").unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let mut cfg = config(&sim, &ca, json!({"path": fs.dir.join("sessions.db")}));
    cfg["usernames"] = json!({"alice": hash, "bob": hash});
    cfg.as_object_mut().unwrap().remove("username");
    cfg.as_object_mut().unwrap().remove("password");
    cfg["limits"] = json!({"push_cooldown": 0, "max_pushes": 0});
    let s = Serve::start(&dir.path().join("serve"), cfg, false);
    let cookie = sign_in(&s, &sim);
    let pid = s.pid();
    let rss_before = rss_kib(pid);

    // wrk asks about the session for 10 s; sign-ins run all along; the disk fills after 3 s
    // and is emptied again after 6 s; a forged cookie is asked about all along.
    let load = load_on(&s, dir.path(), &cookie, Duration::from_secs(10));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sign_ins = std::thread::scope(|scope| {
        let signer = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = unix_now();
                let granted = sign_in_auto(&s, "bob");
                seen.push((started, unix_now(), granted));
            }
            seen
        });
        let forger = scope.spawn(|| {
            let mut granted = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if ask(&s, "check-duo=forged-session-token") == 200 {
                    granted += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            granted
        });
        std::thread::sleep(Duration::from_secs(3));
        let (filler, bytes) = fill_until_enospc(&fs.dir);
        let filled = unix_now();
        std::thread::sleep(Duration::from_secs(3));
        std::fs::remove_file(&filler).unwrap();
        let emptied = unix_now();
        // Go on until a sign-in after the disk was emptied has ended.
        assert!(
            wait_until(Duration::from_secs(20), || sign_in_auto(&s, "bob")),
            "no sign-in after the disk was emptied"
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = signer.join().unwrap();
        assert_eq!(forger.join().unwrap(), 0, "a forged cookie was let in");
        (seen, filled, emptied, bytes)
    });
    let run = load.join().unwrap();
    let (seen, filled, emptied, bytes) = sign_ins;

    // The session kept working (a read); nothing but 200s and 503s.
    for ((_, status), n) in &run.buckets {
        assert!(
            matches!(status, 200 | 503),
            "{n} answers {status}:\n{}",
            run.stdout
        );
    }
    // Every sign-in that ran entirely while the disk was full was refused; one after, granted.
    let during: Vec<_> = seen
        .iter()
        .filter(|(a, b, _)| *a > filled && *b < emptied)
        .collect();
    assert!(
        during.iter().all(|(_, _, granted)| !granted),
        "granted on a full disk: {during:?}"
    );
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    assert!(!s.log().contains("panicked"), "{}", s.log());
    eprintln!(
        "serve through a full disk ({bytes} bytes written until ENOSPC): wrk {} answers ({} 503), \
         p99 {:.1} ms; {} sign-ins, {} entirely while full (all refused); RSS {rss_before} -> {rss_after} KiB",
        run.requests,
        run.total(503),
        run.p99_ms,
        seen.len(),
        during.len()
    );
    drop(s);
    drop(fs);
}
