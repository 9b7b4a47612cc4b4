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
        let Some((user, cred)) = entry(line).map_err(|why| (n, why))? else {
            continue;
        };
        if users.insert(user.to_string(), cred).is_some() {
            return Err((n, format!("user {user:?} is defined twice")));
        }
    }
    Ok(users)
}

/// One line (without its newline): a user and its credential, nothing (blank or a comment), or
/// why not.
fn entry(line: &str) -> Result<Option<(&str, Credential)>, String> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let Some((user, hash)) = line.split_once(':') else {
        return Err("not `user:hash`".into());
    };
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return Err("not a valid user name".into());
    }
    let cred = credential(hash).map_err(|why| {
        format!("user {user:?}: {why}; re-hash it with `htpasswd -B FILE {user}`")
    })?;
    Ok(Some((user, cred)))
}

/// The pipe mode's read: `user`'s entry alone, found without parsing the other lines (a
/// `memchr` search for the line that starts with `user:`, through a fixed buffer). Its line
/// is checked as [`read`] checks every line, and a second line for `user` is an error; the
/// other lines are not looked at, so a malformed line of another user does not deny this one
/// (`config check` and `serve` report it), and only this line has to be UTF-8.
pub fn find(path: &Path, user: &str) -> Result<Option<Credential>, String> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    if meta.len() > MAX_BYTES {
        return Err(format!("{name}: larger than {MAX_BYTES} bytes"));
    }
    find_in(file, user, meta.len()).map_err(|e| match e {
        Found::Io(e) => format!("{name}: {e}"),
        Found::Line(at, why) => {
            // Counted only now: the search itself never counts lines.
            let line = std::fs::File::open(path)
                .and_then(|f| line_at(f, at))
                .map_or_else(|_| format!("at byte {at}"), |n| format!("line {n}"));
            format!("{name} {line}: {why}")
        }
    })
}

enum Found {
    Io(std::io::Error),
    /// A bad line: where it starts in the file, and why.
    Line(u64, String),
}

/// The number of the line that starts at byte `at`.
fn line_at(src: impl std::io::Read, at: u64) -> std::io::Result<usize> {
    use std::io::Read as _;
    let mut lines = 1;
    let mut buf = vec![0u8; crate::one_user::BUF];
    let mut src = src.take(at);
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count();
    }
}

/// A name that [`parse`] can never return: no line defines it.
fn never_defined(user: &str) -> bool {
    user.is_empty() || user.contains([':', '\n']) || user.trim_start().starts_with('#')
}

/// `size`, the file's length as `stat` says, sizes the buffer (see [`crate::one_user::buffer_len`]).
fn find_in(
    mut src: impl std::io::Read,
    user: &str,
    size: u64,
) -> Result<Option<Credential>, Found> {
    if never_defined(user) {
        return Ok(None);
    }
    let needle = format!("\n{user}:");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    // One byte more for the newline before the file.
    let cap = crate::one_user::buffer_len(size.saturating_add(1))
        .max(4096)
        .max(2 * needle.len());
    // `buf[..len]` always starts at a newline: the one before the file (line 1 follows it), or
    // the last one of the bytes before, kept with the line it ends.
    let mut buf = vec![0u8; cap];
    buf[0] = b'\n';
    let mut len = 1;
    // Where `buf[1]` is in the file.
    let mut base: u64 = 0;
    let mut found = None;
    let mut eof = false;
    // A line longer than the buffer is not read: only whether it is the user's matters.
    let mut skipping = false;
    while !eof {
        let n = loop {
            match src.read(&mut buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Found::Io(e)),
            }
        };
        len += n;
        if n == 0 {
            eof = true;
            // The last line, without its newline.
            if len < cap {
                buf[len] = b'\n';
                len += 1;
            }
        }
        let Some(last) = memchr::memrchr(b'\n', &buf[1..len]).map(|i| i + 1) else {
            if len < cap && !eof {
                continue;
            }
            // No newline in a whole buffer: one long line. Is it the user's?
            if !skipping && buf[..len].starts_with(needle.as_bytes()) {
                return Err(Found::Line(base, format!("longer than {} bytes", cap - 1)));
            }
            skipping = true;
            base += len as u64 - 1;
            buf[0] = b'\n';
            len = 1;
            continue;
        };
        let from = if skipping {
            // The rest of a long line: it ends at the first newline.
            memchr::memchr(b'\n', &buf[1..len]).map_or(0, |i| i + 1)
        } else {
            0
        };
        skipping = false;
        for at in finder.find_iter(&buf[from..=last]) {
            let at = from + at;
            let number = base + at as u64;
            let end = at + 1 + memchr::memchr(b'\n', &buf[at + 1..=last]).unwrap_or(0);
            let text = std::str::from_utf8(&buf[at + 1..end])
                .map_err(|_| Found::Line(number, "not UTF-8 text".into()))?;
            let cred = match entry(text) {
                Ok(Some((_, cred))) => cred,
                Ok(None) => continue,
                Err(why) => return Err(Found::Line(number, why)),
            };
            if found.is_some() {
                return Err(Found::Line(
                    number,
                    format!("user {user:?} is defined twice"),
                ));
            }
            found = Some(cred);
        }
        base += last as u64;
        buf.copy_within(last..len, 0);
        len -= last;
    }
    Ok(found)
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

    fn find(text: &str, user: &str) -> Result<Option<Credential>, (usize, String)> {
        find_in(text.as_bytes(), user, u64::MAX).map_err(|e| match e {
            Found::Line(at, why) => (line_at(text.as_bytes(), at).unwrap(), why),
            Found::Io(e) => panic!("{e}"),
        })
    }

    /// A reader that hands out `n` bytes at a time, to cross every boundary.
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn finds_the_one_user_among_many() {
        let mut text: String = (0..20_000).map(|i| format!("u{i}:{BCRYPT}\n")).collect();
        let middle = text[text.len() / 2..].find('\n').unwrap() + text.len() / 2 + 1;
        text.insert_str(middle, &format!("alice:{SHA512}\r\n"));
        text.push_str(&format!("last:{SHA256}"));
        let whole = parse(&text).unwrap();
        for user in ["alice", "u0", "u9999", "u19999", "last"] {
            let one = find(&text, user).unwrap().unwrap();
            assert_eq!(one.fingerprint(), whole[user].fingerprint(), "{user}");
            for step in [7, 4096] {
                let c = find_in(Dribble(text.as_bytes(), step), user, u64::MAX)
                    .ok()
                    .flatten();
                assert_eq!(
                    c.as_ref().map(Credential::fingerprint),
                    Some(whole[user].fingerprint())
                );
            }
        }
        for user in ["bob", "u", "alic", "lice", "u1:", "#u1", "", "a\nb"] {
            assert!(find(&text, user).unwrap().is_none(), "{user:?}");
        }
        let small = format!("a:{BCRYPT}\nalice:{SHA256}\nb:{BCRYPT}");
        for user in ["a", "alice", "b"] {
            let c = find_in(Dribble(small.as_bytes(), 1), user, u64::MAX)
                .ok()
                .flatten();
            assert_eq!(
                c.as_ref().map(Credential::fingerprint),
                Some(parse(&small).unwrap()[user].fingerprint())
            );
        }
        // Comments and blank lines are nobody's; a name with leading space is its own.
        let text = format!("#alice:{BCRYPT}\n\n  # x\n alice:{BCRYPT}\n");
        assert!(find(&text, "alice").unwrap().is_none());
        assert!(find(&text, " alice").unwrap().is_some());
        assert_eq!(parse(&text).unwrap().keys().collect::<Vec<_>>(), [" alice"]);
    }

    #[test]
    fn the_users_bad_line_is_an_error_with_its_number_and_the_others_are_not_read() {
        let text = format!(
            "a:{BCRYPT}\nbroken line\nweak:$apr1$L.uqVY/L$VhwY98cFoaBkB77YVLeTS0\nb:{SHA256}\n\
             alice:$2y$05$short\nb2:{BCRYPT}\n"
        );
        let (line, msg) = find(&text, "alice").unwrap_err();
        assert_eq!(line, 5);
        assert!(
            msg.contains("bcrypt") && msg.contains("htpasswd -B FILE alice"),
            "{msg}"
        );
        let (line, msg) = find(&text, "weak").unwrap_err();
        assert_eq!((line, msg.contains("APR1-MD5")), (3, true));
        // Not this user's line: not read. The whole read refuses the file at its first error.
        assert!(find(&text, "b").unwrap().is_some());
        assert!(find(&text, "b2").unwrap().is_some());
        assert_eq!(parse(&text).unwrap_err().0, 2);
        // Twice: the second line is the error, as in the whole read.
        let text = format!("x:{BCRYPT}\nalice:{BCRYPT}\ny:{BCRYPT}\nalice:{SHA256}\n");
        assert_eq!(find(&text, "alice").unwrap_err(), parse(&text).unwrap_err());
        assert_eq!(find(&text, "alice").unwrap_err().0, 4);
        // Only the user's line has to be UTF-8.
        let mut bytes = format!("x:{BCRYPT}\n").into_bytes();
        bytes.extend_from_slice(b"\xff\xfe:nope\n");
        bytes.extend_from_slice(format!("alice:{BCRYPT}\n").as_bytes());
        bytes.extend_from_slice(b"bad:\xff\n");
        bytes.extend_from_slice(b"eve:\xff\n");
        assert!(find_in(&bytes[..], "alice", u64::MAX)
            .ok()
            .flatten()
            .is_some());
        match find_in(&bytes[..], "eve", u64::MAX) {
            Err(Found::Line(at, m)) => {
                assert_eq!(line_at(&bytes[..], at).unwrap(), 5);
                assert!(m.contains("UTF-8"), "{m}");
            }
            _ => panic!("eve's line is not UTF-8"),
        }
    }

    #[test]
    fn lines_longer_than_the_buffer() {
        let long = "x".repeat(3 * crate::one_user::BUF);
        let text = format!("{long}\nalice:{BCRYPT}\nl:{long}\nbob:{BCRYPT}\n");
        assert!(find(&text, "alice").unwrap().is_some());
        assert!(find(&text, "bob").unwrap().is_some());
        let (line, msg) = find(&text, "l").unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.contains("longer than 65535 bytes"), "{msg}");
        let text = format!("alice:{BCRYPT}{long}\nbob:{BCRYPT}");
        assert_eq!(find(&text, "alice").unwrap_err().0, 1);
        assert!(find(&text, "bob").unwrap().is_some());
    }
}
