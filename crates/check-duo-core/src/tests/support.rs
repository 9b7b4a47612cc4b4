//! The world a test runs in: a policy, the in-memory store, the scripted Duo and the manual
//! clock, and short ways to build requests and check decisions.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::decision::{Decision, Effect, Event, Outcome, Pending};
use crate::password::Credential;
use crate::policy::Policy;
use crate::ports::Wait;
use crate::request::Request;
use crate::testing::{FakeDuo, ManualClock, MemoryStore};
use crate::{Gate, Secret};

pub const COOKIE: &str = "cookie-1";
pub const IP: &str = "192.0.2.1";

/// alice (password `pw`) and bob (`pw-bob`), with plaintext credentials (cheap to check).
pub fn users(list: &[(&str, &str)]) -> BTreeMap<String, Credential> {
    list.iter()
        .map(|(u, p)| (u.to_string(), Credential::Plain(Secret::new(*p))))
        .collect()
}

pub fn policy() -> Policy {
    Policy::new(users(&[("alice", "pw"), ("bob", "pw-bob")]), "skey")
}

pub struct World {
    pub policy: Policy,
    pub store: MemoryStore,
    pub duo: FakeDuo,
    pub clock: ManualClock,
}

impl World {
    pub fn new() -> Self {
        World::with(|_| {})
    }

    /// The default policy, changed by `f`.
    pub fn with(f: impl FnOnce(&mut Policy)) -> Self {
        let mut policy = policy();
        f(&mut policy);
        World {
            policy,
            store: MemoryStore::new(),
            duo: FakeDuo::new(),
            clock: ManualClock::new(),
        }
    }

    pub fn gate(&self) -> Gate<'_> {
        self.gate_with(&self.policy)
    }

    /// A gate over the same store, Duo and clock with another policy (a changed config).
    pub fn gate_with<'a>(&'a self, policy: &'a Policy) -> Gate<'a> {
        Gate {
            policy,
            store: &self.store,
            duo: &self.duo,
            clock: &self.clock,
            wait: &self.clock,
            directory: None,
        }
    }

    /// A gate for parallel bursts: waiting yields the thread instead of moving the clock (see
    /// [`Yield`]).
    pub fn gate_yielding(&self) -> Gate<'_> {
        Gate {
            wait: &Yield,
            ..self.gate()
        }
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Sign `req` in through the whole pipe-mode flow and check that it was approved and stored.
    pub fn sign_in(&self, req: &Request) -> Decision {
        let d = self.gate().drive(req);
        assert!(d.granted(), "sign-in not granted: {d:?}");
        assert!(set_session(&d).is_some(), "sign-in not stored: {d:?}");
        d
    }
}

/// Waiting for threads that share one [`ManualClock`]: the waits of parallel requests overlap in
/// real time, but on a manual clock they would add up (twenty threads polling every 200 ms
/// would move it four seconds per round). So a burst leaves the clock alone and yields.
pub struct Yield;

impl Wait for Yield {
    fn wait(&self, _: Duration) {
        std::thread::yield_now();
    }
}

/// A request of `user` with `password`, carrying the session cookie `cookie` (if any), from
/// [`IP`], for `/private/index.html`.
pub fn req(user: &str, password: &str, cookie: Option<&str>) -> Request {
    Request {
        user: user.into(),
        password: Some(Secret::new(password)),
        session: cookie.map(Secret::new),
        ip: IP.into(),
        host: "app.example.org".into(),
        method: "GET".into(),
        uri: "/private/index.html".into(),
    }
}

/// alice, right password, [`COOKIE`].
pub fn alice() -> Request {
    req("alice", "pw", Some(COOKIE))
}

/// alice, right password, the given cookie.
pub fn alice_with(cookie: &str) -> Request {
    req("alice", "pw", Some(cookie))
}

pub fn from(ip: &str, r: Request) -> Request {
    Request { ip: ip.into(), ..r }
}

pub fn at_uri(uri: &str, r: Request) -> Request {
    Request {
        uri: uri.into(),
        ..r
    }
}

#[track_caller]
pub fn assert_grant(d: &Decision, event: Event) {
    assert_eq!(
        (&d.outcome, d.event),
        (&Outcome::Grant, event),
        "expected a grant with {event:?}: {d:?}"
    );
}

#[track_caller]
pub fn assert_deny(d: &Decision, event: Event) {
    assert_eq!(
        (&d.outcome, d.event),
        (&Outcome::Deny, event),
        "expected a deny with {event:?}: {d:?}"
    );
}

/// The pending state of a decision, which must be pending.
#[track_caller]
pub fn pending(d: &Decision) -> Pending {
    match &d.outcome {
        Outcome::Pending(p) => (**p).clone(),
        _ => panic!("expected a pending decision: {d:?}"),
    }
}

/// The max-age of the session cookie the decision sets, if any.
pub fn set_session(d: &Decision) -> Option<Duration> {
    d.effects.iter().find_map(|e| match e {
        Effect::SetSession { max_age } => Some(*max_age),
        Effect::ClearSession => None,
    })
}
