//! Replays every vector of `fixtures/duo-signing-vectors.json` (signed by Duo's official
//! Python client) through the simulator's own verification function, as the server calls it,
//! with the simulator's clock set to the vector's date.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use duo_auth::sign::{self, SigVersion};
use duo_sim::verify::parse_date;
use duo_sim::{verify_request, Rejection, RequestParts};
use serde_json::Value;

fn pairs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, vals) in v.as_object().unwrap() {
        match vals {
            Value::Array(list) => {
                for x in list {
                    out.push((k.clone(), x.as_str().unwrap().to_string()));
                }
            }
            Value::String(s) => out.push((k.clone(), s.clone())),
            other => panic!("unexpected {other}"),
        }
    }
    out
}

/// Form-encode as urllib's `urlencode` does (`+` for space), so re-canonicalisation is tested.
fn form(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", sign::encode(k), sign::encode(v)).replace("%20", "+"))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn every_vector_verifies_through_the_server_path() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/duo-signing-vectors.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let list = all["signature_vectors"].as_array().unwrap();
    assert!(list.len() >= 20);
    let window = Duration::from_secs(300);
    for v in list {
        let name = v["name"].as_str().unwrap();
        let expected = match (
            v["sig_version"].as_u64().unwrap(),
            v["digest"].as_str().unwrap(),
        ) {
            (2, "hmac-sha1") => SigVersion::V2Sha1,
            (2, "hmac-sha512") => SigVersion::V2Sha512,
            (5, "hmac-sha512") => SigVersion::V5,
            other => panic!("{name}: {other:?}"),
        };
        let method = v["method"].as_str().unwrap();
        let date = v["date"].as_str().unwrap();
        let ikey = v["ikey"].as_str().unwrap();
        let skey = v["skey"].as_str().unwrap();
        let params = pairs(&v["params"]);
        let is_post = method.eq_ignore_ascii_case("POST");

        // Lay the request out as a client puts it on the wire.
        let mut headers = vec![
            (
                "Host".to_string(),
                format!("{}:443", v["host"].as_str().unwrap()),
            ),
            ("Date".to_string(), date.to_string()),
            (
                "Authorization".to_string(),
                v["expected_authorization"].as_str().unwrap().to_string(),
            ),
        ];
        headers.extend(pairs(&v["x_duo_headers"]));
        let (query, body) = if expected == SigVersion::V5 {
            // v5: parameters in the query, the body (JSON for POST) hashed raw.
            if is_post {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            (form(&params), v["body"].as_str().unwrap_or("").to_string())
        } else if is_post {
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            (String::new(), form(&params))
        } else {
            (form(&params), String::new())
        };
        let parts = RequestParts {
            method,
            path: v["path"].as_str().unwrap(),
            query: &query,
            headers: &headers,
            body: body.as_bytes(),
        };
        let now = parse_date(date).unwrap();

        let ok = verify_request(&parts, ikey, skey, now, window)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(ok.version, expected, "{name}");
        assert_eq!(ok.ikey, ikey, "{name}");

        // The same request fails with another skey, another ikey, or out of the window.
        assert_eq!(
            verify_request(&parts, ikey, "not-the-skey", now, window),
            Err(Rejection::BadSignature),
            "{name}"
        );
        assert_eq!(
            verify_request(&parts, "DIXXXXXXXXXXXXXXXXXX", skey, now, window),
            Err(Rejection::UnknownIkey),
            "{name}"
        );
        assert_eq!(
            verify_request(&parts, ikey, skey, now + 301, window),
            Err(Rejection::DateOutOfWindow { skew: -301 }),
            "{name}"
        );
        // A changed path breaks it too.
        let moved = RequestParts {
            path: "/auth/v2/elsewhere",
            ..parts
        };
        assert_eq!(
            verify_request(&moved, ikey, skey, now, window),
            Err(Rejection::BadSignature),
            "{name}"
        );
    }
}
