//! What the fault tests (`tests/faults.rs`) add to the harness: a Redis that keeps its data
//! across a crash and can be started again on the same port, a tiny tmpfs to fill, a plain HTTP
//! client that signs in the way a browser does (the form, then the redirects with the cookie),
//! `wrk` with a script that counts answers per second and status, and the resident memory of
//! Apache's processes from /proc.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::process::{free_port, wait_for_port, ChildGuard};
use super::redis::REDIS_SERVER;

pub const WRK: &str = "/usr/bin/wrk";
pub const GNU_TIME: &str = "/usr/bin/time";

/// Seconds since the epoch, as a float (wrk's buckets are whole seconds of the same clock).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------------
// Redis that survives a crash

/// A redis-server with an append-only file synced on every write, so that a SIGKILL loses
/// nothing it acknowledged, and that can be started again on the same port with the same data
/// directory. Stopped when dropped.
pub struct DurableRedis {
    pub port: u16,
    dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl DurableRedis {
    pub fn start(dir: &Path) -> DurableRedis {
        let dir = dir.join("redis-durable");
        fs::create_dir_all(&dir).expect("mkdir redis-durable");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            match spawn_redis(&dir, port) {
                Ok(guard) => {
                    return DurableRedis {
                        port,
                        dir,
                        guard: Some(guard),
                    }
                }
                // Most likely the port was taken between free_port() and the bind.
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server: {last_err}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(ChildGuard::id)
    }

    /// SIGKILL (a crash, no shutdown save): returns once the process has exited.
    pub fn kill(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-KILL", &guard.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while guard.exited().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        // Dropping the guard reaps it (or, should it still run, TERMs and KILLs it again).
    }

    /// Start it again on the same port and data directory; returns how long until it listened.
    /// Retries for a while in case the port is still held (it should not be: Redis binds with
    /// SO_REUSEADDR).
    pub fn start_again(&mut self) -> Duration {
        assert!(self.guard.is_none(), "redis-server is still running");
        let started = Instant::now();
        let mut last_err = String::new();
        while started.elapsed() < Duration::from_secs(10) {
            match spawn_redis(&self.dir, self.port) {
                Ok(guard) => {
                    self.guard = Some(guard);
                    return started.elapsed();
                }
                Err(e) => {
                    last_err = e;
                    sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "redis-server did not start again on port {}: {last_err}",
            self.port
        );
    }
}

fn spawn_redis(dir: &Path, port: u16) -> Result<ChildGuard, String> {
    let child = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {REDIS_SERVER}: {e}"))?;
    let mut guard = ChildGuard::new("redis-server", child);
    wait_for_port(port, Duration::from_secs(10), &mut guard)?;
    Ok(guard)
}

// ------------------------------------------------------------------------------------------------
// A tiny file system

/// A tmpfs mounted on `dir` (root only); unmounted when dropped. Drop whatever has files open
/// in it (Apache) first.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// (size, used) in KiB, as `df` sees them.
    pub fn usage_kib(&self) -> (u64, u64) {
        let out = Command::new("df")
            .arg("-Pk")
            .arg(&self.dir)
            .output()
            .expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        (
            f.first().copied().unwrap_or(0),
            f.get(1).copied().unwrap_or(0),
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("umount {} failed: detaching it lazily", self.dir.display());
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Write `dir/filler` until the file system says ENOSPC (big writes, then smaller ones, down to
/// single bytes, so that not one byte is left). Returns the file and how much it holds.
pub fn fill_until_enospc(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap_or_else(|e| panic!("create filler: {e}"));
    let mut written: u64 = 0;
    const LIMIT: u64 = 256 << 20;
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0xa5u8; chunk];
        loop {
            assert!(written < LIMIT, "wrote {written} bytes and still no ENOSPC");
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("write filler: {e}"),
            }
        }
    }
    (path, written)
}

/// Whether one more byte fits in a new file of `dir` (it should not, once filled).
pub fn one_byte_fits(dir: &Path) -> Result<(), String> {
    let p = dir.join("probe-byte");
    let r = fs::File::create(&p)
        .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()))
        .map_err(|e| e.to_string());
    let _ = fs::remove_file(&p);
    r
}

// ------------------------------------------------------------------------------------------------
// A browser's requests, without the browser

/// One answer: status, Location, the session cookie set (if any), the body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub location: String,
    pub set_cookie: Option<String>,
    pub body: String,
}

/// A plain HTTP client for one Apache: no redirects followed, no cookie jar.
pub struct Http {
    agent: ureq::Agent,
    base: String,
    cookie_name: String,
}

impl Http {
    pub fn new(base: &str, cookie_name: &str) -> Http {
        Http {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(30))
                .build(),
            base: base.trim_end_matches('/').to_string(),
            cookie_name: cookie_name.to_string(),
        }
    }

    fn answer(&self, r: Result<ureq::Response, ureq::Error>) -> Result<Resp, String> {
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let prefix = format!("{}=", self.cookie_name);
        let set_cookie = r
            .all("set-cookie")
            .iter()
            .find_map(|c| c.strip_prefix(&prefix))
            .map(|v| v.split(';').next().unwrap_or_default().to_string());
        let status = r.status();
        let location = r.header("Location").unwrap_or_default().to_string();
        let body = r.into_string().unwrap_or_default();
        Ok(Resp {
            status,
            location,
            set_cookie,
            body,
        })
    }

    /// GET `path` with the session cookie `cookie` (none when empty).
    pub fn get(&self, path: &str, cookie: &str) -> Result<Resp, String> {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if !cookie.is_empty() {
            req = req.set("Cookie", &format!("{}={cookie}", self.cookie_name));
        }
        self.answer(req.call())
    }

    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Resp, String> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_form(form);
        self.answer(r)
    }

    /// The path of a Location header (absolute or not).
    fn path_of(&self, location: &str) -> String {
        location
            .strip_prefix(&self.base)
            .unwrap_or(location)
            .to_string()
    }

    /// Sign in as a browser does: post the shipped login form, then follow the redirects with
    /// the cookie until a page. Granted when the page is the protected one (it holds `secret`).
    pub fn sign_in(&self, user: &str, password: &str, secret: &str) -> SignIn {
        let r = match self.post_form(
            "/login/submit",
            &[("httpd_username", user), ("httpd_password", password)],
        ) {
            Ok(r) => r,
            Err(e) => return SignIn::Error(format!("POST /login/submit: {e}")),
        };
        let Some(cookie) = r.set_cookie.clone().filter(|c| !c.is_empty()) else {
            return SignIn::Denied {
                step: "password",
                detail: format!("{} {} (no cookie)", r.status, r.location),
            };
        };
        let mut path = self.path_of(&r.location);
        if !path.starts_with("/private") {
            return SignIn::Denied {
                step: "password",
                detail: format!("{} {}", r.status, r.location),
            };
        }
        for _hop in 0..5 {
            let r = match self.get(&path, &cookie) {
                Ok(r) => r,
                Err(e) => return SignIn::Error(format!("GET {path}: {e}")),
            };
            match r.status {
                200 if r.body.contains(secret) => return SignIn::Granted { cookie },
                301 | 302 | 303 | 307 => {
                    path = self.path_of(&r.location);
                    if path.starts_with("/login") {
                        return SignIn::Denied {
                            step: "second factor",
                            detail: format!("{} {}", r.status, r.location),
                        };
                    }
                }
                s => {
                    return SignIn::Denied {
                        step: "second factor",
                        detail: format!("{s} at {path}"),
                    }
                }
            }
        }
        SignIn::Error(format!("too many redirects, last {path}"))
    }
}

#[derive(Debug, Clone)]
pub enum SignIn {
    Granted { cookie: String },
    Denied { step: &'static str, detail: String },
    Error(String),
}

impl SignIn {
    pub fn granted(&self) -> bool {
        matches!(self, SignIn::Granted { .. })
    }
}

// ------------------------------------------------------------------------------------------------
// wrk

/// Counts every answer per wall-clock second and status (wrk itself only counts non-2xx/3xx,
/// and a 302 to /login is a denial here).
const WRK_SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) buckets = {} end
function response(status, headers, body)
  local k = tostring(os.time()) .. " " .. tostring(status)
  buckets[k] = (buckets[k] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("buckets")) do io.write("bucket " .. k .. " " .. n .. "\n") end
  end
  local e = summary.errors
  io.write(string.format("summary requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("latency p50_us=%d p99_us=%d max_us=%d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// What one wrk run saw.
#[derive(Debug, Default, Clone)]
pub struct WrkRun {
    /// (unix second, status) → answers.
    pub buckets: BTreeMap<(u64, u16), u64>,
    pub requests: u64,
    pub duration_s: f64,
    /// connect, read, write, timeout errors.
    pub errors: [u64; 4],
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub stdout: String,
}

impl WrkRun {
    /// Answers with `status` (None: any) in the seconds overlapping [a, b), each second's count
    /// weighted by how much of it lies in the window.
    pub fn count_in(&self, a: f64, b: f64, status: Option<u16>) -> f64 {
        self.buckets
            .iter()
            .filter(|((_, s), _)| status.is_none_or(|want| *s == want))
            .map(|((sec, _), n)| {
                let (s0, s1) = (*sec as f64, *sec as f64 + 1.0);
                let overlap = (s1.min(b) - s0.max(a)).max(0.0);
                overlap * *n as f64
            })
            .sum::<f64>()
            // A sum of nothing but -0.0 would print as "-0".
            + 0.0
    }

    /// Answers per second in [a, b).
    pub fn rate(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        self.count_in(a, b, None) / (b - a)
    }

    /// Total answers with `status`.
    pub fn total(&self, status: u16) -> u64 {
        self.buckets
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Total answers with any other status than `status`.
    pub fn total_not(&self, status: u16) -> u64 {
        self.buckets
            .iter()
            .filter(|((_, s), _)| *s != status)
            .map(|(_, n)| n)
            .sum()
    }

    /// The seconds that had an answer other than `status`.
    pub fn seconds_not(&self, status: u16) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .buckets
            .keys()
            .filter(|(_, s)| *s != status)
            .map(|(sec, _)| *sec)
            .collect();
        v.dedup();
        v
    }
}

/// Run wrk against `url` with `Cookie: {cookie}` for `duration`, `connections` connections on
/// `threads` threads; its script goes to `dir/wrk-count.lua`.
pub fn run_wrk(
    dir: &Path,
    url: &str,
    cookie: &str,
    duration: Duration,
    threads: u32,
    connections: u32,
) -> WrkRun {
    let cookie = format!("Cookie: {cookie}");
    run_wrk_with(dir, url, &[cookie.as_str()], duration, threads, connections)
}

/// [`run_wrk`] with these request headers (`Name: value` each).
pub fn run_wrk_with(
    dir: &Path,
    url: &str,
    headers: &[&str],
    duration: Duration,
    threads: u32,
    connections: u32,
) -> WrkRun {
    let script = dir.join("wrk-count.lua");
    fs::write(&script, WRK_SCRIPT).expect("write the wrk script");
    let started_unix = unix_now();
    let out = Command::new(WRK)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs()))
        .args(["--timeout", "15s", "-s"])
        .arg(&script)
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {WRK}: {e}"));
    let ended_unix = unix_now();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = WrkRun {
        started_unix,
        ended_unix,
        ..WrkRun::default()
    };
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for line in stdout.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("bucket") => {
                let f: Vec<u64> = w.filter_map(|v| v.parse().ok()).collect();
                if let [sec, status, n] = f[..] {
                    *run.buckets
                        .entry((sec, u16::try_from(status).unwrap_or(0)))
                        .or_default() += n;
                }
            }
            Some("summary") => {
                run.requests = field(line, "requests");
                run.duration_s = field(line, "duration_us") as f64 / 1e6;
                run.errors = [
                    field(line, "connect"),
                    field(line, "read"),
                    field(line, "write"),
                    field(line, "timeout"),
                ];
            }
            Some("latency") => {
                run.p50_ms = field(line, "p50_us") as f64 / 1e3;
                run.p99_ms = field(line, "p99_us") as f64 / 1e3;
                run.max_ms = field(line, "max_us") as f64 / 1e3;
            }
            _ => {}
        }
    }
    run.stdout = stdout;
    run
}

// ------------------------------------------------------------------------------------------------
// Memory

/// One sample of Apache's resident memory.
#[derive(Debug, Clone)]
pub struct RssSample {
    pub at: Instant,
    pub parent_kib: u64,
    /// One per child (the worker processes; the authenticator processes they fork are not
    /// counted).
    pub children_kib: Vec<u64>,
}

impl RssSample {
    pub fn total_kib(&self) -> u64 {
        self.parent_kib + self.children_kib.iter().sum::<u64>()
    }
    pub fn largest_child_kib(&self) -> u64 {
        self.children_kib.iter().copied().max().unwrap_or(0)
    }
}

fn status_of(pid: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

fn field_of<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn rss_kib(status: &str) -> u64 {
    field_of(status, "VmRSS:")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Apache's parent process (its PidFile) and its `apache2` children now.
pub fn apache_rss(parent: u32) -> RssSample {
    let at = Instant::now();
    let parent_kib = status_of(&parent.to_string())
        .map(|s| rss_kib(&s))
        .unwrap_or(0);
    let mut children_kib = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Some(st) = status_of(pid) else { continue };
            if field_of(&st, "PPid:") == Some(&parent.to_string())
                && field_of(&st, "Name:") == Some("apache2")
            {
                children_kib.push(rss_kib(&st));
            }
        }
    }
    RssSample {
        at,
        parent_kib,
        children_kib,
    }
}

/// Apache's parent pid, from the PidFile the harness configures (`DIR/run/httpd.pid`). Apache
/// listens before it writes the file: wait for it a little.
pub fn apache_pid(apache_dir: &Path) -> u32 {
    let f = apache_dir.join("run/httpd.pid");
    let mut pid = None;
    super::process::wait_until(Duration::from_secs(10), || {
        pid = fs::read_to_string(&f)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_else(|| panic!("no pid in {} after 10 s", f.display()))
}

/// Run `cmd` under GNU time and return (its exit status, its stderr without time's line, peak
/// RSS in KiB). `cmd` is given whole (program and arguments); stdin gets `stdin`.
pub fn peak_rss(cmd: &[&str], env: &[(&str, String)], stdin: &[u8]) -> (bool, String, u64) {
    let mut c = Command::new(GNU_TIME);
    c.args(["-f", "check-duo-peak-rss-kib=%M"])
        .args(cmd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {GNU_TIME}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let kib = err
        .lines()
        .find_map(|l| l.strip_prefix("check-duo-peak-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let log = err
        .lines()
        .filter(|l| !l.starts_with("check-duo-peak-rss-kib="))
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.success(), log, kib)
}
