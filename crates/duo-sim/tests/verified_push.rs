//! Verified Duo Push, driven by the project's client: preauth's txid, the code in
//! `auth_status`, and the phone (control API) that needs the code to approve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use duo_auth::types::{AuthRequest, AuthResult, AuthStart, Factor, Preauth, PreauthOptions};
use duo_auth::{Client, Error, SigVersion};
use duo_sim::{Behaviours, PushKind, PushState, UserBehaviour};

const VERIFIED: PreauthOptions = PreauthOptions {
    client_supports_verified_push: true,
    hostname: None,
    trusted_device_token: None,
};

fn push_req(user: &str) -> AuthRequest {
    AuthRequest {
        username: user.into(),
        factor: Factor::Push {
            device: "auto".into(),
            pushinfo: "host=www.example.com".into(),
        },
        ipaddr: Some("10.1.2.3".into()),
        asynchronous: true,
    }
}

/// Preauth with Verified Push, then auth with its txid; the txid and the code shown.
fn start_verified(c: &Client, user: &str) -> (String, String) {
    let pre = c
        .preauth_with(user, Some("10.1.2.3"), &VERIFIED, deadline())
        .unwrap();
    assert!(matches!(pre.preauth, Preauth::Auth { .. }));
    let pre_txid = pre.txid.expect("a verified push txid");
    let txid = match c
        .auth_with_txid(&push_req(user), Some(&pre_txid), deadline())
        .unwrap()
    {
        AuthStart::Txid(t) => t,
        other => panic!("{other:?}"),
    };
    // As Duo (and duo_unix's mock): the push continues preauth's transaction.
    assert_eq!(txid, pre_txid);
    let s = c.auth_status(&txid, deadline()).unwrap();
    assert_eq!(
        (s.result, s.status.as_str()),
        (AuthResult::Waiting, "pushed")
    );
    let code = s.verification_code().expect("a code in status_msg");
    assert_eq!(code.len(), 3);
    (txid, code)
}

fn approve(sim: &duo_sim::SimHandle, txid: &str, body: Option<&[u8]>) -> Raw {
    let url = format!("http://{}/api/pushes/{txid}/approve", sim.control_addr());
    send(&plain_agent(), &url, "POST", &[], body)
}

fn final_status(c: &Client, txid: &str) -> duo_auth::types::AuthStatus {
    for _ in 0..50 {
        let s = c.auth_status(txid, deadline()).unwrap();
        if s.result != AuthResult::Waiting {
            return s;
        }
    }
    panic!("{txid} never ended");
}

#[test]
fn the_right_code_approves() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    let (txid, code) = start_verified(&c, "vera");
    let p = sim.pushes().pop().unwrap();
    assert_eq!(p.verification_code.as_deref(), Some(code.as_str()));
    let r = control_pushes(&sim);
    assert_eq!(r[0]["verification_code"], code.as_str());

    let body = format!(r#"{{"code":"{code}"}}"#);
    let r = approve(&sim, &txid, Some(body.as_bytes()));
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("allow")));
    assert_eq!(final_status(&c, &txid).result, AuthResult::Allow);
}

#[test]
fn a_wrong_or_missing_code_denies() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V5);
    for body in [Some(&b"{\"code\":\"000\"}"[..]), Some(b"code=99"), None] {
        let (txid, code) = start_verified(&c, "vera");
        assert_ne!(code, "000");
        let r = approve(&sim, &txid, body);
        assert_eq!((r.status, r.json["state"].as_str()), (200, Some("deny")));
        let s = final_status(&c, &txid);
        assert_eq!((s.result, s.status.as_str()), (AuthResult::Deny, "deny"));
        assert_eq!(s.verification_code(), None);
    }
    // The library's approve() is a missing code; approve_with_code() types one.
    let (txid, _) = start_verified(&c, "vera");
    assert!(sim.approve(&txid));
    assert_eq!(final_status(&c, &txid).result, AuthResult::Deny);
    let (txid, code) = start_verified(&c, "vera");
    assert_eq!(sim.approve_with_code(&txid, &code), Some(PushState::Allow));
    assert_eq!(final_status(&c, &txid).result, AuthResult::Allow);
}

#[test]
fn without_client_support_or_policy_it_is_a_plain_push() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    // The client does not say it supports Verified Push: Duo bypasses the policy.
    let pre = c
        .preauth_with("vera", None, &PreauthOptions::default(), deadline())
        .unwrap();
    assert_eq!(pre.txid, None);
    // A user without the policy gets no txid even from a client that supports it.
    let pre = c
        .preauth_with("alice", None, &VERIFIED, deadline())
        .unwrap();
    assert_eq!(pre.txid, None);
    let txid = match c.auth(&push_req("vera"), deadline()).unwrap() {
        AuthStart::Txid(t) => t,
        other => panic!("{other:?}"),
    };
    let s = c.auth_status(&txid, deadline()).unwrap();
    assert_eq!(s.verification_code(), None);
    assert!(sim.approve(&txid));
    assert_eq!(final_status(&c, &txid).result, AuthResult::Allow);
}

#[test]
fn preauth_txids_are_single_use_and_per_user() {
    let mut b = Behaviours::default();
    b.default.verified_push = true;
    b.default.push = PushKind::Manual;
    let sim = sim(b);
    let c = client(&sim, SigVersion::V2Sha512);
    let pre = c.preauth_with("amy", None, &VERIFIED, deadline()).unwrap();
    let t = pre.txid.unwrap();
    let invalid = |r: Result<AuthStart, Error>| match r {
        Err(Error::Rejected {
            status: 400,
            code: 40002,
            ..
        }) => {}
        other => panic!("{other:?}"),
    };
    invalid(c.auth_with_txid(&push_req("ben"), Some(&t), deadline()));
    invalid(c.auth_with_txid(&push_req("amy"), Some("made-up"), deadline()));
    let passcode = AuthRequest {
        factor: Factor::Passcode("123456".into()),
        asynchronous: false,
        ..push_req("amy")
    };
    invalid(c.auth_with_txid(&passcode, Some(&t), deadline()));
    assert!(c
        .auth_with_txid(&push_req("amy"), Some(&t), deadline())
        .is_ok());
    invalid(c.auth_with_txid(&push_req("amy"), Some(&t), deadline()));
}

#[test]
fn the_global_flag_and_scripted_approvals() {
    let mut cfg = duo_sim::SimConfig::new(IKEY, SKEY);
    cfg.verified_push = true;
    cfg.long_poll = Duration::from_millis(200);
    cfg.behaviours = Behaviours::default().with_user(
        "quick",
        UserBehaviour {
            delay_ms: 300,
            ..UserBehaviour::push(PushKind::Approve)
        },
    );
    let sim = duo_sim::start(cfg).unwrap();
    let c = client(&sim, SigVersion::V2Sha1);
    // A scripted approval is a user who typed the right code.
    let (txid, _) = start_verified(&c, "quick");
    assert_eq!(final_status(&c, &txid).result, AuthResult::Allow);
}

fn control_pushes(sim: &duo_sim::SimHandle) -> Vec<serde_json::Value> {
    let url = format!("http://{}/api/pushes", sim.control_addr());
    let r = send(&plain_agent(), &url, "GET", &[], None);
    r.json.as_array().unwrap().clone()
}
