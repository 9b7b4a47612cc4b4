//! The names of everything the core keeps in the store, in one place, and the keyed hashes that
//! make session keys. The cookie is a bearer token: the store sees only a keyed hash of it, so
//! whoever reads Redis or the SQLite file holds no usable session.
//!
//! Backends put each kind in its own namespace (Redis: `session:`, `lock:`, `count:` after the
//! configured prefix); the names below are what follows.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Lock: one push per session.
pub fn session_lock(session: &str) -> String {
    session.to_string()
}

/// Lock: one outstanding push per user (sessions have their own).
pub fn user_lock(user: &str) -> String {
    format!("user:{user}")
}

/// Counter: failed passwords of a user in the failure window.
pub fn user_failures(user: &str) -> String {
    format!("fail:user:{user}")
}

/// Counter: failed passwords from a client (address or IPv6 network) in the failure window.
pub fn client_failures(client: &str) -> String {
    format!("fail:ip:{client}")
}

/// The user and client of a pair limit, as one name part.
fn pair(user: &str, client: &str) -> String {
    // Length-prefixed: no user name can make two pairs alike.
    format!("{}:{user}:{client}", user.len())
}

/// Counter: failed passwords of a user from a client in the failure window.
pub fn pair_failures(user: &str, client: &str) -> String {
    format!("fail:pair:{}", pair(user, client))
}

/// Counter: attempts of a user from a client being checked right now.
pub fn pair_attempts(user: &str, client: &str) -> String {
    format!("try:pair:{}", pair(user, client))
}

/// Counter, present while the user is banned from the client.
pub fn pair_ban(user: &str, client: &str) -> String {
    format!("ban:pair:{}", pair(user, client))
}

/// Counter: requests waiting for the push of a session.
pub fn session_waiters(session: &str) -> String {
    format!("waiters:{session}")
}

/// Counter: attempts of a user being checked right now.
pub fn user_attempts(user: &str) -> String {
    format!("try:user:{user}")
}

/// Counter: attempts from a client being checked right now.
pub fn client_attempts(client: &str) -> String {
    format!("try:ip:{client}")
}

/// Counter, present while the user is banned.
pub fn user_ban(user: &str) -> String {
    format!("ban:user:{user}")
}

/// Counter, present while the client is banned.
pub fn client_ban(client: &str) -> String {
    format!("ban:ip:{client}")
}

/// Counter, present while the user cools down after a refused push asked from this client.
pub fn pair_cooldown(user: &str, client: &str) -> String {
    format!("cool:pair:{}", pair(user, client))
}

/// Counter, present while the session cools down after a refused push.
pub fn session_cooldown(session: &str) -> String {
    format!("cool:session:{session}")
}

/// Counter, present while the user cools down after a refused push.
pub fn user_cooldown(user: &str) -> String {
    format!("cool:user:{user}")
}

/// Counter: pushes to the user in the push window.
pub fn user_pushes(user: &str) -> String {
    format!("pushes:user:{user}")
}

/// Counter, present when the session's passcode was refused or its SMS sent.
pub fn spent(session: &str) -> String {
    format!("spent:{session}")
}

/// Counter, present when the TOTP step was used by the user.
pub fn totp_used(user: &str, step: i64) -> String {
    format!("totp:{user}:{step}")
}

/// Value: the Unix milliseconds of the session's last logout, kept for a push deadline after it.
/// A second factor that started before it does not store its approval.
pub fn logouts(session: &str) -> String {
    format!("logout:{session}")
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

/// The keys that hash session tokens and tags: the first makes every new hash, and every one is
/// still accepted on reading, so the secret can be rotated (new first, old after it) without
/// ending the sessions made under the old one.
pub struct SessionKeys {
    keys: Vec<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys(<{} redacted>)", self.keys.len())
    }
}

impl Clone for SessionKeys {
    fn clone(&self) -> Self {
        SessionKeys {
            keys: self.keys.iter().map(|k| Zeroizing::new(**k)).collect(),
        }
    }
}

fn derive_key(secret: &str) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(mac(secret.as_bytes(), &[b"check-duo session key v1"]))
}

impl SessionKeys {
    /// Derived from a secret the config already holds (the pipe mode uses Duo's skey, so the
    /// drop-in config needs nothing new).
    pub fn derive(secret: &str) -> Self {
        SessionKeys {
            keys: vec![derive_key(secret)],
        }
    }

    /// From a list of secrets, the current one first; `None` when the list is empty.
    pub fn rotating<S: AsRef<str>>(secrets: &[S]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        Some(SessionKeys {
            keys: secrets.iter().map(|s| derive_key(s.as_ref())).collect(),
        })
    }

    fn primary(&self) -> &[u8] {
        self.keys.first().map_or(&[][..], |k| &k[..])
    }

    /// The store key of a session token (under the current key).
    pub fn session_id(&self, token: &str) -> String {
        hex::encode(mac(self.primary(), &[b"id", token.as_bytes()]))
    }

    /// The store keys a token may have been filed under besides [`SessionKeys::session_id`]:
    /// those of the older keys, in order.
    pub fn older_session_ids(&self, token: &str) -> impl Iterator<Item = String> + '_ {
        let token = token.to_string();
        self.keys
            .iter()
            .skip(1)
            .map(move |k| hex::encode(mac(&k[..], &[b"id", token.as_bytes()])))
    }

    fn tag_with(key: &[u8], user: &str, password: &str, credential: &str) -> String {
        hex::encode(mac(
            key,
            &[
                b"tag",
                user.as_bytes(),
                password.as_bytes(),
                credential.as_bytes(),
            ],
        ))
    }

    /// A tag binding an approval to the user, the password and the configured credential: the
    /// warm path checks it instead of running argon2/bcrypt, and a changed password in the
    /// config ends every session of that user.
    pub fn tag(&self, user: &str, password: &str, credential: &str) -> String {
        Self::tag_with(self.primary(), user, password, credential)
    }

    /// Whether `tag` is the tag of these parts under any of the keys.
    pub fn tag_matches(&self, tag: &str, user: &str, password: &str, credential: &str) -> bool {
        self.keys
            .iter()
            .any(|k| tags_equal(tag, &Self::tag_with(&k[..], user, password, credential)))
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
