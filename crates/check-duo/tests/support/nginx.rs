//! A real, unprivileged nginx on loopback ports, configured from the SHIPPED `deploy/nginx/`
//! snippets: check-duo-http.conf and check-duo-protect.conf are included as they are,
//! check-duo.conf with only the daemon's port changed. Each instance has two servers: the
//! protected front (the snippets) and, behind it, the "application": a document root plus
//! `/echo`, which answers with the cookies and the `Remote-User` header it received.
//! Started as `nginx -p DIR -c nginx.conf -g 'daemon off; error_log stderr;'`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{chmod, free_port, running_as_root, wait_for_port, ChildGuard};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx");

/// The daemon address as shipped.
const SHIPPED_DAEMON: &str = "http://127.0.0.1:9091/api/authz/auth-request;";

/// deploy/nginx/check-duo.conf with the daemon's port substituted, nothing else.
pub fn render_check_duo_conf(daemon_port: u16) -> String {
    let file = format!("{DEPLOY_DIR}/check-duo.conf");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    assert_eq!(
        text.matches(SHIPPED_DAEMON).count(),
        1,
        "{file}: expected `{SHIPPED_DAEMON}` exactly once"
    );
    text.replacen(
        SHIPPED_DAEMON,
        &format!("http://127.0.0.1:{daemon_port}/api/authz/auth-request;"),
        1,
    )
}

/// A running nginx; stopped when dropped.
pub struct Nginx {
    /// The protected front.
    pub port: u16,
    /// The application behind it (reachable directly, for checks only).
    pub app_port: u16,
    pub dir: PathBuf,
    guard: ChildGuard,
    log: PathBuf,
}

impl Nginx {
    /// Start nginx under `dir` in front of `docroot`, asking the daemon on `daemon_port`.
    pub fn start(dir: &Path, docroot: &Path, daemon_port: u16) -> Nginx {
        for sub in ["logs", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let as_root = running_as_root();
        if as_root {
            // The workers run as nobody: they read the docroot and write their temp files.
            let mut p = Some(docroot);
            while let Some(d) = p {
                if d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
                    chmod(d, 0o755);
                }
                p = d.parent();
            }
            chmod(&dir.join("tmp"), 0o777);
        }
        let snippet = dir.join("check-duo.conf");
        fs::write(&snippet, render_check_duo_conf(daemon_port)).expect("write check-duo.conf");
        let mut last = String::new();
        for _attempt in 0..5 {
            let (port, app_port) = (free_port(), free_port());
            let conf = dir.join("nginx.conf");
            fs::write(&conf, main_conf(dir, port, app_port, docroot, &snippet))
                .expect("write nginx.conf");
            let log = dir.join("logs/stderr.log");
            let child = Command::new(NGINX)
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(&log)
                .arg("-c")
                .arg(&conf)
                .args([
                    "-g",
                    &format!("daemon off; error_log {} info;", log.display()),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {NGINX}: {e}"));
            let mut guard = ChildGuard::new("nginx", child);
            let up = wait_for_port(port, Duration::from_secs(15), &mut guard)
                .and_then(|()| wait_for_port(app_port, Duration::from_secs(15), &mut guard));
            match up {
                Ok(()) => {
                    return Nginx {
                        port,
                        app_port,
                        dir: dir.to_path_buf(),
                        guard,
                        log,
                    }
                }
                Err(e) => {
                    guard.stop(Duration::from_secs(5));
                    let l = fs::read_to_string(&log).unwrap_or_default();
                    last = format!("nginx: {e}\n--- log ---\n{l}");
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

    /// nginx's error log (the `-g error_log` one).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.guard.exited().is_none()
    }
}

fn main_conf(dir: &Path, port: u16, app_port: u16, docroot: &Path, snippet: &Path) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(c, "# Generated by tests/support/nginx.rs");
    let _ = writeln!(c, "worker_processes 1;");
    let _ = writeln!(c, "pid {d}/nginx.pid;");
    let _ = writeln!(c, "events {{ worker_connections 512; }}");
    let _ = writeln!(c, "http {{");
    let _ = writeln!(c, "  access_log {d}/logs/access.log;");
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(c, "  {t}_temp_path {d}/tmp/{t};");
    }
    let _ = writeln!(c, "  include /etc/nginx/mime.types;");
    let _ = writeln!(c, "  include {DEPLOY_DIR}/check-duo-http.conf;");
    // The protected front: the shipped snippets, as a site would use them.
    let _ = writeln!(c, "  server {{");
    let _ = writeln!(c, "    listen 127.0.0.1:{port};");
    let _ = writeln!(c, "    include {};", snippet.display());
    let _ = writeln!(c, "    location / {{");
    let _ = writeln!(c, "      include {DEPLOY_DIR}/check-duo-protect.conf;");
    let _ = writeln!(c, "      proxy_pass http://127.0.0.1:{app_port};");
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "  }}");
    // The application.
    let _ = writeln!(c, "  server {{");
    let _ = writeln!(c, "    listen 127.0.0.1:{app_port};");
    let _ = writeln!(c, "    root {};", docroot.display());
    let _ = writeln!(c, "    location = /private/echo {{");
    let _ = writeln!(c, "      default_type text/plain;");
    let _ = writeln!(
        c,
        "      return 200 \"cookie=[$http_cookie] remote-user=[$http_remote_user]\\n\";"
    );
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "  }}");
    let _ = writeln!(c, "}}");
    c
}
