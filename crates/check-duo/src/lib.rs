//! check-duo: a two-factor gate for Apache's `mod_authnz_external`.
//!
//! The decision core ([`gate`]) knows nothing of Apache: the pipe front-end ([`input`]) turns
//! stdin and the documented environment variables into a [`input::Request`], the core answers
//! with a [`log::Decision`], and `main` turns that into an exit status and one log line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod cookie;
pub mod dropin;
pub mod duo;
pub mod factor;
pub mod gate;
pub mod input;
pub mod limits;
pub mod log;
pub mod password;
pub mod privilege;
pub mod session;
pub mod store;
pub mod totp;
