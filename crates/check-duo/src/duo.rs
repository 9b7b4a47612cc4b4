//! The second factor through Duo: `preauth`, then a push (`auth`, async) and `auth_status`
//! until an answer or the deadline. 429 backs off and honours `Retry-After`. The failmode applies
//! only when preauth cannot be completed, as in Duo's own tools; later failures always deny.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use duo_auth::types::{AuthRequest, AuthResult, AuthStart, Factor, Preauth};
use duo_auth::{Client, ClientConfig, Error};

use crate::config::{DuoConfig, FailMode};
use crate::factor::Requested;
use crate::log::{Decision, Event};

/// Where the push was asked from, shown on the phone.
pub struct PushContext<'a> {
    pub user: &'a str,
    pub ip: &'a str,
    pub host: &'a str,
    pub uri: &'a str,
}

/// Waiting, injected so tests need not sleep.
pub trait Pause {
    fn pause(&self, d: Duration);
}

/// Real sleeping.
pub struct Sleep;

impl Pause for Sleep {
    fn pause(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

pub fn client(cfg: &DuoConfig) -> Result<Client, Error> {
    Client::new(ClientConfig {
        ikey: cfg.ikey.clone(),
        skey: cfg.skey.clone(),
        host: cfg.host.clone(),
        extra_ca_pem: cfg.ca_pem.clone(),
        call_timeout: cfg.call_timeout,
        sig_version: cfg.sig_version,
    })
}

/// Run `call`, retrying on 429 with exponential back-off (1, 2, 4 … s, plus up to 250 ms of
/// jitter) or Duo's `Retry-After` if longer, as long as the deadline allows.
fn with_backoff<T>(
    deadline: Instant,
    pause: &dyn Pause,
    mut call: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match call() {
            Err(Error::RateLimited { retry_after }) => {
                let wait = retry_after.unwrap_or_default().max(backoff) + jitter();
                if Instant::now() + wait >= deadline {
                    return Err(Error::RateLimited { retry_after });
                }
                pause.pause(wait);
                backoff = (backoff * 2).min(Duration::from_secs(32));
            }
            other => return other,
        }
    }
}

fn jitter() -> Duration {
    let mut b = [0u8; 2];
    let n = getrandom::fill(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(0);
    Duration::from_millis(u64::from(n % 250))
}

/// The phone shows these key/value pairs (URL-encoded, as Duo wants `pushinfo`).
fn pushinfo(ctx: &PushContext<'_>) -> String {
    use duo_auth::sign::encode;
    let mut pairs = Vec::new();
    if !ctx.host.is_empty() {
        pairs.push(format!("host={}", encode(ctx.host)));
    }
    if !ctx.uri.is_empty() {
        pairs.push(format!("path={}", encode(ctx.uri)));
    }
    let info = pairs.join("&");
    // Duo caps pushinfo under 20,000 bytes; a path that long is not worth showing whole.
    if info.len() > 4000 {
        info.chars().take(4000).collect()
    } else {
        info
    }
}

/// A decision taken after a push went out.
fn pushed(mut d: Decision) -> Decision {
    d.pushes = 1;
    d
}

/// Whether `failmode: safe` covers this client (all clients when no networks are listed).
fn fail_open_allowed(cfg: &DuoConfig, ip: Option<IpAddr>) -> bool {
    cfg.failmode == FailMode::Safe
        && (cfg.failmode_networks.is_empty()
            || ip.is_some_and(|ip| cfg.failmode_networks.iter().any(|n| n.contains(&ip))))
}

/// Ask Duo for the second factor of `ctx.user` (the factor the user asked for), within
/// `deadline`.
pub fn second_factor(
    client: &Client,
    cfg: &DuoConfig,
    ctx: &PushContext<'_>,
    requested: &Requested,
    deadline: Instant,
    pause: &dyn Pause,
) -> Decision {
    let ip = ctx.ip.parse::<IpAddr>().ok();
    let ipaddr = ip.map(|ip| ip.to_string());

    let pre = with_backoff(deadline, pause, || {
        client.preauth(ctx.user, ipaddr.as_deref(), deadline)
    });
    let devices = match pre {
        Ok(Preauth::Auth { devices }) => devices,
        Ok(Preauth::Allow { status_msg }) => {
            return Decision::grant(
                Event::PreauthAllow,
                format!("Duo preauth allow ({status_msg})"),
            )
        }
        Ok(Preauth::Deny { status_msg }) => {
            return Decision::deny(
                Event::PreauthDeny,
                format!("Duo preauth deny ({status_msg})"),
            )
        }
        Ok(Preauth::Enroll { .. }) => {
            return Decision::deny(
                Event::NotEnrolled,
                "user not enrolled in Duo (preauth enroll)",
            )
        }
        Err(e) if e.is_unreachable() => {
            return match cfg.failmode {
                FailMode::Safe if fail_open_allowed(cfg, ip) => Decision::grant(
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
        Err(e) => return Decision::deny(Event::DuoError, format!("Duo preauth failed: {e}")),
    };
    let capable = |cap: &str| {
        devices
            .iter()
            .any(|d| d.capabilities.iter().any(|c| c == cap))
    };
    let factor = match requested {
        Requested::Default | Requested::Push if capable("push") => Factor::Push {
            device: "auto".into(),
            pushinfo: pushinfo(ctx),
        },
        Requested::Default | Requested::Push => {
            return Decision::deny(
                Event::NotEnrolled,
                "no Duo device of the user can receive a push",
            )
        }
        Requested::Phone if capable("phone") => Factor::Phone {
            device: "auto".into(),
        },
        Requested::Phone => {
            return Decision::deny(Event::NotEnrolled, "no Duo device of the user takes calls")
        }
        Requested::Sms => Factor::Sms {
            device: "auto".into(),
        },
        Requested::Passcode(code) => Factor::Passcode(code.clone()),
    };
    let interactive = matches!(factor, Factor::Push { .. } | Factor::Phone { .. });

    let req = AuthRequest {
        username: ctx.user.to_string(),
        factor,
        ipaddr,
        // Passcodes and SMS answer at once; pushes and calls are polled.
        asynchronous: interactive,
    };
    let txid = match with_backoff(deadline, pause, || client.auth(&req, deadline)) {
        Ok(AuthStart::Txid(t)) => t,
        Ok(AuthStart::Done(s)) => {
            return match (&req.factor, s.result) {
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
                (_, AuthResult::Allow) => {
                    pushed(Decision::grant(Event::PushApproved, "push approved"))
                }
                _ => pushed(Decision::deny(
                    Event::PushDenied,
                    format!("push {} ({})", s.status, s.status_msg),
                )),
            };
        }
        Err(e) => {
            return Decision::deny(Event::DuoError, format!("Duo push could not be sent: {e}"))
        }
    };

    loop {
        match with_backoff(deadline, pause, || client.auth_status(&txid, deadline)) {
            Ok(s) => match s.result {
                AuthResult::Allow => {
                    return pushed(Decision::grant(
                        Event::PushApproved,
                        format!("push approved ({})", s.status),
                    ))
                }
                AuthResult::Deny => {
                    let event = if s.status == "timeout" {
                        Event::PushTimeout
                    } else {
                        Event::PushDenied
                    };
                    return pushed(Decision::deny(
                        event,
                        format!("push denied ({}: {})", s.status, s.status_msg),
                    ));
                }
                AuthResult::Waiting => {
                    if Instant::now() >= deadline {
                        return pushed(Decision::deny(
                            Event::PushTimeout,
                            "push not answered before the deadline",
                        ));
                    }
                    // Duo long-polls; a short pause guards against a server that does not.
                    pause.pause(Duration::from_millis(200));
                }
            },
            Err(Error::Timeout) => {
                return pushed(Decision::deny(
                    Event::PushTimeout,
                    "push not answered before the deadline",
                ))
            }
            Err(e) => {
                return pushed(Decision::deny(
                    Event::DuoError,
                    format!("Duo push status failed: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Recorded(RefCell<Vec<Duration>>);

    impl Pause for Recorded {
        fn pause(&self, d: Duration) {
            self.0.borrow_mut().push(d);
        }
    }

    #[test]
    fn backoff_honours_retry_after_then_succeeds() {
        let pauses = Recorded(RefCell::new(Vec::new()));
        let mut n = 0;
        let r = with_backoff(Instant::now() + Duration::from_secs(60), &pauses, || {
            n += 1;
            if n < 3 {
                Err(Error::RateLimited {
                    retry_after: Some(Duration::from_secs(3)),
                })
            } else {
                Ok(n)
            }
        });
        assert_eq!(r, Ok(3));
        let p = pauses.0.borrow();
        assert_eq!(p.len(), 2);
        assert!(p[0] >= Duration::from_secs(3) && p[0] < Duration::from_millis(3250));
        assert!(p[1] >= Duration::from_secs(3));
    }

    #[test]
    fn backoff_gives_up_at_the_deadline() {
        let pauses = Recorded(RefCell::new(Vec::new()));
        let r: Result<(), Error> =
            with_backoff(Instant::now() + Duration::from_secs(2), &pauses, || {
                Err(Error::RateLimited {
                    retry_after: Some(Duration::from_secs(5)),
                })
            });
        assert!(matches!(r, Err(Error::RateLimited { .. })));
        assert!(pauses.0.borrow().is_empty());
    }

    #[test]
    fn pushinfo_shows_host_and_path() {
        let ctx = PushContext {
            user: "alice",
            ip: "10.0.0.1",
            host: "app.example.org",
            uri: "/private/a b",
        };
        assert_eq!(
            pushinfo(&ctx),
            "host=app.example.org&path=%2Fprivate%2Fa%20b"
        );
    }
}
