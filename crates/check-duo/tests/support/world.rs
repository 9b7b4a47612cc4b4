//! What the binary-level suites (`gate.rs`, `admin.rs`) share: the store backends, an in-process
//! `duo-sim` with its CA written out, and the store section of a config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duo_sim::{Behaviours, SimConfig, SimHandle};
use serde_json::{json, Value};

use super::redis::{Redis, REDIS_SERVER};

/// The two session stores every suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

impl Backend {
    /// False (after a loud message) when the backend's server is missing and CI did not ask
    /// for it.
    pub fn available(self, test: &str) -> bool {
        match self {
            Backend::Embedded => true,
            Backend::Redis => super::tools_present(test, &[("redis-server", REDIS_SERVER)]),
        }
    }

    /// The config's `cache` section for this backend under `dir`, and the Redis server when
    /// there is one (it stops when dropped).
    pub fn cache(self, dir: &Path, prefix: &str) -> (Value, Option<Redis>) {
        match self {
            Backend::Embedded => (json!({"path": dir.join("sessions.db")}), None),
            Backend::Redis => {
                let r = Redis::start(dir);
                (json!({"url": r.url(), "prefix": prefix}), Some(r))
            }
        }
    }
}

/// Start the simulator with these behaviours and a short long-poll; its CA is written to
/// `dir/ca.pem` for the config's `duo.ca_file`.
pub fn start_sim(
    ikey: &str,
    skey: &str,
    behaviours: Behaviours,
    dir: &Path,
) -> (SimHandle, PathBuf) {
    let mut cfg = SimConfig::new(ikey, skey);
    cfg.behaviours = behaviours;
    cfg.long_poll = Duration::from_millis(500);
    let sim = duo_sim::start(cfg).expect("start duo-sim");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).expect("write the simulator's CA");
    (sim, ca)
}

/// An argon2id hash of `pw`, computed once per test binary (hashing is slow in debug builds).
pub fn argon2_hash(pw: &str) -> String {
    use std::sync::OnceLock;
    static HASH: OnceLock<(String, String)> = OnceLock::new();
    let (for_pw, hash) = HASH.get_or_init(|| {
        let h = check_duo::password::hash_argon2id(pw).expect("argon2id");
        (pw.to_string(), h)
    });
    assert_eq!(
        for_pw, pw,
        "argon2_hash caches one password per test binary"
    );
    hash.clone()
}
