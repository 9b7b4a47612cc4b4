//! The real `check-duo serve` binary on free loopback ports, its config written to the test's
//! temp dir, its log in `serve.log` there. Ready once `/api/health` answers 200; stopped with
//! SIGTERM, and [`Serve::stop`] asserts that the stop was clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{start_server, wait_until, ChildGuard, Server};

/// A running daemon.
pub struct Serve {
    pub port: u16,
    /// The FastCGI authorizer's port, when asked for.
    pub fcgi_port: Option<u16>,
    pub dir: PathBuf,
    /// Its config file, `serve.json` in `dir`.
    pub config: PathBuf,
    /// Its log is `serve.log` in `dir`.
    server: Server,
    /// For [`Serve::send`] and [`Serve::jar`]: connections kept alive, as a proxy keeps them.
    agent: ureq::Agent,
}

/// The portal's URL for a daemon on `port`: the daemon itself, on 127.0.0.1 like the proxies in
/// front of the apps, so that the host-only cookie goes to both (cookies ignore ports).
pub fn portal_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

/// `check-duo serve -c config`, its stderr appended to `log`.
fn serve_command(config: &Path, log: &Path) -> Command {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_check-duo"));
    cmd.args(["serve", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

impl Serve {
    /// Write `config` (a seed config; its `server` section gets `listen`, `portal_url` and,
    /// with `fastcgi`, `fastcgi_listen` set to free ports) under `dir` and start the daemon.
    pub fn start(dir: &Path, mut config: Value, fastcgi: bool) -> Serve {
        let cfg_file = dir.join("serve.json");
        let log = dir.join("serve.log");
        let ports = 1 + usize::from(fastcgi);
        let server = start_server(
            "check-duo serve",
            dir,
            ports,
            Some(&log),
            Duration::from_secs(20),
            |ports| {
                if config.get("server").is_none() {
                    config["server"] = json!({});
                }
                config["server"]["listen"] = json!(format!("127.0.0.1:{}", ports[0]));
                config["server"]["portal_url"] = json!(portal_url(ports[0]));
                if let Some(p) = ports.get(1) {
                    config["server"]["fastcgi_listen"] = json!(format!("127.0.0.1:{p}"));
                }
                fs::write(&cfg_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
                serve_command(&cfg_file, &log)
            },
        );
        let s = Serve {
            port: server.port,
            fcgi_port: server.ports.get(1).copied(),
            dir: dir.to_path_buf(),
            config: cfg_file,
            server,
            agent: agent(),
        };
        s.wait_healthy();
        s
    }

    /// Until `/api/health` answers ok.
    fn wait_healthy(&self) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let healthy = wait_until(Duration::from_secs(20), || {
            agent
                .get(&self.url("/api/health"))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .is_some_and(|b| b == "ok\n")
        });
        assert!(healthy, "/api/health never answered ok\n{}", self.log());
    }

    /// Stop the daemon (SIGTERM), change its config with `edit` and start it again on the same
    /// ports.
    pub fn restart(&mut self, edit: impl FnOnce(&mut Value)) {
        self.server.guard.stop(Duration::from_secs(5));
        let mut config: Value = serde_json::from_slice(&fs::read(&self.config).unwrap()).unwrap();
        edit(&mut config);
        fs::write(&self.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = self.dir.join("serve.log");
        let child = serve_command(&self.config, &log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn check-duo serve");
        self.server.guard = ChildGuard::new("check-duo serve", child);
        self.wait_healthy();
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Where the daemon sends a browser that is not signed in for `target` (what nginx asks:
    /// its 401's `Location`, the portal's sign-in URL).
    pub fn sign_in_url(&self, target: &str) -> String {
        let r = http(
            "GET",
            &self.url("/api/authz/auth-request"),
            &[("X-Original-URL", target), ("X-Original-Method", "GET")],
            None,
        );
        assert_eq!(r.status, 401, "{}", r.body);
        r.header("location").expect("a Location").to_string()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.server.guard.id()
    }

    pub fn portal(&self) -> String {
        portal_url(self.port)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// [`http`] to `path` on the daemon, on the connections of the daemon's agent.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        http_with(&self.agent, method, &self.url(path), headers, form)
    }

    /// An empty [`Jar`] on the connections of the daemon's agent (those of [`Serve::send`]).
    pub fn jar(&self) -> Jar {
        Jar {
            agent: Some(self.agent.clone()),
            ..Jar::default()
        }
    }

    /// What nginx sends for `target` with `cookie`.
    pub fn auth_request(&self, target: &str, cookie: &str) -> Reply {
        self.send(
            "GET",
            "/api/authz/auth-request",
            &[
                ("X-Original-URL", target),
                ("X-Original-Method", "GET"),
                ("Cookie", cookie),
            ],
            None,
        )
    }

    /// SIGTERM, then assert that the daemon exited by itself, successfully, saying so.
    pub fn stop(mut self) {
        self.server.guard.stop(Duration::from_secs(10));
        let status = self.server.guard.exited().expect("exited after stop");
        let log = self.log();
        assert!(
            status.success(),
            "check-duo serve did not stop cleanly on SIGTERM ({status})\n{log}"
        );
        assert!(log.contains("serve: stopping"), "{log}");
    }
}

/// One HTTP reply, whatever its status (redirects are not followed).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP client that follows no redirect. Its connections are kept alive for its next
/// requests.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build()
}

/// `method url` with these headers (and a form body), redirects not followed, on a new
/// connection.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> Reply {
    http_with(&agent(), method, url, headers, form)
}

/// [`http`] with `agent`, on one of its connections if it has one open.
pub fn http_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> Reply {
    use std::io::Read as _;
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match form {
        Some(f) => req.send_form(f),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut hs = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            hs.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    let mut body = String::new();
    let _ = resp.into_reader().take(1 << 20).read_to_string(&mut body);
    Reply {
        status,
        headers: hs,
        body,
    }
}

/// A browser without a browser: a cookie jar for 127.0.0.1 (cookies ignore ports) and the
/// portal's sign-in over plain HTTP, with the CSRF token taken from the form. Each request on a
/// new connection, or on those of an agent it was given ([`Serve::jar`]).
#[derive(Default)]
pub struct Jar {
    pub cookies: std::collections::BTreeMap<String, String>,
    agent: Option<ureq::Agent>,
}

impl Jar {
    fn http(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        match &self.agent {
            Some(a) => http_with(a, method, url, headers, form),
            None => http(method, url, headers, form),
        }
    }

    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn take(&mut self, r: &Reply) {
        for c in r.set_cookies() {
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k.trim());
            } else {
                self.cookies
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    /// GET with the jar's cookies, as a browser navigating (Accept: text/html).
    pub fn get(&mut self, url: &str) -> Reply {
        let c = self.header();
        let r = self.http("GET", url, &[("Cookie", &c), ("Accept", "text/html")], None);
        self.take(&r);
        r
    }

    pub fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let c = self.header();
        let r = self.http(
            "POST",
            url,
            &[("Cookie", &c), ("Accept", "text/html")],
            Some(form),
        );
        self.take(&r);
        r
    }

    /// The value of the session cookie, if set.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("check-duo").map(String::as_str)
    }

    /// The session cookie as a `Cookie` header sends it (`check-duo=…`), if set.
    pub fn session_cookie(&self) -> Option<String> {
        self.session().map(|t| format!("check-duo={t}"))
    }

    /// The CSRF cookie's value: the token the portal's forms carry.
    pub fn csrf(&self) -> String {
        self.cookies
            .get("check-duo-csrf")
            .cloned()
            .expect("a CSRF cookie")
    }

    /// GET the sign-in form at `sign_in_url` (its `?rd=…` URL), then POST `user` and `password`
    /// with the form's CSRF token and target, and `extra` fields: the reply of the POST.
    pub fn post_password(
        &mut self,
        sign_in_url: &str,
        user: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let form = self.get(sign_in_url);
        assert_eq!(form.status, 200, "the sign-in form: {}", form.body);
        let csrf = form_value(&form.body, "csrf").expect("a csrf field");
        let rd = form_value(&form.body, "rd").unwrap_or_default();
        let base = sign_in_url.split('?').next().unwrap();
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("rd", rd.as_str()),
            ("username", user),
            ("password", password),
        ];
        fields.extend_from_slice(extra);
        self.post(base, &fields)
    }

    /// Poll the sign-in's flow on the portal at `portal` until it leaves `waiting`; the
    /// waiting page then.
    pub fn settle(&mut self, portal: &str) -> Reply {
        let flow = format!("{portal}api/flow");
        assert!(
            wait_until(Duration::from_secs(20), || {
                let r = self.http("GET", &flow, &[("Cookie", &self.header())], None);
                !r.body.contains("waiting")
            }),
            "the sign-in never left waiting"
        );
        self.get(&format!("{portal}wait"))
    }
}

/// The value of `name="…"`'s `value` in a form.
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?;
    Some(
        v.split('"')
            .next()?
            .replace("&amp;", "&")
            .replace("&quot;", "\""),
    )
}

/// Sign in on the portal at `portal` (its `?rd=…` URL, as a proxy's redirect gave it), approving
/// the push with `approve(txid)`; returns the jar holding the session cookie.
pub fn sign_in_over_http(
    sign_in_url: &str,
    user: &str,
    password: &str,
    sim: &duo_sim::SimHandle,
) -> Jar {
    let mut jar = Jar::default();
    let r = jar.post_password(sign_in_url, user, password, &[("factor", "push")]);
    assert_eq!(r.status, 303, "the sign-in POST: {}", r.body);
    let wait = format!("{}wait", sign_in_url.split('?').next().unwrap());
    let push = sim
        .wait_for_pending(Duration::from_secs(20))
        .expect("a push was sent");
    assert!(sim.approve(&push.txid));
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let r = jar.get(&wait);
        last = r.body;
        jar.session().is_some()
    });
    assert!(ok, "no session cookie after the approval: {last}");
    jar
}
