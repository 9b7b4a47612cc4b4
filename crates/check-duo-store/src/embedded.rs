//! The embedded store: one SQLite file shared by the processes of one machine.
//!
//! **WAL, kept across processes.** The file is in SQLite's write-ahead-log mode, which is
//! recorded in the file itself (set once, by [`EmbeddedStore::init`] at install time or by the
//! first write of this version): readers never wait for a writer, so a process that is stopped
//! (`SIGSTOP`, which anybody who started it can send) or slow inside its transaction delays
//! other writers at most, never a cached session. In the rollback journal this store used
//! before, a writer stopped inside its commit held an exclusive lock that made every read fail
//! with "database is locked".
//!
//! WAL used to be avoided because the last connection to close checkpoints and deletes the
//! `-wal`/`-shm` files, which the next process (each request is one) then recreates. Here no
//! connection checkpoints on close (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`), so the files stay; a
//! writer checkpoints and empties the log after its own transaction instead, when nobody is in
//! the way (it never waits for that, and never syncs while holding the write lock: commits do
//! not sync in WAL mode with `synchronous = NORMAL`, the checkpoint after them does).
//!
//! **The warm path is one read-only connection and one `SELECT`**: no schema statement, no
//! pragma, nothing written, not even the `-shm` index (`readonly_shm`): when no other process
//! has the store open, SQLite reads the (emptied) log directly instead of rebuilding the shared
//! index, which a read-write connection would do in every process, at about the cost of the
//! read itself. A read that the read-only connection cannot do (a file of the previous version
//! with a journal to roll back, missing `-wal`/`-shm` files) is done again read-write. The first
//! write of a process closes the read-only connection and opens a read-write one, which then
//! serves the process's reads too.
//!
//! **The schema** (tables, expiry indexes) is created by the first write of a process when the
//! file's `user_version` says it is missing (`IF NOT EXISTS`, so older files gain the indexes,
//! and version 1 files the `factor` column); a file without tables reads as empty. Until then a
//! version 1 file is read as it is (no factor recorded), without a write; version 1 binaries
//! read and write version 2 files too (the column has a default).
//!
//! **Expired rows** are swept inside a write, at most once per [`SWEEP_EVERY`] seconds for the
//! whole store (the time of the last sweep is kept in the file), through an index on
//! `expires_at` per table. Reads ignore expired rows anyway.
//!
//! Who may own the file, and who may create it: [`crate::embedded_file`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{Entry, LockToken, SessionInfo, Store, StoreError};
use crate::embedded_file;

/// The connection of a process, shared by its threads behind a mutex (SQLite serialises writers
/// anyway): read-only until the first write, read-write from then on.
pub struct EmbeddedStore {
    inner: Mutex<Inner>,
    path: PathBuf,
    timeout: Duration,
}

enum Inner {
    ReadOnly(Connection),
    /// Set up (schema, write settings).
    ReadWrite(Connection),
    /// Between the two (an open that failed).
    Closed,
}

const BACKEND: &str = "embedded store";

/// What [`setup`] puts in place; kept in the file's `user_version`. 2: `sessions.factor`.
const SCHEMA_VERSION: i64 = 2;

/// Seconds between two sweeps of expired rows.
pub const SWEEP_EVERY: i64 = 60;

/// Every connection parses the whole schema on its first statement (the warm path's too):
/// keep it to these six objects. The tables are those of older files.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS sessions (
        key TEXT PRIMARY KEY, user TEXT NOT NULL, approved_at INTEGER NOT NULL,
        tag TEXT NOT NULL, ip TEXT NOT NULL, last_seen INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER NOT NULL, factor TEXT NOT NULL DEFAULT '');
    CREATE TABLE IF NOT EXISTS locks (
        key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS counters (
        key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
    CREATE INDEX IF NOT EXISTS locks_expires_at ON locks (expires_at);
    CREATE INDEX IF NOT EXISTS counters_expires_at ON counters (expires_at);";

/// The counter that holds the time of the last sweep (no key of the core's has this prefix);
/// it never expires.
const SWEPT_AT: &str = "check-duo-store:swept_at";

fn err(what: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::new(BACKEND, what, e)
}

/// A file whose schema no write has created yet (the package creates it empty): nothing in it.
fn no_table(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.code == ErrorCode::Unknown && msg.starts_with("no such table"))
}

impl EmbeddedStore {
    /// Open the store for one process: check the file (creating it when absent and this
    /// process may, see [`crate::embedded_file`]) and connect read-only. Nothing is written.
    pub fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        embedded_file::prepare(path)?;
        let conn = open_read_only(path, timeout)?;
        Ok(EmbeddedStore {
            inner: Mutex::new(Inner::ReadOnly(conn)),
            path: path.to_path_buf(),
            timeout,
        })
    }

    /// What an install step (`check-duo store init`, run as root) calls: create the file when
    /// absent (`0660`; its group is the directory's when that is setgid), check it, and put
    /// the WAL mode and the schema in place, so that the first request finds them. Idempotent.
    pub fn init(path: &Path, timeout: Duration) -> Result<(), StoreError> {
        embedded_file::prepare(path)?;
        let conn = open_read_write(path, timeout)?;
        checkpoint(&conn, timeout);
        Ok(())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite half-written: take it anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read; a file without the schema yet reads as `empty`.
    fn read<T>(
        &self,
        what: &str,
        empty: T,
        f: impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut inner = self.inner();
        let out = match &*inner {
            Inner::ReadWrite(c) => f(c),
            // What only a read-write connection can do: read again with one.
            Inner::ReadOnly(c) => match f(c) {
                Err(e) if needs_read_write(&e) => f(self.read_write(&mut inner)?),
                r => r,
            },
            Inner::Closed => f(self.read_write(&mut inner)?),
        };
        match out {
            Err(e) if no_table(&e) => Ok(empty),
            r => r.map_err(err(what)),
        }
    }

    /// This process's read-write connection, opened (and set up) the first time, after the
    /// read-only one is closed: a process shares SQLite's `-shm` mapping between its
    /// connections, and the read-only one's cannot be written.
    fn read_write<'a>(&self, inner: &'a mut Inner) -> Result<&'a Connection, StoreError> {
        if !matches!(inner, Inner::ReadWrite(_)) {
            *inner = Inner::Closed;
            *inner = Inner::ReadWrite(open_read_write(&self.path, self.timeout)?);
        }
        match inner {
            Inner::ReadWrite(c) => Ok(c),
            _ => Err(StoreError::new(BACKEND, "open", "no read-write connection")),
        }
    }

    /// One write transaction, taken at once (`BEGIN IMMEDIATE`, so that it waits for other
    /// writers through the busy timeout instead of failing on a stale snapshot), with a sweep
    /// first when `now` is given and one is due.
    fn write<T>(
        &self,
        what: &str,
        now: Option<i64>,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut inner = self.inner();
        let conn = self.read_write(&mut inner)?;
        let tx =
            Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(err(what))?;
        if let Some(now) = now {
            sweep_if_due(&tx, now).map_err(err("sweep"))?;
        }
        let out = f(&tx).map_err(err(what))?;
        tx.commit().map_err(err(what))?;
        checkpoint(conn, self.timeout);
        Ok(out)
    }
}

/// The warm path's connection: read-only, with a read-only view of the `-shm` index.
fn open_read_only(path: &Path, timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        uri(path, "readonly_shm=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::new(BACKEND, path.display().to_string(), e))?;
    conn.busy_timeout(timeout).map_err(err("busy_timeout"))?;
    Ok(conn)
}

/// A connection for writes: WAL mode, the schema and the write settings in place.
fn open_read_write(path: &Path, timeout: Duration) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::new(BACKEND, path.display().to_string(), e))?;
    conn.busy_timeout(timeout).map_err(err("busy_timeout"))?;
    // Leave -wal and -shm in place when this process is the last one to close.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(err("db_config"))?;
    setup(&mut conn, timeout)?;
    Ok(conn)
}

/// `file:` URI of `path` with `query`: every byte but unreserved ones and `/` percent-encoded.
fn uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut u = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            u.push(char::from(b));
        } else {
            u.push_str(&format!("%{b:02X}"));
        }
    }
    u.push('?');
    u.push_str(query);
    u
}

/// An error of the read-only connection that a read-write one does not have: a journal of the
/// rollback mode to roll back, a missing `-shm` file, a `-shm` index to rebuild.
fn needs_read_write(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::ReadOnly | ErrorCode::CannotOpen))
}

/// The warm path's read, and the same for a version 1 file.
const GET: &str = "SELECT user, approved_at, tag, ip, last_seen, factor FROM sessions
    WHERE key = ?1 AND expires_at > ?2";
const GET_V1: &str = "SELECT user, approved_at, tag, ip, last_seen, '' FROM sessions
    WHERE key = ?1 AND expires_at > ?2";

/// A file of schema version 1, which has no `sessions.factor` yet (no write has set it up).
fn without_factor(e: &rusqlite::Error) -> bool {
    let msg = match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        _ => return false,
    };
    msg.starts_with("no such column: factor")
}

/// The WAL mode, the schema and this connection's write settings; the first write of a
/// process (and [`EmbeddedStore::init`]) runs it.
fn setup(conn: &mut Connection, timeout: Duration) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err("schema"))?;
    if version < SCHEMA_VERSION {
        // Recorded in the file: every later connection, of any process, is in WAL mode.
        switch_to_wal(conn, timeout)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("schema"))?;
        tx.execute_batch(SCHEMA).map_err(err("schema"))?;
        // A version 1 table (`CREATE TABLE IF NOT EXISTS` left it as it was).
        let has_factor: bool = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'factor'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(err("schema"))?;
        if !has_factor {
            tx.execute_batch("ALTER TABLE sessions ADD COLUMN factor TEXT NOT NULL DEFAULT ''")
                .map_err(err("schema"))?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err("schema"))?;
        tx.commit().map_err(err("schema"))?;
    }
    // In WAL mode, NORMAL syncs at checkpoints, not at every commit: a power cut may lose the
    // last approvals (asked again), never the file's consistency.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err("synchronous"))?;
    Ok(())
}

/// `PRAGMA journal_mode = WAL`, which needs the file to itself and answers "busy" at once,
/// without SQLite's busy handler, while another process uses it (say, the first writers of a
/// new store racing to set it up): asked again until `timeout`.
fn switch_to_wal(conn: &Connection, timeout: Duration) -> Result<(), StoreError> {
    let give_up = std::time::Instant::now() + timeout;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(err("journal_mode")(e)),
        }
    }
}

/// After a write: copy the log into the file, then empty it, so that the next process that
/// opens the store alone has nothing to read back from it. Neither step waits for anybody:
/// the copy (which syncs) runs beside other writers (`PASSIVE`); emptying the log needs the
/// write lock for a moment, and is left for a later write when another writer holds it or a
/// reader still uses the log. A failure is no error of the write, which is committed already.
fn checkpoint(conn: &Connection, timeout: Duration) {
    let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        let (busy, log, done): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        Ok(busy == 0 && log == done)
    });
    if copied == Ok(true) && conn.busy_timeout(Duration::ZERO).is_ok() {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = conn.busy_timeout(timeout);
    }
}

/// Remove expired rows, at most once per [`SWEEP_EVERY`] seconds for the whole store; true
/// when it did.
fn sweep_if_due(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<bool> {
    let last: Option<i64> = tx
        .query_row(
            "SELECT count FROM counters WHERE key = ?1",
            params![SWEPT_AT],
            |r| r.get(0),
        )
        .optional()?;
    // A clock set back by more than the interval sweeps too.
    if last.is_some_and(|t| (0..SWEEP_EVERY).contains(&(now - t))) {
        return Ok(false);
    }
    for table in ["sessions", "locks", "counters"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE expires_at <= ?1"),
            params![now],
        )?;
    }
    tx.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires_at) VALUES (?1, ?2, ?3)",
        params![SWEPT_AT, now, i64::MAX],
    )?;
    Ok(true)
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2)
}

impl Store for EmbeddedStore {
    fn get(&self, key: &str, now: i64) -> Result<Option<Entry>, StoreError> {
        self.read("read", None, |c| {
            // Cached: a long-running process reads sessions all day, and parsing the statement
            // costs as much as running it.
            let query = |sql: &str| {
                c.prepare_cached(sql)?
                    .query_row(params![key, now], |r| {
                        Ok(Entry {
                            user: r.get(0)?,
                            approved_at: r.get(1)?,
                            tag: r.get(2)?,
                            ip: r.get(3)?,
                            last_seen: r.get(4)?,
                            factor: r.get(5)?,
                        })
                    })
                    .optional()
            };
            match query(GET) {
                Err(e) if without_factor(&e) => query(GET_V1),
                r => r,
            }
        })
    }

    fn put(&self, key: &str, e: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.write("write", Some(now), |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO sessions
                     (key, user, approved_at, tag, ip, last_seen, expires_at, factor)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key,
                    e.user,
                    e.approved_at,
                    e.tag,
                    e.ip,
                    e.last_seen,
                    now.saturating_add(ttl_secs(ttl)),
                    e.factor
                ],
            )
            .map(drop)
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let n = self.write("delete", None, |tx| {
            tx.execute("DELETE FROM sessions WHERE key = ?1", params![key])
        })?;
        Ok(n > 0)
    }

    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError> {
        self.read("list", Vec::new(), |c| {
            let select = |factor: &str| {
                c.prepare(&format!(
                    "SELECT user, ip, approved_at, expires_at, {factor} FROM sessions
                     WHERE expires_at > ?1 ORDER BY user, approved_at"
                ))
            };
            let mut stmt = match select("factor") {
                Err(e) if without_factor(&e) => select("''")?,
                r => r?,
            };
            let rows = stmt.query_map(params![now], |r| {
                Ok(SessionInfo {
                    user: r.get(0)?,
                    ip: r.get(1)?,
                    approved_at: r.get(2)?,
                    expires_at: r.get(3)?,
                    factor: r.get(4)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
    }

    fn revoke_user(&self, user: &str, now: i64) -> Result<u64, StoreError> {
        let n = self.write("revoke", Some(now), |tx| {
            tx.execute(
                "DELETE FROM sessions WHERE user = ?1 AND expires_at > ?2",
                params![user, now],
            )
        })?;
        Ok(n as u64)
    }

    fn revoke_all(&self, now: i64) -> Result<u64, StoreError> {
        let n = self.write("revoke", Some(now), |tx| {
            tx.execute("DELETE FROM sessions WHERE expires_at > ?1", params![now])
        })?;
        Ok(n as u64)
    }

    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<LockToken>, StoreError> {
        let token = super::lock_token();
        let n = self.write("lock", Some(now), |tx| {
            tx.execute(
                "DELETE FROM locks WHERE key = ?1 AND expires_at <= ?2",
                params![key, now],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO locks (key, token, expires_at) VALUES (?1, ?2, ?3)",
                params![key, token.0, now.saturating_add(ttl_secs(ttl))],
            )
        })?;
        Ok((n == 1).then_some(token))
    }

    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.write("unlock", None, |tx| {
            tx.execute(
                "DELETE FROM locks WHERE key = ?1 AND token = ?2",
                params![key, token.0],
            )
            .map(drop)
        })
    }

    fn locked(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        let n: Option<i64> = self.read("lock", None, |c| {
            c.query_row(
                "SELECT 1 FROM locks WHERE key = ?1 AND expires_at > ?2",
                params![key, now],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(n.is_some())
    }

    fn incr(&self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError> {
        // One statement: a counter whose window has ended starts again at 1.
        let n: i64 = self.write("counter", Some(now), |tx| {
            tx.query_row(
                "INSERT INTO counters (key, count, expires_at) VALUES (?1, 1, ?2)
                 ON CONFLICT(key) DO UPDATE SET
                     count = CASE WHEN expires_at <= ?3 THEN 1 ELSE count + 1 END,
                     expires_at = CASE WHEN expires_at <= ?3 THEN ?2 ELSE expires_at END
                 RETURNING count",
                params![key, now.saturating_add(ttl_secs(window)), now],
                |r| r.get(0),
            )
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn incr_sliding(&self, key: &str, ttl: Duration, now: i64) -> Result<u64, StoreError> {
        // Like `incr`, but every increment moves the end of the window.
        let n: i64 = self.write("counter", Some(now), |tx| {
            tx.query_row(
                "INSERT INTO counters (key, count, expires_at) VALUES (?1, 1, ?2)
                 ON CONFLICT(key) DO UPDATE SET
                     count = CASE WHEN expires_at <= ?3 THEN 1 ELSE count + 1 END,
                     expires_at = ?2
                 RETURNING count",
                params![key, now.saturating_add(ttl_secs(ttl)), now],
                |r| r.get(0),
            )
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set(&self, key: &str, value: u64, ttl: Duration, now: i64) -> Result<(), StoreError> {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.write("counter", Some(now), |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO counters (key, count, expires_at) VALUES (?1, ?2, ?3)",
                params![key, value, now.saturating_add(ttl_secs(ttl))],
            )
            .map(drop)
        })
    }

    fn decr(&self, key: &str, now: i64) -> Result<(), StoreError> {
        self.write("counter", None, |tx| {
            tx.execute(
                "UPDATE counters SET count = count - 1
                 WHERE key = ?1 AND expires_at > ?2 AND count > 0",
                params![key, now],
            )
            .map(drop)
        })
    }

    fn count(&self, key: &str, now: i64) -> Result<u64, StoreError> {
        let n: Option<i64> = self.read("counter", None, |c| {
            c.query_row(
                "SELECT count FROM counters WHERE key = ?1 AND expires_at > ?2",
                params![key, now],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Instant;

    const T: Duration = Duration::from_secs(2);
    const HOUR: Duration = Duration::from_secs(3600);

    fn entry(user: &str, at: i64) -> Entry {
        Entry {
            user: user.into(),
            approved_at: at,
            tag: "tag".into(),
            ip: "192.0.2.1".into(),
            last_seen: at,
            factor: "push".into(),
        }
    }

    fn store() -> (tempfile::TempDir, PathBuf, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let s = EmbeddedStore::open(&path, T).unwrap();
        (dir, path, s)
    }

    /// A connection of the test's own, outside the store.
    fn raw(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .unwrap();
        c
    }

    fn rows(path: &Path, table: &str) -> i64 {
        raw(path)
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn journal_mode(path: &Path) -> String {
        raw(path)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_store_contract() {
        let (_d, _p, s) = store();
        assert_eq!(s.get("k", 1000).unwrap(), None);
        s.put("k", &entry("alice", 1000), Duration::from_secs(10), 1000)
            .unwrap();
        assert_eq!(s.get("k", 1009).unwrap(), Some(entry("alice", 1000)));
        assert_eq!(s.get("k", 1010).unwrap(), None, "expired");
        s.put("j", &entry("bob", 1000), HOUR, 1000).unwrap();
        let listed = s.list(1001).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(s.revoke_user("alice", 1001).unwrap(), 1);
        assert!(s.delete("j").unwrap());
        assert!(!s.delete("j").unwrap());
        s.put("j", &entry("bob", 1000), HOUR, 1000).unwrap();
        assert_eq!(s.revoke_all(1001).unwrap(), 1);

        let t = s
            .try_lock("l", Duration::from_secs(5), 1000)
            .unwrap()
            .unwrap();
        assert!(s
            .try_lock("l", Duration::from_secs(5), 1001)
            .unwrap()
            .is_none());
        assert!(s.locked("l", 1001).unwrap());
        s.unlock("l", &LockToken("other".into())).unwrap();
        assert!(s.locked("l", 1001).unwrap(), "only the holder unlocks");
        s.unlock("l", &t).unwrap();
        assert!(!s.locked("l", 1001).unwrap());
        let t = s
            .try_lock("l", Duration::from_secs(5), 1000)
            .unwrap()
            .unwrap();
        assert!(
            s.try_lock("l", Duration::from_secs(5), 1005)
                .unwrap()
                .is_some(),
            "expired"
        );
        s.unlock("l", &t).unwrap();

        let w = Duration::from_secs(60);
        assert_eq!(s.incr("c", w, 1000).unwrap(), 1);
        assert_eq!(s.incr("c", w, 1059).unwrap(), 2);
        assert_eq!(s.incr("c", w, 1060).unwrap(), 1, "a new window");
        s.decr("c", 1061).unwrap();
        s.decr("c", 1061).unwrap();
        assert_eq!(s.count("c", 1061).unwrap(), 0);
        assert_eq!(s.incr_sliding("s", w, 1000).unwrap(), 1);
        assert_eq!(s.incr_sliding("s", w, 1050).unwrap(), 2);
        assert_eq!(s.count("s", 1100).unwrap(), 2, "the window slid");
        assert_eq!(s.count("s", 1110).unwrap(), 0);
        s.set("v", 7, w, 1000).unwrap();
        assert_eq!(s.count("v", 1059).unwrap(), 7);
        assert_eq!(s.count("v", 1060).unwrap(), 0);
    }

    /// The package creates the file empty: it reads as a store without sessions, and the first
    /// write puts the schema and the WAL mode in place.
    #[test]
    fn an_empty_file_reads_as_empty_and_the_first_write_sets_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let s = EmbeddedStore::open(&path, T).unwrap();
        assert_eq!(s.get("k", 1000).unwrap(), None);
        assert_eq!(s.list(1000).unwrap(), vec![]);
        assert_eq!(s.count("c", 1000).unwrap(), 0);
        assert!(!s.locked("l", 1000).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "a read wrote");
        s.put("k", &entry("alice", 1000), HOUR, 1000).unwrap();
        assert_eq!(s.get("k", 1000).unwrap(), Some(entry("alice", 1000)));
        drop(s);
        assert_eq!(journal_mode(&path), "wal");
    }

    /// A file of the first version (rollback journal, no index, no user_version, no factor):
    /// read as it is, without a write; the first write converts it, and its sessions stay.
    #[test]
    fn an_older_file_keeps_working_and_gains_wal_and_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE sessions (
                     key TEXT PRIMARY KEY, user TEXT NOT NULL, approved_at INTEGER NOT NULL,
                     tag TEXT NOT NULL, ip TEXT NOT NULL, last_seen INTEGER NOT NULL DEFAULT 0,
                     expires_at INTEGER NOT NULL);
                 CREATE TABLE locks (
                     key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at INTEGER NOT NULL);
                 CREATE TABLE counters (
                     key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at INTEGER NOT NULL);
                 INSERT INTO sessions VALUES ('old', 'carol', 1000, 'tag', '192.0.2.1', 1000, 5000);",
            )
            .unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let unrecorded = Entry {
            factor: String::new(),
            ..entry("carol", 1000)
        };
        let s = EmbeddedStore::open(&path, T).unwrap();
        assert_eq!(s.get("old", 1001).unwrap(), Some(unrecorded.clone()));
        assert_eq!(s.list(1001).unwrap()[0].factor, "");
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), before, "the warm path wrote");
        assert_eq!(journal_mode(&path), "delete");

        let s = EmbeddedStore::open(&path, T).unwrap();
        s.incr("c", HOUR, 1001).unwrap();
        assert_eq!(s.get("old", 1001).unwrap(), Some(unrecorded));
        s.put("new", &entry("dave", 1001), HOUR, 1001).unwrap();
        assert_eq!(s.get("new", 1001).unwrap(), Some(entry("dave", 1001)));
        drop(s);
        assert_eq!(journal_mode(&path), "wal");
        let indexes: i64 = raw(&path)
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE '%_expires_at'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 3);
    }

    /// The finding: a writer stopped inside its transaction (here: the test holds one open, as
    /// a SIGSTOPped process would) must not stop readers. Writers wait, then fail.
    #[test]
    fn readers_do_not_wait_for_a_stalled_writer() {
        let (_d, path, s) = store();
        s.put("k", &entry("alice", 1000), HOUR, 1000).unwrap();
        drop(s);
        let holder = raw(&path);
        holder
            .execute_batch(
                "BEGIN EXCLUSIVE;
                 INSERT INTO counters (key, count, expires_at) VALUES ('stalled', 1, 9999);",
            )
            .unwrap();

        let started = Instant::now();
        let s = EmbeddedStore::open(&path, Duration::from_millis(300)).unwrap();
        assert_eq!(s.get("k", 1001).unwrap(), Some(entry("alice", 1000)));
        assert_eq!(s.count("stalled", 1001).unwrap(), 0, "uncommitted");
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "the read waited {:?}",
            started.elapsed()
        );
        let e = s.incr("c", HOUR, 1001).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");

        holder.execute_batch("COMMIT").unwrap();
        assert_eq!(s.incr("c", HOUR, 1001).unwrap(), 1);
        assert_eq!(s.count("stalled", 1001).unwrap(), 1);
    }

    /// No process checkpoints on close, so the -wal/-shm files are never deleted and recreated;
    /// a write empties the log when nobody is in its way.
    #[test]
    fn the_log_files_stay_and_a_write_empties_the_log() {
        let (_d, path, s) = store();
        s.put("k", &entry("alice", 1000), HOUR, 1000).unwrap();
        let wal = path.with_extension("db-wal");
        let shm = path.with_extension("db-shm");
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "log not emptied");
        drop(s);
        for _ in 0..3 {
            let s = EmbeddedStore::open(&path, T).unwrap();
            assert!(s.get("k", 1001).unwrap().is_some());
        }
        assert!(wal.exists() && shm.exists());
        // They get the store file's mode (SQLite copies it), so the group can use them.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&wal), mode(&shm)), (0o660, 0o660));
    }

    /// The warm path: a read-only connection that writes nothing, not even the -shm index
    /// (which a read-write connection alone on the file truncates and rebuilds).
    #[test]
    fn a_warm_read_writes_nothing() {
        let (_d, path, s) = store();
        s.put("k", &entry("alice", 1000), HOUR, 1000).unwrap();
        drop(s);
        let files = [
            path.clone(),
            path.with_extension("db-wal"),
            path.with_extension("db-shm"),
        ];
        let snapshot = || {
            files
                .iter()
                .map(|f| {
                    let m = std::fs::metadata(f).unwrap();
                    (std::fs::read(f).unwrap(), m.modified().unwrap())
                })
                .collect::<Vec<_>>()
        };
        let before = snapshot();
        std::thread::sleep(Duration::from_millis(20));
        let s = EmbeddedStore::open(&path, T).unwrap();
        assert!(s.get("k", 1001).unwrap().is_some());
        assert_eq!(s.count("c", 1001).unwrap(), 0);
        drop(s);
        assert!(snapshot() == before, "a read changed a file");
    }

    /// What the read-only connection cannot do, a read-write one does: here, recreate the
    /// -wal and -shm files somebody deleted.
    #[test]
    fn a_read_the_read_only_connection_cannot_do_is_done_read_write() {
        let (_d, path, s) = store();
        s.put("k", &entry("alice", 1000), HOUR, 1000).unwrap();
        drop(s);
        std::fs::remove_file(path.with_extension("db-wal")).unwrap();
        std::fs::remove_file(path.with_extension("db-shm")).unwrap();
        let s = EmbeddedStore::open(&path, T).unwrap();
        assert_eq!(s.get("k", 1001).unwrap(), Some(entry("alice", 1000)));
    }

    #[test]
    fn expired_rows_are_swept_at_most_once_per_interval() {
        let (_d, path, s) = store();
        let sec = Duration::from_secs(1);
        // The first write sweeps (none was recorded) and records the time.
        s.put("a", &entry("alice", 1000), sec, 1000).unwrap();
        s.try_lock("l", sec, 1000).unwrap();
        s.incr("c", sec, 1000).unwrap();
        // Expired, but not swept before the interval is over (reads ignore them).
        s.put("b", &entry("bob", 1002), HOUR, 1002).unwrap();
        assert_eq!(s.get("a", 1002).unwrap(), None);
        assert_eq!(rows(&path, "sessions"), 2);
        s.incr("d", HOUR, 1000 + SWEEP_EVERY - 1).unwrap();
        assert_eq!(rows(&path, "sessions"), 2);
        // Once it is over, any write sweeps the three tables.
        s.incr("d", HOUR, 1000 + SWEEP_EVERY).unwrap();
        assert_eq!(rows(&path, "sessions"), 1);
        assert_eq!(rows(&path, "locks"), 0);
        // `d` and the sweep's own record stay.
        assert_eq!(rows(&path, "counters"), 2);
        // A clock set back sweeps too.
        s.put("e", &entry("erin", 500), sec, 500).unwrap();
        assert_eq!(rows(&path, "sessions"), 2);
        s.put("f", &entry("frank", 530), HOUR, 530).unwrap();
        assert_eq!(s.get("e", 530).unwrap(), None);
        assert_eq!(rows(&path, "sessions"), 3, "swept at 500, not again at 530");
    }

    #[test]
    fn the_sweep_uses_the_expiry_indexes() {
        let (_d, path, s) = store();
        s.put("a", &entry("alice", 1000), HOUR, 1000).unwrap();
        let c = raw(&path);
        for table in ["sessions", "locks", "counters"] {
            let plan: Vec<String> = c
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN DELETE FROM {table} WHERE expires_at <= 1"
                ))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join(" / ");
            assert!(
                plan.contains(&format!("INDEX {table}_expires_at")),
                "{table}: {plan}"
            );
        }
    }

    #[test]
    fn init_makes_a_ready_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        EmbeddedStore::init(&path, T).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        assert_eq!(journal_mode(&path), "wal");
        let v: i64 = raw(&path)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // Idempotent.
        EmbeddedStore::init(&path, T).unwrap();
    }

    #[test]
    fn a_store_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = EmbeddedStore::open(&path, T).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("embedded store {}:", path.display())),
            "{e}"
        );
        assert!(e.contains("mode 0644") && e.contains("chmod 0660"), "{e}");
    }

    /// The expiry sweep at a million sessions, a thousand of them expired (a minute's worth on
    /// a busy site), then with nothing to sweep: the full scan it replaced against the index. `cargo test --release -p check-duo-store -- --ignored
    /// --nocapture sweep_bench`
    #[test]
    #[ignore = "a benchmark"]
    fn sweep_bench() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        EmbeddedStore::init(&path, T).unwrap();
        let n = 1_000_000;
        let fill = |c: &mut Connection| {
            let tx = c.transaction().unwrap();
            {
                let mut ins = tx
                    .prepare(
                        "INSERT OR REPLACE INTO sessions VALUES (?1, 'alice', 0, 'tag', '', 0, ?2)",
                    )
                    .unwrap();
                for i in 0..n {
                    // One in a thousand expires at 1000, the others an hour later.
                    let exp = if i % 1000 == 0 { 1000 } else { 4600 };
                    ins.execute(params![format!("{i:064x}"), exp]).unwrap();
                }
            }
            tx.commit().unwrap();
        };
        let mut c = raw(&path);
        let time = |c: &Connection, sql: &str| {
            let t = Instant::now();
            let n = c.execute(sql, params![1000]).unwrap();
            (t.elapsed(), n)
        };
        fill(&mut c);
        let (indexed, swept) = time(&c, "DELETE FROM sessions WHERE expires_at <= ?1");
        let (indexed_none, _) = time(&c, "DELETE FROM sessions WHERE expires_at <= ?1");
        fill(&mut c);
        let (scan, swept2) = time(
            &c,
            "DELETE FROM sessions NOT INDEXED WHERE expires_at <= ?1",
        );
        let (scan_none, _) = time(
            &c,
            "DELETE FROM sessions NOT INDEXED WHERE expires_at <= ?1",
        );
        assert_eq!((swept, swept2), (n / 1000, n / 1000));
        println!(
            "{n} sessions, {} expired: full scan {scan:?} (nothing left to sweep: {scan_none:?}); \
             index {indexed:?} (nothing left to sweep: {indexed_none:?})",
            n / 1000
        );
    }
}
