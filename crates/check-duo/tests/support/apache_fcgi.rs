//! A real, unprivileged Apache with `mod_authnz_fcgi` asking `check-duo serve`'s FastCGI
//! authorizer, configured from the SHIPPED `deploy/apache/check-duo-fcgi.conf` with only the
//! daemon's port changed. Its site: the caller's document root, `.cgi` files under /private/
//! run as CGI (mod_cgid), and an access log of `%u` (the user Apache settled on). Started as
//! apache.rs starts Apache.

use std::fs;
use std::path::Path;

use super::apache::Apache;
use super::process::{open_to_others, running_as_root};
use super::replace_once;

pub const AUTHNZ_FCGI_SO: &str = "/usr/lib/apache2/modules/mod_authnz_fcgi.so";
pub const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/apache/check-duo-fcgi.conf"
);
const SHIPPED_BACKEND: &str = "fcgi://127.0.0.1:9092/";

const MODULES: &[&str] = &[
    "mpm_event",
    "authn_core",
    "authz_core",
    "authz_user",
    "authnz_fcgi",
    "headers",
    "cgid",
    "dir",
    "mime",
];

pub fn render(fcgi_port: u16) -> String {
    let text = fs::read_to_string(SHIPPED).unwrap_or_else(|e| panic!("read {SHIPPED}: {e}"));
    replace_once(
        &text,
        SHIPPED_BACKEND,
        &format!("fcgi://127.0.0.1:{fcgi_port}/"),
        SHIPPED,
    )
}

impl Apache {
    /// Apache under `dir` in front of `docroot`, asking the FastCGI authorizer on `fcgi_port`;
    /// [`Apache::access_log`] has a line `%u "%r" %>s` per request.
    pub fn start_fcgi(dir: &Path, docroot: &Path, fcgi_port: u16) -> Apache {
        fs::create_dir_all(dir.join("conf")).expect("mkdir conf");
        let snippet = dir.join("conf/check-duo-fcgi.conf");
        fs::write(&snippet, render(fcgi_port)).expect("write check-duo-fcgi.conf");
        if running_as_root() {
            open_to_others(docroot);
        }
        let d = dir.display();
        let site = format!(
            r#"ScriptSock {d}/run/cgid.sock
LogFormat "%u \"%r\" %>s" user
CustomLog {d}/logs/access.log user
<Directory {docroot}/private>
  Options +ExecCGI
  AddHandler cgi-script .cgi
</Directory>
Include {snippet}
"#,
            docroot = docroot.display(),
            snippet = snippet.display(),
        );
        Apache::launch("apache-fcgi", dir, MODULES, docroot, &site)
    }
}
