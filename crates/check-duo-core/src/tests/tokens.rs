//! The long-running mode's sessions: the token is the proof (no password on later requests, no
//! user named), the session's user comes from the store, and the secret that keys the store can
//! be rotated without ending sessions.

use super::support::*;
use crate::decision::Event;
use crate::keys::SessionKeys;
use crate::request::Request;
use crate::Secret;

fn token_mode(p: &mut crate::Policy) {
    p.session.bound_to_password = false;
}

/// What a proxy's authorization request carries: the cookie, nothing else.
fn bare(token: &str) -> Request {
    Request {
        session: Some(Secret::new(token)),
        ip: IP.into(),
        host: "app.example.org".into(),
        method: "GET".into(),
        uri: "/".into(),
        ..Request::default()
    }
}

#[test]
fn a_bare_token_is_granted_for_the_user_it_was_approved_for() {
    let w = World::with(token_mode);
    w.sign_in(&alice());
    let d = w.gate().authorize(&bare(COOKIE)).expect("a session");
    assert_grant(&d, Event::CacheHit);
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert!(w.gate().authorize(&bare("another-token")).is_none());
    let signed_in = w.duo.calls();
    w.gate().authorize(&bare(COOKIE));
    assert_eq!(w.duo.calls(), signed_in, "no Duo call after the sign-in");
}

#[test]
fn in_the_pipe_mode_a_bare_token_is_nothing() {
    let w = World::new();
    w.sign_in(&alice());
    assert!(w.gate().authorize(&bare(COOKIE)).is_none());
}

#[test]
fn a_changed_or_removed_user_ends_token_sessions() {
    let w = World::with(token_mode);
    w.sign_in(&alice());
    let mut changed = w.policy.clone();
    changed.users = users(&[("alice", "new-pw"), ("bob", "pw-bob")]);
    assert!(w.gate_with(&changed).authorize(&bare(COOKIE)).is_none());
    let mut removed = w.policy.clone();
    removed.users = users(&[("bob", "pw-bob")]);
    assert!(w.gate_with(&removed).authorize(&bare(COOKIE)).is_none());
    assert!(w.gate().authorize(&bare(COOKIE)).is_some());
}

#[test]
fn lifetimes_apply_to_bare_tokens() {
    let w = World::with(|p| {
        token_mode(p);
        p.session.idle_timeout = Some(std::time::Duration::from_secs(60));
    });
    w.sign_in(&alice());
    w.advance(59);
    assert!(w.gate().authorize(&bare(COOKIE)).is_some());
    w.advance(59);
    assert!(
        w.gate().authorize(&bare(COOKIE)).is_some(),
        "refreshed by use"
    );
    w.advance(61);
    assert!(w.gate().authorize(&bare(COOKIE)).is_none());
}

#[test]
fn a_rotated_secret_keeps_sessions_and_moves_them_to_the_new_key() {
    let w = World::with(|p| {
        token_mode(p);
        p.keys = SessionKeys::rotating(&["old"]).unwrap();
    });
    w.sign_in(&alice());
    let mut rotated = w.policy.clone();
    rotated.keys = SessionKeys::rotating(&["new", "old"]).unwrap();
    let d = w
        .gate_with(&rotated)
        .authorize(&bare(COOKIE))
        .expect("kept");
    assert_grant(&d, Event::CacheHit);
    let sessions = w.store.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].0, rotated.keys.session_id(COOKIE), "moved");
    // Once the old secret is dropped, the moved session still holds.
    let mut new_only = w.policy.clone();
    new_only.keys = SessionKeys::rotating(&["new"]).unwrap();
    assert!(w.gate_with(&new_only).authorize(&bare(COOKIE)).is_some());
    // A session never seen under the new key ends with the old secret.
    w.sign_in(&alice_with("other"));
    assert!(w.gate_with(&new_only).authorize(&bare("other")).is_none());
}

#[test]
fn logout_ends_a_session_under_every_key() {
    let w = World::with(|p| {
        token_mode(p);
        p.keys = SessionKeys::rotating(&["old"]).unwrap();
    });
    w.sign_in(&alice());
    let mut rotated = w.policy.clone();
    rotated.keys = SessionKeys::rotating(&["new", "old"]).unwrap();
    assert_deny(&w.gate_with(&rotated).logout(&bare(COOKIE)), Event::Logout);
    assert!(w.store.sessions().is_empty());
    assert!(w.gate().authorize(&bare(COOKIE)).is_none());
}

#[test]
fn only_a_checked_password_is_marked_verified() {
    let w = World::with(token_mode);
    let g = w.gate();
    assert!(
        !g.authenticate(&req("alice", "wrong", Some("t1")))
            .password_verified
    );
    assert!(
        !g.authenticate(&req("nobody", "pw", Some("t2")))
            .password_verified
    );
    let d = g.authenticate(&req("alice", "pw", Some("t3")));
    assert!(d.is_pending() && d.password_verified, "{d:?}");
    // The store down before the check: a deny, and not verified.
    w.store
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !g.authenticate(&req("bob", "pw-bob", Some("t4")))
            .password_verified
    );
}
