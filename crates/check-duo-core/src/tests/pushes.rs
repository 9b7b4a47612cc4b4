//! Pushes: the pending state machine, cool-downs, the push cap, one push per user and per
//! session, concurrent approval, paths that never push.

use std::sync::Barrier;
use std::time::Duration;

use super::support::*;
use crate::decision::{Event, Outcome, PendingKind};
use crate::testing::Phone;

#[test]
fn a_push_is_pending_with_its_device_shown() {
    let w = World::new();
    let d = w.gate().authenticate(&alice());
    assert_eq!(d.event, Event::PushSent);
    assert_eq!(d.pushes, 1);
    let p = pending(&d);
    assert!(matches!(p.wait, PendingKind::Own(_)), "{p:?}");
    assert_eq!(p.show, "Push sent to iPhone (XXX-XXX-1234)");
    assert_eq!(p.device.as_deref(), Some("iPhone (XXX-XXX-1234)"));
    assert_eq!(w.duo.count("auth:push:alice"), 1);
    assert_eq!(w.duo.count("status:"), 0, "not polled before resume");
    assert!(w.store.sessions().is_empty(), "nothing approved yet");
}

#[test]
fn resuming_an_approved_push_grants_and_sets_the_session() {
    let w = World::new();
    let g = w.gate();
    let p = pending(&g.authenticate(&alice()));
    let d = g.resume(&alice(), &p);
    assert_grant(&d, Event::PushApproved);
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert_eq!(set_session(&d), Some(w.policy.session.expiry));
    assert_grant(&g.authorize(&alice()).unwrap(), Event::CacheHit);
}

#[test]
fn a_slow_approval_needs_several_resumes() {
    let w = World::new();
    w.duo.phone("alice", Phone::ApproveAfter(3));
    let g = w.gate();
    let mut d = g.authenticate(&alice());
    let mut resumes = 0;
    while let Outcome::Pending(p) = &d.outcome {
        let p = (**p).clone();
        assert!(resumes < 10, "never decided: {d:?}");
        resumes += 1;
        d = g.resume(&alice(), &p);
    }
    assert_grant(&d, Event::PushApproved);
    assert_eq!(resumes, 4, "three waiting answers, then the approval");
    assert_eq!(w.duo.count("auth:push"), 1, "one push, polled four times");
    assert_eq!(w.duo.count("status:"), 4);
}

#[test]
fn an_ignored_push_times_out_at_the_deadline() {
    let w = World::with(|p| p.factor.push_timeout = Duration::from_secs(30));
    w.duo.phone("alice", Phone::Ignore);
    let d = w.gate().drive(&alice());
    assert_deny(&d, Event::PushTimeout);
    let waited = w.clock.waited();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert!(w.store.sessions().is_empty());
    assert!(w.gate().authorize(&alice()).is_none());
}

#[test]
fn a_pending_push_survives_a_json_round_trip() {
    let w = World::new();
    let g = w.gate();
    let p = pending(&g.authenticate(&alice()));
    let json = serde_json::to_string(&p).unwrap();
    let back: crate::decision::Pending = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let d = g.resume(&alice(), &back);
    assert_grant(&d, Event::PushApproved);
    assert!(set_session(&d).is_some());
}

#[test]
fn a_call_is_pending_and_says_so() {
    let w = World::new();
    let d = w
        .gate()
        .authenticate(&req("alice", "pw,phone", Some(COOKIE)));
    let p = pending(&d);
    assert_eq!(p.show, "Calling iPhone (XXX-XXX-1234)");
    match &p.wait {
        PendingKind::Own(own) => assert!(own.call),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.duo.count("auth:phone:alice"), 1);
    assert_eq!(w.duo.count("auth:push"), 0);
}

#[test]
fn a_denied_push_cools_down_the_session_and_the_user() {
    let w = World::new();
    w.duo.phone("alice", Phone::Deny);
    assert_deny(&w.gate().drive(&alice()), Event::PushDenied);
    w.duo.phone("alice", Phone::Approve);
    // The same session, and another session of the same user: no push.
    assert_deny(&w.gate().drive(&alice()), Event::Cooldown);
    assert_deny(&w.gate().drive(&alice_with("cookie-2")), Event::Cooldown);
    assert_eq!(w.duo.count("auth:push"), 1);
    // Another user is not affected.
    assert_grant(
        &w.gate().drive(&req("bob", "pw-bob", Some("cookie-b"))),
        Event::PushApproved,
    );
}

#[test]
fn the_cooldown_ends() {
    let w = World::with(|p| p.limits.push_cooldown = Duration::from_secs(60));
    w.duo.phone("alice", Phone::Deny);
    assert_deny(&w.gate().drive(&alice()), Event::PushDenied);
    w.duo.phone("alice", Phone::Approve);
    w.advance(50);
    assert_deny(&w.gate().drive(&alice()), Event::Cooldown);
    w.advance(11);
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
}

#[test]
fn a_timed_out_push_cools_down_the_session_and_the_user() {
    let w = World::with(|p| p.factor.push_timeout = Duration::from_secs(20));
    w.duo.phone("alice", Phone::Ignore);
    assert_deny(&w.gate().drive(&alice()), Event::PushTimeout);
    w.duo.phone("alice", Phone::Approve);
    assert_deny(&w.gate().drive(&alice()), Event::Cooldown);
    assert_deny(&w.gate().drive(&alice_with("cookie-2")), Event::Cooldown);
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn duos_own_timeout_is_a_timeout_and_cools_down() {
    let w = World::new();
    w.duo.phone("alice", Phone::DuoTimeout);
    assert_deny(&w.gate().drive(&alice()), Event::PushTimeout);
    assert_deny(&w.gate().drive(&alice_with("cookie-2")), Event::Cooldown);
}

#[test]
fn a_denied_push_without_a_session_cools_down_only_its_user() {
    let w = World::new();
    w.duo.phone("alice", Phone::Deny);
    assert_deny(
        &w.gate().drive(&req("alice", "pw", None)),
        Event::PushDenied,
    );
    assert_deny(&w.gate().drive(&req("alice", "pw", None)), Event::Cooldown);
    // bob, also without a cookie yet, shares no session with alice.
    let d = w.gate().drive(&req("bob", "pw-bob", None));
    assert_grant(&d, Event::PushApproved);
}

#[test]
fn the_push_cap_holds_for_the_window() {
    let w = World::with(|p| {
        p.limits.max_pushes = 3;
        p.limits.push_window = Duration::from_secs(900);
    });
    for i in 0..3 {
        w.sign_in(&alice_with(&format!("c{i}")));
    }
    let d = w.gate().drive(&alice_with("c3"));
    assert_deny(&d, Event::PushLimit);
    assert_eq!(w.duo.count("auth:push"), 3);
    // bob has his own cap.
    assert_grant(
        &w.gate().drive(&req("bob", "pw-bob", Some("b"))),
        Event::PushApproved,
    );
    w.advance(901);
    assert_grant(&w.gate().drive(&alice_with("c4")), Event::PushApproved);
}

#[test]
fn the_push_cap_is_reserved_under_concurrency() {
    let w = World::with(|p| {
        p.limits.max_pushes = 3;
        // Many parallel right passwords would otherwise fill the attempt reservations.
        p.limits.user_failures = 0;
        p.limits.ip_failures = 0;
    });
    let threads = 12;
    let start = Barrier::new(threads);
    let events: Vec<Event> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (w, start) = (&w, &start);
                s.spawn(move || {
                    start.wait();
                    // Retry while another push of alice is out: each thread ends with a push
                    // of its own or the cap.
                    for k in 0..100_000 {
                        let d = w.gate().drive(&alice_with(&format!("t{i}-{k}")));
                        if d.event != Event::Cooldown {
                            return d.event;
                        }
                        std::thread::yield_now();
                    }
                    panic!("thread {i} never got past the user's push lock");
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(w.duo.count("auth:push"), 3, "{events:?}");
    let approved = events.iter().filter(|e| **e == Event::PushApproved).count();
    let capped = events.iter().filter(|e| **e == Event::PushLimit).count();
    assert_eq!((approved, capped), (3, threads - 3), "{events:?}");
}

#[test]
fn one_outstanding_push_per_user() {
    let w = World::new();
    let g = w.gate();
    let first = pending(&g.authenticate(&alice_with("c1")));
    let d = g.authenticate(&alice_with("c2"));
    assert_deny(&d, Event::Cooldown);
    assert!(d.reason.contains("still waiting"), "{}", d.reason);
    assert_eq!(w.duo.count("auth:push"), 1);
    assert_grant(&g.resume(&alice_with("c1"), &first), Event::PushApproved);
    // Answered: the next session may push.
    assert_grant(&g.drive(&alice_with("c2")), Event::PushApproved);
    assert_eq!(w.duo.count("auth:push"), 2);
}

#[test]
fn a_second_request_of_the_session_waits_for_the_first_push() {
    let w = World::new();
    let g = w.gate();
    let first = pending(&g.authenticate(&alice()));
    let d = g.authenticate(&alice());
    assert_eq!(d.event, Event::PushWaiting);
    let second = pending(&d);
    assert_eq!(second.wait, PendingKind::Other);
    // Still out: still waiting.
    assert_eq!(g.resume(&alice(), &second).event, Event::PushWaiting);
    assert_grant(&g.resume(&alice(), &first), Event::PushApproved);
    let d = g.resume(&alice(), &second);
    assert_grant(&d, Event::ConcurrentApproval);
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn the_second_request_is_denied_when_the_first_push_is() {
    let w = World::new();
    w.duo.phone("alice", Phone::Deny);
    let g = w.gate();
    let first = pending(&g.authenticate(&alice()));
    let second = pending(&g.authenticate(&alice()));
    assert_deny(&g.resume(&alice(), &first), Event::PushDenied);
    let d = g.resume(&alice(), &second);
    assert!(!d.granted(), "{d:?}");
    assert_deny(&d, Event::PushDenied);
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn the_second_request_gives_up_at_its_deadline() {
    let w = World::with(|p| p.factor.push_timeout = Duration::from_secs(20));
    w.duo.phone("alice", Phone::Ignore);
    let g = w.gate();
    let _first = pending(&g.authenticate(&alice()));
    // The first request never comes back; the second waits for it until its own deadline.
    let d = g.drive(&alice());
    assert_deny(&d, Event::PushTimeout);
    assert!(
        w.clock.waited() <= Duration::from_secs(20),
        "{:?}",
        w.clock.waited()
    );
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn parallel_requests_of_one_session_send_one_push() {
    let w = World::with(|p| {
        p.limits.user_failures = 0;
        p.limits.ip_failures = 0;
    });
    let threads = 8;
    let start = Barrier::new(threads);
    let decisions: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (w, start) = (&w, &start);
                s.spawn(move || {
                    start.wait();
                    w.gate().authenticate(&alice())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(w.duo.count("auth:push"), 1, "{decisions:?}");
    let (own, others): (Vec<_>, Vec<_>) = decisions
        .iter()
        .map(pending)
        .partition(|p| matches!(p.wait, PendingKind::Own(_)));
    assert_eq!((own.len(), others.len()), (1, threads - 1));
    let g = w.gate();
    assert_grant(&g.resume(&alice(), &own[0]), Event::PushApproved);
    for p in &others {
        assert_grant(&g.resume(&alice(), p), Event::ConcurrentApproval);
    }
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn no_push_paths_deny_without_asking_duo() {
    let w = World::with(|p| p.limits.no_push_paths = vec!["/api/*".into(), "*.json".into()]);
    for uri in ["/api/poll", "/private/data.json"] {
        let d = w.gate().drive(&at_uri(uri, alice()));
        assert_deny(&d, Event::NoPushPath);
    }
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
    // Other paths push.
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
}

#[test]
fn no_push_paths_still_serve_a_warm_session() {
    let w = World::with(|p| p.limits.no_push_paths = vec!["/api/*".into()]);
    w.sign_in(&alice());
    let calls = w.duo.calls().len();
    assert_grant(
        &w.gate().drive(&at_uri("/api/poll", alice())),
        Event::CacheHit,
    );
    assert_eq!(w.duo.calls().len(), calls);
}

#[test]
fn requests_that_never_reach_a_phone_do_not_count_toward_the_push_cap() {
    let w = World::with(|p| p.limits.max_pushes = 2);
    // Duo down: nothing reaches the phone, however often the user tries.
    for _ in 0..4 {
        w.duo
            .fail_next([duo_auth::Error::Transport("connection refused".into())]);
        assert_deny(&w.gate().drive(&alice()), Event::DuoUnreachable);
    }
    // Duo back: the cap is still whole.
    w.sign_in(&alice_with("c1"));
    w.sign_in(&alice_with("c2"));
    assert_deny(&w.gate().drive(&alice_with("c3")), Event::PushLimit);
}
