//! The drop-in mode: what mod_authnz_external runs for every protected request. Reads the
//! request, decides, writes one line on stderr (and, when configured, one audit record), and
//! says whether to grant. Benchmarked: nothing here may cost anything the decision does not need.

use std::path::Path;
use std::time::Instant;

use crate::audit;
use crate::config::Config;
use crate::duo::Sleep;
use crate::gate::{self, SystemClock};
use crate::input::{self, Context, Protocol, VARIABLES};
use crate::log::{Decision, Event, Line, Outcome};

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
            report(&line("", &ip, &host, &uri, None, &d, started));
            return false;
        }
    };
    let loaded = crate::privilege::check_config_path(config)
        .map_err(|reason| Decision::deny(Event::ConfigError, reason))
        .and_then(|()| {
            Config::load(config).map_err(|e| Decision::deny(Event::ConfigError, e.to_string()))
        });
    let (mut decision, audit) = match loaded {
        Ok(cfg) => (
            gate::decide(&cfg, &req, &SystemClock, &Sleep),
            cfg.audit.clone(),
        ),
        Err(deny) => (deny, None),
    };
    let ctx = Some(&req.context);
    if let Some(audit) = &audit {
        let record = line(
            &req.user, &req.ip, &req.host, &req.uri, ctx, &decision, started,
        );
        if let Err(e) = audit::write(audit, &record) {
            // Never turns a deny into a grant; denies a grant only when the audit is required.
            if audit.required && decision.outcome == Outcome::Grant {
                decision.outcome = Outcome::Deny;
                decision.reason = format!(
                    "{} (denied: audit.required and the record was not written: {e})",
                    decision.reason
                );
            } else {
                decision.reason = format!("{} (audit record not written: {e})", decision.reason);
            }
        }
    }
    report(&line(
        &req.user, &req.ip, &req.host, &req.uri, ctx, &decision, started,
    ));
    decision.granted()
}

fn line<'a>(
    user: &'a str,
    ip: &'a str,
    host: &'a str,
    uri: &'a str,
    context: Option<&'a Context>,
    decision: &'a Decision,
    started: Instant,
) -> Line<'a> {
    Line {
        user,
        ip,
        host,
        uri,
        context,
        decision,
        duration: started.elapsed(),
    }
}

fn report(line: &Line<'_>) {
    // One write, so that lines of concurrent processes never interleave in Apache's log.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("{line}\n").as_bytes(),
    );
}
