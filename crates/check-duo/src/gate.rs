//! The decision: password, cached session, or a second factor. Knows nothing of Apache beyond
//! the [`Request`] it is handed, and fails closed: every error is a deny with its reason.
//!
//! Order of a protected request: cookie → warm path (one keyed read, one HMAC) → bans → password
//! → paths that never push → the session's push lock → cool-down and push cap → second factor
//! (local TOTP or Duo) → cache the approval.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Credential};
use crate::cookie;
use crate::duo::{self, Pause, PushContext};
use crate::factor::{self, Requested};
use crate::input::{Context, Request};
use crate::limits;
use crate::log::{Decision, Event};
use crate::password;
use crate::session::{tags_equal, SessionKeys};
use crate::store::{self, Entry, Store, StoreError};
use crate::totp;

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

fn store_error(e: StoreError) -> Decision {
    Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
}

/// Decide one request.
pub fn decide(cfg: &Config, req: &Request, clock: &dyn Clock, pause: &dyn Pause) -> Decision {
    match req.context {
        Context::Login => login(cfg, req, clock),
        Context::Logout => logout(cfg, req),
        Context::Request => match protected(cfg, req, clock, pause) {
            Ok(d) | Err(d) => d,
        },
    }
}

/// `CONTEXT=login`: the password only (the push comes with the next request), behind the
/// brute-force limits.
fn login(cfg: &Config, req: &Request, clock: &dyn Clock) -> Decision {
    let now = clock.now();
    let mut store = match store::open(&cfg.cache) {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    if let Some(d) = limits::banned(store.as_mut(), &cfg.limits, &req.user, &req.ip, now) {
        return d;
    }
    match verify_password(cfg, store.as_mut(), req, now) {
        Ok(_) => Decision::grant(
            Event::LoginPassword,
            "password accepted (login form; the second factor follows on the next request)",
        ),
        Err(d) => d,
    }
}

/// The password check shared by the login form and protected requests: unknown users cost what
/// known ones do, and every failure is counted for the brute-force limits.
fn verify_password(
    cfg: &Config,
    store: &mut dyn Store,
    req: &Request,
    now: i64,
) -> Result<Requested, Decision> {
    let started = Instant::now();
    let result = check_password(cfg, req);
    if result.is_err() {
        // Every failure takes at least this long, whether the user exists, which hash it has
        // (the seed's plaintext, a cheap bcrypt, argon2id) and how many were tried.
        std::thread::sleep(FAILURE_FLOOR.saturating_sub(started.elapsed()));
    }
    result.map_err(|deny| limits::record_failure(store, &cfg.limits, &req.user, &req.ip, now, deny))
}

/// The least time a failed password check takes (see [`verify_password`]): above the cost of
/// any check a release build makes (two argon2id verifications with default parameters).
const FAILURE_FLOOR: Duration = Duration::from_millis(500);

fn check_password(cfg: &Config, req: &Request) -> Result<Requested, Decision> {
    let password = req.password.expose();
    let (event, reason) = match cfg.users.get(&req.user) {
        Some(cred) => match factor::check_password(cred, password) {
            Some(requested) => return Ok(requested),
            None => (Event::PasswordFailure, "wrong password"),
        },
        None => {
            password::verify_unknown_user(password);
            (Event::UnknownUser, "unknown user")
        }
    };
    Err(Decision::deny(event, reason))
}

/// A protected request. `Err` carries a deny decided early.
fn protected(
    cfg: &Config,
    req: &Request,
    clock: &dyn Clock,
    pause: &dyn Pause,
) -> Result<Decision, Decision> {
    let Some(cookie) = req
        .cookie
        .as_ref()
        .and_then(|c| cookie::find(c.expose(), &cfg.session.name))
    else {
        return Err(Decision::deny(
            Event::NoCookie,
            format!("no session cookie {:?}", cfg.session.name),
        ));
    };
    let mut store = store::open(&cfg.cache).map_err(store_error)?;
    let store = store.as_mut();
    let keys = SessionKeys::derive(cfg.duo.skey.expose());
    let id = keys.session_id(cookie);
    let credential = cfg.users.get(&req.user);
    let tag = keys.tag(
        &req.user,
        req.password.expose(),
        credential.map_or("", Credential::fingerprint),
    );
    let caching = !cfg.session.expiry.is_zero();

    // Warm path: a keyed lookup and an HMAC, no password hash. Before the bans: a valid session
    // proves the password and the second factor, so nobody can lock its owner out.
    if caching && credential.is_some() {
        if let Some(entry) =
            approved(store, &id, &req.user, &tag, clock.now()).map_err(store_error)?
        {
            refresh_idle(cfg, store, &id, entry, clock.now());
            return Ok(Decision::grant(Event::CacheHit, "cached session"));
        }
    }

    let now = clock.now();
    if let Some(d) = limits::banned(store, &cfg.limits, &req.user, &req.ip, now) {
        return Err(d);
    }
    let requested = verify_password(cfg, store, req, now)?;

    if limits::no_push_path(&cfg.limits, &req.uri) {
        return Err(Decision::deny(
            Event::NoPushPath,
            "no valid session, and this path never sends a push",
        ));
    }

    let deadline = Instant::now() + cfg.duo.push_timeout;
    if !caching {
        // expiry 0: the second factor on every request, nothing cached (as the seed).
        return Ok(second_factor(
            cfg, store, req, &id, &requested, deadline, clock, pause,
        ));
    }

    // One push per session: the first request takes the lock and asks Duo; concurrent requests
    // of the same session wait for its answer in the store.
    let lock_ttl = cfg.duo.push_timeout + Duration::from_secs(5);
    if !store
        .try_lock(&id, lock_ttl, clock.now())
        .map_err(store_error)?
    {
        return Err(wait_for_other(store, &id, &req.user, &tag, deadline, clock));
    }
    // A request that held the lock may have stored its approval after our first look.
    if let Ok(Some(_)) = approved(store, &id, &req.user, &tag, clock.now()) {
        let _ = store.unlock(&id);
        return Ok(Decision::grant(
            Event::ConcurrentApproval,
            CONCURRENT_APPROVAL,
        ));
    }
    let mut decision = second_factor(cfg, store, req, &id, &requested, deadline, clock, pause);
    if decision.granted() && !decision.fail_open() {
        let now = clock.now();
        let entry = Entry {
            user: req.user.clone(),
            approved_at: now,
            tag,
            ip: req.ip.clone(),
            last_seen: now,
        };
        if let Err(e) = store.put(&id, &entry, entry_ttl(cfg, &entry, now), now) {
            // Granted now; the next request will ask again. Say so.
            decision.reason = format!("{} (not cached: {e})", decision.reason);
        }
    }
    if let Err(e) = store.unlock(&id) {
        decision.reason = format!("{} (push lock not released: {e})", decision.reason);
    }
    Ok(decision)
}

/// The second factor, behind the push limits: local TOTP for users who have a secret, Duo for
/// everybody else.
#[allow(clippy::too_many_arguments)]
fn second_factor(
    cfg: &Config,
    store: &mut dyn Store,
    req: &Request,
    session_id: &str,
    requested: &Requested,
    deadline: Instant,
    clock: &dyn Clock,
    pause: &dyn Pause,
) -> Decision {
    let now = clock.now();
    if matches!(requested, Requested::Passcode(_) | Requested::Sms) {
        match limits::spent(store, session_id, now) {
            Ok(None) => {}
            Ok(Some(d)) => return d,
            Err(e) => return store_error(e),
        }
    }
    let decision = match cfg.totp.get(&req.user) {
        Some(secret) => local_totp(store, req, secret, requested, now),
        None => ask_duo(cfg, store, req, session_id, requested, deadline, now, pause),
    };
    limits::after_second_factor(
        store,
        &cfg.limits,
        session_id,
        &req.user,
        &req.ip,
        now,
        decision,
    )
}

/// Duo, with everything that reaches the user's phone behind the push limits.
#[allow(clippy::too_many_arguments)]
fn ask_duo(
    cfg: &Config,
    store: &mut dyn Store,
    req: &Request,
    session_id: &str,
    requested: &Requested,
    deadline: Instant,
    now: i64,
    pause: &dyn Pause,
) -> Decision {
    let client = match duo::client(&cfg.duo) {
        Ok(c) => c,
        Err(e) => return Decision::deny(Event::ConfigError, format!("Duo client: {e}")),
    };
    let reaches_phone = !matches!(requested, Requested::Passcode(_));
    if reaches_phone {
        let lock_ttl = cfg.duo.push_timeout + Duration::from_secs(5);
        match limits::reserve_push(store, &cfg.limits, session_id, &req.user, lock_ttl, now) {
            Ok(None) => {}
            Ok(Some(d)) => return d,
            Err(e) => return store_error(e),
        }
    }
    let ctx = PushContext {
        user: &req.user,
        ip: &req.ip,
        host: &req.host,
        uri: &req.uri,
    };
    let mut decision = duo::second_factor(&client, &cfg.duo, &ctx, requested, deadline, pause);
    if reaches_phone {
        if let Err(e) = store.unlock(&limits::user_lock(&req.user)) {
            decision.reason = format!("{} (user push lock not released: {e})", decision.reason);
        }
    }
    decision
}

/// RFC 6238 against the secret in the config; a code is good once.
fn local_totp(
    store: &mut dyn Store,
    req: &Request,
    secret: &[u8],
    requested: &Requested,
    now: i64,
) -> Decision {
    let Requested::Passcode(code) = requested else {
        return Decision::deny(
            Event::TotpRequired,
            "this user signs in with a TOTP code (password,123456)",
        );
    };
    let Some(step) = totp::verify(secret, code, now) else {
        return Decision::deny(Event::TotpDenied, "wrong or expired TOTP code");
    };
    // A code is good once, and never after a later one (RFC 6238 §5.2): accepting step s also
    // spends the steps before it that are still inside the ±1 window.
    let used = |s: i64| format!("totp:{}:{s}", req.user);
    match store.incr(&used(step), Duration::from_secs(120), now) {
        Ok(1) => {}
        Ok(_) => return Decision::deny(Event::TotpDenied, "TOTP code already used"),
        Err(e) => return store_error(e),
    }
    for earlier in [step - 1, step - 2] {
        if let Err(e) = store.incr(&used(earlier), Duration::from_secs(120), now) {
            return store_error(e);
        }
    }
    Decision::grant(Event::TotpApproved, "TOTP code accepted")
}

/// The cached approval of this session for this user and password, if any and still within
/// the absolute expiry.
fn approved(
    store: &mut dyn Store,
    id: &str,
    user: &str,
    tag: &str,
    now: i64,
) -> Result<Option<Entry>, StoreError> {
    Ok(store
        .get(id, now)?
        .filter(|e| e.user == user && tags_equal(&e.tag, tag)))
}

/// How long an entry may live from `now`: the rest of the absolute expiry, shortened to the idle
/// timeout when one is set.
fn entry_ttl(cfg: &Config, entry: &Entry, now: i64) -> Duration {
    let expiry = i64::try_from(cfg.session.expiry.as_secs()).unwrap_or(i64::MAX / 2);
    let left = Duration::from_secs(u64::try_from(entry.approved_at + expiry - now).unwrap_or(0));
    match cfg.session.idle_timeout {
        Some(idle) => left.min(idle),
        None => left,
    }
}

/// With an idle timeout, a used session is written again with a fresh TTL — at most once per
/// tenth of the timeout, so the warm path stays a read.
fn refresh_idle(cfg: &Config, store: &mut dyn Store, id: &str, mut entry: Entry, now: i64) {
    let Some(idle) = cfg.session.idle_timeout else {
        return;
    };
    let every = i64::try_from((idle / 10).as_secs().max(1)).unwrap_or(i64::MAX);
    if now - entry.last_seen < every {
        return;
    }
    entry.last_seen = now;
    let ttl = entry_ttl(cfg, &entry, now);
    if !ttl.is_zero() {
        // A failed refresh only shortens the session: not worth a deny.
        let _ = store.put(id, &entry, ttl, now);
    }
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
    let granted = || Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL);
    loop {
        match approved(store, id, user, tag, clock.now()) {
            Ok(Some(_)) => return granted(),
            Ok(None) => {}
            Err(e) => return store_error(e),
        }
        // The lock is gone and no approval was stored: that push was not approved.
        match store.try_lock(id, Duration::from_secs(1), clock.now()) {
            Ok(true) => {
                let _ = store.unlock(id);
                if let Ok(Some(_)) = approved(store, id, user, tag, clock.now()) {
                    return granted();
                }
                return Decision::deny(
                    Event::PushDenied,
                    "the concurrent push of this session was not approved",
                );
            }
            Ok(false) => {}
            Err(e) => return store_error(e),
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
