//! check-duo: a two-factor gate for Apache's `mod_authnz_external`.
//!
//! The rules live in `check_duo_core`; the stores in `check_duo_store`. This crate is the
//! binary around them: the configuration file ([`config`], seed JSON → the core's policy), the
//! pipe front-end ([`input`] → [`dropin`]), the real ports ([`duo`], [`system`], [`audit`]), and
//! the admin commands.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod cookie;
pub mod dropin;
pub mod duo;
pub mod htpasswd;
pub mod input;
pub mod ldap;
pub mod one_user;
pub mod password;
pub mod privilege;
pub mod serve;
pub mod system;

pub use check_duo_core::{factor, totp};
/// The session stores (the embedded one and Redis).
pub use check_duo_store as store;
