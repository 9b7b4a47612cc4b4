//! Access rules: which requests pass without a session, which need the second factor, which are
//! refused. The first rule that matches the target's domain, path and method decides; without a
//! match, the default policy does (`two_factor` unless configured).

use check_duo_core::limits::glob;
use serde::Deserialize;

/// What a rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// No session needed.
    Bypass,
    /// A session (password and second factor).
    TwoFactor,
    /// Refused, session or not.
    Deny,
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s {
            "bypass" => Ok(Policy::Bypass),
            "two_factor" => Ok(Policy::TwoFactor),
            "deny" => Ok(Policy::Deny),
            _ => Err(format!("{s:?}: one of bypass, two_factor, deny")),
        }
    }
}

/// One rule as written. A string or a list for `domain`, `path` and `methods`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    domain: Option<OneOrMany>,
    path: Option<OneOrMany>,
    methods: Option<OneOrMany>,
    /// `user:NAME` or `group:NAME`, one or a list: the rule is for them only.
    subject: Option<OneOrMany>,
    policy: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One checked rule; an empty list matches everything.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Host patterns, lower-case (`*` matches any run of characters: `*.example.org`).
    domains: Vec<String>,
    /// Path patterns (`/public/*`), matched against the path without the query string.
    paths: Vec<String>,
    /// Upper-case method names.
    methods: Vec<String>,
    /// Who the rule is for (empty: everybody, signed in or not).
    subjects: Vec<Subject>,
    pub policy: Policy,
}

/// Who a rule is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
}

/// The signed-in user a request is for, with their groups.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
}

/// What the rules say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Policy(Policy),
    /// A rule for some users or groups may apply, and the request has no signed-in user: sign
    /// in first.
    SignIn,
}

impl Rule {
    pub fn from_raw(raw: &RawRule) -> Result<Rule, (&'static str, String)> {
        let domains: Vec<String> = raw
            .domain
            .as_ref()
            .map(OneOrMany::list)
            .unwrap_or_default()
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if domains.iter().any(String::is_empty) {
            return Err(("domain", "an empty domain pattern".into()));
        }
        let paths = raw.path.as_ref().map(OneOrMany::list).unwrap_or_default();
        if let Some(p) = paths
            .iter()
            .find(|p| !p.starts_with('/') && !p.starts_with('*'))
        {
            return Err(("path", format!("{p:?}: a path pattern starts with / or *")));
        }
        let methods: Vec<String> = raw
            .methods
            .as_ref()
            .map(OneOrMany::list)
            .unwrap_or_default()
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        if let Some(m) = methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(("methods", format!("{m:?} is not a method")));
        }
        let mut subjects = Vec::new();
        for s in raw
            .subject
            .as_ref()
            .map(OneOrMany::list)
            .unwrap_or_default()
        {
            subjects.push(match s.split_once(':') {
                Some(("user", n)) if !n.is_empty() => Subject::User(n.to_string()),
                Some(("group", n)) if !n.is_empty() => Subject::Group(n.to_string()),
                _ => return Err(("subject", format!("{s:?}: user:NAME or group:NAME"))),
            });
        }
        let policy = Policy::parse(&raw.policy).map_err(|m| ("policy", m))?;
        if !subjects.is_empty() && policy == Policy::Bypass {
            return Err((
                "policy",
                "bypass for some users only means nothing: a bypass needs no sign-in".into(),
            ));
        }
        Ok(Rule {
            domains,
            paths,
            methods,
            subjects,
            policy,
        })
    }

    fn is_for(&self, who: Who<'_>) -> bool {
        self.subjects.iter().any(|s| match s {
            Subject::User(u) => u == who.user,
            Subject::Group(g) => who.groups.contains(g),
        })
    }

    fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        // A deny rule also holds for the path in any case: some backends fold it.
        let path_matches = |p: &String| {
            glob(p, path)
                || (self.policy == Policy::Deny
                    && glob(&p.to_ascii_lowercase(), &path.to_ascii_lowercase()))
        };
        (self.domains.is_empty() || self.domains.iter().any(|d| glob(d, host)))
            && (self.paths.is_empty() || self.paths.iter().any(path_matches))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// The rules in order, and the default.
#[derive(Clone, Debug)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub default: Policy,
}

impl Rules {
    /// Whether some rule names users or groups (then the session is looked up first).
    pub fn has_subjects(&self) -> bool {
        self.rules.iter().any(|r| !r.subjects.is_empty())
    }

    /// The policy for a request: `host` lower-case without port, `path` canonical (see
    /// [`super::target::canonical_path`]), `who` the signed-in user if any.
    pub fn verdict(&self, host: &str, path: &str, method: &str, who: Option<Who<'_>>) -> Verdict {
        for r in &self.rules {
            if !r.matches(host, path, method) {
                continue;
            }
            if r.subjects.is_empty() {
                return Verdict::Policy(r.policy);
            }
            match who {
                None => return Verdict::SignIn,
                Some(w) if r.is_for(w) => return Verdict::Policy(r.policy),
                Some(_) => {}
            }
        }
        Verdict::Policy(self.default)
    }

    /// The policy for a request by nobody in particular (rules for some users only skipped).
    pub fn policy(&self, host: &str, path: &str, method: &str) -> Policy {
        self.rules
            .iter()
            .find(|r| r.subjects.is_empty() && r.matches(host, path, method))
            .map_or(self.default, |r| r.policy)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rules(json: &str, default: Policy) -> Rules {
        let raw: Vec<RawRule> = serde_json::from_str(json).unwrap();
        Rules {
            rules: raw.iter().map(|r| Rule::from_raw(r).unwrap()).collect(),
            default,
        }
    }

    #[test]
    fn first_match_wins() {
        let r = rules(
            r#"[{"domain": "*.example.org", "path": "/public/*", "methods": "GET", "policy": "bypass"},
                {"path": ["/admin", "/admin/*"], "policy": "deny"},
                {"domain": "open.example.org", "policy": "bypass"}]"#,
            Policy::TwoFactor,
        );
        assert_eq!(
            r.policy("app.example.org", "/public/a.css", "GET"),
            Policy::Bypass
        );
        assert_eq!(
            r.policy("app.example.org", "/public/a.css", "POST"),
            Policy::TwoFactor
        );
        assert_eq!(
            r.policy("example.org", "/public/a.css", "GET"),
            Policy::TwoFactor
        );
        assert_eq!(
            r.policy("open.example.org", "/admin/x", "GET"),
            Policy::Deny
        );
        assert_eq!(r.policy("open.example.org", "/x", "GET"), Policy::Bypass);
        assert_eq!(
            r.policy("app.example.org", "/ADMIN/x", "GET"),
            Policy::Deny,
            "any case"
        );
        assert_eq!(
            r.policy("app.example.org", "/PUBLIC/a.css", "GET"),
            Policy::TwoFactor
        );
        assert_eq!(r.policy("other.net", "/", "GET"), Policy::TwoFactor);
        let r = rules("[]", Policy::Deny);
        assert_eq!(r.policy("a", "/", "GET"), Policy::Deny);
    }

    #[test]
    fn rules_for_users_and_groups() {
        let r = rules(
            r#"[{"path": "/admin/*", "subject": "group:admins", "policy": "two_factor"},
                {"path": "/admin/*", "policy": "deny"},
                {"path": "/bob/*", "subject": ["user:bob"], "policy": "deny"}]"#,
            Policy::TwoFactor,
        );
        let admins = ["admins".to_string()];
        let alice = Who {
            user: "alice",
            groups: &admins,
        };
        let bob = Who {
            user: "bob",
            groups: &[],
        };
        let v = |p: &str, w| r.verdict("h", p, "GET", w);
        assert_eq!(
            v("/admin/x", Some(alice)),
            Verdict::Policy(Policy::TwoFactor)
        );
        assert_eq!(v("/admin/x", Some(bob)), Verdict::Policy(Policy::Deny));
        assert_eq!(v("/admin/x", None), Verdict::SignIn);
        assert_eq!(v("/bob/x", Some(bob)), Verdict::Policy(Policy::Deny));
        assert_eq!(v("/bob/x", Some(alice)), Verdict::Policy(Policy::TwoFactor));
        assert!(r.has_subjects());
    }

    #[test]
    fn bad_rules_name_their_key() {
        for (json, key) in [
            (r#"{"policy": "allow"}"#, "policy"),
            (r#"{"path": "public", "policy": "bypass"}"#, "path"),
            (
                r#"{"methods": ["GET", "P0ST"], "policy": "bypass"}"#,
                "methods",
            ),
            (r#"{"domain": "", "policy": "bypass"}"#, "domain"),
            (r#"{"subject": "admins", "policy": "deny"}"#, "subject"),
            (
                r#"{"subject": "group:admins", "policy": "bypass"}"#,
                "policy",
            ),
        ] {
            let raw: RawRule = serde_json::from_str(json).unwrap();
            assert_eq!(Rule::from_raw(&raw).unwrap_err().0, key, "{json}");
        }
    }
}
