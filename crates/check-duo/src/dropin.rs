//! The drop-in mode: what mod_authnz_external runs for every protected request. Reads the
//! request, asks the core, writes one line on stderr (and, when configured, one audit record),
//! and says whether to grant. Benchmarked: nothing here may cost anything the decision does not
//! need.

use std::path::Path;
use std::time::Instant;

use check_duo_core::finish::{self, About};
use check_duo_core::ports::AuditSink;
use check_duo_core::{Decision, Event, Gate};

use crate::audit;
use crate::config::Config;
use crate::duo::LazyDuo;
use crate::input::{self, Context, PipeRequest, Protocol, VARIABLES};
use crate::system::{Sleep, SystemClock};

/// Only the variables mod_authnz_external documents; nothing else from the environment.
pub fn var(name: &str) -> Option<String> {
    if VARIABLES.contains(&name) {
        std::env::var(name).ok()
    } else {
        None
    }
}

/// Decide one request; true grants. `started` is when the process started.
pub fn run(config: &Path, protocol: Protocol, started: Instant) -> bool {
    let req = match input::read(protocol, std::io::stdin().lock(), &var) {
        Ok(r) => r,
        Err(e) => {
            let d = Decision::deny(Event::BadInput, format!("bad input: {e}"));
            let ip = var("IP").unwrap_or_default();
            let host = var("HTTP_HOST").unwrap_or_default();
            let uri = var("URI").unwrap_or_default();
            let about = About {
                user: "",
                ip: &ip,
                host: &host,
                uri: &uri,
                context: "-",
            };
            write_line(&about.record(&d, started.elapsed()).to_string());
            return false;
        }
    };
    let loaded = crate::privilege::check_config_path(config)
        .map_err(|reason| Decision::deny(Event::ConfigError, reason))
        .and_then(|()| {
            // Only what this request needs: the user's entry, not every user's.
            Config::load_user(config, &req.user)
                .map_err(|e| Decision::deny(Event::ConfigError, e.to_string()))
        });
    let about = About {
        user: &req.user,
        ip: &req.ip,
        host: &req.host,
        uri: &req.uri,
        context: req.context_str(),
    };
    let decision = match &loaded {
        Ok(cfg) => {
            let d = decide(cfg, &req);
            let sinks = cfg.audit.as_ref().map(audit::Sinks);
            let audit = sinks
                .as_ref()
                .map(|s| (s as &dyn AuditSink, cfg.policy.audit_required));
            finish::finish(d, audit, &about, started.elapsed())
        }
        Err(deny) => deny.clone(),
    };
    write_line(&about.record(&decision, started.elapsed()).to_string());
    decision.granted()
}

/// The decision for one request of the pipe: the login form's password, a logout, or a
/// protected request (its session, else the password and a second factor, to the end).
fn decide(cfg: &Config, input: &PipeRequest) -> Decision {
    let req = input.to_core(&cfg.session_name);
    if input.context == Context::Request && req.session.is_none() {
        return Decision::deny(
            Event::NoCookie,
            format!("no session cookie {:?}", cfg.session_name),
        );
    }
    if input.context == Context::Logout && req.session.is_none() {
        return Decision::deny(Event::Logout, "logout: no session cookie");
    }
    let store = match check_duo_store::open(&cfg.cache) {
        Ok(s) => s,
        Err(e) => {
            let what = if input.context == Context::Logout {
                "logout: session store unavailable"
            } else {
                "session store unavailable"
            };
            return Decision::deny(Event::StoreError, format!("{what}: {e}"));
        }
    };
    let duo = LazyDuo::new(&cfg.duo);
    // Connects on the first check that needs it only (a cached session needs none).
    let directory = cfg
        .ldap
        .clone()
        .map(|l| crate::ldap::LdapDirectory::new(l, false));
    let gate = Gate {
        policy: &cfg.policy,
        store: &*store,
        duo: &duo,
        clock: &SystemClock,
        wait: &Sleep,
        directory: directory
            .as_ref()
            .map(|d| d as &dyn check_duo_core::ports::Directory),
    };
    match input.context {
        Context::Login => gate.check_password(&req),
        Context::Logout => gate.logout(&req),
        Context::Request => gate.drive(&req),
    }
}

fn write_line(line: &str) {
    // One write, so that lines of concurrent processes never interleave in Apache's log.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("{line}\n").as_bytes(),
    );
}
