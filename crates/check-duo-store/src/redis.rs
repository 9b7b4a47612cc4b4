//! The Redis store: what lets several web servers share sessions. Every command has a deadline.

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands as _;

use super::{Entry, Store, StoreError};

pub struct RedisStore {
    conn: redis::Connection,
    prefix: String,
    /// Tokens of the locks this process holds.
    held: HashMap<String, String>,
}

/// Delete a lock only if it still holds our token (it may have expired and been taken since).
const UNLOCK_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn err(what: &'static str) -> impl Fn(redis::RedisError) -> StoreError {
    move |e| StoreError(format!("redis {what}: {e}"))
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
        let conn = client
            .get_connection_with_timeout(timeout)
            .map_err(err("connect"))?;
        conn.set_read_timeout(Some(timeout))
            .map_err(err("connect"))?;
        conn.set_write_timeout(Some(timeout))
            .map_err(err("connect"))?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            held: HashMap::new(),
        })
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}session:{key}", self.prefix)
    }

    /// Every session key, by `SCAN … MATCH` (never `KEYS`, which blocks the server), with the
    /// prefix's glob characters escaped. SCAN may return a key twice: deduplicated.
    fn session_keys(&mut self) -> Result<Vec<String>, StoreError> {
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
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query(&mut self.conn)
                .map_err(err("SCAN"))?;
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
    fn entries(&mut self, keys: &[String]) -> Result<Vec<(String, Entry, i64)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(200) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(k).cmd("TTL").arg(k);
            }
            let values: Vec<(Option<String>, i64)> =
                pipe.query(&mut self.conn).map_err(err("GET"))?;
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

    fn delete_keys(&mut self, keys: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in keys.chunks(200) {
            let d: u64 = self.conn.del(chunk).map_err(err("DEL"))?;
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
    fn get(&mut self, key: &str, _now: i64) -> Result<Option<Entry>, StoreError> {
        let k = self.session_key(key);
        let v: Option<String> = self.conn.get(k).map_err(err("GET"))?;
        match v {
            None => Ok(None),
            // An entry that does not parse is treated as absent, never trusted.
            Some(s) => Ok(serde_json::from_str(&s).ok()),
        }
    }

    fn put(&mut self, key: &str, e: &Entry, ttl: Duration, _now: i64) -> Result<(), StoreError> {
        let k = self.session_key(key);
        let v = serde_json::to_string(e).map_err(|e| StoreError(e.to_string()))?;
        // SET … EX in one command: the entry never exists without its TTL.
        let _: () = self
            .conn
            .set_ex(k, v, ttl.as_secs().max(1))
            .map_err(err("SET"))?;
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        let k = self.session_key(key);
        let n: i64 = self.conn.del(k).map_err(err("DEL"))?;
        Ok(n > 0)
    }

    fn list(&mut self, now: i64) -> Result<Vec<super::SessionInfo>, StoreError> {
        let keys = self.session_keys()?;
        let mut list: Vec<_> = self
            .entries(&keys)?
            .into_iter()
            .map(|(_, e, ttl)| super::SessionInfo {
                user: e.user,
                ip: e.ip,
                approved_at: e.approved_at,
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

    fn revoke_user(&mut self, user: &str, _now: i64) -> Result<u64, StoreError> {
        let keys = self.session_keys()?;
        let theirs: Vec<String> = self
            .entries(&keys)?
            .into_iter()
            .filter(|(_, e, _)| e.user == user)
            .map(|(k, _, _)| k)
            .collect();
        self.delete_keys(&theirs)
    }

    fn revoke_all(&mut self, _now: i64) -> Result<u64, StoreError> {
        let keys = self.session_keys()?;
        self.delete_keys(&keys)
    }

    fn try_lock(&mut self, key: &str, ttl: Duration, _now: i64) -> Result<bool, StoreError> {
        let k = self.lock_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let token = super::lock_token();
        let set: Option<String> = redis::cmd("SET")
            .arg(k)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query(&mut self.conn)
            .map_err(err("SET NX"))?;
        if set.is_some() {
            self.held.insert(key.to_string(), token);
        }
        Ok(set.is_some())
    }

    fn unlock(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(token) = self.held.remove(key) else {
            return Ok(());
        };
        let k = self.lock_key(key);
        let _: i64 = redis::cmd("EVAL")
            .arg(UNLOCK_SCRIPT)
            .arg(1)
            .arg(k)
            .arg(token)
            .query(&mut self.conn)
            .map_err(err("EVAL unlock"))?;
        Ok(())
    }

    fn incr(&mut self, key: &str, window: Duration, _now: i64) -> Result<u64, StoreError> {
        let k = self.counter_key(key);
        // In one transaction: create the counter with the window's TTL if it is absent (SET NX
        // EX), then INCR, which keeps the TTL. (Works on Redis before 7.0, which lacks EXPIRE NX.)
        let (_, n): (Option<String>, u64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&k)
            .arg(0)
            .arg("EX")
            .arg(window.as_secs().max(1))
            .arg("NX")
            .incr(&k, 1)
            .query(&mut self.conn)
            .map_err(err("INCR"))?;
        Ok(n)
    }

    fn count(&mut self, key: &str, _now: i64) -> Result<u64, StoreError> {
        let k = self.counter_key(key);
        let n: Option<u64> = self.conn.get(k).map_err(err("GET"))?;
        Ok(n.unwrap_or(0))
    }
}
