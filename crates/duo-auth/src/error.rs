//! Errors named for the decision they drive: whether the failmode applies, whether to retry.

use std::fmt;
use std::time::Duration;

/// What went wrong talking to Duo.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Duo could not be reached: connection, DNS or I/O failure.
    Transport(String),
    /// The TLS handshake failed: the certificate did not verify, or the peer spoke no TLS we
    /// accept. Unlike a refused connection, this may be a man in the middle.
    Tls(String),
    /// The deadline passed before Duo answered.
    Timeout,
    /// 401: Duo rejected the ikey, the signature or the date.
    Unauthorized { code: u32, message: String },
    /// 429: too many requests; wait at least `retry_after` when given.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx: Duo failed.
    Server { status: u16 },
    /// Another 4xx: Duo refused this request (unknown user, bad parameter…).
    Rejected {
        status: u16,
        code: u32,
        message: String,
    },
    /// An answer that is not the JSON Duo documents.
    Malformed(String),
    /// The client itself is misconfigured (an unreadable CA file, a client id of the wrong
    /// length…), or a caller's argument is unusable (a state too short…).
    Config(String),
    /// Universal Prompt: Duo's answer held an `id_token` that does not validate (signature,
    /// audience, issuer, expiry, user, nonce). Never a reason to fail open: a forged or replayed
    /// token is what an attacker would send.
    InvalidToken(String),
}

impl Error {
    /// True when Duo could not be asked at all (Duo's own failmode semantics: connection, TLS,
    /// timeout, 5xx, 401, malformed answer). Other 4xx are answers, and deny.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Transport(_)
                | Error::Tls(_)
                | Error::Timeout
                | Error::Server { .. }
                | Error::Unauthorized { .. }
                | Error::Malformed(_)
        )
    }

    /// True for the failures a fail-open mode may open on: Duo was not reached (connection,
    /// name resolution, timeout) or failed (5xx). Not a 401 (a wrong skey, a skewed clock), a
    /// certificate that does not verify or an answer that is not Duo's: those are what a man
    /// in the middle would cause, and he must not be able to switch the second factor off.
    pub fn may_fail_open(&self) -> bool {
        matches!(
            self,
            Error::Transport(_) | Error::Timeout | Error::Server { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(m) => write!(f, "Duo unreachable: {m}"),
            Error::Tls(m) => write!(f, "TLS with Duo failed: {m}"),
            Error::Timeout => f.write_str("Duo did not answer before the deadline"),
            Error::Unauthorized { code, message } => {
                write!(f, "Duo rejected the credentials ({code}: {message})")
            }
            Error::RateLimited { retry_after } => match retry_after {
                Some(d) => write!(f, "Duo rate limit (retry after {} s)", d.as_secs()),
                None => f.write_str("Duo rate limit"),
            },
            Error::Server { status } => write!(f, "Duo server error (HTTP {status})"),
            Error::Rejected {
                status,
                code,
                message,
            } => write!(
                f,
                "Duo refused the request (HTTP {status}, {code}: {message})"
            ),
            Error::Malformed(m) => write!(f, "malformed answer from Duo: {m}"),
            Error::Config(m) => write!(f, "Duo client configuration: {m}"),
            Error::InvalidToken(m) => write!(f, "Duo's id_token is not valid: {m}"),
        }
    }
}

impl std::error::Error for Error {}
