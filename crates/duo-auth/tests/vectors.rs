//! Replays every vector of `fixtures/duo-signing-vectors.json` (computed with Duo's official
//! Python client) through the signing functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use duo_auth::sign::{self, Canonical, SigVersion};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/duo-signing-vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

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

#[test]
fn signature_vectors() {
    let all = vectors();
    let list = all["signature_vectors"].as_array().unwrap();
    assert!(list.len() >= 20);
    for v in list {
        let name = v["name"].as_str().unwrap();
        let version = match (
            v["sig_version"].as_u64().unwrap(),
            v["digest"].as_str().unwrap(),
        ) {
            (2, "hmac-sha1") => SigVersion::V2Sha1,
            (2, "hmac-sha512") => SigVersion::V2Sha512,
            (5, "hmac-sha512") => SigVersion::V5,
            other => panic!("{name}: unknown version {other:?}"),
        };
        let params = pairs(&v["params"]);
        let headers = pairs(&v["x_duo_headers"]);
        let body = v["body"].as_str().unwrap_or("");
        let req = Canonical {
            date: v["date"].as_str().unwrap(),
            method: v["method"].as_str().unwrap(),
            host: v["host"].as_str().unwrap(),
            path: v["path"].as_str().unwrap(),
            params: &params,
            body: body.as_bytes(),
            x_duo_headers: &headers,
        };
        let canonical = sign::canonicalize(version, &req);
        assert_eq!(
            canonical,
            v["expected_canonical"].as_str().unwrap(),
            "{name}"
        );
        let skey = v["skey"].as_str().unwrap();
        let sig = sign::signature(version, skey, &canonical);
        assert_eq!(sig, v["expected_signature_hex"].as_str().unwrap(), "{name}");
        let ikey = v["ikey"].as_str().unwrap();
        assert_eq!(
            sign::sign(version, ikey, skey, &req),
            v["expected_authorization"].as_str().unwrap(),
            "{name}"
        );
        // The verifier accepts the published signature and nothing else.
        assert!(sign::verify(version, skey, &req, &sig), "{name}");
        let (pikey, psig) =
            sign::parse_authorization(v["expected_authorization"].as_str().unwrap()).unwrap();
        assert_eq!(pikey, ikey);
        assert_eq!(psig, sig);
        let mut wrong = sig.clone().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        assert!(!sign::verify(
            version,
            skey,
            &req,
            std::str::from_utf8(&wrong).unwrap()
        ));
    }
}

#[test]
fn signing_host_with_port_matches_without() {
    let all = vectors();
    let v = &all["signature_vectors"][1];
    let params = pairs(&v["params"]);
    let base = Canonical {
        date: v["date"].as_str().unwrap(),
        method: v["method"].as_str().unwrap(),
        host: v["host"].as_str().unwrap(),
        path: v["path"].as_str().unwrap(),
        params: &params,
        ..Default::default()
    };
    let host_port = format!("{}:8443", base.host);
    let with_port = Canonical {
        host: &host_port,
        ..base.clone()
    };
    assert_eq!(
        sign::canonicalize(SigVersion::V2Sha512, &with_port),
        v["expected_canonical"].as_str().unwrap()
    );
}

#[test]
fn canon_params_vectors() {
    let all = vectors();
    for v in all["canon_params_vectors"].as_array().unwrap() {
        let params = pairs(&v["params"]);
        assert_eq!(
            sign::canon_params(&params),
            v["expected"].as_str().unwrap(),
            "{}",
            v["name"]
        );
    }
}

#[test]
fn sha512_of_empty() {
    assert_eq!(
        sign::sha512_hex(b""),
        vectors()["sha512_empty"].as_str().unwrap()
    );
}
