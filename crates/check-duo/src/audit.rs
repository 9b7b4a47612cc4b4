//! The optional audit log: one JSON object per decision, besides the stderr line for Apache.
//!
//! Sinks: a file (appended with `O_APPEND` and one `write(2)` per record, so the records of
//! concurrent processes never interleave) and/or syslog (one datagram to `/dev/log`, which rsyslog
//! and journald both read; facility `authpriv`). Nothing is opened unless the configuration has
//! an `audit` key, so the drop-in path costs nothing more without it.
//!
//! A record holds time, event, outcome, user, ip, host, uri, context, reason, duration_ms and
//! pushes; never the password, the cookie, a store key or the skey.
//!
//! Failure policy: a record that cannot be written never turns a deny into a grant and never
//! crashes the program. By default the decision stands and the failure is appended to the
//! stderr line (Apache's ErrorLog, which always records the decision anyway). With
//! `"required": true` a grant whose record could not be written becomes a deny (fail closed).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use check_duo_core::finish::Record;
use check_duo_core::ports::AuditSink;
use check_duo_core::{Decision, Event, Outcome};

/// Where syslog listens on Linux (journald's socket is linked there too).
pub const DEV_LOG: &str = "/dev/log";

/// `audit` in the configuration, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    file: Option<PathBuf>,
    syslog: Option<RawSyslog>,
    required: Option<bool>,
}

/// `"syslog": true` (`/dev/log`) or `"syslog": "/path/to/socket"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSyslog {
    On(bool),
    Socket(PathBuf),
}

/// The checked `audit` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// A JSON-lines file, appended to.
    pub file: Option<PathBuf>,
    /// A syslog datagram socket.
    pub syslog: Option<PathBuf>,
    /// Deny a grant whose record could not be written.
    pub required: bool,
}

impl AuditConfig {
    /// Check the raw `audit` section; an error is (key, message).
    pub fn from_raw(raw: &RawAudit) -> Result<AuditConfig, (&'static str, String)> {
        if let Some(f) = &raw.file {
            if !f.is_absolute() {
                return Err(("audit.file", "must be an absolute path".into()));
            }
        }
        let syslog = match &raw.syslog {
            None | Some(RawSyslog::On(false)) => None,
            Some(RawSyslog::On(true)) => Some(PathBuf::from(DEV_LOG)),
            Some(RawSyslog::Socket(p)) if p.is_absolute() => Some(p.clone()),
            Some(RawSyslog::Socket(_)) => {
                return Err((
                    "audit.syslog",
                    "true, false, or the absolute path of a syslog socket".into(),
                ))
            }
        };
        if raw.file.is_none() && syslog.is_none() {
            return Err((
                "audit",
                "names no sink: set `file` (a path) and/or `syslog` (true)".into(),
            ));
        }
        Ok(AuditConfig {
            file: raw.file.clone(),
            syslog,
            required: raw.required.unwrap_or(false),
        })
    }
}

fn outcome_str(o: &Outcome) -> &'static str {
    match o {
        Outcome::Grant => "grant",
        Outcome::Deny => "deny",
        Outcome::Pending(_) => "pending",
    }
}

/// The sinks of one configuration, as the core's finish step writes to them.
pub struct Sinks<'a>(pub &'a AuditConfig);

impl AuditSink for Sinks<'_> {
    fn write(&self, record: &Record<'_>) -> Result<(), String> {
        write(self.0, record)
    }
}

/// The JSON record of one decision (no trailing newline).
pub fn record(line: &Record<'_>, at: SystemTime) -> String {
    let d: &Decision = line.decision;
    serde_json::json!({
        "time": rfc3339(at),
        "event": d.event.as_str(),
        "outcome": outcome_str(&d.outcome),
        "user": line.about.user,
        "ip": line.about.ip,
        "host": line.about.host,
        "uri": line.about.uri,
        "context": (line.about.context != "-").then_some(line.about.context),
        "reason": d.reason,
        "duration_ms": u64::try_from(line.duration.as_millis()).unwrap_or(u64::MAX),
        "pushes": d.pushes,
    })
    .to_string()
}

/// Write the record of `line` to every configured sink. The error names each sink that failed.
pub fn write(cfg: &AuditConfig, line: &Record<'_>) -> Result<(), String> {
    let rec = record(line, SystemTime::now());
    let mut errors = Vec::new();
    if let Some(path) = &cfg.file {
        if let Err(e) = append(path, &rec) {
            errors.push(format!("audit file {}: {e}", path.display()));
        }
    }
    if let Some(socket) = &cfg.syslog {
        let severity = if line.decision.event == Event::FailOpen {
            4 // warning
        } else {
            6 // info
        };
        if let Err(e) = syslog(socket, severity, &rec) {
            errors.push(format!("audit syslog {}: {e}", socket.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Append one line with a single `write(2)` on an `O_APPEND` descriptor: atomic with respect to
/// other appenders. A short write (a full disk) is an error, never a second write.
fn append(path: &Path, rec: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(rec.len() + 1);
    buf.extend_from_slice(rec.as_bytes());
    buf.push(b'\n');
    // With the setgid install the file's group is check-duo (setgid directory); 0660 whatever
    // the umask, so that every check-duo process may append, whoever created the file.
    let mut f = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o660)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(std::fs::Permissions::from_mode(0o660))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    let n = f.write(&buf)?;
    if n != buf.len() {
        return Err(std::io::Error::other(format!(
            "short write ({n} of {} bytes)",
            buf.len()
        )));
    }
    Ok(())
}

/// One RFC 3164-style datagram, as glibc's syslog(3) sends it but without the local timestamp
/// (rsyslog and journald stamp what they receive): `<PRI>check-duo[PID]: MESSAGE`.
fn syslog(socket: &Path, severity: u8, rec: &str) -> std::io::Result<()> {
    const AUTHPRIV: u8 = 10;
    let msg = format!(
        "<{}>check-duo[{}]: {rec}",
        u16::from(AUTHPRIV) * 8 + u16::from(severity),
        std::process::id()
    );
    let sock = UnixDatagram::unbound()?;
    // A wedged syslog daemon must not hold an Apache worker.
    sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    sock.send_to(msg.as_bytes(), socket)?;
    Ok(())
}

/// `2026-11-28T00:55:34.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    format!("{}.{:03}Z", rfc3339_secs(secs), d.subsec_millis())
}

/// `2026-11-28T00:55:34` for Unix seconds (UTC, no suffix).
pub fn rfc3339_secs(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(d: &'a Decision, user: &'a str) -> Record<'a> {
        let about = check_duo_core::finish::About {
            user,
            ip: "192.0.2.7",
            host: "app.example.org",
            uri: "/private/",
            context: "request",
        };
        about.record(d, Duration::from_millis(42))
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00");
        assert_eq!(rfc3339_secs(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(rfc3339_secs(1_798_072_534), "2026-12-24T00:35:34");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01.500Z"
        );
    }

    #[test]
    fn record_fields() {
        let mut d = Decision::grant(Event::PushApproved, "push approved (allow)");
        d.pushes = 1;
        let rec = record(
            &line(&d, "eve\"\n"),
            UNIX_EPOCH + Duration::from_secs(1_798_072_534),
        );
        assert!(!rec.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&rec).unwrap();
        assert_eq!(v["time"], "2026-12-24T00:35:34.000Z");
        assert_eq!(v["event"], "push_approved");
        assert_eq!(v["outcome"], "grant");
        assert_eq!(v["user"], "eve\"\n");
        assert_eq!(v["ip"], "192.0.2.7");
        assert_eq!(v["host"], "app.example.org");
        assert_eq!(v["uri"], "/private/");
        assert_eq!(v["context"], "request");
        assert_eq!(v["reason"], "push approved (allow)");
        assert_eq!(v["duration_ms"], 42);
        assert_eq!(v["pushes"], 1);
        assert_eq!(v.as_object().unwrap().len(), 11);
    }

    #[test]
    fn config_checks() {
        let raw = |s: &str| serde_json::from_str::<RawAudit>(s).unwrap();
        let c = AuditConfig::from_raw(&raw(r#"{"file": "/var/log/a.jsonl"}"#)).unwrap();
        assert_eq!(c.file.as_deref(), Some(Path::new("/var/log/a.jsonl")));
        assert_eq!(c.syslog, None);
        assert!(!c.required);
        let c = AuditConfig::from_raw(&raw(r#"{"syslog": true, "required": true}"#)).unwrap();
        assert_eq!(c.syslog.as_deref(), Some(Path::new(DEV_LOG)));
        assert!(c.required);
        assert_eq!(
            AuditConfig::from_raw(&raw(r#"{"file": "rel.jsonl"}"#))
                .unwrap_err()
                .0,
            "audit.file"
        );
        assert_eq!(
            AuditConfig::from_raw(&raw(r#"{"syslog": false}"#))
                .unwrap_err()
                .0,
            "audit"
        );
        assert!(serde_json::from_str::<RawAudit>(r#"{"fiel": "/x"}"#).is_err());
    }

    #[test]
    fn file_and_syslog_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("log.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let cfg = AuditConfig {
            file: Some(dir.path().join("audit.jsonl")),
            syslog: Some(sock_path),
            required: false,
        };
        let d = Decision::deny(Event::PasswordFailure, "wrong password");
        write(&cfg, &line(&d, "joe")).unwrap();
        write(&cfg, &line(&d, "ann")).unwrap();
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("\"user\":\"ann\""));
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<86>check-duo["), "{msg}");
        assert!(msg.contains("\"event\":\"password_failure\""), "{msg}");

        let bad = AuditConfig {
            file: Some(dir.path().join("missing/audit.jsonl")),
            syslog: Some(dir.path().join("nobody-listens")),
            required: true,
        };
        let e = write(&bad, &line(&d, "joe")).unwrap_err();
        assert!(
            e.contains("audit file") && e.contains("missing/audit.jsonl"),
            "{e}"
        );
        assert!(e.contains("audit syslog"), "{e}");
    }
}
