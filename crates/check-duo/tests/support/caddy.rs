//! A real, unprivileged Caddy on a loopback port, configured from the SHIPPED
//! `deploy/caddy/Caddyfile`: the site address, the daemon's and the application's ports
//! substituted, and a global options block (`admin off`) in front so that it needs no admin port.
//! HOME and the XDG directories point into the test's temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{free_port, wait_for_port, ChildGuard};

pub const CADDY: &str = "/usr/bin/caddy";
pub const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/caddy/Caddyfile");

fn replace_once(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{SHIPPED}: expected `{from}` exactly once, found it {n} times"
    );
    text.replacen(from, to, 1)
}

pub fn render(port: u16, daemon_port: u16, app_port: u16) -> String {
    let text = fs::read_to_string(SHIPPED).unwrap_or_else(|e| panic!("read {SHIPPED}: {e}"));
    let text = replace_once(
        &text,
        "\napp.example.org {",
        &format!("\nhttp://127.0.0.1:{port} {{"),
    );
    let text = replace_once(
        &text,
        "forward_auth 127.0.0.1:9091 {",
        &format!("forward_auth 127.0.0.1:{daemon_port} {{"),
    );
    let text = replace_once(
        &text,
        "reverse_proxy 127.0.0.1:8080",
        &format!("reverse_proxy 127.0.0.1:{app_port}"),
    );
    format!("{{\n\tadmin off\n}}\n\n{text}")
}

pub struct Caddy {
    pub port: u16,
    dir: PathBuf,
    _guard: ChildGuard,
}

impl Caddy {
    pub fn start(dir: &Path, daemon_port: u16, app_port: u16) -> Caddy {
        for sub in ["home", "data", "config"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("Caddyfile");
            fs::write(&conf, render(port, daemon_port, app_port)).unwrap();
            let log = dir.join("caddy.log");
            let child = Command::new(CADDY)
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&conf)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", dir.join("home"))
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {CADDY}: {e}"));
            let mut guard = ChildGuard::new("caddy", child);
            match wait_for_port(port, Duration::from_secs(15), &mut guard) {
                Ok(()) => {
                    return Caddy {
                        port,
                        dir: dir.to_path_buf(),
                        _guard: guard,
                    }
                }
                Err(e) => {
                    let l = fs::read_to_string(&log).unwrap_or_default();
                    last = format!("caddy: {e}\n--- log ---\n{l}");
                    if !l.contains("address already in use") {
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

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }
}
