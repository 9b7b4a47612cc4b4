//! The setgid install (deploy/least-privilege.md): the binary runs with the `check-duo` group,
//! which alone reads the config and writes the store, on behalf of a caller (Apache's user) who
//! has neither. Such a caller must not choose what the group's rights are used for: no other
//! config (one whose limits would ban real users in the real store, or whose audit file is the
//! real log), and no admin command.

use std::path::Path;

/// The one config an elevated process reads.
pub const INSTALLED_CONFIG: &str = "/etc/check-duo/config.json";

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

/// `Err(reason)` when an elevated process is asked to read another config than the installed one.
pub fn check_config_path(config: &Path) -> Result<(), String> {
    if elevated() && config != Path::new(INSTALLED_CONFIG) {
        return Err(format!(
            "running setgid, check-duo reads only {INSTALLED_CONFIG}, not {}",
            config.display()
        ));
    }
    Ok(())
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
}
