//! `check-duo -c FILE`: run by mod_authnz_external for every protected request. Exit 0 grants,
//! 1 denies; one line per decision on stderr (Apache's ErrorLog). A first positional word picks
//! an admin subcommand instead (`config check`, `hash-password`, `sessions list|revoke`).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use check_duo::cli::{self, Cli, ProtocolArg};
use check_duo::input::Protocol;
use check_duo::{admin, dropin, privilege};
use clap::Parser;

fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Drop-in mode: any non-zero status denies; help and version are not grants either.
            // Admin commands: help and version succeed.
            let code = if e.use_stderr() {
                2
            } else if cli::is_admin(&args) {
                0
            } else {
                1
            };
            return ExitCode::from(code);
        }
    };
    if let Some(cmd) = cli.command {
        if privilege::elevated() {
            eprintln!(
                "check-duo: admin commands do not run with the setgid group; run them as root"
            );
            return ExitCode::from(2);
        }
        return ExitCode::from(admin::run(cmd));
    }
    let Some(config) = cli.config else {
        // clap requires -c without a subcommand; never grant if that ever changes.
        return ExitCode::from(2);
    };
    let protocol = match cli.protocol {
        ProtocolArg::Pipe => Protocol::Pipe,
        ProtocolArg::Environment => Protocol::Environment,
    };
    if dropin::run(&config, protocol, started) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
