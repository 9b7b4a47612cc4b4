//! The daemon's own session cookie: a random token of 256 bits, `HttpOnly`, `SameSite=Lax`,
//! `Secure` with the `__Host-` (host-only) or `__Secure-` (with a `Domain`) prefix, except for a
//! plain-HTTP portal on a loopback address (the demo and the tests). The store sees only a keyed
//! hash of the token.

use axum::http::HeaderMap;
use base64::Engine;
use duo_auth::Secret;

use super::settings::Portal;

/// The cookie's name without its prefix.
pub const NAME: &str = "check-duo";
/// The CSRF cookie's name without its prefix (double-submit: the form carries the same value).
pub const CSRF: &str = "check-duo-csrf";

/// Longest `Cookie` header read.
pub const MAX_COOKIE_HEADER: usize = 16 * 1024;

/// A new random token (32 bytes, base64url).
pub fn new_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// How the cookies are named and flagged for one portal.
#[derive(Clone, Copy, Debug)]
pub struct CookieStyle<'a> {
    pub secure: bool,
    /// `Domain=` (SSO across the subdomains of one cookie domain), or host-only.
    pub domain: Option<&'a str>,
}

impl<'a> CookieStyle<'a> {
    pub fn new(portal: &Portal, domain: Option<&'a str>) -> Self {
        CookieStyle {
            secure: !portal.insecure_loopback(),
            domain,
        }
    }

    /// The full name of cookie `base`.
    pub fn name(&self, base: &str) -> String {
        match (self.secure, self.domain) {
            (true, None) => format!("__Host-{base}"),
            (true, Some(_)) => format!("__Secure-{base}"),
            (false, _) => base.to_string(),
        }
    }

    fn attributes(&self, same_site: &str) -> String {
        let mut a = format!("; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            a.push_str("; Secure");
        }
        if let Some(d) = self.domain {
            a.push_str("; Domain=");
            a.push_str(d);
        }
        a
    }

    /// `Set-Cookie` for cookie `base` (a browser-session cookie, `SameSite=Lax`).
    pub fn set(&self, base: &str, value: &str) -> String {
        format!("{}={value}{}", self.name(base), self.attributes("Lax"))
    }

    /// `Set-Cookie` that removes cookie `base`.
    pub fn clear(&self, base: &str) -> String {
        format!("{}={}; Max-Age=0", self.name(base), self.attributes("Lax"))
    }

    /// `Set-Cookie` for the session (the store decides how long it is good).
    pub fn set_session(&self, token: &str) -> String {
        self.set(NAME, token)
    }

    pub fn clear_session(&self) -> String {
        self.clear(NAME)
    }

    /// `Set-Cookie` for the CSRF token (`Strict`; the portal uses a host-only style for it).
    pub fn set_csrf(&self, token: &str) -> String {
        format!("{}={token}{}", self.name(CSRF), self.attributes("Strict"))
    }
}

/// The value of cookie `name` in the request (the first, if sent twice), unless the `Cookie`
/// header is oversized.
pub fn cookie(h: &HeaderMap, name: &str) -> Option<Secret> {
    let mut total = 0;
    for v in h.get_all("cookie") {
        total += v.len();
        if total > MAX_COOKIE_HEADER {
            return None;
        }
    }
    h.get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| crate::cookie::find(v, name))
        .filter(|v| v.len() <= 512)
        .map(Secret::new)
}

/// Whether the request's cookies are over [`MAX_COOKIE_HEADER`].
pub fn oversized(h: &HeaderMap) -> bool {
    h.get_all("cookie").iter().map(|v| v.len()).sum::<usize>() > MAX_COOKIE_HEADER
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn portal(url: &str) -> Portal {
        let raw: super::super::settings::RawServer =
            serde_json::from_str(&format!(r#"{{"portal_url": "{url}"}}"#)).unwrap();
        super::super::settings::ServerConfig::from_raw(&raw)
            .unwrap()
            .portal
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_token().unwrap());
    }

    #[test]
    fn secure_portals_get_prefixed_secure_cookies() {
        let p = portal("https://auth.example.org/");
        let host_only = CookieStyle::new(&p, None).set_session("T");
        assert_eq!(
            host_only,
            "__Host-check-duo=T; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let shared = CookieStyle::new(&p, Some("example.org")).set_session("T");
        assert_eq!(
            shared,
            "__Secure-check-duo=T; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=example.org"
        );
        let dev = CookieStyle::new(&portal("http://127.0.0.1:9091/"), None).set_session("T");
        assert_eq!(dev, "check-duo=T; Path=/; HttpOnly; SameSite=Lax");
        // Plain HTTP elsewhere still gets Secure: the browser will not send it, which is right.
        let plain = CookieStyle::new(&portal("http://auth.example.org/"), None).set_session("T");
        assert!(plain.contains("Secure"));
    }

    #[test]
    fn oversized_cookie_headers_are_not_read() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            format!("check-duo=T; pad={}", "x".repeat(MAX_COOKIE_HEADER))
                .parse()
                .unwrap(),
        );
        assert!(oversized(&h));
        assert!(cookie(&h, "check-duo").is_none());
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; check-duo=T".parse().unwrap());
        assert_eq!(cookie(&h, "check-duo").unwrap().expose(), "T");
    }
}
