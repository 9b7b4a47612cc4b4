//! A real, unprivileged HAProxy (Debian's 2.6) on a loopback port, configured from the SHIPPED
//! `deploy/haproxy/haproxy.cfg` and `check-duo.lua`: the bind line loses its TLS (the tests
//! speak plain HTTP), the daemon's and the application's ports and the Lua file's path are
//! substituted. Run in the foreground (`-db`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{start_server, Server};
use super::replace_each;

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy");

pub fn render(port: u16, daemon_port: u16, app_port: u16) -> String {
    let file = format!("{DEPLOY_DIR}/haproxy.cfg");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    replace_each(
        &text,
        &[
            (
                "bind :443 ssl crt /etc/haproxy/certs/app.example.org.pem",
                &format!("bind 127.0.0.1:{port}"),
            ),
            (
                "http://127.0.0.1:9091/",
                &format!("http://127.0.0.1:{daemon_port}/"),
            ),
            (
                "lua-load /etc/haproxy/check-duo.lua",
                &format!("lua-load {DEPLOY_DIR}/check-duo.lua"),
            ),
            (
                "server app 127.0.0.1:8080",
                &format!("server app 127.0.0.1:{app_port}"),
            ),
        ],
        &file,
    )
}

/// Start HAProxy under `dir` in front of the application on `app_port`, asking the daemon on
/// `daemon_port`; its log is HAProxy's stderr.
pub fn start(dir: &Path, daemon_port: u16, app_port: u16) -> Server {
    let conf = dir.join("haproxy.cfg");
    let log = dir.join("haproxy.log");
    start_server(
        "haproxy",
        dir,
        1,
        Some(&log),
        Duration::from_secs(15),
        |p| {
            fs::write(&conf, render(p[0], daemon_port, app_port)).unwrap();
            let mut cmd = Command::new(HAPROXY);
            cmd.arg("-db")
                .arg("-f")
                .arg(&conf)
                .stdout(fs::File::create(dir.join("haproxy.out")).unwrap())
                .stderr(fs::File::create(&log).unwrap());
            cmd
        },
    )
}
