//! The decision: password, cached session, or a Duo push. Knows nothing of Apache beyond the
//! [`Request`] it is handed, and fails closed: every error is a deny with its reason.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::cookie;
use crate::duo::{self, Pause, PushContext};
use crate::input::{Context, Request};
use crate::log::{Decision, Event};
use crate::password;
use crate::session::{tags_equal, SessionKeys};
use crate::store::{self, Entry, Store};

/// The time, as a parameter.
pub trait Clock {
    /// Unix seconds.
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// How often a request waiting for another process's push looks at the store.
const WAIT_POLL: Duration = Duration::from_millis(200);

const CONCURRENT_APPROVAL: &str = "approved by a concurrent request of the same session";

/// Decide one request.
pub fn decide(cfg: &Config, req: &Request, clock: &dyn Clock, pause: &dyn Pause) -> Decision {
    let credential = cfg.users.get(&req.user);
    let password = req.password.expose();
    match req.context {
        Context::Login => {
            return match credential {
                Some(c) if password::verify(c, password) => Decision::grant(
                    Event::LoginPassword,
                    "password accepted (login form; Duo follows on the next request)",
                ),
                Some(_) => Decision::deny(Event::PasswordFailure, "wrong password"),
                None => {
                    password::verify_unknown_user(password);
                    Decision::deny(Event::UnknownUser, "unknown user")
                }
            }
        }
        Context::Logout => return logout(cfg, req),
        Context::Request => {}
    }

    let Some(credential) = credential else {
        password::verify_unknown_user(password);
        return Decision::deny(Event::UnknownUser, "unknown user");
    };
    let Some(cookie) = req
        .cookie
        .as_ref()
        .and_then(|c| cookie::find(c.expose(), &cfg.session.name))
    else {
        return Decision::deny(
            Event::NoCookie,
            format!("no session cookie {:?}", cfg.session.name),
        );
    };

    let keys = SessionKeys::derive(cfg.duo.skey.expose());
    let id = keys.session_id(cookie);
    let tag = keys.tag(&req.user, password, credential.fingerprint());
    let caching = !cfg.session.expiry.is_zero();

    let mut store = if caching {
        match store::open(&cfg.cache) {
            Ok(s) => Some(s),
            Err(e) => {
                return Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
            }
        }
    } else {
        None
    };

    // Warm path: a keyed lookup and an HMAC, no password hash.
    if let Some(s) = store.as_mut() {
        match approved(s.as_mut(), &id, &req.user, &tag, clock.now()) {
            Ok(true) => return Decision::grant(Event::CacheHit, "cached session"),
            Ok(false) => {}
            Err(e) => {
                return Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
            }
        }
    }

    if !password::verify(credential, password) {
        return Decision::deny(Event::PasswordFailure, "wrong password");
    }

    let deadline = Instant::now() + cfg.duo.push_timeout;
    let Some(store) = store.as_mut() else {
        // expiry 0: Duo on every request, nothing cached (as the seed).
        return push(cfg, req, deadline, pause);
    };

    // One push per session: the first request takes the lock and asks Duo; concurrent requests
    // of the same session wait for its answer in the store.
    let lock_ttl = cfg.duo.push_timeout + Duration::from_secs(5);
    match store.try_lock(&id, lock_ttl, clock.now()) {
        Ok(true) => {}
        Ok(false) => return wait_for_other(store.as_mut(), &id, &req.user, &tag, deadline, clock),
        Err(e) => {
            return Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
        }
    }
    // A request that held the lock may have stored its approval after our first look.
    if let Ok(true) = approved(store.as_mut(), &id, &req.user, &tag, clock.now()) {
        let _ = store.unlock(&id);
        return Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL);
    }
    let mut decision = push(cfg, req, deadline, pause);
    if decision.granted() && !decision.fail_open() {
        let entry = Entry {
            user: req.user.clone(),
            approved_at: clock.now(),
            tag,
            ip: req.ip.clone(),
        };
        if let Err(e) = store.put(&id, &entry, cfg.session.expiry, clock.now()) {
            // Granted now; the next request will ask again. Say so.
            decision.reason = format!("{} (not cached: {e})", decision.reason);
        }
    }
    if let Err(e) = store.unlock(&id) {
        decision.reason = format!("{} (push lock not released: {e})", decision.reason);
    }
    decision
}

fn push(cfg: &Config, req: &Request, deadline: Instant, pause: &dyn Pause) -> Decision {
    let client = match duo::client(&cfg.duo) {
        Ok(c) => c,
        Err(e) => return Decision::deny(Event::ConfigError, format!("Duo client: {e}")),
    };
    let ctx = PushContext {
        user: &req.user,
        ip: &req.ip,
        host: &req.host,
        uri: &req.uri,
    };
    duo::second_factor(&client, &cfg.duo, &ctx, deadline, pause)
}

/// True when the store holds an approval of this session for this user and password.
fn approved(
    store: &mut dyn Store,
    id: &str,
    user: &str,
    tag: &str,
    now: i64,
) -> Result<bool, crate::store::StoreError> {
    Ok(matches!(store.get(id, now)?, Some(e) if e.user == user && tags_equal(&e.tag, tag)))
}

/// Another request of this session is asking Duo: wait for its approval to land in the store.
fn wait_for_other(
    store: &mut dyn Store,
    id: &str,
    user: &str,
    tag: &str,
    deadline: Instant,
    clock: &dyn Clock,
) -> Decision {
    loop {
        match approved(store, id, user, tag, clock.now()) {
            Ok(true) => return Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL),
            Ok(false) => {}
            Err(e) => {
                return Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
            }
        }
        // The lock is gone and no approval was stored: that push was not approved.
        match store.try_lock(id, Duration::from_secs(1), clock.now()) {
            Ok(true) => {
                let _ = store.unlock(id);
                if let Ok(true) = approved(store, id, user, tag, clock.now()) {
                    return Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL);
                }
                return Decision::deny(
                    Event::PushDenied,
                    "the concurrent push of this session was not approved",
                );
            }
            Ok(false) => {}
            Err(e) => {
                return Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
            }
        }
        if Instant::now() + WAIT_POLL >= deadline {
            return Decision::deny(
                Event::PushTimeout,
                "waited for the concurrent push of this session until the deadline",
            );
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// `CONTEXT=logout`: end the session on the server, whatever the password, then deny.
fn logout(cfg: &Config, req: &Request) -> Decision {
    let Some(cookie) = req
        .cookie
        .as_ref()
        .and_then(|c| cookie::find(c.expose(), &cfg.session.name))
    else {
        return Decision::deny(Event::Logout, "logout: no session cookie");
    };
    let id = SessionKeys::derive(cfg.duo.skey.expose()).session_id(cookie);
    match store::open(&cfg.cache).and_then(|mut s| s.delete(&id)) {
        Ok(true) => Decision::deny(Event::Logout, "logout: session ended"),
        Ok(false) => Decision::deny(Event::Logout, "logout: no cached session"),
        Err(e) => Decision::deny(
            Event::StoreError,
            format!("logout: session store unavailable: {e}"),
        ),
    }
}
