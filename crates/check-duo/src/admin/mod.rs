//! The admin subcommands: `config check`, `hash-password`, `sessions list|revoke`. Each returns
//! the process exit status; every message names the file, the key or the service it is about.

use std::path::Path;

use crate::cli::{Command, ConfigCommand, SessionsCommand};
use crate::config::{CacheConfig, Config};
use crate::store::{self, Store};

pub mod check;
pub mod hash;
pub mod sessions;

/// Run one admin command; the exit status.
pub fn run(cmd: Command) -> u8 {
    match cmd {
        Command::Config(ConfigCommand::Check(a)) => check::run(&a.file.config, a.strict),
        Command::HashPassword(a) => hash::run(a.stdin),
        Command::Serve(a) => serve(&a.config),
        Command::Sessions(SessionsCommand::List(a)) => {
            sessions::list(&a.file.config, a.user.as_deref(), a.json)
        }
        Command::Sessions(SessionsCommand::Revoke(a)) => {
            sessions::revoke(&a.file.config, a.which.user.as_deref(), a.which.all)
        }
    }
}

/// Describe the configured store for messages: never the Redis URL (it may hold a password).
pub fn store_name(cfg: &CacheConfig) -> String {
    match cfg {
        CacheConfig::Embedded { path, .. } => format!("embedded store {}", path.display()),
        CacheConfig::Redis { prefix, .. } => format!("redis store (prefix {prefix:?})"),
        CacheConfig::Sentinel { spec, prefix, .. } => format!(
            "redis store behind sentinel master {:?} (prefix {prefix:?})",
            spec.master_name
        ),
    }
}

/// Open the configured store for an admin command. An embedded store file that does not exist
/// yet is `None`: it is not created here, because a file created by root (who runs these
/// commands) could not be written by check-duo afterwards.
pub fn open_existing_store(cfg: &Config) -> Result<Option<Box<dyn Store>>, String> {
    if let CacheConfig::Embedded { path, .. } = &cfg.cache {
        if !path.exists() {
            return Ok(None);
        }
    }
    store::open(&cfg.cache)
        .map(Some)
        .map_err(|e| format!("{}: {e}", store_name(&cfg.cache)))
}

/// Load a config for an admin command, or the message to print.
pub fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `check-duo serve`: load the config, then run until stopped.
fn serve(path: &std::path::Path) -> u8 {
    let cfg = match crate::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("check-duo: {e}");
            return 2;
        }
    };
    match crate::serve::run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("check-duo: serve: {e}");
            1
        }
    }
}
