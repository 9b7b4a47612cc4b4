//! In-memory ports for tests: a [`MemoryStore`], a [`ManualClock`] that is also the waiting
//! port (waiting advances it, so no test sleeps), and a scripted [`FakeDuo`] that records its
//! calls. Built with `cfg(test)` or the `testing` feature (for front-ends' tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duo_auth::types::{AuthRequest, AuthResult, AuthStart, AuthStatus, Device, Factor, Preauth};
use duo_auth::Error;

use crate::ports::{Clock, DuoApi, Entry, LockToken, SessionInfo, Store, StoreError, Wait};

/// Wall and monotonic time that move only when told to (or when something waits).
pub struct ManualClock {
    base: Instant,
    /// Milliseconds since `base`.
    offset_ms: AtomicI64,
    /// Unix milliseconds at `base`.
    wall_ms: i64,
    waited_ms: AtomicI64,
}

impl ManualClock {
    /// A clock at 2023-11-14 22:13:20 UTC.
    pub fn new() -> Self {
        ManualClock::at(1_700_000_000)
    }

    pub fn at(unix: i64) -> Self {
        ManualClock {
            base: Instant::now(),
            offset_ms: AtomicI64::new(0),
            wall_ms: unix * 1000,
            waited_ms: AtomicI64::new(0),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    /// How long everything has waited on this clock so far.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::SeqCst) as u64)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> i64 {
        self.wall_ms + self.offset_ms.load(Ordering::SeqCst)
    }
    fn monotonic(&self) -> Instant {
        self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst).max(0) as u64)
    }
}

impl Wait for ManualClock {
    fn wait(&self, d: Duration) {
        self.waited_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
        self.advance(d);
    }
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<String, (Entry, i64)>,
    locks: HashMap<String, (String, i64)>,
    counters: HashMap<String, (u64, i64)>,
}

/// The store in a mutex. Expiry is by the `now` each call passes, as in the real backends.
#[derive(Default)]
pub struct MemoryStore {
    t: Mutex<Tables>,
    next_token: AtomicU64,
    /// Refuse every write (a full disk, a read-only replica, an ACL without write rights).
    pub refuse_writes: AtomicBool,
    /// Refuse everything (the store is down).
    pub down: AtomicBool,
    pub writes: AtomicU64,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX / 2)
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn read(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::new("memory", "read", "store down"));
        }
        Ok(self.t.lock().unwrap())
    }

    fn write(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(StoreError::new("memory", "write", "writes refused"));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.read()
    }

    /// Every session row (for tests that look at what is stored).
    pub fn sessions(&self) -> Vec<(String, Entry)> {
        let t = self.t.lock().unwrap();
        t.sessions
            .iter()
            .map(|(k, (e, _))| (k.clone(), e.clone()))
            .collect()
    }

    /// Every key of every table.
    pub fn keys(&self) -> Vec<String> {
        let t = self.t.lock().unwrap();
        t.sessions
            .keys()
            .chain(t.locks.keys())
            .chain(t.counters.keys())
            .cloned()
            .collect()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str, now: i64) -> Result<Option<Entry>, StoreError> {
        let t = self.read()?;
        Ok(t.sessions
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(e, _)| e.clone()))
    }

    fn put(&self, key: &str, entry: &Entry, ttl: Duration, now: i64) -> Result<(), StoreError> {
        let mut t = self.write()?;
        t.sessions
            .insert(key.to_string(), (entry.clone(), now + secs(ttl)));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut t = self.write()?;
        Ok(t.sessions.remove(key).is_some())
    }

    fn list(&self, now: i64) -> Result<Vec<SessionInfo>, StoreError> {
        let t = self.read()?;
        let mut v: Vec<SessionInfo> = t
            .sessions
            .values()
            .filter(|(_, exp)| *exp > now)
            .map(|(e, exp)| SessionInfo {
                user: e.user.clone(),
                ip: e.ip.clone(),
                approved_at: e.approved_at,
                factor: e.factor.clone(),
                expires_at: *exp,
            })
            .collect();
        v.sort_by(|a, b| (&a.user, a.approved_at).cmp(&(&b.user, b.approved_at)));
        Ok(v)
    }

    fn revoke_user(&self, user: &str, now: i64) -> Result<u64, StoreError> {
        let mut t = self.write()?;
        let before = t.sessions.len();
        t.sessions
            .retain(|_, (e, exp)| !(e.user == user && *exp > now));
        Ok((before - t.sessions.len()) as u64)
    }

    fn revoke_all(&self, now: i64) -> Result<u64, StoreError> {
        let mut t = self.write()?;
        let n = t.sessions.values().filter(|(_, exp)| *exp > now).count();
        t.sessions.clear();
        Ok(n as u64)
    }

    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<LockToken>, StoreError> {
        let mut t = self.write()?;
        if t.locks.get(key).is_some_and(|(_, exp)| *exp > now) {
            return Ok(None);
        }
        let token = format!("t{}", self.next_token.fetch_add(1, Ordering::SeqCst));
        t.locks
            .insert(key.to_string(), (token.clone(), now + secs(ttl)));
        Ok(Some(LockToken(token)))
    }

    fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut t = self.write()?;
        if t.locks.get(key).is_some_and(|(held, _)| *held == token.0) {
            t.locks.remove(key);
        }
        Ok(())
    }

    fn locked(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        let t = self.read()?;
        Ok(t.locks.get(key).is_some_and(|(_, exp)| *exp > now))
    }

    fn incr(&self, key: &str, window: Duration, now: i64) -> Result<u64, StoreError> {
        let mut t = self.write()?;
        let c = t
            .counters
            .entry(key.to_string())
            .or_insert((0, now + secs(window)));
        if c.1 <= now {
            *c = (0, now + secs(window));
        }
        c.0 += 1;
        Ok(c.0)
    }

    fn incr_sliding(&self, key: &str, ttl: Duration, now: i64) -> Result<u64, StoreError> {
        let mut t = self.write()?;
        let c = t.counters.entry(key.to_string()).or_insert((0, now));
        if c.1 <= now {
            c.0 = 0;
        }
        c.0 += 1;
        c.1 = now + secs(ttl);
        Ok(c.0)
    }

    fn set(&self, key: &str, value: u64, ttl: Duration, now: i64) -> Result<(), StoreError> {
        let mut t = self.write()?;
        t.counters.insert(key.to_string(), (value, now + secs(ttl)));
        Ok(())
    }

    fn decr(&self, key: &str, now: i64) -> Result<(), StoreError> {
        let mut t = self.write()?;
        if let Some(c) = t.counters.get_mut(key) {
            if c.1 > now {
                c.0 = c.0.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn count(&self, key: &str, now: i64) -> Result<u64, StoreError> {
        let t = self.read()?;
        Ok(t.counters
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map_or(0, |(n, _)| *n))
    }
}

/// How the fake phone answers a push or call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phone {
    Approve,
    Deny,
    /// Duo's own timeout (`result: deny, status: timeout`).
    DuoTimeout,
    /// Never answered (waiting until the deadline).
    Ignore,
    /// Waiting for this many polls, then approved.
    ApproveAfter(u32),
}

#[derive(Default)]
struct DuoState {
    preauth: HashMap<String, Preauth>,
    phone: HashMap<String, Phone>,
    /// Passcodes Duo accepts.
    passcodes: Vec<String>,
    /// Errors returned by the next calls, in order, before any real answer.
    errors: VecDeque<Error>,
    calls: Vec<String>,
    txids: HashMap<String, (String, u32)>,
}

/// A scripted Duo: every user has a phone with push, call and SMS, which approves, unless the
/// script says otherwise.
#[derive(Default)]
pub struct FakeDuo {
    s: Mutex<DuoState>,
    next_tx: AtomicU64,
}

impl FakeDuo {
    pub fn new() -> Self {
        FakeDuo::default()
    }

    pub fn phone(&self, user: &str, phone: Phone) {
        self.s.lock().unwrap().phone.insert(user.into(), phone);
    }

    pub fn preauth_answer(&self, user: &str, p: Preauth) {
        self.s.lock().unwrap().preauth.insert(user.into(), p);
    }

    pub fn accept_passcode(&self, code: &str) {
        self.s.lock().unwrap().passcodes.push(code.into());
    }

    /// The next calls fail with these errors, one each.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = Error>) {
        self.s.lock().unwrap().errors.extend(errors);
    }

    /// Every call so far: `preauth:USER`, `auth:FACTOR:USER`, `status:TXID`.
    pub fn calls(&self) -> Vec<String> {
        self.s.lock().unwrap().calls.clone()
    }

    /// How many calls start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// The device every user has.
    pub fn phone_device() -> Device {
        Device {
            device: "DPFAKE".into(),
            kind: "phone".into(),
            display_name: "iPhone (XXX-XXX-1234)".into(),
            capabilities: vec!["push".into(), "sms".into(), "phone".into()],
        }
    }

    fn call(&self, what: String) -> Result<(), Error> {
        let mut s = self.s.lock().unwrap();
        s.calls.push(what);
        match s.errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl DuoApi for FakeDuo {
    fn preauth(&self, user: &str, _ip: Option<&str>, _deadline: Instant) -> Result<Preauth, Error> {
        self.call(format!("preauth:{user}"))?;
        let s = self.s.lock().unwrap();
        Ok(s.preauth.get(user).cloned().unwrap_or(Preauth::Auth {
            devices: vec![FakeDuo::phone_device()],
        }))
    }

    fn auth(&self, req: &AuthRequest, _deadline: Instant) -> Result<AuthStart, Error> {
        let factor = match &req.factor {
            Factor::Push { .. } => "push",
            Factor::Passcode(_) => "passcode",
            Factor::Phone { .. } => "phone",
            Factor::Auto { .. } => "auto",
            Factor::Sms { .. } => "sms",
        };
        self.call(format!("auth:{factor}:{}", req.username))?;
        let mut s = self.s.lock().unwrap();
        let done = |result, status: &str| {
            AuthStart::Done(AuthStatus {
                result,
                status: status.into(),
                status_msg: status.into(),
            })
        };
        Ok(match &req.factor {
            Factor::Passcode(code) if s.passcodes.contains(code) => {
                done(AuthResult::Allow, "allow")
            }
            Factor::Passcode(_) => done(AuthResult::Deny, "deny"),
            Factor::Sms { .. } => done(AuthResult::Deny, "sent"),
            _ => {
                let tx = format!("tx{}", self.next_tx.fetch_add(1, Ordering::SeqCst));
                s.txids.insert(tx.clone(), (req.username.clone(), 0));
                AuthStart::Txid(tx)
            }
        })
    }

    fn auth_status(&self, txid: &str, _deadline: Instant) -> Result<AuthStatus, Error> {
        self.call(format!("status:{txid}"))?;
        let mut s = self.s.lock().unwrap();
        let Some((user, polls)) = s.txids.get(txid).cloned() else {
            return Err(Error::Rejected {
                status: 400,
                code: 40002,
                message: "unknown txid".into(),
            });
        };
        s.txids.insert(txid.into(), (user.clone(), polls + 1));
        let phone = s.phone.get(&user).cloned().unwrap_or(Phone::Approve);
        let (result, status) = match phone {
            Phone::Approve => (AuthResult::Allow, "allow"),
            Phone::Deny => (AuthResult::Deny, "deny"),
            Phone::DuoTimeout => (AuthResult::Deny, "timeout"),
            Phone::Ignore => (AuthResult::Waiting, "pushed"),
            Phone::ApproveAfter(n) if polls < n => (AuthResult::Waiting, "pushed"),
            Phone::ApproveAfter(_) => (AuthResult::Allow, "allow"),
        };
        Ok(AuthStatus {
            result,
            status: status.into(),
            status_msg: status.into(),
        })
    }
}
