//! The control listener: the JSON API and the phone page, driven over plain HTTP as a script
//! or a browser would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use duo_auth::types::{AuthRequest, AuthResult, AuthStart, Factor};
use duo_auth::SigVersion;
use serde_json::Value;

fn control(sim: &duo_sim::SimHandle, method: &str, path: &str, body: Option<&[u8]>) -> Raw {
    let url = format!("http://{}{}", sim.control_addr(), path);
    send(&plain_agent(), &url, method, &[], body)
}

fn start_push(c: &duo_auth::Client, user: &str) -> String {
    let req = AuthRequest {
        username: user.into(),
        factor: Factor::Push {
            device: "auto".into(),
            pushinfo: "host=www.example.com&path=%2Fsecret%2Findex.html&from=check-duo".into(),
        },
        ipaddr: Some("192.0.2.7".into()),
        asynchronous: true,
    };
    match c.auth(&req, deadline()).unwrap() {
        AuthStart::Txid(t) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn approve_over_http_moves_a_manual_push_to_allow() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha512);
    let txid = start_push(&c, "jill");

    let r = control(&sim, "GET", "/api/pushes", None);
    assert_eq!(r.status, 200);
    let list = r.json.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let p = &list[0];
    assert_eq!(p["txid"], txid.as_str());
    assert_eq!(p["username"], "jill");
    assert_eq!(p["factor"], "push");
    assert_eq!(p["state"], "pending");
    assert_eq!(p["ipaddr"], "192.0.2.7");
    assert_eq!(p["pushinfo"]["host"], "www.example.com");
    assert_eq!(p["pushinfo"]["path"], "/secret/index.html");
    assert!(p["created_ms"].as_u64().unwrap() > 1_600_000_000_000);

    // Still waiting: the long poll answers "waiting" after its interval.
    assert_eq!(
        c.auth_status(&txid, deadline()).unwrap().result,
        AuthResult::Waiting
    );
    let r = control(
        &sim,
        "POST",
        &format!("/api/pushes/{txid}/approve"),
        Some(b""),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["txid"], txid.as_str());
    let s = c.auth_status(&txid, deadline()).unwrap();
    assert_eq!((s.result, s.status.as_str()), (AuthResult::Allow, "allow"));
    let r = control(&sim, "GET", "/api/pushes", None);
    assert_eq!(r.json[0]["state"], "allow");
    // A decided push cannot be decided again.
    let r = control(&sim, "POST", &format!("/api/pushes/{txid}/deny"), Some(b""));
    assert_eq!(r.status, 404);
}

#[test]
fn latest_deny_and_unknown() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V5);
    let first = start_push(&c, "jill");
    let second = start_push(&c, "jill");
    let r = control(&sim, "POST", "/api/pushes/latest/deny", Some(b""));
    assert_eq!(r.status, 200);
    assert_eq!(r.json["txid"], second.as_str());
    assert_eq!(
        c.auth_status(&second, deadline()).unwrap().result,
        AuthResult::Deny
    );
    let r = control(&sim, "POST", "/api/pushes/latest/approve", Some(b""));
    assert_eq!(r.json["txid"], first.as_str());
    let r = control(&sim, "POST", "/api/pushes/latest/approve", Some(b""));
    assert_eq!(r.status, 404);
    let r = control(&sim, "POST", "/api/pushes/nope/approve", Some(b""));
    assert_eq!(r.status, 404);
    let r = control(
        &sim,
        "POST",
        &format!("/api/pushes/{first}/maybe"),
        Some(b""),
    );
    assert_eq!(r.status, 404);
    let r = control(&sim, "GET", "/api/pushes/latest/approve", None);
    assert_eq!(r.status, 405);
}

#[test]
fn counters_and_reset() {
    let sim = sim(example_behaviours());
    let c = client(&sim, SigVersion::V2Sha1);
    c.ping(deadline()).unwrap();
    c.check(deadline()).unwrap();
    c.preauth("alice", None, deadline()).unwrap();
    let _ = c.preauth("hank", None, deadline());
    let txid = start_push(&c, "alice");
    c.auth_status(&txid, deadline()).unwrap();
    let _ = duo_auth::Client::new(duo_auth::ClientConfig {
        ikey: "DIXXXXXXXXXXXXXXXXXX".into(),
        ..client_config(&sim)
    })
    .unwrap()
    .check(deadline());

    let r = control(&sim, "GET", "/api/counters", None);
    let expected: Value = serde_json::json!({
        "ping": 1, "check": 2, "preauth": 2, "auth": 1, "auth_status": 1, "oidc": 0, "other": 0,
        "unauthorized": 1, "rate_limited": 1, "pushes_by_user": {"alice": 1},
    });
    assert_eq!(r.json, expected);
    assert_eq!(sim.counters().duo_calls(), 7);

    let r = control(&sim, "POST", "/api/reset", Some(b""));
    assert_eq!(r.status, 200);
    assert_eq!(sim.counters(), duo_sim::Counters::default());
    assert!(sim.pushes().is_empty());
    // After a reset the old txid is unknown.
    assert!(c.auth_status(&txid, deadline()).is_err());
}

fn client_config(sim: &duo_sim::SimHandle) -> duo_auth::ClientConfig {
    duo_auth::ClientConfig {
        ikey: IKEY.into(),
        skey: duo_auth::Secret::new(SKEY),
        host: sim.host(),
        extra_ca_pem: Some(sim.ca_pem().into_bytes()),
        call_timeout: Duration::from_secs(10),
        sig_version: SigVersion::V2Sha512,
    }
}

#[test]
fn behaviours_can_be_replaced_over_http() {
    let sim = sim(duo_sim::Behaviours::default());
    let c = client(&sim, SigVersion::V2Sha512);
    let doc = br#"{"users": {"zed": {"preauth": "deny"}}}"#;
    let r = control(&sim, "PUT", "/api/behaviours", Some(doc));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(matches!(
        c.preauth("zed", None, deadline()).unwrap(),
        duo_auth::types::Preauth::Deny { .. }
    ));
    let r = control(
        &sim,
        "PUT",
        "/api/behaviours",
        Some(br#"{"users": {"zed": {"x": 1}}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.json["error"].as_str().unwrap().contains("`x`"), "{r:?}");
}

#[test]
fn phone_page_serves_with_stable_hooks() {
    let sim = sim(duo_sim::Behaviours::default());
    let url = format!("http://{}/", sim.control_addr());
    let resp = plain_agent().get(&url).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.content_type().starts_with("text/html"));
    let html = resp.into_string().unwrap();
    for hook in [
        "<ul id=\"pending\">",
        "<ul id=\"history\">",
        "name=\"viewport\"",
        "/api/pushes",
        "setInterval(refresh, 1000)",
    ] {
        assert!(html.contains(hook), "{hook}");
    }
    let r = control(&sim, "GET", "/nope", None);
    assert_eq!(r.status, 404);
}
