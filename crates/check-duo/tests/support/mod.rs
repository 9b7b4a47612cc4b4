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
pub mod slapd;
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

/// `text` with its one occurrence of `from` replaced: a shipped file (`file`, for the message)
/// that no longer contains it exactly once fails the test loudly rather than quietly testing
/// another configuration.
pub fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{file}: expected `{from}` exactly once, found it {n} times"
    );
    text.replacen(from, to, 1)
}

/// [`replace_once`] for each `(from, to)` in turn.
pub fn replace_each(text: &str, substitutions: &[(&str, &str)], file: &str) -> String {
    substitutions
        .iter()
        .fold(text.to_string(), |t, (from, to)| {
            replace_once(&t, from, to, file)
        })
}

/// `n` protected images of a test page: `dir/img/{i}.svg`, each `10 + i` pixels wide (so that a
/// browser's rendering tells them apart), and their `<img class="asset">` tags added to `page`.
/// `dir/img` must exist.
pub fn write_images(dir: &Path, n: usize, page: &mut String) {
    use std::fmt::Write as _;
    for i in 0..n {
        let _ = writeln!(page, "<img class=\"asset\" src=\"img/{i}.svg\" alt=\"\">");
        std::fs::write(
            dir.join(format!("img/{i}.svg")),
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"10\">\
                 <rect width=\"{w}\" height=\"10\" fill=\"#2d7d3a\"/></svg>\n",
                w = 10 + i
            ),
        )
        .unwrap();
    }
}
