//! A client for the Duo Auth API v2.
//!
//! * [`sign`] holds request signing as pure functions (no clock, no I/O), tested against
//!   vectors computed with Duo's official client.
//! * [`client`] is the transport: a blocking HTTPS client whose every call has a deadline and
//!   whose errors are named for the decision they drive ([`Error`]).
//! * [`types`] holds the typed requests and answers.
//! * `universal` (feature `universal`) builds and checks the JWTs of Duo's Universal Prompt
//!   (OIDC) as pure functions; `universal_client` (with `client`) makes its HTTPS calls.
//!
//! Without the default feature `client` the crate has no transport and no TLS: signing, types
//! and errors only.
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod secret;
pub mod sign;
pub mod types;
#[cfg(feature = "universal")]
pub mod universal;
#[cfg(all(feature = "client", feature = "universal"))]
pub mod universal_client;

#[cfg(feature = "client")]
pub use client::{Client, ClientConfig};
pub use error::Error;
pub use secret::Secret;
pub use sign::SigVersion;
#[cfg(all(feature = "client", feature = "universal"))]
pub use universal_client::{UniversalClient, UniversalConfig};
