//! Users from a directory (the `Directory` port): a bind checks the password, an empty one never
//! reaches it, the directory down denies whatever the fail mode (and is no failed password), and
//! a session is re-checked with the directory once `recheck` has passed since it last accepted
//! the user: by a bind where requests carry the password, by a lookup where they do not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::support::*;
use crate::decision::Event;
use crate::policy::{DirectoryPolicy, FailMode};
use crate::ports::{Directory, DirectoryAnswer, DirectoryCheck, DirectoryError};
use crate::{Gate, Request};

/// A directory of `user → password`, that can be down, recording its calls. An entry's stamp is
/// its password (as `pwdLastSet` would be: it changes with it).
#[derive(Default)]
struct FakeDirectory {
    users: Mutex<BTreeMap<String, String>>,
    down: Mutex<bool>,
    calls: Mutex<Vec<String>>,
}

impl FakeDirectory {
    fn with(users: &[(&str, &str)]) -> Self {
        let d = FakeDirectory::default();
        for (u, p) in users {
            d.users.lock().unwrap().insert(u.to_string(), p.to_string());
        }
        d
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn answer(&self, call: String, user: &str) -> Result<Option<String>, DirectoryError> {
        self.calls.lock().unwrap().push(call);
        if *self.down.lock().unwrap() {
            return Err(DirectoryError("connection refused".into()));
        }
        Ok(self.users.lock().unwrap().get(user).cloned())
    }
}

impl Directory for FakeDirectory {
    fn verify(&self, user: &str, pw: &str, _: Instant) -> Result<DirectoryCheck, DirectoryError> {
        Ok(match self.answer(format!("verify:{user}:{pw}"), user)? {
            None => DirectoryCheck::new(DirectoryAnswer::UnknownUser, ""),
            Some(p) if p == pw => DirectoryCheck::new(DirectoryAnswer::Valid, p),
            Some(p) => DirectoryCheck::new(DirectoryAnswer::WrongPassword, p),
        })
    }

    fn lookup(&self, user: &str, _: Instant) -> Result<DirectoryCheck, DirectoryError> {
        Ok(match self.answer(format!("lookup:{user}"), user)? {
            None => DirectoryCheck::new(DirectoryAnswer::UnknownUser, ""),
            Some(p) => DirectoryCheck::new(DirectoryAnswer::Valid, p),
        })
    }
}

const RECHECK: u64 = 300;

fn world() -> World {
    World::with(|p| {
        p.directory = Some(DirectoryPolicy {
            recheck: Duration::from_secs(RECHECK),
            timeout: Duration::from_secs(5),
        })
    })
}

fn gate<'a>(w: &'a World, d: &'a FakeDirectory) -> Gate<'a> {
    Gate {
        directory: Some(d),
        ..w.gate()
    }
}

fn carol(pw: &str) -> Request {
    req("carol", pw, Some(COOKIE))
}

#[test]
fn a_bind_checks_the_password_and_the_warm_path_asks_nothing() {
    let w = world();
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::PushApproved);
    assert_eq!(d.calls(), ["verify:carol:pw-carol"]);
    let duo = w.duo.calls();
    for _ in 0..3 {
        assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::CacheHit);
    }
    assert_eq!(d.calls().len(), 1, "the warm path asked the directory");
    assert_eq!(w.duo.calls(), duo);
    // The tag binds the password, as for the config's users.
    assert!(gate(&w, &d).authorize(&carol("pw-bob")).is_none());
    // The config's users are never asked of the directory.
    assert_grant(&gate(&w, &d).drive(&alice_with("c2")), Event::PushApproved);
    assert_eq!(d.calls().len(), 1);
    // The factor suffix is split off before the bind, as for the config's users.
    let r = req("carol", "pw-carol,push", Some("c3"));
    assert_grant(&gate(&w, &d).drive(&r), Event::PushApproved);
    assert_eq!(d.calls().last().unwrap(), "verify:carol:pw-carol");
}

#[test]
fn wrong_unknown_and_empty_passwords() {
    let w = world();
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    assert_deny(&gate(&w, &d).drive(&carol("nope")), Event::PasswordFailure);
    assert_deny(
        &gate(&w, &d).drive(&req("dave", "pw", Some(COOKIE))),
        Event::UnknownUser,
    );
    let calls = d.calls().len();
    // Never an unauthenticated bind: an empty password is refused before any call.
    assert_deny(&gate(&w, &d).drive(&carol("")), Event::PasswordFailure);
    assert_deny(
        &gate(&w, &d).check_password(&carol("")),
        Event::PasswordFailure,
    );
    assert_eq!(d.calls().len(), calls);
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
}

#[test]
fn the_directory_down_denies_whatever_the_failmode_and_bans_nobody() {
    let mut w = world();
    w.policy.factor.failmode = FailMode::Safe;
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    *d.down.lock().unwrap() = true;
    for _ in 0..(w.policy.limits.pair_failures + 2) {
        let out = gate(&w, &d).drive(&carol("pw-carol"));
        assert_deny(&out, Event::DirectoryUnreachable);
        assert!(out.reason.contains("connection refused"), "{out:?}");
    }
    assert!(w.duo.calls().is_empty());
    *d.down.lock().unwrap() = false;
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::PushApproved);
}

#[test]
fn a_session_is_rechecked_by_a_bind_once_the_interval_has_passed() {
    let w = world();
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::PushApproved);
    w.advance(RECHECK - 1);
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::CacheHit);
    assert_eq!(d.calls().len(), 1);
    w.advance(1);
    let duo = w.duo.calls();
    let out = gate(&w, &d).drive(&carol("pw-carol"));
    assert_grant(&out, Event::CacheHit);
    assert!(out.reason.contains("re-checked"), "{out:?}");
    assert_eq!(d.calls().len(), 2);
    assert_eq!(w.duo.calls(), duo, "a re-check is no new push");
    // The next interval starts at the re-check.
    w.advance(RECHECK - 1);
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::CacheHit);
    assert_eq!(d.calls().len(), 2);
    // Due, and the directory is down: a deny that says so.
    w.advance(1);
    *d.down.lock().unwrap() = true;
    assert_deny(
        &gate(&w, &d).drive(&carol("pw-carol")),
        Event::DirectoryUnreachable,
    );
    *d.down.lock().unwrap() = false;
    // The password changed in the directory: the session ends at the re-check.
    d.users
        .lock()
        .unwrap()
        .insert("carol".into(), "pw-carol-2".into());
    assert_deny(
        &gate(&w, &d).drive(&carol("pw-carol")),
        Event::PasswordFailure,
    );
    assert!(w.store.sessions().is_empty(), "the session was not ended");
    assert_grant(
        &gate(&w, &d).drive(&carol("pw-carol-2")),
        Event::PushApproved,
    );
}

#[test]
fn without_the_password_the_recheck_is_a_lookup() {
    let w = World::with(|p| {
        p.session.bound_to_password = false;
        p.directory = Some(DirectoryPolicy {
            recheck: Duration::from_secs(RECHECK),
            timeout: Duration::from_secs(5),
        });
    });
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    assert_grant(&gate(&w, &d).drive(&carol("pw-carol")), Event::PushApproved);
    let token_only = Request {
        user: String::new(),
        password: None,
        ..carol("")
    };
    let hit = gate(&w, &d).authorize(&token_only).unwrap();
    assert_eq!(hit.user.as_deref(), Some("carol"));
    w.advance(RECHECK);
    assert!(gate(&w, &d).authorize(&token_only).unwrap().granted());
    assert_eq!(d.calls().last().unwrap(), "lookup:carol");
    // The entry's stamp changes (a new password): the session ends at the next re-check,
    // though the request carries no password.
    d.users
        .lock()
        .unwrap()
        .insert("carol".into(), "pw-carol-2".into());
    w.advance(RECHECK - 1);
    assert!(gate(&w, &d).authorize(&token_only).unwrap().granted());
    w.advance(1);
    assert!(gate(&w, &d).authorize(&token_only).is_none());
    assert!(w.store.sessions().is_empty());
    // Signed in again: removed from the directory, the session ends at the next re-check.
    assert_grant(
        &gate(&w, &d).drive(&carol("pw-carol-2")),
        Event::PushApproved,
    );
    assert!(gate(&w, &d).authorize(&token_only).unwrap().granted());
    d.users.lock().unwrap().clear();
    w.advance(RECHECK);
    assert!(gate(&w, &d).authorize(&token_only).is_none());
    assert!(w.store.sessions().is_empty());
}

#[test]
fn another_push_without_the_password_asks_the_directory_for_the_stamp() {
    let w = World::with(|p| {
        p.session.bound_to_password = false;
        p.directory = Some(DirectoryPolicy {
            recheck: Duration::from_secs(RECHECK),
            timeout: Duration::from_secs(5),
        });
    });
    let d = FakeDirectory::with(&[("carol", "pw-carol")]);
    let r = Request {
        password: None,
        ..carol("")
    };
    let out = gate(&w, &d).second_factor_only(&r, crate::factor::Requested::Push);
    assert!(out.is_pending() || out.granted(), "{out:?}");
    assert_eq!(d.calls(), ["lookup:carol"]);
    // Gone from the directory meanwhile: no push.
    d.users.lock().unwrap().clear();
    let pushes = w.duo.count("auth:");
    let out = gate(&w, &d).second_factor_only(&r, crate::factor::Requested::Push);
    assert_deny(&out, Event::UnknownUser);
    assert_eq!(w.duo.count("auth:"), pushes);
}
