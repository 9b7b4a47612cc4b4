//! The one line per decision that goes to stderr, which Apache writes to its ErrorLog. It never
//! holds the password, the cookie, a store key or the skey; values from outside are quoted with
//! control characters escaped, so a user name cannot forge a log line.

use std::fmt;
use std::time::Duration;

use crate::input::Context;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Grant,
    Deny,
}

/// What kind of decision: a stable name for logs, the audit log and tests; `reason` adds the
/// details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `CONTEXT=login`: the password was right.
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
        }
    }
}

/// What was decided and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub event: Event,
    pub reason: String,
    /// Pushes (or calls) this request sent to a phone.
    pub pushes: u32,
}

impl Decision {
    pub fn grant(event: Event, reason: impl Into<String>) -> Self {
        Decision {
            outcome: Outcome::Grant,
            event,
            reason: reason.into(),
            pushes: 0,
        }
    }

    pub fn deny(event: Event, reason: impl Into<String>) -> Self {
        Decision {
            outcome: Outcome::Deny,
            event,
            reason: reason.into(),
            pushes: 0,
        }
    }

    pub fn granted(&self) -> bool {
        self.outcome == Outcome::Grant
    }

    /// Granted without the second factor because Duo could not be asked (failmode safe).
    pub fn fail_open(&self) -> bool {
        self.granted() && self.event == Event::FailOpen
    }
}

/// A log line: who, from where, what, the decision and how long it took.
pub struct Line<'a> {
    pub user: &'a str,
    pub ip: &'a str,
    pub host: &'a str,
    pub uri: &'a str,
    pub context: Option<&'a Context>,
    pub decision: &'a Decision,
    pub duration: Duration,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.decision.outcome {
            Outcome::Grant if self.decision.fail_open() => "GRANT-FAIL-OPEN",
            Outcome::Grant => "grant",
            Outcome::Deny => "deny",
        };
        let context = match self.context {
            Some(Context::Login) => "login",
            Some(Context::Logout) => "logout",
            Some(Context::Request) => "request",
            None => "-",
        };
        write!(
            f,
            "check-duo: user={:?} ip={:?} host={:?} uri={:?} context={} outcome={} event={} reason={:?} duration_ms={}",
            self.user,
            self.ip,
            self.host,
            self.uri,
            context,
            outcome,
            self.decision.event.as_str(),
            self.decision.reason,
            self.duration.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_injected_newlines() {
        let d = Decision::deny(Event::PasswordFailure, "wrong password");
        let line = Line {
            user: "eve\ncheck-duo: user=\"admin\" outcome=grant",
            ip: "1.2.3.4",
            host: "h",
            uri: "/x",
            context: Some(&Context::Request),
            decision: &d,
            duration: Duration::from_millis(3),
        }
        .to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains(
            "outcome=deny event=password_failure reason=\"wrong password\" duration_ms=3"
        ));
    }
}
