//! Users from an Apache `htpasswd` file (config key `htpasswd`), as Apache's own `htpasswd`
//! writes it: bcrypt (`-B`), SHA-256-crypt (`-2`), SHA-512-crypt (`-5`) and argon2id entries
//! are read; the weak ones (APR1-MD5, the default of `htpasswd`; `{SHA}`; crypt(3) DES;
//! plaintext) are refused with the line and how to re-hash. A malformed line is an error that
//! names the file and the line, never a user.

use std::collections::BTreeMap;
use std::path::Path;

use check_duo_core::password::{self, Credential};

/// Files larger than this are not password files (a million users is about 70 MB; a gate for a
/// directory that large wants LDAP).
pub const MAX_BYTES: u64 = 64 << 20;

/// Where a file was when it was read: a change of any of these is a change of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub modified: Option<std::time::SystemTime>,
    pub len: u64,
    pub inode: u64,
}

/// The file's stamp (a cheap `stat`).
pub fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// Read and check the file; an error says which line and why.
pub fn read(path: &Path) -> Result<BTreeMap<String, Credential>, String> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if meta.len() > MAX_BYTES {
        return Err(format!("{name}: larger than {MAX_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text"))?;
    parse(&text).map_err(|(line, why)| format!("{name} line {line}: {why}"))
}

/// The entries of an htpasswd file's text; an error is `(line number, why)`.
pub fn parse(text: &str) -> Result<BTreeMap<String, Credential>, (usize, String)> {
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err((n, "not `user:hash`".into()));
        };
        if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
            return Err((n, "not a valid user name".into()));
        }
        let cred = credential(hash).map_err(|why| {
            (
                n,
                format!("user {user:?}: {why}; re-hash it with `htpasswd -B FILE {user}`"),
            )
        })?;
        if users.insert(user.to_string(), cred).is_some() {
            return Err((n, format!("user {user:?} is defined twice")));
        }
    }
    Ok(users)
}

fn credential(hash: &str) -> Result<Credential, String> {
    let is_des = hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    let cred = if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
        Credential::Bcrypt(hash.to_string())
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        Credential::ShaCrypt(hash.to_string())
    } else if hash.starts_with("$argon2id$") {
        Credential::Argon2id(hash.to_string())
    } else if hash.starts_with("$apr1$") {
        return Err("an APR1-MD5 hash (htpasswd's default), too weak to accept".into());
    } else if hash.starts_with("{SHA}") {
        return Err("an unsalted SHA-1 hash, too weak to accept".into());
    } else if is_des {
        return Err("a crypt(3) DES hash (8 characters at most), too weak to accept".into());
    } else {
        return Err("not a hash this gate accepts (plaintext?)".into());
    };
    password::check_hash(&cred)?;
    Ok(cred)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Written by Debian 12's `htpasswd` (Apache 2.4.71): `printf pw | htpasswd -ni -B u` etc.
    const BCRYPT: &str = "$2y$05$9CjMY.IHgsYKSidpxQVY5ufJZGc4ks6zb5u0I5FIHu0KOE2ncl6Aa";
    const SHA256: &str = "$5$rpDyXGfM5GaWbz.S$HAfuzxJkbDt3QobuwU2PklRkKk3GPuQqsxIKWfdIKB2";
    const SHA512: &str = "$6$o5UGL3koOmdty33D$elOa8M3syQGwyibA5XRyQEeI8vYjuPakpcTFRw0M05pYhVyZy46Xs52/axiNk2PI2iGlLWTUs598qY.qGb/rM.";

    #[test]
    fn reads_what_htpasswd_writes() {
        let text = format!("# users\n\nb:{BCRYPT}\ns2:{SHA256}\r\ns5:{SHA512}\n");
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        for (u, c) in &users {
            assert!(password::verify(c, "pw"), "{u}");
            assert!(!password::verify(c, "px"), "{u}");
        }
    }

    #[test]
    fn weak_and_malformed_entries_name_their_line() {
        for (entry, why) in [
            ("u:$apr1$L.uqVY/L$VhwY98cFoaBkB77YVLeTS0", "APR1-MD5"),
            ("u:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=", "SHA-1"),
            ("u:qHcGyr770rCp.", "DES"),
            ("u:pw", "plaintext"),
            ("u:$2y$05$short", "bcrypt"),
            ("u:$6$rounds=99999999$salt$x", "rounds"),
            ("no colon here", "user:hash"),
        ] {
            let text = format!("ok:{BCRYPT}\n{entry}\n");
            let (line, msg) = parse(&text).unwrap_err();
            assert_eq!(line, 2, "{entry}");
            assert!(msg.contains(why), "{entry}: {msg}");
        }
        let (line, msg) = parse(&format!("a:{BCRYPT}\na:{SHA256}\n")).unwrap_err();
        assert_eq!((line, msg.contains("twice")), (2, true));
        let (_, msg) = parse("u:$apr1$L.uqVY/L$VhwY98cFoaBkB77YVLeTS0").unwrap_err();
        assert!(msg.contains("htpasswd -B FILE u"), "{msg}");
    }
}
