//! The `duo-sim` binary: the JSON line it prints, the CA file, errors naming the bad key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use duo_auth::types::Preauth;
use duo_auth::{Client, ClientConfig, Secret, SigVersion};

const BIN: &str = env!("CARGO_BIN_EXE_duo-sim");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duo-sim-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prints_addresses_and_serves() {
    let dir = temp_dir("serve");
    let ca = dir.join("ca.pem");
    let keys = dir.join("keys.json");
    std::fs::write(&keys, format!(r#"{{"ikey": "{IKEY}", "skey": "{SKEY}"}}"#)).unwrap();
    let users = concat!(env!("CARGO_MANIFEST_DIR"), "/users.example.json");
    let mut child = Child(
        Command::new(BIN)
            .args(["--keys-file", keys.to_str().unwrap(), "--users", users])
            .args(["--ca-out", ca.to_str().unwrap(), "--long-poll", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let api = v["api"].as_str().unwrap().to_string();
    assert!(api.starts_with("127.0.0.1:"), "{line}");
    assert!(v["control"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(v["ca_file"], ca.to_str().unwrap());

    let c = Client::new(ClientConfig {
        ikey: IKEY.into(),
        skey: Secret::new(SKEY),
        host: api,
        extra_ca_pem: Some(std::fs::read(&ca).unwrap()),
        call_timeout: Duration::from_secs(10),
        sig_version: SigVersion::V5,
    })
    .unwrap();
    c.check(deadline()).unwrap();
    assert!(matches!(
        c.preauth("erin", None, deadline()).unwrap(),
        Preauth::Deny { .. }
    ));
    let _ = c.preauth("frank", None, deadline());

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("POST /auth/v2/preauth user=erin -> 200"),
        "{log}"
    );
    assert!(log.contains("GET /auth/v2/check"), "{log}");
    assert!(!log.contains(SKEY), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_users_file_names_file_and_key() {
    let dir = temp_dir("bad");
    let users = dir.join("users.json");
    std::fs::write(&users, r#"{"users": {"alice": {"psh": "deny"}}}"#).unwrap();
    let out = Command::new(BIN)
        .args([
            "--ikey",
            IKEY,
            "--skey",
            SKEY,
            "--users",
            users.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("users.json"), "{err}");
    assert!(err.contains("`psh`"), "{err}");
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN)
        .args(["--ikey", IKEY, "--skey", SKEY, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let out = Command::new(BIN).output().unwrap();
    assert!(!out.status.success(), "keys are required");
    std::fs::remove_dir_all(&dir).ok();
}
