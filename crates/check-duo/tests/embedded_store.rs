//! The embedded store under the conditions of a security review, through the real binary run as
//! mod_authnz_external runs it (against `duo-sim`):
//!
//! - a writer stopped inside its transaction (any process of the caller's user can `SIGSTOP`
//!   one) must not turn cached sessions into denies;
//! - many concurrent cold approvals (writers queueing for the lock) must not either;
//! - a store file that others may read, or that somebody else owns, is refused, naming the file,
//!   what it is and the fix; a new one is created `0660`.
//!
//! `CHECK_DUO_EMBEDDED_STORE_EXE=/path/to/other/check-duo` runs another build instead of this
//! one (say, main before a change, to see these tests fail on it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use duo_sim::{Behaviours, SimHandle};
use serde_json::{json, Value};

use support::process::{run_as_authenticator, running_as_root, Ran};
use support::world::{argon2_hash, start_sim};

const IKEY: &str = "DIEMBEDDEDSTORETESTX";
const SKEY: &str = "embeddedStoreTestSecretKeyForTheSimOnly0";
const PASSWORD: &str = "correct horse, battery staple";
const ALICE: &str = "formsession=YWxpY2Utc2Vzc2lvbg==";
const IP: &str = "192.0.2.7";

/// A simulator that approves every push at once, a config with `users`, and the store path.
struct World {
    dir: tempfile::TempDir,
    sim: SimHandle,
    config: PathBuf,
    store: PathBuf,
}

impl World {
    /// `timeout`: the config's `cache.timeout` (how long a request waits for a lock).
    fn new(users: &[String], timeout: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let (sim, ca) = start_sim(IKEY, SKEY, Behaviours::default(), dir.path());
        let store = dir.path().join("sessions.db");
        let usernames: serde_json::Map<String, Value> = users
            .iter()
            .map(|u| (u.clone(), json!(argon2_hash(PASSWORD))))
            .collect();
        let cfg = json!({
            "usernames": usernames,
            "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                    "push_timeout": 20, "call_timeout": 10},
            "cache": {"path": store, "timeout": timeout},
            "session": {"name": "formsession", "expiry": 3600}
        });
        let config = dir.path().join("config.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        World {
            dir,
            sim,
            config,
            store,
        }
    }

    fn alice(timeout: u64) -> World {
        World::new(&["alice".to_string()], timeout)
    }

    /// One protected request of `user` with `cookie` from `ip`.
    fn run(&self, user: &str, cookie: &str, ip: &str) -> Outcome {
        run(&self.config, user, cookie, ip)
    }
}

fn exe() -> PathBuf {
    std::env::var_os("CHECK_DUO_EMBEDDED_STORE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_check-duo")))
}

fn run(config: &Path, user: &str, cookie: &str, ip: &str) -> Outcome {
    let env = [
        ("IP", ip.to_string()),
        ("URI", "/private/index.html".to_string()),
        ("HTTP_HOST", "app.example.test".to_string()),
        ("COOKIE", format!("other=1; {cookie}")),
    ];
    let stdin = format!("{user}\n{PASSWORD}\n");
    run_as_authenticator(&exe(), config, &env, stdin.as_bytes(), |_| {})
}

type Outcome = Ran;

impl Outcome {
    #[track_caller]
    fn granted(&self, reason: &str) {
        assert!(self.granted, "expected a grant, got: {}", self.log);
        assert!(self.log.contains(reason), "{reason:?} not in: {}", self.log);
    }

    #[track_caller]
    fn denied(&self, reason: &str) {
        assert!(!self.granted, "expected a deny, got: {}", self.log);
        assert!(self.log.contains(reason), "{reason:?} not in: {}", self.log);
    }
}

/// A connection of the test's own to the store file.
fn connect(store: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(store).unwrap();
    // Like check-duo's own connections: leave the -wal/-shm files in place when closing.
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    c
}

// ---- A: a stopped writer ----

/// A writer stopped inside its transaction, as `kill -STOP` leaves one: the test holds a write
/// transaction open on the store (with the exclusive lock a commit takes). Cached sessions are
/// still granted, without waiting for the lock.
#[test]
fn a_stalled_writer_does_not_stop_cached_sessions() {
    let w = World::alice(1);
    w.run("alice", ALICE, IP).granted("push approved");
    w.run("alice", ALICE, IP).granted("cached session");

    let stalled = connect(&w.store);
    stalled
        .execute_batch(
            "BEGIN EXCLUSIVE;
             INSERT INTO counters (key, count, expires_at) VALUES ('test:stalled', 1, 4102444800);",
        )
        .unwrap();
    for _ in 0..3 {
        let out = w.run("alice", ALICE, IP);
        out.granted("cached session");
        assert!(
            out.elapsed < Duration::from_secs(1),
            "waited {:?} for the lock: {}",
            out.elapsed,
            out.log
        );
    }
    assert_eq!(w.sim.counters().auth, 1, "the cached session asked Duo");
    stalled.execute_batch("ROLLBACK").unwrap();
    w.run("alice", ALICE, IP).granted("cached session");
}

// ---- C: many writers ----

/// Sixty cold approvals at once (sixty sessions of sixty users, each a handful of writes),
/// while a cached session keeps being used: every use of the cached session is granted, and
/// every approval is stored.
#[test]
fn many_cold_approvals_do_not_deny_cached_sessions() {
    const COLD: usize = 60;
    let mut users: Vec<String> = (0..COLD).map(|i| format!("user{i:02}")).collect();
    users.push("alice".into());
    // A short lock timeout, as on a slower disk: the rollback-journal store denied a few uses
    // of the cached session here ("embedded store schema: database is locked") and a third
    // of the approvals.
    let w = World::new(&users, 1);
    w.run("alice", ALICE, IP).granted("push approved");

    let cold_done = Arc::new(AtomicBool::new(false));
    let warm: Vec<_> = (0..3)
        .map(|_| {
            let (config, done) = (w.config.clone(), cold_done.clone());
            std::thread::spawn(move || {
                let mut outs = Vec::new();
                while !done.load(Ordering::SeqCst) || outs.len() < 3 {
                    outs.push(run(&config, "alice", ALICE, IP));
                }
                outs
            })
        })
        .collect();
    let cold: Vec<_> = (0..COLD)
        .map(|i| {
            let config = w.config.clone();
            std::thread::spawn(move || {
                let cookie = format!("formsession=c2Vzc2lvbi{i:02}");
                run(
                    &config,
                    &format!("user{i:02}"),
                    &cookie,
                    &format!("198.51.100.{i}"),
                )
            })
        })
        .collect();
    let cold: Vec<Outcome> = cold.into_iter().map(|t| t.join().unwrap()).collect();
    cold_done.store(true, Ordering::SeqCst);
    let warm: Vec<Outcome> = warm.into_iter().flat_map(|t| t.join().unwrap()).collect();

    let denied_warm: Vec<&str> = warm
        .iter()
        .filter(|o| !o.granted || !o.log.contains("cached session"))
        .map(|o| o.log.as_str())
        .collect();
    assert!(
        denied_warm.is_empty(),
        "{} of {} uses of the cached session denied, e.g. {}",
        denied_warm.len(),
        warm.len(),
        denied_warm[0]
    );
    let denied_cold: Vec<&str> = cold
        .iter()
        .filter(|o| !o.granted)
        .map(|o| o.log.as_str())
        .collect();
    assert!(
        denied_cold.is_empty(),
        "{} of {COLD} approvals denied, e.g. {}",
        denied_cold.len(),
        denied_cold[0]
    );
    let stored: i64 = connect(&w.store)
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, i64::try_from(COLD).unwrap() + 1);
    eprintln!(
        "{COLD} approvals and {} uses of a cached session, none denied",
        warm.len()
    );
}

// ---- B: who owns the store file ----

/// The file a request creates is `0660` (the group of a setgid directory, nobody else), not
/// the umask's `0644`.
#[test]
fn a_new_store_file_is_0660() {
    let w = World::alice(2);
    w.run("alice", ALICE, IP).granted("push approved");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&w.store), 0o660, "{}", w.store.display());
    for side in ["db-wal", "db-shm"] {
        let p = w.store.with_extension(side);
        if p.exists() {
            assert_eq!(mode(&p), 0o660, "{}", p.display());
        }
    }
}

/// A store file others may read (what the first caller used to get): refused, the request
/// denied with the file, its mode and the fix named, before anything reaches Duo.
#[test]
fn a_store_file_others_may_read_is_refused() {
    let w = World::alice(2);
    std::fs::write(&w.store, b"").unwrap();
    std::fs::set_permissions(&w.store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = w.run("alice", ALICE, IP);
    out.denied("event=store_error");
    let store = w.store.display().to_string();
    for part in [
        store.as_str(),
        "mode 0644",
        "others may access it",
        "chmod 0660",
    ] {
        assert!(out.log.contains(part), "{part:?} not in: {}", out.log);
    }
    assert_eq!(w.sim.counters().duo_calls(), 0);
    // Fixed as the message says, it works.
    std::fs::set_permissions(&w.store, std::fs::Permissions::from_mode(0o660)).unwrap();
    w.run("alice", ALICE, IP).granted("push approved");
}

/// A store file somebody else owns (a local user who ran the setgid binary first): refused.
/// Needs root, to give the file away.
#[test]
fn a_store_file_owned_by_somebody_else_is_refused() {
    if !running_as_root() {
        eprintln!("SKIPPED a_store_file_owned_by_somebody_else_is_refused: needs root (chown)");
        return;
    }
    let w = World::alice(2);
    std::fs::write(&w.store, b"").unwrap();
    std::fs::set_permissions(&w.store, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(&w.store, Some(65534), Some(65534)).unwrap();
    let out = w.run("alice", ALICE, IP);
    out.denied("event=store_error");
    for part in [
        "uid 65534",
        "expected the owner to be root",
        "chown root:check-duo",
    ] {
        assert!(out.log.contains(part), "{part:?} not in: {}", out.log);
    }
    assert_eq!(w.sim.counters().duo_calls(), 0);
    assert!(w.dir.path().exists());
}

// ---- a store that refuses writes ----

/// Makes the store file read-only for this test, whoever runs it (root ignores modes: then the
/// immutable attribute), and undoes it when dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(store: &Path) -> Option<ReadOnly> {
        if running_as_root() {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(store)
                .status()
                .is_ok_and(|s| s.success());
            return ok.then(|| ReadOnly(store.to_path_buf()));
        }
        std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o440)).unwrap();
        Some(ReadOnly(store.to_path_buf()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if running_as_root() {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        } else {
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o660));
        }
    }
}

/// A store file that cannot be written: every attempt that would have to be counted is denied
/// before its password is checked, and the cached session, which only reads, keeps working.
#[test]
fn a_store_that_refuses_writes_denies_attempts_but_serves_sessions() {
    let w = World::alice(1);
    w.run("alice", ALICE, IP).granted("push approved");
    let Some(_read_only) = ReadOnly::new(&w.store) else {
        eprintln!("SKIPPED a_store_that_refuses_writes_denies_attempts_but_serves_sessions: chattr +i failed");
        return;
    };
    w.run("alice", ALICE, IP).granted("cached session");
    let out = w.run("alice", "formsession=bmV3LWNvb2tpZQ==", IP);
    out.denied("could not be counted");
    assert!(out.log.contains("event=store_error"), "{}", out.log);
    w.run("alice", ALICE, IP).granted("cached session");
    assert_eq!(w.sim.counters().auth, 1);
}
