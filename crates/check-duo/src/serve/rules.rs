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
    pub policy: Policy,
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
        let policy = Policy::parse(&raw.policy).map_err(|m| ("policy", m))?;
        Ok(Rule {
            domains,
            paths,
            methods,
            policy,
        })
    }

    fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|d| glob(d, host)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| glob(p, path)))
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
    /// The policy for a request: `host` lower-case without port, `path` without the query.
    pub fn policy(&self, host: &str, path: &str, method: &str) -> Policy {
        self.rules
            .iter()
            .find(|r| r.matches(host, path, method))
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
        assert_eq!(r.policy("other.net", "/", "GET"), Policy::TwoFactor);
        let r = rules("[]", Policy::Deny);
        assert_eq!(r.policy("a", "/", "GET"), Policy::Deny);
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
        ] {
            let raw: RawRule = serde_json::from_str(json).unwrap();
            assert_eq!(Rule::from_raw(&raw).unwrap_err().0, key, "{json}");
        }
    }
}
