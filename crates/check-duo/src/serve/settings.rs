//! The `server` section of the config file: where `check-duo serve` listens, where browsers find
//! its portal, the cookie domains, the secrets that key the session store, and the access rules.

use std::net::SocketAddr;

use axum::http::Uri;
use serde::Deserialize;

use super::rules::{Policy as RulePolicy, RawRule, Rule, Rules};

/// The default HTTP address (Authelia's port, so snippets written for it need no change).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9091";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    listen: Option<String>,
    portal_url: Option<String>,
    fastcgi_listen: Option<String>,
    /// Secrets that key the session store, the current one first (default: derived from the
    /// Duo skey, as in the pipe mode).
    secrets: Option<Vec<String>>,
    domains: Option<Vec<RawDomain>>,
    rules: Option<Vec<RawRule>>,
    default_policy: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    /// Milliseconds a session read from Redis is used again by this daemon (0: never).
    session_cache_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    domain: String,
    portal_url: String,
}

/// An absolute `http(s)` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    /// `https://auth.example.org/` as written, with a trailing `/`.
    pub url: String,
    pub https: bool,
    /// The host, lower-case, without the port.
    pub host: String,
    /// The path the portal's pages live under, with a trailing `/` (`/` or `/auth/`).
    pub base: String,
}

impl Portal {
    fn parse(text: &str) -> Result<Portal, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{text:?}: an absolute http:// or https:// URL")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?}: no host"))?
            .to_ascii_lowercase();
        if uri.query().is_some() {
            return Err(format!("{text:?}: no query string, please"));
        }
        let mut base = uri.path().to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let authority = uri
            .authority()
            .map_or("", |a| a.as_str())
            .to_ascii_lowercase();
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://{authority}{base}");
        Ok(Portal {
            url,
            https,
            host,
            base,
        })
    }

    /// Plain HTTP on a loopback address: the demo and the tests. Everywhere else the cookie is
    /// `Secure`.
    pub fn insecure_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        !self.https
            && (host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback()))
    }
}

/// A cookie domain with its own portal.
#[derive(Clone, Debug)]
pub struct Domain {
    /// `example.org`: the cookie is sent to it and every subdomain.
    pub domain: String,
    pub portal: Portal,
}

/// The checked `server` section.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub portal: Portal,
    pub fastcgi_listen: Option<SocketAddr>,
    pub secrets: Option<Vec<String>>,
    pub domains: Vec<Domain>,
    pub rules: Rules,
    /// Peers whose `X-Forwarded-For` is believed (default: loopback).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a session read from Redis answers again without a read (see
    /// [`super::readahead::Recent`]); zero: every request reads.
    pub session_cache: std::time::Duration,
}

/// `server.session_cache_ms` by default, and at most.
pub const SESSION_CACHE_MS: u64 = 1000;
pub const MAX_SESSION_CACHE_MS: u64 = 10_000;

fn addr(key: &str, text: &str) -> Result<SocketAddr, (String, String)> {
    text.parse()
        .map_err(|_| (key.to_string(), format!("{text:?} is not IP:PORT")))
}

/// A host name as cookies and targets compare it: lower-case, without a leading dot.
pub fn normal_host(h: &str) -> String {
    h.trim().trim_start_matches('.').to_ascii_lowercase()
}

/// Whether `host` is `domain` or one of its subdomains.
pub fn within(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

impl ServerConfig {
    /// Check the raw section; an error is `(key under server., message)`.
    pub fn from_raw(raw: &RawServer) -> Result<ServerConfig, (String, String)> {
        let e = |k: &str, m: String| (format!("server.{k}"), m);
        let listen = addr(
            "server.listen",
            raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let portal_text = raw.portal_url.as_deref().ok_or_else(|| {
            e(
                "portal_url",
                "missing: the absolute URL at which browsers reach the portal".into(),
            )
        })?;
        let portal = Portal::parse(portal_text).map_err(|m| e("portal_url", m))?;
        let fastcgi_listen = match &raw.fastcgi_listen {
            Some(t) => Some(addr("server.fastcgi_listen", t)?),
            None => None,
        };
        if let Some(secrets) = &raw.secrets {
            if secrets.is_empty() {
                return Err(e(
                    "secrets",
                    "empty (leave it out to use the Duo skey)".into(),
                ));
            }
            for (i, s) in secrets.iter().enumerate() {
                if s.len() < 16 {
                    return Err(e(
                        &format!("secrets[{i}]"),
                        "shorter than 16 characters (the value is not shown)".into(),
                    ));
                }
            }
        }
        let mut domains = Vec::new();
        for (i, d) in raw.domains.iter().flatten().enumerate() {
            let domain = normal_host(&d.domain);
            if domain.is_empty()
                || !domain.contains(|c: char| c.is_ascii_alphanumeric())
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(e(
                    &format!("domains[{i}].domain"),
                    format!("{:?} is not a domain", d.domain),
                ));
            }
            let portal = Portal::parse(&d.portal_url)
                .map_err(|m| e(&format!("domains[{i}].portal_url"), m))?;
            if !within(&portal.host, &domain) {
                return Err(e(
                    &format!("domains[{i}].portal_url"),
                    format!("{} is not within {domain}: the browser would not send the portal its cookie", portal.host),
                ));
            }
            domains.push(Domain { domain, portal });
        }
        let default = match raw.default_policy.as_deref() {
            None => RulePolicy::TwoFactor,
            Some(p) => RulePolicy::parse(p).map_err(|m| e("default_policy", m))?,
        };
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().flatten().enumerate() {
            rules.push(Rule::from_raw(r).map_err(|(k, m)| e(&format!("rules[{i}].{k}"), m))?);
        }
        let mut trusted_proxies = Vec::new();
        let default_trusted = vec!["127.0.0.0/8".to_string(), "::1/128".to_string()];
        for (i, t) in raw
            .trusted_proxies
            .as_ref()
            .unwrap_or(&default_trusted)
            .iter()
            .enumerate()
        {
            let net = t
                .parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    e(
                        &format!("trusted_proxies[{i}]"),
                        format!("{t:?} is not an address or a network"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let cache_ms = raw.session_cache_ms.unwrap_or(SESSION_CACHE_MS);
        if cache_ms > MAX_SESSION_CACHE_MS {
            return Err(e(
                "session_cache_ms",
                format!(
                    "{cache_ms} is more than {MAX_SESSION_CACHE_MS}: a logout elsewhere would take that long to count here"
                ),
            ));
        }
        Ok(ServerConfig {
            trusted_proxies,
            session_cache: std::time::Duration::from_millis(cache_ms),
            listen,
            portal,
            fastcgi_listen,
            secrets: raw.secrets.clone(),
            domains,
            rules: Rules { rules, default },
        })
    }

    /// The cookie domain and portal for a target host: the configured domain it is within, or
    /// (with none configured) the portal itself when the host is the portal's host or one of its
    /// subdomains. `None`: this gate does not protect that host.
    pub fn domain_for(&self, host: &str) -> Option<(Option<&str>, &Portal)> {
        let host = normal_host(host);
        if self.domains.is_empty() {
            return within(&host, &self.portal.host).then_some((None, &self.portal));
        }
        self.domains
            .iter()
            .filter(|d| within(&host, &d.domain))
            .max_by_key(|d| d.domain.len())
            .map(|d| (Some(d.domain.as_str()), &d.portal))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn server(json: &str) -> Result<ServerConfig, (String, String)> {
        let raw: RawServer = serde_json::from_str(json).unwrap();
        ServerConfig::from_raw(&raw)
    }

    #[test]
    fn defaults_and_portal() {
        let s = server(r#"{"portal_url": "https://Auth.Example.org"}"#).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.session_cache, std::time::Duration::from_secs(1));
        assert_eq!(s.portal.url, "https://auth.example.org/");
        assert_eq!(s.portal.base, "/");
        assert!(!s.portal.insecure_loopback());
        let s = server(r#"{"portal_url": "http://127.0.0.1:9091/auth"}"#).unwrap();
        assert_eq!(s.portal.url, "http://127.0.0.1:9091/auth/");
        assert_eq!(s.portal.base, "/auth/");
        assert!(s.portal.insecure_loopback());
        assert!(!server(r#"{"portal_url": "http://auth.example.org/"}"#)
            .unwrap()
            .portal
            .insecure_loopback());
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(server("{}").unwrap_err().0, "server.portal_url");
        assert_eq!(
            server(r#"{"portal_url": "https://a/", "session_cache_ms": 10001}"#)
                .unwrap_err()
                .0,
            "server.session_cache_ms"
        );
        assert_eq!(
            server(r#"{"portal_url": "ftp://x/"}"#).unwrap_err().0,
            "server.portal_url"
        );
        assert_eq!(
            server(r#"{"portal_url": "https://a/", "listen": "nowhere"}"#)
                .unwrap_err()
                .0,
            "server.listen"
        );
        assert_eq!(
            server(r#"{"portal_url": "https://a.example.org/", "domains": [{"domain": "example.net", "portal_url": "https://auth.example.org/"}]}"#)
                .unwrap_err()
                .0,
            "server.domains[0].portal_url"
        );
        assert_eq!(
            server(r#"{"portal_url": "https://a/", "secrets": ["short"]}"#)
                .unwrap_err()
                .0,
            "server.secrets[0]"
        );
    }

    #[test]
    fn domains_choose_the_portal() {
        let s = server(
            r#"{"portal_url": "https://auth.example.org/",
                "domains": [{"domain": "example.org", "portal_url": "https://auth.example.org/"},
                            {"domain": ".Example.NET", "portal_url": "https://login.example.net/"}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.domain_for("wiki.example.net").unwrap().1.host,
            "login.example.net"
        );
        assert_eq!(s.domain_for("example.org").unwrap().0, Some("example.org"));
        assert!(s.domain_for("badexample.org").is_none());
        assert!(s.domain_for("example.com").is_none());
        let s = server(r#"{"portal_url": "https://auth.example.org/"}"#).unwrap();
        assert!(s.domain_for("auth.example.org").is_some());
        assert!(s.domain_for("app.auth.example.org").is_some());
        assert!(s.domain_for("app.example.org").is_none());
    }
}
