//! Which second factor a request asks for. Duo's own convention: the factor rides on the
//! password after a comma (`password,123456` for a passcode, `password,phone` for a call,
//! `password,push`, `password,sms`). A password that itself contains a comma still works: the
//! whole string is tried as the password when the split one is wrong.

use crate::password;
use crate::password::Credential;

/// The factor the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// Nothing asked: a push (or the local TOTP code, for TOTP users).
    Default,
    Push,
    Phone,
    Sms,
    /// A passcode: a Duo Mobile code, a hardware token, an SMS code, or a local TOTP code.
    Passcode(String),
}

/// Split off a factor suffix, if the text after the last comma is one.
pub fn split(password: &str) -> Option<(&str, Requested)> {
    let (base, suffix) = password.rsplit_once(',')?;
    let suffix = suffix.trim();
    let requested = match suffix.to_ascii_lowercase().as_str() {
        "push" => Requested::Push,
        "phone" | "call" => Requested::Phone,
        "sms" => Requested::Sms,
        s if (6..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => {
            Requested::Passcode(s.to_string())
        }
        _ => return None,
    };
    Some((base, requested))
}

/// Check the password, with or without a factor suffix; the factor asked for if it matches.
pub fn check_password(cred: &Credential, password: &str) -> Option<Requested> {
    if let Some((base, requested)) = split(password) {
        if password::verify(cred, base) {
            return Some(requested);
        }
    }
    password::verify(cred, password).then_some(Requested::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duo_auth::Secret;

    #[test]
    fn suffixes() {
        assert_eq!(
            split("pw,123456"),
            Some(("pw", Requested::Passcode("123456".into())))
        );
        assert_eq!(split("pw,Phone"), Some(("pw", Requested::Phone)));
        assert_eq!(split("a,b,push"), Some(("a,b", Requested::Push)));
        assert_eq!(split("pw,sms"), Some(("pw", Requested::Sms)));
        assert_eq!(split("pw,12345"), None);
        assert_eq!(split("pw,hello"), None);
        assert_eq!(split("pw"), None);
    }

    #[test]
    fn comma_in_the_password_still_works() {
        let cred = Credential::Plain(Secret::new("a,123456"));
        assert_eq!(check_password(&cred, "a,123456"), Some(Requested::Default));
        assert_eq!(
            check_password(&cred, "a,123456,654321"),
            Some(Requested::Passcode("654321".into()))
        );
        let cred = Credential::Plain(Secret::new("pw"));
        assert_eq!(check_password(&cred, "pw,phone"), Some(Requested::Phone));
        assert_eq!(check_password(&cred, "px,phone"), None);
        assert_eq!(check_password(&cred, "pw,"), None);
    }
}
