//! Session reads ahead of the decision. The authorization endpoints read the session ids a
//! request needs first, then the (synchronous) core decides over [`Prefetched`], which answers
//! those reads from memory.
//!
//! For a store across the network (Redis): a round trip on the runtime's threads would hold one
//! of them for its length (or hand it over, which costs as much). Instead the ids go to a few
//! reader threads, which take every read waiting at that moment as one `MGET`, and the request
//! awaits the answer. Under load the batches grow by themselves: one round trip serves every
//! request that arrived during the previous one. The embedded store is read in place (a few
//! microseconds of SQLite).
//!
//! A session found is kept for `server.session_cache_ms` (1 s by default; see [`Recent`]): the
//! assets of a page ask for the same session within that time, and are answered without a read.
//! The core still checks the entry on every request (user, tag, lifetimes); what the cache may
//! miss for that long is a change made by another process (a logout through another daemon,
//! `check-duo sessions revoke`). This daemon's own writes forget the entry at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use check_duo_core::ports::{Entry, LockToken, SessionInfo, Store, StoreError};

/// Most reads waiting at once; beyond it a request is refused as the store being unavailable
/// (Redis that slow cannot answer them in time anyway).
const QUEUE: usize = 4096;
/// Most session ids in one `MGET`.
const BATCH: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Option<Entry>>, StoreError>>;

struct Job {
    keys: Vec<String>,
    now: i64,
    reply: Reply,
}

/// Most sessions [`Recent`] holds; past it, those out of date are dropped, then all.
const RECENT_MAX: usize = 10_000;

/// Sessions found a moment ago, by store key. Every write of this daemon to a key forgets it,
/// and every forgetting moves the generation on: a read that was under way meanwhile is not
/// kept (it may have been answered before the write).
pub struct Recent {
    ttl: Duration,
    generation: AtomicU64,
    map: Mutex<HashMap<String, (Entry, Instant)>>,
}

impl Recent {
    pub fn new(ttl: Duration) -> Recent {
        Recent {
            ttl,
            generation: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, (Entry, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<Entry> {
        let map = self.map();
        let (entry, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| entry.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keep `entry`, read since `generation`, unless something was forgotten since.
    fn keep(&self, generation: u64, key: String, entry: Entry) {
        let mut map = self.map();
        if self.generation() != generation {
            return;
        }
        if map.len() >= RECENT_MAX {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= RECENT_MAX {
                map.clear();
            }
        }
        map.insert(key, (entry, Instant::now()));
    }

    /// `key` was written: read it from the store next time.
    pub fn forget(&self, key: &str) {
        let mut map = self.map();
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.remove(key);
    }

    /// Sessions were ended in bulk.
    pub fn forget_all(&self) {
        let mut map = self.map();
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
    }
}

/// The reader threads' queue.
pub struct ReadAhead {
    store: &'static dyn Store,
    /// The reader threads' queue; none: `store` is read in place.
    tx: Option<SyncSender<Job>>,
    recent: Option<Arc<Recent>>,
}

impl ReadAhead {
    /// `threads` readers over `store` (each `MGET` takes one of the store's connections; 0:
    /// read in place), and the sessions kept by `recent`, if any (`store` forgets in it what it
    /// writes: see [`super::metrics::TimedStore`]).
    pub fn start(
        store: &'static dyn Store,
        threads: usize,
        recent: Option<Arc<Recent>>,
    ) -> std::io::Result<ReadAhead> {
        let mut tx = None;
        if threads > 0 {
            let (sender, rx) = mpsc::sync_channel::<Job>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..threads {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("check-duo-read-{i}"))
                    .spawn(move || read(store, &rx))?;
            }
            tx = Some(sender);
        }
        Ok(ReadAhead { store, tx, recent })
    }

    /// The entries of `keys`, in order, read with the others waiting now.
    pub async fn get(&self, keys: Vec<String>, now: i64) -> Result<Vec<Option<Entry>>, StoreError> {
        // The first key is the current secret's: the one a session in use is filed under.
        let first = keys.first().cloned();
        let recent = self.recent.as_deref();
        if let (Some(recent), Some(k)) = (recent, &first) {
            if let Some(entry) = recent.get(k) {
                let mut found = vec![None; keys.len()];
                found[0] = Some(entry);
                return Ok(found);
            }
        }
        let generation = recent.map(Recent::generation);
        let read = match &self.tx {
            None => self.store.get_many(&keys, now),
            Some(tx) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let unavailable = |why: &str| StoreError::new("redis", "read ahead", why);
                match tx.try_send(Job { keys, now, reply }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        return Err(unavailable("too many reads waiting"))
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(unavailable("no reader")),
                }
                // The store's own deadline bounds the wait; a reader gone is an error, never a
                // grant.
                answer
                    .await
                    .unwrap_or_else(|_| Err(unavailable("no answer")))
            }
        };
        if let (Some(recent), Some(g), Some(k), Ok(found)) = (recent, generation, first, &read) {
            if let Some(Some(entry)) = found.first() {
                recent.keep(g, k, entry.clone());
            }
        }
        read
    }
}

/// One reader: take the first job waiting and those behind it, read them in one call, answer.
fn read(store: &dyn Store, rx: &Mutex<Receiver<Job>>) {
    loop {
        let jobs = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            let mut n = first.keys.len();
            let mut jobs = vec![first];
            while n < BATCH {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.keys.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let now = jobs.iter().map(|j| j.now).max().unwrap_or(0);
        let keys: Vec<String> = jobs.iter().flat_map(|j| j.keys.iter().cloned()).collect();
        let mut got = store.get_many(&keys, now).map(Vec::into_iter);
        for j in jobs {
            let answer = match &mut got {
                Ok(values) => Ok(values.by_ref().take(j.keys.len()).collect()),
                Err(e) => Err(e.clone()),
            };
            // The request may have gone (its client disconnected): nothing to answer.
            let _ = j.reply.send(answer);
        }
    }
}

/// The store as the core sees it for one request whose session reads were made ahead: those
/// keys from memory (their entries, or the error that read met); everything else, rare on this
/// path (an idle-timeout refresh, a changed address), from the store on a thread the runtime
/// lets go of.
pub struct Prefetched<'a> {
    keys: Vec<String>,
    read: Result<Vec<Option<Entry>>, StoreError>,
    inner: &'a dyn Store,
}

impl<'a> Prefetched<'a> {
    pub fn new(
        keys: Vec<String>,
        read: Result<Vec<Option<Entry>>, StoreError>,
        inner: &'a dyn Store,
    ) -> Self {
        Prefetched { keys, read, inner }
    }

    fn blocking<T>(&self, f: impl FnOnce(&dyn Store) -> T) -> T {
        tokio::task::block_in_place(|| f(self.inner))
    }
}

impl Store for Prefetched<'_> {
    fn get(&self, key: &str, now: i64) -> Result<Option<Entry>, StoreError> {
        match self.keys.iter().position(|k| k == key) {
            Some(i) => match &self.read {
                Ok(entries) => Ok(entries.get(i).cloned().flatten()),
                Err(e) => Err(e.clone()),
            },
            None => self.blocking(|s| s.get(key, now)),
        }
    }
    fn put(&self, key: &str, entry: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.blocking(|s| s.put(key, entry, ttl, now))
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.blocking(|s| s.delete(key))
    }
    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError> {
        self.blocking(|s| s.list(now))
    }
    fn revoke_user(&self, user: &str, now: i64) -> Result<u64, StoreError> {
        self.blocking(|s| s.revoke_user(user, now))
    }
    fn revoke_all(&self, now: i64) -> Result<u64, StoreError> {
        self.blocking(|s| s.revoke_all(now))
    }
    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<LockToken>, StoreError> {
        self.blocking(|s| s.try_lock(key, ttl, now))
    }
    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.blocking(|s| s.unlock(key, token))
    }
    fn locked(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        self.blocking(|s| s.locked(key, now))
    }
    fn incr(&self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError> {
        self.blocking(|s| s.incr(key, window, now))
    }
    fn incr_sliding(&self, key: &str, ttl: Duration, now: i64) -> Result<u64, StoreError> {
        self.blocking(|s| s.incr_sliding(key, ttl, now))
    }
    fn set(&self, key: &str, value: u64, ttl: Duration, now: i64) -> Result<(), StoreError> {
        self.blocking(|s| s.set(key, value, ttl, now))
    }
    fn decr(&self, key: &str, now: i64) -> Result<(), StoreError> {
        self.blocking(|s| s.decr(key, now))
    }
    fn count(&self, key: &str, now: i64) -> Result<u64, StoreError> {
        self.blocking(|s| s.count(key, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::metrics::TimedStore;
    use check_duo_core::testing::MemoryStore;

    fn entry(user: &str) -> Entry {
        Entry {
            user: user.into(),
            approved_at: 1,
            tag: "t".into(),
            ip: String::new(),
            last_seen: 0,
            factor: "push".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_each_get_their_own_entries() {
        let store: &'static MemoryStore = Box::leak(Box::default());
        for i in 0..50 {
            store
                .put(
                    &format!("k{i}"),
                    &entry(&format!("u{i}")),
                    Duration::from_secs(60),
                    0,
                )
                .ok();
        }
        let ra: &'static ReadAhead = Box::leak(Box::new(ReadAhead::start(store, 2, None).unwrap()));
        let mut tasks = Vec::new();
        for i in 0..100 {
            tasks.push(tokio::spawn(async move {
                let keys = vec![format!("k{i}"), format!("k{}", i + 1)];
                (i, ra.get(keys, 0).await)
            }));
        }
        for t in tasks {
            let (i, got) = t.await.unwrap();
            let got = got.unwrap();
            let user = |e: &Option<Entry>| e.as_ref().map(|e| e.user.clone());
            let want = |n: usize| (n < 50).then(|| format!("u{n}"));
            assert_eq!(got.len(), 2);
            assert_eq!(user(&got[0]), want(i));
            assert_eq!(user(&got[1]), want(i + 1));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_found_is_used_again_until_this_daemon_writes_it() {
        let recent = Arc::new(Recent::new(Duration::from_secs(60)));
        let store: &'static TimedStore = Box::leak(Box::new(TimedStore {
            inner: Box::new(MemoryStore::default()),
            metrics: Box::leak(Box::default()),
            recent: Some(Arc::clone(&recent)),
        }));
        let ttl = Duration::from_secs(60);
        store.put("k", &entry("alice"), ttl, 0).unwrap();
        let ra = ReadAhead::start(store, 1, Some(Arc::clone(&recent))).unwrap();
        let user = |r: Result<Vec<Option<Entry>>, StoreError>| {
            r.unwrap()[0].as_ref().map(|e| e.user.clone())
        };
        assert_eq!(
            user(ra.get(vec!["k".into()], 0).await),
            Some("alice".into())
        );
        // Changed behind its back (another process): the kept entry answers.
        store.inner.put("k", &entry("bob"), ttl, 0).unwrap();
        assert_eq!(
            user(ra.get(vec!["k".into()], 0).await),
            Some("alice".into())
        );
        // Written or ended through this daemon: read again at once.
        store.put("k", &entry("carol"), ttl, 0).unwrap();
        assert_eq!(
            user(ra.get(vec!["k".into()], 0).await),
            Some("carol".into())
        );
        store.delete("k").unwrap();
        assert_eq!(user(ra.get(vec!["k".into()], 0).await), None);
        store.inner.put("k", &entry("dave"), ttl, 0).unwrap();
        assert_eq!(user(ra.get(vec!["k".into()], 0).await), Some("dave".into()));
        store.revoke_all(0).unwrap();
        assert_eq!(user(ra.get(vec!["k".into()], 0).await), None);
    }

    #[test]
    fn a_read_under_way_during_a_write_is_not_kept_and_entries_go_stale() {
        let recent = Recent::new(Duration::from_millis(50));
        let g = recent.generation();
        recent.forget("k");
        recent.keep(g, "k".into(), entry("alice"));
        assert!(recent.get("k").is_none(), "kept a read older than a write");
        recent.keep(recent.generation(), "k".into(), entry("alice"));
        assert!(recent.get("k").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(recent.get("k").is_none(), "past its time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_is_an_error_for_its_keys_only() {
        let store = MemoryStore::default();
        let failed = Prefetched::new(
            vec!["a".into()],
            Err(StoreError::new("redis", "MGET", "down")),
            &store,
        );
        assert!(failed.get("a", 0).is_err());
        assert_eq!(failed.get("b", 0), Ok(None));
        let read = Prefetched::new(vec!["a".into()], Ok(vec![Some(entry("x"))]), &store);
        assert_eq!(
            read.get("a", 0).ok().flatten().map(|e| e.user),
            Some("x".into())
        );
    }
}
