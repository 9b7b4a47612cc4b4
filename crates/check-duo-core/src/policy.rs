//! The validated settings the rules run on. The binary reads them from the config file (the
//! seed's JSON); the core only checks against them, on every request, so a shorter lifetime or a
//! new limit applies to sessions approved before the change.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::keys::SessionKeys;
use crate::password::Credential;

/// What to do when Duo cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Deny (the default).
    Secure,
    /// Allow after the password alone; logged loudly.
    Safe,
}

/// Brute-force and push-fatigue limits. A zero count or duration turns that limit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Failed passwords of one user from one client within `failure_window` before that pair is
    /// banned: the limit a single attacker meets first, without locking the user out elsewhere.
    pub pair_failures: u64,
    /// Failed passwords per user within `failure_window` (from anywhere) before the user is
    /// banned: against guesses spread over many addresses.
    pub user_failures: u64,
    /// Failed passwords per client within `failure_window` before the client is banned.
    pub ip_failures: u64,
    pub failure_window: Duration,
    /// How long a ban lasts: requests are denied without checking the password.
    pub ban: Duration,
    /// After a denied or unanswered push, no new push for this session or user for this long.
    pub push_cooldown: Duration,
    /// Pushes per user within `push_window`; beyond it, deny without asking Duo.
    pub max_pushes: u64,
    pub push_window: Duration,
    /// Paths (with `*` wildcards) that never send a push: a request there with no valid
    /// session is denied (background polls, API calls).
    pub no_push_paths: Vec<String>,
    /// IPv6 clients are counted per network of this prefix length (one host has a /64).
    pub ipv6_prefix: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pair_failures: 5,
            user_failures: 20,
            ip_failures: 20,
            failure_window: Duration::from_secs(300),
            ban: Duration::from_secs(900),
            push_cooldown: Duration::from_secs(60),
            max_pushes: 5,
            push_window: Duration::from_secs(900),
            no_push_paths: Vec::new(),
            ipv6_prefix: 64,
        }
    }
}

/// Session lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// How long an approval lasts; zero means the second factor on every request (as the seed).
    pub expiry: Duration,
    /// End a session unused for this long (beside the absolute expiry); `None`: off.
    pub idle_timeout: Option<Duration>,
    /// A session is good only from the network it was approved from; `None`: from anywhere
    /// (a change of address is logged either way).
    pub bind_network: Option<NetworkBinding>,
    /// The pipe mode: every request carries the password, and a session is good only with the
    /// password it was approved with. Off in the long-running mode, where the session token is
    /// the proof and requests carry no user: the session's user comes from the store, and a
    /// session still ends when that user's configured credential changes or goes.
    pub bound_to_password: bool,
}

/// How large "the client's network" is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkBinding {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for NetworkBinding {
    /// A /24 (a typical LAN or provider pool) and a /64 (one IPv6 host or LAN).
    fn default() -> Self {
        NetworkBinding {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        }
    }
}

impl NetworkBinding {
    /// Whether `a` and `b` are in one network of this size (addresses of different families
    /// never are).
    pub fn same_network(&self, a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (a.to_canonical(), b.to_canonical()) {
            (V4(a), V4(b)) => {
                ipnet::Ipv4Net::new(a, self.ipv4_prefix.min(32)).is_ok_and(|n| n.contains(&b))
            }
            (V6(a), V6(b)) => {
                ipnet::Ipv6Net::new(a, self.ipv6_prefix.min(128)).is_ok_and(|n| n.contains(&b))
            }
            _ => false,
        }
    }
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            expiry: Duration::from_secs(14400),
            idle_timeout: None,
            bind_network: None,
            bound_to_password: true,
        }
    }
}

/// The second factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorPolicy {
    pub failmode: FailMode,
    /// Client networks where `failmode: safe` applies; elsewhere Duo being unreachable denies.
    /// Empty: everywhere.
    pub failmode_networks: Vec<ipnet::IpNet>,
    /// Deadline for the whole second factor (preauth, push, waiting for the answer).
    pub push_timeout: Duration,
    /// Ask Duo for Verified Push (the user types a code shown by the front-end into Duo
    /// Mobile): only for a front-end that shows [`crate::Pending::code`] (the portal; the pipe
    /// mode has no page to show it on).
    pub verified_push: bool,
}

impl Default for FactorPolicy {
    fn default() -> Self {
        FactorPolicy {
            failmode: FailMode::Secure,
            failmode_networks: Vec::new(),
            push_timeout: Duration::from_secs(60),
            verified_push: false,
        }
    }
}

/// Users from a directory ([`crate::ports::Directory`]): those the config does not list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryPolicy {
    /// A session of a directory user is good for this long after the directory last accepted
    /// the user; the next request after it asks the directory again (a bind with the password
    /// where requests carry it, a lookup of the user where they do not) and the session ends if
    /// the directory no longer accepts the user.
    pub recheck: Duration,
    /// The deadline of each directory check (connect, TLS, binds and searches together).
    pub timeout: Duration,
}

/// Everything the rules decide with.
#[derive(Clone, Debug)]
pub struct Policy {
    pub users: BTreeMap<String, Credential>,
    /// Local TOTP secrets (RFC 6238) of the users who use it instead of Duo.
    pub totp: BTreeMap<String, Vec<u8>>,
    pub keys: SessionKeys,
    pub session: SessionPolicy,
    pub limits: Limits,
    pub factor: FactorPolicy,
    /// A grant whose audit record could not be written becomes a deny.
    pub audit_required: bool,
    /// Users the config does not list are asked of the directory (the gate's `directory` port).
    pub directory: Option<DirectoryPolicy>,
}

impl Policy {
    /// A policy with the defaults, for `users` and the session key `secret`.
    pub fn new(users: BTreeMap<String, Credential>, secret: &str) -> Self {
        Policy {
            users,
            totp: BTreeMap::new(),
            keys: SessionKeys::derive(secret),
            session: SessionPolicy::default(),
            limits: Limits::default(),
            factor: FactorPolicy::default(),
            audit_required: false,
            directory: None,
        }
    }
}
