//! The last step of every decision, shared by every front-end: the audit record (where
//! configured; a grant whose record could not be written becomes a deny when the audit is
//! required) and the one log line. Neither ever holds the password, the cookie, a store key or a
//! secret; values from outside are quoted with control characters escaped, so a user name
//! cannot forge a line.

use std::fmt;
use std::time::Duration;

use crate::decision::{Decision, Outcome};
use crate::ports::AuditSink;

/// Who asked for what, as the front-end saw it.
#[derive(Clone, Copy)]
pub struct About<'a> {
    pub user: &'a str,
    pub ip: &'a str,
    pub host: &'a str,
    pub uri: &'a str,
    /// Where in the front-end it was decided (`login`, `logout`, `request`, …; `-` for none).
    pub context: &'a str,
}

impl<'a> About<'a> {
    pub fn record(&self, decision: &'a Decision, duration: Duration) -> Record<'a> {
        Record {
            about: *self,
            decision,
            duration,
        }
    }
}

/// One decision as logged: who, from where, what, the decision and how long it took.
pub struct Record<'a> {
    pub about: About<'a>,
    pub decision: &'a Decision,
    pub duration: Duration,
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "check-duo: user={:?} ip={:?} host={:?} uri={:?} context={} outcome={} event={} reason={:?} duration_ms={}",
            self.about.user,
            self.about.ip,
            self.about.host,
            self.about.uri,
            self.about.context,
            self.decision.outcome_str(),
            self.decision.event.as_str(),
            self.decision.reason,
            self.duration.as_millis()
        )
    }
}

/// Write the audit record of `decision` (if `audit` is given) and return the decision as it
/// stands after that: an audit failure never turns a deny into a grant; it turns a grant into a
/// deny when `required`, and is noted in the reason otherwise. The caller logs the returned
/// decision ([`Record`]'s `Display` is the line).
pub fn finish(
    mut decision: Decision,
    audit: Option<(&dyn AuditSink, bool)>,
    about: &About<'_>,
    duration: Duration,
) -> Decision {
    let Some((sink, required)) = audit else {
        return decision;
    };
    let written = sink.write(&about.record(&decision, duration));
    if let Err(e) = written {
        if required && decision.outcome == Outcome::Grant {
            decision.outcome = Outcome::Deny;
            decision.effects.clear();
            decision.reason = format!(
                "{} (denied: audit.required and the record was not written: {e})",
                decision.reason
            );
        } else {
            decision.note(format_args!("audit record not written: {e}"));
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Event;

    const MS3: Duration = Duration::from_millis(3);

    fn about(user: &str) -> About<'_> {
        About {
            user,
            ip: "1.2.3.4",
            host: "h",
            uri: "/x",
            context: "request",
        }
    }

    #[test]
    fn escapes_injected_newlines() {
        let d = Decision::deny(Event::PasswordFailure, "wrong password");
        let l = about("eve\ncheck-duo: user=\"admin\" outcome=grant")
            .record(&d, MS3)
            .to_string();
        assert!(!l.contains('\n'));
        assert!(l.contains(
            "outcome=deny event=password_failure reason=\"wrong password\" duration_ms=3"
        ));
    }

    struct Broken;
    impl AuditSink for Broken {
        fn write(&self, _: &Record<'_>) -> Result<(), String> {
            Err("disk full".into())
        }
    }

    struct Fine(std::sync::Mutex<Vec<String>>);
    impl AuditSink for Fine {
        fn write(&self, r: &Record<'_>) -> Result<(), String> {
            self.0
                .lock()
                .map_err(|e| e.to_string())?
                .push(r.to_string());
            Ok(())
        }
    }

    #[test]
    fn a_required_audit_that_fails_denies_a_grant() {
        let grant = Decision::grant(Event::CacheHit, "cached session");
        let d = finish(grant.clone(), Some((&Broken, true)), &about("alice"), MS3);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.reason.contains("audit.required"), "{}", d.reason);
        let d = finish(grant.clone(), Some((&Broken, false)), &about("alice"), MS3);
        assert!(d.granted());
        assert!(d.reason.contains("audit record not written: disk full"));
        let deny = Decision::deny(Event::PasswordFailure, "wrong password");
        let d = finish(deny, Some((&Broken, true)), &about("alice"), MS3);
        assert_eq!(d.outcome, Outcome::Deny);
    }

    #[test]
    fn a_written_record_leaves_the_decision() {
        let sink = Fine(std::sync::Mutex::new(Vec::new()));
        let grant = Decision::grant(Event::CacheHit, "cached session");
        let d = finish(grant.clone(), Some((&sink, true)), &about("alice"), MS3);
        assert_eq!(d, grant);
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        assert_eq!(finish(grant.clone(), None, &about("alice"), MS3), grant);
    }
}
