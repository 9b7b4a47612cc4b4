//! `check-duo -c FILE`: run by mod_authnz_external for every protected request. Exit 0 grants,
//! 1 denies; one line per decision on stderr (Apache's ErrorLog).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use check_duo::config::Config;
use check_duo::duo::Sleep;
use check_duo::gate::{self, SystemClock};
use check_duo::input::{self, Protocol, VARIABLES};
use check_duo::log::{Decision, Event, Line};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Pipe,
    Environment,
}

/// Two-factor authenticator for Apache mod_authnz_external: password, then Duo Push.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The JSON configuration file.
    #[arg(short = 'c', long = "configuration-file", value_name = "FILE")]
    config: PathBuf,
    /// How mod_authnz_external passes the credentials.
    #[arg(long, value_enum, default_value = "pipe")]
    protocol: ProtocolArg,
}

/// Only the variables mod_authnz_external documents; nothing else from the environment.
fn var(name: &str) -> Option<String> {
    if VARIABLES.contains(&name) {
        std::env::var(name).ok()
    } else {
        None
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // Any non-zero status denies; help and version are not grants either.
            return ExitCode::from(if e.use_stderr() { 2 } else { 1 });
        }
    };
    let protocol = match args.protocol {
        ProtocolArg::Pipe => Protocol::Pipe,
        ProtocolArg::Environment => Protocol::Environment,
    };

    let req = match input::read(protocol, std::io::stdin().lock(), &var) {
        Ok(r) => r,
        Err(e) => {
            let d = Decision::deny(Event::BadInput, format!("bad input: {e}"));
            let ip = var("IP").unwrap_or_default();
            let host = var("HTTP_HOST").unwrap_or_default();
            let uri = var("URI").unwrap_or_default();
            report("", &ip, &host, &uri, None, &d, started);
            return ExitCode::from(1);
        }
    };
    let decision = match Config::load(&args.config) {
        Ok(cfg) => gate::decide(&cfg, &req, &SystemClock, &Sleep),
        Err(e) => Decision::deny(Event::ConfigError, e.to_string()),
    };
    report(
        &req.user,
        &req.ip,
        &req.host,
        &req.uri,
        Some(&req.context),
        &decision,
        started,
    );
    if decision.granted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn report(
    user: &str,
    ip: &str,
    host: &str,
    uri: &str,
    context: Option<&input::Context>,
    decision: &Decision,
    started: Instant,
) {
    let line = Line {
        user,
        ip,
        host,
        uri,
        context,
        decision,
        duration: started.elapsed(),
    };
    // One write, so that lines of concurrent processes never interleave in Apache's log.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("{line}\n").as_bytes(),
    );
}
