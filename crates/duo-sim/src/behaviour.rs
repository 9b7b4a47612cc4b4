//! Per-user scripted behaviours: what preauth answers, how a push ends, rate limits and forced
//! errors. Owns the users-file format (JSON, unknown keys rejected) and nothing else: the state
//! machine that plays a behaviour out lives in `state.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// All scripted behaviours: one per known user, plus `default` for everybody else.
///
/// `Behaviours::default()` lets every user push and approves at once, which is what most tests
/// want; a users file usually sets `default` to `enroll` to look like a real tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviours {
    #[serde(default)]
    pub users: BTreeMap<String, UserBehaviour>,
    #[serde(default)]
    pub default: UserBehaviour,
}

impl Behaviours {
    /// The behaviour for `username` (the `default` one for unknown users).
    pub fn for_user(&self, username: &str) -> &UserBehaviour {
        self.users.get(username).unwrap_or(&self.default)
    }

    /// Add or replace one user's behaviour (builder style, for tests).
    pub fn with_user(mut self, username: impl Into<String>, b: UserBehaviour) -> Self {
        self.users.insert(username.into(), b);
        self
    }

    /// Parse a users file's text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, String> {
        let b: Behaviours = serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        b.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(b)
    }

    /// Read and parse a users file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Checks serde cannot express: `error` must be an HTTP error status.
    pub fn validate(&self) -> Result<(), String> {
        let all = self
            .users
            .iter()
            .map(|(k, v)| (format!("users.{k}"), v))
            .chain(std::iter::once(("default".to_string(), &self.default)));
        for (name, b) in all {
            if let Some(status) = b.error {
                if !(400..=599).contains(&status) {
                    return Err(format!(
                        "{name}.error: {status} is not an HTTP error status (400-599)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the simulator does for one user. Every field has a default, so `{}` is a user who
/// preauths to `auth` and approves every push at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserBehaviour {
    /// The preauth result.
    pub preauth: PreauthKind,
    /// How a push (or phone call, or `auto`) ends.
    pub push: PushKind,
    /// How long `approve`, `deny` and `fraud` pushes stay pending, in milliseconds.
    pub delay_ms: u64,
    /// How long `timeout` and `manual` pushes stay pending before timing out, in milliseconds
    /// (the global `push_timeout` when absent).
    pub push_timeout_ms: Option<u64>,
    /// Answer the first `times` signed calls for this user with 429.
    pub rate_limit: Option<RateLimit>,
    /// Answer every call for this user with this HTTP status and a FAIL envelope.
    pub error: Option<u16>,
    /// The passcodes `factor=passcode` accepts; any other is denied.
    pub passcodes: Vec<String>,
    /// The "Require Verified Duo Push" policy applies to this user (as `--verified-push` does to
    /// everyone): a client that sends `client_supports_verified_push=1` gets a preauth `txid`,
    /// and a push sent with it carries a 3-digit code the phone must be given.
    pub verified_push: bool,
}

impl UserBehaviour {
    /// A user whose pushes end as `push` (builder style, for tests).
    pub fn push(push: PushKind) -> Self {
        UserBehaviour {
            push,
            ..Default::default()
        }
    }

    /// A user whose preauth answers `preauth`.
    pub fn preauth(preauth: PreauthKind) -> Self {
        UserBehaviour {
            preauth,
            ..Default::default()
        }
    }
}

/// `rate_limit`: the first `times` signed calls get 429 with `Retry-After: retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub times: u64,
    /// Seconds, sent in the `Retry-After` header.
    #[serde(default = "one")]
    pub retry_after: u64,
}

fn one() -> u64 {
    1
}

/// The `preauth` answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreauthKind {
    /// `result: auth` with one phone device.
    #[default]
    Auth,
    /// `result: allow` (bypass).
    Allow,
    /// `result: deny`, "Your account is disabled".
    Deny,
    /// `result: enroll` with an `enroll_portal_url`.
    Enroll,
    /// `result: deny`, "Your account is locked out".
    LockedOut,
}

/// How a push ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// Allowed after `delay_ms`.
    #[default]
    Approve,
    /// Denied after `delay_ms`.
    Deny,
    /// Reported as fraud after `delay_ms` (`result: deny`, `status: fraud`).
    Fraud,
    /// Never answered: denied with `status: timeout` after the push timeout.
    Timeout,
    /// Waits for the control API or the phone page; times out like `Timeout`.
    Manual,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_covers_every_behaviour() {
        let text = include_str!("../users.example.json");
        let b = Behaviours::from_json(text, "users.example.json").unwrap();
        let users: Vec<&UserBehaviour> = b.users.values().collect();
        for kind in [
            PreauthKind::Auth,
            PreauthKind::Allow,
            PreauthKind::Deny,
            PreauthKind::Enroll,
            PreauthKind::LockedOut,
        ] {
            assert!(users.iter().any(|u| u.preauth == kind), "{kind:?}");
        }
        for kind in [
            PushKind::Approve,
            PushKind::Deny,
            PushKind::Fraud,
            PushKind::Timeout,
            PushKind::Manual,
        ] {
            assert!(users.iter().any(|u| u.push == kind), "{kind:?}");
        }
        assert!(users.iter().any(|u| u.rate_limit.is_some()));
        assert!(users.iter().any(|u| u.error.is_some()));
        assert!(users.iter().any(|u| !u.passcodes.is_empty()));
        assert_eq!(b.default.preauth, PreauthKind::Enroll);
        assert_eq!(b.for_user("nobody").preauth, PreauthKind::Enroll);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Behaviours::from_json(r#"{"users": {"a": {"pussh": "deny"}}}"#, "u.json").unwrap_err();
        assert!(err.starts_with("u.json: "), "{err}");
        assert!(err.contains("pussh"), "{err}");
        let err = Behaviours::from_json(r#"{"userz": {}}"#, "u.json").unwrap_err();
        assert!(err.contains("userz"), "{err}");
        let err = Behaviours::from_json(r#"{"default": {"push": "maybe"}}"#, "u.json").unwrap_err();
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn error_status_must_be_an_error() {
        let err =
            Behaviours::from_json(r#"{"users": {"a": {"error": 200}}}"#, "u.json").unwrap_err();
        assert!(err.contains("users.a.error"), "{err}");
    }

    #[test]
    fn empty_object_is_the_default() {
        let b = Behaviours::from_json("{}", "x").unwrap();
        assert_eq!(b, Behaviours::default());
        assert_eq!(b.for_user("x").push, PushKind::Approve);
    }
}
