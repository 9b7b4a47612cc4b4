//! Brute-force and push-fatigue limits, kept in the session store so that every process (and,
//! with Redis, every host) counts together.
//!
//! * Attempts (passwords and passcodes) are reserved before they are checked: per user and
//!   per client, the failures of the window plus the attempts being checked right now may not
//!   pass the threshold. An attempt past it waits for those in flight (a page of many requests
//!   with the right password) and is never checked while it waits; once the failures alone
//!   reach the threshold, the user or client is banned and every waiting attempt is denied. So
//!   a parallel burst checks at most the threshold. An attempt that cannot be counted is denied:
//!   the limiter never fails open.
//! * After a denied or unanswered push, no new push for the session or the user during the
//!   cool-down; one outstanding push per user; no more than `max_pushes` per user per window.
//!   Beyond any of these, deny without asking Duo.
//! * Paths listed in `no_push_paths` never send a push.

use std::time::Duration;

use crate::decision::{Decision, Event};
use crate::keys;
use crate::policy::Limits;
use crate::ports::{LockToken, Store, StoreError};

pub(crate) fn store_error(e: StoreError) -> Decision {
    Decision::deny(Event::StoreError, format!("session store unavailable: {e}"))
}

/// How long after the last reservation the count of attempts in flight is kept (and so how long
/// a reservation outlives a process that died holding it, once the traffic stops).
const ATTEMPT_TTL: Duration = Duration::from_secs(60);

/// One limit an attempt counts against.
struct Counted {
    attempts: String,
    failures: String,
    ban: String,
    max: u64,
    what: &'static str,
}

/// The reservations of one attempt, to be settled by [`give_back`] or [`failed`].
#[must_use]
pub struct Attempt {
    counted: Vec<Counted>,
}

/// Why an attempt was not reserved.
pub enum Refused {
    /// Denied: banned, or the store could not count it.
    Deny(Decision),
    /// Other attempts fill the threshold and are still being checked: ask again shortly.
    Busy,
}

fn counters(limits: &Limits, user: &str, client: Option<&str>) -> Vec<Counted> {
    let mut c = Vec::new();
    if limits.ban.is_zero() {
        return c;
    }
    if let Some(client) = client.filter(|_| limits.pair_failures > 0) {
        c.push(Counted {
            attempts: keys::pair_attempts(user, client),
            failures: keys::pair_failures(user, client),
            ban: keys::pair_ban(user, client),
            max: limits.pair_failures,
            what: "user from this client address",
        });
    }
    if limits.user_failures > 0 {
        c.push(Counted {
            attempts: keys::user_attempts(user),
            failures: keys::user_failures(user),
            ban: keys::user_ban(user),
            max: limits.user_failures,
            what: "user",
        });
    }
    if let Some(client) = client.filter(|_| limits.ip_failures > 0) {
        c.push(Counted {
            attempts: keys::client_attempts(client),
            failures: keys::client_failures(client),
            ban: keys::client_ban(client),
            max: limits.ip_failures,
            what: "client address",
        });
    }
    c
}

/// A deny when the user or the client is banned (or the store cannot tell).
pub fn banned(
    store: &dyn Store,
    limits: &Limits,
    user: &str,
    client: Option<&str>,
    now: i64,
) -> Option<Decision> {
    if limits.ban.is_zero() {
        return None;
    }
    let mut bans = vec![(keys::user_ban(user), "user")];
    if let Some(c) = client {
        bans.push((keys::pair_ban(user, c), "user from this client address"));
        bans.push((keys::client_ban(c), "client address"));
    }
    for (key, what) in bans {
        match store.count(&key, now) {
            Ok(0) => {}
            Ok(_) => {
                return Some(Decision::deny(
                    Event::Banned,
                    format!("{what} banned after too many failed passwords"),
                ))
            }
            Err(e) => return Some(store_error(e)),
        }
    }
    None
}

/// Reserve one attempt for the user and the client (see the module's doc).
pub fn reserve_attempt(
    store: &dyn Store,
    limits: &Limits,
    user: &str,
    client: Option<&str>,
    now: i64,
) -> Result<Attempt, Refused> {
    if let Some(d) = banned(store, limits, user, client, now) {
        return Err(Refused::Deny(d));
    }
    let mut attempt = Attempt {
        counted: Vec::new(),
    };
    let uncounted = |e: StoreError| {
        let mut d = store_error(e);
        d.note("the attempt could not be counted, so it was not checked");
        Refused::Deny(d)
    };
    for c in counters(limits, user, client) {
        // Reserve first, then look: two attempts that race both see the other's reservation.
        // The window slides with every reservation: one that ended under a burst would forget
        // the attempts still being checked.
        let in_flight = match store.incr_sliding(&c.attempts, ATTEMPT_TTL, now) {
            Ok(n) => n,
            Err(e) => {
                give_back(store, attempt, now);
                return Err(uncounted(e));
            }
        };
        let failures = match store.count(&c.failures, now) {
            Ok(n) => n,
            Err(e) => {
                let _ = store.decr(&c.attempts, now);
                give_back(store, attempt, now);
                return Err(uncounted(e));
            }
        };
        if failures.saturating_add(in_flight) > c.max {
            let _ = store.decr(&c.attempts, now);
            give_back(store, attempt, now);
            if failures >= c.max {
                return Err(Refused::Deny(Decision::deny(
                    Event::Banned,
                    format!("{} banned after too many failed passwords", c.what),
                )));
            }
            return Err(Refused::Busy);
        }
        attempt.counted.push(c);
    }
    Ok(attempt)
}

/// The attempt succeeded: take its reservations back.
pub fn give_back(store: &dyn Store, attempt: Attempt, now: i64) {
    for c in attempt.counted {
        // A reservation not given back holds a place until ATTEMPT_TTL ends.
        let _ = store.decr(&c.attempts, now);
    }
}

/// The attempt failed: count the failure (before its reservation is given back, so the sum
/// never dips), and at a threshold ban. Returns `deny` with what happened added to its reason,
/// and the failure count of the narrowest limit (the pair's, when counted) for the delay.
pub fn failed(
    store: &dyn Store,
    limits: &Limits,
    attempt: Attempt,
    now: i64,
    deny: Decision,
) -> Decision {
    failed_counting(store, limits, attempt, now, deny).0
}

/// [`failed`], with the failure count of the narrowest limit.
pub fn failed_counting(
    store: &dyn Store,
    limits: &Limits,
    attempt: Attempt,
    now: i64,
    mut deny: Decision,
) -> (Decision, u64) {
    let mut narrowest = None;
    for c in attempt.counted {
        let counted = store.incr(&c.failures, limits.failure_window, now);
        if let Ok(n) = &counted {
            narrowest.get_or_insert(*n);
        }
        match counted {
            Ok(n) if n >= c.max => match store.incr(&c.ban, limits.ban, now) {
                Ok(_) => {
                    deny.reason = format!(
                        "{}; {} banned for {} s after {n} failures",
                        deny.reason,
                        c.what,
                        limits.ban.as_secs()
                    )
                }
                Err(e) => deny.note(format_args!("ban not recorded: {e}")),
            },
            Ok(_) => {}
            Err(e) => deny.note(format_args!("failure not counted: {e}")),
        }
        let _ = store.decr(&c.attempts, now);
    }
    (deny, narrowest.unwrap_or(1))
}

/// How long a session's spent passcode or SMS request is remembered: the cookie replays the
/// typed text on every request until the user signs in again.
const SPENT: Duration = Duration::from_secs(7 * 86400);

/// A deny when this session's passcode was already refused, or its SMS already sent: the
/// cookie carries the same text on every request, so asking again would only bother Duo (and
/// count failure after failure against the user).
pub fn spent(store: &dyn Store, session: &str, now: i64) -> Result<Option<Decision>, StoreError> {
    Ok((store.count(&keys::spent(session), now)? > 0).then(|| {
        Decision::deny(
            Event::PasscodeDenied,
            "this session's passcode was refused or its SMS sent already: sign in again",
        )
    }))
}

/// Reserve a push (or call, or SMS) for `user`: `Ok(Err(deny))` when the session or the user is
/// cooling down after a refused push, another push of the user is still waiting for an answer,
/// or the user has had `max_pushes` pushes in the window. The reservation is counted before the
/// push goes out, so concurrent requests cannot all pass the check; `Ok(Ok(token))` holds the
/// user's push lock, to release when the push is answered.
pub fn reserve_push(
    store: &dyn Store,
    limits: &Limits,
    session: &str,
    user: &str,
    client: Option<&str>,
    lock_ttl: Duration,
    now: i64,
) -> Result<Result<LockToken, Decision>, StoreError> {
    if !limits.push_cooldown.is_zero() {
        // A request without a session ("") shares no session with anybody: only its user's
        // cool-down (from this client) applies.
        let session = (!session.is_empty()).then(|| keys::session_cooldown(session));
        for key in session.into_iter().chain([cooldown_key(user, client)]) {
            if store.count(&key, now)? > 0 {
                return Ok(Err(Decision::deny(
                    Event::Cooldown,
                    format!(
                        "a push was denied or not answered less than {} s ago",
                        limits.push_cooldown.as_secs()
                    ),
                )));
            }
        }
    }
    let lock = keys::user_lock(user);
    let Some(token) = store.try_lock(&lock, lock_ttl, now)? else {
        return Ok(Err(Decision::deny(
            Event::Cooldown,
            "another push to this user is still waiting for an answer",
        )));
    };
    if limits.max_pushes > 0 {
        let n = match store.incr(&keys::user_pushes(user), limits.push_window, now) {
            Ok(n) => n,
            Err(e) => {
                let _ = store.unlock(&lock, &token);
                return Err(e);
            }
        };
        if n > limits.max_pushes {
            let _ = store.unlock(&lock, &token);
            return Ok(Err(Decision::deny(
                Event::PushLimit,
                format!(
                    "{} pushes in {} s: no more until the window ends",
                    limits.max_pushes,
                    limits.push_window.as_secs()
                ),
            )));
        }
    }
    Ok(Ok(token))
}

/// A push reserved by [`reserve_push`] that never went out (Duo answered preauth without asking
/// for a factor, or could not be asked): give it back, so that an outage, a bypass or a user
/// without a device does not use up the user's pushes.
pub fn give_back_push(store: &dyn Store, limits: &Limits, user: &str, d: &Decision, now: i64) {
    let nothing_sent = matches!(
        d.event,
        Event::PreauthAllow
            | Event::PreauthDeny
            | Event::NotEnrolled
            | Event::FailOpen
            | Event::DuoUnreachable
    );
    if nothing_sent && limits.max_pushes > 0 {
        let _ = store.decr(&keys::user_pushes(user), now);
    }
}

/// Account for what the second factor did: cool-downs after a refused push, and sessions whose
/// passcode or SMS request is spent.
pub fn after_second_factor(
    store: &dyn Store,
    limits: &Limits,
    session: &str,
    user: &str,
    client: Option<&str>,
    now: i64,
    mut d: Decision,
) -> Decision {
    let event = d.event;
    let mut failures = Vec::new();
    let mut note = |r: Result<u64, StoreError>| {
        if let Err(e) = r {
            failures.push(e);
        }
    };
    if matches!(event, Event::PushDenied | Event::PushTimeout) && !limits.push_cooldown.is_zero() {
        if !session.is_empty() {
            note(store.incr(&keys::session_cooldown(session), limits.push_cooldown, now));
        }
        note(store.incr(&cooldown_key(user, client), limits.push_cooldown, now));
    }
    if matches!(
        event,
        Event::PasscodeDenied | Event::TotpDenied | Event::SmsSent
    ) && !session.is_empty()
    {
        note(store.incr(&keys::spent(session), SPENT, now));
    }
    for e in failures {
        d.note(format_args!("limit not recorded: {e}"));
    }
    d
}

/// The cool-down after a refused push holds the user *from the client that asked*: somebody
/// else who has the password cannot keep the real user's pushes blocked by having them denied.
/// (One outstanding push per user and the push cap stay per user.)
fn cooldown_key(user: &str, client: Option<&str>) -> String {
    match client {
        Some(c) => keys::pair_cooldown(user, c),
        None => keys::user_cooldown(user),
    }
}

/// Whether `uri` matches one of the `no_push_paths` patterns (`*` matches any run of characters).
pub fn no_push_path(limits: &Limits, uri: &str) -> bool {
    limits.no_push_paths.iter().any(|p| glob(p, uri))
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("/api/*", "/api/poll"));
        assert!(glob("/api/*", "/api/"));
        assert!(!glob("/api/*", "/apix"));
        assert!(glob("*.json", "/x/y.json"));
        assert!(!glob("*.json", "/x/y.jsonp"));
        assert!(glob("/a/*/b/*.js", "/a/1/2/b/c.js"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("/exact", "/exact/more"));
        assert!(glob("*", ""));
        assert!(!glob("/a*a", "/a"));
    }
}
