//! The setgid install (deploy/least-privilege.md): the binary runs with the `check-duo` group,
//! which alone reads the config and writes the store, on behalf of a caller (Apache's user) who
//! has neither. Such a caller must not choose what the group's rights are used for: no other
//! config (one whose limits would ban real users in the real store, or whose audit file is the
//! real log), and no admin command.
//!
//! The Debian package's setgid copy is [`PACKAGE_SETGID_BIN`], in a directory only the group
//! `check-duo-run` may enter; its `/usr/bin/check-duo` is not setgid. A request run through a
//! binary without the group cannot read the installed config: the deny says which binary to run.

use std::path::Path;

/// The one config an elevated process reads.
pub const INSTALLED_CONFIG: &str = "/etc/check-duo/config.json";

/// The setgid copy the Debian package installs for Apache (its snippet names it).
pub const PACKAGE_SETGID_BIN: &str = "/usr/lib/check-duo/check-duo";

/// True when the process holds a user or group its caller does not (setgid or setuid), unless
/// the caller is root. When `/proc` cannot tell, assume it does.
pub fn elevated() -> bool {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => elevated_from_status(&status),
        Err(_) => true,
    }
}

fn ids(status: &str, field: &str) -> Option<(u32, u32)> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut it = line[field.len()..].split_whitespace();
    let real = it.next()?.parse().ok()?;
    let effective = it.next()?.parse().ok()?;
    Some((real, effective))
}

fn elevated_from_status(status: &str) -> bool {
    let (Some((ruid, euid)), Some((rgid, egid))) = (ids(status, "Uid:"), ids(status, "Gid:"))
    else {
        return true;
    };
    ruid != 0 && (ruid != euid || rgid != egid)
}

/// `Err(reason)` when an elevated process is asked to read another config than the installed one,
/// or when a process that is not elevated may not open the installed one (a binary without the
/// group, such as the package's `/usr/bin/check-duo` run by Apache's user).
pub fn check_config_path(config: &Path) -> Result<(), String> {
    if elevated() {
        if config != Path::new(INSTALLED_CONFIG) {
            return Err(format!(
                "running setgid, check-duo reads only {INSTALLED_CONFIG}, not {}",
                config.display()
            ));
        }
        return Ok(());
    }
    if config == Path::new(INSTALLED_CONFIG) {
        if let Err(e) = std::fs::File::open(config) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(without_the_group(&e));
            }
        }
    }
    Ok(())
}

fn without_the_group(e: &std::io::Error) -> String {
    format!(
        "config {INSTALLED_CONFIG}: cannot read: {e}; this check-duo runs without the group \
         check-duo (not setgid): Apache must run the setgid copy ({PACKAGE_SETGID_BIN} from the \
         package, for the members of the group check-duo-run), not /usr/bin/check-duo"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcheck-duo\nUid:\t33\t33\t33\t33\nGid:\t33\t998\t998\t998\n";

    #[test]
    fn setgid_caller_is_elevated() {
        assert!(elevated_from_status(STATUS));
        assert!(!elevated_from_status(&STATUS.replace("33\t998", "33\t33")));
        // Root may do anything anyway.
        assert!(!elevated_from_status(
            &STATUS.replace("Uid:\t33\t33", "Uid:\t0\t0")
        ));
        assert!(elevated_from_status("Name:\tx\n"));
    }

    #[test]
    fn tests_do_not_run_elevated() {
        assert!(check_config_path(Path::new("/tmp/x.json")).is_ok());
    }

    #[test]
    fn a_denied_installed_config_names_the_setgid_copy() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let msg = without_the_group(&e);
        assert!(
            msg.starts_with("config /etc/check-duo/config.json: cannot read: "),
            "{msg}"
        );
        assert!(msg.contains("/usr/lib/check-duo/check-duo"), "{msg}");
        assert!(msg.contains("check-duo-run"), "{msg}");
    }
}
