//! Child processes that die with the test (RAII), free loopback ports, waiting for them, and one
//! run of check-duo as mod_authnz_external runs it.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A child process stopped when dropped: SIGTERM first (Apache and chromedriver then stop their
/// own children), SIGKILL if it is still there after a few seconds.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            name: name.into(),
            child,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send SIGTERM and wait up to `grace` for the exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // std has no portable SIGTERM and the workspace forbids unsafe code: use kill(1).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        eprintln!("{}: still running after SIGTERM, killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A loopback port nobody listens on right now. There is a window before the caller binds it;
/// callers that start servers retry on "address in use".
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Wait until something accepts connections on 127.0.0.1:`port`, failing early if `child` exits.
pub fn wait_for_port(port: u16, timeout: Duration, child: &mut ChildGuard) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.exited() {
            return Err(format!("exited ({status}) before listening on {addr}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not listening on {addr} after {timeout:?}"));
        }
        sleep(Duration::from_millis(25));
    }
}

/// Poll `cond` every 50 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

/// chmod, for the files the unprivileged Apache user must reach in a temporary directory.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Whether the tests run as root (Apache then needs `User`/`Group` and readable files).
pub fn running_as_root() -> bool {
    // No libc (no unsafe): /proc/self/status has "Uid:\treal\teffective\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// What one run of check-duo answered: the exit status is the decision, stderr the log.
pub struct Ran {
    pub granted: bool,
    pub code: Option<i32>,
    pub log: String,
    pub elapsed: Duration,
}

/// Run `exe -c config` as mod_authnz_external runs it: a clean environment holding only `PATH`,
/// `AUTHTYPE` and `env`, the credentials on stdin. `extra` may change the command further.
pub fn run_as_authenticator(
    exe: &Path,
    config: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
    extra: impl FnOnce(&mut Command),
) -> Ran {
    let mut cmd = Command::new(exe);
    cmd.arg("-c")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AUTHTYPE", "PASS")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    extra(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    // A program that exits without reading its stdin may close it first: that is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Ran {
        granted: out.status.success(),
        code: out.status.code(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}
