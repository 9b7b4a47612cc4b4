//! The session store: approvals cached by keyed session id, with a TTL, shared by every process
//! (and, with Redis, every web server). Two backends behind one trait, tested by one suite.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::CacheConfig;

mod embedded;
mod redis;

pub use embedded::EmbeddedStore;
pub use redis::RedisStore;

/// One cached approval. It holds neither the password nor the cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub user: String,
    /// Unix seconds of the Duo approval.
    pub approved_at: i64,
    /// Keyed tag over user, password and the configured credential (see `session`): lets the warm
    /// path reject a wrong password without running the password hash.
    pub tag: String,
    /// Client address at approval.
    #[serde(default)]
    pub ip: String,
    /// Unix seconds of the last request of this session that refreshed the entry (idle timeout).
    #[serde(default)]
    pub last_seen: i64,
}

/// A cached session as the admin commands show it: never its key (a keyed hash of the cookie,
/// but still the handle of a live session).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub user: String,
    /// Client address at approval.
    pub ip: String,
    /// Unix seconds of the Duo approval.
    pub approved_at: i64,
    /// Unix seconds when the store drops it (`i64::MAX`: no expiry set).
    pub expires_at: i64,
}

/// A store failure (the request is denied).
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Session storage. `key` is already a keyed hash of the session cookie; `now` is Unix seconds.
pub trait Store {
    fn get(&mut self, key: &str, now: i64) -> Result<Option<Entry>, StoreError>;
    /// Write atomically with its time to live.
    fn put(&mut self, key: &str, entry: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError>;
    /// Remove one session; true if it existed.
    fn delete(&mut self, key: &str) -> Result<bool, StoreError>;
    /// Every unexpired session (`check-duo sessions list`), without its key.
    fn list(&mut self, now: i64) -> Result<Vec<SessionInfo>, StoreError>;
    /// End every session of `user`; how many unexpired sessions were ended.
    fn revoke_user(&mut self, user: &str, now: i64) -> Result<u64, StoreError>;
    /// End every session; how many unexpired sessions were ended.
    fn revoke_all(&mut self, now: i64) -> Result<u64, StoreError>;
    /// Take the push lock of a session for `ttl`; false when another process holds it.
    fn try_lock(&mut self, key: &str, ttl: Duration, now: i64) -> Result<bool, StoreError>;
    /// Release a lock this store took; a lock that expired and was taken by another process
    /// meanwhile is left alone.
    fn unlock(&mut self, key: &str) -> Result<(), StoreError>;
    /// Add one to the counter `key` and return the new count. The first increment starts a
    /// window of `window`; when it ends the counter is gone.
    fn incr(&mut self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError>;
    /// The current count of `key` (0 when absent or expired).
    fn count(&mut self, key: &str, now: i64) -> Result<u64, StoreError>;
}

/// A random token that marks a lock as this process's.
fn lock_token() -> String {
    let mut b = [0u8; 16];
    // Without randomness the process id still tells most holders apart.
    if getrandom::fill(&mut b).is_err() {
        return format!("pid-{}", std::process::id());
    }
    hex::encode(b)
}

/// Open the store the config names.
pub fn open(cfg: &CacheConfig) -> Result<Box<dyn Store>, StoreError> {
    match cfg {
        CacheConfig::Embedded { path, timeout } => {
            Ok(Box::new(EmbeddedStore::open(path, *timeout)?))
        }
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
