//! check-duo's decision core: the rules every front-end shares, and nothing else.
//!
//! A front-end (the mod_authnz_external pipe today, a long-running server next) turns what it
//! receives into a [`Request`], asks a [`Gate`] built from a [`Policy`] and the [`ports`] it
//! implements (the session store, Duo, the clock, waiting), acts on the [`Decision`] (grant,
//! deny, or pending with what to show), and hands it to [`finish`] for the audit record and the
//! log line. The core reads no environment, file, socket or clock of its own and never sleeps:
//! all of that comes through the ports, so every rule runs in-process under test.
#![forbid(unsafe_code)]

pub mod decision;
mod duo;
pub mod factor;
pub mod finish;
pub mod gate;
pub mod keys;
pub mod limits;
pub mod password;
pub mod policy;
pub mod ports;
pub mod request;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod totp;

#[cfg(test)]
mod tests;

pub use decision::{Decision, Effect, Event, Outcome, Pending, PendingKind};
pub use duo_auth::Secret;
pub use gate::Gate;
pub use policy::{FactorPolicy, FailMode, Limits, Policy, SessionPolicy};
pub use request::Request;
