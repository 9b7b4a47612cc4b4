//! Password checks: argon2id, bcrypt, or the seed's plaintext, all without early exits that
//! tell a known user from an unknown one.

use argon2::PasswordVerifier as _;
use subtle::ConstantTimeEq;

use crate::config::Credential;

/// A hash checked when the user is unknown, so that unknown users cost what known ones do.
/// (argon2id of a random password with the crate's default parameters.)
const DUMMY_ARGON2: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y2hlY2stZHVvLWR1bW15$3Vb5H4o2n8v6Q9Yx3k8mT7wJkz0rL1aN6cP4sD2fG9E";

/// True when `password` matches the credential. Malformed hashes never match.
pub fn verify(cred: &Credential, password: &str) -> bool {
    match cred {
        Credential::Plain(p) => {
            let a = p.expose().as_bytes();
            let b = password.as_bytes();
            a.len() == b.len() && bool::from(a.ct_eq(b))
        }
        Credential::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
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

/// A new argon2id hash of `password` (for `check-duo hash-password` and tests).
pub fn hash_argon2id(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duo_auth::Secret;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_argon2id("correct horse").unwrap();
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
