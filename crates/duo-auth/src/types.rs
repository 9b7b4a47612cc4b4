//! Typed requests and answers of the Auth API endpoints this crate calls. Unknown fields in
//! Duo's answers are ignored, as Duo asks of its clients.

use serde::Deserialize;

/// The JSON envelope of every answer.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    pub stat: String,
    #[serde(default)]
    pub response: Option<serde_json::Value>,
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub message_detail: Option<String>,
}

/// `/auth/v2/ping`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Ping {
    /// Duo's clock, Unix seconds.
    pub time: i64,
}

/// One device a user may authenticate with.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Device {
    pub device: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// `/auth/v2/preauth`: what Duo says about a user before any factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preauth {
    /// The user must authenticate with one of these devices.
    Auth { devices: Vec<Device> },
    /// No second factor needed (bypass, trusted network, remembered device).
    Allow { status_msg: String },
    /// Not allowed (locked out, policy).
    Deny { status_msg: String },
    /// The user is not enrolled.
    Enroll {
        status_msg: String,
        enroll_portal_url: String,
    },
}

/// Options of `/auth/v2/preauth` beyond the user and the address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreauthOptions {
    /// Send `client_supports_verified_push=1`: this client can show the code a Verified Duo
    /// Push asks for. Duo then answers with a `txid` to pass to `/auth/v2/auth` (see
    /// [`PreauthAnswer::txid`]) when the user's policy requires Verified Push; without it, Duo
    /// ignores Verified Push and its policy is bypassed.
    pub client_supports_verified_push: bool,
    /// `hostname`: the name of the device the user is accessing from.
    pub hostname: Option<String>,
    /// `trusted_device_token`, from an earlier `auth_status` (remembered devices).
    pub trusted_device_token: Option<String>,
}

/// `/auth/v2/preauth` with what Duo returns beside the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreauthAnswer {
    pub preauth: Preauth,
    /// The transaction Duo opened for a Verified Duo Push (only when asked for with
    /// [`PreauthOptions::client_supports_verified_push`], and only for `auth`): pass it to
    /// `/auth/v2/auth` as `txid`.
    pub txid: Option<String>,
}

#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Deserialize)]
pub(crate) struct PreauthRaw {
    pub result: String,
    #[serde(default)]
    pub txid: Option<String>,
    #[serde(default)]
    pub status_msg: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub enroll_portal_url: String,
}

/// The factor an `/auth/v2/auth` call uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factor {
    /// A push to `device` (a device id or `auto`), with `pushinfo` (URL-encoded pairs) shown on
    /// the phone.
    Push { device: String, pushinfo: String },
    /// A passcode (hardware token, Duo Mobile code, SMS code).
    Passcode(String),
    /// A phone call to `device`.
    Phone { device: String },
    /// Duo chooses (push if possible, else a call).
    Auto { device: String },
    /// Send SMS passcodes to `device`; the answer is a deny with status `sent`.
    Sms { device: String },
}

/// One `/auth/v2/auth` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub username: String,
    pub factor: Factor,
    pub ipaddr: Option<String>,
    /// `async=1`: answer with a txid at once, then poll `auth_status`.
    pub asynchronous: bool,
}

/// Outcome of an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allow,
    Deny,
    Waiting,
}

/// `auth` (sync) or `auth_status`: the result with Duo's status words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthStatus {
    pub result: AuthResult,
    pub status: String,
    pub status_msg: String,
}

impl AuthStatus {
    /// The code a Verified Duo Push asks the user to type into Duo Mobile, while the push
    /// waits: Duo gives it in `status_msg` ("Please enter verification code 376 into Duo
    /// Mobile..."), and has no field of its own for it.
    pub fn verification_code(&self) -> Option<String> {
        verification_code(&self.status_msg)
    }
}

/// The digits after "verification code" in a status message (at most 10), if any.
pub fn verification_code(status_msg: &str) -> Option<String> {
    const KEY: &str = "verification code";
    let lower = status_msg.to_ascii_lowercase();
    let at = lower.find(KEY)? + KEY.len();
    let rest = status_msg.get(at..)?;
    let rest = rest.trim_start_matches([' ', ':', '\t']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let next = rest[digits.len()..].chars().next();
    if digits.is_empty() || digits.len() > 10 || next.is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    Some(digits)
}

#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Deserialize)]
pub(crate) struct AuthStatusRaw {
    pub result: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_msg: String,
}

/// What `/auth/v2/auth` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStart {
    /// Async: poll `auth_status` with this transaction id.
    Txid(String),
    /// Sync: the final result.
    Done(AuthStatus),
}
