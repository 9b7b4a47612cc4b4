//! What the core answers: grant, deny, or pending (a second factor is out and the front-end asks
//! again later), with a stable event name, a reason for the log, and what the front-end must do
//! with the session cookie.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ports::LockToken;

/// What kind of decision: a stable name for logs, the audit log, metrics and tests; `reason`
/// adds the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// The password was right (a login form's first step: the second factor follows).
    LoginPassword,
    PasswordFailure,
    UnknownUser,
    NoCookie,
    /// Granted from the session store.
    CacheHit,
    /// Granted by the push of another request of the same session.
    ConcurrentApproval,
    PreauthAllow,
    PreauthDeny,
    NotEnrolled,
    /// A push (or call) is out; the answer is pending.
    PushSent,
    /// Another request of this session has a push out; this one waits for its answer.
    PushWaiting,
    PushApproved,
    PushDenied,
    PushTimeout,
    /// Duo answered with an error after preauth, or refused the request.
    DuoError,
    /// Duo could not be asked and the failmode is secure.
    DuoUnreachable,
    /// Duo could not be asked and the failmode is safe: granted on the password alone.
    FailOpen,
    StoreError,
    ConfigError,
    BadInput,
    Logout,
    /// Too many failed passwords for this user or client address: denied without a check.
    Banned,
    /// A push was denied or unanswered a moment ago: no new push yet.
    Cooldown,
    /// Too many pushes for this user in the window.
    PushLimit,
    /// A path that never sends a push, and no valid session.
    NoPushPath,
    PasscodeApproved,
    PasscodeDenied,
    SmsSent,
    TotpApproved,
    TotpDenied,
    /// A TOTP user gave no code.
    TotpRequired,
    /// Long-running mode: an access rule lets the request pass without a session.
    Bypass,
    /// Long-running mode: an access rule refuses the request.
    RuleDeny,
    /// Long-running mode: a session cookie that names no valid session.
    NoSession,
    /// Duo's Universal Prompt approved the sign-in (its `id_token` validated).
    PromptApproved,
    /// Duo's Universal Prompt did not approve it, or its answer was not valid.
    PromptDenied,
    /// The user directory (LDAP) could not be asked: denied, whatever the fail mode.
    DirectoryUnreachable,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::LoginPassword => "login_password",
            Event::PasswordFailure => "password_failure",
            Event::UnknownUser => "unknown_user",
            Event::NoCookie => "no_cookie",
            Event::CacheHit => "cache_hit",
            Event::ConcurrentApproval => "concurrent_approval",
            Event::PreauthAllow => "preauth_allow",
            Event::PreauthDeny => "preauth_deny",
            Event::NotEnrolled => "not_enrolled",
            Event::PushSent => "push_sent",
            Event::PushWaiting => "push_waiting",
            Event::PushApproved => "push_approved",
            Event::PushDenied => "push_denied",
            Event::PushTimeout => "push_timeout",
            Event::DuoError => "duo_error",
            Event::DuoUnreachable => "duo_unreachable",
            Event::FailOpen => "fail_open",
            Event::StoreError => "store_error",
            Event::ConfigError => "config_error",
            Event::BadInput => "bad_input",
            Event::Logout => "logout",
            Event::Banned => "banned",
            Event::Cooldown => "cooldown",
            Event::PushLimit => "push_limit",
            Event::NoPushPath => "no_push_path",
            Event::PasscodeApproved => "passcode_approved",
            Event::PasscodeDenied => "passcode_denied",
            Event::SmsSent => "sms_sent",
            Event::TotpApproved => "totp_approved",
            Event::TotpDenied => "totp_denied",
            Event::TotpRequired => "totp_required",
            Event::Bypass => "bypass",
            Event::RuleDeny => "rule_deny",
            Event::NoSession => "no_session",
            Event::PromptApproved => "prompt_approved",
            Event::PromptDenied => "prompt_denied",
            Event::DirectoryUnreachable => "directory_unreachable",
        }
    }
}

/// A second factor that is out: what the user should see, and what a later request needs to
/// resume it. Serializable, so a daemon can keep it in the store between requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub wait: PendingKind,
    /// Unix milliseconds after which the second factor has timed out.
    pub deadline_ms: i64,
    /// How soon to ask again.
    pub retry_after: Duration,
    /// What to show the user ("Push sent to iPhone (XXX-XXX-1234)").
    pub show: String,
    /// The device the push or call went to, as Duo names it, when known.
    pub device: Option<String>,
    /// The code of a Verified Duo Push, to show: the user types it into Duo Mobile.
    #[serde(default)]
    pub code: Option<String>,
}

/// Whose push a pending decision waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingKind {
    /// This request's own push or call: poll Duo with `txid`.
    Own(OwnPush),
    /// Another request of the same session holds its push lock: watch the store.
    Other,
}

/// A push (or call) this request sent, with what is needed to finish it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnPush {
    pub txid: String,
    /// A call rather than a push (for the messages).
    pub call: bool,
    /// The session's push lock, held until the answer (none when nothing is cached).
    pub session_lock: Option<LockToken>,
    /// The user's push lock (one outstanding push per user).
    pub user_lock: Option<LockToken>,
    /// The tag the approval is stored with.
    pub tag: String,
    /// Unix milliseconds when the second factor started: a logout of the session at or after
    /// it means its approval is not stored.
    pub started_ms: i64,
}

/// What the front-end does with the session cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The session token of the request is now approved: set it as the cookie, for this long.
    SetSession { max_age: Duration },
    /// The session is over: clear the cookie.
    ClearSession,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Grant,
    Deny,
    /// Not decided yet: ask again (see [`Pending`]).
    Pending(Box<Pending>),
}

/// What was decided and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub event: Event,
    pub reason: String,
    /// Pushes (or calls) this request sent to a phone.
    pub pushes: u32,
    /// The user a grant is for (from the session record when the request named none).
    pub user: Option<String>,
    pub effects: Vec<Effect>,
    /// A link for the user from Duo (the enrollment portal of a user who is not enrolled).
    pub link: Option<String>,
    /// The password was checked and right (whatever the second factor said): a front-end may
    /// then offer another second factor without asking for it again.
    pub password_verified: bool,
}

impl Decision {
    pub fn grant(event: Event, reason: impl Into<String>) -> Self {
        Decision::new(Outcome::Grant, event, reason)
    }

    pub fn deny(event: Event, reason: impl Into<String>) -> Self {
        Decision::new(Outcome::Deny, event, reason)
    }

    pub fn pending(event: Event, pending: Pending, reason: impl Into<String>) -> Self {
        Decision::new(Outcome::Pending(Box::new(pending)), event, reason)
    }

    fn new(outcome: Outcome, event: Event, reason: impl Into<String>) -> Self {
        Decision {
            outcome,
            event,
            reason: reason.into(),
            pushes: 0,
            user: None,
            effects: Vec::new(),
            link: None,
            password_verified: false,
        }
    }

    pub fn granted(&self) -> bool {
        self.outcome == Outcome::Grant
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.outcome, Outcome::Pending(_))
    }

    /// Granted without the second factor because Duo could not be asked (failmode safe).
    pub fn fail_open(&self) -> bool {
        self.granted() && self.event == Event::FailOpen
    }

    /// Add a note to the reason (something that went wrong beside the decision).
    pub fn note(&mut self, note: impl std::fmt::Display) {
        self.reason = format!("{} ({note})", self.reason);
    }

    pub(crate) fn pushed(mut self) -> Self {
        self.pushes = 1;
        self
    }

    pub(crate) fn for_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    pub(crate) fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    /// The outcome word of the log line and the audit record.
    pub fn outcome_str(&self) -> &'static str {
        match &self.outcome {
            Outcome::Grant if self.fail_open() => "GRANT-FAIL-OPEN",
            Outcome::Grant => "grant",
            Outcome::Deny => "deny",
            Outcome::Pending(_) => "pending",
        }
    }
}
