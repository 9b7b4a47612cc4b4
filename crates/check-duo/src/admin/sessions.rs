//! `check-duo sessions list|revoke`: the cached approvals, on Redis or the embedded store.
//! Never prints a store key: it is the handle of a live session.

use std::path::Path;

use crate::admin::{load, now, open_existing_store, store_name};
use crate::audit::rfc3339_secs;
use crate::store::SessionInfo;

fn time(t: i64) -> String {
    if t >= 253_402_300_800 {
        // Year 10000 and later: the store has no expiry for it.
        "never".into()
    } else {
        format!("{}Z", rfc3339_secs(t))
    }
}

/// The table (or JSON lines) `sessions list` prints.
pub fn render(sessions: &[SessionInfo], json: bool) -> String {
    let mut out = String::new();
    if json {
        for s in sessions {
            let v = serde_json::json!({
                "user": s.user, "ip": s.ip, "factor": s.factor,
                "approved_at": time(s.approved_at), "expires_at": time(s.expires_at),
            });
            out.push_str(&v.to_string());
            out.push('\n');
        }
        return out;
    }
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|s| {
            [
                // Debug-quoted when odd, so a user name cannot forge table rows.
                if s.user.chars().all(|c| c.is_ascii_graphic()) {
                    s.user.clone()
                } else {
                    format!("{:?}", s.user)
                },
                if s.ip.is_empty() {
                    "-".into()
                } else {
                    s.ip.clone()
                },
                if s.factor.is_empty() {
                    "-".into()
                } else {
                    s.factor.clone()
                },
                time(s.approved_at),
                time(s.expires_at),
            ]
        })
        .collect();
    let head = ["USER", "IP", "FACTOR", "APPROVED AT", "EXPIRES AT"].map(String::from);
    let mut width = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn list(config: &Path, user: Option<&str>, json: bool) -> u8 {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut sessions = match open_existing_store(&cfg) {
        Ok(None) => Vec::new(),
        Ok(Some(s)) => match s.list(now()) {
            Ok(l) => l,
            Err(e) => return fail(&format!("{}: {e}", store_name(&cfg.cache))),
        },
        Err(e) => return fail(&e),
    };
    if let Some(u) = user {
        sessions.retain(|s| s.user == u);
    }
    print!("{}", render(&sessions, json));
    0
}

pub fn revoke(config: &Path, user: Option<&str>, all: bool) -> u8 {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let name = store_name(&cfg.cache);
    let n = match open_existing_store(&cfg) {
        Ok(None) => 0,
        Ok(Some(s)) => {
            let r = match (user, all) {
                (Some(u), _) => s.revoke_user(u, now()),
                (None, true) => s.revoke_all(now()),
                (None, false) => return fail("give --user NAME or --all"),
            };
            match r {
                Ok(n) => n,
                Err(e) => return fail(&format!("{name}: {e}")),
            }
        }
        Err(e) => return fail(&e),
    };
    match user {
        Some(u) => println!("{name}: ended {n} session(s) of {u:?}"),
        None => println!("{name}: ended {n} session(s)"),
    }
    0
}

fn fail(msg: &str) -> u8 {
    eprintln!("check-duo sessions: {msg}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let s = vec![SessionInfo {
            user: "joe".into(),
            ip: "192.0.2.7".into(),
            approved_at: 0,
            factor: "push".into(),
            expires_at: 14_400,
        }];
        let t = render(&s, false);
        assert_eq!(
            t,
            "USER  IP         FACTOR  APPROVED AT           EXPIRES AT\n\
             joe   192.0.2.7  push    1970-01-01T00:00:00Z  1970-01-01T04:00:00Z\n"
        );
        let j = render(&s, true);
        assert!(j.contains("\"expires_at\":\"1970-01-01T04:00:00Z\""), "{j}");
        assert!(j.contains("\"factor\":\"push\""), "{j}");
        let odd = vec![SessionInfo {
            user: "eve\nroot".into(),
            ip: String::new(),
            approved_at: 0,
            factor: String::new(),
            expires_at: i64::MAX,
        }];
        let t = render(&odd, false);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("\"eve\\nroot\"") && t.contains("never"), "{t}");
    }
}
