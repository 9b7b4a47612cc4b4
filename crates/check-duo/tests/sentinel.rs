//! Redis behind Sentinel, for real: a master, a replica and three sentinels (`redis-server` and
//! `redis-sentinel` processes), the real `check-duo` binary in the pipe mode against `duo-sim`.
//! Sessions approved before the master dies survive the failover, nothing is granted without a
//! session meanwhile, and requests work again once the sentinels have promoted the replica.
//! Also: TLS to the sentinel and the master, and the config's `cache.sentinels` keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use check_duo::config::{CacheConfig, Config};
use check_duo::store::{Entry, SentinelSpec};
use duo_sim::{Behaviours, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::process::{run_as_authenticator, wait_until, Ran};
use support::redis::REDIS_SERVER;
use support::sentinel::{
    Sentinels, PASSWORD as REDIS_PASSWORD, REDIS_SENTINEL, USER as REDIS_USER,
};
use support::world::start_sim;

const IKEY: &str = "DISENTINELTESTXXXXXX";
const SKEY: &str = "sentinelTestSecretKeyForTheSimulatorOnly";
const PASSWORD: &str = "correct horse, battery staple";
const PREFIX: &str = "cd:";

fn tools(test: &str) -> bool {
    support::tools_present(
        test,
        &[
            ("redis-server", REDIS_SERVER),
            ("redis-sentinel", REDIS_SENTINEL),
        ],
    )
}

/// alice's pushes are approved (after 50 ms), bob's denied.
fn behaviours() -> Behaviours {
    Behaviours::default()
        .with_user(
            "alice",
            UserBehaviour {
                delay_ms: 50,
                ..UserBehaviour::push(PushKind::Approve)
            },
        )
        .with_user("bob", UserBehaviour::push(PushKind::Deny))
}

/// A config for these users (bcrypt at the lowest cost: the debug binary hashes on every cold
/// request) with this `cache` section, written to `dir/config.json`.
fn write_config(dir: &Path, sim: &SimHandle, ca: &Path, cache: Value) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let cfg = json!({
        "usernames": {"alice": hash, "bob": hash},
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                "push_timeout": 10, "call_timeout": 5},
        "cache": cache,
        "session": {"name": "formsession", "expiry": 3600},
        // Many pushes in a short time, some denied: no limit gets in the way.
        "limits": {"max_pushes": 0, "push_cooldown": 0}
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    path
}

/// A cookie of its own for each session, never reused across test runs.
fn cookie(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("formsession={name}-{t:x}")
}

type Outcome = Ran;

impl Outcome {
    fn reason_is(&self, reason: &str) -> bool {
        self.log.contains(reason)
    }

    fn store_error(&self) -> bool {
        self.log.contains("event=store_error")
    }
}

/// One run of the binary as mod_authnz_external runs it.
fn run(config: &Path, user: &str, cookie: &str) -> Outcome {
    let env = [
        ("IP", "192.0.2.7".to_string()),
        ("URI", "/private/index.html".to_string()),
        ("HTTP_HOST", "app.example.test".to_string()),
        ("COOKIE", format!("other=1; {cookie}")),
    ];
    let stdin = format!("{user}\n{PASSWORD}\n");
    let exe = Path::new(env!("CARGO_BIN_EXE_check-duo"));
    let out = run_as_authenticator(exe, config, &env, stdin.as_bytes(), |_| {});
    assert!(
        !out.log.contains(PASSWORD) && !out.log.contains(REDIS_PASSWORD),
        "a password in the log: {}",
        out.log
    );
    out
}

#[track_caller]
fn granted(out: &Outcome, reason: &str) {
    assert!(
        out.granted && out.reason_is(reason),
        "expected a grant ({reason}), got: {}",
        out.log
    );
}

/// The sentinel's `cache` section for `set`, with the data nodes' ACL user.
fn sentinel_cache(set: &Sentinels) -> Value {
    json!({
        "sentinels": set.addresses(),
        "master_name": Sentinels::NAME,
        "username": REDIS_USER,
        "password": REDIS_PASSWORD,
        "prefix": PREFIX,
        "timeout": 1
    })
}

#[test]
fn sessions_survive_a_failover() {
    if !tools("sentinel failover") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
    let mut set = Sentinels::start(dir.path(), 3);
    let config = write_config(dir.path(), &sim, &ca, sentinel_cache(&set));

    // Before: sessions approved through Duo, then served from the cache.
    let sessions: Vec<String> = (1..=3).map(|i| cookie(&format!("before{i}"))).collect();
    for s in &sessions {
        granted(&run(&config, "alice", s), "push approved");
    }
    assert_eq!(sim.counters().auth, 3);
    let calls = sim.counters().duo_calls();
    for s in &sessions {
        granted(&run(&config, "alice", s), "cached session");
    }
    assert_eq!(sim.counters().duo_calls(), calls, "the warm path asked Duo");

    // The replica has them (replication is asynchronous: wait for it, not for a while).
    let mut m = set.master.connect(true).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the writes");
    let pattern = format!("{PREFIX}session:*");
    let on_master = Sentinels::keys(&set.master, &pattern).unwrap();
    assert_eq!(on_master.len(), 3, "{on_master:?}");
    assert_eq!(Sentinels::keys(&set.replica, &pattern).unwrap(), on_master);
    drop(m);

    // The master dies. Until the sentinels have promoted the replica, every request fails
    // closed: a session approved before is granted from the cache or denied, a cookie without a
    // session is never granted without Duo's approval, and bob (whose pushes Duo denies) never.
    set.master.kill();
    let killed = Instant::now();
    let mut probes = 0;
    let mut denied_by_store = 0;
    let mut first_deny = String::new();
    let recovered = loop {
        probes += 1;
        let auth = sim.counters().auth;
        let out = run(&config, "alice", &cookie("during"));
        if out.granted {
            assert!(out.reason_is("push approved"), "{}", out.log);
            assert!(
                sim.counters().auth > auth,
                "granted without Duo: {}",
                out.log
            );
        } else {
            assert!(out.store_error(), "{}", out.log);
            denied_by_store += 1;
        }
        let out = run(&config, "bob", &cookie("during-bob"));
        assert!(!out.granted, "bob granted: {}", out.log);
        assert!(
            out.store_error() || out.reason_is("push denied"),
            "{}",
            out.log
        );

        let calls = sim.counters().duo_calls();
        let out = run(&config, "alice", &sessions[0]);
        // Every call keeps its deadline (`timeout`: 1 s), the failover or not.
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{:?}: {}",
            out.elapsed,
            out.log
        );
        if out.granted {
            assert!(out.reason_is("cached session"), "{}", out.log);
            assert_eq!(sim.counters().duo_calls(), calls, "{}", out.log);
            break killed.elapsed();
        }
        assert!(out.store_error(), "{}", out.log);
        assert_eq!(sim.counters().duo_calls(), calls, "{}", out.log);
        denied_by_store += 1;
        if first_deny.is_empty() {
            first_deny = out.log.trim().to_string();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no request granted 20 s after the master died ({probes} probes); last: {}",
            out.log
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "sentinel failover: requests granted again {recovered:?} after the master died \
         ({probes} rounds of probes, {denied_by_store} denied on the store meanwhile); \
         the first: {first_deny}"
    );
    assert!(denied_by_store > 0, "no request met the failover");

    // The sentinels all name the former replica now (the one check-duo asked first did; the
    // others hear of it within a hello period or two).
    let replica_port = set.replica.port.to_string();
    for s in &set.sentinels {
        let mut seen = Default::default();
        let switched = wait_until(Duration::from_secs(10), || {
            seen = set.sentinel_master(s).unwrap_or_default();
            seen.get("port") == Some(&replica_port)
        });
        assert!(switched, "{} still names another master: {seen:?}", s.name);
    }

    // After: every session approved before is granted from the cache, without Duo.
    let calls = sim.counters().duo_calls();
    for s in &sessions {
        granted(&run(&config, "alice", s), "cached session");
    }
    assert_eq!(
        sim.counters().duo_calls(),
        calls,
        "a cached session asked Duo"
    );
    // A cookie without a session still goes to Duo (and bob's is denied there), and a new
    // session is approved and stored on the new master.
    let out = run(&config, "bob", &cookie("after-bob"));
    assert!(!out.granted && out.reason_is("push denied"), "{}", out.log);
    let fresh = cookie("after");
    let auth = sim.counters().auth;
    granted(&run(&config, "alice", &fresh), "push approved");
    assert_eq!(sim.counters().auth, auth + 1);
    granted(&run(&config, "alice", &fresh), "cached session");
    let on_new_master = Sentinels::keys(&set.replica, &pattern).unwrap();
    assert!(on_new_master.len() >= 4, "{on_new_master:?}");
}

#[test]
fn a_demoted_master_is_left_for_the_one_the_sentinels_name() {
    if !tools("sentinel switch-over") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The sentinel cannot CLIENT KILL on the first master, so it cannot demote it (which would
    // drop the store's connection): the test does, keeping the connection open.
    let set = Sentinels::start_with(dir.path(), 1, &["-client|kill"]);
    let cfg = parse(sentinel_cache(&set)).unwrap();
    let store = check_duo::store::open(&cfg.cache).unwrap();
    let now = 1_900_000_000;
    let hour = Duration::from_secs(3600);
    let entry = |user: &str| Entry {
        user: user.into(),
        approved_at: now,
        tag: "tag".into(),
        ip: "192.0.2.7".into(),
        last_seen: now,
        factor: "push".into(),
    };
    store.put("before", &entry("alice"), hour, now).unwrap();
    for n in 1..=3 {
        assert_eq!(store.incr("attempts", hour, now).unwrap(), n);
    }
    let mut m = set.master.connect(true).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the writes");

    // The sentinel promotes the replica; the former master is made its replica.
    set.switch_over(|| {
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(set.replica.port)
            .query(&mut m)
            .unwrap();
    });
    // The store's connection still goes to the former master: the script is answered READONLY,
    // and runs again on the master the sentinel names. (Taking a count back is retried only on
    // such a refusal.)
    store.decr("attempts", now).unwrap();
    store.put("after", &entry("bob"), hour, now).unwrap();
    assert_eq!(store.count("attempts", now).unwrap(), 2);
    assert_eq!(store.get("before", now).unwrap(), Some(entry("alice")));
    let pattern = format!("{PREFIX}session:*");
    let on_new_master = Sentinels::keys(&set.replica, &pattern).unwrap();
    assert_eq!(
        on_new_master,
        [
            format!("{PREFIX}session:after"),
            format!("{PREFIX}session:before")
        ]
    );

    // A connection the server drops: a command that may run twice is retried on a new one;
    // taking a count back is not (it may have run: the attempt stays counted, the strict side),
    // and the next call connects again.
    let kill = || {
        let mut r = set.replica.connect(true).unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut r)
            .unwrap();
    };
    kill();
    assert_eq!(store.get("after", now).unwrap(), Some(entry("bob")));
    kill();
    assert!(store.decr("attempts", now).is_err());
    assert_eq!(store.count("attempts", now).unwrap(), 2);
    store.decr("attempts", now).unwrap();
    assert_eq!(store.count("attempts", now).unwrap(), 1);
}

#[test]
fn tls_to_the_sentinel_and_the_master() {
    if !tools("sentinel tls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
    let (_master, sentinel, redis_ca) = support::sentinel::start_tls(dir.path());
    let cache = json!({
        "sentinels": [format!("127.0.0.1:{}", sentinel.port)],
        "master_name": Sentinels::NAME,
        "tls": true,
        "ca_file": redis_ca,
        "prefix": PREFIX,
        "timeout": 2
    });
    let config = write_config(dir.path(), &sim, &ca, cache.clone());
    let s = cookie("tls");
    granted(&run(&config, "alice", &s), "push approved");
    granted(&run(&config, "alice", &s), "cached session");

    // Without the CA, the compiled-in roots do not trust the test CA: denied, never granted.
    let mut untrusted = cache;
    untrusted.as_object_mut().unwrap().remove("ca_file");
    let config = write_config(dir.path(), &sim, &ca, untrusted);
    let out = run(&config, "alice", &s);
    assert!(!out.granted && out.store_error(), "{}", out.log);
}

// ---------------------------------------------------------------- the config keys

fn parse(cache: Value) -> Result<Config, check_duo::config::ConfigError> {
    let cfg = json!({
        "username": "joe",
        "password": "pw",
        "duo": {"ikey": IKEY, "skey": SKEY, "host": "api-xxxxxxxx.duosecurity.com"},
        "cache": cache
    });
    Config::parse(
        Path::new("/etc/check-duo/config.json"),
        &serde_json::to_vec(&cfg).unwrap(),
    )
}

fn spec(cfg: &Config) -> (SentinelSpec, String, bool, Duration) {
    match &cfg.cache {
        CacheConfig::Sentinel {
            spec,
            prefix,
            ca_pem,
            timeout,
        } => (spec.clone(), prefix.clone(), ca_pem.is_some(), *timeout),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_sentinels_and_master_name() {
    let cfg = parse(json!({
        "sentinels": ["10.0.0.1:26379", " sentinel-b.internal:26379", "[2001:db8::3]:26380"],
        "master_name": "check-duo",
        "username": "check-duo",
        "password": "s3cret:/@#",
        "db": "2",
        "prefix": "cd:",
        "timeout": 3
    }))
    .unwrap();
    let (s, prefix, ca, timeout) = spec(&cfg);
    assert_eq!(
        s.sentinels,
        [
            ("10.0.0.1".to_string(), 26379),
            ("sentinel-b.internal".to_string(), 26379),
            ("2001:db8::3".to_string(), 26380)
        ]
    );
    assert_eq!(s.master_name, "check-duo");
    assert_eq!(s.username.as_deref(), Some("check-duo"));
    assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("s3cret:/@#"));
    assert_eq!((s.db, s.tls), (2, false));
    assert_eq!(
        (prefix.as_str(), ca, timeout),
        ("cd:", false, Duration::from_secs(3))
    );
    assert!(!format!("{:?}", cfg.cache).contains("s3cret"));

    // TLS with a CA file, or with the compiled-in roots.
    let ca_file =
        std::env::temp_dir().join(format!("check-duo-sentinel-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, duo_sim::test_certificates().unwrap().ca_pem).unwrap();
    let cfg =
        parse(json!({"sentinels": ["h:1"], "master_name": "m", "tls": true, "ca_file": ca_file}));
    let _ = std::fs::remove_file(&ca_file);
    let (s, _, ca, timeout) = spec(&cfg.unwrap());
    assert!(s.tls && ca);
    assert_eq!(timeout, Duration::from_secs(2));
    let (s, _, ca, _) =
        spec(&parse(json!({"sentinels": ["h:1"], "master_name": "m", "tls": true})).unwrap());
    assert!(s.tls && !ca);
}

#[test]
fn config_errors_name_the_key_and_never_the_password() {
    let base = || {
        json!({"sentinels": ["127.0.0.1:26379"], "master_name": "m",
               "username": "u", "password": "hunter2-secret"})
    };
    let with = |k: &str, v: Value| {
        let mut c = base();
        c.as_object_mut().unwrap().insert(k.into(), v);
        c
    };
    let without = |k: &str| {
        let mut c = base();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    for (cache, key) in [
        (with("url", json!("redis://127.0.0.1:6379/0")), "cache.url"),
        (with("host", json!("127.0.0.1")), "cache.host"),
        (with("port", json!(6379)), "cache.port"),
        (
            with("path", json!("/var/lib/check-duo/sessions.db")),
            "cache.path",
        ),
        (without("master_name"), "cache.master_name"),
        (without("sentinels"), "cache.sentinels"),
        (with("sentinels", json!([])), "cache.sentinels"),
        (
            with("sentinels", json!(["127.0.0.1:26379", "nope"])),
            "cache.sentinels[1]",
        ),
        (
            with("sentinels", json!(["127.0.0.1:0"])),
            "cache.sentinels[0]",
        ),
        (with("sentinels", json!(["u:p@h:1"])), "cache.sentinels[0]"),
        (
            with("sentinels", json!("127.0.0.1:26379")),
            "cache.sentinels",
        ),
        (with("master_name", json!("")), "cache.master_name"),
        (with("master_name", json!("two words")), "cache.master_name"),
        (with("db", json!("x")), "cache.db"),
        (
            with("ca_file", json!("/nonexistent/ca.pem")),
            "cache.ca_file",
        ),
        (with("timeout", json!(0)), "cache.timeout"),
        (with("tls", json!("yes")), "cache.tls"),
        (with("password", json!(12345)), "cache.password"),
    ] {
        let e = match parse(cache.clone()) {
            Ok(_) => panic!("accepted: {cache}"),
            Err(e) => e,
        };
        assert_eq!(e.key, key, "{cache}: {e}");
        let text = e.to_string();
        assert!(text.contains("/etc/check-duo/config.json"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("12345"),
            "{text}"
        );
    }
    // `tls` belongs to Sentinel: for one server the url says it.
    for cache in [
        json!({"url": "redis://127.0.0.1:6379/0", "tls": true}),
        json!({"host": "127.0.0.1", "tls": true}),
    ] {
        assert_eq!(parse(cache).unwrap_err().key, "cache.tls");
    }
}
