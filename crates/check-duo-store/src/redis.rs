//! The Redis store: what lets several web servers share sessions. Every command has a deadline.
//! One server, or the master that Sentinel names (see [`crate::sentinel`]); the keys and commands
//! are the same.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Commands as _;

use super::sentinel::{Master, Retry, SentinelSpec};
use super::{Entry, LockToken, SessionInfo, Store, StoreError};

/// One connection, shared by the threads of a process behind a mutex: to one server or to the
/// master Sentinel names, replaced (and the command retried once where that is safe) when it
/// fails, so that a long-running process outlives a restart or a failover of Redis.
pub struct RedisStore {
    /// One connection or more, taken in turn: a long-running process answers many requests at
    /// once, and one connection would take them one after the other.
    links: Vec<Master>,
    next: AtomicUsize,
    prefix: String,
}

/// Delete a lock only if it still holds our token (it may have expired and been taken since).
const UNLOCK_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Take one back, never below zero, keeping the TTL.
const DECR_SCRIPT: &str =
    "local n = tonumber(redis.call('GET', KEYS[1]) or '0') if n > 0 then return redis.call('DECR', KEYS[1]) else return 0 end";

fn err(what: &'static str) -> impl Fn(redis::RedisError) -> StoreError {
    move |e| StoreError::new("redis", what, e)
}

impl RedisStore {
    pub fn open(
        url: &str,
        prefix: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = match ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            None => redis::Client::open(url),
        }
        .map_err(err("url"))?;
        Ok(RedisStore {
            links: vec![Master::server(client, timeout)?],
            next: AtomicUsize::new(0),
            prefix: prefix.to_string(),
        })
    }

    /// `n` connections in all (at least one), made with what made this one: for a process that
    /// serves many requests at once.
    pub fn with_connections(mut self, n: usize) -> Result<Self, StoreError> {
        while self.links.len() < n {
            let more = self.links[0].another()?;
            self.links.push(more);
        }
        Ok(self)
    }

    /// The master the sentinels of `spec` name, asked for and connected to within `timeout`.
    /// `ca_pem` (with `spec.tls`) replaces the compiled-in roots, as for `rediss://`.
    pub fn open_sentinel(
        spec: SentinelSpec,
        prefix: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(RedisStore {
            links: vec![Master::open(spec, ca_pem, timeout)?],
            next: AtomicUsize::new(0),
            prefix: prefix.to_string(),
        })
    }

    /// Run one command (or pipeline) with `f`; `retry` says whether it may run again on a new
    /// connection after the connection failed.
    fn run<T>(
        &self,
        what: &'static str,
        retry: Retry,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.links.len().max(1);
        match self.links.get(i) {
            Some(link) => link.run(what, retry, f),
            None => Err(StoreError::new("redis", what, "no connection")),
        }
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}session:{key}", self.prefix)
    }

    /// Every session key, by `SCAN … MATCH` (never `KEYS`, which blocks the server), with the
    /// prefix's glob characters escaped. SCAN may return a key twice: deduplicated.
    fn session_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut pattern = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("session:*");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self.run("SCAN", Retry::Always, |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query(c)
            })?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// The entries (and TTLs in seconds) of `keys`, in batches of one pipeline each; gone or
    /// unparsable entries are left out.
    fn entries(&self, keys: &[String]) -> Result<Vec<(String, Entry, i64)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(200) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(k).cmd("TTL").arg(k);
            }
            let values: Vec<(Option<String>, i64)> =
                self.run("GET", Retry::Always, |c| pipe.query(c))?;
            for (k, (v, ttl)) in chunk.iter().zip(values) {
                if let Some(e) = v.and_then(|s| serde_json::from_str::<Entry>(&s).ok()) {
                    if ttl != -2 {
                        out.push((k.clone(), e, ttl));
                    }
                }
            }
        }
        Ok(out)
    }

    fn delete_keys(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in keys.chunks(200) {
            let d: u64 = self.run("DEL", Retry::Always, |c| c.del(chunk))?;
            n += d;
        }
        Ok(n)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}count:{key}", self.prefix)
    }
}

impl Store for RedisStore {
    fn get(&self, key: &str, _now: i64) -> Result<Option<Entry>, StoreError> {
        let k = self.session_key(key);
        let v: Option<String> = self.run("GET", Retry::Always, |c| c.get(&k))?;
        match v {
            None => Ok(None),
            // An entry that does not parse is treated as absent, never trusted.
            Some(s) => Ok(serde_json::from_str(&s).ok()),
        }
    }

    /// One `MGET`.
    fn get_many(&self, keys: &[String], _now: i64) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ks: Vec<String> = keys.iter().map(|k| self.session_key(k)).collect();
        let vs: Vec<Option<String>> = self.run("MGET", Retry::Always, |c| {
            redis::cmd("MGET").arg(&ks).query(c)
        })?;
        if vs.len() != keys.len() {
            return Err(StoreError::new("redis", "MGET", "not one value a key"));
        }
        // An entry that does not parse is treated as absent, never trusted.
        Ok(vs
            .into_iter()
            .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }

    fn put(&self, key: &str, e: &Entry, ttl: Duration, _now: i64) -> Result<(), StoreError> {
        let k = self.session_key(key);
        let v = serde_json::to_string(e).map_err(|e| StoreError::new("redis", "encode", e))?;
        // SET … EX in one command: the entry never exists without its TTL.
        let secs = ttl.as_secs().max(1);
        let _: () = self.run("SET", Retry::Always, |c| c.set_ex(&k, &v, secs))?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let k = self.session_key(key);
        let n: i64 = self.run("DEL", Retry::Always, |c| c.del(&k))?;
        Ok(n > 0)
    }

    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError> {
        let keys = self.session_keys()?;
        let mut list: Vec<_> = self
            .entries(&keys)?
            .into_iter()
            .map(|(_, e, ttl)| SessionInfo {
                user: e.user,
                ip: e.ip,
                approved_at: e.approved_at,
                factor: e.factor,
                expires_at: if ttl < 0 {
                    i64::MAX
                } else {
                    now.saturating_add(ttl)
                },
            })
            .collect();
        list.sort_by(|a, b| (&a.user, a.approved_at).cmp(&(&b.user, b.approved_at)));
        Ok(list)
    }

    fn revoke_user(&self, user: &str, _now: i64) -> Result<u64, StoreError> {
        let keys = self.session_keys()?;
        let theirs: Vec<String> = self
            .entries(&keys)?
            .into_iter()
            .filter(|(_, e, _)| e.user == user)
            .map(|(k, _, _)| k)
            .collect();
        self.delete_keys(&theirs)
    }

    fn revoke_all(&self, _now: i64) -> Result<u64, StoreError> {
        let keys = self.session_keys()?;
        self.delete_keys(&keys)
    }

    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
        _now: i64,
    ) -> Result<Option<LockToken>, StoreError> {
        let k = self.lock_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let token = super::lock_token();
        // Run twice (the first reply lost), the lock is ours but looks taken: the strict side.
        let set: Option<String> = self.run("SET NX", Retry::Always, |c| {
            redis::cmd("SET")
                .arg(&k)
                .arg(&token.0)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query(c)
        })?;
        Ok(set.map(|_| token))
    }

    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        let k = self.lock_key(key);
        let _: i64 = self.run("EVAL unlock", Retry::Always, |c| {
            redis::cmd("EVAL")
                .arg(UNLOCK_SCRIPT)
                .arg(1)
                .arg(&k)
                .arg(&token.0)
                .query(c)
        })?;
        Ok(())
    }

    fn locked(&self, key: &str, _now: i64) -> Result<bool, StoreError> {
        let k = self.lock_key(key);
        let n: i64 = self.run("EXISTS", Retry::Always, |c| c.exists(&k))?;
        Ok(n > 0)
    }

    fn incr(&self, key: &str, window: Duration, _now: i64) -> Result<u64, StoreError> {
        let k = self.counter_key(key);
        // In one transaction: create the counter with the window's TTL if it is absent (SET NX
        // EX), then INCR, which keeps the TTL. (Works on Redis before 7.0, which lacks EXPIRE NX.)
        // Run twice (the first reply lost), it counts one too many: the strict side.
        let (_, n): (Option<String>, u64) = self.run("INCR", Retry::Always, |c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&k)
                .arg(0)
                .arg("EX")
                .arg(window.as_secs().max(1))
                .arg("NX")
                .incr(&k, 1)
                .query(c)
        })?;
        Ok(n)
    }

    fn incr_sliding(&self, key: &str, ttl: Duration, _now: i64) -> Result<u64, StoreError> {
        let k = self.counter_key(key);
        // Run twice (the first reply lost), it counts one too many: the strict side.
        let (n, _): (u64, i64) = self.run("INCR", Retry::Always, |c| {
            redis::pipe()
                .atomic()
                .incr(&k, 1)
                .cmd("EXPIRE")
                .arg(&k)
                .arg(ttl.as_secs().max(1))
                .query(c)
        })?;
        Ok(n)
    }

    fn set(&self, key: &str, value: u64, ttl: Duration, _now: i64) -> Result<(), StoreError> {
        let k = self.counter_key(key);
        let secs = ttl.as_secs().max(1);
        let _: () = self.run("SET", Retry::Always, |c| c.set_ex(&k, value, secs))?;
        Ok(())
    }

    fn decr(&self, key: &str, _now: i64) -> Result<(), StoreError> {
        let k = self.counter_key(key);
        // Taken back twice would loosen a limit: retried only when the server refused it.
        let _: i64 = self.run("EVAL decr", Retry::IfRefused, |c| {
            redis::cmd("EVAL").arg(DECR_SCRIPT).arg(1).arg(&k).query(c)
        })?;
        Ok(())
    }

    fn count(&self, key: &str, _now: i64) -> Result<u64, StoreError> {
        let k = self.counter_key(key);
        let n: Option<u64> = self.run("GET", Retry::Always, |c| c.get(&k))?;
        Ok(n.unwrap_or(0))
    }
}
