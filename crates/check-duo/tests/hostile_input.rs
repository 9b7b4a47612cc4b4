//! Property tests of the parsers that take outside input: stdin and the variables from Apache,
//! the Cookie header, the config file. None may panic; bad input is an error with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use check_duo::config::Config;
use check_duo::cookie;
use check_duo::factor;
use check_duo::input::{self, Protocol};
use proptest::prelude::*;

const VALID: &str = r#"{"usernames": {"a": "$2y$05$KegdGMpBLLC/b1wVanpz3O6MLXij.TxNaJRa/xLxGjoY0Of/Pc/3W"},
 "duo": {"ikey": "I", "skey": "S", "host": "h:1", "failmode": "safe", "failmode_networks": ["10.0.0.0/8"]},
 "cache": {"host": "r", "port": "6379", "db": 1, "prefix": "p"},
 "session": {"name": "s", "expiry": 10, "idle_timeout": 5},
 "limits": {"user_failures": 1, "no_push_paths": ["/api/*"]}}"#;

proptest! {
    #[test]
    fn stdin_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300),
                          cookie in ".{0,100}", context in ".{0,10}") {
        let env = move |k: &str| match k {
            "COOKIE" => Some(cookie.clone()),
            "CONTEXT" => Some(context.clone()),
            _ => None,
        };
        match input::read(Protocol::Pipe, &bytes[..], &env) {
            Ok(r) => {
                prop_assert!(!r.user.is_empty() && !r.user.contains('\n'));
                prop_assert!(!r.password.expose().contains('\n'));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn cookie_header_never_panics(header in ".{0,300}", name in "[a-z]{1,12}") {
        if let Some(v) = cookie::find(&header, &name) {
            prop_assert!(!v.is_empty());
            prop_assert!(header.contains(v));
            prop_assert!(!v.contains(';') && !v.contains(','));
        }
    }

    #[test]
    fn config_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = Config::parse(Path::new("/etc/x.json"), &bytes) {
            prop_assert!(e.to_string().contains("/etc/x.json"));
        }
    }

    /// A valid config with one byte changed: parses, or fails naming the file.
    #[test]
    fn mutated_config(pos in 0usize..VALID.len(), byte in any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[pos] = byte;
        if let Err(e) = Config::parse(Path::new("/etc/x.json"), &bytes) {
            prop_assert!(e.to_string().contains("/etc/x.json"));
        }
    }

    #[test]
    fn factor_split_never_panics(pw in ".{0,60}") {
        if let Some((base, _)) = factor::split(&pw) {
            prop_assert!(pw.starts_with(base));
        }
    }
}

#[test]
fn the_valid_config_is_valid() {
    Config::parse(Path::new("/etc/x.json"), VALID.as_bytes()).unwrap();
}
