//! Keys for the session store. The cookie is a bearer token: the store sees only a keyed hash
//! of it, so whoever reads Redis or the SQLite file holds no usable session. The key is derived
//! from Duo's skey (already secret, already in the config), so the drop-in config needs nothing new.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

pub struct SessionKeys {
    key: Zeroizing<[u8; 32]>,
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        // Length-prefixed, so no two different part lists hash alike.
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl SessionKeys {
    pub fn derive(skey: &str) -> Self {
        SessionKeys {
            key: Zeroizing::new(mac(skey.as_bytes(), &[b"check-duo session key v1"])),
        }
    }

    /// The store key of a session cookie.
    pub fn session_id(&self, cookie: &str) -> String {
        hex::encode(mac(&self.key[..], &[b"id", cookie.as_bytes()]))
    }

    /// A tag binding a cached approval to the user, the password and the configured credential:
    /// the warm path checks it instead of running argon2/bcrypt, and a changed password in the
    /// config ends every session of that user.
    pub fn tag(&self, user: &str, password: &str, credential: &str) -> String {
        hex::encode(mac(
            &self.key[..],
            &[
                b"tag",
                user.as_bytes(),
                password.as_bytes(),
                credential.as_bytes(),
            ],
        ))
    }
}

/// Constant-time comparison of two tags.
pub fn tags_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_and_distinct() {
        let k1 = SessionKeys::derive("skey-1");
        let k2 = SessionKeys::derive("skey-2");
        assert_eq!(k1.session_id("c"), k1.session_id("c"));
        assert_ne!(k1.session_id("c"), k2.session_id("c"));
        assert_ne!(k1.session_id("c"), k1.session_id("d"));
        assert!(!k1.session_id("cookie-value").contains("cookie"));
        assert_eq!(k1.session_id("c").len(), 64);
    }

    #[test]
    fn tags_bind_every_part() {
        let k = SessionKeys::derive("s");
        let t = k.tag("alice", "pw", "$argon2id$x");
        assert!(tags_equal(&t, &k.tag("alice", "pw", "$argon2id$x")));
        assert!(!tags_equal(&t, &k.tag("alice", "pw2", "$argon2id$x")));
        assert!(!tags_equal(&t, &k.tag("bob", "pw", "$argon2id$x")));
        assert!(!tags_equal(&t, &k.tag("alice", "pw", "$argon2id$y")));
        assert!(!tags_equal(&k.tag("ab", "c", ""), &k.tag("a", "bc", "")));
    }
}
