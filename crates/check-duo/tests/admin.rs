//! The admin subcommands and the audit log, through the real binary, against `duo-sim` and both
//! store backends (the embedded store and a real `redis-server`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use check_duo::config::{CacheConfig, Credential};
use check_duo::store::{self, Entry};
use duo_sim::{Behaviours, PreauthKind, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_check-duo");
const IKEY: &str = "DIADMINTESTXXXXXXXXX";
const SKEY: &str = "adminTestSecretKeyForTheSimulatorOnly000";
const PASSWORD: &str = "correct horse, battery staple";
const COOKIE: &str = "formsession=YWRtaW4tdGVzdA==";

use support::world::{argon2_hash, start_sim, Backend};

struct World {
    dir: tempfile::TempDir,
    sim: SimHandle,
    config: PathBuf,
    cfg: Value,
    redis: Option<support::redis::Redis>,
}

impl World {
    fn new(backend: Backend) -> Option<World> {
        if !backend.available("admin (redis)") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let behaviours = Behaviours::default()
            .with_user("alice", UserBehaviour::push(PushKind::Approve))
            .with_user("bob", UserBehaviour::push(PushKind::Approve))
            .with_user("dave", UserBehaviour::preauth(PreauthKind::Allow));
        let (sim, ca) = start_sim(IKEY, SKEY, behaviours, dir.path());
        // Glob characters in the prefix must not widen SCAN's MATCH.
        let (cache, redis) = backend.cache(dir.path(), "cd*[a]:");
        let users: serde_json::Map<String, Value> = ["alice", "bob", "dave"]
            .iter()
            .map(|u| (u.to_string(), json!(argon2_hash(PASSWORD))))
            .collect();
        let cfg = json!({
            "usernames": users,
            "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                    "push_timeout": 10, "call_timeout": 5},
            "cache": cache,
            "session": {"name": "formsession", "expiry": 3600}
        });
        let config = dir.path().join("config.json");
        let w = World {
            dir,
            sim,
            config,
            cfg,
            redis,
        };
        w.write_config(|_| {});
        Some(w)
    }

    fn write_config(&self, tweak: impl FnOnce(&mut Value)) {
        let mut cfg = self.cfg.clone();
        tweak(&mut cfg);
        std::fs::write(&self.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        std::fs::set_permissions(&self.config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The drop-in invocation, as mod_authnz_external runs it.
    fn request(&self, user: &str, cookie: &str) -> (i32, String) {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .env_clear()
            .env("IP", "192.0.2.7")
            .env("URI", "/private/")
            .env("HTTP_HOST", "app.example.test")
            .env("COOKIE", cookie)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        write!(child.stdin.take().unwrap(), "{user}\n{PASSWORD}\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn admin(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn no_hex_key(out: &str) {
    // Store keys are 64 hex digits: never shown.
    for word in out.split(|c: char| !c.is_ascii_hexdigit()) {
        assert!(word.len() < 32, "looks like a key: {word}\n{out}");
    }
}

// ---------------------------------------------------------------- store: list and revoke

fn store_list_and_revoke(backend: Backend) {
    let Some(w) = World::new(backend) else { return };
    let cache = match &w.redis {
        Some(r) => CacheConfig::Redis {
            url: duo_auth::Secret::new(r.url()),
            prefix: "cd*[a]:".into(),
            ca_pem: None,
            timeout: Duration::from_secs(2),
        },
        None => CacheConfig::Embedded {
            path: w.dir.path().join("sessions.db"),
            timeout: Duration::from_secs(2),
        },
    };
    let s = store::open(&cache).unwrap();
    let now = 1_900_000_000;
    let entry = |user: &str, ip: &str, at: i64| Entry {
        user: user.into(),
        approved_at: at,
        tag: "t".into(),
        ip: ip.into(),
        last_seen: at,
        factor: "push".into(),
    };
    let hour = Duration::from_secs(3600);
    s.put(
        &"a".repeat(64),
        &entry("alice", "192.0.2.1", now - 10),
        hour,
        now,
    )
    .unwrap();
    s.put(
        &"b".repeat(64),
        &entry("alice", "192.0.2.2", now - 5),
        hour,
        now,
    )
    .unwrap();
    s.put(
        &"c".repeat(64),
        &entry("bob", "192.0.2.3", now),
        hour * 2,
        now,
    )
    .unwrap();
    assert!(s.try_lock(&"d".repeat(64), hour, now).unwrap().is_some());
    if let Some(r) = &w.redis {
        // A key of another application, and one that only a glob prefix would match.
        let mut c = redis::Client::open(r.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("other:session:x")
            .arg("{}")
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("cdXa:session:y")
            .arg(r#"{"user":"mallory","approved_at":1,"tag":"t"}"#)
            .query(&mut c)
            .unwrap();
    }

    // The embedded store compares with `now`; Redis answers with TTLs from the real clock, so
    // only the users, addresses and order are compared across both.
    let list = s.list(now).unwrap();
    let got: Vec<(&str, &str, i64)> = list
        .iter()
        .map(|i| (i.user.as_str(), i.ip.as_str(), i.approved_at))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", "192.0.2.1", now - 10),
            ("alice", "192.0.2.2", now - 5),
            ("bob", "192.0.2.3", now)
        ],
        "{backend:?}"
    );
    let bob = &list[2];
    assert!((bob.expires_at - (now + 7200)).abs() <= 2, "{bob:?}");

    assert_eq!(s.revoke_user("alice", now).unwrap(), 2);
    assert_eq!(s.revoke_user("alice", now).unwrap(), 0);
    let left: Vec<String> = s.list(now).unwrap().into_iter().map(|i| i.user).collect();
    assert_eq!(left, ["bob"]);
    assert_eq!(s.revoke_all(now).unwrap(), 1);
    assert!(s.list(now).unwrap().is_empty());
    // The push lock is not a session and stays.
    assert!(s.try_lock(&"d".repeat(64), hour, now).unwrap().is_none());
    if let Some(r) = &w.redis {
        let mut c = redis::Client::open(r.url())
            .unwrap()
            .get_connection()
            .unwrap();
        for k in ["other:session:x", "cdXa:session:y"] {
            let n: i64 = redis::cmd("EXISTS").arg(k).query(&mut c).unwrap();
            assert_eq!(n, 1, "{k} was touched");
        }
    }
}

#[test]
fn store_list_and_revoke_embedded() {
    store_list_and_revoke(Backend::Embedded);
}

#[test]
fn store_list_and_revoke_redis() {
    store_list_and_revoke(Backend::Redis);
}

// ---------------------------------------------------------------- sessions list / revoke

fn sessions_commands(backend: Backend) {
    let Some(w) = World::new(backend) else { return };
    // Nothing yet (the embedded store file does not even exist: not created by listing).
    let (code, out, err) = w.admin(&["sessions", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    if backend == Backend::Embedded {
        assert!(!w.dir.path().join("sessions.db").exists());
    }

    assert_eq!(w.request("alice", COOKIE).0, 0);
    assert_eq!(w.request("bob", "formsession=Ym9i").0, 0);
    let (code, out, err) = w.admin(&["sessions", "list"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[0].starts_with("USER"), "{out}");
    assert!(
        rows[1].starts_with("alice ") && rows[1].contains("192.0.2.7"),
        "{out}"
    );
    assert!(rows[2].starts_with("bob "), "{out}");
    no_hex_key(&out);

    let (_, out, _) = w.admin(&["sessions", "list", "--user", "bob", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["user"], "bob");
    assert_eq!(v["ip"], "192.0.2.7");
    assert_eq!(v["factor"], "push");
    assert_eq!(v.as_object().unwrap().len(), 5);

    let (code, out, _) = w.admin(&["sessions", "revoke", "--user", "alice"]);
    assert_eq!(code, 0);
    assert!(out.contains("ended 1 session(s) of \"alice\""), "{out}");
    let (_, out, _) = w.admin(&["sessions", "list"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    // alice's browser must push again; bob's is still cached.
    let pushes = w.sim.pushes().len();
    assert_eq!(w.request("alice", COOKIE).0, 0);
    assert_eq!(w.sim.pushes().len(), pushes + 1);
    assert_eq!(w.request("bob", "formsession=Ym9i").0, 0);
    assert_eq!(w.sim.pushes().len(), pushes + 1);

    let (code, out, _) = w.admin(&["sessions", "revoke", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("ended 2 session(s)"), "{out}");
    let (code, _, err) = w.admin(&["sessions", "revoke"]);
    assert_eq!(code, 2, "neither --user nor --all: {err}");
}

#[test]
fn sessions_commands_embedded() {
    sessions_commands(Backend::Embedded);
}

#[test]
fn sessions_commands_redis() {
    sessions_commands(Backend::Redis);
}

// ---------------------------------------------------------------- config check

#[test]
fn config_check_passes_against_duo_sim() {
    let w = World::new(Backend::Embedded).unwrap();
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("check: duo.ikey and duo.skey accepted"),
        "{out}"
    );
    assert!(out.contains("ping: reachable, clock skew"), "{out}");
    assert!(out.contains("key `duo.ca_file`"), "{out}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}

#[test]
fn config_check_redis_backend() {
    let Some(w) = World::new(Backend::Redis) else {
        return;
    };
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: redis store"), "{out}");
    // A Redis nobody listens on: an error naming Redis.
    let port = support::process::free_port();
    w.write_config(|c| c["cache"] = json!({"url": format!("redis://127.0.0.1:{port}/0")}));
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: redis store"), "{out}");
}

#[test]
fn config_check_wrong_skey_names_duo() {
    let w = World::new(Backend::Embedded).unwrap();
    w.write_config(|c| c["duo"]["skey"] = json!("wrongSecretKeyxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!("Duo {}", w.sim.host())), "{line}");
    assert!(
        line.contains("check") && line.contains("duo.skey"),
        "{line}"
    );
}

#[test]
fn config_check_clock_skew() {
    let w = World::new(Backend::Embedded).unwrap();
    w.sim.set_clock_offset(120);
    let (code, out, _) = w.admin(&["config", "check"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("warning:") && l.contains("clock skew +12")),
        "{out}"
    );
    // A warning, not an error: the simulator, like Duo, still accepts the signed date.
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = w.admin(&["config", "check", "--strict"]);
    assert_eq!(code, 1);
}

#[test]
fn config_check_warnings_and_errors() {
    let w = World::new(Backend::Embedded).unwrap();
    // The seed's plaintext password, and a file others can read.
    w.write_config(|c| {
        c["username"] = json!("joe");
        c["password"] = json!("s00p3rSekrit!");
    });
    std::fs::set_permissions(&w.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(
        out.contains("warning:") && out.contains("key `password`: user \"joe\""),
        "{out}"
    );
    assert!(out.contains("mode 0644: others can access it"), "{out}");
    assert!(out.contains("0 error(s), 2 warning(s)"), "{out}");
    assert_eq!(w.admin(&["config", "check", "--strict"]).0, 1);

    // A config error names the file and the key.
    w.write_config(|c| c["duo"]["hots"] = json!("x"));
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&w.config.display().to_string()) && out.contains("hots"),
        "{out}"
    );
    // An embedded store whose directory is missing.
    w.write_config(|c| c["cache"] = json!({"path": w.dir.path().join("no/such/dir/s.db")}));
    let (code, out, _) = w.admin(&["config", "check"]);
    assert_eq!(code, 1);
    assert!(out.contains("error: embedded store"), "{out}");
}

// ---------------------------------------------------------------- hash-password

#[test]
fn hash_password_from_stdin() {
    for args in [&["hash-password"][..], &["hash-password", "--stdin"]] {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let cred = Credential::Argon2id(hash.clone());
        assert!(check_duo::password::verify(&cred, PASSWORD));
        assert!(!check_duo::password::verify(&cred, "correct horse"));
        // And the configuration accepts it.
        let cfg = json!({"usernames": {"joe": hash},
                         "duo": {"ikey": "I", "skey": "S", "host": "h"}});
        check_duo::config::Config::parse(Path::new("t.json"), cfg.to_string().as_bytes()).unwrap();
    }
    let out = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
}

// ---------------------------------------------------------------- the audit log

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn audit_log_records_every_decision() {
    let w = World::new(Backend::Embedded).unwrap();
    let audit = w.dir.path().join("audit.jsonl");
    w.write_config(|c| c["audit"] = json!({"file": audit}));
    assert_eq!(w.request("alice", COOKIE).0, 0); // push approved
    assert_eq!(w.request("alice", COOKIE).0, 0); // cached
    assert_eq!(w.request("alice", "").0, 1); // no cookie
    let recs = audit_lines(&audit);
    let events: Vec<&str> = recs.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["push_approved", "cache_hit", "no_cookie"]);
    let r = &recs[0];
    assert_eq!(r["outcome"], "grant");
    assert_eq!(r["user"], "alice");
    assert_eq!(r["ip"], "192.0.2.7");
    assert_eq!(r["host"], "app.example.test");
    assert_eq!(r["uri"], "/private/");
    assert_eq!(r["context"], "request");
    assert_eq!(r["pushes"], 1);
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    assert!(r["duration_ms"].is_u64());
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains("YWRtaW4tdGVzdA") && !text.contains(SKEY));
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

#[test]
fn audit_failure_policy() {
    let w = World::new(Backend::Embedded).unwrap();
    let broken = w.dir.path().join("missing-dir/audit.jsonl");
    // Not required: the grant stands, stderr says the record is missing.
    w.write_config(|c| c["audit"] = json!({"file": broken}));
    let (code, err) = w.request("dave", COOKIE);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("audit record not written") && err.contains("missing-dir"),
        "{err}"
    );
    // A deny stays a deny.
    let (code, err) = w.request("dave", "");
    assert_eq!(code, 1, "{err}");
    // Required: a grant without its record is denied.
    w.write_config(|c| c["audit"] = json!({"file": broken, "required": true}));
    let (code, err) = w.request("dave", COOKIE);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("outcome=deny") && err.contains("audit.required"),
        "{err}"
    );
    // A bad audit key is a config error naming it.
    w.write_config(|c| c["audit"] = json!({"file": "relative.jsonl"}));
    let (code, err) = w.request("dave", COOKIE);
    assert_eq!(code, 1);
    assert!(err.contains("key `audit.file`"), "{err}");
}
