//! A real, unprivileged HAProxy (Debian's 2.6) on a loopback port, configured from the SHIPPED
//! `deploy/haproxy/haproxy.cfg` and `check-duo.lua`: the bind line loses its TLS (the tests
//! speak plain HTTP), the daemon's and the application's ports and the Lua file's path are
//! substituted. Run in the foreground (`-db`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{free_port, wait_for_port, ChildGuard};

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy");

fn replace_once(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "haproxy.cfg: expected `{from}` exactly once, found it {n} times"
    );
    text.replacen(from, to, 1)
}

pub fn render(port: u16, daemon_port: u16, app_port: u16) -> String {
    let file = format!("{DEPLOY_DIR}/haproxy.cfg");
    let t = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let t = replace_once(
        &t,
        "bind :443 ssl crt /etc/haproxy/certs/app.example.org.pem",
        &format!("bind 127.0.0.1:{port}"),
    );
    let t = replace_once(
        &t,
        "http://127.0.0.1:9091/",
        &format!("http://127.0.0.1:{daemon_port}/"),
    );
    let t = replace_once(
        &t,
        "lua-load /etc/haproxy/check-duo.lua",
        &format!("lua-load {DEPLOY_DIR}/check-duo.lua"),
    );
    replace_once(
        &t,
        "server app 127.0.0.1:8080",
        &format!("server app 127.0.0.1:{app_port}"),
    )
}

pub struct Haproxy {
    pub port: u16,
    _guard: ChildGuard,
}

impl Haproxy {
    pub fn start(dir: &Path, daemon_port: u16, app_port: u16) -> Haproxy {
        fs::create_dir_all(dir).unwrap();
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("haproxy.cfg");
            fs::write(&conf, render(port, daemon_port, app_port)).unwrap();
            let log = dir.join("haproxy.log");
            let child = Command::new(HAPROXY)
                .arg("-db")
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.join("haproxy.out")).unwrap())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {HAPROXY}: {e}"));
            let mut guard = ChildGuard::new("haproxy", child);
            match wait_for_port(port, Duration::from_secs(15), &mut guard) {
                Ok(()) => {
                    return Haproxy {
                        port,
                        _guard: guard,
                    }
                }
                Err(e) => {
                    let l = fs::read_to_string(&log).unwrap_or_default();
                    last = format!("haproxy: {e}\n--- log ---\n{l}");
                    if !l.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("{last}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
