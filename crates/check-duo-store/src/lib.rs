//! The session stores behind the core's [`Store`] port: [`EmbeddedStore`] (one SQLite file
//! shared by the processes of one machine, the default) and [`RedisStore`] (what lets several
//! hosts share sessions). One suite of tests runs against both.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

pub use check_duo_core::ports::{Entry, LockToken, SessionInfo, Store, StoreError};
use check_duo_core::Secret;

mod embedded;
pub mod embedded_file;
mod redis;
mod sentinel;

pub use embedded::EmbeddedStore;
pub use redis::RedisStore;
pub use sentinel::{parse_host_port, SentinelSpec};

/// Where sessions live, as the config names it.
#[derive(Clone, Debug)]
pub enum CacheConfig {
    Redis {
        /// `redis://` or `rediss://` URL (built from host/port/db when the seed's keys are used).
        url: Secret,
        prefix: String,
        /// CA for `rediss://` (replaces the compiled-in roots).
        ca_pem: Option<Vec<u8>>,
        /// Connecting, and each command.
        timeout: Duration,
    },
    /// Redis behind Sentinel: the master the sentinels name, asked for again after a failover.
    Sentinel {
        spec: SentinelSpec,
        prefix: String,
        /// CA for TLS to the sentinels and the master (replaces the compiled-in roots).
        ca_pem: Option<Vec<u8>>,
        /// Finding the master and connecting, and each command.
        timeout: Duration,
    },
    Embedded {
        path: PathBuf,
        timeout: Duration,
    },
}

/// A random token that marks a lock as its taker's.
fn lock_token() -> LockToken {
    let mut b = [0u8; 16];
    // Without randomness the process id and a clock still tell most holders apart.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return LockToken(format!("pid-{}-{t}", std::process::id()));
    }
    LockToken(hex::encode(b))
}

/// Open the store the config names, with `connections` connections to Redis (the embedded store
/// has one): for a long-running process.
pub fn open_pooled(cfg: &CacheConfig, connections: usize) -> Result<Box<dyn Store>, StoreError> {
    match cfg {
        CacheConfig::Embedded { .. } => open(cfg),
        CacheConfig::Sentinel {
            spec,
            prefix,
            ca_pem,
            timeout,
        } => Ok(Box::new(
            RedisStore::open_sentinel(spec.clone(), prefix, ca_pem.as_deref(), *timeout)?
                .with_connections(connections)?,
        )),
        CacheConfig::Redis {
            url,
            prefix,
            ca_pem,
            timeout,
        } => Ok(Box::new(
            RedisStore::open(url.expose(), prefix, ca_pem.as_deref(), *timeout)?
                .with_connections(connections)?,
        )),
    }
}

/// Open the store the config names (once per process: it is shared by every request).
pub fn open(cfg: &CacheConfig) -> Result<Box<dyn Store>, StoreError> {
    match cfg {
        CacheConfig::Embedded { path, timeout } => {
            Ok(Box::new(EmbeddedStore::open(path, *timeout)?))
        }
        CacheConfig::Sentinel {
            spec,
            prefix,
            ca_pem,
            timeout,
        } => Ok(Box::new(RedisStore::open_sentinel(
            spec.clone(),
            prefix,
            ca_pem.as_deref(),
            *timeout,
        )?)),
        CacheConfig::Redis {
            url,
            prefix,
            ca_pem,
            timeout,
        } => Ok(Box::new(RedisStore::open(
            url.expose(),
            prefix,
            ca_pem.as_deref(),
            *timeout,
        )?)),
    }
}
