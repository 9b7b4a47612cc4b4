//! Verified Duo Push: the preauth `txid` is kept, and the code is read from `status_msg`.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use duo_auth::client::{parse_preauth, parse_preauth_answer, parse_status};
use duo_auth::types::{verification_code, AuthResult, Preauth};
use serde_json::json;

#[test]
fn preauth_keeps_the_verified_push_txid() {
    let v = json!({"result": "auth", "status_msg": "Account is active", "txid": "vp-txid-1",
                   "devices": [{"device": "D1", "type": "phone", "capabilities": ["push"]}]});
    let a = parse_preauth_answer(v.clone()).unwrap();
    assert_eq!(a.txid.as_deref(), Some("vp-txid-1"));
    assert!(matches!(a.preauth, Preauth::Auth { ref devices } if devices.len() == 1));
    // The old call still answers the same Preauth.
    assert_eq!(parse_preauth(v).unwrap(), a.preauth);
    // No txid, an empty one, or one on a result that is not `auth`: none kept.
    let none = |v| parse_preauth_answer(v).unwrap().txid;
    assert_eq!(none(json!({"result": "auth", "devices": []})), None);
    assert_eq!(none(json!({"result": "auth", "txid": ""})), None);
    assert_eq!(
        none(json!({"result": "allow", "status_msg": "ok", "txid": "x"})),
        None
    );
}

#[test]
fn the_code_comes_from_status_msg() {
    // duo_unix's mock and Duo's own answers.
    let s = parse_status(json!({"result": "waiting", "status": "pushed",
        "status_msg": "Please enter verification code 376 into Duo Mobile..."}))
    .unwrap();
    assert_eq!(s.result, AuthResult::Waiting);
    assert_eq!(s.verification_code().as_deref(), Some("376"));
    for (msg, code) in [
        (
            "Please enter verification code 708 into Duo Mobile...",
            Some("708"),
        ),
        ("Verification code: 123456", Some("123456")),
        ("please enter VERIFICATION CODE 042.", Some("042")),
        ("Pushed a login request to your device...", None),
        ("verification code abc", None),
        ("verification code 12ab", None),
        ("verification code 123456789012", None),
        ("", None),
    ] {
        assert_eq!(verification_code(msg).as_deref(), code, "{msg}");
    }
}
