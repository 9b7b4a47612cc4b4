//! Password checks: argon2id, bcrypt, or the seed's plaintext, all without early exits that
//! tell a known user from an unknown one.

use argon2::PasswordVerifier as _;
use subtle::ConstantTimeEq;

use duo_auth::Secret;

/// How a user's password is checked.
#[derive(Clone, Debug)]
pub enum Credential {
    /// The seed's plaintext `password` (kept for compatibility; `config check` warns).
    Plain(Secret),
    /// `$2b$`/`$2y$`/`$2a$` bcrypt, as `htpasswd -B` writes.
    Bcrypt(String),
    /// `$argon2id$` PHC string.
    Argon2id(String),
    /// `$5$` SHA-256-crypt or `$6$` SHA-512-crypt, as `htpasswd -2` / `-5` write.
    ShaCrypt(String),
}

impl Credential {
    /// A stable string that changes when the credential changes (binds cached sessions to it).
    pub fn fingerprint(&self) -> &str {
        match self {
            Credential::Plain(p) => p.expose(),
            Credential::Bcrypt(h) | Credential::Argon2id(h) | Credential::ShaCrypt(h) => h,
        }
    }
}

/// A hash checked when the user is unknown, so that unknown users cost what known ones do.
/// (argon2id of a random password with the crate's default parameters.)
const DUMMY_ARGON2: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y2hlY2stZHVvLWR1bW15$3Vb5H4o2n8v6Q9Yx3k8mT7wJkz0rL1aN6cP4sD2fG9E";

/// The longest password bcrypt reads whole.
pub const BCRYPT_MAX_BYTES: usize = 72;

/// True when `password` matches the credential. Malformed hashes never match.
pub fn verify(cred: &Credential, password: &str) -> bool {
    match cred {
        Credential::Plain(p) => {
            let a = p.expose().as_bytes();
            let b = password.as_bytes();
            a.len() == b.len() && bool::from(a.ct_eq(b))
        }
        // bcrypt reads only the first 72 bytes: a longer password would match every password
        // that shares them. Refused instead (`config check` says so).
        Credential::Bcrypt(hash) => {
            password.len() <= BCRYPT_MAX_BYTES && bcrypt::verify(password, hash).unwrap_or(false)
        }
        Credential::Argon2id(hash) => match argon2::PasswordHash::new(hash) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        },
        Credential::ShaCrypt(hash) if hash.starts_with("$5$") => {
            sha_crypt::sha256_check(password, hash).is_ok()
        }
        Credential::ShaCrypt(hash) => sha_crypt::sha512_check(password, hash).is_ok(),
    }
}

/// Why a hash is not one this gate can check, if it is not (malformed hashes would never match;
/// the config refuses them instead, naming them).
pub fn check_hash(cred: &Credential) -> Result<(), String> {
    match cred {
        Credential::Plain(_) => Ok(()),
        Credential::Bcrypt(h) => h
            .parse::<bcrypt::HashParts>()
            .map(drop)
            .map_err(|e| format!("bad bcrypt hash: {e}")),
        Credential::Argon2id(h) => argon2::PasswordHash::new(h)
            .map(drop)
            .map_err(|e| format!("bad argon2id hash: {e}")),
        Credential::ShaCrypt(h) => check_sha_crypt(h),
    }
}

/// The most rounds a SHA-crypt hash may ask for (glibc allows 999,999,999: one login would then
/// take minutes). `htpasswd -2`/`-5` write 5,000 unless told otherwise.
pub const SHA_CRYPT_MAX_ROUNDS: u64 = 1_000_000;

/// Why a SHA-crypt hash is not accepted, if it is not.
pub fn check_sha_crypt(hash: &str) -> Result<(), String> {
    let rest = hash
        .strip_prefix("$5$")
        .or_else(|| hash.strip_prefix("$6$"))
        .ok_or("not a SHA-crypt hash")?;
    if let Some(r) = rest.strip_prefix("rounds=") {
        let n: u64 = r
            .split('$')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or("a SHA-crypt hash with unreadable rounds")?;
        if n > SHA_CRYPT_MAX_ROUNDS {
            return Err(format!(
                "{n} SHA-crypt rounds (at most {SHA_CRYPT_MAX_ROUNDS}: each login would take too long)"
            ));
        }
    }
    if rest.split('$').count() < 2 {
        return Err("a SHA-crypt hash without its salt and digest".into());
    }
    Ok(())
}

/// Spend the time a real check would, then fail: for unknown users.
pub fn verify_unknown_user(password: &str) -> bool {
    let _ = verify(&Credential::Argon2id(DUMMY_ARGON2.to_string()), password);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_crypt_as_htpasswd_writes_it() {
        // `printf pw | htpasswd -ni -5 u` and `-2` (Debian 12's htpasswd, Apache 2.4.71).
        let sha512 = "$6$sI4cBy6DffGykRpY$2w1RWX4bf/H8pQsJuobtRPgDJP4EEIODC4H0VXxcw1PkXeOcBMY/duAEdzrgkiuPEuj.A1MGY61L.QzsJulo01";
        let sha256 = "$5$7sYld9ErfOGZPaoI$R5rS3qW1BLQQ2QsoMSDVuPmgRteYAoTPKZ/TYhDAT38";
        for h in [sha512, sha256] {
            check_sha_crypt(h).unwrap();
            let c = Credential::ShaCrypt(h.to_string());
            assert!(verify(&c, "pw"), "{h}");
            assert!(!verify(&c, "px"), "{h}");
        }
        assert!(check_sha_crypt("$6$rounds=999999999$salt$digest").is_err());
        assert!(check_sha_crypt("$6$rounds=5000$salt$digest").is_ok());
        assert!(!verify(&Credential::ShaCrypt("$6$garbage".into()), "pw"));
    }

    #[test]
    fn argon2id_round_trip() {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::encode_b64(b"fixed test salt!").unwrap();
        let h = argon2::Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(h.starts_with("$argon2id$"));
        let c = Credential::Argon2id(h);
        assert!(verify(&c, "correct horse"));
        assert!(!verify(&c, "correct horsf"));
    }

    #[test]
    fn bcrypt_from_htpasswd() {
        // htpasswd -nbB -C 5 alice 'pa ss,word'
        let h = bcrypt::hash_with_result("pa ss,word", 5)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let c = Credential::Bcrypt(h);
        assert!(verify(&c, "pa ss,word"));
        assert!(!verify(&c, "pa ss"));
    }

    #[test]
    fn bcrypt_refuses_what_it_would_truncate() {
        let long = "x".repeat(BCRYPT_MAX_BYTES);
        let h = bcrypt::hash_with_result(&long, 4).unwrap().to_string();
        let c = Credential::Bcrypt(h);
        assert!(verify(&c, &long));
        // bcrypt alone would accept both: the 73rd byte is never read.
        assert!(!verify(&c, &format!("{long}y")));
        assert!(!verify(&c, &format!("{long}x")));
    }

    #[test]
    fn plain_and_malformed() {
        assert!(verify(&Credential::Plain(Secret::new("x")), "x"));
        assert!(!verify(&Credential::Plain(Secret::new("x")), "xx"));
        assert!(!verify(&Credential::Bcrypt("$2y$nonsense".into()), "x"));
        assert!(!verify(
            &Credential::Argon2id("$argon2id$nonsense".into()),
            "x"
        ));
        assert!(!verify_unknown_user("x"));
    }

    #[test]
    fn dummy_hash_is_well_formed() {
        // If it did not parse, unknown users would fail fast and be told apart by timing.
        assert!(argon2::PasswordHash::new(DUMMY_ARGON2).is_ok());
    }
}
