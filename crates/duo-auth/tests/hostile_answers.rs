//! Whatever Duo (or something pretending to be Duo) answers, reading it never panics: every
//! input ends in a value or a typed error.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use duo_auth::client::{parse_answer, parse_preauth, parse_status};
use duo_auth::Error;
use proptest::prelude::*;

/// JSON-shaped text built from the pieces Duo's answers are made of, so that the search reaches
/// past the first parse error.
fn duoish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "stat",
        "response",
        "code",
        "message",
        "message_detail",
        "result",
        "status",
        "status_msg",
        "devices",
        "txid",
        "time",
        "capabilities",
        "device",
        "enroll_portal_url",
    ]);
    let scalar = prop::sample::select(vec![
        "\"OK\"",
        "\"FAIL\"",
        "\"allow\"",
        "\"deny\"",
        "\"auth\"",
        "\"enroll\"",
        "\"waiting\"",
        "null",
        "true",
        "0",
        "-1",
        "40103",
        "18446744073709551616",
        "1e999",
        "\"\"",
        "[]",
        "{}",
        "\"\\u0000\"",
        "[\"push\"]",
    ]);
    prop::collection::vec((key, scalar), 0..8).prop_map(|pairs| {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #[test]
    fn any_bytes_any_status(status in 100u16..600, text in ".{0,200}") {
        let _ = parse_answer(status, &text);
    }

    #[test]
    fn duo_shaped_answers(status in prop::sample::select(vec![200u16, 400, 401, 429, 500, 503]),
                          text in duoish()) {
        match parse_answer(status, &text) {
            Ok(v) => {
                let _ = parse_preauth(v.clone());
                let _ = parse_status(v);
            }
            Err(Error::Unauthorized { .. }) => prop_assert!(status == 401 || status == 200),
            Err(_) => {}
        }
    }

    #[test]
    fn nested_responses(text in duoish()) {
        let wrapped = format!("{{\"stat\":\"OK\",\"response\":{text}}}");
        if let Ok(v) = parse_answer(200, &wrapped) {
            let _ = parse_preauth(v.clone());
            let _ = parse_status(v);
        }
    }
}

#[test]
fn errors_follow_the_code() {
    let fail = |code: u32| format!("{{\"stat\":\"FAIL\",\"code\":{code},\"message\":\"m\"}}");
    assert!(matches!(
        parse_answer(401, &fail(40103)),
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        parse_answer(200, &fail(40103)),
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        parse_answer(500, "<html>"),
        Err(Error::Server { status: 500 })
    ));
    assert!(matches!(
        parse_answer(400, &fail(40002)),
        Err(Error::Rejected { status: 400, .. })
    ));
    assert!(matches!(
        parse_answer(200, "not json"),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        parse_answer(200, "{\"stat\":\"OK\"}"),
        Err(Error::Malformed(_))
    ));
    assert_eq!(
        parse_answer(
            200,
            "{\"stat\":\"OK\",\"response\":{\"time\":1},\"extra\":[1]}"
        )
        .unwrap(),
        serde_json::json!({"time": 1})
    );
}
