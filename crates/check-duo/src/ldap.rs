//! Users from LDAP or Active Directory (config section `ldap`): the core's
//! [`Directory`] port over `ldap3`.
//!
//! A password is checked by a bind as the user, never by reading a hash: a service bind
//! (`bind_dn`, the password in `bind_password_file`) finds the user with `user_filter` under
//! `base_dn` (exactly one entry, else "no such user"), then the found DN binds with the password
//! on the same connection, which is then closed. An empty password is never sent (the core
//! refuses it first, and [`LdapDirectory::verify`] again). Groups come from `group_filter` under
//! `group_base_dn` (the `cn` of each entry) or from an attribute of the user's entry
//! (`group_attribute`, e.g. `memberOf`).
//!
//! Every call runs under one deadline (`timeout`: connect, TLS, binds and searches together),
//! on a small runtime of its own, built on the first call (the pipe mode connects only when a
//! request needs the directory). The long-running mode keeps a few service-bound connections
//! for its searches ([`POOL`]). TLS is rustls: the roots are `ca_file`, else webpki's, never the
//! system's or the environment's. User names and DNs placed in filters are escaped per RFC 4515
//! ([`escape_filter`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use check_duo_core::policy::DirectoryPolicy;
use check_duo_core::ports::{Directory, DirectoryAnswer, DirectoryCheck, DirectoryError};
use duo_auth::Secret;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use serde::Deserialize;

/// Service connections kept for reuse (the long-running mode's searches).
pub const POOL: usize = 4;
/// A pooled connection idle longer than this is not used again.
pub const POOL_IDLE: Duration = Duration::from_secs(60);
/// `ldap.timeout` when not given: seconds for one whole check.
pub const DEFAULT_TIMEOUT: u64 = 5;
/// `ldap.recheck` when not given: seconds a session of a directory user lasts before the next
/// request asks the directory again.
pub const DEFAULT_RECHECK: u64 = 300;
/// `ldap.username_attribute` when not given.
pub const DEFAULT_USERNAME_ATTRIBUTE: &str = "uid";
/// `ldap.user_filter` when not given.
pub const DEFAULT_USER_FILTER: &str = "(&(objectClass=inetOrgPerson)(uid={username}))";

/// The `ldap` section as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    url: String,
    start_tls: Option<bool>,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password_file: Option<PathBuf>,
    base_dn: String,
    user_filter: Option<String>,
    username_attribute: Option<String>,
    group_base_dn: Option<String>,
    group_filter: Option<String>,
    group_attribute: Option<String>,
    changed_attribute: Option<String>,
    /// `serve`'s `Remote-Name` and `Remote-Email` from these attributes of the user's entry.
    name_attribute: Option<String>,
    email_attribute: Option<String>,
    timeout: Option<u64>,
    recheck: Option<u64>,
}

/// Where a user's groups come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Groups {
    None,
    /// A search under `group_base_dn` with this filter (`{dn}`, `{username}` filled in).
    Filter(String),
    /// An attribute of the user's entry holding the groups' DNs (`memberOf`).
    Attribute(String),
}

/// What the server's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// webpki's roots (no `ca_file`).
    Webpki,
    /// The PEM of `ca_file`: these certificates alone.
    Ca(Vec<u8>),
}

/// The checked `ldap` section.
#[derive(Clone, Debug)]
pub struct LdapConfig {
    pub url: String,
    pub start_tls: bool,
    /// The roots for `ldaps://` or StartTLS; `None` for plain loopback. (The rustls
    /// configuration is built on the first connection: a cached session never pays for it.)
    pub tls: Option<Roots>,
    /// The service account and its password.
    pub bind: Option<(String, Secret)>,
    /// The file the password was read from (`config check` looks at its mode).
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub user_filter: String,
    /// The attribute that holds the user name (`uid`, `sAMAccountName`): the entry found must
    /// have the name exactly as given there.
    pub username_attribute: String,
    pub group_base_dn: String,
    pub groups: Groups,
    /// An attribute of the user's entry that changes with the password (`pwdLastSet`,
    /// `pwdChangedTime`): its value is the session's stamp.
    pub changed_attribute: Option<String>,
    /// Attributes of the user's entry sent as `Remote-Name` (`displayName`) and `Remote-Email`
    /// (`mail`) by `serve`.
    pub name_attribute: Option<String>,
    pub email_attribute: Option<String>,
    pub timeout: Duration,
    pub recheck: Duration,
}

/// Escape a value for an LDAP filter (RFC 4515): `*`, `(`, `)`, `\`, NUL, and every byte that
/// is not ASCII, as `\xx`.
pub fn escape_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x80..=0xff => out.push_str(&format!("\\{b:02x}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// A filter template with `{username}` and `{dn}` filled in, escaped, in one pass (a value that
/// itself holds a placeholder is not filled in again).
pub fn fill(template: &str, username: &str, dn: &str) -> String {
    let mut out = String::with_capacity(template.len() + username.len() + dn.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{username}") {
            out.push_str(&escape_filter(username));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{dn}") {
            out.push_str(&escape_filter(dn));
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The value of a DN's first RDN (`cn=admins,ou=groups,…` → `admins`), its RFC 4514 escapes
/// undone; `None` for what is not a DN.
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, value) = dn.split_once('=')?;
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' | b'+' => break,
            b'\\' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(|s| s.trim().to_string())
}

/// A group name the rules and `Remote-Groups` can carry (as the config's `groups` require).
fn usable_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.contains([',', ':'])
        && !name.chars().any(char::is_control)
}

/// Whether `host` (of a URL, without the port) is this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

impl LdapConfig {
    /// Check the section; an error is `(key, why)`.
    pub fn from_raw(raw: &RawLdap) -> Result<LdapConfig, (String, String)> {
        let e = |key: &str, why: String| (format!("ldap.{key}"), why);
        let url = raw.url.trim().to_string();
        let (tls_on_connect, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ldap://") {
            (false, r)
        } else {
            return Err(e("url", "must start with ldap:// or ldaps://".into()));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(e(
                "url",
                "not ldap[s]://host[:port] (no user, query or spaces)".into(),
            ));
        }
        if !rest[authority.len()..].trim_matches('/').is_empty() {
            return Err(e(
                "url",
                "give the server only (ldap[s]://host[:port]); the base is `base_dn`".into(),
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(e("url", "not ldap[s]://[address]:port".into())),
                },
                None => return Err(e("url", "unclosed [ in the host".into())),
            },
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(e("url", "not ldap[s]://host[:port]".into()));
        }
        let start_tls = raw.start_tls.unwrap_or(false);
        if start_tls && tls_on_connect {
            return Err(e(
                "start_tls",
                "StartTLS is for ldap:// (ldaps:// is TLS from the start)".into(),
            ));
        }
        let tls = tls_on_connect || start_tls;
        if !tls && !is_loopback(host) {
            return Err(e(
                "url",
                "passwords would cross the network in clear: use ldaps:// or `start_tls: true` \
                 (plain ldap:// only to this machine)"
                    .into(),
            ));
        }
        let tls = if tls {
            Some(match &raw.ca_file {
                Some(path) => Roots::Ca(read_ca(path).map_err(|m| e("ca_file", m))?),
                None => Roots::Webpki,
            })
        } else if raw.ca_file.is_some() {
            return Err(e(
                "ca_file",
                "only used with ldaps:// or `start_tls: true`".into(),
            ));
        } else {
            None
        };
        let bind = match (&raw.bind_dn, &raw.bind_password_file) {
            (Some(dn), Some(file)) => {
                if dn.trim().is_empty() {
                    return Err(e("bind_dn", "empty".into()));
                }
                let text = std::fs::read_to_string(file)
                    .map_err(|err| e("bind_password_file", format!("{}: {err}", file.display())))?;
                let pw = text.trim_end_matches(['\r', '\n']).to_string();
                if pw.is_empty() {
                    return Err(e(
                        "bind_password_file",
                        format!(
                            "{}: empty (an empty password is an unauthenticated bind)",
                            file.display()
                        ),
                    ));
                }
                Some((dn.trim().to_string(), Secret::new(pw)))
            }
            (Some(_), None) => {
                return Err(e("bind_password_file", "missing (bind_dn needs it)".into()))
            }
            (None, Some(_)) => {
                return Err(e("bind_dn", "missing (bind_password_file needs it)".into()))
            }
            (None, None) => None,
        };
        let base_dn = raw.base_dn.trim().to_string();
        if base_dn.is_empty() || !base_dn.contains('=') {
            return Err(e("base_dn", "not a DN (dc=example,dc=org)".into()));
        }
        let user_filter = raw
            .user_filter
            .clone()
            .unwrap_or_else(|| DEFAULT_USER_FILTER.to_string());
        check_filter(&user_filter).map_err(|m| e("user_filter", m))?;
        if !user_filter.contains("{username}") {
            return Err(e(
                "user_filter",
                "has no {username} (where the user name goes)".into(),
            ));
        }
        if user_filter.contains("{dn}") {
            return Err(e(
                "user_filter",
                "{dn} is for group_filter; the user filter takes {username}".into(),
            ));
        }
        let username_attribute = raw
            .username_attribute
            .clone()
            .unwrap_or_else(|| DEFAULT_USERNAME_ATTRIBUTE.to_string());
        if !attribute_name(&username_attribute) {
            return Err(e(
                "username_attribute",
                "not an attribute name (uid, sAMAccountName)".into(),
            ));
        }
        let groups = match (&raw.group_filter, &raw.group_attribute) {
            (Some(_), Some(_)) => {
                return Err(e(
                    "group_attribute",
                    "give either group_filter or group_attribute".into(),
                ))
            }
            (Some(f), None) => {
                check_filter(f).map_err(|m| e("group_filter", m))?;
                if !f.contains("{dn}") && !f.contains("{username}") {
                    return Err(e(
                        "group_filter",
                        "has neither {dn} nor {username}: it would give every user the same groups"
                            .into(),
                    ));
                }
                Groups::Filter(f.clone())
            }
            (None, Some(a)) => {
                if !attribute_name(a) {
                    return Err(e(
                        "group_attribute",
                        "not an attribute name (memberOf)".into(),
                    ));
                }
                Groups::Attribute(a.clone())
            }
            (None, None) => Groups::None,
        };
        if raw.group_base_dn.is_some() && !matches!(groups, Groups::Filter(_)) {
            return Err(e("group_base_dn", "only used with group_filter".into()));
        }
        let group_base_dn = raw.group_base_dn.clone().unwrap_or_else(|| base_dn.clone());
        if let Some(a) = &raw.changed_attribute {
            if !attribute_name(a) {
                return Err(e(
                    "changed_attribute",
                    "not an attribute name (pwdLastSet, pwdChangedTime)".into(),
                ));
            }
        }
        for (key, a) in [
            ("name_attribute", &raw.name_attribute),
            ("email_attribute", &raw.email_attribute),
        ] {
            if a.as_deref().is_some_and(|a| !attribute_name(a)) {
                return Err(e(key, "not an attribute name (displayName, mail)".into()));
            }
        }
        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(1..=60).contains(&timeout) {
            return Err(e("timeout", "must be 1..=60 seconds".into()));
        }
        let recheck = raw.recheck.unwrap_or(DEFAULT_RECHECK);
        if !(1..=86400).contains(&recheck) {
            return Err(e("recheck", "must be 1..=86400 seconds".into()));
        }
        Ok(LdapConfig {
            url,
            start_tls,
            tls,
            bind,
            bind_password_file: raw.bind_password_file.clone(),
            base_dn,
            user_filter,
            username_attribute,
            group_base_dn,
            groups,
            changed_attribute: raw.changed_attribute.clone(),
            name_attribute: raw.name_attribute.clone(),
            email_attribute: raw.email_attribute.clone(),
            timeout: Duration::from_secs(timeout),
            recheck: Duration::from_secs(recheck),
        })
    }

    /// What the core's rules need of it.
    pub fn policy(&self) -> DirectoryPolicy {
        DirectoryPolicy {
            recheck: self.recheck,
            timeout: self.timeout,
        }
    }
}

fn attribute_name(a: &str) -> bool {
    !a.is_empty() && a.len() <= 128 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A filter is one parenthesized expression with balanced parentheses.
fn check_filter(f: &str) -> Result<(), String> {
    let mut depth = 0i32;
    for c in f.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced parentheses".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 || !f.starts_with('(') || !f.ends_with(')') {
        return Err("not a filter in parentheses, (…)".into());
    }
    Ok(())
}

/// The CA file's PEM, once it is seen to hold certificates.
fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        cert.map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(pem)
}

/// The rustls configuration: the CA file's certificates alone when given, else webpki's roots.
fn tls_config(from: &Roots) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match from {
        Roots::Ca(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("ldap.ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ldap.ca_file: {e}"))?;
            }
        }
        Roots::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The user's entry as the search found it.
struct Found {
    dn: String,
    /// The group attribute's values (DNs), when groups come from one.
    member_of: Vec<String>,
    /// `changed_attribute`'s values, joined ("" without one).
    stamp: String,
    /// The first values of `name_attribute` and `email_attribute`, where a header can carry
    /// them.
    profile: Profile,
}

/// A user's name and address as `serve` sends them (`Remote-Name`, `Remote-Email`).
pub type Profile = (Option<String>, Option<String>);

/// A directory value a header can carry as it is: visible ASCII and spaces, 1 to 256 bytes.
fn header_value(v: &str) -> bool {
    !v.trim().is_empty() && v.len() <= 256 && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn failed(what: &str, e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError(format!("{what}: {e}"))
}

/// Result codes that say the server cannot answer now (not that it refuses the user).
fn server_trouble(rc: u32) -> bool {
    matches!(rc, 3 | 11 | 51 | 52 | 80)
}

fn describe(r: &ldap3::LdapResult) -> String {
    if r.text.is_empty() {
        format!("result code {}", r.rc)
    } else {
        format!("result code {} ({})", r.rc, r.text)
    }
}

/// The directory: checks as the core asks, under its deadlines.
pub struct LdapDirectory {
    cfg: LdapConfig,
    /// Fetch groups (the long-running mode's rules and `Remote-Groups`; the pipe mode has no use
    /// for them).
    want_groups: bool,
    rt: OnceLock<Result<tokio::runtime::Runtime, String>>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    /// Idle service-bound connections.
    pool: Mutex<Vec<(Instant, Ldap)>>,
    /// Each user's groups as the directory last said (on a sign-in or a re-check).
    groups: Mutex<HashMap<String, Vec<String>>>,
    /// And their names and addresses.
    profiles: Mutex<HashMap<String, Profile>>,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.cfg.url)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// Nothing is connected until the first call.
    pub fn new(cfg: LdapConfig, want_groups: bool) -> Self {
        LdapDirectory {
            cfg,
            want_groups,
            rt: OnceLock::new(),
            tls: OnceLock::new(),
            pool: Mutex::new(Vec::new()),
            groups: Mutex::new(HashMap::new()),
            profiles: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, DirectoryError> {
        self.rt
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("check-duo-ldap")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("LDAP runtime: {e}"))
            })
            .as_ref()
            .map_err(|e| DirectoryError(e.clone()))
    }

    /// Run `work` on the directory's runtime by `deadline`, from any thread: a runtime worker
    /// (the long-running mode's authorization path) hands its thread over first.
    fn run<T: Send>(
        &self,
        deadline: Instant,
        work: impl std::future::Future<Output = Result<T, DirectoryError>> + Send,
    ) -> Result<T, DirectoryError> {
        let rt = self.runtime()?;
        let secs = self.cfg.timeout.as_secs();
        let url = &self.cfg.url;
        let block = move || {
            rt.block_on(async move {
                match tokio::time::timeout_at(deadline.into(), work).await {
                    Ok(r) => r,
                    Err(_) => Err(DirectoryError(format!(
                        "{url}: no answer in time (timeout {secs} s)"
                    ))),
                }
            })
        };
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => std::thread::scope(|s| {
                s.spawn(block)
                    .join()
                    .unwrap_or_else(|_| Err(DirectoryError("LDAP call failed".into())))
            }),
            Ok(_) => tokio::task::block_in_place(block),
            Err(_) => block(),
        }
    }

    /// A new connection (TLS as configured), not bound.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let cfg = &self.cfg;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.timeout)
            .set_starttls(cfg.start_tls);
        if let Some(roots) = &cfg.tls {
            let tls = self
                .tls
                .get_or_init(|| tls_config(roots))
                .as_ref()
                .map_err(|e| DirectoryError(e.clone()))?;
            settings = settings.set_config(Arc::clone(tls));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
            .await
            .map_err(|e| match e {
                // The connect's own timeout (it and the call's deadline are the same length).
                ldap3::LdapError::Timeout { .. } => DirectoryError(format!(
                    "{}: no answer in time (timeout {} s)",
                    cfg.url,
                    cfg.timeout.as_secs()
                )),
                e => failed(&cfg.url, e),
            })?;
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        Ok(ldap)
    }

    /// A service-bound connection: one from the pool (`true`), or a new one.
    async fn service(&self) -> Result<(Ldap, bool), DirectoryError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // One idle too long may have been dropped on the way (a NAT, a firewall) without a
        // word, and would then take the whole deadline to fail: a new one instead.
        if let Some((_, l)) = pooled.filter(|(since, _)| since.elapsed() < POOL_IDLE) {
            return Ok((l, true));
        }
        let mut ldap = self.connect().await?;
        if let Some((dn, pw)) = &self.cfg.bind {
            let r = ldap
                .simple_bind(dn, pw.expose())
                .await
                .map_err(|e| failed("service bind", e))?;
            if r.rc != 0 {
                return Err(DirectoryError(format!(
                    "the service bind as {dn:?} was refused: {}",
                    describe(&r)
                )));
            }
        }
        Ok((ldap, false))
    }

    fn give_back(&self, ldap: Ldap) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push((Instant::now(), ldap));
        }
    }

    /// Search for the user with the service account: exactly one entry, else `None`. A pooled
    /// connection that fails (closed by the server while idle) is replaced once.
    async fn find(&self, user: &str) -> Result<(Option<Found>, Ldap), DirectoryError> {
        let mut last = None;
        for _ in 0..2 {
            let (mut ldap, reused) = self.service().await?;
            match self.find_on(&mut ldap, user).await {
                Ok(found) => return Ok((found, ldap)),
                // Its siblings are likely as dead (a restarted server): start afresh.
                Err(e) if reused => {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DirectoryError("user search failed".into())))
    }

    async fn find_on(&self, ldap: &mut Ldap, user: &str) -> Result<Option<Found>, DirectoryError> {
        let cfg = &self.cfg;
        let filter = fill(&cfg.user_filter, user, "");
        let mut attrs: Vec<&str> = vec![&cfg.username_attribute];
        if let Groups::Attribute(a) = &cfg.groups {
            attrs.push(a);
        }
        if let Some(a) = &cfg.changed_attribute {
            attrs.push(a);
        }
        for a in [&cfg.name_attribute, &cfg.email_attribute]
            .into_iter()
            .flatten()
        {
            attrs.push(a);
        }
        let res = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(&cfg.base_dn, Scope::Subtree, &filter, attrs)
            .await
            .map_err(|e| failed("user search", e))?;
        let ldap3::SearchResult(entries, result) = res;
        match result.rc {
            0 => {}
            // More than one: not exactly one user.
            4 => return Ok(None),
            _ => {
                return Err(DirectoryError(format!(
                    "user search under {:?}: {}",
                    cfg.base_dn,
                    describe(&result)
                )))
            }
        }
        let mut found: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect();
        if found.len() != 1 {
            return Ok(None);
        }
        let Some(mut entry) = found.pop() else {
            return Ok(None);
        };
        let mut take = |name: &str| {
            entry
                .attrs
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| std::mem::take(v))
                .unwrap_or_default()
        };
        // The directory matches names loosely (`ALICE`, `alice ` find alice): the name given
        // must be the entry's, exactly, so that one user has one name in sessions, limits,
        // rules and `Remote-User`.
        if !take(&cfg.username_attribute).iter().any(|v| v == user) {
            return Ok(None);
        }
        let member_of = match &cfg.groups {
            Groups::Attribute(a) => take(a),
            _ => Vec::new(),
        };
        let stamp = match &cfg.changed_attribute {
            // Missing, it is still a value: "-" (a stamp that appears later changes it).
            Some(a) => {
                let v = take(a);
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join("\n")
                }
            }
            None => String::new(),
        };
        let mut first = |a: &Option<String>| {
            a.as_deref()
                .and_then(|a| take(a).into_iter().next())
                .filter(|v| header_value(v))
        };
        let profile = (first(&cfg.name_attribute), first(&cfg.email_attribute));
        Ok(Some(Found {
            dn: entry.dn,
            member_of,
            stamp,
            profile,
        }))
    }

    /// The user's groups (service-bound connection), sorted, without duplicates.
    async fn groups_on(
        &self,
        ldap: &mut Ldap,
        user: &str,
        found: &Found,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut names: Vec<String> = match &self.cfg.groups {
            Groups::None => Vec::new(),
            Groups::Attribute(_) => found
                .member_of
                .iter()
                .filter_map(|dn| first_rdn_value(dn))
                .collect(),
            Groups::Filter(f) => {
                let filter = fill(f, user, &found.dn);
                let res = ldap
                    .with_search_options(SearchOptions::new().sizelimit(1000))
                    .search(&self.cfg.group_base_dn, Scope::Subtree, &filter, vec!["cn"])
                    .await
                    .map_err(|e| failed("group search", e))?;
                let ldap3::SearchResult(entries, result) = res;
                if result.rc != 0 && result.rc != 4 {
                    return Err(DirectoryError(format!(
                        "group search under {:?}: {}",
                        self.cfg.group_base_dn,
                        describe(&result)
                    )));
                }
                entries
                    .into_iter()
                    .filter(|e| !e.is_ref() && !e.is_intermediate())
                    .map(SearchEntry::construct)
                    .filter_map(|mut e| {
                        e.attrs
                            .remove("cn")
                            .and_then(|v| v.into_iter().next())
                            .or_else(|| first_rdn_value(&e.dn))
                    })
                    .collect()
            }
        };
        names.retain(|n| usable_group(n));
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn remember_profile(&self, user: &str, profile: Option<Profile>) {
        let mut cache = self.profiles.lock().unwrap_or_else(|p| p.into_inner());
        match profile {
            Some(p) => cache.insert(user.to_string(), p),
            None => cache.remove(user),
        };
    }

    /// The user's name and address as the directory last said (none until it was asked).
    pub fn profile_of(&self, user: &str) -> Profile {
        self.profiles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    fn remember_groups(&self, user: &str, groups: Option<Vec<String>>) {
        let mut cache = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        match groups {
            Some(g) => {
                cache.insert(user.to_string(), g);
            }
            None => {
                cache.remove(user);
            }
        }
    }

    /// The user's groups as the directory last said; asked now when nothing is known of the
    /// user yet (a session that outlived a restart). Empty when the directory cannot say: a
    /// rule for a group then refuses, never grants.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        if let Some(g) = self.known_groups(user) {
            return g;
        }
        let _ = self.lookup(user, Instant::now() + self.cfg.timeout);
        // Not known (the directory down, or no such user): none until the session's next
        // re-check reads them, rather than a search per request.
        if self.wants_profile() {
            self.profiles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(user.to_string())
                .or_default();
        }
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user.to_string())
            .or_default()
            .clone()
    }

    /// The user's groups if nothing needs to be asked (they are known or not wanted, and so are
    /// the name and address where `name_attribute` or `email_attribute` wants them): what
    /// [`LdapDirectory::groups_of`] answers without the network. `None` for a session that
    /// outlived a restart, whose user the directory was not asked about yet.
    pub fn known_groups(&self, user: &str) -> Option<Vec<String>> {
        if self.wants_profile()
            && !self
                .profiles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(user)
        {
            return None;
        }
        if !self.want_groups || self.cfg.groups == Groups::None {
            return Some(Vec::new());
        }
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
    }

    fn wants_profile(&self) -> bool {
        self.cfg.name_attribute.is_some() || self.cfg.email_attribute.is_some()
    }

    /// How many entries the user filter finds with `{username}` as `*` (unescaped): for
    /// `config check`. Counted up to `limit`.
    pub fn count_users(&self, limit: i32) -> Result<(usize, bool), DirectoryError> {
        let deadline = Instant::now() + self.cfg.timeout;
        self.run(deadline, async {
            let (mut ldap, _) = self.service().await?;
            let filter = self.cfg.user_filter.replace("{username}", "*");
            let res = ldap
                .with_search_options(SearchOptions::new().sizelimit(limit))
                .search(&self.cfg.base_dn, Scope::Subtree, &filter, vec!["1.1"])
                .await
                .map_err(|e| failed("user search", e))?;
            let ldap3::SearchResult(entries, result) = res;
            if result.rc != 0 && result.rc != 4 {
                return Err(DirectoryError(format!(
                    "user search under {:?}: {}",
                    self.cfg.base_dn,
                    describe(&result)
                )));
            }
            let n = entries
                .iter()
                .filter(|e| !e.is_ref() && !e.is_intermediate())
                .count();
            let _ = ldap.unbind().await;
            Ok((n, result.rc == 4))
        })
    }

    /// Connect (with TLS as configured), without binding: for `config check`.
    pub fn check_reachable(&self) -> Result<(), DirectoryError> {
        let deadline = Instant::now() + self.cfg.timeout;
        self.run(deadline, async {
            let mut ldap = self.connect().await?;
            let _ = ldap.unbind().await;
            Ok(())
        })
    }

    /// Connect and bind as the service account (or anonymously): for `config check`.
    pub fn check_service(&self) -> Result<(), DirectoryError> {
        let deadline = Instant::now() + self.cfg.timeout;
        self.run(deadline, async {
            let (mut ldap, _) = self.service().await?;
            let _ = ldap.unbind().await;
            Ok(())
        })
    }
}

impl Directory for LdapDirectory {
    fn verify(
        &self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<DirectoryCheck, DirectoryError> {
        // Never an unauthenticated bind (RFC 4513 §5.1.2), whoever asks.
        if password.is_empty() {
            return Ok(DirectoryCheck::new(DirectoryAnswer::WrongPassword, ""));
        }
        self.run(deadline, async {
            let (found, mut ldap) = self.find(user).await?;
            let Some(found) = found else {
                self.give_back(ldap);
                return Ok(DirectoryCheck::new(DirectoryAnswer::UnknownUser, ""));
            };
            let groups = if self.want_groups {
                Some(self.groups_on(&mut ldap, user, &found).await?)
            } else {
                None
            };
            // This connection becomes the user's: it never goes back to the pool.
            let r = ldap
                .simple_bind(&found.dn, password)
                .await
                .map_err(|e| failed("user bind", e))?;
            let _ = ldap.unbind().await;
            match r.rc {
                0 => {
                    if groups.is_some() {
                        self.remember_groups(user, groups);
                        self.remember_profile(user, Some(found.profile));
                    }
                    Ok(DirectoryCheck::new(DirectoryAnswer::Valid, found.stamp))
                }
                rc if server_trouble(rc) => {
                    Err(DirectoryError(format!("user bind: {}", describe(&r))))
                }
                _ => Ok(DirectoryCheck::new(DirectoryAnswer::WrongPassword, "")),
            }
        })
    }

    fn lookup(&self, user: &str, deadline: Instant) -> Result<DirectoryCheck, DirectoryError> {
        let answer = self.run(deadline, async {
            let (found, mut ldap) = self.find(user).await?;
            let Some(found) = found else {
                self.give_back(ldap);
                return Ok(None);
            };
            let groups = if self.want_groups {
                Some(self.groups_on(&mut ldap, user, &found).await?)
            } else {
                None
            };
            self.give_back(ldap);
            Ok(Some((found.stamp, groups, found.profile)))
        })?;
        match answer {
            Some((stamp, groups, profile)) => {
                if groups.is_some() {
                    self.remember_groups(user, groups);
                    self.remember_profile(user, Some(profile));
                }
                Ok(DirectoryCheck::new(DirectoryAnswer::Valid, stamp))
            }
            None => {
                self.remember_groups(user, None);
                self.remember_profile(user, None);
                Ok(DirectoryCheck::new(DirectoryAnswer::UnknownUser, ""))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filter_values_are_escaped_as_rfc_4515_says() {
        assert_eq!(escape_filter("alice"), "alice");
        assert_eq!(escape_filter("*"), "\\2a");
        assert_eq!(escape_filter("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter("a\\b"), "a\\5cb");
        assert_eq!(escape_filter("a\0b"), "a\\00b");
        assert_eq!(escape_filter("é"), "\\c3\\a9");
        assert_eq!(escape_filter("o'brien"), "o'brien");
    }

    /// RFC 4515's unescaping, for the property below.
    fn unescape(s: &str) -> Option<Vec<u8>> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Some(out)
    }

    proptest::proptest! {
        #[test]
        fn any_name_is_one_assertion_value(name in "\\PC*|[*()\\\\\\x00a-z]{0,12}") {
            let e = escape_filter(&name);
            // Nothing left that a filter reads as syntax, nothing outside printable ASCII.
            proptest::prop_assert!(!e.contains(['*', '(', ')', '\0']));
            proptest::prop_assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)));
            proptest::prop_assert_eq!(unescape(&e), Some(name.as_bytes().to_vec()));
            let f = fill("(uid={username})", &name, "");
            proptest::prop_assert!(check_filter(&f).is_ok(), "{}", f);
        }
    }

    #[test]
    fn placeholders_are_filled_once() {
        assert_eq!(
            fill("(&(uid={username})(x={dn}))", "a{dn}*", "cn=x,dc=y"),
            "(&(uid=a{dn}\\2a)(x=cn=x,dc=y))"
        );
        assert_eq!(fill("(uid={user})", "a", ""), "(uid={user})");
    }

    #[test]
    fn group_names_from_dns() {
        assert_eq!(
            first_rdn_value("cn=admins,ou=groups,dc=example,dc=test").as_deref(),
            Some("admins")
        );
        assert_eq!(
            first_rdn_value("CN=Domain Admins,CN=Users,DC=corp").as_deref(),
            Some("Domain Admins")
        );
        assert_eq!(first_rdn_value("cn=a\\2cb,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=a\\,b,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("nonsense"), None);
    }

    fn raw(extra: serde_json::Value) -> Result<LdapConfig, (String, String)> {
        let mut v =
            serde_json::json!({"url": "ldap://127.0.0.1:389", "base_dn": "dc=example,dc=test"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let raw: RawLdap = serde_json::from_value(v).unwrap();
        LdapConfig::from_raw(&raw)
    }

    #[test]
    fn bad_sections_name_their_key() {
        let ok = raw(serde_json::json!({})).unwrap();
        assert!(ok.tls.is_none());
        assert_eq!(ok.recheck, Duration::from_secs(DEFAULT_RECHECK));
        for (extra, key) in [
            (serde_json::json!({"url": "http://x"}), "ldap.url"),
            (serde_json::json!({"url": "ldap://[::1]x"}), "ldap.url"),
            (
                serde_json::json!({"url": "ldap://127.0.0.1:99999"}),
                "ldap.url",
            ),
            (
                serde_json::json!({"url": "ldap://127.0.0.1/dc=x"}),
                "ldap.url",
            ),
            (
                serde_json::json!({"url": "ldap://ldap.example.org"}),
                "ldap.url",
            ),
            (
                serde_json::json!({"url": "ldaps://x", "start_tls": true}),
                "ldap.start_tls",
            ),
            (
                serde_json::json!({"user_filter": "(uid=alice)"}),
                "ldap.user_filter",
            ),
            (
                serde_json::json!({"user_filter": "(uid={username}"}),
                "ldap.user_filter",
            ),
            (
                serde_json::json!({"group_filter": "(objectClass=groupOfNames)"}),
                "ldap.group_filter",
            ),
            (
                serde_json::json!({"bind_dn": "cn=s"}),
                "ldap.bind_password_file",
            ),
            (
                serde_json::json!({"bind_password_file": "/nonexistent"}),
                "ldap.bind_dn",
            ),
            (
                serde_json::json!({"bind_dn": "cn=s", "bind_password_file": "/nonexistent"}),
                "ldap.bind_password_file",
            ),
            (serde_json::json!({"timeout": 0}), "ldap.timeout"),
            (
                serde_json::json!({"username_attribute": "u id"}),
                "ldap.username_attribute",
            ),
            (
                serde_json::json!({"changed_attribute": "(x)"}),
                "ldap.changed_attribute",
            ),
            (serde_json::json!({"recheck": 0}), "ldap.recheck"),
            (
                serde_json::json!({"ca_file": "/etc/hostname"}),
                "ldap.ca_file",
            ),
            (
                serde_json::json!({"group_base_dn": "ou=g,dc=x"}),
                "ldap.group_base_dn",
            ),
        ] {
            let (k, m) = raw(extra.clone()).unwrap_err();
            assert_eq!(k, key, "{extra}: {m}");
        }
        // TLS to another host is fine.
        assert!(
            raw(serde_json::json!({"url": "ldaps://ldap.example.org:636"}))
                .unwrap()
                .tls
                .is_some()
        );
        assert!(
            raw(serde_json::json!({"url": "ldap://ldap.example.org", "start_tls": true})).is_ok()
        );
        assert!(raw(serde_json::json!({"url": "ldap://[::1]:3890"})).is_ok());
    }
}
