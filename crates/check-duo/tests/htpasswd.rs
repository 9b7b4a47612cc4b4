//! Users from an htpasswd file written by Apache's own `htpasswd` tool, through the real binary:
//! the pipe mode signs them in, weak or malformed entries are config errors naming the file and
//! the line, and `serve` reads the file again when it changes (a new user signs in, a removed
//! user's session ends within the poll interval). Groups reach `Remote-Groups` and the rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use duo_sim::{Behaviours, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::process::{wait_until, write_json as write};
use support::serve::{sign_in_over_http, Serve};
use support::world::start_sim;

const IKEY: &str = "DIHTPASSWDTESTXXXXXX";
const SKEY: &str = "htpasswdTestSecretKeyForTheSimulatorOnly";
const HTPASSWD: &str = "/usr/bin/htpasswd";
const APP: &str = "127.0.0.1:8080";

fn tool(test: &str) -> bool {
    support::tools_present(test, &[("htpasswd (apache2-utils)", HTPASSWD)])
}

/// `htpasswd -b [-c] FLAG FILE USER PASSWORD`: the file as Apache's tool writes it.
fn htpasswd(file: &Path, flag: &str, user: &str, password: &str) {
    let mut cmd = Command::new(HTPASSWD);
    if !file.exists() {
        cmd.arg("-c");
    }
    // bcrypt at the lowest cost: the debug binary hashes on every cold request.
    let cost: &[&str] = if flag == "-B" { &["-C", "4"] } else { &[] };
    let out = cmd
        .arg("-b")
        .arg(flag)
        .args(cost)
        .arg(file)
        .args([user, password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn behaviours() -> Behaviours {
    let approve = UserBehaviour {
        delay_ms: 50,
        ..UserBehaviour::push(PushKind::Approve)
    };
    Behaviours::default()
        .with_user("alice", approve.clone())
        .with_user("bob", approve.clone())
        .with_user("carol", UserBehaviour::push(PushKind::Manual))
        .with_user("dave", UserBehaviour::push(PushKind::Manual))
}

/// A temp dir, duo-sim, an htpasswd file in the dir with `users` (`htpasswd` flag, user,
/// password), and a config of these users asking the simulator, its sessions in the dir.
fn world(users: &[(&str, &str, &str)]) -> (tempfile::TempDir, SimHandle, PathBuf, Value) {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours(), dir.path());
    let file = dir.path().join("users.htpasswd");
    for (flag, user, password) in users {
        htpasswd(&file, flag, user, password);
    }
    let cfg = json!({
        "htpasswd": file,
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca, "push_timeout": 10},
        "cache": {"path": dir.path().join("sessions.db")},
    });
    (dir, sim, file, cfg)
}

fn pipe(config: &Path, user: &str, password: &str) -> support::process::Ran {
    support::process::pipe_request(config, user, password, &format!("{user}-cookie"))
}

#[test]
fn the_pipe_mode_signs_in_users_of_an_htpasswd_file() {
    if !tool("htpasswd pipe mode") {
        return;
    }
    let (dir, sim, file, mut base) = world(&[("-B", "alice", "pw-alice"), ("-5", "bob", "pw-bob")]);
    base["session"] = json!({"name": "formsession", "expiry": 3600});
    let config = write(&dir.path().join("config.json"), &base);
    for (user, pw) in [("alice", "pw-alice"), ("bob", "pw-bob")] {
        let out = pipe(&config, user, pw);
        assert!(out.granted, "{user}: {}", out.log);
        assert!(!pipe(&config, user, "wrong").granted, "{user}");
        // Cached: the warm path, no Duo call.
        let calls = sim.counters().duo_calls();
        assert!(pipe(&config, user, pw).log.contains("event=cache_hit"));
        assert_eq!(sim.counters().duo_calls(), calls);
    }

    // A weak entry (htpasswd's default, APR1-MD5) is its user's error, naming the line; the
    // pipe mode reads only the requesting user's line, so alice still signs in, and
    // `config check` refuses the whole file.
    htpasswd(&file, "-m", "carol", "pw-carol");
    let out = pipe(&config, "carol", "pw-carol");
    assert!(!out.granted);
    assert!(
        out.log.contains("users.htpasswd line 3") && out.log.contains("APR1-MD5"),
        "{}",
        out.log
    );
    assert!(
        out.log.contains("htpasswd -B"),
        "how to re-hash: {}",
        out.log
    );
    assert!(pipe(&config, "alice", "pw-alice").granted);
    let check = Command::new(env!("CARGO_BIN_EXE_check-duo"))
        .args(["config", "check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("users.htpasswd line 3"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A user in both the file and `usernames` is a config error.
    htpasswd(&file, "-B", "carol", "pw-carol");
    let mut both = base.clone();
    both["usernames"] =
        json!({"alice": "$2y$04$abcdefghijklmnopqrstuu5Qw3dFHkd5e0vGlcNyFJ7WYa2XJ0pMy"});
    let config = write(&dir.path().join("both.json"), &both);
    let out = Command::new(env!("CARGO_BIN_EXE_check-duo"))
        .args(["config", "check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("htpasswd") && text.contains("\"alice\" is also in `usernames`"),
        "{text}"
    );
    // In the pipe mode, for that user; another user of the file is not concerned.
    let out = pipe(&config, "alice", "pw-alice");
    assert!(
        !out.granted && out.log.contains("alice") && out.log.contains("is also in `usernames`"),
        "{}",
        out.log
    );
    assert!(pipe(&config, "bob", "pw-bob").granted);
}

#[test]
fn serve_reads_the_file_again_and_groups_reach_the_headers_and_rules() {
    if !tool("htpasswd serve") {
        return;
    }
    let (dir, sim, file, mut cfg) =
        world(&[("-B", "carol", "pw-carol"), ("-2", "dave", "pw-dave")]);
    cfg["groups"] = json!({"admins": ["carol"], "staff": ["carol", "dave"]});
    cfg["session"] = json!({"expiry": 3600});
    cfg["limits"] = json!({"push_cooldown": 0});
    cfg["server"] = json!({"rules": [
        {"path": "/admin/*", "subject": "group:admins", "policy": "two_factor"},
        {"path": "/admin/*", "policy": "deny"}
    ]});
    let s = Serve::start(&dir.path().join("serve"), cfg, false);
    let ask = |path: &str, cookie: &str| s.auth_request(&format!("http://{APP}{path}"), cookie);
    let sign_in = |user: &str, pw: &str| {
        let r = ask("/private/", "");
        assert_eq!(r.status, 401);
        let jar = sign_in_over_http(r.header("location").unwrap(), user, pw, &sim);
        jar.session_cookie().unwrap()
    };
    let carol = sign_in("carol", "pw-carol");
    let dave = sign_in("dave", "pw-dave");
    let r = ask("/private/", &carol);
    assert_eq!(
        (r.status, r.header("remote-user"), r.header("remote-groups")),
        (200, Some("carol"), Some("admins,staff"))
    );
    assert_eq!(
        ask("/private/", &dave).header("remote-groups"),
        Some("staff")
    );
    // The rule for admins: carol passes, dave is refused, nobody is sent to sign in.
    assert_eq!(ask("/admin/x", &carol).status, 200);
    assert_eq!(ask("/admin/x", &dave).status, 403);
    let anonymous = ask("/admin/x", "");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("location").is_some());

    // dave's password changes in the file: his session ends within the poll interval, and the
    // new password signs him in. carol's session is untouched.
    let before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        before
            .lines()
            .filter(|l| !l.starts_with("dave:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    htpasswd(&file, "-5", "dave", "pw-dave-2");
    assert!(
        wait_until(Duration::from_secs(10), || ask("/private/", &dave).status
            == 401),
        "dave's session outlived his password"
    );
    assert_eq!(ask("/private/", &carol).status, 200);
    let dave = sign_in("dave", "pw-dave-2");
    assert_eq!(ask("/private/", &dave).status, 200);
    // A broken line takes the file's users away until it is fixed: never a grant from it.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}broken line\n")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || ask(
        "/private/",
        &carol
    )
    .status
        == 401));
    assert!(s.log().contains("line 3: not `user:hash`"), "{}", s.log());
    std::fs::write(&file, &good).unwrap();
    assert!(wait_until(Duration::from_secs(10), || ask(
        "/private/",
        &carol
    )
    .status
        == 200));
    s.stop();
}

/// 10,000 users (over the old 1 MiB cap) in `usernames`, and as many in an htpasswd file, through
/// the binary: the pipe mode signs in the one user, the warm request is a cache hit, and the
/// other users' entries are not read (one of them broken does not deny this user), while
/// `config check` reads them all and refuses the broken one.
#[test]
fn ten_thousand_users_through_the_binary() {
    if !tool("ten thousand users") {
        return;
    }
    let (dir, sim, file, mut cfg) = world(&[("-B", "alice", "pw-alice")]);
    cfg["session"] = json!({"name": "formsession", "expiry": 3600});
    // Hashes as long as real ones; nobody signs in with them.
    let argon = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                 Z3JvdW5kdHJ1dGhncm91bmR0cnV0aGdyb3VuZHRydXRo";
    let bcrypt = "$2y$05$9CjMY.IHgsYKSidpxQVY5ufJZGc4ks6zb5u0I5FIHu0KOE2ncl6Aa";
    let mut many = serde_json::Map::new();
    for i in 0..10_000 {
        many.insert(format!("user{i:05}"), json!(argon));
    }
    let mut with_usernames = cfg.clone();
    with_usernames.as_object_mut().unwrap().remove("htpasswd");
    many.insert("bob".into(), json!(support::world::argon2_hash("pw-bob")));
    with_usernames["usernames"] = Value::Object(many);
    let big = write(&dir.path().join("big.json"), &with_usernames);
    assert!(std::fs::metadata(&big).unwrap().len() > 1 << 20);

    // alice's file: her line among 10,000 others, written after hers.
    let mut lines = std::fs::read_to_string(&file).unwrap();
    for i in 0..10_000 {
        lines.push_str(&format!("user{i:05}:{bcrypt}\n"));
    }
    std::fs::write(&file, &lines).unwrap();
    let small = write(&dir.path().join("config.json"), &cfg);

    for (config, user, pw) in [(&big, "bob", "pw-bob"), (&small, "alice", "pw-alice")] {
        let out = pipe(config, user, pw);
        assert!(out.granted, "{user}: {}", out.log);
        let calls = sim.counters().duo_calls();
        let warm = pipe(config, user, pw);
        assert!(warm.log.contains("event=cache_hit"), "{}", warm.log);
        assert_eq!(sim.counters().duo_calls(), calls);
        assert!(!pipe(config, user, "wrong").granted);
        let check = Command::new(env!("CARGO_BIN_EXE_check-duo"))
            .args(["config", "check", "-c"])
            .arg(config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(text.contains("10001 user(s)"), "{text}");
    }

    // A broken line of another user: alice still signs in; `config check` names the line.
    std::fs::write(
        &file,
        format!("{lines}user10000:$apr1$L.uqVY/L$VhwY98cFoaBkB77YVLeTS0\n"),
    )
    .unwrap();
    let out = pipe(&small, "alice", "pw-alice");
    assert!(out.granted, "{}", out.log);
    let check = Command::new(env!("CARGO_BIN_EXE_check-duo"))
        .args(["config", "check", "-c"])
        .arg(&small)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(
        text.contains("line 10002") && text.contains("APR1-MD5"),
        "{text}"
    );
    // alice's own line broken: an error naming the file and the line, never a grant.
    std::fs::write(&file, lines.replacen("alice:$2y$", "alice:$2y$05$short", 1)).unwrap();
    let out = pipe(&small, "alice", "pw-alice");
    assert!(!out.granted);
    assert!(out.log.contains("users.htpasswd line 1"), "{}", out.log);
}
