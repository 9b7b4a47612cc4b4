//! Session reads ahead of the decision, for a store across the network (Redis). The core is
//! synchronous; a Redis round trip on the runtime's threads would hold one of them for its
//! length (or hand it over, which costs as much). Instead, the authorization endpoints send the
//! session ids a request needs to a few reader threads, which take every read waiting at that
//! moment as one `MGET`, and await the answer; the core then decides over [`Prefetched`],
//! which answers those reads from memory. Under load the batches grow by themselves: one round
//! trip serves every request that arrived during the previous one.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The reader threads' queue.
pub struct ReadAhead {
    tx: SyncSender<Job>,
}

impl ReadAhead {
    /// `threads` readers over `store` (each `MGET` takes one of the store's connections).
    pub fn start(store: &'static dyn Store, threads: usize) -> std::io::Result<ReadAhead> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("check-duo-read-{i}"))
                .spawn(move || read(store, &rx))?;
        }
        Ok(ReadAhead { tx })
    }

    /// The entries of `keys`, in order, read with the others waiting now.
    pub async fn get(&self, keys: Vec<String>, now: i64) -> Result<Vec<Option<Entry>>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let unavailable = |why: &str| StoreError::new("redis", "read ahead", why);
        match self.tx.try_send(Job { keys, now, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(unavailable("too many reads waiting")),
            Err(TrySendError::Disconnected(_)) => return Err(unavailable("no reader")),
        }
        // The store's own deadline bounds the wait; a reader gone is an error, never a grant.
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("no answer")))
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
        let ra: &'static ReadAhead = Box::leak(Box::new(ReadAhead::start(store, 2).unwrap()));
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
