//! Bench: the warm path (a cached session) as whole processes, as Apache pays for it: wall time
//! and peak memory of `check-duo` against spawning `/bin/true` with the same input, interleaved
//! in one run so that machine noise hits both alike.
//!
//! `cargo build --release -p check-duo --bins --examples && target/release/examples/bench_warm
//! [ROUNDS]` (peak memory needs GNU time: `apt-get install time`).
//!
//! Three configs, each with its own store and its session approved once through `duo-sim`:
//! alice alone in `usernames`; alice among `BENCH_USERS` (10,000) users in `usernames` (argon2id
//! hashes, about 1.1 MB); alice among as many users in an htpasswd file (bcrypt, as
//! `htpasswd -B` writes them), the config holding no `usernames`. Each round runs each config
//! once, each right after a run of `/bin/true`, in an order that turns from round to round; the
//! ratios are each config's median over `/bin/true`'s.
//!
//! `BENCH_BASELINE_EXE=/path/to/other/check-duo` adds another build (say, main before a change)
//! to the same interleaved loop, on each config it grants (older builds refuse a config over
//! 1 MiB), for a before/after from one run. It gets store files of its own (builds may keep the
//! file differently: WAL or not), with its own sessions approved once.
//!
//! `BENCH_KEEP=1` keeps the directory with the configs and stores (its path is printed), for
//! `perf stat` or `strace` of one warm request after the bench.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;

const PASSWORD: &str = "bench password";
const USER: &str = "alice";

fn run(program: &Path, args: &[&str], stdin: &[u8]) -> (bool, Duration) {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("IP", "192.0.2.1")
        .env("URI", "/private/app.css")
        .env("HTTP_HOST", "app.example.test")
        .env("COOKIE", "formsession=YmVuY2gtc2Vzc2lvbg==")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A program that does not read its stdin may close it first: that is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let ok = child.wait().unwrap().success();
    (ok, started.elapsed())
}

/// Peak resident memory in KiB, through GNU time.
fn peak_kib(program: &Path, args: &[&str], stdin: &[u8]) -> Option<u64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let mut child = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg(program)
        .args(args)
        .env_clear()
        .env("COOKIE", "formsession=YmVuY2gtc2Vzc2lvbg==")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(stdin);
    let out = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Bytes that look like a hash's, different for each user (nobody signs in with them).
fn filler(i: usize, len: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(len);
    let mut block = 0u32;
    while out.len() < len {
        let digest = sha2::Sha256::digest(format!("{i}/{block}"));
        for b in digest {
            if out.len() < len {
                out.push(alphabet[usize::from(b) % alphabet.len()] as char);
            }
        }
        block += 1;
    }
    out
}

const BCRYPT64: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `usernames` as JSON text: `users - 1` others and alice in the middle (in file order).
fn usernames(users: usize, hash: &str) -> String {
    let mut text = String::from("{");
    for i in 0..users {
        if i > 0 {
            text.push_str(",\n    ");
        }
        if i == users / 2 {
            let _ = write!(text, "\"{USER}\": \"{hash}\"");
        } else {
            let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
            let salt = sha2::Sha256::digest(format!("salt {i}"));
            let key = sha2::Sha256::digest(format!("key {i}"));
            let _ = write!(
                text,
                "\"user{i:05}\": \"$argon2id$v=19$m=19456,t=2,p=1${}${}\"",
                b64(&salt[..16]),
                b64(&key)
            );
        }
    }
    text.push('}');
    text
}

/// An htpasswd file: `users - 1` others and alice (bcrypt) in the middle.
fn htpasswd(users: usize) -> String {
    let hash = bcrypt::hash(PASSWORD, 5).unwrap();
    let mut text = String::new();
    for i in 0..users {
        if i == users / 2 {
            let _ = writeln!(text, "{USER}:{hash}");
        } else {
            let _ = writeln!(text, "user{i:05}:$2y$05${}", filler(i, 53, BCRYPT64));
        }
    }
    text
}

struct Case {
    name: String,
    config: String,
    baseline_config: String,
    gate: Vec<Duration>,
    base: Vec<Duration>,
    baseline_grants: bool,
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // target/release/examples/bench_warm → target/release/check-duo
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("check-duo")))
        .filter(|e| e.exists())
        .unwrap_or_else(|| panic!("build it first: cargo build --release -p check-duo --bins"));
    let dir = tempfile::tempdir().unwrap();
    let sim = duo_sim::start(duo_sim::SimConfig::new(
        "DIBENCHBENCHBENCHBEN",
        "bench-skey",
    ))
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let hash = check_duo::password::hash_argon2id(PASSWORD).unwrap();
    let users_file = dir.path().join("users.htpasswd");
    std::fs::write(&users_file, htpasswd(users)).unwrap();
    let one = json!({ USER: hash }).to_string();
    let many = usernames(users, &hash);
    let write_config = |name: &str, users: Option<&str>, store: &str| -> String {
        let mut cfg = json!({
            "duo": {"ikey": "DIBENCHBENCHBENCHBEN", "skey": "bench-skey", "host": sim.host(), "ca_file": ca},
            "cache": {"path": dir.path().join(store)},
            "session": {"name": "formsession", "expiry": 3600}
        });
        if users.is_none() {
            cfg["htpasswd"] = json!(users_file);
        }
        let mut text = serde_json::to_string_pretty(&cfg).unwrap();
        if let Some(u) = users {
            // By hand, to keep the file's order (alice in the middle).
            text = text.replacen('{', &format!("{{\n  \"usernames\": {u},"), 1);
        }
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let mut cases = Vec::new();
    for (name, users_json, file) in [
        (
            "1 user in `usernames`".to_string(),
            Some(one.as_str()),
            "one",
        ),
        (
            format!("{users} users in `usernames`"),
            Some(many.as_str()),
            "many",
        ),
        (
            format!("{users} users in an htpasswd file"),
            None,
            "htpasswd",
        ),
    ] {
        cases.push(Case {
            name,
            config: write_config(&format!("{file}.json"), users_json, &format!("{file}.db")),
            baseline_config: write_config(
                &format!("{file}-baseline.json"),
                users_json,
                &format!("{file}-baseline.db"),
            ),
            gate: Vec::new(),
            base: Vec::new(),
            baseline_grants: false,
        });
    }
    let stdin = format!("{USER}\n{PASSWORD}\n").into_bytes();
    let other = std::env::var_os("BENCH_BASELINE_EXE").map(PathBuf::from);

    // Warm each session: one push, approved by the simulator.
    let mut sizes = Vec::new();
    for case in &mut cases {
        let (ok, cold) = run(&exe, &["-c", &case.config], &stdin);
        assert!(ok, "{}: the cold request was not granted", case.name);
        sizes.push(format!(
            "{}: config {} bytes, cold request {:.1} ms",
            case.name,
            std::fs::metadata(&case.config).unwrap().len(),
            cold.as_secs_f64() * 1000.0
        ));
        if let Some(other) = &other {
            case.baseline_grants = run(other, &["-c", &case.baseline_config], &stdin).0;
            if !case.baseline_grants {
                sizes.push(format!("{}: the baseline build refuses it", case.name));
            }
        }
    }
    let calls = sim.counters().duo_calls();
    let truth = Path::new("/bin/true");
    let mut base = Vec::new();
    // Every run of check-duo comes right after one of /bin/true, and the order of the runs turns
    // round by round: a program run right after itself runs warmer (about 0.2 ms here), which
    // would favour whichever came second.
    let mut runs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        runs.push((i, false));
        if other.is_some() && case.baseline_grants {
            runs.push((i, true));
        }
    }
    for round in 0..rounds {
        for k in 0..runs.len() {
            let (i, baseline) = runs[(round + k) % runs.len()];
            base.push(run(truth, &[], &stdin).1);
            let case = &mut cases[i];
            if let (Some(other), true) = (&other, baseline) {
                let (ok, d) = run(other, &["-c", &case.baseline_config], &stdin);
                assert!(
                    ok,
                    "{}: a warm request was denied by the baseline",
                    case.name
                );
                case.base.push(d);
            } else {
                let (ok, d) = run(&exe, &["-c", &case.config], &stdin);
                assert!(ok, "{}: a warm request was denied", case.name);
                case.gate.push(d);
            }
        }
    }
    assert_eq!(
        sim.counters().duo_calls(),
        calls,
        "the warm path called Duo"
    );
    base.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med_base = percentile(&base, 0.5);
    let ratio = |d: Duration| d.as_secs_f64() / med_base.as_secs_f64();
    let kib = |k: Option<u64>| k.map_or("n/a (install GNU time)".to_string(), |k| k.to_string());
    println!("warm path, {rounds} interleaved rounds");
    for s in &sizes {
        println!("  {s}");
    }
    println!();
    println!(
        "| program | median ms | p90 ms | p99 ms | peak RSS KiB | ratio to /bin/true (median) |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, samples: &mut Vec<Duration>, peak: Option<u64>| {
        samples.sort();
        let med = percentile(samples, 0.5);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {} | {:.2}x |",
            ms(med),
            ms(percentile(samples, 0.9)),
            ms(percentile(samples, 0.99)),
            kib(peak),
            ratio(med)
        );
    };
    for case in &mut cases {
        let args = ["-c", case.config.as_str()];
        let peak = (0..5).filter_map(|_| peak_kib(&exe, &args, &stdin)).max();
        row(&format!("check-duo, {}", case.name), &mut case.gate, peak);
        if let (Some(other), true) = (&other, case.baseline_grants) {
            let args = ["-c", case.baseline_config.as_str()];
            let peak = (0..5).filter_map(|_| peak_kib(other, &args, &stdin)).max();
            row(
                &format!("baseline build, {}", case.name),
                &mut case.base,
                peak,
            );
        }
    }
    let peak_base = (0..5).filter_map(|_| peak_kib(truth, &[], &stdin)).max();
    row("/bin/true", &mut base, peak_base);
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}
