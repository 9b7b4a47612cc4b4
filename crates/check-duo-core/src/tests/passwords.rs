//! The first factor: password checks, the failure floor, unknown users, the login form.

use std::time::Duration;

use super::support::*;
use crate::decision::Event;
use crate::gate::FAILURE_FLOOR;
use crate::password::Credential;
use crate::policy::Policy;

#[test]
fn login_form_grants_a_right_password_without_asking_duo() {
    let w = World::new();
    let d = w.gate().check_password(&alice());
    assert_grant(&d, Event::LoginPassword);
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
    assert!(
        w.store.sessions().is_empty(),
        "the login form stores no session"
    );
}

#[test]
fn login_form_denies_a_wrong_password_and_counts_it() {
    let w = World::with(|p| p.limits.user_failures = 3);
    let g = w.gate();
    for _ in 0..3 {
        assert_deny(
            &g.check_password(&req("alice", "nope", None)),
            Event::PasswordFailure,
        );
    }
    // Counted: the threshold is reached, the right password is no longer checked.
    assert_deny(&g.check_password(&req("alice", "pw", None)), Event::Banned);
    assert!(w.duo.calls().is_empty());
}

#[test]
fn a_wrong_password_is_denied_before_duo() {
    let w = World::new();
    let d = w.gate().drive(&req("alice", "pw-bob", Some(COOKIE)));
    assert_deny(&d, Event::PasswordFailure);
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
    assert!(w.store.sessions().is_empty());
}

#[test]
fn a_missing_password_is_a_wrong_password() {
    let w = World::new();
    let mut r = alice();
    r.password = None;
    assert_deny(&w.gate().drive(&r), Event::PasswordFailure);
    assert!(w.duo.calls().is_empty());
}

#[test]
fn bcrypt_credentials_are_checked() {
    let hash = bcrypt::hash_with_result("pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let mut users = users(&[]);
    users.insert("carol".into(), Credential::Bcrypt(hash));
    let w = World {
        policy: Policy::new(users, "skey"),
        ..World::new()
    };
    let g = w.gate();
    assert_grant(
        &g.check_password(&req("carol", "pw", None)),
        Event::LoginPassword,
    );
    assert_deny(
        &g.check_password(&req("carol", "pw2", None)),
        Event::PasswordFailure,
    );
}

#[test]
fn a_failed_password_waits_the_failure_floor_and_a_right_one_does_not() {
    let w = World::new();
    let g = w.gate();
    assert_grant(&g.check_password(&alice()), Event::LoginPassword);
    assert_eq!(w.clock.waited(), Duration::ZERO);
    assert_deny(
        &g.check_password(&req("alice", "x", None)),
        Event::PasswordFailure,
    );
    assert_eq!(w.clock.waited(), FAILURE_FLOOR);
}

#[test]
fn an_unknown_user_is_denied_without_duo_after_the_same_floor() {
    let w = World::new();
    let g = w.gate();
    assert_deny(
        &g.drive(&req("alice", "x", Some(COOKIE))),
        Event::PasswordFailure,
    );
    let known = w.clock.waited();
    let d = g.drive(&req("mallory", "pw", Some(COOKIE)));
    assert_deny(&d, Event::UnknownUser);
    let unknown = w.clock.waited() - known;
    assert_eq!(known, FAILURE_FLOOR);
    assert_eq!(
        unknown, known,
        "an unknown user must cost what a known one does"
    );
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
    assert!(w.store.sessions().is_empty());
}
