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
}

impl Credential {
    /// A stable string that changes when the credential changes (binds cached sessions to it).
    pub fn fingerprint(&self) -> &str {
        match self {
            Credential::Plain(p) => p.expose(),
            Credential::Bcrypt(h) | Credential::Argon2id(h) => h,
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
    }
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
