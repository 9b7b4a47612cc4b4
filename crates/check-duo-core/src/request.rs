//! A request as every front-end hands it to the core: who (if the front-end knows), the password
//! (if there is one), the session token (the cookie's value, if any) and where it goes.

use std::fmt;
use std::net::IpAddr;

use duo_auth::Secret;

/// One request to decide.
#[derive(Clone, Default)]
pub struct Request {
    /// The user name the request claims (empty when the front-end has none, e.g. a daemon's
    /// authorization of a bare session cookie).
    pub user: String,
    pub password: Option<Secret>,
    /// The session token: the value of the session cookie.
    pub session: Option<Secret>,
    /// The client address as the front-end got it (may be empty or not an address).
    pub ip: String,
    pub host: String,
    pub method: String,
    pub uri: String,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("user", &self.user)
            .field("ip", &self.ip)
            .field("host", &self.host)
            .field("method", &self.method)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The client address, with IPv4-mapped IPv6 addresses turned into IPv4.
    pub fn addr(&self) -> Option<IpAddr> {
        self.ip
            .trim()
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical())
    }

    /// The name the client is counted under for bans: its IPv4 address, or its IPv6 network of
    /// `ipv6_prefix` bits (one host has a whole /64, so counting single addresses would let it
    /// walk around any limit); the raw text when it is no address; `None` when absent.
    pub fn client_key(&self, ipv6_prefix: u8) -> Option<String> {
        match self.addr() {
            Some(IpAddr::V4(a)) => Some(a.to_string()),
            Some(IpAddr::V6(a)) => {
                let prefix = ipv6_prefix.min(128);
                let net = ipnet::Ipv6Net::new(a, prefix).map(|n| n.trunc());
                Some(net.map_or_else(|_| a.to_string(), |n| n.to_string()))
            }
            None if self.ip.trim().is_empty() => None,
            None => Some(self.ip.trim().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Request {
        Request {
            ip: ip.into(),
            ..Request::default()
        }
    }

    #[test]
    fn client_keys_are_canonical() {
        assert_eq!(at("10.0.0.1").client_key(64).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            at("::ffff:10.0.0.1").client_key(64).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            at("2001:db8:1:2:aaaa::1").client_key(64).as_deref(),
            at("2001:db8:1:2:bbbb::2").client_key(64).as_deref()
        );
        assert_eq!(
            at("2001:DB8:1:2::1").client_key(64).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_ne!(
            at("2001:db8:1:2::1").client_key(128),
            at("2001:db8:1:2::2").client_key(128)
        );
        assert_eq!(at("").client_key(64), None);
        assert_eq!(at("weird").client_key(64).as_deref(), Some("weird"));
    }

    #[test]
    fn debug_hides_secrets() {
        let r = Request {
            user: "alice".into(),
            password: Some(Secret::new("hunter2")),
            session: Some(Secret::new("SECRETCOOKIE")),
            ..Request::default()
        };
        let d = format!("{r:?}");
        assert!(!d.contains("hunter2") && !d.contains("SECRETCOOKIE"), "{d}");
    }
}
