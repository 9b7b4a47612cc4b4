//! A real, unprivileged Apache on a loopback port, configured from the SHIPPED deployment files
//! (`deploy/apache/`): only paths, the port and the cookie's `secure` flag differ (see
//! [`render_check_duo_conf`]). Follows REFERENCE §4: `-f CONF -DFOREGROUND`, everything in a temp
//! directory, the modules loaded by hand (the stock apache2.conf needs /etc/apache2/envvars).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{chmod, open_to_others, running_as_root, start_server, Server};
use super::{replace_each, replace_once};

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
    let text = replace_each(
        &text,
        &[
            (
                "SessionCookieName formsession path=/;httponly;secure;SameSite=Lax",
                "SessionCookieName formsession path=/;httponly;SameSite=Lax",
            ),
            (
                "SessionCryptoPassphraseFile /etc/check-duo/session-passphrase",
                &format!("SessionCryptoPassphraseFile {}", passphrase_file.display()),
            ),
        ],
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
    /// Its log is the ErrorLog.
    server: Server,
}

impl Apache {
    /// Write the configuration under `dir` (created) and start Apache on a free port (retrying
    /// with another port if the one picked was taken meanwhile).
    pub fn start(dir: &Path, spec: &ApacheSpec<'_>) -> Apache {
        let passphrase_file = dir.join("session-passphrase");
        let conf_d = dir.join("conf");
        fs::create_dir_all(&conf_d).expect("mkdir conf");
        fs::write(&passphrase_file, spec.passphrase).expect("write passphrase");
        // Read by the parent while it is still root, like /etc/check-duo/session-passphrase.
        chmod(&passphrase_file, 0o600);
        let check_duo_conf = conf_d.join("check-duo.conf");
        fs::write(
            &check_duo_conf,
            render_check_duo_conf(spec.authenticator, &passphrase_file, spec.installed_conf),
        )
        .expect("write check-duo.conf");
        if running_as_root() {
            // The children run as `nobody`: they must reach the docroot and everything the
            // authenticator reads below `dir`.
            open_to_others(dir);
        }
        // protected-location.conf is used exactly as shipped.
        let site = format!(
            "Include {}\nInclude {DEPLOY_DIR}/protected-location.conf\n",
            check_duo_conf.display()
        );
        Apache::launch(spec.name, dir, MODULES, spec.docroot, &site)
    }

    /// Start Apache under `dir` (its httpd.conf, logs/ and run/ there) on a free port, loading
    /// `modules`, serving `docroot`, with `site` (directives) at the end of httpd.conf. The
    /// common part of [`Apache::start`] and `Apache::start_fcgi` (apache_fcgi.rs).
    pub fn launch(name: &str, dir: &Path, modules: &[&str], docroot: &Path, site: &str) -> Apache {
        for sub in ["logs", "run"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let as_root = running_as_root();
        let conf = dir.join("httpd.conf");
        let error_log = dir.join("logs/error.log");
        let server = start_server(
            name,
            dir,
            1,
            Some(&error_log),
            Duration::from_secs(15),
            |ports| {
                let httpd = main_conf(dir, ports[0], modules, docroot, site, as_root);
                fs::write(&conf, httpd).expect("write httpd.conf");
                let mut cmd = Command::new(APACHE2);
                cmd.arg("-f")
                    .arg(&conf)
                    .arg("-DFOREGROUND")
                    .env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
                cmd
            },
        );
        Apache {
            port: server.port,
            dir: dir.to_path_buf(),
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The ErrorLog: Apache's messages and the authenticator's stderr.
    pub fn error_log(&self) -> String {
        self.server.log()
    }

    /// logs/access.log, for a `site` that writes one.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }

    /// Whether Apache is still running.
    pub fn running(&mut self) -> bool {
        self.server.running()
    }
}

fn main_conf(
    dir: &Path,
    port: u16,
    modules: &[&str],
    docroot: &Path,
    site: &str,
    as_root: bool,
) -> String {
    let d = dir.display();
    let modules: String = modules
        .iter()
        .map(|m| format!("LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n"))
        .collect();
    let user = if as_root {
        let (user, group) = UNPRIVILEGED;
        format!("User {user}\nGroup {group}\n")
    } else {
        String::new()
    };
    // One child process is plenty for a test and keeps the machine free.
    format!(
        "# Generated by tests/support/apache.rs
ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/run/httpd.pid
DefaultRuntimeDir {d}/run
ErrorLog {d}/logs/error.log
LogLevel warn
{modules}{user}StartServers 1
MinSpareThreads 5
MaxSpareThreads 50
ThreadsPerChild 25
MaxRequestWorkers 50
TypesConfig /etc/mime.types
DocumentRoot {docroot}
DirectoryIndex index.html
{site}",
        docroot = docroot.display(),
    )
}
