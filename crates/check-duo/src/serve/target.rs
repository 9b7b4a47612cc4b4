//! What a proxy asks about: the original request (scheme, host, URI, method), read from the
//! headers each proxy family sends (REFERENCE §7). A missing or malformed header is a 400 that
//! names it, never a guess.

use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{HeaderMap, Uri};

/// The original request a proxy asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// `host[:port]` as sent, lower-case.
    pub authority: String,
    /// The host, lower-case, without the port.
    pub host: String,
    /// Path and query, starting with `/`.
    pub uri: String,
    /// Upper-case letters only.
    pub method: String,
}

impl Target {
    /// The absolute URL of the original request.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.uri)
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

/// A header that is missing or malformed: the 400's body names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadHeader {
    pub header: &'static str,
    pub why: String,
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "header {}: {}", self.header, self.why)
    }
}

/// Longest original URI accepted.
const MAX_URI: usize = 8192;

fn text<'h>(h: &'h HeaderMap, name: &'static str) -> Result<&'h str, BadHeader> {
    let mut values = h.get_all(name).iter();
    let v = values.next().ok_or(BadHeader {
        header: name,
        why: "missing".into(),
    })?;
    if values.next().is_some() {
        return Err(BadHeader {
            header: name,
            why: "sent more than once".into(),
        });
    }
    v.to_str().map(str::trim).map_err(|_| BadHeader {
        header: name,
        why: "not visible ASCII".into(),
    })
}

fn bad(header: &'static str, why: impl Into<String>) -> BadHeader {
    BadHeader {
        header,
        why: why.into(),
    }
}

pub fn method(header: &'static str, m: &str) -> Result<String, BadHeader> {
    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(header, "not a method (upper-case letters only)"));
    }
    Ok(m.to_string())
}

fn scheme(header: &'static str, p: &str) -> Result<bool, BadHeader> {
    match p.to_ascii_lowercase().as_str() {
        "https" => Ok(true),
        "http" => Ok(false),
        _ => Err(bad(header, "not http or https")),
    }
}

fn authority(header: &'static str, a: &str) -> Result<(String, String), BadHeader> {
    let auth: Authority = a.parse().map_err(|_| bad(header, "not a host"))?;
    if auth.as_str().contains('@') || auth.host().is_empty() {
        return Err(bad(header, "not a host"));
    }
    Ok((
        auth.as_str().to_ascii_lowercase(),
        auth.host().to_ascii_lowercase(),
    ))
}

fn path(header: &'static str, u: &str) -> Result<String, BadHeader> {
    if !u.starts_with('/') || u.starts_with("//") {
        return Err(bad(header, "not a path (starts with one /)"));
    }
    if u.len() > MAX_URI {
        return Err(bad(header, "too long"));
    }
    let pq: PathAndQuery = u.parse().map_err(|_| bad(header, "not a path"))?;
    Ok(pq.as_str().to_string())
}

/// Traefik, Caddy, HAProxy: `X-Forwarded-Proto`, `-Host`, `-Uri`, `-Method`.
pub fn forwarded(h: &HeaderMap) -> Result<Target, BadHeader> {
    let https = scheme("X-Forwarded-Proto", text(h, "X-Forwarded-Proto")?)?;
    let (authority, host) = authority("X-Forwarded-Host", text(h, "X-Forwarded-Host")?)?;
    let uri = path("X-Forwarded-Uri", text(h, "X-Forwarded-Uri")?)?;
    let method = method("X-Forwarded-Method", text(h, "X-Forwarded-Method")?)?;
    Ok(Target {
        https,
        authority,
        host,
        uri,
        method,
    })
}

/// nginx: `X-Original-URL` (absolute) and `X-Original-Method`.
pub fn original(h: &HeaderMap) -> Result<Target, BadHeader> {
    const URL: &str = "X-Original-URL";
    let url: Uri = text(h, "X-Original-URL")?
        .parse()
        .map_err(|_| bad(URL, "not an absolute URL"))?;
    let https = scheme(URL, url.scheme_str().unwrap_or(""))?;
    let (authority, host) = authority(URL, url.authority().map_or("", |a| a.as_str()))?;
    let uri = path(URL, url.path_and_query().map_or("/", |p| p.as_str()))?;
    let method = method("X-Original-Method", text(h, "X-Original-Method")?)?;
    Ok(Target {
        https,
        authority,
        host,
        uri,
        method,
    })
}

/// Envoy: the request line is the original (after the endpoint's prefix), `Host` its host,
/// `X-Forwarded-Proto` its scheme.
pub fn envoy(request_method: &str, rest: &str, h: &HeaderMap) -> Result<Target, BadHeader> {
    let https = scheme("X-Forwarded-Proto", text(h, "X-Forwarded-Proto")?)?;
    let (authority, host) = authority("Host", text(h, "Host")?)?;
    let uri = if rest.is_empty() {
        "/".to_string()
    } else {
        path("path", rest)?
    };
    let method = method("method", request_method)?;
    Ok(Target {
        https,
        authority,
        host,
        uri,
        method,
    })
}

/// The legacy `/api/verify`: either header family.
pub fn either(h: &HeaderMap) -> Result<Target, BadHeader> {
    if h.contains_key("x-original-url") {
        original(h)
    } else {
        forwarded(h)
    }
}

/// The client's address: the last `X-Forwarded-For` entry (the one the proxy in front of us
/// added; earlier ones are the client's word), else the peer.
pub fn client(h: &HeaderMap, peer: Option<std::net::IpAddr>) -> String {
    h.get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        .or(peer)
        .map(|a| a.to_canonical().to_string())
        .unwrap_or_default()
}

/// Whether the client wants a page (a browser navigating, which always lists `text/html`)
/// rather than an API answer (XHR, `fetch`, curl's `*/*`).
pub fn wants_html(h: &HeaderMap) -> bool {
    let xhr = h
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
    let accept = h.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    !xhr && accept.contains("text/html")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers() {
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "App.Example.org:8443"),
            ("x-forwarded-uri", "/a/b?c=d"),
            ("x-forwarded-method", "POST"),
        ]);
        let t = forwarded(&h).unwrap();
        assert_eq!(t.url(), "https://app.example.org:8443/a/b?c=d");
        assert_eq!(
            (t.host.as_str(), t.path(), t.method.as_str()),
            ("app.example.org", "/a/b", "POST")
        );
    }

    #[test]
    fn every_bad_header_is_named() {
        let good = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.org"),
            ("x-forwarded-uri", "/"),
            ("x-forwarded-method", "GET"),
        ];
        for (name, bad_value, header) in [
            ("x-forwarded-proto", "gopher", "X-Forwarded-Proto"),
            ("x-forwarded-host", "a b", "X-Forwarded-Host"),
            ("x-forwarded-host", "user@host", "X-Forwarded-Host"),
            ("x-forwarded-uri", "http://evil/", "X-Forwarded-Uri"),
            ("x-forwarded-uri", "//evil/", "X-Forwarded-Uri"),
            ("x-forwarded-method", "get", "X-Forwarded-Method"),
            ("x-forwarded-method", "G3T", "X-Forwarded-Method"),
        ] {
            let list: Vec<_> = good
                .iter()
                .map(|(k, v)| (*k, if *k == name { bad_value } else { v }))
                .collect();
            assert_eq!(
                forwarded(&headers(&list)).unwrap_err().header,
                header,
                "{name}: {bad_value}"
            );
            let missing: Vec<_> = good.iter().copied().filter(|(k, _)| *k != name).collect();
            let e = forwarded(&headers(&missing)).unwrap_err();
            assert_eq!((e.header, e.why.as_str()), (header, "missing"));
        }
        let mut twice = good.to_vec();
        twice.push(("x-forwarded-host", "evil.example"));
        assert_eq!(
            forwarded(&headers(&twice)).unwrap_err().why,
            "sent more than once"
        );
    }

    #[test]
    fn original_url() {
        let h = headers(&[
            ("x-original-url", "http://127.0.0.1:8080/private/?x=1"),
            ("x-original-method", "GET"),
        ]);
        let t = original(&h).unwrap();
        assert_eq!(t.url(), "http://127.0.0.1:8080/private/?x=1");
        let h = headers(&[
            ("x-original-url", "/relative"),
            ("x-original-method", "GET"),
        ]);
        assert_eq!(original(&h).unwrap_err().header, "X-Original-URL");
        let h = headers(&[("x-original-url", "https://a/")]);
        assert_eq!(original(&h).unwrap_err().header, "X-Original-Method");
    }

    #[test]
    fn client_address_is_the_proxys_word() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 192.0.2.7")]);
        assert_eq!(client(&h, None), "192.0.2.7");
        let h = headers(&[("x-forwarded-for", "::ffff:192.0.2.8")]);
        assert_eq!(client(&h, None), "192.0.2.8");
        assert_eq!(
            client(&HeaderMap::new(), Some("127.0.0.1".parse().unwrap())),
            "127.0.0.1"
        );
    }

    #[test]
    fn browsers_and_apis() {
        assert!(wants_html(&headers(&[(
            "accept",
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )])));
        assert!(!wants_html(&headers(&[("accept", "application/json")])));
        assert!(!wants_html(&headers(&[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest")
        ])));
        assert!(!wants_html(&HeaderMap::new()));
    }
}
