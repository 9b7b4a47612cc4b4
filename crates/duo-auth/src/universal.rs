//! Duo's Universal Prompt (OIDC) as pure functions: the request JWT of the authorization URL,
//! the client-assertion JWTs of `health_check` and `token`, and the validation of the
//! `id_token` Duo returns. No clock and no I/O: "now", the `jti` and the state are arguments,
//! so everything here is tested against fixed vectors. The HTTPS calls are in
//! [`crate::universal_client`].
//!
//! All JWTs are HS512 with the client secret (Duo's only algorithm for this flow).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::secret::Secret;
use crate::sign::encode;

/// Duo client ids are 20 characters.
pub const CLIENT_ID_LENGTH: usize = 20;
/// Duo client secrets are 40 characters.
pub const CLIENT_SECRET_LENGTH: usize = 40;
/// The length of a client assertion's `jti` (as Duo's SDKs make it).
pub const JTI_LENGTH: usize = 36;
/// The length of [`generate_state`]'s states.
pub const STATE_LENGTH: usize = 36;
/// The shortest state accepted: 22 alphanumerics hold 128 bits (Duo's SDKs accept 16).
pub const MIN_STATE_LENGTH: usize = 22;
/// The longest state (and nonce) Duo accepts.
pub const MAX_STATE_LENGTH: usize = 1024;
/// The shortest nonce accepted (as Duo's SDKs).
pub const MIN_NONCE_LENGTH: usize = 16;
/// Lifetime of the JWTs this client signs; Duo refuses more than five minutes.
pub const JWT_LIFETIME_SECS: i64 = 300;
/// Clock skew allowed on the `id_token`'s `exp`, `iat` and `nbf` (as Duo's SDKs).
pub const LEEWAY_SECS: i64 = 60;
/// `client_assertion_type` of the token request.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// One Universal Prompt application: client id, client secret and API host, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    client_id: String,
    client_secret: Secret,
    host: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `host` is `api-XXXXXXXX.duosecurity.com`, optionally with `:port`, no scheme or path.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: Secret,
        host: impl Into<String>,
    ) -> Result<Self, Error> {
        let (client_id, host) = (client_id.into(), host.into());
        if client_id.chars().count() != CLIENT_ID_LENGTH {
            return Err(Error::Config(format!(
                "the Duo client id must be {CLIENT_ID_LENGTH} characters"
            )));
        }
        if client_secret.expose().chars().count() != CLIENT_SECRET_LENGTH {
            return Err(Error::Config(format!(
                "the Duo client secret must be {CLIENT_SECRET_LENGTH} characters"
            )));
        }
        if host.is_empty()
            || host
                .chars()
                .any(|c| c == '/' || c == '?' || c == '#' || c == '@' || c.is_whitespace())
        {
            return Err(Error::Config(format!(
                "the Duo API host {host:?} is not a host name"
            )));
        }
        Ok(Credentials {
            client_id,
            client_secret,
            host,
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `https://HOST`: the request JWT's audience.
    pub fn audience(&self) -> String {
        format!("https://{}", self.host)
    }

    pub fn authorize_endpoint(&self) -> String {
        format!("https://{}/oauth/v1/authorize", self.host)
    }

    /// The token endpoint: the client assertion's audience and the `id_token`'s issuer.
    pub fn token_endpoint(&self) -> String {
        format!("https://{}/oauth/v1/token", self.host)
    }

    pub fn health_check_endpoint(&self) -> String {
        format!("https://{}/oauth/v1/health_check", self.host)
    }

    fn key(&self) -> EncodingKey {
        EncodingKey::from_secret(self.client_secret.expose().as_bytes())
    }
}

/// `len` characters drawn uniformly from `A-Z a-z 0-9` with the OS's randomness.
pub fn random_alphanumeric(len: usize) -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf)
            .map_err(|e| Error::Config(format!("no randomness from the OS: {e}")))?;
        // 248 = 4 × 62: rejecting larger bytes keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    Ok(out)
}

/// A fresh state for [`authorization_url`]: 36 random alphanumerics (about 214 bits). Keep it
/// in the user's session and compare it with the `state` Duo sends back.
pub fn generate_state() -> Result<String, Error> {
    random_alphanumeric(STATE_LENGTH)
}

/// A fresh client-assertion `jti`.
pub fn generate_jti() -> Result<String, Error> {
    random_alphanumeric(JTI_LENGTH)
}

fn sign_hs512<T: Serialize>(creds: &Credentials, claims: &T) -> Result<String, Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS512), claims, &creds.key())
        .map_err(|e| Error::Config(format!("signing a JWT: {e}")))
}

#[derive(Serialize)]
struct RequestClaims<'a> {
    scope: &'a str,
    redirect_uri: &'a str,
    client_id: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: i64,
    state: &'a str,
    response_type: &'a str,
    duo_uname: &'a str,
    use_duo_code_attribute: bool,
}

fn check_inputs(
    username: &str,
    state: &str,
    redirect_uri: &str,
    nonce: Option<&str>,
) -> Result<(), Error> {
    if username.is_empty() {
        return Err(Error::Config("the username is empty".into()));
    }
    if !(MIN_STATE_LENGTH..=MAX_STATE_LENGTH).contains(&state.len()) {
        return Err(Error::Config(format!(
            "the state must be {MIN_STATE_LENGTH} to {MAX_STATE_LENGTH} characters"
        )));
    }
    if let Some(n) = nonce {
        if !(MIN_NONCE_LENGTH..=MAX_STATE_LENGTH).contains(&n.len()) {
            return Err(Error::Config(format!(
                "the nonce must be {MIN_NONCE_LENGTH} to {MAX_STATE_LENGTH} characters"
            )));
        }
    }
    if !(redirect_uri.starts_with("https://") || redirect_uri.starts_with("http://")) {
        return Err(Error::Config(format!(
            "the redirect URI {redirect_uri:?} is not an http(s) URL"
        )));
    }
    Ok(())
}

/// The `request` JWT of the authorization URL, valid for five minutes from `now`.
pub fn request_jwt(
    creds: &Credentials,
    username: &str,
    state: &str,
    redirect_uri: &str,
    now: i64,
) -> Result<String, Error> {
    check_inputs(username, state, redirect_uri, None)?;
    let aud = creds.audience();
    sign_hs512(
        creds,
        &RequestClaims {
            scope: "openid",
            redirect_uri,
            client_id: &creds.client_id,
            iss: &creds.client_id,
            aud: &aud,
            exp: now + JWT_LIFETIME_SECS,
            state,
            response_type: "code",
            duo_uname: username,
            use_duo_code_attribute: true,
        },
    )
}

/// The URL of Duo's prompt to send the browser to: `/oauth/v1/authorize` with
/// `response_type=code`, `client_id`, the `request` JWT and, when given, the `nonce` (which
/// Duo puts in the `id_token`). Duo sends the browser back to `redirect_uri` with `duo_code`
/// and `state`.
pub fn authorization_url(
    creds: &Credentials,
    username: &str,
    state: &str,
    redirect_uri: &str,
    nonce: Option<&str>,
    now: i64,
) -> Result<String, Error> {
    check_inputs(username, state, redirect_uri, nonce)?;
    let jwt = request_jwt(creds, username, state, redirect_uri, now)?;
    let mut url = format!(
        "{}?response_type=code&client_id={}&request={}",
        creds.authorize_endpoint(),
        encode(&creds.client_id),
        encode(&jwt)
    );
    if let Some(n) = nonce {
        url.push_str("&nonce=");
        url.push_str(&encode(n));
    }
    Ok(url)
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    jti: &'a str,
}

/// A client assertion for `audience` (the health-check or the token URL): `iss` = `sub` =
/// the client id, `exp` five minutes from `now`, and `jti` (36 random characters: see
/// [`generate_jti`]).
pub fn client_assertion(
    creds: &Credentials,
    audience: &str,
    jti: &str,
    now: i64,
) -> Result<String, Error> {
    sign_hs512(
        creds,
        &AssertionClaims {
            iss: &creds.client_id,
            sub: &creds.client_id,
            aud: audience,
            exp: now + JWT_LIFETIME_SECS,
            jti,
        },
    )
}

/// The form of the token request (`POST /oauth/v1/token`).
pub fn token_request_params(
    creds: &Credentials,
    code: &str,
    redirect_uri: &str,
    assertion: &str,
) -> Vec<(String, String)> {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", creds.client_id()),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The `auth_result` claim: Duo's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct AuthResultClaim {
    /// `allow` or `deny`.
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_msg: String,
}

/// A validated `id_token`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdToken {
    pub preferred_username: String,
    pub nonce: Option<String>,
    pub auth_result: AuthResultClaim,
    /// Duo's `auth_context` (factor, devices, application, user, txid…), as Duo sent it.
    pub auth_context: Value,
    pub iat: i64,
    pub exp: i64,
    pub auth_time: Option<i64>,
    /// Every claim, for what the fields above do not name.
    pub claims: Value,
}

impl IdToken {
    /// Duo allowed the login (`auth_result.result == "allow"`).
    pub fn allowed(&self) -> bool {
        self.auth_result.result == "allow"
    }
}

/// Check an HS512 signature and return the claims; nothing else is checked.
pub fn decode_hs512(token: &str, secret: &Secret) -> Result<Value, String> {
    let mut v = Validation::new(Algorithm::HS512);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &v,
    )
    .map(|d| d.claims)
    .map_err(|e| e.to_string())
}

/// A numeric claim; floats (as Python's SDKs write `exp`) are truncated.
pub fn numeric_claim(claims: &Value, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// Validate Duo's `id_token` as Duo's SDKs do: HS512 with the client secret, `iss` the token
/// URL, `aud` the client id, `exp` and `iat` present and within [`LEEWAY_SECS`] of `now`,
/// `nbf` too if present, `preferred_username` the user who logged in, and `nonce` the one sent
/// (when one was).
pub fn validate_id_token(
    creds: &Credentials,
    token: &str,
    username: &str,
    nonce: Option<&str>,
    now: i64,
) -> Result<IdToken, Error> {
    let bad = |m: &str| Error::InvalidToken(m.to_string());
    let claims = decode_hs512(token, &creds.client_secret).map_err(Error::InvalidToken)?;
    if claims.get("iss").and_then(Value::as_str) != Some(creds.token_endpoint().as_str()) {
        return Err(bad("wrong issuer"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == &creds.client_id,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(creds.client_id.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(bad("wrong audience"));
    }
    let exp = numeric_claim(&claims, "exp").ok_or_else(|| bad("no exp"))?;
    let iat = numeric_claim(&claims, "iat").ok_or_else(|| bad("no iat"))?;
    if exp <= now - LEEWAY_SECS {
        return Err(bad("expired"));
    }
    if iat > now + LEEWAY_SECS {
        return Err(bad("issued in the future"));
    }
    if let Some(nbf) = numeric_claim(&claims, "nbf") {
        if nbf > now + LEEWAY_SECS {
            return Err(bad("not yet valid"));
        }
    }
    let preferred_username = claims
        .get("preferred_username")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if preferred_username != username {
        return Err(bad("the token is for another user"));
    }
    let token_nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(n) = nonce {
        if token_nonce.as_deref() != Some(n) {
            return Err(bad("wrong nonce"));
        }
    }
    let auth_result: AuthResultClaim = match claims.get("auth_result") {
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| bad(&format!("auth_result: {e}")))?
        }
        None => return Err(bad("no auth_result")),
    };
    Ok(IdToken {
        preferred_username,
        nonce: token_nonce,
        auth_result,
        auth_context: claims.get("auth_context").cloned().unwrap_or(Value::Null),
        iat,
        exp,
        auth_time: numeric_claim(&claims, "auth_time"),
        claims,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    pub const CLIENT_ID: &str = "DIXXXXXXXXXXXXXXXXXX";
    pub const SECRET: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
    const HOST: &str = "api-xxxxxxx.test.duosecurity.com";
    const NOW: i64 = 1_700_000_000;

    fn creds() -> Credentials {
        Credentials::new(CLIENT_ID, Secret::new(SECRET), HOST).unwrap()
    }

    #[test]
    fn credentials_are_checked() {
        assert!(Credentials::new("short", Secret::new(SECRET), HOST).is_err());
        assert!(Credentials::new(CLIENT_ID, Secret::new("short"), HOST).is_err());
        assert!(Credentials::new(CLIENT_ID, Secret::new(SECRET), "https://h/x").is_err());
        assert!(Credentials::new(CLIENT_ID, Secret::new(SECRET), "").is_err());
        let c = creds();
        assert_eq!(c.token_endpoint(), format!("https://{HOST}/oauth/v1/token"));
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn states_are_random_alphanumerics() {
        let a = generate_state().unwrap();
        assert_eq!(a.len(), STATE_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_state().unwrap());
        assert_eq!(generate_jti().unwrap().len(), JTI_LENGTH);
        assert_eq!(random_alphanumeric(500).unwrap().len(), 500);
    }

    #[test]
    fn inputs_are_checked() {
        let c = creds();
        let state = "s".repeat(36);
        let uri = "https://portal.example.com/duo-callback";
        assert!(authorization_url(&c, "", &state, uri, None, NOW).is_err());
        assert!(authorization_url(&c, "alice", &"s".repeat(21), uri, None, NOW).is_err());
        assert!(authorization_url(&c, "alice", &"s".repeat(1025), uri, None, NOW).is_err());
        assert!(authorization_url(&c, "alice", &state, uri, Some("short"), NOW).is_err());
        assert!(authorization_url(&c, "alice", &state, "javascript:x", None, NOW).is_err());
        assert!(authorization_url(&c, "alice", &state, uri, Some(&"n".repeat(32)), NOW).is_ok());
    }
}
