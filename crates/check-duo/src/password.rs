//! Password hashes: checking is the core's ([`verify`]); making a new one needs randomness, so
//! it lives here (`check-duo hash-password`).

pub use check_duo_core::password::{verify, verify_unknown_user, Credential};

/// A new argon2id hash of `password`.
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

    #[test]
    fn argon2id_round_trip() {
        let h = hash_argon2id("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let c = Credential::Argon2id(h);
        assert!(verify(&c, "correct horse"));
        assert!(!verify(&c, "correct horsf"));
    }
}
