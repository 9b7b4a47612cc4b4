//! Harness shared by the end-to-end tests: real Apache, Redis and a real browser, each started on
//! a free loopback port in the test's own temporary directory and stopped when dropped.
//!
//! Test binaries use different parts of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod apache;
pub mod apache_fcgi;
pub mod caddy;
pub mod echo;
pub mod faults;
pub mod haproxy;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod sentinel;
pub mod serve;
pub mod webdriver;
pub mod world;

use std::path::Path;

/// The environment variable CI sets: a missing tool then fails the test instead of skipping it.
pub const REQUIRE_E2E: &str = "CHECK_DUO_REQUIRE_E2E";

/// True when every tool in `tools` (name, path) is installed. Otherwise prints a loud message and
/// returns false (the caller returns early, so the test counts as passed but says it was skipped),
/// or panics when `CHECK_DUO_REQUIRE_E2E` is set, so that CI cannot skip silently.
pub fn tools_present(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(name, path)| format!("{name} ({path})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    if std::env::var_os(REQUIRE_E2E).is_some() {
        panic!("{msg}, and {REQUIRE_E2E} is set: install them (see .ci/run)");
    }
    eprintln!();
    eprintln!("################################################################################");
    eprintln!("## SKIPPED {msg}");
    eprintln!("## (apt-get install apache2 libapache2-mod-authnz-external chromium");
    eprintln!("##  chromium-driver redis-server; set {REQUIRE_E2E}=1 to make this a failure)");
    eprintln!("################################################################################");
    false
}
