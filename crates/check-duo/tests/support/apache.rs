//! A real, unprivileged Apache on a loopback port, configured from the SHIPPED deployment files
//! (`deploy/apache/`): only paths, the port and the cookie's `secure` flag differ (see
//! [`render_check_duo_conf`]). Follows REFERENCE §4: `-f CONF -DFOREGROUND`, everything in a temp
//! directory, the modules loaded by hand (the stock apache2.conf needs /etc/apache2/envvars).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{chmod, free_port, running_as_root, wait_for_port, ChildGuard};

pub const APACHE2: &str = "/usr/sbin/apache2";
pub const MODULES_DIR: &str = "/usr/lib/apache2/modules";
/// The module the Debian package libapache2-mod-authnz-external installs.
pub const AUTHNZ_EXTERNAL_SO: &str = "/usr/lib/apache2/modules/mod_authnz_external.so";
/// The shipped deployment files.
pub const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/apache");

/// Modules check-duo.conf needs, plus dir and mime to serve the test pages. The rest (core, so,
/// http, log_config, logio, version, unixd, watchdog) is built into Debian's apache2.
pub const MODULES: &[&str] = &[
    "mpm_event",
    "authn_core",
    "authz_core",
    "authz_user",
    "auth_form",
    "request",
    "session",
    "session_cookie",
    "session_crypto",
    "authnz_external",
    "dir",
    "mime",
];

/// The user and group Apache's children (and so the authenticator) run as when the tests run as
/// root. Every file they read must be readable by them: see [`Apache::start`].
pub const UNPRIVILEGED: (&str, &str) = ("nobody", "nogroup");

/// Replace the one occurrence of `from` in `text`; a shipped file that no longer contains it
/// must fail the test loudly rather than quietly test another configuration.
fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{file}: expected `{from}` exactly once, found it {n} times"
    );
    text.replacen(from, to, 1)
}

/// deploy/apache/check-duo.conf as shipped, with three substitutions and nothing else:
/// - the session passphrase file and the authenticator command line point into the temp dir;
/// - the session cookie loses its `secure` flag, because the tests speak plain HTTP to
///   127.0.0.1 and a browser never sends a `secure` cookie back over plain HTTP (the login would
///   loop back to /login). Production keeps the flag: TLS is required there.
///
/// With `installed`, the file is an installed copy (the Debian package's conf-available
/// snippet) and its authenticator line is kept as it is: Apache then runs the installed binary
/// with the installed config.
pub fn render_check_duo_conf(
    authenticator: &str,
    passphrase_file: &Path,
    installed: Option<&Path>,
) -> String {
    let file = match installed {
        Some(p) => p.display().to_string(),
        None => format!("{DEPLOY_DIR}/check-duo.conf"),
    };
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    assert!(
        !authenticator.contains('"'),
        "the authenticator command line cannot contain quotes: {authenticator}"
    );
    let text = replace_once(
        &text,
        "SessionCookieName formsession path=/;httponly;secure;SameSite=Lax",
        "SessionCookieName formsession path=/;httponly;SameSite=Lax",
        &file,
    );
    let text = replace_once(
        &text,
        "SessionCryptoPassphraseFile /etc/check-duo/session-passphrase",
        &format!("SessionCryptoPassphraseFile {}", passphrase_file.display()),
        &file,
    );
    if installed.is_some() {
        assert!(
            text.contains(&format!("DefineExternalAuth duo pipe \"{authenticator}\"")),
            "{file}: the installed snippet does not run {authenticator}"
        );
        return text;
    }
    replace_once(
        &text,
        "\"/usr/local/bin/check-duo -c /etc/check-duo/config.json\"",
        &format!("\"{authenticator}\""),
        &file,
    )
}

/// Copy the shipped login page to `docroot/login/index.html`.
pub fn install_login_page(docroot: &Path) {
    let dir = docroot.join("login");
    fs::create_dir_all(&dir).expect("mkdir docroot/login");
    fs::copy(
        format!("{DEPLOY_DIR}/login/index.html"),
        dir.join("index.html"),
    )
    .expect("copy the shipped login/index.html");
}

/// What to start.
pub struct ApacheSpec<'a> {
    /// A name for messages ("apache-a").
    pub name: &'a str,
    /// The authenticator command line for `DefineExternalAuth duo pipe "…"` (no quotes; Apache
    /// splits it on white space).
    pub authenticator: &'a str,
    /// The session passphrase: instances that must accept each other's cookies share it.
    pub passphrase: &'a str,
    /// The document root (the caller fills it; [`install_login_page`] adds /login).
    pub docroot: &'a Path,
    /// An installed check-duo.conf to use instead of the repository's (see
    /// [`render_check_duo_conf`]).
    pub installed_conf: Option<&'a Path>,
}

/// A running Apache; stopped when dropped.
pub struct Apache {
    pub port: u16,
    pub dir: PathBuf,
    error_log: PathBuf,
    guard: ChildGuard,
}

impl Apache {
    /// Write the configuration under `dir` (created) and start Apache on a free port (retrying
    /// with another port if the one picked was taken meanwhile).
    pub fn start(dir: &Path, spec: &ApacheSpec<'_>) -> Apache {
        fs::create_dir_all(dir.join("logs")).expect("mkdir logs");
        fs::create_dir_all(dir.join("run")).expect("mkdir run");
        let passphrase_file = dir.join("session-passphrase");
        fs::write(&passphrase_file, spec.passphrase).expect("write passphrase");
        // Read by the parent while it is still root, like /etc/check-duo/session-passphrase.
        chmod(&passphrase_file, 0o600);
        let conf_d = dir.join("conf");
        fs::create_dir_all(&conf_d).expect("mkdir conf");
        let check_duo_conf = conf_d.join("check-duo.conf");
        fs::write(
            &check_duo_conf,
            render_check_duo_conf(spec.authenticator, &passphrase_file, spec.installed_conf),
        )
        .expect("write check-duo.conf");
        // Used exactly as shipped.
        let protected = format!("{DEPLOY_DIR}/protected-location.conf");

        let as_root = running_as_root();
        if as_root {
            // The children run as `nobody`: they must reach the docroot and everything the
            // authenticator reads below `dir`.
            let mut p = Some(dir);
            while let Some(d) = p {
                if d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
                    chmod(d, 0o755);
                }
                p = d.parent();
            }
        }

        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("httpd.conf");
            fs::write(
                &conf,
                main_conf(
                    dir,
                    port,
                    spec.docroot,
                    &check_duo_conf,
                    &protected,
                    as_root,
                ),
            )
            .expect("write httpd.conf");
            let error_log = dir.join("logs/error.log");
            let _ = fs::remove_file(&error_log);
            let child = Command::new(APACHE2)
                .args(["-f"])
                .arg(&conf)
                .arg("-DFOREGROUND")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: spawn {APACHE2}: {e}", spec.name));
            let mut guard = ChildGuard::new(spec.name, child);
            match wait_for_port(port, Duration::from_secs(15), &mut guard) {
                Ok(()) => {
                    return Apache {
                        port,
                        dir: dir.to_path_buf(),
                        error_log,
                        guard,
                    }
                }
                Err(e) => {
                    let log = fs::read_to_string(&error_log).unwrap_or_default();
                    last_err = format!("{}: {e}\n--- error.log ---\n{log}", spec.name);
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("{last_err}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The ErrorLog: Apache's messages and the authenticator's stderr.
    pub fn error_log(&self) -> String {
        fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// Whether Apache is still running.
    pub fn running(&mut self) -> bool {
        self.guard.exited().is_none()
    }
}

fn main_conf(
    dir: &Path,
    port: u16,
    docroot: &Path,
    check_duo_conf: &Path,
    protected: &str,
    as_root: bool,
) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(c, "# Generated by tests/support/apache.rs");
    let _ = writeln!(c, "ServerRoot {d}");
    let _ = writeln!(c, "ServerName 127.0.0.1");
    let _ = writeln!(c, "Listen 127.0.0.1:{port}");
    let _ = writeln!(c, "PidFile {d}/run/httpd.pid");
    let _ = writeln!(c, "DefaultRuntimeDir {d}/run");
    let _ = writeln!(c, "ErrorLog {d}/logs/error.log");
    let _ = writeln!(c, "LogLevel warn");
    for m in MODULES {
        let _ = writeln!(c, "LoadModule {m}_module {MODULES_DIR}/mod_{m}.so");
    }
    if as_root {
        let (user, group) = UNPRIVILEGED;
        let _ = writeln!(c, "User {user}\nGroup {group}");
    }
    // One child process is plenty for a test and keeps the machine free.
    let _ = writeln!(c, "StartServers 1\nMinSpareThreads 5\nMaxSpareThreads 50");
    let _ = writeln!(c, "ThreadsPerChild 25\nMaxRequestWorkers 50");
    let _ = writeln!(c, "TypesConfig /etc/mime.types");
    let _ = writeln!(c, "DocumentRoot {}", docroot.display());
    let _ = writeln!(c, "DirectoryIndex index.html");
    let _ = writeln!(c, "Include {}", check_duo_conf.display());
    let _ = writeln!(c, "Include {protected}");
    c
}
