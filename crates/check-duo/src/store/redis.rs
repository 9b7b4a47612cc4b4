//! The Redis store: what lets several web servers share sessions. Every command has a deadline.

use std::time::Duration;

use redis::Commands as _;

use super::{Entry, Store, StoreError};

pub struct RedisStore {
    conn: redis::Connection,
    prefix: String,
}

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
        })
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}session:{key}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
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

    fn try_lock(&mut self, key: &str, ttl: Duration, _now: i64) -> Result<bool, StoreError> {
        let k = self.lock_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = redis::cmd("SET")
            .arg(k)
            .arg(std::process::id())
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query(&mut self.conn)
            .map_err(err("SET NX"))?;
        Ok(set.is_some())
    }

    fn unlock(&mut self, key: &str) -> Result<(), StoreError> {
        let k = self.lock_key(key);
        let _: i64 = self.conn.del(k).map_err(err("DEL"))?;
        Ok(())
    }
}
