//! Brute-force and push-fatigue limits, kept in the session store so that every process (and,
//! with Redis, every web server) counts together.
//!
//! * Failed passwords (and refused passcodes) are counted per user and per client address; past
//!   the threshold within the window, requests are denied for the ban period without checking
//!   the password.
//! * After a denied or unanswered push, no new push for the session or the user during the
//!   cool-down; and no more than `max_pushes` per user per window. Beyond either, deny without
//!   asking Duo, so an app polling in the background cannot get the account locked at Duo.
//! * Paths listed in `no_push_paths` never send a push.

use std::time::Duration;

use crate::config::Limits;
use crate::log::{Decision, Event};
use crate::store::{Store, StoreError};

fn ban_keys(user: &str, ip: &str) -> [(String, &'static str); 2] {
    [
        (format!("ban:user:{user}"), "user"),
        (format!("ban:ip:{ip}"), "client address"),
    ]
}

/// A deny when the user or the client address is banned (or the store cannot tell).
pub fn banned(
    store: &mut dyn Store,
    limits: &Limits,
    user: &str,
    ip: &str,
    now: i64,
) -> Option<Decision> {
    if limits.ban.is_zero() {
        return None;
    }
    for (key, what) in ban_keys(user, ip) {
        if what == "client address" && ip.is_empty() {
            continue;
        }
        match store.count(&key, now) {
            Ok(0) => {}
            Ok(_) => {
                return Some(Decision::deny(
                    Event::Banned,
                    format!("{what} banned after too many failed passwords"),
                ))
            }
            Err(e) => {
                return Some(Decision::deny(
                    Event::StoreError,
                    format!("session store unavailable: {e}"),
                ))
            }
        }
    }
    None
}

/// Count a failed password (or passcode) for the user and the address, ban past the thresholds,
/// and return `deny` with what happened added to its reason.
pub fn record_failure(
    store: &mut dyn Store,
    limits: &Limits,
    user: &str,
    ip: &str,
    now: i64,
    mut deny: Decision,
) -> Decision {
    let checks = [
        (
            format!("fail:user:{user}"),
            limits.user_failures,
            format!("ban:user:{user}"),
            "user",
        ),
        (
            format!("fail:ip:{ip}"),
            limits.ip_failures,
            format!("ban:ip:{ip}"),
            "client address",
        ),
    ];
    for (counter, max, ban, what) in checks {
        if max == 0 || limits.ban.is_zero() || (what == "client address" && ip.is_empty()) {
            continue;
        }
        match store.incr(&counter, limits.failure_window, now) {
            Ok(n) if n >= max => match store.incr(&ban, limits.ban, now) {
                Ok(_) => {
                    deny.reason = format!(
                        "{}; {what} banned for {} s after {n} failures",
                        deny.reason,
                        limits.ban.as_secs()
                    )
                }
                Err(e) => deny.reason = format!("{} (ban not recorded: {e})", deny.reason),
            },
            Ok(_) => {}
            Err(e) => deny.reason = format!("{} (failure not counted: {e})", deny.reason),
        }
    }
    deny
}

/// The lock that keeps one push per user outstanding (sessions have their own).
pub fn user_lock(user: &str) -> String {
    format!("user:{user}")
}

/// How long a session's spent passcode or SMS request is remembered: the cookie replays the
/// typed text on every request until the user signs in again.
const SPENT: Duration = Duration::from_secs(7 * 86400);

fn spent_key(session_id: &str) -> String {
    format!("spent:{session_id}")
}

/// A deny when this session's passcode was already refused, or its SMS already sent: the
/// cookie carries the same text on every request, so asking again would only bother Duo (and
/// count failure after failure against the user).
pub fn spent(
    store: &mut dyn Store,
    session_id: &str,
    now: i64,
) -> Result<Option<Decision>, StoreError> {
    Ok((store.count(&spent_key(session_id), now)? > 0).then(|| {
        Decision::deny(
            Event::PasscodeDenied,
            "this session's passcode was refused or its SMS sent already: sign in again",
        )
    }))
}

/// Reserve a push (or call, or SMS) for `user`: `Some(deny)` when the session or the user is
/// cooling down after a refused push, another push of the user is still waiting for an answer,
/// or the user has had `max_pushes` pushes in the window. The reservation is counted before the
/// push goes out, so concurrent requests cannot all pass the check; on `Ok(None)` the caller
/// holds [`user_lock`] and releases it when the push is answered.
pub fn reserve_push(
    store: &mut dyn Store,
    limits: &Limits,
    session_id: &str,
    user: &str,
    lock_ttl: Duration,
    now: i64,
) -> Result<Option<Decision>, StoreError> {
    if !limits.push_cooldown.is_zero() {
        for key in [
            format!("cool:session:{session_id}"),
            format!("cool:user:{user}"),
        ] {
            if store.count(&key, now)? > 0 {
                return Ok(Some(Decision::deny(
                    Event::Cooldown,
                    format!(
                        "a push was denied or not answered less than {} s ago",
                        limits.push_cooldown.as_secs()
                    ),
                )));
            }
        }
    }
    if !store.try_lock(&user_lock(user), lock_ttl, now)? {
        return Ok(Some(Decision::deny(
            Event::Cooldown,
            "another push to this user is still waiting for an answer",
        )));
    }
    if limits.max_pushes > 0 {
        let n = match store.incr(&format!("pushes:user:{user}"), limits.push_window, now) {
            Ok(n) => n,
            Err(e) => {
                let _ = store.unlock(&user_lock(user));
                return Err(e);
            }
        };
        if n > limits.max_pushes {
            let _ = store.unlock(&user_lock(user));
            return Ok(Some(Decision::deny(
                Event::PushLimit,
                format!(
                    "{} pushes in {} s: no more until the window ends",
                    limits.max_pushes,
                    limits.push_window.as_secs()
                ),
            )));
        }
    }
    Ok(None)
}

/// Account for what the second factor did: cool-downs after a refused push, failures for
/// refused passcodes, and sessions whose passcode or SMS request is spent.
pub fn after_second_factor(
    store: &mut dyn Store,
    limits: &Limits,
    session_id: &str,
    user: &str,
    ip: &str,
    now: i64,
    mut d: Decision,
) -> Decision {
    let mut note = |r: Result<u64, StoreError>| {
        if let Err(e) = r {
            d.reason = format!("{} (limit not recorded: {e})", d.reason);
        }
    };
    if matches!(d.event, Event::PushDenied | Event::PushTimeout) && !limits.push_cooldown.is_zero()
    {
        note(store.incr(
            &format!("cool:session:{session_id}"),
            limits.push_cooldown,
            now,
        ));
        note(store.incr(&format!("cool:user:{user}"), limits.push_cooldown, now));
    }
    if matches!(
        d.event,
        Event::PasscodeDenied | Event::TotpDenied | Event::SmsSent
    ) {
        note(store.incr(&spent_key(session_id), SPENT, now));
    }
    if matches!(d.event, Event::PasscodeDenied | Event::TotpDenied) {
        return record_failure(store, limits, user, ip, now, d);
    }
    d
}

/// Whether `uri` matches one of the `no_push_paths` patterns (`*` matches any run of characters).
pub fn no_push_path(limits: &Limits, uri: &str) -> bool {
    limits.no_push_paths.iter().any(|p| glob(p, uri))
}

fn glob(pattern: &str, text: &str) -> bool {
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
