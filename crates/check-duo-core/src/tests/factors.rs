//! Second factors other than a push: Duo passcodes, SMS, local TOTP, preauth answers, and Duo's
//! 429 back-off.

use std::sync::Barrier;
use std::time::Duration;

use duo_auth::types::Preauth;
use duo_auth::Error;

use super::support::*;
use crate::decision::Event;
use crate::policy::Policy;
use crate::testing::Phone;
use crate::totp;

#[test]
fn a_duo_passcode_is_accepted_and_stored() {
    let w = World::new();
    w.duo.accept_passcode("123456");
    let r = req("alice", "pw,123456", Some(COOKIE));
    let d = w.gate().drive(&r);
    assert_grant(&d, Event::PasscodeApproved);
    assert!(set_session(&d).is_some());
    assert_eq!(w.duo.count("auth:passcode:alice"), 1);
    assert_eq!(w.duo.count("auth:push"), 0, "a passcode sends no push");
    // The cookie replays the same text: the session answers, Duo sees the code once.
    assert_grant(&w.gate().drive(&r), Event::CacheHit);
    assert_eq!(w.duo.count("auth:passcode"), 1);
}

#[test]
fn a_refused_passcode_spends_the_session() {
    let w = World::new();
    let r = req("alice", "pw,654321", Some(COOKIE));
    assert_deny(&w.gate().drive(&r), Event::PasscodeDenied);
    let calls = w.duo.calls();
    assert_deny(&w.gate().drive(&r), Event::PasscodeDenied);
    assert_eq!(w.duo.calls(), calls, "asked again without calling Duo");
    // A new sign-in (another cookie) may try again.
    w.duo.accept_passcode("111111");
    let d = w.gate().drive(&req("alice", "pw,111111", Some("cookie-2")));
    assert_grant(&d, Event::PasscodeApproved);
}

#[test]
fn a_sent_sms_spends_the_session() {
    let w = World::new();
    let r = req("alice", "pw,sms", Some(COOKIE));
    assert_deny(&w.gate().drive(&r), Event::SmsSent);
    assert_eq!(w.duo.count("auth:sms:alice"), 1);
    let calls = w.duo.calls();
    let d = w.gate().drive(&r);
    assert!(!d.granted());
    assert_eq!(w.duo.calls(), calls, "no second SMS for the same cookie");
}

#[test]
fn refused_passcodes_count_as_failures() {
    let w = World::with(|p| p.limits.user_failures = 2);
    for cookie in ["c1", "c2"] {
        let d = w.gate().drive(&req("alice", "pw,000000", Some(cookie)));
        assert_deny(&d, Event::PasscodeDenied);
    }
    assert_deny(&w.gate().drive(&alice_with("c3")), Event::Banned);
    assert_eq!(w.duo.count("auth:push"), 0);
}

const SECRET: &[u8] = b"12345678901234567890";

fn totp_world(f: impl FnOnce(&mut Policy)) -> World {
    World::with(|p| {
        p.totp.insert("alice".into(), SECRET.to_vec());
        f(p);
    })
}

fn code(w: &World, offset: i64) -> String {
    use crate::ports::Clock;
    totp::code_at(SECRET, w.clock.unix() + offset)
}

#[test]
fn a_right_totp_code_grants_without_duo() {
    let w = totp_world(|_| {});
    let d = w
        .gate()
        .drive(&req("alice", &format!("pw,{}", code(&w, 0)), Some(COOKIE)));
    assert_grant(&d, Event::TotpApproved);
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert!(set_session(&d).is_some());
    assert!(w.duo.calls().is_empty(), "{:?}", w.duo.calls());
}

#[test]
fn a_totp_code_is_good_once() {
    let w = totp_world(|_| {});
    let pw = format!("pw,{}", code(&w, 0));
    assert_grant(
        &w.gate().drive(&req("alice", &pw, Some("c1"))),
        Event::TotpApproved,
    );
    let d = w.gate().drive(&req("alice", &pw, Some("c2")));
    assert_deny(&d, Event::TotpDenied);
    assert!(d.reason.contains("already used"), "{}", d.reason);
}

#[test]
fn an_earlier_totp_step_after_a_later_one_is_denied() {
    let w = totp_world(|_| {});
    let later = format!("pw,{}", code(&w, 30));
    let earlier = format!("pw,{}", code(&w, 0));
    assert_ne!(later, earlier);
    assert_grant(
        &w.gate().drive(&req("alice", &later, Some("c1"))),
        Event::TotpApproved,
    );
    assert_deny(
        &w.gate().drive(&req("alice", &earlier, Some("c2"))),
        Event::TotpDenied,
    );
}

#[test]
fn a_totp_user_without_a_code_is_told_so() {
    let w = totp_world(|_| {});
    let d = w.gate().drive(&alice());
    assert_deny(&d, Event::TotpRequired);
    assert!(w.duo.calls().is_empty());
    // Users without a secret still use Duo.
    assert_grant(
        &w.gate().drive(&req("bob", "pw-bob", Some("b"))),
        Event::PushApproved,
    );
}

/// A six-digit code that is wrong at every step the clock accepts now.
fn wrong_code(w: &World) -> String {
    let valid = [code(w, -30), code(w, 0), code(w, 30)];
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

#[test]
fn wrong_totp_codes_count_as_failures() {
    let w = totp_world(|p| p.limits.user_failures = 3);
    let bad = format!("pw,{}", wrong_code(&w));
    for i in 0..3 {
        let d = w.gate().drive(&req("alice", &bad, Some(&format!("c{i}"))));
        assert_deny(&d, Event::TotpDenied);
    }
    let good = format!("pw,{}", code(&w, 0));
    assert_deny(
        &w.gate().drive(&req("alice", &good, Some("c9"))),
        Event::Banned,
    );
}

#[test]
fn wrong_totp_codes_reserve_attempts_under_a_burst() {
    let w = totp_world(|p| {
        p.limits.user_failures = 3;
        p.limits.ip_failures = 0;
    });
    let bad = format!("pw,{}", wrong_code(&w));
    let threads = 16;
    let start = Barrier::new(threads);
    let events: Vec<Event> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (w, start, bad) = (&w, &start, &bad);
                s.spawn(move || {
                    start.wait();
                    w.gate_yielding()
                        .authenticate(&req("alice", bad, Some(&format!("c{i}"))))
                        .event
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = events.iter().filter(|e| **e == Event::TotpDenied).count();
    assert_eq!(checked, 3, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::TotpDenied | Event::Banned)));
    let good = format!("pw,{}", code(&w, 0));
    assert_deny(
        &w.gate().drive(&req("alice", &good, Some("c99"))),
        Event::Banned,
    );
}

#[test]
fn preauth_allow_grants_and_is_stored() {
    let w = World::new();
    w.duo.preauth_answer(
        "alice",
        Preauth::Allow {
            status_msg: "bypass".into(),
        },
    );
    let d = w.gate().drive(&alice());
    assert_grant(&d, Event::PreauthAllow);
    assert!(set_session(&d).is_some());
    assert_eq!(w.duo.count("auth:"), 0);
    assert_eq!(w.store.sessions().len(), 1);
    assert_grant(&w.gate().drive(&alice()), Event::CacheHit);
}

#[test]
fn preauth_deny_denies() {
    let w = World::new();
    w.duo.preauth_answer(
        "alice",
        Preauth::Deny {
            status_msg: "locked out".into(),
        },
    );
    assert_deny(&w.gate().drive(&alice()), Event::PreauthDeny);
    assert_eq!(w.duo.count("auth:"), 0);
    assert!(w.store.sessions().is_empty());
}

#[test]
fn preauth_enroll_denies() {
    let w = World::new();
    w.duo.preauth_answer(
        "alice",
        Preauth::Enroll {
            status_msg: "enroll".into(),
            enroll_portal_url: "https://duo.example/enroll".into(),
        },
    );
    assert_deny(&w.gate().drive(&alice()), Event::NotEnrolled);
    assert_eq!(w.duo.count("auth:"), 0);
    assert!(w.store.sessions().is_empty());
}

#[test]
fn a_429_backs_off_for_retry_after_then_succeeds() {
    let w = World::new();
    w.duo.fail_next([Error::RateLimited {
        retry_after: Some(Duration::from_secs(3)),
    }]);
    let d = w.gate().drive(&alice());
    assert_grant(&d, Event::PushApproved);
    assert!(
        w.clock.waited() >= Duration::from_secs(3),
        "{:?}",
        w.clock.waited()
    );
    assert_eq!(w.duo.count("preauth:"), 2, "asked again after the 429");
}

#[test]
fn a_429_past_the_deadline_gives_up_without_waiting() {
    let w = World::with(|p| p.factor.push_timeout = Duration::from_secs(30));
    w.duo.fail_next([Error::RateLimited {
        retry_after: Some(Duration::from_secs(120)),
    }]);
    let d = w.gate().drive(&alice());
    assert!(!d.granted(), "{d:?}");
    assert_deny(&d, Event::DuoError);
    assert_eq!(w.clock.waited(), Duration::ZERO);
    assert_eq!(w.duo.count("preauth:"), 1);
}

#[test]
fn a_429_while_polling_backs_off_too() {
    let w = World::new();
    let g = w.gate();
    let p = pending(&g.authenticate(&alice()));
    w.duo.fail_next([Error::RateLimited { retry_after: None }]);
    let d = g.resume(&alice(), &p);
    assert_grant(&d, Event::PushApproved);
    assert!(
        w.clock.waited() >= Duration::from_secs(1),
        "{:?}",
        w.clock.waited()
    );
    assert_eq!(w.duo.count("status:"), 2);
}

/// The session records the factor it was approved with (`sessions list` shows it).
#[test]
fn each_approval_records_its_factor() {
    let factors = |w: &World| -> Vec<String> {
        w.store
            .sessions()
            .into_iter()
            .map(|(_, e)| e.factor)
            .collect()
    };
    let w = World::new();
    w.duo.phone("alice", Phone::Approve);
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
    assert_eq!(factors(&w), ["push"]);

    let w = World::new();
    w.duo.phone("alice", Phone::Approve);
    let d = w.gate().drive(&req("alice", "pw,phone", Some(COOKIE)));
    assert_grant(&d, Event::PushApproved);
    assert_eq!(factors(&w), ["phone"]);

    let w = World::new();
    w.duo.accept_passcode("123456");
    let d = w.gate().drive(&req("alice", "pw,123456", Some(COOKIE)));
    assert_grant(&d, Event::PasscodeApproved);
    assert_eq!(factors(&w), ["passcode"]);

    let w = totp_world(|_| {});
    let d = w
        .gate()
        .drive(&req("alice", &format!("pw,{}", code(&w, 0)), Some(COOKIE)));
    assert_grant(&d, Event::TotpApproved);
    assert_eq!(factors(&w), ["totp"]);

    let w = World::new();
    let allow = Preauth::Allow {
        status_msg: "bypass".into(),
    };
    w.duo.preauth_answer("alice", allow);
    assert_grant(&w.gate().drive(&alice()), Event::PreauthAllow);
    assert_eq!(factors(&w), ["preauth_allow"]);
}
