//! Who may own the embedded store's file, and who may create it.
//!
//! The store lives in a directory only the `check-duo` group can enter (`2770 root:check-duo`,
//! see deploy/least-privilege.md), but the setgid binary that holds that group can be run by
//! any local user. So the file itself must not be whoever-came-first's: before a process opens
//! it, [`prepare`] checks it and refuses it, with an error naming the file, what it is and what
//! is expected, unless
//!
//! - it is a regular file (not a symlink, not a directory);
//! - it is owned by root or by the process's effective user (the owner can chmod it);
//! - others have no access (no bit in `0o007`);
//! - when the group has any access, the group is root's, the process's effective group or
//!   the group named `check-duo`.
//!
//! An absent file is created (`0660`, whatever the umask) only by a process that runs with its
//! caller's own ids. A setgid (or setuid) check-duo run by an unprivileged caller never creates
//! it: that caller would own it. The package creates it at install time; a by-hand install
//! creates it as root (`install -o root -g check-duo -m 0660 /dev/null FILE`).
//!
//! The ids come from `/proc/self/status` (the crate has no unsafe code, so no `geteuid`).

use std::fs::{self, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StoreError;

const BACKEND: &str = "embedded store";

/// The group the package gives the store (deploy/least-privilege.md).
pub const STORE_GROUP: &str = "check-duo";

/// The mode a store file is created with.
pub const CREATE_MODE: u32 = 0o660;

/// The real and effective ids of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
}

impl Ids {
    /// This process's ids.
    pub fn current() -> Result<Ids, String> {
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        Ids::from_status(&status).ok_or_else(|| "no Uid/Gid in /proc/self/status".to_string())
    }

    fn from_status(status: &str) -> Option<Ids> {
        let pair = |field: &str| -> Option<(u32, u32)> {
            let line = status.lines().find(|l| l.starts_with(field))?;
            let mut it = line[field.len()..].split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        let (ruid, euid) = pair("Uid:")?;
        let (rgid, egid) = pair("Gid:")?;
        Some(Ids {
            ruid,
            euid,
            rgid,
            egid,
        })
    }

    /// Running with ids the caller does not have (setgid or setuid), the caller not being root.
    pub fn elevated(&self) -> bool {
        self.ruid != 0 && (self.ruid != self.euid || self.rgid != self.egid)
    }
}

/// What [`check`] may need besides the file's own metadata, each asked for only when the
/// file's owner and group do not settle the question (a file `root:check-duo 0660` in a
/// `root:check-duo` directory needs one `stat` of the directory, and no `/proc` read).
pub struct Lookups<'a> {
    /// This process's ids.
    pub ids: &'a dyn Fn() -> Result<Ids, String>,
    /// The metadata of the file's directory.
    pub dir: &'a dyn Fn() -> Option<Metadata>,
    /// A group's id by name.
    pub group: &'a dyn Fn(&str) -> Option<u32>,
}

/// Check the store file at `path`, creating it first when it is absent and this process may.
/// Every error names the file.
pub fn prepare(path: &Path) -> Result<(), StoreError> {
    let fail = |detail: String| StoreError::new(BACKEND, path.display().to_string(), detail);
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create(path, &Ids::current().map_err(fail)?).map_err(fail)?;
            fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let dir = || {
        let d = path.parent().filter(|d| !d.as_os_str().is_empty());
        fs::metadata(d.unwrap_or(Path::new("."))).ok()
    };
    let lookups = Lookups {
        ids: &Ids::current,
        dir: &dir,
        group: &group_id,
    };
    check(&meta, &lookups, path).map_err(fail)
}

fn create(path: &Path, ids: &Ids) -> Result<(), String> {
    if ids.elevated() {
        return Err(format!(
            "does not exist, and a setgid check-duo run by uid {} does not create it (its caller \
             would own it): create it as root at install time: install -o root -g {STORE_GROUP} \
             -m 0660 /dev/null {}",
            ids.ruid,
            path.display()
        ));
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(CREATE_MODE)
        .open(path)
    {
        // The umask took bits off: put them back on the file just made.
        Ok(f) => f
            .set_permissions(fs::Permissions::from_mode(CREATE_MODE))
            .map_err(|e| format!("cannot chmod the new file: {e}")),
        // Another process created it meanwhile: it is checked like any other.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create: {e}")),
    }
}

/// The rules of the module comment. The group may also be the directory's when the
/// directory is root's and not writable by others: its group can replace the file anyway.
pub fn check(meta: &Metadata, look: &Lookups<'_>, path: &Path) -> Result<(), String> {
    let mode = meta.mode() & 0o7777;
    let (uid, gid) = (meta.uid(), meta.gid());
    let what = || {
        format!(
            "owner {}, group {}, mode {mode:04o}",
            user_name(uid),
            group_name(gid)
        )
    };
    let fix = format!(
        "chown root:{STORE_GROUP} {p} && chmod 0660 {p} (deploy/least-privilege.md)",
        p = path.display()
    );
    if !meta.file_type().is_file() {
        return Err(format!(
            "is not a regular file (a symlink or a directory?): expected a regular file, \
             root:{STORE_GROUP} 0660"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "{}: others may access it; expected no access for others (0660 or 0600); fix: {fix}",
            what()
        ));
    }
    if uid != 0 {
        let ids = (look.ids)()?;
        if uid != ids.euid {
            return Err(format!(
                "{}: expected the owner to be root or this process's user ({}); fix: {fix}",
                what(),
                user_name(ids.euid)
            ));
        }
    }
    if mode & 0o070 == 0 || gid == 0 {
        return Ok(());
    }
    let dir_group = (look.dir)()
        .filter(|d| d.uid() == 0 && d.mode() & 0o002 == 0)
        .map(|d| d.gid());
    if dir_group == Some(gid) || (look.group)(STORE_GROUP) == Some(gid) {
        return Ok(());
    }
    let ids = (look.ids)()?;
    if gid == ids.egid {
        return Ok(());
    }
    Err(format!(
        "{}: its group may access it; expected group {STORE_GROUP}, root, this process's \
         group ({}) or that of a root-owned directory; fix: {fix}",
        what(),
        group_name(ids.egid)
    ))
}

/// The id of the group `name`, from /etc/group.
pub fn group_id(name: &str) -> Option<u32> {
    field_by_name("/etc/group", name)
}

fn field_by_name(db: &str, name: &str) -> Option<u32> {
    let text = fs::read_to_string(db).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

fn name_by_id(db: &str, id: u32) -> Option<String> {
    let text = fs::read_to_string(db).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == id).then(|| f[0].to_string())
    })
}

/// `www-data (uid 33)`, or `uid 33` when /etc/passwd does not name it. Error paths only.
fn user_name(uid: u32) -> String {
    match name_by_id("/etc/passwd", uid) {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn group_name(gid: u32) -> String {
    match name_by_id("/etc/group", gid) {
        Some(n) => format!("{n} (gid {gid})"),
        None => format!("gid {gid}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STATUS: &str = "Name:\tcheck-duo\nUid:\t33\t33\t33\t33\nGid:\t33\t998\t998\t998\n";

    #[test]
    fn ids_from_status() {
        let i = Ids::from_status(STATUS).unwrap();
        assert_eq!((i.ruid, i.euid, i.rgid, i.egid), (33, 33, 33, 998));
        assert!(i.elevated());
        let plain = Ids::from_status(&STATUS.replace("33\t998", "33\t33")).unwrap();
        assert!(!plain.elevated());
        let root = Ids::from_status(&STATUS.replace("Uid:\t33\t33", "Uid:\t0\t0")).unwrap();
        assert!(!root.elevated());
        assert_eq!(Ids::from_status("Name:\tx\n"), None);
        assert!(Ids::current().is_ok());
    }

    /// A file with this mode. As root, it is given to uid 4242, gid 4243 (so that the rules
    /// about owner and group are exercised); the ids of "this process" are then those.
    fn file(dir: &Path, mode: u32) -> Metadata {
        let p = dir.join(format!("f{mode:o}"));
        fs::write(&p, b"").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        if Ids::current().unwrap().euid == 0 {
            std::os::unix::fs::chown(&p, Some(4242), Some(4243)).unwrap();
        }
        fs::symlink_metadata(&p).unwrap()
    }

    fn me() -> Ids {
        let me = Ids::current().unwrap();
        if me.euid == 0 {
            Ids {
                ruid: 4242,
                euid: 4242,
                rgid: 4243,
                egid: 4243,
            }
        } else {
            me
        }
    }

    const PATH: &str = "/var/lib/check-duo/sessions.db";

    fn check_as(
        m: &Metadata,
        ids: Ids,
        dir: Option<Metadata>,
        group: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<(), String> {
        let look = Lookups {
            ids: &|| Ok(ids),
            dir: &|| dir.clone(),
            group,
        };
        check(m, &look, Path::new(PATH))
    }

    #[test]
    fn the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let me = me();
        let none = |_: &str| None;
        // Ours, group ours: 0660 and 0600 are fine, any access for others is not.
        assert_eq!(check_as(&file(dir.path(), 0o660), me, None, &none), Ok(()));
        assert_eq!(check_as(&file(dir.path(), 0o600), me, None, &none), Ok(()));
        for mode in [0o644, 0o666, 0o604, 0o601] {
            let e = check_as(&file(dir.path(), mode), me, None, &none).unwrap_err();
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.contains("others may access it"), "{e}");
            assert!(e.contains(&format!("chmod 0660 {PATH}")), "{e}");
        }
        let f = file(dir.path(), 0o660);
        // Owned by somebody else (as seen by a process with another effective user): the
        // error names the owner, the mode and the fix.
        let other = Ids {
            euid: me.euid + 1,
            ..me
        };
        let e = check_as(&f, other, None, &none).unwrap_err();
        assert!(e.contains("expected the owner to be root"), "{e}");
        assert!(e.contains(&format!("uid {}", me.euid)), "{e}");
        assert!(e.contains("mode 0660"), "{e}");
        assert!(e.contains(&format!("chown root:check-duo {PATH}")), "{e}");
        // A group that is neither ours, root's, check-duo nor the directory's: refused when it
        // has access.
        let stranger = Ids {
            egid: me.egid + 1,
            ..me
        };
        let e = check_as(&f, stranger, None, &none).unwrap_err();
        assert!(e.contains("expected group check-duo"), "{e}");
        let named = |n: &str| (n == STORE_GROUP).then_some(f.gid());
        assert_eq!(check_as(&f, stranger, None, &named), Ok(()));
        assert_eq!(
            check_as(&file(dir.path(), 0o600), stranger, None, &none),
            Ok(())
        );
        // Not a regular file.
        std::os::unix::fs::symlink(dir.path().join("f660"), dir.path().join("link")).unwrap();
        let link = fs::symlink_metadata(dir.path().join("link")).unwrap();
        let e = check_as(&link, me, None, &none).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// The installed layout, `root:check-duo 0660` in `root:check-duo 2770`, is settled by the
    /// file and its directory: no /proc read, no group lookup. (Needs root to build it.)
    #[test]
    fn the_installed_layout_needs_no_ids() {
        if Ids::current().unwrap().euid != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        fs::create_dir(&store).unwrap();
        std::os::unix::fs::chown(&store, Some(0), Some(4243)).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o2770)).unwrap();
        let f = store.join("sessions.db");
        fs::write(&f, b"").unwrap();
        std::os::unix::fs::chown(&f, Some(0), Some(4243)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o660)).unwrap();
        let (fm, dm) = (
            fs::symlink_metadata(&f).unwrap(),
            fs::metadata(&store).unwrap(),
        );
        let look = Lookups {
            ids: &|| Err("the ids were asked for".to_string()),
            dir: &|| Some(dm.clone()),
            group: &|_| None,
        };
        assert_eq!(check(&fm, &look, &f), Ok(()));
        // A directory writable by others does not vouch for its group.
        fs::set_permissions(&store, fs::Permissions::from_mode(0o2777)).unwrap();
        let dm = fs::metadata(&store).unwrap();
        let root = Ids {
            ruid: 0,
            euid: 0,
            rgid: 0,
            egid: 0,
        };
        let look = Lookups {
            ids: &|| Ok(root),
            dir: &|| Some(dm.clone()),
            group: &|_| None,
        };
        let e = check(&fm, &look, &f).unwrap_err();
        assert!(e.contains("expected group check-duo"), "{e}");
        // And prepare() agrees, on the real file.
        fs::set_permissions(&store, fs::Permissions::from_mode(0o2770)).unwrap();
        prepare(&f).unwrap();
    }

    #[test]
    fn created_0660_whatever_the_umask_and_only_when_not_elevated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sessions.db");
        prepare(&p).unwrap();
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o660);
        // Existing: checked, left alone.
        prepare(&p).unwrap();

        let elevated = Ids {
            ruid: 1000,
            euid: 1000,
            rgid: 1000,
            egid: 998,
        };
        let q = dir.path().join("other.db");
        let e = create(&q, &elevated).unwrap_err();
        assert!(e.contains("does not create it"), "{e}");
        assert!(e.contains("install -o root -g check-duo -m 0660"), "{e}");
        assert!(!q.exists());
    }
}
