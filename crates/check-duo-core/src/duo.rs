//! The second factor through Duo, in two steps a front-end can drive across requests:
//! [`start`] (preauth, then `auth`: async for pushes and calls, sync for passcodes and SMS) and
//! [`poll`] (`auth_status`, which Duo long-polls). 429 backs off and honours `Retry-After`, as
//! long as the deadline allows. The failmode applies only when preauth cannot be completed, and
//! only when Duo was not reached or failed (connection, name resolution, timeout, 5xx): never on
//! a 401, a certificate that does not verify or a malformed answer. Later failures always deny.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use duo_auth::types::{AuthRequest, AuthResult, AuthStart, AuthStatus, Device, Factor, Preauth};
use duo_auth::Error;

use crate::decision::{Decision, Event};
use crate::factor::Requested;
use crate::policy::{FactorPolicy, FailMode};
use crate::ports::{Clock, DuoApi, Wait};
use crate::request::Request;

/// The ports and settings one step uses.
pub(crate) struct Duo<'a> {
    pub api: &'a dyn DuoApi,
    pub clock: &'a dyn Clock,
    pub wait: &'a dyn Wait,
    pub policy: &'a FactorPolicy,
}

/// What [`start`] did.
pub(crate) enum Started {
    /// Decided at once (preauth allow/deny/enroll, a passcode, an SMS, an error).
    Done(Decision),
    /// A push or call is out.
    Sent {
        txid: String,
        call: bool,
        device: Option<String>,
    },
}

impl Duo<'_> {
    /// The monotonic instant of a wall-clock deadline.
    fn instant(&self, deadline_ms: i64) -> Instant {
        let left = u64::try_from(deadline_ms - self.clock.unix_ms()).unwrap_or(0);
        self.clock.monotonic() + Duration::from_millis(left)
    }

    /// Run `call`, retrying on 429 with exponential back-off (1, 2, 4 … s, plus up to 250 ms of
    /// jitter) or Duo's `Retry-After` if longer, as long as the deadline allows.
    fn with_backoff<T>(
        &self,
        deadline: Instant,
        mut call: impl FnMut() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut backoff = Duration::from_secs(1);
        loop {
            match call() {
                Err(Error::RateLimited { retry_after }) => {
                    let wait = retry_after.unwrap_or_default().max(backoff) + self.jitter();
                    if self.clock.monotonic() + wait >= deadline {
                        return Err(Error::RateLimited { retry_after });
                    }
                    self.wait.wait(wait);
                    backoff = (backoff * 2).min(Duration::from_secs(32));
                }
                other => return other,
            }
        }
    }

    /// Spreads the retries of processes that were refused together; the clock's milliseconds
    /// are random enough for that.
    fn jitter(&self) -> Duration {
        Duration::from_millis(self.clock.unix_ms().rem_euclid(250) as u64)
    }

    /// Whether `failmode: safe` covers this client (all clients when no networks are listed).
    fn fail_open_allowed(&self, ip: Option<IpAddr>) -> bool {
        self.policy.failmode == FailMode::Safe
            && (self.policy.failmode_networks.is_empty()
                || ip.is_some_and(|ip| {
                    self.policy
                        .failmode_networks
                        .iter()
                        .any(|n| n.contains(&ip))
                }))
    }

    fn unreachable(&self, ip: Option<IpAddr>, e: &Error) -> Decision {
        match self.policy.failmode {
            FailMode::Safe if self.fail_open_allowed(ip) => Decision::grant(
                Event::FailOpen,
                format!("FAIL-OPEN: failmode safe and Duo could not be asked: {e}"),
            ),
            FailMode::Safe => Decision::deny(
                Event::DuoUnreachable,
                format!(
                    "Duo could not be asked and failmode safe does not cover this client address: {e}"
                ),
            ),
            FailMode::Secure => Decision::deny(
                Event::DuoUnreachable,
                format!("failmode secure and Duo could not be asked: {e}"),
            ),
        }
    }
}

/// The phone shows these key/value pairs (URL-encoded, as Duo wants `pushinfo`).
pub(crate) fn pushinfo(host: &str, uri: &str) -> String {
    use duo_auth::sign::encode;
    let mut pairs = Vec::new();
    if !host.is_empty() {
        pairs.push(format!("host={}", encode(host)));
    }
    if !uri.is_empty() {
        pairs.push(format!("path={}", encode(uri)));
    }
    let info = pairs.join("&");
    // Duo caps pushinfo under 20,000 bytes; a path that long is not worth showing whole.
    if info.len() > 4000 {
        info.chars().take(4000).collect()
    } else {
        info
    }
}

/// The device Duo's `auto` picks for `capability`: the first one that has it.
fn first_with<'d>(devices: &'d [Device], capability: &str) -> Option<&'d Device> {
    devices
        .iter()
        .find(|d| d.capabilities.iter().any(|c| c == capability))
}

fn device_name(d: &Device) -> String {
    if d.display_name.is_empty() {
        d.device.clone()
    } else {
        d.display_name.clone()
    }
}

/// Preauth, then the factor the user asked for, by `deadline_ms` (Unix milliseconds).
pub(crate) fn start(
    duo: &Duo<'_>,
    req: &Request,
    requested: &Requested,
    deadline_ms: i64,
) -> Started {
    let deadline = duo.instant(deadline_ms);
    let ip = req.addr();
    let ipaddr = ip.map(|ip| ip.to_string());

    // Verified Push only for a push: a call or a passcode has no code to type.
    let verified =
        duo.policy.verified_push && matches!(requested, Requested::Default | Requested::Push);
    let mut preauth_txid = None;
    let pre = duo.with_backoff(deadline, || {
        if verified {
            duo.api
                .preauth_verified(&req.user, ipaddr.as_deref(), deadline)
                .map(|(p, txid)| {
                    preauth_txid = txid;
                    p
                })
        } else {
            duo.api.preauth(&req.user, ipaddr.as_deref(), deadline)
        }
    });
    let devices = match pre {
        Ok(Preauth::Auth { devices }) => devices,
        Ok(Preauth::Allow { status_msg }) => {
            return Started::Done(Decision::grant(
                Event::PreauthAllow,
                format!("Duo preauth allow ({status_msg})"),
            ))
        }
        Ok(Preauth::Deny { status_msg }) => {
            return Started::Done(Decision::deny(
                Event::PreauthDeny,
                format!("Duo preauth deny ({status_msg})"),
            ))
        }
        Ok(Preauth::Enroll {
            enroll_portal_url, ..
        }) => {
            let mut d = Decision::deny(
                Event::NotEnrolled,
                "user not enrolled in Duo (preauth enroll)",
            );
            // Only a web link is a link to offer.
            d.link = Some(enroll_portal_url).filter(|u| u.starts_with("https://"));
            return Started::Done(d);
        }
        Err(e) if e.may_fail_open() => return Started::Done(duo.unreachable(ip, &e)),
        // Duo could not be asked, but for a reason a man in the middle could cause (a 401, a
        // certificate that does not verify, an answer that is not Duo's): never fail open.
        Err(e) if e.is_unreachable() => {
            return Started::Done(Decision::deny(
                Event::DuoUnreachable,
                format!("Duo could not be asked, and failmode never opens on this: {e}"),
            ))
        }
        Err(e) => {
            return Started::Done(Decision::deny(
                Event::DuoError,
                format!("Duo preauth failed: {e}"),
            ))
        }
    };
    let (factor, device) = match requested {
        Requested::Default | Requested::Push => match first_with(&devices, "push") {
            Some(d) => (
                Factor::Push {
                    device: "auto".into(),
                    pushinfo: pushinfo(&req.host, &req.uri),
                },
                Some(device_name(d)),
            ),
            None => {
                return Started::Done(Decision::deny(
                    Event::NotEnrolled,
                    "no Duo device of the user can receive a push",
                ))
            }
        },
        Requested::Phone => match first_with(&devices, "phone") {
            Some(d) => (
                Factor::Phone {
                    device: "auto".into(),
                },
                Some(device_name(d)),
            ),
            None => {
                return Started::Done(Decision::deny(
                    Event::NotEnrolled,
                    "no Duo device of the user takes calls",
                ))
            }
        },
        Requested::Sms => (
            Factor::Sms {
                device: "auto".into(),
            },
            None,
        ),
        Requested::Passcode(code) => (Factor::Passcode(code.clone()), None),
    };
    let call = matches!(factor, Factor::Phone { .. });
    let interactive = matches!(factor, Factor::Push { .. } | Factor::Phone { .. });
    let auth = AuthRequest {
        username: req.user.clone(),
        factor,
        ipaddr,
        // Passcodes and SMS answer at once; pushes and calls are polled.
        asynchronous: interactive,
    };
    let sent = duo.with_backoff(deadline, || match &preauth_txid {
        Some(txid) => duo.api.auth_verified(&auth, Some(txid), deadline),
        None => duo.api.auth(&auth, deadline),
    });
    match sent {
        Ok(AuthStart::Txid(txid)) => Started::Sent { txid, call, device },
        Ok(AuthStart::Done(s)) => Started::Done(answered(&auth.factor, s)),
        Err(e) => Started::Done(Decision::deny(
            Event::DuoError,
            format!("Duo push could not be sent: {e}"),
        )),
    }
}

/// A synchronous `auth` answer.
fn answered(factor: &Factor, s: AuthStatus) -> Decision {
    match (factor, s.result) {
        (Factor::Passcode(_), AuthResult::Allow) => {
            Decision::grant(Event::PasscodeApproved, "Duo passcode accepted")
        }
        (Factor::Passcode(_), _) => Decision::deny(
            Event::PasscodeDenied,
            format!("Duo passcode refused ({}: {})", s.status, s.status_msg),
        ),
        (Factor::Sms { .. }, _) => Decision::deny(
            Event::SmsSent,
            "SMS passcodes sent: sign in again with one of them",
        ),
        (_, AuthResult::Allow) => Decision::grant(Event::PushApproved, "push approved").pushed(),
        _ => Decision::deny(
            Event::PushDenied,
            format!("push {} ({})", s.status, s.status_msg),
        )
        .pushed(),
    }
}

/// Ask Duo about `txid` once (Duo holds the call until the answer or the deadline): the
/// decision, or `None` while the push is still waiting and the deadline has not passed.
/// What one poll of a push found.
pub(crate) enum Polled {
    Done(Decision),
    /// Not answered yet; the code of a Verified Push, when Duo gave one.
    Waiting(Option<String>),
}

pub(crate) fn poll(duo: &Duo<'_>, txid: &str, deadline_ms: i64) -> Polled {
    let deadline = duo.instant(deadline_ms);
    let timeout =
        || Decision::deny(Event::PushTimeout, "push not answered before the deadline").pushed();
    match duo.with_backoff(deadline, || duo.api.auth_status(txid, deadline)) {
        Ok(s) => match s.result {
            AuthResult::Allow => Polled::Done(
                Decision::grant(Event::PushApproved, format!("push approved ({})", s.status))
                    .pushed(),
            ),
            AuthResult::Deny => {
                let event = if s.status == "timeout" {
                    Event::PushTimeout
                } else {
                    Event::PushDenied
                };
                Polled::Done(
                    Decision::deny(
                        event,
                        format!("push denied ({}: {})", s.status, s.status_msg),
                    )
                    .pushed(),
                )
            }
            AuthResult::Waiting if duo.clock.unix_ms() >= deadline_ms => Polled::Done(timeout()),
            AuthResult::Waiting => Polled::Waiting(s.verification_code()),
        },
        Err(Error::Timeout) => Polled::Done(timeout()),
        Err(e) => Polled::Done(
            Decision::deny(Event::DuoError, format!("Duo push status failed: {e}")).pushed(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::pushinfo;

    #[test]
    fn pushinfo_shows_host_and_path() {
        assert_eq!(
            pushinfo("app.example.org", "/private/a b"),
            "host=app.example.org&path=%2Fprivate%2Fa%20b"
        );
        assert_eq!(pushinfo("", ""), "");
        assert!(pushinfo("h", &"x".repeat(10_000)).len() <= 4000);
    }
}
