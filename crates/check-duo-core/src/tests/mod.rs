//! In-process tests of every rule: the real gate with the in-memory store, the manual clock and
//! the scripted Duo. No test sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bans;
mod directory;
mod factors;
mod failmode;
mod hardening;
mod passwords;
mod pushes;
mod sessions;
mod support;
mod tokens;
