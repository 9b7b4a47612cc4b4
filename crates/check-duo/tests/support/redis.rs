//! A throw-away Redis on a free loopback port: no persistence, its files in the test's temp dir.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{start_server, Server};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running redis-server; stopped when dropped.
pub struct Redis {
    pub port: u16,
    _server: Server,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Redis::start_with(dir, |port| vec!["--port".into(), port.to_string()])
    }

    /// TLS only (`rediss://`), with a certificate for 127.0.0.1 signed by a throwaway CA; the
    /// CA's PEM is returned for the client's `cache.ca_file`.
    pub fn start_tls(dir: &Path) -> (Redis, String) {
        let certs = duo_sim::test_certificates().expect("test certificates");
        let cert = dir.join("redis-cert.pem");
        let key = dir.join("redis-key.pem");
        fs::write(&cert, &certs.chain_pem).expect("write redis-cert.pem");
        fs::write(&key, &certs.key_pem).expect("write redis-key.pem");
        let redis = Redis::start_with(dir, |port| {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        });
        (redis, certs.ca_pem)
    }

    fn start_with(dir: &Path, listen: impl Fn(u16) -> Vec<String>) -> Redis {
        let dir = dir.join("redis");
        // No log: whatever failed (most likely a port taken between free_port() and the
        // bind), another port is tried.
        let server = start_server(
            "redis-server",
            &dir,
            1,
            None,
            Duration::from_secs(10),
            |p| {
                let mut cmd = Command::new(REDIS_SERVER);
                cmd.args(listen(p[0]))
                    .args(["--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no", "--loglevel", "warning"])
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
                cmd
            },
        );
        Redis {
            port: server.port,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}
