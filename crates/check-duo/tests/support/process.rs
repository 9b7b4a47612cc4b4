//! Child processes that die with the test (RAII), free loopback ports, waiting for them, servers
//! started on them, and one run of check-duo as mod_authnz_external runs it.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// A server started by [`start_server`]; stopped when dropped.
pub struct Server {
    /// The first of its ports.
    pub port: u16,
    /// All of them, in the order [`start_server`] gave them to its command.
    pub ports: Vec<u16>,
    /// Where its configuration and files are.
    pub dir: PathBuf,
    log: Option<PathBuf>,
    pub guard: ChildGuard,
}

impl Server {
    /// `http://127.0.0.1:PORT{path}` on its first port.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its messages (the `log` it was started with), empty without one.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.guard.exited().is_none()
    }
}

/// Start a server from a configuration in `dir` (created) on `ports` free loopback ports:
/// `command` writes the configuration for the ports it is given and returns the command to run
/// (stdin is closed here, stdout and stderr are the caller's). Ready once every port accepts
/// connections within `timeout`. A server that fails is stopped and, if its messages (`log`:
/// the file it writes them to, removed before each try) say the address was in use, tried again
/// on other ports; any other failure panics with the messages. Without a `log` every failure is
/// tried again.
pub fn start_server(
    name: &str,
    dir: &Path,
    ports: usize,
    log: Option<&Path>,
    timeout: Duration,
    mut command: impl FnMut(&[u16]) -> Command,
) -> Server {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let mut last = String::new();
    for _attempt in 0..5 {
        let ports: Vec<u16> = (0..ports).map(|_| free_port()).collect();
        if let Some(log) = log {
            let _ = std::fs::remove_file(log);
        }
        let mut cmd = command(&ports);
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("{name}: spawn {}: {e}", cmd.get_program().to_string_lossy())
        });
        let mut guard = ChildGuard::new(name, child);
        let up = ports
            .iter()
            .try_for_each(|&port| wait_for_port(port, timeout, &mut guard));
        let Err(e) = up else {
            return Server {
                port: ports[0],
                ports,
                dir: dir.to_path_buf(),
                log: log.map(Path::to_path_buf),
                guard,
            };
        };
        guard.stop(Duration::from_secs(5));
        let Some(log) = log else {
            // Most likely a port was taken between free_port() and the bind: try others.
            last = format!("{name}: {e}");
            continue;
        };
        let messages = std::fs::read_to_string(log).unwrap_or_default();
        last = format!("{name}: {e}\n--- {} ---\n{messages}", log.display());
        if !messages.to_ascii_lowercase().contains("in use") {
            break;
        }
    }
    panic!("{last}");
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

/// Make `path` and its ancestors below the temporary directory searchable by everyone: a
/// server's unprivileged children (when the tests run as root) read files below them.
pub fn open_to_others(path: &Path) {
    let tmp = std::env::temp_dir();
    for d in path.ancestors() {
        if d.starts_with(&tmp) && d != tmp {
            chmod(d, 0o755);
        }
    }
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

/// One protected request of the pipe mode through the real binary: `user` and `password` on
/// stdin, the session cookie `formsession=COOKIE`, a fixed client and page.
pub fn pipe_request(config: &Path, user: &str, password: &str, cookie: &str) -> Ran {
    let env = [
        ("IP", "192.0.2.7".to_string()),
        ("URI", "/private/".to_string()),
        ("HTTP_HOST", "app.example.test".to_string()),
        ("COOKIE", format!("formsession={cookie}")),
    ];
    run_as_authenticator(
        Path::new(env!("CARGO_BIN_EXE_check-duo")),
        config,
        &env,
        format!("{user}\n{password}\n").as_bytes(),
        |_| {},
    )
}

/// Write `v` as JSON to `path`; the path.
pub fn write_json(path: &Path, v: &serde_json::Value) -> std::path::PathBuf {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path.to_path_buf()
}

/// Run `cmd` with `input` on its stdin and wait for it; panics, with its output, unless it
/// succeeded.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
