//! `check-duo config check -c FILE`: parse and validate the configuration, then prove it works.
//!
//! One line per finding, `ok:`, `warning:` or `error:`, each naming the file, the key or the
//! service; a summary last. Exit 1 on any error (or any warning with `--strict`).
//!
//! File permissions: the configuration holds the Duo skey and the password hashes. It may be
//! readable by its owner and by the group `check-duo` (the setgid install) or `root`; anything
//! for others, group read for another group, or write for group or others is a warning.

use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Instant;

use crate::admin::{now, open_existing_store, store_name};
use crate::audit::AuditConfig;
use crate::config::{CacheConfig, Config, Credential};

/// The group of the least-privilege install (deploy/least-privilege.md).
pub const GROUP: &str = "check-duo";
/// Clock skew with Duo above this is a warning (signed requests carry the date).
pub const MAX_SKEW_SECS: i64 = 30;

/// Collected findings.
#[derive(Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub errors: usize,
    pub warnings: usize,
}

impl Report {
    fn ok(&mut self, m: impl Into<String>) {
        self.lines.push(format!("ok: {}", m.into()));
    }
    fn warn(&mut self, m: impl Into<String>) {
        self.warnings += 1;
        self.lines.push(format!("warning: {}", m.into()));
    }
    fn error(&mut self, m: impl Into<String>) {
        self.errors += 1;
        self.lines.push(format!("error: {}", m.into()));
    }
}

pub fn run(path: &Path, strict: bool) -> u8 {
    let r = check(path);
    for l in &r.lines {
        println!("{l}");
    }
    println!(
        "{}: {} error(s), {} warning(s)",
        path.display(),
        r.errors,
        r.warnings
    );
    if r.errors > 0 || (strict && r.warnings > 0) {
        1
    } else {
        0
    }
}

/// Every check, in order; nothing printed.
pub fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let file = format!("config {}", path.display());
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            r.error(e.to_string());
            return r;
        }
    };
    r.ok(format!(
        "{file}: parsed ({} user(s){}, {}, Duo {})",
        cfg.policy.users.len(),
        if cfg.ldap.is_some() {
            " and the directory's"
        } else {
            ""
        },
        store_name(&cfg.cache),
        cfg.duo.host
    ));
    permissions(&mut r, path, &file);
    for (user, cred) in &cfg.policy.users {
        if matches!(cred, Credential::Plain(_)) {
            r.warn(format!(
                "{file}: key `password`: user {user:?} has a plaintext password; \
                 move it to `usernames` as a hash from `check-duo hash-password`"
            ));
        }
    }
    let bcrypt: Vec<&str> = cfg
        .policy
        .users
        .iter()
        .filter(|(_, c)| matches!(c, Credential::Bcrypt(_)))
        .map(|(u, _)| u.as_str())
        .collect();
    if !bcrypt.is_empty() {
        r.warn(format!(
            "{file}: key `usernames`: {} user(s) with bcrypt hashes ({}): bcrypt reads only the \
             first {} bytes of a password, so longer passwords are refused; argon2id hashes from \
             `check-duo hash-password` have no such limit",
            bcrypt.len(),
            bcrypt.join(", "),
            check_duo_core::password::BCRYPT_MAX_BYTES
        ));
    }
    if cfg.duo.ca_pem.is_some() {
        r.ok(format!(
            "{file}: key `duo.ca_file`: CA certificate(s) loaded"
        ));
    }
    if let CacheConfig::Redis {
        ca_pem: Some(_), ..
    }
    | CacheConfig::Sentinel {
        ca_pem: Some(_), ..
    } = &cfg.cache
    {
        r.ok(format!(
            "{file}: key `cache.ca_file`: CA certificate(s) loaded"
        ));
    }
    store(&mut r, &cfg);
    if let Some(l) = &cfg.ldap {
        ldap(&mut r, l);
    }
    if let Some(a) = &cfg.audit {
        audit(&mut r, &file, a);
    }
    duo(&mut r, &cfg);
    r
}

/// Group names from /etc/group (no libc: the crate forbids unsafe code).
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

fn permissions(r: &mut Report, path: &Path, file: &str) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            r.error(format!("{file}: {e}"));
            return;
        }
    };
    let mode = meta.mode() & 0o7777;
    let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    let mut fine = true;
    if mode & 0o007 != 0 {
        fine = false;
        r.warn(format!(
            "{file}: mode {mode:04o}: others can access it (it holds the Duo skey and the \
             password hashes); chmod o= {}",
            path.display()
        ));
    }
    if mode & 0o020 != 0 {
        fine = false;
        r.warn(format!(
            "{file}: mode {mode:04o}: group {group} can write it; chmod g-w {}",
            path.display()
        ));
    }
    if mode & 0o040 != 0 && group != GROUP && group != "root" {
        fine = false;
        r.warn(format!(
            "{file}: group {group} can read it; expected group {GROUP} (chgrp {GROUP} {})",
            path.display()
        ));
    }
    if fine {
        r.ok(format!("{file}: mode {mode:04o}, group {group}"));
    }
}

fn store(r: &mut Report, cfg: &Config) {
    let name = store_name(&cfg.cache);
    match open_existing_store(cfg) {
        Ok(None) => {
            // Not created here: see open_existing_store.
            if let CacheConfig::Embedded { path, .. } = &cfg.cache {
                match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) if !dir.is_dir() => r.error(format!(
                        "{name}: directory {} does not exist (install -d -g {GROUP} -m 2770 {})",
                        dir.display(),
                        dir.display()
                    )),
                    _ => r.ok(format!(
                        "{name}: does not exist yet (the package creates it root:{GROUP} 0660; \
                         a setgid check-duo never creates it: \
                         install -m 0660 -g {GROUP} /dev/null {})",
                        path.display()
                    )),
                }
            }
        }
        Ok(Some(s)) => match s.get("check-duo-config-check", now()) {
            Ok(_) => r.ok(format!("{name}: reachable")),
            Err(e) => r.error(format!("{name}: read failed: {e}")),
        },
        Err(e) => r.error(e),
    }
}

/// Users counted at most (the search's size limit).
const LDAP_COUNT_LIMIT: i32 = 10_000;

/// The directory reachable, the service bind working, and how many users the filter finds.
fn ldap(r: &mut Report, l: &crate::ldap::LdapConfig) {
    let d = crate::ldap::LdapDirectory::new(l.clone(), false);
    let tls = if l.start_tls {
        ", StartTLS"
    } else if l.url.starts_with("ldaps://") {
        ", TLS"
    } else {
        ", no TLS (loopback)"
    };
    if let Some(pw) = &l.bind_password_file {
        match std::fs::metadata(pw) {
            Ok(m) if m.mode() & 0o007 != 0 => r.warn(format!(
                "ldap: key `ldap.bind_password_file`: {}: mode {:04o}: others can read the \
                 service account's password; chmod o= {}",
                pw.display(),
                m.mode() & 0o7777,
                pw.display()
            )),
            Ok(_) => {}
            Err(e) => r.error(format!(
                "ldap: key `ldap.bind_password_file`: {}: {e}",
                pw.display()
            )),
        }
    }
    if let Err(e) = d.check_reachable() {
        r.error(format!("ldap {}: not reachable: {e}", l.url));
        return;
    }
    r.ok(format!("ldap {}: reachable{tls}", l.url));
    let who = match &l.bind {
        Some((dn, _)) => format!("the service bind as {dn:?}"),
        None => "an anonymous search (no bind_dn)".to_string(),
    };
    if let Err(e) = d.check_service() {
        r.error(format!("ldap {}: {who}: {e}", l.url));
        return;
    }
    r.ok(format!("ldap {}: {who} works", l.url));
    match d.count_users(LDAP_COUNT_LIMIT) {
        Ok((0, _)) => r.warn(format!(
            "ldap: key `ldap.user_filter`: finds no user under {:?} (with {{username}} as *)",
            l.base_dn
        )),
        Ok((n, more)) => r.ok(format!(
            "ldap: key `ldap.user_filter`: finds {}{n} user(s) under {:?}",
            if more { "more than " } else { "" },
            l.base_dn
        )),
        Err(e) => r.error(format!("ldap: key `ldap.user_filter`: {e}")),
    }
}

fn audit(r: &mut Report, file: &str, a: &AuditConfig) {
    if let Some(p) = &a.file {
        let key = format!("{file}: key `audit.file`");
        if p.exists() {
            // Opened for appending, nothing written.
            match OpenOptions::new().append(true).open(p) {
                Ok(_) => r.ok(format!("{key}: {} is writable", p.display())),
                Err(e) => r.error(format!("{key}: {}: {e}", p.display())),
            }
        } else {
            match p.parent() {
                Some(d) if d.is_dir() => r.ok(format!(
                    "{key}: {} will be created in {}",
                    p.display(),
                    d.display()
                )),
                _ => r.error(format!(
                    "{key}: the directory of {} does not exist",
                    p.display()
                )),
            }
        }
    }
    if let Some(s) = &a.syslog {
        if s.exists() {
            r.ok(format!(
                "{file}: key `audit.syslog`: socket {}",
                s.display()
            ));
        } else {
            r.error(format!(
                "{file}: key `audit.syslog`: no syslog socket at {}",
                s.display()
            ));
        }
    }
}

fn duo(r: &mut Report, cfg: &Config) {
    let svc = format!("Duo {}", cfg.duo.host);
    let client = match crate::duo::client(&cfg.duo) {
        Ok(c) => c,
        Err(e) => {
            r.error(format!("{svc}: client: {e}"));
            return;
        }
    };
    let deadline = || Instant::now() + cfg.duo.call_timeout;
    let before = now();
    match client.ping(deadline()) {
        Ok(p) => {
            // Our clock at the middle of the call, to the second.
            let local = (before + now()) / 2;
            let skew = p.time - local;
            if skew.abs() > MAX_SKEW_SECS {
                r.warn(format!(
                    "{svc}: ping: clock skew {skew:+} s (Duo minus local) exceeds \
                     {MAX_SKEW_SECS} s; fix the system clock (NTP): Duo rejects signed requests \
                     whose date is far off"
                ));
            } else {
                r.ok(format!("{svc}: ping: reachable, clock skew {skew:+} s"));
            }
        }
        Err(e) => r.error(format!("{svc}: ping: {e}")),
    }
    match client.check(deadline()) {
        Ok(()) => r.ok(format!("{svc}: check: duo.ikey and duo.skey accepted")),
        Err(e @ duo_auth::Error::Unauthorized { .. }) => r.error(format!(
            "{svc}: check: {e}; verify duo.ikey, duo.skey and the system clock"
        )),
        Err(e) => r.error(format!("{svc}: check: {e}")),
    }
    if let Some(u) = &cfg.duo.universal {
        let client = duo_auth::UniversalClient::new(duo_auth::UniversalConfig {
            client_id: u.client_id.clone(),
            client_secret: u.client_secret.clone(),
            host: cfg.duo.host.clone(),
            extra_ca_pem: cfg.duo.ca_pem.clone(),
            call_timeout: cfg.duo.call_timeout,
        });
        match client.and_then(|c| c.health_check(deadline())) {
            Ok(_) => r.ok(format!(
                "{svc}: Universal Prompt health check: duo.client_id and duo.client_secret accepted"
            )),
            Err(e) => r.error(format!(
                "{svc}: Universal Prompt health check: {e}; verify duo.client_id and duo.client_secret"
            )),
        }
    }
}
