//! A real, unprivileged Caddy on a loopback port, configured from the SHIPPED
//! `deploy/caddy/Caddyfile`: the site address, the daemon's and the application's ports
//! substituted, and a global options block (`admin off`) in front so that it needs no admin port.
//! HOME and the XDG directories point into the test's temp dir.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{start_server, Server};
use super::replace_each;

pub const CADDY: &str = "/usr/bin/caddy";
pub const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/caddy/Caddyfile");

pub fn render(port: u16, daemon_port: u16, app_port: u16) -> String {
    let text = fs::read_to_string(SHIPPED).unwrap_or_else(|e| panic!("read {SHIPPED}: {e}"));
    let text = replace_each(
        &text,
        &[
            (
                "\napp.example.org {",
                &format!("\nhttp://127.0.0.1:{port} {{"),
            ),
            (
                "forward_auth 127.0.0.1:9091 {",
                &format!("forward_auth 127.0.0.1:{daemon_port} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:8080",
                &format!("reverse_proxy 127.0.0.1:{app_port}"),
            ),
        ],
        SHIPPED,
    );
    format!("{{\n\tadmin off\n}}\n\n{text}")
}

/// Start Caddy under `dir` in front of the application on `app_port`, asking the daemon on
/// `daemon_port`; its log is Caddy's stderr.
pub fn start(dir: &Path, daemon_port: u16, app_port: u16) -> Server {
    for sub in ["home", "data", "config"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let conf = dir.join("Caddyfile");
    let log = dir.join("caddy.log");
    start_server("caddy", dir, 1, Some(&log), Duration::from_secs(15), |p| {
        fs::write(&conf, render(p[0], daemon_port, app_port)).unwrap();
        let mut cmd = Command::new(CADDY);
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.join("home"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        cmd
    })
}
