//! The simulator's shared state: transactions (pushes), counters, rate-limit tallies, the
//! behaviours in force and the simulated clock. A push's lifecycle is computed lazily from
//! deadlines whenever the state is looked at ([`State::tick`]), and every change is announced on
//! one condition variable, so long polls need no timer threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::behaviour::{Behaviours, PushKind, UserBehaviour};

/// Transactions kept at most; the oldest finished ones are dropped beyond this.
const MAX_TXNS: usize = 10_000;

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    Pending,
    Allow,
    Deny,
    Timeout,
    Fraud,
}

impl PushState {
    /// Duo's `result`.
    pub fn result(self) -> &'static str {
        match self {
            PushState::Pending => "waiting",
            PushState::Allow => "allow",
            PushState::Deny | PushState::Timeout | PushState::Fraud => "deny",
        }
    }

    /// Duo's `status` and `status_msg`.
    pub fn status(self) -> (&'static str, &'static str) {
        match self {
            PushState::Pending => ("pushed", "Pushed a login request to your device..."),
            PushState::Allow => ("allow", "Success. Logging you in..."),
            PushState::Deny => ("deny", "Login request denied."),
            PushState::Timeout => ("timeout", "Login timed out."),
            PushState::Fraud => ("fraud", "Login request reported as fraudulent."),
        }
    }
}

/// One authentication transaction as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Push {
    pub txid: String,
    pub username: String,
    /// `push`, `phone`, `auto` or `passcode`.
    pub factor: String,
    pub device: String,
    /// The decoded `pushinfo` pairs.
    pub pushinfo: BTreeMap<String, String>,
    pub ipaddr: Option<String>,
    /// The `type` parameter (the push's title), if given.
    #[serde(rename = "type")]
    pub push_type: Option<String>,
    pub display_username: Option<String>,
    pub state: PushState,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// A Verified Duo Push's code: the phone must be given it to approve.
    pub verification_code: Option<String>,
}

/// Calls seen since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub ping: u64,
    pub check: u64,
    pub preauth: u64,
    pub auth: u64,
    pub auth_status: u64,
    /// Calls to the Universal Prompt's `/oauth/v1/` endpoints.
    pub oidc: u64,
    /// Calls to any other path.
    pub other: u64,
    /// Answers with HTTP 401.
    pub unauthorized: u64,
    /// Answers with HTTP 429.
    pub rate_limited: u64,
    /// Pushes (push, phone and auto factors) started per user.
    pub pushes_by_user: BTreeMap<String, u64>,
}

impl Counters {
    /// Every call to the Duo API listener, signed or not, whatever its outcome.
    pub fn duo_calls(&self) -> u64 {
        self.ping
            + self.check
            + self.preauth
            + self.auth
            + self.auth_status
            + self.oidc
            + self.other
    }
}

/// What a transaction will do next.
struct Txn {
    push: Push,
    /// The scripted end and when it happens (approve/deny/fraud after the delay).
    planned: Option<(Instant, PushState)>,
    /// When a still-pending push times out.
    expires: Instant,
    /// Duo's words for an ending that is not a push (bypass, locked out, wrong passcode).
    status_override: Option<(&'static str, &'static str)>,
}

#[derive(Default)]
struct Inner {
    txns: Vec<Txn>,
    counters: Counters,
    rate_hits: HashMap<String, u64>,
    /// Verified Duo Push transactions opened by preauth and not yet used by auth: txid → user.
    verified_txids: HashMap<String, String>,
}

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub ikey: String,
    pub skey: duo_auth::Secret,
    pub date_window: Duration,
    pub long_poll: Duration,
    pub push_timeout: Duration,
    pub log: bool,
    /// "Require Verified Duo Push" for every user.
    pub verified_push: bool,
    /// The Universal Prompt application (both or neither).
    pub client_id: Option<String>,
    pub client_secret: Option<duo_auth::Secret>,
}

/// A transaction's answer: `result`, `status`, `status_msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub state: PushState,
    pub status: &'static str,
    pub status_msg: String,
}

/// How a new transaction should end.
pub(crate) enum Plan {
    /// Play the user's push behaviour.
    Push(UserBehaviour),
    /// Already decided, with these words.
    Done(PushState, &'static str, &'static str),
}

/// Which endpoint a call went to, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Ping,
    Check,
    Preauth,
    Auth,
    AuthStatus,
    Oidc,
    Other,
}

pub(crate) struct State {
    pub settings: Settings,
    behaviours: RwLock<Behaviours>,
    inner: Mutex<Inner>,
    changed: Condvar,
    clock_offset: AtomicI64,
    seq: AtomicU64,
    pub shutdown: AtomicBool,
    /// The Universal Prompt's sessions, codes and assertion ids.
    pub oidc: crate::oidc::Store,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl State {
    pub fn new(settings: Settings, behaviours: Behaviours) -> Self {
        State {
            settings,
            behaviours: RwLock::new(behaviours),
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            clock_offset: AtomicI64::new(0),
            seq: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            oidc: crate::oidc::Store::default(),
        }
    }

    /// A poisoned lock only means another thread panicked mid-update; the data is still
    /// usable for a simulator, and the server must keep answering.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulator's clock, Unix seconds: the system clock plus the offset.
    pub fn now_unix(&self) -> i64 {
        i64::try_from(unix_ms() / 1000)
            .unwrap_or(i64::MAX)
            .saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    pub fn set_clock_offset(&self, secs: i64) {
        self.clock_offset.store(secs, Ordering::Relaxed);
    }

    pub fn behaviour(&self, username: &str) -> UserBehaviour {
        self.behaviours
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .for_user(username)
            .clone()
    }

    pub fn set_behaviours(&self, b: Behaviours) {
        *self.behaviours.write().unwrap_or_else(|e| e.into_inner()) = b;
        self.lock().rate_hits.clear();
    }

    pub fn count(&self, endpoint: Endpoint) {
        let mut inner = self.lock();
        let c = &mut inner.counters;
        match endpoint {
            Endpoint::Ping => c.ping += 1,
            Endpoint::Check => c.check += 1,
            Endpoint::Preauth => c.preauth += 1,
            Endpoint::Auth => c.auth += 1,
            Endpoint::AuthStatus => c.auth_status += 1,
            Endpoint::Oidc => c.oidc += 1,
            Endpoint::Other => c.other += 1,
        }
    }

    pub fn count_status(&self, status: u16) {
        let mut inner = self.lock();
        match status {
            401 => inner.counters.unauthorized += 1,
            429 => inner.counters.rate_limited += 1,
            _ => {}
        }
    }

    /// True if this call of `username` is one of the first `times` and must get a 429.
    pub fn take_rate_limit(&self, username: &str, times: u64) -> bool {
        let mut inner = self.lock();
        let hits = inner.rate_hits.entry(username.to_string()).or_insert(0);
        if *hits < times {
            *hits += 1;
            true
        } else {
            false
        }
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Forget pushes, counters and rate-limit tallies.
    pub fn reset(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
        self.oidc.reset();
        self.changed.notify_all();
    }

    /// A fresh transaction id, shaped like a UUID v4.
    fn new_txid(&self) -> String {
        let mut b = [0u8; 16];
        if getrandom::getrandom(&mut b).is_err() {
            // No OS randomness: unique is all a simulator needs.
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            b[..8].copy_from_slice(&n.to_be_bytes());
            b[8..].copy_from_slice(&unix_ms().to_be_bytes());
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// Open a Verified Duo Push transaction for `user` (preauth with
    /// `client_supports_verified_push=1`); its txid is what auth must be sent with.
    pub fn open_verified(&self, user: &str) -> String {
        let txid = self.new_txid();
        let mut inner = self.lock();
        if inner.verified_txids.len() >= MAX_TXNS {
            inner.verified_txids.clear();
        }
        inner.verified_txids.insert(txid.clone(), user.to_string());
        txid
    }

    /// Use a Verified Duo Push transaction (once): true if preauth opened it for `user`.
    pub fn take_verified(&self, txid: &str, user: &str) -> bool {
        let mut inner = self.lock();
        match inner.verified_txids.get(txid) {
            Some(u) if u == user => {
                inner.verified_txids.remove(txid);
                true
            }
            _ => false,
        }
    }

    /// A fresh 3-digit verification code (100-999, as Duo shows them).
    pub fn new_code(&self) -> String {
        let mut b = [0u8; 2];
        let n = if getrandom::getrandom(&mut b).is_ok() {
            u16::from_be_bytes(b)
        } else {
            u16::try_from(self.seq.fetch_add(1, Ordering::Relaxed) % 900).unwrap_or(0)
        };
        (100 + n % 900).to_string()
    }

    /// Record a new transaction and return its id. `push` holds everything but state and
    /// creation time; its txid is kept if set (a Verified Duo Push's, from preauth).
    pub fn start(&self, mut push: Push, plan: Plan) -> String {
        let now = Instant::now();
        if push.txid.is_empty() {
            push.txid = self.new_txid();
        }
        push.created_ms = unix_ms();
        let mut expires = now + self.settings.push_timeout;
        let (planned, status_override) = match plan {
            Plan::Push(b) => {
                if let Some(ms) = b.push_timeout_ms {
                    expires = now + Duration::from_millis(ms);
                }
                let at = now + Duration::from_millis(b.delay_ms);
                push.state = PushState::Pending;
                let planned = match b.push {
                    PushKind::Approve => Some((at, PushState::Allow)),
                    PushKind::Deny => Some((at, PushState::Deny)),
                    PushKind::Fraud => Some((at, PushState::Fraud)),
                    PushKind::Timeout | PushKind::Manual => None,
                };
                (planned, None)
            }
            Plan::Done(state, status, msg) => {
                push.state = state;
                (None, Some((status, msg)))
            }
        };
        let txid = push.txid.clone();
        let mut inner = self.lock();
        if push.state == PushState::Pending {
            *inner
                .counters
                .pushes_by_user
                .entry(push.username.clone())
                .or_insert(0) += 1;
        }
        if inner.txns.len() >= MAX_TXNS {
            if let Some(i) = inner
                .txns
                .iter()
                .position(|t| t.push.state != PushState::Pending)
            {
                inner.txns.remove(i);
            }
        }
        inner.txns.push(Txn {
            push,
            planned,
            expires,
            status_override,
        });
        self.changed.notify_all();
        txid
    }

    /// Play out deadlines that have passed; returns the next deadline of a pending push.
    fn tick(&self, inner: &mut Inner, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut changed = false;
        for t in inner
            .txns
            .iter_mut()
            .filter(|t| t.push.state == PushState::Pending)
        {
            match t.planned {
                Some((at, end)) if at <= now && at <= t.expires => {
                    t.push.state = end;
                    changed = true;
                }
                _ if t.expires <= now => {
                    t.push.state = PushState::Timeout;
                    changed = true;
                }
                _ => {
                    let mut due = t.expires;
                    if let Some((at, _)) = t.planned {
                        due = due.min(at);
                    }
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
        }
        if changed {
            self.changed.notify_all();
        }
        next
    }

    fn answer(t: &Txn) -> Answer {
        let (status, status_msg) = t.status_override.unwrap_or_else(|| t.push.state.status());
        // While a Verified Duo Push waits, Duo puts its code in status_msg.
        let status_msg = match (&t.push.verification_code, t.push.state) {
            (Some(code), PushState::Pending) => {
                format!("Please enter verification code {code} into Duo Mobile...")
            }
            _ => status_msg.to_string(),
        };
        Answer {
            state: t.push.state,
            status,
            status_msg,
        }
    }

    /// The user a transaction belongs to (`None`: unknown txid).
    pub fn user_of(&self, txid: &str) -> Option<String> {
        self.lock()
            .txns
            .iter()
            .find(|t| t.push.txid == txid)
            .map(|t| t.push.username.clone())
    }

    /// Wait until the transaction is final or `until` passes; its answer then (`None`: unknown
    /// txid, e.g. after a reset).
    pub fn wait_final(&self, txid: &str, until: Instant) -> Option<Answer> {
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            let next = self.tick(&mut inner, now);
            let t = inner.txns.iter().find(|t| t.push.txid == txid)?;
            let answer = Self::answer(t);
            if answer.state != PushState::Pending
                || now >= until
                || self.shutdown.load(Ordering::Relaxed)
            {
                return Some(answer);
            }
            let wake = next.map_or(until, |n| n.min(until));
            let wait = wake.saturating_duration_since(now);
            inner = self
                .changed
                .wait_timeout(inner, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// All transactions, oldest first, with deadlines played out.
    pub fn pushes(&self) -> Vec<Push> {
        let mut inner = self.lock();
        self.tick(&mut inner, Instant::now());
        inner.txns.iter().map(|t| t.push.clone()).collect()
    }

    /// Wait up to `timeout` for a pending push (the newest one).
    pub fn wait_pending(&self, timeout: Duration) -> Option<Push> {
        let until = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            let next = self.tick(&mut inner, now);
            if let Some(t) = inner
                .txns
                .iter()
                .rev()
                .find(|t| t.push.state == PushState::Pending)
            {
                return Some(t.push.clone());
            }
            if now >= until || self.shutdown.load(Ordering::Relaxed) {
                return None;
            }
            let wake = next.map_or(until, |n| n.min(until));
            inner = self
                .changed
                .wait_timeout(inner, wake.saturating_duration_since(now))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Decide a pending push (from the control API or the library). `txid` may be `latest`:
    /// the newest pending push. Returns the txid decided, or `None` if there was none pending.
    pub fn decide(&self, txid: &str, state: PushState) -> Option<String> {
        self.decide_code(txid, state, None).map(|(id, _)| id)
    }

    /// Decide a pending push as the phone does: approving a Verified Duo Push needs its code,
    /// and a wrong or missing code denies it. Returns the txid and the state it ended in.
    pub fn decide_code(
        &self,
        txid: &str,
        state: PushState,
        code: Option<&str>,
    ) -> Option<(String, PushState)> {
        let mut inner = self.lock();
        self.tick(&mut inner, Instant::now());
        let t = if txid == "latest" {
            inner
                .txns
                .iter_mut()
                .rev()
                .find(|t| t.push.state == PushState::Pending)
        } else {
            inner
                .txns
                .iter_mut()
                .find(|t| t.push.txid == txid && t.push.state == PushState::Pending)
        }?;
        let wrong_code = state == PushState::Allow
            && t.push
                .verification_code
                .as_deref()
                .is_some_and(|c| code.map(str::trim) != Some(c));
        if wrong_code {
            t.push.state = PushState::Deny;
            t.status_override = Some(("deny", "Incorrect verification code entered."));
        } else {
            t.push.state = state;
        }
        let id = t.push.txid.clone();
        let ended = t.push.state;
        self.changed.notify_all();
        Some((id, ended))
    }

    /// Wake every waiter (at shutdown).
    pub fn wake_all(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(push_timeout: Duration) -> State {
        State::new(
            Settings {
                ikey: "I".into(),
                skey: duo_auth::Secret::new("S"),
                date_window: Duration::from_secs(300),
                long_poll: Duration::from_millis(100),
                push_timeout,
                log: false,
                verified_push: false,
                client_id: None,
                client_secret: None,
            },
            Behaviours::default(),
        )
    }

    fn push(user: &str) -> Push {
        Push {
            txid: String::new(),
            username: user.into(),
            factor: "push".into(),
            device: "auto".into(),
            pushinfo: BTreeMap::new(),
            ipaddr: None,
            push_type: None,
            display_username: None,
            state: PushState::Pending,
            created_ms: 0,
            verification_code: None,
        }
    }

    #[test]
    fn scripted_endings() {
        let s = state(Duration::from_millis(150));
        let far = Instant::now() + Duration::from_secs(5);
        let b = |p, d| UserBehaviour {
            push: p,
            delay_ms: d,
            ..Default::default()
        };
        let a = s.start(push("a"), Plan::Push(b(PushKind::Approve, 20)));
        let d = s.start(push("d"), Plan::Push(b(PushKind::Deny, 0)));
        let t = s.start(push("t"), Plan::Push(b(PushKind::Timeout, 0)));
        let m = s.start(push("m"), Plan::Push(b(PushKind::Manual, 0)));
        assert_eq!(s.wait_final(&a, far).unwrap().state, PushState::Allow);
        assert_eq!(s.wait_final(&d, far).unwrap().state, PushState::Deny);
        assert_eq!(s.decide("latest", PushState::Allow), Some(m.clone()));
        assert_eq!(s.decide(&m, PushState::Deny), None);
        assert_eq!(s.wait_final(&m, far).unwrap().state, PushState::Allow);
        let started = Instant::now();
        let ans = s.wait_final(&t, far).unwrap();
        assert_eq!(ans.state, PushState::Timeout);
        assert_eq!(ans.status, "timeout");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(s.counters().pushes_by_user.get("a"), Some(&1));
        assert!(s.wait_final("nope", far).is_none());
    }

    #[test]
    fn long_poll_returns_waiting() {
        let s = state(Duration::from_secs(60));
        let m = s.start(push("m"), Plan::Push(UserBehaviour::push(PushKind::Manual)));
        let ans = s
            .wait_final(&m, Instant::now() + Duration::from_millis(50))
            .unwrap();
        assert_eq!(ans.state, PushState::Pending);
        assert_eq!(ans.state.result(), "waiting");
        assert_eq!(s.wait_pending(Duration::ZERO).unwrap().txid, m);
        s.reset();
        assert!(s.pushes().is_empty());
        assert!(s.wait_pending(Duration::from_millis(10)).is_none());
    }

    #[test]
    fn verified_push_needs_its_code() {
        let s = state(Duration::from_secs(60));
        let far = Instant::now() + Duration::from_millis(50);
        let manual = || Plan::Push(UserBehaviour::push(PushKind::Manual));
        let verified = |code: &str| Push {
            verification_code: Some(code.into()),
            ..push("v")
        };
        let a = s.start(verified("376"), manual());
        let msg = s.wait_final(&a, far).unwrap().status_msg;
        assert_eq!(msg, "Please enter verification code 376 into Duo Mobile...");
        assert_eq!(
            s.decide_code(&a, PushState::Allow, Some(" 376 ")),
            Some((a.clone(), PushState::Allow))
        );
        let b = s.start(verified("376"), manual());
        assert_eq!(
            s.decide_code(&b, PushState::Allow, Some("377")),
            Some((b.clone(), PushState::Deny))
        );
        let ans = s.wait_final(&b, far).unwrap();
        assert_eq!(ans.status_msg, "Incorrect verification code entered.");
        let c = s.start(verified("376"), manual());
        assert_eq!(s.decide(&c, PushState::Allow), Some(c.clone()));
        assert_eq!(s.wait_final(&c, far).unwrap().state, PushState::Deny);
        // Preauth's transaction is good once, for its own user.
        let t = s.open_verified("v");
        assert!(!s.take_verified(&t, "w"));
        assert!(s.take_verified(&t, "v"));
        assert!(!s.take_verified(&t, "v"));
        let code = s.new_code();
        assert_eq!(code.len(), 3);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn txids_look_like_uuids() {
        let s = state(Duration::from_secs(1));
        let id = s.new_txid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, s.new_txid());
    }
}
