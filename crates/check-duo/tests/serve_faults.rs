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
        "session": {"expiry": 3600}
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
    let r = http(
        "GET",
        &s.url("/api/authz/auth-request"),
        &[
            ("X-Original-URL", &format!("http://{APP}/private/")),
            ("X-Original-Method", "GET"),
        ],
        None,
    );
    assert_eq!(r.status, 401);
    let jar = sign_in_over_http(r.header("location").unwrap(), "alice", PASSWORD, sim);
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
    let url = s.url("/api/authz/ext-authz/private/");
    let (d, c) = (dir.path().to_path_buf(), cookie.clone());
    let load = std::thread::spawn(move || {
        let headers = [
            format!("Cookie: {c}"),
            format!("Host: {APP}"),
            "X-Forwarded-Proto: http".to_string(),
        ];
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        run_wrk_with(&d, &url, &h, Duration::from_secs(12), 2, 8)
    });
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
