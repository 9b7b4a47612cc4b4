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
    /// The path as the access rules see it ([`canonical_path`]).
    pub canonical: String,
}

impl Target {
    /// The absolute URL of the original request.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.uri)
    }

    /// The path without the query string, as sent.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// Whether the path was sent in its canonical form (a bypass rule applies only then).
    pub fn is_canonical(&self) -> bool {
        self.path() == self.canonical
    }
}

/// The path of `uri` (without its query) as the application behind the proxy will see it, for
/// the access rules: unreserved characters percent-decoded, `;parameters` of each segment
/// dropped, empty and `.` segments removed, `..` applied (RFC 3986 §5.2.4). An encoded slash,
/// backslash, dot or control character, or a raw backslash, is refused: backends disagree on
/// what they mean, and a rule must not be walked around with them.
pub fn canonical_path(uri: &str) -> Result<String, &'static str> {
    let path = uri.split('?').next().unwrap_or("");
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = path.get(i + 1..i + 3).ok_or("a bad percent-escape")?;
                let v = u8::from_str_radix(hex, 16).map_err(|_| "a bad percent-escape")?;
                match v {
                    b'/' | b'\\' | b'.' | 0..=0x1f | 0x7f => {
                        return Err("an encoded slash, backslash, dot or control character")
                    }
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                        decoded.push(char::from(v));
                    }
                    _ => {
                        decoded.push('%');
                        decoded.push_str(&hex.to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            b'\\' => return Err("a backslash"),
            b => {
                decoded.push(char::from(b));
                i += 1;
            }
        }
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut c = format!("/{}", segments.join("/"));
    let last = decoded.rsplit('/').next().unwrap_or("");
    if c.len() > 1 && (decoded.ends_with('/') || matches!(last, "." | "..")) {
        c.push('/');
    }
    Ok(c)
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
    // `app.example.org.` is `app.example.org` to DNS and to the rules.
    let host = auth.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad(header, "not a host"));
    }
    Ok((auth.as_str().to_ascii_lowercase(), host))
}

fn canonical(header: &'static str, uri: &str) -> Result<String, BadHeader> {
    canonical_path(uri).map_err(|why| bad(header, why))
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

/// A target from its checked scheme, host and method, and its path and query as sent (checked
/// here, under the name of the header that carried it).
fn target(
    https: bool,
    (authority, host): (String, String),
    uri_header: &'static str,
    uri: &str,
    method: String,
) -> Result<Target, BadHeader> {
    let uri = path(uri_header, uri)?;
    let canonical = canonical(uri_header, &uri)?;
    Ok(Target {
        https,
        authority,
        host,
        uri,
        method,
        canonical,
    })
}

/// Traefik, Caddy, HAProxy: `X-Forwarded-Proto`, `-Host`, `-Uri`, `-Method`.
pub fn forwarded(h: &HeaderMap) -> Result<Target, BadHeader> {
    let https = scheme("X-Forwarded-Proto", text(h, "X-Forwarded-Proto")?)?;
    let host = authority("X-Forwarded-Host", text(h, "X-Forwarded-Host")?)?;
    let uri = text(h, "X-Forwarded-Uri")?;
    let method = method("X-Forwarded-Method", text(h, "X-Forwarded-Method")?)?;
    target(https, host, "X-Forwarded-Uri", uri, method)
}

/// nginx: `X-Original-URL` (absolute) and `X-Original-Method`.
pub fn original(h: &HeaderMap) -> Result<Target, BadHeader> {
    const URL: &str = "X-Original-URL";
    let url: Uri = text(h, URL)?
        .parse()
        .map_err(|_| bad(URL, "not an absolute URL"))?;
    let https = scheme(URL, url.scheme_str().unwrap_or(""))?;
    let host = authority(URL, url.authority().map_or("", |a| a.as_str()))?;
    let method = method("X-Original-Method", text(h, "X-Original-Method")?)?;
    let uri = url.path_and_query().map_or("/", |p| p.as_str());
    target(https, host, URL, uri, method)
}

/// Envoy: the request line is the original (after the endpoint's prefix), `Host` its host,
/// `X-Forwarded-Proto` its scheme.
pub fn envoy(request_method: &str, rest: &str, h: &HeaderMap) -> Result<Target, BadHeader> {
    let https = scheme("X-Forwarded-Proto", text(h, "X-Forwarded-Proto")?)?;
    let host = authority("Host", text(h, "Host")?)?;
    let method = method("method", request_method)?;
    let uri = if rest.is_empty() { "/" } else { rest };
    target(https, host, "path", uri, method)
}

/// The legacy `/api/verify`: either header family.
pub fn either(h: &HeaderMap) -> Result<Target, BadHeader> {
    if h.contains_key("x-original-url") {
        original(h)
    } else {
        forwarded(h)
    }
}

/// The client's address. `X-Forwarded-For` is believed only from a trusted proxy (`trusted`:
/// the peer is one), and then read from the right, past the trusted proxies' own entries: the
/// first other address is the client (earlier entries are the client's own word). Otherwise,
/// or when an entry is no address, the peer.
pub fn client(h: &HeaderMap, peer: Option<std::net::IpAddr>, trusted: &[ipnet::IpNet]) -> String {
    let is_trusted = |a: &std::net::IpAddr| trusted.iter().any(|n| n.contains(a));
    let canonical = |a: std::net::IpAddr| a.to_canonical().to_string();
    let Some(peer) = peer.map(|a| a.to_canonical()) else {
        return String::new();
    };
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    let entries: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut client = peer;
    for e in entries.iter().rev() {
        match e.parse::<std::net::IpAddr>() {
            Ok(a) => {
                client = a.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => return canonical(peer),
        }
    }
    canonical(client)
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
    fn paths_are_canonical_for_the_rules() {
        for (raw, want) in [
            ("/public/a.css", "/public/a.css"),
            ("/public/../secret", "/secret"),
            ("/./admin/x", "/admin/x"),
            ("/%61dmin/x?q=%2f", "/admin/x"),
            ("/admin;x", "/admin"),
            ("//admin//x/", "/admin/x/"),
            ("/public;/../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ] {
            assert_eq!(canonical_path(raw).unwrap(), want, "{raw}");
        }
        for raw in [
            "/public/%2e%2e/secret",
            "/x/..%2f..%2fsecret",
            "/a%5cb",
            "/a\\b",
            "/a%00",
            "/a%zz",
            "/a%2",
        ] {
            assert!(canonical_path(raw).is_err(), "{raw}");
        }
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
    fn client_address_is_the_trusted_proxys_word() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let lo = Some("127.0.0.1".parse().unwrap());
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7")]);
        assert_eq!(client(&h, lo, &trusted), "192.0.2.7");
        // Past the trusted proxies' own entries (a CDN in 10/8 in front of nginx).
        let h = headers(&[("x-forwarded-for", "192.0.2.7, 10.1.1.1")]);
        assert_eq!(client(&h, lo, &trusted), "192.0.2.7");
        let h = headers(&[("x-forwarded-for", "::ffff:192.0.2.8")]);
        assert_eq!(client(&h, lo, &trusted), "192.0.2.8");
        assert_eq!(client(&HeaderMap::new(), lo, &trusted), "127.0.0.1");
        // From anyone else, the header is the client's word: not believed.
        let h = headers(&[("x-forwarded-for", "192.0.2.7")]);
        let other = Some("198.51.100.1".parse().unwrap());
        assert_eq!(client(&h, other, &trusted), "198.51.100.1");
        let h = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(client(&h, lo, &trusted), "127.0.0.1");
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
