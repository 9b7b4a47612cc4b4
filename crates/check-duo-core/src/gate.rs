//! The decision, as two entry points every front-end can drive:
//!
//! * [`Gate::authorize`]: an existing session → grant, or nothing (a keyed lookup and an HMAC;
//!   no password hash, no Duo).
//! * [`Gate::authenticate`]: credentials and, where needed, a second factor → a session. Its
//!   stages read top to bottom: attempt reserved (bans) → password → paths that never push →
//!   the session's push lock → push limits → second factor (local TOTP or Duo). A push answers
//!   [`Outcome::Pending`]; [`Gate::resume`] picks it up from the same or a later request.
//!
//! [`Gate::drive`] runs both to the end within one call, as the pipe front-end needs. Every error
//! is a deny with its reason: the gate fails closed.

use std::time::Duration;

use crate::decision::{Decision, Effect, Event, Outcome, OwnPush, Pending, PendingKind};
use crate::duo::{self, Duo, Started};
use crate::factor::{self, Requested};
use crate::keys;
use crate::limits::{self, store_error};
use crate::password::{self, Credential};
use crate::policy::{DirectoryPolicy, Policy};
use crate::ports::{
    Clock, Directory, DirectoryAnswer, DirectoryCheck, DirectoryError, DuoApi, Entry, LockToken,
    Store, Wait,
};
use crate::request::Request;
use crate::totp;

/// The least time a failed password check takes: above the cost of any check a release build
/// makes (two argon2id verifications with default parameters), so that failures take the same
/// time whether the user exists, which hash it has and how many were tried.
pub const FAILURE_FLOOR: Duration = Duration::from_millis(500);

/// The longest a failed password is held back.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(8);

/// How long the `n`-th failure in the window (of this user from this client) takes at least:
/// the floor, doubled with every failure up to [`MAX_FAILURE_DELAY`]. Guessing slows down
/// long before a ban shuts the door.
pub fn failure_delay(n: u64) -> Duration {
    let doublings = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(8);
    (FAILURE_FLOOR * 2u32.pow(doublings)).min(MAX_FAILURE_DELAY)
}

/// Requests that may wait for one session's push at once; more are denied (each holds a worker
/// of the web server in the pipe mode).
pub const MAX_WAITERS: u64 = 32;

/// How soon a request waiting for a push asks again.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// How long an attempt waits for a place among those being checked.
const ATTEMPT_WAIT: Duration = Duration::from_secs(10);

/// The store keeps an entry this much longer than its lifetime (see [`Gate::approved`]).
const STORE_MARGIN: Duration = Duration::from_secs(1);

/// Locks outlive the push deadline by this much, so a crashed holder frees them.
const LOCK_MARGIN: Duration = Duration::from_secs(5);

const CONCURRENT_APPROVAL: &str = "approved by a concurrent request of the same session";

/// The rules with their ports. Cheap to build: references only.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    pub policy: &'a Policy,
    pub store: &'a dyn Store,
    pub duo: &'a dyn DuoApi,
    pub clock: &'a dyn Clock,
    pub wait: &'a dyn Wait,
    /// The user directory, where the policy has one (`Policy::directory`).
    pub directory: Option<&'a dyn Directory>,
}

/// Where a user's password is checked.
enum Source<'p> {
    /// The config (or the htpasswd file) lists the user.
    Config(&'p Credential),
    /// The directory is asked (the config does not list the user).
    Directory(&'p DirectoryPolicy),
    /// Nowhere: an unknown user.
    Unknown,
}

/// A directory user's session tag, as [`Gate::approved`] sees it.
#[derive(PartialEq, Eq)]
enum DirectoryTag {
    /// The tag is right and the directory accepted the user less than `recheck` ago.
    Fresh,
    /// The tag is right, but the directory is due to be asked again.
    Due,
    /// Not this user's and password's tag.
    Wrong,
}

/// What the warm path found.
enum Warm {
    /// A valid session: the grant.
    Hit(Decision),
    /// No valid session (and, when there was one that is not usable here, why).
    Miss(Option<String>),
    /// The store could not tell: the deny.
    Fail(Decision),
}

/// The parts of a request the stages share.
struct Subject<'r> {
    req: &'r Request,
    /// The store key of the session (a keyed hash of the token), if the request has one.
    session: Option<String>,
    client: Option<String>,
    /// The password as far as sessions are bound to it ("" when they are not).
    password: &'r str,
    /// A directory user's stamp (see [`DirectoryCheck::stamp`]), once the directory gave it.
    stamp: std::cell::RefCell<Option<String>>,
}

impl<'a> Gate<'a> {
    /// Where `user`'s password is checked: the config first, then the directory.
    fn source(&self, user: &str) -> Source<'a> {
        if let Some(cred) = self.policy.users.get(user) {
            return Source::Config(cred);
        }
        match &self.policy.directory {
            Some(dp) if !user.is_empty() => Source::Directory(dp),
            _ => Source::Unknown,
        }
    }

    fn caching(&self) -> bool {
        !self.policy.session.expiry.is_zero()
    }

    fn lock_ttl(&self) -> Duration {
        self.policy.factor.push_timeout + LOCK_MARGIN
    }

    fn subject<'r>(&self, req: &'r Request) -> Subject<'r> {
        let password = match &req.password {
            Some(p) if self.policy.session.bound_to_password => p.expose(),
            _ => "",
        };
        Subject {
            req,
            session: req
                .session
                .as_ref()
                .map(|t| self.policy.keys.session_id(t.expose())),
            client: req.client_key(self.policy.limits.ipv6_prefix),
            password,
            stamp: std::cell::RefCell::new(None),
        }
    }

    /// An existing session: `Some(grant)` when the request's session is approved for its user
    /// (and, in the pipe mode, its password), `Some(deny)` when the store cannot tell, `None`
    /// when there is no valid session. Before any ban: a valid session proves the password and
    /// the second factor, so nobody can lock its owner out.
    pub fn authorize(&self, req: &Request) -> Option<Decision> {
        match self.warm(req) {
            Warm::Hit(d) | Warm::Fail(d) => Some(d),
            Warm::Miss(_) => None,
        }
    }

    fn warm(&self, req: &Request) -> Warm {
        let s = self.subject(req);
        let (Some(token), Some(id)) = (&req.session, s.session.as_deref()) else {
            return Warm::Miss(None);
        };
        let bound = self.policy.session.bound_to_password;
        if !self.caching() || (bound && matches!(self.source(&req.user), Source::Unknown)) {
            return Warm::Miss(None);
        }
        let now = self.clock.unix();
        // The current key's id first; older keys' ids only when it is not found.
        let mut found = None;
        let ids = std::iter::once(id.to_string())
            .chain(self.policy.keys.older_session_ids(token.expose()));
        for (older, key) in ids.enumerate() {
            match self.approved(&key, &req.user, s.password, now) {
                Ok(Some(entry)) => {
                    found = Some((older > 0, key, entry));
                    break;
                }
                Ok(None) => {}
                Err(d) => return Warm::Fail(d),
            }
        }
        let Some((older, old_key, mut entry)) = found else {
            return self.recheck_directory(req, &s, id, now);
        };
        let mut notes = Vec::new();
        if older {
            // Filed under a key being retired: move it under the current one.
            entry.tag = self.retag(&entry, s.password);
            let ttl = self.entry_ttl(&entry, now);
            match self.store.put(id, &entry, ttl, now) {
                Ok(()) => {
                    let _ = self.store.delete(&old_key);
                    notes.push("session moved to the current key".to_string());
                }
                Err(e) => notes.push(format!("session not moved to the current key: {e}")),
            }
        }
        let user = entry.user.clone();
        let grant = || {
            let mut d = Decision::grant(Event::CacheHit, "cached session").for_user(&user);
            for n in &notes {
                d.note(n);
            }
            d
        };
        if entry.ip.trim() == req.ip.trim() {
            self.refresh_idle(id, entry, now);
            return Warm::Hit(grant());
        }
        // The session moves: say so every time, and refuse it outside its network when bound.
        let from = if entry.ip.is_empty() {
            "-".to_string()
        } else {
            entry.ip.clone()
        };
        if !self.in_network(&entry, req) {
            return Warm::Miss(Some(format!(
                "the session was approved from {from}, outside this client's network: not used"
            )));
        }
        let mut moved = entry;
        moved.ip = req.ip.clone();
        moved.last_seen = now;
        let ttl = self.entry_ttl(&moved, now);
        let mut d = grant();
        d.note(format_args!("client address changed from {from}"));
        if let Err(e) = self.store.put(id, &moved, ttl, now) {
            d.note(format_args!("new address not stored: {e}"));
        }
        Warm::Hit(d)
    }

    /// The password only, behind the brute-force limits: a login form's first step (the second
    /// factor follows with the next request).
    pub fn check_password(&self, req: &Request) -> Decision {
        let s = self.subject(req);
        match self.first_factor(&s) {
            Ok(_) => Decision::grant(
                Event::LoginPassword,
                "password accepted (login form; the second factor follows on the next request)",
            )
            .for_user(&req.user),
            Err(d) => d,
        }
    }

    /// A request without a valid session: the password, then the second factor. May answer
    /// [`Outcome::Pending`]; then call [`Gate::resume`].
    pub fn authenticate(&self, req: &Request) -> Decision {
        let s = self.subject(req);
        let requested = match self.first_factor(&s) {
            Ok(r) => r,
            Err(d) => return d,
        };
        let mut d = self.after_password(&s, requested);
        d.password_verified = true;
        d
    }

    /// The second factor alone, for a user whose password the front-end checked earlier in the
    /// same sign-in (a portal's "send another push", "call me", "enter a passcode"): every push
    /// and passcode limit applies; the password is not asked again. Only where sessions are not
    /// bound to the password (the tag of such a session holds none). May answer
    /// [`Outcome::Pending`].
    pub fn second_factor_only(&self, req: &Request, requested: Requested) -> Decision {
        if let Some(d) = self.refuse_without_password(req) {
            return d;
        }
        let s = self.subject(req);
        if let Err(d) = self.stamp_of(&s) {
            return d;
        }
        let mut d = self.after_password(&s, requested);
        d.password_verified = true;
        d
    }

    /// A directory user whose password was checked earlier in the sign-in: the stamp of the
    /// entry now (a lookup), for the session's tag; the user gone or the directory down denies.
    fn stamp_of(&self, s: &Subject<'_>) -> Result<(), Decision> {
        let (Source::Directory(dp), Some(dir)) = (self.source(&s.req.user), self.directory) else {
            return Ok(());
        };
        let deadline = self.clock.monotonic() + dp.timeout;
        match dir.lookup(&s.req.user, deadline) {
            Ok(DirectoryCheck {
                answer: DirectoryAnswer::Valid,
                stamp,
            }) => {
                *s.stamp.borrow_mut() = Some(stamp);
                Ok(())
            }
            Ok(_) => Err(Decision::deny(
                Event::UnknownUser,
                "no longer in the directory (or excluded by its filter)",
            )),
            Err(e) => Err(directory_unavailable(format_args!(
                "directory unavailable: {e}"
            ))),
        }
    }

    /// A second factor another party checked (Duo's Universal Prompt, whose answer the front-end
    /// validated): its decision `d` (a grant or a deny) finishes like a push's, and a grant is
    /// stored as the session of the request's token, unless the session was logged out since
    /// `started_ms` (when the front-end sent the user to the prompt). Only where sessions are
    /// not bound to the password.
    pub fn second_factor_done(&self, req: &Request, d: Decision, started_ms: i64) -> Decision {
        if let Some(d) = self.refuse_without_password(req) {
            return d;
        }
        let s = self.subject(req);
        if d.granted() {
            if let Err(deny) = self.stamp_of(&s) {
                return deny;
            }
        }
        let id = s.session.clone().unwrap_or_default();
        let own = OwnPush {
            txid: String::new(),
            call: false,
            session_lock: None,
            user_lock: None,
            tag: self.tag_for(&s),
            started_ms,
        };
        self.finish_factor(&s, &id, d, &own)
    }

    /// Why a second factor without the password may not be started or recorded here, if not.
    fn refuse_without_password(&self, req: &Request) -> Option<Decision> {
        if self.policy.session.bound_to_password {
            return Some(Decision::deny(
                Event::ConfigError,
                "a second factor without the password, where sessions are bound to it",
            ));
        }
        if matches!(self.source(&req.user), Source::Unknown) {
            return Some(Decision::deny(Event::UnknownUser, "unknown user"));
        }
        None
    }

    fn after_password(&self, s: &Subject<'_>, requested: Requested) -> Decision {
        let req = s.req;
        if limits::no_push_path(&self.policy.limits, &req.uri) {
            return Decision::deny(
                Event::NoPushPath,
                "no valid session, and this path never sends a push",
            );
        }
        let deadline_ms = self.clock.unix_ms().saturating_add(
            i64::try_from(self.policy.factor.push_timeout.as_millis()).unwrap_or(i64::MAX / 4),
        );
        let Some(id) = s.session.clone().filter(|_| self.caching()) else {
            // Nothing cached (expiry 0, or no session): the second factor on every request.
            let id = s.session.clone().unwrap_or_default();
            return self.second_factor(s, &id, &requested, None, deadline_ms);
        };

        // One push per session: the first request takes the lock and asks Duo; concurrent
        // requests of the same session wait for its answer in the store.
        let now = self.clock.unix();
        let lock = match self
            .store
            .try_lock(&keys::session_lock(&id), self.lock_ttl(), now)
        {
            Ok(Some(token)) => token,
            Ok(None) => {
                let waiters = keys::session_waiters(&id);
                match self.store.incr(&waiters, self.lock_ttl(), now) {
                    Ok(n) if n > MAX_WAITERS => {
                        let _ = self.store.decr(&waiters, now);
                        return Decision::deny(
                            Event::PushWaiting,
                            format!("{MAX_WAITERS} requests already wait for this session's push"),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return store_error(e),
                }
                return Decision::pending(
                    Event::PushWaiting,
                    Pending {
                        wait: PendingKind::Other,
                        deadline_ms,
                        retry_after: POLL_EVERY,
                        show: "A push for this session is out: approve it on your phone".into(),
                        device: None,
                        code: None,
                    },
                    "another request of this session is asking Duo",
                );
            }
            Err(e) => return store_error(e),
        };
        // A request that held the lock may have stored its approval after our first look.
        if let Ok(Some(_)) = self.approved_here(&id, s, now) {
            let _ = self.store.unlock(&keys::session_lock(&id), &lock);
            return Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL)
                .for_user(&req.user);
        }
        self.second_factor(s, &id, &requested, Some(lock), deadline_ms)
    }

    /// Pick up a pending second factor: ask Duo (or the store) once more.
    pub fn resume(&self, req: &Request, pending: &Pending) -> Decision {
        let s = self.subject(req);
        match &pending.wait {
            PendingKind::Other => self.wait_for_other(&s, pending),
            PendingKind::Own(own) => {
                let duo = self.duo_step();
                match duo::poll(&duo, &own.txid, pending.deadline_ms) {
                    duo::Polled::Done(d) => {
                        let id = s.session.clone().unwrap_or_default();
                        self.finish_factor(&s, &id, d, own)
                    }
                    duo::Polled::Waiting(code) => Decision::pending(
                        Event::PushSent,
                        Pending {
                            retry_after: POLL_EVERY,
                            code: code.or_else(|| pending.code.clone()),
                            ..pending.clone()
                        },
                        "push not answered yet",
                    ),
                }
            }
        }
    }

    /// Authorize, else authenticate, and resume until decided: one call for front-ends that
    /// hold the request open (the pipe mode).
    pub fn drive(&self, req: &Request) -> Decision {
        let why = match self.warm(req) {
            Warm::Hit(d) | Warm::Fail(d) => return d,
            Warm::Miss(why) => why,
        };
        let mut d = self.authenticate(req);
        while let Outcome::Pending(p) = &d.outcome {
            let p = p.clone();
            self.wait.wait(p.retry_after);
            d = self.resume(req, &p);
        }
        if let Some(why) = why {
            d.note(why);
        }
        d
    }

    /// End the session on the server. The time of the logout is kept for a push deadline, so an
    /// approval that arrives later for a second factor started before it is not stored.
    pub fn logout(&self, req: &Request) -> Decision {
        let s = self.subject(req);
        let Some(id) = s.session else {
            return Decision::deny(Event::Logout, "logout: no session cookie");
        };
        let now = self.clock.unix();
        let at = u64::try_from(self.clock.unix_ms()).unwrap_or(0);
        let older: Vec<String> = match &req.session {
            Some(t) => self.policy.keys.older_session_ids(t.expose()).collect(),
            None => Vec::new(),
        };
        let d = match self
            .store
            .set(&keys::logouts(&id), at, self.lock_ttl(), now)
            .and_then(|()| self.store.delete(&id))
            .and_then(|deleted| {
                let mut any = deleted;
                for key in &older {
                    any |= self.store.delete(key)?;
                }
                Ok(any)
            }) {
            Ok(true) => Decision::deny(Event::Logout, "logout: session ended"),
            Ok(false) => Decision::deny(Event::Logout, "logout: no cached session"),
            Err(e) => Decision::deny(
                Event::StoreError,
                format!("logout: session store unavailable: {e}"),
            ),
        };
        d.with(Effect::ClearSession)
    }

    /// Reserve an attempt, waiting (never checking) while others fill the threshold: a page of
    /// many requests with the right password passes a few at a time; a burst of wrong ones
    /// ends in a ban that denies the waiting rest.
    fn reserve(&self, s: &Subject<'_>) -> Result<limits::Attempt, Decision> {
        let limits = &self.policy.limits;
        let give_up = self.clock.monotonic() + ATTEMPT_WAIT;
        loop {
            let now = self.clock.unix();
            match limits::reserve_attempt(self.store, limits, &s.req.user, s.client.as_deref(), now)
            {
                Ok(a) => return Ok(a),
                Err(limits::Refused::Deny(d)) => return Err(d),
                Err(limits::Refused::Busy) if self.clock.monotonic() >= give_up => {
                    return Err(Decision::deny(
                        Event::Banned,
                        "too many attempts of this user or client are being checked: not checked",
                    ))
                }
                Err(limits::Refused::Busy) => self.wait.wait(POLL_EVERY),
            }
        }
    }

    /// Bans, then the password, with the attempt reserved before the check.
    fn first_factor(&self, s: &Subject<'_>) -> Result<Requested, Decision> {
        let limits = &self.policy.limits;
        let now = self.clock.unix();
        let attempt = self.reserve(s)?;
        let started = self.clock.monotonic();
        let password = s.req.password.as_ref().map_or("", |p| p.expose());
        let result = match self.source(&s.req.user) {
            Source::Config(cred) => factor::check_password(cred, password)
                .ok_or_else(|| Decision::deny(Event::PasswordFailure, "wrong password")),
            Source::Directory(dp) => self.directory_password(dp, s, password),
            Source::Unknown => {
                password::verify_unknown_user(password);
                Err(Decision::deny(Event::UnknownUser, "unknown user"))
            }
        };
        match result {
            Ok(requested) => {
                limits::give_back(self.store, attempt, now);
                Ok(requested)
            }
            // Not the user's failure: not counted, not delayed.
            Err(deny) if deny.event == Event::DirectoryUnreachable => {
                limits::give_back(self.store, attempt, now);
                Err(deny)
            }
            Err(deny) => {
                let (deny, failures) =
                    limits::failed_counting(self.store, limits, attempt, now, deny);
                let spent = self.clock.monotonic().saturating_duration_since(started);
                self.wait
                    .wait(failure_delay(failures).saturating_sub(spent));
                Err(deny)
            }
        }
    }

    fn duo_step(&self) -> Duo<'a> {
        Duo {
            api: self.duo,
            clock: self.clock,
            wait: self.wait,
            policy: &self.policy.factor,
        }
    }

    /// The second factor, behind the push limits: local TOTP for users who have a secret, Duo
    /// for everybody else. `id` is the session key ("" when nothing is cached).
    fn second_factor(
        &self,
        s: &Subject<'_>,
        id: &str,
        requested: &Requested,
        session_lock: Option<LockToken>,
        deadline_ms: i64,
    ) -> Decision {
        let now = self.clock.unix();
        let mut own = OwnPush {
            txid: String::new(),
            call: false,
            session_lock,
            user_lock: None,
            tag: self.tag_for(s),
            started_ms: self.clock.unix_ms(),
        };
        if matches!(requested, Requested::Passcode(_) | Requested::Sms) && !id.is_empty() {
            match limits::spent(self.store, id, now) {
                Ok(None) => {}
                Ok(Some(d)) => return self.release(id, d, &own),
                Err(e) => return self.release(id, store_error(e), &own),
            }
        }
        if let Some(secret) = self.policy.totp.get(&s.req.user) {
            let d = self.local_totp(s, secret, requested, now);
            return self.finish_factor(s, id, d, &own);
        }
        let reaches_phone = !matches!(requested, Requested::Passcode(_));
        if reaches_phone {
            let limits = &self.policy.limits;
            let client = s.client.as_deref();
            let ttl = self.lock_ttl();
            match limits::reserve_push(self.store, limits, id, &s.req.user, client, ttl, now) {
                Ok(Ok(token)) => own.user_lock = Some(token),
                Ok(Err(d)) => return self.release(id, d, &own),
                Err(e) => return self.release(id, store_error(e), &own),
            }
        }
        // A passcode is a guess like a password: reserved before Duo sees it.
        let attempt = match requested {
            Requested::Passcode(_) => match self.reserve(s) {
                Ok(a) => Some(a),
                Err(d) => return self.release(id, d, &own),
            },
            _ => None,
        };
        let duo = self.duo_step();
        match duo::start(&duo, s.req, requested, deadline_ms) {
            Started::Done(d) => {
                if own.user_lock.is_some() {
                    limits::give_back_push(self.store, &self.policy.limits, &s.req.user, &d, now);
                }
                let d = match attempt {
                    Some(a) if d.event == Event::PasscodeDenied => {
                        limits::failed(self.store, &self.policy.limits, a, now, d)
                    }
                    Some(a) => {
                        limits::give_back(self.store, a, now);
                        d
                    }
                    None => d,
                };
                self.finish_factor(s, id, d, &own)
            }
            Started::Sent { txid, call, device } => {
                own.txid = txid;
                own.call = call;
                let what = if call { "Calling" } else { "Push sent to" };
                let show = match &device {
                    Some(d) => format!("{what} {d}"),
                    None => format!("{what} your phone"),
                };
                Decision::pending(
                    Event::PushSent,
                    Pending {
                        wait: PendingKind::Own(own),
                        deadline_ms,
                        retry_after: Duration::ZERO,
                        show,
                        device,
                        code: None,
                    },
                    if call { "call placed" } else { "push sent" },
                )
                .pushed()
            }
        }
    }

    /// RFC 6238 against the secret in the config; a code is good once, behind the attempt
    /// limits like a password.
    fn local_totp(
        &self,
        s: &Subject<'_>,
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
        let limits = &self.policy.limits;
        let attempt = match self.reserve(s) {
            Ok(a) => a,
            Err(d) => return d,
        };
        let Some(step) = totp::verify(secret, code, now) else {
            let d = Decision::deny(Event::TotpDenied, "wrong or expired TOTP code");
            return limits::failed(self.store, limits, attempt, now, d);
        };
        // A code is good once, and never after a later one (RFC 6238 §5.2): accepting step s
        // also spends the steps before it that are still inside the ±1 window.
        let used = |step: i64| keys::totp_used(&s.req.user, step);
        match self.store.incr(&used(step), Duration::from_secs(120), now) {
            Ok(1) => {}
            Ok(_) => {
                let d = Decision::deny(Event::TotpDenied, "TOTP code already used");
                return limits::failed(self.store, limits, attempt, now, d);
            }
            Err(e) => return store_error(e),
        }
        for earlier in [step - 1, step - 2] {
            if let Err(e) = self
                .store
                .incr(&used(earlier), Duration::from_secs(120), now)
            {
                return store_error(e);
            }
        }
        limits::give_back(self.store, attempt, now);
        Decision::grant(Event::TotpApproved, "TOTP code accepted")
    }

    /// After the second factor answered: account for it, release the user's push lock, store
    /// the approval (unless the session was logged out meanwhile), release the session's lock.
    fn finish_factor(&self, s: &Subject<'_>, id: &str, d: Decision, own: &OwnPush) -> Decision {
        let now = self.clock.unix();
        let limits = &self.policy.limits;
        let client = s.client.as_deref();
        let mut d =
            limits::after_second_factor(self.store, limits, id, &s.req.user, client, now, d);
        if let Some(token) = &own.user_lock {
            if let Err(e) = self.store.unlock(&keys::user_lock(&s.req.user), token) {
                d.note(format_args!("user push lock not released: {e}"));
            }
        }
        if d.granted() {
            d = d.for_user(&s.req.user);
        }
        if d.granted() && !d.fail_open() && !id.is_empty() && self.caching() {
            d = self.store_approval(s, id, own, d);
        }
        self.release(id, d, own)
    }

    /// Release the session's push lock, if held.
    fn release(&self, id: &str, mut d: Decision, own: &OwnPush) -> Decision {
        if let Some(token) = &own.session_lock {
            if let Err(e) = self.store.unlock(&keys::session_lock(id), token) {
                d.note(format_args!("push lock not released: {e}"));
            }
        }
        d
    }

    fn store_approval(
        &self,
        s: &Subject<'_>,
        id: &str,
        own: &OwnPush,
        mut d: Decision,
    ) -> Decision {
        let now = self.clock.unix();
        let tag = &own.tag;
        // A logout at or after the start of this second factor: it wins.
        let started = u64::try_from(own.started_ms).unwrap_or(0);
        let revoked = |store: &dyn Store| {
            store
                .count(&keys::logouts(id), now)
                .map(|at| at > 0 && at >= started)
        };
        let logged_out = || {
            Decision::deny(
                Event::Logout,
                "the session was logged out while its second factor was out: not approved",
            )
        };
        match revoked(self.store) {
            Ok(false) => {}
            Ok(true) => return logged_out(),
            Err(e) => return store_error(e),
        }
        let entry = Entry {
            user: s.req.user.clone(),
            approved_at: now,
            tag: tag.to_string(),
            ip: s.req.ip.clone(),
            last_seen: now,
            factor: factor_used(&d, own).to_string(),
        };
        let ttl = self.entry_ttl(&entry, now);
        match self.store.put(id, &entry, ttl, now) {
            Ok(()) => {}
            Err(e) => {
                // Granted now; the next request will ask again. Say so.
                d.note(format_args!("not cached: {e}"));
                return d;
            }
        }
        // A logout between the first look and the write: it wins.
        match revoked(self.store) {
            Ok(false) => d.with(Effect::SetSession {
                max_age: ttl.saturating_sub(STORE_MARGIN),
            }),
            Ok(true) | Err(_) => {
                let _ = self.store.delete(id);
                logged_out()
            }
        }
    }

    /// Another request of this session is asking Duo: has its approval landed in the store?
    fn wait_for_other(&self, s: &Subject<'_>, pending: &Pending) -> Decision {
        let d = self.look_for_other(s, pending);
        if !d.is_pending() {
            if let Some(id) = s.session.as_deref() {
                // One waiter less (a waiter that never comes back expires with the lock's TTL).
                let _ = self
                    .store
                    .decr(&keys::session_waiters(id), self.clock.unix());
            }
        }
        d
    }

    fn look_for_other(&self, s: &Subject<'_>, pending: &Pending) -> Decision {
        let granted = || {
            Decision::grant(Event::ConcurrentApproval, CONCURRENT_APPROVAL).for_user(&s.req.user)
        };
        let Some(id) = s.session.as_deref() else {
            return Decision::deny(Event::NoCookie, "no session to wait for");
        };
        let now = self.clock.unix();
        match self.approved_here(id, s, now) {
            Ok(Some(_)) => return granted(),
            Ok(None) => {}
            Err(d) => return d,
        }
        match self.store.locked(&keys::session_lock(id), now) {
            // The lock is gone and no approval was stored: that push was not approved.
            Ok(false) => {
                if let Ok(Some(_)) = self.approved_here(id, s, now) {
                    return granted();
                }
                return Decision::deny(
                    Event::PushDenied,
                    "the concurrent push of this session was not approved",
                );
            }
            Ok(true) => {}
            Err(e) => return store_error(e),
        }
        let next = self.clock.unix_ms()
            + i64::try_from(pending.retry_after.as_millis()).unwrap_or(i64::MAX / 4);
        if next >= pending.deadline_ms {
            return Decision::deny(
                Event::PushTimeout,
                "waited for the concurrent push of this session until the deadline",
            );
        }
        Decision::pending(
            Event::PushWaiting,
            pending.clone(),
            "another request of this session is asking Duo",
        )
    }

    /// [`Gate::approved`], and usable from this client's network when sessions are bound to one.
    fn approved_here(
        &self,
        id: &str,
        s: &Subject<'_>,
        now: i64,
    ) -> Result<Option<Entry>, Decision> {
        let entry = self.approved(id, &s.req.user, s.password, now)?;
        Ok(entry.filter(|e| self.in_network(e, s.req)))
    }

    /// Whether the session may be used from the request's address.
    fn in_network(&self, entry: &Entry, req: &Request) -> bool {
        let Some(bind) = &self.policy.session.bind_network else {
            return true;
        };
        if entry.ip.trim() == req.ip.trim() {
            return true;
        }
        match (entry.ip.trim().parse(), req.addr()) {
            (Ok(old), Some(new)) => bind.same_network(old, new),
            _ => false,
        }
    }

    /// The tag of a new approval of `user` (under the current key). A directory user's tag
    /// carries the time the directory accepted the user (now: the password was just checked).
    fn tag_for(&self, s: &Subject<'_>) -> String {
        let (user, password) = (s.req.user.as_str(), s.password);
        match self.source(user) {
            Source::Config(cred) => self.policy.keys.tag(user, password, cred.fingerprint()),
            Source::Directory(_) => {
                let stamp = stamp_digest(s.stamp.borrow().as_deref().unwrap_or(""));
                self.directory_tag(user, password, self.clock.unix(), &stamp)
            }
            Source::Unknown => self.policy.keys.tag(user, password, ""),
        }
    }

    /// The tag of `entry` under the current key: a directory user's keeps the time the
    /// directory last accepted the user (moving a session to the new key is no re-check).
    fn retag(&self, entry: &Entry, password: &str) -> String {
        match (self.source(&entry.user), parse_directory_tag(&entry.tag)) {
            (Source::Directory(_), Some((checked, stamp, _))) => {
                self.directory_tag(&entry.user, password, checked, stamp)
            }
            (Source::Config(cred), _) => {
                self.policy
                    .keys
                    .tag(&entry.user, password, cred.fingerprint())
            }
            _ => self.policy.keys.tag(&entry.user, password, ""),
        }
    }

    /// `d{checked}.{stamp}.{tag}`: the tag over user, password, the time `checked` (Unix
    /// seconds) the directory last accepted the user and the digest of the entry's stamp. Time
    /// and stamp are in the clear, and the keyed tag covers them: whoever can write the store
    /// can move neither.
    fn directory_tag(&self, user: &str, password: &str, checked: i64, stamp: &str) -> String {
        let mac = self
            .policy
            .keys
            .tag(user, password, &format!("directory:{checked}:{stamp}"));
        format!("d{checked}.{stamp}.{mac}")
    }

    fn directory_tag_state(
        &self,
        dp: &DirectoryPolicy,
        entry: &Entry,
        password: &str,
        now: i64,
    ) -> DirectoryTag {
        let Some((checked, stamp, mac)) = parse_directory_tag(&entry.tag) else {
            return DirectoryTag::Wrong;
        };
        let credential = format!("directory:{checked}:{stamp}");
        if !self
            .policy
            .keys
            .tag_matches(mac, &entry.user, password, &credential)
        {
            return DirectoryTag::Wrong;
        }
        if secs(now.saturating_sub(checked)) < dp.recheck {
            DirectoryTag::Fresh
        } else {
            DirectoryTag::Due
        }
    }

    /// A directory user's password: a bind as the user (with the factor suffix split off, then
    /// whole, as for the config's users). An empty password is refused here, before any call:
    /// to a directory it would be an unauthenticated bind, which many servers accept.
    fn directory_password(
        &self,
        dp: &DirectoryPolicy,
        s: &Subject<'_>,
        password: &str,
    ) -> Result<Requested, Decision> {
        let deadline = self.clock.monotonic() + dp.timeout;
        match self.directory_bind(&s.req.user, password, deadline) {
            Ok((
                DirectoryCheck {
                    answer: DirectoryAnswer::Valid,
                    stamp,
                },
                requested,
            )) => {
                *s.stamp.borrow_mut() = Some(stamp);
                Ok(requested)
            }
            Ok((
                DirectoryCheck {
                    answer: DirectoryAnswer::UnknownUser,
                    ..
                },
                _,
            )) => Err(Decision::deny(
                Event::UnknownUser,
                "unknown user (not in the directory, or excluded by its filter)",
            )),
            Ok((_, _)) if password.is_empty() => Err(Decision::deny(
                Event::PasswordFailure,
                "empty password (never sent to the directory)",
            )),
            Ok((_, _)) => Err(Decision::deny(
                Event::PasswordFailure,
                "wrong password (the directory refused the bind)",
            )),
            Err(e) => Err(directory_unavailable(format_args!(
                "directory unavailable: {e}"
            ))),
        }
    }

    /// Bind as `user` with `password`, its factor suffix split off first; the answer and the
    /// factor asked for. Never sends an empty password.
    fn directory_bind(
        &self,
        user: &str,
        password: &str,
        deadline: std::time::Instant,
    ) -> Result<(DirectoryCheck, Requested), DirectoryError> {
        let Some(dir) = self.directory else {
            return Err(DirectoryError("no directory client configured".into()));
        };
        let mut tries = Vec::with_capacity(2);
        if let Some((base, requested)) = factor::split(password) {
            tries.push((base, requested));
        }
        tries.push((password, Requested::Default));
        for (pw, requested) in tries {
            if pw.is_empty() {
                continue;
            }
            let check = dir.verify(user, pw, deadline)?;
            if check.answer != DirectoryAnswer::WrongPassword {
                return Ok((check, requested));
            }
        }
        Ok((
            DirectoryCheck::new(DirectoryAnswer::WrongPassword, ""),
            Requested::Default,
        ))
    }

    /// A directory user's session whose tag is right but due for its re-check: ask the
    /// directory again (a bind with the password where sessions are bound to it, a lookup of
    /// the user where they are not). Accepted: the session goes on under a new tag. Refused:
    /// the session ends. The directory down: a deny that says so.
    fn recheck_directory(&self, req: &Request, s: &Subject<'_>, id: &str, now: i64) -> Warm {
        let Some(dp) = &self.policy.directory else {
            return Warm::Miss(None);
        };
        let mut entry = match self.store.get(id, now) {
            Ok(Some(e)) => e,
            Ok(None) => return Warm::Miss(None),
            Err(e) => return Warm::Fail(store_error(e)),
        };
        let session = &self.policy.session;
        let bound = session.bound_to_password;
        let any_user = req.user.is_empty() && !bound;
        let age = now.saturating_sub(entry.approved_at);
        let idle = now.saturating_sub(entry.last_seen.max(entry.approved_at));
        if !(any_user || entry.user == req.user)
            || !matches!(self.source(&entry.user), Source::Directory(_))
            || self.directory_tag_state(dp, &entry, s.password, now) != DirectoryTag::Due
            || secs(age) >= session.expiry
            || session.idle_timeout.is_some_and(|t| secs(idle) >= t)
            || !self.in_network(&entry, req)
        {
            return Warm::Miss(None);
        }
        let deadline = self.clock.monotonic() + dp.timeout;
        let answer = if bound {
            self.directory_bind(&entry.user, s.password, deadline)
                .map(|(a, _)| a)
        } else {
            match self.directory {
                Some(dir) => dir.lookup(&entry.user, deadline),
                None => Err(DirectoryError("no directory client configured".into())),
            }
        };
        let stamp = parse_directory_tag(&entry.tag).map_or("", |(_, st, _)| st);
        match answer {
            Ok(DirectoryCheck {
                answer: DirectoryAnswer::Valid,
                stamp: now_stamp,
            }) if stamp_digest(&now_stamp) != stamp => {
                let _ = self.store.delete(id);
                Warm::Miss(Some(
                    "the user's entry changed in the directory (its stamp): session ended".into(),
                ))
            }
            Ok(DirectoryCheck {
                answer: DirectoryAnswer::Valid,
                ..
            }) => {
                let stamp = stamp.to_string();
                entry.tag = self.directory_tag(&entry.user, s.password, now, &stamp);
                let ttl = self.entry_ttl(&entry, now);
                let mut d = Decision::grant(Event::CacheHit, "cached session")
                    .for_user(&entry.user);
                d.note("re-checked with the directory");
                if let Err(e) = self.store.put(id, &entry, ttl, now) {
                    d.note(format_args!("re-check not stored: {e}"));
                }
                Warm::Hit(d)
            }
            Ok(_) => {
                let _ = self.store.delete(id);
                Warm::Miss(Some(
                    "the directory no longer accepts this user or password: session ended".into(),
                ))
            }
            Err(e) => Warm::Fail(
                directory_unavailable(format_args!(
                    "the session is due for its directory re-check, and the directory is unavailable: {e}"
                ))
                .for_user(&entry.user),
            ),
        }
    }

    /// The approval of session `id` for this user (any user, when sessions are not bound to the
    /// password and the request names none) and password, if its user's credential is still
    /// the one it was approved with and it is within the lifetimes the policy sets now (not
    /// those it had when it was approved).
    fn approved(
        &self,
        id: &str,
        user: &str,
        password: &str,
        now: i64,
    ) -> Result<Option<Entry>, Decision> {
        let entry = self.store.get(id, now).map_err(store_error)?;
        let session = &self.policy.session;
        let any_user = user.is_empty() && !session.bound_to_password;
        Ok(entry.filter(|e| {
            let age = now.saturating_sub(e.approved_at);
            let idle = now.saturating_sub(e.last_seen.max(e.approved_at));
            let tag_ok = match self.source(&e.user) {
                Source::Config(cred) => {
                    self.policy
                        .keys
                        .tag_matches(&e.tag, &e.user, password, cred.fingerprint())
                }
                Source::Directory(dp) => {
                    self.directory_tag_state(dp, e, password, now) == DirectoryTag::Fresh
                }
                Source::Unknown => false,
            };
            (any_user || e.user == user)
                && tag_ok
                // Whole seconds, as the stores count: a lifetime of n s lasts between n - 1 and n.
                && secs(age) < session.expiry
                && session.idle_timeout.is_none_or(|t| secs(idle) < t)
        }))
    }

    /// How long the store keeps an entry from `now`: the rest of the absolute expiry, shortened
    /// to the idle timeout when one is set, and a second more, so that the store never drops an
    /// entry before [`Gate::approved`] would (the rule is the policy's, checked on every read;
    /// the store's TTL only cleans up).
    fn entry_ttl(&self, entry: &Entry, now: i64) -> Duration {
        let session = &self.policy.session;
        let expiry = i64::try_from(session.expiry.as_secs()).unwrap_or(i64::MAX / 2);
        let left =
            Duration::from_secs(u64::try_from(entry.approved_at + expiry - now).unwrap_or(0));
        let ttl = match session.idle_timeout {
            Some(idle) => left.min(idle),
            None => left,
        };
        ttl + STORE_MARGIN
    }

    /// With an idle timeout, a used session is written again with a fresh TTL — at most once
    /// per tenth of the timeout, so the warm path stays a read.
    fn refresh_idle(&self, id: &str, mut entry: Entry, now: i64) {
        let Some(idle) = self.policy.session.idle_timeout else {
            return;
        };
        let every = i64::try_from((idle / 10).as_secs().max(1)).unwrap_or(i64::MAX);
        if now - entry.last_seen.max(entry.approved_at) < every {
            return;
        }
        entry.last_seen = now;
        let ttl = self.entry_ttl(&entry, now);
        // A failed refresh only shortens the session: not worth a deny.
        let _ = self.store.put(id, &entry, ttl, now);
    }
}

/// The second factor a granted decision was made with, as a session records it: `push`,
/// `phone` (a call), `passcode` (Duo's), `totp` (the local code), `prompt` (Duo's Universal
/// Prompt) or `preauth_allow` (Duo's policy let the user in without one).
pub fn factor_used(d: &Decision, own: &OwnPush) -> &'static str {
    match d.event {
        Event::PushApproved if own.call => "phone",
        Event::PushApproved | Event::ConcurrentApproval => "push",
        Event::PasscodeApproved => "passcode",
        Event::TotpApproved => "totp",
        Event::PromptApproved => "prompt",
        Event::PreauthAllow => "preauth_allow",
        _ => "",
    }
}

/// `(checked, stamp, tag)` of a directory user's session tag.
fn parse_directory_tag(tag: &str) -> Option<(i64, &str, &str)> {
    let mut parts = tag.strip_prefix('d')?.splitn(3, '.');
    let checked = parts.next()?.parse().ok()?;
    Some((checked, parts.next()?, parts.next()?))
}

/// What a session's tag keeps of a directory stamp: a short digest (the tag stays short, and
/// holds nothing of the entry), or nothing when there is no stamp.
fn stamp_digest(stamp: &str) -> String {
    use sha2::Digest as _;
    if stamp.is_empty() {
        return String::new();
    }
    let d = sha2::Sha256::digest(stamp.as_bytes());
    hex::encode(&d[..8])
}

fn directory_unavailable(why: impl std::fmt::Display) -> Decision {
    Decision::deny(Event::DirectoryUnreachable, why.to_string())
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
