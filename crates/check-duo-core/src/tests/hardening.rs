//! The rules a second review added: failures counted per user *and* address first, growing
//! delays, a cap on requests waiting for one push, cool-downs per user and address, sessions
//! bound to their network, and `failmode: safe` that never opens on what a man in the middle
//! causes.

use std::time::Duration;

use duo_auth::Error;

use super::support::*;
use crate::decision::{Event, PendingKind};
use crate::gate::{failure_delay, FAILURE_FLOOR, MAX_FAILURE_DELAY, MAX_WAITERS};
use crate::policy::{FailMode, NetworkBinding};
use crate::testing::Phone;

fn wrong_from(w: &World, ip: &str) -> crate::Decision {
    w.gate()
        .check_password(&from(ip, req("alice", "wrong", None)))
}

#[test]
fn one_address_guessing_bans_itself_not_the_user() {
    let w = World::with(|p| {
        p.limits.pair_failures = 3;
        p.limits.user_failures = 10;
        p.limits.ip_failures = 0;
    });
    for _ in 0..3 {
        assert_deny(&wrong_from(&w, "203.0.113.5"), Event::PasswordFailure);
    }
    let d = w
        .gate()
        .check_password(&from("203.0.113.5", req("alice", "pw", None)));
    assert_deny(&d, Event::Banned);
    assert!(
        d.reason.contains("user from this client address"),
        "{}",
        d.reason
    );
    // The real user, elsewhere, is not locked out.
    let d = w.gate().check_password(&req("alice", "pw", None));
    assert_grant(&d, Event::LoginPassword);
}

#[test]
fn guesses_spread_over_addresses_still_meet_the_user_limit() {
    let w = World::with(|p| {
        p.limits.pair_failures = 3;
        p.limits.user_failures = 4;
        p.limits.ip_failures = 0;
    });
    for i in 0..4 {
        assert_deny(
            &wrong_from(&w, &format!("198.51.100.{i}")),
            Event::PasswordFailure,
        );
    }
    let d = w.gate().check_password(&req("alice", "pw", None));
    assert_deny(&d, Event::Banned);
}

#[test]
fn failures_slow_down_before_they_ban() {
    assert_eq!(failure_delay(1), FAILURE_FLOOR);
    assert_eq!(failure_delay(2), FAILURE_FLOOR * 2);
    assert_eq!(failure_delay(3), FAILURE_FLOOR * 4);
    assert_eq!(failure_delay(100), MAX_FAILURE_DELAY);
    let w = World::with(|p| {
        p.limits.pair_failures = 10;
        p.limits.user_failures = 10;
    });
    let mut waited = Vec::new();
    for _ in 0..4 {
        let before = w.clock.waited();
        assert_deny(&wrong_from(&w, IP), Event::PasswordFailure);
        waited.push(w.clock.waited() - before);
    }
    assert_eq!(
        waited,
        [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
    );
    // Another address starts at the floor again.
    let before = w.clock.waited();
    wrong_from(&w, "198.51.100.9");
    assert_eq!(w.clock.waited() - before, FAILURE_FLOOR);
}

#[test]
fn only_so_many_requests_wait_on_one_push() {
    let w = World::new();
    w.duo.phone("alice", Phone::Ignore);
    let g = w.gate();
    let first = pending(&g.authenticate(&alice()));
    assert!(matches!(first.wait, PendingKind::Own(_)));
    for _ in 0..MAX_WAITERS {
        let p = pending(&g.authenticate(&alice()));
        assert_eq!(p.wait, PendingKind::Other);
    }
    let d = g.authenticate(&alice());
    assert_deny(&d, Event::PushWaiting);
    assert!(d.reason.contains("already wait"), "{}", d.reason);
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn a_refused_push_cools_down_the_user_from_that_address_only() {
    let w = World::with(|p| p.limits.push_cooldown = Duration::from_secs(60));
    w.duo.phone("alice", Phone::Deny);
    let attacker = from("203.0.113.5", alice_with("attacker-cookie"));
    assert_deny(&w.gate().drive(&attacker), Event::PushDenied);
    assert_deny(
        &w.gate().drive(&from("203.0.113.5", alice_with("another"))),
        Event::Cooldown,
    );
    // The real user, from her own address, still gets her push.
    w.duo.phone("alice", Phone::Approve);
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
}

#[test]
fn a_bound_session_is_good_only_in_its_network() {
    let w = World::with(|p| p.session.bind_network = Some(NetworkBinding::default()));
    w.sign_in(&alice());
    let near = from("192.0.2.200", alice());
    let d = w.gate().authorize(&near).unwrap();
    assert_grant(&d, Event::CacheHit);
    assert!(
        d.reason.contains("client address changed from 192.0.2.1"),
        "{}",
        d.reason
    );
    let far = from("198.51.100.1", alice());
    assert!(w.gate().authorize(&far).is_none());
    // Through the whole flow: a new push, and the log says why.
    let d = w.gate().drive(&far);
    assert_grant(&d, Event::PushApproved);
    assert!(
        d.reason.contains("outside this client's network"),
        "{}",
        d.reason
    );
    assert_eq!(w.duo.count("auth:push"), 2);
}

#[test]
fn an_unbound_session_moves_and_says_so() {
    let w = World::new();
    w.sign_in(&alice());
    let d = w.gate().authorize(&from("198.51.100.1", alice())).unwrap();
    assert_grant(&d, Event::CacheHit);
    assert!(d.reason.contains("changed from 192.0.2.1"), "{}", d.reason);
    // The new address is stored: the next request from it is a plain hit.
    let d = w.gate().authorize(&from("198.51.100.1", alice())).unwrap();
    assert_eq!(d.reason, "cached session");
}

#[test]
fn failmode_safe_never_opens_on_a_401_a_bad_certificate_or_garbage() {
    let w = World::with(|p| p.factor.failmode = FailMode::Safe);
    for e in [
        Error::Unauthorized {
            code: 40103,
            message: "Invalid signature".into(),
        },
        Error::Tls("invalid peer certificate: UnknownIssuer".into()),
        Error::Malformed("not JSON".into()),
    ] {
        w.duo.fail_next([e.clone()]);
        let d = w.gate().drive(&alice_with(&format!("{e:?}")));
        assert_deny(&d, Event::DuoUnreachable);
        assert!(d.reason.contains("never opens"), "{}", d.reason);
    }
    for e in [
        Error::Transport("connection refused".into()),
        Error::Timeout,
        Error::Server { status: 503 },
    ] {
        w.duo.fail_next([e.clone()]);
        let d = w.gate().drive(&alice_with(&format!("{e:?}")));
        assert_grant(&d, Event::FailOpen);
    }
}
