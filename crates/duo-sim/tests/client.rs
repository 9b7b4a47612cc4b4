//! The simulator driven by the project's own Duo client (`duo_auth::Client`), as check-duo
//! will drive it: every endpoint, every scripted behaviour, every signature version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use duo_auth::types::{AuthRequest, AuthResult, AuthStart, AuthStatus, Factor, Preauth};
use duo_auth::{Client, Error, SigVersion};
use duo_sim::{Behaviours, PushKind, PushState, UserBehaviour, DEVICE_ID};

const VERSIONS: [SigVersion; 3] = [SigVersion::V2Sha1, SigVersion::V2Sha512, SigVersion::V5];

fn push(user: &str, asynchronous: bool) -> AuthRequest {
    AuthRequest {
        username: user.into(),
        factor: Factor::Push {
            device: "auto".into(),
            pushinfo: "host=www.example.com&path=%2Fprivate%2F".into(),
        },
        ipaddr: Some("10.1.2.3".into()),
        asynchronous,
    }
}

fn passcode(user: &str, code: &str) -> AuthRequest {
    AuthRequest {
        username: user.into(),
        factor: Factor::Passcode(code.into()),
        ipaddr: None,
        asynchronous: false,
    }
}

fn start_txid(c: &Client, req: &AuthRequest) -> String {
    match c.auth(req, deadline()).unwrap() {
        AuthStart::Txid(t) => t,
        other => panic!("{other:?}"),
    }
}

/// Poll `auth_status` until the result is final; also returns how many polls it took.
fn poll_final(c: &Client, txid: &str) -> (AuthStatus, usize) {
    let until = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    while Instant::now() < until {
        let s = c.auth_status(txid, deadline()).unwrap();
        polls += 1;
        if s.result != AuthResult::Waiting {
            return (s, polls);
        }
        assert_eq!(s.status, "pushed");
    }
    panic!("no final status for {txid}");
}

#[test]
fn ping_and_check_with_every_version() {
    let sim = sim(Behaviours::default());
    for v in VERSIONS {
        let c = client(&sim, v);
        let t = c.ping(deadline()).unwrap().time;
        assert!((t - now_unix()).abs() <= 2);
        c.check(deadline()).unwrap();
    }
    let n = sim.counters();
    assert_eq!((n.ping, n.check, n.unauthorized), (3, 3, 0));
    assert_eq!(n.duo_calls(), 6);
}

#[test]
fn preauth_results() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    let pre = |u: &str| c.preauth(u, Some("10.1.2.3"), deadline()).unwrap();
    match pre("alice") {
        Preauth::Auth { devices } => {
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0].device, DEVICE_ID);
            assert_eq!(devices[0].kind, "phone");
            assert!(devices[0].capabilities.contains(&"push".to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(pre("dave"), Preauth::Allow { .. }));
    match pre("erin") {
        Preauth::Deny { status_msg } => assert!(status_msg.contains("disabled")),
        other => panic!("{other:?}"),
    }
    match pre("gina") {
        Preauth::Deny { status_msg } => assert!(status_msg.contains("locked out")),
        other => panic!("{other:?}"),
    }
    for user in ["frank", "somebody-unknown"] {
        match pre(user) {
            Preauth::Enroll {
                enroll_portal_url, ..
            } => assert!(enroll_portal_url.starts_with("https://")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.counters().preauth, 6);
}

#[test]
fn async_push_outcomes() {
    let b = Behaviours::default()
        .with_user(
            "alice",
            UserBehaviour {
                delay_ms: 300,
                ..Default::default()
            },
        )
        .with_user("bob", UserBehaviour::push(PushKind::Deny))
        .with_user(
            "carol",
            UserBehaviour {
                push: PushKind::Timeout,
                push_timeout_ms: Some(400),
                ..Default::default()
            },
        )
        .with_user("luke", UserBehaviour::push(PushKind::Fraud));
    let sim = sim(b);
    for v in VERSIONS {
        let c = client(&sim, v);
        for (user, result, status) in [
            ("alice", AuthResult::Allow, "allow"),
            ("bob", AuthResult::Deny, "deny"),
            ("carol", AuthResult::Deny, "timeout"),
            ("luke", AuthResult::Deny, "fraud"),
        ] {
            let txid = start_txid(&c, &push(user, true));
            let (s, _) = poll_final(&c, &txid);
            assert_eq!(
                (s.result, s.status.as_str()),
                (result, status),
                "{user} {v:?}"
            );
            assert!(!s.status_msg.is_empty());
        }
    }
    let n = sim.counters();
    assert_eq!(n.auth, 12);
    assert_eq!(n.pushes_by_user.get("alice"), Some(&3));
    let pushes = sim.pushes();
    assert_eq!(pushes.len(), 12);
    assert_eq!(
        pushes[0].pushinfo.get("path").map(String::as_str),
        Some("/private/")
    );
    assert_eq!(pushes[0].ipaddr.as_deref(), Some("10.1.2.3"));
}

#[test]
fn long_poll_waits_then_answers_on_change() {
    let b = Behaviours::default().with_user("jill", UserBehaviour::push(PushKind::Manual));
    let sim = sim(b);
    let c = client(&sim, SigVersion::V2Sha512);
    let txid = start_txid(&c, &push("jill", true));
    // Nothing changes: the poll is held for the long-poll interval (200 ms), then "waiting".
    let t0 = Instant::now();
    let s = c.auth_status(&txid, deadline()).unwrap();
    assert_eq!(s.result, AuthResult::Waiting);
    assert_eq!(s.status, "pushed");
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    // A change ends a held poll at once.
    std::thread::scope(|scope| {
        let poll =
            scope.spawn(|| client(&sim, SigVersion::V2Sha512).auth_status(&txid, deadline()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(sim.approve(&txid));
        let s = poll.join().unwrap().unwrap();
        assert_eq!(s.result, AuthResult::Allow);
    });
    assert!(!sim.approve(&txid), "already decided");
    assert_eq!(sim.pushes()[0].state, PushState::Allow);
}

#[test]
fn manual_push_decided_by_the_handle() {
    let b = Behaviours::default().with_user("jill", UserBehaviour::push(PushKind::Manual));
    let sim = sim(b);
    let c = client(&sim, SigVersion::V5);
    let txid = start_txid(&c, &push("jill", true));
    let pending = sim.wait_for_pending(Duration::from_secs(2)).unwrap();
    assert_eq!(pending.txid, txid);
    assert!(sim.deny("latest"));
    let (s, _) = poll_final(&c, &txid);
    assert_eq!((s.result, s.status.as_str()), (AuthResult::Deny, "deny"));
}

#[test]
fn synchronous_auth_and_other_factors() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    let done = |req: &AuthRequest| match c.auth(req, deadline()).unwrap() {
        AuthStart::Done(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(done(&push("alice", false)).result, AuthResult::Allow);
    assert_eq!(done(&push("bob", false)).result, AuthResult::Deny);
    let phone = AuthRequest {
        username: "alice".into(),
        factor: Factor::Phone {
            device: DEVICE_ID.into(),
        },
        ipaddr: None,
        asynchronous: false,
    };
    assert_eq!(done(&phone).result, AuthResult::Allow);
    let auto = AuthRequest {
        factor: Factor::Auto {
            device: "auto".into(),
        },
        ..phone.clone()
    };
    assert_eq!(done(&auto).result, AuthResult::Allow);
    // Users who never reach a factor end at once.
    assert_eq!(done(&push("dave", false)).status, "bypass");
    assert_eq!(done(&push("gina", false)).result, AuthResult::Deny);
    assert_eq!(sim.counters().pushes_by_user.get("alice"), Some(&3));
}

#[test]
fn passcodes() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha1);
    for (code, result) in [
        ("123456", AuthResult::Allow),
        ("654321", AuthResult::Allow),
        ("000000", AuthResult::Deny),
    ] {
        match c.auth(&passcode("kate", code), deadline()).unwrap() {
            AuthStart::Done(s) => assert_eq!(s.result, result, "{code}"),
            other => panic!("{other:?}"),
        }
    }
    // A user without passcodes accepts none.
    match c.auth(&passcode("alice", "123456"), deadline()).unwrap() {
        AuthStart::Done(s) => assert_eq!(s.result, AuthResult::Deny),
        other => panic!("{other:?}"),
    }
    // Async passcode: a txid whose status is final at once.
    let req = AuthRequest {
        asynchronous: true,
        ..passcode("kate", "123456")
    };
    let txid = start_txid(&c, &req);
    assert_eq!(poll_final(&c, &txid).0.result, AuthResult::Allow);
    assert!(sim.counters().pushes_by_user.is_empty());
}

#[test]
fn rate_limit_then_success() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    assert_eq!(
        c.preauth("hank", None, deadline()),
        Err(Error::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        })
    );
    assert!(c.preauth("hank", None, deadline()).is_ok());
    assert_eq!(sim.counters().rate_limited, 1);
    // A reset starts the tally again.
    sim.reset();
    assert!(matches!(
        c.preauth("hank", None, deadline()),
        Err(Error::RateLimited { .. })
    ));
}

#[test]
fn forced_server_error() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V5);
    assert_eq!(
        c.preauth("ivan", None, deadline()),
        Err(Error::Server { status: 503 })
    );
    assert_eq!(
        c.auth(&push("ivan", true), deadline()),
        Err(Error::Server { status: 503 })
    );
    // Other users are unaffected, and `check` names no user.
    c.check(deadline()).unwrap();
    assert!(c.preauth("alice", None, deadline()).is_ok());
}

#[test]
fn unknown_txid_and_bad_parameters() {
    let sim = sim(Behaviours::default());
    let c = client(&sim, SigVersion::V2Sha512);
    match c.auth_status("no-such-txid", deadline()) {
        Err(Error::Rejected { status, code, .. }) => assert_eq!((status, code), (400, 40002)),
        other => panic!("{other:?}"),
    }
    let bad_device = AuthRequest {
        factor: Factor::Push {
            device: "NOTADEVICE".into(),
            pushinfo: String::new(),
        },
        ..push("alice", true)
    };
    match c.auth(&bad_device, deadline()) {
        Err(Error::Rejected { code, message, .. }) => {
            assert_eq!(code, 40002);
            assert!(message.contains("device"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn credentials_and_clock() {
    let sim = sim(Behaviours::default());
    for v in VERSIONS {
        let wrong_skey = client_with(&sim, IKEY, "not-the-skey", v);
        assert!(matches!(
            wrong_skey.check(deadline()),
            Err(Error::Unauthorized { code: 40103, .. })
        ));
        let wrong_ikey = client_with(&sim, "DIXXXXXXXXXXXXXXXXXX", SKEY, v);
        assert!(matches!(
            wrong_ikey.preauth("alice", None, deadline()),
            Err(Error::Unauthorized { code: 40101, .. })
        ));
    }
    // The simulator's clock runs an hour ahead: dates are out of the window until the client
    // corrects its clock from ping.
    sim.set_clock_offset(3600);
    let mut c = client(&sim, SigVersion::V2Sha512);
    assert!(matches!(
        c.check(deadline()),
        Err(Error::Unauthorized { .. })
    ));
    let offset = c.ping(deadline()).unwrap().time - now_unix();
    c.set_clock_offset(offset);
    c.check(deadline()).unwrap();
    assert_eq!(sim.counters().unauthorized, 7);
}

/// A certificate that does not verify is its own error (a man in the middle would cause it), not
/// "unreachable" in the sense a fail-open mode may open on.
#[test]
fn an_untrusted_certificate_is_a_tls_error() {
    let sim = sim(Behaviours::default());
    let c = Client::new(duo_auth::ClientConfig {
        ikey: IKEY.into(),
        skey: duo_auth::Secret::new(SKEY),
        host: sim.host(),
        extra_ca_pem: None,
        call_timeout: Duration::from_secs(5),
        sig_version: SigVersion::V2Sha512,
    })
    .unwrap();
    let e = c.check(deadline()).unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e:?}");
    assert!(e.is_unreachable() && !e.may_fail_open());
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[test]
fn set_behaviours_at_run_time() {
    let sim = sim(Behaviours::default());
    let c = client(&sim, SigVersion::V2Sha512);
    assert!(matches!(
        c.preauth("zed", None, deadline()).unwrap(),
        Preauth::Auth { .. }
    ));
    sim.set_behaviours(Behaviours::default().with_user(
        "zed",
        UserBehaviour::preauth(duo_sim::PreauthKind::LockedOut),
    ));
    assert!(matches!(
        c.preauth("zed", None, deadline()).unwrap(),
        Preauth::Deny { .. }
    ));
}

#[test]
fn shutdown_stops_listening() {
    let sim = sim(Behaviours::default());
    let addr = sim.api_addr();
    let control = sim.control_addr();
    let c = client(&sim, SigVersion::V2Sha512);
    c.ping(deadline()).unwrap();
    sim.shutdown();
    assert!(c.ping(deadline()).is_err());
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert!(std::net::TcpStream::connect(control).is_err());
}
