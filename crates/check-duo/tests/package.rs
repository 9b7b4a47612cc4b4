//! The INSTALLED Debian package (scripts/test-package builds it, `dpkg -i`s it, runs this test with
//! `CHECK_DUO_INSTALLED_PACKAGE=1`, then purges it): files, owners and modes of the
//! least-privilege setup; who may run the setgid copy `/usr/lib/check-duo/check-duo` (the members
//! of `check-duo-run`: Apache's user `www-data`, not `nobody`) and that `/usr/bin/check-duo`
//! gives no caller the group; then the end-to-end path through a real Apache running the installed
//! setgid copy as an unprivileged user with the installed config location, store directory and
//! audit directory. Without the variable the test says it skipped and passes.
//!
//! The harness's Apache runs its children as `nobody`: for the end-to-end part only, the test
//! grants `nobody` the right as an administrator would (`usermod -a -G check-duo-run nobody`),
//! and takes it back afterwards (`gpasswd -d`).
//!
//! Apache is started with the shared harness (tests/support/apache.rs), which renders the
//! repository's deploy/apache/check-duo.conf; the test first proves that the installed
//! conf-available/check-duo.conf is that file with only the binary path changed, and uses the
//! installed login page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use duo_sim::{Behaviours, PushKind, SimConfig, UserBehaviour};
use serde_json::{json, Value};

use support::apache::{Apache, ApacheSpec, APACHE2, AUTHNZ_EXTERNAL_SO, DEPLOY_DIR};
use support::process::chmod;

const ENV: &str = "CHECK_DUO_INSTALLED_PACKAGE";
/// root's admin commands and `check-duo serve`: not setgid.
const BIN: &str = "/usr/bin/check-duo";
/// What Apache runs: setgid check-duo, in a directory only root and `check-duo-run` may enter.
const SETGID_BIN: &str = "/usr/lib/check-duo/check-duo";
const LIB_DIR: &str = "/usr/lib/check-duo";
const RUN_GROUP: &str = "check-duo-run";
/// Apache's user on Debian (APACHE_RUN_USER), which postinst adds to `check-duo-run`.
const APACHE_USER: &str = "www-data";
const CONFIG: &str = "/etc/check-duo/config.json";
const AUDIT: &str = "/var/log/check-duo/audit.jsonl";
const STORE: &str = "/var/lib/check-duo/sessions.db";
const SERVE_UNIT: &str = "/usr/lib/systemd/system/check-duo-serve.service";
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";
const IKEY: &str = "DIPACKAGETESTXXXXXXX";
const SKEY: &str = "packageTestSecretKeyForTheSimulatorOnly0";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse, battery=staple&1";
const SECRET: &str = "check-duo-package-protected-content";

/// (gid, members) of a group in /etc/group.
fn group(group: &str) -> (u32, Vec<String>) {
    let text = fs::read_to_string("/etc/group").unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&group)).then(|| {
                let members = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                (f[2].parse().unwrap(), members)
            })
        })
        .unwrap_or_else(|| panic!("group {group} does not exist"))
}

fn gid_of(name: &str) -> u32 {
    group(name).0
}

/// Give `user` the right to run the setgid copy, as an administrator does.
fn grant_run_right(user: &str) {
    let (code, out, err) = run(Command::new("usermod").args(["-a", "-G", RUN_GROUP, user]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(group(RUN_GROUP).1.iter().any(|m| m == user));
}

/// (mode & 07777, uid, gid)
fn stat(path: &str) -> (u32, u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn installed_package() {
    if std::env::var_os(ENV).is_none() {
        eprintln!("SKIPPED installed_package: {ENV} is not set (scripts/test-package sets it)");
        return;
    }
    let tools = [
        ("apache2", APACHE2),
        ("mod_authnz_external", AUTHNZ_EXTERNAL_SO),
    ];
    if !support::tools_present("installed_package", &tools) {
        return;
    }
    files_and_modes();
    who_may_run();
    serve_unit();
    let template = fs::read(CONFIG).unwrap();
    // The shipped template has no user: config check must say so and fail.
    let (code, out, _) = run(Command::new(BIN).args(["config", "check", "-c", CONFIG]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("key `usernames`"), "{out}");

    // The harness's Apache children run as `nobody`: let it run the setgid copy, for this part.
    grant_run_right("nobody");
    let result = std::panic::catch_unwind(end_to_end);
    // Take the right back and put the package's own config back, whatever happened (the purge
    // removes the config anyway; scripts/test-package deletes the group before installing).
    let revoked = run(Command::new("gpasswd").args(["-d", "nobody", RUN_GROUP]));
    fs::write(CONFIG, template).unwrap();
    let _ = fs::remove_file("/etc/check-duo/duo-sim-ca.pem");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert_eq!(
        revoked.0, 0,
        "gpasswd -d nobody {RUN_GROUP}: {}{}",
        revoked.1, revoked.2
    );
    // Taken back: nobody cannot run it any more.
    let (code, _, err) = run(Command::new("runuser").args(["-u", "nobody", "--", SETGID_BIN]));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

fn files_and_modes() {
    let g = gid_of("check-duo");
    let (run_gid, members) = group(RUN_GROUP);
    // /usr/bin/check-duo grants nothing; the setgid copy is behind a directory of check-duo-run.
    assert_eq!(stat(BIN), (0o755, 0, 0), "{BIN}");
    assert_eq!(stat(LIB_DIR), (0o750, 0, run_gid), "{LIB_DIR}");
    assert_eq!(stat(SETGID_BIN), (0o2755, 0, g), "{SETGID_BIN}");
    assert_eq!(fs::read(BIN).unwrap(), fs::read(SETGID_BIN).unwrap());
    assert_eq!(
        fs::read_dir(LIB_DIR).unwrap().count(),
        1,
        "{LIB_DIR} holds more"
    );
    // postinst put Apache's user, and only it, in the group.
    assert_eq!(members, [APACHE_USER], "members of {RUN_GROUP}");
    assert_eq!(stat("/etc/check-duo"), (0o750, 0, g));
    assert_eq!(stat(CONFIG), (0o640, 0, g));
    assert_eq!(stat("/etc/check-duo/session-passphrase"), (0o600, 0, 0));
    assert!(
        fs::metadata("/etc/check-duo/session-passphrase")
            .unwrap()
            .len()
            >= 32
    );
    assert_eq!(stat("/var/lib/check-duo"), (0o2770, 0, g));
    // The embedded store is made at install time, by root: not by whoever runs the setgid
    // binary first.
    assert_eq!(stat(STORE), (0o660, 0, g), "{STORE}");
    assert_eq!(stat("/var/log/check-duo"), (0o2770, 0, g));
    for f in [
        "/usr/share/man/man1/check-duo.1.gz",
        "/usr/share/man/man1/check-duo-config-check.1.gz",
        "/usr/share/man/man1/check-duo-sessions-list.1.gz",
        "/usr/share/man/man1/check-duo-hash-password.1.gz",
        "/usr/share/bash-completion/completions/check-duo",
        "/usr/share/zsh/vendor-completions/_check-duo",
        "/usr/share/fish/vendor_completions.d/check-duo.fish",
        "/usr/share/doc/check-duo/examples/embedded.json",
        "/usr/share/doc/check-duo/examples/apache/protected-location.conf",
        "/usr/share/doc/check-duo/least-privilege.md",
        "/usr/share/doc/check-duo/ARCHITECTURE.md",
        "/usr/share/doc/check-duo/docs/configuration.md",
        "/usr/share/doc/check-duo/docs/deployment.md",
        "/usr/share/doc/check-duo/docs/operations.md",
        "/usr/share/doc/check-duo/docs/security.md",
        "/etc/logrotate.d/check-duo",
    ] {
        let (mode, uid, _) = stat(f);
        assert_eq!((mode, uid), (0o644, 0), "{f}");
    }
    // The Apache snippet is the repository's, with only the binary path changed: the setgid copy.
    let shipped = fs::read_to_string(format!("{DEPLOY_DIR}/check-duo.conf")).unwrap();
    let installed = fs::read_to_string("/etc/apache2/conf-available/check-duo.conf").unwrap();
    assert_eq!(
        installed,
        shipped.replace(
            "\"/usr/local/bin/check-duo -c /etc/check-duo/config.json\"",
            "\"/usr/lib/check-duo/check-duo -c /etc/check-duo/config.json\""
        )
    );
    assert!(installed.contains("DefineExternalAuth duo pipe \"/usr/lib/check-duo/check-duo -c"));
    assert_eq!(
        fs::read("/usr/share/check-duo/login/index.html").unwrap(),
        fs::read(format!("{DEPLOY_DIR}/login/index.html")).unwrap()
    );
    for bin in [BIN, SETGID_BIN] {
        let (code, out, _) = run(Command::new(bin).arg("--version"));
        assert!(out.starts_with("check-duo "), "{bin}: {code} {out}");
    }
    // Neither Apache's user nor anybody else reads the configuration without the group.
    for user in ["nobody", APACHE_USER] {
        let (code, _, err) = run(Command::new("runuser").args(["-u", user, "--", "cat", CONFIG]));
        assert_ne!(code, 0, "{user} read {CONFIG}");
        assert!(err.contains("Permission denied"), "{err}");
    }
}

/// Who may run the setgid copy, and what `/usr/bin/check-duo` gives the others.
fn who_may_run() {
    // A user outside check-duo-run cannot even start the setgid copy: the directory stops it.
    for args in [vec!["--version"], vec!["-c", CONFIG]] {
        let (code, _, err) = run(Command::new("runuser")
            .args(["-u", "nobody", "--", SETGID_BIN])
            .args(&args));
        assert_ne!(code, 0, "nobody ran {SETGID_BIN}: {err}");
        assert!(err.contains("Permission denied"), "{err}");
    }
    let (code, _, err) = run(Command::new("runuser").args(["-u", "nobody", "--", "ls", LIB_DIR]));
    assert_ne!(code, 0, "nobody listed {LIB_DIR}");
    assert!(err.contains("Permission denied"), "{err}");
    // /usr/bin/check-duo runs for anybody, but without the group: a request it is given cannot
    // read the configuration, and is denied with a message that names the binary to run.
    let (code, err) = request_as("nobody", BIN, "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("event=config_error"), "{err}");
    assert!(err.contains("cannot read: Permission denied"), "{err}");
    assert!(err.contains(SETGID_BIN), "{err}");
    // Apache's user runs the setgid copy (the end-to-end test below shows it reads the config).
    let (code, out, err) =
        run(Command::new("runuser").args(["-u", APACHE_USER, "--", SETGID_BIN, "--version"]));
    // (--version exits 1 in the drop-in mode: not a grant.)
    assert!(
        out.starts_with("check-duo "),
        "{APACHE_USER} could not run {SETGID_BIN}: {code} {out}{err}"
    );
    // Through the setgid copy, its caller cannot pick another config (whose limits or audit file
    // would act on the real store and log) nor run admin commands.
    let evil = "/tmp/check-duo-package-other-config.json";
    fs::write(evil, "{}").unwrap();
    let (code, _, err) = run(Command::new("sh").args([
        "-c",
        &format!("printf 'u\\np\\n' | runuser -u {APACHE_USER} -- {SETGID_BIN} -c {evil}"),
    ]));
    let _ = fs::remove_file(evil);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("reads only /etc/check-duo/config.json"),
        "{err}"
    );
    let (code, _, err) = run(Command::new("runuser").args([
        "-u",
        APACHE_USER,
        "--",
        SETGID_BIN,
        "sessions",
        "list",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("do not run with the setgid group"), "{err}");
}

/// check-duo-serve.service: installed, neither enabled nor started, for its own user with the
/// group check-duo, and accepted by `systemd-analyze verify` where that can run.
fn serve_unit() {
    assert_eq!(stat(SERVE_UNIT), (0o644, 0, 0), "{SERVE_UNIT}");
    let unit = fs::read_to_string(SERVE_UNIT).unwrap();
    for line in [
        "ExecStart=/usr/bin/check-duo serve -c /etc/check-duo/config.json",
        "User=check-duo-serve",
        "Group=check-duo",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/check-duo /var/log/check-duo",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "{SERVE_UNIT} lacks {line}");
    }
    // The administrator enables it once `server.portal_url` is set: the package does not.
    for wants in [
        "/etc/systemd/system/multi-user.target.wants/check-duo-serve.service",
        "/run/systemd/system/check-duo-serve.service",
    ] {
        assert!(
            fs::symlink_metadata(wants).is_err(),
            "the package enabled or started check-duo-serve: {wants}"
        );
    }
    // Its user: a system user without a login, group check-duo.
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"check-duo-serve"))
        .expect("no user check-duo-serve");
    assert_eq!(
        user[3].parse::<u32>().unwrap(),
        gid_of("check-duo"),
        "{user:?}"
    );
    assert!(user[2].parse::<u32>().unwrap() < 1000, "{user:?}");
    assert_eq!(user[6], "/usr/sbin/nologin", "{user:?}");

    if !Path::new(SYSTEMD_ANALYZE).exists() {
        eprintln!(
            "SKIPPED systemd-analyze verify {SERVE_UNIT}: {SYSTEMD_ANALYZE} is not installed"
        );
        return;
    }
    // Whether systemd-analyze can run here at all (some containers forbid what it needs): a
    // trivial unit must pass first.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("check-duo-probe.service");
    fs::write(
        &probe,
        "[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let (code, out, err) = run(Command::new(SYSTEMD_ANALYZE).arg("verify").arg(&probe));
    if code != 0 {
        eprintln!(
            "SKIPPED systemd-analyze verify {SERVE_UNIT}: systemd-analyze cannot run here \
             (a trivial unit fails with {code}: {out}{err})"
        );
        return;
    }
    let (code, out, err) = run(Command::new(SYSTEMD_ANALYZE).args(["verify", SERVE_UNIT]));
    assert_eq!(code, 0, "systemd-analyze verify {SERVE_UNIT}: {out}{err}");
    assert!(
        out.is_empty() && err.is_empty(),
        "systemd-analyze verify: {out}{err}"
    );
}

fn hash_with_installed_binary(password: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["hash-password", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The session cookie from a response's Set-Cookie headers.
fn session_cookie(resp: &ureq::Response) -> Option<String> {
    resp.all("set-cookie")
        .into_iter()
        .filter_map(|c| c.split(';').next())
        .find(|c| c.starts_with("formsession=") && c.len() > "formsession=".len())
        .map(str::to_string)
}

fn get(agent: &ureq::Agent, url: &str, cookie: &str) -> (u16, String) {
    match agent.get(url).set("Cookie", cookie).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn end_to_end() {
    let g = gid_of("check-duo");
    let mut sim_cfg = SimConfig::new(IKEY, SKEY);
    sim_cfg.long_poll = Duration::from_secs(2);
    sim_cfg.behaviours =
        Behaviours::default().with_user(USER, UserBehaviour::push(PushKind::Approve));
    let sim = duo_sim::start(sim_cfg).unwrap();

    // Everything the installed binary reads lives where the package put it, with its modes.
    let ca = "/etc/check-duo/duo-sim-ca.pem";
    fs::write(ca, sim.ca_pem()).unwrap();
    std::os::unix::fs::chown(ca, Some(0), Some(g)).unwrap();
    chmod(Path::new(ca), 0o640);
    let _ = fs::remove_file(AUDIT);
    // No `cache` key: the default embedded store, /var/lib/check-duo/sessions.db.
    let config = json!({
        "usernames": { USER: hash_with_installed_binary(PASSWORD) },
        "duo": { "ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                 "push_timeout": 10, "call_timeout": 5 },
        "session": { "name": "formsession", "expiry": 3600 },
        "audit": { "file": AUDIT },
    });
    // Written in place: keeps the package's owner, group and mode.
    fs::write(CONFIG, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    assert_eq!(stat(CONFIG), (0o640, 0, g));

    let (code, out, _) = run(Command::new(BIN).args(["config", "check", "-c", CONFIG]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("duo.ikey and duo.skey accepted"), "{out}");

    let dir = tempfile::Builder::new()
        .prefix("check-duo-package-")
        .tempdir()
        .unwrap();
    chmod(dir.path(), 0o755);
    let docroot = dir.path().join("htdocs");
    fs::create_dir_all(docroot.join("login")).unwrap();
    fs::create_dir_all(docroot.join("private")).unwrap();
    fs::copy(
        "/usr/share/check-duo/login/index.html",
        docroot.join("login/index.html"),
    )
    .unwrap();
    fs::write(
        docroot.join("private/index.html"),
        format!("<!doctype html><title>private</title><h1>{SECRET}</h1>"),
    )
    .unwrap();
    for p in [&docroot, &docroot.join("login"), &docroot.join("private")] {
        chmod(p, 0o755);
    }
    let apache = Apache::start(
        &dir.path().join("apache"),
        &ApacheSpec {
            name: "apache-installed",
            authenticator: &format!("{SETGID_BIN} -c {CONFIG}"),
            passphrase: "package test session passphrase",
            docroot: &docroot,
            // The package's own snippet, running the installed setgid copy (as `nobody`, granted
            // the right above) with the installed config.
            installed_conf: Some(Path::new("/etc/apache2/conf-available/check-duo.conf")),
        },
    );
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build();

    // The login page, unauthenticated.
    let (status, body) = get(&agent, &apache.url("/login/"), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("httpd_password"), "{body}");

    // The form: the password only (CONTEXT=login), then the cookie.
    let resp = agent
        .post(&apache.url("/login/submit"))
        .send_form(&[("httpd_username", USER), ("httpd_password", PASSWORD)])
        .unwrap_or_else(|e| panic!("login: {e}\n{}", apache.error_log()));
    assert_eq!(resp.status(), 302, "{}", apache.error_log());
    let cookie = session_cookie(&resp).expect("a session cookie after the login");

    // The protected page: a push, approved by the simulator, then the page.
    let (status, body) = get(&agent, &apache.url("/private/"), &cookie);
    assert_eq!(status, 200, "{body}\n{}", apache.error_log());
    assert!(body.contains(SECRET));
    // Again: from the store, no second push.
    let (status, _) = get(&agent, &apache.url("/private/"), &cookie);
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(sim.pushes().len(), 1, "{}", apache.error_log());

    // The store is still the package's (root:check-duo 0660), now in WAL mode, with its SQLite
    // files made by the unprivileged user through the binary's group, with the store's mode.
    assert_eq!(stat(STORE), (0o660, 0, g), "{STORE}");
    let header = fs::read(STORE).unwrap();
    assert_eq!(
        header.get(18..20),
        Some(&[2u8, 2][..]),
        "{STORE} not in WAL mode"
    );
    for side in ["-wal", "-shm"] {
        let f = format!("{STORE}{side}");
        let (mode, _, gid) = stat(&f);
        assert_eq!((mode, gid), (0o660, g), "{f}");
    }
    // The audit log: one record per decision, never the password.
    let audit = fs::read_to_string(AUDIT).unwrap();
    assert!(!audit.contains(PASSWORD));
    let events: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    assert!(events.contains(&"push_approved".to_string()), "{events:?}");
    assert!(events.contains(&"cache_hit".to_string()), "{events:?}");

    // The admin commands on the installed store.
    let (code, out, err) = run(Command::new(BIN).args(["sessions", "list", "-c", CONFIG]));
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).unwrap_or("").starts_with(USER), "{out}");
    let (code, out, err) =
        run(Command::new(BIN).args(["sessions", "revoke", "-c", CONFIG, "--user", USER]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended 1 session(s)"), "{out}");
    // Revoked: the next request asks Duo again.
    let (status, _) = get(&agent, &apache.url("/private/"), &cookie);
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(sim.pushes().len(), 2, "{}", apache.error_log());

    // Apache's user of the package, run directly: through the setgid copy it reads the config
    // (and the store: the login form's password is granted).
    let (code, err) = request_as(APACHE_USER, SETGID_BIN, "CONTEXT=login");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("event=login_password"), "{err}");

    a_local_user_cannot_take_the_store_over(g);
}

/// One request as `user` through `bin` (`context`: extra variables, e.g. `CONTEXT=login`): its
/// exit status and log line.
fn request_as(user: &str, bin: &str, context: &str) -> (i32, String) {
    let (code, _, err) = run(Command::new("sh")
        .args([
            "-c",
            &format!(
                "printf '{USER}\\n%s\\n' \"$PW\" | runuser -u {user} -- env -i \
             COOKIE=formsession=bG9jYWwtdXNlcg== IP=192.0.2.9 URI=/private/ {context} \
             {bin} -c {CONFIG}"
            ),
        ])
        .env("PW", PASSWORD));
    (code, err)
}

/// A user allowed to run the setgid copy (`www-data`, a PHP script of Apache's user, any member
/// of check-duo-run) who runs it before Apache does cannot create the store (and so own it), and
/// a store file others may read is refused.
fn a_local_user_cannot_take_the_store_over(g: u32) {
    let all: Vec<String> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| format!("{STORE}{s}"))
        .collect();
    for f in &all {
        fs::rename(f, format!("{f}.saved")).unwrap();
    }
    let (code, err) = request_as(APACHE_USER, SETGID_BIN, "");
    let created = Path::new(STORE).exists();
    for f in &all {
        let _ = fs::remove_file(f);
        fs::rename(format!("{f}.saved"), f).unwrap();
    }
    assert_eq!(code, 1, "{err}");
    assert!(
        !created,
        "a setgid run by {APACHE_USER} created {STORE}: {err}"
    );
    assert!(err.contains("event=store_error"), "{err}");
    assert!(err.contains("does not create it"), "{err}");
    assert!(err.contains(STORE), "{err}");

    chmod(Path::new(STORE), 0o644);
    let (code, err) = request_as(APACHE_USER, SETGID_BIN, "");
    chmod(Path::new(STORE), 0o660);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains("others may access it"), "{err}");
    assert_eq!(stat(STORE), (0o660, 0, g), "{STORE}");
}
