//! When Duo cannot be asked: `failmode` secure and safe, `failmode_networks`, and the errors
//! that never open.

use duo_auth::Error;

use super::support::*;
use crate::decision::Event;
use crate::policy::FailMode;

fn unreachable() -> Error {
    Error::Transport("connection refused".into())
}

fn safe(networks: &[&str]) -> World {
    World::with(|p| {
        p.factor.failmode = FailMode::Safe;
        p.factor.failmode_networks = networks.iter().map(|n| n.parse().unwrap()).collect();
    })
}

#[test]
fn failmode_secure_denies_when_duo_is_unreachable() {
    let w = World::new();
    assert_eq!(w.policy.factor.failmode, FailMode::Secure);
    for e in [
        unreachable(),
        Error::Timeout,
        Error::Server { status: 503 },
        Error::Unauthorized {
            code: 40103,
            message: "invalid signature".into(),
        },
    ] {
        w.duo.fail_next([e]);
        let d = w.gate().drive(&alice());
        assert_deny(&d, Event::DuoUnreachable);
    }
    assert!(w.store.sessions().is_empty());
}

#[test]
fn failmode_safe_opens_but_stores_no_session() {
    let w = safe(&[]);
    w.duo.fail_next([unreachable()]);
    let d = w.gate().drive(&alice());
    assert_grant(&d, Event::FailOpen);
    assert!(d.fail_open());
    assert_eq!(d.outcome_str(), "GRANT-FAIL-OPEN");
    assert_eq!(set_session(&d), None);
    assert!(w.store.sessions().is_empty());
    assert!(w.gate().authorize(&alice()).is_none());
    // Duo is back: the next request gets its second factor.
    assert_grant(&w.gate().drive(&alice()), Event::PushApproved);
    assert_eq!(w.duo.count("auth:push"), 1);
}

#[test]
fn failmode_safe_opens_only_for_the_listed_networks() {
    let w = safe(&["10.0.0.0/8", "2001:db8:ff::/48"]);
    for ip in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8:ff:1::5"] {
        w.duo.fail_next([unreachable()]);
        assert_grant(&w.gate().drive(&from(ip, alice())), Event::FailOpen);
    }
    for ip in ["192.0.2.1", "2001:db8:fe::1", "", "not-an-address"] {
        w.duo.fail_next([unreachable()]);
        assert_deny(&w.gate().drive(&from(ip, alice())), Event::DuoUnreachable);
    }
}

#[test]
fn a_refusal_by_duo_never_opens() {
    let w = safe(&[]);
    w.duo.fail_next([Error::Rejected {
        status: 400,
        code: 40002,
        message: "invalid username".into(),
    }]);
    let d = w.gate().drive(&alice());
    assert_deny(&d, Event::DuoError);
    w.duo
        .fail_next([Error::Config("unreadable CA file".into())]);
    assert_deny(&w.gate().drive(&alice()), Event::DuoError);
}

#[test]
fn a_failure_after_preauth_never_opens() {
    let w = safe(&[]);
    let g = w.gate();
    let p = pending(&g.authenticate(&alice()));
    w.duo.fail_next([unreachable()]);
    let d = g.resume(&alice(), &p);
    assert!(!d.granted(), "{d:?}");
    assert_deny(&d, Event::DuoError);
    assert!(w.store.sessions().is_empty());
}
