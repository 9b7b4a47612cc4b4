//! The embedded store: one SQLite file shared by the processes of one machine.
//!
//! It keeps SQLite's default rollback journal rather than WAL: nearly every request only reads,
//! and with WAL the last process to close would checkpoint and delete the `-wal`/`-shm` files,
//! which the next process then recreates — several times the cost of the read itself. Writes
//! (one per approval) wait for readers through the busy timeout.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{Entry, Store, StoreError};

pub struct EmbeddedStore {
    conn: Connection,
    /// Tokens of the locks this process holds.
    held: HashMap<String, String>,
}

fn err(what: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("embedded store {what}: {e}"))
}

impl EmbeddedStore {
    pub fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError(format!("embedded store {}: {e}", path.display())))?;
        conn.busy_timeout(timeout).map_err(err("busy_timeout"))?;
        // The schema statement is a no-op once the tables exist.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                 key TEXT PRIMARY KEY, user TEXT NOT NULL, approved_at INTEGER NOT NULL,
                 tag TEXT NOT NULL, ip TEXT NOT NULL, last_seen INTEGER NOT NULL DEFAULT 0,
                 expires_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS locks (
                 key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counters (
                 key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at INTEGER NOT NULL);",
        )
        .map_err(err("schema"))?;
        Ok(EmbeddedStore {
            conn,
            held: HashMap::new(),
        })
    }

    /// Remove expired rows (done on every write; reads ignore them anyway).
    fn sweep(&self, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])
            .map_err(err("sweep"))?;
        self.conn
            .execute("DELETE FROM locks WHERE expires_at <= ?1", params![now])
            .map_err(err("sweep"))?;
        self.conn
            .execute("DELETE FROM counters WHERE expires_at <= ?1", params![now])
            .map_err(err("sweep"))?;
        Ok(())
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2)
}

impl Store for EmbeddedStore {
    fn get(&mut self, key: &str, now: i64) -> Result<Option<Entry>, StoreError> {
        self.conn
            .query_row(
                "SELECT user, approved_at, tag, ip, last_seen FROM sessions
                 WHERE key = ?1 AND expires_at > ?2",
                params![key, now],
                |r| {
                    Ok(Entry {
                        user: r.get(0)?,
                        approved_at: r.get(1)?,
                        tag: r.get(2)?,
                        ip: r.get(3)?,
                        last_seen: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(err("read"))
    }

    fn put(&mut self, key: &str, e: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.sweep(now)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO sessions
                 (key, user, approved_at, tag, ip, last_seen, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key,
                    e.user,
                    e.approved_at,
                    e.tag,
                    e.ip,
                    e.last_seen,
                    now.saturating_add(ttl_secs(ttl))
                ],
            )
            .map_err(err("write"))?;
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM sessions WHERE key = ?1", params![key])
            .map_err(err("delete"))?;
        Ok(n > 0)
    }

    fn list(&mut self, now: i64) -> Result<Vec<super::SessionInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT user, ip, approved_at, expires_at FROM sessions WHERE expires_at > ?1
                 ORDER BY user, approved_at",
            )
            .map_err(err("list"))?;
        let rows = stmt
            .query_map(params![now], |r| {
                Ok(super::SessionInfo {
                    user: r.get(0)?,
                    ip: r.get(1)?,
                    approved_at: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            })
            .map_err(err("list"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err("list"))
    }

    fn revoke_user(&mut self, user: &str, now: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM sessions WHERE user = ?1 AND expires_at > ?2",
                params![user, now],
            )
            .map_err(err("revoke"))?;
        self.sweep(now)?;
        Ok(n as u64)
    }

    fn revoke_all(&mut self, now: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM sessions WHERE expires_at > ?1", params![now])
            .map_err(err("revoke"))?;
        self.sweep(now)?;
        Ok(n as u64)
    }

    fn try_lock(&mut self, key: &str, ttl: Duration, now: i64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM locks WHERE key = ?1 AND expires_at <= ?2",
                params![key, now],
            )
            .map_err(err("lock"))?;
        let token = super::lock_token();
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO locks (key, token, expires_at) VALUES (?1, ?2, ?3)",
                params![key, token, now.saturating_add(ttl_secs(ttl))],
            )
            .map_err(err("lock"))?;
        if n == 1 {
            self.held.insert(key.to_string(), token);
        }
        Ok(n == 1)
    }

    fn unlock(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(token) = self.held.remove(key) else {
            return Ok(());
        };
        self.conn
            .execute(
                "DELETE FROM locks WHERE key = ?1 AND token = ?2",
                params![key, token],
            )
            .map_err(err("unlock"))?;
        Ok(())
    }

    fn incr(&mut self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError> {
        // One statement: a counter whose window has ended starts again at 1.
        let n: i64 = self
            .conn
            .query_row(
                "INSERT INTO counters (key, count, expires_at) VALUES (?1, 1, ?2)
                 ON CONFLICT(key) DO UPDATE SET
                     count = CASE WHEN expires_at <= ?3 THEN 1 ELSE count + 1 END,
                     expires_at = CASE WHEN expires_at <= ?3 THEN ?2 ELSE expires_at END
                 RETURNING count",
                params![key, now.saturating_add(ttl_secs(window)), now],
                |r| r.get(0),
            )
            .map_err(err("counter"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn count(&mut self, key: &str, now: i64) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT count FROM counters WHERE key = ?1 AND expires_at > ?2",
                params![key, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("counter"))?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}
