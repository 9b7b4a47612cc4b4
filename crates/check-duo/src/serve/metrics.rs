//! Prometheus metrics of the daemon: decisions by event and outcome, Duo call latency, store
//! latency, directory (LDAP) call latency, sign-ins waiting for a phone. The store, Duo and the
//! directory are measured by wrapping their ports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use check_duo_core::ports::{
    Directory, DirectoryAnswer, DirectoryCheck, DirectoryError, DuoApi, Entry, LockToken,
    SessionInfo, Store, StoreError,
};
use check_duo_core::Decision;
use duo_auth::types::{AuthRequest, AuthStart, AuthStatus, Preauth};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::readahead::Recent;

/// Labels with static names and values: no allocation on the hot path.
type Labels<const N: usize> = [(&'static str, &'static str); N];

pub struct Metrics {
    registry: Registry,
    decisions: Family<Labels<2>, Counter>,
    duo: Family<Labels<1>, Histogram, fn() -> Histogram>,
    store: Family<Labels<1>, Histogram, fn() -> Histogram>,
    directory: Family<Labels<2>, Histogram, fn() -> Histogram>,
    pub pending: Gauge,
}

fn directory_buckets() -> Histogram {
    // 1 ms .. ~8 s: a bind over TLS, up to `ldap.timeout`.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn duo_buckets() -> Histogram {
    // 5 ms .. ~40 s: a long-polled auth_status lasts until the phone answers.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn store_buckets() -> Histogram {
    // 10 µs .. ~80 ms.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("check_duo");
        let decisions = Family::<Labels<2>, Counter>::default();
        let duo =
            Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(duo_buckets);
        let store =
            Family::<Labels<1>, Histogram, fn() -> Histogram>::new_with_constructor(store_buckets);
        let directory = Family::<Labels<2>, Histogram, fn() -> Histogram>::new_with_constructor(
            directory_buckets,
        );
        let pending = Gauge::default();
        registry.register(
            "decisions",
            "Decisions by event and outcome",
            decisions.clone(),
        );
        registry.register(
            "duo_call_seconds",
            "Duration of Duo Auth API calls by call",
            duo.clone(),
        );
        registry.register(
            "store_seconds",
            "Duration of session store operations by operation",
            store.clone(),
        );
        registry.register(
            "directory_call_seconds",
            "Duration of user directory (LDAP) checks by call and answer",
            directory.clone(),
        );
        registry.register(
            "pending_pushes",
            "Sign-ins waiting for the phone",
            pending.clone(),
        );
        Metrics {
            registry,
            decisions,
            duo,
            store,
            directory,
            pending,
        }
    }

    pub fn decision(&self, d: &Decision) {
        self.decisions
            .get_or_create(&[("event", d.event.as_str()), ("outcome", d.outcome_str())])
            .inc();
    }

    fn duo_call(&self, call: &'static str, took: Duration) {
        self.duo
            .get_or_create(&[("call", call)])
            .observe(took.as_secs_f64());
    }

    fn store_op(&self, op: &'static str, took: Duration) {
        self.store
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
    }

    fn directory_call(
        &self,
        call: &'static str,
        r: &Result<DirectoryCheck, DirectoryError>,
        took: Duration,
    ) {
        let answer = match r {
            Ok(c) => match c.answer {
                DirectoryAnswer::Valid => "valid",
                DirectoryAnswer::UnknownUser => "unknown_user",
                DirectoryAnswer::WrongPassword => "wrong_password",
            },
            Err(_) => "unavailable",
        };
        self.directory
            .get_or_create(&[("call", call), ("answer", answer)])
            .observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The store as the daemon uses it: timed, and (with Redis) forgetting in `recent` every
/// session it writes or ends (see [`super::readahead::Recent`]).
pub struct TimedStore<'m> {
    pub inner: Box<dyn Store>,
    pub metrics: &'m Metrics,
    pub recent: Option<Arc<Recent>>,
}

impl TimedStore<'_> {
    /// Run a write of session `key` (`None`: of many), forgetting it before (no read starts
    /// with the old entry kept) and after (no read under way keeps it).
    fn forgetting<T>(&self, key: Option<&str>, f: impl FnOnce() -> T) -> T {
        let Some(recent) = &self.recent else {
            return f();
        };
        let forget = || match key {
            Some(k) => recent.forget(k),
            None => recent.forget_all(),
        };
        forget();
        let out = f();
        forget();
        out
    }

    fn time<T>(&self, op: &'static str, f: impl FnOnce(&dyn Store) -> T) -> T {
        let t = Instant::now();
        let r = f(&*self.inner);
        self.metrics.store_op(op, t.elapsed());
        r
    }
}

impl Store for TimedStore<'_> {
    fn get(&self, key: &str, now: i64) -> Result<Option<Entry>, StoreError> {
        self.time("get", |s| s.get(key, now))
    }
    fn get_many(&self, keys: &[String], now: i64) -> Result<Vec<Option<Entry>>, StoreError> {
        self.time("get_many", |s| s.get_many(keys, now))
    }
    fn put(&self, key: &str, entry: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.forgetting(Some(key), || {
            self.time("put", |s| s.put(key, entry, ttl, now))
        })
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.forgetting(Some(key), || self.time("delete", |s| s.delete(key)))
    }
    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError> {
        self.time("list", |s| s.list(now))
    }
    fn revoke_user(&self, user: &str, now: i64) -> Result<u64, StoreError> {
        self.forgetting(None, || {
            self.time("revoke_user", |s| s.revoke_user(user, now))
        })
    }
    fn revoke_all(&self, now: i64) -> Result<u64, StoreError> {
        self.forgetting(None, || self.time("revoke_all", |s| s.revoke_all(now)))
    }
    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<LockToken>, StoreError> {
        self.time("try_lock", |s| s.try_lock(key, ttl, now))
    }
    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.time("unlock", |s| s.unlock(key, token))
    }
    fn locked(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        self.time("locked", |s| s.locked(key, now))
    }
    fn incr(&self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError> {
        self.time("incr", |s| s.incr(key, window, now))
    }
    fn incr_sliding(&self, key: &str, ttl: Duration, now: i64) -> Result<u64, StoreError> {
        self.time("incr", |s| s.incr_sliding(key, ttl, now))
    }
    fn set(&self, key: &str, value: u64, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.time("set", |s| s.set(key, value, ttl, now))
    }
    fn decr(&self, key: &str, now: i64) -> Result<(), StoreError> {
        self.time("decr", |s| s.decr(key, now))
    }
    fn count(&self, key: &str, now: i64) -> Result<u64, StoreError> {
        self.time("count", |s| s.count(key, now))
    }
}

/// Duo, timed.
pub struct TimedDuo<'m> {
    pub inner: Box<dyn DuoApi + 'm>,
    pub metrics: &'m Metrics,
}

impl DuoApi for TimedDuo<'_> {
    fn preauth(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<Preauth, duo_auth::Error> {
        let t = Instant::now();
        let r = self.inner.preauth(user, ipaddr, deadline);
        self.metrics.duo_call("preauth", t.elapsed());
        r
    }
    fn auth(&self, req: &AuthRequest, deadline: Instant) -> Result<AuthStart, duo_auth::Error> {
        let t = Instant::now();
        let r = self.inner.auth(req, deadline);
        self.metrics.duo_call("auth", t.elapsed());
        r
    }
    fn auth_status(&self, txid: &str, deadline: Instant) -> Result<AuthStatus, duo_auth::Error> {
        let t = Instant::now();
        let r = self.inner.auth_status(txid, deadline);
        self.metrics.duo_call("auth_status", t.elapsed());
        r
    }
    fn preauth_verified(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        deadline: Instant,
    ) -> Result<(Preauth, Option<String>), duo_auth::Error> {
        let t = Instant::now();
        let r = self.inner.preauth_verified(user, ipaddr, deadline);
        self.metrics.duo_call("preauth", t.elapsed());
        r
    }
    fn auth_verified(
        &self,
        req: &AuthRequest,
        preauth_txid: Option<&str>,
        deadline: Instant,
    ) -> Result<AuthStart, duo_auth::Error> {
        let t = Instant::now();
        let r = self.inner.auth_verified(req, preauth_txid, deadline);
        self.metrics.duo_call("auth", t.elapsed());
        r
    }
}

/// The directory, timed.
pub struct TimedDirectory<'d> {
    pub inner: &'d dyn Directory,
    pub metrics: &'d Metrics,
}

impl Directory for TimedDirectory<'_> {
    fn verify(
        &self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<DirectoryCheck, DirectoryError> {
        let t = Instant::now();
        let r = self.inner.verify(user, password, deadline);
        self.metrics.directory_call("verify", &r, t.elapsed());
        r
    }
    fn lookup(&self, user: &str, deadline: Instant) -> Result<DirectoryCheck, DirectoryError> {
        let t = Instant::now();
        let r = self.inner.lookup(user, deadline);
        self.metrics.directory_call("lookup", &r, t.elapsed());
        r
    }
}
