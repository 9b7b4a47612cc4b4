//! Users from a real OpenLDAP `slapd` (started unprivileged in a temporary directory, StartTLS
//! with a CA made for the test, simple binds refused without TLS): the password is a bind as the
//! user, names are escaped (injection attempts match nobody), a disabled account is excluded by
//! the filter, the directory down denies with its reason whatever the fail mode, and a session
//! of a user removed from the directory (or whose password changed) ends after `ldap.recheck`.
//! Through the directory client itself, the real binary in the pipe mode with duo-sim, and
//! `serve` with its portal over HTTP (groups in `Remote-Groups` and a group rule), the groups
//! from a search or from `memberOf` as the `memberof` overlay keeps it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use check_duo::ldap::{LdapConfig, LdapDirectory, RawLdap};
use check_duo_core::ports::{Directory, DirectoryAnswer, DirectoryCheck};
use duo_sim::{Behaviours, PushKind, SimHandle, UserBehaviour};
use serde_json::{json, Value};

use support::process::{wait_until, write_json as write};
use support::serve::{http, sign_in_over_http, Jar, Serve};
use support::slapd::{self, Slapd, SUFFIX};
use support::world::start_sim;

const IKEY: &str = "DILDAPTESTXXXXXXXXXX";
const SKEY: &str = "ldapTestSecretKeyForTheSimulatorOnlyXXXX";
const APP: &str = "127.0.0.1:8080";
/// `ldap.recheck` in the tests that wait for it.
const RECHECK: u64 = 2;

fn directory(section: &Value, groups: bool) -> LdapDirectory {
    let raw: RawLdap = serde_json::from_value(section.clone()).unwrap();
    let cfg = LdapConfig::from_raw(&raw).unwrap_or_else(|(k, m)| panic!("{k}: {m}"));
    LdapDirectory::new(cfg, groups)
}

/// The answer alone, without the stamp.
fn ans(
    r: Result<DirectoryCheck, check_duo_core::ports::DirectoryError>,
) -> Result<DirectoryAnswer, String> {
    r.map(|c| c.answer).map_err(|e| e.to_string())
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// What the injection attempts are tried with: alice's password, so that a filter that matched
/// her would grant.
const INJECTIONS: &[&str] = &[
    "*",
    "*)(uid=*",
    "alice)(uid=*",
    "al*",
    "*alice",
    "\\",
    "alice\\",
    "alice\0",
    "\0",
    "a\\28b\\29",
    "o'brien\\2a",
    "älice",
    "alice)(|(uid=*",
    // The directory's matching ignores case and outer spaces; the gate's names do not.
    "ALICE",
    "Alice",
    "alice ",
    " alice",
];

#[test]
fn the_directory_client_binds_escapes_and_refuses() {
    if !slapd::available("ldap client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ldap = Slapd::start(&dir.path().join("slapd"));
    let d = directory(&ldap.section(), true);

    assert_eq!(
        ans(d.verify("alice", "pw-alice", soon())),
        Ok(DirectoryAnswer::Valid)
    );
    assert_eq!(d.groups_of("alice"), ["admins", "staff"]);
    assert_eq!(
        ans(d.verify("alice", "pw-bob", soon())),
        Ok(DirectoryAnswer::WrongPassword)
    );
    // Never an unauthenticated bind: refused before any call.
    assert_eq!(
        ans(d.verify("alice", "", soon())),
        Ok(DirectoryAnswer::WrongPassword)
    );
    assert_eq!(
        ans(d.verify("nobody", "pw-nobody", soon())),
        Ok(DirectoryAnswer::UnknownUser)
    );
    // dora is in the tree, but the filter excludes disabled accounts.
    assert_eq!(
        ans(d.verify("dora", "pw-dora", soon())),
        Ok(DirectoryAnswer::UnknownUser)
    );
    // Names with filter metacharacters are users like any other, found exactly.
    for user in ["o'brien*", "a(b)", "back\\slash"] {
        assert_eq!(
            ans(d.verify(user, &format!("pw-{user}"), soon())),
            Ok(DirectoryAnswer::Valid),
            "{user}"
        );
        assert_eq!(
            ans(d.lookup(user, soon())),
            Ok(DirectoryAnswer::Valid),
            "{user}"
        );
    }
    assert_eq!(d.groups_of("o'brien*"), ["staff"]);
    // Injection attempts match nobody, whatever password.
    for name in INJECTIONS {
        for pw in ["pw-alice", "pw-o'brien*", "pw-a(b)"] {
            assert_eq!(
                ans(d.verify(name, pw, soon())),
                Ok(DirectoryAnswer::UnknownUser),
                "{name:?} with {pw}"
            );
        }
        assert_eq!(
            ans(d.lookup(name, soon())),
            Ok(DirectoryAnswer::UnknownUser),
            "{name:?}"
        );
    }
    assert_eq!(ans(d.lookup("alice", soon())), Ok(DirectoryAnswer::Valid));
    // Lookups reuse the service connections: no new connection for each.
    let accepted = || ldap.log().matches(" ACCEPT from ").count();
    let before = accepted();
    assert!(before > 0, "slapd logs its connections: {}", ldap.log());
    for _ in 0..10 {
        assert_eq!(ans(d.lookup("bob", soon())), Ok(DirectoryAnswer::Valid));
    }
    assert_eq!(accepted(), before, "{}", ldap.log());
    assert_eq!(d.check_service(), Ok(()));
    // The stamp (`changed_attribute`) is the entry's, and changes with the password.
    let before = d.lookup("carol", soon()).unwrap().stamp;
    assert!(!before.is_empty() && before != "-", "{before:?}");
    assert_eq!(d.verify("carol", "pw-carol", soon()).unwrap().stamp, before);
    ldap.modify(&format!(
        "dn: uid=carol,ou=people,{SUFFIX}\nchangetype: modify\nreplace: userPassword\nuserPassword: pw-carol-2\n"
    ));
    assert_ne!(d.lookup("carol", soon()).unwrap().stamp, before);
    // The count `config check` shows: the enabled people.
    assert_eq!(d.count_users(1000).unwrap(), (6, false));

    // StartTLS with a CA that did not sign the server's certificate: refused.
    let mut wrong = ldap.section();
    wrong["ca_file"] = json!(ldap.wrong_ca_file);
    let e = directory(&wrong, false)
        .verify("alice", "pw-alice", soon())
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // Without StartTLS the server refuses the service bind (it needs TLS for simple binds):
    // the tests above did go over TLS.
    let mut plain = ldap.section();
    plain.as_object_mut().unwrap().remove("ca_file");
    plain["start_tls"] = json!(false);
    let e = directory(&plain, false)
        .verify("alice", "pw-alice", soon())
        .unwrap_err();
    assert!(e.to_string().contains("service bind"), "{e}");
    // A bad service password: an error that says so, not "no such user".
    let pw = dir.path().join("bad.pw");
    std::fs::write(&pw, "not-it\n").unwrap();
    let mut bad = ldap.section();
    bad["bind_password_file"] = json!(pw);
    let e = directory(&bad, false)
        .verify("alice", "pw-alice", soon())
        .unwrap_err();
    assert!(e.to_string().contains("service bind"), "{e}");

    // A server that accepts the connection and never answers: an error by the deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hung = ldap.section();
    hung["url"] = json!(format!(
        "ldap://127.0.0.1:{}",
        silent.local_addr().unwrap().port()
    ));
    hung["timeout"] = json!(1);
    let started = Instant::now();
    let e = directory(&hung, false)
        .verify("alice", "pw-alice", Instant::now() + Duration::from_secs(1))
        .unwrap_err();
    assert!(e.to_string().contains("no answer in time"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The directory down: an error, within the deadline.
    ldap.pause();
    let started = Instant::now();
    assert!(ans(d.verify("alice", "pw-alice", soon())).is_err());
    assert!(ans(d.lookup("alice", soon())).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Back: the pooled connections that died are replaced.
    ldap.resume();
    assert!(
        wait_until(Duration::from_secs(10), || ans(d.lookup("alice", soon()))
            == Ok(DirectoryAnswer::Valid)),
        "{}",
        ldap.log()
    );
}

fn behaviours() -> Behaviours {
    let approve = UserBehaviour {
        delay_ms: 50,
        ..UserBehaviour::push(PushKind::Approve)
    };
    let mut b = Behaviours::default();
    for u in ["alice", "bob", "carol", "o'brien*", "a(b)"] {
        b = b.with_user(u, approve.clone());
    }
    b
}

fn manual() -> Behaviours {
    let mut b = Behaviours::default();
    for u in ["alice", "bob", "carol"] {
        b = b.with_user(u, UserBehaviour::push(PushKind::Manual));
    }
    b
}

/// A temp dir, slapd, duo-sim, and a config of the directory's users (no `usernames`) with
/// `ldap.recheck` `recheck`,
/// `failmode: "safe"` (the directory down must deny all the same), sessions in the dir.
fn world(behaviours: Behaviours, recheck: u64) -> (tempfile::TempDir, Slapd, SimHandle, Value) {
    world_of(Slapd::start, behaviours, recheck)
}

/// [`world`] with the directory `start` starts.
fn world_of(
    start: fn(&Path) -> Slapd,
    behaviours: Behaviours,
    recheck: u64,
) -> (tempfile::TempDir, Slapd, SimHandle, Value) {
    let dir = tempfile::tempdir().unwrap();
    let ldap = start(&dir.path().join("slapd"));
    let (sim, ca) = start_sim(IKEY, SKEY, behaviours, dir.path());
    let mut section = ldap.section();
    section["recheck"] = json!(recheck);
    let cfg = json!({
        "ldap": section,
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca, "push_timeout": 10,
                "failmode": "safe"},
        "cache": {"path": dir.path().join("sessions.db")},
        "session": {"name": "formsession", "expiry": 3600},
        "limits": {"push_cooldown": 0, "pair_failures": 100, "user_failures": 100, "ip_failures": 100},
    });
    (dir, ldap, sim, cfg)
}

fn pipe(config: &Path, user: &str, password: &str, cookie: &str) -> support::process::Ran {
    support::process::pipe_request(config, user, password, cookie)
}

#[test]
fn the_pipe_mode_signs_in_directory_users_and_denies_the_rest() {
    if !slapd::available("ldap pipe mode") {
        return;
    }
    let (dir, mut ldap, sim, cfg) = world(behaviours(), 300);
    let config = write(&dir.path().join("config.json"), &cfg);

    for user in ["alice", "o'brien*", "a(b)"] {
        let cookie = format!("{}-cookie", user.len());
        let out = pipe(&config, user, &format!("pw-{user}"), &cookie);
        assert!(out.granted, "{user}: {}", out.log);
        assert!(out.log.contains("event=push_approved"), "{}", out.log);
        // Cached: the warm path, no Duo call and no directory call.
        let calls = sim.counters().duo_calls();
        let out = pipe(&config, user, &format!("pw-{user}"), &cookie);
        assert!(out.log.contains("event=cache_hit"), "{}", out.log);
        assert_eq!(sim.counters().duo_calls(), calls);
    }

    // Everything below is denied without a push.
    let calls = sim.counters().duo_calls();
    let deny = |user: &str, password: &str, event: &str| {
        let out = pipe(&config, user, password, &format!("{}-other", user.len()));
        assert!(!out.granted, "{user:?}: {}", out.log);
        assert!(
            out.log.contains(&format!("event={event}")),
            "{user:?}: {}",
            out.log
        );
        out
    };
    deny("bob", "pw-alice", "password_failure");
    // The pipe's input refuses an empty password before the gate (which would too).
    deny("bob", "", "bad_input");
    deny("nobody", "pw-nobody", "unknown_user");
    deny("dora", "pw-dora", "unknown_user");
    for name in INJECTIONS {
        // The pipe's input refuses a NUL itself; the rest reach the directory and match nobody.
        let out = pipe(&config, name, "pw-alice", "injection");
        assert!(!out.granted, "{name:?}: {}", out.log);
        assert!(
            out.log.contains("event=unknown_user") || out.log.contains("event=bad_input"),
            "{name:?}: {}",
            out.log
        );
    }
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");

    // The directory down: a deny that says so, though `failmode` is "safe" (Duo's failmode,
    // never the directory's); still no push. A fresh session needs no directory.
    ldap.pause();
    let out = deny("bob", "pw-bob", "directory_unreachable");
    assert!(out.log.contains("directory unavailable"), "{}", out.log);
    assert!(pipe(&config, "alice", "pw-alice", "5-cookie").granted);
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");
    ldap.resume();
    assert!(pipe(&config, "bob", "pw-bob", "3-cookie").granted);

    // StartTLS with a CA that did not sign the server's certificate: refused, and so denied
    // (the directory cannot be asked), without a push.
    let mut wrong = cfg.clone();
    wrong["ldap"]["ca_file"] = json!(ldap.wrong_ca_file);
    let wrong = write(&dir.path().join("wrong-ca.json"), &wrong);
    let calls = sim.counters().duo_calls();
    let out = pipe(&wrong, "carol", "pw-carol", "5-other");
    assert!(!out.granted, "{}", out.log);
    assert!(
        out.log.contains("event=directory_unreachable") && out.log.contains("certificate"),
        "{}",
        out.log
    );
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");
}

#[test]
fn the_pipe_mode_rechecks_sessions_with_the_directory() {
    if !slapd::available("ldap pipe recheck") {
        return;
    }
    let (dir, mut ldap, sim, cfg) = world(behaviours(), RECHECK);
    let config = write(&dir.path().join("config.json"), &cfg);
    for user in ["alice", "bob", "carol"] {
        let out = pipe(&config, user, &format!("pw-{user}"), user);
        assert!(out.granted, "{user}: {}", out.log);
    }
    let calls = sim.counters().duo_calls();

    // carol leaves the directory, bob's password changes in it.
    ldap.modify(&format!(
        "dn: uid=carol,ou=people,{SUFFIX}\nchangetype: delete\n"
    ));
    ldap.modify(&format!(
        "dn: uid=bob,ou=people,{SUFFIX}\nchangetype: modify\nreplace: userPassword\nuserPassword: pw-bob-2\n"
    ));
    let changed = Instant::now();
    // Within the re-check interval (and the time a request takes), both are refused.
    let ended = |user: &str| {
        wait_until(Duration::from_secs(RECHECK + 10), || {
            !pipe(&config, user, &format!("pw-{user}"), user).granted
        })
    };
    assert!(ended("carol"), "carol's session outlived her entry");
    assert!(ended("bob"), "bob's session outlived his password");
    // Both within the bound, with room for a loaded machine's slow processes.
    assert!(
        changed.elapsed() < Duration::from_secs(RECHECK + 20),
        "{:?}",
        changed.elapsed()
    );
    let out = pipe(&config, "carol", "pw-carol", "carol");
    assert!(out.log.contains("event=unknown_user"), "{}", out.log);
    // alice goes on, re-checked by a bind, without a push.
    let out = pipe(&config, "alice", "pw-alice", "alice");
    assert!(out.granted, "{}", out.log);
    assert!(out.log.contains("event=cache_hit"), "{}", out.log);
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");
    // The re-check is due and the directory is down: denied, saying so.
    std::thread::sleep(Duration::from_secs(RECHECK));
    ldap.pause();
    let out = pipe(&config, "alice", "pw-alice", "alice");
    assert!(!out.granted, "{}", out.log);
    assert!(
        out.log.contains("event=directory_unreachable"),
        "{}",
        out.log
    );
    ldap.resume();
    let out = pipe(&config, "alice", "pw-alice", "alice");
    assert!(
        out.granted && out.log.contains("re-checked with the directory"),
        "{}",
        out.log
    );
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");
    // bob's new password signs him in again (a push).
    assert!(pipe(&config, "bob", "pw-bob-2", "bob").granted);
}

#[test]
fn serve_signs_in_directory_users_with_their_groups() {
    if !slapd::available("ldap serve") {
        return;
    }
    let (dir, mut ldap, sim, mut cfg) = world(manual(), RECHECK);
    // Groups from the config and the directory together.
    cfg["groups"] = json!({"ops": ["bob"]});
    cfg["ldap"]["name_attribute"] = json!("displayName");
    cfg["ldap"]["email_attribute"] = json!("mail");
    cfg["server"] = json!({"rules": [
        {"path": "/admin/*", "subject": "group:admins", "policy": "two_factor"},
        {"path": "/admin/*", "policy": "deny"}
    ]});
    let s = Serve::start(&dir.path().join("serve"), cfg, false);
    let ask = |path: &str, cookie: &str| s.auth_request(&format!("http://{APP}{path}"), cookie);
    let sign_in_url = || {
        let r = ask("/private/", "");
        assert_eq!(r.status, 401);
        r.header("location").unwrap().to_string()
    };
    let sign_in = |user: &str| {
        let jar = sign_in_over_http(&sign_in_url(), user, &format!("pw-{user}"), &sim);
        jar.session_cookie().unwrap()
    };
    let alice = sign_in("alice");
    let bob = sign_in("bob");
    let carol = sign_in("carol");
    let r = ask("/private/", &alice);
    assert_eq!(
        (r.status, r.header("remote-user"), r.header("remote-groups")),
        (200, Some("alice"), Some("admins,staff"))
    );
    assert_eq!(
        (r.header("remote-name"), r.header("remote-email")),
        (Some("Alice Liddell"), Some("alice@example.org"))
    );
    let r = ask("/private/", &bob);
    assert_eq!(r.header("remote-groups"), Some("ops,staff"));
    assert_eq!(
        (r.header("remote-name"), r.header("remote-email")),
        (None, Some("bob@example.org"))
    );
    assert_eq!(ask("/private/", &carol).header("remote-name"), None);
    assert_eq!(ask("/admin/x", &alice).status, 200);
    assert_eq!(ask("/admin/x", &bob).status, 403);
    let metrics = http("GET", &s.url("/metrics"), &[], None).body;
    assert!(
        metrics
            .contains(r#"check_duo_directory_call_seconds_count{call="verify",answer="valid"} 3"#),
        "{metrics}"
    );

    // A wrong password, an unknown or disabled user, an injection: no push, no session.
    let calls = sim.counters().duo_calls();
    for (user, pw) in [
        ("carol", "pw-alice"),
        ("nobody", "pw-nobody"),
        ("dora", "pw-dora"),
        ("*", "pw-alice"),
        ("*)(uid=*", "pw-alice"),
        ("alice\\", "pw-alice"),
        ("alice\0", "pw-alice"),
    ] {
        let mut jar = Jar::default();
        let r = jar.post_password(&sign_in_url(), user, pw, &[("factor", "push")]);
        assert_ne!(r.status, 303, "{user:?}: {}", r.body);
        assert!(jar.session().is_none(), "{user:?}");
    }
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");

    // bob leaves the directory, carol's password changes (and with it the entry's stamp,
    // `changed_attribute`): their sessions end within the re-check interval; alice's goes on.
    assert_eq!(ask("/private/", &carol).status, 200);
    ldap.modify(&format!(
        "dn: uid=bob,ou=people,{SUFFIX}\nchangetype: delete\n"
    ));
    ldap.modify(&format!(
        "dn: uid=carol,ou=people,{SUFFIX}\nchangetype: modify\nreplace: userPassword\nuserPassword: pw-carol-2\n"
    ));
    for (who, cookie) in [("bob", &bob), ("carol", &carol)] {
        assert!(
            wait_until(Duration::from_secs(RECHECK + 10), || ask(
                "/private/",
                cookie
            )
            .status
                == 401),
            "{who}'s session outlived the change\n{}",
            s.log()
        );
    }
    std::thread::sleep(Duration::from_secs(RECHECK));
    assert_eq!(ask("/private/", &alice).status, 200, "{}", s.log());
    // The directory down when alice's re-check is due: 503, never a grant, logged with its
    // reason; a sign-in is refused saying why, without a push; back up, her session goes on.
    std::thread::sleep(Duration::from_secs(RECHECK));
    ldap.pause();
    assert_eq!(ask("/private/", &alice).status, 503);
    let mut jar = Jar::default();
    let r = jar.post_password(&sign_in_url(), "alice", "pw-alice", &[("factor", "push")]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("directory cannot be reached"), "{}", r.body);
    assert_eq!(sim.counters().duo_calls(), calls, "a push was sent");
    assert!(
        s.log().contains("event=directory_unreachable"),
        "{}",
        s.log()
    );
    ldap.resume();
    assert!(wait_until(Duration::from_secs(10), || ask(
        "/private/",
        &alice
    )
    .status
        == 200));
    assert_eq!(
        ask("/admin/x", &alice).header("remote-groups"),
        Some("admins,staff")
    );
    s.stop();
}

/// Groups from `memberOf` as the `memberof` overlay keeps it (an operational attribute, returned
/// only when asked for by name), the groups being `groupOfNames` entries with `member` values.
#[test]
fn groups_from_the_memberof_overlay() {
    if !slapd::memberof_available("ldap memberOf") {
        return;
    }
    let (dir, ldap, sim, mut cfg) = world_of(Slapd::start_with_memberof, manual(), 300);
    let section = cfg["ldap"].as_object_mut().unwrap();
    section.remove("group_filter");
    section.remove("group_base_dn");
    section.insert("group_attribute".into(), json!("memberOf"));
    let section = cfg["ldap"].clone();

    // The directory client: the first RDN of each DN; a user in two groups, in one, in none.
    let d = directory(&section, true);
    assert_eq!(
        ans(d.verify("alice", "pw-alice", soon())),
        Ok(DirectoryAnswer::Valid)
    );
    assert_eq!(d.groups_of("alice"), ["admins", "staff"]);
    assert_eq!(ans(d.lookup("bob", soon())), Ok(DirectoryAnswer::Valid));
    assert_eq!(d.groups_of("bob"), ["staff"]);
    assert_eq!(ans(d.lookup("carol", soon())), Ok(DirectoryAnswer::Valid));
    assert!(d.groups_of("carol").is_empty());

    // `serve`: the groups in `Remote-Groups` and a rule for one of them.
    cfg["server"] = json!({"rules": [
        {"path": "/admin/*", "subject": "group:admins", "policy": "two_factor"},
        {"path": "/admin/*", "policy": "deny"}
    ]});
    let s = Serve::start(&dir.path().join("serve"), cfg, false);
    let ask = |path: &str, cookie: &str| s.auth_request(&format!("http://{APP}{path}"), cookie);
    let sign_in = |user: &str| {
        let r = ask("/private/", "");
        assert_eq!(r.status, 401);
        let url = r.header("location").unwrap().to_string();
        let jar = sign_in_over_http(&url, user, &format!("pw-{user}"), &sim);
        jar.session_cookie().unwrap()
    };
    for (user, groups, admin) in [
        ("alice", "admins,staff", 200),
        ("bob", "staff", 403),
        ("carol", "", 403),
    ] {
        let cookie = sign_in(user);
        let r = ask("/private/", &cookie);
        assert_eq!(
            (r.status, r.header("remote-user"), r.header("remote-groups")),
            (200, Some(user), Some(groups)),
            "{}",
            s.log()
        );
        assert_eq!(ask("/admin/x", &cookie).status, admin, "{user}");
    }
    s.stop();

    // The overlay follows writes of `member`: carol joins admins, bob leaves staff.
    ldap.modify(&format!(
        "dn: cn=admins,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=carol,ou=people,{SUFFIX}\n\n\
         dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{SUFFIX}\n"
    ));
    assert_eq!(ans(d.lookup("carol", soon())), Ok(DirectoryAnswer::Valid));
    assert_eq!(d.groups_of("carol"), ["admins"]);
    assert_eq!(ans(d.lookup("bob", soon())), Ok(DirectoryAnswer::Valid));
    assert!(d.groups_of("bob").is_empty());
}

/// A session that outlived a restart of `serve`, with no groups configured: the user's name and
/// address (`name_attribute`, `email_attribute`) are asked for at its first request, not at the
/// session's next re-check.
#[test]
fn a_restarted_daemon_asks_for_the_name_and_address_at_the_first_request() {
    if !slapd::available("ldap serve restart") {
        return;
    }
    let (dir, _ldap, sim, mut cfg) = world(manual(), 300);
    let section = cfg["ldap"].as_object_mut().unwrap();
    section.remove("group_filter");
    section.remove("group_base_dn");
    section.insert("name_attribute".into(), json!("displayName"));
    section.insert("email_attribute".into(), json!("mail"));
    let mut s = Serve::start(&dir.path().join("serve"), cfg, false);
    let ask = |s: &Serve, cookie: &str| s.auth_request(&format!("http://{APP}/private/"), cookie);
    let r = ask(&s, "");
    assert_eq!(r.status, 401);
    let url = r.header("location").unwrap().to_string();
    let alice = sign_in_over_http(&url, "alice", "pw-alice", &sim)
        .session_cookie()
        .unwrap();
    let who = |r: &support::serve::Reply| {
        (
            r.status,
            r.header("remote-name").map(str::to_string),
            r.header("remote-email").map(str::to_string),
        )
    };
    let want = (
        200,
        Some("Alice Liddell".to_string()),
        Some("alice@example.org".to_string()),
    );
    assert_eq!(who(&ask(&s, &alice)), want);
    s.restart(|_| {});
    assert_eq!(who(&ask(&s, &alice)), want, "{}", s.log());
    assert_eq!(who(&ask(&s, &alice)), want);
    s.stop();
}

#[test]
fn config_check_reports_the_directory() {
    if !slapd::available("ldap config check") {
        return;
    }
    let (dir, mut ldap, _sim, cfg) = world(behaviours(), 300);
    let config = write(&dir.path().join("config.json"), &cfg);
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_check-duo"))
            .args(["config", "check", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    for want in [
        "reachable, StartTLS",
        &format!("the service bind as \"{}\" works", slapd::SERVICE_DN),
        // alice, bob, carol, o'brien*, a(b), back\slash; not dora (disabled).
        "finds 6 user(s) under \"ou=people,dc=example,dc=test\"",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // A service password file others can read: a warning naming it.
    support::process::chmod(&ldap.service_password_file, 0o644);
    let (_, text) = check();
    assert!(
        text.contains("key `ldap.bind_password_file`") && text.contains("others can read"),
        "{text}"
    );
    support::process::chmod(&ldap.service_password_file, 0o640);
    let (_, text) = check();
    assert!(!text.contains("others can read"), "{text}");
    // A wrong service password, then the directory down: errors that say which.
    let pw = dir.path().join("bad.pw");
    std::fs::write(&pw, "not-it\n").unwrap();
    let mut bad = cfg.clone();
    bad["ldap"]["bind_password_file"] = json!(pw);
    write(&config, &bad);
    let (ok, text) = check();
    assert!(
        !ok && text.contains("service bind") && text.contains("refused"),
        "{text}"
    );
    write(&config, &cfg);
    ldap.pause();
    let (ok, text) = check();
    assert!(!ok && text.contains("not reachable"), "{text}");
}
