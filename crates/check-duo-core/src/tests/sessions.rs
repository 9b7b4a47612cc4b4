//! Sessions: what is stored, the warm path, lifetimes (also when the policy changes after the
//! approval), `expiry: 0`, logout, and a store that is down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::support::*;
use crate::decision::{Effect, Event};
use crate::password::Credential;
use crate::testing::Phone;
use crate::Secret;

#[test]
fn the_warm_path_makes_no_duo_call_and_no_password_check() {
    let w = World::new();
    w.sign_in(&alice());
    let calls = w.duo.calls();
    for _ in 0..5 {
        let d = w.gate().drive(&alice());
        assert_grant(&d, Event::CacheHit);
        assert_eq!(d.user.as_deref(), Some("alice"));
    }
    assert_eq!(w.duo.calls(), calls);
    assert_eq!(w.clock.waited(), Duration::ZERO);
}

#[test]
fn a_wrong_password_on_a_warm_cookie_is_rejected() {
    let w = World::new();
    w.sign_in(&alice());
    let calls = w.duo.calls().len();
    let wrong = req("alice", "pw-bob", Some(COOKIE));
    assert!(
        w.gate().authorize(&wrong).is_none(),
        "the tag binds the password"
    );
    assert_deny(&w.gate().drive(&wrong), Event::PasswordFailure);
    assert_eq!(w.duo.calls().len(), calls);
}

#[test]
fn a_session_is_bound_to_its_user() {
    let w = World::new();
    w.sign_in(&alice());
    let bob = req("bob", "pw-bob", Some(COOKIE));
    assert!(w.gate().authorize(&bob).is_none());
    // Even with alice's password under bob's name.
    assert!(w
        .gate()
        .authorize(&req("bob", "pw", Some(COOKIE)))
        .is_none());
}

#[test]
fn a_changed_credential_ends_the_users_sessions() {
    let w = World::new();
    w.sign_in(&alice());
    let mut changed = w.policy.clone();
    changed
        .users
        .insert("alice".into(), Credential::Plain(Secret::new("pw")))
        .unwrap();
    // Same password, same credential: still valid.
    assert!(w.gate_with(&changed).authorize(&alice()).is_some());
    changed
        .users
        .insert("alice".into(), Credential::Plain(Secret::new("new-pw")));
    assert!(w.gate_with(&changed).authorize(&alice()).is_none());
    assert!(w
        .gate_with(&changed)
        .authorize(&req("alice", "new-pw", Some(COOKIE)))
        .is_none());
}

#[test]
fn an_idle_session_ends_and_use_keeps_it_alive() {
    let w = World::with(|p| p.session.idle_timeout = Some(Duration::from_secs(600)));
    let d = w.sign_in(&alice());
    assert_eq!(set_session(&d), Some(Duration::from_secs(600)));
    w.advance(500);
    assert!(w.gate().authorize(&alice()).is_some());
    // 1000 s after the approval but 500 s after the last use.
    w.advance(500);
    assert!(w.gate().authorize(&alice()).is_some(), "use refreshes it");
    w.advance(601);
    assert!(
        w.gate().authorize(&alice()).is_none(),
        "idle for longer than the timeout"
    );
}

#[test]
fn the_absolute_expiry_ends_even_an_active_session() {
    let w = World::with(|p| {
        p.session.expiry = Duration::from_secs(1000);
        p.session.idle_timeout = Some(Duration::from_secs(600));
    });
    w.sign_in(&alice());
    for _ in 0..3 {
        w.advance(333);
        assert!(w.gate().authorize(&alice()).is_some());
    }
    w.advance(2);
    assert!(w.gate().authorize(&alice()).is_none());
    // The next request asks Duo again.
    assert_eq!(w.gate().drive(&alice()).event, Event::PushApproved);
}

#[test]
fn a_shorter_expiry_applies_to_sessions_approved_before() {
    let w = World::new();
    w.sign_in(&alice());
    w.advance(7200);
    assert!(w.gate().authorize(&alice()).is_some());
    let mut shorter = w.policy.clone();
    shorter.session.expiry = Duration::from_secs(3600);
    assert!(w.gate_with(&shorter).authorize(&alice()).is_none());
}

#[test]
fn a_new_idle_timeout_applies_to_sessions_approved_before() {
    let w = World::new();
    assert_eq!(w.policy.session.idle_timeout, None);
    w.sign_in(&alice());
    w.advance(1200);
    assert!(w.gate().authorize(&alice()).is_some());
    let mut idle = w.policy.clone();
    idle.session.idle_timeout = Some(Duration::from_secs(600));
    assert!(w.gate_with(&idle).authorize(&alice()).is_none());
}

#[test]
fn expiry_zero_asks_duo_on_every_request_and_stores_nothing() {
    let w = World::with(|p| p.session.expiry = Duration::ZERO);
    for n in 1..=3 {
        let d = w.gate().drive(&alice());
        assert_grant(&d, Event::PushApproved);
        assert_eq!(set_session(&d), None);
        assert_eq!(w.duo.count("auth:push"), n);
    }
    assert!(w.store.sessions().is_empty());
    assert!(w.gate().authorize(&alice()).is_none());
}

#[test]
fn a_request_without_a_cookie_is_granted_but_nothing_is_stored() {
    let w = World::new();
    let d = w.gate().drive(&req("alice", "pw", None));
    assert_grant(&d, Event::PushApproved);
    assert_eq!(set_session(&d), None);
    assert!(w.store.sessions().is_empty());
}

#[test]
fn logout_ends_the_session() {
    let w = World::new();
    w.sign_in(&alice());
    let d = w.gate().logout(&alice());
    assert_deny(&d, Event::Logout);
    assert!(d.effects.contains(&Effect::ClearSession));
    assert!(w.gate().authorize(&alice()).is_none());
    assert!(w.store.sessions().is_empty());
}

#[test]
fn logout_ends_only_its_own_session() {
    let w = World::new();
    w.sign_in(&alice_with("laptop"));
    w.sign_in(&alice_with("phone"));
    w.gate().logout(&alice_with("laptop"));
    assert!(w.gate().authorize(&alice_with("laptop")).is_none());
    assert!(w.gate().authorize(&alice_with("phone")).is_some());
}

#[test]
fn a_logout_while_the_push_is_out_leaves_no_session() {
    let w = World::new();
    w.duo.phone("alice", Phone::Approve);
    let g = w.gate();
    let p = pending(&g.authenticate(&alice()));
    assert_deny(&g.logout(&alice()), Event::Logout);
    let d = g.resume(&alice(), &p);
    assert!(!d.granted(), "{d:?}");
    assert_eq!(set_session(&d), None);
    assert!(g.authorize(&alice()).is_none());
    assert!(w.store.sessions().is_empty());
}

#[test]
fn the_store_holds_neither_the_cookie_nor_the_password() {
    let cookie = "COOKIE-4f9b2e";
    let password = "PASSWORD-8c1d";
    let w = World::with(|p| {
        p.users = users(&[("alice", password)]);
    });
    w.sign_in(&req("alice", password, Some(cookie)));
    // And everything that leaves counters behind.
    w.gate()
        .check_password(&req("alice", "WRONG-PASSWORD", Some(cookie)));
    let sessions = w.store.sessions();
    assert_eq!(sessions.len(), 1);
    let (key, entry) = &sessions[0];
    assert_eq!(key, &w.policy.keys.session_id(cookie));
    assert_eq!(entry.user, "alice");
    let stored = format!("{:?} {:?}", w.store.keys(), sessions);
    for secret in [cookie, password, "WRONG-PASSWORD"] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
    }
}

#[test]
fn a_store_that_is_down_denies_everything() {
    let w = World::new();
    w.sign_in(&alice());
    w.store.down.store(true, Ordering::SeqCst);
    let g = w.gate();
    let d = g
        .authorize(&alice())
        .expect("the store cannot tell: a deny, not nothing");
    assert_deny(&d, Event::StoreError);
    assert_deny(&g.drive(&alice()), Event::StoreError);
    assert_deny(&g.drive(&alice_with("cookie-2")), Event::StoreError);
    assert_deny(&g.check_password(&alice()), Event::StoreError);
    assert_deny(&g.logout(&alice()), Event::StoreError);
    assert_eq!(
        w.duo.count("auth:"),
        1,
        "only the sign-in before the outage pushed"
    );
}

/// A logout wins against a push started before it even when an earlier logout of the same
/// cookie is long gone: logouts are kept as a time, renewed by each one.
#[test]
fn a_second_logout_during_a_push_still_wins() {
    let w = World::new();
    let g = w.gate();
    assert_deny(&g.logout(&alice()), Event::Logout);
    w.advance(60);
    let p = pending(&g.authenticate(&alice()));
    // Past the first logout's lifetime (push_timeout + 5 s), with the push still out.
    w.advance(10);
    assert_deny(&g.logout(&alice()), Event::Logout);
    let d = g.resume(&alice(), &p);
    assert!(!d.granted(), "{d:?}");
    assert!(g.authorize(&alice()).is_none());
    // And a push started after the logout is stored as usual.
    w.advance(1);
    assert_grant(&w.sign_in(&alice()), Event::PushApproved);
    assert!(g.authorize(&alice()).is_some());
}
