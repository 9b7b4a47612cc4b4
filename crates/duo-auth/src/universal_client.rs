//! The Universal Prompt's HTTPS calls: `health_check` and the token exchange, each with a
//! deadline, over the same TLS setup as the Auth API client (compiled-in roots plus an optional
//! extra CA, nothing from the environment). Errors are [`Error`]s with the Auth API's meaning:
//! [`Error::may_fail_open`] only for transport failures, timeouts and 5xx.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::{
    build_agent, now_unix, parse_answer, read_text, status_error, transport_error,
};
use crate::error::Error;
use crate::secret::Secret;
use crate::universal::{self, Credentials, IdToken};

/// How to reach one Universal Prompt application.
#[derive(Debug, Clone)]
pub struct UniversalConfig {
    /// 20 characters.
    pub client_id: String,
    /// 40 characters.
    pub client_secret: Secret,
    /// `api-XXXXXXXX.duosecurity.com`, optionally with `:port`.
    pub host: String,
    /// PEM certificates trusted besides the compiled-in roots (a private CA, the simulator).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The longest any single call may take (a deadline shorter than this wins).
    pub call_timeout: Duration,
}

/// `health_check`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthCheck {
    /// Duo's clock, Unix seconds.
    pub timestamp: i64,
}

/// A Universal Prompt client.
pub struct UniversalClient {
    agent: ureq::Agent,
    creds: Credentials,
    call_timeout: Duration,
    /// Seconds to add to the local clock (Duo's time minus ours).
    clock_offset: i64,
}

impl std::fmt::Debug for UniversalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniversalClient")
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl UniversalClient {
    /// Checks the client id (20 characters), secret (40) and host.
    pub fn new(cfg: UniversalConfig) -> Result<Self, Error> {
        let creds = Credentials::new(cfg.client_id, cfg.client_secret, cfg.host)?;
        let agent = build_agent(cfg.extra_ca_pem.as_deref(), cfg.call_timeout)?;
        Ok(UniversalClient {
            agent,
            creds,
            call_timeout: cfg.call_timeout,
            clock_offset: 0,
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Correct the clock the JWTs are dated and checked with by `offset` seconds (Duo's time
    /// minus ours: [`HealthCheck::timestamp`] minus the local clock).
    pub fn set_clock_offset(&mut self, offset: i64) {
        self.clock_offset = offset;
    }

    fn now(&self) -> i64 {
        now_unix() + self.clock_offset
    }

    /// A fresh state (36 random alphanumerics) for [`Self::authorization_url`].
    pub fn generate_state() -> Result<String, Error> {
        universal::generate_state()
    }

    /// `POST /oauth/v1/health_check` with `client_id` and a client assertion: is Duo up, and
    /// does it know these credentials? A 400 `invalid_client` is [`Error::Rejected`].
    pub fn health_check(&self, deadline: Instant) -> Result<HealthCheck, Error> {
        let url = self.creds.health_check_endpoint();
        let assertion = universal::client_assertion(
            &self.creds,
            &url,
            &universal::generate_jti()?,
            self.now(),
        )?;
        let form = [
            ("client_id".to_string(), self.creds.client_id().to_string()),
            ("client_assertion".to_string(), assertion),
        ];
        let (status, text) = self.post_form(&url, &form, deadline)?;
        let v = parse_answer(status, &text)?;
        serde_json::from_value(v).map_err(|e| Error::Malformed(format!("health_check: {e}")))
    }

    /// The URL of Duo's prompt for `username` (see [`universal::authorization_url`]). Keep
    /// `state` (and `nonce`) in the user's session.
    pub fn authorization_url(
        &self,
        username: &str,
        state: &str,
        redirect_uri: &str,
        nonce: Option<&str>,
    ) -> Result<String, Error> {
        universal::authorization_url(
            &self.creds,
            username,
            state,
            redirect_uri,
            nonce,
            self.now(),
        )
    }

    /// `POST /oauth/v1/token`: exchange the `duo_code` Duo sent back for the `id_token`, and
    /// validate it (signature, issuer, audience, times, user, nonce). The caller must already
    /// have checked the returned `state` against the session's; then [`IdToken::allowed`] is
    /// Duo's decision.
    pub fn exchange(
        &self,
        code: &str,
        username: &str,
        redirect_uri: &str,
        nonce: Option<&str>,
        deadline: Instant,
    ) -> Result<IdToken, Error> {
        if code.is_empty() {
            return Err(Error::Config("no authorization code".into()));
        }
        let url = self.creds.token_endpoint();
        let assertion = universal::client_assertion(
            &self.creds,
            &url,
            &universal::generate_jti()?,
            self.now(),
        )?;
        let form = universal::token_request_params(&self.creds, code, redirect_uri, &assertion);
        let (status, text) = self.post_form(&url, &form, deadline)?;
        if status != 200 {
            let message = match serde_json::from_str::<OAuthError>(&text) {
                Ok(e) if e.error_description.is_empty() => e.error,
                Ok(e) => format!("{}: {}", e.error, e.error_description),
                Err(_) => String::new(),
            };
            return Err(status_error(status, u32::from(status) * 100, message));
        }
        let answer: TokenAnswer =
            serde_json::from_str(&text).map_err(|e| Error::Malformed(format!("token: {e}")))?;
        universal::validate_id_token(&self.creds, &answer.id_token, username, nonce, self.now())
    }

    /// POST a form; the status and body of any answer (transport failures are errors).
    fn post_form(
        &self,
        url: &str,
        form: &[(String, String)],
        deadline: Instant,
    ) -> Result<(u16, String), Error> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout);
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", crate::sign::encode(k), crate::sign::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let result = self
            .agent
            .post(url)
            .timeout(remaining.min(self.call_timeout))
            .set("Content-Type", "application/x-www-form-urlencoded")
            .send_string(&body);
        match result {
            Ok(resp) => {
                let status = resp.status();
                Ok((status, read_text(resp)?))
            }
            Err(ureq::Error::Status(429, resp)) => Err(Error::RateLimited {
                retry_after: resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            }),
            Err(ureq::Error::Status(status, resp)) => Ok((status, read_text(resp)?)),
            Err(ureq::Error::Transport(t)) => Err(transport_error(&t, deadline)),
        }
    }
}
