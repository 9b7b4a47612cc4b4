//! The configuration file: the seed's JSON format, unchanged, plus optional additions.
//!
//! Read in two stages: a raw serde struct that refuses unknown keys, then a checked [`Config`].
//! Every error names the file and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use check_duo_core::keys::SessionKeys;
pub use check_duo_core::password::Credential;
use check_duo_core::policy::{
    FactorPolicy, FailMode, Limits, NetworkBinding, Policy, SessionPolicy,
};
pub use check_duo_store::CacheConfig;
use duo_auth::{Secret, SigVersion};
use serde::Deserialize;

/// Where the embedded store lives when the config names no cache.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/check-duo/sessions.db";
/// Config files larger than this are not configs. 10,000 users in `usernames` take about 1.1 MB
/// (argon2id hashes); the cap leaves room for ten times as many (a directory that large wants
/// `htpasswd` or LDAP).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A configuration error: the file, the key (dotted path, empty for the whole file) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config {}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "config {}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// How to reach Duo (what the rules decide with is in [`Policy`]).
#[derive(Clone, Debug)]
pub struct DuoConfig {
    pub ikey: String,
    pub skey: Secret,
    pub host: String,
    pub ca_pem: Option<Vec<u8>>,
    /// Deadline for each single call.
    pub call_timeout: Duration,
    pub sig_version: SigVersion,
    /// `duo.verified_push`: the long-running mode asks for Verified Push (the pipe mode cannot
    /// show its code).
    pub verified_push: bool,
    /// `duo.prompt: "universal"`: the Universal Prompt application (`serve` only).
    pub universal: Option<UniversalApp>,
}

/// Duo's Universal Prompt application, for the long-running mode's portal.
#[derive(Clone, Debug)]
pub struct UniversalApp {
    pub client_id: String,
    pub client_secret: Secret,
}

/// The checked configuration: the core's [`Policy`] and what the front-ends need besides.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// What the rules decide with: users, TOTP secrets, lifetimes, limits, failmode.
    pub policy: Policy,
    pub duo: DuoConfig,
    pub cache: CacheConfig,
    /// The name of the session cookie (mod_session's, in the pipe mode).
    pub session_name: String,
    /// The optional audit log (see [`crate::audit`]).
    pub audit: Option<crate::audit::AuditConfig>,
    /// The long-running mode's section (`check-duo serve`); the pipe mode ignores it.
    pub server: Option<crate::serve::ServerConfig>,
    /// The users of `username`/`usernames` (the policy's users are these plus the htpasswd
    /// file's).
    pub config_users: BTreeMap<String, Credential>,
    /// Set by [`Config::load_user`] (the pipe mode): `policy.users`, `config_users` and the
    /// TOTP secrets then hold this user's entries at most, and `groups` was not checked
    /// against the users. `None`: every user, every check.
    pub only_user: Option<String>,
    /// The htpasswd file, if any.
    pub htpasswd: Option<PathBuf>,
    /// Each user's groups (from `groups`), sorted.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Users' display names and addresses (from `profiles`).
    pub profiles: BTreeMap<String, Profile>,
    /// Users from LDAP / Active Directory (section `ldap`), if any.
    pub ldap: Option<crate::ldap::LdapConfig>,
}

/// The users of `config_users` and of the htpasswd file `path`: a name in both is an error.
pub fn with_htpasswd(
    config_users: &BTreeMap<String, Credential>,
    path: &Path,
) -> Result<BTreeMap<String, Credential>, String> {
    let mut users = config_users.clone();
    for (name, cred) in crate::htpasswd::read(path)? {
        if users.insert(name.clone(), cred).is_some() {
            return Err(format!(
                "{}: user {name:?} is also in `usernames`: keep one",
                path.display()
            ));
        }
    }
    Ok(users)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    username: Option<String>,
    password: Option<String>,
    usernames: Option<Usernames>,
    /// An Apache htpasswd file of more users.
    htpasswd: Option<PathBuf>,
    /// Groups: name → its users.
    groups: Option<BTreeMap<String, Vec<String>>>,
    /// Users' display names and e-mail addresses (`serve`'s `Remote-Name`, `Remote-Email`).
    profiles: Option<BTreeMap<String, Profile>>,
    duo: RawDuo,
    cache: Option<RawCache>,
    session: Option<RawSession>,
    limits: Option<RawLimits>,
    totp: Option<BTreeMap<String, String>>,
    audit: Option<crate::audit::RawAudit>,
    server: Option<crate::serve::settings::RawServer>,
    ldap: Option<crate::ldap::RawLdap>,
}

/// `usernames`, in the file's order, a name given twice kept twice (a config error, where a map
/// would keep the last one silently).
struct Usernames(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Usernames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Usernames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of user names to password hashes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Usernames, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Usernames(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// The pipe mode's users: `user`'s entry alone, from `username`/`usernames` (`config_users`)
/// or the htpasswd file; in both is an error, as [`with_htpasswd`] says for any user.
pub fn only_user(
    config_users: &BTreeMap<String, Credential>,
    htpasswd: Option<&Path>,
    user: &str,
) -> Result<BTreeMap<String, Credential>, String> {
    let mut users = BTreeMap::new();
    if let Some(cred) = config_users.get(user) {
        users.insert(user.to_string(), cred.clone());
    }
    if let Some(path) = htpasswd {
        if let Some(cred) = crate::htpasswd::find(path, user)? {
            if users.insert(user.to_string(), cred).is_some() {
                return Err(format!(
                    "{}: user {user:?} is also in `usernames`: keep one",
                    path.display()
                ));
            }
        }
    }
    Ok(users)
}

/// What [`Config::load_user`] read: the user, and how many entries `usernames` had in all.
#[derive(Clone, Copy)]
struct Only<'a> {
    user: &'a str,
    entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    pair_failures: Option<u64>,
    user_failures: Option<u64>,
    ip_failures: Option<u64>,
    failure_window: Option<u64>,
    ban: Option<u64>,
    push_cooldown: Option<u64>,
    max_pushes: Option<u64>,
    push_window: Option<u64>,
    no_push_paths: Option<Vec<String>>,
    ipv6_prefix: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuo {
    ikey: String,
    skey: String,
    host: String,
    ca_file: Option<PathBuf>,
    failmode: Option<String>,
    push_timeout: Option<u64>,
    call_timeout: Option<u64>,
    signature: Option<String>,
    failmode_networks: Option<Vec<String>>,
    /// `serve`: ask for Verified Push where Duo's policy has it (default true).
    verified_push: Option<bool>,
    /// `serve`: `"push"` (Auth API pushes, the default) or `"universal"` (Duo's hosted prompt).
    prompt: Option<String>,
    /// The Universal Prompt application (Web SDK): 20 and 40 characters.
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The seed writes `"port": "6379"`; numbers are accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Num(u64),
    Str(String),
}

impl StrOrNum {
    fn as_u64(&self) -> Option<u64> {
        match self {
            StrOrNum::Num(n) => Some(*n),
            StrOrNum::Str(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    host: Option<String>,
    port: Option<StrOrNum>,
    db: Option<StrOrNum>,
    prefix: Option<String>,
    username: Option<String>,
    password: Option<String>,
    url: Option<String>,
    ca_file: Option<PathBuf>,
    path: Option<PathBuf>,
    timeout: Option<u64>,
    /// Redis behind Sentinel: the sentinels, `"host:port"` each, and the name they monitor.
    sentinels: Option<Vec<String>>,
    master_name: Option<String>,
    /// With `sentinels`: TLS to the sentinels and the master (as `rediss://` for one server).
    tls: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    name: Option<String>,
    expiry: Option<u64>,
    idle_timeout: Option<u64>,
    bind_network: Option<RawBinding>,
}

/// `"bind_network": true` (a /24 or a /64) or `{"ipv4": 24, "ipv6": 64}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBinding {
    On(bool),
    Prefixes(RawPrefixes),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrefixes {
    ipv4: Option<u8>,
    ipv6: Option<u8>,
}

impl Config {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| err("", format!("cannot read: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(err("", "file too large".into()));
        }
        let text = std::fs::read(path).map_err(|e| err("", format!("cannot read: {e}")))?;
        Config::parse(path, &text)
    }

    /// The pipe mode's read, for a request of `user`: the file with only `user`'s entry of
    /// `usernames` (see [`crate::one_user`]), and only `user`'s line of the htpasswd file (see
    /// [`crate::htpasswd::find`]), so that a request costs the same with 10,000 users as with
    /// one. Every other key is checked as [`Config::load`] checks it, and so is the user's
    /// entry; what is not checked here: the other users' entries, a name of another user in
    /// both `usernames` and the htpasswd file, and `groups` or `totp` entries naming users who
    /// do not exist (`config check` and `serve` report them all). A file the scanner does not
    /// follow is read whole, as [`Config::load`] reads it.
    pub fn load_user(path: &Path, user: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(err("file too large".into()));
        }
        match crate::one_user::reduce(file, user, MAX_CONFIG_BYTES, meta.len()) {
            Ok(crate::one_user::Reduced::Text { text, users }) => Config::from_text(
                path,
                &text,
                Some(Only {
                    user,
                    entries: users,
                }),
            ),
            Ok(crate::one_user::Reduced::Unsure) => Config::load(path),
            Err(crate::one_user::Error::TooLarge) => Err(err("file too large".into())),
            Err(crate::one_user::Error::Io(e)) => Err(err(format!("cannot read: {e}"))),
        }
    }

    /// Check a config from its bytes; `path` names it in errors and resolves nothing.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Config, ConfigError> {
        Config::from_text(path, text, None)
    }

    /// [`Config::parse`], of every user or (`only`) of one.
    fn from_text(path: &Path, text: &[u8], only: Option<Only<'_>>) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let de = &mut serde_json::Deserializer::from_slice(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // serde quotes the offending value; for a secret that would put it in every log line.
            let message = if is_secret_key(&key) {
                "must be a string (the value is not shown: it is a secret)".to_string()
            } else {
                e.into_inner().to_string()
            };
            err(&key, message)
        })?;

        let mut config_users = users(&raw, &err)?;
        let users = match (only, &raw.htpasswd) {
            (Some(o), h) => {
                let users = only_user(&config_users, h.as_deref(), o.user)
                    .map_err(|m| err("htpasswd", m))?;
                config_users.retain(|u, _| u == o.user);
                users
            }
            (None, Some(p)) => with_htpasswd(&config_users, p).map_err(|m| err("htpasswd", m))?,
            (None, None) => config_users.clone(),
        };
        let ldap = match &raw.ldap {
            Some(l) => Some(crate::ldap::LdapConfig::from_raw(l).map_err(|(k, m)| err(&k, m))?),
            None => None,
        };
        // One user's read cannot tell an htpasswd file without users from one without this
        // user: only a config with no source of users at all is refused.
        let none = match only {
            Some(o) => o.entries == 0 && raw.username.is_none() && raw.htpasswd.is_none(),
            None => users.is_empty(),
        };
        if none && ldap.is_none() {
            return Err(err(
                "usernames",
                "no user configured (set `usernames`, `username` and `password`, `htpasswd` or `ldap`)"
                    .into(),
            ));
        }
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, members) in raw.groups.iter().flatten() {
            let key = format!("groups.{group}");
            if group.is_empty()
                || group.len() > 256
                || group.contains([',', ':'])
                || group.chars().any(char::is_control)
            {
                return Err(err(
                    &key,
                    "not a group name (no comma, colon or control character)".into(),
                ));
            }
            for m in members {
                // With a directory, a group of the config may name its users too; one user's
                // read does not know the others.
                if only.is_none() && !users.contains_key(m) && ldap.is_none() {
                    return Err(err(&key, format!("{m:?} is not a configured user")));
                }
                groups.entry(m.clone()).or_default().push(group.clone());
            }
        }
        let mut profiles = BTreeMap::new();
        for (user, p) in raw.profiles.iter().flatten() {
            let key = format!("profiles.{user}");
            if only.is_none() && !users.contains_key(user) && ldap.is_none() {
                return Err(err(&key, "not a configured user".into()));
            }
            check_profile(p).map_err(|(k, m)| err(&format!("{key}.{k}"), m))?;
            profiles.insert(user.clone(), p.clone());
        }
        let (duo, factor) = duo(&raw.duo, &err)?;
        let cache = cache(raw.cache.as_ref(), &err)?;
        let raw_session = raw.session.as_ref();
        let session_name = raw_session
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| "formsession".into());
        let bind_network = match raw_session.and_then(|s| s.bind_network.as_ref()) {
            None | Some(RawBinding::On(false)) => None,
            Some(RawBinding::On(true)) => Some(NetworkBinding::default()),
            Some(RawBinding::Prefixes(p)) => {
                let d = NetworkBinding::default();
                let b = NetworkBinding {
                    ipv4_prefix: p.ipv4.unwrap_or(d.ipv4_prefix),
                    ipv6_prefix: p.ipv6.unwrap_or(d.ipv6_prefix),
                };
                if !(1..=32).contains(&b.ipv4_prefix) {
                    return Err(err("session.bind_network.ipv4", "must be 1..=32".into()));
                }
                if !(1..=128).contains(&b.ipv6_prefix) {
                    return Err(err("session.bind_network.ipv6", "must be 1..=128".into()));
                }
                Some(b)
            }
        };
        let session = SessionPolicy {
            expiry: Duration::from_secs(raw_session.and_then(|s| s.expiry).unwrap_or(14400)),
            idle_timeout: raw_session
                .and_then(|s| s.idle_timeout)
                .filter(|t| *t > 0)
                .map(Duration::from_secs),
            bind_network,
            bound_to_password: true,
        };
        let limits = limits(raw.limits.as_ref(), &err)?;
        let audit = match &raw.audit {
            Some(a) => Some(crate::audit::AuditConfig::from_raw(a).map_err(|(k, m)| err(k, m))?),
            None => None,
        };
        let mut totp = BTreeMap::new();
        for (user, secret) in raw.totp.iter().flatten() {
            if only.is_some_and(|o| o.user != user) {
                continue;
            }
            let key = format!("totp.{user}");
            if !users.contains_key(user) {
                return Err(err(&key, "not a configured user".into()));
            }
            let bytes = check_duo_core::totp::decode_secret(secret).map_err(|m| err(&key, m))?;
            totp.insert(user.clone(), bytes);
        }
        if session_name.is_empty()
            || !session_name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b';' | b','))
        {
            return Err(err("session.name", "not a cookie name".into()));
        }
        let policy = Policy {
            users,
            totp,
            keys: SessionKeys::derive(duo.skey.expose()),
            session,
            limits,
            factor,
            audit_required: audit.as_ref().is_some_and(|a| a.required),
            directory: ldap.as_ref().map(crate::ldap::LdapConfig::policy),
        };
        let server = match &raw.server {
            Some(s) => Some(crate::serve::ServerConfig::from_raw(s).map_err(|(k, m)| err(&k, m))?),
            None => None,
        };
        Ok(Config {
            path: path.to_path_buf(),
            policy,
            duo,
            cache,
            session_name,
            audit,
            server,
            config_users,
            only_user: only.map(|o| o.user.to_string()),
            htpasswd: raw.htpasswd.clone(),
            groups,
            profiles,
            ldap,
        })
    }
}

/// What `serve` tells the application of a user besides the name and groups (`profiles`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `Remote-Name`.
    pub name: Option<String>,
    /// `Remote-Email`.
    pub email: Option<String>,
}

/// A profile's values: text a header carries (visible characters and spaces, at most 256
/// bytes), an address with one `@` between two non-empty parts.
fn check_profile(p: &Profile) -> Result<(), (&'static str, String)> {
    let header_text = |v: &str| {
        !v.trim().is_empty()
            && v.len() <= 256
            && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
    };
    if let Some(n) = &p.name {
        if !header_text(n) {
            return Err((
                "name",
                "not 1 to 256 visible ASCII characters and spaces".into(),
            ));
        }
    }
    if let Some(e) = &p.email {
        let one_at = e.split('@').count() == 2 && !e.starts_with('@') && !e.ends_with('@');
        if !header_text(e) || e.contains(' ') || !one_at {
            return Err(("email", format!("{e:?} is not an e-mail address")));
        }
    }
    Ok(())
}

type ErrFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn users(raw: &RawConfig, err: &ErrFn<'_>) -> Result<BTreeMap<String, Credential>, ConfigError> {
    let mut users = BTreeMap::new();
    match (&raw.username, &raw.password) {
        (Some(u), Some(p)) => {
            check_username(u).map_err(|m| err("username", m))?;
            if p.is_empty() {
                return Err(err("password", "empty".into()));
            }
            users.insert(u.clone(), credential(p));
        }
        (Some(_), None) => return Err(err("password", "missing (username needs it)".into())),
        (None, Some(_)) => return Err(err("username", "missing (password needs it)".into())),
        (None, None) => {}
    }
    for (name, hash) in raw.usernames.iter().flat_map(|u| &u.0) {
        let key = format!("usernames.{name}");
        check_username(name).map_err(|m| err(&key, m))?;
        let cred = credential(hash);
        if matches!(cred, Credential::Plain(_)) {
            return Err(err(
                &key,
                "not a bcrypt ($2b$/$2y$) or argon2id ($argon2id$) hash".into(),
            ));
        }
        if let Credential::Argon2id(h) = &cred {
            argon2::PasswordHash::new(h)
                .map_err(|e| err(&key, format!("bad argon2id hash: {e}")))?;
        }
        if users.insert(name.clone(), cred).is_some() {
            return Err(err(&key, "user defined twice".into()));
        }
    }
    Ok(users)
}

fn limits(raw: Option<&RawLimits>, err: &ErrFn<'_>) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let Some(raw) = raw else { return Ok(d) };
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    let limits = Limits {
        pair_failures: raw.pair_failures.unwrap_or(d.pair_failures),
        user_failures: raw.user_failures.unwrap_or(d.user_failures),
        ip_failures: raw.ip_failures.unwrap_or(d.ip_failures),
        failure_window: secs(raw.failure_window, d.failure_window),
        ban: secs(raw.ban, d.ban),
        push_cooldown: secs(raw.push_cooldown, d.push_cooldown),
        max_pushes: raw.max_pushes.unwrap_or(d.max_pushes),
        push_window: secs(raw.push_window, d.push_window),
        no_push_paths: raw.no_push_paths.clone().unwrap_or_default(),
        ipv6_prefix: raw.ipv6_prefix.unwrap_or(d.ipv6_prefix),
    };
    if !(1..=128).contains(&limits.ipv6_prefix) {
        return Err(err("limits.ipv6_prefix", "must be 1..=128".into()));
    }
    for (i, p) in limits.no_push_paths.iter().enumerate() {
        if !p.starts_with('/') && !p.starts_with('*') {
            return Err(err(
                &format!("limits.no_push_paths[{i}]"),
                format!("{p:?}: a path pattern starts with / or *"),
            ));
        }
    }
    for (key, v) in [
        ("limits.failure_window", limits.failure_window),
        ("limits.ban", limits.ban),
        ("limits.push_cooldown", limits.push_cooldown),
        ("limits.push_window", limits.push_window),
    ] {
        if v > Duration::from_secs(30 * 86400) {
            return Err(err(key, "longer than 30 days".into()));
        }
    }
    Ok(limits)
}

/// Keys whose values must never appear in a message.
fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "password" | "duo.skey" | "duo.client_secret" | "cache.password" | "cache.url"
    ) || key.starts_with("usernames.")
        || key.starts_with("server.secrets")
        || key.starts_with("totp.")
}

fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        Err("not a valid user name".into())
    } else {
        Ok(())
    }
}

fn credential(s: &str) -> Credential {
    if s.starts_with("$2b$") || s.starts_with("$2y$") || s.starts_with("$2a$") {
        Credential::Bcrypt(s.to_string())
    } else if s.starts_with("$argon2id$") {
        Credential::Argon2id(s.to_string())
    } else {
        Credential::Plain(Secret::new(s))
    }
}

fn read_pem(path: &Path, key: &str, err: &ErrFn<'_>) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| err(key, format!("{}: {e}", path.display())))?;
    let mut n = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        cert.map_err(|e| err(key, format!("{}: {e}", path.display())))?;
        n += 1;
    }
    if n == 0 {
        return Err(err(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(pem)
}

fn duo(raw: &RawDuo, err: &ErrFn<'_>) -> Result<(DuoConfig, FactorPolicy), ConfigError> {
    if raw.ikey.trim().is_empty() {
        return Err(err("duo.ikey", "empty".into()));
    }
    let universal = match raw.prompt.as_deref().unwrap_or("push") {
        "push" => None,
        "universal" => {
            let id = raw.client_id.clone().ok_or_else(|| {
                err(
                    "duo.client_id",
                    "missing (duo.prompt \"universal\" needs it)".into(),
                )
            })?;
            let secret = raw.client_secret.clone().ok_or_else(|| {
                err(
                    "duo.client_secret",
                    "missing (duo.prompt \"universal\" needs it)".into(),
                )
            })?;
            if id.len() != 20 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(err(
                    "duo.client_id",
                    "not a client id (20 letters and digits)".into(),
                ));
            }
            if secret.len() != 40 {
                return Err(err(
                    "duo.client_secret",
                    "not a client secret (40 characters; the value is not shown)".into(),
                ));
            }
            Some(UniversalApp {
                client_id: id,
                client_secret: Secret::new(secret),
            })
        }
        other => {
            return Err(err(
                "duo.prompt",
                format!("{other:?}: \"push\" or \"universal\""),
            ))
        }
    };
    if raw.skey.is_empty() {
        return Err(err("duo.skey", "empty".into()));
    }
    let host = raw.host.trim();
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err(err(
            "duo.host",
            "not a host name (with an optional :port)".into(),
        ));
    }
    let ca_pem = match &raw.ca_file {
        Some(p) => Some(read_pem(p, "duo.ca_file", err)?),
        None => None,
    };
    let failmode = match raw.failmode.as_deref() {
        None | Some("secure") => FailMode::Secure,
        Some("safe") => FailMode::Safe,
        Some(other) => {
            return Err(err(
                "duo.failmode",
                format!("{other:?}: expected \"secure\" or \"safe\""),
            ))
        }
    };
    let mut failmode_networks = Vec::new();
    for (i, n) in raw.failmode_networks.iter().flatten().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                err(
                    &format!("duo.failmode_networks[{i}]"),
                    format!("{n:?}: not a network (10.0.0.0/8, 2001:db8::/32 or an address)"),
                )
            })?;
        failmode_networks.push(net);
    }
    if !failmode_networks.is_empty() && failmode != FailMode::Safe {
        return Err(err(
            "duo.failmode_networks",
            "only used with failmode \"safe\"".into(),
        ));
    }
    let push_timeout = raw.push_timeout.unwrap_or(60);
    let call_timeout = raw.call_timeout.unwrap_or(10);
    if !(1..=600).contains(&push_timeout) {
        return Err(err("duo.push_timeout", "must be 1..=600 seconds".into()));
    }
    if !(1..=120).contains(&call_timeout) {
        return Err(err("duo.call_timeout", "must be 1..=120 seconds".into()));
    }
    let sig_version = match raw.signature.as_deref() {
        None | Some("v2-sha512") => SigVersion::V2Sha512,
        Some("v2-sha1") => SigVersion::V2Sha1,
        Some("v5") => SigVersion::V5,
        Some(other) => {
            return Err(err(
                "duo.signature",
                format!("{other:?}: expected \"v2-sha512\", \"v2-sha1\" or \"v5\""),
            ))
        }
    };
    let conn = DuoConfig {
        ikey: raw.ikey.trim().to_string(),
        skey: Secret::new(raw.skey.clone()),
        host: host.to_string(),
        ca_pem,
        call_timeout: Duration::from_secs(call_timeout),
        sig_version,
        verified_push: raw.verified_push.unwrap_or(true),
        universal,
    };
    let factor = FactorPolicy {
        failmode,
        failmode_networks,
        push_timeout: Duration::from_secs(push_timeout),
        // The pipe mode has no page to show a code on; `serve` sets it from `duo.verified_push`.
        verified_push: false,
    };
    Ok((conn, factor))
}

fn cache(raw: Option<&RawCache>, err: &ErrFn<'_>) -> Result<CacheConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(CacheConfig::Embedded {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            timeout: Duration::from_secs(2),
        });
    };
    let timeout = Duration::from_secs(raw.timeout.unwrap_or(2));
    if !(1..=60).contains(&timeout.as_secs()) {
        return Err(err("cache.timeout", "must be 1..=60 seconds".into()));
    }
    if raw.sentinels.is_some() || raw.master_name.is_some() {
        // Redis behind Sentinel: the sentinels name the master, so nothing else may.
        for (given, key) in [
            (raw.url.is_some(), "cache.url"),
            (raw.host.is_some(), "cache.host"),
            (raw.port.is_some(), "cache.port"),
            (raw.path.is_some(), "cache.path"),
        ] {
            if given {
                return Err(err(
                    key,
                    "not used with `sentinels`: the sentinels name the master".into(),
                ));
            }
        }
        let Some(list) = &raw.sentinels else {
            return Err(err(
                "cache.sentinels",
                "required with `master_name`: a list of \"host:port\"".into(),
            ));
        };
        let Some(master_name) = &raw.master_name else {
            return Err(err("cache.master_name", "required with `sentinels`".into()));
        };
        if list.is_empty() {
            return Err(err(
                "cache.sentinels",
                "empty: give at least one \"host:port\"".into(),
            ));
        }
        let mut sentinels = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let host_port = check_duo_store::parse_host_port(s.trim()).ok_or_else(|| {
                err(
                    &format!("cache.sentinels[{i}]"),
                    format!("{s:?}: not \"host:port\" (\"[v6 address]:port\" for IPv6)"),
                )
            })?;
            sentinels.push(host_port);
        }
        if master_name.is_empty() || !master_name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                "cache.master_name",
                "not a master name (printable ASCII, no spaces)".into(),
            ));
        }
        let db = match &raw.db {
            None => 0,
            Some(d) => d
                .as_u64()
                .and_then(|d| i64::try_from(d).ok())
                .ok_or_else(|| err("cache.db", "not a database number".into()))?,
        };
        let tls = raw.tls.unwrap_or(false);
        let ca_pem = match &raw.ca_file {
            Some(_) if !tls => {
                return Err(err(
                    "cache.ca_file",
                    "only used with `tls: true` (or a rediss:// url)".into(),
                ))
            }
            Some(p) => Some(read_pem(p, "cache.ca_file", err)?),
            None => None,
        };
        let spec = check_duo_store::SentinelSpec {
            sentinels,
            master_name: master_name.clone(),
            username: raw.username.clone(),
            password: raw.password.clone().map(Secret::new),
            db,
            tls,
        };
        return Ok(CacheConfig::Sentinel {
            spec,
            prefix: raw.prefix.clone().unwrap_or_default(),
            ca_pem,
            timeout,
        });
    }
    if raw.tls.is_some() {
        return Err(err(
            "cache.tls",
            "only used with `sentinels` (for one server, give a rediss:// url)".into(),
        ));
    }
    let redis_keys = raw.host.is_some()
        || raw.port.is_some()
        || raw.db.is_some()
        || raw.username.is_some()
        || raw.password.is_some();
    if let Some(path) = &raw.path {
        if redis_keys || raw.url.is_some() || raw.prefix.is_some() || raw.ca_file.is_some() {
            return Err(err(
                "cache.path",
                "the embedded store takes only `path` (and `timeout`); Redis keys given too".into(),
            ));
        }
        if path.as_os_str().is_empty() {
            return Err(err("cache.path", "empty".into()));
        }
        return Ok(CacheConfig::Embedded {
            path: path.clone(),
            timeout,
        });
    }
    let prefix = raw.prefix.clone().unwrap_or_default();
    let ca_pem = match &raw.ca_file {
        Some(p) => Some(read_pem(p, "cache.ca_file", err)?),
        None => None,
    };
    let url = if let Some(url) = &raw.url {
        if redis_keys {
            return Err(err(
                "cache.url",
                "give either `url` or host/port/db/username/password, not both".into(),
            ));
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(err(
                "cache.url",
                "must start with redis:// or rediss://".into(),
            ));
        }
        if url.contains("#insecure") {
            return Err(err(
                "cache.url",
                "#insecure (no certificate check) is not allowed".into(),
            ));
        }
        url.clone()
    } else {
        let host = raw.host.clone().unwrap_or_else(|| "localhost".into());
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(err("cache.host", "not a host name".into()));
        }
        let port = match &raw.port {
            None => 6379,
            Some(p) => p
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| err("cache.port", "not a port number".into()))?,
        };
        let db = match &raw.db {
            None => 0,
            Some(d) => d
                .as_u64()
                .ok_or_else(|| err("cache.db", "not a database number".into()))?,
        };
        let auth = match (&raw.username, &raw.password) {
            (None, None) => String::new(),
            (u, p) => format!(
                "{}:{}@",
                duo_auth::sign::encode(u.as_deref().unwrap_or("")),
                duo_auth::sign::encode(p.as_deref().unwrap_or(""))
            ),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        format!("redis://{auth}{host}:{port}/{db}")
    };
    if ca_pem.is_some() && !url.starts_with("rediss://") {
        return Err(err(
            "cache.ca_file",
            "only used with a rediss:// url".into(),
        ));
    }
    Ok(CacheConfig::Redis {
        url: Secret::new(url),
        prefix,
        ca_pem,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/check-duo/config.json"), s.as_bytes())
    }

    const SEED: &str = r#"{
        "username": "joe",
        "password": "s00p3rSekrit!",
        "duo": {"ikey": "DIXXXXXXXXXXXXXXXXXX", "skey": "secret", "host": "api-xxxxxxxx.duosecurity.com"},
        "cache": {"host": "localhost", "port": "6379"},
        "session": {"name": "formsession", "expiry": 14400}
    }"#;

    #[test]
    fn profiles_are_checked() {
        let with = |p: &str| SEED.replacen('{', &format!("{{\"profiles\": {p},"), 1);
        let c = parse(&with(
            r#"{"joe": {"name": "Joe Bloggs", "email": "joe@example.org"}}"#,
        ))
        .unwrap();
        assert_eq!(c.profiles["joe"].email.as_deref(), Some("joe@example.org"));
        for (profile, key) in [
            (r#"{"ann": {"name": "Ann"}}"#, "profiles.ann"),
            (
                r#"{"joe": {"name": "Joe\nX-Evil: 1"}}"#,
                "profiles.joe.name",
            ),
            (r#"{"joe": {"email": "joe"}}"#, "profiles.joe.email"),
            (r#"{"joe": {"email": "a@b@c"}}"#, "profiles.joe.email"),
            (r#"{"joe": {"phone": "1"}}"#, "profiles.joe.phone"),
        ] {
            let e = parse(&with(profile)).unwrap_err();
            assert_eq!(e.key, key, "{profile}: {e}");
        }
    }

    #[test]
    fn seed_config_parses() {
        let c = parse(SEED).unwrap();
        assert!(matches!(c.policy.users["joe"], Credential::Plain(_)));
        match &c.cache {
            CacheConfig::Redis { url, prefix, .. } => {
                assert_eq!(url.expose(), "redis://localhost:6379/0");
                assert_eq!(prefix, "");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.policy.session.expiry, Duration::from_secs(14400));
        assert_eq!(c.policy.factor.failmode, FailMode::Secure);
    }

    #[test]
    fn numeric_port_and_db() {
        let c = parse(&SEED.replace(
            r#""port": "6379""#,
            r#""port": 6380, "db": "2", "prefix": "cd:""#,
        ))
        .unwrap();
        match &c.cache {
            CacheConfig::Redis { url, prefix, .. } => {
                assert_eq!(url.expose(), "redis://localhost:6380/2");
                assert_eq!(prefix, "cd:");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_cache_means_embedded_default() {
        let c =
            parse(&SEED.replace(r#""cache": {"host": "localhost", "port": "6379"},"#, "")).unwrap();
        match c.cache {
            CacheConfig::Embedded { path, .. } => assert_eq!(path, Path::new(DEFAULT_STORE_PATH)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e =
            parse(&SEED.replace(r#""host": "api"#, r#""hots": "x", "host": "api"#)).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/etc/check-duo/config.json"), "{s}");
        assert!(s.contains("duo"), "{s}");
        assert!(s.contains("hots"), "{s}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse(&SEED.replace(r#""expiry": 14400"#, r#""expiry": "soon""#)).unwrap_err();
        assert_eq!(e.key, "session.expiry");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            (r#""port": "6379""#, r#""port": "http""#, "cache.port"),
            (
                r#""host": "api-xxxxxxxx.duosecurity.com""#,
                r#""host": "a/b""#,
                "duo.host",
            ),
            (
                r#""skey": "secret""#,
                r#""skey": "secret", "failmode": "open""#,
                "duo.failmode",
            ),
            (
                r#""skey": "secret""#,
                r#""skey": "secret", "push_timeout": 0"#,
                "duo.push_timeout",
            ),
            (
                r#""name": "formsession""#,
                r#""name": "a;b""#,
                "session.name",
            ),
            (
                r#""port": "6379""#,
                r#""port": "6379", "path": "/x""#,
                "cache.path",
            ),
        ] {
            let text = SEED.replace(from, to);
            assert_ne!(text, SEED, "{from}");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn hashed_users() {
        let text = r#"{"usernames": {"alice": "$2y$05$abcdefghijklmnopqrstuuJ1Jt3m6lI0tM2rR1nD4JzGm9b0p0p7C",
                                     "bob": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$Z3JvdW5kdHJ1dGhncm91bmR0cnV0aA"},
                       "duo": {"ikey": "I", "skey": "S", "host": "127.0.0.1:8443"},
                       "cache": {"path": "/tmp/x.db"}}"#;
        let c = parse(text).unwrap();
        assert!(matches!(c.policy.users["alice"], Credential::Bcrypt(_)));
        assert!(matches!(c.policy.users["bob"], Credential::Argon2id(_)));
        let e = parse(&text.replace("$2y$05", "plain")).unwrap_err();
        assert_eq!(e.key, "usernames.alice");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted() {
        let e = parse(&SEED.replace(r#""s00p3rSekrit!""#, "987654321")).unwrap_err();
        assert_eq!(e.key, "password");
        assert!(!e.to_string().contains("987654321"), "{e}");
        let e = parse(&SEED.replace(r#""skey": "secret""#, r#""skey": 424242"#)).unwrap_err();
        assert_eq!(e.key, "duo.skey");
        assert!(!e.to_string().contains("424242"), "{e}");
    }

    #[test]
    fn missing_file_names_it() {
        let e = Config::load(Path::new("/nonexistent/check-duo.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/check-duo.json"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for t in ["", "null", "[]", "{", "{\"duo\": 1}", "\u{0}"] {
            assert!(parse(t).is_err(), "{t:?}");
        }
    }

    const ARGON: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$Z3JvdW5kdHJ1dGhncm91bmR0cnV0aA";
    const BCRYPT: &str = "$2y$05$9CjMY.IHgsYKSidpxQVY5ufJZGc4ks6zb5u0I5FIHu0KOE2ncl6Aa";
    const DUO: &str = r#""duo": {"ikey": "I", "skey": "S", "host": "127.0.0.1:8443"},
        "cache": {"path": "/tmp/x.db"}"#;

    /// A config file of `users` (name, hash) in this order, and `more` keys, in a temp dir.
    fn file(dir: &tempfile::TempDir, users: &[(String, &str)], more: &str) -> PathBuf {
        let entries: Vec<String> = users
            .iter()
            .map(|(u, h)| format!("    {}: {}", json_str(u), json_str(h)))
            .collect();
        let text = format!(
            "{{\"usernames\": {{\n{}\n}},\n{DUO}{more}}}",
            entries.join(",\n")
        );
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn json_str(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    /// `n` users, with hashes as long as `hash-password`'s.
    fn many(n: usize) -> Vec<(String, &'static str)> {
        const LONG: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                            Z3JvdW5kdHJ1dGhncm91bmR0cnV0aGdyb3VuZHRydXRo";
        (0..n).map(|i| (format!("user{i:05}"), LONG)).collect()
    }

    #[test]
    fn the_pipe_mode_reads_the_one_user_among_many() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = many(3000);
        users.insert(1500, ("alice".into(), BCRYPT));
        let path = file(&dir, &users, "");
        let one = Config::load_user(&path, "alice").unwrap();
        assert_eq!(one.only_user.as_deref(), Some("alice"));
        assert_eq!(one.policy.users.len(), 1);
        assert!(matches!(one.policy.users["alice"], Credential::Bcrypt(ref h) if h == BCRYPT));
        assert_eq!(one.config_users.len(), 1);
        // The rest is what the whole file's read gives.
        let all = Config::load(&path).unwrap();
        assert_eq!(all.policy.users.len(), 3001);
        assert_eq!(all.only_user, None);
        assert_eq!(one.duo.host, all.duo.host);
        assert_eq!(one.session_name, all.session_name);
        assert_eq!(
            one.policy.users["alice"].fingerprint(),
            all.policy.users["alice"].fingerprint()
        );
        for user in ["user00000", "user02999"] {
            let c = Config::load_user(&path, user).unwrap();
            assert_eq!(c.policy.users.keys().collect::<Vec<_>>(), [user]);
        }
        // Someone else: no user, no error (the gate denies an unknown user).
        let none = Config::load_user(&path, "mallory").unwrap();
        assert!(none.policy.users.is_empty());
    }

    #[test]
    fn the_users_own_errors_are_errors_and_the_others_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = many(100);
        users.push(("alice".into(), "$argon2id$v=19$m=19456,t=2,p=1$***$***"));
        users.push(("bob".into(), "plaintext"));
        let path = file(&dir, &users, "");
        let e = Config::load_user(&path, "alice").unwrap_err();
        assert_eq!(e.key, "usernames.alice");
        assert!(e.message.contains("argon2id"), "{e}");
        assert_eq!(
            Config::load_user(&path, "bob").unwrap_err().key,
            "usernames.bob"
        );
        // Another user's broken entry does not deny this one; `config check` and `serve` refuse
        // the file.
        assert_eq!(
            Config::load_user(&path, "user00007")
                .unwrap()
                .policy
                .users
                .len(),
            1
        );
        assert_eq!(Config::load(&path).unwrap_err().key, "usernames.alice");
    }

    #[test]
    fn a_user_named_twice_is_an_error_in_both_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = many(10);
        users.insert(2, ("alice".into(), ARGON));
        users.push(("alice".into(), BCRYPT));
        let path = file(&dir, &users, "");
        for e in [
            Config::load_user(&path, "alice").unwrap_err(),
            Config::load(&path).unwrap_err(),
        ] {
            assert_eq!(e.key, "usernames.alice");
            assert!(e.message.contains("twice"), "{e}");
        }
        assert!(Config::load_user(&path, "user00003").is_ok());
        // `usernames` itself twice: serde's duplicate field.
        let text = format!(r#"{{"usernames": {{}}, "usernames": {{"alice": "{ARGON}"}}, {DUO}}}"#);
        let path = dir.path().join("twice.json");
        std::fs::write(&path, text).unwrap();
        for e in [
            Config::load_user(&path, "alice").unwrap_err(),
            Config::load(&path).unwrap_err(),
        ] {
            assert!(e.message.contains("duplicate field `usernames`"), "{e}");
        }
    }

    #[test]
    fn the_other_keys_are_checked_as_in_the_whole_read_on_the_same_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = many(500);
        users.push(("alice".into(), ARGON));
        let path = file(&dir, &users, ",\n  \"session\": {\"expiry\": \"soon\"}");
        let one = Config::load_user(&path, "alice").unwrap_err();
        let all = Config::load(&path).unwrap_err();
        assert_eq!(one.key, "session.expiry");
        assert_eq!(one, all);
        assert!(one.message.contains("line 506"), "{one}");
        // Neither an unknown key nor a broken document passes.
        let path = file(&dir, &users, ",\n  \"sesion\": {}");
        assert!(Config::load_user(&path, "alice")
            .unwrap_err()
            .message
            .contains("sesion"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"user00001\": \"", "\"user00001\" \"");
        std::fs::write(&path, text).unwrap();
        assert!(Config::load_user(&path, "alice").is_err());
    }

    #[test]
    fn groups_and_totp_of_unknown_users_are_left_to_config_check() {
        let dir = tempfile::tempdir().unwrap();
        let users = [("alice".to_string(), ARGON), ("bob".to_string(), ARGON)];
        for (more, key) in [
            (
                r#", "groups": {"staff": ["alice", "nobody"]}"#,
                "groups.staff",
            ),
            (r#", "totp": {"nobody": "JBSWY3DPEHPK3PXP"}"#, "totp.nobody"),
        ] {
            let path = file(&dir, &users, more);
            assert_eq!(Config::load(&path).unwrap_err().key, key);
            assert!(Config::load_user(&path, "alice").is_ok(), "{more}");
        }
        // The user's own TOTP secret is read, and checked.
        let path = file(
            &dir,
            &users,
            r#", "totp": {"alice": "JBSWY3DPEHPK3PXP", "bob": "!"}"#,
        );
        let c = Config::load_user(&path, "alice").unwrap();
        assert_eq!(c.policy.totp.keys().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(Config::load_user(&path, "bob").unwrap_err().key, "totp.bob");
    }

    #[test]
    fn htpasswd_users_in_the_pipe_mode() {
        let dir = tempfile::tempdir().unwrap();
        let users_file = dir.path().join("users");
        let mut lines: String = (0..2000)
            .map(|i| format!("user{i:05}:{BCRYPT}\n"))
            .collect();
        lines.push_str("bob:$apr1$L.uqVY/L$VhwY98cFoaBkB77YVLeTS0\nalice:");
        lines.push_str(BCRYPT);
        std::fs::write(&users_file, &lines).unwrap();
        let more = format!(
            r#", "htpasswd": {}"#,
            json_str(users_file.to_str().unwrap())
        );
        let path = file(&dir, &[("carol".into(), ARGON)], &more);
        let c = Config::load_user(&path, "alice").unwrap();
        assert_eq!(c.policy.users.keys().collect::<Vec<_>>(), ["alice"]);
        assert!(matches!(c.policy.users["alice"], Credential::Bcrypt(_)));
        let c = Config::load_user(&path, "carol").unwrap();
        assert_eq!(c.policy.users.keys().collect::<Vec<_>>(), ["carol"]);
        // bob's weak line is his error, with its line; the whole read refuses the file.
        let e = Config::load_user(&path, "bob").unwrap_err();
        assert_eq!(e.key, "htpasswd");
        assert!(
            e.message.contains("users line 2001") && e.message.contains("APR1"),
            "{e}"
        );
        assert!(Config::load(&path)
            .unwrap_err()
            .message
            .contains("line 2001"));
        // A name in both: an error for that user.
        let path = file(&dir, &[("alice".into(), ARGON)], &more);
        let e = Config::load_user(&path, "alice").unwrap_err();
        assert!(
            e.message.contains("\"alice\" is also in `usernames`"),
            "{e}"
        );
        assert!(Config::load_user(&path, "user00001").is_ok());
        // No source of users at all is still refused; a file without this user is not.
        let path = dir.path().join("none.json");
        std::fs::write(&path, format!("{{{DUO}}}")).unwrap();
        assert_eq!(
            Config::load_user(&path, "alice").unwrap_err().key,
            "usernames"
        );
    }

    #[test]
    fn ten_thousand_users_fit_under_the_cap_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = many(10_000);
        users.push(("alice".into(), ARGON));
        let path = file(&dir, &users, "");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 1 << 20, "{len}");
        assert_eq!(Config::load(&path).unwrap().policy.users.len(), 10_001);
        assert_eq!(
            Config::load_user(&path, "alice")
                .unwrap()
                .policy
                .users
                .len(),
            1
        );
        // Over the cap: refused by both, without reading it.
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        for e in [
            Config::load(&big).unwrap_err(),
            Config::load_user(&big, "alice").unwrap_err(),
        ] {
            assert_eq!(e.message, "file too large");
        }
    }

    #[test]
    fn a_document_the_scanner_does_not_follow_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Another user's entry that is not a string: the whole read reports it.
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            format!(r#"{{"usernames": {{"bob": 1, "alice": "{ARGON}"}}, {DUO}}}"#),
        )
        .unwrap();
        assert_eq!(
            Config::load_user(&path, "alice").unwrap_err().key,
            "usernames.bob"
        );
    }
}
