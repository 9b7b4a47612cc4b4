//! Brute-force limits: bans per user and per client address, their window and length, the
//! attempt reservation under parallel bursts, and how client addresses are counted.

use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::Duration;

use super::support::*;
use crate::decision::{Decision, Event};

fn wrong(w: &World, user: &str, ip: &str) -> Decision {
    w.gate().check_password(&from(ip, req(user, "wrong", None)))
}

#[test]
fn a_user_is_banned_after_user_failures() {
    let w = World::with(|p| p.limits.user_failures = 3);
    for i in 0..3 {
        // Three addresses: the count is the user's.
        let d = wrong(&w, "alice", &format!("198.51.100.{i}"));
        assert_deny(&d, Event::PasswordFailure);
    }
    let d = w.gate().drive(&alice());
    assert_deny(&d, Event::Banned);
    assert!(w.duo.calls().is_empty(), "a banned user reaches no Duo");
    // Only alice is banned, not bob nor the address.
    assert_grant(
        &w.gate().check_password(&req("bob", "pw-bob", None)),
        Event::LoginPassword,
    );
}

#[test]
fn a_client_address_is_banned_after_ip_failures() {
    let w = World::with(|p| {
        p.limits.user_failures = 10;
        p.limits.ip_failures = 3;
    });
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    assert_deny(&wrong(&w, "bob", IP), Event::PasswordFailure);
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    // bob has one failure only, but the address has three.
    let d = w.gate().check_password(&req("bob", "pw-bob", None));
    assert_deny(&d, Event::Banned);
    assert!(d.reason.contains("client address"), "{}", d.reason);
    // The same user from elsewhere is fine.
    assert_grant(
        &w.gate()
            .check_password(&from("198.51.100.7", req("bob", "pw-bob", None))),
        Event::LoginPassword,
    );
}

#[test]
fn the_end_of_the_failure_window_resets_the_count() {
    let w = World::with(|p| {
        p.limits.user_failures = 5;
        p.limits.failure_window = Duration::from_secs(300);
    });
    for _ in 0..4 {
        assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    }
    w.advance(300);
    for _ in 0..4 {
        assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    }
    // 8 failures, but never 5 in one window.
    assert_grant(&w.gate().check_password(&alice()), Event::LoginPassword);
}

#[test]
fn a_ban_lasts_the_ban_length() {
    let w = World::with(|p| {
        p.limits.user_failures = 2;
        p.limits.failure_window = Duration::from_secs(60);
        p.limits.ban = Duration::from_secs(900);
    });
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    w.advance(880);
    // The failure window is long over: only the ban denies.
    assert_deny(&w.gate().check_password(&alice()), Event::Banned);
    w.advance(25);
    assert_grant(&w.gate().check_password(&alice()), Event::LoginPassword);
}

#[test]
fn a_live_session_survives_a_ban_of_its_user() {
    let w = World::with(|p| p.limits.user_failures = 3);
    w.sign_in(&alice());
    for _ in 0..3 {
        assert_deny(&wrong(&w, "alice", "203.0.113.66"), Event::PasswordFailure);
    }
    assert_deny(
        &w.gate().check_password(&alice_with("other")),
        Event::Banned,
    );
    // The session proves the password and the second factor: the attacker cannot lock it out.
    let d = w.gate().drive(&alice());
    assert_grant(&d, Event::CacheHit);
    assert_grant(&w.gate().authorize(&alice()).unwrap(), Event::CacheHit);
}

/// `n` threads, started together, each running `f(i)`.
fn burst<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, start) = (&f, &start);
                s.spawn(move || {
                    start.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_parallel_burst_of_wrong_passwords_checks_at_most_user_failures() {
    let w = World::with(|p| {
        p.limits.user_failures = 5;
        p.limits.ip_failures = 0;
    });
    let events = burst(24, |i| {
        // Every thread its own address: only the user's count holds them back.
        let r = from(&format!("198.51.100.{i}"), req("alice", "wrong", None));
        w.gate_yielding().authenticate(&r).event
    });
    let checked = events
        .iter()
        .filter(|e| **e == Event::PasswordFailure)
        .count();
    assert_eq!(checked, 5, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::PasswordFailure | Event::Banned)));
    assert!(w.duo.calls().is_empty());
}

#[test]
fn a_parallel_burst_of_right_passwords_is_granted() {
    // A page of many requests, none with a session yet: all pass, a few at a time.
    let w = World::with(|p| {
        p.limits.user_failures = 5;
        p.limits.ip_failures = 5;
    });
    let events = burst(24, |_| w.gate_yielding().check_password(&alice()).event);
    assert!(
        events.iter().all(|e| *e == Event::LoginPassword),
        "{events:?}"
    );
    // Nothing was counted: a wrong password now is the first failure, not a ban.
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    assert_grant(&w.gate().check_password(&alice()), Event::LoginPassword);
}

#[test]
fn the_right_password_after_a_burst_is_denied() {
    let w = World::with(|p| {
        p.limits.user_failures = 5;
        p.limits.ip_failures = 0;
    });
    burst(12, |i| {
        w.gate_yielding().check_password(&from(
            &format!("198.51.100.{i}"),
            req("alice", "wrong", None),
        ))
    });
    let d = w.gate().drive(&alice());
    assert_deny(&d, Event::Banned);
    assert!(w.duo.calls().is_empty());
}

#[test]
fn a_right_password_gives_its_reservation_back() {
    let w = World::with(|p| p.limits.user_failures = 5);
    for _ in 0..4 {
        assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    }
    // Each of these reserves the fifth attempt and gives it back.
    for _ in 0..10 {
        assert_grant(&w.gate().check_password(&alice()), Event::LoginPassword);
    }
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
    // Still four failures counted: the fifth bans.
    assert_deny(&wrong(&w, "alice", IP), Event::PasswordFailure);
    assert_deny(&w.gate().check_password(&alice()), Event::Banned);
}

#[test]
fn a_store_that_refuses_writes_denies_password_attempts_but_serves_warm_sessions() {
    let w = World::new();
    w.sign_in(&alice());
    w.store.refuse_writes.store(true, Ordering::SeqCst);
    let d = w.gate().drive(&alice_with("cookie-2"));
    assert_deny(&d, Event::StoreError);
    assert_eq!(
        w.duo.count("auth:"),
        1,
        "no push for an attempt that was not counted"
    );
    let d = w.gate().check_password(&alice());
    assert_deny(&d, Event::StoreError);
    assert_grant(&w.gate().authorize(&alice()).unwrap(), Event::CacheHit);
}

#[test]
fn ipv6_clients_are_counted_per_64() {
    let w = World::with(|p| {
        p.limits.user_failures = 0;
        p.limits.ip_failures = 3;
        p.limits.ipv6_prefix = 64;
    });
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3"] {
        assert_deny(&wrong(&w, "alice", ip), Event::PasswordFailure);
    }
    let same_net = from("2001:db8:1:2:ffff:eeee:dddd:cccc", alice());
    assert_deny(&w.gate().check_password(&same_net), Event::Banned);
    let next_net = from("2001:db8:1:3::1", alice());
    assert_grant(&w.gate().check_password(&next_net), Event::LoginPassword);
}

#[test]
fn ipv6_prefix_128_counts_single_addresses() {
    let w = World::with(|p| {
        p.limits.user_failures = 0;
        p.limits.ip_failures = 2;
        p.limits.ipv6_prefix = 128;
    });
    assert_deny(&wrong(&w, "alice", "2001:db8::1"), Event::PasswordFailure);
    assert_deny(&wrong(&w, "alice", "2001:db8::1"), Event::PasswordFailure);
    assert_deny(
        &w.gate().check_password(&from("2001:db8::1", alice())),
        Event::Banned,
    );
    assert_grant(
        &w.gate().check_password(&from("2001:db8::2", alice())),
        Event::LoginPassword,
    );
}

#[test]
fn ipv4_mapped_addresses_are_counted_as_ipv4() {
    let w = World::with(|p| {
        p.limits.user_failures = 0;
        p.limits.ip_failures = 2;
    });
    assert_deny(
        &wrong(&w, "alice", "::ffff:192.0.2.7"),
        Event::PasswordFailure,
    );
    assert_deny(&wrong(&w, "bob", "192.0.2.7"), Event::PasswordFailure);
    // Banned under either spelling.
    assert_deny(
        &w.gate().check_password(&from("192.0.2.7", alice())),
        Event::Banned,
    );
    assert_deny(
        &w.gate().check_password(&from("::ffff:192.0.2.7", alice())),
        Event::Banned,
    );
}

/// The count of attempts in flight lives on while attempts keep coming: a burst that outlasts
/// its first minute does not forget the attempts still being checked.
#[test]
fn attempts_in_flight_are_not_forgotten_under_a_long_burst() {
    use crate::limits::{failed, reserve_attempt, Refused};
    use crate::ports::Clock;
    let w = World::with(|p| {
        p.limits.user_failures = 2;
        p.limits.pair_failures = 0;
        p.limits.ip_failures = 0;
    });
    let l = &w.policy.limits;
    let t = w.clock.unix();
    let a = reserve_attempt(&w.store, l, "alice", None, t).ok().unwrap();
    let b = reserve_attempt(&w.store, l, "alice", None, t).ok().unwrap();
    // Refused attempts keep coming, past the minute after the first reservation.
    for dt in [20, 40, 59, 70, 100] {
        assert!(matches!(
            reserve_attempt(&w.store, l, "alice", None, t + dt),
            Err(Refused::Busy)
        ));
    }
    let d = Decision::deny(Event::PasswordFailure, "wrong password");
    let _ = failed(&w.store, l, a, t + 100, d.clone());
    let _ = failed(&w.store, l, b, t + 100, d);
    assert!(matches!(
        reserve_attempt(&w.store, l, "alice", None, t + 100),
        Err(Refused::Deny(_))
    ));
}
