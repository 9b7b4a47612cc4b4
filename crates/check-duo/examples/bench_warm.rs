//! Bench: the warm path (a cached session) as whole processes, as Apache pays for it: wall time
//! and peak memory of `check-duo` against spawning `/bin/true` with the same input, interleaved
//! in one run so that machine noise hits both alike.
//!
//! `cargo run --release -p check-duo --example bench_warm [-- ROUNDS]`
//! (peak memory needs GNU time: `apt-get install time`).
//!
//! `BENCH_BASELINE_EXE=/path/to/other/check-duo` adds another build (say, main before a change)
//! to the same interleaved loop, for a before/after from one run. It gets a store file of its own
//! (builds may keep the file differently: WAL or not), with its own session approved once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const PASSWORD: &str = "bench password";

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

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/check-duo");
    if !exe.exists() {
        panic!("build it first: cargo build --release -p check-duo");
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = duo_sim::start(duo_sim::SimConfig::new(
        "DIBENCHBENCHBENCHBEN",
        "bench-skey",
    ))
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let hash = check_duo::password::hash_argon2id(PASSWORD).unwrap();
    let config = dir.path().join("config.json");
    let cfg = json!({
        "usernames": {"alice": hash},
        "duo": {"ikey": "DIBENCHBENCHBENCHBEN", "skey": "bench-skey", "host": sim.host(), "ca_file": ca},
        "cache": {"path": dir.path().join("sessions.db")},
        "session": {"name": "formsession", "expiry": 3600}
    });
    std::fs::write(&config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let config = config.to_str().unwrap().to_string();
    let args = ["-c", config.as_str()];
    let stdin = format!("alice\n{PASSWORD}\n").into_bytes();

    // Warm the session: one push, approved by the simulator.
    let (ok, cold) = run(&exe, &args, &stdin);
    assert!(ok, "the cold request was not granted");

    let truth = Path::new("/bin/true");
    let other = std::env::var_os("BENCH_BASELINE_EXE").map(std::path::PathBuf::from);
    let other_config = dir.path().join("config-baseline.json");
    let mut other_cfg = cfg.clone();
    other_cfg["cache"]["path"] = json!(dir.path().join("sessions-baseline.db"));
    std::fs::write(&other_config, serde_json::to_vec(&other_cfg).unwrap()).unwrap();
    let other_config = other_config.to_str().unwrap().to_string();
    let other_args = ["-c", other_config.as_str()];
    if let Some(other) = &other {
        let (ok, _) = run(other, &other_args, &stdin);
        assert!(ok, "the baseline build's cold request was not granted");
    }
    let calls = sim.counters().duo_calls();
    let (mut gate, mut base, mut prev) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (ok, d) = run(&exe, &args, &stdin);
        assert!(ok, "a warm request was denied");
        gate.push(d);
        base.push(run(truth, &[], &stdin).1);
        if let Some(other) = &other {
            let (ok, d) = run(other, &other_args, &stdin);
            assert!(ok, "a warm request was denied by the baseline build");
            prev.push(d);
        }
    }
    assert_eq!(
        sim.counters().duo_calls(),
        calls,
        "the warm path called Duo"
    );
    gate.sort();
    base.sort();
    prev.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med_gate = percentile(&gate, 0.5);
    let med_base = percentile(&base, 0.5);
    println!(
        "warm path, {rounds} interleaved runs each (cold request: {:.1} ms)",
        ms(cold)
    );
    println!();
    println!("| program | median ms | p90 ms | p99 ms | peak RSS KiB |");
    println!("|---|---|---|---|---|");
    let peak_gate = (0..5).filter_map(|_| peak_kib(&exe, &args, &stdin)).max();
    let peak_base = (0..5).filter_map(|_| peak_kib(truth, &[], &stdin)).max();
    let kib = |k: Option<u64>| k.map_or("n/a (install GNU time)".to_string(), |k| k.to_string());
    println!(
        "| check-duo (warm) | {:.2} | {:.2} | {:.2} | {} |",
        ms(med_gate),
        ms(percentile(&gate, 0.9)),
        ms(percentile(&gate, 0.99)),
        kib(peak_gate)
    );
    if let Some(other) = &other {
        let peak = (0..5)
            .filter_map(|_| peak_kib(other, &other_args, &stdin))
            .max();
        println!(
            "| baseline build (warm) | {:.2} | {:.2} | {:.2} | {} |",
            ms(percentile(&prev, 0.5)),
            ms(percentile(&prev, 0.9)),
            ms(percentile(&prev, 0.99)),
            kib(peak)
        );
    }
    println!(
        "| /bin/true | {:.2} | {:.2} | {:.2} | {} |",
        ms(med_base),
        ms(percentile(&base, 0.9)),
        ms(percentile(&base, 0.99)),
        kib(peak_base)
    );
    println!();
    println!(
        "ratio check-duo / /bin/true: wall (median) {:.2}x",
        med_gate.as_secs_f64() / med_base.as_secs_f64()
    );
    if other.is_some() {
        println!(
            "ratio baseline build / /bin/true: wall (median) {:.2}x",
            percentile(&prev, 0.5).as_secs_f64() / med_base.as_secs_f64()
        );
    }
    if let (Some(g), Some(b)) = (peak_gate, peak_base) {
        println!(
            "ratio check-duo / /bin/true: peak memory {:.2}x ({:.1} MiB)",
            g as f64 / b as f64,
            g as f64 / 1024.0
        );
    }
}
