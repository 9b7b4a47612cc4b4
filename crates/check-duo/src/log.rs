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

/// What was decided and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: String,
    /// Granted without the second factor because Duo could not be asked (failmode safe).
    pub fail_open: bool,
}

impl Decision {
    pub fn grant(reason: impl Into<String>) -> Self {
        Decision {
            outcome: Outcome::Grant,
            reason: reason.into(),
            fail_open: false,
        }
    }

    pub fn deny(reason: impl Into<String>) -> Self {
        Decision {
            outcome: Outcome::Deny,
            reason: reason.into(),
            fail_open: false,
        }
    }

    pub fn granted(&self) -> bool {
        self.outcome == Outcome::Grant
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
        let outcome = match (self.decision.outcome, self.decision.fail_open) {
            (Outcome::Grant, true) => "GRANT-FAIL-OPEN",
            (Outcome::Grant, false) => "grant",
            (Outcome::Deny, _) => "deny",
        };
        let context = match self.context {
            Some(Context::Login) => "login",
            Some(Context::Logout) => "logout",
            Some(Context::Request) => "request",
            None => "-",
        };
        write!(
            f,
            "check-duo: user={:?} ip={:?} host={:?} uri={:?} context={} outcome={} reason={:?} duration_ms={}",
            self.user,
            self.ip,
            self.host,
            self.uri,
            context,
            outcome,
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
        let d = Decision::deny("wrong password");
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
        assert!(line.contains("outcome=deny reason=\"wrong password\" duration_ms=3"));
    }
}
