//! Every config the project ships parses, and its example passwords are the ones documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use check_duo::config::{CacheConfig, Config, Credential};
use check_duo::password;

fn shipped() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    for dir in ["examples/config", "deploy"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    found.push(p);
                }
            }
        }
    }
    found.sort();
    found
}

/// `ca_file` must name a readable PEM at parse time; examples point at /etc paths, so the test
/// swaps in a fixture certificate and keeps everything else as shipped.
fn with_test_ca(text: &str) -> String {
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/test-ca.pem");
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    for section in ["duo", "cache"] {
        if v[section].get("ca_file").is_some() {
            v[section]["ca_file"] = serde_json::json!(ca);
        }
    }
    v.to_string()
}

#[test]
fn every_shipped_config_parses() {
    let files = shipped();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let text = with_test_ca(&std::fs::read_to_string(&f).unwrap());
        let cfg = Config::parse(&f, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.policy.users.is_empty(), "{}", f.display());
        // Documented in the README: joe's password is "joe password", ann's "ann password".
        for (user, cred) in &cfg.policy.users {
            if let Credential::Plain(_) = cred {
                continue;
            }
            assert!(
                password::verify(cred, &format!("{user} password")),
                "{}: {user}",
                f.display()
            );
        }
    }
}

#[test]
fn the_full_example_sets_every_addition() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/full.json");
    let text = with_test_ca(&std::fs::read_to_string(&f).unwrap());
    let cfg = Config::parse(&f, text.as_bytes()).unwrap();
    assert!(cfg.duo.ca_pem.is_some());
    assert_eq!(cfg.duo.host, "api-xxxxxxxx.duosecurity.com:443");
    match cfg.cache {
        CacheConfig::Redis { url, ca_pem, .. } => {
            assert!(url.expose().starts_with("rediss://"));
            assert!(ca_pem.is_some());
        }
        other => panic!("{other:?}"),
    }
}
