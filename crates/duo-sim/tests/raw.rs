//! Hand-made requests: what a broken or hostile client sends, and encodings other clients use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use duo_auth::sign::{self, Canonical, SigVersion};
use duo_sim::{Behaviours, PreauthKind, UserBehaviour};

const FORM: &str = "application/x-www-form-urlencoded";

struct Setup {
    sim: duo_sim::SimHandle,
    agent: ureq::Agent,
}

impl Setup {
    fn new() -> Self {
        let b = Behaviours::default()
            .with_user("first last", UserBehaviour::preauth(PreauthKind::Allow));
        let sim = sim(b);
        let agent = agent(&sim);
        Setup { sim, agent }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.sim.host(), path)
    }

    /// POST a form `body` to preauth, signed over `signed` with `skey`/`ikey` at `date`.
    fn preauth(
        &self,
        ikey: &str,
        skey: &str,
        date: &str,
        signed: &[(&str, &str)],
        body: &str,
    ) -> Raw {
        let auth = v2_auth(
            SigVersion::V2Sha512,
            ikey,
            skey,
            date,
            "POST",
            "/auth/v2/preauth",
            signed,
        );
        send(
            &self.agent,
            &self.url("/auth/v2/preauth"),
            "POST",
            &[
                ("Date", date),
                ("Authorization", &auth),
                ("Content-Type", FORM),
            ],
            Some(body.as_bytes()),
        )
    }
}

fn date(offset: i64) -> String {
    sign::rfc2822_date(now_unix() + offset)
}

fn assert_fail(r: &Raw, status: u16, code: u64) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json["stat"], "FAIL", "{r:?}");
    assert_eq!(r.json["code"], code, "{r:?}");
    assert!(r.json["message"].is_string(), "{r:?}");
}

#[test]
fn a_good_request_passes() {
    let s = Setup::new();
    let r = s.preauth(
        IKEY,
        SKEY,
        &date(0),
        &[("username", "alice")],
        "username=alice",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["stat"], "OK");
    assert_eq!(r.json["response"]["result"], "auth");
}

#[test]
fn wrong_skey_wrong_ikey_unsigned() {
    let s = Setup::new();
    let p = [("username", "alice")];
    assert_fail(
        &s.preauth(IKEY, "wrong", &date(0), &p, "username=alice"),
        401,
        40103,
    );
    assert_fail(
        &s.preauth("DIXXXXXXXXXXXXXXXXXX", SKEY, &date(0), &p, "username=alice"),
        401,
        40101,
    );
    let r = send(
        &s.agent,
        &s.url("/auth/v2/check"),
        "GET",
        &[("Date", &date(0))],
        None,
    );
    assert_fail(&r, 401, 40101);
    let r = send(
        &s.agent,
        &s.url("/auth/v2/check"),
        "GET",
        &[("Date", &date(0)), ("Authorization", "Basic !!!notbase64")],
        None,
    );
    assert_fail(&r, 401, 40101);
    // ping needs no signature.
    let r = send(&s.agent, &s.url("/auth/v2/ping"), "GET", &[], None);
    assert_eq!(r.status, 200);
    assert!(r.json["response"]["time"].is_i64());
    assert_eq!(s.sim.counters().unauthorized, 4);
}

#[test]
fn date_window() {
    let s = Setup::new();
    let p = [("username", "alice")];
    for (offset, ok) in [(-400, false), (400, false), (-200, true), (200, true)] {
        let r = s.preauth(IKEY, SKEY, &date(offset), &p, "username=alice");
        if ok {
            assert_eq!(r.status, 200, "{offset}: {r:?}");
        } else {
            assert_fail(&r, 401, 40103);
            let detail = r.json["message_detail"].as_str().unwrap();
            assert!(detail.contains("Date"), "{detail}");
        }
    }
    // No date, and a date that is not RFC 2822.
    let auth = v2_auth(
        SigVersion::V2Sha1,
        IKEY,
        SKEY,
        "",
        "GET",
        "/auth/v2/check",
        &[],
    );
    let r = send(
        &s.agent,
        &s.url("/auth/v2/check"),
        "GET",
        &[("Authorization", &auth)],
        None,
    );
    assert_fail(&r, 401, 40103);
    let auth = v2_auth(
        SigVersion::V2Sha1,
        IKEY,
        SKEY,
        "yesterday",
        "GET",
        "/auth/v2/check",
        &[],
    );
    let r = send(
        &s.agent,
        &s.url("/auth/v2/check"),
        "GET",
        &[("Authorization", &auth), ("Date", "yesterday")],
        None,
    );
    assert_fail(&r, 401, 40103);
}

#[test]
fn x_duo_date_wins() {
    let s = Setup::new();
    let good = date(0);
    let auth = v2_auth(
        SigVersion::V2Sha512,
        IKEY,
        SKEY,
        &good,
        "GET",
        "/auth/v2/check",
        &[],
    );
    let headers = [
        ("Date", "Tue, 21 Aug 2012 17:29:18 -0000"),
        ("X-Duo-Date", good.as_str()),
        ("Authorization", auth.as_str()),
    ];
    let r = send(&s.agent, &s.url("/auth/v2/check"), "GET", &headers, None);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn tampered_parameter() {
    let s = Setup::new();
    let r = s.preauth(
        IKEY,
        SKEY,
        &date(0),
        &[("username", "alice")],
        "username=mallory",
    );
    assert_fail(&r, 401, 40103);
    let r = s.preauth(
        IKEY,
        SKEY,
        &date(0),
        &[("username", "alice")],
        "username=alice&ipaddr=1.2.3.4",
    );
    assert_fail(&r, 401, 40103);
}

#[test]
fn form_body_with_plus_for_space() {
    let s = Setup::new();
    let r = s.preauth(
        IKEY,
        SKEY,
        &date(0),
        &[("username", "first last"), ("ipaddr", "10.0.0.1")],
        "ipaddr=10.0.0.1&username=first+last",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["response"]["result"], "allow");
    // Percent-encoded the other way (lower-case hex, %20) is the same request.
    let r = s.preauth(
        IKEY,
        SKEY,
        &date(0),
        &[("username", "first last")],
        "username=first%20last",
    );
    assert_eq!(r.json["response"]["result"], "allow", "{r:?}");
}

#[test]
fn get_query_with_plus_and_v5_json_body() {
    let s = Setup::new();
    let d = date(0);
    // An async push, signed v5 with a JSON body, as the Python client sends it.
    let body = br#"{"async":"1","device":"auto","factor":"push","pushinfo":"host=a.example&path=%2F","username":"first last"}"#;
    let canon = Canonical {
        date: &d,
        method: "POST",
        host: "127.0.0.1",
        path: "/auth/v2/auth",
        body,
        ..Default::default()
    };
    let auth = sign::sign(SigVersion::V5, IKEY, SKEY, &canon);
    let r = send(
        &s.agent,
        &s.url("/auth/v2/auth"),
        "POST",
        &[
            ("Date", &d),
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let txid = r.json["response"]["txid"].as_str().unwrap().to_string();
    // `first last` preauths to allow, so the transaction is already final.
    let push = &s.sim.pushes()[0];
    assert_eq!(push.username, "first last");
    assert_eq!(
        push.pushinfo.get("host").map(String::as_str),
        Some("a.example")
    );
    // auth_status with the txid in the query, `+`-free but re-canonicalised all the same.
    let auth = v2_auth(
        SigVersion::V2Sha512,
        IKEY,
        SKEY,
        &d,
        "GET",
        "/auth/v2/auth_status",
        &[("txid", &txid)],
    );
    let r = send(
        &s.agent,
        &s.url(&format!("/auth/v2/auth_status?txid={txid}")),
        "GET",
        &[("Date", &d), ("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["response"]["result"], "allow");
}

#[test]
fn missing_parameters_methods_and_paths() {
    let s = Setup::new();
    let r = s.preauth(IKEY, SKEY, &date(0), &[], "");
    assert_fail(&r, 400, 40001);
    assert_eq!(r.json["message_detail"], "username");
    let d = date(0);
    let auth = v2_auth(
        SigVersion::V2Sha512,
        IKEY,
        SKEY,
        &d,
        "GET",
        "/auth/v2/auth_status",
        &[],
    );
    let r = send(
        &s.agent,
        &s.url("/auth/v2/auth_status"),
        "GET",
        &[("Date", &d), ("Authorization", &auth)],
        None,
    );
    assert_fail(&r, 400, 40001);
    let r = send(&s.agent, &s.url("/auth/v2/ping"), "POST", &[], Some(b""));
    assert_fail(&r, 405, 40500);
    let r = send(&s.agent, &s.url("/auth/v2/enroll"), "POST", &[], Some(b""));
    assert_fail(&r, 404, 40400);
    let n = s.sim.counters();
    assert_eq!((n.preauth, n.auth_status, n.ping, n.other), (1, 1, 1, 1));
    assert_eq!(n.duo_calls(), 4);
}

#[test]
fn broken_clients_do_not_hurt_the_server() {
    let s = Setup::new();
    let addr = s.sim.api_addr();
    // Plain-text garbage on the TLS port, a silent connection, a half handshake.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff")
        .unwrap();
    let _silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x01])
        .unwrap();
    drop(half);
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink);
    // Garbage over TLS, an oversized body, then a good call still works.
    let r = send(
        &s.agent,
        &s.url("/auth/v2/ping"),
        "GARBAGE\u{7f}",
        &[],
        None,
    );
    assert!(r.status >= 400);
    let big = vec![b'a'; 100_000];
    let auth = v2_auth(
        SigVersion::V2Sha512,
        IKEY,
        SKEY,
        &date(0),
        "POST",
        "/auth/v2/preauth",
        &[],
    );
    let mut req = s
        .agent
        .post(&s.url("/auth/v2/preauth"))
        .set("Authorization", &auth);
    req = req.set("Content-Type", FORM);
    match req.send_bytes(&big) {
        Err(ureq::Error::Status(413, _)) | Err(ureq::Error::Transport(_)) => {}
        other => panic!("{:?}", other.map(|r| r.status())),
    }
    let r = send(&s.agent, &s.url("/auth/v2/ping"), "GET", &[], None);
    assert_eq!(r.status, 200);
}
