//! What the core needs from the outside world, as traits the front-ends implement: the session
//! store, Duo, the clock and waiting, and where records go. Every port is `Send + Sync` and
//! takes `&self`, so one instance, built once per process, serves every thread or task.

use std::fmt;
use std::time::{Duration, Instant};

use duo_auth::types::{AuthRequest, AuthStart, AuthStatus, Preauth};
use serde::{Deserialize, Serialize};

/// One approved session. It holds neither the password nor the cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub user: String,
    /// Unix seconds of the approval.
    pub approved_at: i64,
    /// Keyed tag over user, password (pipe mode) and the configured credential: the warm path
    /// checks it instead of running the password hash (see [`crate::keys::SessionKeys::tag`]).
    pub tag: String,
    /// Client address at approval.
    #[serde(default)]
    pub ip: String,
    /// Unix seconds of the last request that refreshed the entry (idle timeout).
    #[serde(default)]
    pub last_seen: i64,
    /// The second factor it was approved with (see [`crate::gate::factor_used`]); empty in
    /// entries older than the field.
    #[serde(default)]
    pub factor: String,
}

/// A session as the admin commands show it: never its key (a keyed hash of the cookie, but
/// still the handle of a live session).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub user: String,
    /// Client address at approval.
    pub ip: String,
    /// Unix seconds of the approval.
    pub approved_at: i64,
    /// The second factor it was approved with (empty: not recorded).
    pub factor: String,
    /// Unix seconds when the store drops it (`i64::MAX`: no expiry set).
    pub expires_at: i64,
}

/// Proof of holding a lock: only its holder's token releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockToken(pub String);

/// A store failure. Every one denies (never grants) the request that met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// `embedded store`, `redis`, …
    pub backend: &'static str,
    /// What was being done: `read`, `write`, `SET NX`, …
    pub op: String,
    pub detail: String,
}

impl StoreError {
    pub fn new(backend: &'static str, op: impl Into<String>, detail: impl fmt::Display) -> Self {
        StoreError {
            backend,
            op: op.into(),
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.backend, self.op, self.detail)
    }
}

impl std::error::Error for StoreError {}

/// Session and counter storage, shared by every request (and, with Redis, every host). Keys
/// are the names of [`crate::keys`]; a session key is already a keyed hash of the cookie. `now`
/// is Unix seconds.
pub trait Store: Send + Sync {
    fn get(&self, key: &str, now: i64) -> Result<Option<Entry>, StoreError>;
    /// Several entries at once, one answer per key in order: a long-running front-end reads
    /// the sessions of many requests in one round trip. One [`Store::get`] after the other
    /// unless the store does better.
    fn get_many(&self, keys: &[String], now: i64) -> Result<Vec<Option<Entry>>, StoreError> {
        keys.iter().map(|k| self.get(k, now)).collect()
    }
    /// Write atomically with its time to live.
    fn put(&self, key: &str, entry: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError>;
    /// Remove one session; true if it existed.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Every unexpired session (`check-duo sessions list`), without its key.
    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError>;
    /// End every session of `user`; how many unexpired sessions were ended.
    fn revoke_user(&self, user: &str, now: i64) -> Result<u64, StoreError>;
    /// End every session; how many unexpired sessions were ended.
    fn revoke_all(&self, now: i64) -> Result<u64, StoreError>;
    /// Take the lock `key` for `ttl`; `None` when somebody holds it.
    fn try_lock(&self, key: &str, ttl: Duration, now: i64)
        -> Result<Option<LockToken>, StoreError>;
    /// Release a lock; one that expired and was taken by somebody else meanwhile is left alone.
    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError>;
    /// Whether somebody holds the lock `key`.
    fn locked(&self, key: &str, now: i64) -> Result<bool, StoreError>;
    /// Add one to the counter `key` and return the new count. The first increment starts a
    /// window of `window`; when it ends the counter is gone.
    fn incr(&self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError>;
    /// Add one to the counter `key`, which then lives for `ttl` after this increment (a window
    /// that slides with every increment, unlike [`Store::incr`]'s).
    fn incr_sliding(&self, key: &str, ttl: Duration, now: i64) -> Result<u64, StoreError>;
    /// Set the counter `key` to `value` for `ttl` (read back with [`Store::count`]).
    fn set(&self, key: &str, value: u64, ttl: Duration, now: i64) -> Result<(), StoreError>;
    /// Take one back from the counter `key` (never below zero; its window is unchanged).
    fn decr(&self, key: &str, now: i64) -> Result<(), StoreError>;
    /// The current count of `key` (0 when absent or expired).
    fn count(&self, key: &str, now: i64) -> Result<u64, StoreError>;
}

/// Duo's Auth API, as the core calls it: `duo_auth::Client` in production (wrapped by the
/// front-end), a scripted fake in tests. Every call ends by `deadline`.
pub trait DuoApi: Send + Sync {
    fn preauth(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<Preauth, duo_auth::Error>;
    fn auth(&self, req: &AuthRequest, deadline: Instant) -> Result<AuthStart, duo_auth::Error>;
    /// Long-polls until the transaction is answered or `deadline`.
    fn auth_status(&self, txid: &str, deadline: Instant) -> Result<AuthStatus, duo_auth::Error>;

    /// Preauth telling Duo that this front-end shows a Verified Duo Push's code: the answer and
    /// the transaction to pass to [`DuoApi::auth_verified`]. The default asks as [`DuoApi::preauth`].
    fn preauth_verified(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<(Preauth, Option<String>), duo_auth::Error> {
        self.preauth(user, ipaddr, deadline).map(|p| (p, None))
    }

    /// Auth within the transaction a verified preauth opened.
    fn auth_verified(
        &self,
        req: &AuthRequest,
        preauth_txid: Option<&str>,
        deadline: Instant,
    ) -> Result<AuthStart, duo_auth::Error> {
        let _ = preauth_txid;
        self.auth(req, deadline)
    }
}

/// The time, as a parameter.
pub trait Clock: Send + Sync {
    /// Wall clock, Unix milliseconds (expiries, windows, what is stored).
    fn unix_ms(&self) -> i64;
    /// Monotonic time (deadlines of calls, the failure floor).
    fn monotonic(&self) -> Instant;

    /// Wall clock, Unix seconds.
    fn unix(&self) -> i64 {
        self.unix_ms().div_euclid(1000)
    }
}

/// Waiting, as a parameter: a thread sleep in a process, a timer in a daemon, the manual
/// clock's advance in tests.
pub trait Wait: Send + Sync {
    fn wait(&self, d: Duration);
}

/// Where the audit record of a decision goes (file, syslog); see [`crate::finish`].
pub trait AuditSink {
    fn write(&self, record: &crate::finish::Record<'_>) -> Result<(), String>;
}

/// What a user directory (LDAP, Active Directory) says of a user and a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryAnswer {
    /// The user is there (and enabled), and the password, when one was asked about, is theirs.
    Valid,
    /// No such user, or not exactly one, or one the directory's filter excludes (disabled).
    UnknownUser,
    /// The user is there; the bind with this password was refused.
    WrongPassword,
}

/// A directory's answer, with what it knows of the user's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryCheck {
    pub answer: DirectoryAnswer,
    /// A value of the user's entry that changes when the password does (AD's `pwdLastSet`,
    /// OpenLDAP's `pwdChangedTime`), empty when none is configured: a session whose stamp is
    /// no longer the entry's ends at its re-check, also where requests carry no password.
    pub stamp: String,
}

impl DirectoryCheck {
    pub fn new(answer: DirectoryAnswer, stamp: impl Into<String>) -> Self {
        DirectoryCheck {
            answer,
            stamp: stamp.into(),
        }
    }
}

/// The directory could not be asked (down, unreachable, timed out, the service bind refused):
/// every one denies, whatever the fail mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryError(pub String);

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DirectoryError {}

/// A user directory, for the users the config does not list: the password is checked by a bind
/// as the user, never by reading a hash. Every call ends by `deadline`.
pub trait Directory: Send + Sync {
    /// Whether `password` is `user`'s (a bind as the user). The gate never asks with an empty
    /// password (an "unauthenticated bind" that many servers accept).
    fn verify(
        &self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<DirectoryCheck, DirectoryError>;
    /// Whether `user` is still there and enabled ([`DirectoryAnswer::Valid`] or
    /// [`DirectoryAnswer::UnknownUser`]): the re-check of a session that carries no password.
    fn lookup(&self, user: &str, deadline: Instant) -> Result<DirectoryCheck, DirectoryError>;
}
