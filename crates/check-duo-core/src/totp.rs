//! Local TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), a second factor that needs no
//! Duo. Off unless a user has a secret in the config's `totp` map.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

const STEP: i64 = 30;
const DIGITS: u32 = 6;

/// A base32 secret as authenticator apps show it (case and spaces ignored, padding optional).
pub fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    let mut clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    while clean.len() % 8 != 0 {
        clean.push('=');
    }
    let bytes = data_encoding::BASE32
        .decode(clean.as_bytes())
        .map_err(|_| "not a base32 TOTP secret".to_string())?;
    if bytes.len() < 10 {
        return Err("TOTP secret shorter than 80 bits".into());
    }
    Ok(bytes)
}

/// HOTP (RFC 4226) of `counter`, truncated to `digits` digits.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return u32::MAX;
    };
    let h = mac
        .chain_update(counter.to_be_bytes())
        .finalize()
        .into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(digits)
}

/// The code an authenticator app shows at `now` (for `check-duo` tooling and tests).
pub fn code_at(secret: &[u8], now: i64) -> String {
    let step = u64::try_from(now.div_euclid(STEP)).unwrap_or(0);
    format!(
        "{:0width$}",
        hotp(secret, step, DIGITS),
        width = DIGITS as usize
    )
}

/// The time step a 6-digit `code` belongs to, if it is valid at `now` (one step of clock skew
/// either way). The caller refuses a step it has seen before (replay).
pub fn verify(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now.div_euclid(STEP);
    let mut found = None;
    // Check every candidate, so the time taken does not say which one matched.
    for s in [step - 1, step, step + 1] {
        let Ok(counter) = u64::try_from(s) else {
            continue;
        };
        let expected = format!(
            "{:0width$}",
            hotp(secret, counter, DIGITS),
            width = DIGITS as usize
        );
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(s);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA1 rows (8 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59u64, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, t / 30, 8), code, "t={t}");
        }
    }

    #[test]
    fn verify_accepts_adjacent_steps_only() {
        let secret = b"12345678901234567890";
        let now = 1111111111;
        let code = |t: i64| format!("{:06}", hotp(secret, (t / 30) as u64, 6));
        assert_eq!(verify(secret, &code(now), now), Some(now / 30));
        assert_eq!(verify(secret, &code(now - 30), now), Some(now / 30 - 1));
        assert_eq!(verify(secret, &code(now + 30), now), Some(now / 30 + 1));
        assert_eq!(verify(secret, &code(now - 90), now), None);
        assert_eq!(verify(secret, "12345", now), None);
        assert_eq!(verify(secret, "abcdef", now), None);
    }

    #[test]
    fn base32_secrets() {
        // "12345678901234567890" in base32, as apps show it: lower case, spaces.
        assert_eq!(
            decode_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            b"12345678901234567890"
        );
        assert!(decode_secret("not base32!").is_err());
        assert!(decode_secret("GEZDGNBV").is_err());
    }
}
